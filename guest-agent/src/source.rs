//! Where this guest's reports come from: configfs-tsm (the kernel's
//! generic TSM report interface, preferred) or the SNP guest driver's
//! `/dev/sev-guest` ioctls, chosen automatically by what exists, and named
//! so that the user knows which one answered.

use crate::cert_table;
use crate::kbs::EvidenceProvider;
use crate::sev_guest::{self, SevGuest, SevGuestError};
use crate::tsm::{self, Evidence, TsmError};
use std::path::{Path, PathBuf};
use thiserror::Error;
use umbra_attestation::kbs::evidence::ReportAndCerts;

/// configfs-tsm entry name for the reports made for a KBS or a peer.
const ENTRY: &str = "umbra-kbs";

/// A report source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// configfs-tsm under this root.
    ConfigfsTsm(PathBuf),
    /// This `/dev/sev-guest` node (SNP_GET_EXT_REPORT).
    SevGuest(PathBuf),
}

/// Which source the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// configfs-tsm when its root exists, else `/dev/sev-guest`.
    Auto,
    /// configfs-tsm only.
    ConfigfsTsm,
    /// `/dev/sev-guest` only.
    SevGuest,
}

/// Why no report came.
#[derive(Debug, Error)]
pub enum SourceError {
    /// Neither interface exists.
    #[error("neither configfs-tsm ({tsm}) nor {device} exists: is this an SEV-SNP guest?")]
    FindSource {
        /// The configfs-tsm root looked at.
        tsm: String,
        /// The device looked at.
        device: String,
    },
    /// configfs-tsm failed.
    #[error("configfs-tsm")]
    Tsm(#[from] TsmError),
    /// `/dev/sev-guest` failed.
    #[error("/dev/sev-guest")]
    SevGuest(#[from] SevGuestError),
    /// The host's certificate table is malformed.
    #[error("the host's certificate table is malformed")]
    ParseTable(#[from] cert_table::CertTableError),
}

impl Source {
    /// The source `choice` names, given where configfs-tsm and the device
    /// would be.
    pub fn pick(choice: Choice, tsm_root: &Path, device: &Path) -> Result<Source, SourceError> {
        let tsm = || Source::ConfigfsTsm(tsm_root.to_path_buf());
        let dev = || Source::SevGuest(device.to_path_buf());
        match choice {
            Choice::ConfigfsTsm => Ok(tsm()),
            Choice::SevGuest => Ok(dev()),
            Choice::Auto if tsm_root.is_dir() => Ok(tsm()),
            Choice::Auto if device.exists() => Ok(dev()),
            Choice::Auto => Err(SourceError::FindSource {
                tsm: tsm_root.display().to_string(),
                device: device.display().to_string(),
            }),
        }
    }

    /// Its name, for the user.
    pub fn describe(&self) -> String {
        match self {
            Source::ConfigfsTsm(root) => format!("configfs-tsm ({})", root.display()),
            Source::SevGuest(device) => format!("{} (SNP_GET_EXT_REPORT)", device.display()),
        }
    }

    /// A report carrying `report_data` at `vmpl`, with the host's
    /// certificate table; `entry` names the configfs-tsm entry.
    pub fn get_report(
        &self,
        report_data: &[u8],
        vmpl: Option<u32>,
        entry: &str,
    ) -> Result<Evidence, SourceError> {
        Ok(match self {
            Source::ConfigfsTsm(root) => tsm::get_report(root, entry, report_data, vmpl)?,
            Source::SevGuest(device) => {
                let dev = SevGuest::open(device)?;
                sev_guest::get_report(&dev, report_data, vmpl, true)?
            }
        })
    }
}

impl EvidenceProvider for Source {
    fn name(&self) -> &str {
        match self {
            Source::ConfigfsTsm(_) => "configfs-tsm",
            Source::SevGuest(_) => "/dev/sev-guest",
        }
    }

    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<ReportAndCerts, Box<dyn std::error::Error + Send + Sync>> {
        let evidence = self.get_report(report_data, None, ENTRY)?;
        let certs = cert_table::parse(&evidence.certificates)?
            .into_iter()
            .map(|(kind, der)| (kind, der.to_vec()))
            .collect();
        Ok((evidence.report, certs))
    }
}

/// A source picked when the first report is needed, so that a command
/// fails first on what comes first (an unreachable KBS, a usage error).
#[derive(Clone, Debug)]
pub struct Deferred {
    /// What the user asked for.
    pub choice: Choice,
    /// Where configfs-tsm would be.
    pub tsm_root: PathBuf,
    /// Where the device would be.
    pub device: PathBuf,
}

impl EvidenceProvider for Deferred {
    fn name(&self) -> &str {
        match self.choice {
            Choice::Auto => "configfs-tsm or /dev/sev-guest",
            Choice::ConfigfsTsm => "configfs-tsm",
            Choice::SevGuest => "/dev/sev-guest",
        }
    }

    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<ReportAndCerts, Box<dyn std::error::Error + Send + Sync>> {
        Source::pick(self.choice, &self.tsm_root, &self.device)?.evidence(report_data)
    }
}
