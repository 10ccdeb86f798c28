//! Helpers shared by the integration tests: the KVM skip/require rule of
//! DESIGN.md section 6 and a runner for the `umbra` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// Whether KVM tests can run. Without /dev/kvm a test prints why and
/// returns early, unless UMBRA_REQUIRE_KVM=1, where that is a failure.
pub fn kvm_available() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        assert!(
            std::env::var("UMBRA_REQUIRE_KVM").as_deref() != Ok("1"),
            "UMBRA_REQUIRE_KVM=1 but /dev/kvm cannot be opened"
        );
        eprintln!("skipped: /dev/kvm cannot be opened");
    }
    ok
}

/// Whether an optional peer tool or file is present; absent fails the test
/// under UMBRA_REQUIRE_PEERS=1, otherwise it is a printed skip.
pub fn peer_available(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            std::env::var("UMBRA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "UMBRA_REQUIRE_PEERS=1 but {what} is missing"
        );
        eprintln!("skipped: {what} is missing");
    }
    present
}

/// Runs `umbra` with the arguments and a safety timeout.
pub fn umbra(args: &[&str]) -> Output {
    let has_timeout = args.iter().any(|a| a.starts_with("--timeout"));
    let safety: &[&str] = if has_timeout {
        &[]
    } else {
        &["--timeout", "120"]
    };
    Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(args)
        .args(safety)
        .output()
        .expect("spawn umbra")
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("umbra-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Reads the metrics JSON a run wrote.
pub fn metrics(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("metrics file written");
    serde_json::from_str(&text).expect("metrics are JSON")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One SNP-model key directory per test binary (RSA-4096 generation is slow).
pub fn model_keys() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("umbra-test-model-keys-{}", std::process::id()));
        let store = umbra_vmm::backend::snp_model::DirKeyStore::new(dir.clone());
        umbra_snp_model::keys::ModelKeys::load_or_generate(&store)
            .expect("generate the model's keys");
        dir
    })
    .clone()
}

/// `--platform PLATFORM`, with the shared model keys for `snp-model`.
pub fn platform_args(platform: &str) -> Vec<String> {
    let mut args = vec!["--platform".to_string(), platform.to_string()];
    if platform == "snp-model" {
        args.push("--model-keys".into());
        args.push(model_keys().display().to_string());
    }
    args
}

/// The digest `umbra run --platform snp-model --print-measurement` predicts.
pub fn predicted(extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(["run", "--platform", "snp-model", "--print-measurement"])
        .args(extra)
        .output()
        .expect("spawn umbra");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// Runs sev-snp-measure (the launch-digest oracle) with `args`; its digest,
/// lower case. `None` when it is not installed (the caller decides, with
/// [`peer_available`], whether that may skip).
pub fn sev_snp_measure(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("sev-snp-measure")
        .args(args)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "sev-snp-measure {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_lowercase())
}
