//! Wire formats of the Linux SEV/SNP UAPI: ioctl numbers, constants that
//! kvm-bindings 0.14.2 lacks, the `/dev/sev` (psp-sev.h) structures, the SNP
//! CPUID page, and pure parse/serialise functions for all of them.
//!
//! The KVM argument structs themselves are kvm-bindings' (checked here field
//! by field against the kernel headers, see the tests); only what
//! kvm-bindings lacks or gets wrong is defined by hand. Sources, cited per
//! item: `include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`,
//! `include/uapi/linux/psp-sev.h`, `include/uapi/linux/kvm_para.h`,
//! `arch/x86/include/uapi/asm/kvm_para.h`, and the SEV-SNP firmware ABI
//! (AMD pub. 56860) for the CPUID page.

use std::fmt::Write as _;

pub use kvm_bindings::{
    kvm_create_guest_memfd, kvm_device_attr, kvm_enc_region, kvm_memory_attributes,
    kvm_sev_attestation_report, kvm_sev_cmd, kvm_sev_guest_status, kvm_sev_init,
    kvm_sev_launch_measure, kvm_sev_launch_secret, kvm_sev_launch_start,
    kvm_sev_launch_update_data, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start,
    kvm_sev_snp_launch_update, kvm_userspace_memory_region2,
};

/// 4 KiB, the unit of every SEV/SNP launch and conversion command.
pub const PAGE_SIZE: u64 = 4096;

// ---- VM types and capabilities (arch/x86/include/uapi/asm/kvm.h, include/uapi/linux/kvm.h) ----

/// `KVM_X86_DEFAULT_VM`: the only type legacy `KVM_SEV_INIT`/`ES_INIT` accept.
pub const VM_TYPE_DEFAULT: u64 = kvm_bindings::KVM_X86_DEFAULT_VM as u64;
/// `KVM_X86_SEV_VM`.
pub const VM_TYPE_SEV: u64 = kvm_bindings::KVM_X86_SEV_VM as u64;
/// `KVM_X86_SEV_ES_VM`.
pub const VM_TYPE_SEV_ES: u64 = kvm_bindings::KVM_X86_SEV_ES_VM as u64;
/// `KVM_X86_SNP_VM`.
pub const VM_TYPE_SNP: u64 = kvm_bindings::KVM_X86_SNP_VM as u64;
/// Names of the VM types by value, for `host status`.
pub const VM_TYPE_NAMES: [(u32, &str); 6] = [
    (0, "default"),
    (1, "sw-protected"),
    (2, "sev"),
    (3, "sev-es"),
    (4, "sev-snp"),
    (5, "tdx"),
];

/// `KVM_CAP_VM_TYPES`: CHECK_EXTENSION returns a bitmask, bit N = type N.
pub const CAP_VM_TYPES: u64 = kvm_bindings::KVM_CAP_VM_TYPES as u64;
/// `KVM_CAP_EXIT_HYPERCALL`: bitmask of hypercalls that may exit.
pub const CAP_EXIT_HYPERCALL: u32 = kvm_bindings::KVM_CAP_EXIT_HYPERCALL;
/// `KVM_CAP_GUEST_MEMFD`.
pub const CAP_GUEST_MEMFD: u64 = kvm_bindings::KVM_CAP_GUEST_MEMFD as u64;
/// `KVM_CAP_USER_MEMORY2`.
pub const CAP_USER_MEMORY2: u64 = kvm_bindings::KVM_CAP_USER_MEMORY2 as u64;
/// `KVM_CAP_MEMORY_ATTRIBUTES`: returns the supported attribute bits.
pub const CAP_MEMORY_ATTRIBUTES: u64 = kvm_bindings::KVM_CAP_MEMORY_ATTRIBUTES as u64;

/// `KVM_X86_GRP_SEV`: `/dev/kvm` device-attribute group (asm/kvm.h).
pub const GRP_SEV: u32 = kvm_bindings::KVM_X86_GRP_SEV;
/// `KVM_X86_SEV_VMSA_FEATURES`: VMSA SEV_FEATURES bits INIT2 accepts.
pub const ATTR_VMSA_FEATURES: u64 = kvm_bindings::KVM_X86_SEV_VMSA_FEATURES as u64;
/// `KVM_X86_SNP_POLICY_BITS` (newer kernels; not in kvm-bindings 0.14.2).
pub const ATTR_SNP_POLICY_BITS: u64 = 1;
/// VMSA SEV_FEATURES bit 0, SNPActive: KVM sets it itself, callers clear it.
pub const SEV_FEATURE_SNP_ACTIVE: u64 = 1 << 0;

