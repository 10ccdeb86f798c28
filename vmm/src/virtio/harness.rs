//! What `benches/virtio.rs` and the fuzz targets in `vmm/fuzz` drive: one
//! virtio-blk request served end to end (descriptor walk, translation,
//! file read, copy into the guest) over device memory with or without the
//! shared-only filter; one filter translation among `n` mapped ranges; and
//! arbitrary guest-written rings and buffers fed to the block and vsock
//! devices. Not part of the VMM's interface.

use super::block::Block;
use super::{DeviceCounters, DeviceIo, VirtioDevice};
use crate::dma::{DeviceMemory, DmaFilter, GuestDma};
use crate::memory::{GuestRam, MemoryMap};
use crate::page_state::{PageState, PageStates};
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

const DESC: u64 = 0x10_0000;
const AVAIL: u64 = 0x10_1000;
const USED: u64 = 0x10_2000;
const HEADER: u64 = 0x10_3000;
const DATA: u64 = 0x10_4000;
const STATUS: u64 = 0x10_6000;

/// One virtio-blk device with one 4 KiB read request ready to serve.
pub struct BlkRequest {
    block: Block,
    queues: Vec<Queue>,
    memory: DeviceMemory,
    counters: DeviceCounters,
    avail_idx: u16,
}

impl std::fmt::Debug for BlkRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkRequest").finish_non_exhaustive()
    }
}

/// What the device memory of a [`BlkRequest`] reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// A plain guest: all of RAM (one range per RAM region).
    Plain,
    /// A confidential guest that shares one contiguous bounce region, as
    /// Linux's SWIOTLB does (the request's pages are in it).
    Contiguous,
    /// A confidential guest with every other page shared: 8192 ranges.
    Fragmented,
}

impl BlkRequest {
    /// A request over `image` (at least 8 sectors) through `sharing`.
    pub fn new(image: &std::path::Path, sharing: Sharing) -> Self {
        let shared_only = sharing != Sharing::Plain;
        let map = MemoryMap::new(64 << 20, 64 << 10).expect("memory map");
        let ram = Arc::new(
            GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).expect("RAM"),
        );
        let memory = if shared_only {
            let mut states =
                PageStates::new(&map.ram_ranges(), PageState::Private).expect("states");
            if sharing == Sharing::Fragmented {
                for page in (0..(64u64 << 20)).step_by(0x2000) {
                    let _ = states.convert(page, 0x1000, PageState::Shared);
                }
            }
            // The request's own pages.
            for page in (DESC..STATUS + 0x1000).step_by(0x1000) {
                let _ = states.convert(page, 0x1000, PageState::Shared);
            }
            let filter = Arc::new(DmaFilter::default());
            for (gpa, len) in states.shared_ranges() {
                filter.map(gpa, len);
            }
            DeviceMemory::shared(&ram, filter, Arc::new(Mutex::new(states)))
        } else {
            DeviceMemory::plain(ram.clone(), map.ram_ranges())
        };
        let mem = &ram.memory;
        // A read of 4 KiB from sector 0: header, data, status.
        let descs: [(u64, u32, u16, u16); 3] =
            [(HEADER, 16, 1, 1), (DATA, 4096, 3, 2), (STATUS, 1, 2, 0)];
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            let at = GuestAddress(DESC + 16 * i as u64);
            let _ = mem.write_obj(*addr, at);
            let _ = mem.write_obj(*len, at.unchecked_add(8));
            let _ = mem.write_obj(*flags, at.unchecked_add(12));
            let _ = mem.write_obj(*next, at.unchecked_add(14));
        }
        let _ = mem.write_obj([0u32, 0, 0, 0], GuestAddress(HEADER));
        let mut queue = Queue::new(16).expect("queue");
        queue.set_size(16);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        BlkRequest {
            block: Block::open(image, false, false).expect("disk image"),
            queues: vec![queue],
            memory,
            counters: DeviceCounters::default(),
            avail_idx: 0,
        }
    }

    /// The same request by a device behind the virtio-iommu, whose domain
    /// holds `mappings` 4 KiB mappings (every other page of RAM, IOVA =
    /// GPA) plus the request's own pages.
    pub fn behind_iommu(image: &std::path::Path, mappings: u64) -> Self {
        let mut request = Self::new(image, Sharing::Plain);
        let iommu = Arc::new(iommu_with_mappings(mappings));
        request.memory = request.memory.behind_iommu(0, iommu);
        request
    }

    /// Posts the request and serves it; returns whether it completed OK.
    pub fn serve(&mut self) -> bool {
        let dma: &GuestDma = self.memory.guest_dma();
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % 16);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        let posted = dma.write_obj(0u16, GuestAddress(slot)).is_ok()
            && dma
                .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
                .is_ok();
        let io = DeviceIo {
            memory: &self.memory,
            counters: &self.counters,
            name: "bench",
        };
        let used = self.block.process(0, &mut self.queues, &io);
        let mut status = [0xFFu8];
        posted && used && self.memory.read(STATUS, &mut status).is_ok() && status[0] == 0
    }
}

