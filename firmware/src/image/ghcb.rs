//! The GHCB, as an SNP guest uses it under the model: the MSR protocol
//! (negotiation, page-state changes, GHCB registration) and NAE events
//! through the GHCB page at `GHCB_GPA` (AMD GHCB spec 56421; Linux
//! `arch/x86/coco/sev`), each handed over with the model's paravirtual
//! VMGEXIT (see `platform`).
//!
//! One GHCB, used by the bootstrap vCPU only: by the main flow (MMIO,
//! guest requests) and by the #VC handler (IOIO, MSR, CPUID events). A
//! #VC never arrives while the main flow is inside an exchange here (no
//! exchange executes port I/O, MSR accesses other than the GHCB MSR's or
//! CPUID), so the page needs no backup copy.

use crate::mem::bss;
use crate::paging;
use crate::platform::{ghcb_msr_call, vmgexit, wrmsr};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};
use umbra_firmware::layout::{GHCB_GPA, MSR_GHCB};

/// GHCB-page offsets (GHCB spec 56421 table 3; Linux `struct ghcb`).
const RAX: usize = 0x1F8;
const RCX: usize = 0x308;
const RDX: usize = 0x310;
const RBX: usize = 0x318;
const SW_EXIT_CODE: usize = 0x390;
const SW_EXIT_INFO_1: usize = 0x398;
const SW_EXIT_INFO_2: usize = 0x3A0;
const SW_SCRATCH: usize = 0x3A8;
const VALID_BITMAP: usize = 0x3F0;
/// The shared buffer NAE events point `sw_scratch` at.
const SHARED_BUFFER: usize = 0x800;
const PROTOCOL_VERSION: usize = 0xFFA;
const GHCB_USAGE: usize = 0xFFC;

/// NAE event: SNP guest request.
pub const SNP_GUEST_REQUEST: u64 = 0x8000_0011;
/// SNP extended guest request (GHCB spec §4.1.8): also fetches the host's
/// certificate table.
const SNP_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
/// NAE event: MMIO read.
const MMIO_READ: u64 = 0x8000_0001;
/// NAE event: MMIO write.
const MMIO_WRITE: u64 = 0x8000_0002;
/// NAE events with SVM exit codes: CPUID, IOIO, MSR.
const EXIT_CPUID: u64 = 0x72;
const EXIT_IOIO: u64 = 0x7B;
const EXIT_MSR: u64 = 0x7C;

/// Termination reason-code set of the firmware's own reasons (set 0 is the
/// GHCB spec's general set), and its codes.
pub const TERM_SET_UMBRA: u8 = 1;
/// The GHCB could not be set up at boot.
pub const TERM_GHCB_SETUP: u8 = 0x10;
/// A #VC the handler cannot handle.
pub const TERM_VC_UNHANDLED: u8 = 0x20;
/// A #VC whose NAE event failed or was malformed.
pub const TERM_VC_EVENT_FAILED: u8 = 0x21;

/// Whether [`establish`] registered the GHCB (statics window: [`bss`]).
static READY: AtomicBool = AtomicBool::new(false);

/// Why setting up the GHCB failed: what was refused and the MSR value.
#[derive(Clone, Copy, Debug)]
pub struct SetupError {
    /// What the hypervisor refused, e.g. "GHCB registration refused".
    pub what: &'static str,
    /// The GHCB MSR response.
    pub response: u64,
}

/// A failed NAE event: the hypervisor's `sw_exit_info_1`/`_2`.
#[derive(Clone, Copy, Debug)]
pub struct CallError {
    pub info1: u64,
    pub info2: u64,
}

/// The GHCB page (identity-mapped, shared once [`establish`] ran).
fn ghcb_page() -> &'static mut [u8; 4096] {
    // SAFETY: GHCB_GPA is the page-aligned, identity-mapped page `layout`
    // reserves for the GHCB; only the bootstrap vCPU runs scenarios, with
    // interrupts disabled whenever it uses the GHCB, and every caller here
    // drops the reference before the next one is made.
    unsafe { &mut *(GHCB_GPA as *mut [u8; 4096]) }
}

