//! `umbra-attest`: verify SEV-SNP evidence and predict launch measurements.
//!
//! The binary is a thin shell over the `umbra_attestation` library; every
//! subcommand lives in `cli/`.

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    std::process::exit(cli::run(args));
}
