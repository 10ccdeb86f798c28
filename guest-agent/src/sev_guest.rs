//! `/dev/sev-guest`, the SNP guest driver's ioctl interface (Linux
//! drivers/virt/coco/sev-guest, uapi `include/uapi/linux/sev-guest.h`):
//! SNP_GET_REPORT, SNP_GET_EXT_REPORT (the report and the host's
//! certificate table) and SNP_GET_DERIVED_KEY. The kernel encrypts the
//! request with VMPCK0 and checks the response; what comes back is the
//! firmware's MSG_REPORT_RSP / MSG_KEY_RSP (SNP ABI 56860 chapter 9) and
//! the host's certificate table, both treated as hostile here. The ioctl
//! itself is behind [`Device`], so that tests can stand a model of the
//! kernel and the firmware behind it.

use crate::tsm::Evidence;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use thiserror::Error;
use umbra_attestation::report::{AttestationReport, ReportError};

/// The device node.
pub const DEFAULT_DEVICE: &str = "/dev/sev-guest";

/// `struct snp_report_req`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ReportReq {
    pub user_data: [u8; 64],
    pub vmpl: u32,
    pub rsvd: [u8; 28],
}
const _: () = assert!(core::mem::size_of::<ReportReq>() == 96);

/// `struct snp_ext_report_req`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ExtReportReq {
    data: ReportReq,
    certs_address: u64,
    certs_len: u32,
    _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ExtReportReq>() == 112);
const _: () = assert!(core::mem::offset_of!(ExtReportReq, certs_address) == 96);
const _: () = assert!(core::mem::offset_of!(ExtReportReq, certs_len) == 104);

/// `struct snp_derived_key_req`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DerivedKeyReq {
    pub root_key_select: u32,
    pub rsvd: u32,
    pub guest_field_select: u64,
    pub vmpl: u32,
    pub guest_svn: u32,
    pub tcb_version: u64,
}
const _: () = assert!(core::mem::size_of::<DerivedKeyReq>() == 32);
const _: () = assert!(core::mem::offset_of!(DerivedKeyReq, guest_field_select) == 8);
const _: () = assert!(core::mem::offset_of!(DerivedKeyReq, tcb_version) == 24);

/// `struct snp_guest_request_ioctl`: `msg_version`, then the request and
/// response addresses, then `exitinfo2`, the union of `fw_error` (low
/// half) and `vmm_error` (high half).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct GuestRequestIoctl {
    msg_version: u8,
    _pad: [u8; 7],
    req_data: u64,
    resp_data: u64,
    exitinfo2: u64,
}
const _: () = assert!(core::mem::size_of::<GuestRequestIoctl>() == 32);
const _: () = assert!(core::mem::offset_of!(GuestRequestIoctl, req_data) == 8);
const _: () = assert!(core::mem::offset_of!(GuestRequestIoctl, resp_data) == 16);
const _: () = assert!(core::mem::offset_of!(GuestRequestIoctl, exitinfo2) == 24);

/// `_IOWR('S', nr, struct snp_guest_request_ioctl)`.
const fn iowr(nr: u64) -> u64 {
    (3 << 30)
        | ((core::mem::size_of::<GuestRequestIoctl>() as u64) << 16)
        | ((b'S' as u64) << 8)
        | nr
}
/// SNP_GET_REPORT.
const SNP_GET_REPORT: u64 = iowr(0x0);
/// SNP_GET_DERIVED_KEY.
const SNP_GET_DERIVED_KEY: u64 = iowr(0x1);
/// SNP_GET_EXT_REPORT.
const SNP_GET_EXT_REPORT: u64 = iowr(0x2);
/// `struct snp_report_resp` / `snp_derived_key_resp` sizes.
pub const REPORT_RESP_SIZE: usize = 4000;
pub const DERIVED_KEY_RESP_SIZE: usize = 64;
/// `SNP_GUEST_VMM_ERR_INVALID_LEN` in `vmm_error`: the certificate buffer
/// is too small; the kernel wrote the size needed to `certs_len`.
pub const VMM_ERR_INVALID_LEN: u32 = 1;
/// The certificate buffer: the kernel refuses a `certs_len` above
/// SEV_FW_BLOB_MAX_SIZE (16 KiB) or not a whole number of pages, so the
/// agent offers exactly that, and a host needing more is an error.
const CERTS_BUFFER: usize = 16 << 10;

