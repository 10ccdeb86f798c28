//! The model as strict as silicon: on an SEV-ES/SNP guest, a port I/O
//! instruction does not exit to the hypervisor, it raises #VC (vector 29,
//! error code = the SVM exit code) inside the guest, whose handler then asks
//! for the access through the GHCB. KVM here hands the model an ordinary
//! port exit instead, so the model delivers the #VC itself, as the CPU
//! would: through the guest's IDT, on the current stack, with RIP at the
//! faulting instruction (AMD APM vol. 2 §8.9.3, "Long-Mode Interrupt
//! Control Transfers"). KVM's pending port completion is then skipped,
//! because it checks that RIP has not moved.
//!
//! Where KVM leaves RIP at a port exit differs: with fast PIO it is at the
//! instruction and the completion on the next KVM_RUN skips it; under KVM's
//! instruction emulator (all guest code on the CI machines) an OUT has
//! already advanced RIP, and an IN is completed without looking at RIP. So
//! the model first lets KVM complete the pending access (a KVM_RUN with
//! `immediate_exit`), then puts every register back as it was at the exit:
//! if the completion moved RIP, the exit's RIP was the instruction's; if it
//! did not, the instruction ended at RIP and is found by matching the one
//! port instruction that ends there with this port, size and DX.
//!
//! The delivery is done in software because this host's KVM cannot inject
//! vector 29 with an error code. It supports what umbra's firmware uses:
//! long mode, a 64-bit interrupt or trap gate with IST 0 and the current
//! code segment. Anything else is a fidelity violation the run stops on.
//! One deviation: 128 bytes are skipped below RSP first, because the
//! firmware (like any x86-64 userspace-ABI code) may keep a red zone there;
//! hardware does not skip it, which is why kernels build without one.

use crate::memory::GuestRam;
use kvm_ioctls::VcpuFd;
use thiserror::Error;

/// #VC.
pub(crate) const VC_VECTOR: u64 = 29;
/// SVM exit codes used as #VC error codes (AMD APM vol. 2 appendix C).
pub(crate) const SVM_EXIT_IOIO: u64 = 0x7B;
/// Nested page fault: what an MMIO access to unencrypted memory raises.
pub(crate) const SVM_EXIT_NPF: u64 = 0x400;

const EFER_LMA: u64 = 1 << 10;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_NT: u64 = 1 << 14;
const RFLAGS_RF: u64 = 1 << 16;
const RED_ZONE: u64 = 128;
/// Address bits of a page-table entry, without the C-bit (52) and NX (63).
const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Why the model could not deliver a #VC.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum DeliveryError {
    /// A register ioctl failed.
    #[error("cannot read or write the vCPU's registers (errno {0})")]
    AccessRegisters(i32),
    /// The guest is not in long mode.
    #[error("the vCPU is not in long mode")]
    CheckLongMode,
    /// The IDT has no usable gate for vector 29.
    #[error("the IDT has no present 64-bit gate for vector 29 (no #VC handler)")]
    FindGate,
    /// The gate asks for what the model does not deliver.
    #[error("the #VC gate uses an IST stack or another code segment ({0})")]
    CheckGate(&'static str),
    /// A guest virtual address did not translate.
    #[error("guest address {0:#x} is not mapped")]
    Translate(u64),
    /// No single port instruction ends at the exit's RIP.
    #[error("no port instruction for this access ends at {0:#x}")]
    FindInstruction(u64),
}

/// A 4-level page walk of `va` under `cr3` (4 KiB, 2 MiB and 1 GiB pages).
fn translate(ram: &GuestRam, cr3: u64, va: u64) -> Result<u64, DeliveryError> {
    let mut table = cr3 & PTE_ADDR;
    for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
        let index = (va >> shift) & 0x1FF;
        let mut entry = [0u8; 8];
        if !ram.firmware_read(table + index * 8, &mut entry) {
            return Err(DeliveryError::Translate(va));
        }
        let entry = u64::from_le_bytes(entry);
        if entry & 1 == 0 {
            return Err(DeliveryError::Translate(va));
        }
        let huge = entry & (1 << 7) != 0 && (level == 3 || level == 2);
        if huge || level == 1 {
            let offset_mask = (1u64 << shift) - 1;
            return Ok((entry & PTE_ADDR & !offset_mask) | (va & offset_mask));
        }
        table = entry & PTE_ADDR;
    }
    Err(DeliveryError::Translate(va))
}

