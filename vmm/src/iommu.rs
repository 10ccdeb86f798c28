//! The state of the virtio-iommu (virtio 1.2 §5.13): domains, their
//! mappings, which endpoint is attached where, and the faults devices
//! raised. The device (`virtio::iommu`) changes it from guest requests;
//! the DMA path (`dma::FilterHandle`) reads it on every access of an
//! endpoint, composing the domain's IOVA -> GPA mapping with the
//! shared-only filter.
//!
//! Every bound is fixed here, never by the guest: at most [`MAX_DOMAINS`]
//! domains and [`MAX_MAPPINGS`] mappings per domain (growth past them is
//! answered NOMEM), IOVAs inside [`INPUT_END`], granule 4 KiB.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use vm_memory::{GuestAddress, Iotlb, Permissions};

/// Lowest page size (the granule) and the sizes offered: 4 KiB and 2 MiB.
pub const PAGE_SIZE_MASK: u64 = (1 << 12) | (1 << 21);
/// Last IOVA a mapping may use (48-bit input range).
pub const INPUT_END: u64 = (1 << 48) - 1;
/// Most domains at once.
pub const MAX_DOMAINS: usize = 1024;
/// Most mappings per domain.
pub const MAX_MAPPINGS: usize = 65536;
/// Faults kept for the metrics (the count keeps going).
const MAX_FAULTS_KEPT: usize = 1024;
/// Faults waiting for event buffers (older ones are dropped, as the
/// specification allows).
const MAX_FAULTS_PENDING: usize = 256;
/// The local APICs' MSI doorbell, reported as RESV_MEM MSI by PROBE.
pub const MSI_START: u64 = 0xFEE0_0000;
/// Inclusive end of the doorbell range.
pub const MSI_END: u64 = 0xFEEF_FFFF;

/// MAP flags (§5.13.6.6).
pub const MAP_READ: u32 = 1 << 0;
/// Write permission.
pub const MAP_WRITE: u32 = 1 << 1;
/// A memory type (MMIO), not a permission.
pub const MAP_MMIO: u32 = 1 << 2;

/// Request status values (§5.13.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// I/O error.
    IoErr = 1,
    /// Not supported.
    Unsupp = 2,
    /// Internal device error.
    DevErr = 3,
    /// Invalid parameters.
    Inval = 4,
    /// Out of range.
    Range = 5,
    /// No such endpoint or domain.
    NoEnt = 6,
    /// Bad address.
    Fault = 7,
    /// Out of resources.
    NoMem = 8,
}

/// Why an access was refused (the fault reason, §5.13.6.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultReason {
    /// The endpoint is not attached to a domain.
    Domain,
    /// No mapping, or not with the permission needed.
    Mapping,
}

/// One refused device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Fault {
    /// Why.
    pub reason: FaultReason,
    /// The first refused IOVA.
    pub iova: u64,
    /// The endpoint (its transport index).
    pub endpoint: u32,
    /// Its domain, if attached.
    pub domain: Option<u32>,
    /// Whether the access was a write.
    pub write: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mapping {
    /// Inclusive.
    virt_end: u64,
    phys_start: u64,
    flags: u32,
}

/// One domain.
#[derive(Debug, Default)]
pub struct Domain {
    mappings: BTreeMap<u64, Mapping>,
    iotlb: Iotlb,
    endpoints: BTreeSet<u32>,
    bypass: bool,
}

impl Domain {
    /// IOVA -> GPA with permissions, for translation.
    pub(crate) fn iotlb(&self) -> &Iotlb {
        &self.iotlb
    }
}

/// The IOMMU's state.
#[derive(Debug, Default)]
pub struct IommuState {
    domains: BTreeMap<u32, Domain>,
    /// Registered endpoints and the domain each is attached to.
    endpoints: BTreeMap<u32, Option<u32>>,
    /// Unattached endpoints bypass translation (config `bypass`).
    bypass: bool,
    faults: VecDeque<Fault>,
    kept: Vec<Fault>,
    fault_count: u64,
}

/// What an endpoint's access goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Identity (bypass): the shared-only filter alone.
    Identity,
    /// The mappings of this domain.
    Domain(u32),
    /// Nothing: the endpoint is not attached and bypass is off.
    Blocked,
}

