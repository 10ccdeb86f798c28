//! Giving guest memory back to the host: a hole punched in a memfd-backed
//! range (confidential guests: both of its mappings then read zeroes), or
//! MADV_DONTNEED on an anonymous one (plain guests: the next touch gets a
//! zero page). One function for the SNP model's conversion hygiene and the
//! balloon.

use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};

/// Discards `[gpa, gpa + len)`, which must lie inside one region.
pub(crate) fn discard(mem: &GuestMemoryMmap, gpa: u64, len: u64) -> std::io::Result<()> {
    let fault = || std::io::Error::from_raw_os_error(libc::EFAULT);
    let region = mem.find_region(GuestAddress(gpa)).ok_or_else(fault)?;
    let offset = gpa - region.start_addr().0;
    if offset.checked_add(len).is_none_or(|end| end > region.len()) {
        return Err(fault());
    }
    let rc = match region.file_offset() {
        Some(file) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(file.file());
            // SAFETY: fallocate on the memfd this region owns; punching a
            // hole frees the pages of that range, which every mapping of
            // the file then reads as zeroes. Nothing is unmapped.
            unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    (file.start() + offset) as libc::off_t,
                    len as libc::off_t,
                )
            }
        }
        None => {
            let base = region
                .get_host_address(MemoryRegionAddress(offset))
                .map_err(|_| fault())?;
            // SAFETY: [base, base + len) lies inside this region's private
            // anonymous mapping (checked above); MADV_DONTNEED drops its
            // pages, which read as zeroes when next touched.
            unsafe { libc::madvise(base.cast(), len as usize, libc::MADV_DONTNEED) }
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
