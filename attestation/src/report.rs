//! The SEV-SNP `ATTESTATION_REPORT` structure.
//!
//! Layout: AMD "SEV Secure Nested Paging Firmware ABI Specification"
//! (publication 56860), table "ATTESTATION_REPORT Structure". The report is
//! parsed with explicit offsets against the received bytes (never re-encoded),
//! so the signature is later checked over exactly what the firmware signed.
//! Parsing is strict: wrong size, unknown version, unknown signature
//! algorithm and any non-zero reserved byte are errors.

use thiserror::Error;

/// Size of ATTESTATION_REPORT in every published version (2, 3, 4, 5).
pub use umbra_snp_abi::REPORT_SIZE;
/// The signature covers bytes `0x000..0x2A0`.
pub const SIGNED_LEN: usize = 0x2A0;
/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384 (spec table "Signature Algorithm Encodings").
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;

// Field offsets (spec 56860, ATTESTATION_REPORT).
const OFF_VERSION: usize = 0x000;
const OFF_GUEST_SVN: usize = 0x004;
const OFF_POLICY: usize = 0x008;
const OFF_FAMILY_ID: usize = 0x010;
const OFF_IMAGE_ID: usize = 0x020;
const OFF_VMPL: usize = 0x030;
const OFF_SIG_ALGO: usize = 0x034;
const OFF_CURRENT_TCB: usize = 0x038;
const OFF_PLATFORM_INFO: usize = 0x040;
const OFF_KEY_INFO: usize = 0x048;
const OFF_REPORT_DATA: usize = 0x050;
const OFF_MEASUREMENT: usize = 0x090;
const OFF_HOST_DATA: usize = 0x0C0;
const OFF_ID_KEY_DIGEST: usize = 0x0E0;
const OFF_AUTHOR_KEY_DIGEST: usize = 0x110;
const OFF_REPORT_ID: usize = 0x140;
const OFF_REPORT_ID_MA: usize = 0x160;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID: usize = 0x188;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_CURRENT_VERSION: usize = 0x1E8;
const OFF_COMMITTED_VERSION: usize = 0x1EC;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_LAUNCH_MIT: usize = 0x1F8;
const OFF_CURRENT_MIT: usize = 0x200;
const OFF_SIG_R: usize = 0x2A0;
const OFF_SIG_S: usize = 0x2E8;
/// R and S are 72-byte little-endian fields; P-384 scalars use the low 48.
const SIG_COMPONENT_LEN: usize = 72;
const P384_LEN: usize = 48;

// The signature block layout must stay inside the report.
const _: () = assert!(OFF_SIG_S + SIG_COMPONENT_LEN <= REPORT_SIZE);
const _: () = assert!(OFF_SIG_R == SIGNED_LEN);

