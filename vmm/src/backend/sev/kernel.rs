//! The seam between the SNP backend and the kernel's SEV support: every
//! operation of [`SnpHypervisor`](super::snp::SnpHypervisor) /
//! [`SnpVm`](super::snp::SnpVm) that needs SEV-SNP from KVM goes through
//! [`SevKernel`] (host probe, VM type) and [`SevVmKernel`] (one VM: INIT2,
//! guest_memfd slots, memory attributes, SNP_LAUNCH_*). [`RealKernel`] issues
//! the real ioctls; a test can substitute a fake that enforces the kernel's
//! rules on a plain KVM VM (vmm/tests/kvm_contract.rs).
//!
//! Everything else (memslots of the plain VM, vCPU creation and registers,
//! `KVM_RUN`) stays plain KVM, so a fake exercises the backend's own code.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use super::uapi;
use super::{get_device_attr, sev_command, vm_types, FwFailure, SevDevice, SevError};

/// What the host's KVM offers an SNP VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SevHostInfo {
    /// `KVM_X86_SEV_VMSA_FEATURES`: the SEV_FEATURES bits INIT2 accepts.
    pub vmsa_features: u64,
    /// `KVM_X86_SNP_POLICY_BITS`, when the kernel publishes it (6.17+).
    pub policy_bits: Option<u64>,
}

/// The host side of the kernel's SEV support.
pub trait SevKernel: Send + Sync {
    /// Checks what an SNP VM needs (VM type, capabilities) and reads the
    /// device attributes.
    fn probe(&self, kvm: &Kvm) -> Result<SevHostInfo, SevError>;
    /// The `KVM_CREATE_VM` type of an SNP VM.
    fn vm_type(&self) -> u64;
    /// The SEV state of one freshly created VM.
    fn new_vm(&self) -> Arc<dyn SevVmKernel>;
}

/// The SEV operations on one VM (`KVM_MEMORY_ENCRYPT_OP` and the
/// guest_memfd / attribute ioctls). Commands return the errno with the
/// firmware status the kernel wrote into `kvm_sev_cmd.error`, and write
/// back into their argument what the kernel writes back.
pub trait SevVmKernel: Send + Sync {
    /// `KVM_SEV_INIT2`.
    fn init2(&self, vm: &VmFd, init: &mut uapi::kvm_sev_init) -> Result<(), FwFailure>;
    /// Tells the kernel side that vCPU `index` exists (KVM knows its vCPUs:
    /// INIT2 refuses a VM that has some, LAUNCH_FINISH measures them all).
    fn vcpu_created(&self, index: u32, vcpu: &VcpuFd) {
        let _ = (index, vcpu);
    }
    /// `KVM_CREATE_GUEST_MEMFD`.
    fn create_guest_memfd(
        &self,
        vm: &VmFd,
        gmem: uapi::kvm_create_guest_memfd,
    ) -> Result<OwnedFd, kvm_ioctls::Error>;
    /// `KVM_SET_USER_MEMORY_REGION2`.
    ///
    /// # Safety
    /// `region.userspace_addr .. + memory_size` is a live mapping that
    /// outlives the VM.
    unsafe fn set_user_memory_region2(
        &self,
        vm: &VmFd,
        region: uapi::kvm_userspace_memory_region2,
    ) -> Result<(), kvm_ioctls::Error>;
    /// `KVM_SET_MEMORY_ATTRIBUTES`.
    fn set_memory_attributes(
        &self,
        vm: &VmFd,
        attr: uapi::kvm_memory_attributes,
    ) -> Result<(), kvm_ioctls::Error>;
    /// `KVM_SEV_SNP_LAUNCH_START`.
    fn snp_launch_start(
        &self,
        vm: &VmFd,
        start: &mut uapi::kvm_sev_snp_launch_start,
    ) -> Result<(), FwFailure>;
    /// `KVM_SEV_SNP_LAUNCH_UPDATE`: may do part of the range and write the
    /// rest back (`gfn_start`, `uaddr`, `len`).
    fn snp_launch_update(
        &self,
        vm: &VmFd,
        update: &mut uapi::kvm_sev_snp_launch_update,
    ) -> Result<(), FwFailure>;
    /// `KVM_SEV_SNP_LAUNCH_FINISH` (KVM measures every vCPU's VMSA here).
    fn snp_launch_finish(
        &self,
        vm: &VmFd,
        finish: &mut uapi::kvm_sev_snp_launch_finish,
    ) -> Result<(), FwFailure>;
}

/// The real kernel: ioctls on `/dev/kvm`, the VM fd and `/dev/sev`.
pub struct RealKernel {
    sev: Arc<SevDevice>,
}

