//! QEMU's fw_cfg (I/O ports 0x510/0x511): where the command line comes from
//! when the firmware runs under QEMU (`-bios`), which leaves the
//! boot-information page zero. `-fw_cfg name=opt/umbra/cmdline,string=...`
//! provides it. umbra itself has no fw_cfg device and always writes the
//! boot-information page, so this is only consulted when that page is not
//! valid.

use crate::mem::bss;
use core::arch::asm;
use core::cell::UnsafeCell;
use umbra_firmware::boot_info::CMDLINE_CAPACITY;

/// The fw_cfg file holding the command line.
pub const CMDLINE_FILE: &[u8] = b"opt/umbra/cmdline";
const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FILE_DIR: u16 = 0x0019;
/// Bytes of a file name in a directory entry.
const NAME_LEN: usize = 56;
/// Upper bound on directory entries read (a hostile count must not make the
/// firmware spin for hours).
const MAX_FILES: u32 = 1024;

/// The command line read from fw_cfg (zero initialised: in the statics
/// window, reached through [`bss`] only).
struct Buffer(UnsafeCell<[u8; CMDLINE_CAPACITY]>);

// SAFETY: written once by the bootstrap vCPU in `cmdline` before any
// reference to it is handed out; the APs never touch it.
unsafe impl Sync for Buffer {}

static BUFFER: Buffer = Buffer(UnsafeCell::new([0; CMDLINE_CAPACITY]));

fn select(key: u16) {
    // SAFETY: fw_cfg selector write: port I/O with no memory effects. Where
    // no fw_cfg exists the write goes nowhere.
    unsafe {
        asm!("out dx, ax", in("dx") SELECTOR_PORT, in("ax") key, options(nomem, preserves_flags))
    };
}

fn read_byte() -> u8 {
    let value: u8;
    // SAFETY: fw_cfg data read: port I/O with no memory effects.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") DATA_PORT, options(nomem, preserves_flags))
    };
    value
}

fn read_be32() -> u32 {
    let mut bytes = [0u8; 4];
    bytes.iter_mut().for_each(|b| *b = read_byte());
    u32::from_be_bytes(bytes)
}

/// Finds `name` in the file directory: (selector key, size).
fn find_file(name: &[u8]) -> Option<(u16, u32)> {
    select(KEY_FILE_DIR);
    let count = read_be32();
    if count > MAX_FILES {
        return None;
    }
    for _ in 0..count {
        let size = read_be32();
        let key = u16::from_be_bytes([read_byte(), read_byte()]);
        let _reserved = [read_byte(), read_byte()];
        let mut matches = true;
        for i in 0..NAME_LEN {
            let b = read_byte();
            let want = name.get(i).copied().unwrap_or(0);
            matches &= b == want;
        }
        if matches {
            return Some((key, size));
        }
    }
    None
}

/// The command line from fw_cfg, or "" when there is no fw_cfg, no such
/// file or it is not UTF-8. Call once, on the bootstrap vCPU.
pub fn cmdline() -> &'static str {
    select(KEY_SIGNATURE);
    let signature = [read_byte(), read_byte(), read_byte(), read_byte()];
    if &signature != b"QEMU" || CMDLINE_FILE.len() >= NAME_LEN {
        return "";
    }
    let Some((key, size)) = find_file(CMDLINE_FILE) else {
        return "";
    };
    let len = (size as usize).min(CMDLINE_CAPACITY);
    select(key);
    let cell = bss!(BUFFER, Buffer).0.get();
    // SAFETY: the only mutable access to the buffer, before the shared
    // reference below exists (single caller on the bootstrap vCPU).
    let buffer = unsafe { &mut *cell };
    buffer[..len].iter_mut().for_each(|b| *b = read_byte());
    let text: &'static [u8] = &buffer[..len];
    core::str::from_utf8(text)
        .unwrap_or("")
        .trim_end_matches('\0')
}