/// ATTESTATION_REPORT as it lies in memory (SNP ABI 56860 §7.3, table
/// "ATTESTATION_REPORT Structure"), for code that builds reports (the SNP
/// firmware model). Every field offset is asserted against the offsets the
/// parser above reads, so the two views cannot drift apart.
#[derive(
    Clone,
    Debug,
    zerocopy::FromZeros,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct AttestationReportRaw {
    /// Report version.
    pub version: u32,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL of the report.
    pub vmpl: u32,
    /// 1 = ECDSA P-384 with SHA-384.
    pub signature_algo: u32,
    /// Current TCB.
    pub current_tcb: u64,
    /// PLATFORM_INFO bits.
    pub platform_info: u64,
    /// KEY_INFO: bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_KEY, bits 4:2 signing key.
    pub key_info: u32,
    /// Reserved.
    pub reserved0: u32,
    /// Guest-supplied data.
    pub report_data: [u8; 64],
    /// Launch digest.
    pub measurement: [u8; 48],
    /// HOST_DATA from LAUNCH_FINISH.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key.
    pub author_key_digest: [u8; 48],
    /// Guest report ID.
    pub report_id: [u8; 32],
    /// Report ID assigned by the migration agent (all ones: none).
    pub report_id_ma: [u8; 32],
    /// TCB the VCEK was derived with.
    pub reported_tcb: u64,
    /// CPUID family (with extended family).
    pub cpuid_fam_id: u8,
    /// CPUID model (with extended model).
    pub cpuid_mod_id: u8,
    /// CPUID stepping.
    pub cpuid_step: u8,
    /// Reserved.
    pub reserved1: [u8; 21],
    /// CHIP_ID (zero with MASK_CHIP_KEY).
    pub chip_id: [u8; 64],
    /// Committed TCB.
    pub committed_tcb: u64,
    /// Current firmware build, minor, major, reserved.
    pub current_version: [u8; 4],
    /// Committed firmware build, minor, major, reserved.
    pub committed_version: [u8; 4],
    /// TCB at launch.
    pub launch_tcb: u64,
    /// Reserved (version 5 mitigation vectors and reserved bytes).
    pub reserved2: [u8; 0xA8],
    /// Signature R, little-endian, zero-extended to 72 bytes.
    pub sig_r: [u8; 72],
    /// Signature S, little-endian, zero-extended to 72 bytes.
    pub sig_s: [u8; 72],
    /// Rest of the signature field.
    pub sig_reserved: [u8; 368],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    type R = AttestationReportRaw;
    assert!(size_of::<R>() == REPORT_SIZE);
    assert!(offset_of!(R, version) == OFF_VERSION);
    assert!(offset_of!(R, guest_svn) == OFF_GUEST_SVN);
    assert!(offset_of!(R, policy) == OFF_POLICY);
    assert!(offset_of!(R, family_id) == OFF_FAMILY_ID);
    assert!(offset_of!(R, image_id) == OFF_IMAGE_ID);
    assert!(offset_of!(R, vmpl) == OFF_VMPL);
    assert!(offset_of!(R, signature_algo) == OFF_SIG_ALGO);
    assert!(offset_of!(R, current_tcb) == OFF_CURRENT_TCB);
    assert!(offset_of!(R, platform_info) == OFF_PLATFORM_INFO);
    assert!(offset_of!(R, key_info) == OFF_KEY_INFO);
    assert!(offset_of!(R, report_data) == OFF_REPORT_DATA);
    assert!(offset_of!(R, measurement) == OFF_MEASUREMENT);
    assert!(offset_of!(R, host_data) == OFF_HOST_DATA);
    assert!(offset_of!(R, id_key_digest) == OFF_ID_KEY_DIGEST);
    assert!(offset_of!(R, author_key_digest) == OFF_AUTHOR_KEY_DIGEST);
    assert!(offset_of!(R, report_id) == OFF_REPORT_ID);
    assert!(offset_of!(R, report_id_ma) == OFF_REPORT_ID_MA);
    assert!(offset_of!(R, reported_tcb) == OFF_REPORTED_TCB);
    assert!(offset_of!(R, cpuid_fam_id) == OFF_CPUID);
    assert!(offset_of!(R, chip_id) == OFF_CHIP_ID);
    assert!(offset_of!(R, committed_tcb) == OFF_COMMITTED_TCB);
    assert!(offset_of!(R, current_version) == OFF_CURRENT_VERSION);
    assert!(offset_of!(R, committed_version) == OFF_COMMITTED_VERSION);
    assert!(offset_of!(R, launch_tcb) == OFF_LAUNCH_TCB);
    assert!(offset_of!(R, reserved2) == OFF_LAUNCH_MIT);
    assert!(offset_of!(R, sig_r) == OFF_SIG_R);
    assert!(offset_of!(R, sig_s) == OFF_SIG_S);
};

/// Why bytes are not a valid attestation report.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReportError {
    #[error("attestation report is {0} bytes, expected exactly 1184")]
    CheckSize(usize),
    #[error("attestation report version {0} is not supported (known: 2, 3, 4, 5)")]
    CheckVersion(u32),
    #[error("signature algorithm {0} is not supported (only 1 = ECDSA P-384 with SHA-384)")]
    CheckSignatureAlgorithm(u32),
    #[error("reserved field {field} at offset {offset:#05x} is not zero")]
    CheckReserved { field: &'static str, offset: usize },
    #[error("KEY_INFO.SIGNING_KEY value {0} is reserved")]
    CheckSigningKey(u8),
    #[error("guest policy {0:#x}: bit 17 must be one and bits 63:26 zero")]
    CheckPolicy(u64),
    #[error("report is not hexadecimal text: {0}")]
    DecodeHex(String),
}

