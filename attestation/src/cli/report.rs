//! `umbra-attest report` (to be filled in).

use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {}

pub fn run(_args: ReportArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}
