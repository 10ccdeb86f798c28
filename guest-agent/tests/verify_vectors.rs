//! The agent checks real evidence with the host's certificate table: a Milan
//! report with its own VCEK verifies to AMD's pinned roots; the same report
//! with another chip's VCEK in the table does not.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::Status;
use umbra_guest_agent::cert_table::{guid_of, CertKind};
use umbra_guest_agent::verify::verify_with_table;

fn vectors() -> Option<PathBuf> {
    let dir = std::env::var_os("UMBRA_VECTORS").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("skipped: UMBRA_VECTORS not set");
    }
    dir
}

/// A GHCB certificate table holding one VCEK.
fn table_with_vcek(vcek: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 48];
    t[..16].copy_from_slice(&guid_of(CertKind::Vcek));
    t[16..20].copy_from_slice(&48u32.to_le_bytes());
    t[20..24].copy_from_slice(&(vcek.len() as u32).to_le_bytes());
    t.extend_from_slice(vcek);
    t
}

fn failed(dir: &std::path::Path, vcek: &str) -> Vec<String> {
    let report = AttestationReport::from_bytes(
        &std::fs::read(dir.join("milan-gosevguest/attestation.bin")).unwrap(),
    )
    .unwrap();
    let table = table_with_vcek(&std::fs::read(dir.join(vcek)).unwrap());
    // 2026-01-01: inside the VCEK's validity (2022-09-24 to 2029).
    let checks = verify_with_table(&report, &table, 1_767_225_600).unwrap();
    checks
        .into_iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name)
        .collect()
}

#[test]
fn report_verifies_with_the_vcek_from_the_hosts_table() {
    let Some(dir) = vectors() else { return };
    assert_eq!(
        failed(&dir, "milan-gosevguest/vcek.der"),
        Vec::<String>::new()
    );
}

#[test]
fn another_chips_vcek_in_the_table_fails() {
    let Some(dir) = vectors() else { return };
    let failed = failed(&dir, "milan-virtee-sev/vcek_milan.der");
    assert!(
        failed.contains(&"report-signature".to_string()),
        "{failed:?}"
    );
    assert!(failed.contains(&"chip-id".to_string()), "{failed:?}");
}

/// A real Linux configfs-tsm capture (vectors/configfs-tsm-veraison): the
/// host's table stores its GUIDs in RFC 4122 byte order; the agent finds
/// ARK, ASK and VCEK there and the Genoa report verifies with them.
#[test]
fn a_real_configfs_tsm_capture_verifies_with_its_certificate_table() {
    let Some(dir) = vectors() else { return };
    let report = AttestationReport::from_bytes(
        &std::fs::read(dir.join("configfs-tsm-veraison/derived-outblob.bin")).unwrap(),
    )
    .unwrap();
    let table = std::fs::read(dir.join("configfs-tsm-veraison/derived-auxblob.bin")).unwrap();
    let kinds: Vec<CertKind> = umbra_guest_agent::cert_table::parse(&table)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for want in [CertKind::Ark, CertKind::Ask, CertKind::Vcek] {
        assert!(kinds.contains(&want), "{want:?} in {kinds:?}");
    }
    // 2026-01-01.
    let checks = verify_with_table(&report, &table, 1_767_225_600).unwrap();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}
