//! The few x86-64 instructions the guest's #VC handler decodes, and the
//! exit information an SEV-ES guest gives the hypervisor for them (AMD APM
//! vol. 2 §15.10.2 "IOIO intercept"; GHCB spec 56421 §4.1). Host-testable:
//! the image's handler (`src/image/vc.rs`) only feeds it the bytes at RIP.

/// Where a port number comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortSource {
    /// An 8-bit immediate (`in al, 0x80`).
    Immediate(u8),
    /// The DX register (`out dx, al`).
    Dx,
}

/// A decoded non-string `in`/`out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoInsn {
    /// `in` (true) or `out`.
    pub is_in: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Where the port comes from.
    pub port: PortSource,
    /// Instruction length in bytes.
    pub len: u8,
}

/// IOIO exit information bit: IN (else OUT).
pub const IOIO_TYPE_IN: u64 = 1 << 0;
/// IOIO exit information: 8-, 16- and 32-bit operand.
pub const IOIO_SZ8: u64 = 1 << 4;
pub const IOIO_SZ16: u64 = 1 << 5;
pub const IOIO_SZ32: u64 = 1 << 6;
/// IOIO exit information: 64-bit address size (the guest runs in long mode).
pub const IOIO_A64: u64 = 1 << 9;

impl IoInsn {
    /// `sw_exit_info_1` of the IOIO NAE event for this instruction on
    /// `port` (the value of DX or the immediate).
    pub fn exit_info(&self, port: u16) -> u64 {
        let size = match self.size {
            1 => IOIO_SZ8,
            2 => IOIO_SZ16,
            _ => IOIO_SZ32,
        };
        (u64::from(port) << 16) | IOIO_A64 | size | if self.is_in { IOIO_TYPE_IN } else { 0 }
    }

    /// The bits of RAX the instruction reads or writes.
    pub fn mask(&self) -> u64 {
        match self.size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => 0xFFFF_FFFF,
        }
    }

    /// RAX after an `in` returned `value`: AL and AX writes keep the rest
    /// of RAX, an EAX write zero-extends (as every 32-bit register write).
    pub fn merge_in(&self, rax: u64, value: u64) -> u64 {
        match self.size {
            4 => value & 0xFFFF_FFFF,
            _ => (rax & !self.mask()) | (value & self.mask()),
        }
    }
}

/// Decodes `in`/`out` (opcodes E4-E7 with an imm8, EC-EF with DX),
/// optionally with one 0x66 operand-size prefix. String forms and any
/// other prefix are not decoded (`None`).
pub fn decode_io(bytes: &[u8]) -> Option<IoInsn> {
    let (prefixed, rest) = match bytes.first()? {
        0x66 => (true, bytes.get(1..)?),
        _ => (false, bytes),
    };
    let opcode = *rest.first()?;
    let wide = if prefixed { 2 } else { 4 };
    let prefix_len = u8::from(prefixed);
    let (is_in, size, port, len) = match opcode {
        0xE4 => (true, 1, PortSource::Immediate(*rest.get(1)?), 2),
        0xE5 => (true, wide, PortSource::Immediate(*rest.get(1)?), 2),
        0xE6 => (false, 1, PortSource::Immediate(*rest.get(1)?), 2),
        0xE7 => (false, wide, PortSource::Immediate(*rest.get(1)?), 2),
        0xEC => (true, 1, PortSource::Dx, 1),
        0xED => (true, wide, PortSource::Dx, 1),
        0xEE => (false, 1, PortSource::Dx, 1),
        0xEF => (false, wide, PortSource::Dx, 1),
        _ => return None,
    };
    Some(IoInsn {
        is_in,
        size,
        port,
        len: len + prefix_len,
    })
}

/// `rdmsr` (0F 32).
pub fn is_rdmsr(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x0F, 0x32])
}

/// `wrmsr` (0F 30).
pub fn is_wrmsr(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x0F, 0x30])
}

