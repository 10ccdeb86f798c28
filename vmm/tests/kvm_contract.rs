//! Contract test of the hardware SNP backend (`SnpHypervisor`/`SnpVm`)
//! against a fake of the kernel's SEV ioctl layer (common/fake_sev.rs): the
//! fake enforces what Linux 6.11's sev.c and guest_memfd.c enforce, runs on
//! a plain KVM VM (real vCPUs, memslots and registers) and has the SNP
//! firmware model as its PSP. Needs /dev/kvm (skips without it, fails under
//! UMBRA_REQUIRE_KVM=1); sev-snp-measure is compared when on PATH (required
//! under UMBRA_REQUIRE_PEERS=1).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/fake_sev.rs"]
mod fake_sev;

use std::process::Command;
use std::sync::Arc;

use fake_sev::{FakeSevKernel, FakeVm, MAX_PAGES_PER_CALL};
use umbra_attestation::measure::ovmf::FirmwareImage;
use umbra_attestation::measure::vcpu_types::vcpu_sig_of;
use umbra_vmm::backend::confidential::LaunchError;
use umbra_vmm::backend::sev::kernel::{SevKernel, SevVmKernel};
use umbra_vmm::backend::sev::snp::{SnpConfig, SnpHypervisor, SnpVm};
use umbra_vmm::backend::sev::{uapi, SevError};
use umbra_vmm::backend::{VcpuStart, Vm};
use umbra_vmm::config::MemoryBacking;
use umbra_vmm::firmware::EMBEDDED_FIRMWARE;
use umbra_vmm::launch::{execute, ExecuteError, LaunchOptions, LaunchPlan, DEFAULT_POLICY};
use umbra_vmm::memory::{GuestRam, MemoryMap};

/// Guest RAM below the firmware: holds every SEV metadata section.
const LOW_RAM: u64 = 2 << 20;

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn options(vcpus: u32, vcpu_type: &str, policy: u64) -> LaunchOptions {
    LaunchOptions {
        vcpus,
        vcpu_type: vcpu_type.into(),
        guest_features: 0x1,
        policy,
        host_data: [0; 32],
        id_block: None,
        id_auth: None,
    }
}

fn config(vcpu_type: &str, vmsa_features: u64) -> SnpConfig {
    let fw = FirmwareImage::parse(EMBEDDED_FIRMWARE).unwrap();
    SnpConfig {
        vmsa_features,
        ap_reset_eip: fw.sev_es_reset_eip().unwrap(),
        vcpu_signature: Some(vcpu_sig_of(vcpu_type).unwrap()),
        ..Default::default()
    }
}

/// An SNP VM on the fake with guest RAM, the firmware loaded and `vcpus`
/// vCPUs at reset, as `umbra run --platform snp` builds it.
fn snp_vm(kernel: &Arc<FakeSevKernel>, config: SnpConfig, vcpus: u32) -> SnpVm {
    let hv = SnpHypervisor::with_kernel(config, Arc::clone(kernel) as Arc<dyn SevKernel>).unwrap();
    let mut vm = hv.create_snp_vm().unwrap();
    let map = MemoryMap::new(LOW_RAM, EMBEDDED_FIRMWARE.len() as u64).unwrap();
    let ram = Arc::new(GuestRam::allocate(&map, MemoryBacking::Anon, false).unwrap());
    umbra_vmm::loader::load_firmware(&ram, &map, EMBEDDED_FIRMWARE, vcpus, "").unwrap();
    vm.register_ram(ram, &map).unwrap();
    for i in 0..vcpus {
        // The vCPUs live until the VM is dropped; only their state matters.
        std::mem::forget(vm.create_vcpu(i, vcpus, VcpuStart::Reset, 0).unwrap());
    }
    vm
}

