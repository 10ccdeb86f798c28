//! The guest's side door into the SNP model: the GHCB MSR protocol (GHCB
//! spec 56421 §2.3.1), the GHCB-page SNP guest request (NAE 0x8000_0011),
//! SEV_STATUS and the paravirtual VMGEXIT / PVALIDATE MSRs that stand in for
//! instructions KVM cannot hand to userspace here
//! (`umbra_firmware::layout::MSR_UMBRA_*`).
//!
//! Everything in here is guest-controlled input: every request is
//! validated and answered with the architected response or error code, and
//! nothing a guest sends can panic the VMM.

use crate::error::error_chain;
use crate::memory::GuestRam;
use crate::page_state::{PageSize, PageState};
use crate::shared_memory::SharedMemory;
use crate::sync::lock;
use std::sync::Arc;
use umbra_firmware::layout::{MSR_GHCB, MSR_SEV_STATUS, MSR_UMBRA_PVALIDATE, MSR_UMBRA_VMGEXIT};
use umbra_snp_model::rmp::RET_FAIL_INPUT;
use umbra_snp_model::SnpFirmwareModel;

/// The MSRs the model intercepts.
pub const MODEL_MSRS: [u32; 4] = [
    MSR_GHCB,
    MSR_SEV_STATUS,
    MSR_UMBRA_VMGEXIT,
    MSR_UMBRA_PVALIDATE,
];

/// GHCB MSR protocol codes (GHCBInfo, bits 11:0).
mod info {
    pub const SEV_INFO_RESP: u64 = 0x001;
    pub const SEV_INFO_REQ: u64 = 0x002;
    pub const CPUID_REQ: u64 = 0x004;
    pub const CPUID_RESP: u64 = 0x005;
    pub const PREFERRED_GHCB_REQ: u64 = 0x010;
    pub const PREFERRED_GHCB_RESP: u64 = 0x011;
    pub const REGISTER_GHCB_REQ: u64 = 0x012;
    pub const REGISTER_GHCB_RESP: u64 = 0x013;
    pub const PSC_REQ: u64 = 0x014;
    pub const PSC_RESP: u64 = 0x015;
    pub const HV_FEATURES_REQ: u64 = 0x080;
    pub const HV_FEATURES_RESP: u64 = 0x081;
    pub const TERMINATE_REQ: u64 = 0x100;
}

mod certs;
mod nae;
pub use nae::{DeviceAccess, GhcbAccess};

/// GHCB page offsets (GHCB spec table 3).
pub(crate) mod ghcb_page {
    pub const RAX: usize = 0x1F8;
    pub const RCX: usize = 0x308;
    pub const RDX: usize = 0x310;
    pub const RBX: usize = 0x318;
    pub const SW_EXIT_CODE: usize = 0x390;
    pub const SW_EXIT_INFO_1: usize = 0x398;
    pub const SW_EXIT_INFO_2: usize = 0x3A0;
    pub const SW_SCRATCH: usize = 0x3A8;
    pub const VALID_BITMAP: usize = 0x3F0;
    pub const SHARED_BUFFER: usize = 0x800;
    pub const SHARED_BUFFER_END: usize = 0xFF0;
    pub const USAGE: usize = 0xFFC;
}

/// GFN value meaning "refused" / "no preference" (all ones in bits 63:12).
const GFN_NONE: u64 = 0xF_FFFF_FFFF_FFFF;
/// Protocol versions offered: min 2 (SNP), max 2.
const PROTOCOL_MIN: u64 = 2;
const PROTOCOL_MAX: u64 = 2;
/// C-bit position reported, the same as in the model's CPUID page.
const C_BIT: u64 = umbra_snp_model::psp::MODEL_C_BIT as u64;
/// PSC "generic error", as KVM reports it (bit 63 of the response).
const PSC_ERROR: u64 = 1 << 31;

/// Why a page-state conversion was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The range is not convertible guest RAM (ROM, MMIO, guard, outside RAM, unaligned).
    #[error("page-state change refused")]
    CheckRange(#[source] crate::page_state::PageStateError),
    /// The VMM's view could not be re-protected (e.g. too many mappings).
    #[error("cannot change the VMM's access to the range")]
    Protect(#[source] crate::memory::MemoryError),
}

/// Per-vCPU protocol state.
#[derive(Clone, Copy, Debug, Default)]
struct VcpuState {
    msr: u64,
    ghcb_gfn: Option<u64>,
    pvalidate_result: u64,
}

/// What a VMGEXIT asks of the VMM beyond its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GhcbOutcome {
    /// Continue the guest.
    Resume,
    /// The guest asked to terminate (reason set, reason code).
    Terminate(u8, u8),
    /// A GHCB-page exit from a GPA the vCPU never registered: the VM cannot
    /// continue (KVM fails the vCPU run the same way).
    Unregistered(u64),
    /// A device access for the VMM's handlers (then `complete_access`).
    Device(GhcbAccess),
}

