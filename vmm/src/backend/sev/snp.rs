//! SEV-SNP on KVM: `KVM_X86_SNP_VM`, `KVM_SEV_INIT2`, guest_memfd-backed
//! memslots, `KVM_SET_MEMORY_ATTRIBUTES`, and `KVM_SEV_SNP_LAUNCH_*`.
//!
//! [`SnpVm`] wraps a [`KvmVm`] built from a VM fd of type 4 (so memslots,
//! vCPU creation and register state are the plain backend's code) and adds:
//! guest_memfd for every RAM slot, the launch commands
//! ([`ConfidentialLaunch`]), and page conversions at run time, which
//! [`SnpVcpu::run`] handles itself (`KVM_HC_MAP_GPA_RANGE` exits and
//! `KVM_EXIT_MEMORY_FAULT`), returning [`VcpuExit::Interrupted`] so the
//! caller simply re-enters.
//!
//! Order (amd-memory-encryption.rst; enforced by KVM): create the VM (INIT2
//! included) -> map memory -> create **all** vCPUs with their final reset
//! registers -> LAUNCH_START -> LAUNCH_UPDATE* -> LAUNCH_FINISH (KVM
//! measures every vCPU's VMSA here) -> run.

use std::os::fd::AsRawFd;
use std::sync::{Arc, RwLock};

use kvm_bindings::kvm_enable_cap;
use umbra_attestation::measure::gctx::{LaunchDigest, VMSA_GPA};
use vm_memory::{MmapRegion, VolatileMemory};

use super::convert::GmemSlot;
pub use super::convert::{
    range_in_ram, validate_map_gpa_range, validate_memory_fault, MapGpaRange, PrivateMemory,
};
pub use super::kernel::{RealKernel, SevHostInfo, SevKernel, SevVmKernel};
use super::launch_update::{drive_launch_update, update_cpuid_with_retry};
use super::uapi::{self, PAGE_SIZE};
use super::SevError;
use crate::backend::confidential::{
    ConfidentialLaunch, FirmwareStatus, LaunchError, LaunchFinishParams, LaunchFinished,
    LaunchStartParams, LaunchUpdate, PageType,
};
use crate::backend::kvm::{translate_exit, KvmHypervisor, KvmVcpu, KvmVm};
use crate::backend::{
    BackendError, Hypervisor, MemorySlot, SlotAccess, Vcpu, VcpuExit, VcpuStart, Vm,
};

/// How often the same memory fault may repeat before the vCPU is stopped
/// (api.rst advises guarding against a fault that conversion does not fix).
const MAX_REPEATED_FAULTS: u32 = 3;

/// What the caller asks of an SNP VM.
#[derive(Clone, Debug, Default)]
pub struct SnpConfig {
    /// VMSA SEV_FEATURES for every vCPU; SNPActive (bit 0) may be given and
    /// is dropped (KVM sets it). Every other bit must be in
    /// `KVM_X86_SEV_VMSA_FEATURES`, or creating the VM fails.
    pub vmsa_features: u64,
    /// Guest OS visible workarounds for LAUNCH_START.
    pub gosvw: [u8; 16],
    /// LAUNCH_FINISH `vcek_disabled`: reports must be signed with a VLEK.
    pub vcek_disabled: bool,
    /// The SEV-ES reset block EIP of the firmware: application processors
    /// start there (CS = 0xF000, base `eip & 0xFFFF_0000`, RIP `eip & 0xFFFF`)
    /// as in QEMU; `None` leaves them at the reset vector.
    pub ap_reset_eip: Option<u32>,
    /// CPUID Fn0000_0001 EAX of the `--vcpu-type`: every vCPU reports it and
    /// starts with it in RDX, so the VMSAs KVM measures are the predicted
    /// ones; `None` keeps the host's.
    pub vcpu_signature: Option<u32>,
}

/// Checks requested VMSA features against what KVM accepts; returns the
/// value for `kvm_sev_init.vmsa_features` (SNPActive cleared).
pub fn check_vmsa_features(requested: u64, supported: u64) -> Result<u64, SevError> {
    let requested = requested & !uapi::SEV_FEATURE_SNP_ACTIVE;
    if requested & !supported != 0 {
        return Err(SevError::VmsaFeatures {
            requested,
            supported,
        });
    }
    Ok(requested)
}

/// The SEV-SNP hardware backend.
pub struct SnpHypervisor {
    kvm: KvmHypervisor,
    kernel: Arc<dyn SevKernel>,
    vmsa_features: u64,
    policy_bits: Option<u64>,
    config: SnpConfig,
}

