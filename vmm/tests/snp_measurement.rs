//! `umbra run --print-measurement` predicts the same launch digest as
//! sev-snp-measure for umbra's firmware and Debian's OVMF.fd, over vCPU
//! counts, vCPU types and guest features.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::process::Command;

#[test]
fn print_measurement_matches_sev_snp_measure() {
    let present = Command::new("sev-snp-measure")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    let ovmf = "/usr/share/ovmf/OVMF.fd";
    if !peer_available(
        "sev-snp-measure and Debian's OVMF.fd",
        present && std::path::Path::new(ovmf).is_file(),
    ) {
        return;
    }
    let dir = scratch("snp-measure");
    let ours = dir.join("umbra-firmware.fd");
    let out = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .arg("export-firmware")
        .arg(&ours)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let cases = [
        (1, "EPYC-v4", "0x1"),
        (2, "EPYC-Milan", "0x21"),
        (3, "EPYC-Genoa", "0x1"),
        (4, "EPYC-Rome", "0x1"),
        (8, "EPYC-v4", "0x1"),
    ];
    for firmware in [ours.to_str().unwrap(), ovmf] {
        for (vcpus, vcpu_type, features) in cases {
            let v = vcpus.to_string();
            let predicted = Command::new(env!("CARGO_BIN_EXE_umbra"))
                .args([
                    "run",
                    "--platform",
                    "snp-model",
                    "--print-measurement",
                    "--firmware",
                    firmware,
                ])
                .args([
                    "--vcpus",
                    &v,
                    "--vcpu-type",
                    vcpu_type,
                    "--guest-features",
                    features,
                ])
                .output()
                .unwrap();
            assert_eq!(predicted.status.code(), Some(0), "{}", stderr(&predicted));
            let theirs = sev_snp_measure(&[
                "--mode",
                "snp",
                "--vcpus",
                &v,
                "--vcpu-type",
                vcpu_type,
                "--guest-features",
                features,
                "--ovmf",
                firmware,
            ])
            .unwrap();
            assert_eq!(
                stdout(&predicted).trim(),
                theirs,
                "{firmware} {vcpus} x {vcpu_type} {features}"
            );
        }
    }
}

#[test]
fn print_measurement_refuses_what_cannot_be_launched() {
    let out = umbra(&["run", "--print-measurement"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("needs --platform snp or snp-model"));
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--print-measurement",
        "--policy",
        "0x0",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("must have bit 17 set"),
        "{}",
        stderr(&out)
    );
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--print-measurement",
        "--vcpu-type",
        "Pentium",
    ]);
    assert!(stderr(&out).contains("unknown vCPU type 'Pentium'"));
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--print-measurement",
        "--host-data",
        "00",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
