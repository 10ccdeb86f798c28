//! Helpers shared by the attestation integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The SNP vectors directory from UMBRA_VECTORS (CI always sets it); when
/// unset, a test prints why it skips and returns.
pub fn vectors() -> Option<PathBuf> {
    match std::env::var_os("UMBRA_VECTORS") {
        Some(v) => Some(PathBuf::from(v)),
        None => {
            eprintln!("skipped: UMBRA_VECTORS not set");
            None
        }
    }
}

/// The launch-measurement vectors.
pub fn launch_vectors() -> Option<PathBuf> {
    vectors().map(|v| v.join("launch-measurement"))
}