impl SnpHypervisor {
    /// Probes the host (VM type 4, guest_memfd, memory attributes, hypercall
    /// exits, VMSA features), checks `config.vmsa_features` and opens `/dev/sev`.
    pub fn new(config: SnpConfig) -> Result<Self, SevError> {
        let kvm = open_kvm()?;
        // The host is probed before /dev/sev is opened, so a host without
        // SNP support says so rather than "no /dev/sev".
        let host = RealKernel::probe_host(kvm.kvm())?;
        let kernel = Arc::new(RealKernel::open()?);
        Self::assemble(config, kvm, kernel, host)
    }

    /// The backend over another implementation of the kernel's SEV support
    /// (a test's fake); probes it as [`new`](Self::new) probes the host.
    pub fn with_kernel(config: SnpConfig, kernel: Arc<dyn SevKernel>) -> Result<Self, SevError> {
        let kvm = open_kvm()?;
        let host = kernel.probe(kvm.kvm())?;
        Self::assemble(config, kvm, kernel, host)
    }

    /// Checks the requested VMSA features against what the host offers.
    fn assemble(
        config: SnpConfig,
        kvm: KvmHypervisor,
        kernel: Arc<dyn SevKernel>,
        host: SevHostInfo,
    ) -> Result<Self, SevError> {
        let vmsa_features = check_vmsa_features(config.vmsa_features, host.vmsa_features)?;
        Ok(SnpHypervisor {
            kvm,
            kernel,
            vmsa_features,
            policy_bits: host.policy_bits,
            config,
        })
    }

    /// The guest-policy bits this kernel accepts, when it publishes them
    /// (`KVM_X86_SNP_POLICY_BITS`).
    pub fn kernel_policy_bits(&self) -> Option<u64> {
        self.policy_bits
    }

    /// Creates the SNP VM: `KVM_CREATE_VM(4)`, hypercall exits for
    /// `KVM_HC_MAP_GPA_RANGE`, `KVM_SEV_INIT2`.
    pub fn create_snp_vm(&self) -> Result<SnpVm, SevError> {
        let mut inner = self
            .kvm
            .create_vm_of_type(self.kernel.vm_type())
            .map_err(SevError::CreateVm)?;
        let kernel = self.kernel.new_vm();
        if let Some(signature) = self.config.vcpu_signature {
            inner.set_cpu_signature(signature);
        }
        let vm = inner.vm_fd();
        let cap = kvm_enable_cap {
            cap: uapi::CAP_EXIT_HYPERCALL,
            args: [uapi::EXIT_HYPERCALL_MAP_GPA_RANGE, 0, 0, 0],
            ..Default::default()
        };
        vm.enable_cap(&cap).map_err(SevError::EnableHypercallExit)?;
        let mut init = uapi::kvm_sev_init {
            vmsa_features: self.vmsa_features,
            // 0 = the highest version KVM supports (2 for SNP).
            ghcb_version: 0,
            ..Default::default()
        };
        kernel.init2(vm, &mut init).map_err(SevError::Init2)?;
        let inner = Arc::new(inner);
        Ok(SnpVm {
            ram: Vec::new(),
            memory: Arc::new(PrivateMemory {
                vm: Arc::clone(&inner),
                kernel: Arc::clone(&kernel),
                slots: RwLock::new(Vec::new()),
            }),
            inner,
            kernel,
            config: self.config.clone(),
            started: false,
            finished: false,
            digest: LaunchDigest::new(),
            cpuid_corrections: None,
        })
    }
}

/// Opens `/dev/kvm` for an SNP backend.
fn open_kvm() -> Result<KvmHypervisor, SevError> {
    KvmHypervisor::new().map_err(|e| match e {
        BackendError::OpenKvm(e) => SevError::OpenKvm(e),
        other => SevError::CreateVm(other),
    })
}

/// Carries the backend's error across the boundary, whole.
pub(crate) fn to_backend(what: &'static str, e: SevError) -> BackendError {
    BackendError::Sev {
        what,
        source: Box::new(e),
    }
}

impl Hypervisor for SnpHypervisor {
    type Vm = SnpVm;

    fn name(&self) -> &'static str {
        "kvm-snp"
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.max_vcpus()
    }

    fn create_vm(&self) -> Result<SnpVm, BackendError> {
        self.create_snp_vm()
            .map_err(|e| to_backend("creating the SNP VM", e))
    }
}

