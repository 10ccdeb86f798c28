//! The VMSA (VMCB save area of an SEV-ES/SNP vCPU) and its initial contents.
//!
//! Layout: AMD APM vol. 2 table B-4 (the kernel's `struct sev_es_save_area`);
//! initial values: QEMU's reset state as KVM (6.10+, INIT2) encrypts it, and
//! the EC2 / GCE variants (reference doc §5).

use std::str::FromStr;

use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout};

use super::gctx::PAGE_SIZE;

/// A VMCB segment register (`struct vmcb_seg`).
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable, KnownLayout, zerocopy::FromBytes)]
#[repr(C)]
pub struct VmcbSeg {
    /// Selector.
    pub selector: u16,
    /// Attributes (VMCB packed form).
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

impl VmcbSeg {
    const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Self {
            selector,
            attrib,
            limit,
            base,
        }
    }
}

const _: () = assert!(core::mem::size_of::<VmcbSeg>() == 16);

/// The SEV-ES save area: one 4 KiB VMSA page (APM vol. 2 table B-4).
#[derive(Debug, Clone, IntoBytes, Immutable, KnownLayout, zerocopy::FromBytes)]
#[repr(C)]
#[allow(missing_docs)]
pub struct SevEsSaveArea {
    pub es: VmcbSeg,
    pub cs: VmcbSeg,
    pub ss: VmcbSeg,
    pub ds: VmcbSeg,
    pub fs: VmcbSeg,
    pub gs: VmcbSeg,
    pub gdtr: VmcbSeg,
    pub ldtr: VmcbSeg,
    pub idtr: VmcbSeg,
    pub tr: VmcbSeg,
    pub vmpl0_ssp: u64,
    pub vmpl1_ssp: u64,
    pub vmpl2_ssp: u64,
    pub vmpl3_ssp: u64,
    pub u_cet: u64,
    pub reserved_0xc8: [u8; 2],
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    pub efer: u64,
    pub reserved_0xd8: [u8; 104],
    pub xss: u64,
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub dr0: u64,
    pub dr1: u64,
    pub dr2: u64,
    pub dr3: u64,
    pub dr0_addr_mask: u64,
    pub dr1_addr_mask: u64,
    pub dr2_addr_mask: u64,
    pub dr3_addr_mask: u64,
    pub reserved_0x1c0: [u8; 24],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    pub g_pat: u64,
    pub dbgctrl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 80],
    pub pkru: u32,
    pub tsc_aux: u32,
    pub reserved_0x2f0: [u8; 24],
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub reserved_0x320: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub reserved_0x380: [u8; 16],
    pub guest_exit_info_1: u64,
    pub guest_exit_info_2: u64,
    pub guest_exit_int_info: u64,
    pub guest_nrip: u64,
    pub sev_features: u64,
    pub vintr_ctrl: u64,
    pub guest_exit_code: u64,
    pub virtual_tom: u64,
    pub tlb_id: u64,
    pub pcpu_id: u64,
    pub event_inj: u64,
    pub xcr0: u64,
    pub reserved_0x3f0: [u8; 16],
    pub x87_dp: u64,
    pub mxcsr: u32,
    pub x87_ftw: u16,
    pub x87_fsw: u16,
    pub x87_fcw: u16,
    pub x87_fop: u16,
    pub x87_ds: u16,
    pub x87_cs: u16,
    pub x87_rip: u64,
    pub fpreg_x87: [u8; 80],
    pub fpreg_xmm: [u8; 256],
    pub fpreg_ymm: [u8; 256],
    pub manual_padding: [u8; 2448],
}

// APM vol. 2 table B-4: the save area fills exactly one 4 KiB page.
const _: () = assert!(core::mem::size_of::<SevEsSaveArea>() == PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, efer) == 0xD0);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, cr4) == 0x148);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, rip) == 0x178);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, g_pat) == 0x268);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, rdx) == 0x310);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, sev_features) == 0x3B0);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, xcr0) == 0x3E8);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, mxcsr) == 0x408);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, x87_fcw) == 0x410);
const _: () = assert!(core::mem::offset_of!(SevEsSaveArea, fpreg_ymm) == 0x570);

impl SevEsSaveArea {
    /// An all-zero save area.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }

    /// The 4 KiB page as KVM encrypts it.
    pub fn as_page(&self) -> &[u8; PAGE_SIZE] {
        // The const assertion above makes the size exact.
        zerocopy::transmute_ref!(self)
    }
}

/// Which hypervisor's initial vCPU state to model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmmType {
    /// QEMU with KVM (the default).
    #[default]
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

impl FromStr for VmmType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "QEMU" | "qemu" => Ok(VmmType::Qemu),
            "ec2" | "EC2" => Ok(VmmType::Ec2),
            "gce" | "GCE" => Ok(VmmType::Gce),
            _ => Err(format!("unknown VMM type '{s}'")),
        }
    }
}

/// Reset EIP of the bootstrap processor.
pub const BSP_EIP: u32 = 0xFFFF_FFF0;