/// A filter with `ranges` disjoint mapped ranges (every other page).
pub fn filter_with_ranges(ranges: u64) -> GuestDma {
    let map = MemoryMap::new((ranges * 0x2000).max(16 << 20), 64 << 10).expect("memory map");
    let ram =
        Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).expect("RAM"));
    let filter = Arc::new(DmaFilter::default());
    for i in 0..ranges {
        filter.map(i * 0x2000, 0x1000);
    }
    let states = PageStates::new(&map.ram_ranges(), PageState::Private).expect("states");
    DeviceMemory::shared(&ram, filter, Arc::new(Mutex::new(states)))
        .guest_dma()
        .clone()
}

/// An IOMMU with endpoint 0 attached to a domain of `mappings` 4 KiB
/// identity mappings of every other page from 8 MiB, plus the pages below
/// 8 MiB (where [`BlkRequest`] keeps its rings and buffers).
fn iommu_with_mappings(mappings: u64) -> crate::iommu::VirtualIommu {
    use crate::iommu::{Status, MAP_READ, MAP_WRITE};
    let iommu = crate::iommu::VirtualIommu::new([0]).expect("eventfd");
    {
        let mut state = iommu.write();
        assert_eq!(state.attach(1, 0, false), Status::Ok);
        assert_eq!(
            state.map(1, 0, (8 << 20) - 1, 0, MAP_READ | MAP_WRITE),
            Status::Ok
        );
        for i in 0..mappings {
            let iova = (8 << 20) + i * 0x2000;
            let _ = state.map(1, iova, iova + 0xFFF, iova, MAP_READ | MAP_WRITE);
        }
    }
    iommu
}

/// Guest memory as endpoint 0 of an IOMMU with `mappings` mappings sees
/// it (RAM large enough for all of them, all of it plain).
pub fn endpoint_with_mappings(mappings: u64) -> GuestDma {
    let map = MemoryMap::new((8 << 20) + mappings * 0x2000, 64 << 10).expect("memory map");
    let ram =
        Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).expect("RAM"));
    let plain = DeviceMemory::plain(ram, map.ram_ranges());
    plain
        .behind_iommu(0, Arc::new(iommu_with_mappings(mappings)))
        .guest_dma()
        .clone()
}

/// One translated 8-byte access at `gpa` (what a ring index read costs).
pub fn translate(dma: &GuestDma, gpa: u64) -> bool {
    dma.check_range(GuestAddress(gpa), 8, Permissions::Read)
}

/// A guest whose descriptor table, available ring and buffers the fuzzer
/// writes, served by one device. Guest RAM is 16 MiB, of which only the
/// first 8 MiB is shared (confidential layout), so fuzzed addresses reach
/// shared pages, private pages, the ROM and unmapped space alike.
pub struct FuzzGuest {
    memory: DeviceMemory,
    ram: Arc<GuestRam>,
    counters: DeviceCounters,
}

