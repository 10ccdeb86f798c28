//! The backend boundary: everything the launch code needs from a hypervisor.
//!
//! The launch and device code is written once against these traits (as
//! cloud-hypervisor's `hypervisor` crate and crosvm's `Hypervisor`/`Vm`/
//! `Vcpu` traits are). `kvm` is plain KVM; the hardware SEV/SNP backends
//! (`sev`) and the SNP firmware model (`snp_model`) wrap it, implement the
//! same traits, answer their own protocol exits inside [`Vcpu::run`] and
//! offer the confidential launch through [`Vm::confidential`]. Which
//! backend a platform uses is decided in one place, `crate::platform`.

use crate::memory::{GuestRam, MemoryMap};
use std::sync::Arc;
use thiserror::Error;
use vmm_sys_util::eventfd::EventFd;

/// Errors from a backend operation.
#[derive(Debug, Error)]
pub enum BackendError {
    /// /dev/kvm could not be opened.
    #[error("cannot open /dev/kvm (is KVM available and accessible?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// The KVM API version is not the stable one.
    #[error("unsupported KVM API version {0}")]
    ApiVersion(i32),
    /// KVM_CREATE_VM failed.
    #[error("KVM_CREATE_VM failed")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// A VM-wide setup ioctl failed.
    #[error("{0} failed")]
    VmSetup(&'static str, #[source] kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("mapping guest memory at {gpa:#x} (slot {slot}) failed")]
    MapMemory {
        /// Memslot number.
        slot: u32,
        /// Guest-physical base.
        gpa: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_CREATE_VCPU failed.
    #[error("creating vCPU {0} failed")]
    CreateVcpu(u32, #[source] kvm_ioctls::Error),
    /// A vCPU register setup ioctl failed.
    #[error("setting up vCPU {index}: {what} failed")]
    VcpuSetup {
        /// vCPU index.
        index: u32,
        /// The ioctl.
        what: &'static str,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_RUN failed.
    #[error("KVM_RUN on vCPU {0} failed")]
    Run(u32, #[source] kvm_ioctls::Error),
    /// An interrupt or notification ioctl (irqfd, ioeventfd, GSI routing)
    /// failed.
    #[error("{what} for GSI/address {at:#x} failed")]
    Interrupts {
        /// The ioctl.
        what: &'static str,
        /// The GSI or the address.
        at: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The SEV hardware backend failed.
    #[error("the SEV backend failed while {what}")]
    Sev {
        /// What the backend was doing.
        what: &'static str,
        /// The backend's error.
        #[source]
        source: Box<sev::SevError>,
    },
    /// The SNP firmware model failed.
    #[error(transparent)]
    SnpModel(#[from] Box<snp_model::ModelError>),
}

/// How the guest may access a memslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotAccess {
    /// Reads and writes go to memory.
    ReadWrite,
    /// Reads go to memory; writes exit to the VMM as MMIO writes.
    ReadOnly,
}

/// One memslot: guest-physical range backed by host memory.
#[derive(Clone, Copy, Debug)]
pub struct MemorySlot {
    /// Slot number, unique per VM.
    pub slot: u32,
    /// Guest-physical base.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host virtual address of the backing memory.
    pub host_addr: u64,
    /// Guest permissions.
    pub access: SlotAccess,
}

/// The register state a vCPU starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuStart {
    /// The architectural reset state, as QEMU sets it: real mode at
    /// 0xFFFF_FFF0 (CS 0xF000, base 0xFFFF_0000), RDX = CPUID signature.
    Reset,
    /// 64-bit Linux boot protocol entry.
    Linux64 {
        /// Entry point (the 64-bit entry of the bzImage).
        entry: u64,
        /// Guest-physical address of `boot_params` (RSI).
        boot_params: u64,
        /// Guest-physical address of the PML4 the loader built.
        page_table: u64,
        /// Guest-physical address of the GDT the loader built.
        gdt: u64,
    },
}

/// Why a vCPU stopped running guest code.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    /// `in` from a port: fill the buffer.
    PioIn(u16, &'a mut [u8]),
    /// `out` to a port.
    PioOut(u16, &'a [u8]),
    /// Read from an address without a writable memslot: fill the buffer.
    MmioRead(u64, &'a mut [u8]),
    /// Write to an address without a writable memslot (incl. ROM).
    MmioWrite(u64, &'a [u8]),
    /// `rdmsr` of an intercepted MSR: set `data`, or set `error` to inject #GP.
    MsrRead {
        /// MSR index.
        index: u32,
        /// The value the guest will read.
        data: &'a mut u64,
        /// Non-zero injects #GP.
        error: &'a mut u8,
    },
    /// `wrmsr` of an intercepted MSR.
    MsrWrite {
        /// MSR index.
        index: u32,
        /// The value written.
        data: u64,
        /// Non-zero injects #GP.
        error: &'a mut u8,
    },
    /// HLT with interrupts off or no interrupt source.
    Halt,
    /// Triple fault or similar: the guest is dead.
    Shutdown,
    /// KVM_RUN was interrupted by a signal (a kick).
    Interrupted,
    /// The backend answered the exit itself (a GHCB request, a page-state
    /// change): nothing for the caller to do but re-enter.
    Handled,
    /// The guest asked to be terminated (GHCB termination request, on the
    /// model and on silicon alike).
    GuestTerminate {
        /// GHCB reason-code set.
        set: u8,
        /// Reason code within the set.
        code: u8,
    },
    /// (SNP model) The guest made an access silicon would not have let
    /// reach the hypervisor, and the model could not make it behave as
    /// silicon does: the run stops, saying what silicon would have done.
    FidelityViolation(String),
    /// Anything else, named for the log.
    Unhandled(String),
}

/// Where an ioeventfd listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEventAddress {
    /// A port.
    Pio(u64),
    /// A guest-physical address.
    Mmio(u64),
}

/// One MSI, as an interrupt controller or a device composes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Address, low 32 bits (0xFEEx_xxxx).
    pub address_lo: u32,
    /// Address, high 32 bits.
    pub address_hi: u32,
    /// Data (vector, delivery mode, trigger mode).
    pub data: u32,
}

/// One virtual CPU, owned by one thread.
pub trait Vcpu: Send {
    /// The vCPU's index (and initial APIC ID).
    fn index(&self) -> u32;
    /// Runs guest code until the next exit.
    fn run(&mut self) -> Result<VcpuExit<'_>, BackendError>;
    /// A one-line summary of the register state, for diagnosing a stuck guest.
    fn describe_state(&self) -> String;
}

/// One virtual machine.
pub trait Vm: Send + Sync {
    /// The vCPU type of this backend.
    type Vcpu: Vcpu;

    /// Registers every guest-visible range of `ram` (ROM read-only where
    /// the backend can) and keeps `ram` alive as long as the VM, so the
    /// memory the guest sees can never be unmapped under it.
    fn register_ram(&mut self, ram: Arc<GuestRam>, map: &MemoryMap) -> Result<(), BackendError>;

    /// Makes `[gpa, gpa + len)` shared with the host before the launch (the
    /// boot-information page umbra writes unmeasured). Plain VMs share
    /// everything already.
    fn share_before_launch(&mut self, _gpa: u64, _len: u64) -> Result<(), BackendError> {
        Ok(())
    }

    /// The confidential launch (start / update / finish), for backends
    /// that launch confidentially; `None` for plain VMs.
    fn confidential(&mut self) -> Option<&mut dyn confidential::ConfidentialLaunch> {
        None
    }

    /// The pre-SNP launch (SEV, SEV-ES), for backends that do it; `None`
    /// otherwise.
    fn legacy_launch(&mut self) -> Option<&mut dyn confidential::LegacyLaunch> {
        None
    }

    /// The one handle through which devices reach guest memory: for a
    /// confidential guest it reaches shared pages only. `None` when the
    /// backend cannot offer one (hardware SNP until its page states are
    /// tracked), so no device that needs guest memory can be attached.
    fn device_memory(&self) -> Option<crate::dma::DeviceMemory>;

    /// What a confidential backend reports in the metrics.
    fn confidential_metrics(&self) -> Option<crate::metrics::SnpMetrics> {
        None
    }

    /// Writes the evidence of the run (report, certificates) into `dir`,
    /// for backends that produce any.
    fn write_evidence(&self, _dir: &std::path::Path) -> Result<(), BackendError> {
        Ok(())
    }

    /// Creates vCPU `index` in the given start state, with `vcpu_count` used
    /// for its CPU topology and `umbra_features` announced in umbra's
    /// hypervisor CPUID leaf (`umbra_firmware::layout::UMBRA_CPUID_FEATURES`).
    fn create_vcpu(
        &self,
        index: u32,
        vcpu_count: u32,
        start: VcpuStart,
        umbra_features: u32,
    ) -> Result<Self::Vcpu, BackendError>;

    /// Makes guest `rdmsr`/`wrmsr` of these MSRs exit to the VMM.
    fn intercept_msrs(&self, msrs: &[u32]) -> Result<(), BackendError>;

    /// Creates the legacy interrupt controllers (PIC, IOAPIC, LAPIC, PIT)
    /// in the kernel, as a Linux boot expects.
    fn create_legacy_irqchip(&self) -> Result<(), BackendError>;

    /// Creates a split interrupt controller: local APICs in the kernel, the
    /// IOAPIC (with `pins` inputs) in userspace. Must precede vCPU creation.
    fn create_split_irqchip(&self, pins: u32) -> Result<(), BackendError>;

    /// Makes a write to `fd` raise GSI `gsi`.
    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), BackendError>;

    /// Makes a guest write to `addr` (matching `datamatch` if given) signal
    /// `fd` in the kernel instead of exiting to the VMM.
    fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<(), BackendError>;

    /// Replaces the GSI routing: each listed GSI delivers its MSI.
    fn set_msi_routes(&self, routes: &[(u32, MsiMessage)]) -> Result<(), BackendError>;
}

/// The `Vm` methods a backend layered on plain KVM forwards unchanged to
/// its `inner: KvmVm` (interrupt controllers, irqfds, ioeventfds, routes,
/// MSR interception), so the three wrapping backends share one definition.
macro_rules! forward_to_inner_kvm {
    () => {
        fn intercept_msrs(&self, msrs: &[u32]) -> Result<(), $crate::backend::BackendError> {
            self.inner.intercept_msrs(msrs)
        }

        fn create_legacy_irqchip(&self) -> Result<(), $crate::backend::BackendError> {
            self.inner.create_legacy_irqchip()
        }

        fn create_split_irqchip(&self, pins: u32) -> Result<(), $crate::backend::BackendError> {
            self.inner.create_split_irqchip(pins)
        }

        fn register_irqfd(
            &self,
            fd: &vmm_sys_util::eventfd::EventFd,
            gsi: u32,
        ) -> Result<(), $crate::backend::BackendError> {
            self.inner.register_irqfd(fd, gsi)
        }

        fn register_ioevent(
            &self,
            fd: &vmm_sys_util::eventfd::EventFd,
            addr: $crate::backend::IoEventAddress,
            datamatch: Option<u32>,
        ) -> Result<(), $crate::backend::BackendError> {
            self.inner.register_ioevent(fd, addr, datamatch)
        }

        fn set_msi_routes(
            &self,
            routes: &[(u32, $crate::backend::MsiMessage)],
        ) -> Result<(), $crate::backend::BackendError> {
            self.inner.set_msi_routes(routes)
        }
    };
}
pub(crate) use forward_to_inner_kvm;

pub mod confidential;
pub mod kvm;
pub mod sev;
pub mod snp_model;

/// A hypervisor that can create VMs.
pub trait Hypervisor {
    /// The VM type of this backend.
    type Vm: Vm;
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Most vCPUs one VM may have.
    fn max_vcpus(&self) -> u32;
    /// Creates an empty VM.
    fn create_vm(&self) -> Result<Self::Vm, BackendError>;
}
