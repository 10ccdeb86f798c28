//! The real-hardware SEV, SEV-ES and SEV-SNP backends, through the upstream
//! Linux UAPI (`KVM_MEMORY_ENCRYPT_OP` on the VM fd, `/dev/kvm` device
//! attributes, guest_memfd, `/dev/sev`).
//!
//! - [`uapi`]: wire formats (kvm-bindings structs checked against the kernel
//!   headers, psp-sev.h structs, the SNP CPUID page) and pure parsers.
//! - [`snp`]: `KVM_X86_SNP_VM` + INIT2 + guest_memfd; implements the backend
//!   traits by wrapping a [`KvmVm`](super::kvm::KvmVm) and
//!   [`ConfidentialLaunch`](super::confidential::ConfidentialLaunch); page
//!   conversions at run time (`KVM_HC_MAP_GPA_RANGE`, memory faults).
//! - `convert`: run-time private/shared conversions ([`snp::PrivateMemory`]),
//!   with the guest's requests validated by pure functions.
//! - [`legacy`]: SEV and SEV-ES on `KVM_X86_DEFAULT_VM` with `KVM_SEV_INIT` /
//!   `KVM_SEV_ES_INIT` and the LAUNCH_* commands up to LAUNCH_MEASURE/SECRET.
//!
//! Every ioctl of these backends is in this module tree; nothing outside it
//! issues SEV commands.

mod convert;
pub mod kernel;
pub mod launch_update;
pub mod legacy;
pub mod snp;
pub mod uapi;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;

/// Path of the PSP driver's device.
pub const SEV_DEVICE: &str = "/dev/sev";

/// An errno from the kernel with the firmware status it reported.
#[derive(Debug)]
pub struct FwFailure {
    /// What the ioctl returned.
    pub errno: std::io::Error,
    /// `kvm_sev_cmd.error` / `sev_issue_cmd.error` (`SEV_RET_*`).
    pub fw_error: u32,
}

impl std::fmt::Display for FwFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The kernel refuses many commands itself (-EINVAL for flags,
        // policy or features, -EIO for a failed populate) and leaves the
        // firmware status at 0: that is "no status", not SUCCESS.
        if self.fw_error == 0 {
            return write!(
                f,
                "{} (refused by the kernel; no firmware status)",
                self.errno
            );
        }
        write!(
            f,
            "{} (firmware status {:#x} {})",
            self.errno,
            self.fw_error,
            uapi::fw_error_name(self.fw_error)
        )
    }
}

