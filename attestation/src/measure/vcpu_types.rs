//! vCPU types and their CPUID signatures (the value QEMU puts in RDX at reset).

/// CPUID Fn0000_0001_EAX signature from family, model and stepping (AMD pub.
/// 25481): `ext_family << 20 | ext_model << 16 | base_family << 8 | model << 4 | stepping`.
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU CPU models with their (family, model, stepping), as sev-snp-measure lists them.
pub const VCPU_TYPES: &[(&str, (u32, u32, u32))] = &[
    ("EPYC", (23, 1, 2)),
    ("EPYC-v1", (23, 1, 2)),
    ("EPYC-v2", (23, 1, 2)),
    ("EPYC-IBPB", (23, 1, 2)),
    ("EPYC-v3", (23, 1, 2)),
    ("EPYC-v4", (23, 1, 2)),
    ("EPYC-Rome", (23, 49, 0)),
    ("EPYC-Rome-v1", (23, 49, 0)),
    ("EPYC-Rome-v2", (23, 49, 0)),
    ("EPYC-Rome-v3", (23, 49, 0)),
    ("EPYC-Milan", (25, 1, 1)),
    ("EPYC-Milan-v1", (25, 1, 1)),
    ("EPYC-Milan-v2", (25, 1, 1)),
    ("EPYC-Genoa", (25, 17, 0)),
    ("EPYC-Genoa-v1", (25, 17, 0)),
    ("EPYC-Turin", (26, 0, 0)),
];

/// The CPUID signature of a named QEMU CPU model.
pub fn vcpu_sig_of(name: &str) -> Option<u32> {
    VCPU_TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, (f, m, s))| cpu_sig(f, m, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_reference_table() {
        // Reference doc §5, vCPU signature table.
        assert_eq!(vcpu_sig_of("EPYC-v4"), Some(0x800f12));
        assert_eq!(vcpu_sig_of("EPYC-Rome"), Some(0x830f10));
        assert_eq!(vcpu_sig_of("EPYC-Milan"), Some(0xa00f11));
        assert_eq!(vcpu_sig_of("EPYC-Genoa"), Some(0xa10f10));
        assert_eq!(vcpu_sig_of("EPYC-Turin"), Some(0xb00f00));
        assert_eq!(vcpu_sig_of("Skylake"), None);
    }
}