/// One request to the driver, with the buffers it reads and writes.
#[derive(Debug)]
pub enum Request<'a> {
    /// SNP_GET_REPORT.
    Report {
        req: &'a ReportReq,
        resp: &'a mut [u8; REPORT_RESP_SIZE],
    },
    /// SNP_GET_EXT_REPORT: the table goes to `certs`; when it does not fit
    /// the driver fails with VMM_ERR_INVALID_LEN and writes the size it
    /// needs to `certs_needed`.
    ExtReport {
        req: &'a ReportReq,
        certs: &'a mut [u8],
        certs_needed: &'a mut u32,
        resp: &'a mut [u8; REPORT_RESP_SIZE],
    },
    /// SNP_GET_DERIVED_KEY.
    DerivedKey {
        req: &'a DerivedKeyReq,
        resp: &'a mut [u8; DERIVED_KEY_RESP_SIZE],
    },
}

impl Request<'_> {
    fn name(&self) -> &'static str {
        match self {
            Request::Report { .. } => "SNP_GET_REPORT",
            Request::ExtReport { .. } => "SNP_GET_EXT_REPORT",
            Request::DerivedKey { .. } => "SNP_GET_DERIVED_KEY",
        }
    }
}

/// How the driver refused a request: the errno and `exitinfo2`.
#[derive(Debug)]
pub struct DeviceError {
    /// `fw_error`: the firmware's status.
    pub fw_error: u32,
    /// `vmm_error`: the hypervisor's.
    pub vmm_error: u32,
    /// The errno.
    pub errno: io::Error,
}

