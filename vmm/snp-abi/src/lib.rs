//! The SEV-SNP wire formats that every umbra crate shares, defined once
//! and `no_std` so that the guest firmware uses the same definitions as the
//! VMM, the hardware backend, the firmware model and the attestation tool:
//! firmware status codes (SNP ABI 56860 table "Status Codes", Linux
//! `include/uapi/linux/psp-sev.h` `SEV_RET_*`), the CPUID page (SNP ABI
//! 56860 "CPUID Reporting", Linux `struct snp_cpuid_table`, QEMU
//! `SnpCpuidInfo`) and the guest-message header (SNP ABI 56860 chapter 9,
//! Linux `struct snp_guest_msg_hdr`).
#![no_std]

pub mod cert_table;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

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

impl core::fmt::Display for FirmwareStatus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:#x})", self.name(), *self as u32)
    }
}

/// Size of an attestation report (SNP ABI 56860 table "ATTESTATION_REPORT").
pub const REPORT_SIZE: usize = 0x4A0;
/// Size of the MSG_REPORT_REQ payload.
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Offset of the report in the MSG_REPORT_RSP payload.
pub const REPORT_RSP_REPORT: usize = 0x20;

/// MSG_KEY_REQ.
pub const MSG_KEY_REQ: u8 = 3;
/// MSG_KEY_RSP.
pub const MSG_KEY_RSP: u8 = 4;
/// MSG_REPORT_REQ.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_REPORT_RSP.
pub const MSG_REPORT_RSP: u8 = 6;

/// ALGO value of AES-256-GCM.
pub const AEAD_AES_256_GCM: u8 = 1;
/// HDR_VERSION the firmware accepts.
pub const HDR_VERSION: u8 = 1;
/// Bytes in the message header.
pub const HDR_SIZE: usize = 0x60;
/// Largest payload in a 4 KiB page.
pub const MAX_PAYLOAD: usize = 4096 - HDR_SIZE;
/// Bytes of the AES-GCM tag at the start of the header.
pub const TAG_LEN: usize = 16;

/// The message header (SNP ABI 56860 chapter 9, table "Message Header").
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MsgHeader {
    /// AES-GCM tag in bytes 0..16, the rest zero.
    pub authtag: [u8; 32],
    /// Sequence number (and IV).
    pub msg_seqno: u64,
    /// Reserved.
    pub reserved0: u64,
    /// AEAD algorithm: 1 = AES-256-GCM.
    pub algo: u8,
    /// Header version: 1.
    pub hdr_version: u8,
    /// Header size: 0x60.
    pub hdr_sz: u16,
    /// Message type.
    pub msg_type: u8,
    /// Message version.
    pub msg_version: u8,
    /// Payload size (plaintext = ciphertext).
    pub msg_sz: u16,
    /// Reserved.
    pub reserved1: u32,
    /// Which VMPCK protects the message (0..3).
    pub msg_vmpck: u8,
    /// Reserved.
    pub reserved2: [u8; 35],
}

// SNP ABI 56860 chapter 9, "Message Header": 0x60 bytes, AAD from 0x30.
const _: () = assert!(core::mem::size_of::<MsgHeader>() == HDR_SIZE);
const _: () = assert!(core::mem::offset_of!(MsgHeader, msg_seqno) == 0x20);
const _: () = assert!(core::mem::offset_of!(MsgHeader, algo) == 0x30);
const _: () = assert!(core::mem::offset_of!(MsgHeader, msg_sz) == 0x36);
const _: () = assert!(core::mem::offset_of!(MsgHeader, msg_vmpck) == 0x3C);

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