fn read_va(ram: &GuestRam, cr3: u64, va: u64, buf: &mut [u8]) -> Result<(), DeliveryError> {
    let gpa = translate(ram, cr3, va)?;
    // Never straddle a page: the next page may map elsewhere.
    if (gpa & 0xFFF) + buf.len() as u64 > 0x1000 || !ram.firmware_read(gpa, buf) {
        return Err(DeliveryError::Translate(va));
    }
    Ok(())
}

fn write_u64_va(ram: &GuestRam, cr3: u64, va: u64, value: u64) -> Result<(), DeliveryError> {
    let gpa = translate(ram, cr3, va)?;
    if (gpa & 0xFFF) + 8 > 0x1000 || !ram.firmware_write(gpa, &value.to_le_bytes()) {
        return Err(DeliveryError::Translate(va));
    }
    Ok(())
}

/// The port access that exited, as KVM reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PortAccess {
    /// The port.
    pub(crate) port: u16,
    /// 1, 2 or 4 bytes.
    pub(crate) size: usize,
    /// OUT (else IN).
    pub(crate) write: bool,
}

/// The port instruction that ends at `end` (the bytes before it are
/// `before`, the last byte last) and performs `access` with `dx`: its
/// length, if exactly one form matches.
pub(crate) fn port_insn_len(before: &[u8; 3], access: PortAccess, dx: u16) -> Option<u64> {
    let (imm, dx_form) = match (access.write, access.size) {
        (true, 1) => (0xE6, 0xEE),
        (true, _) => (0xE7, 0xEF),
        (false, 1) => (0xE4, 0xEC),
        (false, _) => (0xE5, 0xED),
    };
    let needs_66 = access.size == 2;
    let mut found = Vec::new();
    // `op dx` forms: [66] op.
    if before[2] == dx_form && dx == access.port {
        let prefixed = before[1] == 0x66;
        if prefixed == needs_66 {
            found.push(if prefixed { 2 } else { 1 });
        }
    }
    // `op imm8` forms: [66] op imm8.
    if before[1] == imm && u16::from(before[2]) == access.port {
        let prefixed = before[0] == 0x66;
        if prefixed == needs_66 {
            found.push(if prefixed { 3 } else { 2 });
        }
    }
    match found.as_slice() {
        [len] => Some(*len),
        _ => None,
    }
}

/// Lets KVM complete the pending port access, restores the registers of
/// the exit and returns the RIP of the faulting instruction.
pub(crate) fn fault_rip(
    fd: &mut VcpuFd,
    ram: &GuestRam,
    access: PortAccess,
) -> Result<u64, DeliveryError> {
    let errno = |e: kvm_ioctls::Error| DeliveryError::AccessRegisters(e.errno());
    let at_exit = fd.get_regs().map_err(errno)?;
    fd.set_kvm_immediate_exit(1);
    // Returns EINTR at once, after the completion; nothing else runs.
    let _ = fd.run();
    fd.set_kvm_immediate_exit(0);
    let completed = fd.get_regs().map_err(errno)?;
    fd.set_regs(&at_exit).map_err(errno)?;
    if completed.rip != at_exit.rip {
        return Ok(at_exit.rip);
    }
    let sregs = fd.get_sregs().map_err(errno)?;
    let mut before = [0u8; 3];
    read_va(ram, sregs.cr3, at_exit.rip.wrapping_sub(3), &mut before)?;
    port_insn_len(&before, access, at_exit.rdx as u16)
        .map(|len| at_exit.rip - len)
        .ok_or(DeliveryError::FindInstruction(at_exit.rip))
}

