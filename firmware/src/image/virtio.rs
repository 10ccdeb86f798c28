//! A small virtio-mmio driver (virtio 1.2 §4.2, version 2) with one split
//! virtqueue per device, polled (no interrupts): enough to run the device
//! scenarios against umbra's devices and QEMU's.
//!
//! Devices are found by probing for the virtio-mmio magic: umbra's slots
//! first, then QEMU microvm's. Under SEV-SNP the registers are reached
//! through GHCB MMIO events (`mmio`), the queue and its buffers live in
//! pages the firmware shares first (a device reaches nothing else), and
//! the driver accepts VIRTIO_F_ACCESS_PLATFORM, without which umbra
//! refuses FEATURES_OK.

use crate::mem::bss;
use crate::mmio::{self, MmioError};
use crate::{ghcb, platform};
use core::ptr;
use core::sync::atomic::{fence, AtomicBool, Ordering};
use umbra_firmware::layout::{
    QEMU_MICROVM_VIRTIO_BASE, QEMU_MICROVM_VIRTIO_COUNT, QEMU_MICROVM_VIRTIO_STEP, VIRTIO_AREA_GPA,
    VIRTIO_AREA_SIZE, VIRTIO_MMIO_BASE, VIRTIO_MMIO_MAX, VIRTIO_MMIO_SLOT,
};

const MAGIC: u32 = 0x7472_6976;
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC: u64 = 0x080;
const REG_QUEUE_DRIVER: u64 = 0x090;
const REG_QUEUE_DEVICE: u64 = 0x0a0;
const REG_CONFIG: u64 = 0x100;

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;

/// VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM, in the high word.
const F_HI_VERSION_1: u32 = 1 << 0;
const F_HI_ACCESS_PLATFORM: u32 = 1 << 1;

/// Descriptor flags (§2.7.5).
pub const DESC_WRITE: u16 = 2;
const DESC_NEXT: u16 = 1;

/// Entries per queue.
const QUEUE_SIZE: u16 = 8;
/// Bytes of queue memory per queue: descriptors, then the available ring,
/// then (4-byte aligned) the used ring; one page.
const QUEUE_BYTES: u64 = 0x1000;
/// Most queues the driver sets up per device (vsock has three).
pub const MAX_QUEUES: usize = 3;
/// Each device's share of the virtio area: its queue pages, then buffers.
const DEVICE_BYTES: u64 = 0x8000;
/// Spins waiting for the device before giving up.
const POLL_LIMIT: u64 = 20_000_000;

/// Device IDs (§5).
pub const ID_BLOCK: u32 = 2;
pub const ID_ENTROPY: u32 = 4;
pub const ID_VSOCK: u32 = 19;
pub const ID_IOMMU: u32 = 23;
pub const ID_BALLOON: u32 = 5;

/// Why a device could not be used.
#[derive(Clone, Copy, Debug)]
pub enum VirtioError {
    /// No transport with this device ID answered.
    NotFound,
    /// A register access failed (GHCB MMIO refused).
    Mmio(MmioError),
    /// The device lacks VERSION_1 or refused our features.
    Features(u32),
    /// Queue 0 is missing or too small.
    Queue(u32),
    /// The device set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// The device did not answer in time.
    Timeout,
    /// Sharing the queue memory failed (SNP page-state change).
    Share(u64),
}

impl From<MmioError> for VirtioError {
    fn from(e: MmioError) -> Self {
        VirtioError::Mmio(e)
    }
}

/// One buffer of a request.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
}

/// A virtio device with queue 0 set up.
pub struct Device {
    base: u64,
    /// Device-specific features the driver accepted (low word).
    pub features: u32,
    queues: [u64; MAX_QUEUES],
    /// Start of this device's buffer pages (five of them).
    pub buffers: u64,
    avail_idx: [u16; MAX_QUEUES],
    used_seen: [u16; MAX_QUEUES],
    /// Next free descriptor of each queue (descriptors are reused round
    /// robin; a queue never has more than `QUEUE_SIZE` chains posted).
    next_desc: [u16; MAX_QUEUES],
    /// Added to every address given to the device (IOMMU), 0 without one.
    iova_offset: u64,
}

/// Whether the virtio area has been shared (SNP).
static SHARED: AtomicBool = AtomicBool::new(false);

/// Shares the virtio area with the host (SNP), once.
fn share_area() -> Result<(), VirtioError> {
    let shared = bss!(SHARED, AtomicBool);
    if !platform::current().is_snp() || shared.load(Ordering::Acquire) {
        return Ok(());
    }
    let mut gpa = VIRTIO_AREA_GPA;
    while gpa < VIRTIO_AREA_GPA + VIRTIO_AREA_SIZE {
        ghcb::psc(gpa, false).map_err(VirtioError::Share)?;
        gpa += 0x1000;
    }
    shared.store(true, Ordering::Release);
    Ok(())
}

/// The area (GPA) of the device in transport slot `slot`.
fn area_of(slot: usize) -> u64 {
    VIRTIO_AREA_GPA + (slot as u64 % 8) * DEVICE_BYTES
}