impl std::fmt::Debug for FuzzGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzGuest").finish_non_exhaustive()
    }
}

impl Default for FuzzGuest {
    fn default() -> Self {
        Self::new()
    }
}

impl FuzzGuest {
    /// A fresh guest.
    pub fn new() -> Self {
        let map = MemoryMap::new(16 << 20, 64 << 10).expect("memory map");
        let ram = Arc::new(
            GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).expect("RAM"),
        );
        let mut states = PageStates::new(&map.ram_ranges(), PageState::Private).expect("states");
        let _ = states.convert(0, 8 << 20, PageState::Shared);
        let filter = Arc::new(DmaFilter::default());
        for (gpa, len) in states.shared_ranges() {
            filter.map(gpa, len);
        }
        FuzzGuest {
            memory: DeviceMemory::shared(&ram, filter, Arc::new(Mutex::new(states))),
            ram,
            counters: DeviceCounters::default(),
        }
    }

    /// Lays `data` out as a guest would: the first 256 bytes are a
    /// 16-entry descriptor table, the next 36 an available ring, the rest
    /// buffer contents at 0x10_3000. Returns a ready queue over them.
    fn queue_from(&self, data: &[u8]) -> Queue {
        let mem = &self.ram.memory;
        let (table, rest) = data.split_at(data.len().min(256));
        let (avail, buffers) = rest.split_at(rest.len().min(36));
        let _ = mem.write_slice(table, GuestAddress(DESC));
        let _ = mem.write_slice(avail, GuestAddress(AVAIL));
        let _ = mem.write_slice(&buffers[..buffers.len().min(0x3000)], GuestAddress(HEADER));
        let mut queue = Queue::new(16).expect("queue");
        queue.set_size(16);
        queue.set_desc_table_address(Some(DESC as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        queue
    }

    /// Serves fuzzer-written rings with `device` on its queue `index`
    /// (every other queue empty).
    pub fn serve(&self, device: &mut FuzzDevice, index: usize, data: &[u8]) {
        let device = device.0.as_mut();
        let mut queues: Vec<Queue> = (0..device.queue_max_sizes().len())
            .map(|_| Queue::new(16).expect("queue"))
            .collect();
        if let Some(slot) = queues.get_mut(index) {
            *slot = self.queue_from(data);
        }
        let io = DeviceIo {
            memory: &self.memory,
            counters: &self.counters,
            name: "fuzz",
        };
        let _ = device.process(index, &mut queues, &io);
    }
}

/// A device model the fuzzer drives.
pub struct FuzzDevice(Box<dyn VirtioDevice>);

impl std::fmt::Debug for FuzzDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FuzzDevice").field(&self.0.kind()).finish()
    }
}

/// A virtio-blk device over a scratch image, for the fuzzer.
pub fn fuzz_block() -> FuzzDevice {
    let path = std::env::temp_dir().join(format!("umbra-fuzz-{}.img", std::process::id()));
    let _ = std::fs::write(&path, vec![0u8; 64 << 10]);
    FuzzDevice(Box::new(
        Block::open(&path, false, false).expect("scratch image"),
    ))
}

/// A virtio-vsock device (guest CID 3) on a scratch socket, for the fuzzer.
pub fn fuzz_vsock() -> FuzzDevice {
    let path = std::env::temp_dir().join(format!("umbra-fuzz-{}.sock", std::process::id()));
    FuzzDevice(Box::new(
        super::vsock::Vsock::new(3, &path).expect("scratch socket"),
    ))
}

/// The vsock transmit queue's index.
pub const VSOCK_TX: usize = 1;

