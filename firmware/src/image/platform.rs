//! Which platform the firmware runs on, and the SEV primitives it uses
//! there.
//!
//! Detection never executes CPUID before it knows the platform (under
//! SEV-ES CPUID raises #VC and its answer comes from the CPUID page): it
//! reads SEV_STATUS with a probing `rdmsr` that the #GP handler skips on a
//! host without that MSR. When SEV_STATUS says SNP, one more probe picks
//! how VMGEXIT and PVALIDATE are executed: umbra's SNP model answers
//! MSR_UMBRA_PVALIDATE itself, while on silicon the same `rdmsr` is an MSR
//! intercept and raises #VC. That is the only switch point between the
//! model's paravirtual MSRs and the real `rep vmmcall` / `pvalidate`.

use crate::exceptions::{PROBE_ARMED, PROBE_RAISED_GP, PROBE_RAISED_VC};
use crate::mem::bss;
use core::arch::asm;
use core::arch::x86_64::__cpuid_count;
use core::sync::atomic::{AtomicU32, Ordering};
use umbra_firmware::insn::cpuid_is_indexed;
use umbra_firmware::layout::{
    CPUID_PAGE_GPA, MSR_GHCB, MSR_SEV_STATUS, MSR_UMBRA_PVALIDATE, MSR_UMBRA_VMGEXIT,
};
use umbra_snp_abi::{CpuidEntry, CPUID_MAX_ENTRIES};

/// The platform the firmware found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// No memory encryption.
    Plain,
    /// SEV-SNP under umbra's software model: VMGEXIT and PVALIDATE are the
    /// model's paravirtual MSRs.
    SnpModel,
    /// SEV-SNP silicon: `rep vmmcall` and `pvalidate`.
    SnpSilicon,
}

impl Platform {
    /// Name for the banner.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Plain => "plain",
            Platform::SnpModel => "snp-model",
            Platform::SnpSilicon => "snp",
        }
    }

    /// Whether SEV-SNP is active (the firmware is an SEV-ES guest).
    pub fn is_snp(self) -> bool {
        self != Platform::Plain
    }

    fn code(self) -> u32 {
        match self {
            Platform::Plain => 1,
            Platform::SnpModel => 2,
            Platform::SnpSilicon => 3,
        }
    }
}

/// The detected platform (0: not yet). Every vCPU detects and stores the
/// same value. In the statics window: through [`bss`].
static PLATFORM: AtomicU32 = AtomicU32::new(0);

/// SEV_STATUS bit 2: SNP active.
const SEV_STATUS_SNP: u64 = 1 << 2;

/// Reads an MSR. No `nostack`: on SNP silicon an intercepted MSR raises
/// #VC, whose frame goes below RSP, so the red zone must be free here.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: callers read MSRs the platform has (detect() probes first);
    // a #VC is handled by the GHCB MSR event. No memory effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR (no `nostack`, as [`rdmsr`]).
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: callers write the SEV, umbra and APIC MSRs the platform has;
    // they change no memory the compiler knows about.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(preserves_flags))
    };
}

/// A `rdmsr` that may fault: `Err(PROBE_RAISED_GP or _VC)` when the
/// exception handlers skipped it.
fn probe_rdmsr(msr: u32) -> Result<u64, u64> {
    let (lo, hi): (u32, u32);
    let marker: u64;
    // SAFETY: R11 = PROBE_ARMED tells the #GP/#VC handlers to skip this
    // rdmsr (2 bytes) and report the vector in R11 instead of failing; the
    // IDT is installed (exceptions::install runs first). No memory effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
             inout("r11") PROBE_ARMED => marker, options(nomem, preserves_flags))
    };
    match marker {
        PROBE_ARMED => Ok((u64::from(hi) << 32) | u64::from(lo)),
        other => Err(other),
    }
}

/// Finds the platform (once per vCPU; needs the IDT) and returns it with
/// SEV_STATUS (0 where the MSR does not exist).
pub fn detect() -> (Platform, u64) {
    let status = probe_rdmsr(MSR_SEV_STATUS).unwrap_or(0);
    let platform = if status & SEV_STATUS_SNP == 0 {
        Platform::Plain
    } else {
        match probe_rdmsr(MSR_UMBRA_PVALIDATE) {
            Ok(_) => Platform::SnpModel,
            Err(PROBE_RAISED_VC) => Platform::SnpSilicon,
            // #GP: no model MSR and no #VC; SEV-ES without a GHCB to exit
            // through is not a platform this firmware can run on, but the
            // architected instructions are the right guess.
            Err(PROBE_RAISED_GP) | Err(_) => Platform::SnpSilicon,
        }
    };
    bss!(PLATFORM, AtomicU32).store(platform.code(), Ordering::Release);
    (platform, status)
}

/// The platform [`detect`] found (Plain before it ran).
pub fn current() -> Platform {
    match bss!(PLATFORM, AtomicU32).load(Ordering::Acquire) {
        2 => Platform::SnpModel,
        3 => Platform::SnpSilicon,
        _ => Platform::Plain,
    }
}

