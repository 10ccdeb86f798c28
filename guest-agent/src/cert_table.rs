//! The certificate table a host may attach to an extended report
//! (configfs-tsm `auxblob`, the GHCB extended guest request). Its format
//! and its bounds-checked reader are `umbra_snp_abi::cert_table`, shared
//! with the firmware and the VMM; this module collects the entries and
//! names the files they are saved as.

pub use umbra_snp_abi::cert_table::{guid_of, CertKind, CertTableError};

/// Parses a table into `(kind, certificate bytes)` pairs. An empty table
/// (a host that supplies no certificates, the normal case without an
/// extended report) holds no certificates; it is not malformed.
pub fn parse(table: &[u8]) -> Result<Vec<(CertKind, &[u8])>, CertTableError> {
    umbra_snp_abi::cert_table::entries(table).collect()
}

/// File name under which `umbra-attest verify --certs DIR` finds `kind`.
pub fn file_name(kind: CertKind) -> Option<&'static str> {
    match kind {
        CertKind::Ark => Some("ark.der"),
        CertKind::Ask => Some("ask.der"),
        CertKind::Vcek => Some("vcek.der"),
        CertKind::Vlek => Some("vlek.der"),
        CertKind::Crl => Some("crl.der"),
        CertKind::Other(_) => None,
    }
}
