//! The one handle through which a device reaches guest memory.
//!
//! Devices never get `GuestRam` or a `GuestMemoryMmap`: they get a
//! [`DeviceMemory`] from the VM (`Vm::device_memory`), whose
//! [`GuestDma`] is vm-memory's `IommuMemory` over guest RAM with umbra's
//! own [`Iommu`], the [`DmaFilter`]. virtio-queue walks rings, descriptor
//! tables, indirect tables and buffers through it, each access with its
//! read or write permission, so every byte a device touches is translated
//! first and an address the filter does not map fails closed.
//!
//! What the filter maps:
//! - a plain guest: its RAM ranges, read-write (not the ROM, not MMIO, not
//!   guard ranges, nothing beyond RAM);
//! - a confidential guest: exactly the pages that are shared at this
//!   moment. The page-state tracker is the truth: every conversion updates
//!   the filter under the tracker's lock (`SharedMemory::convert`), a page
//!   made private is unmapped here before the VMM loses access to it, and a
//!   page made shared is mapped only after the VMM gained access.
//!
//! A translation holds the filter's read lock until the copy it serves is
//! done (vm-memory keeps the guard in its slice iterator), and unmapping
//! takes the write lock: a conversion to private waits for in-flight
//! device copies of that page, and no copy starts after it. Devices must
//! therefore copy through `Bytes` (`read_slice`, `write_slice`,
//! `read_volatile_from`...) and never keep a `VolatileSlice` past one
//! access.

use crate::iommu::{Fault, FaultReason, IommuState, Route, VirtualIommu};
use crate::memory::GuestRam;
use crate::page_state::PageStates;
use std::sync::LazyLock;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use thiserror::Error;
use vm_memory::iommu::{Error as IommuError, IotlbIterator, IovaRange};
use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Iommu, IommuMemory, Iotlb, Permissions,
};

/// Why the filter refused a device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A confidential guest has not shared (all of) the range.
    Private,
    /// The range is not guest RAM (ROM, MMIO, guard, beyond RAM, wraps).
    NotRam,
    /// The device's IOMMU domain does not map it (with that permission),
    /// or its endpoint is not attached.
    Iommu,
}

/// Why a device access to guest memory was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DmaError {
    /// The filter does not map (all of) the range.
    #[error("device access to {gpa:#x}+{len:#x} refused: {}", match .refusal {
        Refusal::Private => "private to the guest",
        Refusal::NotRam => "not guest RAM",
        Refusal::Iommu => "not mapped for this device by the guest's IOMMU",
    })]
    Translate {
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
        /// Why.
        refusal: Refusal,
    },
}

/// The pages devices may reach, as an IOTLB that is always complete: a
/// miss is a refusal, never a reason to look elsewhere.
#[derive(Debug, Default)]
pub struct DmaFilter {
    iotlb: RwLock<Iotlb>,
    /// Held (read) by a device that keeps slices of guest memory across
    /// copies (the vsock packets of virtio-vsock); unmapping takes it
    /// (write) first, so it also waits for those.
    holders: RwLock<()>,
}

impl DmaFilter {
    fn read(&self) -> RwLockReadGuard<'_, Iotlb> {
        self.iotlb.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets devices reach `[gpa, gpa + len)` read-write (identity).
    pub(crate) fn map(&self, gpa: u64, len: u64) {
        let Ok(length) = usize::try_from(len) else {
            return;
        };
        let mut iotlb = self.iotlb.write().unwrap_or_else(|p| p.into_inner());
        // `set_mapping` cannot fail: it only inserts into the range map.
        let _ = iotlb.set_mapping(
            GuestAddress(gpa),
            GuestAddress(gpa),
            length,
            Permissions::ReadWrite,
        );
    }

    /// Takes `[gpa, gpa + len)` away from devices. Returns once no device
    /// copy of the range is in flight: the write lock waits for every
    /// translation guard.
    pub(crate) fn unmap(&self, gpa: u64, len: u64) {
        let Ok(length) = usize::try_from(len) else {
            return;
        };
        let _holders = self.holders.write().unwrap_or_else(|p| p.into_inner());
        let mut iotlb = self.iotlb.write().unwrap_or_else(|p| p.into_inner());
        iotlb.invalidate_mapping(GuestAddress(gpa), length);
    }
}

