//! Interrupt delivery: a 64-bit IDT, the local APIC in x2APIC mode (MSRs
//! only, the xAPIC MMIO page is never touched) and the IOAPIC at its
//! standard address (direct MMIO, or GHCB MMIO events under SNP). Only the `serial-irq` scenario uses any of it; the
//! other scenarios run with interrupts disabled (the IDT is `exceptions`').
//!
//! Interrupts are enabled only inside [`wait_for_interrupt`], one `asm!`
//! block without `nostack`: the firmware is built for a target with a red
//! zone, and an interrupt frame pushed below RSP would clobber it. Without
//! `nostack` the compiler keeps nothing there across the block.

use crate::exceptions;
use crate::ghcb;
use crate::io;
use crate::mem::bss;
use crate::mmio;
use crate::platform::{self, rdmsr, wrmsr};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, Ordering};

/// Guest-physical (identity-mapped) base of the IOAPIC.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// IOAPIC version register index.
const IOAPIC_VERSION: u32 = 0x01;
/// First redirection-table register index (pin `n`: `0x10 + 2n`, `+1`).
const IOAPIC_REDTBL: u32 = 0x10;
/// Redirection entry: interrupt mask bit.
const RTE_MASKED: u32 = 1 << 16;

const MSR_APIC_BASE: u32 = 0x1B;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_EN: u64 = 1 << 11;
const MSR_X2APIC_ID: u32 = 0x802;
const MSR_X2APIC_TPR: u32 = 0x808;
const MSR_X2APIC_EOI: u32 = 0x80B;
const MSR_X2APIC_SVR: u32 = 0x80F;
const MSR_X2APIC_LVT_LINT0: u32 = 0x835;
/// SVR: APIC software enable.
const SVR_ENABLE: u64 = 0x100;
/// LVT: masked.
const LVT_MASKED: u64 = 1 << 16;

/// The spurious-interrupt vector programmed into the SVR.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// COM1's interrupt identification register.
const UART_IIR: u16 = 2;

/// Interrupts taken on the device vector, and the last IIR the handler read
/// (statics in the statics window: reach them through [`bss`] only).
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);
static LAST_IIR: AtomicU32 = AtomicU32::new(0);

global_asm!(
    ".pushsection .text.umbra_interrupts, \"ax\"",
    // The device vector: save the caller-saved registers (no SSE state
    // exists: the image is soft-float), call Rust, return. Entry RSP is
    // 8 mod 16 after the 5-word frame; nine pushes realign it for the call.
    ".balign 16",
    ".global umbra_irq_stub",
    "umbra_irq_stub:",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "cld",
    "call {irq}",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "iretq",
    // Spurious interrupts need no EOI.
    ".balign 16",
    ".global umbra_spurious_stub",
    "umbra_spurious_stub:",
    "iretq",
    ".popsection",
    irq = sym irq_entry,
);

extern "C" {
    static umbra_irq_stub: u8;
    static umbra_spurious_stub: u8;
}

/// The device vector's handler: acknowledge the UART (reading IIR clears a
/// THR-empty interrupt), count, EOI. Prints nothing: the main flow may be
/// in the middle of a console write.
extern "C" fn irq_entry() {
    let iir = io::uart_read(UART_IIR);
    bss!(LAST_IIR, AtomicU32).store(u32::from(iir), Ordering::Relaxed);
    bss!(IRQ_COUNT, AtomicU32).fetch_add(1, Ordering::Release);
    wrmsr(MSR_X2APIC_EOI, 0);
}

/// Points `vector` at the device handler and the spurious vector at its
/// stub in the IDT `exceptions` installed. Call with interrupts disabled.
pub fn install_idt(vector: u8) {
    bss!(IRQ_COUNT, AtomicU32).store(0, Ordering::Relaxed);
    bss!(LAST_IIR, AtomicU32).store(0, Ordering::Relaxed);
    exceptions::set_gate(vector, core::ptr::addr_of!(umbra_irq_stub) as u64);
    exceptions::set_gate(
        SPURIOUS_VECTOR,
        core::ptr::addr_of!(umbra_spurious_stub) as u64,
    );
}

