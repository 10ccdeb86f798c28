//! The configfs-tsm report interface.

use std::fs;
use std::path::{Path, PathBuf};
use thiserror::Error;
use umbra_attestation::report::{AttestationReport, ReportError};

/// Where the kernel mounts configfs-tsm report entries.
pub const DEFAULT_TSM_ROOT: &str = "/sys/kernel/config/tsm/report";

/// Errors while obtaining a report.
#[derive(Debug, Error)]
pub enum TsmError {
    /// The configfs-tsm directory is missing (no SEV-SNP guest driver or no configfs).
    #[error("{0} does not exist: is this an SEV-SNP guest with configfs mounted?")]
    NoTsm(PathBuf),
    /// Creating the report entry failed.
    #[error("cannot create report entry {path}")]
    CreateEntry {
        /// The entry directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configfs attribute could not be read or written.
    #[error("cannot access {path}")]
    Attribute {
        /// The attribute file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// REPORT_DATA longer than 64 bytes.
    #[error("report data is {0} bytes; at most 64 fit")]
    ReportDataLength(usize),
    /// Another writer changed the entry while we used it.
    #[error("the report entry changed underneath us (generation {before} -> {after}); retry")]
    Generation {
        /// Before our read.
        before: String,
        /// After it.
        after: String,
    },
    /// The kernel returned something that is not a report.
    #[error("the returned report is malformed")]
    ParseReport(#[source] ReportError),
    /// The report does not carry the REPORT_DATA we asked for.
    #[error(
        "the returned report carries different REPORT_DATA than requested (stale or replayed)"
    )]
    ReportDataMismatch,
}

/// A report and the certificates that came with it.
#[derive(Debug)]
pub struct Evidence {
    /// The raw signed report.
    pub report: Vec<u8>,
    /// The parsed report.
    pub parsed: AttestationReport,
    /// The GHCB certificate table from `auxblob` (empty when the host gave none).
    pub certificates: Vec<u8>,
    /// The provider name (`sev_guest` on SNP).
    pub provider: String,
}

fn attr(entry: &Path, name: &str) -> PathBuf {
    entry.join(name)
}

fn read_attr(entry: &Path, name: &str) -> Result<Vec<u8>, TsmError> {
    let path = attr(entry, name);
    fs::read(&path).map_err(|source| TsmError::Attribute { path, source })
}

fn write_attr(entry: &Path, name: &str, value: &[u8]) -> Result<(), TsmError> {
    let path = attr(entry, name);
    fs::write(&path, value).map_err(|source| TsmError::Attribute { path, source })
}

/// Requests a report with `report_data` (zero-padded to 64 bytes) at
/// `privlevel` (the VMPL) through the entry `name` under `root`; the entry
/// is created when missing and removed afterwards when we created it.
pub fn get_report(
    root: &Path,
    name: &str,
    report_data: &[u8],
    privlevel: Option<u32>,
) -> Result<Evidence, TsmError> {
    if report_data.len() > 64 {
        return Err(TsmError::ReportDataLength(report_data.len()));
    }
    if !root.is_dir() {
        return Err(TsmError::NoTsm(root.to_path_buf()));
    }
    let entry = root.join(name);
    let created = !entry.exists();
    if created {
        fs::create_dir(&entry).map_err(|source| TsmError::CreateEntry {
            path: entry.clone(),
            source,
        })?;
    }
    let result = request(&entry, report_data, privlevel);
    if created {
        // configfs removes the attributes with the directory.
        let _ = fs::remove_dir(&entry);
    }
    result
}

fn request(entry: &Path, report_data: &[u8], privlevel: Option<u32>) -> Result<Evidence, TsmError> {
    let mut data = [0u8; 64];
    data[..report_data.len()].copy_from_slice(report_data);
    if let Some(level) = privlevel {
        write_attr(entry, "privlevel", level.to_string().as_bytes())?;
    }
    write_attr(entry, "inblob", &data)?;
    let before = String::from_utf8_lossy(&read_attr(entry, "generation")?)
        .trim()
        .to_string();
    let report = read_attr(entry, "outblob")?;
    // auxblob is optional: hosts without a certificate table leave it empty.
    let certificates = read_attr(entry, "auxblob").unwrap_or_default();
    let provider = read_attr(entry, "provider")
        .map(|p| String::from_utf8_lossy(&p).trim().to_string())
        .unwrap_or_default();
    let after = String::from_utf8_lossy(&read_attr(entry, "generation")?)
        .trim()
        .to_string();
    if before != after {
        return Err(TsmError::Generation { before, after });
    }
    let parsed = AttestationReport::from_bytes(&report).map_err(TsmError::ParseReport)?;
    if parsed.report_data != data {
        return Err(TsmError::ReportDataMismatch);
    }
    Ok(Evidence {
        report,
        parsed,
        certificates,
        provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("umbra-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_missing_tsm_and_long_report_data() {
        let err = get_report(Path::new("/nonexistent/tsm"), "x", b"nonce", None).unwrap_err();
        assert!(matches!(err, TsmError::NoTsm(_)));
        let root = scratch("long");
        let err = get_report(&root, "x", &[0u8; 65], None).unwrap_err();
        assert!(matches!(err, TsmError::ReportDataLength(65)));
    }

    #[test]
    fn refuses_a_garbage_outblob() {
        let root = scratch("garbage");
        let entry = root.join("e");
        fs::create_dir(&entry).unwrap();
        fs::write(entry.join("outblob"), b"not a report").unwrap();
        fs::write(entry.join("generation"), b"1\n").unwrap();
        let err = get_report(&root, "e", b"nonce", Some(0)).unwrap_err();
        assert!(matches!(err, TsmError::ParseReport(_)), "{err}");
        // What we wrote is what the kernel would have received.
        let inblob = fs::read(entry.join("inblob")).unwrap();
        assert_eq!(&inblob[..5], b"nonce");
        assert_eq!(inblob.len(), 64);
        assert_eq!(fs::read_to_string(entry.join("privlevel")).unwrap(), "0");
    }
}