/// `KVM_MEM_GUEST_MEMFD` memslot flag.
pub const MEM_GUEST_MEMFD: u32 = kvm_bindings::KVM_MEM_GUEST_MEMFD;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (1 << 3) in `kvm_memory_attributes.attributes`.
pub const MEMORY_ATTRIBUTE_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE` (1 << 3) in `kvm_run.memory_fault.flags`.
pub const MEMORY_EXIT_FLAG_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE as u64;
/// `KVM_SYSTEM_EVENT_SEV_TERM`: the guest asked to be terminated (GHCB).
pub const SYSTEM_EVENT_SEV_TERM: u32 = kvm_bindings::KVM_SYSTEM_EVENT_SEV_TERM;

// ---- Hypercalls (include/uapi/linux/kvm_para.h, arch/x86/include/uapi/asm/kvm_para.h) ----

/// `KVM_HC_MAP_GPA_RANGE`.
pub const HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_PAGE_SZ_4K`.
pub const MAP_GPA_RANGE_PAGE_SZ_4K: u64 = 0;
/// `KVM_MAP_GPA_RANGE_PAGE_SZ_2M`.
pub const MAP_GPA_RANGE_PAGE_SZ_2M: u64 = 1 << 0;
/// `KVM_MAP_GPA_RANGE_PAGE_SZ_1G`.
pub const MAP_GPA_RANGE_PAGE_SZ_1G: u64 = 1 << 1;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED`: the range becomes private.
pub const MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_MAP_GPA_RANGE_DECRYPTED`: the range becomes shared.
pub const MAP_GPA_RANGE_DECRYPTED: u64 = 0;
/// `ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)` argument: exit on `KVM_HC_MAP_GPA_RANGE`.
pub const EXIT_HYPERCALL_MAP_GPA_RANGE: u64 = 1 << HC_MAP_GPA_RANGE;

// ---- ioctl numbers ----

const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const KVMIO: u64 = 0xAE;

/// `KVM_GET_DEVICE_ATTR` = `_IOW(KVMIO, 0xe2, struct kvm_device_attr)`, on `/dev/kvm`.
pub const KVM_GET_DEVICE_ATTR: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0xE2,
    core::mem::size_of::<kvm_device_attr>() as u64,
);
/// `KVM_HAS_DEVICE_ATTR` = `_IOW(KVMIO, 0xe3, struct kvm_device_attr)`.
pub const KVM_HAS_DEVICE_ATTR: u64 = ioc(
    IOC_WRITE,
    KVMIO,
    0xE3,
    core::mem::size_of::<kvm_device_attr>() as u64,
);
/// `SEV_ISSUE_CMD` = `_IOWR('S', 0x0, struct sev_issue_cmd)` on `/dev/sev` (psp-sev.h).
pub const SEV_ISSUE_CMD: u64 = ioc(
    IOC_READ | IOC_WRITE,
    b'S' as u64,
    0,
    core::mem::size_of::<SevIssueCmd>() as u64,
);

// ---- kvm_sev_cmd ids (include/uapi/linux/kvm.h, enum sev_cmd_id) ----

/// `KVM_SEV_INIT`.
pub const SEV_INIT: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT;
/// `KVM_SEV_ES_INIT`.
pub const SEV_ES_INIT: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_ES_INIT;
/// `KVM_SEV_LAUNCH_START`.
pub const SEV_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_START;
/// `KVM_SEV_LAUNCH_UPDATE_DATA`.
pub const SEV_LAUNCH_UPDATE_DATA: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_DATA;
/// `KVM_SEV_LAUNCH_UPDATE_VMSA`.
pub const SEV_LAUNCH_UPDATE_VMSA: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_UPDATE_VMSA;
/// `KVM_SEV_LAUNCH_SECRET`.
pub const SEV_LAUNCH_SECRET: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_SECRET;
/// `KVM_SEV_LAUNCH_MEASURE`.
pub const SEV_LAUNCH_MEASURE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_MEASURE;
/// `KVM_SEV_LAUNCH_FINISH`.
pub const SEV_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_LAUNCH_FINISH;
/// `KVM_SEV_INIT2`.
pub const SEV_INIT2: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT2;
/// `KVM_SEV_SNP_LAUNCH_START`.
pub const SNP_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
/// `KVM_SEV_SNP_LAUNCH_UPDATE`.
pub const SNP_LAUNCH_UPDATE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
/// `KVM_SEV_SNP_LAUNCH_FINISH`.
pub const SNP_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;

