//! The firmware the VMM embeds is measurable like OVMF: the attestation
//! library finds the footer table and SEV metadata the firmware crate
//! declares, and sev-snp-measure (the peer) predicts the same launch digest
//! as umbra's measurement code for the same image.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use umbra_attestation::hex;
use umbra_attestation::measure::ovmf::{FirmwareImage, SectionType};
use umbra_attestation::measure::vcpu_types::vcpu_sig_of;
use umbra_attestation::measure::vmsa::VmmType;
use umbra_attestation::measure::{snp_launch_digest, MeasureInputs};
use umbra_firmware::footer::{SectionType as FwSection, SEV_SECTIONS};
use umbra_firmware::layout::ROM_BOOT_PAGE;
use umbra_vmm::firmware::EMBEDDED_FIRMWARE;

#[test]
fn embedded_firmware_carries_the_declared_sev_metadata() {
    let image = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    assert_eq!(image.gpa(), umbra_firmware::layout::ROM_BASE);
    assert_eq!(image.gpa(), 0xFFF8_0000, "512 KiB below 4 GiB");
    assert_eq!(
        image.sev_es_reset_eip().unwrap(),
        Some(ROM_BOOT_PAGE as u32)
    );
    let parsed: Vec<_> = image
        .sections()
        .iter()
        .map(|s| (s.gpa, s.size, s.section_type))
        .collect();
    let declared: Vec<_> = SEV_SECTIONS
        .iter()
        .map(|s| {
            let t = match s.kind {
                FwSection::SnpSecMem => SectionType::SnpSecMem,
                FwSection::SnpSecrets => SectionType::SnpSecrets,
                FwSection::Cpuid => SectionType::Cpuid,
            };
            (s.gpa, s.len, t)
        })
        .collect();
    assert_eq!(parsed, declared);
}

fn ours(vcpus: u32, vcpu_type: &str, features: u64) -> String {
    let image = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    let inputs = MeasureInputs {
        firmware: &image,
        vcpus,
        vcpu_sig: vcpu_sig_of(vcpu_type).unwrap(),
        guest_features: features,
        vmm_type: VmmType::Qemu,
        kernel_hashes: None,
        ovmf_hash: None,
        firmware_page_digests: None,
    };
    hex::encode(&snp_launch_digest(&inputs).unwrap())
}

#[test]
fn sev_snp_measure_agrees_on_the_embedded_firmware() {
    let peer = Command::new("sev-snp-measure").arg("--help").output();
    let present = peer.map(|o| o.status.success()).unwrap_or(false);
    if !present {
        assert!(
            std::env::var("UMBRA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "UMBRA_REQUIRE_PEERS=1 but sev-snp-measure is not installed"
        );
        eprintln!("skipped: sev-snp-measure is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("umbra-fw-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fw = dir.join("umbra-firmware.fd");
    std::fs::write(&fw, EMBEDDED_FIRMWARE).unwrap();
    for (vcpus, vcpu_type, features) in [
        (1, "EPYC-v4", 1u64),
        (4, "EPYC-Milan", 1),
        (8, "EPYC-Genoa", 0x21),
    ] {
        let out = Command::new("sev-snp-measure")
            .args([
                "--mode",
                "snp",
                "--vcpus",
                &vcpus.to_string(),
                "--vcpu-type",
                vcpu_type,
            ])
            .args(["--guest-features", &format!("{features:#x}"), "--ovmf"])
            .arg(&fw)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            ours(vcpus, vcpu_type, features),
            theirs,
            "{vcpus} x {vcpu_type}, features {features:#x}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