/// Errors of the SEV/SNP hardware backends.
#[derive(Debug, Error)]
pub enum SevError {
    /// `/dev/sev` could not be opened.
    #[error("cannot open {SEV_DEVICE} read-write (SEV firmware driver; needs root or an ACL)")]
    OpenSev(#[source] std::io::Error),
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    OpenKvm(#[source] kvm_ioctls::Error),
    /// KVM does not offer the VM type.
    #[error("KVM does not offer VM type {vm_type} (KVM_CAP_VM_TYPES = {offered:#x}); host kernel >= 6.11 with kvm_amd sev_snp=1 needed")]
    VmType {
        /// The type asked for.
        vm_type: u64,
        /// The bitmask KVM offers.
        offered: u64,
    },
    /// A capability the backend needs is missing.
    #[error("KVM lacks {0}")]
    Capability(&'static str),
    /// Reading a `/dev/kvm` device attribute failed.
    #[error("KVM_GET_DEVICE_ATTR(group {group}, attr {attr}) failed")]
    GetDeviceAttr {
        /// Attribute group.
        group: u32,
        /// Attribute.
        attr: u64,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// Guest features were requested that KVM does not accept.
    #[error("VMSA features {requested:#x} requested but KVM accepts only {supported:#x} (unsupported: {:#x})", requested & !supported)]
    VmsaFeatures {
        /// Requested SEV_FEATURES (without SNPActive).
        requested: u64,
        /// KVM_X86_SEV_VMSA_FEATURES.
        supported: u64,
    },
    /// KVM_CREATE_VM or its setup failed.
    #[error("creating the VM failed")]
    CreateVm(#[source] super::BackendError),
    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)` failed.
    #[error("enabling KVM_HC_MAP_GPA_RANGE exits failed")]
    EnableHypercallExit(#[source] kvm_ioctls::Error),
    /// KVM_SEV_INIT2 failed.
    #[error("KVM_SEV_INIT2 failed: {0}")]
    Init2(FwFailure),
    /// KVM_SEV_INIT / KVM_SEV_ES_INIT failed.
    #[error("KVM_SEV_INIT/ES_INIT failed: {0}")]
    SevInit(FwFailure),
    /// KVM_CREATE_GUEST_MEMFD failed.
    #[error("KVM_CREATE_GUEST_MEMFD for {size:#x} bytes at {gpa:#x} failed")]
    CreateGuestMemfd {
        /// Region base.
        gpa: u64,
        /// Region size.
        size: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_SET_USER_MEMORY_REGION2 failed.
    #[error("KVM_SET_USER_MEMORY_REGION2 (slot {slot}, {gpa:#x}) failed")]
    SetMemoryRegion2 {
        /// Slot.
        slot: u32,
        /// Region base.
        gpa: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_SET_MEMORY_ATTRIBUTES failed.
    #[error("KVM_SET_MEMORY_ATTRIBUTES({attributes:#x}) on {gpa:#x}+{size:#x} failed")]
    SetMemoryAttributes {
        /// Range base.
        gpa: u64,
        /// Range size.
        size: u64,
        /// Attributes.
        attributes: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A launch range is not page-aligned or not inside a mapped RAM slot.
    #[error("range {gpa:#x}+{len:#x} is not page-aligned guest RAM")]
    Range {
        /// Base.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// A page-aligned source buffer could not be allocated.
    #[error("allocating a {0:#x}-byte source buffer failed")]
    SourceBuffer(usize),
    /// The vCPU's CPUID table needs more entries than a CPUID page holds.
    #[error("the vCPU's CPUID table has {0} entries without the hypervisor leaves; an SNP CPUID page holds 64")]
    CpuidCount(usize),
    /// KVM_SEV_SNP_LAUNCH_START failed.
    #[error("KVM_SEV_SNP_LAUNCH_START (policy {policy:#x}) failed: {failure}")]
    SnpLaunchStart {
        /// Policy.
        policy: u64,
        /// errno and firmware status.
        failure: FwFailure,
    },
    /// KVM_SEV_SNP_LAUNCH_UPDATE failed.
    #[error(
        "KVM_SEV_SNP_LAUNCH_UPDATE of type {page_type} at {gpa:#x}+{len:#x} failed: {failure}"
    )]
    SnpLaunchUpdate {
        /// First GPA not yet done.
        gpa: u64,
        /// Bytes not yet done.
        len: u64,
        /// Page type.
        page_type: u8,
        /// errno and firmware status.
        failure: FwFailure,
    },
    /// The firmware rejected the CPUID page twice.
    #[error(
        "firmware rejected the CPUID page at {gpa:#x} even after taking its corrections:\n{diff}"
    )]
    CpuidRejected {
        /// CPUID page GPA.
        gpa: u64,
        /// What the firmware changed the first time.
        diff: String,
        /// The second refusal.
        #[source]
        source: Box<SevError>,
    },
    /// An ID block or ID auth structure has the wrong size.
    #[error("{what} is {len} bytes, expected {expected}")]
    IdBlockSize {
        /// Which structure.
        what: &'static str,
        /// Size given.
        len: usize,
        /// Size required.
        expected: usize,
    },
    /// KVM_SEV_SNP_LAUNCH_FINISH failed.
    #[error("KVM_SEV_SNP_LAUNCH_FINISH failed: {0}")]
    SnpLaunchFinish(FwFailure),
    /// A legacy launch command failed.
    #[error("{what} failed: {failure}")]
    LegacyCommand {
        /// The command.
        what: &'static str,
        /// errno and firmware status.
        failure: FwFailure,
    },
    /// KVM_MEMORY_ENCRYPT_REG_REGION failed.
    #[error("KVM_MEMORY_ENCRYPT_REG_REGION of {size:#x} bytes failed")]
    RegisterRegion {
        /// Region size.
        size: u64,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A blob exceeds what the kernel accepts.
    #[error("{what} is {len} bytes; too large")]
    BlobSize {
        /// Which blob.
        what: &'static str,
        /// Its size.
        len: usize,
    },
    /// A command was issued out of order.
    #[error("{0} issued out of order")]
    Order(&'static str),
    /// A `/dev/sev` command failed.
    #[error("/dev/sev {what} failed: {failure}")]
    PlatformCommand {
        /// The command.
        what: &'static str,
        /// errno and firmware status.
        failure: FwFailure,
    },
    /// A vCPU setup step for an SEV-ES/SNP vCPU failed.
    #[error("setting up vCPU {index}: {what} failed")]
    VcpuSetup {
        /// vCPU index.
        index: u32,
        /// The ioctl.
        what: &'static str,
        /// errno.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// `/dev/sev`, opened read-write.
#[derive(Debug)]
pub struct SevDevice {
    file: File,
}

impl SevDevice {
    /// Opens `/dev/sev` read-write (commands that reach the firmware need it).
    pub fn open() -> Result<Self, SevError> {
        Self::open_path(Path::new(SEV_DEVICE))
    }

    /// Opens a given SEV device node read-write.
    pub fn open_path(path: &Path) -> Result<Self, SevError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(SevError::OpenSev)?;
        Ok(SevDevice { file })
    }

    /// The fd to put in `kvm_sev_cmd.sev_fd`.
    pub fn fd(&self) -> u32 {
        // File descriptors are non-negative.
        self.file.as_raw_fd() as u32
    }

    /// Issues one `SEV_ISSUE_CMD` with an output buffer.
    fn issue<const N: usize>(&self, what: &'static str, cmd: u32) -> Result<[u8; N], SevError> {
        let mut out = [0u8; N];
        let mut arg = uapi::SevIssueCmd {
            cmd,
            data: out.as_mut_ptr() as u64,
            error: 0,
        };
        // SAFETY: SEV_ISSUE_CMD reads the 16-byte packed `arg` and, for the
        // status commands used here, writes at most N bytes (the size of the
        // command's psp-sev.h output struct) to `data`, which points to `out`,
        // live and exclusively borrowed for the duration of the call.
        let ret = unsafe {
            vmm_sys_util::ioctl::ioctl_with_mut_ref(
                &self.file,
                uapi::SEV_ISSUE_CMD as libc::c_ulong,
                &mut arg,
            )
        };
        if ret < 0 {
            return Err(SevError::PlatformCommand {
                what,
                failure: FwFailure {
                    errno: std::io::Error::last_os_error(),
                    fw_error: arg.error,
                },
            });
        }
        Ok(out)
    }

    /// `SEV_PLATFORM_STATUS`.
    pub fn platform_status(&self) -> Result<uapi::SevPlatformStatus, SevError> {
        let b = self.issue::<{ uapi::SEV_STATUS_SIZE }>(
            "SEV_PLATFORM_STATUS",
            uapi::SEV_CMD_PLATFORM_STATUS,
        )?;
        Ok(uapi::parse_sev_status(&b))
    }

    /// `SNP_PLATFORM_STATUS`.
    pub fn snp_platform_status(&self) -> Result<uapi::SnpPlatformStatus, SevError> {
        let b = self.issue::<{ uapi::SNP_STATUS_SIZE }>(
            "SNP_PLATFORM_STATUS",
            uapi::SEV_CMD_SNP_PLATFORM_STATUS,
        )?;
        Ok(uapi::parse_snp_status(&b))
    }
}

/// Reads a `/dev/kvm` device attribute (system-fd `KVM_GET_DEVICE_ATTR`,
/// which kvm-ioctls 0.25.1 does not offer on x86).
pub fn get_device_attr(kvm: &Kvm, group: u32, attr: u64) -> Result<u64, SevError> {
    let mut value: u64 = 0;
    let arg = uapi::kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr: &mut value as *mut u64 as u64,
    };
    // SAFETY: KVM_GET_DEVICE_ATTR reads the 24-byte `arg` and writes one u64
    // to `arg.addr`, which points to `value`, live and not otherwise borrowed
    // until the call returns.
    let ret = unsafe {
        vmm_sys_util::ioctl::ioctl_with_ref(kvm, uapi::KVM_GET_DEVICE_ATTR as libc::c_ulong, &arg)
    };
    if ret < 0 {
        return Err(SevError::GetDeviceAttr {
            group,
            attr,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(value)
}

/// The VM types KVM offers (`KVM_CAP_VM_TYPES`; bit N = type N). Kernels
/// before 6.10 lack the capability: only the default type then.
pub fn vm_types(kvm: &Kvm) -> u64 {
    let r = kvm.check_extension_raw(uapi::CAP_VM_TYPES as libc::c_ulong);
    if r > 0 {
        r as u64
    } else {
        1 << uapi::VM_TYPE_DEFAULT
    }
}

/// Issues one `KVM_MEMORY_ENCRYPT_OP` with `data` as the command's struct
/// (or no data); returns the errno and firmware status on failure.
pub(crate) fn sev_command<T>(
    vm: &VmFd,
    id: u32,
    data: Option<&mut T>,
    sev_fd: Option<u32>,
) -> Result<(), FwFailure> {
    let mut cmd = uapi::kvm_sev_cmd {
        id,
        pad0: 0,
        data: data.map_or(0, |d| d as *mut T as u64),
        error: 0,
        sev_fd: sev_fd.unwrap_or(0),
    };
    // kvm-ioctls' encrypt_op_sev is a safe wrapper: the pointer in `data` is
    // a live exclusive borrow of the command's struct for the whole call.
    vm.encrypt_op_sev(&mut cmd).map_err(|e| FwFailure {
        errno: std::io::Error::from_raw_os_error(e.errno()),
        fw_error: cmd.error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fw_failure_names_the_status() {
        let f = FwFailure {
            errno: std::io::Error::from_raw_os_error(libc::EIO),
            fw_error: 0x16,
        };
        let s = f.to_string();
        assert!(s.contains("0x16 INVALID_PARAM"), "{s}");
        let kernel = FwFailure {
            errno: std::io::Error::from_raw_os_error(libc::EINVAL),
            fw_error: 0,
        };
        let s = kernel.to_string();
        assert!(
            s.contains("refused by the kernel; no firmware status"),
            "{s}"
        );
        assert!(!s.contains("SUCCESS"), "{s}");
    }

    #[test]
    fn opening_a_missing_device_is_an_error() {
        let e = SevDevice::open_path(Path::new("/nonexistent/sev")).unwrap_err();
        assert!(matches!(e, SevError::OpenSev(_)));
    }

    #[test]
    fn vm_types_has_the_default_type_where_kvm_exists() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("skipped: /dev/kvm not available");
            return;
        };
        assert_ne!(vm_types(&kvm) & 1, 0);
    }

    #[test]
    fn missing_device_attribute_is_an_error_not_a_value() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("skipped: /dev/kvm not available");
            return;
        };
        // Group 0x7fff_0000 exists on no kernel.
        assert!(get_device_attr(&kvm, 0x7fff_0000, 0).is_err());
    }
}
