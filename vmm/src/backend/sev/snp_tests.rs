//! Pure logic of the SNP backend: feature checks, conversion requests from
//! the guest (hostile input), LAUNCH_UPDATE progress accounting.

use super::*;

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
        Ok(MapGpaRange {
            gpa: 0x10_0000,
            size: 0x1000,
            private: true
        })
    );
    assert_eq!(
        validate_map_gpa_range(0x20_0000, 512, uapi::MAP_GPA_RANGE_PAGE_SZ_2M, &RAM),
        Ok(MapGpaRange {
            gpa: 0x20_0000,
            size: 0x20_0000,
            private: false
        })
    );
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
        (0x9000_0000, 1, 0),
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
    // Nothing done (EAGAIN-style): no progress, not an error.
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