/// Processor generation; decides TCB layout, KDS product name and AMD root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// Name used by AMD KDS URLs and in ASK/ARK subjects.
    pub fn kds_name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// Maps CPUID family/model to the product whose AMD root signs its keys.
    /// Family 19h: models 00-0F Milan; 10-1F Genoa; A0-AF Bergamo/Siena,
    /// whose VCEKs are issued under the Genoa ARK/ASK. Family 1Ah: 00-11 Turin.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Product> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x11) => Some(Product::Turin),
            _ => None,
        }
    }

    /// Parses a product name as found in a VCEK `productName` ("Milan-B0")
    /// or on the command line ("genoa").
    pub fn from_name(name: &str) -> Option<Product> {
        let base = name.split('-').next().unwrap_or(name).to_ascii_lowercase();
        match base.as_str() {
            "milan" => Some(Product::Milan),
            "genoa" | "siena" | "bergamo" => Some(Product::Genoa),
            "turin" => Some(Product::Turin),
            _ => None,
        }
    }

    /// Turin moved to a TCB_VERSION layout with an FMC field.
    pub fn tcb_layout(self) -> TcbLayout {
        match self {
            Product::Turin => TcbLayout::Turin,
            _ => TcbLayout::Legacy,
        }
    }

    /// Bytes of CHIP_ID that identify the chip (Turin's hwID is 8 bytes).
    pub fn chip_id_len(self) -> usize {
        match self {
            Product::Turin => 8,
            _ => 64,
        }
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kds_name())
    }
}

/// How the eight TCB_VERSION bytes are assigned to components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcbLayout {
    /// Milan and Genoa: `[bootloader, tee, 0, 0, 0, 0, snp, microcode]`.
    Legacy,
    /// Turin: `[fmc, bootloader, tee, snp, 0, 0, 0, microcode]`.
    Turin,
}

/// A raw TCB_VERSION (spec 56860, "TCB_VERSION Structure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcbVersion(pub [u8; 8]);

/// A TCB_VERSION split into its security patch levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TcbParts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl TcbVersion {
    pub fn parts(&self, layout: TcbLayout) -> TcbParts {
        let b = self.0;
        match layout {
            TcbLayout::Legacy => TcbParts {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            TcbLayout::Turin => TcbParts {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// The bytes in the order they appear in the report, as hex.
    pub fn raw_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

/// Guest policy bits (spec 56860, "Guest Policy Structure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    pub const SMT: u32 = 16;
    pub const RESERVED_ONE: u32 = 17;
    pub const MIGRATE_MA: u32 = 18;
    pub const DEBUG: u32 = 19;
    pub const SINGLE_SOCKET: u32 = 20;
    pub const CXL_ALLOW: u32 = 21;
    pub const MEM_AES_256_XTS: u32 = 22;
    pub const RAPL_DIS: u32 = 23;
    pub const CIPHERTEXT_HIDING: u32 = 24;
    pub const PAGE_SWAP_DISABLE: u32 = 25;

    /// Named single-bit flags, for display and policy matching.
    pub const FLAGS: [(&'static str, u32); 9] = [
        ("smt", Self::SMT),
        ("migrate_ma", Self::MIGRATE_MA),
        ("debug", Self::DEBUG),
        ("single_socket", Self::SINGLE_SOCKET),
        ("cxl_allow", Self::CXL_ALLOW),
        ("mem_aes_256_xts", Self::MEM_AES_256_XTS),
        ("rapl_dis", Self::RAPL_DIS),
        ("ciphertext_hiding", Self::CIPHERTEXT_HIDING),
        ("page_swap_disable", Self::PAGE_SWAP_DISABLE),
    ];

    pub fn bit(&self, n: u32) -> bool {
        (self.0 >> n) & 1 == 1
    }
    pub fn abi_minor(&self) -> u8 {
        (self.0 & 0xff) as u8
    }
    pub fn abi_major(&self) -> u8 {
        ((self.0 >> 8) & 0xff) as u8
    }
}

/// PLATFORM_INFO bits (spec 56860, "PLATFORM_INFO Field").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformInfo(pub u64);

impl PlatformInfo {
    pub const FLAGS: [(&'static str, u32); 7] = [
        ("smt_enabled", 0),
        ("tsme_enabled", 1),
        ("ecc_enabled", 2),
        ("rapl_disabled", 3),
        ("ciphertext_hiding_enabled", 4),
        ("alias_check_complete", 5),
        ("tio_enabled", 7),
    ];
    pub fn bit(&self, n: u32) -> bool {
        (self.0 >> n) & 1 == 1
    }
}

/// Which key signed the report (KEY_INFO bits 4:2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    Vcek,
    Vlek,
    /// 7: the report is not signed.
    None,
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => "none",
        })
    }
}

/// KEY_INFO (report offset 0x48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyInfo {
    pub raw: u32,
    pub author_key_en: bool,
    pub mask_chip_key: bool,
    pub signing_key: SigningKey,
}

