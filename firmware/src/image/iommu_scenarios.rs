//! A small virtio-iommu driver (virtio 1.2 §5.13: request queue 0, event
//! queue 1) and the IOMMU scenarios, each with the block device behind
//! the IOMMU (`--iommu --disk path=...,iommu=on`): the block device's area
//! is reached through IOVAs from [`IOVA_BASE`], and what the domain does
//! not map (or maps read-only) the device must not reach.

use crate::virtio::{locate, Buf, Device, VirtioError, AREA_BYTES, DESC_WRITE, ID_BLOCK, ID_IOMMU};
use crate::virtio_scenarios::{
    blk_request, blk_roundtrip, byte_at, report, set_byte, status_fail, F_FLUSH, S_IOERR, S_OK,
    T_IN, T_OUT,
};
use crate::{io, EXIT_FAILED};
use core::ptr;

/// Where the block device's area appears in its IOVA space.
const IOVA_BASE: u64 = 0x40_0000_0000;
/// The domain the scenarios attach the block device to.
const DOMAIN: u32 = 1;
const T_ATTACH: u8 = 1;
const T_MAP: u8 = 3;
const T_UNMAP: u8 = 4;
const MAP_READ: u32 = 1;
const MAP_WRITE: u32 = 2;
/// Driver features: INPUT_RANGE, MAP_UNMAP, PROBE, BYPASS_CONFIG.
const FEATURES: u32 = (1 << 0) | (1 << 2) | (1 << 4) | (1 << 6);
/// Event buffers kept posted.
const EVENTS: u64 = 4;
/// Fault reasons.
const FAULT_DOMAIN: u8 = 1;
const FAULT_MAPPING: u8 = 2;
const FAULT_F_WRITE: u32 = 1 << 1;
/// Offsets in the block device's area: queue page 0, buffers at 0x3000
/// (header and status), data at 0x4000.
const DATA_OFFSET: u64 = 0x4000;

fn put<T>(addr: u64, value: T) {
    // SAFETY: callers write inside the IOMMU device's buffer pages.
    unsafe { ptr::write_unaligned(addr as *mut T, value) }
}

fn get<T: Copy>(addr: u64) -> T {
    // SAFETY: callers read inside the IOMMU device's buffer pages.
    unsafe { ptr::read_unaligned(addr as *const T) }
}

/// A fault the IOMMU reported.
#[derive(Clone, Copy)]
struct FaultEvent {
    reason: u8,
    flags: u32,
    endpoint: u32,
    address: u64,
}

struct Iommu {
    dev: Device,
}

impl Iommu {
    fn open() -> Result<Iommu, VirtioError> {
        let mut dev = Device::open_queues(ID_IOMMU, FEATURES, 2)?;
        for i in 0..EVENTS {
            let addr = dev.buffers + 0x1000 + i * 64;
            dev.submit(
                1,
                &[Buf {
                    addr,
                    len: 24,
                    flags: DESC_WRITE,
                }],
            )?;
        }
        Ok(Iommu { dev })
    }

    /// Sends one request (`len` bytes already at the request buffer) and
    /// returns its status.
    fn send(&mut self, len: u32) -> Result<u8, VirtioError> {
        let request = self.dev.buffers;
        let tail = request + 0x100;
        put(tail, 0xFFu8);
        self.dev.submit(
            0,
            &[
                Buf {
                    addr: request,
                    len,
                    flags: 0,
                },
                Buf {
                    addr: tail,
                    len: 4,
                    flags: DESC_WRITE,
                },
            ],
        )?;
        self.dev.wait_used(0)?;
        Ok(get(tail))
    }

    fn head(&self, kind: u8) -> u64 {
        let r = self.dev.buffers;
        for i in 0..0x100 {
            put(r + i, 0u8);
        }
        put(r, kind);
        r
    }

    fn attach(&mut self, endpoint: u32) -> Result<u8, VirtioError> {
        let r = self.head(T_ATTACH);
        put(r + 4, DOMAIN);
        put(r + 8, endpoint);
        self.send(20)
    }

    fn map(&mut self, iova: u64, len: u64, phys: u64, flags: u32) -> Result<u8, VirtioError> {
        let r = self.head(T_MAP);
        put(r + 4, DOMAIN);
        put(r + 8, iova);
        put(r + 16, iova + len - 1);
        put(r + 24, phys);
        put(r + 32, flags);
        self.send(36)
    }

    fn unmap(&mut self, iova: u64, len: u64) -> Result<u8, VirtioError> {
        let r = self.head(T_UNMAP);
        put(r + 4, DOMAIN);
        put(r + 8, iova);
        put(r + 16, iova + len - 1);
        self.send(28)
    }

