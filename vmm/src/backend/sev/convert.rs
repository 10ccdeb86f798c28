//! Private/shared page conversions of an SNP VM at run time: the guest's
//! `KVM_HC_MAP_GPA_RANGE` requests and `KVM_EXIT_MEMORY_FAULT`s (both
//! hostile input, validated by pure functions), applied with
//! `KVM_SET_MEMORY_ATTRIBUTES` and guest_memfd hole punching.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, RwLock};

use super::kernel::SevVmKernel;
use super::uapi::{self, PAGE_SIZE};
use super::SevError;
use crate::backend::kvm::KvmVm;

/// One RAM slot with its guest_memfd.
#[derive(Debug)]
pub(super) struct GmemSlot {
    pub(super) gpa: u64,
    pub(super) size: u64,
    pub(super) gmem: OwnedFd,
}

/// The VM's private-memory state, shared with its vCPUs for conversions.
pub struct PrivateMemory {
    pub(super) vm: Arc<KvmVm>,
    pub(super) kernel: Arc<dyn SevVmKernel>,
    pub(super) slots: RwLock<Vec<GmemSlot>>,
}

pub use crate::memory::range_in_ram;

/// A validated `KVM_HC_MAP_GPA_RANGE` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGpaRange {
    /// First byte.
    pub gpa: u64,
    /// Length in bytes.
    pub size: u64,
    /// Whether the range becomes private.
    pub private: bool,
}

/// Validates the guest's `KVM_HC_MAP_GPA_RANGE` arguments (hostile input):
/// `args[0]` a 4 KiB aligned GPA, `args[1]` a nonzero count of 4 KiB pages,
/// `args[2]` only ENCRYPTED (bit 4) and one page-size bit; the whole range
/// inside guest RAM. Returns the positive errno to give back otherwise.
/// A shared conversion of a range that touches no RAM at all (MMIO, the
/// IOAPIC) is `Ok(None)`, nothing to do: OVMF asks for those, and QEMU's
/// `kvm_convert_memory` answers 0 rather than an error the guest treats as
/// fatal. Private conversions outside RAM stay refused.
pub fn validate_map_gpa_range(
    gpa: u64,
    npages: u64,
    attrs: u64,
    ram: &[(u64, u64)],
) -> Result<Option<MapGpaRange>, u64> {
    let einval = libc::EINVAL as u64;
    let known = uapi::MAP_GPA_RANGE_ENCRYPTED
        | uapi::MAP_GPA_RANGE_PAGE_SZ_2M
        | uapi::MAP_GPA_RANGE_PAGE_SZ_1G;
    if attrs & !known != 0 {
        return Err(einval);
    }
    let page_size_bits = attrs & (uapi::MAP_GPA_RANGE_PAGE_SZ_2M | uapi::MAP_GPA_RANGE_PAGE_SZ_1G);
    if page_size_bits.count_ones() > 1 {
        return Err(einval);
    }
    if !gpa.is_multiple_of(PAGE_SIZE) || npages == 0 {
        return Err(einval);
    }
    let size = npages.checked_mul(PAGE_SIZE).ok_or(einval)?;
    let end = gpa.checked_add(size).ok_or(einval)?;
    let private = attrs & uapi::MAP_GPA_RANGE_ENCRYPTED != 0;
    if !range_in_ram(gpa, size, ram) {
        let touches_ram = ram
            .iter()
            .any(|&(base, len)| gpa < base.saturating_add(len) && base < end);
        return if private || touches_ram {
            Err(einval)
        } else {
            Ok(None)
        };
    }
    Ok(Some(MapGpaRange { gpa, size, private }))
}

/// Validates a `KVM_EXIT_MEMORY_FAULT` (flags, page-aligned range in RAM);
/// returns whether the guest wants the range private.
pub fn validate_memory_fault(
    flags: u64,
    gpa: u64,
    size: u64,
    ram: &[(u64, u64)],
) -> Result<bool, &'static str> {
    if flags & !uapi::MEMORY_EXIT_FLAG_PRIVATE != 0 {
        return Err("unknown memory-fault flags");
    }
    if !gpa.is_multiple_of(PAGE_SIZE) || size == 0 || !size.is_multiple_of(PAGE_SIZE) {
        return Err("memory fault on an unaligned range");
    }
    if !range_in_ram(gpa, size, ram) {
        return Err("memory fault outside guest RAM");
    }
    Ok(flags & uapi::MEMORY_EXIT_FLAG_PRIVATE != 0)
}

