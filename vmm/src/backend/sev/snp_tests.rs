//! Pure logic of the SNP backend: feature checks, conversion requests from
//! the guest (hostile input), LAUNCH_UPDATE progress accounting.

use super::*;
use crate::backend::sev::launch_update::{check_progress, MAX_STALLS};
use crate::backend::sev::FwFailure;

const EINVAL: u64 = libc::EINVAL as u64;
/// Guest RAM: 0..2 GiB and 4 GiB..4 GiB+1 MiB, and the 64 KiB firmware below 4 GiB.
const RAM: [(u64, u64); 3] = [
    (0, 0x8000_0000),
    (0xFFFF_0000, 0x1_0000),
    (0x1_0000_0000, 0x10_0000),
];

#[test]
fn vmsa_features_are_intersected_and_unsupported_ones_refused() {
    // SNPActive is KVM's to set: dropped, never an error.
    assert_eq!(check_vmsa_features(0x1, 0x0).ok(), Some(0));
    // DebugSwap (bit 5) supported: kept.
    assert_eq!(check_vmsa_features(0x21, 0x20).ok(), Some(0x20));
    // SecureTSC (bit 9) requested, KVM accepts only DebugSwap.
    match check_vmsa_features(0x201, 0x20) {
        Err(SevError::VmsaFeatures {
            requested,
            supported,
        }) => assert_eq!((requested, supported), (0x200, 0x20)),
        other => panic!("unexpected {other:?}"),
    }
    let msg = check_vmsa_features(0x201, 0x20).unwrap_err().to_string();
    assert!(msg.contains("unsupported: 0x200"), "{msg}");
}

#[test]
fn ram_coverage_spans_adjacent_slots_only() {
    assert!(range_in_ram(0, 0x1000, &RAM));
    assert!(range_in_ram(0x7FFF_F000, 0x1000, &RAM));
    assert!(!range_in_ram(0x7FFF_F000, 0x2000, &RAM));
    assert!(range_in_ram(0xFFFF_0000, 0x1_0000 + 0x10_0000, &RAM));
    assert!(!range_in_ram(0x8000_0000, 0x1000, &RAM));
    assert!(!range_in_ram(u64::MAX - 0xFFF, 0x2000, &RAM));
    assert!(!range_in_ram(0, 0x1000, &[]));
}

#[test]
fn map_gpa_range_accepts_valid_conversions() {
    // 4 KiB private, 2 MiB shared, bit 4 = private (not bit 3).
    assert_eq!(
        validate_map_gpa_range(0x10_0000, 1, uapi::MAP_GPA_RANGE_ENCRYPTED, &RAM),
        Ok(Some(MapGpaRange {
            gpa: 0x10_0000,
            size: 0x1000,
            private: true
        }))
    );
    assert_eq!(
        validate_map_gpa_range(0x20_0000, 512, uapi::MAP_GPA_RANGE_PAGE_SZ_2M, &RAM),
        Ok(Some(MapGpaRange {
            gpa: 0x20_0000,
            size: 0x20_0000,
            private: false
        }))
    );
    // Shared conversions of MMIO are a no-op success, as QEMU answers them.
    assert_eq!(validate_map_gpa_range(0x9000_0000, 1, 0, &RAM), Ok(None));
    assert_eq!(validate_map_gpa_range(0xFEC0_0000, 1, 0, &RAM), Ok(None));
}

#[test]
fn map_gpa_range_refuses_hostile_requests_with_einval() {
    let enc = uapi::MAP_GPA_RANGE_ENCRYPTED;
    // Unaligned GPA, zero pages, page count overflowing, range past RAM,
    // range in the hole, unknown attribute bits (bit 3 is not "private"),
    // two page sizes at once.
    for (gpa, npages, attrs) in [
        (0x10_0800, 1, enc),
        (0x10_0000, 0, enc),
        (0x10_0000, u64::MAX, enc),
        (0x7FFF_F000, 2, enc),
        (0x7FFF_F000, 2, 0),
        (0x9000_0000, 1, enc),
        (0x10_0000, 1, 1 << 3),
        (0x10_0000, 1, 1 << 5),
        (0x10_0000, 512, 0b11),
        (!0xFFFu64, 2, 0),
    ] {
        assert_eq!(
            validate_map_gpa_range(gpa, npages, attrs, &RAM),
            Err(EINVAL),
            "{gpa:#x} {npages} {attrs:#x}"
        );
    }
}

