//! One-shot hash helpers used by the measurement code.
//!
//! OpenSSL's SHA-384 (AVX2/AVX-512 assembly) measured faster here than the
//! `sha2` crate; see `benches/measure.rs` (`hash backends`) for the figures.

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> [u8; 48] {
    openssl::sha::sha384(data)
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

/// Incremental SHA-256 (SEV and SEV-ES digests).
pub struct Sha256(openssl::sha::Sha256);

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

impl Sha256 {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self(openssl::sha::Sha256::new())
    }

    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finish()
    }
}
