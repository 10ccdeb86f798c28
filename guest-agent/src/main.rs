//! `umbra-agent`: obtain an SEV-SNP attestation report inside the guest and,
//! optionally, check it against AMD's roots before sending it on.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use umbra_attestation::hex;
use umbra_attestation::verify::Status;
use umbra_guest_agent::cert_table;
use umbra_guest_agent::tsm::{get_report, Evidence, DEFAULT_TSM_ROOT};
use umbra_guest_agent::verify::verify_with_table;

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
        /// Where to write the raw certificate table from the host, if any.
        #[arg(long)]
        certs_out: Option<PathBuf>,
        /// Write the host's certificates as ark.der/ask.der/vcek.der/... here
        /// (the layout `umbra-attest verify --certs DIR` reads).
        #[arg(long)]
        certs_dir: Option<PathBuf>,
        /// Check the report with the host's certificates against AMD's
        /// pinned roots; exit 1 if any check fails.
        #[arg(long)]
        verify: bool,
        /// configfs-tsm report directory.
        #[arg(long, default_value = DEFAULT_TSM_ROOT)]
        tsm_root: PathBuf,
        /// Name of the report entry (created if missing).
        #[arg(long, default_value = "umbra-agent")]
        entry: String,
    },
}

/// Prints one error line with its causes and exits with `code`.
fn fail(err: &(dyn std::error::Error + 'static), code: i32) -> ! {
    let text = umbra_attestation::verify::describe(err);
    umbra_attestation::errln!("umbra-agent: {text}");
    std::process::exit(code)
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(err) = std::fs::write(path, bytes) {
        umbra_attestation::errln!("umbra-agent: cannot write {}: {err}", path.display());
        std::process::exit(1);
    }
}

fn write_certs_dir(dir: &Path, evidence: &Evidence) {
    let entries = match cert_table::parse(&evidence.certificates) {
        Ok(entries) => entries,
        Err(err) => fail(&err, 1),
    };
    if let Err(err) = std::fs::create_dir_all(dir) {
        umbra_attestation::errln!("umbra-agent: cannot create {}: {err}", dir.display());
        std::process::exit(1);
    }
    for (kind, bytes) in entries {
        if let Some(name) = kind.file_name() {
            write(&dir.join(name), bytes);
        }
    }
}

fn main() {
    let Command::Report {
        report_data,
        vmpl,
        out,
        certs_out,
        certs_dir,
        verify,
        tsm_root,
        entry,
    } = Cli::parse().command;
    let data = match hex::decode(report_data.trim().trim_start_matches("0x")) {
        Ok(data) => data,
        Err(err) => {
            umbra_attestation::errln!("umbra-agent: --report-data: {err}");
            std::process::exit(2);
        }
    };
    let evidence = match get_report(&tsm_root, &entry, &data, vmpl) {
        Ok(evidence) => evidence,
        Err(err) => fail(&err, 1),
    };
    write(&out, &evidence.report);
    if let Some(path) = &certs_out {
        write(path, &evidence.certificates);
    }
    if let Some(dir) = &certs_dir {
        write_certs_dir(dir, &evidence);
    }
    let provider = if evidence.provider.is_empty() {
        "configfs-tsm"
    } else {
        &evidence.provider
    };
    umbra_attestation::outln!(
        "report v{} from {provider} written to {} (measurement {})",
        evidence.parsed.version,
        out.display(),
        hex::encode(&evidence.parsed.measurement)
    );
    if verify {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let checks = match verify_with_table(&evidence.parsed, &evidence.certificates, now) {
            Ok(checks) => checks,
            Err(err) => fail(&err, 1),
        };
        for c in &checks {
            umbra_attestation::outln!("{}", c.line());
        }
        if checks.iter().any(|c| c.status == Status::Fail) {
            std::process::exit(1);
        }
    }
}
