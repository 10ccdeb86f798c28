//! Plain KVM: no memory encryption. The reference for device and boot
//! behaviour that the confidential backends build on.

use super::{
    BackendError, Hypervisor, IoEventAddress, MemorySlot, MsiMessage, SlotAccess, Vcpu, VcpuExit,
    VcpuStart, Vm,
};
use crate::memory::{GuestRam, MemoryMap, RegionRole};
use kvm_bindings::{
    kvm_pit_config, kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, KvmIrqRouting,
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;

/// Which interrupt controller a VM has (`KvmVm::irqchip`).
const IRQCHIP_NONE: u8 = 0;
const IRQCHIP_LEGACY: u8 = 1;
const IRQCHIP_SPLIT: u8 = 2;

/// Where KVM puts the real-mode TSS and identity page on Intel hosts; the
/// same addresses as QEMU so no guest-visible range differs.
const IDENTITY_MAP_ADDR: u64 = 0xFEFF_C000;
const TSS_ADDR: usize = 0xFEFF_D000;

/// The plain KVM backend.
pub struct KvmHypervisor {
    kvm: Kvm,
}

impl KvmHypervisor {
    /// Opens /dev/kvm.
    pub fn new() -> Result<Self, BackendError> {
        let kvm = Kvm::new().map_err(BackendError::OpenKvm)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(BackendError::ApiVersion(version));
        }
        Ok(KvmHypervisor { kvm })
    }
}

impl Hypervisor for KvmHypervisor {
    type Vm = KvmVm;

    fn name(&self) -> &'static str {
        "kvm"
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.get_max_vcpus() as u32
    }

    fn create_vm(&self) -> Result<KvmVm, BackendError> {
        let vm = self.kvm.create_vm().map_err(BackendError::CreateVm)?;
        self.wrap_vm(vm, 0)
    }
}

impl KvmHypervisor {
    /// The /dev/kvm handle (for backends that need system ioctls).
    pub(crate) fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// Creates a VM of a given `KVM_CREATE_VM` type (e.g. `KVM_X86_SNP_VM`)
    /// with the same setup as [`Hypervisor::create_vm`].
    pub fn create_vm_of_type(&self, vm_type: u64) -> Result<KvmVm, BackendError> {
        let vm = self
            .kvm
            .create_vm_with_type(vm_type)
            .map_err(BackendError::CreateVm)?;
        self.wrap_vm(vm, vm_type)
    }

    /// Sets up a freshly created VM fd and wraps it.
    fn wrap_vm(&self, vm: VmFd, vm_type: u64) -> Result<KvmVm, BackendError> {
        vm.set_identity_map_address(IDENTITY_MAP_ADDR)
            .map_err(|e| BackendError::VmSetup("KVM_SET_IDENTITY_MAP_ADDR", e))?;
        vm.set_tss_address(TSS_ADDR)
            .map_err(|e| BackendError::VmSetup("KVM_SET_TSS_ADDR", e))?;
        let cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| BackendError::VmSetup("KVM_GET_SUPPORTED_CPUID", e))?;
        // Asked of the VM, not of /dev/kvm: KVM refuses read-only memslots on
        // VM types with protected state (SEV-ES, SNP; kvm_arch_has_readonly_mem)
        // and says so through the VM fd's CHECK_EXTENSION.
        let readonly_mem = vm.check_extension(Cap::ReadonlyMem);
        Ok(KvmVm {
            vm,
            cpuid,
            readonly_mem,
            // KVM_X86_SEV_ES_VM (3) and KVM_X86_SNP_VM (4) have protected
            // state (arch/x86/kvm/svm/sev.c sev_vm_init).
            protected_state: vm_type >= 3,
            ram: Vec::new(),
            ram_ranges: Vec::new(),
            irqchip: AtomicU8::new(IRQCHIP_NONE),
            signature: None,
            vcpu0_cpuid: std::sync::OnceLock::new(),
        })
    }
}

/// A plain KVM VM. It owns the guest memory registered with it.
pub struct KvmVm {
    vm: VmFd,
    cpuid: CpuId,
    readonly_mem: bool,
    protected_state: bool,
    ram: Vec<Arc<GuestRam>>,
    ram_ranges: Vec<(u64, u64)>,
    irqchip: AtomicU8,
    /// CPUID Fn0000_0001 EAX (and reset RDX) of every vCPU, when the VM
    /// models a given CPU (`--vcpu-type` on SNP platforms) instead of the
    /// host's.
    signature: Option<u32>,
    /// The CPUID table vCPU 0 got, for the SNP CPUID page.
    vcpu0_cpuid: std::sync::OnceLock<CpuId>,
}