/// A direct access by an SNP guest that silicon would not have let reach
/// the hypervisor.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FidelityViolation {
    /// The vCPU.
    pub vcpu: u32,
    /// `ioio` or `mmio`.
    pub kind: &'static str,
    /// Port or guest-physical address.
    pub address: u64,
    /// Whether it was a write.
    pub write: bool,
    /// What silicon would have done.
    pub silicon: String,
}

/// The pages a guest request used shared: the GHCB, the request and
/// response pages, and (extended request) the certificate pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedUse {
    pub ghcb: u64,
    pub request: u64,
    pub response: u64,
    /// First page and number of pages.
    pub certs: Option<(u64, u64)>,
}

/// The GHCB MSR protocol's SEV-information response.
fn sev_info_response() -> u64 {
    (PROTOCOL_MAX << 48) | (PROTOCOL_MIN << 32) | (C_BIT << 24) | info::SEV_INFO_RESP
}

/// A CPUID answer source for MSR-protocol CPUID requests.
pub type CpuidTable = Vec<(u32, [u32; 4])>;

/// The model's run-time half: the firmware model, the page states and the
/// protocol state of every vCPU.
pub struct SnpRuntime {
    /// The firmware model (RMP, keys, guest messages).
    pub model: SnpFirmwareModel,
    ram: Arc<GuestRam>,
    shared: SharedMemory,
    vcpus: Vec<VcpuState>,
    /// GHCB-page exits by event name, for the metrics.
    pub ghcb_exits: std::collections::BTreeMap<&'static str, u64>,
    /// #VCs the model delivered for direct accesses (strict mode).
    pub vc_injected: u64,
    /// Direct accesses silicon would not have let through.
    pub fidelity_violations: Vec<FidelityViolation>,
    sev_status: u64,
    cpuid: CpuidTable,
    /// The last report the model signed, for `--attest-out`.
    pub last_report: Option<Vec<u8>>,
    /// Reports signed so far.
    pub reports_signed: u64,
    /// The certificate table the extended guest request hands out.
    certificates: Vec<u8>,
    /// After a guest request: the vCPU and the pages it used shared (GHCB,
    /// request, response), for the C-bit check (`cbit.rs`).
    mapping_check: Option<(usize, SharedUse)>,
}

impl SnpRuntime {
    /// The pages vCPU `vcpu` used shared in its last guest request, once.
    pub fn take_mapping_check(&mut self, vcpu: usize) -> Option<SharedUse> {
        match self.mapping_check {
            Some((v, pages)) if v == vcpu => {
                self.mapping_check = None;
                Some(pages)
            }
            _ => None,
        }
    }

    /// Asks for the C-bit check of `vcpu`'s guest request.
    fn note_guest_request(&mut self, vcpu: usize, request: u64, response: u64) {
        let ghcb = self
            .vcpus
            .get(vcpu)
            .and_then(|v| v.ghcb_gfn)
            .map_or(request, |gfn| gfn << 12);
        self.mapping_check = Some((
            vcpu,
            SharedUse {
                ghcb,
                request,
                response,
                certs: None,
            },
        ));
    }

    /// The C-bit as a page-table-entry mask.
    pub fn c_bit_mask(&self) -> u64 {
        1 << C_BIT
    }

    /// A runtime for `vcpus` vCPUs of a guest with VMSA `guest_features`.
    pub fn new(
        model: SnpFirmwareModel,
        ram: Arc<GuestRam>,
        shared: SharedMemory,
        vcpus: u32,
        guest_features: u64,
        cpuid: CpuidTable,
    ) -> Self {
        SnpRuntime {
            model,
            ram,
            shared,
            // KVM presets the GHCB MSR of every SEV-ES vCPU with the
            // SEV-information response, so a guest can read the protocol
            // range and C-bit before its first VMGEXIT.
            vcpus: vec![
                VcpuState {
                    msr: sev_info_response(),
                    ..VcpuState::default()
                };
                vcpus as usize
            ],
            // SEV_STATUS: SEV | SEV-ES | (SEV_FEATURES << 2); SNPActive is
            // feature bit 0, so bit 2.
            sev_status: 0b11 | (guest_features << 2),
            cpuid,
            ghcb_exits: Default::default(),
            vc_injected: 0,
            fidelity_violations: Vec::new(),
            last_report: None,
            reports_signed: 0,
            certificates: Vec::new(),
            mapping_check: None,
        }
    }

