//! Tests on SEV-SNP silicon. Each one returns early with a printed
//! `skipped:` line unless `/dev/sev` exists **and** `UMBRA_HW=1` (the
//! documented rule for hardware tests; see docs/testing.md "Hardware
//! tests"); they never fail for lack of hardware.
//!
//! On hardware they launch the embedded firmware through the real KVM UAPI
//! and check the result against the attestation library:
//! - SNP: every launch step of `snp_launch_steps`, then LAUNCH_FINISH with an
//!   ID block carrying `snp_launch_digest` for the same inputs, signed with a
//!   fresh key. The firmware compares the ID block's digest with the one it
//!   computed and refuses LAUNCH_FINISH (BAD_MEASUREMENT) if they differ, so
//!   success proves the silicon's launch digest equals ours.
//! - SEV-ES (legacy flow): LAUNCH_START, UPDATE_DATA of the image, UPDATE_VMSA,
//!   LAUNCH_MEASURE (measure + mnonce), LAUNCH_FINISH.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use std::sync::Arc;
use umbra_attestation::id_block::{IdAuth, IdBlock, SigningKey};
use umbra_attestation::measure::vmsa::VmmType;
use umbra_attestation::measure::{
    snp_launch_digest, snp_launch_steps, FirmwareImage, MeasureInputs, PlanOptions, StepSource,
    VcpuSaveAreas,
};
use umbra_vmm::backend::confidential::{
    ConfidentialLaunch, LaunchFinishParams, LaunchStartParams, LaunchUpdate,
};
use umbra_vmm::backend::sev::legacy::{policy, LegacyHypervisor, LegacyMode};
use umbra_vmm::backend::sev::snp::{SnpConfig, SnpHypervisor};
use umbra_vmm::backend::{VcpuStart, Vm};
use umbra_vmm::config::MemoryBacking;
use umbra_vmm::firmware::EMBEDDED_FIRMWARE;
use umbra_vmm::memory::{GuestRam, MemoryMap};
use zerocopy::IntoBytes;

/// Guest RAM below the firmware: holds every SEV metadata section.
const LOW_RAM: usize = 2 << 20;
/// The firmware ends at 4 GiB.
const ROM_GPA: u64 = 0x1_0000_0000 - EMBEDDED_FIRMWARE.len() as u64;
const POLICY: u64 = 0x30000;

fn hardware() -> bool {
    let sev = Path::new("/dev/sev").exists();
    let hw = std::env::var("UMBRA_HW").as_deref() == Ok("1");
    if !(sev && hw) {
        eprintln!(
            "skipped: hardware test needs /dev/sev (present: {sev}) and UMBRA_HW=1 (set: {hw})"
        );
    }
    sev && hw
}

/// Host memory for the guest: low RAM and the firmware image region.
/// Guest RAM and the ROM with the embedded firmware, as `umbra run` lays
/// them out; the VM takes ownership when the RAM is registered.
fn guest_memory() -> (Arc<GuestRam>, MemoryMap) {
    let map = MemoryMap::new(LOW_RAM as u64, EMBEDDED_FIRMWARE.len() as u64).unwrap();
    let ram = Arc::new(GuestRam::allocate(&map, MemoryBacking::Anon, false).unwrap());
    umbra_vmm::loader::load_firmware(&ram, &map, EMBEDDED_FIRMWARE, 1, "").unwrap();
    (ram, map)
}

fn sections_fit(fw: &FirmwareImage<'_>) {
    for s in fw.sections() {
        assert!(
            u64::from(s.gpa) + u64::from(s.size) <= LOW_RAM as u64,
            "metadata section at {:#x} outside the test's low RAM",
            s.gpa
        );
    }
}

/// CPUID leaf 1 EAX of what KVM gives the vCPUs (RDX at reset, in the VMSA).
fn vcpu_signature(cpuid: &kvm_bindings::CpuId) -> u32 {
    cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 1)
        .map_or(0x600, |e| e.eax)
}