#[test]
fn memory_fault_direction_follows_the_private_flag() {
    let p = uapi::MEMORY_EXIT_FLAG_PRIVATE;
    assert_eq!(validate_memory_fault(p, 0x1000, 0x1000, &RAM), Ok(true));
    assert_eq!(validate_memory_fault(0, 0x1000, 0x1000, &RAM), Ok(false));
    assert!(validate_memory_fault(p | 1, 0x1000, 0x1000, &RAM).is_err());
    assert!(validate_memory_fault(p, 0x1001, 0x1000, &RAM).is_err());
    assert!(validate_memory_fault(p, 0x1000, 0, &RAM).is_err());
    assert!(validate_memory_fault(p, 0x8000_0000, 0x1000, &RAM).is_err());
}

fn upd(gfn: u64, uaddr: u64, len: u64) -> uapi::kvm_sev_snp_launch_update {
    uapi::kvm_sev_snp_launch_update {
        gfn_start: gfn,
        uaddr,
        len,
        type_: 1,
        ..Default::default()
    }
}

#[test]
fn launch_update_progress_is_checked() {
    let before = upd(0xFFFF0, 0x7000_0000, 0x10000);
    // Kernel did 3 pages: resume from there.
    assert_eq!(
        check_progress(&before, &upd(0xFFFF3, 0x7000_3000, 0xD000), false),
        Ok(true)
    );
    // Nothing done: no progress, not an error.
    assert_eq!(check_progress(&before, &before, false), Ok(false));
    // ZERO pages: uaddr does not move.
    assert_eq!(
        check_progress(&before, &upd(0xFFFF4, 0x7000_0000, 0xC000), true),
        Ok(true)
    );
    // Inconsistent write-backs are refused.
    assert!(check_progress(&before, &upd(0xFFFF0, 0x7000_0000, 0x20000), false).is_err());
    assert!(check_progress(&before, &upd(0xFFFF1, 0x7000_0800, 0xF800), false).is_err());
    assert!(check_progress(&before, &upd(0xFFFF2, 0x7000_1000, 0xF000), false).is_err());
    assert!(check_progress(&before, &upd(0xFFFF1, 0x7000_2000, 0xF000), false).is_err());
}

#[test]
fn snp_backend_reports_missing_hardware_without_panicking() {
    // On machines without SEV-SNP this must be a clean error; on SNP hosts
    // it may succeed (it needs /dev/sev).
    match SnpHypervisor::new(SnpConfig::default()) {
        Ok(_) => eprintln!("SNP host: backend available"),
        Err(e) => eprintln!("no SNP backend here: {e}"),
    }
}

/// What the kernel answers for a populate failure without progress.
fn eio() -> FwFailure {
    FwFailure {
        errno: std::io::Error::from_raw_os_error(libc::EIO),
        fw_error: 0,
    }
}

/// A fake kernel doing at most `per_call` pages per call, as sev.c does
/// (gfn_start and uaddr advance, len shrinks), with an `-EIO` (a pending
/// signal) every third call.
#[test]
fn launch_update_resumes_partial_progress_until_len_is_zero() {
    let mut calls = Vec::new();
    let mut n = 0;
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 10 * 0x1000), |a| {
        n += 1;
        calls.push((a.gfn_start, a.uaddr, a.len));
        if n % 3 == 0 {
            return Err(eio());
        }
        let pages = (a.len / 0x1000).min(4);
        a.gfn_start += pages;
        a.uaddr += pages * 0x1000;
        a.len -= pages * 0x1000;
        Ok(())
    });
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        calls,
        vec![
            (0x100, 0x7000_0000, 0xA000),
            (0x104, 0x7000_4000, 0x6000),
            (0x108, 0x7000_8000, 0x2000),
            (0x108, 0x7000_8000, 0x2000),
        ]
    );
}

