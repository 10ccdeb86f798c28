//! The whole chain on these machines: `umbra run --platform snp-model
//! --cmdline 'scenario=attest report_data=HEX' --attest-out DIR` boots, the
//! guest obtains its report through the encrypted guest message, DIR gets
//! report.bin and the model's certificates, and the attestation library
//! (the code behind `umbra-attest verify`) accepts it with the model's ARK as
//! trust root, the predicted measurement and the report data — and fails on
//! the right check when the firmware, vCPU count, policy or report data
//! differ from what the verifier expects.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};
use umbra_attestation::chain::{load_cert, VekKind};
use umbra_attestation::policy::PolicyFile;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::{verify, Certificates, Options, Status};

const REPORT_DATA: &str = "c0ffee00112233445566778899aabbccddeeff";

/// Boots `scenario=attest` and returns the attestation directory.
fn attest(name: &str, extra: &[&str], report_data: &str) -> PathBuf {
    let dir = scratch(name).join("attest");
    let keys = model_keys();
    let cmdline = format!("scenario=attest report_data={report_data}");
    let mut args = vec![
        "run",
        "--platform",
        "snp-model",
        "--model-keys",
        keys.to_str().unwrap(),
    ];
    args.extend_from_slice(&["--cmdline", &cmdline, "--attest-out", dir.to_str().unwrap()]);
    args.extend_from_slice(extra);
    let out = umbra(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("attest: report for our REPORT_DATA received: ok"));
    dir
}

