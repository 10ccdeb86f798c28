//! Checking a report inside the guest before sending it on: the chain from
//! the host's certificate table (or AMD's embedded ARK/ASK where the table
//! omits them) to AMD's pinned roots, the signature, and the chip and TCB
//! bindings, with the attestation library's code.

use crate::cert_table::{self, CertKind, CertTableError};
use thiserror::Error;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::{verify, Check, Options};

/// Why the evidence could not be checked at all.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The host's certificate table is malformed.
    #[error("the host's certificate table is malformed")]
    ParseTable(#[source] CertTableError),
    /// The table lacks the key that signed the report (VCEK or VLEK).
    #[error("the host's certificate table carries no VCEK or VLEK for the report's signing key")]
    FindVek,
    /// The host gave no certificate table at all (the normal case when it
    /// does not implement the extended report).
    #[error("the host supplied no certificates: verify on a machine that has them, e.g. `umbra-attest fetch vcek --report report.bin` and `umbra-attest verify --report report.bin --certs DIR` with the VCEK (or VLEK), ASK and ARK")]
    NoCertificates,
    /// A certificate in the table does not parse.
    #[error("a certificate in the host's table does not parse")]
    ParseCertificate(#[source] umbra_attestation::kbs::evidence::EvidenceError),
}

/// Verifies `report` with the certificates in `table` at Unix time `now`;
/// returns every check, passed or failed.
pub fn verify_with_table(
    report: &AttestationReport,
    table: &[u8],
    now: i64,
) -> Result<Vec<Check>, VerifyError> {
    let entries = cert_table::parse(table).map_err(VerifyError::ParseTable)?;
    if entries.is_empty() {
        return Err(VerifyError::NoCertificates);
    }
    let owned: Vec<(CertKind, Vec<u8>)> = entries
        .iter()
        .map(|(kind, bytes)| (*kind, bytes.to_vec()))
        .collect();
    use umbra_attestation::kbs::evidence::{certificates, EvidenceError};
    let certs = certificates(&owned, &[], report.key_info.signing_key).map_err(|e| match e {
        EvidenceError::FindVek(_) => VerifyError::FindVek,
        other => VerifyError::ParseCertificate(other),
    })?;
    let opts = Options {
        at_unix: now,
        ..Default::default()
    };
    Ok(verify(report, &certs, &opts).checks)
}
