//! The virtio scenarios: block I/O and entropy through the driver, and the
//! hostile ones that point a device at memory it must not reach (each must
//! be refused with the device's architected error, the VMM alive, and the
//! device still working afterwards).

use crate::virtio::{Buf, Device, VirtioError, DESC_WRITE, ID_BLOCK, ID_ENTROPY};
use crate::{io, platform, EXIT_BAD_CMDLINE, EXIT_FAILED};
use core::ptr;
use umbra_firmware::boot_info::BootInfo;
use umbra_firmware::cmdline::Cmdline;
use umbra_firmware::layout::{
    blk_test_byte, BLK_TEST_FIRST_SECTOR, BLK_TEST_SECTORS, DMA_PRIVATE_GPA, ROM_BASE,
};

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
/// VIRTIO_BLK_F_FLUSH.
pub const F_FLUSH: u32 = 1 << 9;
/// A hole nobody maps: between umbra's MMIO window and the IOAPIC.
const UNMAPPED_GPA: u64 = 0xE800_0000;

pub fn report(name: &str, e: VirtioError) -> u32 {
    io::print(name);
    io::print(": ");
    match e {
        VirtioError::NotFound => io::print("no such virtio device"),
        VirtioError::Mmio(m) => {
            io::print("GHCB MMIO refused at ");
            io::print_hex(m.gpa);
        }
        VirtioError::Features(f) => {
            io::print("features refused ");
            io::print_hex(u64::from(f));
        }
        VirtioError::Queue(n) => {
            io::print("queue too small ");
            io::print_dec(u64::from(n));
        }
        VirtioError::NeedsReset => io::print("device needs reset"),
        VirtioError::Timeout => io::print("device did not answer"),
        VirtioError::Share(v) => {
            io::print("sharing the queue pages refused ");
            io::print_hex(v);
        }
    }
    io::print(": fail\n");
    EXIT_FAILED
}

pub fn byte_at(addr: u64) -> u8 {
    // SAFETY: callers pass addresses inside the firmware's virtio buffers.
    unsafe { ptr::read_volatile(addr as *const u8) }
}

pub fn set_byte(addr: u64, value: u8) {
    // SAFETY: as in `byte_at`.
    unsafe { ptr::write_volatile(addr as *mut u8, value) }
}

/// One block request: header at `buffers`, status byte after it, data at
/// `data` (`len` bytes, device-writable for reads). Returns the status.
pub fn blk_request(
    dev: &mut Device,
    kind: u32,
    sector: u64,
    data: u64,
    len: u32,
) -> Result<u8, VirtioError> {
    let header = dev.buffers;
    let status = header + 16;
    // SAFETY: the header is the first 16 bytes of this device's buffers.
    unsafe {
        ptr::write_volatile(header as *mut u32, kind);
        ptr::write_volatile((header + 4) as *mut u32, 0);
        ptr::write_volatile((header + 8) as *mut u64, sector);
    }
    set_byte(status, 0xFF);
    let data_flags = if kind == T_IN { DESC_WRITE } else { 0 };
    let head = Buf {
        addr: header,
        len: 16,
        flags: 0,
    };
    let tail = Buf {
        addr: status,
        len: 1,
        flags: DESC_WRITE,
    };
    if len == 0 {
        dev.request(&[head, tail])?;
    } else {
        dev.request(&[
            head,
            Buf {
                addr: data,
                len,
                flags: data_flags,
            },
            tail,
        ])?;
    }
    Ok(byte_at(status))
}

fn parse_hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// Writes sectors, reads them back, flushes; checks `disk_check=HEX`.
pub fn virtio_blk(cmdline: &Cmdline) -> u32 {
    let mut dev = match Device::open(ID_BLOCK, F_FLUSH) {
        Ok(dev) => dev,
        Err(e) => return report("virtio-blk", e),
    };
    let capacity = match (dev.config32(0), dev.config32(4)) {
        (Ok(lo), Ok(hi)) => u64::from(lo) | (u64::from(hi) << 32),
        (Err(e), _) | (_, Err(e)) => return report("virtio-blk", e),
    };
    if capacity < BLK_TEST_FIRST_SECTOR + BLK_TEST_SECTORS {
        io::print("virtio-blk: disk too small: fail\n");
        return EXIT_FAILED;
    }
    let data = dev.buffers + 0x1000;
    if let Some(hex) = cmdline.get("disk_check") {
        match blk_request(&mut dev, T_IN, 0, data, 512) {
            Ok(S_OK) => {}
            Ok(s) => return status_fail("virtio-blk: read of sector 0", s),
            Err(e) => return report("virtio-blk", e),
        }
        let bytes = hex.as_bytes();
        if bytes.len() % 2 != 0 || bytes.len() > 1024 {
            io::print("virtio-blk: disk_check must be whole bytes of hex, at most 512\n");
            return EXIT_BAD_CMDLINE;
        }
        for (i, pair) in bytes.chunks(2).enumerate() {
            if parse_hex_byte(pair) != Some(byte_at(data + i as u64)) {
                io::print("virtio-blk: sector 0 does not hold disk_check at byte ");
                io::print_dec(i as u64);
                io::print(": fail\n");
                return EXIT_FAILED;
            }
        }
        io::print("virtio-blk: sector 0 holds what the host wrote\n");
    }
    blk_roundtrip(&mut dev, "virtio-blk", capacity)
}

