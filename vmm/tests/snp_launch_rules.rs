//! What silicon's stack refuses at launch, umbra refuses first and names:
//! policy bits the kernel or the firmware would refuse, and VMSA features
//! KVM changes (SNPActive is always set).
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn a_refused_policy_bit_is_named_in_one_line() {
    for (policy, bit) in [
        ("0x20000", "bit 16 (SMT)"),
        ("0x10000", "bit 17 (reserved, must be one)"),
        ("0x70000", "bit 18 (MIGRATE_MA)"),
        ("0x130000", "bit 20 (SINGLE_SOCKET)"),
        ("0x1030000", "bit 24 (CIPHERTEXT_HIDING)"),
        ("0x400030000", "bit 34 (reserved)"),
    ] {
        let out = umbra(&["run", "--platform", "snp-model", "--policy", policy]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{policy}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("umbra: ")).collect();
        assert_eq!(lines.len(), 1, "{policy}: {err}");
        assert!(lines[0].contains(bit), "{policy}: {err}");
        assert!(!err.contains("panicked"));
    }
}

#[test]
fn on_snp_a_structurally_refused_bit_is_named_before_the_host_is_probed() {
    for (policy, bit) in [
        ("0x10000", "bit 17 (reserved, must be one)"),
        ("0x400030000", "bit 34 (reserved)"),
    ] {
        let out = umbra(&["run", "--platform", "snp", "--policy", policy]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{policy}: {err}");
        assert_eq!(err.lines().count(), 1, "{policy}: {err}");
        assert!(err.contains(bit), "{policy}: {err}");
    }
}

#[test]
fn guest_features_without_snp_active_predict_what_kvm_launches_and_say_so() {
    let with = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--print-measurement",
        "--guest-features",
        "0x21",
    ]);
    let without = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--print-measurement",
        "--guest-features",
        "0x20",
    ]);
    assert_eq!(with.status.code(), Some(0), "{}", stderr(&with));
    assert_eq!(without.status.code(), Some(0), "{}", stderr(&without));
    assert_eq!(stdout(&with), stdout(&without));
    assert!(
        stderr(&without).contains("launches as 0x21: KVM always sets SNPActive"),
        "{}",
        stderr(&without)
    );
    assert!(!stderr(&with).contains("SNPActive"));
}
