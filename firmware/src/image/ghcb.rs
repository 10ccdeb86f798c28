//! The GHCB, as an SNP guest uses it under the model: the MSR protocol
//! (negotiation, page-state changes, GHCB registration) and NAE events
//! through the GHCB page at `GHCB_GPA` (AMD GHCB spec 56421; Linux
//! `arch/x86/coco/sev`), each handed over with the model's paravirtual
//! VMGEXIT (see `platform`).

use crate::platform::{ghcb_msr_call, wrmsr};
use core::arch::asm;
use umbra_firmware::layout::{GHCB_GPA, MSR_GHCB, MSR_UMBRA_VMGEXIT};

/// GHCB-page offsets (GHCB spec 56421 table 3; Linux `struct ghcb`).
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
/// NAE event: MMIO read.
const MMIO_READ: u64 = 0x8000_0001;
/// NAE event: MMIO write.
const MMIO_WRITE: u64 = 0x8000_0002;

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

fn get(page: &[u8; 4096], offset: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&page[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

/// MSR-protocol page-state change of one 4 KiB page (op 1 private, 2
/// shared); the error is the MSR response.
pub fn psc(gpa: u64, to_private: bool) -> Result<(), u64> {
    let op: u64 = if to_private { 1 } else { 2 };
    let resp = ghcb_msr_call((op << 52) | (gpa & !0xFFF) | 0x014);
    if resp & 0xFFF != 0x015 || resp >> 32 != 0 {
        return Err(resp);
    }
    Ok(())
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

/// Negotiates the protocol, makes the GHCB page and `also_shared` shared
/// and registers the GHCB: afterwards [`call`] and the MMIO helpers work.
pub fn establish(also_shared: &[u64]) -> Result<(), SetupError> {
    negotiate().map_err(|response| SetupError {
        what: "GHCB protocol negotiation refused",
        response,
    })?;
    for &gpa in [GHCB_GPA].iter().chain(also_shared) {
        psc(gpa, false).map_err(|response| SetupError {
            what: "page-state change to shared refused",
            response,
        })?;
    }
    let registered = ghcb_msr_call(GHCB_GPA | 0x012);
    if registered != (GHCB_GPA | 0x013) {
        return Err(SetupError {
            what: "GHCB registration refused",
            response: registered,
        });
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
    page[..SHARED_BUFFER].fill(0);
    page[SHARED_BUFFER + 0x7F0..].fill(0);
    put(page, SW_EXIT_CODE, exit_code);
    put(page, SW_EXIT_INFO_1, info1);
    put(page, SW_EXIT_INFO_2, info2);
    if let Some(scratch) = scratch {
        put(page, SW_SCRATCH, scratch);
    }
    page[PROTOCOL_VERSION..PROTOCOL_VERSION + 2].copy_from_slice(&2u16.to_le_bytes());
    page[GHCB_USAGE..GHCB_USAGE + 4].copy_from_slice(&0u32.to_le_bytes());
    // SAFETY: orders the GHCB stores before the exit that hands it over.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
    wrmsr(MSR_GHCB, GHCB_GPA);
    wrmsr(MSR_UMBRA_VMGEXIT, 0);
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