impl KvmVm {
    /// The VM fd (for backends layered on this one).
    pub(crate) fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    /// Makes every vCPU report `signature` in CPUID Fn0000_0001 EAX and
    /// start with it in RDX, as QEMU does for its `-cpu` model: KVM copies
    /// the reset RDX into the VMSA it measures at SNP_LAUNCH_FINISH.
    pub(crate) fn set_cpu_signature(&mut self, signature: u32) {
        self.signature = Some(signature);
    }

    /// The CPUID table vCPU 0 was given (once it exists).
    pub(crate) fn vcpu0_cpuid(&self) -> Option<&CpuId> {
        self.vcpu0_cpuid.get()
    }

    /// The RAM registered with this VM (the first registration).
    pub(crate) fn ram(&self) -> Option<&Arc<GuestRam>> {
        self.ram.first()
    }

    /// Keeps `ram` in `owned` (for the VM's whole life, before any of its
    /// ranges is registered, so a failed registration cannot leave a memslot
    /// over freed memory) and returns the memslots to register for it,
    /// numbered after those of the RAM already owned.
    pub(crate) fn own_ram(
        owned: &mut Vec<Arc<GuestRam>>,
        ram: Arc<GuestRam>,
        map: &MemoryMap,
    ) -> Vec<MemorySlot> {
        let first = owned.iter().map(|r| r.guest_ranges().len() as u32).sum();
        let slots = Self::slots_for(&ram, map, first);
        owned.push(ram);
        slots
    }

    /// The memslots for every guest-visible range of `ram`, numbered from
    /// `first_slot`, ROM read-only.
    fn slots_for(ram: &GuestRam, map: &MemoryMap, first_slot: u32) -> Vec<MemorySlot> {
        ram.guest_ranges()
            .into_iter()
            .zip(first_slot..)
            .map(|(range, slot)| {
                let role = map.find(range.gpa).map_or(RegionRole::Ram, |r| r.role);
                MemorySlot {
                    slot,
                    gpa: range.gpa,
                    size: range.size,
                    host_addr: range.host_addr,
                    access: if role == RegionRole::Rom {
                        SlotAccess::ReadOnly
                    } else {
                        SlotAccess::ReadWrite
                    },
                }
            })
            .collect()
    }

    /// The CPUID table KVM supports, as every vCPU starts from it.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.cpuid
    }
}

impl KvmVm {
    /// Registers one memslot.
    ///
    /// # Safety
    /// `slot.host_addr .. + slot.size` must be a live mapping that outlives
    /// the VM (callers keep its owner in `self.ram`).
    pub(crate) unsafe fn map_slot(&self, slot: &MemorySlot) -> Result<(), BackendError> {
        let flags = match slot.access {
            SlotAccess::ReadWrite => 0,
            SlotAccess::ReadOnly if self.readonly_mem => KVM_MEM_READONLY,
            SlotAccess::ReadOnly if !self.protected_state => {
                return Err(BackendError::VmSetup(
                    "KVM_CAP_READONLY_MEM (needed for ROM)",
                    kvm_ioctls::Error::new(libc::ENOTSUP),
                ))
            }
            SlotAccess::ReadOnly => {
                // Protected VM types cannot have read-only memory; their
                // firmware's integrity is its launch measurement instead.
                log::warn!(
                    "slot {} at {:#x} is mapped writable: this VM type has no read-only memory",
                    slot.slot,
                    slot.gpa
                );
                0
            }
        };
        let region = kvm_userspace_memory_region {
            slot: slot.slot,
            flags,
            guest_phys_addr: slot.gpa,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
        };
        // SAFETY: the caller guarantees the host range is a live mapping that
        // outlives the VM (this function's contract).
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|source| {
            BackendError::MapMemory {
                slot: slot.slot,
                gpa: slot.gpa,
                source,
            }
        })
    }
}

impl Vm for KvmVm {
    type Vcpu = KvmVcpu;

    fn register_ram(&mut self, ram: Arc<GuestRam>, map: &MemoryMap) -> Result<(), BackendError> {
        for slot in Self::own_ram(&mut self.ram, ram, map) {
            // SAFETY: the mapping's owner is in `self.ram` (own_ram), so it
            // lives as long as the VM and its memslots.
            unsafe { self.map_slot(&slot)? };
        }
        self.ram_ranges.extend(map.ram_ranges());
        Ok(())
    }