/// The driver: the real device node, or a model of it in tests.
pub trait Device {
    /// Carries out `request`.
    fn request(&self, request: Request<'_>) -> Result<(), DeviceError>;
}

/// The real device node.
#[derive(Debug)]
pub struct SevGuest {
    file: File,
}

impl SevGuest {
    /// Opens `path` (normally [`DEFAULT_DEVICE`]).
    pub fn open(path: &Path) -> Result<Self, SevGuestError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| SevGuestError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SevGuest { file })
    }

    fn ioctl(&self, request: u64, req: *mut u8, resp: *mut u8) -> Result<(), DeviceError> {
        let mut arg = GuestRequestIoctl {
            msg_version: 1,
            req_data: req as u64,
            resp_data: resp as u64,
            ..GuestRequestIoctl::default()
        };
        // The pointers in `arg` (and SNP_GET_EXT_REPORT's certificate buffer)
        // are borrowed by the caller, `request`, for the whole call.
        let fd = self.file.as_raw_fd();
        // SAFETY: `fd` is the open sev-guest device and `arg` a live
        // `snp_guest_request_ioctl` whose buffers outlive the call.
        let rc = unsafe { libc::ioctl(fd, request as _, &raw mut arg) };
        if rc < 0 {
            return Err(DeviceError {
                fw_error: arg.exitinfo2 as u32,
                vmm_error: (arg.exitinfo2 >> 32) as u32,
                errno: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

impl Device for SevGuest {
    fn request(&self, request: Request<'_>) -> Result<(), DeviceError> {
        match request {
            Request::Report { req, resp } => {
                let mut req = *req;
                self.ioctl(SNP_GET_REPORT, (&raw mut req).cast(), resp.as_mut_ptr())
            }
            Request::ExtReport {
                req,
                certs,
                certs_needed,
                resp,
            } => {
                let mut ext = ExtReportReq {
                    data: *req,
                    certs_address: certs.as_mut_ptr() as u64,
                    certs_len: u32::try_from(certs.len()).unwrap_or(u32::MAX),
                    _pad: 0,
                };
                let outcome =
                    self.ioctl(SNP_GET_EXT_REPORT, (&raw mut ext).cast(), resp.as_mut_ptr());
                *certs_needed = ext.certs_len;
                outcome
            }
            Request::DerivedKey { req, resp } => {
                let mut req = *req;
                self.ioctl(
                    SNP_GET_DERIVED_KEY,
                    (&raw mut req).cast(),
                    resp.as_mut_ptr(),
                )
            }
        }
    }
}

/// Why a request through the device failed.
#[derive(Debug, Error)]
pub enum SevGuestError {
    /// The device could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The node.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// REPORT_DATA longer than 64 bytes.
    #[error("report data is {0} bytes; at most 64 fit")]
    ReportDataLength(usize),
    /// The driver refused; the firmware's and the VMM's error codes.
    #[error("{request} failed (firmware error {fw_error:#x}, VMM error {vmm_error:#x})")]
    Request {
        /// Which request.
        request: &'static str,
        /// `fw_error`.
        fw_error: u32,
        /// `vmm_error`.
        vmm_error: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The host's certificate table does not fit the kernel's 16 KiB.
    #[error("the host's certificate table needs {0} bytes; the kernel passes at most 16 KiB")]
    CertsTooLarge(usize),
    /// The firmware's response carries an error status.
    #[error("the firmware answered status {0:#x}")]
    FirmwareStatus(u32),
    /// MSG_REPORT_RSP's REPORT_SIZE is not 1184.
    #[error("the response's report size is {0}")]
    ReportSize(u32),
    /// The report does not parse.
    #[error("the returned report is malformed")]
    ParseReport(#[source] ReportError),
    /// The report does not carry the REPORT_DATA asked for.
    #[error(
        "the returned report carries different REPORT_DATA than requested (stale or replayed)"
    )]
    ReportDataMismatch,
}

fn issue(dev: &dyn Device, request: Request<'_>) -> Result<(), SevGuestError> {
    let name = request.name();
    dev.request(request).map_err(|e| SevGuestError::Request {
        request: name,
        fw_error: e.fw_error,
        vmm_error: e.vmm_error,
        source: e.errno,
    })
}

/// MSG_REPORT_RSP: status, REPORT_SIZE, 24 reserved bytes, the report.
fn report_from_response(
    resp: &[u8; REPORT_RESP_SIZE],
    data: &[u8; 64],
) -> Result<(Vec<u8>, AttestationReport), SevGuestError> {
    let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
    if status != 0 {
        return Err(SevGuestError::FirmwareStatus(status));
    }
    let size = u32::from_le_bytes([resp[4], resp[5], resp[6], resp[7]]);
    if size != 1184 {
        return Err(SevGuestError::ReportSize(size));
    }
    let report = resp[0x20..0x20 + 1184].to_vec();
    let parsed = AttestationReport::from_bytes(&report).map_err(SevGuestError::ParseReport)?;
    if parsed.report_data != *data {
        return Err(SevGuestError::ReportDataMismatch);
    }
    Ok((report, parsed))
}

/// A report with `report_data` at `vmpl` (default 0); with `certificates`,
/// SNP_GET_EXT_REPORT and the host's table (empty when it has none).
pub fn get_report(
    dev: &dyn Device,
    report_data: &[u8],
    vmpl: Option<u32>,
    certificates: bool,
) -> Result<Evidence, SevGuestError> {
    if report_data.len() > 64 {
        return Err(SevGuestError::ReportDataLength(report_data.len()));
    }
    let mut data = [0u8; 64];
    data[..report_data.len()].copy_from_slice(report_data);
    let req = ReportReq {
        user_data: data,
        vmpl: vmpl.unwrap_or(0),
        rsvd: [0; 28],
    };
    let mut resp = Box::new([0u8; REPORT_RESP_SIZE]);
    let mut table = Vec::new();
    if certificates {
        let mut certs = vec![0u8; CERTS_BUFFER];
        let mut needed = 0u32;
        let outcome = issue(
            dev,
            Request::ExtReport {
                req: &req,
                certs: &mut certs,
                certs_needed: &mut needed,
                resp: &mut resp,
            },
        );
        match outcome {
            Ok(()) => table = certs,
            // The kernel caps the buffer at 16 KiB: a host whose table is
            // larger cannot be served through this interface.
            Err(SevGuestError::Request { vmm_error, .. }) if vmm_error == VMM_ERR_INVALID_LEN => {
                return Err(SevGuestError::CertsTooLarge(needed as usize));
            }
            Err(e) => return Err(e),
        }
    } else {
        issue(
            dev,
            Request::Report {
                req: &req,
                resp: &mut resp,
            },
        )?;
    }
    let (report, parsed) = report_from_response(&resp, &data)?;
    // A table the host left all zero is no table.
    if table.iter().all(|&b| b == 0) {
        table.clear();
    }
    Ok(Evidence {
        report,
        parsed,
        certificates: table,
        provider: "sev_guest via /dev/sev-guest".to_string(),
    })
}

/// Which root key a derived key comes from (MSG_KEY_REQ ROOT_KEY_SELECT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootKey {
    /// The chip's VCEK (or the VLEK when one is installed).
    Vcek,
    /// The VM root key (migration-agent provided; VMRK).
    Vmrk,
}

/// GUEST_FIELD_SELECT bits (SNP ABI 56860, MSG_KEY_REQ).
pub const FIELD_GUEST_POLICY: u64 = 1 << 0;
pub const FIELD_IMAGE_ID: u64 = 1 << 1;
pub const FIELD_FAMILY_ID: u64 = 1 << 2;
pub const FIELD_MEASUREMENT: u64 = 1 << 3;
pub const FIELD_GUEST_SVN: u64 = 1 << 4;
pub const FIELD_TCB_VERSION: u64 = 1 << 5;

/// What a derived key is bound to.
#[derive(Clone, Copy, Debug)]
pub struct KeyRequest {
    pub root: RootKey,
    /// GUEST_FIELD_SELECT.
    pub fields: u64,
    pub vmpl: u32,
    pub guest_svn: u32,
    pub tcb_version: u64,
}

/// SNP_GET_DERIVED_KEY: a 32-byte key bound to the selected fields.
pub fn derive_key(dev: &dyn Device, key: &KeyRequest) -> Result<[u8; 32], SevGuestError> {
    let req = DerivedKeyReq {
        root_key_select: match key.root {
            RootKey::Vcek => 0,
            RootKey::Vmrk => 1,
        },
        rsvd: 0,
        guest_field_select: key.fields,
        vmpl: key.vmpl,
        guest_svn: key.guest_svn,
        tcb_version: key.tcb_version,
    };
    let mut resp = [0u8; DERIVED_KEY_RESP_SIZE];
    issue(
        dev,
        Request::DerivedKey {
            req: &req,
            resp: &mut resp,
        },
    )?;
    // MSG_KEY_RSP: status, 28 reserved bytes, the key.
    let status = u32::from_le_bytes([resp[0], resp[1], resp[2], resp[3]]);
    if status != 0 {
        return Err(SevGuestError::FirmwareStatus(status));
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&resp[0x20..0x40]);
    resp.fill(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_uapi_ones() {
        // include/uapi/linux/sev-guest.h: _IOWR('S', 0..2, 32 bytes).
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
        assert_eq!(SNP_GET_DERIVED_KEY, 0xC020_5301);
        assert_eq!(SNP_GET_EXT_REPORT, 0xC020_5302);
    }
}