/// Firmware version triple (CURRENT_/COMMITTED_ BUILD, MINOR, MAJOR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FirmwareVersion {
    pub major: u8,
    pub minor: u8,
    pub build: u8,
}

impl std::fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.build)
    }
}

/// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpuid {
    pub family: u8,
    pub model: u8,
    pub stepping: u8,
}

/// A parsed attestation report, holding the exact bytes it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    raw: Box<[u8; REPORT_SIZE]>,
    pub version: u32,
    pub guest_svn: u32,
    pub policy: GuestPolicy,
    pub family_id: [u8; 16],
    pub image_id: [u8; 16],
    pub vmpl: u32,
    pub signature_algo: u32,
    pub current_tcb: TcbVersion,
    pub platform_info: PlatformInfo,
    pub key_info: KeyInfo,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub author_key_digest: [u8; 48],
    pub report_id: [u8; 32],
    pub report_id_ma: [u8; 32],
    pub reported_tcb: TcbVersion,
    pub cpuid: Option<Cpuid>,
    pub chip_id: [u8; 64],
    pub committed_tcb: TcbVersion,
    pub current_version: FirmwareVersion,
    pub committed_version: FirmwareVersion,
    pub launch_tcb: TcbVersion,
    pub launch_mit_vector: Option<u64>,
    pub current_mit_vector: Option<u64>,
    /// Signature R, big-endian, 48 bytes.
    pub sig_r: [u8; P384_LEN],
    /// Signature S, big-endian, 48 bytes.
    pub sig_s: [u8; P384_LEN],
}

fn array<const N: usize>(b: &[u8; REPORT_SIZE], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}
fn u32_at(b: &[u8; REPORT_SIZE], off: usize) -> u32 {
    u32::from_le_bytes(array(b, off))
}
fn u64_at(b: &[u8; REPORT_SIZE], off: usize) -> u64 {
    u64::from_le_bytes(array(b, off))
}

/// Reserved ranges (start, end exclusive, name) that must be zero in every version.
const RESERVED_ALWAYS: [(usize, usize, &str); 5] = [
    (0x04C, 0x050, "after KEY_INFO"),
    (0x18B, 0x1A0, "after CPUID_STEP"),
    (0x1EB, 0x1EC, "after CURRENT_MAJOR"),
    (0x1EF, 0x1F0, "after COMMITTED_MAJOR"),
    (0x208, 0x2A0, "before SIGNATURE"),
];