fn sev_snp_measure(vcpus: u32, vcpu_type: &str, ovmf: &std::path::Path) -> Option<String> {
    let present = Command::new("sev-snp-measure")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !common::peer_available("sev-snp-measure", present) {
        return None;
    }
    let vcpus = vcpus.to_string();
    let ovmf = ovmf.to_string_lossy();
    common::sev_snp_measure(&[
        "--mode",
        "snp",
        "--vcpus",
        &vcpus,
        "--vcpu-type",
        vcpu_type,
        "--guest-features",
        "0x1",
        "--ovmf",
        &ovmf,
    ])
}

/// Names the VMSA fields (by offset) where two pages differ.
fn vmsa_diff(got: &[u8], want: &[u8]) -> String {
    (0..4096)
        .step_by(8)
        .filter(|&o| got[o..o + 8] != want[o..o + 8])
        .map(|o| {
            format!(
                "@{o:#x}: {:02x?} != {:02x?}",
                &got[o..o + 8],
                &want[o..o + 8]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The backend's launch against the fake: the digest the fake's firmware
/// model computed (from the pages the backend actually issued and the VMSAs
/// built from the real vCPUs' registers) equals `expected_measurement()`
/// (what `--print-measurement` prints), the backend's own digest, and
/// sev-snp-measure's.
#[test]
fn launch_digest_on_the_fake_kernel_is_the_predicted_one() {
    if !common::kvm_available() {
        return;
    }
    let dir = common::scratch("kvm-contract");
    let ovmf = dir.join("umbra-firmware.fd");
    std::fs::write(&ovmf, EMBEDDED_FIRMWARE).unwrap();
    for vcpu_type in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"] {
        for vcpus in 1..=8 {
            let case = format!("{vcpus} x {vcpu_type}");
            let kernel = Arc::new(FakeSevKernel::default());
            let vm = snp_vm(&kernel, config(vcpu_type, 0x1), vcpus);
            let plan =
                LaunchPlan::new(EMBEDDED_FIRMWARE, options(vcpus, vcpu_type, DEFAULT_POLICY))
                    .unwrap();
            let expected = plan.expected_measurement().unwrap();
            let (vm, finished) = execute(vm, &plan).unwrap_or_else(|e| panic!("{case}: {e:?}"));
            let fake: Arc<FakeVm> = kernel.last_vm();
            let vmsas = fake.vmsas();
            let predicted = plan.vmsa_pages().unwrap();
            assert_eq!(vmsas.len(), vcpus as usize, "{case}");
            for (i, (got, want)) in vmsas.iter().zip(&predicted).enumerate() {
                assert!(
                    got == want,
                    "{case}: vCPU {i}'s VMSA from its registers differs from the plan's:\n{}",
                    vmsa_diff(got, want)
                );
            }
            let model = fake.digest().expect("LAUNCH_FINISH reached the model");
            assert_eq!(hex(&model), hex(&expected), "{case}: model vs prediction");
            assert_eq!(
                hex(&finished.measurement),
                hex(&expected),
                "{case}: backend"
            );
            // The firmware corrected the CPUID page once (the model CPU is
            // not the vCPU type) and the update loop resumed partial calls.
            assert!(vm.cpuid_corrections().is_some(), "{case}");
            let steps = plan.updates().count() as u32;
            assert!(fake.update_calls() > steps, "{case}: no partial progress");
            if let Some(theirs) = sev_snp_measure(vcpus, vcpu_type, &ovmf) {
                assert_eq!(hex(&expected), theirs, "{case}: sev-snp-measure");
            }
        }
    }
}

/// A plain VM with one guest_memfd slot of `pages` pages at GPA 0, INIT2
/// done, on a fake VM.
struct Direct {
    vm: kvm_ioctls::VmFd,
    fake: Arc<dyn SevVmKernel>,
    _mem: vm_memory::MmapRegion,
    _gmem: std::os::fd::OwnedFd,
}

fn direct(pages: u64, init: bool) -> Direct {
    let kernel = FakeSevKernel::default();
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let fake = kernel.new_vm();
    if init {
        fake.init2(&vm, &mut Default::default()).unwrap();
    }
    let size = pages * 4096;
    let mem = vm_memory::MmapRegion::<()>::new(size as usize).unwrap();
    let gmem = fake
        .create_guest_memfd(
            &vm,
            uapi::kvm_create_guest_memfd {
                size,
                ..Default::default()
            },
        )
        .unwrap();
    use std::os::fd::AsRawFd;
    let region = uapi::kvm_userspace_memory_region2 {
        slot: 0,
        flags: uapi::MEM_GUEST_MEMFD,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: mem.as_ptr() as u64,
        guest_memfd: gmem.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `mem` lives in the returned struct as long as the VM.
    unsafe { fake.set_user_memory_region2(&vm, region) }.unwrap();
    Direct {
        vm,
        fake,
        _mem: mem,
        _gmem: gmem,
    }
}

#[test]
fn init2_after_a_vcpu_exists_is_einval() {
    if !common::kvm_available() {
        return;
    }
    let kernel = FakeSevKernel::default();
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    let fake = kernel.new_vm();
    let vcpu = vm.create_vcpu(0).unwrap();
    fake.vcpu_created(0, &vcpu);
    let e = fake.init2(&vm, &mut Default::default()).unwrap_err();
    assert_eq!(e.errno.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(e.fw_error, 0);
}

#[test]
fn launch_update_of_a_range_not_private_is_eio_without_firmware_status() {
    if !common::kvm_available() {
        return;
    }
    let d = direct(16, true);
    let mut start = uapi::kvm_sev_snp_launch_start {
        policy: DEFAULT_POLICY,
        ..Default::default()
    };
    d.fake.snp_launch_start(&d.vm, &mut start).unwrap();
    let src = vm_memory::MmapRegion::<()>::new(16 * 4096).unwrap();
    let arg = uapi::kvm_sev_snp_launch_update {
        gfn_start: 0,
        uaddr: src.as_ptr() as u64,
        len: 16 * 4096,
        type_: kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_NORMAL as u8,
        ..Default::default()
    };
    let mut a = arg;
    let e = d.fake.snp_launch_update(&d.vm, &mut a).unwrap_err();
    assert_eq!(e.errno.raw_os_error(), Some(libc::EIO));
    assert_eq!(e.fw_error, 0);
    assert_eq!((a.gfn_start, a.len), (0, 16 * 4096), "nothing written back");
    // Made private, the same update progresses by at most
    // MAX_PAGES_PER_CALL pages per call, written back as the kernel does.
    d.fake
        .set_memory_attributes(
            &d.vm,
            uapi::kvm_memory_attributes {
                address: 0,
                size: 16 * 4096,
                attributes: uapi::MEMORY_ATTRIBUTE_PRIVATE,
                flags: 0,
            },
        )
        .unwrap();
    d.fake.snp_launch_update(&d.vm, &mut a).unwrap();
    let n = MAX_PAGES_PER_CALL;
    assert_eq!(a.gfn_start, n);
    assert_eq!(a.len, (16 - n) * 4096);
    assert_eq!(a.uaddr, arg.uaddr + n * 4096);
    // Populating a page twice is refused.
    let mut again = arg;
    let e = d.fake.snp_launch_update(&d.vm, &mut again).unwrap_err();
    assert_eq!(e.errno.raw_os_error(), Some(libc::EIO));
}

#[test]
fn policies_linux_6_11_refuses_fail_launch_start_with_einval() {
    if !common::kvm_available() {
        return;
    }
    let single_socket = DEFAULT_POLICY | (1 << 20);
    let cxl = DEFAULT_POLICY | (1 << 21);
    let no_smt = 1 << 17;
    for policy in [single_socket, cxl, no_smt] {
        let kernel = Arc::new(FakeSevKernel::default());
        let vm = snp_vm(&kernel, config("EPYC-v4", 0x1), 1);
        let plan = LaunchPlan::new(EMBEDDED_FIRMWARE, options(1, "EPYC-v4", policy)).unwrap();
        match execute(vm, &plan) {
            Err(ExecuteError::Launch(LaunchError::Ioctl {
                fw_error, source, ..
            })) => {
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{policy:#x}");
                assert_eq!(fw_error, 0, "{policy:#x}");
            }
            other => panic!("policy {policy:#x}: {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn vmsa_features_outside_the_advertised_set_are_refused() {
    if !common::kvm_available() {
        return;
    }
    // The backend checks against what the kernel advertises (DebugSwap).
    let kernel: Arc<dyn SevKernel> = Arc::new(FakeSevKernel::default());
    match SnpHypervisor::with_kernel(config("EPYC-v4", 0x1 | 1 << 2), kernel) {
        Err(SevError::VmsaFeatures {
            requested,
            supported,
        }) => assert_eq!((requested, supported), (1 << 2, 1 << 5)),
        other => panic!("{:?}", other.err()),
    }
    // ... and INIT2 itself refuses them, SNPActive included (KVM sets it).
    let kernel = FakeSevKernel::default();
    let vm = kvm_ioctls::Kvm::new().unwrap().create_vm().unwrap();
    for features in [1 << 2, uapi::SEV_FEATURE_SNP_ACTIVE] {
        let fake = kernel.new_vm();
        let mut init = uapi::kvm_sev_init {
            vmsa_features: features,
            ..Default::default()
        };
        let e = fake.init2(&vm, &mut init).unwrap_err();
        assert_eq!(e.errno.raw_os_error(), Some(libc::EINVAL), "{features:#x}");
    }
    // An advertised one is accepted and measured: DebugSwap on 2 vCPUs.
    let kernel = Arc::new(FakeSevKernel::default());
    let vm = snp_vm(&kernel, config("EPYC-Milan", 0x21), 2);
    let mut o = options(2, "EPYC-Milan", DEFAULT_POLICY);
    o.guest_features = 0x21;
    let plan = LaunchPlan::new(EMBEDDED_FIRMWARE, o).unwrap();
    let (_vm, finished) = execute(vm, &plan).unwrap();
    let expected = plan.expected_measurement().unwrap();
    assert_eq!(kernel.last_vm().digest(), Some(expected));
    assert_eq!(finished.measurement, expected);
}

/// The bug this contract catches: vCPUs created without the `--vcpu-type`
/// signature start with the host's in RDX, KVM measures that, and the
/// digest is not the predicted one (skipped where the host's signature
/// happens to be the type's).
#[test]
fn vcpus_without_the_type_signature_give_another_digest() {
    if !common::kvm_available() {
        return;
    }
    let kernel = Arc::new(FakeSevKernel::default());
    let mut cfg = config("EPYC-v4", 0x1);
    cfg.vcpu_signature = None;
    let vm = snp_vm(&kernel, cfg, 1);
    let plan = LaunchPlan::new(EMBEDDED_FIRMWARE, options(1, "EPYC-v4", DEFAULT_POLICY)).unwrap();
    let (_vm, finished) = execute(vm, &plan).unwrap();
    let vmsa = &kernel.last_vm().vmsas()[0];
    let rdx = u64::from_le_bytes(vmsa[0x310..0x318].try_into().unwrap());
    if rdx == u64::from(vcpu_sig_of("EPYC-v4").unwrap()) {
        eprintln!("skipped: the host's signature is EPYC-v4's");
        return;
    }
    let expected = plan.expected_measurement().unwrap();
    assert_ne!(kernel.last_vm().digest(), Some(expected));
    // The backend's own digest (from the plan's VMSAs) cannot see it: only
    // the kernel's measurement of the real vCPUs does.
    assert_eq!(finished.measurement, expected);
}
