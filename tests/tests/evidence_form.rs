//! The firmware builds its KBS evidence without the sev crate (which needs
//! std): `umbra_kbs_client::evidence` writes the sev crate's serde form of
//! the report from the raw bytes. Here the sev crate itself (through
//! `umbra_attestation::kbs::evidence`, which is how Trustee's verifier reads
//! the report) is the oracle, on every real report of the vectors (Milan,
//! Genoa, Turin; versions 2, 3 and 5) and on a report the SNP model signs:
//! the same JSON value, and it reads back to the same bytes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use umbra_attestation::kbs::evidence as sev_form;
use umbra_kbs_client::evidence as no_std_form;

fn vectors() -> Option<PathBuf> {
    match std::env::var_os("UMBRA_VECTORS") {
        Some(v) => Some(PathBuf::from(v)),
        None => {
            eprintln!("skipped: UMBRA_VECTORS not set");
            None
        }
    }
}

/// Every 1184-byte report under the vectors, except the negative ones
/// (their bytes are mutated, the layout is the same: kept too, as the
/// writer must not care about signatures).
fn reports(root: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "bin") {
                let bytes = std::fs::read(&path).unwrap();
                if bytes.len() == no_std_form::REPORT_SIZE {
                    out.push((path, bytes));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_no_std_evidence_is_the_sev_crates_form_on_real_reports() {
    let Some(root) = vectors() else {
        return;
    };
    let der = b"\x30\x03\x02\x01\x01".to_vec();
    let mut compared = 0;
    let mut versions = std::collections::BTreeSet::new();
    for (path, report) in reports(&root) {
        let oracle =
            match sev_form::snp_evidence(&report, &[(sev_form::CertKind::Vcek, der.clone())]) {
                Ok(value) => value,
                // What sev cannot read (a masked chip ID in a v2 report), the
                // no_std writer must refuse too.
                Err(_) => {
                    assert!(
                        no_std_form::report_json(&report).is_err(),
                        "{}: sev refuses it, the writer does not",
                        path.display()
                    );
                    continue;
                }
            };
        let ours =
            no_std_form::snp_evidence(&report, &[(no_std_form::CertKind::Vcek, &der)]).unwrap();
        assert_eq!(ours, oracle, "{}", path.display());
        let (bytes, certs) = sev_form::read_snp_evidence(&ours).unwrap();
        assert_eq!(bytes, report, "{}: round trip", path.display());
        assert_eq!(certs, vec![(sev_form::CertKind::Vcek, der.clone())]);
        versions.insert(u32::from_le_bytes(report[..4].try_into().unwrap()));
        compared += 1;
    }
    assert!(compared >= 15, "only {compared} reports compared");
    assert!(
        versions.contains(&2) && versions.contains(&3) && versions.contains(&5),
        "report versions covered: {versions:?}"
    );
    // No certificates: `cert_chain` is null in both.
    let (_, report) = &reports(&root)[0];
    assert_eq!(
        no_std_form::snp_evidence(report, &[]).unwrap(),
        sev_form::snp_evidence(report, &[]).unwrap()
    );
}

#[test]
fn the_writer_refuses_what_is_not_a_report() {
    assert_eq!(
        no_std_form::report_json(&[0u8; 100]),
        Err(no_std_form::EvidenceError::ReportSize)
    );
    let mut v1 = vec![0u8; no_std_form::REPORT_SIZE];
    v1[0] = 1;
    assert_eq!(
        no_std_form::report_json(&v1),
        Err(no_std_form::EvidenceError::ReportVersion)
    );
    let mut v3 = vec![0u8; no_std_form::REPORT_SIZE];
    v3[0] = 3;
    v3[0x188] = 0x17; // family 0x17: no SNP generation
    assert_eq!(
        no_std_form::report_json(&v3),
        Err(no_std_form::EvidenceError::UnknownGeneration)
    );
    // A reserved byte set: found by the kbs_client fuzz target, where the
    // sev crate refused what the writer accepted.
    v3[0x188] = 0x19;
    v3[0x1EB] = 1;
    assert_eq!(
        no_std_form::report_json(&v3),
        Err(no_std_form::EvidenceError::ReservedBytes)
    );
    assert!(sev_form::snp_evidence(&v3, &[]).is_err());
}

/// The endorsement key is the one the report names (KEY_INFO): a VLEK-signed
/// report verifies with the VLEK even when a VCEK is offered too, with
/// AMD's pinned Milan ASVK chain (real Trustee vectors).
#[test]
fn the_key_the_report_names_is_the_one_used() {
    use umbra_attestation::report::{AttestationReport, SigningKey};
    let Some(root) = vectors() else {
        return;
    };
    let vlek_report = std::fs::read(root.join("milan-trustee-vlek/test-vlek-report.bin")).unwrap();
    let vlek = std::fs::read(root.join("milan-trustee-vlek/test-vlek.der")).unwrap();
    let vcek = std::fs::read(root.join("milan-trustee-vcek/test-vcek.der")).unwrap();
    let report = AttestationReport::from_bytes(&vlek_report).unwrap();
    assert_eq!(report.key_info.signing_key, SigningKey::Vlek);
    let both = vec![
        (sev_form::CertKind::Vcek, vcek.clone()),
        (sev_form::CertKind::Vlek, vlek.clone()),
    ];
    let certs = sev_form::certificates(&both, &[], report.key_info.signing_key).unwrap();
    assert_eq!(certs.vek.to_der().unwrap(), vlek);
    let verdict = umbra_attestation::verify::verify(
        &report,
        &certs,
        &umbra_attestation::verify::Options {
            at_unix: 1_735_689_600, // 2025-01-01, inside the VLEK's validity
            ..Default::default()
        },
    );
    let signature = verdict
        .checks
        .iter()
        .find(|c| c.name == "report-signature")
        .unwrap();
    assert_eq!(
        signature.status,
        umbra_attestation::verify::Status::Pass,
        "{}",
        signature.line()
    );
    // A report signed by a VCEK with only a VLEK at hand: named, refused.
    let only_vlek = vec![(sev_form::CertKind::Vlek, vlek)];
    assert!(matches!(
        sev_form::certificates(&only_vlek, &[], SigningKey::Vcek),
        Err(sev_form::EvidenceError::FindVek("VCEK"))
    ));
}