/// `KVM_SEV_SNP_ID_BLOCK_SIZE`.
pub const SNP_ID_BLOCK_SIZE: usize = 96;
/// `KVM_SEV_SNP_ID_AUTH_SIZE`.
pub const SNP_ID_AUTH_SIZE: usize = 4096;
/// Bit 17 of the SNP guest policy is reserved and must be one.
pub const SNP_POLICY_RESERVED_ONE: u64 = 1 << 17;

// Compile-time layout checks of the kvm-bindings structs used in ioctls, each
// against the kernel header that defines it (the tests check every offset).
// include/uapi/linux/kvm.h, struct kvm_sev_cmd: 24 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_cmd>() == 24);
// arch/x86/include/uapi/asm/kvm.h, struct kvm_sev_init: 48 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_init>() == 48);
// arch/x86/include/uapi/asm/kvm.h, struct kvm_sev_snp_launch_start: 64 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_snp_launch_start>() == 64);
// arch/x86/include/uapi/asm/kvm.h, struct kvm_sev_snp_launch_update: 64 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_snp_launch_update>() == 64);
// arch/x86/include/uapi/asm/kvm.h, struct kvm_sev_snp_launch_finish: 88 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_snp_launch_finish>() == 88);
// include/uapi/linux/kvm.h, struct kvm_sev_launch_start: 40 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_launch_start>() == 40);
// include/uapi/linux/kvm.h, struct kvm_sev_launch_update_data: 16 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_launch_update_data>() == 16);
// include/uapi/linux/kvm.h, struct kvm_sev_launch_measure: 16 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_launch_measure>() == 16);
// include/uapi/linux/kvm.h, struct kvm_sev_launch_secret: 48 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_launch_secret>() == 48);
// include/uapi/linux/kvm.h, struct kvm_sev_guest_status: 12 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_guest_status>() == 12);
// include/uapi/linux/kvm.h, struct kvm_sev_attestation_report: 32 bytes.
const _: () = assert!(core::mem::size_of::<kvm_sev_attestation_report>() == 32);
// include/uapi/linux/kvm.h, struct kvm_enc_region: 16 bytes.
const _: () = assert!(core::mem::size_of::<kvm_enc_region>() == 16);
// include/uapi/linux/kvm.h, struct kvm_create_guest_memfd: 64 bytes.
const _: () = assert!(core::mem::size_of::<kvm_create_guest_memfd>() == 64);
// include/uapi/linux/kvm.h, struct kvm_userspace_memory_region2: 160 bytes.
const _: () = assert!(core::mem::size_of::<kvm_userspace_memory_region2>() == 160);
// include/uapi/linux/kvm.h, struct kvm_memory_attributes: 32 bytes.
const _: () = assert!(core::mem::size_of::<kvm_memory_attributes>() == 32);
// include/uapi/linux/kvm.h, struct kvm_device_attr: 24 bytes.
const _: () = assert!(core::mem::size_of::<kvm_device_attr>() == 24);

// ---- /dev/sev (include/uapi/linux/psp-sev.h) ----

/// `SEV_PLATFORM_STATUS` command of `SEV_ISSUE_CMD`.
pub const SEV_CMD_PLATFORM_STATUS: u32 = 1;
/// `SNP_PLATFORM_STATUS` command of `SEV_ISSUE_CMD`.
pub const SEV_CMD_SNP_PLATFORM_STATUS: u32 = 9;

/// `struct sev_issue_cmd` (psp-sev.h, `__packed`): the `/dev/sev` ioctl argument.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SevIssueCmd {
    /// Command (`SEV_PLATFORM_STATUS`, ...).
    pub cmd: u32,
    /// User pointer to the command's data.
    pub data: u64,
    /// OUT: firmware status code.
    pub error: u32,
}
// include/uapi/linux/psp-sev.h, struct sev_issue_cmd (__packed): 16 bytes.
const _: () = assert!(core::mem::size_of::<SevIssueCmd>() == 16);