impl PrivateMemory {
    pub(super) fn ram(&self) -> Vec<(u64, u64)> {
        match self.slots.read() {
            Ok(s) => s.iter().map(|s| (s.gpa, s.size)).collect(),
            Err(p) => p.get_ref().iter().map(|s| (s.gpa, s.size)).collect(),
        }
    }

    /// Sets `[gpa, gpa + size)` private or shared with `KVM_SET_MEMORY_ATTRIBUTES`;
    /// when made shared, also releases the private backing (punches the
    /// guest_memfd hole, best effort, as QEMU does).
    pub fn set_private(&self, gpa: u64, size: u64, private: bool) -> Result<(), SevError> {
        let attributes = if private {
            uapi::MEMORY_ATTRIBUTE_PRIVATE
        } else {
            0
        };
        let attr = uapi::kvm_memory_attributes {
            address: gpa,
            size,
            attributes,
            flags: 0,
        };
        self.kernel
            .set_memory_attributes(self.vm.vm_fd(), attr)
            .map_err(|source| SevError::SetMemoryAttributes {
                gpa,
                size,
                attributes,
                source,
            })?;
        if !private {
            self.punch_private(gpa, size);
        }
        Ok(())
    }

    /// Releases the guest_memfd pages behind a range that became shared.
    fn punch_private(&self, gpa: u64, size: u64) {
        let Ok(slots) = self.slots.read() else { return };
        let end = gpa.saturating_add(size);
        for s in slots.iter() {
            let (lo, hi) = (gpa.max(s.gpa), end.min(s.gpa.saturating_add(s.size)));
            if lo >= hi {
                continue;
            }
            let (Ok(offset), Ok(len)) = (i64::try_from(lo - s.gpa), i64::try_from(hi - lo)) else {
                continue;
            };
            // SAFETY: fallocate only takes an fd we own and integers; it
            // touches no memory of this process.
            let ret = unsafe {
                libc::fallocate(
                    s.gmem.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                )
            };
            if ret != 0 {
                log::debug!(
                    "punching guest_memfd hole at {lo:#x}+{:#x}: {}",
                    hi - lo,
                    std::io::Error::last_os_error()
                );
            }
        }
    }

    /// Answers a `KVM_HC_MAP_GPA_RANGE` exit: validates the guest's request,
    /// converts the range, and returns what goes into `hypercall.ret`:
    /// 0, `EINVAL` (bad request, refused conversion) or `EAGAIN` (retry) —
    /// the only values the kernel accepts.
    pub fn handle_map_gpa_range(&self, gpa: u64, npages: u64, attrs: u64) -> u64 {
        let req = match validate_map_gpa_range(gpa, npages, attrs, &self.ram()) {
            Ok(Some(r)) => r,
            Ok(None) => return 0,
            Err(errno) => {
                log::warn!(
                    "guest MAP_GPA_RANGE({gpa:#x}, {npages} pages, {attrs:#x}) refused: not aligned RAM"
                );
                return errno;
            }
        };
        match self.set_private(req.gpa, req.size, req.private) {
            Ok(()) => 0,
            Err(SevError::SetMemoryAttributes { source, .. })
                if source.errno() == libc::EAGAIN || source.errno() == libc::EINTR =>
            {
                libc::EAGAIN as u64
            }
            Err(e) => {
                log::warn!("{e}");
                libc::EINVAL as u64
            }
        }
    }

    /// Answers a `KVM_EXIT_MEMORY_FAULT`: converts the range to what the
    /// access needs (private iff `KVM_MEMORY_EXIT_FLAG_PRIVATE`).
    pub fn handle_memory_fault(&self, flags: u64, gpa: u64, size: u64) -> Result<(), String> {
        let private = validate_memory_fault(flags, gpa, size, &self.ram())
            .map_err(|why| format!("{why}: gpa {gpa:#x} size {size:#x} flags {flags:#x}"))?;
        self.set_private(gpa, size, private)
            .map_err(|e| e.to_string())
    }
}
