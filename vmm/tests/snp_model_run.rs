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
    // The boot-information page, the GHCB (shared at boot, as an SNP guest
    // must before its first #VC) and the test page went shared, the test
    // page back.
    assert_eq!(s["page_states"]["conversions_to_shared"], 3);
    assert_eq!(s["page_states"]["conversions_to_private"], 1);
    assert_eq!(s["page_states"]["refused"], 1, "the ROM conversion");
    assert_eq!(s["page_states"]["shared_pages"], 2);
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

/// Every SNP scenario runs through the firmware's SNP path: its console is
/// port I/O that raises #VC (delivered by the model, as silicon raises it)
/// and goes out through GHCB IOIO exits; nothing reaches the VMM natively.
#[test]
fn scenarios_run_through_the_firmwares_snp_path() {
    if !kvm_available() {
        return;
    }
    for (scenario, vcpus, ok) in [
        ("hello", "1", "hello: ok"),
        ("smp", "4", "smp: 4 of 4 vCPUs checked in: ok"),
        ("attest report_data=0a0b", "1", "attest: "),
        ("psc", "1", "psc: private -> shared -> private"),
        ("private-read", "1", "private-read: ok"),
    ] {
        let dir = scratch(&format!("snp-path-{}", scenario.split(' ').next().unwrap()));
        let m = dir.join("m.json");
        let cmdline = format!("scenario={scenario}");
        let out = run_model(&["--vcpus", vcpus, "--cmdline", &cmdline], &m);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{scenario}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(ok), "{scenario}: {}", stdout(&out));
        let s = &metrics(&m)["snp"];
        assert!(
            s["ghcb_exits"]["ioio"].as_u64().unwrap() > 0,
            "{scenario}: {s}"
        );
        assert!(s["vc_injected"].as_u64().unwrap() > 0, "{scenario}: {s}");
        assert_eq!(
            s["fidelity_violations"],
            serde_json::json!([]),
            "{scenario}"
        );
    }
}

/// A guest without a #VC handler, as silicon would have it: its direct
/// port write stops the run, naming the port and the #VC.
#[test]
fn a_direct_port_write_without_a_vc_handler_stops_the_run() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("no-vc");
    let m = dir.join("m.json");
    let out = run_model(&["--cmdline", "scenario=no-vc"], &m);
    assert_eq!(
        out.status.code(),
        Some(123),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("direct port write to 0x80"), "{err}");
    assert!(err.contains("silicon would raise #VC"), "{err}");
    let s = &metrics(&m)["snp"];
    assert_eq!(s["fidelity_violations"][0]["kind"], "ioio");
    assert_eq!(s["fidelity_violations"][0]["address"], 0x80);
}

/// A guest request whose shared request page the guest mapped with the
/// C-bit (its writes would land encrypted on silicon, and the access
/// fault): the model walks the guest's page tables at the request and
/// stops the run, naming the page. The other SNP scenarios, which map what
/// they share without it and what is private with it, pass the same check.
#[test]
fn a_shared_page_mapped_with_the_c_bit_stops_the_run() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("no-cbit");
    let m = dir.join("m.json");
    let out = run_model(&["--cmdline", "scenario=no-cbit"], &m);
    assert_eq!(
        out.status.code(),
        Some(123),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("the request page at 0x1b000, shared, is mapped with the C-bit"),
        "{err}"
    );
    assert!(err.contains("silicon would fault (RMP #NPF)"), "{err}");
    let s = &metrics(&m)["snp"];
    assert_eq!(s["fidelity_violations"][0]["kind"], "c-bit");
    assert_eq!(s["fidelity_violations"][0]["address"], 0x1b000);
    // attest makes the same request with the page mapped shared: no violation.
    let m = dir.join("attest.json");
    let out = run_model(&["--cmdline", "scenario=attest report_data=0a"], &m);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        metrics(&m)["snp"]["fidelity_violations"],
        serde_json::json!([])
    );
}
