//! The guest-physical memory map and the host memory behind it.
//!
//! Every guest-physical range umbra knows about has a role. RAM is a
//! writable memslot; ROM is a read-only memslot (guest writes exit to the VMM
//! and are refused); MMIO is left unmapped so that accesses reach device
//! models; guard ranges are never mapped and every access to them is a
//! violation. Anything not in the map is *unbacked* and handled like a guard.

use crate::config::MemoryBacking;
use serde::Serialize;
use std::fs::File;
use std::os::fd::FromRawFd;
use thiserror::Error;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Errors while laying out or allocating guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The ROM image does not fit its window below 4 GiB.
    #[error("firmware image of {0} bytes does not fit the {max} MiB ROM window below 4 GiB", max = MAX_ROM_SIZE >> 20)]
    RomSize(u64),
    /// The ROM image size is not a multiple of 4 KiB.
    #[error("firmware image size {0} is not a multiple of 4 KiB")]
    RomAlignment(u64),
    /// mmap of guest memory failed.
    #[error("cannot map {size} bytes of guest memory")]
    Map {
        /// Bytes requested.
        size: u64,
        /// What mmap said.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// The hugetlb pool is too small or absent.
    #[error("the host has {free} free huge pages of 2 MiB but the guest needs {needed}; reserve them in /proc/sys/vm/nr_hugepages")]
    HugePages {
        /// Free pages in the pool.
        free: u64,
        /// Pages required.
        needed: u64,
    },
    /// memfd_create or ftruncate failed for the hugetlb backing.
    #[error("cannot create the hugetlb memory file")]
    HugetlbFile(#[source] std::io::Error),
    /// mprotect of the VMM's view failed.
    #[error("cannot change the VMM's access to guest memory")]
    Protect(#[source] std::io::Error),
    /// Regions overlap (a bug in the layout).
    #[error("guest memory regions overlap")]
    Overlap(#[source] vm_memory::GuestRegionCollectionError),
    /// madvise failed.
    #[error("madvise({advice}) on guest memory failed")]
    Advise {
        /// Which advice.
        advice: &'static str,
        /// errno.
        #[source]
        source: std::io::Error,
    },
}

/// Largest ROM image (OVMF.fd is 2 or 4 MiB; QEMU's pflash window is 8 MiB).
pub const MAX_ROM_SIZE: u64 = 8 << 20;
/// RAM below this address stays below 4 GiB; the rest goes above.
pub const LOW_RAM_LIMIT: u64 = 3 << 30;
/// Start of the 32-bit MMIO window (devices; nothing is there yet).
pub const MMIO_BASE: u64 = 0xD000_0000;
/// End of the 32-bit MMIO window.
pub const MMIO_END: u64 = 0xE000_0000;
/// Size of the guard range placed right after low RAM.
pub const RAM_GUARD_SIZE: u64 = 2 << 20;
/// Size of the guard range placed right below the ROM.
pub const ROM_GUARD_SIZE: u64 = 64 << 10;
/// Start of high RAM.
pub const HIGH_RAM_BASE: u64 = 1 << 32;

/// What a guest-physical range is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionRole {
    /// Read-write memory.
    Ram,
    /// Read-only memory: writes are violations.
    Rom,
    /// Device window: accesses go to device models.
    Mmio,
    /// Never mapped: every access is a violation.
    Guard,
}

impl RegionRole {
    /// The guest's permissions on the range, as `rwx` flags.
    pub fn permissions(self) -> &'static str {
        match self {
            RegionRole::Ram => "rwx",
            RegionRole::Rom => "r-x",
            RegionRole::Mmio => "rw-",
            RegionRole::Guard => "---",
        }
    }

    /// Whether the range is backed by host memory in a memslot.
    pub fn is_mapped(self) -> bool {
        matches!(self, RegionRole::Ram | RegionRole::Rom)
    }
}

/// One range of the memory map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Short name for logs and metrics.
    pub name: &'static str,
    /// What it is.
    pub role: RegionRole,
    /// Guest-physical base.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Guest permissions (`rwx`).
    pub permissions: &'static str,
}