impl AttestationReport {
    /// Parses exactly 1184 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReportError> {
        let raw: Box<[u8; REPORT_SIZE]> = bytes
            .try_into()
            .map(Box::new)
            .map_err(|_| ReportError::CheckSize(bytes.len()))?;
        let b = &*raw;
        let version = u32_at(b, OFF_VERSION);
        if !(2..=5).contains(&version) {
            return Err(ReportError::CheckVersion(version));
        }
        let signature_algo = u32_at(b, OFF_SIG_ALGO);
        if signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(ReportError::CheckSignatureAlgorithm(signature_algo));
        }
        let zero = |start: usize, end: usize, field: &'static str| {
            if b[start..end].iter().any(|&x| x != 0) {
                Err(ReportError::CheckReserved {
                    field,
                    offset: start,
                })
            } else {
                Ok(())
            }
        };
        for (start, end, field) in RESERVED_ALWAYS {
            zero(start, end, field)?;
        }
        // Version 2 reserves the CPUID bytes; versions before 5 reserve the
        // mitigation vectors.
        if version < 3 {
            zero(OFF_CPUID, OFF_CPUID + 3, "CPUID (version 2)")?;
        }
        if version < 5 {
            zero(
                OFF_LAUNCH_MIT,
                OFF_CURRENT_MIT + 8,
                "MIT_VECTOR (before version 5)",
            )?;
        }
        // Only the low 48 bytes of R and S carry the P-384 scalars; the rest
        // of the 512-byte signature field is reserved.
        zero(OFF_SIG_R + P384_LEN, OFF_SIG_S, "SIGNATURE.R high bytes")?;
        zero(
            OFF_SIG_S + P384_LEN,
            OFF_SIG_S + SIG_COMPONENT_LEN,
            "SIGNATURE.S high bytes",
        )?;
        zero(OFF_SIG_S + SIG_COMPONENT_LEN, REPORT_SIZE, "SIGNATURE tail")?;

        let key_info_raw = u32_at(b, OFF_KEY_INFO);
        if key_info_raw >> 5 != 0 {
            return Err(ReportError::CheckReserved {
                field: "KEY_INFO bits 31:5",
                offset: OFF_KEY_INFO,
            });
        }
        let signing_key = match (key_info_raw >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            other => return Err(ReportError::CheckSigningKey(other as u8)),
        };
        let policy = u64_at(b, OFF_POLICY);
        if policy >> 26 != 0 || (policy >> GuestPolicy::RESERVED_ONE) & 1 == 0 {
            return Err(ReportError::CheckPolicy(policy));
        }
        let le_scalar = |off: usize| {
            let mut s: [u8; P384_LEN] = array(b, off);
            s.reverse();
            s
        };
        let version_at = |off: usize| FirmwareVersion {
            build: b[off],
            minor: b[off + 1],
            major: b[off + 2],
        };
        Ok(AttestationReport {
            version,
            guest_svn: u32_at(b, OFF_GUEST_SVN),
            policy: GuestPolicy(policy),
            family_id: array(b, OFF_FAMILY_ID),
            image_id: array(b, OFF_IMAGE_ID),
            vmpl: u32_at(b, OFF_VMPL),
            signature_algo,
            current_tcb: TcbVersion(array(b, OFF_CURRENT_TCB)),
            platform_info: PlatformInfo(u64_at(b, OFF_PLATFORM_INFO)),
            key_info: KeyInfo {
                raw: key_info_raw,
                author_key_en: key_info_raw & 1 == 1,
                mask_chip_key: key_info_raw & 2 == 2,
                signing_key,
            },
            report_data: array(b, OFF_REPORT_DATA),
            measurement: array(b, OFF_MEASUREMENT),
            host_data: array(b, OFF_HOST_DATA),
            id_key_digest: array(b, OFF_ID_KEY_DIGEST),
            author_key_digest: array(b, OFF_AUTHOR_KEY_DIGEST),
            report_id: array(b, OFF_REPORT_ID),
            report_id_ma: array(b, OFF_REPORT_ID_MA),
            reported_tcb: TcbVersion(array(b, OFF_REPORTED_TCB)),
            cpuid: (version >= 3).then(|| Cpuid {
                family: b[OFF_CPUID],
                model: b[OFF_CPUID + 1],
                stepping: b[OFF_CPUID + 2],
            }),
            chip_id: array(b, OFF_CHIP_ID),
            committed_tcb: TcbVersion(array(b, OFF_COMMITTED_TCB)),
            current_version: version_at(OFF_CURRENT_VERSION),
            committed_version: version_at(OFF_COMMITTED_VERSION),
            launch_tcb: TcbVersion(array(b, OFF_LAUNCH_TCB)),
            launch_mit_vector: (version >= 5).then(|| u64_at(b, OFF_LAUNCH_MIT)),
            current_mit_vector: (version >= 5).then(|| u64_at(b, OFF_CURRENT_MIT)),
            sig_r: le_scalar(OFF_SIG_R),
            sig_s: le_scalar(OFF_SIG_S),
            raw,
        })
    }

    /// Accepts the binary report, the same bytes as hexadecimal or base64
    /// text (as some tools store it), or an Azure HCL report ("HCLA"
    /// header) that embeds the SNP report at offset 0x20.
    pub fn from_any(bytes: &[u8]) -> Result<Self, ReportError> {
        const HCL_OFFSET: usize = 0x20;
        if bytes.len() == REPORT_SIZE {
            return Self::from_bytes(bytes);
        }
        if bytes.starts_with(b"HCLA") && bytes.len() >= HCL_OFFSET + REPORT_SIZE {
            return Self::from_bytes(&bytes[HCL_OFFSET..HCL_OFFSET + REPORT_SIZE]);
        }
        let text: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if !text.is_empty()
            && text.len() == 2 * REPORT_SIZE
            && text.iter().all(u8::is_ascii_hexdigit)
        {
            let decoded = crate::hex::decode(&String::from_utf8_lossy(&text))
                .map_err(|e| ReportError::DecodeHex(e.to_string()))?;
            return Self::from_bytes(&decoded);
        }
        // Base64, as AWS (`snpguest`-style JSON fields) and Azure tooling
        // emit a report: 1184 bytes are 1580 characters with padding.
        if text.len() == REPORT_SIZE.div_ceil(3) * 4 {
            use base64::Engine as _;
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(&text) {
                return Self::from_bytes(&decoded);
            }
        }
        Self::from_bytes(bytes)
    }

    /// The exact bytes received.
    pub fn as_bytes(&self) -> &[u8; REPORT_SIZE] {
        &self.raw
    }

    /// The signed region, bytes `0x000..0x2A0`.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// Product named by the report's CPUID fields (version 3+ only).
    pub fn product_from_cpuid(&self) -> Option<Product> {
        self.cpuid
            .and_then(|c| Product::from_cpuid(c.family, c.model))
    }

    /// TCB layout: Turin's only when the report says family 1Ah (version 2
    /// reports predate Turin).
    pub fn tcb_layout(&self) -> TcbLayout {
        match self.cpuid {
            Some(c) if c.family == 0x1A => TcbLayout::Turin,
            _ => TcbLayout::Legacy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(version: u32) -> Vec<u8> {
        let mut b = vec![0u8; REPORT_SIZE];
        b[0..4].copy_from_slice(&version.to_le_bytes());
        b[OFF_POLICY..OFF_POLICY + 8].copy_from_slice(&0x30000u64.to_le_bytes());
        b[OFF_SIG_ALGO..OFF_SIG_ALGO + 4].copy_from_slice(&1u32.to_le_bytes());
        b
    }

    #[test]
    fn accepts_every_published_version() {
        for v in 2..=5 {
            assert_eq!(
                AttestationReport::from_bytes(&minimal(v)).map(|r| r.version),
                Ok(v)
            );
        }
    }

    #[test]
    fn rejects_structural_errors() {
        assert_eq!(
            AttestationReport::from_bytes(&minimal(1)),
            Err(ReportError::CheckVersion(1))
        );
        assert_eq!(
            AttestationReport::from_bytes(&minimal(6)),
            Err(ReportError::CheckVersion(6))
        );
        assert_eq!(
            AttestationReport::from_bytes(&[0u8; 1183]),
            Err(ReportError::CheckSize(1183))
        );
        let mut b = minimal(3);
        b[OFF_SIG_ALGO] = 2;
        assert_eq!(
            AttestationReport::from_bytes(&b),
            Err(ReportError::CheckSignatureAlgorithm(2))
        );
        let mut b = minimal(3);
        b[0x4A0 - 1] = 1;
        assert_eq!(
            AttestationReport::from_bytes(&b),
            Err(ReportError::CheckReserved {
                field: "SIGNATURE tail",
                offset: OFF_SIG_S + SIG_COMPONENT_LEN
            })
        );
        let mut b = minimal(4);
        b[OFF_LAUNCH_MIT] = 1;
        assert!(matches!(
            AttestationReport::from_bytes(&b),
            Err(ReportError::CheckReserved { .. })
        ));
        let mut b = minimal(2);
        b[OFF_CPUID] = 0x19;
        assert!(matches!(
            AttestationReport::from_bytes(&b),
            Err(ReportError::CheckReserved { .. })
        ));
        let mut b = minimal(3);
        b[OFF_KEY_INFO] = 2 << 2;
        assert_eq!(
            AttestationReport::from_bytes(&b),
            Err(ReportError::CheckSigningKey(2))
        );
    }

    #[test]
    fn product_from_cpuid() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x17, 0x31), None);
        assert_eq!(Product::from_name("Milan-B0"), Some(Product::Milan));
    }
}
