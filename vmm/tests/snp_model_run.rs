//! `--platform snp-model` end to end under real KVM: the model launches the
//! firmware with the digest `--print-measurement` (and sev-snp-measure)
//! predicts, the guest finds SNP through SEV_STATUS, converts pages through
//! the GHCB MSR protocol, and the VMM sees only shared pages.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

fn run_model(args: &[&str], metrics_path: &std::path::Path) -> std::process::Output {
    let keys = model_keys();
    let mut all = vec![
        "run",
        "--platform",
        "snp-model",
        "--model-keys",
        keys.to_str().unwrap(),
    ];
    all.extend_from_slice(&["--metrics-json", metrics_path.to_str().unwrap()]);
    all.extend_from_slice(args);
    umbra(&all)
}

#[test]
fn model_launch_digest_is_the_predicted_one() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("model-digest");
    for (vcpus, vcpu_type) in [("1", "EPYC-v4"), ("4", "EPYC-Milan")] {
        let m = dir.join(format!("m{vcpus}.json"));
        let args = ["--vcpus", vcpus, "--vcpu-type", vcpu_type];
        let mut with_scenario = args.to_vec();
        with_scenario.extend_from_slice(&["--cmdline", "scenario=smp"]);
        let out = run_model(&with_scenario, &m);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stdout(&out).contains("platform snp-model, SEV_STATUS 0x0000000000000007"),
            "{}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains("guest memory is NOT encrypted"),
            "the banner says so loudly"
        );
        let m = metrics(&m);
        assert_eq!(m["snp"]["measurement"].as_str().unwrap(), predicted(&args));
        assert_eq!(m["snp"]["model"]["state"], "Running");
    }
}

#[test]
fn page_state_changes_are_seen_by_the_vmm() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("model-psc");
    let m = dir.join("m.json");
    let out = run_model(&["--cmdline", "scenario=psc"], &m);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("psc: private -> shared -> private seen correctly by the VMM"));
    let s = &metrics(&m)["snp"];
    // The boot-information page and the test page went shared, the test page back.
    assert_eq!(s["page_states"]["conversions_to_shared"], 2);
    assert_eq!(s["page_states"]["conversions_to_private"], 1);
    assert_eq!(s["page_states"]["refused"], 1, "the ROM conversion");
    assert_eq!(s["page_states"]["shared_pages"], 1);
    assert_eq!(
        s["model"]["rmp"]["pvalidate_no_update"], 1,
        "the double validation"
    );
}

#[test]
fn the_vmm_cannot_read_private_pages() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("model-private");
    let out = run_model(&["--cmdline", "scenario=private-read"], &dir.join("m.json"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("VMM read of the secrets page: refused"));
}

#[test]
fn snp_scenarios_need_an_snp_platform() {
    if !kvm_available() {
        return;
    }
    for scenario in ["attest", "psc", "private-read"] {
        let out = umbra(&["run", "--cmdline", &format!("scenario={scenario}")]);
        assert_eq!(out.status.code(), Some(2), "{scenario}");
        assert!(stdout(&out).contains("needs an SNP platform"));
    }
    let out = umbra(&["run", "--platform", "snp-model", "--kernel", "/dev/null"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("measured direct kernel boot is not built yet"));
}
