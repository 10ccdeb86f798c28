//! Byte-for-byte checks of every ioctl argument against the kernel headers.
//!
//! Each test writes distinct values into the struct, views it as the bytes
//! the kernel reads, and compares with a buffer built by hand from the
//! header's layout (offsets and sizes as in the cited header, not as our
//! code computes them).

use super::*;
use core::mem::{offset_of, size_of};

/// The bytes the kernel sees for `v`.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: every T passed here is a #[repr(C)] kernel UAPI struct whose
    // size equals the sum of its fields (asserted by each test), so it has no
    // implicit padding and all size_of::<T>() bytes are initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// A hand-built buffer: `size` zero bytes with `fields` (offset, bytes) put in.
fn layout(size: usize, fields: &[(usize, &[u8])]) -> Vec<u8> {
    let mut b = vec![0u8; size];
    for (off, f) in fields {
        b[*off..*off + f.len()].copy_from_slice(f);
    }
    b
}

#[test]
fn kvm_sev_cmd_layout() {
    // include/uapi/linux/kvm.h: struct kvm_sev_cmd { __u32 id; __u32 pad0;
    // __u64 data; __u32 error; __u32 sev_fd; }
    assert_eq!(size_of::<kvm_sev_cmd>(), 24);
    assert_eq!(offset_of!(kvm_sev_cmd, id), 0);
    assert_eq!(offset_of!(kvm_sev_cmd, data), 8);
    assert_eq!(offset_of!(kvm_sev_cmd, error), 16);
    assert_eq!(offset_of!(kvm_sev_cmd, sev_fd), 20);
    let c = kvm_sev_cmd {
        id: 101,
        pad0: 0,
        data: 0x1122_3344_5566_7788,
        error: 0x16,
        sev_fd: 7,
    };
    let want = layout(
        24,
        &[
            (0, &101u32.to_le_bytes()),
            (8, &0x1122_3344_5566_7788u64.to_le_bytes()),
            (16, &0x16u32.to_le_bytes()),
            (20, &7u32.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&c), want);
}

#[test]
fn kvm_sev_init_layout() {
    // arch/x86/include/uapi/asm/kvm.h: struct kvm_sev_init { __u64
    // vmsa_features; __u32 flags; __u16 ghcb_version; __u16 pad1; __u32 pad2[8]; }
    assert_eq!(size_of::<kvm_sev_init>(), 48);
    assert_eq!(offset_of!(kvm_sev_init, vmsa_features), 0);
    assert_eq!(offset_of!(kvm_sev_init, flags), 8);
    assert_eq!(offset_of!(kvm_sev_init, ghcb_version), 12);
    assert_eq!(offset_of!(kvm_sev_init, pad1), 14);
    assert_eq!(offset_of!(kvm_sev_init, pad2), 16);
    let i = kvm_sev_init {
        vmsa_features: 0x20,
        flags: 0,
        ghcb_version: 2,
        ..Default::default()
    };
    let want = layout(
        48,
        &[(0, &0x20u64.to_le_bytes()), (12, &2u16.to_le_bytes())],
    );
    assert_eq!(bytes_of(&i), want);
}

#[test]
fn snp_launch_start_layout() {
    // asm/kvm.h: struct kvm_sev_snp_launch_start { __u64 policy; __u8
    // gosvw[16]; __u16 flags; __u8 pad0[6]; __u64 pad1[4]; }
    assert_eq!(size_of::<kvm_sev_snp_launch_start>(), 64);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, policy), 0);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, gosvw), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, flags), 24);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, pad0), 26);
    assert_eq!(offset_of!(kvm_sev_snp_launch_start, pad1), 32);
    let gosvw: [u8; 16] = core::array::from_fn(|i| 0xA0 + i as u8);
    let s = kvm_sev_snp_launch_start {
        policy: 0x30000,
        gosvw,
        ..Default::default()
    };
    let want = layout(64, &[(0, &0x30000u64.to_le_bytes()), (8, &gosvw)]);
    assert_eq!(bytes_of(&s), want);
}