fn permissions(flags: u32) -> Permissions {
    match (flags & MAP_READ != 0, flags & MAP_WRITE != 0) {
        (true, true) => Permissions::ReadWrite,
        (true, false) => Permissions::Read,
        (false, true) => Permissions::Write,
        (false, false) => Permissions::No,
    }
}

fn granule_aligned(value: u64) -> bool {
    value & ((PAGE_SIZE_MASK & PAGE_SIZE_MASK.wrapping_neg()) - 1) == 0
}

impl IommuState {
    /// A state with `endpoints` registered, none attached.
    pub fn new(endpoints: impl IntoIterator<Item = u32>) -> Self {
        IommuState {
            endpoints: endpoints.into_iter().map(|e| (e, None)).collect(),
            ..IommuState::default()
        }
    }

    /// Whether unattached endpoints bypass translation.
    pub fn bypass(&self) -> bool {
        self.bypass
    }

    /// Sets the config `bypass` field.
    pub fn set_bypass(&mut self, on: bool) {
        self.bypass = on;
    }

    /// Whether `endpoint` is one this IOMMU translates.
    pub fn has_endpoint(&self, endpoint: u32) -> bool {
        self.endpoints.contains_key(&endpoint)
    }

    /// How an access of `endpoint` is translated now.
    pub(crate) fn route(&self, endpoint: u32) -> Route {
        match self.endpoints.get(&endpoint) {
            Some(Some(domain)) => match self.domains.get(domain) {
                Some(d) if d.bypass => Route::Identity,
                Some(_) => Route::Domain(*domain),
                None => Route::Blocked,
            },
            _ if self.bypass => Route::Identity,
            _ => Route::Blocked,
        }
    }

    /// A domain, for translation.
    pub(crate) fn domain(&self, id: u32) -> Option<&Domain> {
        self.domains.get(&id)
    }

    /// The domain `endpoint` is attached to.
    pub fn domain_of(&self, endpoint: u32) -> Option<u32> {
        self.endpoints.get(&endpoint).copied().flatten()
    }

    /// ATTACH `endpoint` to `domain` (created on first use).
    pub fn attach(&mut self, domain: u32, endpoint: u32, bypass: bool) -> Status {
        let Some(current) = self.endpoints.get(&endpoint).copied() else {
            return Status::NoEnt;
        };
        match self.domains.get(&domain) {
            Some(d) if d.bypass != bypass => return Status::Inval,
            None if self.domains.len() >= MAX_DOMAINS => return Status::NoMem,
            _ => {}
        }
        if let Some(old) = current {
            if old == domain {
                return Status::Ok;
            }
            self.detach_from(old, endpoint);
        }
        let d = self.domains.entry(domain).or_insert_with(|| Domain {
            bypass,
            ..Domain::default()
        });
        d.endpoints.insert(endpoint);
        self.endpoints.insert(endpoint, Some(domain));
        Status::Ok
    }

    fn detach_from(&mut self, domain: u32, endpoint: u32) {
        let empty = match self.domains.get_mut(&domain) {
            Some(d) => {
                d.endpoints.remove(&endpoint);
                d.endpoints.is_empty()
            }
            None => false,
        };
        // A domain left without endpoints ceases to exist (§5.13.6.5).
        if empty {
            self.domains.remove(&domain);
        }
        self.endpoints.insert(endpoint, None);
    }

    /// DETACH `endpoint` from `domain`.
    pub fn detach(&mut self, domain: u32, endpoint: u32) -> Status {
        match self.endpoints.get(&endpoint) {
            None => Status::NoEnt,
            Some(Some(d)) if *d == domain => {
                self.detach_from(domain, endpoint);
                Status::Ok
            }
            Some(_) => Status::Inval,
        }
    }

