//! Mutual attestation between two guests with a real report: guest A writes
//! its evidence (`umbra-agent evidence`, from the real Linux configfs-tsm
//! capture laid out as configfs lays it out, AMD-signed, with the host's
//! certificate table), guest B checks it (`umbra-agent verify`) against
//! AMD's roots and the nonce it gave A. A tampered report, another nonce and
//! garbage are each refused with their own exit code.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vectors() -> Option<PathBuf> {
    match std::env::var("UMBRA_VECTORS") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) => {
            eprintln!("skipped: UMBRA_VECTORS not set");
            None
        }
    }
}

fn agent(args: &[&str], extra: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_umbra-agent"))
        .args(args)
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_guest_checks_a_peers_evidence() {
    let Some(v) = vectors() else { return };
    let capture = v.join("configfs-tsm-veraison");
    let report = fs::read(capture.join("derived-outblob.bin")).unwrap();
    let root = std::env::temp_dir().join(format!("umbra-agent-peer-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    // The configfs-tsm entry fetch-secret and evidence use.
    let entry = root.join("umbra-kbs");
    fs::create_dir_all(&entry).unwrap();
    fs::write(entry.join("outblob"), &report).unwrap();
    fs::write(entry.join("generation"), b"1\n").unwrap();
    fs::write(entry.join("provider"), b"sev_guest\n").unwrap();
    fs::write(
        entry.join("auxblob"),
        fs::read(capture.join("derived-auxblob.bin")).unwrap(),
    )
    .unwrap();
    // The capture's REPORT_DATA stands for the nonce guest B gave guest A.
    let nonce = umbra_attestation::hex::encode(&report[0x50..0x90]);

    // Guest A.
    let evidence = root.join("evidence.json");
    let out = agent(
        &["evidence", "--report-data", &nonce, "--tsm-root"],
        &[&root, Path::new("--out"), &evidence],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&evidence).unwrap()).unwrap();
    assert_eq!(
        json["cert_chain"].as_array().map(Vec::len),
        Some(3),
        "ARK, ASK, VCEK"
    );

    // Guest B: authentic, bound to its nonce.
    let verify = |evidence: &Path, nonce: &str| {
        agent(
            &["verify", "--report-data", nonce, "--evidence"],
            &[evidence],
        )
    };
    let out = verify(&evidence, &nonce);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for check in [
        "ok   report-signature",
        "ok   ark-pinned",
        "ok   report-data",
    ] {
        assert!(text(&out).contains(check), "{check}: {}", text(&out));
    }

    // Another nonce: a replay of evidence made for someone else.
    let out = verify(&evidence, &"ab".repeat(64));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL report-data"), "{}", text(&out));

    // One bit of the measurement changed: the signature no longer holds.
    let mut tampered = json.clone();
    let first = tampered["attestation_report"]["measurement"][0]
        .as_u64()
        .unwrap();
    tampered["attestation_report"]["measurement"][0] = (first ^ 1).into();
    let tampered_path = root.join("tampered.json");
    fs::write(&tampered_path, tampered.to_string()).unwrap();
    let out = verify(&tampered_path, &nonce);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("FAIL report-signature"),
        "{}",
        text(&out)
    );

    // Not evidence at all.
    let garbage = root.join("garbage.json");
    fs::write(&garbage, b"{\"attestation_report\": 7}").unwrap();
    let out = verify(&garbage, &nonce);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out)
    );
}
