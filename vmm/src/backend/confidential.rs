//! The confidential-launch interface a backend offers on top of `Vm`:
//! SNP_LAUNCH_START -> SNP_LAUNCH_UPDATE* -> SNP_LAUNCH_FINISH (AMD SEV-SNP
//! ABI spec 56860 §8.16-8.18). Implemented by the KVM SNP backend (real
//! hardware, `backend::sev`) and by the SNP firmware model (`snp_model`).
//! The order of calls is enforced by the typestate in `crate::launch`, not
//! by the implementations' runtime checks (which still exist, because the
//! firmware itself refuses out-of-order commands).

use thiserror::Error;
pub use umbra_snp_model::abi::{FirmwareStatus, PageType};
pub use umbra_snp_model::LaunchFinishParams;

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
    /// The backend refused the command around the firmware call (range
    /// not in guest RAM, CPUID page rejected twice, ID block size...).
    #[error("{what} failed in the backend")]
    Backend {
        /// Which command.
        what: &'static str,
        /// The backend's error, whole.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

/// What a pre-SNP launch returns to the guest owner: LAUNCH_MEASURE's
/// HMAC (keyed with the TIK the owner shares with the firmware) and nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LegacyMeasurement {
    /// HMAC-SHA-256 over the launch.
    pub measure: [u8; 32],
    /// The firmware's nonce.
    pub mnonce: [u8; 16],
}

/// The SEV / SEV-ES launch (SEV API 55766 chapter 6): LAUNCH_START with the
/// policy, LAUNCH_UPDATE_DATA of the firmware image in place, for SEV-ES
/// LAUNCH_UPDATE_VMSA of every vCPU, LAUNCH_MEASURE, LAUNCH_FINISH. Only the
/// guest owner, who holds the TIK, can check the measurement.
pub trait LegacyLaunch {
    /// Launches with `policy`, encrypting `[image_gpa, image_gpa + len)`.
    fn launch_image(
        &mut self,
        policy: u32,
        image_gpa: u64,
        len: u64,
    ) -> Result<LegacyMeasurement, LaunchError>;
}