    /// MAP `[virt_start, virt_end]` to `phys_start` in `domain`.
    pub fn map(
        &mut self,
        domain: u32,
        virt_start: u64,
        virt_end: u64,
        phys_start: u64,
        flags: u32,
    ) -> Status {
        if flags & !(MAP_READ | MAP_WRITE | MAP_MMIO) != 0 {
            return Status::Inval;
        }
        let Some(d) = self.domains.get_mut(&domain) else {
            return Status::NoEnt;
        };
        if d.bypass {
            return Status::Inval;
        }
        if virt_end <= virt_start || virt_end > INPUT_END {
            return Status::Range;
        }
        let Some(len) = (virt_end - virt_start).checked_add(1) else {
            return Status::Range;
        };
        if !granule_aligned(virt_start)
            || !granule_aligned(phys_start)
            || !granule_aligned(len)
            || phys_start.checked_add(len - 1).is_none()
        {
            return Status::Range;
        }
        // Overlap with an existing mapping: the one starting at or before
        // virt_end with the greatest start, if it reaches virt_start.
        let overlaps = d
            .mappings
            .range(..=virt_end)
            .next_back()
            .is_some_and(|(_, m)| m.virt_end >= virt_start);
        if overlaps {
            return Status::Inval;
        }
        if d.mappings.len() >= MAX_MAPPINGS {
            return Status::NoMem;
        }
        let Ok(length) = usize::try_from(len) else {
            return Status::Range;
        };
        let _ = d.iotlb.set_mapping(
            GuestAddress(virt_start),
            GuestAddress(phys_start),
            length,
            permissions(flags),
        );
        d.mappings.insert(
            virt_start,
            Mapping {
                virt_end,
                phys_start,
                flags,
            },
        );
        Status::Ok
    }

    /// UNMAP every mapping inside `[virt_start, virt_end]`; a mapping only
    /// partly inside makes it answer RANGE and remove nothing.
    pub fn unmap(&mut self, domain: u32, virt_start: u64, virt_end: u64) -> Status {
        let Some(d) = self.domains.get_mut(&domain) else {
            return Status::NoEnt;
        };
        if virt_end < virt_start {
            return Status::Range;
        }
        // A mapping that starts before the range and reaches into it.
        let split_before = d
            .mappings
            .range(..virt_start)
            .next_back()
            .is_some_and(|(_, m)| m.virt_end >= virt_start);
        let inside: Vec<(u64, Mapping)> = d
            .mappings
            .range(virt_start..=virt_end)
            .map(|(s, m)| (*s, *m))
            .collect();
        let split_after = inside.last().is_some_and(|(_, m)| m.virt_end > virt_end);
        if split_before || split_after {
            return Status::Range;
        }
        for (start, m) in inside {
            d.mappings.remove(&start);
            if let Ok(len) = usize::try_from(m.virt_end - start + 1) {
                d.iotlb.invalidate_mapping(GuestAddress(start), len);
            }
        }
        Status::Ok
    }

    /// Mappings of `domain` (metrics, tests).
    pub fn mapping_count(&self, domain: u32) -> usize {
        self.domains.get(&domain).map_or(0, |d| d.mappings.len())
    }

    /// Records a refused access.
    pub(crate) fn record_fault(&mut self, fault: Fault) {
        self.fault_count += 1;
        if self.kept.len() < MAX_FAULTS_KEPT {
            self.kept.push(fault);
        }
        if self.faults.len() >= MAX_FAULTS_PENDING {
            self.faults.pop_front();
        }
        self.faults.push_back(fault);
    }

    /// The next fault not yet reported to the guest.
    pub(crate) fn next_fault(&mut self) -> Option<Fault> {
        self.faults.pop_front()
    }

    /// A fault the event queue could not take goes back first in line.
    pub(crate) fn requeue_fault(&mut self, fault: Fault) {
        self.faults.push_front(fault);
    }

    /// Faults for the metrics: the first kept, and how many in all.
    pub fn faults(&self) -> (&[Fault], u64) {
        (&self.kept, self.fault_count)
    }

    /// A device reset: every domain and attachment goes; `bypass` and the
    /// fault history stay (§5.13.5).
    pub fn reset(&mut self) {
        self.domains.clear();
        for domain in self.endpoints.values_mut() {
            *domain = None;
        }
        self.faults.clear();
    }