#[test]
fn snp_launch_digest_of_embedded_firmware_matches_prediction() {
    if !hardware() {
        return;
    }
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    sections_fit(&fw);
    let ap_eip = fw.sev_es_reset_eip().unwrap();
    let (ram, map) = guest_memory();
    let hv = SnpHypervisor::new(SnpConfig {
        vmsa_features: 0x1,
        ap_reset_eip: ap_eip,
        ..Default::default()
    })
    .unwrap();
    let mut vm = hv.create_snp_vm().unwrap();
    vm.register_ram(ram, &map).unwrap();
    let _vcpu = vm.create_vcpu(0, 1, VcpuStart::Reset, 0).unwrap();
    let sig = vcpu_signature(vm.kvm_vm().supported_cpuid());

    let predicted = snp_launch_digest(&MeasureInputs {
        firmware: &fw,
        vcpus: 1,
        vcpu_sig: sig,
        guest_features: 0x1,
        vmm_type: VmmType::Qemu,
        kernel_hashes: None,
        ovmf_hash: None,
        firmware_page_digests: None,
    })
    .unwrap();

    vm.launch_start(&LaunchStartParams { policy: POLICY })
        .unwrap();
    let steps = snp_launch_steps(
        &fw,
        &PlanOptions {
            vmm_type: VmmType::Qemu,
            kernel_hashes: false,
            include_firmware: true,
            vcpus: 1,
        },
    )
    .unwrap();
    for step in steps
        .iter()
        .filter(|s| !matches!(s.source, StepSource::Vmsa { .. }))
    {
        vm.launch_update(&LaunchUpdate {
            gpa: step.gpa,
            len: step.len,
            page_type: step.page_type,
            contents: step.image_bytes(&fw),
        })
        .unwrap_or_else(|e| panic!("update {step:?}: {e}"));
    }
    if let Some(diff) = vm.cpuid_corrections() {
        eprintln!("firmware corrected the CPUID page (not measured):\n{diff}");
    }

    let areas = VcpuSaveAreas::new(&fw, 0x1, sig, VmmType::Qemu).unwrap();
    let key = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let id_key = SigningKey::from_pem(&key.private_key_to_pem().unwrap()).unwrap();
    let block = IdBlock::new(predicted, [0x11; 16], [0x22; 16], 1, POLICY);
    let auth = IdAuth::sign(&block, &id_key, None).unwrap();
    let finished = vm
        .launch_finish(&LaunchFinishParams {
            id_block: Some(block.as_bytes().to_vec()),
            id_auth: Some(auth.as_bytes().to_vec()),
            auth_key_en: false,
            host_data: [0x5A; 32],
            vmsa_pages: vec![areas.bsp.as_page().to_vec()],
        })
        .unwrap_or_else(|e| {
            panic!(
                "LAUNCH_FINISH with the predicted digest {} refused: {e}",
                hex(&predicted)
            )
        });
    assert_eq!(
        hex(&finished.measurement),
        hex(&predicted),
        "the backend's running digest disagrees with the attestation library"
    );
    eprintln!(
        "SNP launch digest verified by the firmware: {}",
        hex(&predicted)
    );
}

#[test]
fn sev_es_legacy_launch_measure() {
    if !hardware() {
        return;
    }
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    let ap_eip = fw.sev_es_reset_eip().unwrap();
    let hv = LegacyHypervisor::new(LegacyMode::SevEs, ap_eip)
        .unwrap_or_else(|e| panic!("SEV-ES backend: {e}"));
    sev_es_launch(&hv);
}

#[test]
fn sev_es_init2_launch_measure() {
    if !hardware() {
        return;
    }
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    let ap_eip = fw.sev_es_reset_eip().unwrap();
    let hv = LegacyHypervisor::with_init2(LegacyMode::SevEs, ap_eip, 0)
        .unwrap_or_else(|e| panic!("SEV-ES (INIT2) backend: {e}"));
    sev_es_launch(&hv);
}

