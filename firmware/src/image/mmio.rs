//! 32-bit device-register access the way the platform needs it: loads and
//! stores to the identity-mapped MMIO page on a plain VM, GHCB MMIO NAE
//! events under SEV-SNP (where device memory is unencrypted and a direct
//! access would raise #VC: the firmware makes the event itself, as a #VC
//! handler would). The IOAPIC and the virtio-mmio driver both use it.

use crate::{ghcb, platform};

/// A refused GHCB MMIO event: the register and the hypervisor's
/// `sw_exit_info_1`.
#[derive(Clone, Copy, Debug)]
pub struct MmioError {
    pub write: bool,
    pub gpa: u64,
    pub info1: u64,
}

/// Whether register accesses go through the GHCB.
pub fn through_ghcb() -> bool {
    platform::current().is_snp()
}

/// Reads the 32-bit register at `gpa`.
pub fn read32(gpa: u64) -> Result<u32, MmioError> {
    if through_ghcb() {
        return ghcb::mmio_read32(gpa).map_err(|e| MmioError {
            write: false,
            gpa,
            info1: e.info1,
        });
    }
    // SAFETY: callers pass device registers in the identity-mapped MMIO
    // hole (boot.rs maps the first 4 GiB); a 32-bit volatile load is what
    // the device expects, and no Rust object lives there.
    Ok(unsafe { core::ptr::read_volatile(gpa as *const u32) })
}

/// Writes the 32-bit register at `gpa`.
pub fn write32(gpa: u64, value: u32) -> Result<(), MmioError> {
    if through_ghcb() {
        return ghcb::mmio_write32(gpa, value).map_err(|e| MmioError {
            write: true,
            gpa,
            info1: e.info1,
        });
    }
    // SAFETY: as in `read32`.
    unsafe { core::ptr::write_volatile(gpa as *mut u32, value) };
    Ok(())
}