/// Hands the GHCB (the value in the GHCB MSR) to the hypervisor: VMGEXIT.
pub fn vmgexit() {
    if current() == Platform::SnpSilicon {
        // SAFETY: VMGEXIT (`rep vmmcall`, f3 0f 01 d9) on SNP silicon; the
        // hypervisor answers in the GHCB MSR or page. Never reached off
        // silicon (the probe in detect() decides).
        unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(preserves_flags)) };
    } else {
        wrmsr(MSR_UMBRA_VMGEXIT, 0);
    }
}

/// One GHCB MSR-protocol exchange: write the request, VMGEXIT, read the
/// response.
pub fn ghcb_msr_call(request: u64) -> u64 {
    wrmsr(MSR_GHCB, request);
    vmgexit();
    rdmsr(MSR_GHCB)
}

/// PVALIDATE: returns (result code, rFLAGS.CF = no RMP update).
pub fn pvalidate(gpa: u64, validate: bool, huge: bool) -> (u32, bool) {
    if current() == Platform::SnpSilicon {
        let result: u64;
        let carry: u8;
        // SAFETY: PVALIDATE (f2 0f 01 ff: RAX = address, ECX = page size,
        // EDX = validate) on SNP silicon only; it changes the RMP entry of
        // a page the caller owns, no memory the compiler knows about.
        unsafe {
            asm!(".byte 0xf2, 0x0f, 0x01, 0xff", "setc {cf}",
                 inout("rax") gpa & !0xFFF => result, in("ecx") u32::from(huge), in("edx") u32::from(validate),
                 cf = out(reg_byte) carry, options(nomem))
        };
        return (result as u32, carry != 0);
    }
    wrmsr(
        MSR_UMBRA_PVALIDATE,
        (gpa & !0xFFF) | (u64::from(validate) << 1) | u64::from(huge),
    );
    let result = rdmsr(MSR_UMBRA_PVALIDATE);
    (result as u32, result >> 63 != 0)
}

/// A CPUID-page entry for `leaf`/`subleaf`, if the page has one.
pub fn cpuid_page(leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
    // SAFETY: the CPUID page is identity-mapped private memory the launch
    // filled and the SEV firmware checked; it is only read.
    let count = unsafe { core::ptr::read_volatile(CPUID_PAGE_GPA as *const u32) } as usize;
    let entries = (CPUID_PAGE_GPA + 0x10) as *const CpuidEntry;
    (0..count.min(CPUID_MAX_ENTRIES)).find_map(|i| {
        // SAFETY: i < CPUID_MAX_ENTRIES entries of the page.
        let e = unsafe { core::ptr::read_volatile(entries.add(i)) };
        let matches = e.eax_in == leaf && (!cpuid_is_indexed(leaf) || e.ecx_in == subleaf);
        matches.then_some([e.eax, e.ebx, e.ecx, e.edx])
    })
}

/// CPUID without native CPUID under SNP: the CPUID page, else the
/// hypervisor's answer through the GHCB MSR protocol (request 0x004).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    if !current().is_snp() {
        let r = __cpuid_count(leaf, subleaf);
        return [r.eax, r.ebx, r.ecx, r.edx];
    }
    cpuid_page(leaf, subleaf).unwrap_or_else(|| cpuid_from_hypervisor(leaf))
}

/// The hypervisor's CPUID answer for `leaf`, register by register through
/// the GHCB MSR protocol; zero for a refused register.
pub fn cpuid_from_hypervisor(leaf: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (register, slot) in out.iter_mut().enumerate() {
        let response = ghcb_msr_call((u64::from(leaf) << 32) | ((register as u64) << 30) | 0x004);
        if response & 0xFFF == 0x005 && (response >> 30) & 3 == register as u64 {
            *slot = (response >> 32) as u32;
        }
    }
    out
}

/// The C-bit's position under SNP (CPUID 0x8000_001F EBX[5:0], as boot.rs
/// read it), as a page-table-entry mask; 0 on the plain platform.
pub fn c_bit_mask() -> u64 {
    if !current().is_snp() {
        return 0;
    }
    match cpuid_page(0x8000_001F, 0).map(|r| r[1] & 0x3F) {
        Some(bit) if bit >= 32 => 1 << bit,
        _ => 0,
    }
}

/// Whether this vCPU is the bootstrap processor. IA32_APIC_BASE bit 8
/// where the MSR is answered without a GHCB (plain KVM, the SNP model);
/// on SNP silicon only the bootstrap vCPU starts at the reset vector (the
/// APs are created later with their own VMSA), so the first ticket is it.
pub fn is_bootstrap(ticket: u32) -> bool {
    match current() {
        Platform::SnpSilicon => ticket == 0,
        _ => rdmsr(0x1B) & (1 << 8) != 0,
    }
}