/// An SEV-SNP VM on real hardware.
pub struct SnpVm {
    inner: Arc<KvmVm>,
    ram: Vec<Arc<crate::memory::GuestRam>>,
    memory: Arc<PrivateMemory>,
    kernel: Arc<dyn SevVmKernel>,
    config: SnpConfig,
    started: bool,
    finished: bool,
    digest: LaunchDigest,
    cpuid_corrections: Option<String>,
}

impl SnpVm {
    /// The plain-KVM VM underneath.
    pub fn kvm_vm(&self) -> &KvmVm {
        &self.inner
    }

    /// What the firmware corrected in the CPUID page, when it rejected the
    /// first one (one line per register: `leaf/subleaf reg old -> new`).
    pub fn cpuid_corrections(&self) -> Option<&str> {
        self.cpuid_corrections.as_deref()
    }

    /// Maps one RAM slot with a guest_memfd (private backing) and the host
    /// mapping (shared backing) through `KVM_SET_USER_MEMORY_REGION2`.
    ///
    /// # Safety
    /// As [`Vm::map_memory`]: the host range is a live mapping that outlives the VM.
    pub unsafe fn map_private_memory(&self, slot: &MemorySlot) -> Result<(), SevError> {
        let vm = self.inner.vm_fd();
        let gmem = self
            .kernel
            .create_guest_memfd(
                vm,
                uapi::kvm_create_guest_memfd {
                    size: slot.size,
                    flags: 0,
                    reserved: [0; 6],
                },
            )
            .map_err(|source| SevError::CreateGuestMemfd {
                gpa: slot.gpa,
                size: slot.size,
                source,
            })?;
        let region = uapi::kvm_userspace_memory_region2 {
            slot: slot.slot,
            flags: uapi::MEM_GUEST_MEMFD,
            guest_phys_addr: slot.gpa,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
            guest_memfd_offset: 0,
            guest_memfd: gmem.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the caller guarantees the shared backing is a live mapping
        // that outlives the VM (this function's contract); the guest_memfd is
        // owned by this VM's slot list for the VM's lifetime.
        unsafe { self.kernel.set_user_memory_region2(vm, region) }.map_err(|source| {
            SevError::SetMemoryRegion2 {
                slot: slot.slot,
                gpa: slot.gpa,
                source,
            }
        })?;
        let mut slots = self.memory.slots.write().unwrap_or_else(|p| p.into_inner());
        slots.push(GmemSlot {
            gpa: slot.gpa,
            size: slot.size,
            gmem,
        });
        Ok(())
    }

    /// SNP_LAUNCH_START with the guest policy (bit 17 must be set).
    pub fn snp_launch_start(&mut self, policy: u64) -> Result<(), SevError> {
        if self.started {
            return Err(SevError::Order("KVM_SEV_SNP_LAUNCH_START (twice)"));
        }
        let mut start = uapi::kvm_sev_snp_launch_start {
            policy,
            gosvw: self.config.gosvw,
            ..Default::default()
        };
        self.kernel
            .snp_launch_start(self.inner.vm_fd(), &mut start)
            .map_err(|failure| SevError::SnpLaunchStart { policy, failure })?;
        self.started = true;
        Ok(())
    }

    /// Issues LAUNCH_UPDATE over `[gpa, gpa + len)` from `source`, looping
    /// while the kernel reports partial progress, until `len == 0`.
    fn update_loop(
        &self,
        gpa: u64,
        len: u64,
        page_type: u8,
        source: &MmapRegion,
    ) -> Result<(), SevError> {
        let arg = uapi::kvm_sev_snp_launch_update {
            gfn_start: gpa / PAGE_SIZE,
            uaddr: source.as_ptr() as u64,
            len,
            type_: page_type,
            ..Default::default()
        };
        drive_launch_update(arg, |a| {
            self.kernel.snp_launch_update(self.inner.vm_fd(), a)
        })
    }

    /// SNP_LAUNCH_UPDATE of one range (see [`ConfidentialLaunch::launch_update`]).
    pub fn snp_launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), SevError> {
        if !self.started || self.finished {
            return Err(SevError::Order("KVM_SEV_SNP_LAUNCH_UPDATE"));
        }
        let (gpa, len) = (update.gpa, update.len);
        let bad_range = SevError::Range { gpa, len };
        if !gpa.is_multiple_of(PAGE_SIZE) || len == 0 || !len.is_multiple_of(PAGE_SIZE) {
            return Err(bad_range);
        }
        if !range_in_ram(gpa, len, &self.memory.ram()) {
            return Err(bad_range);
        }
        let size = usize::try_from(len).map_err(|_| SevError::SourceBuffer(usize::MAX))?;
        let source = MmapRegion::<()>::new(size).map_err(|_| SevError::SourceBuffer(size))?;
        let buf = source.as_volatile_slice();
        match (update.page_type, update.contents) {
            (PageType::Vmsa, _) => {
                return Err(SevError::Order(
                    "VMSA pages (KVM adds them at LAUNCH_FINISH)",
                ))
            }
            (PageType::Normal, Some(c)) | (PageType::Cpuid, Some(c)) if c.len() as u64 <= len => {
                buf.copy_from(c)
            }
            (PageType::Normal, _) => return Err(bad_range),
            (PageType::Cpuid, None) => {
                // QEMU builds the page from vCPU 0's own table (what the
                // guest's CPUID returns), not from KVM's supported one.
                let table = self
                    .inner
                    .vcpu0_cpuid()
                    .ok_or(SevError::Order("the CPUID page before vCPU 0 exists"))?;
                let entries = uapi::cpuid_entries_from_kvm(table.as_slice())?;
                let page = uapi::cpuid_page_bytes(&entries).ok_or(SevError::SourceBuffer(size))?;
                buf.copy_from(&page[..]);
            }
            _ => {}
        }
        self.memory.set_private(gpa, len, true)?;
        let page_type = update.page_type as u8;
        if update.page_type == PageType::Cpuid {
            let old = {
                let mut v = vec![0u8; size];
                let _ = buf.copy_to(&mut v[..]);
                v
            };
            let corrections = update_cpuid_with_retry(
                gpa,
                &old,
                || self.update_loop(gpa, len, page_type, &source),
                || {
                    let mut v = vec![0u8; size];
                    let _ = buf.copy_to(&mut v[..]);
                    v
                },
            )?;
            if corrections.is_some() {
                self.cpuid_corrections = corrections;
            }
        } else {
            self.update_loop(gpa, len, page_type, &source)?;
        }
        match (update.page_type, update.contents) {
            (PageType::Normal, Some(c)) => {
                let mut data = c.to_vec();
                data.resize(size, 0);
                self.digest.update_normal_pages(gpa, &data);
            }
            (t, _) => self.digest.update_range(t, gpa, len),
        }
        Ok(())
    }