    /// The CPUID answers (the host's, subleaf 0).
    pub fn cpuid(&self) -> &CpuidTable {
        &self.cpuid
    }

    /// `rdmsr` of an intercepted MSR; `None` injects #GP.
    pub fn rdmsr(&mut self, vcpu: u32, index: u32) -> Option<u64> {
        let state = self.vcpus.get(vcpu as usize)?;
        match index {
            MSR_SEV_STATUS => Some(self.sev_status),
            MSR_GHCB => Some(state.msr),
            MSR_UMBRA_PVALIDATE => Some(state.pvalidate_result),
            _ => None,
        }
    }

    /// `wrmsr` of an intercepted MSR; `None` injects #GP.
    pub fn wrmsr(&mut self, vcpu: u32, index: u32, value: u64) -> Option<GhcbOutcome> {
        if vcpu as usize >= self.vcpus.len() {
            return None;
        }
        match index {
            MSR_GHCB => {
                self.vcpus[vcpu as usize].msr = value;
                Some(GhcbOutcome::Resume)
            }
            MSR_UMBRA_VMGEXIT => Some(self.vmgexit(vcpu as usize)),
            MSR_UMBRA_PVALIDATE => {
                self.pvalidate(vcpu as usize, value);
                Some(GhcbOutcome::Resume)
            }
            // SEV_STATUS is read-only.
            _ => None,
        }
    }