    fn device_memory(&self) -> Option<crate::dma::DeviceMemory> {
        self.ram()
            .map(|ram| crate::dma::DeviceMemory::plain(ram.clone(), self.ram_ranges.clone()))
    }

    fn intercept_msrs(&self, msrs: &[u32]) -> Result<(), BackendError> {
        use kvm_ioctls::{
            MsrExitReason, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags,
        };
        let cap = kvm_bindings::kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_X86_USER_SPACE_MSR,
            args: [u64::from(MsrExitReason::Filter.bits()), 0, 0, 0],
            ..Default::default()
        };
        self.vm
            .enable_cap(&cap)
            .map_err(|e| BackendError::VmSetup("KVM_CAP_X86_USER_SPACE_MSR", e))?;
        // One range per MSR with a cleared bit: "deny", which with the
        // capability above means "exit to userspace" for reads and writes.
        let denied = [0u8; 1];
        let ranges: Vec<MsrFilterRange<'_>> = msrs
            .iter()
            .map(|&base| MsrFilterRange {
                flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
                base,
                msr_count: 1,
                bitmap: &denied,
            })
            .collect();
        self.vm
            .set_msr_filter(MsrFilterDefaultAction::ALLOW, &ranges)
            .map_err(|e| BackendError::VmSetup("KVM_X86_SET_MSR_FILTER", e))
    }

    fn create_vcpu(
        &self,
        index: u32,
        vcpu_count: u32,
        start: VcpuStart,
        umbra_features: u32,
    ) -> Result<KvmVcpu, BackendError> {
        let fd = self
            .vm
            .create_vcpu(u64::from(index))
            .map_err(|e| BackendError::CreateVcpu(index, e))?;
        let setup = |what: &'static str| {
            move |source| BackendError::VcpuSetup {
                index,
                what,
                source,
            }
        };
        let cpuid = vcpu_cpuid(
            &self.cpuid,
            index,
            vcpu_count,
            umbra_features,
            self.signature,
        )
        .map_err(|e| BackendError::VcpuSetup {
            index,
            what: "building CPUID",
            source: e,
        })?;
        fd.set_cpuid2(&cpuid).map_err(setup("KVM_SET_CPUID2"))?;
        if index == 0 {
            let _ = self.vcpu0_cpuid.set(cpuid.clone());
        }
        let signature = cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == 1)
            .map_or(0x600, |e| e.eax);
        match start {
            VcpuStart::Reset => {
                // KVM's vCPU reset state is the architectural one; QEMU also
                // puts the CPUID signature in RDX (the SNP measurement of the
                // VMSA depends on it), so set it explicitly.
                // Segment state exactly as QEMU's x86_cpu_reset writes it,
                // rather than trusting every KVM implementation's default.
                let mut sregs = fd.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
                let real_mode = |selector: u16, base: u64, type_: u8, s: u8| kvm_segment {
                    base,
                    limit: 0xFFFF,
                    selector,
                    type_,
                    present: 1,
                    dpl: 0,
                    db: 0,
                    s,
                    l: 0,
                    g: 0,
                    avl: 0,
                    unusable: 0,
                    padding: 0,
                };
                sregs.cs = real_mode(0xF000, 0xFFFF_0000, 0xB, 1);
                let data = real_mode(0, 0, 0x3, 1);
                (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
                sregs.ldt = real_mode(0, 0, 0x2, 0);
                sregs.tr = real_mode(0, 0, 0xB, 0);
                sregs.gdt.base = 0;
                sregs.gdt.limit = 0xFFFF;
                sregs.idt.base = 0;
                sregs.idt.limit = 0xFFFF;
                sregs.cr0 = 0x6000_0010;
                sregs.cr2 = 0;
                sregs.cr3 = 0;
                sregs.cr4 = 0;
                sregs.efer = 0;
                fd.set_sregs(&sregs).map_err(setup("KVM_SET_SREGS"))?;
                let mut regs = fd.get_regs().map_err(setup("KVM_GET_REGS"))?;
                regs.rdx = u64::from(signature);
                regs.rflags = 2;
                regs.rip = 0xFFF0;
                fd.set_regs(&regs).map_err(setup("KVM_SET_REGS"))?;
            }
            VcpuStart::Linux64 {
                entry,
                boot_params,
                page_table,
                gdt,
            } => {
                let mut sregs = fd.get_sregs().map_err(setup("KVM_GET_SREGS"))?;
                let code = kvm_segment {
                    base: 0,
                    limit: 0xFFFF_FFFF,
                    selector: 0x10,
                    type_: 0xB,
                    present: 1,
                    dpl: 0,
                    db: 0,
                    s: 1,
                    l: 1,
                    g: 1,
                    avl: 0,
                    unusable: 0,
                    padding: 0,
                };
                let data = kvm_segment {
                    selector: 0x18,
                    type_: 0x3,
                    l: 0,
                    db: 1,
                    ..code
                };
                sregs.cs = code;
                sregs.ds = data;
                sregs.es = data;
                sregs.fs = data;
                sregs.gs = data;
                sregs.ss = data;
                sregs.gdt.base = gdt;
                sregs.gdt.limit = 4 * 8 - 1;
                sregs.cr3 = page_table;
                sregs.cr4 |= 0x20; // PAE
                sregs.cr0 |= 0x8000_0001; // PG | PE
                sregs.efer |= 0x500; // LME | LMA
                fd.set_sregs(&sregs).map_err(setup("KVM_SET_SREGS"))?;
                let regs = kvm_regs {
                    rip: entry,
                    rsi: boot_params,
                    rflags: 2,
                    ..Default::default()
                };
                fd.set_regs(&regs).map_err(setup("KVM_SET_REGS"))?;
            }
        }
        // With the local APICs in the kernel, application processors wait
        // for INIT/SIPI; a firmware boot starts every vCPU at the reset
        // vector, as without an interrupt controller.
        if index > 0
            && start == VcpuStart::Reset
            && self.irqchip.load(Ordering::Acquire) == IRQCHIP_SPLIT
        {
            let runnable = kvm_bindings::kvm_mp_state {
                mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
            };
            fd.set_mp_state(runnable)
                .map_err(setup("KVM_SET_MP_STATE"))?;
        }
        Ok(KvmVcpu { fd, index })
    }

    fn create_legacy_irqchip(&self) -> Result<(), BackendError> {
        self.vm
            .create_irq_chip()
            .map_err(|e| BackendError::VmSetup("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.vm
            .create_pit2(pit)
            .map_err(|e| BackendError::VmSetup("KVM_CREATE_PIT2", e))?;
        self.irqchip.store(IRQCHIP_LEGACY, Ordering::Release);
        Ok(())
    }

    fn create_split_irqchip(&self, pins: u32) -> Result<(), BackendError> {
        let cap = kvm_bindings::kvm_enable_cap {
            cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
            args: [u64::from(pins), 0, 0, 0],
            ..Default::default()
        };
        self.vm
            .enable_cap(&cap)
            .map_err(|e| BackendError::VmSetup("KVM_CAP_SPLIT_IRQCHIP", e))?;
        self.irqchip.store(IRQCHIP_SPLIT, Ordering::Release);
        Ok(())
    }

    fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.vm
            .register_irqfd(fd, gsi)
            .map_err(|source| BackendError::Interrupts {
                what: "KVM_IRQFD",
                at: u64::from(gsi),
                source,
            })
    }

    fn register_ioevent(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u32>,
    ) -> Result<(), BackendError> {
        let (kvm_addr, at) = match addr {
            IoEventAddress::Pio(port) => (kvm_ioctls::IoEventAddress::Pio(port), port),
            IoEventAddress::Mmio(gpa) => (kvm_ioctls::IoEventAddress::Mmio(gpa), gpa),
        };
        let result = match datamatch {
            Some(value) => self.vm.register_ioevent(fd, &kvm_addr, value),
            None => self
                .vm
                .register_ioevent(fd, &kvm_addr, kvm_ioctls::NoDatamatch),
        };
        result.map_err(|source| BackendError::Interrupts {
            what: "KVM_IOEVENTFD",
            at,
            source,
        })
    }

    fn set_msi_routes(&self, routes: &[(u32, MsiMessage)]) -> Result<(), BackendError> {
        let too_many = |_| BackendError::Interrupts {
            what: "KVM_SET_GSI_ROUTING (table size)",
            at: routes.len() as u64,
            source: kvm_ioctls::Error::new(libc::E2BIG),
        };
        let mut table = KvmIrqRouting::new(routes.len()).map_err(too_many)?;
        for (entry, (gsi, msi)) in table.as_mut_slice().iter_mut().zip(routes) {
            entry.gsi = *gsi;
            entry.type_ = kvm_bindings::KVM_IRQ_ROUTING_MSI;
            entry.u.msi = kvm_bindings::kvm_irq_routing_msi {
                address_lo: msi.address_lo,
                address_hi: msi.address_hi,
                data: msi.data,
                ..Default::default()
            };
        }
        self.vm
            .set_gsi_routing(&table)
            .map_err(|source| BackendError::Interrupts {
                what: "KVM_SET_GSI_ROUTING",
                at: routes.len() as u64,
                source,
            })
    }
}