/// Bytes of one device's area.
pub const AREA_BYTES: u64 = DEVICE_BYTES;

/// The first transport with device `id`: its slot (the endpoint ID under
/// umbra's IOMMU) and its area.
pub fn locate(id: u32) -> Result<(u32, u64), VirtioError> {
    let (_, slot) = find(id, 0)?;
    Ok((slot as u32, area_of(slot)))
}

/// Transport bases to probe, umbra's then QEMU microvm's.
fn candidates() -> impl Iterator<Item = u64> {
    (0..VIRTIO_MMIO_MAX as u64)
        .map(|i| VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SLOT)
        .chain(
            (0..QEMU_MICROVM_VIRTIO_COUNT as u64)
                .map(|i| QEMU_MICROVM_VIRTIO_BASE + i * QEMU_MICROVM_VIRTIO_STEP),
        )
}

/// The `nth` transport (from 0) whose device ID is `id`.
fn find(id: u32, nth: usize) -> Result<(u64, usize), VirtioError> {
    let mut seen = 0;
    for (slot, base) in candidates().enumerate() {
        let magic = mmio::read32(base + REG_MAGIC)?;
        if magic != MAGIC || mmio::read32(base + REG_VERSION)? != 2 {
            continue;
        }
        if mmio::read32(base + REG_DEVICE_ID)? == id {
            if seen == nth {
                return Ok((base, slot));
            }
            seen += 1;
        }
    }
    Err(VirtioError::NotFound)
}

fn write16(addr: u64, value: u16) {
    // SAFETY: `addr` is inside the firmware's virtio area (identity-mapped
    // RAM reserved for queues, shared under SNP); no Rust object lives there.
    unsafe { ptr::write_volatile(addr as *mut u16, value) }
}

fn read16(addr: u64) -> u16 {
    // SAFETY: as in `write16`.
    unsafe { ptr::read_volatile(addr as *const u16) }
}

fn read32(addr: u64) -> u32 {
    // SAFETY: as in `write16`.
    unsafe { ptr::read_volatile(addr as *const u32) }
}

impl Device {
    /// Finds the first device with `id`, negotiates `wanted` device
    /// features (low word) and sets queue 0 up.
    pub fn open(id: u32, wanted: u32) -> Result<Device, VirtioError> {
        Self::open_queues(id, wanted, 1)
    }

    /// As [`Device::open`], with `count` queues.
    pub fn open_queues(id: u32, wanted: u32, count: usize) -> Result<Device, VirtioError> {
        Self::open_behind(id, wanted, count, 0)
    }