/// Random MAP/UNMAP sequences on one attached domain, checked against a
/// reference model of the mappings (a plain list, scanned linearly): the
/// status of every request and, after each, the translation of probe
/// addresses must agree.
pub fn fuzz_iommu(data: &[u8]) {
    use crate::iommu::{Status, MAP_MMIO, MAP_READ, MAP_WRITE};
    use std::sync::Arc;
    let Ok(iommu) = crate::iommu::VirtualIommu::new([0]) else {
        return;
    };
    let iommu = Arc::new(iommu);
    let mut device = super::iommu::VirtioIommu::new(iommu.clone());
    device.activate(1 << 2 | 1 << 5);
    let request = |kind: u8, words: &[u64], widths: &[usize]| {
        let mut r = vec![kind, 0, 0, 0];
        for (w, n) in words.iter().zip(widths) {
            r.extend_from_slice(&w.to_le_bytes()[..*n]);
        }
        r
    };
    let attach = request(1, &[1, 0, 0, 0], &[4, 4, 4, 4]);
    assert_eq!(device.execute(&attach, 4).map(|r| r.0), Some(Status::Ok));
    // (start, end inclusive, phys, flags)
    let mut reference: Vec<(u64, u64, u64, u32)> = Vec::new();
    // Addresses from a small space, so that overlaps are common.
    let addr = |b: &[u8]| u64::from(u16::from_le_bytes([b[0], b[1]])) << 10;
    for op in data.chunks_exact(8) {
        let (start, end) = (
            addr(&op[1..3]),
            addr(&op[3..5]).wrapping_add(u64::from(op[5] & 3)) | 0x3FF,
        );
        let start = start & !0x3FF;
        if op[0] & 1 == 0 {
            let phys = addr(&op[5..7]);
            let flags = u32::from(op[7] & 0xF);
            let expected = if flags & !(MAP_READ | MAP_WRITE | MAP_MMIO) != 0 {
                Status::Inval
            } else if end <= start
                || start % 0x1000 != 0
                || phys % 0x1000 != 0
                || (end + 1) % 0x1000 != 0
            {
                Status::Range
            } else if reference.iter().any(|m| m.0 <= end && start <= m.1) {
                Status::Inval
            } else {
                Status::Ok
            };
            let r = request(
                3,
                &[1, start, end, phys, u64::from(flags)],
                &[4, 8, 8, 8, 4],
            );
            let got = device.execute(&r, 4).map(|r| r.0);
            assert_eq!(
                got,
                Some(expected),
                "MAP {start:#x}-{end:#x} -> {phys:#x} {flags:#x}"
            );
            if expected == Status::Ok {
                reference.push((start, end, phys, flags));
            }
        } else {
            let split = reference
                .iter()
                .any(|m| m.0 <= end && start <= m.1 && (m.0 < start || m.1 > end));
            let expected = if end < start || split {
                Status::Range
            } else {
                Status::Ok
            };
            let r = request(4, &[1, start, end, 0], &[4, 8, 8, 4]);
            assert_eq!(
                device.execute(&r, 4).map(|r| r.0),
                Some(expected),
                "UNMAP {start:#x}-{end:#x}"
            );
            if expected == Status::Ok {
                reference.retain(|m| !(m.0 >= start && m.1 <= end));
            }
        }
        // Probe the first page of every op's range.
        let state = iommu.read();
        let domain = state.domain(1).expect("the attached domain");
        for probe in [start, end & !0xFFF] {
            let model = reference.iter().find(|m| m.0 <= probe && probe <= m.1);
            let got =
                vm_memory::Iotlb::lookup(domain.iotlb(), GuestAddress(probe), 1, Permissions::No)
                    .ok()
                    .and_then(|mut it| it.next())
                    .map(|r| r.base.0);
            assert_eq!(
                got,
                model.map(|m| m.2 + (probe - m.0)),
                "translation of {probe:#x}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iommu_requests_agree_with_the_reference_model() {
        // A deterministic stand-in for the fuzzer: xorshift bytes, with
        // the address bytes folded into a few pages so that maps overlap.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut data = Vec::new();
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut op = x.to_le_bytes();
            for b in &mut op[1..7] {
                *b &= 0x1C;
            }
            data.extend_from_slice(&op);
        }
        super::fuzz_iommu(&data);
    }
}