#[test]
fn snp_launch_update_layout() {
    // asm/kvm.h: struct kvm_sev_snp_launch_update { __u64 gfn_start; __u64
    // uaddr; __u64 len; __u8 type; __u8 pad0; __u16 flags; __u32 pad1;
    // __u64 pad2[4]; }
    assert_eq!(size_of::<kvm_sev_snp_launch_update>(), 64);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, gfn_start), 0);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, uaddr), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, len), 16);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, type_), 24);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad0), 25);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, flags), 26);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad1), 28);
    assert_eq!(offset_of!(kvm_sev_snp_launch_update, pad2), 32);
    let u = kvm_sev_snp_launch_update {
        gfn_start: 0xFFFF0,
        uaddr: 0x7f00_0000_1000,
        len: 0x10000,
        type_: 6,
        ..Default::default()
    };
    let want = layout(
        64,
        &[
            (0, &0xFFFF0u64.to_le_bytes()),
            (8, &0x7f00_0000_1000u64.to_le_bytes()),
            (16, &0x10000u64.to_le_bytes()),
            (24, &[6]),
        ],
    );
    assert_eq!(bytes_of(&u), want);
}

#[test]
fn snp_launch_finish_layout_has_vcek_disabled_before_host_data() {
    // asm/kvm.h: struct kvm_sev_snp_launch_finish { __u64 id_block_uaddr;
    // __u64 id_auth_uaddr; __u8 id_block_en; __u8 auth_key_en; __u8
    // vcek_disabled; __u8 host_data[32]; __u8 pad0[3]; __u16 flags; __u64 pad1[4]; }
    // (the `sev` crate's copy lacks vcek_disabled and puts host_data at 18).
    assert_eq!(size_of::<kvm_sev_snp_launch_finish>(), 88);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_block_uaddr), 0);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr), 8);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, id_block_en), 16);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, auth_key_en), 17);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, vcek_disabled), 18);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, host_data), 19);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, pad0), 51);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, flags), 54);
    assert_eq!(offset_of!(kvm_sev_snp_launch_finish, pad1), 56);
    let host_data: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
    let f = kvm_sev_snp_launch_finish {
        id_block_uaddr: 0x1000,
        id_auth_uaddr: 0x2000,
        id_block_en: 1,
        auth_key_en: 1,
        vcek_disabled: 1,
        host_data,
        ..Default::default()
    };
    let want = layout(
        88,
        &[
            (0, &0x1000u64.to_le_bytes()),
            (8, &0x2000u64.to_le_bytes()),
            (16, &[1, 1, 1]),
            (19, &host_data),
        ],
    );
    assert_eq!(bytes_of(&f), want);
}

