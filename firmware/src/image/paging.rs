//! The C-bit of single pages. boot.rs maps the first 4 MiB in 4 KiB pages
//! with the C-bit set (private) except the boot-information page; a page
//! the firmware converts to shared must be mapped without it (an SNP guest
//! reads a shared page's plaintext only through a C=0 mapping, and a C=1
//! access to a page the hypervisor owns faults), and with it again once it
//! is private.

use crate::platform;
use core::arch::asm;
use umbra_firmware::layout::{PAGE_TABLE_4K_GPA, PAGE_TABLE_4K_SPAN};

/// Sets or clears the C-bit of the 4 KiB page at `gpa` and flushes its
/// translation. Pages outside the 4 KiB-mapped range keep their mapping
/// (the firmware shares none there); nothing changes without SNP.
pub fn set_private(gpa: u64, private: bool) {
    let mask = platform::c_bit_mask();
    if mask == 0 || gpa >= PAGE_TABLE_4K_SPAN {
        return;
    }
    let entry = (PAGE_TABLE_4K_GPA + (gpa >> 12) * 8) as *mut u64;
    // SAFETY: `entry` is the page-table entry of `gpa` in the 4 KiB page
    // tables boot.rs built (identity-mapped private memory); only the
    // bootstrap vCPU changes them, after every vCPU left the boot code.
    // The flush makes the CPU use the new entry.
    unsafe {
        let old = core::ptr::read_volatile(entry);
        let new = if private { old | mask } else { old & !mask };
        core::ptr::write_volatile(entry, new);
        asm!("invlpg [{}]", in(reg) gpa, options(nostack, preserves_flags));
    }
}
