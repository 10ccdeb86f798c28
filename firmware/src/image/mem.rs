//! The memory primitives compiled code calls. The host target's
//! `compiler_builtins` does not export them (libc normally does), so the
//! bare-metal image provides them, with string instructions so that the
//! compiler cannot turn them back into calls to themselves.

use core::arch::asm;

/// # Safety
/// `dest` and `src` are valid for `n` bytes and do not overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for n bytes;
    // rep movsb copies forwards (DF is clear by the ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dest => _, inout("rsi") src => _,
             options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// `dest` and `src` are valid for `n` bytes; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize) <= (src as usize) || (dest as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dest is below src or the
        // ranges do not overlap; validity is the caller's guarantee.
        return unsafe { memcpy(dest, src, n) };
    }
    // SAFETY: overlapping with dest above src: copy backwards with DF set
    // from the last byte, then restore DF as the ABI requires.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dest.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack))
    };
    dest
}

/// # Safety
/// `dest` is valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dest: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees dest is valid for n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dest => _, in("al") value as u8,
             options(nostack, preserves_flags))
    };
    dest
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and both ranges are valid for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// `a` and `b` are valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// Copies the initial values of the initialised writable statics (the
/// linker's `.data`, which the image runs from the statics window) out of
/// the ROM. Only dependencies have such statics (memchr's dispatch
/// pointers); the bootstrap vCPU copies them before any scenario runs.
pub fn copy_initialised_statics() {
    extern "C" {
        static __data_load: u8;
        static __data_start: u8;
        static __data_end: u8;
    }
    // The image is built with the large code model, so these addresses
    // are absolute loads, not RIP-relative ones.
    let load = &raw const __data_load;
    let start = (&raw const __data_start).cast_mut();
    let len = (&raw const __data_end) as usize - start as usize;
    // SAFETY: the linker script places `.data`'s initial bytes at
    // `__data_load` in the ROM and its run-time copy at `__data_start` in
    // the statics window, `len` bytes each, not overlapping; nothing has
    // used the run-time copy yet (only the bootstrap vCPU runs here).
    unsafe { memcpy(start, load, len) };
}

/// `&'static $ty` for the static `$name`, which the linker places in the
/// statics window (`layout::BSS_GPA`). The code runs in the ROM just below
/// 4 GiB, out of reach of the RIP-relative addressing the compiler uses for
/// statics (the link fails with "relocation R_X86_64_PC32 out of range"),
/// so the address is loaded as a 64-bit absolute immediate instead. Name a
/// writable static only through this macro.
macro_rules! bss {
    ($name:path, $ty:ty) => {{
        let addr: usize;
        // SAFETY: loads a link-time constant into a register; no memory,
        // stack or flags effects.
        unsafe {
            core::arch::asm!(
                "movabsq ${}, {}",
                sym $name,
                out(reg) addr,
                options(att_syntax, pure, nomem, nostack, preserves_flags)
            )
        };
        let ptr = addr as *const $ty;
        // SAFETY: `ptr` is the address of the static `$name` of type `$ty`,
        // which lives for the whole run (and is Sync, being a static).
        unsafe { &*ptr }
    }};
}
pub(crate) use bss;