    /// The next fault event.
    fn fault(&mut self) -> Result<FaultEvent, VirtioError> {
        let (head, _) = self.dev.wait_used(1)?;
        let addr = self.dev.buffers + 0x1000 + u64::from(head) % EVENTS * 64;
        let event = FaultEvent {
            reason: get(addr),
            flags: get(addr + 4),
            endpoint: get(addr + 8),
            address: get(addr + 16),
        };
        self.dev.submit(
            1,
            &[Buf {
                addr,
                len: 24,
                flags: DESC_WRITE,
            }],
        )?;
        Ok(event)
    }
}

fn fail(name: &str, what: &str) -> u32 {
    io::print(name);
    io::print(": ");
    io::print(what);
    io::print(": fail\n");
    EXIT_FAILED
}

/// The IOMMU, the block device's endpoint and area, attached to
/// [`DOMAIN`] with `[0, mapped)` of its area mapped `flags` (and
/// `[mapped, mapped + extra)` read-only when `extra` is non-zero).
struct Setup {
    iommu: Iommu,
    endpoint: u32,
    area: u64,
}

fn setup(name: &str, attach: bool, mapped: u64, read_only: u64) -> Result<Setup, u32> {
    let mut iommu = Iommu::open().map_err(|e| report(name, e))?;
    let (endpoint, area) = locate(ID_BLOCK).map_err(|e| report(name, e))?;
    if attach {
        let status = iommu.attach(endpoint).map_err(|e| report(name, e))?;
        if status != 0 {
            return Err(status_fail("iommu: ATTACH", status));
        }
        let status = iommu
            .map(IOVA_BASE, mapped, area, MAP_READ | MAP_WRITE)
            .map_err(|e| report(name, e))?;
        if status != 0 {
            return Err(status_fail("iommu: MAP", status));
        }
        if read_only > 0 {
            let status = iommu
                .map(IOVA_BASE + mapped, read_only, area + mapped, MAP_READ)
                .map_err(|e| report(name, e))?;
            if status != 0 {
                return Err(status_fail("iommu: MAP read-only", status));
            }
        }
    }
    Ok(Setup {
        iommu,
        endpoint,
        area,
    })
}

fn open_blk(name: &str, s: &Setup) -> Result<Device, u32> {
    Device::open_behind(ID_BLOCK, F_FLUSH, 1, IOVA_BASE.wrapping_sub(s.area))
        .map_err(|e| report(name, e))
}

fn expect_fault(name: &str, s: &mut Setup, reason: u8, address: u64, write: bool) -> u32 {
    let event = match s.iommu.fault() {
        Ok(event) => event,
        Err(e) => return report(name, e),
    };
    if event.reason != reason || event.endpoint != s.endpoint || event.address != address {
        io::print(name);
        io::print(": fault reason ");
        io::print_dec(u64::from(event.reason));
        io::print(" endpoint ");
        io::print_dec(u64::from(event.endpoint));
        io::print(" address ");
        io::print_hex(event.address);
        return fail(name, "not the fault expected");
    }
    if write != (event.flags & FAULT_F_WRITE != 0) {
        return fail(name, "fault with the wrong access flags");
    }
    io::print(name);
    io::print(": fault event for IOVA ");
    io::print_hex(event.address);
    io::print(" from endpoint ");
    io::print_dec(u64::from(event.endpoint));
    io::print(": ok\n");
    0
}

/// Block I/O through IOVAs.
pub fn iommu_blk() -> u32 {
    let name = "iommu-blk";
    let s = match setup(name, true, AREA_BYTES, 0) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut dev = match open_blk(name, &s) {
        Ok(dev) => dev,
        Err(code) => return code,
    };
    let capacity = match (dev.config32(0), dev.config32(4)) {
        (Ok(lo), Ok(hi)) => u64::from(lo) | (u64::from(hi) << 32),
        (Err(e), _) | (_, Err(e)) => return report(name, e),
    };
    blk_roundtrip(&mut dev, name, capacity)
}

/// A data buffer at an IOVA the domain does not map.
pub fn iommu_unmapped() -> u32 {
    let name = "iommu-unmapped";
    let mut s = match setup(name, true, DATA_OFFSET, 0) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut dev = match open_blk(name, &s) {
        Ok(dev) => dev,
        Err(code) => return code,
    };
    let data = s.area + DATA_OFFSET;
    match blk_request(&mut dev, T_IN, 0, data, 512) {
        Ok(S_IOERR) => {}
        Ok(status) => {
            return status_fail(
                "iommu-unmapped: the request through an unmapped IOVA",
                status,
            )
        }
        Err(e) => return report(name, e),
    }
    expect_fault(name, &mut s, FAULT_MAPPING, IOVA_BASE + DATA_OFFSET, true)
}