/// The filter as vm-memory's `IommuMemory` holds it, and, for a device
/// behind the virtio-iommu, its endpoint: then an access goes through the
/// endpoint's domain (IOVA -> GPA, with permissions) and every GPA it
/// reaches must also pass the filter.
#[derive(Clone, Debug)]
pub struct FilterHandle {
    filter: Arc<DmaFilter>,
    endpoint: Option<(u32, Arc<VirtualIommu>)>,
}

/// What a translation holds until its copy is done: the filter's read
/// lock, and for an endpoint also the IOMMU state's (so UNMAP and a
/// conversion to private both wait for in-flight accesses).
pub enum DmaGuard<'a> {
    /// The filter alone (plain, shared-only or bypass).
    Filter(RwLockReadGuard<'a, Iotlb>),
    /// A domain's mappings, with the filter held too.
    Domain {
        /// The IOMMU state.
        state: RwLockReadGuard<'a, IommuState>,
        /// The endpoint's domain.
        domain: u32,
        /// The filter, checked for every GPA of the access.
        _shared: RwLockReadGuard<'a, Iotlb>,
    },
}

/// The IOTLB of a domain that no longer exists: maps nothing.
static NO_MAPPINGS: LazyLock<Iotlb> = LazyLock::new(Iotlb::new);

impl std::ops::Deref for DmaGuard<'_> {
    type Target = Iotlb;

    fn deref(&self) -> &Iotlb {
        match self {
            DmaGuard::Filter(iotlb) => iotlb,
            DmaGuard::Domain { state, domain, .. } => state
                .domain(*domain)
                .map(|d| d.iotlb())
                .unwrap_or(&NO_MAPPINGS),
        }
    }
}

fn cannot_resolve(iova: GuestAddress, length: usize, reason: &str) -> IommuError {
    IommuError::CannotResolve {
        iova_range: IovaRange { base: iova, length },
        reason: reason.to_string(),
    }
}

impl FilterHandle {
    fn translate_endpoint<'a>(
        &'a self,
        endpoint: u32,
        iommu: &'a VirtualIommu,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<DmaGuard<'a>>, IommuError> {
        let write = matches!(access, Permissions::Write | Permissions::ReadWrite);
        let state = iommu.read();
        let domain = match state.route(endpoint) {
            Route::Identity => {
                drop(state);
                return Iotlb::lookup(DmaGuard::Filter(self.filter.read()), iova, length, access)
                    .map_err(|_| cannot_resolve(iova, length, "not shared with devices"));
            }
            Route::Blocked => {
                let domain = state.domain_of(endpoint);
                drop(state);
                iommu.fault(Fault {
                    reason: FaultReason::Domain,
                    iova: iova.0,
                    endpoint,
                    domain,
                    write,
                });
                return Err(cannot_resolve(iova, length, "endpoint not attached"));
            }
            Route::Domain(domain) => domain,
        };
        let shared = self.filter.read();
        let checked = state.domain(domain).map(|d| {
            Iotlb::lookup(d.iotlb(), iova, length, access).map(|mut ranges| {
                // Every GPA the domain maps for this access must also be
                // reachable through the shared-only filter.
                ranges.all(|r| Iotlb::lookup(&*shared, r.base, r.length, access).is_ok())
            })
        });
        match checked {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                return Err(cannot_resolve(
                    iova,
                    length,
                    "maps memory not shared with devices",
                ))
            }
            Some(Err(fails)) => {
                let first = fails
                    .misses
                    .iter()
                    .chain(&fails.access_fails)
                    .map(|r| r.base.0)
                    .min()
                    .unwrap_or(iova.0);
                drop(shared);
                drop(state);
                iommu.fault(Fault {
                    reason: FaultReason::Mapping,
                    iova: first,
                    endpoint,
                    domain: Some(domain),
                    write,
                });
                return Err(cannot_resolve(
                    iova,
                    length,
                    "no mapping with that permission",
                ));
            }
            None => return Err(cannot_resolve(iova, length, "domain gone")),
        }
        let guard = DmaGuard::Domain {
            state,
            domain,
            _shared: shared,
        };
        Iotlb::lookup(guard, iova, length, access)
            .map_err(|_| cannot_resolve(iova, length, "no mapping"))
    }
}

