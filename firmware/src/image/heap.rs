//! The firmware's heap: a bump allocator over [`HEAP_GPA`], for the code
//! that needs `alloc` (the KBS client's JSON and JWE handling). Only the
//! bootstrap vCPU allocates, one scenario per boot, so bumping (and
//! giving back only the most recent block) is enough; exhaustion is an
//! allocation failure, never memory outside the window.
//!
//! Under SEV-SNP the launch validates only the ranges in the SEV metadata,
//! so [`init`] PVALIDATEs every heap page before the first allocation
//! (silicon would raise #VC on a private access to an unvalidated page).

use crate::mem::bss;
use crate::platform;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};
use umbra_firmware::layout::{HEAP_GPA, HEAP_SIZE};

/// Next free byte (absolute address); 0 until [`init`] ran.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn next() -> &'static AtomicU64 {
    bss!(NEXT, AtomicU64)
}

/// Why the heap could not be set up.
#[derive(Debug)]
pub struct HeapError {
    /// The page PVALIDATE refused.
    pub gpa: u64,
    /// Its result code.
    pub code: u32,
}

/// Makes the heap usable: validates its pages under SNP, once.
pub fn init() -> Result<(), HeapError> {
    if next().load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    if platform::current().is_snp() {
        let mut gpa = HEAP_GPA;
        while gpa < HEAP_GPA + HEAP_SIZE {
            // Success, or already validated (success with CF=1, no RMP
            // update); any failure code (wrong size, not ours) is not.
            let (code, _unchanged) = platform::pvalidate(gpa, true, false);
            if code != 0 {
                return Err(HeapError { gpa, code });
            }
            gpa += 0x1000;
        }
    }
    next().store(HEAP_GPA, Ordering::Release);
    Ok(())
}

/// The allocator. A zero-sized value in the ROM: all state is in the
/// statics window, reached through `bss!`.
pub struct Heap;

// SAFETY: blocks are carved from the heap window only, never overlap
// (the bump pointer moves past each one), are aligned as asked, and a
// block is handed back only by the `dealloc` of its owner.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let next = next();
        let mut current = next.load(Ordering::Acquire);
        loop {
            if current == 0 {
                return core::ptr::null_mut();
            }
            let align = layout.align() as u64;
            let start = (current + align - 1) & !(align - 1);
            let Some(end) = start.checked_add(layout.size() as u64) else {
                return core::ptr::null_mut();
            };
            if end > HEAP_GPA + HEAP_SIZE {
                return core::ptr::null_mut();
            }
            match next.compare_exchange(current, end, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return start as *mut u8,
                Err(seen) => current = seen,
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // The most recent block goes back; others stay until the run ends.
        let end = ptr as u64 + layout.size() as u64;
        let _ = next().compare_exchange(end, ptr as u64, Ordering::AcqRel, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Grow the most recent block in place (a growing Vec or String).
        let next = next();
        let end = ptr as u64 + layout.size() as u64;
        let new_end = ptr as u64 + new_size as u64;
        if new_end <= HEAP_GPA + HEAP_SIZE
            && next
                .compare_exchange(end, new_end, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return ptr;
        }
        // SAFETY: same contract as GlobalAlloc::realloc's default: a new
        // block, the old contents copied, the old block released.
        unsafe {
            let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
                return core::ptr::null_mut();
            };
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