/// Builds the save area of a vCPU starting in real mode at `eip` (QEMU reset
/// state; the BSP uses [`BSP_EIP`], APs the SEV-ES reset block EIP).
pub fn build_save_area(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> SevEsSaveArea {
    let mut g_pat = 0x0007_0406_0007_0406; // PAT MSR reset value, APM vol. 2 §A.3
    let (cs_attr, ss_attr, tr_attr, rdx, mxcsr, fcw) = match vmm {
        VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(vcpu_sig), 0x1f80, 0x37f),
        VmmType::Ec2 => {
            let cs = if eip == BSP_EIP { 0x9a } else { 0x9b };
            (cs, 0x92, 0x83, 0x600, 0, 0)
        }
        VmmType::Gce => {
            g_pat = 0x0007_0106;
            (0x9b, 0x93, 0x8b, 0x600, 0, 0)
        }
    };
    let mut s = SevEsSaveArea::zeroed();
    s.es = VmcbSeg::new(0, 0x93, 0xffff, 0);
    s.cs = VmcbSeg::new(0xf000, cs_attr, 0xffff, u64::from(eip & 0xffff_0000));
    s.ss = VmcbSeg::new(0, ss_attr, 0xffff, 0);
    s.ds = VmcbSeg::new(0, 0x93, 0xffff, 0);
    s.fs = VmcbSeg::new(0, 0x93, 0xffff, 0);
    s.gs = VmcbSeg::new(0, 0x93, 0xffff, 0);
    s.gdtr = VmcbSeg::new(0, 0, 0xffff, 0);
    s.idtr = VmcbSeg::new(0, 0, 0xffff, 0);
    s.ldtr = VmcbSeg::new(0, 0x82, 0xffff, 0);
    s.tr = VmcbSeg::new(0, tr_attr, 0xffff, 0);
    s.efer = 0x1000; // KVM sets EFER.SVME
    s.cr4 = 0x40; // KVM sets CR4.MCE
    s.cr0 = 0x10;
    s.dr7 = 0x400;
    s.dr6 = 0xffff_0ff0;
    s.rflags = 0x2;
    s.rip = u64::from(eip & 0xffff);
    s.g_pat = g_pat;
    s.rdx = rdx;
    s.sev_features = sev_features;
    s.xcr0 = 0x1;
    s.mxcsr = mxcsr;
    s.x87_fcw = fcw;
    s
}

/// Builds the flat 32-bit protected-mode save area Coconut-SVSM's QEMU uses
/// for every vCPU (`snp:svsm` mode; sev-snp-measure `VMSA_SVSM`, which leaves
/// the x87 control word at zero).
pub fn build_svsm_save_area(eip: u64, sev_features: u64, vcpu_sig: u32) -> SevEsSaveArea {
    let mut s = SevEsSaveArea::zeroed();
    s.es = VmcbSeg::new(16, 0xc93, 0xffff_ffff, 0);
    s.cs = VmcbSeg::new(8, 0xc9b, 0xffff_ffff, 0);
    s.ss = VmcbSeg::new(16, 0xc93, 0xffff_ffff, 0);
    s.ds = VmcbSeg::new(16, 0xc93, 0xffff_ffff, 0);
    s.fs = VmcbSeg::new(16, 0xc93, 0xffff_ffff, 0);
    s.gs = VmcbSeg::new(0, 0x093, 0xffff, 0);
    s.gdtr = VmcbSeg::new(0, 0, 0xffff, 0);
    s.idtr = VmcbSeg::new(0, 0, 0xffff, 0);
    s.ldtr = VmcbSeg::new(0, 0x82, 0xffff, 0);
    s.tr = VmcbSeg::new(0, 0x8b, 0xffff, 0);
    s.efer = 0x1000;
    s.cr4 = 0x40;
    s.cr0 = 0x11;
    s.dr7 = 0x400;
    s.dr6 = 0xffff_0ff0;
    s.rflags = 0x2;
    s.rip = eip;
    s.g_pat = 0x0007_0406_0007_0406;
    s.rdx = u64::from(vcpu_sig);
    s.sev_features = sev_features;
    s.xcr0 = 0x1;
    s.mxcsr = 0x1f80;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_bsp_fields_at_reference_offsets() {
        let s = build_save_area(BSP_EIP, 0x21, 0x800f12, VmmType::Qemu);
        let p = s.as_page();
        let u64_at = |o: usize| u64::from_le_bytes(p[o..o + 8].try_into().unwrap_or([0; 8]));
        // Reference doc §5 table.
        assert_eq!(&p[0x10..0x12], &0xf000u16.to_le_bytes());
        assert_eq!(&p[0x12..0x14], &0x9bu16.to_le_bytes());
        assert_eq!(u64_at(0x18), 0xffff_0000);
        assert_eq!(u64_at(0x178), 0xfff0);
        assert_eq!(u64_at(0x310), 0x800f12);
        assert_eq!(u64_at(0x3B0), 0x21);
        assert_eq!(u64_at(0x268), 0x0007040600070406);
        assert_eq!(&p[0x408..0x40C], &0x1f80u32.to_le_bytes());
        assert_eq!(&p[0x410..0x412], &0x37fu16.to_le_bytes());
    }
}
