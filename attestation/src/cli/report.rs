//! `umbra-attest report show R [--format json]`: print every report field,
//! with TCBs split per component, policy and platform bits by name, and
//! KEY_INFO decoded.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};
use umbra_attestation::hex::encode as h;
use umbra_attestation::report::{
    AttestationReport, GuestPolicy, PlatformInfo, TcbLayout, TcbVersion,
};
use umbra_attestation::verify::tcb_summary;

use super::verify::{read_input, EXIT_MALFORMED};

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: ReportCommand,
}

#[derive(Subcommand, Debug)]
enum ReportCommand {
    /// Decode and print every field of an attestation report (binary,
    /// hex text, or an Azure HCL report).
    Show {
        /// Report file.
        report: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub fn run(args: ReportArgs) -> i32 {
    match args.command {
        ReportCommand::Show { report, format } => {
            let bytes = match read_input(&report) {
                Ok(b) => b,
                Err(e) => {
                    umbra_attestation::errln!("umbra-attest: {e}");
                    return EXIT_MALFORMED;
                }
            };
            let r = match AttestationReport::from_any(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    umbra_attestation::errln!("umbra-attest: {}: {e}", report.display());
                    return EXIT_MALFORMED;
                }
            };
            let v = report_json(&r);
            match format {
                Format::Json => {
                    umbra_attestation::outln!(
                        "{}",
                        serde_json::to_string_pretty(&v).unwrap_or_default()
                    )
                }
                Format::Text => print_text(&v, 0),
            }
            0
        }
    }
}

fn tcb_json(t: &TcbVersion, layout: TcbLayout) -> Value {
    let p = t.parts(layout);
    let mut m = Map::new();
    if let Some(f) = p.fmc {
        m.insert("fmc".into(), json!(f));
    }
    m.insert("bootloader".into(), json!(p.bootloader));
    m.insert("tee".into(), json!(p.tee));
    m.insert("snp".into(), json!(p.snp));
    m.insert("microcode".into(), json!(p.microcode));
    m.insert("raw".into(), json!(t.raw_hex()));
    m.insert("summary".into(), json!(tcb_summary(&p)));
    Value::Object(m)
}

fn bits_json(value: u64, table: &[(&str, u32)]) -> Map<String, Value> {
    table
        .iter()
        .map(|(n, b)| (n.to_string(), json!((value >> b) & 1 == 1)))
        .collect()
}

/// Every field of the report as JSON (also embedded in `verify --format json`).
pub fn report_json(r: &AttestationReport) -> Value {
    let layout = r.tcb_layout();
    let mut policy = bits_json(r.policy.0, &GuestPolicy::FLAGS);
    policy.insert("raw".into(), json!(format!("{:#x}", r.policy.0)));
    policy.insert(
        "abi".into(),
        json!(format!("{}.{}", r.policy.abi_major(), r.policy.abi_minor())),
    );
    let mut platform = bits_json(r.platform_info.0, &PlatformInfo::FLAGS);
    platform.insert("raw".into(), json!(format!("{:#x}", r.platform_info.0)));
    let cpuid = r.cpuid.map(|c| {
        json!({
            "family": format!("{:#04x}", c.family),
            "model": format!("{:#04x}", c.model),
            "stepping": format!("{:#x}", c.stepping),
            "product": r.product_from_cpuid().map(|p| p.to_string()),
        })
    });
    json!({
        "version": r.version,
        "guest_svn": r.guest_svn,
        "policy": policy,
        "family_id": h(&r.family_id),
        "image_id": h(&r.image_id),
        "vmpl": r.vmpl,
        "signature_algo": format!("{} (ECDSA P-384 with SHA-384)", r.signature_algo),
        "current_tcb": tcb_json(&r.current_tcb, layout),
        "platform_info": platform,
        "key_info": {
            "raw": format!("{:#x}", r.key_info.raw),
            "author_key_en": r.key_info.author_key_en,
            "mask_chip_key": r.key_info.mask_chip_key,
            "signing_key": r.key_info.signing_key.to_string(),
        },
        "report_data": h(&r.report_data),
        "measurement": h(&r.measurement),
        "host_data": h(&r.host_data),
        "id_key_digest": h(&r.id_key_digest),
        "author_key_digest": h(&r.author_key_digest),
        "report_id": h(&r.report_id),
        "report_id_ma": h(&r.report_id_ma),
        "reported_tcb": tcb_json(&r.reported_tcb, layout),
        "cpuid": cpuid,
        "chip_id": h(&r.chip_id),
        "committed_tcb": tcb_json(&r.committed_tcb, layout),
        "current_version": r.current_version.to_string(),
        "committed_version": r.committed_version.to_string(),
        "launch_tcb": tcb_json(&r.launch_tcb, layout),
        "launch_mit_vector": r.launch_mit_vector.map(|v| format!("{v:#x}")),
        "current_mit_vector": r.current_mit_vector.map(|v| format!("{v:#x}")),
        "signature": { "r": h(&r.sig_r), "s": h(&r.sig_s) },
    })
}

/// Indented `key: value` text; nested objects become indented blocks.
fn print_text(v: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    if let Value::Object(m) = v {
        for (k, val) in m {
            match val {
                Value::Object(_) => {
                    umbra_attestation::outln!("{pad}{k}:");
                    print_text(val, indent + 1);
                }
                Value::Null => umbra_attestation::outln!("{pad}{k}: (not in this version)"),
                Value::String(s) => umbra_attestation::outln!("{pad}{k}: {s}"),
                other => umbra_attestation::outln!("{pad}{k}: {other}"),
            }
        }
    }
}