/// Delivers #VC with `error_code` to the vCPU at the faulting instruction
/// `rip`.
pub(crate) fn deliver(
    fd: &VcpuFd,
    ram: &GuestRam,
    error_code: u64,
    rip: u64,
) -> Result<(), DeliveryError> {
    let errno = |e: kvm_ioctls::Error| DeliveryError::AccessRegisters(e.errno());
    let mut regs = fd.get_regs().map_err(errno)?;
    regs.rip = rip;
    let sregs = fd.get_sregs().map_err(errno)?;
    if sregs.efer & EFER_LMA == 0 || sregs.cs.l == 0 {
        return Err(DeliveryError::CheckLongMode);
    }
    if u64::from(sregs.idt.limit) < VC_VECTOR * 16 + 15 {
        return Err(DeliveryError::FindGate);
    }
    let mut gate = [0u8; 16];
    read_va(ram, sregs.cr3, sregs.idt.base + VC_VECTOR * 16, &mut gate)?;
    let word = |i: usize| u64::from(u16::from_le_bytes([gate[i], gate[i + 1]]));
    let selector = word(2) as u16;
    let (ist, attributes) = (gate[4] & 7, gate[5]);
    let present = attributes & 0x80 != 0;
    let kind = attributes & 0xF;
    if !present || !(kind == 0xE || kind == 0xF) {
        return Err(DeliveryError::FindGate);
    }
    if ist != 0 {
        return Err(DeliveryError::CheckGate("IST"));
    }
    if selector != sregs.cs.selector {
        return Err(DeliveryError::CheckGate("code segment"));
    }
    let high = u64::from(u32::from_le_bytes([gate[8], gate[9], gate[10], gate[11]]));
    let handler = word(0) | (word(6) << 16) | (high << 32);
    // The frame: SS, RSP, RFLAGS, CS, RIP, error code; RSP aligned to 16.
    let mut rsp = (regs.rsp.wrapping_sub(RED_ZONE)) & !0xF;
    for value in [
        u64::from(sregs.ss.selector),
        regs.rsp,
        regs.rflags,
        u64::from(sregs.cs.selector),
        regs.rip,
        error_code,
    ] {
        rsp = rsp.wrapping_sub(8);
        write_u64_va(ram, sregs.cr3, rsp, value)?;
    }
    regs.rsp = rsp;
    regs.rip = handler;
    regs.rflags &= !(RFLAGS_TF | RFLAGS_NT | RFLAGS_RF);
    if kind == 0xE {
        regs.rflags &= !RFLAGS_IF;
    }
    fd.set_regs(&regs).map_err(errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT_BYTE: PortAccess = PortAccess {
        port: 0x3F8,
        size: 1,
        write: true,
    };

    #[test]
    fn the_port_instruction_before_rip_is_matched_by_port_size_and_dx() {
        // out dx, al with DX = 0x3F8.
        assert_eq!(port_insn_len(&[0x90, 0x90, 0xEE], OUT_BYTE, 0x3F8), Some(1));
        // ... but not when DX names another port.
        assert_eq!(port_insn_len(&[0x90, 0x90, 0xEE], OUT_BYTE, 0x80), None);
        // out 0x80, al.
        let port80 = PortAccess {
            port: 0x80,
            ..OUT_BYTE
        };
        assert_eq!(port_insn_len(&[0x90, 0xE6, 0x80], port80, 0), Some(2));
        // out dx, ax needs the operand-size prefix; out dx, eax must not have it.
        let word = PortAccess {
            size: 2,
            ..OUT_BYTE
        };
        let dword = PortAccess {
            size: 4,
            ..OUT_BYTE
        };
        assert_eq!(port_insn_len(&[0x90, 0x66, 0xEF], word, 0x3F8), Some(2));
        assert_eq!(port_insn_len(&[0x90, 0x66, 0xEF], dword, 0x3F8), None);
        assert_eq!(port_insn_len(&[0x90, 0x90, 0xEF], dword, 0x3F8), Some(1));
        // in eax, dx after out dx, eax: the IN's opcode does not match an OUT.
        assert_eq!(port_insn_len(&[0x90, 0xEF, 0xED], dword, 0x3F8), None);
        // in al, dx.
        let input = PortAccess {
            write: false,
            ..OUT_BYTE
        };
        assert_eq!(port_insn_len(&[0x90, 0x90, 0xEC], input, 0x3F8), Some(1));
        // Ambiguous: E6 EE could be `out 0xEE, al` or `out dx, al` with
        // DX = port = 0xEE; refused rather than guessed.
        let ee = PortAccess {
            port: 0xEE,
            ..OUT_BYTE
        };
        assert_eq!(port_insn_len(&[0x90, 0xE6, 0xEE], ee, 0xEE), None);
    }
}
