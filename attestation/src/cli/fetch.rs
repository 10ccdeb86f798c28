//! `umbra-attest fetch` (to be filled in).

use std::path::{Path, PathBuf};

use clap::Args;
use openssl::x509::{X509Crl, X509};
use umbra_attestation::report::AttestationReport;

#[derive(Args, Debug)]
pub struct FetchArgs {}

pub fn run(_args: FetchArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}

/// Evidence found in the KDS cache for one report.
#[derive(Default)]
pub struct CachedEvidence {
    pub vek: Option<X509>,
    pub intermediate: Option<X509>,
    pub ark: Option<X509>,
    pub crl: Option<X509Crl>,
}

pub fn default_cache_dir() -> Option<PathBuf> {
    None
}

pub fn cached_evidence(_dir: &Path, _report: &AttestationReport) -> CachedEvidence {
    CachedEvidence::default()
}
