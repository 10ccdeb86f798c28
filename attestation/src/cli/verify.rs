//! `umbra-attest verify` (to be filled in).

use clap::Args;

#[derive(Args, Debug)]
pub struct VerifyArgs {}

pub fn run(_args: VerifyArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}
