//! Port I/O, the serial console and the debug-exit register.

use core::arch::asm;
use umbra_firmware::layout::{DEBUG_EXIT_PORT, SERIAL_PORT};

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to the COM1 registers has no memory effects; the
    // firmware owns the machine and nothing else drives this port.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, preserves_flags)) };
}

fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: reading a COM1 register has no memory effects.
    unsafe { asm!("in al, dx", out("al") value, in("dx") port, options(nomem, preserves_flags)) };
    value
}

/// Reads COM1 register `reg` (0-7; e.g. 2 = IIR, 4 = MCR).
pub fn uart_read(reg: u16) -> u8 {
    inb(SERIAL_PORT + (reg & 7))
}

/// Writes COM1 register `reg` (0-7; e.g. 1 = IER, 4 = MCR).
pub fn uart_write(reg: u16, value: u8) {
    outb(SERIAL_PORT + (reg & 7), value);
}

/// A received byte, if the UART has one (LSR bit 0: data ready; reading
/// RBR takes it from the receive FIFO).
pub fn uart_try_receive() -> Option<u8> {
    (inb(SERIAL_PORT + 5) & 0x01 != 0).then(|| inb(SERIAL_PORT))
}

/// Writes bytes to COM1, waiting for the transmit holding register.
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        // LSR bit 5: THR empty. Bounded so a missing UART cannot hang us.
        for _ in 0..10_000 {
            if inb(SERIAL_PORT + 5) & 0x20 != 0 {
                break;
            }
        }
        outb(SERIAL_PORT, b);
    }
}

/// Writes a string.
pub fn print(text: &str) {
    write_bytes(text.as_bytes());
}

/// Writes an unsigned number in decimal.
pub fn print_dec(mut value: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    write_bytes(&buf[i..]);
}

/// Writes an unsigned number as `0x…` hex.
pub fn print_hex(value: u64) {
    let mut buf = [0u8; 18];
    buf[0] = b'0';
    buf[1] = b'x';
    for (i, slot) in buf[2..].iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xF;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    write_bytes(&buf);
}

/// Writes a byte as two-digit `0x…` hex.
pub fn print_hex_u8(value: u8) {
    let digits = b"0123456789abcdef";
    write_bytes(&[
        b'0',
        b'x',
        digits[usize::from(value >> 4)],
        digits[usize::from(value & 0xF)],
    ]);
}

/// Prints `bytes` as lower-case hex, no prefix or separators.
pub fn print_hex_bytes(bytes: &[u8]) {
    let digits = b"0123456789abcdef";
    for b in bytes {
        write_bytes(&[digits[usize::from(b >> 4)], digits[usize::from(b & 0xF)]]);
    }
}

/// Ends the run through the debug-exit port, then halts for good.
pub fn exit(code: u32) -> ! {
    // SAFETY: a write to the debug-exit port stops the VM; no memory effects.
    unsafe { asm!("out dx, eax", in("dx") DEBUG_EXIT_PORT, in("eax") code, options(nomem)) };
    halt()
}

/// Halts this vCPU forever (interrupts stay disabled).
pub fn halt() -> ! {
    loop {
        // SAFETY: cli; hlt parks the vCPU; the VMM sees the halt exit.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
