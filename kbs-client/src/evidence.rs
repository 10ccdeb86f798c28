//! SNP evidence in the form Trustee's verifier reads
//! (`deps/verifier/src/snp`): `{"attestation_report": <the sev crate's
//! serde form of the report>, "cert_chain": [...] | null}`, built from the
//! raw 1184-byte report without the sev crate (which needs std), so that
//! the firmware can send it. The field layout is the SNP firmware ABI's
//! (AMD 56860 table 22, ATTESTATION_REPORT); the JSON shape is virtee/sev
//! 8's `AttestationReport` serde derive, which the tests check field by
//! field against the sev crate itself on real reports.

use alloc::vec::Vec;
use serde_json::{json, Map, Value};

/// Bytes of an attestation report.
pub const REPORT_SIZE: usize = 1184;

/// Why a report could not be put into evidence form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceError {
    /// Not 1184 bytes.
    ReportSize,
    /// Report version 0 or 1 (sev reads only 2 and later).
    ReportVersion,
    /// A version 2 report whose CHIP_ID is masked: the TCB layout (and so
    /// the report) cannot be read without it.
    MaskedChipId,
    /// CPUID family/model of no SNP processor generation.
    UnknownGeneration,
    /// A reserved byte is not zero (the sev crate refuses such a report,
    /// and its signature could not survive the round trip).
    ReservedBytes,
}

impl core::fmt::Display for EvidenceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EvidenceError::ReportSize => "the report is not 1184 bytes",
            EvidenceError::ReportVersion => "report versions below 2 are not supported",
            EvidenceError::MaskedChipId => "a version 2 report with a masked CHIP_ID",
            EvidenceError::UnknownGeneration => "the report names no SNP processor generation",
            EvidenceError::ReservedBytes => "a reserved byte of the report is not zero",
        })
    }
}

impl core::error::Error for EvidenceError {}

pub use umbra_snp_abi::cert_table::CertKind;

/// The name of `kind` in sev's `CertType`, for the kinds the evidence
/// carries (a CRL or an unknown GUID is not part of the chain).
fn cert_type(kind: CertKind) -> Option<&'static str> {
    match kind {
        CertKind::Ark => Some("ARK"),
        CertKind::Ask => Some("ASK"),
        CertKind::Vcek => Some("VCEK"),
        CertKind::Vlek => Some("VLEK"),
        CertKind::Crl | CertKind::Other(_) => None,
    }
}

/// How TCB_VERSION bytes are laid out (sev's `Generation`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum TcbLayout {
    /// Milan, Genoa: bootloader, tee, 4 reserved, snp, microcode.
    Legacy,
    /// Turin and later: fmc, bootloader, tee, snp, 3 reserved, microcode.
    Turin,
}

fn u32_at(r: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]])
}

fn u64_at(r: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&r[at..at + 8]);
    u64::from_le_bytes(b)
}

fn bytes(r: &[u8], at: usize, len: usize) -> Value {
    Value::Array(r[at..at + len].iter().map(|&b| Value::from(b)).collect())
}

fn tcb(r: &[u8], at: usize, layout: TcbLayout) -> Value {
    let t = &r[at..at + 8];
    match layout {
        TcbLayout::Legacy => json!({
            "fmc": null, "bootloader": t[0], "tee": t[1], "snp": t[6], "microcode": t[7],
        }),
        TcbLayout::Turin => json!({
            "fmc": t[0], "bootloader": t[1], "tee": t[2], "snp": t[3], "microcode": t[7],
        }),
    }
}

/// sev's `Generation::identify_cpu`, reduced to the TCB layout.
fn layout_of(family: u8, model: u8) -> Result<TcbLayout, EvidenceError> {
    match (family, model) {
        (0x19, 0x00..=0x1F | 0xA0..=0xAF) => Ok(TcbLayout::Legacy),
        (0x1A, 0x00..=0x11 | 0x50..=0x57 | 0x90..=0x9F | 0xA0..=0xAF | 0xC0..=0xC7) => {
            Ok(TcbLayout::Turin)
        }
        _ => Err(EvidenceError::UnknownGeneration),
    }
}

/// `version` (major, minor, build) from the three bytes build, minor, major.
fn version(r: &[u8], at: usize) -> Value {
    json!({ "major": r[at + 2], "minor": r[at + 1], "build": r[at] })
}

