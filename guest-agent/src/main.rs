//! `umbra-agent`: obtain an SEV-SNP attestation report inside the guest.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use umbra_guest_agent::tsm::{get_report, DEFAULT_TSM_ROOT};

/// Obtain SEV-SNP attestation evidence from inside a guest.
#[derive(Parser, Debug)]
#[command(name = "umbra-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Request a report through configfs-tsm and write it (and any certificates) out.
    Report {
        /// REPORT_DATA as hex (up to 64 bytes), e.g. a verifier's nonce.
        #[arg(long, default_value = "")]
        report_data: String,
        /// VMPL to request the report at.
        #[arg(long)]
        vmpl: Option<u32>,
        /// Where to write the report.
        #[arg(long, default_value = "report.bin")]
        out: PathBuf,
        /// Where to write the certificate table from the host, if any.
        #[arg(long)]
        certs_out: Option<PathBuf>,
        /// configfs-tsm report directory.
        #[arg(long, default_value = DEFAULT_TSM_ROOT)]
        tsm_root: PathBuf,
        /// Name of the report entry (created if missing).
        #[arg(long, default_value = "umbra-agent")]
        entry: String,
    },
}

fn main() {
    let Command::Report {
        report_data,
        vmpl,
        out,
        certs_out,
        tsm_root,
        entry,
    } = Cli::parse().command;
    let data = match umbra_attestation::hex::decode(report_data.trim().trim_start_matches("0x")) {
        Ok(data) => data,
        Err(err) => {
            eprintln!("umbra-agent: --report-data: {err}");
            std::process::exit(2);
        }
    };
    let evidence = match get_report(&tsm_root, &entry, &data, vmpl) {
        Ok(evidence) => evidence,
        Err(err) => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            eprintln!("umbra-agent: {text}");
            std::process::exit(1);
        }
    };
    let mut writes = vec![(out.clone(), evidence.report.clone())];
    if let Some(path) = certs_out {
        writes.push((path, evidence.certificates.clone()));
    }
    for (path, bytes) in writes {
        if let Err(err) = std::fs::write(&path, bytes) {
            eprintln!("umbra-agent: cannot write {}: {err}", path.display());
            std::process::exit(1);
        }
    }
    println!(
        "report v{} from {} written to {} (measurement {})",
        evidence.parsed.version,
        if evidence.provider.is_empty() {
            "configfs-tsm"
        } else {
            &evidence.provider
        },
        out.display(),
        evidence
            .parsed
            .measurement
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
}