#[test]
fn legacy_launch_structs_layout() {
    // include/uapi/linux/kvm.h: struct kvm_sev_launch_start { __u32 handle;
    // __u32 policy; __u64 dh_uaddr; __u32 dh_len; __u32 pad0; __u64
    // session_uaddr; __u32 session_len; __u32 pad1; }
    assert_eq!(size_of::<kvm_sev_launch_start>(), 40);
    assert_eq!(offset_of!(kvm_sev_launch_start, handle), 0);
    assert_eq!(offset_of!(kvm_sev_launch_start, policy), 4);
    assert_eq!(offset_of!(kvm_sev_launch_start, dh_uaddr), 8);
    assert_eq!(offset_of!(kvm_sev_launch_start, dh_len), 16);
    assert_eq!(offset_of!(kvm_sev_launch_start, session_uaddr), 24);
    assert_eq!(offset_of!(kvm_sev_launch_start, session_len), 32);
    let s = kvm_sev_launch_start {
        handle: 3,
        policy: 0x5,
        dh_uaddr: 0xAAAA_0000,
        dh_len: 0x824,
        pad0: 0,
        session_uaddr: 0xBBBB_0000,
        session_len: 0x1AC,
        pad1: 0,
    };
    let want = layout(
        40,
        &[
            (0, &3u32.to_le_bytes()),
            (4, &5u32.to_le_bytes()),
            (8, &0xAAAA_0000u64.to_le_bytes()),
            (16, &0x824u32.to_le_bytes()),
            (24, &0xBBBB_0000u64.to_le_bytes()),
            (32, &0x1ACu32.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&s), want);

    // struct kvm_sev_launch_update_data / kvm_sev_launch_measure:
    // { __u64 uaddr; __u32 len; __u32 pad0; }
    assert_eq!(size_of::<kvm_sev_launch_update_data>(), 16);
    assert_eq!(offset_of!(kvm_sev_launch_update_data, uaddr), 0);
    assert_eq!(offset_of!(kvm_sev_launch_update_data, len), 8);
    let u = kvm_sev_launch_update_data {
        uaddr: 0x7f12_3456_7000,
        len: 0x2000,
        pad0: 0,
    };
    let want = layout(
        16,
        &[
            (0, &0x7f12_3456_7000u64.to_le_bytes()),
            (8, &0x2000u32.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&u), want);
    assert_eq!(size_of::<kvm_sev_launch_measure>(), 16);
    assert_eq!(offset_of!(kvm_sev_launch_measure, uaddr), 0);
    assert_eq!(offset_of!(kvm_sev_launch_measure, len), 8);
    let m = kvm_sev_launch_measure {
        uaddr: 0x5000,
        len: 48,
        pad0: 0,
    };
    let want = layout(
        16,
        &[(0, &0x5000u64.to_le_bytes()), (8, &48u32.to_le_bytes())],
    );
    assert_eq!(bytes_of(&m), want);

    // struct kvm_sev_launch_secret { __u64 hdr_uaddr; __u32 hdr_len; __u32
    // pad0; __u64 guest_uaddr; __u32 guest_len; __u32 pad1; __u64
    // trans_uaddr; __u32 trans_len; __u32 pad2; }
    assert_eq!(size_of::<kvm_sev_launch_secret>(), 48);
    assert_eq!(offset_of!(kvm_sev_launch_secret, hdr_uaddr), 0);
    assert_eq!(offset_of!(kvm_sev_launch_secret, hdr_len), 8);
    assert_eq!(offset_of!(kvm_sev_launch_secret, guest_uaddr), 16);
    assert_eq!(offset_of!(kvm_sev_launch_secret, guest_len), 24);
    assert_eq!(offset_of!(kvm_sev_launch_secret, trans_uaddr), 32);
    assert_eq!(offset_of!(kvm_sev_launch_secret, trans_len), 40);
    let s = kvm_sev_launch_secret {
        hdr_uaddr: 0x1000,
        hdr_len: 52,
        guest_uaddr: 0x2000,
        guest_len: 0x100,
        trans_uaddr: 0x3000,
        trans_len: 0x100,
        ..Default::default()
    };
    let want = layout(
        48,
        &[
            (0, &0x1000u64.to_le_bytes()),
            (8, &52u32.to_le_bytes()),
            (16, &0x2000u64.to_le_bytes()),
            (24, &0x100u32.to_le_bytes()),
            (32, &0x3000u64.to_le_bytes()),
            (40, &0x100u32.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&s), want);

    // struct kvm_sev_guest_status { __u32 handle; __u32 policy; __u32 state; }
    assert_eq!(size_of::<kvm_sev_guest_status>(), 12);
    assert_eq!(offset_of!(kvm_sev_guest_status, policy), 4);
    assert_eq!(offset_of!(kvm_sev_guest_status, state), 8);
    // struct kvm_sev_attestation_report { __u8 mnonce[16]; __u64 uaddr; __u32 len; __u32 pad0; }
    assert_eq!(size_of::<kvm_sev_attestation_report>(), 32);
    assert_eq!(offset_of!(kvm_sev_attestation_report, uaddr), 16);
    assert_eq!(offset_of!(kvm_sev_attestation_report, len), 24);
    // struct kvm_enc_region { __u64 addr; __u64 size; }
    assert_eq!(size_of::<kvm_enc_region>(), 16);
    let r = kvm_enc_region {
        addr: 0x7f00_0000_0000,
        size: 0x4000_0000,
    };
    let want = layout(
        16,
        &[
            (0, &0x7f00_0000_0000u64.to_le_bytes()),
            (8, &0x4000_0000u64.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&r), want);
}

#[test]
fn private_memory_structs_layout() {
    // include/uapi/linux/kvm.h: struct kvm_create_guest_memfd { __u64 size;
    // __u64 flags; __u64 reserved[6]; }
    assert_eq!(size_of::<kvm_create_guest_memfd>(), 64);
    assert_eq!(offset_of!(kvm_create_guest_memfd, flags), 8);
    assert_eq!(offset_of!(kvm_create_guest_memfd, reserved), 16);
    let g = kvm_create_guest_memfd {
        size: 0x4000_0000,
        ..Default::default()
    };
    assert_eq!(
        bytes_of(&g),
        layout(64, &[(0, &0x4000_0000u64.to_le_bytes())])
    );

    // struct kvm_userspace_memory_region2 { __u32 slot; __u32 flags; __u64
    // guest_phys_addr; __u64 memory_size; __u64 userspace_addr; __u64
    // guest_memfd_offset; __u32 guest_memfd; __u32 pad1; __u64 pad2[14]; }
    assert_eq!(size_of::<kvm_userspace_memory_region2>(), 160);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, flags), 4);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, guest_phys_addr), 8);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, memory_size), 16);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, userspace_addr), 24);
    assert_eq!(
        offset_of!(kvm_userspace_memory_region2, guest_memfd_offset),
        32
    );
    assert_eq!(offset_of!(kvm_userspace_memory_region2, guest_memfd), 40);
    assert_eq!(offset_of!(kvm_userspace_memory_region2, pad2), 48);
    let r = kvm_userspace_memory_region2 {
        slot: 2,
        flags: MEM_GUEST_MEMFD,
        guest_phys_addr: 0x1_0000_0000,
        memory_size: 0x20_0000,
        userspace_addr: 0x7f00_0000_0000,
        guest_memfd_offset: 0x1000,
        guest_memfd: 9,
        ..Default::default()
    };
    let want = layout(
        160,
        &[
            (0, &2u32.to_le_bytes()),
            (4, &4u32.to_le_bytes()),
            (8, &0x1_0000_0000u64.to_le_bytes()),
            (16, &0x20_0000u64.to_le_bytes()),
            (24, &0x7f00_0000_0000u64.to_le_bytes()),
            (32, &0x1000u64.to_le_bytes()),
            (40, &9u32.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&r), want);

    // struct kvm_memory_attributes { __u64 address; __u64 size; __u64 attributes; __u64 flags; }
    assert_eq!(size_of::<kvm_memory_attributes>(), 32);
    assert_eq!(offset_of!(kvm_memory_attributes, size), 8);
    assert_eq!(offset_of!(kvm_memory_attributes, attributes), 16);
    assert_eq!(offset_of!(kvm_memory_attributes, flags), 24);
    let a = kvm_memory_attributes {
        address: 0x10_0000,
        size: 0x1000,
        attributes: MEMORY_ATTRIBUTE_PRIVATE,
        flags: 0,
    };
    let want = layout(
        32,
        &[
            (0, &0x10_0000u64.to_le_bytes()),
            (8, &0x1000u64.to_le_bytes()),
            (16, &8u64.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&a), want);

    // struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; }
    assert_eq!(size_of::<kvm_device_attr>(), 24);
    assert_eq!(offset_of!(kvm_device_attr, group), 4);
    assert_eq!(offset_of!(kvm_device_attr, attr), 8);
    assert_eq!(offset_of!(kvm_device_attr, addr), 16);
    let d = kvm_device_attr {
        flags: 0,
        group: GRP_SEV,
        attr: ATTR_VMSA_FEATURES,
        addr: 0xdead_b000,
    };
    let want = layout(
        24,
        &[
            (4, &1u32.to_le_bytes()),
            (16, &0xdead_b000u64.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&d), want);
}

#[test]
fn constants_match_headers() {
    // asm/kvm.h
    assert_eq!(VM_TYPE_DEFAULT, 0);
    assert_eq!(VM_TYPE_SEV, 2);
    assert_eq!(VM_TYPE_SEV_ES, 3);
    assert_eq!(VM_TYPE_SNP, 4);
    assert_eq!(GRP_SEV, 1);
    assert_eq!(ATTR_VMSA_FEATURES, 0);
    // kvm.h
    assert_eq!(CAP_VM_TYPES, 235);
    assert_eq!(CAP_EXIT_HYPERCALL, 201);
    assert_eq!(CAP_GUEST_MEMFD, 234);
    assert_eq!(MEM_GUEST_MEMFD, 1 << 2);
    assert_eq!(MEMORY_ATTRIBUTE_PRIVATE, 1 << 3);
    assert_eq!(MEMORY_EXIT_FLAG_PRIVATE, 1 << 3);
    assert_eq!(SYSTEM_EVENT_SEV_TERM, 6);
    assert_eq!(
        (
            SEV_INIT,
            SEV_ES_INIT,
            SEV_LAUNCH_START,
            SEV_LAUNCH_UPDATE_DATA
        ),
        (0, 1, 2, 3)
    );
    assert_eq!(
        (
            SEV_LAUNCH_UPDATE_VMSA,
            SEV_LAUNCH_SECRET,
            SEV_LAUNCH_MEASURE,
            SEV_LAUNCH_FINISH,
            SEV_INIT2
        ),
        (4, 5, 6, 7, 22)
    );
    assert_eq!(
        (SNP_LAUNCH_START, SNP_LAUNCH_UPDATE, SNP_LAUNCH_FINISH),
        (100, 101, 102)
    );
    // kvm_para.h: KVM_HC_MAP_GPA_RANGE 12; ENCRYPTED is bit 4 (not 3).
    assert_eq!(HC_MAP_GPA_RANGE, 12);
    assert_eq!(MAP_GPA_RANGE_ENCRYPTED, 0x10);
    assert_eq!(EXIT_HYPERCALL_MAP_GPA_RANGE, 0x1000);
    // ioctl encodings, computed by hand from _IOW/_IOWR:
    // _IOW(0xAE, 0xE2, 24) = 1<<30 | 24<<16 | 0xAE<<8 | 0xE2.
    assert_eq!(KVM_GET_DEVICE_ATTR, 0x4018_AEE2);
    assert_eq!(KVM_HAS_DEVICE_ATTR, 0x4018_AEE3);
    // _IOWR('S', 0, 16) = 3<<30 | 16<<16 | 0x53<<8 | 0.
    assert_eq!(SEV_ISSUE_CMD, 0xC010_5300);
}

#[test]
fn sev_issue_cmd_is_packed_16_bytes() {
    // psp-sev.h: struct sev_issue_cmd { __u32 cmd; __u64 data; __u32 error; } __packed;
    assert_eq!(size_of::<SevIssueCmd>(), 16);
    assert_eq!(offset_of!(SevIssueCmd, cmd), 0);
    assert_eq!(offset_of!(SevIssueCmd, data), 4);
    assert_eq!(offset_of!(SevIssueCmd, error), 12);
    let c = SevIssueCmd {
        cmd: SEV_CMD_SNP_PLATFORM_STATUS,
        data: 0x7fff_0000_1000,
        error: 0,
    };
    let want = layout(
        16,
        &[
            (0, &9u32.to_le_bytes()),
            (4, &0x7fff_0000_1000u64.to_le_bytes()),
        ],
    );
    assert_eq!(bytes_of(&c), want);
}

#[test]
fn parses_sev_platform_status() {
    // psp-sev.h sev_user_data_status (packed): api_major @0, api_minor @1,
    // state @2, flags u32 @3, build @7, guest_count u32 @8.
    let b: [u8; 12] = [1, 55, 2, 0x00, 0x01, 0, 0, 21, 3, 0, 0, 0];
    let s = parse_sev_status(&b);
    assert_eq!(
        s,
        SevPlatformStatus {
            api_major: 1,
            api_minor: 55,
            state: 2,
            flags: SEV_STATUS_FLAGS_CONFIG_ES,
            build: 21,
            guest_count: 3,
        }
    );
    assert_eq!(platform_state_name(s.state), "WORKING");
}

#[test]
fn parses_snp_platform_status() {
    // psp-sev.h sev_user_data_snp_status (packed, 32 bytes).
    let mut b = [0u8; 32];
    b[0] = 1; // api_major
    b[1] = 55; // api_minor
    b[2] = 1; // state INIT
    b[3] = 0b1; // is_rmp_initialized
    b[4..8].copy_from_slice(&21u32.to_le_bytes()); // build_id
    b[8..12].copy_from_slice(&0b100_0101u32.to_le_bytes()); // mask_chip_id, vlek_en, ct_hiding_en
    b[12..16].copy_from_slice(&2u32.to_le_bytes());
    // Milan TCB: bl 3, tee 0, snp 8, ucode 115 (0x73).
    let tcb = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 0x73]);
    b[16..24].copy_from_slice(&tcb.to_le_bytes());
    b[24..32].copy_from_slice(&(tcb - 1).to_le_bytes());
    let s = parse_snp_status(&b);
    assert_eq!((s.api_major, s.api_minor, s.state), (1, 55, 1));
    assert!(s.rmp_initialized);
    assert_eq!(s.build_id, 21);
    assert!(s.mask_chip_id && !s.mask_chip_key && s.vlek_en && !s.feature_info);
    assert!(!s.rapl_dis && !s.ciphertext_hiding_cap && s.ciphertext_hiding_en);
    assert_eq!(s.guest_count, 2);
    assert_eq!(
        (
            s.current_tcb.bootloader,
            s.current_tcb.tee,
            s.current_tcb.snp,
            s.current_tcb.microcode
        ),
        (3, 0, 8, 0x73)
    );
    assert_eq!(s.reported_tcb.raw, tcb - 1);
}

