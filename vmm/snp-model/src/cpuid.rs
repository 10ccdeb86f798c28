//! The CPUID page (LAUNCH_UPDATE page type CPUID) and the model firmware's
//! validation of it.
//!
//! Layout: SNP ABI 56860 §8.17.2 / chapter "CPUID Reporting" (table
//! "CPUID_FUNCTION"), as used by QEMU `SnpCpuidInfo` and Linux
//! `struct snp_cpuid_table`; reference notes `kvm-sev-uapi.md` §7 and
//! `ghcb-and-guest-messages.md` §4.
//!
//! The firmware's per-leaf policy is not published (reference note
//! "unconfirmed" item 8). The model's policy, documented here, uses what is
//! known: the structural rules (COUNT <= 64, reserved fields zero, XCR0_IN /
//! XSS_IN only on leaf 0xD, a subleaf only on indexed leaves), the feature
//! bits QEMU clears because the firmware rejects them, the model CPU's
//! family/model/stepping in Fn0000_0001 EAX, and a set of leaves the model
//! CPU (Milan) has; entries for other leaves get zero outputs. On any
//! mismatch the page is rewritten with the accepted values and LAUNCH_UPDATE
//! fails with INVALID_PARAM, so the VMM can retry once with the corrected
//! table and report the differences.

pub use crate::abi::{CpuidEntry, CpuidPage, CPUID_MAX_ENTRIES as MAX_ENTRIES};

/// One value the firmware changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CpuidCorrection {
    /// Entry index, `None` for the page header or padding.
    pub index: Option<usize>,
    /// Leaf of the entry (0 for the header).
    pub leaf: u32,
    /// Subleaf of the entry as proposed.
    pub subleaf: u32,
    /// Which field.
    pub field: &'static str,
    /// Value the VMM proposed.
    pub proposed: u64,
    /// Value the firmware accepts.
    pub accepted: u64,
}

impl std::fmt::Display for CpuidCorrection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(
                f,
                "entry {i} (leaf {:#x} subleaf {:#x}) {}: {:#x} -> {:#x}",
                self.leaf, self.subleaf, self.field, self.proposed, self.accepted
            ),
            None => write!(
                f,
                "page {}: {:#x} -> {:#x}",
                self.field, self.proposed, self.accepted
            ),
        }
    }
}

/// Leaves whose ECX input selects a subleaf.
fn indexed(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7 | 0xB | 0xD | 0xF | 0x10 | 0x8000_001D | 0x8000_0020
    )
}

/// Leaves the model CPU (Milan: max standard leaf 0x10, max extended leaf
/// 0x8000_0023) reports, plus the hypervisor range, which is the VMM's own.
fn supported(leaf: u32) -> bool {
    matches!(leaf, 0x0..=0x10 | 0x4000_0000..=0x4000_00FF | 0x8000_0000..=0x8000_0023)
}

/// Output bits the firmware refuses (QEMU `target/i386/sev.c` clears them
/// before submitting): `(leaf, subleaf, register, mask)`; register 0..3 =
/// EAX, EBX, ECX, EDX.
const REFUSED_BITS: [(u32, u32, usize, u32); 4] = [
    // Fn0000_0001 ECX[24] TSC-deadline timer.
    (0x1, 0, 2, 1 << 24),
    // Fn0000_0007_0 EBX[1] IA32_TSC_ADJUST.
    (0x7, 0, 1, 1 << 1),
    // Fn0000_0007_0 EDX[31:26] SPEC_CTRL, STIBP, FLUSH_L1D,
    // ARCH_CAPABILITIES, CORE_CAPABILITIES, SSBD.
    (0x7, 0, 3, 0xFC00_0000),
    // Fn8000_0008 EBX[25] VIRT_SSBD.
    (0x8000_0008, 0, 1, 1 << 25),
];

const REGS: [&str; 4] = ["EAX", "EBX", "ECX", "EDX"];

struct Fixer<'a> {
    out: &'a mut Vec<CpuidCorrection>,
    index: usize,
    leaf: u32,
    subleaf: u32,
}

impl Fixer<'_> {
    fn fix<T: Copy + Into<u64> + PartialEq>(&mut self, field: &'static str, v: &mut T, want: T) {
        if *v != want {
            self.out.push(CpuidCorrection {
                index: Some(self.index),
                leaf: self.leaf,
                subleaf: self.subleaf,
                field,
                proposed: (*v).into(),
                accepted: want.into(),
            });
            *v = want;
        }
    }
}

/// Validates the CPUID page in `page` for a platform whose Fn0000_0001 EAX
/// is `fms`. Returns the corrections, having written the accepted table into
/// `page`; an empty list means the page was accepted unchanged.
pub fn validate(page: &mut [u8; 4096], fms: u32) -> Vec<CpuidCorrection> {
    let mut table: CpuidPage = zerocopy::transmute!(*page);
    let out = validate_table(&mut table, fms);
    *page = zerocopy::transmute!(table);
    out
}

