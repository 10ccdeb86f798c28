//! `umbra-attest measure` (to be filled in).

use clap::Args;

#[derive(Args, Debug)]
pub struct MeasureArgs {}

pub fn run(_args: MeasureArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}
