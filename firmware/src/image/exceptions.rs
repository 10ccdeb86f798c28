//! The IDT and the exception handlers, installed by every vCPU as the first
//! thing `firmware_main` does: before the platform is known, because its
//! detection may raise #GP (SEV_STATUS on a host without it) or #VC (the
//! VMGEXIT-flavour probe on SNP silicon), and because under SEV-ES every
//! port access after it raises #VC.
//!
//! #GP (13) and #VC (29) are resumable: their stub saves every general
//! register in a [`Frame`], the Rust handler may change the registers and
//! RIP, and the stub returns with iretq. The other exceptions report and
//! end the run. All vCPUs fill the table with identical stores (as the page
//! tables in boot.rs), so no vCPU can see a gate change under it.

use crate::mem::bss;
use crate::{io, vc, EXIT_FAILED};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;

/// 256 16-byte gate descriptors, zero (not present) until installed. Zero
/// initialised, so the linker puts it in the statics window (BSS_GPA).
/// Reached through [`bss`] only.
#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 512]>);

// SAFETY: every writer stores the same value a gate already has or will
// have (see the module documentation); the only other changes are the
// bootstrap vCPU's, with interrupts disabled, while the APs are halted.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

/// 64-bit code segment selector (boot.rs's GDT).
const CODE_SELECTOR: u64 = 0x18;
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry), IST 0.
const INTERRUPT_GATE: u64 = 0x8E;
/// Bytes per exception stub (each is at most 9 bytes, padded by .balign).
const EXCEPTION_STUB_SIZE: u64 = 16;
/// #VC, the SEV-ES VMM communication exception.
pub const VECTOR_VC: u8 = 29;

/// The registers a resumable exception saved, lowest address first, then
/// the vector, the error code and the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl Frame {
    /// The first bytes of the faulting instruction (the code is identity-
    /// mapped ROM; an instruction is at most 15 bytes).
    pub fn instruction(&self) -> [u8; 15] {
        let mut bytes = [0u8; 15];
        // Never past the end of the ROM at 4 GiB.
        let room = (1u64 << 32).saturating_sub(self.rip).min(15) as usize;
        for (i, b) in bytes.iter_mut().take(room).enumerate() {
            // SAFETY: RIP points at the instruction that faulted, in the
            // mapped, readable ROM; reading its bytes has no side effects.
            *b = unsafe { core::ptr::read_volatile((self.rip as *const u8).wrapping_add(i)) };
        }
        bytes
    }
}

/// Marks a probing `rdmsr`: the handlers below skip it instead of failing
/// when R11 holds this value, and put the exception they saw in R11.
pub const PROBE_ARMED: u64 = 0x5052_4F42_4500_0000;
/// R11 after a probing `rdmsr` raised #GP.
pub const PROBE_RAISED_GP: u64 = PROBE_ARMED | 13;
/// R11 after a probing `rdmsr` raised #VC.
pub const PROBE_RAISED_VC: u64 = PROBE_ARMED | 29;

global_asm!(
    ".pushsection .text.umbra_exceptions, \"ax\"",
    // Exceptions 0-31: push a dummy error code where the CPU pushes none,
    // then the vector. #GP and #VC go to the resumable path.
    ".balign 16",
    ".global umbra_exception_stubs",
    "umbra_exception_stubs:",
    ".irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    r".if (\vec == 8) || ((\vec >= 10) && (\vec <= 14)) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)",
    ".else",
    "push 0",
    ".endif",
    r"push \vec",
    r".if (\vec == 13) || (\vec == 29)",
    "jmp umbra_exception_resumable",
    ".else",
    "jmp umbra_exception_fatal",
    ".endif",
    ".endr",
    "umbra_exception_fatal:",
    "mov rdi, [rsp]",
    "mov rsi, [rsp + 8]",
    "mov rdx, [rsp + 16]",
    "and rsp, -16",
    "cld",
    "call {fatal}",
    "ud2",
    // Save every general register (no SSE state exists: the image is
    // soft-float), hand Rust the frame, restore, drop vector and error
    // code, return to the (possibly advanced) RIP.
    "umbra_exception_resumable:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "mov rbx, rsp",
    "and rsp, -16",
    "cld",
    "call {resumable}",
    "mov rsp, rbx",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    ".popsection",
    fatal = sym fatal_entry,
    resumable = sym resumable_entry,
);

extern "C" {
    static umbra_exception_stubs: u8;
}

/// Reports an exception and ends the run: a fault is diagnosable from the
/// console instead of a triple fault.
extern "C" fn fatal_entry(vector: u64, error: u64, rip: u64) -> ! {
    io::print("firmware: exception ");
    io::print_dec(vector);
    io::print(" (error code ");
    io::print_hex(error);
    io::print(", rip ");
    io::print_hex(rip);
    io::print("): fail\n");
    io::exit(EXIT_FAILED)
}

/// #GP and #VC: a probing `rdmsr` is skipped; a #VC goes to its handler;
/// anything else is fatal.
extern "C" fn resumable_entry(frame: &mut Frame) {
    let probing = frame.r11 == PROBE_ARMED && umbra_firmware::insn::is_rdmsr(&frame.instruction());
    if probing {
        frame.r11 = PROBE_ARMED | frame.vector;
        frame.rax = 0;
        frame.rdx = 0;
        frame.rip += 2;
        return;
    }
    if frame.vector == u64::from(VECTOR_VC) {
        vc::handle(frame);
        return;
    }
    fatal_entry(frame.vector, frame.error, frame.rip)
}

fn gate(handler: u64) -> (u64, u64) {
    let low = (handler & 0xFFFF)
        | (CODE_SELECTOR << 16)
        | (INTERRUPT_GATE << 40)
        | ((handler >> 16) & 0xFFFF) << 48;
    (low, handler >> 32)
}

fn table() -> *mut [u64; 512] {
    bss!(IDT, Idt).0.get()
}

/// Points `vector` at `handler` (0: not present).
pub fn set_gate(vector: u8, handler: u64) {
    let (low, high) = if handler == 0 { (0, 0) } else { gate(handler) };
    let at = 2 * usize::from(vector);
    // SAFETY: the IDT is a static; the stores are volatile so that other
    // vCPUs and the CPU see exactly these values (see the module
    // documentation for why concurrent writers agree).
    unsafe {
        let table = table();
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*table)[at]), low);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*table)[at + 1]), high);
    }
}

/// Removes the gate of `vector`: the CPU finds it not present.
pub fn clear_gate(vector: u8) {
    set_gate(vector, 0);
}

/// Installs the exception gates and loads the IDT on this vCPU.
pub fn install() {
    let stubs = core::ptr::addr_of!(umbra_exception_stubs) as u64;
    for v in 0..32u8 {
        set_gate(v, stubs + u64::from(v) * EXCEPTION_STUB_SIZE);
    }
    #[repr(C, packed)]
    struct Descriptor {
        limit: u16,
        base: u64,
    }
    let descriptor = Descriptor {
        limit: (core::mem::size_of::<[u64; 512]>() - 1) as u16,
        base: table() as u64,
    };
    // SAFETY: the descriptor points at the IDT static, which lives for the
    // rest of the run; every present gate targets a stub above.
    unsafe { asm!("lidt [{}]", in(reg) &descriptor, options(readonly, nostack, preserves_flags)) };
}
