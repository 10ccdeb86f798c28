//! GHCB-page events (non-automatic exits, GHCB spec 56421 §4.1): the guest
//! fills the GHCB, marks the fields it sets in the valid bitmap and does a
//! VMGEXIT; the hypervisor answers in SW_EXITINFO1/2. Device accesses (port
//! I/O, MMIO, MSRs) leave here as a [`GhcbAccess`] for the VMM's handlers
//! and are finished by [`SnpRuntime::complete_access`], as KVM completes
//! them on the next entry. Everything in the page is hostile input.

use super::{ghcb_page, GhcbOutcome, SnpRuntime};
use crate::page_state::{PageSize, PageState};

/// NAE events (GHCB spec table 7; Linux `SVM_EXIT_*`, `SVM_VMGEXIT_*`).
const CPUID: u64 = 0x72;
const IOIO: u64 = 0x7B;
const MSR: u64 = 0x7C;
const MMIO_READ: u64 = 0x8000_0001;
const MMIO_WRITE: u64 = 0x8000_0002;
const PSC: u64 = 0x8000_0010;
const SNP_GUEST_REQUEST: u64 = 0x8000_0011;
const SNP_EXT_GUEST_REQUEST: u64 = 0x8000_0012;

/// IOIO exit information (AMD APM vol. 2, "IOIO Intercept").
const IOIO_TYPE_IN: u64 = 1 << 0;
const IOIO_STR: u64 = 1 << 2;
const IOIO_REP: u64 = 1 << 3;
const IOIO_SZ8: u64 = 1 << 4;
const IOIO_SZ16: u64 = 1 << 5;
const IOIO_SZ32: u64 = 1 << 6;

/// SW_EXITINFO2 of a guest request the hypervisor itself could not carry
/// out (pages not shared, unreadable or unwritable), as KVM answers it:
/// `SNP_GUEST_ERR(SNP_GUEST_VMM_ERR_GENERIC, 0)` (Linux uapi sev-guest.h),
/// the VMM error in the upper half and no firmware status. A firmware
/// refusal is `SNP_GUEST_ERR(0, status)`.
const VMM_ERR_GENERIC: u64 = 0xFFFF_FFFF << 32;

/// PSC buffer limits (GHCB spec §4.1.6): an 8-byte header, then entries.
const PSC_MAX_ENTRIES: u16 = 253;
/// SW_EXITINFO2 on a refused PSC request: invalid header / invalid entry.
const PSC_INVALID_HEADER: u64 = 1 << 32;
const PSC_INVALID_ENTRY: u64 = 2 << 32;

/// The device access a guest asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceAccess {
    /// MMIO of `len` bytes at `gpa`.
    Mmio {
        /// Device register address.
        gpa: u64,
        /// 1, 2, 4 or 8.
        len: usize,
        /// A write (else a read).
        write: bool,
    },
    /// Port I/O of `len` bytes.
    Pio {
        /// The port.
        port: u16,
        /// 1, 2 or 4.
        len: usize,
        /// An OUT (else an IN).
        write: bool,
    },
    /// An MSR access the hypervisor emulates.
    Msr {
        /// MSR index.
        index: u32,
        /// A WRMSR (else RDMSR).
        write: bool,
    },
}

/// Where a read's result goes in the GHCB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResultSlot {
    /// At this offset of the shared buffer.
    Scratch(usize),
    /// RAX (port input).
    Rax,
    /// EDX:EAX (RDMSR).
    RaxRdx,
}

/// A device access requested through the GHCB, pending completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GhcbAccess {
    /// What to do.
    pub access: DeviceAccess,
    /// Data of a write (first `len` bytes; 8 for an MSR value).
    pub data: [u8; 8],
    ghcb: u64,
    result: ResultSlot,
}

fn u64_at(p: &[u8; 4096], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&p[at..at + 8]);
    u64::from_le_bytes(b)
}

