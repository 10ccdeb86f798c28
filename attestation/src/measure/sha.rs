//! One-shot hash helpers used by the measurement code.
//!
//! SHA-384 backend choice, measured with `benches/measure.rs` on the build
//! machine: OpenSSL's assembly is ~1.2x faster than the `sha2` crate on 4 KiB
//! pages, while `sha2` is ~1.6x faster on the 112-byte PAGE_INFO (OpenSSL's
//! one-shot call has a fixed setup cost). Each input size uses the faster one.

use sha2::Digest as _;

/// Inputs at least this long go to OpenSSL, shorter ones to `sha2`.
const OPENSSL_MIN: usize = 1024;

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> [u8; 48] {
    if data.len() >= OPENSSL_MIN {
        openssl::sha::sha384(data)
    } else {
        sha2::Sha384::digest(data).into()
    }
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