impl RealKernel {
    /// Opens `/dev/sev` (the fd every SNP command carries).
    pub fn open() -> Result<Self, SevError> {
        Ok(RealKernel {
            sev: Arc::new(SevDevice::open()?),
        })
    }

    /// Probes the host (VM type 4, guest_memfd, memory attributes, hypercall
    /// exits) and reads the VMSA features and policy bits.
    pub fn probe_host(k: &Kvm) -> Result<SevHostInfo, SevError> {
        let offered = vm_types(k);
        if offered & (1 << uapi::VM_TYPE_SNP) == 0 {
            return Err(SevError::VmType {
                vm_type: uapi::VM_TYPE_SNP,
                offered,
            });
        }
        let caps: [(u64, &'static str); 3] = [
            (uapi::CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD"),
            (uapi::CAP_USER_MEMORY2, "KVM_CAP_USER_MEMORY2"),
            (uapi::CAP_MEMORY_ATTRIBUTES, "KVM_CAP_MEMORY_ATTRIBUTES"),
        ];
        for (cap, name) in caps {
            if k.check_extension_raw(cap as libc::c_ulong) <= 0 {
                return Err(SevError::Capability(name));
            }
        }
        let hc = k.check_extension_raw(libc::c_ulong::from(uapi::CAP_EXIT_HYPERCALL));
        if hc <= 0 || (hc as u64) & uapi::EXIT_HYPERCALL_MAP_GPA_RANGE == 0 {
            return Err(SevError::Capability(
                "KVM_CAP_EXIT_HYPERCALL with KVM_HC_MAP_GPA_RANGE",
            ));
        }
        let vmsa_features = get_device_attr(k, uapi::GRP_SEV, uapi::ATTR_VMSA_FEATURES)?;
        // Published since Linux 6.17; older kernels answer ENXIO.
        let policy_bits = get_device_attr(k, uapi::GRP_SEV, uapi::ATTR_SNP_POLICY_BITS).ok();
        Ok(SevHostInfo {
            vmsa_features,
            policy_bits,
        })
    }
}

impl SevKernel for RealKernel {
    fn probe(&self, kvm: &Kvm) -> Result<SevHostInfo, SevError> {
        Self::probe_host(kvm)
    }

    fn vm_type(&self) -> u64 {
        uapi::VM_TYPE_SNP
    }

    fn new_vm(&self) -> Arc<dyn SevVmKernel> {
        Arc::new(RealVmKernel {
            sev: Arc::clone(&self.sev),
        })
    }
}

/// One VM on the real kernel.
struct RealVmKernel {
    sev: Arc<SevDevice>,
}

impl SevVmKernel for RealVmKernel {
    fn init2(&self, vm: &VmFd, init: &mut uapi::kvm_sev_init) -> Result<(), FwFailure> {
        sev_command(vm, uapi::SEV_INIT2, Some(init), Some(self.sev.fd()))
    }

    fn create_guest_memfd(
        &self,
        vm: &VmFd,
        gmem: uapi::kvm_create_guest_memfd,
    ) -> Result<OwnedFd, kvm_ioctls::Error> {
        let raw = vm.create_guest_memfd(gmem)?;
        // SAFETY: KVM_CREATE_GUEST_MEMFD just returned this fd; nothing else
        // owns it, so the OwnedFd is its only owner and closes it once.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    unsafe fn set_user_memory_region2(
        &self,
        vm: &VmFd,
        region: uapi::kvm_userspace_memory_region2,
    ) -> Result<(), kvm_ioctls::Error> {
        // SAFETY: this function's contract (the caller's mapping outlives the VM).
        unsafe { vm.set_user_memory_region2(region) }
    }

    fn set_memory_attributes(
        &self,
        vm: &VmFd,
        attr: uapi::kvm_memory_attributes,
    ) -> Result<(), kvm_ioctls::Error> {
        vm.set_memory_attributes(attr)
    }

    fn snp_launch_start(
        &self,
        vm: &VmFd,
        start: &mut uapi::kvm_sev_snp_launch_start,
    ) -> Result<(), FwFailure> {
        sev_command(vm, uapi::SNP_LAUNCH_START, Some(start), Some(self.sev.fd()))
    }

    fn snp_launch_update(
        &self,
        vm: &VmFd,
        update: &mut uapi::kvm_sev_snp_launch_update,
    ) -> Result<(), FwFailure> {
        sev_command(
            vm,
            uapi::SNP_LAUNCH_UPDATE,
            Some(update),
            Some(self.sev.fd()),
        )
    }

    fn snp_launch_finish(
        &self,
        vm: &VmFd,
        finish: &mut uapi::kvm_sev_snp_launch_finish,
    ) -> Result<(), FwFailure> {
        sev_command(
            vm,
            uapi::SNP_LAUNCH_FINISH,
            Some(finish),
            Some(self.sev.fd()),
        )
    }
}