/// Verifies like `umbra-attest verify --report DIR/report.bin --certs DIR
/// --trust-root DIR/ark.pem --measurement M --report-data D [policy]`;
/// returns the names of the failed checks.
fn failed_checks(
    dir: &Path,
    measurement: &str,
    report_data: &str,
    policy_toml: &str,
) -> Vec<String> {
    let report =
        AttestationReport::from_bytes(&std::fs::read(dir.join("report.bin")).unwrap()).unwrap();
    let read = |f: &str| load_cert(&std::fs::read(dir.join(f)).unwrap(), f).unwrap();
    let ark = read("ark.pem");
    let certs = Certificates {
        vek: read("vcek.pem"),
        vek_kind: Some(VekKind::Vcek),
        intermediate: Some(read("ask.pem")),
        ark: Some(ark.clone()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let opts = Options {
        at_unix: now,
        trust_roots: vec![ark],
        ..Default::default()
    };
    let verdict = verify(&report, &certs, &opts);
    let toml = format!(
        "measurements = [\"{measurement}\"]\nreport_data = \"{report_data}\"\n{policy_toml}"
    );
    let policy = PolicyFile::from_toml(&toml).unwrap().compile().unwrap();
    verdict
        .checks
        .iter()
        .chain(policy.check(&report, verdict.product).iter())
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn attest_report_verifies_and_fails_on_the_right_check() {
    if !kvm_available() {
        return;
    }
    let dir = attest("e2e", &[], REPORT_DATA);
    for f in ["report.bin", "ark.pem", "ask.pem", "vcek.pem"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    let m1 = predicted(&[]);
    assert_eq!(
        failed_checks(&dir, &m1, REPORT_DATA, ""),
        Vec::<String>::new(),
        "the genuine report verifies"
    );

    // Another vCPU count, another firmware byte: another measurement.
    assert_eq!(
        failed_checks(&dir, &predicted(&["--vcpus", "2"]), REPORT_DATA, ""),
        ["measurement"]
    );
    let fw = scratch("e2e-fw").join("fw.fd");
    let mut image = umbra_vmm::firmware::EMBEDDED_FIRMWARE.to_vec();
    image[0x100] ^= 1;
    std::fs::write(&fw, &image).unwrap();
    assert_eq!(
        failed_checks(
            &dir,
            &predicted(&["--firmware", fw.to_str().unwrap()]),
            REPORT_DATA,
            ""
        ),
        ["measurement"]
    );
    // Another nonce.
    assert_eq!(failed_checks(&dir, &m1, "0badc0de", ""), ["report-data"]);
    // A verifier that requires single-socket launch policy (bit 20) refuses a
    // guest launched with the default policy 0x30000.
    let failed = failed_checks(
        &dir,
        &m1,
        REPORT_DATA,
        "[guest_policy]\nrequire = [\"single-socket\"]\n",
    );
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("policy"), "{failed:?}");
}

#[test]
fn a_guest_launched_with_another_policy_and_host_data_reports_them() {
    if !kvm_available() {
        return;
    }
    // DEBUG (bit 19): accepted by the kernel rules the model applies (Linux
    // 6.11 refuses SINGLE_SOCKET).
    let host_data = "ab".repeat(32);
    let dir = attest(
        "e2e-policy",
        &["--policy", "0xb0000", "--host-data", &host_data],
        "01",
    );
    let report =
        AttestationReport::from_bytes(&std::fs::read(dir.join("report.bin")).unwrap()).unwrap();
    assert_eq!(report.policy.0, 0xB_0000);
    assert_eq!(report.host_data, [0xAB; 32]);
    // The measurement does not cover the policy: the same digest is predicted.
    assert_eq!(
        failed_checks(&dir, &predicted(&[]), "01", ""),
        Vec::<String>::new()
    );
    let failed = failed_checks(
        &dir,
        &predicted(&[]),
        "01",
        &format!("host_data = \"{}\"\n", "cd".repeat(32)),
    );
    assert_eq!(failed, ["host-data"]);
}

/// Writes an ID block for `measurement` signed by a fresh P-384 ID key and,
/// when `author` is set, an author key; returns (block, auth, id-key digest).
fn id_block(dir: &Path, measurement: &str, author: bool) -> (PathBuf, PathBuf, [u8; 48]) {
    use umbra_attestation::id_block::{IdAuth, IdBlock, SigningKey};
    use zerocopy::IntoBytes;
    let key = || {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
        let pem = openssl::ec::EcKey::generate(&group)
            .unwrap()
            .private_key_to_pem()
            .unwrap();
        SigningKey::from_pem(&pem).unwrap()
    };
    let ld: [u8; 48] = umbra_attestation::hex::decode_exact(measurement).unwrap();
    let block = IdBlock::new(ld, [1; 16], [2; 16], 7, 0x3_0000);
    let author_key = author.then(key);
    let auth = IdAuth::sign(&block, &key(), author_key.as_ref()).unwrap();
    let (b, a) = (dir.join("id_block.bin"), dir.join("id_auth.bin"));
    std::fs::write(&b, block.as_bytes()).unwrap();
    std::fs::write(&a, auth.as_bytes()).unwrap();
    (b, a, auth.id_key_digest())
}

#[test]
fn id_block_is_checked_at_finish_and_lands_in_the_report() {
    if !kvm_available() {
        return;
    }
    let work = scratch("e2e-idblock");
    let m1 = predicted(&[]);
    for author in [false, true] {
        let (block, auth, digest) = id_block(&work, &m1, author);
        let dir = attest(
            &format!("e2e-id-{author}"),
            &[
                "--id-block",
                block.to_str().unwrap(),
                "--id-auth",
                auth.to_str().unwrap(),
            ],
            "02",
        );
        let report =
            AttestationReport::from_bytes(&std::fs::read(dir.join("report.bin")).unwrap()).unwrap();
        assert_eq!(report.id_key_digest, digest);
        assert_eq!(
            (report.guest_svn, report.family_id, report.image_id),
            (7, [1; 16], [2; 16])
        );
        assert_eq!(report.key_info.author_key_en, author);
        let policy = format!(
            "id_key_digests = [\"{}\"]\n",
            umbra_attestation::hex::encode(&digest)
        );
        assert_eq!(
            failed_checks(&dir, &m1, "02", &policy),
            Vec::<String>::new()
        );
    }
    // The same ID block for a 2-vCPU launch: the digest differs, the model's
    // LAUNCH_FINISH refuses with BAD_MEASUREMENT and nothing runs.
    let (block, auth, _) = id_block(&work, &m1, false);
    let keys = model_keys();
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--model-keys",
        keys.to_str().unwrap(),
        "--vcpus",
        "2",
        "--id-block",
        block.to_str().unwrap(),
        "--id-auth",
        auth.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("SNP_LAUNCH_FINISH refused: BAD_MEASUREMENT"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "the guest never ran");
}