impl Iommu for FilterHandle {
    type IotlbGuard<'a> = DmaGuard<'a>;

    fn translate(
        &self,
        iova: GuestAddress,
        length: usize,
        access: Permissions,
    ) -> Result<IotlbIterator<Self::IotlbGuard<'_>>, IommuError> {
        // Iotlb ranges are `start..start + length` in u64: a range that
        // wraps would panic inside the range map, so refuse it here.
        if iova.0.checked_add(length as u64).is_none() {
            return Err(cannot_resolve(
                iova,
                length,
                "the range wraps the address space",
            ));
        }
        if let Some((endpoint, iommu)) = &self.endpoint {
            return self.translate_endpoint(*endpoint, iommu, iova, length, access);
        }
        Iotlb::lookup(DmaGuard::Filter(self.filter.read()), iova, length, access)
            .map_err(|_| cannot_resolve(iova, length, "not mapped for devices"))
    }
}

/// Guest memory as devices see it: every access translated by the filter.
pub type GuestDma = IommuMemory<GuestMemoryMmap, FilterHandle>;

/// How a refusal is explained (which pages are RAM, which are private).
#[derive(Clone)]
enum Explain {
    Plain,
    Shared(Arc<Mutex<PageStates>>),
}

/// Guest memory as devices may see it.
#[derive(Clone)]
pub struct DeviceMemory {
    memory: GuestDma,
    filter: Arc<DmaFilter>,
    explain: Explain,
}

impl std::fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.explain {
            Explain::Plain => "plain RAM",
            Explain::Shared(_) => "shared pages only",
        };
        f.debug_struct("DeviceMemory")
            .field("reaches", &kind)
            .finish()
    }
}

fn dma_over(ram: &GuestRam, filter: &Arc<DmaFilter>) -> GuestDma {
    let handle = FilterHandle {
        filter: filter.clone(),
        endpoint: None,
    };
    IommuMemory::new(ram.memory.clone(), handle, true, ())
}

impl DeviceMemory {
    /// A plain guest's RAM: the ranges given, nothing else.
    pub(crate) fn plain(ram: Arc<GuestRam>, ram_ranges: Vec<(u64, u64)>) -> Self {
        // Everything outside these ranges is not RAM: no page is private.
        let filter = Arc::new(DmaFilter::default());
        for &(gpa, len) in &ram_ranges {
            filter.map(gpa, len);
        }
        DeviceMemory {
            memory: dma_over(&ram, &filter),
            filter,
            explain: Explain::Plain,
        }
    }

    /// A confidential guest's shared pages, as `filter` maps them (kept
    /// in step with `states` by every conversion).
    pub(crate) fn shared(
        ram: &GuestRam,
        filter: Arc<DmaFilter>,
        states: Arc<Mutex<PageStates>>,
    ) -> Self {
        DeviceMemory {
            memory: dma_over(ram, &filter),
            filter,
            explain: Explain::Shared(states),
        }
    }

    /// Keeps every page devices can reach now reachable until the guard
    /// drops: for code that holds slices of guest memory between copies.
    pub(crate) fn hold(&self) -> RwLockReadGuard<'_, ()> {
        self.filter
            .holders
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The same memory as endpoint `endpoint` of `iommu` sees it: through
    /// its domain's mappings, then the filter.
    pub(crate) fn behind_iommu(&self, endpoint: u32, iommu: Arc<VirtualIommu>) -> Self {
        let handle = FilterHandle {
            filter: self.filter.clone(),
            endpoint: Some((endpoint, iommu)),
        };
        DeviceMemory {
            memory: IommuMemory::new(self.memory.get_backend().clone(), handle, true, ()),
            filter: self.filter.clone(),
            explain: self.explain.clone(),
        }
    }

    /// The memory virtqueues are walked over.
    pub(crate) fn guest_dma(&self) -> &GuestDma {
        &self.memory
    }