    /// SNP_LAUNCH_FINISH; returns the launch digest expected from the pages
    /// given and `vmsa_pages` (see [`ConfidentialLaunch::launch_finish`]).
    pub fn snp_launch_finish(&mut self, params: &LaunchFinishParams) -> Result<[u8; 48], SevError> {
        if !self.started || self.finished {
            return Err(SevError::Order("KVM_SEV_SNP_LAUNCH_FINISH"));
        }
        let id_block = params
            .id_block
            .as_ref()
            .map(|b| fixed::<{ uapi::SNP_ID_BLOCK_SIZE }>("ID block", b))
            .transpose()?;
        let id_auth = params
            .id_auth
            .as_ref()
            .map(|b| fixed::<{ uapi::SNP_ID_AUTH_SIZE }>("ID auth", b))
            .transpose()?;
        if id_block.is_some() != id_auth.is_some() {
            return Err(SevError::IdBlockSize {
                what: "ID block and ID auth (both or neither)",
                len: 0,
                expected: 0,
            });
        }
        // auth_key_en with an all-zero author key makes the firmware check a
        // signature that cannot exist: only set it when the key is there.
        let has_author_key = id_auth.as_deref().is_some_and(|a| {
            umbra_attestation::id_block::IdAuth::from_slice(&a[..])
                .is_ok_and(|a| a.has_author_key())
        });
        if params.auth_key_en && id_block.is_some() && !has_author_key {
            log::warn!("LAUNCH_FINISH: ID auth carries no author key; auth_key_en cleared");
        }
        let mut finish = uapi::kvm_sev_snp_launch_finish {
            id_block_uaddr: id_block.as_ref().map_or(0, |b| b.as_ptr() as u64),
            id_auth_uaddr: id_auth.as_ref().map_or(0, |b| b.as_ptr() as u64),
            id_block_en: u8::from(id_block.is_some()),
            auth_key_en: u8::from(id_block.is_some() && params.auth_key_en && has_author_key),
            vcek_disabled: u8::from(self.config.vcek_disabled),
            host_data: params.host_data,
            ..Default::default()
        };
        self.kernel
            .snp_launch_finish(self.inner.vm_fd(), &mut finish)
            .map_err(SevError::SnpLaunchFinish)?;
        self.finished = true;
        for page in &params.vmsa_pages {
            if let Ok(p) = <&[u8; 4096]>::try_from(page.as_slice()) {
                self.digest.update(PageType::Vmsa, VMSA_GPA, Some(p));
            }
        }
        Ok(self.digest.digest())
    }
}

