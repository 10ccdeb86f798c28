//! The SEV-SNP wire types and codes that the firmware model, the hardware
//! backend's UAPI and the VMM share, defined once: firmware status codes
//! (SNP ABI 56860 table "Status Codes", Linux `psp-sev.h` `SEV_RET_*`),
//! page types and sizes, and the CPUID page (SNP ABI 56860 "CPUID
//! Reporting", QEMU `SnpCpuidInfo`, Linux `struct snp_cpuid_table`). The
//! attestation report layout lives with its parser in `umbra-attestation`.

use serde::Serialize;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub use umbra_attestation::measure::gctx::PageType;

/// SEV firmware status codes (SEV-SNP ABI spec 56860, table "Status Codes";
/// the values are those of Linux `include/uapi/linux/psp-sev.h` `SEV_RET_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FirmwareStatus {
    /// 0x01
    InvalidPlatformState = 0x01,
    /// 0x02
    InvalidGuestState = 0x02,
    /// 0x03
    InvalidConfig = 0x03,
    /// 0x04
    InvalidLength = 0x04,
    /// 0x07
    PolicyFailure = 0x07,
    /// 0x09
    InvalidAddress = 0x09,
    /// 0x0A
    BadSignature = 0x0A,
    /// 0x0B
    BadMeasurement = 0x0B,
    /// 0x10
    InvalidGuest = 0x10,
    /// 0x16
    InvalidParam = 0x16,
    /// 0x19
    InvalidPageSize = 0x19,
    /// 0x1A
    InvalidPageState = 0x1A,
    /// 0x1B
    InvalidMdataEntry = 0x1B,
    /// 0x1C
    InvalidPageOwner = 0x1C,
    /// 0x1D
    AeadOflow = 0x1D,
    /// 0x21
    BadSvn = 0x21,
    /// 0x27
    InvalidKey = 0x27,
}

impl FirmwareStatus {
    /// The status for a raw firmware code, if it is one of the modelled ones.
    pub fn from_code(code: u32) -> Option<Self> {
        use FirmwareStatus::*;
        [
            InvalidPlatformState,
            InvalidGuestState,
            InvalidConfig,
            InvalidLength,
            PolicyFailure,
            InvalidAddress,
            BadSignature,
            BadMeasurement,
            InvalidGuest,
            InvalidParam,
            InvalidPageSize,
            InvalidPageState,
            InvalidMdataEntry,
            InvalidPageOwner,
            AeadOflow,
            BadSvn,
            InvalidKey,
        ]
        .into_iter()
        .find(|s| *s as u32 == code)
    }

    /// The spec's name for the code.
    pub fn name(self) -> &'static str {
        match self {
            FirmwareStatus::InvalidPlatformState => "INVALID_PLATFORM_STATE",
            FirmwareStatus::InvalidGuestState => "INVALID_GUEST_STATE",
            FirmwareStatus::InvalidAddress => "INVALID_ADDRESS",
            FirmwareStatus::InvalidParam => "INVALID_PARAM",
            FirmwareStatus::InvalidGuest => "INVALID_GUEST",
            FirmwareStatus::BadMeasurement => "BAD_MEASUREMENT",
            FirmwareStatus::InvalidConfig => "INVALID_CONFIG",
            FirmwareStatus::InvalidLength => "INVALID_LENGTH",
            FirmwareStatus::PolicyFailure => "POLICY_FAILURE",
            FirmwareStatus::InvalidKey => "INVALID_KEY",
            FirmwareStatus::BadSignature => "BAD_SIGNATURE",
            FirmwareStatus::BadSvn => "BAD_SVN",
            FirmwareStatus::InvalidPageSize => "INVALID_PAGE_SIZE",
            FirmwareStatus::InvalidPageState => "INVALID_PAGE_STATE",
            FirmwareStatus::InvalidMdataEntry => "INVALID_MDATA_ENTRY",
            FirmwareStatus::InvalidPageOwner => "INVALID_PAGE_OWNER",
            FirmwareStatus::AeadOflow => "AEAD_OFLOW",
        }
    }
}

impl std::fmt::Display for FirmwareStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:#x})", self.name(), *self as u32)
    }
}

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

/// Most entries a CPUID page holds.
pub const CPUID_MAX_ENTRIES: usize = 64;

/// One CPUID_FUNCTION entry (48 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CpuidEntry {
    /// EAX input (leaf).
    pub eax_in: u32,
    /// ECX input (subleaf) for indexed leaves.
    pub ecx_in: u32,
    /// XCR0 input (leaf 0xD only).
    pub xcr0_in: u64,
    /// XSS input (leaf 0xD only).
    pub xss_in: u64,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
    /// Reserved, zero.
    pub reserved: u64,
}

/// The CPUID page (4096 bytes; the table uses 0x10 + 64 × 0x30 = 0xC10).
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct CpuidPage {
    /// Number of valid entries.
    pub count: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Reserved, zero.
    pub reserved1: u64,
    /// The entries; only the first `count` are used.
    pub entries: [CpuidEntry; CPUID_MAX_ENTRIES],
    /// Rest of the page, zero.
    pub padding: [u8; 4096 - 0xC10],
}

// SNP ABI 56860 CPUID_FUNCTION (48 bytes) and the CPUID page (one 4 KiB page).
const _: () = assert!(core::mem::size_of::<CpuidEntry>() == 0x30);
const _: () = assert!(core::mem::size_of::<CpuidPage>() == 4096);
const _: () = assert!(core::mem::offset_of!(CpuidPage, entries) == 0x10);
const _: () = assert!(core::mem::offset_of!(CpuidEntry, eax) == 0x18);