#[test]
fn firmware_error_names_follow_psp_sev_h() {
    assert_eq!(fw_error_name(0), "SUCCESS");
    assert_eq!(fw_error_name(0x0B), "BAD_MEASUREMENT");
    assert_eq!(fw_error_name(0x16), "INVALID_PARAM");
    assert_eq!(fw_error_name(0x19), "INVALID_PAGE_SIZE");
    assert_eq!(fw_error_name(0x27), "INVALID_KEY");
    assert_eq!(fw_error_name(0x1E), "unknown");
    assert_eq!(fw_error_name(u32::MAX), "unknown");
}

#[test]
fn cpuid_page_layout_and_roundtrip() {
    let e = CpuidEntry {
        eax_in: 0x8000_001F,
        ecx_in: 0,
        xcr0_in: 1,
        xss_in: 2,
        eax: 0x1a,
        ebx: 0x33,
        ecx: 0x1FD,
        edx: 0x64,
        reserved: 0,
    };
    let page = cpuid_page_bytes(&[e]).expect("one entry fits");
    // count @0, entries @16: eax_in @0, ecx_in @4, xcr0_in @8, xss_in @16,
    // eax @24, ebx @28, ecx @32, edx @36 (QEMU SnpCpuidInfo).
    let want = layout(
        4096,
        &[
            (0, &1u32.to_le_bytes()),
            (16, &0x8000_001Fu32.to_le_bytes()),
            (24, &1u64.to_le_bytes()),
            (32, &2u64.to_le_bytes()),
            (40, &0x1au32.to_le_bytes()),
            (44, &0x33u32.to_le_bytes()),
            (48, &0x1FDu32.to_le_bytes()),
            (52, &0x64u32.to_le_bytes()),
        ],
    );
    assert_eq!(page.to_vec(), want);
    assert_eq!(parse_cpuid_page(&page), vec![e]);
    assert!(cpuid_page_bytes(&[e; 65]).is_none());
    // A hostile count is clamped to 64 entries.
    let mut bad = page;
    bad[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(parse_cpuid_page(&bad).len(), 64);
    assert!(parse_cpuid_page(&[0u8; 3]).is_empty());
}

#[test]
fn cpuid_diff_names_leaf_register_and_values() {
    let a = CpuidEntry {
        eax_in: 7,
        ecx_in: 0,
        ebx: 0xFFFF_FFFF,
        edx: 0x1234,
        ..Default::default()
    };
    let b = CpuidEntry {
        eax_in: 0xD,
        ecx_in: 1,
        ..Default::default()
    };
    let old = cpuid_page_bytes(&[a, b]).expect("fits");
    let fixed = CpuidEntry {
        ebx: 0x0219_C7A9,
        ..a
    };
    let new = cpuid_page_bytes(&[fixed, b]).expect("fits");
    assert_eq!(
        cpuid_diff(&old, &new),
        "leaf 0x00000007/0x0 ebx: 0xffffffff -> 0x0219c7a9\n"
    );
    assert_eq!(cpuid_diff(&old, &old), "");
    let fewer = cpuid_page_bytes(&[a]).expect("fits");
    assert_eq!(
        cpuid_diff(&old, &fewer),
        "leaf 0x0000000d/0x1: removed by firmware\ncount: 2 -> 1\n"
    );
}

#[test]
fn cpuid_entries_from_kvm_fix_xsave_leaf() {
    let k = |function, index, ebx| kvm_bindings::kvm_cpuid_entry2 {
        function,
        index,
        ebx,
        ..Default::default()
    };
    let table = [
        k(0, 0, 0x6874_7541),
        k(0xD, 0, 0x988),
        k(0xD, 1, 0x988),
        k(0xD, 2, 0x100),
    ];
    let e = cpuid_entries_from_kvm(&table).unwrap();
    assert_eq!(e.len(), 4);
    assert_eq!(e[0].ebx, 0x6874_7541);
    assert_eq!((e[1].ebx, e[1].xcr0_in), (0x240, 1));
    assert_eq!((e[2].ebx, e[2].xcr0_in), (0x240, 1));
    assert_eq!((e[3].ebx, e[3].xcr0_in, e[3].ecx_in), (0x100, 0, 2));
    // More than 64: the hypervisor leaves go first, ... and a table still
    // too large is refused, never cut silently.
    let mut crowded = vec![k(1, 0, 0); 62];
    crowded.extend([
        k(0x4000_0000, 0, 0),
        k(0x4000_0001, 0, 0),
        k(0x4000_0100, 0, 0),
    ]);
    let kept = cpuid_entries_from_kvm(&crowded).unwrap();
    assert_eq!(kept.len(), 62);
    assert!(kept.iter().all(|e| e.eax_in >> 28 != 4));
    // Still more than 64: the all-zero leaves go next (a guest answers a
    // missing in-range leaf with zeros).
    let mut sparse = vec![k(1, 0, 1); 60];
    sparse.extend(vec![k(0x8000_0012, 0, 0); 10]);
    let kept = cpuid_entries_from_kvm(&sparse).unwrap();
    assert_eq!(kept.len(), 60);
    assert!(kept.iter().all(|e| e.eax_in == 1 && e.ebx == 1));
    let many = vec![k(1, 0, 1); 80];
    assert!(matches!(
        cpuid_entries_from_kvm(&many),
        Err(crate::backend::sev::SevError::CpuidCount(80))
    ));
}