/// Copies a blob that must have exactly `N` bytes into an owned array.
fn fixed<const N: usize>(what: &'static str, b: &[u8]) -> Result<Box<[u8; N]>, SevError> {
    let arr: [u8; N] = b.try_into().map_err(|_| SevError::IdBlockSize {
        what,
        len: b.len(),
        expected: N,
    })?;
    Ok(Box::new(arr))
}

fn launch_error(what: &'static str, e: SevError) -> LaunchError {
    match e {
        SevError::SnpLaunchStart { failure, .. } => {
            match FirmwareStatus::from_code(failure.fw_error) {
                Some(s) => LaunchError::Start(s),
                None => LaunchError::Ioctl {
                    what,
                    fw_error: failure.fw_error,
                    source: failure.errno,
                },
            }
        }
        SevError::SnpLaunchFinish(failure) => match FirmwareStatus::from_code(failure.fw_error) {
            Some(s) => LaunchError::Finish(s),
            None => LaunchError::Ioctl {
                what,
                fw_error: failure.fw_error,
                source: failure.errno,
            },
        },
        SevError::SnpLaunchUpdate { failure, .. } => LaunchError::Ioctl {
            what,
            fw_error: failure.fw_error,
            source: failure.errno,
        },
        other => LaunchError::Backend {
            what,
            source: Box::new(other),
        },
    }
}

impl ConfidentialLaunch for SnpVm {
    fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError> {
        self.snp_launch_start(params.policy)
            .map_err(|e| launch_error("KVM_SEV_SNP_LAUNCH_START", e))
    }

    fn launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), LaunchError> {
        if let Some(c) = update.contents {
            if !c.len().is_multiple_of(PAGE_SIZE as usize) {
                return Err(LaunchError::ContentsLength(c.len()));
            }
        }
        self.snp_launch_update(update)
            .map_err(|e| launch_error("KVM_SEV_SNP_LAUNCH_UPDATE", e))
    }

    fn launch_finish(
        &mut self,
        params: &LaunchFinishParams,
    ) -> Result<LaunchFinished, LaunchError> {
        let measurement = self
            .snp_launch_finish(params)
            .map_err(|e| launch_error("KVM_SEV_SNP_LAUNCH_FINISH", e))?;
        Ok(LaunchFinished { measurement })
    }
}

impl Vm for SnpVm {
    crate::backend::forward_to_inner_kvm!();

    type Vcpu = SnpVcpu;

    fn register_ram(
        &mut self,
        ram: Arc<crate::memory::GuestRam>,
        map: &crate::memory::MemoryMap,
    ) -> Result<(), BackendError> {
        for slot in KvmVm::own_ram(&mut self.ram, ram, map) {
            if slot.access == SlotAccess::ReadOnly {
                // guest_memfd slots cannot be read-only; an SNP firmware
                // image is private memory whose integrity comes from the
                // measurement.
                log::warn!(
                    "SNP: slot {} at {:#x} is mapped writable (private memory has no ROM)",
                    slot.slot,
                    slot.gpa
                );
            }
            // SAFETY: the mapping's owner is in `self.ram` (own_ram), so it
            // outlives the VM's memslots.
            unsafe { self.map_private_memory(&slot) }
                .map_err(|e| to_backend("mapping SNP memory", e))?;
        }
        Ok(())
    }

    fn confidential(&mut self) -> Option<&mut dyn ConfidentialLaunch> {
        Some(self)
    }

    fn device_memory(&self) -> Option<crate::dma::DeviceMemory> {
        // Hardware page states are not tracked for devices yet: no device
        // that needs guest memory can be attached, rather than one that
        // could read a private page's stale shared backing.
        None
    }