/// The CPUID table for one vCPU: what KVM supports, with this vCPU's APIC
/// ID and topology, and umbra's hypervisor leaves (after KVM's own).
fn vcpu_cpuid(
    supported: &CpuId,
    index: u32,
    vcpu_count: u32,
    umbra_features: u32,
    signature: Option<u32>,
) -> Result<CpuId, kvm_ioctls::Error> {
    use umbra_firmware::layout::{UMBRA_CPUID_FEATURES, UMBRA_CPUID_LEAF};
    let mut entries: Vec<kvm_bindings::kvm_cpuid_entry2> = supported
        .as_slice()
        .iter()
        .filter(|e| e.function != UMBRA_CPUID_LEAF && e.function != UMBRA_CPUID_FEATURES)
        .copied()
        .collect();
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: UMBRA_CPUID_LEAF,
        eax: UMBRA_CPUID_FEATURES,
        ebx: u32::from_le_bytes(*b"Umbr"),
        ecx: u32::from_le_bytes(*b"aUmb"),
        edx: u32::from_le_bytes(*b"raVM"),
        ..Default::default()
    });
    entries.push(kvm_bindings::kvm_cpuid_entry2 {
        function: UMBRA_CPUID_FEATURES,
        eax: umbra_features,
        ..Default::default()
    });
    let mut cpuid =
        CpuId::from_entries(&entries).map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors.
                entry.ebx = (entry.ebx & 0xFFFF) | (index << 24) | (vcpu_count.min(255) << 16);
                if let Some(signature) = signature {
                    entry.eax = signature;
                }
            }
            0xB | 0x1F => entry.edx = index,
            _ => {}
        }
    }
    Ok(cpuid)
}

