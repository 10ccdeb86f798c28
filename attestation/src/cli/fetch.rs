//! `umbra-attest fetch` (to be filled in).

use clap::Args;

#[derive(Args, Debug)]
pub struct FetchArgs {}

pub fn run(_args: FetchArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}
