//! SNP evidence as Trustee reads it (`deps/verifier/src/snp`):
//! `{"attestation_report": <the sev crate's serde form>, "cert_chain":
//! [{"cert_type": "VCEK", "data": [..]}] | null}`, as guest-components'
//! SNP attester builds it.

use sev::firmware::guest::AttestationReport as SevReport;
use sev::firmware::host::{CertTableEntry, CertType};
use sev::parser::ByteParser;
use thiserror::Error;

/// Why evidence could not be built or read.
#[derive(Debug, Error)]
pub enum EvidenceError {
    /// The report is not one the sev crate reads.
    #[error("the report does not parse as an SNP attestation report")]
    ParseReport(#[source] std::io::Error),
    /// The evidence is not `{"attestation_report", "cert_chain"}`.
    #[error("the evidence is not SNP evidence in Trustee's form")]
    ParseEvidence(#[source] serde_json::Error),
    /// The report could not be encoded back to its bytes.
    #[error("cannot encode the report")]
    EncodeReport(#[source] std::io::Error),
    /// Neither the evidence nor the fallback has the key that signed the
    /// report (KEY_INFO's SIGNING_KEY).
    #[error("no {0} to check the report's signature with")]
    FindVek(&'static str),
    /// A certificate the evidence carries does not parse.
    #[error("a certificate in the evidence does not parse")]
    ParseCertificate(#[source] crate::chain::ChainError),
}

/// The certificates `verify` needs, from the (kind, DER or PEM) list that
/// evidence or a host's certificate table carries; kinds the list lacks come
/// from `fallback` (a relying party's own store). The endorsement key is the
/// one the report says signed it (`signed_by`, KEY_INFO's SIGNING_KEY); the
/// ASK entry is the VLEK's ASVK when that is a VLEK.
pub fn certificates(
    certs: &[(CertKind, Vec<u8>)],
    fallback: &[(CertKind, openssl::x509::X509)],
    signed_by: crate::report::SigningKey,
) -> Result<crate::verify::Certificates, EvidenceError> {
    let pick = |kind: CertKind, what: &str| match certs.iter().find(|(k, _)| *k == kind) {
        Some((_, bytes)) => crate::chain::load_cert(bytes, what)
            .map(Some)
            .map_err(EvidenceError::ParseCertificate),
        None => Ok(fallback
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| c.clone())),
    };
    use crate::report::SigningKey;
    let (vek, vek_kind) = match signed_by {
        SigningKey::Vlek => (
            pick(CertKind::Vlek, "VLEK")?.ok_or(EvidenceError::FindVek("VLEK"))?,
            crate::chain::VekKind::Vlek,
        ),
        // An unsigned report (SIGNING_KEY 7) fails the signature check
        // whatever key is given; the VCEK is tried.
        SigningKey::Vcek | SigningKey::None => (
            pick(CertKind::Vcek, "VCEK")?.ok_or(EvidenceError::FindVek("VCEK"))?,
            crate::chain::VekKind::Vcek,
        ),
    };
    Ok(crate::verify::Certificates {
        vek,
        vek_kind: Some(vek_kind),
        intermediate: pick(CertKind::Ask, "ASK")?,
        ark: pick(CertKind::Ark, "ARK")?,
    })
}

/// SNP evidence, typed (what `tee-evidence.primary_evidence` holds).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnpEvidence {
    attestation_report: SevReport,
    cert_chain: Option<Vec<CertTableEntry>>,
}

/// The certificates evidence can carry: the kinds of the host's
/// certificate table, defined once in `umbra_snp_abi`.
pub use umbra_snp_abi::cert_table::CertKind;

/// A raw report and its certificates (DER), as evidence carries them.
pub type ReportAndCerts = (Vec<u8>, Vec<(CertKind, Vec<u8>)>);

/// Evidence for a raw report and its certificates (DER).
pub fn snp_evidence(
    report: &[u8],
    certs: &[(CertKind, Vec<u8>)],
) -> Result<serde_json::Value, EvidenceError> {
    let attestation_report = SevReport::from_bytes(report).map_err(EvidenceError::ParseReport)?;
    // Only the kinds Trustee's verifier reads; a CRL or an unknown GUID
    // is not part of the chain.
    let chain: Vec<CertTableEntry> = certs
        .iter()
        .filter_map(|(kind, der)| {
            let cert_type = match kind {
                CertKind::Ark => CertType::ARK,
                CertKind::Ask => CertType::ASK,
                CertKind::Vcek => CertType::VCEK,
                CertKind::Vlek => CertType::VLEK,
                CertKind::Crl | CertKind::Other(_) => return None,
            };
            Some(CertTableEntry {
                cert_type,
                data: der.clone(),
            })
        })
        .collect();
    serde_json::to_value(SnpEvidence {
        attestation_report,
        cert_chain: (!chain.is_empty()).then_some(chain),
    })
    .map_err(EvidenceError::ParseEvidence)
}

/// The raw report and the certificates of `evidence`.
pub fn read_snp_evidence(evidence: &serde_json::Value) -> Result<ReportAndCerts, EvidenceError> {
    let parsed: SnpEvidence =
        serde_json::from_value(evidence.clone()).map_err(EvidenceError::ParseEvidence)?;
    split(parsed)
}

/// An attestation request as the KBS reads it: Trustee's
/// `kbs_types::Attestation` with the SNP evidence parsed in the same pass
/// (no intermediate JSON value).
#[derive(serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnpAttestation {
    /// Optional init-data.
    pub init_data: Option<kbs_types::InitData>,
    /// The nonce and the key.
    pub runtime_data: kbs_types::RuntimeData,
    /// The evidence.
    pub tee_evidence: SnpTeeEvidence,
}

/// `tee-evidence` with SNP primary evidence.
#[derive(serde::Deserialize)]
pub struct SnpTeeEvidence {
    /// The SNP evidence.
    pub primary_evidence: SnpEvidence,
    /// Bound into REPORT_DATA as it is.
    #[serde(default)]
    pub additional_evidence: String,
}

/// The raw report and the certificates of parsed evidence.
pub fn split(parsed: SnpEvidence) -> Result<ReportAndCerts, EvidenceError> {
    let report = parsed
        .attestation_report
        .to_bytes()
        .map_err(EvidenceError::EncodeReport)?;
    let certs = parsed
        .cert_chain
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let kind = match entry.cert_type {
                CertType::ARK => CertKind::Ark,
                CertType::ASK => CertKind::Ask,
                CertType::VCEK => CertKind::Vcek,
                CertType::VLEK => CertKind::Vlek,
                _ => return None,
            };
            Some((kind, entry.data))
        })
        .collect();
    Ok((report.as_ref().to_vec(), certs))
}