/// Size of `struct sev_user_data_status` (psp-sev.h, `__packed`).
pub const SEV_STATUS_SIZE: usize = 12;
/// Size of `struct sev_user_data_snp_status` (psp-sev.h, `__packed`).
pub const SNP_STATUS_SIZE: usize = 32;
/// `SEV_STATUS_FLAGS_CONFIG_ES` in `sev_user_data_status.flags`.
pub const SEV_STATUS_FLAGS_CONFIG_ES: u32 = 0x0100;

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// SEV platform state (`enum sev_state`, include/linux/psp-sev.h).
pub fn platform_state_name(state: u8) -> &'static str {
    match state {
        0 => "UNINIT",
        1 => "INIT",
        2 => "WORKING",
        _ => "unknown",
    }
}

/// `SEV_PLATFORM_STATUS` output, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SevPlatformStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Platform state (0 UNINIT, 1 INIT, 2 WORKING).
    pub state: u8,
    /// Platform configuration flags (bit 8: SEV-ES initialised).
    pub flags: u32,
    /// Firmware build id.
    pub build: u8,
    /// Active guests.
    pub guest_count: u32,
}

/// Decodes `struct sev_user_data_status`: `api_major` @0, `api_minor` @1,
/// `state` @2, `flags` u32 @3, `build` @7, `guest_count` u32 @8 (packed).
pub fn parse_sev_status(b: &[u8; SEV_STATUS_SIZE]) -> SevPlatformStatus {
    SevPlatformStatus {
        api_major: b[0],
        api_minor: b[1],
        state: b[2],
        flags: le_u32(b, 3),
        build: b[7],
        guest_count: le_u32(b, 8),
    }
}

/// A TCB_VERSION (SNP ABI §2.2), raw and decoded with the Milan/Genoa layout
/// (byte 0 boot loader, 1 TEE, 6 SNP, 7 microcode; Turin differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TcbVersion {
    /// The raw 64-bit value.
    pub raw: u64,
    /// Boot loader SVN.
    pub bootloader: u8,
    /// PSP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes a raw TCB_VERSION.
    pub fn from_raw(raw: u64) -> Self {
        let b = raw.to_le_bytes();
        TcbVersion {
            raw,
            bootloader: b[0],
            tee: b[1],
            snp: b[6],
            microcode: b[7],
        }
    }
}

impl std::fmt::Display for TcbVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:#018x} (bl {} tee {} snp {} ucode {})",
            self.raw, self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// `SNP_PLATFORM_STATUS` output, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SnpPlatformStatus {
    /// API major version.
    pub api_major: u8,
    /// API minor version.
    pub api_minor: u8,
    /// Platform state (0 UNINIT, 1 INIT).
    pub state: u8,
    /// Whether the RMP is initialised (SNP enabled).
    pub rmp_initialized: bool,
    /// Firmware build id.
    pub build_id: u32,
    /// MASK_CHIP_ID: reports carry no chip id.
    pub mask_chip_id: bool,
    /// MASK_CHIP_KEY: reports are not signed.
    pub mask_chip_key: bool,
    /// A VLEK is loaded.
    pub vlek_en: bool,
    /// SNP_FEATURE_INFO is available.
    pub feature_info: bool,
    /// RAPL is disabled.
    pub rapl_dis: bool,
    /// Ciphertext hiding capability.
    pub ciphertext_hiding_cap: bool,
    /// Ciphertext hiding enabled.
    pub ciphertext_hiding_en: bool,
    /// Guests managed by the firmware.
    pub guest_count: u32,
    /// Current TCB.
    pub current_tcb: TcbVersion,
    /// Reported TCB (what reports carry).
    pub reported_tcb: TcbVersion,
}