    fn create_vcpu(
        &self,
        index: u32,
        vcpu_count: u32,
        start: VcpuStart,
        umbra_features: u32,
    ) -> Result<SnpVcpu, BackendError> {
        let inner = self
            .inner
            .create_vcpu(index, vcpu_count, start, umbra_features)?;
        if let (true, VcpuStart::Reset, Some(eip)) = (index > 0, start, self.config.ap_reset_eip) {
            set_ap_reset(&inner, eip).map_err(|e| to_backend("AP reset state", e))?;
        }
        self.kernel.vcpu_created(index, inner.fd());
        Ok(SnpVcpu {
            inner,
            memory: Arc::clone(&self.memory),
            last_fault: None,
            repeats: 0,
        })
    }
}

/// Puts an application processor at the SEV-ES reset block (QEMU
/// `x86_cpu_reset` with `sev_es_set_reset_vector`).
pub(crate) fn set_ap_reset(vcpu: &KvmVcpu, eip: u32) -> Result<(), SevError> {
    let index = vcpu.index();
    let fd = vcpu.fd();
    let setup = |what| {
        move |source| SevError::VcpuSetup {
            index,
            what,
            source,
        }
    };
    let mut sregs = fd.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
    sregs.cs.selector = 0xF000;
    sregs.cs.base = u64::from(eip & 0xFFFF_0000);
    sregs.cs.limit = 0xFFFF;
    fd.set_sregs(&sregs).map_err(setup("KVM_SET_SREGS"))?;
    let mut regs = fd.get_regs().map_err(setup("KVM_GET_REGS"))?;
    regs.rip = u64::from(eip & 0xFFFF);
    fd.set_regs(&regs).map_err(setup("KVM_SET_REGS"))
}

/// An SEV-SNP vCPU.
pub struct SnpVcpu {
    inner: KvmVcpu,
    memory: Arc<PrivateMemory>,
    last_fault: Option<(u64, u64, u64)>,
    repeats: u32,
}

impl Vcpu for SnpVcpu {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn describe_state(&self) -> String {
        // After LAUNCH_FINISH the register state is in the encrypted VMSA
        // and KVM refuses KVM_GET_REGS with EINVAL.
        match self.inner.fd().get_regs() {
            Err(e) if e.errno() == libc::EINVAL => {
                "register state protected by SEV-SNP (in the encrypted VMSA)".into()
            }
            _ => self.inner.describe_state(),
        }
    }

    /// Runs to the next exit. Page-state changes (`KVM_HC_MAP_GPA_RANGE`,
    /// memory faults) are answered here and reported as `Handled` (nothing
    /// for the caller to do but re-enter); a guest termination request is
    /// the typed `GuestTerminate`, as on the model.
    fn run(&mut self) -> Result<VcpuExit<'_>, BackendError> {
        use kvm_ioctls::VcpuExit as K;
        let index = self.inner.index();
        let memory = &self.memory;
        match self.inner.fd_mut().run() {
            Ok(K::Hypercall(h)) if h.nr == uapi::HC_MAP_GPA_RANGE => {
                *h.ret = memory.handle_map_gpa_range(h.args[0], h.args[1], h.args[2]);
                Ok(VcpuExit::Handled)
            }
            Ok(K::Hypercall(h)) => Ok(VcpuExit::Unhandled(format!(
                "hypercall {} from the guest",
                h.nr
            ))),
            Ok(K::MemoryFault { flags, gpa, size }) => {
                let key = (flags, gpa, size);
                if self.last_fault == Some(key) {
                    self.repeats += 1;
                } else {
                    self.last_fault = Some(key);
                    self.repeats = 0;
                }
                if self.repeats >= MAX_REPEATED_FAULTS {
                    return Ok(VcpuExit::Unhandled(format!(
                        "memory fault at {gpa:#x} (flags {flags:#x}) repeats after conversion"
                    )));
                }
                match memory.handle_memory_fault(flags, gpa, size) {
                    Ok(()) => Ok(VcpuExit::Handled),
                    Err(why) => Ok(VcpuExit::Unhandled(why)),
                }
            }
            Ok(K::SystemEvent(t, data)) if t == uapi::SYSTEM_EVENT_SEV_TERM => {
                // KVM passes the GHCB MSR of the termination request.
                let msr = data.first().copied().unwrap_or(0);
                Ok(VcpuExit::GuestTerminate {
                    set: ((msr >> 12) & 0xF) as u8,
                    code: ((msr >> 16) & 0xFF) as u8,
                })
            }
            other => {
                self.last_fault = None;
                translate_exit(index, other)
            }
        }
    }
}

#[cfg(test)]
#[path = "snp_tests.rs"]
mod tests;