impl Region {
    fn new(name: &'static str, role: RegionRole, gpa: u64, size: u64) -> Self {
        Region {
            name,
            role,
            gpa,
            size,
            permissions: role.permissions(),
        }
    }

    /// Whether `gpa` lies inside.
    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.size
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.gpa + self.size
    }
}

/// The guest-physical memory map, sorted by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryMap {
    regions: Vec<Region>,
}

impl MemoryMap {
    /// The map for `ram` bytes of RAM and a ROM of `rom_size` bytes ending at
    /// 4 GiB: low RAM up to 3 GiB, a guard after it, the MMIO window, a guard
    /// below the ROM, the ROM, then high RAM at 4 GiB for the rest.
    pub fn new(ram: u64, rom_size: u64) -> Result<Self, MemoryError> {
        if rom_size == 0 || rom_size > MAX_ROM_SIZE {
            return Err(MemoryError::RomSize(rom_size));
        }
        if !rom_size.is_multiple_of(4096) {
            return Err(MemoryError::RomAlignment(rom_size));
        }
        let low = ram.min(LOW_RAM_LIMIT);
        let rom_base = HIGH_RAM_BASE - rom_size;
        let mut regions = vec![
            Region::new("ram-low", RegionRole::Ram, 0, low),
            Region::new("guard-after-ram", RegionRole::Guard, low, RAM_GUARD_SIZE),
            Region::new("mmio", RegionRole::Mmio, MMIO_BASE, MMIO_END - MMIO_BASE),
            Region::new(
                "ioapic",
                RegionRole::Mmio,
                crate::devices::ioapic::IOAPIC_BASE,
                crate::devices::ioapic::IOAPIC_SIZE,
            ),
            Region::new(
                "guard-below-rom",
                RegionRole::Guard,
                rom_base - ROM_GUARD_SIZE,
                ROM_GUARD_SIZE,
            ),
            Region::new("rom", RegionRole::Rom, rom_base, rom_size),
        ];
        if ram > low {
            regions.push(Region::new(
                "ram-high",
                RegionRole::Ram,
                HIGH_RAM_BASE,
                ram - low,
            ));
        }
        regions.sort_by_key(|r| r.gpa);
        Ok(MemoryMap { regions })
    }

    /// All regions in address order.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The RAM regions as `(gpa, size)`.
    pub fn ram_ranges(&self) -> Vec<(u64, u64)> {
        self.regions
            .iter()
            .filter(|r| r.role == RegionRole::Ram)
            .map(|r| (r.gpa, r.size))
            .collect()
    }

    /// The region containing `gpa`, if any.
    pub fn find(&self, gpa: u64) -> Option<&Region> {
        self.regions.iter().find(|r| r.contains(gpa))
    }

    /// The first guard range (the one the firmware's `guard` scenario uses).
    pub fn first_guard(&self) -> Option<&Region> {
        self.regions.iter().find(|r| r.role == RegionRole::Guard)
    }

    /// The ROM region.
    pub fn rom(&self) -> Option<&Region> {
        self.regions.iter().find(|r| r.role == RegionRole::Rom)
    }

    /// Bytes of RAM below 4 GiB.
    pub fn low_ram(&self) -> u64 {
        self.regions
            .iter()
            .find(|r| r.name == "ram-low")
            .map_or(0, |r| r.size)
    }
}

/// Whether `[gpa, gpa + len)` lies entirely inside the union of `ram`
/// ranges `(base, size)`.
pub fn range_in_ram(gpa: u64, len: u64, ram: &[(u64, u64)]) -> bool {
    let Some(end) = gpa.checked_add(len) else {
        return false;
    };
    let mut at = gpa;
    while at < end {
        match ram
            .iter()
            .find(|(b, s)| *b <= at && at < b.saturating_add(*s))
        {
            Some((b, s)) => at = b.saturating_add(*s),
            None => return false,
        }
    }
    true
}