/// A plain KVM vCPU.
pub struct KvmVcpu {
    fd: VcpuFd,
    index: u32,
}

impl Vcpu for KvmVcpu {
    fn index(&self) -> u32 {
        self.index
    }

    fn describe_state(&self) -> String {
        match (self.fd.get_regs(), self.fd.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} cs={:#x}/base {:#x} cr0={:#x} cr3={:#x} cr4={:#x} efer={:#x} rsp={:#x} rax={:#x}",
                r.rip, s.cs.selector, s.cs.base, s.cr0, s.cr3, s.cr4, s.efer, r.rsp, r.rax
            ),
            (Err(e), _) | (_, Err(e)) => format!("registers unavailable: {e}"),
        }
    }

    fn run(&mut self) -> Result<VcpuExit<'_>, BackendError> {
        let index = self.index;
        translate_exit(index, self.fd.run())
    }
}

impl KvmVcpu {
    /// The vCPU fd (for backends layered on this one).
    pub(crate) fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    /// The vCPU fd, mutably (to run it and read exits KVM-specifically).
    pub(crate) fn fd_mut(&mut self) -> &mut VcpuFd {
        &mut self.fd
    }
}

/// Maps one `KVM_RUN` result to the backend's exit.
pub fn translate_exit(
    index: u32,
    result: Result<kvm_ioctls::VcpuExit<'_>, kvm_ioctls::Error>,
) -> Result<VcpuExit<'_>, BackendError> {
    use kvm_ioctls::VcpuExit as K;
    match result {
        Ok(K::IoIn(port, data)) => Ok(VcpuExit::PioIn(port, data)),
        Ok(K::IoOut(port, data)) => Ok(VcpuExit::PioOut(port, data)),
        Ok(K::MmioRead(addr, data)) => Ok(VcpuExit::MmioRead(addr, data)),
        Ok(K::MmioWrite(addr, data)) => Ok(VcpuExit::MmioWrite(addr, data)),
        Ok(K::Hlt) => Ok(VcpuExit::Halt),
        Ok(K::Shutdown) => Ok(VcpuExit::Shutdown),
        Ok(K::Intr) => Ok(VcpuExit::Interrupted),
        Ok(K::X86Rdmsr(exit)) => Ok(VcpuExit::MsrRead {
            index: exit.index,
            data: exit.data,
            error: exit.error,
        }),
        Ok(K::X86Wrmsr(exit)) => Ok(VcpuExit::MsrWrite {
            index: exit.index,
            data: exit.data,
            error: exit.error,
        }),
        Ok(other) => Ok(VcpuExit::Unhandled(format!("{other:?}"))),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            Ok(VcpuExit::Interrupted)
        }
        Err(e) => Err(BackendError::Run(index, e)),
    }
}
