//! Error presentation shared by the library and the binary: a leaf module,
//! so that nothing that reports an error has to import the CLI. The
//! workspace has one error-chain function (in `umbra-attestation`, the leaf
//! crate every binary links); this names it for the VMM.

/// An error and its sources on one line: `a: b: c`.
pub use umbra_attestation::verify::describe as error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_every_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