fn put_u64(p: &mut [u8; 4096], at: usize, value: u64) {
    p[at..at + 8].copy_from_slice(&value.to_le_bytes());
    let bit = at / 8;
    p[ghcb_page::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
}

fn valid(p: &[u8; 4096], offset: usize) -> bool {
    let bit = offset / 8;
    p[ghcb_page::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
}

/// The offset of `[scratch, scratch + len)` inside the GHCB's shared
/// buffer, where Linux places it (KVM refuses a scratch area it cannot map).
fn scratch_offset(ghcb: u64, scratch: u64, len: usize) -> Option<usize> {
    let at = usize::try_from(scratch.checked_sub(ghcb)?).ok()?;
    (at >= ghcb_page::SHARED_BUFFER && at.checked_add(len)? <= ghcb_page::SHARED_BUFFER_END)
        .then_some(at)
}

/// Validates an MMIO request: 1, 2, 4 or 8 bytes, scratch in the buffer.
pub(super) fn mmio_request(
    page: &[u8; 4096],
    ghcb: u64,
    write: bool,
    gpa: u64,
    len: u64,
    scratch: u64,
) -> Option<GhcbAccess> {
    let len = usize::try_from(len)
        .ok()
        .filter(|l| matches!(l, 1 | 2 | 4 | 8))?;
    let at = scratch_offset(ghcb, scratch, len)?;
    let mut data = [0u8; 8];
    if write {
        data[..len].copy_from_slice(page.get(at..at + len)?);
    }
    Some(GhcbAccess {
        access: DeviceAccess::Mmio { gpa, len, write },
        data,
        ghcb,
        result: ResultSlot::Scratch(at),
    })
}

/// Validates an IOIO request: one 1-, 2- or 4-byte access. String and REP
/// forms (data in the scratch buffer) are refused: umbra's guests do not
/// use them, and refusing is the architected answer to what is unsupported.
fn ioio_request(page: &[u8; 4096], ghcb: u64, info1: u64) -> Option<GhcbAccess> {
    if info1 & (IOIO_STR | IOIO_REP) != 0 {
        return None;
    }
    let len = match info1 & (IOIO_SZ8 | IOIO_SZ16 | IOIO_SZ32) {
        IOIO_SZ8 => 1,
        IOIO_SZ16 => 2,
        IOIO_SZ32 => 4,
        _ => return None,
    };
    let write = info1 & IOIO_TYPE_IN == 0;
    if write && !valid(page, ghcb_page::RAX) {
        return None;
    }
    Some(GhcbAccess {
        access: DeviceAccess::Pio {
            port: (info1 >> 16) as u16,
            len,
            write,
        },
        data: u64_at(page, ghcb_page::RAX).to_le_bytes(),
        ghcb,
        result: ResultSlot::Rax,
    })
}

/// Validates an MSR request: RCX always, EDX:EAX for a write.
fn msr_request(page: &[u8; 4096], ghcb: u64, info1: u64) -> Option<GhcbAccess> {
    let write = match info1 {
        0 => false,
        1 => true,
        _ => return None,
    };
    let needed: &[usize] = if write {
        &[ghcb_page::RCX, ghcb_page::RAX, ghcb_page::RDX]
    } else {
        &[ghcb_page::RCX]
    };
    if !needed.iter().all(|o| valid(page, *o)) {
        return None;
    }
    let value = (u64_at(page, ghcb_page::RAX) & 0xFFFF_FFFF) | (u64_at(page, ghcb_page::RDX) << 32);
    Some(GhcbAccess {
        access: DeviceAccess::Msr {
            index: u64_at(page, ghcb_page::RCX) as u32,
            write,
        },
        data: value.to_le_bytes(),
        ghcb,
        result: ResultSlot::RaxRdx,
    })
}

impl SnpRuntime {
    fn count(&mut self, event: &'static str) {
        *self.ghcb_exits.entry(event).or_default() += 1;
    }

    /// A VMGEXIT with the GHCB page at `gpa`.
    pub(super) fn ghcb_page_exit(&mut self, vcpu: usize, gpa: u64) -> GhcbOutcome {
        if self.vcpus[vcpu].ghcb_gfn != Some(gpa >> 12) {
            return GhcbOutcome::Unregistered(gpa);
        }
        let mut page = [0u8; 4096];
        if let Err(e) = self.shared.read(gpa, &mut page) {
            log::warn!("vCPU {vcpu}: GHCB at {gpa:#x} unreadable: {e}");
            return GhcbOutcome::Unregistered(gpa);
        }
        let exit_code = u64_at(&page, ghcb_page::SW_EXIT_CODE);
        let info1 = u64_at(&page, ghcb_page::SW_EXIT_INFO_1);
        let info2 = u64_at(&page, ghcb_page::SW_EXIT_INFO_2);
        let scratch = u64_at(&page, ghcb_page::SW_SCRATCH);
        let usage = u32::from_le_bytes([
            page[ghcb_page::USAGE],
            page[ghcb_page::USAGE + 1],
            page[ghcb_page::USAGE + 2],
            page[ghcb_page::USAGE + 3],
        ]);
        let all_valid = [
            ghcb_page::SW_EXIT_CODE,
            ghcb_page::SW_EXIT_INFO_1,
            ghcb_page::SW_EXIT_INFO_2,
        ]
        .iter()
        .all(|o| valid(&page, *o));
        // GHCB spec error convention: info_1 = 2 "bad input" with the reason
        // in info_2 (2 invalid usage, 4 missing input, 6 invalid event).
        if usage != 0 {
            self.respond(vcpu, gpa, &mut page, (2, 2), &[]);
            return GhcbOutcome::Resume;
        }
        if !all_valid {
            self.respond(vcpu, gpa, &mut page, (2, 4), &[]);
            return GhcbOutcome::Resume;
        }
        let access = match exit_code {
            SNP_GUEST_REQUEST => {
                self.count("guest_request");
                let status = self.guest_request(vcpu, info1, info2);
                self.respond(vcpu, gpa, &mut page, (0, status), &[]);
                return GhcbOutcome::Resume;
            }
            SNP_EXT_GUEST_REQUEST => {
                self.count("ext_guest_request");
                if !valid(&page, ghcb_page::RAX) || !valid(&page, ghcb_page::RBX) {
                    self.respond(vcpu, gpa, &mut page, (2, 4), &[]);
                    return GhcbOutcome::Resume;
                }
                let (certs, pages) = (u64_at(&page, ghcb_page::RAX), u64_at(&page, ghcb_page::RBX));
                let outcome = self.ext_guest_request(vcpu, (info1, info2), certs, pages);
                let rbx: Vec<(usize, u64)> = outcome
                    .pages_needed
                    .map(|n| (ghcb_page::RBX, n))
                    .into_iter()
                    .collect();
                self.respond(vcpu, gpa, &mut page, (0, outcome.status), &rbx);
                return GhcbOutcome::Resume;
            }
            PSC => {
                self.count("psc");
                let status = self.psc(vcpu, gpa, &mut page, scratch);
                self.respond(vcpu, gpa, &mut page, (0, status), &[]);
                return GhcbOutcome::Resume;
            }
            CPUID => {
                self.count("cpuid");
                let regs = self.cpuid_exit(&page);
                self.respond(vcpu, gpa, &mut page, (0, 0), &regs);
                return GhcbOutcome::Resume;
            }
            MMIO_READ | MMIO_WRITE => {
                self.count(if exit_code == MMIO_READ {
                    "mmio_read"
                } else {
                    "mmio_write"
                });
                mmio_request(&page, gpa, exit_code == MMIO_WRITE, info1, info2, scratch)
                    .filter(|_| valid(&page, ghcb_page::SW_SCRATCH))
            }
            IOIO => {
                self.count("ioio");
                ioio_request(&page, gpa, info1)
            }
            MSR => {
                self.count("msr");
                msr_request(&page, gpa, info1)
            }
            _ => {
                self.count("unsupported");
                log::debug!("vCPU {vcpu}: unsupported GHCB event {exit_code:#x}");
                self.respond(vcpu, gpa, &mut page, (2, 6), &[]);
                return GhcbOutcome::Resume;
            }
        };
        match access {
            Some(access) => GhcbOutcome::Device(access),
            None => {
                log::debug!("vCPU {vcpu}: malformed GHCB request {exit_code:#x}");
                self.respond(vcpu, gpa, &mut page, (2, 4), &[]);
                GhcbOutcome::Resume
            }
        }
    }

    /// Writes the hypervisor's answer into the GHCB at `gpa`: the exit
    /// information and the register fields in `answered`, each marked valid
    /// (everything else the guest set is no longer valid).
    fn respond(
        &self,
        vcpu: usize,
        gpa: u64,
        page: &mut [u8; 4096],
        (out1, out2): (u64, u64),
        answered: &[(usize, u64)],
    ) {
        page[ghcb_page::VALID_BITMAP..ghcb_page::VALID_BITMAP + 16].fill(0);
        for &(at, value) in answered {
            put_u64(page, at, value);
        }
        put_u64(page, ghcb_page::SW_EXIT_INFO_1, out1);
        put_u64(page, ghcb_page::SW_EXIT_INFO_2, out2);
        if let Err(e) = self.shared.write(gpa, page) {
            log::warn!("vCPU {vcpu}: GHCB at {gpa:#x} became unwritable: {e}");
        }
    }

    /// Finishes a device access once the handler ran: a read's `data` goes
    /// where the event puts results, and the GHCB reports success.
    pub fn complete_access(&mut self, vcpu: u32, access: &GhcbAccess, data: &[u8]) {
        let vcpu = vcpu as usize;
        let mut page = [0u8; 4096];
        if self.shared.read(access.ghcb, &mut page).is_err() {
            log::warn!(
                "vCPU {vcpu}: GHCB at {:#x} vanished during an access",
                access.ghcb
            );
            return;
        }
        let mut value = [0u8; 8];
        let n = data.len().min(8);
        value[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(value);
        let read = match access.access {
            DeviceAccess::Mmio { write, .. }
            | DeviceAccess::Pio { write, .. }
            | DeviceAccess::Msr { write, .. } => !write,
        };
        let mut answered: Vec<(usize, u64)> = Vec::new();
        if read {
            match access.result {
                ResultSlot::Scratch(at) => {
                    if let (Some(dst), Some(src)) = (page.get_mut(at..at + n), data.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                }
                ResultSlot::Rax => answered.push((ghcb_page::RAX, value)),
                ResultSlot::RaxRdx => {
                    answered.push((ghcb_page::RAX, value & 0xFFFF_FFFF));
                    answered.push((ghcb_page::RDX, value >> 32));
                }
            }
        }
        self.respond(vcpu, access.ghcb, &mut page, (0, 0), &answered);
    }

    /// Answers a device access the VMM could not perform with the event
    /// the guest gets instead (`inject`: a GHCB event-injection value).
    pub fn fail_access(&mut self, vcpu: u32, access: &GhcbAccess, inject: u64) {
        let mut page = [0u8; 4096];
        if self.shared.read(access.ghcb, &mut page).is_ok() {
            self.respond(vcpu as usize, access.ghcb, &mut page, (1, inject), &[]);
        }
    }

    /// CPUID through the GHCB: RAX = leaf, RCX = subleaf (the model's table
    /// has subleaf 0 only; others answer zero).
    fn cpuid_exit(&self, page: &[u8; 4096]) -> [(usize, u64); 4] {
        let leaf = u64_at(page, ghcb_page::RAX) as u32;
        let subleaf = u64_at(page, ghcb_page::RCX) as u32;
        let regs = self
            .cpuid
            .iter()
            .find(|(l, _)| *l == leaf)
            .filter(|_| subleaf == 0)
            .map_or([0; 4], |(_, r)| *r);
        [
            (ghcb_page::RAX, u64::from(regs[0])),
            (ghcb_page::RBX, u64::from(regs[1])),
            (ghcb_page::RCX, u64::from(regs[2])),
            (ghcb_page::RDX, u64::from(regs[3])),
        ]
    }

    /// Page-state change through the GHCB (GHCB spec §4.1.6): entries
    /// `cur_entry..=end_entry` of the buffer at `scratch`, each converted as
    /// the MSR-protocol request is; `cur_entry` advances past every entry
    /// done. Returns SW_EXITINFO2.
    fn psc(&mut self, vcpu: usize, gpa: u64, page: &mut [u8; 4096], scratch: u64) -> u64 {
        let Some(at) = scratch_offset(gpa, scratch, 8) else {
            return PSC_INVALID_HEADER;
        };
        let cur = u16::from_le_bytes([page[at], page[at + 1]]);
        let end = u16::from_le_bytes([page[at + 2], page[at + 3]]);
        if end >= PSC_MAX_ENTRIES || cur > end {
            return PSC_INVALID_HEADER;
        }
        let entries_at = at + 8;
        for index in cur..=end {
            let e = entries_at + usize::from(index) * 8;
            if scratch_offset(gpa, gpa + e as u64, 8).is_none() {
                return PSC_INVALID_HEADER;
            }
            let entry = u64_at(page, e);
            let gfn = (entry >> 12) & ((1 << 40) - 1);
            let to = match (entry >> 52) & 0xF {
                1 => PageState::Private,
                2 => PageState::Shared,
                _ => return PSC_INVALID_ENTRY,
            };
            let size = if entry & (1 << 56) != 0 {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            };
            if entry >> 57 != 0 {
                return PSC_INVALID_ENTRY;
            }
            if let Err(why) = self.convert(gfn << 12, size.bytes(), to) {
                log::debug!(
                    "vCPU {vcpu}: GHCB page-state change of {:#x}: {}",
                    gfn << 12,
                    crate::error::error_chain(&why)
                );
                return PSC_INVALID_ENTRY;
            }
            let next = index + 1;
            page[at..at + 2].copy_from_slice(&next.to_le_bytes());
        }
        0
    }

    /// SNP_GUEST_REQUEST: returns the status for sw_exit_info_2 (0 success;
    /// otherwise the firmware error in the low 32 bits).
    pub(super) fn guest_request(
        &mut self,
        vcpu: usize,
        request_gpa: u64,
        response_gpa: u64,
    ) -> u64 {
        self.note_guest_request(vcpu, request_gpa, response_gpa);
        let mut request = [0u8; 4096];
        if request_gpa & 0xFFF != 0
            || response_gpa & 0xFFF != 0
            || self.shared.read(request_gpa, &mut request).is_err()
        {
            log::debug!("vCPU {vcpu}: guest request pages {request_gpa:#x}/{response_gpa:#x} are not shared RAM");
            return VMM_ERR_GENERIC;
        }
        match self.model.guest_request(&request) {
            Ok(outcome) => {
                if let Some(report) = outcome.report {
                    self.last_report = Some(report);
                    self.reports_signed += 1;
                }
                match self.shared.write(response_gpa, &outcome.response[..]) {
                    Ok(()) => 0,
                    Err(_) => VMM_ERR_GENERIC,
                }
            }
            Err(error) => {
                log::debug!("vCPU {vcpu}: guest request refused: {error}");
                u64::from(error.code())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GhcbOutcome, SnpRuntime};
    use super::*;
    use crate::memory::{GuestRam, MemoryMap};
    use crate::page_state::PageStates;
    use crate::shared_memory::SharedMemory;
    use std::sync::{Arc, Mutex};
    use umbra_firmware::layout::{MSR_GHCB, MSR_UMBRA_VMGEXIT};
    use umbra_snp_model::{Platform, SnpFirmwareModel};

    const GHCB: u64 = 0x5000;

    fn runtime() -> SnpRuntime {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram = Arc::new(GuestRam::allocate_confidential(&map).unwrap());
        let states = PageStates::new(&map.ram_ranges(), PageState::Private).unwrap();
        let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
        let model = SnpFirmwareModel::new(&map.ram_ranges(), None, Platform::default()).unwrap();
        let mut rt = SnpRuntime::new(model, ram, shared, 1, 1, vec![(0, [1, 2, 3, 4])]);
        rt.convert(GHCB, 4096, PageState::Shared).unwrap();
        rt.wrmsr(0, MSR_GHCB, GHCB | 0x12);
        rt.wrmsr(0, MSR_UMBRA_VMGEXIT, 0);
        assert_eq!(rt.rdmsr(0, MSR_GHCB), Some(GHCB | 0x13), "GHCB registered");
        rt
    }

    /// Fills the GHCB with `fields` (marked valid) and does the VMGEXIT.
    fn exit(rt: &mut SnpRuntime, fields: &[(usize, u64)], extra: &[(usize, &[u8])]) -> GhcbOutcome {
        let mut page = [0u8; 4096];
        for &(at, value) in fields {
            put_u64(&mut page, at, value);
        }
        for (at, bytes) in extra {
            page[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        rt.shared.write(GHCB, &page).unwrap();
        rt.wrmsr(0, MSR_GHCB, GHCB);
        rt.wrmsr(0, MSR_UMBRA_VMGEXIT, 0).unwrap()
    }

    fn ghcb(rt: &SnpRuntime) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        rt.shared.read(GHCB, &mut page).unwrap();
        page
    }

    #[test]
    fn the_ghcb_msr_holds_the_sev_information_at_reset() {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram = Arc::new(GuestRam::allocate_confidential(&map).unwrap());
        let states = PageStates::new(&map.ram_ranges(), PageState::Private).unwrap();
        let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
        let model = SnpFirmwareModel::new(&map.ram_ranges(), None, Platform::default()).unwrap();
        let mut rt = SnpRuntime::new(model, ram, shared, 2, 1, Vec::new());
        for vcpu in 0..2 {
            let msr = rt.rdmsr(vcpu, MSR_GHCB).unwrap();
            assert_eq!(msr & 0xFFF, 0x001, "SEV_INFO response");
            assert_eq!((msr >> 24) & 0xFF, 52, "the model's C-bit");
            assert_eq!((msr >> 32) & 0xFFFF, 2, "protocol min");
        }
    }

    #[test]
    fn port_io_through_the_ghcb_reaches_the_device_and_returns_rax() {
        let mut rt = runtime();
        let out = exit(
            &mut rt,
            &[
                (ghcb_page::SW_EXIT_CODE, IOIO),
                (ghcb_page::SW_EXIT_INFO_1, (0x3F8 << 16) | IOIO_SZ8),
                (ghcb_page::SW_EXIT_INFO_2, 0),
                (ghcb_page::RAX, 0x41),
            ],
            &[],
        );
        let GhcbOutcome::Device(access) = out else {
            panic!("{out:?}")
        };
        assert_eq!(
            access.access,
            DeviceAccess::Pio {
                port: 0x3F8,
                len: 1,
                write: true
            }
        );
        assert_eq!(access.data[0], 0x41);
        rt.complete_access(0, &access, &access.data);
        assert_eq!(u64_at(&ghcb(&rt), ghcb_page::SW_EXIT_INFO_1), 0);
        // An IN: the device's byte comes back in RAX, marked valid.
        let out = exit(
            &mut rt,
            &[
                (ghcb_page::SW_EXIT_CODE, IOIO),
                (
                    ghcb_page::SW_EXIT_INFO_1,
                    (0x3FD << 16) | IOIO_SZ8 | IOIO_TYPE_IN,
                ),
                (ghcb_page::SW_EXIT_INFO_2, 0),
            ],
            &[],
        );
        let GhcbOutcome::Device(access) = out else {
            panic!("{out:?}")
        };
        rt.complete_access(0, &access, &[0x60]);
        let page = ghcb(&rt);
        assert_eq!(u64_at(&page, ghcb_page::RAX), 0x60);
        assert!(valid(&page, ghcb_page::RAX));
        // String I/O and a missing size are refused with "missing input".
        for info1 in [(0x3F8 << 16) | IOIO_SZ8 | IOIO_STR, 0x3F8 << 16] {
            let out = exit(
                &mut rt,
                &[
                    (ghcb_page::SW_EXIT_CODE, IOIO),
                    (ghcb_page::SW_EXIT_INFO_1, info1),
                    (ghcb_page::SW_EXIT_INFO_2, 0),
                    (ghcb_page::RAX, 0),
                ],
                &[],
            );
            assert_eq!(out, GhcbOutcome::Resume);
            let page = ghcb(&rt);
            assert_eq!(
                (
                    u64_at(&page, ghcb_page::SW_EXIT_INFO_1),
                    u64_at(&page, ghcb_page::SW_EXIT_INFO_2)
                ),
                (2, 4)
            );
        }
        assert_eq!(rt.ghcb_exits.get("ioio"), Some(&4));
    }

    #[test]
    fn a_guest_request_from_private_pages_is_a_vmm_error_not_a_firmware_status() {
        let mut rt = runtime();
        // Request and response pages never shared.
        let out = exit(
            &mut rt,
            &[
                (ghcb_page::SW_EXIT_CODE, SNP_GUEST_REQUEST),
                (ghcb_page::SW_EXIT_INFO_1, 0x6000),
                (ghcb_page::SW_EXIT_INFO_2, 0x7000),
            ],
            &[],
        );
        assert_eq!(out, GhcbOutcome::Resume);
        let page = ghcb(&rt);
        assert_eq!(u64_at(&page, ghcb_page::SW_EXIT_INFO_2), VMM_ERR_GENERIC);
        assert_eq!(
            u64_at(&page, ghcb_page::SW_EXIT_INFO_2) as u32,
            0,
            "no firmware status"
        );
    }

    #[test]
    fn an_extended_request_hands_out_the_table_or_asks_for_more_pages() {
        let mut rt = runtime();
        let table: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        rt.set_certificates(table.clone());
        rt.convert(0x8000, 0x2000, PageState::Shared).unwrap();
        let request = |rt: &mut SnpRuntime, pages: u64| {
            exit(
                rt,
                &[
                    (ghcb_page::SW_EXIT_CODE, SNP_EXT_GUEST_REQUEST),
                    (ghcb_page::SW_EXIT_INFO_1, 0x6000),
                    (ghcb_page::SW_EXIT_INFO_2, 0x7000),
                    (ghcb_page::RAX, 0x8000),
                    (ghcb_page::RBX, pages),
                ],
                &[],
            );
            ghcb(rt)
        };
        // One page is too few for 5000 bytes: RBX says two, nothing written.
        let page = request(&mut rt, 1);
        assert_eq!(u64_at(&page, ghcb_page::SW_EXIT_INFO_2), 1 << 32);
        assert_eq!(u64_at(&page, ghcb_page::RBX), 2);
        let mut back = vec![0u8; table.len()];
        rt.shared.read(0x8000, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        // Two pages: the table lands there; the request itself runs (its
        // pages are private here, so it fails as a VMM error).
        let page = request(&mut rt, 2);
        rt.shared.read(0x8000, &mut back).unwrap();
        assert_eq!(back, table);
        assert_eq!(u64_at(&page, ghcb_page::SW_EXIT_INFO_2), VMM_ERR_GENERIC);
        assert_eq!(rt.ghcb_exits.get("ext_guest_request"), Some(&2));
    }

    #[test]
    fn page_state_changes_through_the_ghcb_convert_every_entry() {
        let mut rt = runtime();
        let buffer = GHCB + 0x800;
        let entry = |gfn: u64, op: u64| ((op << 52) | (gfn << 12)).to_le_bytes();
        let mut psc = Vec::new();
        psc.extend_from_slice(&0u16.to_le_bytes()); // cur_entry
        psc.extend_from_slice(&1u16.to_le_bytes()); // end_entry
        psc.extend_from_slice(&[0; 4]);
        psc.extend_from_slice(&entry(0x100, 2));
        psc.extend_from_slice(&entry(0x101, 2));
        let fields = [
            (ghcb_page::SW_EXIT_CODE, PSC),
            (ghcb_page::SW_EXIT_INFO_1, 0),
            (ghcb_page::SW_EXIT_INFO_2, 0),
            (ghcb_page::SW_SCRATCH, buffer),
        ];
        assert_eq!(
            exit(&mut rt, &fields, &[(0x800, &psc)]),
            GhcbOutcome::Resume
        );
        let page = ghcb(&rt);
        assert_eq!(u64_at(&page, ghcb_page::SW_EXIT_INFO_2), 0);
        assert_eq!(
            u16::from_le_bytes([page[0x800], page[0x801]]),
            2,
            "cur_entry"
        );
        let states = crate::sync::lock(rt.shared.states());
        assert!(states.is_shared(0x10_0000, 0x2000));
        drop(states);
        // An unknown operation is an invalid entry; a header past the
        // buffer an invalid header.
        let mut bad = psc.clone();
        bad[8..16].copy_from_slice(&entry(0x102, 7));
        exit(&mut rt, &fields, &[(0x800, &bad)]);
        assert_eq!(
            u64_at(&ghcb(&rt), ghcb_page::SW_EXIT_INFO_2),
            PSC_INVALID_ENTRY
        );
        let mut header = psc.clone();
        header[2..4].copy_from_slice(&300u16.to_le_bytes());
        exit(&mut rt, &fields, &[(0x800, &header)]);
        assert_eq!(
            u64_at(&ghcb(&rt), ghcb_page::SW_EXIT_INFO_2),
            PSC_INVALID_HEADER
        );
    }

    #[test]
    fn mmio_requests_need_a_size_and_a_scratch_buffer_inside_the_ghcb() {
        let mut page = [0u8; 4096];
        page[0x800..0x804].copy_from_slice(&0xABCD_1234u32.to_le_bytes());
        let write = mmio_request(&page, GHCB, true, 0xFEC0_0010, 4, GHCB + 0x800).unwrap();
        assert_eq!(
            write.access,
            DeviceAccess::Mmio {
                gpa: 0xFEC0_0010,
                len: 4,
                write: true
            }
        );
        assert_eq!(&write.data[..4], &0xABCD_1234u32.to_le_bytes());
        let read = mmio_request(&page, GHCB, false, 0xFEC0_0010, 8, GHCB + 0xFE8).unwrap();
        assert_eq!(read.data, [0; 8]);
        for (len, scratch) in [
            (3, GHCB + 0x800),
            (0, GHCB + 0x800),
            (4, GHCB + 0x7FC),
            (8, GHCB + 0xFEC),
            (4, GHCB - 8),
            (4, GHCB + 0x10_0000),
            (u64::MAX, GHCB + 0x800),
        ] {
            assert_eq!(
                mmio_request(&page, GHCB, true, 0, len, scratch),
                None,
                "len {len} scratch {scratch:#x}"
            );
        }
    }
}