    /// Domains in use.
    pub fn domain_count(&self) -> usize {
        self.domains.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> IommuState {
        let mut s = IommuState::new([0, 1]);
        assert_eq!(s.attach(7, 0, false), Status::Ok);
        s
    }

    #[test]
    fn attach_checks_endpoint_and_bypass_consistency() {
        let mut s = attached();
        assert_eq!(s.attach(7, 9, false), Status::NoEnt);
        assert_eq!(s.attach(7, 1, true), Status::Inval);
        assert_eq!(s.route(0), Route::Domain(7));
        assert_eq!(s.route(1), Route::Blocked);
        s.set_bypass(true);
        assert_eq!(s.route(1), Route::Identity);
        // Re-attach moves the endpoint; the empty old domain goes away.
        assert_eq!(s.attach(8, 0, false), Status::Ok);
        assert_eq!(s.domain_count(), 1);
        assert_eq!(s.detach(7, 0), Status::Inval);
        assert_eq!(s.detach(8, 0), Status::Ok);
        assert_eq!(s.domain_count(), 0);
    }

    #[test]
    fn map_checks_alignment_overlap_range_and_flags() {
        let mut s = attached();
        assert_eq!(s.map(7, 0x1000, 0x1FFF, 0x8000, MAP_READ), Status::Ok);
        assert_eq!(s.map(7, 0x1000, 0x2FFF, 0x8000, MAP_READ), Status::Inval);
        assert_eq!(s.map(7, 0x0, 0x1FFF, 0x8000, MAP_READ), Status::Inval);
        assert_eq!(s.map(7, 0x3000, 0x3FFE, 0x8000, MAP_READ), Status::Range);
        assert_eq!(s.map(7, 0x3001, 0x3FFF, 0x8000, MAP_READ), Status::Range);
        assert_eq!(s.map(7, 0x3000, 0x3FFF, 0x8000, 1 << 5), Status::Inval);
        assert_eq!(s.map(9, 0x3000, 0x3FFF, 0x8000, MAP_READ), Status::NoEnt);
        assert_eq!(s.map(7, 0x3000, 1 << 48, 0x8000, MAP_READ), Status::Range);
        assert_eq!(s.map(7, 0x3000, 0x3000, 0x8000, MAP_READ), Status::Range);
    }

    #[test]
    fn unmap_removes_whole_mappings_and_refuses_splits() {
        let mut s = attached();
        assert_eq!(s.map(7, 0x0, 0xFFF, 0x10000, MAP_READ), Status::Ok);
        assert_eq!(s.map(7, 0x1000, 0x2FFF, 0x20000, MAP_READ), Status::Ok);
        // Splitting the second mapping is refused and changes nothing.
        assert_eq!(s.unmap(7, 0x0, 0x1FFF), Status::Range);
        assert_eq!(s.mapping_count(7), 2);
        assert_eq!(s.unmap(7, 0x2000, 0x2FFF), Status::Range);
        // The spec's examples: an empty range succeeds; a covering one
        // removes both.
        assert_eq!(s.unmap(7, 0x10000, 0x1FFFF), Status::Ok);
        assert_eq!(s.unmap(7, 0x0, 0x2FFF), Status::Ok);
        assert_eq!(s.mapping_count(7), 0);
    }

    #[test]
    fn mappings_per_domain_are_bounded() {
        let mut s = attached();
        for i in 0..MAX_MAPPINGS as u64 {
            assert_eq!(
                s.map(7, i << 12, (i << 12) + 0xFFF, 0, MAP_READ),
                Status::Ok
            );
        }
        let next = (MAX_MAPPINGS as u64) << 12;
        assert_eq!(s.map(7, next, next + 0xFFF, 0, MAP_READ), Status::NoMem);
    }
}

/// The IOMMU as the device and the endpoints' memories share it.
#[derive(Debug)]
pub struct VirtualIommu {
    state: std::sync::RwLock<IommuState>,
    /// Signalled when a fault is recorded (the device reports it).
    fault_signal: vmm_sys_util::eventfd::EventFd,
}

impl VirtualIommu {
    /// An IOMMU translating `endpoints`.
    pub fn new(endpoints: impl IntoIterator<Item = u32>) -> std::io::Result<Self> {
        Ok(VirtualIommu {
            state: std::sync::RwLock::new(IommuState::new(endpoints)),
            fault_signal: vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// The state, for translation (held for the whole copy: a request
    /// that changes the mappings waits for in-flight accesses).
    pub(crate) fn read(&self) -> std::sync::RwLockReadGuard<'_, IommuState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The state, for a request.
    pub(crate) fn write(&self) -> std::sync::RwLockWriteGuard<'_, IommuState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a fault (taking the state's lock: call without it held).
    pub(crate) fn fault(&self, fault: Fault) {
        self.write().record_fault(fault);
        let _ = self.fault_signal.write(1);
    }

    /// The eventfd signalled on faults.
    pub(crate) fn fault_signal(&self) -> &vmm_sys_util::eventfd::EventFd {
        &self.fault_signal
    }
}