/// Switches the local APIC to x2APIC mode and enables it (SVR, TPR 0,
/// LINT0 masked so a PIC in virtual-wire mode cannot deliver instead of the
/// IOAPIC). Returns the x2APIC ID.
pub fn enable_x2apic() -> Result<u32, &'static str> {
    if platform::cpuid(1, 0)[2] & (1 << 21) == 0 {
        return Err("CPUID reports no x2APIC");
    }
    let base = rdmsr(MSR_APIC_BASE);
    // Disabled -> x2APIC is an invalid transition: go through xAPIC.
    if base & APIC_BASE_EN == 0 {
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN);
    }
    wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
    if rdmsr(MSR_APIC_BASE) & (APIC_BASE_EN | APIC_BASE_EXTD) != APIC_BASE_EN | APIC_BASE_EXTD {
        return Err("IA32_APIC_BASE did not take x2APIC mode");
    }
    wrmsr(MSR_X2APIC_TPR, 0);
    wrmsr(MSR_X2APIC_LVT_LINT0, LVT_MASKED);
    wrmsr(MSR_X2APIC_SVR, SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
    Ok(rdmsr(MSR_X2APIC_ID) as u32)
}

/// A failed IOAPIC access.
#[derive(Clone, Copy, Debug)]
pub enum IoapicError {
    /// The GHCB could not be set up for MMIO NAE events.
    GhcbSetup(ghcb::SetupError),
    /// A GHCB MMIO event failed: the register's address and the
    /// hypervisor's `sw_exit_info_1`.
    GhcbMmio { write: bool, gpa: u64, info1: u64 },
}

impl From<mmio::MmioError> for IoapicError {
    fn from(e: mmio::MmioError) -> Self {
        IoapicError::GhcbMmio {
            write: e.write,
            gpa: e.gpa,
            info1: e.info1,
        }
    }
}

/// The IOAPIC at [`IOAPIC_BASE`], reached the way the platform needs.
pub struct Ioapic;

impl Ioapic {
    /// Sets the GHCB up when the platform needs it for MMIO (the SNP
    /// model). Call once, with interrupts disabled.
    pub fn open() -> Result<Ioapic, IoapicError> {
        if mmio::through_ghcb() {
            ghcb::establish(&[]).map_err(IoapicError::GhcbSetup)?;
        }
        Ok(Ioapic)
    }

    /// Whether the registers are reached through the GHCB.
    pub fn through_ghcb(&self) -> bool {
        mmio::through_ghcb()
    }

    fn read_reg(&self, offset: u64) -> Result<u32, IoapicError> {
        Ok(mmio::read32(IOAPIC_BASE + offset)?)
    }

    fn write_reg(&self, offset: u64, value: u32) -> Result<(), IoapicError> {
        Ok(mmio::write32(IOAPIC_BASE + offset, value)?)
    }

    fn read(&self, index: u32) -> Result<u32, IoapicError> {
        self.write_reg(IOREGSEL, index)?;
        self.read_reg(IOWIN)
    }

    fn write(&self, index: u32, value: u32) -> Result<(), IoapicError> {
        self.write_reg(IOREGSEL, index)?;
        self.write_reg(IOWIN, value)
    }

    /// The version register (bits 23:16: maximum redirection entry);
    /// all-ones when nothing answers at [`IOAPIC_BASE`].
    pub fn version(&self) -> Result<u32, IoapicError> {
        self.read(IOAPIC_VERSION)
    }

    /// Routes `pin` to `vector` on APIC `dest`: fixed delivery, physical
    /// destination, active high, edge triggered, unmasked. The destination
    /// is written first so the entry never fires to a stale one.
    pub fn route_edge(&self, pin: u32, vector: u8, dest: u8) -> Result<(), IoapicError> {
        let index = IOAPIC_REDTBL + 2 * pin;
        self.write(index, RTE_MASKED | u32::from(vector))?;
        self.write(index + 1, u32::from(dest) << 24)?;
        self.write(index, u32::from(vector))
    }

    /// Masks `pin`.
    pub fn mask(&self, pin: u32) -> Result<(), IoapicError> {
        let index = IOAPIC_REDTBL + 2 * pin;
        self.write(index, self.read(index)? | RTE_MASKED)
    }
}

/// Enables interrupts and spins until the device handler has run or
/// `spins` iterations passed, then disables them again. Returns the number
/// of device interrupts taken and the last IIR the handler read.
pub fn wait_for_interrupt(spins: u32) -> (u32, u8) {
    let count = bss!(IRQ_COUNT, AtomicU32);
    // SAFETY: the IDT, local APIC and IOAPIC are set up (see the callers);
    // the handlers preserve every register they touch and return with
    // iretq. No `nostack`: the interrupt frames go below RSP (see the
    // module documentation). The counter is only read.
    unsafe {
        asm!(
            "sti",
            "2:",
            "cmp dword ptr [{count}], 0",
            "jne 3f",
            "pause",
            "dec {spins:e}",
            "jnz 2b",
            "3:",
            "cli",
            count = in(reg) count.as_ptr(),
            spins = inout(reg) spins.max(1) => _,
        )
    };
    (
        count.load(Ordering::Acquire),
        bss!(LAST_IIR, AtomicU32).load(Ordering::Relaxed) as u8,
    )
}