/// Host memory for every mapped region, as one vm-memory collection.
///
/// For confidential guests on the SNP model, RAM is a memfd mapped twice:
/// once for KVM (the guest's view, never handed to Rust code as a slice) and
/// once as `memory`, the VMM's own view, where private pages are PROT_NONE so
/// that a VMM bug that reaches for them faults instead of reading them.
pub struct GuestRam {
    /// The VMM's view of RAM and ROM, addressable by GPA. Crate-private:
    /// devices reach guest memory through `dma::DeviceMemory` only.
    pub(crate) memory: GuestMemoryMmap,
    /// The guest's own mappings of RAM when they differ from `memory`.
    guest_mappings: Vec<GuestMapping>,
}

/// A host range backing guest memory, for a memslot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostRange {
    /// Guest-physical base.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host virtual address.
    pub host_addr: u64,
}

/// An mmap owned by umbra, unmapped on drop.
struct GuestMapping {
    gpa: u64,
    addr: *mut u8,
    size: usize,
}

// SAFETY: the mapping is plain shared memory; the pointer is only used for
// memslot registration and bounds-checked copies (see `firmware_write`).
unsafe impl Send for GuestMapping {}
// SAFETY: as above; concurrent access is the guest's own, as for any RAM.
unsafe impl Sync for GuestMapping {}

impl Drop for GuestMapping {
    fn drop(&mut self) {
        // SAFETY: addr/size describe a mapping this struct created and owns;
        // nothing references it after the VM (which outlives no GuestRam).
        unsafe { libc::munmap(self.addr.cast(), self.size) };
    }
}

impl GuestRam {
    /// Maps host memory for every RAM and ROM region of `map`.
    pub fn allocate(
        map: &MemoryMap,
        backing: MemoryBacking,
        ksm: bool,
    ) -> Result<Self, MemoryError> {
        let ram_bytes: u64 = map
            .regions()
            .iter()
            .filter(|r| r.role == RegionRole::Ram)
            .map(|r| r.size)
            .sum();
        if backing == MemoryBacking::Hugetlb {
            check_huge_pages(ram_bytes)?;
        }
        let mut regions = Vec::new();
        for region in map.regions().iter().filter(|r| r.role.is_mapped()) {
            // The ROM stays on small anonymous pages: it is tiny and copied once.
            let backing = if region.role == RegionRole::Rom {
                MemoryBacking::Anon
            } else {
                backing
            };
            let mapping = map_backing(region.size, backing)?;
            if region.role == RegionRole::Ram {
                advise(&mapping, backing, ksm)?;
            }
            let region = GuestRegionMmap::new(mapping, GuestAddress(region.gpa))
                .ok_or(MemoryError::RomSize(region.size))?;
            regions.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Overlap)?;
        Ok(GuestRam {
            memory,
            guest_mappings: Vec::new(),
        })
    }