/// Writes the test sectors, reads them back and flushes (when offered):
/// the `virtio-blk` and `iommu-blk` scenarios' check.
pub fn blk_roundtrip(dev: &mut Device, name: &str, capacity: u64) -> u32 {
    let len = (BLK_TEST_SECTORS * 512) as u32;
    let data = dev.buffers + 0x1000;
    for i in 0..len as usize {
        let sector = BLK_TEST_FIRST_SECTOR + (i / 512) as u64;
        set_byte(data + i as u64, blk_test_byte(sector, i % 512));
    }
    match blk_request(dev, T_OUT, BLK_TEST_FIRST_SECTOR, data, len) {
        Ok(S_OK) => {}
        Ok(s) => return status_fail("blk: write", s),
        Err(e) => return report(name, e),
    }
    for i in 0..len as usize {
        set_byte(data + i as u64, 0);
    }
    match blk_request(dev, T_IN, BLK_TEST_FIRST_SECTOR, data, len) {
        Ok(S_OK) => {}
        Ok(s) => return status_fail("blk: read", s),
        Err(e) => return report(name, e),
    }
    for i in 0..len as usize {
        let sector = BLK_TEST_FIRST_SECTOR + (i / 512) as u64;
        if byte_at(data + i as u64) != blk_test_byte(sector, i % 512) {
            io::print(name);
            io::print(": read back differs at byte ");
            io::print_dec(i as u64);
            io::print(": fail\n");
            return EXIT_FAILED;
        }
    }
    if dev.features & F_FLUSH != 0 {
        match blk_request(dev, T_FLUSH, 0, 0, 0) {
            Ok(S_OK) => {}
            Ok(s) => return status_fail("blk: flush", s),
            Err(e) => return report(name, e),
        }
    }
    io::print(name);
    io::print(": ");
    io::print_dec(capacity);
    io::print(" sectors; wrote ");
    io::print_dec(BLK_TEST_SECTORS);
    io::print(" sectors, read them back");
    if dev.features & F_FLUSH != 0 {
        io::print(", flushed");
    }
    io::print(": ok\n");
    0
}

pub fn status_fail(what: &str, status: u8) -> u32 {
    io::print(what);
    io::print(" completed with status ");
    io::print_dec(u64::from(status));
    io::print(": fail\n");
    EXIT_FAILED
}

/// Two entropy requests: both filled, and not with the same bytes.
pub fn virtio_rng() -> u32 {
    let mut dev = match Device::open(ID_ENTROPY, 0) {
        Ok(dev) => dev,
        Err(e) => return report("virtio-rng", e),
    };
    let (a, b) = (dev.buffers, dev.buffers + 0x100);
    for addr in [a, b] {
        for i in 0..64 {
            set_byte(addr + i, 0);
        }
        match dev.request(&[Buf {
            addr,
            len: 64,
            flags: DESC_WRITE,
        }]) {
            Ok(64) => {}
            Ok(n) => {
                io::print("virtio-rng: device gave ");
                io::print_dec(u64::from(n));
                io::print(" of 64 bytes: fail\n");
                return EXIT_FAILED;
            }
            Err(e) => return report("virtio-rng", e),
        }
    }
    let same = (0..64).all(|i| byte_at(a + i) == byte_at(b + i));
    let zero = (0..64).all(|i| byte_at(a + i) == 0);
    io::print("virtio-rng: two 64-byte requests filled");
    if same || zero {
        io::print(", but with the same bytes: fail\n");
        return EXIT_FAILED;
    }
    io::print(" with different bytes: ok\n");
    0
}

/// Where the balloon scenario touches memory: from 64 MiB.
const BALLOON_TOUCH_GPA: u64 = 64 << 20;
/// How much it touches.
const BALLOON_TOUCH: u64 = 256 << 20;

