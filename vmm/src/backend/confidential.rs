//! The confidential-launch interface a backend offers on top of `Vm`:
//! SNP_LAUNCH_START -> SNP_LAUNCH_UPDATE* -> SNP_LAUNCH_FINISH (AMD SEV-SNP
//! ABI spec 56860 §8.16-8.18). Implemented by the KVM SNP backend (real
//! hardware, `backend::sev`) and by the SNP firmware model (`snp_model`).
//! The order of calls is enforced by the typestate in `crate::launch`, not
//! by the implementations' runtime checks (which still exist, because the
//! firmware itself refuses out-of-order commands).

use thiserror::Error;
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

/// Errors of the confidential-launch commands.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// LAUNCH_START was refused.
    #[error("SNP_LAUNCH_START refused: {0}")]
    Start(FirmwareStatus),
    /// LAUNCH_UPDATE was refused for a range.
    #[error("SNP_LAUNCH_UPDATE of {pages} {page_type:?} page(s) at {gpa:#x} refused: {status}")]
    Update {
        /// First GPA of the range.
        gpa: u64,
        /// Pages in the range.
        pages: u64,
        /// Page type.
        page_type: PageType,
        /// Firmware status.
        status: FirmwareStatus,
    },
    /// LAUNCH_FINISH was refused.
    #[error("SNP_LAUNCH_FINISH refused: {0}")]
    Finish(FirmwareStatus),
    /// The kernel refused an ioctl (hardware backends).
    #[error("{what} failed (firmware error {fw_error:#x})")]
    Ioctl {
        /// Which command.
        what: &'static str,
        /// The SEV firmware error the kernel reported.
        fw_error: u32,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// Contents given for an update are not whole pages.
    #[error("update contents of {0} bytes are not whole 4 KiB pages")]
    ContentsLength(usize),
    /// A hardware backend refused the command around the firmware call
    /// (range not in guest RAM, CPUID page rejected twice, ID block size...).
    #[error("{0}")]
    Backend(String),
}

/// LAUNCH_START parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchStartParams {
    /// Guest policy (ABI spec §4.3); bit 17 must be set.
    pub policy: u64,
}

/// One LAUNCH_UPDATE: `len / 4096` pages of one type from `gpa`.
#[derive(Clone, Copy, Debug)]
pub struct LaunchUpdate<'a> {
    /// First guest-physical address (4 KiB aligned).
    pub gpa: u64,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
    /// Page type.
    pub page_type: PageType,
    /// Contents for NORMAL pages; `None` for ZERO, UNMEASURED, SECRETS and
    /// CPUID pages (CPUID pages carry the table the VMM proposes).
    pub contents: Option<&'a [u8]>,
}

/// LAUNCH_FINISH parameters.
#[derive(Clone, Debug)]
pub struct LaunchFinishParams {
    /// ID block (96 bytes, spec §8.18), if any.
    pub id_block: Option<Vec<u8>>,
    /// ID authentication structure (4096 bytes), with the ID block.
    pub id_auth: Option<Vec<u8>>,
    /// Whether the author key in `id_auth` is used.
    pub auth_key_en: bool,
    /// HOST_DATA copied into every report.
    pub host_data: [u8; 32],
    /// The VMSA page of each vCPU, in vCPU order, as measured (KVM builds
    /// its own from vCPU state on hardware; the model takes these).
    pub vmsa_pages: Vec<Vec<u8>>,
}

/// What LAUNCH_FINISH produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchFinished {
    /// The launch digest (MEASUREMENT in reports).
    pub measurement: [u8; 48],
}

/// A backend that can launch a confidential guest.
pub trait ConfidentialLaunch {
    /// SNP_LAUNCH_START.
    fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError>;
    /// SNP_LAUNCH_UPDATE for one range.
    fn launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), LaunchError>;
    /// SNP_LAUNCH_FINISH.
    fn launch_finish(&mut self, params: &LaunchFinishParams)
        -> Result<LaunchFinished, LaunchError>;
}

/// A launch can be driven through a borrowed backend, which keeps the VM
/// for the run that follows.
impl<T: ConfidentialLaunch + ?Sized> ConfidentialLaunch for &mut T {
    fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError> {
        (**self).launch_start(params)
    }
    fn launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), LaunchError> {
        (**self).launch_update(update)
    }
    fn launch_finish(
        &mut self,
        params: &LaunchFinishParams,
    ) -> Result<LaunchFinished, LaunchError> {
        (**self).launch_finish(params)
    }
}