/// A device write through a read-only mapping.
pub fn iommu_ro() -> u32 {
    let name = "iommu-ro";
    let mut s = match setup(name, true, DATA_OFFSET, 0x1000) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut dev = match open_blk(name, &s) {
        Ok(dev) => dev,
        Err(code) => return code,
    };
    let data = s.area + DATA_OFFSET;
    // Reading the page (a disk write from it) is allowed...
    match blk_request(&mut dev, T_OUT, 0, data, 512) {
        Ok(S_OK) => {}
        Ok(status) => {
            return status_fail(
                "iommu-ro: a device read through a read-only mapping",
                status,
            )
        }
        Err(e) => return report(name, e),
    }
    // ...writing it (a disk read into it) is not.
    match blk_request(&mut dev, T_IN, 0, data, 512) {
        Ok(S_IOERR) => {}
        Ok(status) => {
            return status_fail(
                "iommu-ro: a device write through a read-only mapping",
                status,
            )
        }
        Err(e) => return report(name, e),
    }
    expect_fault(name, &mut s, FAULT_MAPPING, IOVA_BASE + DATA_OFFSET, true)
}

/// UNMAP while a request is in flight: once UNMAP has returned, the device
/// writes nothing more to the page.
pub fn iommu_unmap_race() -> u32 {
    let name = "iommu-unmap-race";
    let mut s = match setup(name, true, DATA_OFFSET, 0) {
        Ok(s) => s,
        Err(code) => return code,
    };
    // The data page in its own mapping, so that it can be unmapped alone.
    match s.iommu.map(
        IOVA_BASE + DATA_OFFSET,
        0x1000,
        s.area + DATA_OFFSET,
        MAP_READ | MAP_WRITE,
    ) {
        Ok(0) => {}
        Ok(status) => return status_fail("iommu-unmap-race: MAP of the data page", status),
        Err(e) => return report(name, e),
    }
    let mut dev = match open_blk(name, &s) {
        Ok(dev) => dev,
        Err(code) => return code,
    };
    let data = s.area + DATA_OFFSET;
    // A 4 KiB read into the data page, not waited for.
    let header = dev.buffers;
    let status = header + 16;
    put(header, T_IN);
    put(header + 4, 0u32);
    put(header + 8, 0u64);
    set_byte(status, 0xFF);
    if let Err(e) = dev.submit(
        0,
        &[
            Buf {
                addr: header,
                len: 16,
                flags: 0,
            },
            Buf {
                addr: data,
                len: 4096,
                flags: DESC_WRITE,
            },
            Buf {
                addr: status,
                len: 1,
                flags: DESC_WRITE,
            },
        ],
    ) {
        return report(name, e);
    }
    match s.iommu.unmap(IOVA_BASE + DATA_OFFSET, 0x1000) {
        Ok(0) => {}
        Ok(status) => return status_fail("iommu-unmap-race: UNMAP", status),
        Err(e) => return report(name, e),
    }
    // UNMAP returned: from now on the page is the guest's alone.
    for i in 0..4096 {
        set_byte(data + i, 0xC3);
    }
    if let Err(e) = dev.wait_used(0) {
        return report(name, e);
    }
    let first = byte_at(status);
    // A request after the UNMAP must fail.
    let second = match blk_request(&mut dev, T_IN, 0, data, 512) {
        Ok(status) => status,
        Err(e) => return report(name, e),
    };
    if (0..4096).any(|i| byte_at(data + i) != 0xC3) {
        return fail(name, "the device wrote to the page after UNMAP returned");
    }
    if second != S_IOERR || (first != S_OK && first != S_IOERR) {
        return fail(name, "a request after UNMAP was not refused");
    }
    io::print("iommu-unmap-race: the in-flight request ");
    io::print(if first == S_OK {
        "finished before"
    } else {
        "was refused by"
    });
    io::print(" the UNMAP, nothing reached the page after it, the next request failed: ok\n");
    0
}

/// An endpoint that is not attached reaches nothing: not even its rings.
pub fn iommu_detached() -> u32 {
    let name = "iommu-detached";
    let mut s = match setup(name, false, 0, 0) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match Device::open_behind(ID_BLOCK, 0, 1, IOVA_BASE.wrapping_sub(s.area)) {
        Err(VirtioError::NeedsReset) => {}
        Err(e) => return report(name, e),
        Ok(_) => return fail(name, "the device reached its rings without a domain"),
    }
    io::print("iommu-detached: the device could not reach its rings (DEVICE_NEEDS_RESET)\n");
    expect_fault(name, &mut s, FAULT_DOMAIN, IOVA_BASE, false)
}
