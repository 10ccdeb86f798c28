//! `umbra-attest id_block` (to be filled in).

use clap::Args;

#[derive(Args, Debug)]
pub struct IdBlockArgs {}

pub fn run(_args: IdBlockArgs) -> i32 {
    eprintln!("umbra-attest: this subcommand is not built yet");
    2
}