/// Touches 256 MiB, then inflates the balloon to its target (plain), or
/// offers a shared and a private page range (SNP: the host must reclaim
/// only the shared ones), and reports `actual`.
pub fn balloon(info: &BootInfo, cmdline: &Cmdline) -> u32 {
    use crate::virtio::ID_BALLOON;
    use umbra_firmware::layout::{VIRTIO_AREA_GPA, VIRTIO_AREA_SIZE};
    let mut dev = match Device::open_queues(ID_BALLOON, 0, 2) {
        Ok(dev) => dev,
        Err(e) => return report("balloon", e),
    };
    let target = match dev.config32(0) {
        Ok(t) => u64::from(t),
        Err(e) => return report("balloon", e),
    };
    let snp = platform::current().is_snp();
    // Under another VMM (no boot-information page) `ram=SIZE` says how much.
    let ram = if info.is_valid() {
        info.ram_size
    } else {
        cmdline.number("ram").unwrap_or(0)
    };
    let mut pfns_total = 0u64;
    if snp {
        // Eight shared pages (the last device area of the shared virtio
        // area) and one private page.
        let shared = VIRTIO_AREA_GPA + VIRTIO_AREA_SIZE - 0x8000;
        let list = dev.buffers;
        for i in 0..8u64 {
            // SAFETY: the PFN list is this device's buffer page.
            unsafe { ptr::write_volatile((list + 4 * i) as *mut u32, ((shared >> 12) + i) as u32) };
        }
        // SAFETY: as above.
        unsafe { ptr::write_volatile((list + 32) as *mut u32, (DMA_PRIVATE_GPA >> 12) as u32) };
        if let Err(e) = dev.request(&[Buf {
            addr: list,
            len: 36,
            flags: 0,
        }]) {
            return report("balloon", e);
        }
        pfns_total = 9;
    } else {
        if ram < BALLOON_TOUCH_GPA + BALLOON_TOUCH {
            io::print("balloon: needs --memory 320M or more\n");
            return EXIT_BAD_CMDLINE;
        }
        let mut page = BALLOON_TOUCH_GPA;
        while page < BALLOON_TOUCH_GPA + BALLOON_TOUCH {
            // SAFETY: identity-mapped guest RAM above the firmware's own
            // areas (checked against the RAM size above); no Rust object
            // lives there.
            unsafe { ptr::write_volatile(page as *mut u64, page) };
            page += 4096;
        }
        // `pages=N` inflates N pages whatever the target (QEMU's balloon
        // starts with none; the benchmark compares inflation rates).
        let pages = cmdline
            .number("pages")
            .unwrap_or(target)
            .min(BALLOON_TOUCH >> 12);
        let list = dev.buffers;
        let mut next = BALLOON_TOUCH_GPA >> 12;
        while pfns_total < pages {
            let n = (pages - pfns_total).min(1024);
            for i in 0..n {
                // SAFETY: the PFN list is this device's buffer page.
                unsafe { ptr::write_volatile((list + 4 * i) as *mut u32, (next + i) as u32) };
            }
            if let Err(e) = dev.request(&[Buf {
                addr: list,
                len: (4 * n) as u32,
                flags: 0,
            }]) {
                return report("balloon", e);
            }
            next += n;
            pfns_total += n;
        }
    }
    if let Err(e) = dev.config_write32(4, pfns_total as u32) {
        return report("balloon", e);
    }
    io::print("balloon: target ");
    io::print_dec(target);
    io::print(" pages; gave ");
    io::print_dec(pfns_total);
    io::print(if snp {
        " pages (eight shared, one private)"
    } else {
        " pages"
    });
    io::print(" back: ok\n");
    // `hold=1`: stay up (spinning) so that the host can read the RSS.
    if cmdline.number("hold") == Some(1) {
        loop {
            core::hint::spin_loop();
        }
    }
    0
}

/// Which memory a hostile scenario points the device at.
#[derive(Clone, Copy)]
pub enum Target {
    Private,
    Rom,
    Beyond,
    Unmapped,
}

/// Points a block request's data buffer at `target`; the device must
/// complete it with IOERR, and a following good request must succeed.
pub fn dma_refused(target: Target, info: &BootInfo) -> u32 {
    let (name, addr, kind) = match target {
        Target::Private => ("dma-private", DMA_PRIVATE_GPA, T_OUT),
        Target::Rom => ("dma-rom", ROM_BASE, T_IN),
        Target::Beyond => (
            "dma-beyond",
            if info.is_valid() {
                info.ram_size + 0x10_0000
            } else {
                0x10_0000_0000
            },
            T_IN,
        ),
        Target::Unmapped => ("dma-unmapped", UNMAPPED_GPA, T_IN),
    };
    if matches!(target, Target::Private) {
        if !platform::current().is_snp() {
            io::print("dma-private needs an SNP platform (--platform snp-model)\n");
            return EXIT_BAD_CMDLINE;
        }
        // A secret in a private page: the device must not carry any of it
        // to the disk.
        for i in 0..512 {
            set_byte(addr + i, b"umbra-private-page-secret!"[(i % 26) as usize]);
        }
    }
    let mut dev = match Device::open(ID_BLOCK, 0) {
        Ok(dev) => dev,
        Err(e) => return report(name, e),
    };
    match blk_request(&mut dev, kind, BLK_TEST_FIRST_SECTOR, addr, 512) {
        Ok(S_IOERR) => {}
        Ok(s) => {
            io::print(name);
            io::print(": the device accepted a buffer at ");
            io::print_hex(addr);
            return status_fail("", s);
        }
        Err(e) => return report(name, e),
    }
    // The device (and the VMM) still work.
    let data = dev.buffers + 0x1000;
    match blk_request(&mut dev, T_IN, 0, data, 512) {
        Ok(S_OK) => {}
        Ok(s) => return status_fail("dma: the request after the refusal", s),
        Err(e) => return report(name, e),
    }
    io::print(name);
    io::print(": buffer at ");
    io::print_hex(addr);
    io::print(" refused with IOERR, device still serves: ok\n");
    0
}