    /// Maps a confidential guest's memory: each RAM region is a memfd mapped
    /// once for the guest and once for the VMM, with the VMM's view
    /// inaccessible (every page starts private); the ROM is as usual.
    pub fn allocate_confidential(map: &MemoryMap) -> Result<Self, MemoryError> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let mut regions = Vec::new();
        let mut guest_mappings = Vec::new();
        for region in map.regions().iter().filter(|r| r.role.is_mapped()) {
            let size = region.size;
            let map_err = |source| MemoryError::Map { size, source };
            let view = if region.role == RegionRole::Ram {
                let file = memfd("umbra-guest-private", 0, size)?;
                // SAFETY: a fresh MAP_SHARED mapping of a file we own, at an
                // address the kernel picks; checked for MAP_FAILED below.
                let addr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size as usize,
                        prot,
                        libc::MAP_SHARED,
                        std::os::fd::AsRawFd::as_raw_fd(&file),
                        0,
                    )
                };
                if addr == libc::MAP_FAILED {
                    return Err(MemoryError::Map {
                        size,
                        source: vm_memory::mmap::MmapRegionError::Mmap(
                            std::io::Error::last_os_error(),
                        ),
                    });
                }
                guest_mappings.push(GuestMapping {
                    gpa: region.gpa,
                    addr: addr.cast(),
                    size: size as usize,
                });
                let view = vm_memory::mmap::MmapRegionBuilder::new(size as usize)
                    .with_mmap_prot(prot)
                    .with_mmap_flags(libc::MAP_SHARED)
                    .with_file_offset(FileOffset::new(file, 0))
                    .build()
                    .map_err(map_err)?;
                // SAFETY: the whole view is a mapping owned by `view`;
                // PROT_NONE only removes the VMM's access.
                let rc =
                    unsafe { libc::mprotect(view.as_ptr().cast(), view.size(), libc::PROT_NONE) };
                if rc != 0 {
                    return Err(MemoryError::Protect(std::io::Error::last_os_error()));
                }
                view
            } else {
                map_backing(size, MemoryBacking::Anon)?
            };
            let region = GuestRegionMmap::new(view, GuestAddress(region.gpa))
                .ok_or(MemoryError::RomSize(size))?;
            regions.push(region);
        }
        let memory = GuestMemoryMmap::from_regions(regions).map_err(MemoryError::Overlap)?;
        Ok(GuestRam {
            memory,
            guest_mappings,
        })
    }

    /// The host ranges to register as memslots: the guest's own mapping
    /// where it differs from the VMM's view.
    pub fn guest_ranges(&self) -> Vec<HostRange> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        self.memory
            .iter()
            .map(|r| {
                let gpa = r.start_addr().0;
                let own = self.guest_mappings.iter().find(|m| m.gpa == gpa);
                let host_addr = match own {
                    Some(m) => m.addr as u64,
                    None => r
                        .get_host_address(MemoryRegionAddress(0))
                        .map_or(0, |p| p as u64),
                };
                HostRange {
                    gpa,
                    size: r.len(),
                    host_addr,
                }
            })
            .collect()
    }

    /// Discards the backing of `gpa..gpa+len` of a confidential guest's RAM
    /// (a hole punched in its memfd): the page reads as zeroes afterwards
    /// and costs no host memory, as when QEMU discards the half of a
    /// conversion the guest no longer uses. A no-op for other guests.
    pub fn discard(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        if self.guest_mapping(gpa).is_none() {
            return Ok(());
        }
        crate::reclaim::discard(&self.memory, gpa, len).map_err(MemoryError::Protect)
    }

    /// Grants or removes the VMM's own access to `gpa..gpa+len` of a
    /// confidential guest's RAM (page aligned). A no-op for other guests.
    pub fn set_vmm_access(&self, gpa: u64, len: u64, accessible: bool) -> Result<(), MemoryError> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        if self.guest_mapping(gpa).is_none() {
            return Ok(());
        }
        let region = self
            .memory
            .find_region(GuestAddress(gpa))
            .ok_or(MemoryError::Protect(std::io::Error::from_raw_os_error(
                libc::EFAULT,
            )))?;
        let offset = gpa - region.start_addr().0;
        if offset + len > region.len() {
            return Err(MemoryError::Protect(std::io::Error::from_raw_os_error(
                libc::EFAULT,
            )));
        }
        let base = region
            .get_host_address(MemoryRegionAddress(offset))
            .map_err(|_| MemoryError::Protect(std::io::Error::from_raw_os_error(libc::EFAULT)))?;
        let prot = if accessible {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_NONE
        };
        // SAFETY: [base, base+len) lies inside the VMM's view of one region
        // (checked above); changing its protection does not move it.
        let rc = unsafe { libc::mprotect(base.cast(), len as usize, prot) };
        if rc != 0 {
            return Err(MemoryError::Protect(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Writes guest memory through the guest's own mapping, as the SEV
    /// firmware does (secrets and CPUID pages at launch). Returns false when
    /// the range is not inside one region.
    pub(crate) fn firmware_write(&self, gpa: u64, data: &[u8]) -> bool {
        let Some(mapping) = self.guest_mapping(gpa) else {
            use vm_memory::Bytes;
            return self.memory.write_slice(data, GuestAddress(gpa)).is_ok();
        };
        let Some(dst) = mapping.range(gpa, data.len()) else {
            return false;
        };
        // SAFETY: `range` checked that dst..dst+len lies inside the guest
        // mapping; the source is a distinct Rust slice, so no overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        true
    }

    /// Reads guest memory through the guest's own mapping, as the SEV
    /// firmware does. Returns false when the range is not inside one region.
    pub(crate) fn firmware_read(&self, gpa: u64, data: &mut [u8]) -> bool {
        let Some(mapping) = self.guest_mapping(gpa) else {
            use vm_memory::Bytes;
            return self.memory.read_slice(data, GuestAddress(gpa)).is_ok();
        };
        let Some(src) = mapping.range(gpa, data.len()) else {
            return false;
        };
        // SAFETY: `range` checked that src..src+len lies inside the guest
        // mapping; the destination is a distinct Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(src, data.as_mut_ptr(), data.len()) };
        true
    }

    /// The guest's own mapping holding `gpa` (confidential guests only).
    fn guest_mapping(&self, gpa: u64) -> Option<&GuestMapping> {
        self.guest_mappings
            .iter()
            .find(|m| gpa >= m.gpa && gpa - m.gpa < m.size as u64)
    }
}

impl GuestMapping {
    /// Host address of `gpa..gpa+len`, if the range lies inside this mapping.
    fn range(&self, gpa: u64, len: usize) -> Option<*mut u8> {
        let offset = usize::try_from(gpa.checked_sub(self.gpa)?).ok()?;
        (offset.checked_add(len)? <= self.size).then(|| self.addr.wrapping_add(offset))
    }
}

fn memfd(name: &str, flags: libc::c_uint, size: u64) -> Result<File, MemoryError> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| MemoryError::HugetlbFile(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns
    // a new descriptor or -1 and touches no memory of ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(MemoryError::HugetlbFile(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a descriptor we just created and own exclusively.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::HugetlbFile)?;
    Ok(file)
}

fn map_backing(size: u64, backing: MemoryBacking) -> Result<MmapRegion, MemoryError> {
    let map_err = |source| MemoryError::Map { size, source };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    match backing {
        MemoryBacking::Anon | MemoryBacking::Thp => MmapRegion::build(
            None,
            size as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        )
        .map_err(map_err),
        MemoryBacking::Hugetlb => {
            let file = hugetlb_file(size)?;
            vm_memory::mmap::MmapRegionBuilder::new(size as usize)
                .with_mmap_prot(prot)
                .with_mmap_flags(libc::MAP_SHARED)
                .with_file_offset(FileOffset::new(file, 0))
                .with_hugetlbfs(true)
                .build()
                .map_err(map_err)
        }
    }
}

fn hugetlb_file(size: u64) -> Result<File, MemoryError> {
    memfd("umbra-guest-ram", libc::MFD_HUGETLB, size)
}

/// Reads HugePages_Free from /proc/meminfo and checks it covers `bytes`.
fn check_huge_pages(bytes: u64) -> Result<(), MemoryError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let needed = bytes.div_ceil(2 << 20);
    if free < needed {
        return Err(MemoryError::HugePages { free, needed });
    }
    Ok(())
}

fn advise(mapping: &MmapRegion, backing: MemoryBacking, ksm: bool) -> Result<(), MemoryError> {
    let mut advices = Vec::new();
    if backing == MemoryBacking::Thp {
        advices.push((libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"));
    }
    if ksm {
        advices.push((libc::MADV_MERGEABLE, "MADV_MERGEABLE"));
    }
    for (advice, name) in advices {
        // SAFETY: the range is exactly one mapping owned by `mapping`;
        // madvise with these advices changes paging policy, not contents.
        let rc = unsafe { libc::madvise(mapping.as_ptr().cast(), mapping.size(), advice) };
        if rc != 0 {
            return Err(MemoryError::Advise {
                advice: name,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest_layout() {
        let map = MemoryMap::new(1 << 30, 64 << 10).unwrap();
        let names: Vec<_> = map.regions().iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "ram-low",
                "guard-after-ram",
                "mmio",
                "ioapic",
                "guard-below-rom",
                "rom"
            ]
        );
        assert_eq!(map.find(0x1000).unwrap().role, RegionRole::Ram);
        assert_eq!(map.find(1 << 30).unwrap().role, RegionRole::Guard);
        assert_eq!(map.find(0xFFFF_FFF0).unwrap().role, RegionRole::Rom);
        assert_eq!(map.find(0xFFFE_0000).unwrap().role, RegionRole::Guard);
        assert!(
            map.find(0x8000_0000).is_none(),
            "a hole between guard and MMIO is unbacked"
        );
        assert_eq!(map.rom().unwrap().gpa, 0xFFFF_0000);
    }

    #[test]
    fn large_guest_splits_ram_around_the_hole() {
        let map = MemoryMap::new(8 << 30, 2 << 20).unwrap();
        assert_eq!(map.low_ram(), 3 << 30);
        let high = map.find(HIGH_RAM_BASE).unwrap();
        assert_eq!((high.name, high.size), ("ram-high", 5 << 30));
        assert_eq!(map.rom().unwrap().gpa, 0xFFE0_0000);
    }

    #[test]
    fn rejects_bad_rom_sizes() {
        assert!(matches!(
            MemoryMap::new(1 << 30, 0),
            Err(MemoryError::RomSize(0))
        ));
        assert!(matches!(
            MemoryMap::new(1 << 30, 16 << 20),
            Err(MemoryError::RomSize(_))
        ));
        assert!(matches!(
            MemoryMap::new(1 << 30, 1000),
            Err(MemoryError::RomAlignment(1000))
        ));
    }

    #[test]
    fn allocates_sparse_ram() {
        let map = MemoryMap::new(64 << 20, 64 << 10).unwrap();
        let ram = GuestRam::allocate(&map, MemoryBacking::Thp, false).unwrap();
        ram.memory
            .write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        assert_eq!(
            ram.memory.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert!(ram
            .memory
            .check_address(GuestAddress(0xFFFF_0000))
            .is_some());
        assert!(ram.memory.check_address(GuestAddress(64 << 20)).is_none());
    }

    /// The permissions /proc/self/maps shows for the page holding `addr`.
    fn host_perms(addr: u64) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|l| {
                let (range, rest) = l.split_once(' ')?;
                let (lo, hi) = range.split_once('-')?;
                let (lo, hi) = (
                    u64::from_str_radix(lo, 16).ok()?,
                    u64::from_str_radix(hi, 16).ok()?,
                );
                (lo <= addr && addr < hi).then(|| rest[..4].to_string())
            })
            .unwrap()
    }

    #[test]
    fn confidential_ram_hides_private_pages_from_the_vmm() {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram = GuestRam::allocate_confidential(&map).unwrap();
        let view = ram.memory.find_region(GuestAddress(0)).unwrap();
        let view_addr = view.get_host_address(MemoryRegionAddress(0x5000)).unwrap() as u64;
        let guest = ram.guest_ranges().into_iter().find(|r| r.gpa == 0).unwrap();
        assert_ne!(
            guest.host_addr,
            view_addr - 0x5000,
            "KVM gets its own mapping"
        );
        assert_eq!(host_perms(view_addr), "---s", "every page starts private");
        assert_eq!(host_perms(guest.host_addr + 0x5000), "rw-s");

        assert!(ram.firmware_write(0x5000, b"secret"));
        ram.set_vmm_access(0x5000, 4096, true).unwrap();
        assert_eq!(host_perms(view_addr), "rw-s");
        let mut back = [0u8; 6];
        ram.memory
            .read_slice(&mut back, GuestAddress(0x5000))
            .unwrap();
        assert_eq!(&back, b"secret", "both mappings show the same memory");
        ram.set_vmm_access(0x5000, 4096, false).unwrap();
        assert_eq!(host_perms(view_addr), "---s");
        assert!(!ram.firmware_write((16 << 20) - 2, b"spill"));
    }
}
