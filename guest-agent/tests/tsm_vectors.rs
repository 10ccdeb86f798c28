//! The agent against a configfs-tsm entry that returns a real Milan report
//! (go-sev-guest's attestation.bin, REPORT_DATA 0102030405 then zeros).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::PathBuf;
use umbra_guest_agent::tsm::{get_report, TsmError};

fn vectors() -> Option<PathBuf> {
    match std::env::var("UMBRA_VECTORS") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) => {
            eprintln!("skipped: UMBRA_VECTORS not set");
            None
        }
    }
}

fn fake_entry(name: &str, report: &[u8]) -> PathBuf {
    let root = std::env::temp_dir().join(format!("umbra-agent-tsm-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let entry = root.join("e");
    fs::create_dir_all(&entry).unwrap();
    fs::write(entry.join("outblob"), report).unwrap();
    fs::write(entry.join("generation"), b"3\n").unwrap();
    fs::write(entry.join("provider"), b"sev_guest\n").unwrap();
    root
}

#[test]
fn accepts_a_report_carrying_the_requested_data() {
    let Some(v) = vectors() else { return };
    let report = fs::read(v.join("milan-gosevguest/attestation.bin")).unwrap();
    let root = fake_entry("ok", &report);
    let evidence = get_report(&root, "e", &[1, 2, 3, 4, 5], None).unwrap();
    assert_eq!(evidence.provider, "sev_guest");
    assert_eq!(evidence.parsed.version, 2);
    assert_eq!(
        evidence.parsed.measurement[..4],
        [0xb0, 0x7a, 0xf9, 0x62],
        "measurement from EXPECTED.json (b07af962…)"
    );
    assert_eq!(evidence.report, report);
}

#[test]
fn refuses_a_report_for_another_nonce() {
    let Some(v) = vectors() else { return };
    let report = fs::read(v.join("milan-gosevguest/attestation.bin")).unwrap();
    let root = fake_entry("replay", &report);
    let err = get_report(&root, "e", b"fresh nonce", None).unwrap_err();
    assert!(matches!(err, TsmError::ReportDataMismatch), "{err}");
}

#[test]
fn cli_writes_the_report_and_certs_and_verifies_them() {
    let Some(v) = vectors() else { return };
    let report = fs::read(v.join("milan-gosevguest/attestation.bin")).unwrap();
    let vcek = fs::read(v.join("milan-gosevguest/vcek.der")).unwrap();
    let root = fake_entry("cli", &report);
    // The host's certificate table: the VCEK, then the all-zero terminator.
    let mut table = vec![0u8; 48];
    table[..16].copy_from_slice(&umbra_guest_agent::cert_table::guid_of(
        umbra_guest_agent::cert_table::CertKind::Vcek,
    ));
    table[16..20].copy_from_slice(&48u32.to_le_bytes());
    table[20..24].copy_from_slice(&(vcek.len() as u32).to_le_bytes());
    table.extend_from_slice(&vcek);
    fs::write(root.join("e/auxblob"), &table).unwrap();
    let out_dir = root.join("out");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_umbra-agent"))
        .args([
            "report",
            "--report-data",
            "0102030405",
            "--entry",
            "e",
            "--verify",
        ])
        .arg("--tsm-root")
        .arg(&root)
        .arg("--out")
        .arg(root.join("report.bin"))
        .arg("--certs-dir")
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok   report-signature"), "{stdout}");
    assert!(stdout.contains("ok   ark-pinned"), "{stdout}");
    assert_eq!(fs::read(out_dir.join("vcek.der")).unwrap(), vcek);
    assert_eq!(fs::read(root.join("report.bin")).unwrap(), report);
}

/// The real Linux configfs-tsm capture laid out as configfs lays it out:
/// the CLI writes ark/ask/vcek from auxblob and verifies; with an empty
/// auxblob it says the host supplied no certificates, not "malformed".
#[test]
fn cli_on_the_real_capture_and_on_an_empty_auxblob() {
    let Some(v) = vectors() else { return };
    let capture = v.join("configfs-tsm-veraison");
    let report = fs::read(capture.join("derived-outblob.bin")).unwrap();
    let root = fake_entry("capture", &report);
    fs::write(
        root.join("e/auxblob"),
        fs::read(capture.join("derived-auxblob.bin")).unwrap(),
    )
    .unwrap();
    let report_data = umbra_attestation::hex::encode(&report[0x50..0x90]);
    let certs = root.join("certs");
    let run = |certs: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_umbra-agent"))
            .args([
                "report",
                "--entry",
                "e",
                "--verify",
                "--report-data",
                &report_data,
            ])
            .arg("--tsm-root")
            .arg(&root)
            .arg("--certs-dir")
            .arg(certs)
            .arg("--out")
            .arg(root.join("report.bin"))
            .output()
            .unwrap()
    };
    let out = run(&certs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok   report-signature"), "{stdout}");
    for file in ["ark.der", "ask.der", "vcek.der"] {
        assert!(certs.join(file).is_file(), "{file}");
    }
    fs::write(root.join("e/auxblob"), b"").unwrap();
    let out = run(&root.join("certs2"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the host supplied no certificates"),
        "{stderr}"
    );
    assert!(stderr.contains("--certs DIR"), "{stderr}");
    assert!(!stderr.contains("malformed"), "{stderr}");
}
