//! Mutual attestation between guests: one guest hands another its evidence
//! in Trustee's form (`{"attestation_report", "cert_chain"}`, what
//! `fetch-secret` sends a KBS), bound to a nonce the other chose as
//! REPORT_DATA; the other checks it here with the attestation library's
//! checks (chain to AMD's roots or a trusted root, signature, chip and TCB
//! bindings) and a policy (launch measurement, REPORT_DATA, ...). Evidence
//! from a peer is hostile input: it is parsed, never trusted, and every
//! failure is a check or a typed error.

use thiserror::Error;
use umbra_attestation::kbs::evidence::{self, EvidenceError};
use umbra_attestation::policy::Policy;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::{verify, Check, Options};

/// Why a peer's evidence could not be checked at all.
#[derive(Debug, Error)]
pub enum PeerError {
    /// Not JSON.
    #[error("the peer's evidence is not JSON")]
    ParseJson(#[source] serde_json::Error),
    /// Not SNP evidence in Trustee's form, or no certificate to check it.
    #[error("the peer's evidence is unusable")]
    ReadEvidence(#[source] EvidenceError),
    /// The report inside does not parse.
    #[error("the peer's report does not parse")]
    ParseReport(#[source] umbra_attestation::report::ReportError),
}

/// Checks `evidence` (JSON) at Unix time `now` against AMD's roots and
/// `trust_roots`, then `policy`; returns every check, passed or failed.
pub fn verify_peer(
    evidence: &[u8],
    policy: Option<&Policy>,
    trust_roots: Vec<openssl::x509::X509>,
    now: i64,
) -> Result<Vec<Check>, PeerError> {
    let value: serde_json::Value =
        serde_json::from_slice(evidence).map_err(PeerError::ParseJson)?;
    let (raw, certs) = evidence::read_snp_evidence(&value).map_err(PeerError::ReadEvidence)?;
    let report = AttestationReport::from_bytes(&raw).map_err(PeerError::ParseReport)?;
    let certificates = evidence::certificates(&certs, &[], report.key_info.signing_key)
        .map_err(PeerError::ReadEvidence)?;
    let options = Options {
        at_unix: now,
        trust_roots,
        ..Default::default()
    };
    let verdict = verify(&report, &certificates, &options);
    let mut checks = verdict.checks;
    if let Some(policy) = policy {
        checks.extend(policy.check(&report, verdict.product));
    }
    Ok(checks)
}