/// `cpuid` (0F A2).
pub fn is_cpuid(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x0F, 0xA2])
}

/// CPUID leaves whose answer depends on ECX (the subleaf); for the others
/// a CPUID-page entry matches any ECX (Linux `snp_cpuid_get_validated_func`).
pub fn cpuid_is_indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7
            | 0xB
            | 0xD
            | 0xF
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1F
            | 0x8000_001D
            | 0x8000_0020
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_port_instructions_the_firmware_executes() {
        // out dx, al / in al, dx
        let out8 = decode_io(&[0xEE, 0x90]).unwrap();
        assert_eq!(
            (out8.is_in, out8.size, out8.port, out8.len),
            (false, 1, PortSource::Dx, 1)
        );
        let in8 = decode_io(&[0xEC]).unwrap();
        assert_eq!((in8.is_in, in8.size, in8.len), (true, 1, 1));
        // out dx, eax / in eax, dx / out dx, ax (0x66)
        assert_eq!(decode_io(&[0xEF]).unwrap().size, 4);
        assert_eq!(decode_io(&[0xED]).unwrap().size, 4);
        let out16 = decode_io(&[0x66, 0xEF]).unwrap();
        assert_eq!((out16.is_in, out16.size, out16.len), (false, 2, 2));
        // out 0x80, al / in eax, 0x71
        let imm = decode_io(&[0xE6, 0x80]).unwrap();
        assert_eq!((imm.port, imm.len), (PortSource::Immediate(0x80), 2));
        let imm32 = decode_io(&[0xE5, 0x71]).unwrap();
        assert_eq!((imm32.is_in, imm32.size), (true, 4));
        assert_eq!(decode_io(&[0x66, 0xE5, 0x71]).unwrap().len, 3);
    }

    #[test]
    fn refuses_what_it_does_not_decode() {
        for bytes in [
            &[][..],
            &[0x66][..],
            &[0xE6][..],
            &[0xF3, 0x6E][..],
            &[0x6E][..],
            &[0x90][..],
        ] {
            assert_eq!(decode_io(bytes), None, "{bytes:x?}");
        }
    }

    #[test]
    fn exit_information_follows_the_apm_ioio_format() {
        let out8 = decode_io(&[0xEE]).unwrap();
        assert_eq!(out8.exit_info(0x3F8), (0x3F8 << 16) | IOIO_A64 | IOIO_SZ8);
        let in32 = decode_io(&[0xED]).unwrap();
        assert_eq!(
            in32.exit_info(0xEC),
            (0xEC << 16) | IOIO_A64 | IOIO_SZ32 | IOIO_TYPE_IN
        );
        assert_eq!(
            decode_io(&[0x66, 0xEF]).unwrap().exit_info(0x510) & 0x70,
            IOIO_SZ16
        );
    }

    #[test]
    fn in_results_merge_like_the_instruction() {
        let in8 = decode_io(&[0xEC]).unwrap();
        assert_eq!(
            in8.merge_in(0x1122_3344_5566_7788, 0xAB),
            0x1122_3344_5566_77AB
        );
        let in16 = decode_io(&[0x66, 0xED]).unwrap();
        assert_eq!(
            in16.merge_in(0x1122_3344_5566_7788, 0xFFFF_ABCD),
            0x1122_3344_5566_ABCD
        );
        let in32 = decode_io(&[0xED]).unwrap();
        assert_eq!(
            in32.merge_in(0x1122_3344_5566_7788, 0xDEAD_BEEF),
            0xDEAD_BEEF
        );
    }

    #[test]
    fn recognises_msr_and_cpuid() {
        assert!(is_rdmsr(&[0x0F, 0x32, 0x90]));
        assert!(is_wrmsr(&[0x0F, 0x30]));
        assert!(is_cpuid(&[0x0F, 0xA2]));
        assert!(!is_rdmsr(&[0x0F]));
        assert!(cpuid_is_indexed(7) && !cpuid_is_indexed(1));
    }
}