fn validate_table(table: &mut CpuidPage, fms: u32) -> Vec<CpuidCorrection> {
    let mut out = Vec::new();
    let header = |field, proposed: u64, out: &mut Vec<CpuidCorrection>| {
        out.push(CpuidCorrection {
            index: None,
            leaf: 0,
            subleaf: 0,
            field,
            proposed,
            accepted: if field == "COUNT" {
                MAX_ENTRIES as u64
            } else {
                0
            },
        });
    };
    if table.count as usize > MAX_ENTRIES {
        header("COUNT", u64::from(table.count), &mut out);
        table.count = MAX_ENTRIES as u32;
    }
    if table.reserved0 != 0 {
        header("reserved 0x4", u64::from(table.reserved0), &mut out);
        table.reserved0 = 0;
    }
    if table.reserved1 != 0 {
        header("reserved 0x8", table.reserved1, &mut out);
        table.reserved1 = 0;
    }
    if table.padding.iter().any(|&b| b != 0) {
        header("bytes 0xC10..0x1000", 1, &mut out);
        table.padding.fill(0);
    }
    let count = table.count as usize;
    for (index, e) in table.entries.iter_mut().enumerate() {
        if index >= count {
            // Entries past COUNT are reserved.
            if *e != CpuidEntry::default() {
                header("entry past COUNT", u64::from(e.eax_in), &mut out);
                *e = CpuidEntry::default();
            }
            continue;
        }
        let mut f = Fixer {
            out: &mut out,
            index,
            leaf: e.eax_in,
            subleaf: e.ecx_in,
        };
        let leaf = e.eax_in;
        f.fix("reserved", &mut e.reserved, 0);
        if leaf != 0xD {
            f.fix("XCR0_IN", &mut e.xcr0_in, 0);
            f.fix("XSS_IN", &mut e.xss_in, 0);
        }
        if !indexed(leaf) {
            f.fix("ECX_IN", &mut e.ecx_in, 0);
        }
        if !supported(leaf) {
            f.fix("EAX", &mut e.eax, 0);
            f.fix("EBX", &mut e.ebx, 0);
            f.fix("ECX", &mut e.ecx, 0);
            f.fix("EDX", &mut e.edx, 0);
            continue;
        }
        if leaf == 0x1 {
            f.fix("EAX", &mut e.eax, fms);
        }
        if leaf == 0x8000_001F {
            // The C-bit position is the platform's, not the VMM's to choose.
            let want = (e.ebx & !0x3F) | crate::psp::MODEL_C_BIT;
            f.fix("EBX", &mut e.ebx, want);
        }
        for (l, sub, reg, mask) in REFUSED_BITS {
            if leaf == l && e.ecx_in == sub {
                let r = match reg {
                    0 => &mut e.eax,
                    1 => &mut e.ebx,
                    2 => &mut e.ecx,
                    _ => &mut e.edx,
                };
                let want = *r & !mask;
                f.fix(REGS[reg], r, want);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    const FMS: u32 = 0x00A0_0F11;

    fn page(entries: &[CpuidEntry]) -> [u8; 4096] {
        let mut t = CpuidPage::new_zeroed();
        t.count = entries.len() as u32;
        t.entries[..entries.len()].copy_from_slice(entries);
        zerocopy::transmute!(t)
    }

    fn entry(leaf: u32, subleaf: u32) -> CpuidEntry {
        CpuidEntry {
            eax_in: leaf,
            ecx_in: subleaf,
            ..CpuidEntry::default()
        }
    }

    #[test]
    fn a_table_prepared_like_qemu_is_accepted_unchanged() {
        let mut leaf1 = entry(1, 0);
        leaf1.eax = FMS;
        leaf1.ecx = 0x7ED8_320B; // TSC-deadline (bit 24) already cleared
        let mut xsave = entry(0xD, 0);
        (xsave.xcr0_in, xsave.ebx) = (1, 0x240);
        let mut sev = entry(0x8000_001F, 0);
        sev.eax = 0x1B;
        sev.ebx = crate::psp::MODEL_C_BIT;
        let mut p = page(&[
            entry(0, 0),
            leaf1,
            entry(7, 0),
            xsave,
            sev,
            entry(0x4000_0000, 0),
        ]);
        let before = p;
        assert_eq!(validate(&mut p, FMS), vec![]);
        assert_eq!(p, before);
    }

    #[test]
    fn structural_errors_are_corrected() {
        let mut e0 = entry(1, 5); // leaf 1 is not indexed
        (e0.eax, e0.xcr0_in, e0.reserved) = (FMS, 3, 9);
        let mut e1 = entry(0x14, 0); // not a Milan leaf: outputs zeroed
        e1.ebx = 0xFFFF;
        let mut e2 = entry(0x8000_0008, 0);
        e2.ebx = 1 << 25 | 1 << 12; // VIRT_SSBD refused, bit 12 kept
        let mut p = page(&[e0, e1, e2]);
        p[4] = 1; // reserved header byte
        p[0x10 + 3 * 0x30] = 0x42; // an entry past COUNT
        let fixes = validate(&mut p, FMS);
        let fields: Vec<_> = fixes.iter().map(|f| (f.index, f.field)).collect();
        assert_eq!(
            fields,
            vec![
                (None, "reserved 0x4"),
                (Some(0), "reserved"),
                (Some(0), "XCR0_IN"),
                (Some(0), "ECX_IN"),
                (Some(1), "EBX"),
                (Some(2), "EBX"),
                (None, "entry past COUNT"),
            ]
        );
        let t: CpuidPage = zerocopy::transmute!(p);
        assert_eq!(t.entries[2].ebx, 1 << 12);
        assert_eq!(t.entries[3], CpuidEntry::default());
        // The corrected page validates cleanly.
        assert!(validate(&mut p, FMS).is_empty());
        assert!(fixes[0].to_string().contains("reserved 0x4"));
    }
}