/// Decodes `struct sev_user_data_snp_status`: `api_major` @0, `api_minor` @1,
/// `state` @2, bit 0 of byte 3 `is_rmp_initialized`, `build_id` u32 @4,
/// flag bits u32 @8 (0 mask_chip_id, 1 mask_chip_key, 2 vlek_en,
/// 3 feature_info, 4 rapl_dis, 5 ciphertext_hiding_cap, 6 ..._en),
/// `guest_count` u32 @12, `current_tcb_version` u64 @16,
/// `reported_tcb_version` u64 @24 (packed, 32 bytes).
pub fn parse_snp_status(b: &[u8; SNP_STATUS_SIZE]) -> SnpPlatformStatus {
    let flags = le_u32(b, 8);
    let bit = |n: u32| flags & (1 << n) != 0;
    SnpPlatformStatus {
        api_major: b[0],
        api_minor: b[1],
        state: b[2],
        rmp_initialized: b[3] & 1 != 0,
        build_id: le_u32(b, 4),
        mask_chip_id: bit(0),
        mask_chip_key: bit(1),
        vlek_en: bit(2),
        feature_info: bit(3),
        rapl_dis: bit(4),
        ciphertext_hiding_cap: bit(5),
        ciphertext_hiding_en: bit(6),
        guest_count: le_u32(b, 12),
        current_tcb: TcbVersion::from_raw(le_u64(b, 16)),
        reported_tcb: TcbVersion::from_raw(le_u64(b, 24)),
    }
}

/// Name of a firmware status code (`SEV_RET_*`, include/uapi/linux/psp-sev.h;
/// the same numbering as the SNP ABI's status table).
pub fn fw_error_name(code: u32) -> &'static str {
    const NAMES: [&str; 0x28] = [
        "SUCCESS",
        "INVALID_PLATFORM_STATE",
        "INVALID_GUEST_STATE",
        "INVALID_CONFIG",
        "INVALID_LEN",
        "ALREADY_OWNED",
        "INVALID_CERTIFICATE",
        "POLICY_FAILURE",
        "INACTIVE",
        "INVALID_ADDRESS",
        "BAD_SIGNATURE",
        "BAD_MEASUREMENT",
        "ASID_OWNED",
        "INVALID_ASID",
        "WBINVD_REQUIRED",
        "DFFLUSH_REQUIRED",
        "INVALID_GUEST",
        "INVALID_COMMAND",
        "ACTIVE",
        "HWSEV_RET_PLATFORM",
        "HWSEV_RET_UNSAFE",
        "UNSUPPORTED",
        "INVALID_PARAM",
        "RESOURCE_LIMIT",
        "SECURE_DATA_INVALID",
        "INVALID_PAGE_SIZE",
        "INVALID_PAGE_STATE",
        "INVALID_MDATA_ENTRY",
        "INVALID_PAGE_OWNER",
        "AEAD_OFLOW",
        "unknown",
        "EXIT_RING_BUFFER",
        "RMP_INIT_REQUIRED",
        "BAD_SVN",
        "BAD_VERSION",
        "SHUTDOWN_REQUIRED",
        "UPDATE_FAILED",
        "RESTORE_REQUIRED",
        "RMP_INITIALIZATION_FAILED",
        "INVALID_KEY",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown")
}

/// `SEV_RET_INVALID_PARAM`: what the firmware answers for a CPUID page it rejects.
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;

// ---- SNP CPUID page (SNP ABI 56860 "CPUID Reporting"; QEMU SnpCpuidInfo) ----

/// The CPUID page wire types, defined once for the model and this backend.
pub use umbra_snp_model::abi::{CpuidEntry, CpuidPage, CPUID_MAX_ENTRIES};

/// Serialises a CPUID page (count, then entries; the rest zero).
/// More than [`CPUID_MAX_ENTRIES`] entries are an error the caller sees.
pub fn cpuid_page_bytes(entries: &[CpuidEntry]) -> Option<[u8; PAGE_SIZE as usize]> {
    use zerocopy::{FromZeros, IntoBytes};
    if entries.len() > CPUID_MAX_ENTRIES {
        return None;
    }
    let mut page = CpuidPage::new_zeroed();
    page.count = entries.len() as u32;
    page.entries[..entries.len()].copy_from_slice(entries);
    let mut bytes = [0u8; PAGE_SIZE as usize];
    bytes.copy_from_slice(page.as_bytes());
    Some(bytes)
}

/// Parses a CPUID page (the firmware's corrected copy is untrusted input:
/// a count above 64 is clamped, never indexed past the page; a short
/// buffer holds no entries).
pub fn parse_cpuid_page(page: &[u8]) -> Vec<CpuidEntry> {
    use zerocopy::{FromZeros, IntoBytes};
    if page.len() < 4 {
        return Vec::new();
    }
    let mut parsed = CpuidPage::new_zeroed();
    let n = page.len().min(parsed.as_bytes().len());
    parsed.as_mut_bytes()[..n].copy_from_slice(&page[..n]);
    // Only entries wholly inside the buffer count.
    let complete = page.len().saturating_sub(16) / core::mem::size_of::<CpuidEntry>();
    let count = (parsed.count as usize).min(CPUID_MAX_ENTRIES).min(complete);
    parsed.entries[..count].to_vec()
}

