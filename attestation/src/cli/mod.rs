//! Command-line front end of `umbra-attest`.
//!
//! Each subcommand owns one file; `run` maps its outcome to the process exit
//! code so that scripts can tell classes of failure apart.

mod fetch;
mod id_block;
mod measure;
mod report;
mod serve;
mod verify;

use clap::{Parser, Subcommand};

/// Verify AMD SEV-SNP attestation evidence and predict launch measurements.
#[derive(Parser, Debug)]
#[command(name = "umbra-attest", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect an attestation report.
    Report(report::ReportArgs),
    /// Verify a report against AMD's roots, its VCEK/VLEK and a policy.
    Verify(verify::VerifyArgs),
    /// Download certificates and CRLs from AMD KDS into the local cache.
    Fetch(fetch::FetchArgs),
    /// Predict the launch digest (drop-in for sev-snp-measure).
    Measure(measure::MeasureArgs),
    /// Produce an ID block and ID auth structure for SNP_LAUNCH_FINISH.
    IdBlock(id_block::IdBlockArgs),
    /// Release secrets to attested guests: a Trustee-KBS-protocol server.
    Serve(serve::ServeArgs),
}

/// Runs the parsed command and returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Report(args) => report::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Fetch(args) => fetch::run(args),
        Command::Measure(args) => measure::run(args),
        Command::IdBlock(args) => id_block::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