/// LAUNCH_START, UPDATE_DATA of the image, UPDATE_VMSA, LAUNCH_MEASURE, FINISH.
fn sev_es_launch(hv: &LegacyHypervisor) {
    let (ram, map) = guest_memory();
    let mut vm = hv.create_legacy_vm().unwrap();
    vm.register_ram(ram, &map).unwrap();
    let _vcpu = vm.create_vcpu(0, 1, VcpuStart::Reset, 0).unwrap();
    let handle = vm
        .launch_start(policy::NODBG | policy::ES, None, None)
        .unwrap();
    assert_ne!(handle, 0, "the firmware assigns a guest handle");
    vm.launch_update_data(ROM_GPA, EMBEDDED_FIRMWARE.len() as u64)
        .unwrap();
    vm.launch_update_vmsa().unwrap();
    let m = vm.launch_measure().unwrap();
    assert_ne!(m.measure, [0u8; 32], "LAUNCH_MEASURE returned no HMAC");
    assert_ne!(m.mnonce, [0u8; 16], "LAUNCH_MEASURE returned no nonce");
    eprintln!(
        "SEV-ES measure {} mnonce {}",
        hex(&m.measure),
        hex(&m.mnonce)
    );
    vm.launch_finish().unwrap();
    assert!(vm.finished());
}

#[test]
fn host_status_reports_snp_on_hardware() {
    if !hardware() {
        return;
    }
    let s = umbra_vmm::host_status::collect();
    assert!(
        s.sev_device.present && s.sev_device.error.is_none(),
        "{s:?}"
    );
    let snp = s
        .sev_device
        .snp
        .expect("SNP_PLATFORM_STATUS on an SNP host");
    assert!(snp.rmp_initialized, "SNP not initialised: {snp:?}");
    assert!(
        s.can_launch.snp,
        "{}",
        umbra_vmm::host_status::render_human(&s)
    );
}

/// Runs everywhere: `umbra host status` in both forms exits 0 and, on a
/// host without /dev/sev, says so truthfully.
#[test]
fn host_status_cli_is_truthful_and_exits_zero() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args(args)
            .output()
            .unwrap()
    };
    let human = run(&["host", "status"]);
    assert_eq!(human.status.code(), Some(0), "{human:?}");
    let text = String::from_utf8_lossy(&human.stdout).to_string();
    let json = run(&["host", "status", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{json:?}");
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let present = Path::new("/dev/sev").exists();
    assert_eq!(v["sev_device"]["present"], present, "{v}");
    if !present {
        assert!(text.contains("/dev/sev: not available"), "{text}");
        assert!(text.contains("Can launch: snp no"), "{text}");
        assert_eq!(v["can_launch"]["snp"], false);
        assert!(v["sev_device"]["snp"].is_null());
    }
    if v["kvm"]["available"] == true {
        assert_eq!(v["kvm"]["vm_types"][0], "default", "{v}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `umbra run --platform snp` launches the firmware on silicon with the
/// digest `--print-measurement` predicts (the firmware itself cannot run
/// far under real SEV-ES rules — its port I/O needs a #VC handler — so the
/// launch is what this checks).
#[test]
fn umbra_run_launches_snp_with_the_predicted_digest() {
    if !hardware() {
        return;
    }
    let umbra = env!("CARGO_BIN_EXE_umbra");
    let predicted = std::process::Command::new(umbra)
        .args(["run", "--platform", "snp", "--print-measurement"])
        .output()
        .expect("run umbra");
    let predicted = String::from_utf8_lossy(&predicted.stdout)
        .trim()
        .to_string();
    let out = std::process::Command::new(umbra)
        .args(["run", "--platform", "snp", "--timeout", "10"])
        .env("RUST_LOG", "info")
        .output()
        .expect("run umbra");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("SNP launch digest {predicted}")),
        "{stderr}"
    );
}