/// The CPUID entries for the page, from a vCPU's table: leaf 0xD subleaves
/// 0 and 1 with `ebx = 0x240` and `xcr0_in = 1` (guests recompute XSAVE
/// sizes; QEMU, cloud-hypervisor). The page holds 64 entries: the
/// hypervisor leaves (0x4000_xxxx, answered by KVM and umbra, never by the
/// SNP firmware's table) are dropped first when the table is larger, then
/// the all-zero leaves (KVM lists every leaf up to the maximum; a guest
/// answers a leaf missing from the page inside the reported range with
/// zeros, Linux `snp_cpuid`: "hypervisors will avoid keeping track of CPUID
/// entries where all values are zero"), and a table still larger is
/// refused, as QEMU refuses it, never cut silently.
pub fn cpuid_entries_from_kvm(
    kvm: &[kvm_bindings::kvm_cpuid_entry2],
) -> Result<Vec<CpuidEntry>, super::SevError> {
    let hypervisor = |k: &&kvm_bindings::kvm_cpuid_entry2| (k.function >> 28) == 0x4;
    let mut keep: Vec<&kvm_bindings::kvm_cpuid_entry2> = if kvm.len() > CPUID_MAX_ENTRIES {
        kvm.iter().filter(|k| !hypervisor(k)).collect()
    } else {
        kvm.iter().collect()
    };
    if keep.len() > CPUID_MAX_ENTRIES {
        keep.retain(|k| (k.eax, k.ebx, k.ecx, k.edx) != (0, 0, 0, 0));
    }
    if keep.len() > CPUID_MAX_ENTRIES {
        return Err(super::SevError::CpuidCount(keep.len()));
    }
    Ok(keep
        .into_iter()
        .map(|k| {
            let mut e = CpuidEntry {
                eax_in: k.function,
                ecx_in: k.index,
                xcr0_in: 0,
                xss_in: 0,
                eax: k.eax,
                ebx: k.ebx,
                ecx: k.ecx,
                edx: k.edx,
                reserved: 0,
            };
            if k.function == 0xD && k.index <= 1 {
                e.ebx = 0x240;
                e.xcr0_in = 1;
            }
            e
        })
        .collect())
}

/// A readable diff between the proposed CPUID page and the firmware's
/// corrected one: one line per changed register, `leaf/subleaf reg old->new`,
/// plus entries only one side has. Empty when they agree.
pub fn cpuid_diff(old: &[u8], new: &[u8]) -> String {
    let (a, b) = (parse_cpuid_page(old), parse_cpuid_page(new));
    let mut out = String::new();
    let key = |e: &CpuidEntry| (e.eax_in, e.ecx_in, e.xcr0_in, e.xss_in);
    for ea in &a {
        match b.iter().find(|eb| key(eb) == key(ea)) {
            Some(eb) => {
                for (reg, x, y) in [
                    ("eax", ea.eax, eb.eax),
                    ("ebx", ea.ebx, eb.ebx),
                    ("ecx", ea.ecx, eb.ecx),
                    ("edx", ea.edx, eb.edx),
                ] {
                    if x != y {
                        let _ = writeln!(
                            out,
                            "leaf {:#010x}/{:#x} {reg}: {x:#010x} -> {y:#010x}",
                            ea.eax_in, ea.ecx_in
                        );
                    }
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "leaf {:#010x}/{:#x}: removed by firmware",
                    ea.eax_in, ea.ecx_in
                );
            }
        }
    }
    for eb in &b {
        if !a.iter().any(|ea| key(ea) == key(eb)) {
            let _ = writeln!(
                out,
                "leaf {:#010x}/{:#x}: added by firmware",
                eb.eax_in, eb.ecx_in
            );
        }
    }
    if a.len() != b.len() {
        let _ = writeln!(out, "count: {} -> {}", a.len(), b.len());
    }
    out
}

#[cfg(test)]
#[path = "uapi_tests.rs"]
mod tests;
