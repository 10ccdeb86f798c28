//! The test scenarios. Each prints one result line and returns the exit code.

use crate::{interrupts, io, EXIT_BAD_CMDLINE, EXIT_FAILED};
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

/// `count=N` refused ROM writes (default a million).
pub fn flood(cmdline: &Cmdline) -> u32 {
    let count = cmdline.number("count").unwrap_or(1_000_000);
    let target = ptr::addr_of!(ROM_CANARY).cast_mut();
    // SAFETY: as in `rom_write`: the canary is ROM, the writes are the
    // point, and the VMM refuses each of them.
    let before = unsafe { ptr::read_volatile(target) };
    for i in 0..count {
        // SAFETY: as above.
        unsafe { ptr::write_volatile(target, i) };
    }
    // SAFETY: as above.
    let after = unsafe { ptr::read_volatile(target) };
    io::print("flood: ");
    io::print_dec(count);
    io::print(" writes to ROM");
    if before == after {
        io::print(", every one refused: ok\n");
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

/// The vector COM1's interrupt is routed to.
const SERIAL_IRQ_VECTOR: u8 = 0x30;
/// COM1's ISA IRQ, an IOAPIC pin on a PC.
const COM1_IOAPIC_PIN: u32 = 4;
/// Bounded wait: a lost interrupt must give a "fail" line, not a hang. Each
/// iteration has a `pause`, which exits to the host where pause-loop exiting
/// is on: 3M iterations took 9 s under QEMU on a PVM host, so 2M (~6 s
/// there, tens of ms on bare-metal KVM). A delivered interrupt ends the
/// wait at once (the UART raises it during the guest's IER write).
const SERIAL_IRQ_SPINS: u32 = 2_000_000;

/// The UART's transmitter-empty interrupt, through the IOAPIC (pin 4, edge)
/// to the local APIC in x2APIC mode.
pub fn serial_irq() -> u32 {
    interrupts::install_idt(SERIAL_IRQ_VECTOR);
    let apic_id = match interrupts::enable_x2apic() {
        Ok(id) => id,
        Err(why) => {
            io::print("serial-irq: ");
            io::print(why);
            io::print(": fail\n");
            return EXIT_FAILED;
        }
    };
    let ioapic = match interrupts::Ioapic::open() {
        Ok(ioapic) => ioapic,
        Err(e) => return ioapic_failed(e),
    };
    let version = match ioapic.version() {
        Ok(version) => version,
        Err(e) => return ioapic_failed(e),
    };
    if version == u32::MAX {
        io::print("serial-irq: no IOAPIC at ");
        io::print_hex(interrupts::IOAPIC_BASE);
        io::print(": fail\n");
        return EXIT_FAILED;
    }
    let max_entry = (version >> 16) & 0xFF;
    io::print("serial-irq: x2APIC ID ");
    io::print_dec(u64::from(apic_id));
    io::print(", IOAPIC version ");
    io::print_hex_u8(version as u8);
    io::print(", max redirection entry ");
    io::print_dec(u64::from(max_entry));
    if ioapic.through_ghcb() {
        io::print(", reached through GHCB MMIO");
    }
    io::print("\n");
    if max_entry < COM1_IOAPIC_PIN {
        io::print("serial-irq: IOAPIC has no pin 4: fail\n");
        return EXIT_FAILED;
    }
    let Ok(dest) = u8::try_from(apic_id) else {
        io::print("serial-irq: APIC ID does not fit a physical destination: fail\n");
        return EXIT_FAILED;
    };
    if let Err(e) = ioapic.route_edge(COM1_IOAPIC_PIN, SERIAL_IRQ_VECTOR, dest) {
        return ioapic_failed(e);
    }
    // MCR OUT2 gates the UART's interrupt onto the bus on a PC; IER bit 1:
    // THR-empty interrupt, raised at once because THR is empty.
    io::uart_write(UART_MCR, io::uart_read(UART_MCR) | MCR_OUT2);
    io::uart_write(UART_IER, IER_THRE);
    let (count, iir) = interrupts::wait_for_interrupt(SERIAL_IRQ_SPINS);
    io::uart_write(UART_IER, 0);
    if let Err(e) = ioapic.mask(COM1_IOAPIC_PIN) {
        return ioapic_failed(e);
    }
    if count == 0 {
        io::print("serial-irq: no interrupt: fail\n");
        return EXIT_FAILED;
    }
    io::print("serial-irq: interrupt vector ");
    io::print_hex_u8(SERIAL_IRQ_VECTOR);
    io::print(" received through the IOAPIC (IIR ");
    io::print_hex_u8(iir);
    io::print("): ok\n");
    0
}

/// Reports a failed IOAPIC access (or GHCB setup for one).
fn ioapic_failed(error: interrupts::IoapicError) -> u32 {
    match error {
        interrupts::IoapicError::GhcbSetup(e) => {
            io::print("serial-irq: ");
            io::print(e.what);
            io::print(" ");
            io::print_hex(e.response);
        }
        interrupts::IoapicError::GhcbMmio { write, gpa, info1 } => {
            io::print("serial-irq: GHCB MMIO ");
            io::print(if write { "write to " } else { "read of " });
            io::print_hex(gpa);
            io::print(" failed (info1 ");
            io::print_hex(info1);
            io::print(")");
        }
    }
    io::print(": fail\n");
    EXIT_FAILED
}

const UART_IER: u16 = 1;
const UART_MCR: u16 = 4;
const IER_THRE: u8 = 0x02;
const MCR_OUT2: u8 = 0x08;

/// Longest line `serial-echo` collects.
const ECHO_LINE_MAX: usize = 64;
/// Polls of the line status register without a byte before `serial-echo`
/// gives up (each is a port-I/O exit: seconds, not a hang).
const ECHO_IDLE_POLLS: u32 = 2_000_000;

/// Reads one line of console input from the UART (polled: data ready in
/// LSR, then RBR) and echoes it. The line ends at '\n' or '\r', after
/// [`ECHO_LINE_MAX`] bytes, or when input stops after at least one byte.
pub fn serial_echo() -> u32 {
    let mut line = [0u8; ECHO_LINE_MAX];
    let mut len = 0;
    let mut received = false;
    let mut idle = 0u32;
    while len < line.len() && idle < ECHO_IDLE_POLLS {
        match io::uart_try_receive() {
            Some(b'\n' | b'\r') => {
                received = true;
                break;
            }
            Some(byte) => {
                received = true;
                line[len] = byte;
                len += 1;
                idle = 0;
            }
            None => idle += 1,
        }
    }
    if !received {
        io::print("serial-echo: no input: fail\n");
        return EXIT_FAILED;
    }
    io::print("serial-echo: got '");
    io::write_bytes(&line[..len]);
    io::print("': ok\n");
    0
}