/// The report in the sev crate's serde form.
pub fn report_json(report: &[u8]) -> Result<Value, EvidenceError> {
    if report.len() != REPORT_SIZE {
        return Err(EvidenceError::ReportSize);
    }
    let r = report;
    let report_version = u32_at(r, 0x00);
    let v2 = match report_version {
        0 | 1 => return Err(EvidenceError::ReportVersion),
        2 => true,
        _ => false,
    };
    // Mitigation vectors exist from version 5 on (sev: 3 and 4 are V3).
    let v5 = report_version >= 5;
    // The reserved ranges the sev crate reads as zero (`skip_bytes`).
    let reserved: [core::ops::Range<usize>; 5] = [
        0x4C..0x50,
        if v2 { 0x188..0x1A0 } else { 0x18B..0x1A0 },
        0x1EB..0x1EC,
        0x1EF..0x1F0,
        if v5 { 0x208..0x2A0 } else { 0x1F8..0x2A0 },
    ];
    if reserved
        .into_iter()
        .any(|range| r[range].iter().any(|&b| b != 0))
    {
        return Err(EvidenceError::ReservedBytes);
    }
    let layout = if v2 {
        let chip_id = &r[0x1A0..0x1E0];
        if chip_id.iter().all(|&b| b == 0) {
            return Err(EvidenceError::MaskedChipId);
        }
        if chip_id[8..].iter().all(|&b| b == 0) {
            TcbLayout::Turin
        } else {
            TcbLayout::Legacy
        }
    } else {
        layout_of(r[0x188], r[0x189])?
    };
    let optional_u8 = |at: usize| if v2 { Value::Null } else { Value::from(r[at]) };
    let optional_u64 = |at: usize| {
        if v5 {
            Value::from(u64_at(r, at))
        } else {
            Value::Null
        }
    };
    let mut m = Map::new();
    m.insert("version".into(), report_version.into());
    m.insert("guest_svn".into(), u32_at(r, 0x04).into());
    m.insert("policy".into(), u64_at(r, 0x08).into());
    m.insert("family_id".into(), bytes(r, 0x10, 16));
    m.insert("image_id".into(), bytes(r, 0x20, 16));
    m.insert("vmpl".into(), u32_at(r, 0x30).into());
    m.insert("sig_algo".into(), u32_at(r, 0x34).into());
    m.insert("current_tcb".into(), tcb(r, 0x38, layout));
    m.insert("plat_info".into(), u64_at(r, 0x40).into());
    m.insert("key_info".into(), u32_at(r, 0x48).into());
    m.insert("report_data".into(), bytes(r, 0x50, 64));
    m.insert("measurement".into(), bytes(r, 0x90, 48));
    m.insert("host_data".into(), bytes(r, 0xC0, 32));
    m.insert("id_key_digest".into(), bytes(r, 0xE0, 48));
    m.insert("author_key_digest".into(), bytes(r, 0x110, 48));
    m.insert("report_id".into(), bytes(r, 0x140, 32));
    m.insert("report_id_ma".into(), bytes(r, 0x160, 32));
    m.insert("reported_tcb".into(), tcb(r, 0x180, layout));
    m.insert("cpuid_fam_id".into(), optional_u8(0x188));
    m.insert("cpuid_mod_id".into(), optional_u8(0x189));
    m.insert("cpuid_step".into(), optional_u8(0x18A));
    m.insert("chip_id".into(), bytes(r, 0x1A0, 64));
    m.insert("committed_tcb".into(), tcb(r, 0x1E0, layout));
    m.insert("current".into(), version(r, 0x1E8));
    m.insert("committed".into(), version(r, 0x1EC));
    m.insert("launch_tcb".into(), tcb(r, 0x1F0, layout));
    m.insert("launch_mit_vector".into(), optional_u64(0x1F8));
    m.insert("current_mit_vector".into(), optional_u64(0x200));
    m.insert(
        "signature".into(),
        json!({ "r": bytes(r, 0x2A0, 72), "s": bytes(r, 0x2E8, 72) }),
    );
    Ok(Value::Object(m))
}

/// The SNP evidence for `report` and the certificates (DER) the host
/// supplied; `cert_chain` is null when there are none, as guest-components
/// sends it.
pub fn snp_evidence(report: &[u8], certs: &[(CertKind, &[u8])]) -> Result<Value, EvidenceError> {
    let chain: Vec<Value> = certs
        .iter()
        .filter_map(|(kind, der)| {
            cert_type(*kind).map(|name| json!({ "cert_type": name, "data": der.to_vec() }))
        })
        .collect();
    Ok(json!({
        "attestation_report": report_json(report)?,
        "cert_chain": if chain.is_empty() { Value::Null } else { Value::Array(chain) },
    }))
}
