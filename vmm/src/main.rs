//! `umbra`: launch a VM. All logic lives in the library.

use clap::Parser;

fn main() {
    let process_start = std::time::Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .format_target(false)
        .init();
    let cli = umbra_vmm::cli::Cli::try_parse()
        .unwrap_or_else(|err| umbra_vmm::cli::exit_on_usage_error(err));
    std::process::exit(umbra_vmm::cli::run(cli, process_start));
}