    /// As [`Device::open_queues`], for a device behind an IOMMU that maps
    /// the device's area at `area + iova_offset`: every address the device
    /// is given (rings, buffers) is offset so.
    pub fn open_behind(
        id: u32,
        wanted: u32,
        count: usize,
        iova_offset: u64,
    ) -> Result<Device, VirtioError> {
        share_area()?;
        let (base, slot) = find(id, 0)?;
        let area = area_of(slot);
        let reg = |offset: u64| base + offset;
        mmio::write32(reg(REG_STATUS), 0)?;
        mmio::write32(reg(REG_STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER)?;
        mmio::write32(reg(REG_DEVICE_FEATURES_SEL), 1)?;
        let high = mmio::read32(reg(REG_DEVICE_FEATURES))?;
        mmio::write32(reg(REG_DEVICE_FEATURES_SEL), 0)?;
        let low = mmio::read32(reg(REG_DEVICE_FEATURES))?;
        if high & F_HI_VERSION_1 == 0 {
            return Err(VirtioError::Features(high));
        }
        let accepted_high = F_HI_VERSION_1 | (high & F_HI_ACCESS_PLATFORM);
        let accepted_low = low & wanted;
        mmio::write32(reg(REG_DRIVER_FEATURES_SEL), 1)?;
        mmio::write32(reg(REG_DRIVER_FEATURES), accepted_high)?;
        mmio::write32(reg(REG_DRIVER_FEATURES_SEL), 0)?;
        mmio::write32(reg(REG_DRIVER_FEATURES), accepted_low)?;
        mmio::write32(
            reg(REG_STATUS),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        )?;
        if mmio::read32(reg(REG_STATUS))? & STATUS_FEATURES_OK == 0 {
            return Err(VirtioError::Features(accepted_high));
        }
        let count = count.min(MAX_QUEUES);
        let mut queues = [0u64; MAX_QUEUES];
        for (index, queue) in queues.iter_mut().enumerate().take(count) {
            *queue = area + index as u64 * QUEUE_BYTES;
            mmio::write32(reg(REG_QUEUE_SEL), index as u32)?;
            let max = mmio::read32(reg(REG_QUEUE_NUM_MAX))?;
            if max < u32::from(QUEUE_SIZE) {
                return Err(VirtioError::Queue(max));
            }
            // SAFETY: the queue page is the firmware's, in the virtio area.
            unsafe { ptr::write_bytes(*queue as *mut u8, 0, QUEUE_BYTES as usize) };
            let (desc, avail, used) = (*queue, *queue + 0x200, *queue + 0x400);
            mmio::write32(reg(REG_QUEUE_NUM), u32::from(QUEUE_SIZE))?;
            let (desc, avail, used) = (
                desc.wrapping_add(iova_offset),
                avail.wrapping_add(iova_offset),
                used.wrapping_add(iova_offset),
            );
            for (register, addr) in [
                (REG_QUEUE_DESC, desc),
                (REG_QUEUE_DRIVER, avail),
                (REG_QUEUE_DEVICE, used),
            ] {
                mmio::write32(reg(register), addr as u32)?;
                mmio::write32(reg(register + 4), (addr >> 32) as u32)?;
            }
            mmio::write32(reg(REG_QUEUE_READY), 1)?;
        }
        mmio::write32(
            reg(REG_STATUS),
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        )?;
        if mmio::read32(reg(REG_STATUS))? & STATUS_NEEDS_RESET != 0 {
            return Err(VirtioError::NeedsReset);
        }
        Ok(Device {
            base,
            features: accepted_low,
            queues,
            buffers: area + MAX_QUEUES as u64 * QUEUE_BYTES,
            avail_idx: [0; MAX_QUEUES],
            used_seen: [0; MAX_QUEUES],
            next_desc: [0; MAX_QUEUES],
            iova_offset,
        })
    }

    /// Writes 32 bits of the device configuration at `offset`.
    pub fn config_write32(&self, offset: u64, value: u32) -> Result<(), VirtioError> {
        Ok(mmio::write32(self.base + REG_CONFIG + offset, value)?)
    }

    /// Reads 32 bits of the device configuration at `offset`.
    pub fn config32(&self, offset: u64) -> Result<u32, VirtioError> {
        Ok(mmio::read32(self.base + REG_CONFIG + offset)?)
    }

    /// Submits one chain on queue 0 and waits for the device to use it;
    /// returns the length the device wrote.
    pub fn request(&mut self, bufs: &[Buf]) -> Result<u32, VirtioError> {
        self.submit(0, bufs)?;
        self.wait_used(0).map(|(_, len)| len)
    }

    /// Posts one chain on queue `q` and notifies the device; returns the
    /// chain's head descriptor.
    pub fn submit(&mut self, q: usize, bufs: &[Buf]) -> Result<u16, VirtioError> {
        let queue = self.queues[q % MAX_QUEUES];
        let (desc, avail) = (queue, queue + 0x200);
        let count = bufs.len().min(usize::from(QUEUE_SIZE));
        let head = self.next_desc[q % MAX_QUEUES];
        for (i, buf) in bufs.iter().take(count).enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let entry = desc + 16 * u64::from(index);
            let last = i + 1 == count;
            // SAFETY: a descriptor of this device's table (virtio area).
            unsafe {
                ptr::write_volatile(entry as *mut u64, buf.addr.wrapping_add(self.iova_offset));
                ptr::write_volatile((entry + 8) as *mut u32, buf.len);
            }
            write16(entry + 12, buf.flags | if last { 0 } else { DESC_NEXT });
            write16(entry + 14, (index + 1) % QUEUE_SIZE);
        }
        self.next_desc[q % MAX_QUEUES] = (head + count as u16) % QUEUE_SIZE;
        let idx = &mut self.avail_idx[q % MAX_QUEUES];
        write16(avail + 4 + 2 * u64::from(*idx % QUEUE_SIZE), head);
        fence(Ordering::SeqCst);
        *idx = idx.wrapping_add(1);
        write16(avail + 2, *idx);
        fence(Ordering::SeqCst);
        mmio::write32(self.base + REG_QUEUE_NOTIFY, q as u32)?;
        Ok(head)
    }

    /// Waits until the device used a chain of queue `q`: its head and the
    /// length it wrote.
    pub fn wait_used(&mut self, q: usize) -> Result<(u16, u32), VirtioError> {
        self.wait_used_for(q, POLL_LIMIT)
    }

    /// As [`Device::wait_used`], giving up after `limit` spins.
    pub fn wait_used_for(&mut self, q: usize, limit: u64) -> Result<(u16, u32), VirtioError> {
        let used = self.queues[q % MAX_QUEUES] + 0x400;
        let seen = &mut self.used_seen[q % MAX_QUEUES];
        let mut spins = 0u64;
        while read16(used + 2) == *seen {
            spins += 1;
            if spins > limit {
                return Err(VirtioError::Timeout);
            }
            core::hint::spin_loop();
        }
        fence(Ordering::SeqCst);
        let element = used + 4 + 8 * u64::from(*seen % QUEUE_SIZE);
        *seen = seen.wrapping_add(1);
        let head = read32(element) as u16;
        let written = read32(element + 4);
        // Acknowledge the interrupt the device raised (the firmware polls).
        let status = mmio::read32(self.base + REG_INTERRUPT_STATUS)?;
        mmio::write32(self.base + REG_INTERRUPT_ACK, status)?;
        Ok((head, written))
    }
}