    /// Why `[gpa, gpa + len)` is refused.
    pub(crate) fn explain(&self, gpa: u64, len: u64) -> Refusal {
        if self.memory.iommu().endpoint.is_some() {
            return Refusal::Iommu;
        }
        match &self.explain {
            Explain::Plain => Refusal::NotRam,
            Explain::Shared(states) => {
                let states = crate::sync::lock(states);
                let in_ram = len > 0
                    && gpa.checked_add(len - 1).is_some_and(|last| {
                        states.state(gpa).is_some() && states.state(last).is_some()
                    });
                if in_ram && !states.is_shared(gpa, len) {
                    Refusal::Private
                } else {
                    Refusal::NotRam
                }
            }
        }
    }

    fn refused(&self, gpa: u64, len: u64) -> DmaError {
        DmaError::Translate {
            gpa,
            len,
            refusal: self.explain(gpa, len),
        }
    }

    /// Gives `[gpa, gpa + len)` back to the host (the balloon): only RAM,
    /// and for a confidential guest only pages shared now (checked and
    /// discarded under the tracker's lock, so no conversion interleaves);
    /// a private page is refused, never discarded.
    pub(crate) fn reclaim(&self, gpa: u64, len: u64) -> Result<(), DmaError> {
        let refused = |refusal| DmaError::Translate { gpa, len, refusal };
        let Ok(length) = usize::try_from(len) else {
            return Err(refused(Refusal::NotRam));
        };
        match &self.explain {
            Explain::Plain => {
                if !self
                    .memory
                    .check_range(GuestAddress(gpa), length, Permissions::Write)
                {
                    return Err(refused(Refusal::NotRam));
                }
                crate::reclaim::discard(self.memory.get_backend(), gpa, len)
                    .map_err(|_| refused(Refusal::NotRam))
            }
            Explain::Shared(states) => {
                let states = crate::sync::lock(states);
                if !states.is_shared(gpa, len) {
                    return Err(refused(if states.state(gpa).is_some() {
                        Refusal::Private
                    } else {
                        Refusal::NotRam
                    }));
                }
                crate::reclaim::discard(self.memory.get_backend(), gpa, len)
                    .map_err(|_| refused(Refusal::NotRam))
            }
        }
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| self.refused(gpa, buf.len() as u64))
    }

    /// Writes `data` at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), DmaError> {
        self.memory
            .write_slice(data, GuestAddress(gpa))
            .map_err(|_| self.refused(gpa, data.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryMap;
    use crate::page_state::PageState;

    #[test]
    fn plain_memory_reaches_ram_only() {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram =
            Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).unwrap());
        let dma = DeviceMemory::plain(ram, map.ram_ranges());
        dma.write(0x1000, b"umbra").unwrap();
        let mut buf = [0u8; 5];
        dma.read(0x1000, &mut buf).unwrap();
        assert_eq!(&buf, b"umbra");
        let rom = map.rom().unwrap().gpa;
        assert_eq!(
            dma.write(rom, b"x"),
            Err(DmaError::Translate {
                gpa: rom,
                len: 1,
                refusal: Refusal::NotRam
            })
        );
        // Straddling the end of RAM, and wrapping the address space.
        assert!(dma.read((16 << 20) - 2, &mut buf).is_err());
        assert!(dma.read(u64::MAX - 1, &mut buf).is_err());
    }

    #[test]
    fn an_unmapped_page_is_refused_and_a_remapped_one_reached() {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram =
            Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).unwrap());
        let states = PageStates::new(&map.ram_ranges(), PageState::Private).unwrap();
        let filter = Arc::new(DmaFilter::default());
        let dma = DeviceMemory::shared(&ram, filter.clone(), Arc::new(Mutex::new(states)));
        let mut buf = [0u8; 8];
        assert_eq!(
            dma.read(0x4000, &mut buf),
            Err(DmaError::Translate {
                gpa: 0x4000,
                len: 8,
                refusal: Refusal::Private
            })
        );
        filter.map(0x4000, 0x1000);
        dma.read(0x4000, &mut buf).unwrap();
        // A copy that runs off the mapped page is refused whole.
        assert!(dma.read(0x4FFC, &mut buf).is_err());
        filter.unmap(0x4000, 0x1000);
        assert!(dma.read(0x4000, &mut buf).is_err());
    }
}
