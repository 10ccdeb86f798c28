//! The pure halves of SNP_LAUNCH_UPDATE on hardware, testable without it:
//! checking the kernel's write-back of `struct kvm_sev_snp_launch_update`
//! (arch/x86/kvm/svm/sev.c `snp_launch_update` advances `gfn_start`,
//! `uaddr` and shrinks `len` page by page), driving one update to
//! completion, and the one retry of a CPUID page the firmware corrected
//! (QEMU target/i386/sev.c `sev_snp_cpuid_report_mismatch`).

use super::uapi::{self, PAGE_SIZE};
use super::{FwFailure, SevError};

/// How often one LAUNCH_UPDATE may make no progress in a row before the
/// launch is abandoned (a kernel that never progresses would
/// otherwise hang the VMM).
pub(crate) const MAX_STALLS: u32 = 1000;
/// Checks what the kernel wrote back into a LAUNCH_UPDATE argument: `len`
/// shrank by whole pages, `gfn_start` (and `uaddr`, except for ZERO pages)
/// advanced by as much. Returns whether any page was done.
pub fn check_progress(
    before: &uapi::kvm_sev_snp_launch_update,
    after: &uapi::kvm_sev_snp_launch_update,
    zero: bool,
) -> Result<bool, &'static str> {
    if after.len > before.len {
        return Err("kernel grew LAUNCH_UPDATE len");
    }
    let done = before.len - after.len;
    if !done.is_multiple_of(PAGE_SIZE) {
        return Err("kernel reported partial pages");
    }
    let pages = done / PAGE_SIZE;
    if after.gfn_start != before.gfn_start.wrapping_add(pages) {
        return Err("kernel advanced gfn_start inconsistently with len");
    }
    if !zero && after.uaddr != before.uaddr.wrapping_add(done) {
        return Err("kernel advanced uaddr inconsistently with len");
    }
    Ok(pages > 0)
}

/// Runs a CPUID-page LAUNCH_UPDATE (`update`). If the firmware rejects the
/// table with `INVALID_PARAM`, it has written the table it accepts back
/// into the source buffer (`read_back`): the difference from `old` is
/// logged and the update retried once with the corrected table. Returns the
/// readable diff when a correction was taken; a second rejection is
/// [`SevError::CpuidRejected`] carrying it.
pub fn update_cpuid_with_retry(
    gpa: u64,
    old: &[u8],
    mut update: impl FnMut() -> Result<(), SevError>,
    read_back: impl FnOnce() -> Vec<u8>,
) -> Result<Option<String>, SevError> {
    match update() {
        Ok(()) => Ok(None),
        Err(SevError::SnpLaunchUpdate { failure, .. })
            if failure.fw_error == uapi::SEV_RET_INVALID_PARAM =>
        {
            let diff = uapi::cpuid_diff(old, &read_back());
            log::warn!("firmware corrected the CPUID page at {gpa:#x}; retrying once:\n{diff}");
            match update() {
                Ok(()) => Ok(Some(diff)),
                Err(e) => Err(SevError::CpuidRejected {
                    gpa,
                    diff,
                    source: Box::new(e),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

/// Drives one LAUNCH_UPDATE to completion through `issue` (the ioctl):
/// resumes from what the kernel wrote back while `len != 0`, refuses
/// inconsistent write-backs, and gives up after [`MAX_STALLS`] calls in a
/// row without progress. The kernel turns every `kvm_gmem_populate`
/// failure without progress into `-EIO` with no firmware status (and does
/// not copy the argument back): a pending signal (`-EINTR` inside) is the
/// likely cause, so one such failure is retried; a second in a row is the
/// error. (It never answers `-EAGAIN`.)
pub fn drive_launch_update(
    mut arg: uapi::kvm_sev_snp_launch_update,
    mut issue: impl FnMut(&mut uapi::kvm_sev_snp_launch_update) -> Result<(), FwFailure>,
) -> Result<(), SevError> {
    let page_type = arg.type_;
    let zero = u32::from(page_type) == kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_ZERO;
    let fail = |arg: &uapi::kvm_sev_snp_launch_update, failure| SevError::SnpLaunchUpdate {
        gpa: arg.gfn_start.wrapping_mul(PAGE_SIZE),
        len: arg.len,
        page_type,
        failure,
    };
    let mut stalls = 0;
    let mut retried = false;
    while arg.len != 0 {
        let before = arg;
        match issue(&mut arg) {
            Ok(()) => retried = false,
            Err(f) if f.errno.raw_os_error() == Some(libc::EIO) && f.fw_error == 0 && !retried => {
                retried = true;
                arg = before;
                continue;
            }
            Err(failure) => return Err(fail(&arg, failure)),
        }
        let progressed = check_progress(&before, &arg, zero).map_err(|why| {
            fail(
                &before,
                FwFailure {
                    errno: std::io::Error::other(why),
                    fw_error: 0,
                },
            )
        })?;
        if progressed {
            stalls = 0;
        } else {
            stalls += 1;
            if stalls > MAX_STALLS {
                return Err(fail(
                    &arg,
                    FwFailure {
                        errno: std::io::Error::from_raw_os_error(libc::EAGAIN),
                        fw_error: 0,
                    },
                ));
            }
        }
    }
    Ok(())
}
