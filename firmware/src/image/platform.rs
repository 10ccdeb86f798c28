//! Which platform the firmware runs on, and the SEV primitives it uses
//! there. Detection never touches an MSR the host may not implement: the
//! SNP model announces itself in umbra's hypervisor CPUID leaf first.

use core::arch::asm;
use core::arch::x86_64::__cpuid;
use umbra_firmware::layout::{
    MSR_GHCB, MSR_SEV_STATUS, MSR_UMBRA_PVALIDATE, MSR_UMBRA_VMGEXIT, UMBRA_CPUID_FEATURES,
    UMBRA_CPUID_LEAF, UMBRA_FEATURE_SNP_MODEL,
};

/// The platform the firmware found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// No memory encryption.
    Plain,
    /// umbra's software model of the SNP firmware (SEV_STATUS says SNP).
    SnpModel,
}

impl Platform {
    /// Name for the banner.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Plain => "plain",
            Platform::SnpModel => "snp-model",
        }
    }
}

/// Reads an MSR.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called for MSRs the platform announced (detect()); rdmsr
    // has no memory effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only called for the SEV/umbra MSRs the platform announced; the
    // VMM handles them and they change no memory the compiler knows about.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Finds the platform; reads SEV_STATUS only where the model announced it.
pub fn detect() -> (Platform, u64) {
    let leaf = __cpuid(UMBRA_CPUID_LEAF);
    let signed = leaf.ebx == u32::from_le_bytes(*b"Umbr")
        && leaf.ecx == u32::from_le_bytes(*b"aUmb")
        && leaf.edx == u32::from_le_bytes(*b"raVM");
    if !signed || leaf.eax < UMBRA_CPUID_FEATURES {
        return (Platform::Plain, 0);
    }
    if __cpuid(UMBRA_CPUID_FEATURES).eax & UMBRA_FEATURE_SNP_MODEL == 0 {
        return (Platform::Plain, 0);
    }
    let status = rdmsr(MSR_SEV_STATUS);
    if status & (1 << 2) != 0 {
        (Platform::SnpModel, status)
    } else {
        (Platform::Plain, status)
    }
}

/// One GHCB MSR-protocol exchange: write the request, "VMGEXIT" (the
/// model's paravirtual MSR), read the response.
pub fn ghcb_msr_call(request: u64) -> u64 {
    wrmsr(MSR_GHCB, request);
    wrmsr(MSR_UMBRA_VMGEXIT, 0);
    rdmsr(MSR_GHCB)
}

/// PVALIDATE through the model: returns (result code, rFLAGS.CF).
pub fn pvalidate(gpa: u64, validate: bool, huge: bool) -> (u32, bool) {
    wrmsr(
        MSR_UMBRA_PVALIDATE,
        (gpa & !0xFFF) | (u64::from(validate) << 1) | u64::from(huge),
    );
    let result = rdmsr(MSR_UMBRA_PVALIDATE);
    (result as u32, result >> 63 != 0)
}