#[test]
fn launch_update_failure_reports_where_it_stopped_and_the_firmware_code() {
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 0x3000), |a| {
        if a.gfn_start == 0x101 {
            return Err(FwFailure {
                errno: std::io::Error::from_raw_os_error(libc::EIO),
                fw_error: uapi::SEV_RET_INVALID_PARAM,
            });
        }
        a.gfn_start += 1;
        a.uaddr += 0x1000;
        a.len -= 0x1000;
        Ok(())
    });
    match r {
        Err(SevError::SnpLaunchUpdate {
            gpa, len, failure, ..
        }) => {
            assert_eq!((gpa, len, failure.fw_error), (0x10_1000, 0x2000, 0x16));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn launch_update_that_never_progresses_gives_up() {
    // Success without progress, forever: abandoned after MAX_STALLS.
    let mut n = 0u32;
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 0x1000), |_| {
        n += 1;
        Ok(())
    });
    assert!(matches!(r, Err(SevError::SnpLaunchUpdate { .. })));
    assert_eq!(n, MAX_STALLS + 1);
    // -EIO without a firmware status twice in a row: retried once, then
    // the error (the kernel's answer for a failed populate).
    let mut n = 0u32;
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 0x1000), |_| {
        n += 1;
        Err(eio())
    });
    assert!(
        matches!(r, Err(SevError::SnpLaunchUpdate { failure, .. }) if failure.errno.raw_os_error() == Some(libc::EIO))
    );
    assert_eq!(n, 2);
    // -EAGAIN is not the kernel's answer: an error at once.
    let mut n = 0u32;
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 0x1000), |_| {
        n += 1;
        Err(FwFailure {
            errno: std::io::Error::from_raw_os_error(libc::EAGAIN),
            fw_error: 0,
        })
    });
    assert!(r.is_err());
    assert_eq!(n, 1);
    // A kernel that claims more than it was given is refused at once.
    let r = drive_launch_update(upd(0x100, 0x7000_0000, 0x1000), |a| {
        a.len = 0x2000;
        Ok(())
    });
    assert!(matches!(r, Err(SevError::SnpLaunchUpdate { .. })));
}

fn invalid_param() -> SevError {
    SevError::SnpLaunchUpdate {
        gpa: 0x19000,
        len: 0x1000,
        page_type: 6,
        failure: FwFailure {
            errno: std::io::Error::from_raw_os_error(libc::EIO),
            fw_error: uapi::SEV_RET_INVALID_PARAM,
        },
    }
}

fn leaf7(ebx: u32) -> Vec<u8> {
    uapi::cpuid_page_bytes(&[uapi::CpuidEntry {
        eax_in: 7,
        ebx,
        ..Default::default()
    }])
    .expect("fits")
    .to_vec()
}

#[test]
fn rejected_cpuid_page_is_retried_once_with_the_firmware_table() {
    // The source buffer as the fake firmware leaves it after rejecting.
    let buffer = std::cell::RefCell::new(leaf7(0xFFFF_FFFF));
    let mut attempts = Vec::new();
    let r = update_cpuid_with_retry(
        0x19000,
        &leaf7(0xFFFF_FFFF),
        || {
            attempts.push(buffer.borrow().clone());
            if attempts.len() == 1 {
                *buffer.borrow_mut() = leaf7(0x0219_C7A9);
                return Err(invalid_param());
            }
            Ok(())
        },
        || buffer.borrow().clone(),
    );
    assert_eq!(
        r.expect("retry succeeds").as_deref(),
        Some("leaf 0x00000007/0x0 ebx: 0xffffffff -> 0x0219c7a9\n")
    );
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attempts[1],
        leaf7(0x0219_C7A9),
        "retry used the corrected table"
    );
}

#[test]
fn cpuid_page_rejected_twice_is_an_error_with_the_diff() {
    let mut n = 0;
    let r = update_cpuid_with_retry(
        0x19000,
        &leaf7(1),
        || {
            n += 1;
            Err(invalid_param())
        },
        || leaf7(2),
    );
    assert_eq!(n, 2, "exactly one retry");
    match r {
        Err(SevError::CpuidRejected { gpa, diff, .. }) => {
            assert_eq!(gpa, 0x19000);
            assert!(diff.contains("ebx: 0x00000001 -> 0x00000002"), "{diff}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Other failures are not retried.
    let mut n = 0;
    let r = update_cpuid_with_retry(
        0x19000,
        &leaf7(1),
        || {
            n += 1;
            Err(SevError::Range { gpa: 0, len: 0 })
        },
        Vec::new,
    );
    assert!(matches!(r, Err(SevError::Range { .. })));
    assert_eq!(n, 1);
    // Accepted at once: no diff.
    assert_eq!(
        update_cpuid_with_retry(0, &leaf7(1), || Ok(()), Vec::new).ok(),
        Some(None)
    );
}