    fn pvalidate(&mut self, vcpu: usize, value: u64) {
        let gpa = value & !0xFFF;
        let validate = value & 2 != 0;
        let size = if value & 1 != 0 {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        self.vcpus[vcpu].pvalidate_result = if value & 0xFFC != 0 {
            // Bits 11:2 of the request are reserved (an invalid operand).
            u64::from(RET_FAIL_INPUT)
        } else {
            self.assign_if_private(gpa, size);
            match self.model.rmp_mut().pvalidate(gpa, size, validate) {
                Ok(p) => u64::from(p.eax) | (u64::from(p.no_update) << 63),
                Err(e) => {
                    // On hardware this is a nested page fault the host would
                    // see; the model answers FAIL_INPUT and logs it.
                    log::warn!("vCPU {vcpu}: PVALIDATE {gpa:#x} refused: {e}");
                    u64::from(RET_FAIL_INPUT)
                }
            }
        };
    }

    /// Private pages the guest never converted are assigned to it lazily (as
    /// KVM assigns guest_memfd pages on first fault), so a 64 GiB guest costs
    /// no RMP entries until it touches its memory. Only a range that is
    /// private as a whole, aligned to its size and not yet assigned is.
    fn assign_if_private(&mut self, gpa: u64, size: PageSize) {
        let bytes = size.bytes();
        if !gpa.is_multiple_of(bytes) {
            return;
        }
        let states = lock(self.shared.states());
        let all_private = (gpa..gpa.saturating_add(bytes))
            .step_by(PageSize::Size4K.bytes() as usize)
            .all(|page| states.state(page) == Some(PageState::Private));
        drop(states);
        let rmp = self.model.rmp_mut();
        if all_private && !rmp.entry(gpa).is_some_and(|e| e.assigned) {
            if let Err(e) = rmp.assign(gpa, size, false) {
                log::debug!("cannot assign {gpa:#x}: {e}");
            }
        }
    }

    fn vmgexit(&mut self, vcpu: usize) -> GhcbOutcome {
        let request = self.vcpus[vcpu].msr;
        let code = request & 0xFFF;
        if code == 0 {
            return self.ghcb_page_exit(vcpu, request);
        }
        let data = request >> 12;
        let response = match code {
            info::SEV_INFO_REQ => Some(sev_info_response()),
            info::CPUID_REQ => {
                let function = (request >> 32) as u32;
                let register = ((request >> 30) & 3) as usize;
                let value = self
                    .cpuid
                    .iter()
                    .find(|(f, _)| *f == function)
                    .map_or(0, |(_, r)| r[register]);
                Some((u64::from(value) << 32) | ((register as u64) << 30) | info::CPUID_RESP)
            }
            info::PREFERRED_GHCB_REQ => Some((GFN_NONE << 12) | info::PREFERRED_GHCB_RESP),
            info::REGISTER_GHCB_REQ => {
                // The GHCB must be a shared RAM page (the guest converts it
                // before registering, as Linux does).
                let gfn = data;
                let ok = lock(self.shared.states()).state(gfn << 12) == Some(PageState::Shared);
                self.vcpus[vcpu].ghcb_gfn = ok.then_some(gfn);
                Some(((if ok { gfn } else { GFN_NONE }) << 12) | info::REGISTER_GHCB_RESP)
            }
            info::PSC_REQ => Some(self.msr_psc(vcpu, request)),
            info::HV_FEATURES_REQ => Some((1 << 12) | info::HV_FEATURES_RESP),
            info::TERMINATE_REQ => {
                let set = ((request >> 12) & 0xF) as u8;
                let reason = ((request >> 16) & 0xFF) as u8;
                return GhcbOutcome::Terminate(set, reason);
            }
            _ => {
                // KVM leaves the MSR unchanged for unknown requests; the
                // guest must check the response code.
                log::warn!("vCPU {vcpu}: unknown GHCB MSR request {code:#x}");
                None
            }
        };
        if let Some(response) = response {
            self.vcpus[vcpu].msr = response;
        }
        GhcbOutcome::Resume
    }

    /// MSR-protocol page-state change of one 4 KiB page.
    fn msr_psc(&mut self, vcpu: usize, request: u64) -> u64 {
        let op = (request >> 52) & 0xF;
        let gpa = ((request >> 12) & ((1 << 40) - 1)) << 12;
        let to = match op {
            1 => PageState::Private,
            2 => PageState::Shared,
            _ => {
                log::warn!("vCPU {vcpu}: page-state change with operation {op}");
                return (PSC_ERROR << 32) | info::PSC_RESP;
            }
        };
        match self.convert(gpa, PageSize::Size4K.bytes(), to) {
            Ok(()) => info::PSC_RESP,
            Err(why) => {
                log::warn!(
                    "vCPU {vcpu}: page-state change of {gpa:#x} to {to:?}: {}",
                    error_chain(&why)
                );
                (PSC_ERROR << 32) | info::PSC_RESP
            }
        }
    }

    /// Converts a range in the tracker, the VMM's view and the RMP, under
    /// the tracker's lock so that the shared-only accessor never sees a page
    /// the tracker calls shared while the VMM's view of it is inaccessible.
    /// A failure leaves every page as it was.
    pub fn convert(&mut self, gpa: u64, len: u64, to: PageState) -> Result<(), ConvertError> {
        let ram = self.ram.clone();
        let states_lock = self.shared.states().clone();
        let devices = self.shared.device_filter().clone();
        let mut states = lock(&states_lock);
        states
            .check_range(gpa, len, PageSize::Size4K)
            .map_err(ConvertError::CheckRange)?;
        // The frames whose state changes: their old half is discarded
        // afterwards (both ways, as QEMU discards), the others keep theirs.
        let changing: Vec<u64> = (gpa..gpa + len)
            .step_by(PageSize::Size4K.bytes() as usize)
            .filter(|&page| states.state(page) != Some(to))
            .collect();
        match to {
            PageState::Shared => {
                // Grant the VMM access first, then publish the page as shared.
                ram.set_vmm_access(gpa, len, true)
                    .map_err(ConvertError::Protect)?;
                states
                    .convert(gpa, len, to)
                    .map_err(ConvertError::CheckRange)?;
                // Devices last: they may reach the page from now on.
                devices.map(gpa, len);
            }
            PageState::Private => {
                // Publish the page as private first, then take it from the
                // devices (which waits for their in-flight copies), then
                // take the VMM's access away.
                states
                    .convert(gpa, len, to)
                    .map_err(ConvertError::CheckRange)?;
                devices.unmap(gpa, len);
                if let Err(e) = ram.set_vmm_access(gpa, len, false) {
                    let _ = states.convert(gpa, len, PageState::Shared);
                    devices.map(gpa, len);
                    return Err(ConvertError::Protect(e));
                }
            }
        }
        let mut discarded = 0;
        for &page in &changing {
            match ram.discard(page, PageSize::Size4K.bytes()) {
                Ok(()) => discarded += 1,
                Err(e) => log::debug!("discarding {page:#x}: {e}"),
            }
        }
        states.count_discarded(to, discarded);
        drop(states);
        // Shared pages belong to the hypervisor (RMP unassigned, and so no
        // longer validated); private ones are assigned to the guest, which
        // must PVALIDATE them before use.
        let rmp = self.model.rmp_mut();
        for page in (gpa..gpa + len).step_by(PageSize::Size4K.bytes() as usize) {
            let done = match to {
                PageState::Shared => rmp.unassign(page, PageSize::Size4K),
                PageState::Private => rmp.assign(page, PageSize::Size4K, false),
            };
            if let Err(e) = done {
                log::debug!("RMP update of {page:#x} to {to:?}: {e}");
            }
        }
        Ok(())
    }
}