fn put(page: &mut [u8; 4096], offset: usize, value: u64) {
    page[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    // Valid bitmap: one bit per quadword of the save area.
    page[VALID_BITMAP + offset / 64] |= 1 << ((offset / 8) % 8);
}

fn is_valid(page: &[u8; 4096], offset: usize) -> bool {
    page[VALID_BITMAP + offset / 64] & (1 << ((offset / 8) % 8)) != 0
}

fn get(page: &[u8; 4096], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

/// MSR-protocol page-state change of one 4 KiB page (op 1 private, 2
/// shared), then the page's C-bit follows its new state; the error is the
/// MSR response.
pub fn psc(gpa: u64, to_private: bool) -> Result<(), u64> {
    let op: u64 = if to_private { 1 } else { 2 };
    let resp = ghcb_msr_call((op << 52) | (gpa & !0xFFF) | 0x014);
    if resp & 0xFFF != 0x015 || resp >> 32 != 0 {
        return Err(resp);
    }
    paging::set_private(gpa, to_private);
    Ok(())
}

/// Whether the GHCB page is registered and NAE events can be made.
pub fn is_ready() -> bool {
    bss!(READY, AtomicBool).load(Ordering::Acquire)
}

/// Asks the hypervisor to end the guest (MSR protocol 0x100) with a
/// reason-code set and code; does not return.
pub fn terminate(set: u8, code: u8) -> ! {
    loop {
        ghcb_msr_call((u64::from(code) << 16) | (u64::from(set & 0xF) << 12) | 0x100);
    }
}

/// SEV information and hypervisor-feature requests: protocol version 2 and
/// SNP support; the error is the refusing MSR response.
pub fn negotiate() -> Result<(), u64> {
    let info = ghcb_msr_call(0x002);
    let (max, min) = (info >> 48, (info >> 32) & 0xFFFF);
    if info & 0xFFF != 0x001 || max < 2 || min > 2 {
        return Err(info);
    }
    let features = ghcb_msr_call(0x080);
    if features & 0xFFF != 0x081 || (features >> 12) & 1 == 0 {
        return Err(features);
    }
    Ok(())
}

/// Negotiates the protocol, makes the GHCB page shared and registers it
/// (once), then makes `also_shared` shared: afterwards [`call`], the MMIO
/// helpers and the #VC handler's events work.
pub fn establish(also_shared: &[u64]) -> Result<(), SetupError> {
    let shared_failed = |response| SetupError {
        what: "page-state change to shared refused",
        response,
    };
    if !is_ready() {
        negotiate().map_err(|response| SetupError {
            what: "GHCB protocol negotiation refused",
            response,
        })?;
        psc(GHCB_GPA, false).map_err(shared_failed)?;
        let registered = ghcb_msr_call(GHCB_GPA | 0x012);
        if registered != (GHCB_GPA | 0x013) {
            return Err(SetupError {
                what: "GHCB registration refused",
                response: registered,
            });
        }
        bss!(READY, AtomicBool).store(true, Ordering::Release);
    }
    for &gpa in also_shared {
        psc(gpa, false).map_err(shared_failed)?;
    }
    Ok(())
}

/// Fills the GHCB for NAE event `exit_code` (`sw_scratch` only when
/// given), hands it over and returns `sw_exit_info_1`/`_2`. The shared
/// buffer is left as it is, so a caller may fill it first.
fn exchange(
    page: &mut [u8; 4096],
    exit_code: u64,
    info1: u64,
    info2: u64,
    scratch: Option<u64>,
) -> Result<(), CallError> {
    // Only the valid bitmap says which fields the hypervisor may read
    // (GHCB spec §2.3.2); clearing it invalidates the previous event's.
    page[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    if let Some(scratch) = scratch {
        put(page, SW_SCRATCH, scratch);
    }
    exchange_kept(page, exit_code, info1, info2)
}

/// [`exchange`] keeping the fields already marked valid (the caller
/// cleared the bitmap and set the event's registers).
fn exchange_kept(
    page: &mut [u8; 4096],
    exit_code: u64,
    info1: u64,
    info2: u64,
) -> Result<(), CallError> {
    put(page, SW_EXIT_CODE, exit_code);
    put(page, SW_EXIT_INFO_1, info1);
    put(page, SW_EXIT_INFO_2, info2);
    page[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&2u16.to_le_bytes());
    page[GHCB_USAGE..GHCB_USAGE + 4].copy_from_slice(&0u32.to_le_bytes());
    // SAFETY: orders the GHCB stores before the exit that hands it over.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
    wrmsr(MSR_GHCB, GHCB_GPA);
    vmgexit();
    // SAFETY: orders the hypervisor's GHCB writes before the loads below.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
    let (info1, info2) = (get(page, SW_EXIT_INFO_1), get(page, SW_EXIT_INFO_2));
    if info1 as u32 != 0 {
        return Err(CallError { info1, info2 });
    }
    Ok(())
}

/// NAE event `exit_code` with `sw_exit_info_1`/`_2` and no scratch area;
/// returns `sw_exit_info_2` (e.g. the guest request's firmware error).
pub fn call(exit_code: u64, info1: u64, info2: u64) -> Result<u64, CallError> {
    let page = ghcb_page();
    exchange(page, exit_code, info1, info2, None)?;
    Ok(get(page, SW_EXIT_INFO_2))
}

/// The extended guest request: the request and response pages, and
/// `pages` shared pages at `certs` for the host's certificate table.
/// Returns `sw_exit_info_2` and RBX (the pages the table needs, when the
/// host answers SNP_GUEST_VMM_ERR_INVALID_LEN).
pub fn ext_guest_request(
    request: u64,
    response: u64,
    certs: u64,
    pages: u64,
) -> Result<(u64, u64), CallError> {
    let page = ghcb_page();
    page[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    put(page, RAX, certs);
    put(page, RBX, pages);
    exchange_kept(page, SNP_EXT_GUEST_REQUEST, request, response)?;
    let rbx = if is_valid(page, RBX) {
        get(page, RBX)
    } else {
        pages
    };
    Ok((get(page, SW_EXIT_INFO_2), rbx))
}

/// A 32-bit MMIO read of `gpa` by the hypervisor (what the #VC handler
/// does for a guest load from unencrypted device memory).
pub fn mmio_read32(gpa: u64) -> Result<u32, CallError> {
    let page = ghcb_page();
    let scratch = GHCB_GPA + SHARED_BUFFER as u64;
    exchange(page, MMIO_READ, gpa, 4, Some(scratch))?;
    let mut data = [0u8; 4];
    data.copy_from_slice(&page[SHARED_BUFFER..SHARED_BUFFER + 4]);
    Ok(u32::from_le_bytes(data))
}

/// A 32-bit MMIO write of `value` to `gpa` by the hypervisor.
pub fn mmio_write32(gpa: u64, value: u32) -> Result<(), CallError> {
    let page = ghcb_page();
    page[SHARED_BUFFER..SHARED_BUFFER + 4].copy_from_slice(&value.to_le_bytes());
    let scratch = GHCB_GPA + SHARED_BUFFER as u64;
    exchange(page, MMIO_WRITE, gpa, 4, Some(scratch))
}

/// IOIO event (`sw_exit_info_1` in the APM IOIO format): an OUT carries
/// `rax`; an IN returns the hypervisor's RAX.
pub fn ioio(info1: u64, rax: u64) -> Result<u64, CallError> {
    let page = ghcb_page();
    let is_in = info1 & 1 != 0;
    page[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    if !is_in {
        put(page, RAX, rax);
    }
    exchange_kept(page, EXIT_IOIO, info1, 0)?;
    if is_in {
        return match is_valid(page, RAX) {
            true => Ok(get(page, RAX)),
            false => Err(CallError { info1: 0, info2: 0 }),
        };
    }
    Ok(rax)
}

/// MSR event: a read (`write` false) returns (RAX, RDX).
pub fn msr(write: bool, ecx: u64, rax: u64, rdx: u64) -> Result<(u64, u64), CallError> {
    let page = ghcb_page();
    page[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    put(page, RCX, ecx);
    if write {
        put(page, RAX, rax);
        put(page, RDX, rdx);
    }
    exchange_kept(page, EXIT_MSR, u64::from(write), 0)?;
    if write {
        return Ok((rax, rdx));
    }
    if !is_valid(page, RAX) || !is_valid(page, RDX) {
        return Err(CallError { info1: 0, info2: 0 });
    }
    Ok((get(page, RAX), get(page, RDX)))
}

/// CPUID event: EAX, EBX, ECX, EDX for `leaf`/`subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Result<[u32; 4], CallError> {
    let page = ghcb_page();
    page[VALID_BITMAP..VALID_BITMAP + 16].fill(0);
    put(page, RAX, u64::from(leaf));
    put(page, RCX, u64::from(subleaf));
    exchange_kept(page, EXIT_CPUID, 0, 0)?;
    let mut out = [0u32; 4];
    for (slot, offset) in out.iter_mut().zip([RAX, RBX, RCX, RDX]) {
        if !is_valid(page, offset) {
            return Err(CallError { info1: 0, info2: 0 });
        }
        *slot = get(page, offset) as u32;
    }
    Ok(out)
}
