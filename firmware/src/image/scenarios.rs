//! The test scenarios. Each prints one result line and returns the exit code.

use crate::{io, EXIT_BAD_CMDLINE, EXIT_FAILED};
use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};
use umbra_firmware::boot_info::BootInfo;
use umbra_firmware::cmdline::Cmdline;
use umbra_firmware::layout::STACKS_TOP;

/// A word in the ROM the `rom-write` scenario tries to overwrite.
static ROM_CANARY: u64 = 0x554D_4252_4152_4F4D;

pub fn hello() -> u32 {
    io::print("hello: ok\n");
    0
}

pub fn rom_write() -> u32 {
    let target = ptr::addr_of!(ROM_CANARY).cast_mut();
    // SAFETY: the canary is identity-mapped ROM. The write is the point of
    // the scenario: the VMM must refuse it, leaving the bytes as they were.
    let (before, after) = unsafe {
        let before = ptr::read_volatile(target);
        ptr::write_volatile(target, !before);
        (before, ptr::read_volatile(target))
    };
    io::print("rom-write: wrote to ROM at ");
    io::print_hex(target as u64);
    if before == after {
        io::print(", bytes unchanged: ok\n");
        0
    } else {
        io::print(", ROM CHANGED: fail\n");
        EXIT_FAILED
    }
}

pub fn guard(info: &BootInfo) -> u32 {
    if !info.is_valid() || info.guard_size == 0 {
        io::print("guard: no guard range given\n");
        return EXIT_BAD_CMDLINE;
    }
    let target = info.guard_gpa as *mut u32;
    // SAFETY: the guard range is identity-mapped but backed by nothing; the
    // VMM refuses both accesses. No Rust object lives there.
    let value = unsafe {
        let value = ptr::read_volatile(target);
        ptr::write_volatile(target, 0x1234_5678);
        value
    };
    io::print("guard: read ");
    io::print_hex(u64::from(value));
    io::print(" from guard range at ");
    io::print_hex(info.guard_gpa);
    if value == u32::MAX {
        io::print(", no memory answered: ok\n");
        0
    } else {
        io::print(": fail\n");
        EXIT_FAILED
    }
}

pub fn smp(info: &BootInfo, checkin: &AtomicU32) -> u32 {
    let expected = if info.is_valid() { info.vcpu_count } else { 1 };
    // Bounded wait: an AP that never starts must not hang the run.
    let mut seen = checkin.load(Ordering::Acquire);
    for _ in 0..50_000_000u64 {
        seen = checkin.load(Ordering::Acquire);
        if seen >= expected {
            break;
        }
        core::hint::spin_loop();
    }
    io::print("smp: ");
    io::print_dec(u64::from(seen));
    io::print(" of ");
    io::print_dec(u64::from(expected));
    io::print(" vCPUs checked in");
    if seen == expected {
        io::print(": ok\n");
        0
    } else {
        io::print(": fail\n");
        EXIT_FAILED
    }
}

fn pattern(addr: u64) -> u64 {
    (addr ^ 0xA5A5_5A5A_DEAD_BEEF).rotate_left((addr >> 12) as u32 & 63)
}

pub fn memtest(info: &BootInfo, cmdline: &Cmdline) -> u32 {
    let ram = if info.is_valid() { info.ram_size } else { 0 };
    let (start, end) = match cmdline.get("memtest") {
        Some(_) => match cmdline.range("memtest") {
            Some(range) => range,
            None => {
                io::print("memtest: bad range, want memtest=START-END\n");
                return EXIT_BAD_CMDLINE;
            }
        },
        None => (STACKS_TOP, ram.min(3 << 30)),
    };
    let stride = cmdline.number("stride").unwrap_or(4096);
    if start < STACKS_TOP
        || end > ram
        || end > (3 << 30)
        || stride < 8
        || !stride.is_multiple_of(8)
        || !start.is_multiple_of(8)
    {
        io::print("memtest: range must lie in RAM above the firmware's stacks, below 3 GiB, 8-byte aligned\n");
        return EXIT_BAD_CMDLINE;
    }
    let mut addr = start;
    while addr + 8 <= end {
        // SAFETY: [start, end) is identity-mapped RAM above everything the
        // firmware itself uses (checked above).
        unsafe { ptr::write_volatile(addr as *mut u64, pattern(addr)) };
        addr += stride;
    }
    let mut words = 0u64;
    addr = start;
    while addr + 8 <= end {
        // SAFETY: as above.
        let got = unsafe { ptr::read_volatile(addr as *const u64) };
        if got != pattern(addr) {
            io::print("memtest: mismatch at ");
            io::print_hex(addr);
            io::print(": fail\n");
            return EXIT_FAILED;
        }
        words += 1;
        addr += stride;
    }
    io::print("memtest: ");
    io::print_dec(words);
    io::print(" words verified over ");
    io::print_hex(start);
    io::print("..");
    io::print_hex(end);
    io::print(" stride ");
    io::print_dec(stride);
    io::print(": ok\n");
    0
}
