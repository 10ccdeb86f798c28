//! `umbra-attest report show` and `umbra-attest verify` as a user runs them:
//! exit codes per failure class, one clear line per bad input, never a
//! panic. Uses the real vectors in `$UMBRA_VECTORS` (skips when unset).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn vectors() -> Option<PathBuf> {
    common::vectors()
}

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn run(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
        .args(args)
        // Keep the user's KDS cache out of these tests.
        .env("UMBRA_KDS_CACHE", "/nonexistent/umbra-test-cache")
        .output()
        .expect("run umbra-attest");
    let r = Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!r.err.contains("panicked"), "panic: {}", r.err);
    r
}

fn p(dir: &Path, rel: &str) -> String {
    dir.join(rel).display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("umbra-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn expected(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("EXPECTED.json")).expect("read")).expect("json")
}

const MILAN_R: &str = "milan-gosevguest/attestation.bin";
const MILAN_V: &str = "milan-gosevguest/vcek.der";

#[test]
fn report_show_prints_every_field_of_every_vector() {
    let Some(v) = vectors() else { return };
    let exp = expected(&v);
    for (name, case) in exp["cases"].as_object().expect("cases") {
        let f = case["report_file"]
            .as_str()
            .expect("file")
            .split(' ')
            .next()
            .unwrap_or("");
        let r = run(&["report", "show", &p(&v, f), "--format", "json"]);
        assert_eq!(r.code, 0, "{name}: {}", r.err);
        let j: Value = serde_json::from_str(&r.out).expect("json");
        let e = &case["report"];
        assert_eq!(j["measurement"], e["measurement"], "{name}");
        assert_eq!(j["chip_id"], e["chip_id"], "{name}");
        assert_eq!(j["reported_tcb"]["raw"], e["reported_tcb"]["raw"], "{name}");
        assert_eq!(
            j["reported_tcb"]["microcode"], e["reported_tcb"]["microcode"],
            "{name}"
        );
        assert_eq!(j["key_info"]["signing_key"], e["signing_key"], "{name}");
        assert_eq!(j["version"], e["version"], "{name}");
        let text = run(&["report", "show", &p(&v, f)]);
        assert_eq!(text.code, 0);
        for field in [
            "measurement:",
            "debug:",
            "smt_enabled:",
            "bootloader:",
            "signing_key:",
            "chip_id:",
        ] {
            assert!(text.out.contains(field), "{name}: {field} missing");
        }
    }
    // The Turin v5 report: FMC and mitigation vectors are shown.
    let t = run(&[
        "report",
        "show",
        &p(
            &v,
            "ms-tee-attestation-verification/tests_test_data/turin_attestation_report.bin",
        ),
    ]);
    assert!(
        t.out.contains("fmc: 1") && t.out.contains("launch_mit_vector: 0x3f"),
        "{}",
        t.out
    );
    assert!(t.out.contains("product: Turin"));
    // The Azure HCL report embeds the SNP report at 0x20.
    let h = run(&[
        "report",
        "show",
        &p(&v, "azure-snp-vtpm/hcl-report.bin"),
        "--format",
        "json",
    ]);
    assert_eq!(h.code, 0, "{}", h.err);
    let j: Value = serde_json::from_str(&h.out).expect("json");
    assert_eq!(
        j["measurement"],
        exp["cases"]["azure-milan-hcl"]["report"]["measurement"]
    );
}

#[test]
fn malformed_input_is_one_line_and_exit_3() {
    let Some(v) = vectors() else { return };
    let t = tmpdir("bad");
    let good = std::fs::read(v.join(MILAN_R)).expect("read");
    let write = |name: &str, bytes: &[u8]| {
        let f = t.join(name);
        std::fs::write(&f, bytes).expect("write");
        f.display().to_string()
    };
    let truncated = write("truncated.bin", &good[..1000]);
    let mut big = good.clone();
    big.extend_from_slice(&[0; 16]);
    let oversized = write("oversized.bin", &big);
    let mut v7 = good.clone();
    v7[0] = 7;
    let wrong_version = write("v7.bin", &v7);
    let vcek = p(&v, MILAN_V);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![truncated.clone()], "1000 bytes, expected exactly 1184"),
        (vec![oversized], "1200 bytes, expected exactly 1184"),
        (vec![wrong_version], "version 7 is not supported"),
        (vec![p(&v, "no-such-file.bin")], "cannot read"),
        (vec![t.display().to_string()], "cannot read"),
        // A certificate given as the report.
        (vec![vcek.clone()], "expected exactly 1184"),
    ];
    for (report, needle) in cases {
        let r = run(&["verify", "--report", &report[0], "--vcek", &vcek]);
        assert_eq!(r.code, 3, "{report:?}: {}{}", r.out, r.err);
        assert_eq!(r.err.trim().lines().count(), 1, "one line: {}", r.err);
        assert!(
            r.err.contains(needle),
            "{report:?}: {:?} lacks {needle:?}",
            r.err
        );
        let s = run(&["report", "show", &report[0]]);
        assert_eq!(s.code, 3, "report show {report:?}");
    }
    let report = p(&v, MILAN_R);
    let pem_garbage = write(
        "garbage.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let key_pem = write(
        "key.pem",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let bad_toml = write("bad.toml", b"measurements = [");
    let unknown_key = write("unknown.toml", b"measurment = [\"00\"]");
    let bad_crl = write("bad.crl", b"not a crl");
    let cert_cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--vcek", &report], "not a DER certificate"),
        (vec!["--vcek", &pem_garbage], "not a PEM certificate"),
        (vec!["--vcek", &key_pem], "not a PEM certificate"),
        (
            vec!["--vcek", &vcek, "--ask", &report],
            "not a DER certificate",
        ),
        (
            vec!["--vcek", &vcek, "--trust-root", "/nonexistent.pem"],
            "cannot read",
        ),
        (vec!["--vcek", &vcek, "--crl", &bad_crl], "not a CRL"),
        (
            vec!["--vcek", &vcek, "--policy", &bad_toml],
            "not valid TOML",
        ),
        (
            vec!["--vcek", &vcek, "--policy", &unknown_key],
            "measurment",
        ),
        (vec![], "no VCEK/VLEK"),
    ];
    // Bad flag values are usage errors (exit 2), as the docs say.
    let flag_cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--vcek", &vcek, "--measurement", "abcd"],
            "expected 48 bytes",
        ),
        (
            vec!["--vcek", &vcek, "--at", "yesterday"],
            "not an RFC 3339 time",
        ),
        (
            vec!["--vcek", &vcek, "--forbid-policy", "debgu"],
            "unknown bit name",
        ),
    ];
    for ((extra, needle), code) in cert_cases
        .into_iter()
        .map(|c| (c, 3))
        .chain(flag_cases.into_iter().map(|c| (c, 2)))
    {
        let args = [&["verify", "--report", &report][..], &extra[..]].concat();
        let r = run(&args);
        assert_eq!(r.code, code, "{extra:?}: {}{}", r.out, r.err);
        assert_eq!(r.err.trim().lines().count(), 1, "one line: {}", r.err);
        assert!(
            r.err.contains(needle),
            "{extra:?}: {:?} lacks {needle:?}",
            r.err
        );
    }
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn authenticity_failures_exit_4_and_name_the_check() {
    let Some(v) = vectors() else { return };
    let report = p(&v, MILAN_R);
    let cases: Vec<(Vec<String>, &str)> = vec![
        // A VCEK for another chip.
        (
            vec!["--vcek".into(), p(&v, "milan-virtee-sev/vcek_milan.der")],
            "FAIL chip-id",
        ),
        // An ASK from another product.
        (
            vec![
                "--vcek".into(),
                p(&v, MILAN_V),
                "--ask".into(),
                p(&v, "amd-roots/virtee-sev/genoa/ask.pem"),
            ],
            "FAIL ask-product",
        ),
        // A different, non-AMD root (the Milan ASK posing as ARK).
        (
            vec![
                "--vcek".into(),
                p(&v, MILAN_V),
                "--ark".into(),
                p(&v, "amd-roots/virtee-sev/milan/ask.pem"),
            ],
            "FAIL ark-pinned",
        ),
        // A tampered report.
        (
            vec!["--vcek".into(), p(&v, "milan-trustee-vcek/test-vcek.der")],
            "FAIL report-signature",
        ),
    ];
    for (extra, needle) in cases {
        let r_path = if needle == "FAIL report-signature" {
            p(&v, "negative/trustee_test-report_byte42_plus1.bin")
        } else {
            report.clone()
        };
        let args: Vec<&str> = ["verify", "--report", r_path.as_str()]
            .into_iter()
            .chain(extra.iter().map(String::as_str))
            .collect();
        let r = run(&args);
        assert_eq!(r.code, 4, "{extra:?}: {}", r.out);
        assert!(r.out.contains(needle), "{extra:?}: {}", r.out);
    }
    // The expired VLEK: fails today, verifies at a time inside its validity.
    let vr = p(&v, "milan-trustee-vlek/test-vlek-report.bin");
    let vl = p(&v, "milan-trustee-vlek/test-vlek.der");
    let r = run(&["verify", "--report", &vr, "--vlek", &vl]);
    assert_eq!(r.code, 4);
    assert!(
        r.out.contains("FAIL vlek-validity") && r.out.contains("expired"),
        "{}",
        r.out
    );
    let r = run(&[
        "verify",
        "--report",
        &vr,
        "--vlek",
        &vl,
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(r.code, 0, "{}", r.out);
    // The VLEK passed as --vcek: KEY_INFO disagrees.
    let r = run(&[
        "verify",
        "--report",
        &vr,
        "--vcek",
        &vl,
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!(r.code, 4);
    assert!(r.out.contains("FAIL signing-key"), "{}", r.out);
    // A KDS bundle (ASVK, ARK) with --chain.
    let r = run(&[
        "verify",
        "--report",
        &vr,
        "--vlek",
        &vl,
        "--at",
        "2025-06-01T00:00:00Z",
        "--chain",
        &p(&v, "amd-roots/go-sev-guest/ask_ark_milan_vlek.pem"),
    ]);
    assert_eq!(r.code, 0, "{}", r.out);
    // The same authentic bundle with the ARK first.
    let pem = std::fs::read_to_string(v.join("amd-roots/go-sev-guest/ask_ark_milan_vlek.pem"))
        .expect("read");
    let certs: Vec<&str> = pem
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .collect();
    assert_eq!(certs.len(), 2);
    let t = tmpdir("ark-first");
    let reversed = t.join("ark_ask.pem");
    std::fs::write(
        &reversed,
        format!("{}\n{}\n", certs[1].trim(), certs[0].trim()),
    )
    .expect("write");
    let r = run(&[
        "verify",
        "--report",
        &vr,
        "--vlek",
        &vl,
        "--at",
        "2025-06-01T00:00:00Z",
        "--chain",
        &reversed.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "ARK-then-ASK: {}{}", r.out, r.err);
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn policy_flags_and_file() {
    let Some(v) = vectors() else { return };
    let exp = expected(&v);
    let case = &exp["cases"]["trustee-milan-vcek"]["report"];
    let report = p(&v, "milan-trustee-vcek/test-report.bin");
    let vcek = p(&v, "milan-trustee-vcek/test-vcek.der");
    let m = case["measurement"].as_str().expect("m");
    let idk = case["id_key_digest"].as_str().expect("idk");
    let rd = case["report_data"].as_str().expect("rd");
    let base = [
        "verify",
        "--report",
        report.as_str(),
        "--vcek",
        vcek.as_str(),
    ];
    let ok = |extra: &[&str]| {
        let r = run(&[&base[..], extra].concat());
        assert_eq!(r.code, 0, "{extra:?}: {}", r.out);
    };
    let policy_fail = |extra: &[&str], needle: &str| {
        let r = run(&[&base[..], extra].concat());
        assert_eq!(r.code, 1, "{extra:?}: {}", r.out);
        assert!(r.out.contains(needle), "{extra:?}: {}", r.out);
    };
    ok(&[
        "--measurement",
        m,
        "--id-key-digest",
        idk,
        "--report-data",
        rd,
        "--min-guest-svn",
        "4",
    ]);
    ok(&[
        "--nonce",
        &rd[..64],
        "--family-id",
        &format!("01{}", "00".repeat(15)),
        "--vmpl",
        "0",
        "--signing-key",
        "vcek",
    ]);
    ok(&[
        "--min-tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        "--min-version",
        "1.52",
        "--min-build",
        "4",
    ]);
    ok(&[
        "--forbid-policy",
        "debug",
        "--forbid-policy",
        "migrate_ma",
        "--require-policy",
        "smt",
    ]);
    ok(&["--require-platform", "smt_enabled", "--min-abi", "0.31"]);
    policy_fail(&["--measurement", &"00".repeat(48)], "FAIL measurement");
    policy_fail(&["--min-guest-svn", "5"], "FAIL guest-svn");
    policy_fail(&["--min-tcb", "ucode=116"], "FAIL min-tcb-reported");
    policy_fail(&["--min-version", "1.55"], "FAIL firmware-version");
    policy_fail(&["--vmpl", "1"], "FAIL vmpl");
    policy_fail(&["--signing-key", "vlek"], "FAIL signing-key-allowed");
    policy_fail(
        &["--require-policy", "single_socket"],
        "FAIL guest-policy-single-socket",
    );
    policy_fail(
        &["--forbid-platform", "smt_enabled"],
        "FAIL platform-info-smt-enabled",
    );
    policy_fail(&["--report-data", "00"], "FAIL report-data");
    policy_fail(&["--host-data", &"11".repeat(32)], "FAIL host-data");

    // The same in a TOML file.
    let t = tmpdir("policy");
    let file = t.join("policy.toml");
    std::fs::write(
        &file,
        format!(
            "measurements = [\"{m}\"]\nid_key_digests = [\"{idk}\"]\nmin_guest_svn = 4\nvmpl = 0\n\
             signing_key = \"vcek\"\nproduct = \"milan\"\nmin_version = \"1.52\"\n\
             [min_tcb]\nbootloader = 3\nmicrocode = 115\n\
             [guest_policy]\nforbid = [\"debug\", \"migrate_ma\"]\nmin_abi = \"0.31\"\n\
             [platform_info]\nrequire = [\"smt_enabled\"]\n"
        ),
    )
    .expect("write");
    let fs = file.display().to_string();
    ok(&["--policy", &fs]);
    policy_fail(&["--policy", &fs, "--min-guest-svn", "9"], "FAIL guest-svn");
    let r = run(&[&base[..], &["--policy", &fs, "--format", "json"]].concat());
    let j: Value = serde_json::from_str(&r.out).expect("json");
    assert_eq!(j["ok"], Value::Bool(true));
    assert!(j["checks"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["name"] == "product-allowed")));

    // Without a policy a debug-enabled guest is authentic, with a warning.
    let r = run(&[
        "verify",
        "--report",
        &p(&v, MILAN_R),
        "--vcek",
        &p(&v, MILAN_V),
    ]);
    assert_eq!(r.code, 0);
    assert!(r.out.contains("warn policy-debug"), "{}", r.out);
    let r = run(&[
        "verify",
        "--report",
        &p(&v, MILAN_R),
        "--vcek",
        &p(&v, MILAN_V),
        "--forbid-policy",
        "debug",
    ]);
    assert_eq!(r.code, 1);
    let _ = std::fs::remove_dir_all(&t);
}

/// `--certs DIR` as the VMM's model will call it (files copied into a temp
/// dir at run time, never into the repository).
#[test]
fn certs_dir_with_amd_vectors() {
    let Some(v) = vectors() else { return };
    let t = tmpdir("certs");
    for (src, dst) in [
        (
            "ms-tee-attestation-verification/tests_test_data/turin_attestation_report.bin",
            "report.bin",
        ),
        (
            "ms-tee-attestation-verification/tests_test_data/turin_vcek.pem",
            "vcek.pem",
        ),
        ("amd-roots/virtee-sev/turin/ark.pem", "ark.pem"),
        ("amd-roots/virtee-sev/turin/ask.pem", "ask.pem"),
    ] {
        std::fs::copy(v.join(src), t.join(dst)).expect("copy");
    }
    let d = t.display().to_string();
    let exp = expected(&v);
    let m = exp["cases"]["ms-tav-turin"]["report"]["measurement"]
        .as_str()
        .expect("m")
        .to_string();
    let rd = "00".repeat(64);
    let r = run(&[
        "verify",
        "--report",
        &format!("{d}/report.bin"),
        "--certs",
        &d,
        "--trust-root",
        &format!("{d}/ark.pem"),
        "--measurement",
        &m,
        "--report-data",
        &rd,
    ]);
    assert_eq!(r.code, 0, "{}{}", r.out, r.err);
    // DER names work too.
    std::fs::remove_file(t.join("vcek.pem")).expect("rm");
    std::fs::copy(
        v.join("turin-virtee-sev-vcek/vcek_turin.der"),
        t.join("vcek.der"),
    )
    .expect("copy");
    let r = run(&[
        "verify",
        "--report",
        &format!("{d}/report.bin"),
        "--certs",
        &d,
    ]);
    assert_eq!(r.code, 4, "another chip's VCEK: {}", r.out);
    assert!(r.out.contains("FAIL chip-id"));
    let _ = std::fs::remove_dir_all(&t);
}

/// Runs umbra-attest with stdout at `stdout`; returns (exit code, stderr).
fn run_to(args: &[&str], stdout: std::process::Stdio) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
        .args(args)
        .env("UMBRA_KDS_CACHE", "/nonexistent/umbra-test-cache")
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run umbra-attest");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_full_or_closed_stdout_keeps_the_verdict_code() {
    let Some(v) = vectors() else { return };
    let (report, vcek) = (p(&v, MILAN_R), p(&v, MILAN_V));
    let verify = [
        "verify",
        "--report",
        report.as_str(),
        "--vcek",
        vcek.as_str(),
    ];
    let wrong = [
        "verify",
        "--report",
        report.as_str(),
        "--vcek",
        vcek.as_str(),
        "--report-data",
        "00",
    ];
    for args in [
        &verify[..],
        &wrong[..],
        &["report", "show", report.as_str()][..],
    ] {
        let expected = run(args).code;
        // /dev/full: every write fails with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let (code, err) = run_to(args, full.into());
        assert_eq!(code, expected, "{args:?} > /dev/full: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // A pipe whose reader is gone, as `| head -c1` leaves it.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let (code, err) = run_to(args, writer.into());
        assert_eq!(code, expected, "{args:?} | (closed): {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bad_policy_flag_values_are_usage_errors() {
    let Some(v) = vectors() else { return };
    let (report, vcek) = (p(&v, MILAN_R), p(&v, MILAN_V));
    for (flag, value, needle) in [
        ("--measurement", "zz", "invalid hex"),
        ("--min-tcb", "bl=x", "is not a TCB"),
        // A one-byte CHIP_ID would match by prefix almost any masked chip.
        ("--chip-id", "00", "expected 64 bytes"),
    ] {
        let r = run(&["verify", "--report", &report, "--vcek", &vcek, flag, value]);
        assert_eq!(r.code, 2, "{flag} {value}: {}", r.err);
        assert_eq!(r.err.trim().lines().count(), 1, "{flag}: {}", r.err);
        assert!(r.err.contains(needle), "{flag}: {}", r.err);
    }
}

#[test]
fn base64_and_hex_reports_are_read_like_the_binary() {
    let Some(v) = vectors() else { return };
    use base64::Engine as _;
    let raw = std::fs::read(v.join(MILAN_R)).expect("read");
    let t = tmpdir("encodings");
    let b64 = t.join("report.b64");
    std::fs::write(
        &b64,
        base64::engine::general_purpose::STANDARD.encode(&raw) + "\n",
    )
    .expect("write");
    let hexfile = t.join("report.hex");
    std::fs::write(&hexfile, umbra_attestation::hex::encode(&raw)).expect("write");
    let vcek = p(&v, MILAN_V);
    let binary = run(&["verify", "--report", &p(&v, MILAN_R), "--vcek", &vcek]);
    for f in [&b64, &hexfile] {
        let r = run(&[
            "verify",
            "--report",
            &f.display().to_string(),
            "--vcek",
            &vcek,
        ]);
        assert_eq!(r.code, binary.code, "{}: {}", f.display(), r.err);
        assert_eq!(r.out, binary.out, "{}", f.display());
    }
    let _ = std::fs::remove_dir_all(&t);
}

#[test]
fn an_ask_given_as_the_vcek_is_named_as_the_wrong_certificate() {
    let Some(v) = vectors() else { return };
    let r = run(&[
        "verify",
        "--report",
        &p(&v, MILAN_R),
        "--vcek",
        &p(&v, "amd-roots/virtee-sev/milan/ask.pem"),
    ]);
    assert_eq!(r.code, 4, "{}{}", r.out, r.err);
    let line = r
        .out
        .lines()
        .find(|l| l.contains("vek-extensions"))
        .unwrap_or_default();
    assert!(line.starts_with("FAIL"), "{}", r.out);
    assert!(
        line.contains("CN=SEV-Milan") && line.contains("not a VCEK or VLEK"),
        "{line}"
    );
}

#[test]
fn a_product_mismatch_still_reports_the_signature_as_it_is() {
    let Some(v) = vectors() else { return };
    let r = run(&[
        "verify",
        "--report",
        &p(&v, "genoa-trustee-e2e/derived-report.bin"),
        "--vcek",
        &p(&v, "genoa-trustee-e2e/derived-vcek.der"),
        "--product",
        "milan",
    ]);
    assert_ne!(r.code, 0, "{}", r.out);
    assert!(r.out.contains("FAIL product"), "{}", r.out);
    let sig = r
        .out
        .lines()
        .find(|l| l.contains("report-signature"))
        .unwrap_or_default();
    assert!(
        sig.starts_with("ok"),
        "the key and signature are fine: {}",
        r.out
    );
    assert!(!r.out.contains("no usable VEK public key"), "{}", r.out);
}
