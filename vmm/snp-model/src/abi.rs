//! The SEV-SNP wire types and codes that the firmware model, the hardware
//! backend's UAPI and the VMM share, defined once: firmware status codes
//! (SNP ABI 56860 table "Status Codes", Linux `psp-sev.h` `SEV_RET_*`),
//! page types and sizes, and the CPUID page (SNP ABI 56860 "CPUID
//! Reporting", QEMU `SnpCpuidInfo`, Linux `struct snp_cpuid_table`). The
//! attestation report layout lives with its parser in `umbra-attestation`.

use serde::Serialize;

pub use umbra_attestation::measure::gctx::PageType;

pub use umbra_snp_abi::{CpuidEntry, CpuidPage, FirmwareStatus, CPUID_MAX_ENTRIES};

/// Bytes in a small page.
pub const PAGE_4K: u64 = 4096;
/// Bytes in a large page.
pub const PAGE_2M: u64 = 2 << 20;

/// The page size of a conversion request (GHCB PSC entry bit 56).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PageSize {
    /// 4 KiB.
    Size4K,
    /// 2 MiB: the request must be 2 MiB aligned and a multiple of 2 MiB.
    Size2M,
}

impl PageSize {
    /// Bytes in one page of this size.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_4K,
            PageSize::Size2M => PAGE_2M,
        }
    }
}
