//! The #VC handler: what makes the firmware an SEV-ES guest. Under SEV-ES
//! an intercepted instruction does not exit to the hypervisor; it raises
//! #VC (vector 29, error code = the SVM exit code) in the guest, which
//! decodes it, asks the hypervisor through the GHCB (a non-automatic exit,
//! GHCB spec 56421 §4.1), writes the answer into the saved registers and
//! skips the instruction (Linux `arch/x86/coco/sev/vc-handle.c`).
//!
//! Handled: port I/O (`in`/`out`, imm8 or DX, 8/16/32 bits), `rdmsr` and
//! `wrmsr`, `cpuid` (from the CPUID page, else the hypervisor). Anything
//! else is reported through explicit GHCB IOIO events (printing normally
//! is port I/O and would raise #VC again) and ends the guest with the GHCB
//! termination request.

use crate::exceptions::Frame;
use crate::ghcb;
use crate::platform;
use umbra_firmware::insn::{self, PortSource};
use umbra_firmware::layout::SERIAL_PORT;

/// SVM exit codes a #VC carries.
const EXIT_CPUID: u64 = 0x72;
const EXIT_IOIO: u64 = 0x7B;
const EXIT_MSR: u64 = 0x7C;
const EXIT_NPF: u64 = 0x400;

/// Handles the #VC in `frame` and returns to the next instruction.
pub fn handle(frame: &mut Frame) {
    let bytes = frame.instruction();
    let handled = match frame.error {
        EXIT_IOIO => ioio(frame, &bytes),
        EXIT_MSR => msr(frame, &bytes),
        EXIT_CPUID => cpuid(frame, &bytes),
        EXIT_NPF => {
            Err("MMIO: the firmware reaches devices through explicit GHCB MMIO events only")
        }
        _ => Err("no handler for this exit code"),
    };
    if let Err(why) = handled {
        unhandled(frame, why);
    }
}

fn ioio(frame: &mut Frame, bytes: &[u8]) -> Result<(), &'static str> {
    let io = insn::decode_io(bytes).ok_or("not a decodable in/out")?;
    let port = match io.port {
        PortSource::Immediate(port) => u16::from(port),
        PortSource::Dx => frame.rdx as u16,
    };
    if !ghcb::is_ready() {
        return Err("port I/O before the GHCB was set up");
    }
    let value = ghcb::ioio(io.exit_info(port), frame.rax & io.mask())
        .map_err(|_| "the hypervisor refused the IOIO event")?;
    if io.is_in {
        frame.rax = io.merge_in(frame.rax, value);
    }
    frame.rip += u64::from(io.len);
    Ok(())
}

fn msr(frame: &mut Frame, bytes: &[u8]) -> Result<(), &'static str> {
    let write = insn::is_wrmsr(bytes);
    if !write && !insn::is_rdmsr(bytes) {
        return Err("MSR exit at an instruction that is neither rdmsr nor wrmsr");
    }
    if !ghcb::is_ready() {
        return Err("MSR access before the GHCB was set up");
    }
    let ecx = frame.rcx & 0xFFFF_FFFF;
    let (rax, rdx) = ghcb::msr(write, ecx, frame.rax & 0xFFFF_FFFF, frame.rdx & 0xFFFF_FFFF)
        .map_err(|_| "the hypervisor refused the MSR event")?;
    if !write {
        frame.rax = rax & 0xFFFF_FFFF;
        frame.rdx = rdx & 0xFFFF_FFFF;
    }
    frame.rip += 2;
    Ok(())
}

fn cpuid(frame: &mut Frame, bytes: &[u8]) -> Result<(), &'static str> {
    if !insn::is_cpuid(bytes) {
        return Err("CPUID exit at an instruction that is not cpuid");
    }
    let (leaf, subleaf) = (frame.rax as u32, frame.rcx as u32);
    let answer = match platform::cpuid_page(leaf, subleaf) {
        Some(answer) => answer,
        None if ghcb::is_ready() => {
            ghcb::cpuid(leaf, subleaf).map_err(|_| "the hypervisor refused the CPUID event")?
        }
        None => platform::cpuid_from_hypervisor(leaf),
    };
    let [eax, ebx, ecx, edx] = answer.map(u64::from);
    (frame.rax, frame.rbx, frame.rcx, frame.rdx) = (eax, ebx, ecx, edx);
    frame.rip += 2;
    Ok(())
}

/// Reports the #VC through explicit GHCB IOIO events (when a GHCB exists)
/// and terminates the guest.
fn unhandled(frame: &Frame, why: &str) -> ! {
    if ghcb::is_ready() {
        print("firmware: unhandled #VC (exit code ");
        print_hex(frame.error);
        print(", rip ");
        print_hex(frame.rip);
        print("): ");
        print(why);
        print(": terminating\n");
    }
    let code = match frame.error {
        EXIT_IOIO | EXIT_MSR | EXIT_CPUID => ghcb::TERM_VC_EVENT_FAILED,
        _ => ghcb::TERM_VC_UNHANDLED,
    };
    ghcb::terminate(ghcb::TERM_SET_UMBRA, code)
}

/// Writes `text` to COM1 with GHCB IOIO events (never raw port I/O).
pub fn print(text: &str) {
    for &b in text.as_bytes() {
        let info = insn::IoInsn {
            is_in: false,
            size: 1,
            port: PortSource::Dx,
            len: 1,
        }
        .exit_info(SERIAL_PORT);
        let _ = ghcb::ioio(info, u64::from(b));
    }
}

fn print_hex(value: u64) {
    let mut buf = [0u8; 18];
    buf[0] = b'0';
    buf[1] = b'x';
    for (i, slot) in buf[2..].iter_mut().enumerate() {
        *slot = b"0123456789abcdef"[((value >> (60 - 4 * i)) & 0xF) as usize];
    }
    if let Ok(text) = core::str::from_utf8(&buf) {
        print(text);
    }
}
