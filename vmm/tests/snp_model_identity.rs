//! Cross-backend identity: for umbra's firmware and Debian's OVMF.fd, over
//! 1 to 8 vCPUs and several vCPU types, the digest the SNP firmware model
//! computes at LAUNCH_FINISH (driven by umbra's launch engine) equals the
//! attestation library's prediction and sev-snp-measure's.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::process::Command;
use umbra_snp_model::psp::{Platform, SnpFirmwareModel};
use umbra_vmm::backend::snp_model::ModelLaunch;
use umbra_vmm::launch::{execute, LaunchOptions, LaunchPlan, DEFAULT_POLICY};
use vm_memory::{GuestAddress, GuestMemoryMmap};

fn model_digest(image: &[u8], vcpus: u32, vcpu_type: &str, features: u64) -> (String, String) {
    let options = LaunchOptions {
        vcpus,
        vcpu_type: vcpu_type.into(),
        guest_features: features,
        policy: DEFAULT_POLICY,
        host_data: [0; 32],
        id_block: None,
        id_auth: None,
    };
    let plan = LaunchPlan::new(image, options).unwrap();
    let rom = (1u64 << 32) - image.len() as u64;
    let ranges = [(0u64, 64u64 << 20), (rom, image.len() as u64)];
    let memory = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 64 << 20),
        (GuestAddress(rom), image.len()),
    ])
    .unwrap();
    // The VMM proposes a CPUID page (the firmware refuses an empty one); one
    // entry is enough here, its contents are not measured.
    let mut cpuid = [0u8; 4096];
    cpuid[0..4].copy_from_slice(&1u32.to_le_bytes());
    for step in plan
        .updates()
        .filter(|s| s.page_type == umbra_vmm::backend::confidential::PageType::Cpuid)
    {
        vm_memory::Bytes::write_slice(&memory, &cpuid, GuestAddress(step.gpa)).unwrap();
    }
    let mut model = SnpFirmwareModel::new(&ranges, None, Platform::default()).unwrap();
    let (_, finished) = execute(ModelLaunch::new(&mut model, &memory), &plan).unwrap();
    let hex = umbra_attestation::hex::encode(&finished.measurement);
    (
        hex,
        umbra_attestation::hex::encode(&plan.expected_measurement().unwrap()),
    )
}

#[test]
fn model_digest_equals_prediction_and_sev_snp_measure() {
    let peer = Command::new("sev-snp-measure")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    let ovmf_path = "/usr/share/ovmf/OVMF.fd";
    if !peer_available(
        "sev-snp-measure and Debian's OVMF.fd",
        peer && std::path::Path::new(ovmf_path).is_file(),
    ) {
        return;
    }
    let dir = scratch("identity");
    let ours_path = dir.join("umbra-firmware.fd");
    std::fs::write(&ours_path, umbra_vmm::firmware::EMBEDDED_FIRMWARE).unwrap();
    let ovmf = std::fs::read(ovmf_path).unwrap();
    let images: [(&str, &[u8]); 2] = [
        (
            ours_path.to_str().unwrap(),
            umbra_vmm::firmware::EMBEDDED_FIRMWARE,
        ),
        (ovmf_path, &ovmf),
    ];
    let cases = [
        (1, "EPYC-v4", 1u64),
        (2, "EPYC-Milan", 1),
        (3, "EPYC-Genoa", 0x21),
        (5, "EPYC-Rome", 1),
        (8, "EPYC-v4", 1),
    ];
    for (path, image) in images {
        for (vcpus, vcpu_type, features) in cases {
            let (model, predicted) = model_digest(image, vcpus, vcpu_type, features);
            let theirs = sev_snp_measure(&[
                "--mode",
                "snp",
                "--vcpus",
                &vcpus.to_string(),
                "--vcpu-type",
                vcpu_type,
                "--guest-features",
                &format!("{features:#x}"),
                "--ovmf",
                path,
            ])
            .unwrap();
            assert_eq!(
                model, predicted,
                "{path} {vcpus} x {vcpu_type}: model vs prediction"
            );
            assert_eq!(
                model, theirs,
                "{path} {vcpus} x {vcpu_type}: model vs sev-snp-measure"
            );
        }
    }
}
