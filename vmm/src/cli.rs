//! The `umbra` command line.

use crate::config::{
    parse_size, BootSource, MemoryBacking, Platform, SerialOutput, SnpOptions, ViolationPolicy,
    VmConfig,
};
use crate::device_config::{DiskConfig, VsockConfig};
use crate::exit_code;
use crate::run;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

/// umbra: a confidential-computing VMM for AMD SEV-SNP on KVM.
#[derive(Parser, Debug)]
#[command(name = "umbra", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a VM: umbra's embedded firmware unless --firmware or --kernel is given.
    Run(Box<RunArgs>),
    /// Report what this host offers for confidential guests.
    Host {
        #[command(subcommand)]
        what: HostCommand,
    },
    /// Write the embedded firmware ROM image to a file (to measure it, or to
    /// boot it under QEMU with `-bios`).
    ExportFirmware {
        /// Destination file.
        path: PathBuf,
    },
    /// The live view of a running VM from its control API.
    Stat {
        /// The VM's --api-socket.
        #[arg(long)]
        api_socket: PathBuf,
        /// Seconds between samples.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
        /// One JSON object per sample (also when stdout is not a terminal).
        #[arg(long)]
        json: bool,
        /// Stop after this many samples.
        #[arg(long)]
        count: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum HostCommand {
    /// SEV/SNP platform status, kvm_amd parameters, KVM VM types and VMSA features.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Options of `umbra run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Confidential-computing platform.
    #[arg(long, value_enum, default_value = "none")]
    platform: Platform,
    /// Guest RAM: a number of MiB, or with a K/M/G/T suffix.
    #[arg(long, short = 'm', default_value = "128M", value_parser = parse_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// Command line for the firmware (e.g. `scenario=smp`) or the kernel.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// A ROM image (e.g. OVMF.fd) to map so that it ends at 4 GiB.
    #[arg(long, conflicts_with = "kernel")]
    firmware: Option<PathBuf>,
    /// A Linux bzImage for direct boot.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// An initramfs for direct boot.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Serial console: `stdout`, `null` or a file path.
    #[arg(long, default_value = "stdout")]
    serial: String,
    /// What to do on a refused memory access.
    #[arg(long, value_enum, default_value = "stop")]
    on_violation: ViolationPolicy,
    /// Write a JSON summary of the run here at exit.
    #[arg(long)]
    metrics_json: Option<PathBuf>,
    /// Host backing of guest RAM.
    #[arg(long, value_enum, default_value = "anon")]
    memory_backing: MemoryBacking,
    /// Let KSM merge identical guest pages (plain guests only).
    #[arg(long)]
    ksm: bool,
    /// Stop the VM after this many seconds (exit code 124).
    #[arg(long)]
    timeout: Option<f64>,
    /// SNP: QEMU CPU model whose CPUID signature the VMSAs carry.
    #[arg(long, default_value = "EPYC-v4")]
    vcpu_type: String,
    /// SNP: VMSA SEV_FEATURES (hex or decimal).
    #[arg(long, default_value = "0x1", value_parser = parse_u64)]
    guest_features: u64,
    /// SNP: guest policy (hex or decimal).
    #[arg(long, default_value = "0x30000", value_parser = parse_u64)]
    policy: u64,
    /// SNP: HOST_DATA, 32 bytes of hex.
    #[arg(long, value_parser = parse_host_data)]
    host_data: Option<[u8; 32]>,
    /// SNP: ID block file (96 bytes, from `umbra-attest id-block`).
    #[arg(long, requires = "id_auth")]
    id_block: Option<PathBuf>,
    /// SNP: ID auth file (4096 bytes).
    #[arg(long, requires = "id_block")]
    id_auth: Option<PathBuf>,
    /// SNP: print the launch digest the launch will produce, and exit.
    #[arg(long)]
    print_measurement: bool,
    /// SNP model: write report.bin and ark.pem/ask.pem/vcek.pem here.
    #[arg(long)]
    attest_out: Option<PathBuf>,
    /// SNP model: directory with the model's keys (created if missing).
    #[arg(long)]
    model_keys: Option<PathBuf>,
    /// A virtio-blk disk: `path=FILE[,readonly=on][,direct=on]` (repeatable).
    #[arg(long, value_parser = parse_disk)]
    disk: Vec<DiskConfig>,
    /// A virtio-rng device fed by the host's getrandom.
    #[arg(long)]
    rng: bool,
    /// A virtio-vsock device: `cid=N,socket=PATH` (Firecracker's hybrid vsock).
    #[arg(long, value_parser = parse_vsock)]
    vsock: Option<VsockConfig>,
    /// A virtio-iommu for the devices given `iommu=on`.
    #[arg(long)]
    iommu: bool,
    /// Per-thread seccomp filters: on (a forbidden call ends the VMM with
    /// SIGSYS), log (the kernel logs it), off.
    #[arg(long, value_enum, default_value = "on")]
    seccomp: crate::seccomp::SeccompMode,
    /// Serve the control API (Firecracker-style HTTP) on this Unix socket.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Bind guest memory and the vCPU threads to this host NUMA node.
    #[arg(long)]
    numa_node: Option<u32>,
    /// A virtio-balloon: `size=SIZE`, its initial target.
    #[arg(long, value_parser = parse_balloon)]
    balloon: Option<u64>,
    /// ACPI tables for --kernel boots (off: virtio_mmio.device= on the
    /// kernel command line instead).
    #[arg(long, value_enum, default_value = "on")]
    acpi: Switch,
    /// Write the ACPI tables the guest would get to DIR (one file per
    /// table, named by signature) and exit.
    #[arg(long, value_name = "DIR")]
    dump_acpi: Option<PathBuf>,
}

/// An on/off option value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    On,
    Off,
}

fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    DiskConfig::parse(text).map_err(|e| e.to_string())
}

fn parse_balloon(text: &str) -> Result<u64, String> {
    let size = text
        .strip_prefix("size=")
        .ok_or_else(|| format!("'{text}': expected size=SIZE"))?;
    parse_size(size).map_err(|e| e.to_string())
}

fn parse_vsock(text: &str) -> Result<VsockConfig, String> {
    VsockConfig::parse(text).map_err(|e| e.to_string())
}

fn parse_u64(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("'{text}' is not a number"))
}

fn parse_host_data(text: &str) -> Result<[u8; 32], String> {
    umbra_attestation::hex::decode_exact::<32>(text.trim_start_matches("0x"))
        .map_err(|e| format!("host data must be 32 bytes of hex: {e}"))
}

impl RunArgs {
    fn to_config(&self) -> Result<VmConfig, String> {
        let boot = match (&self.firmware, &self.kernel) {
            (Some(fw), _) => BootSource::Firmware(fw.clone()),
            (None, Some(kernel)) => BootSource::Kernel {
                kernel: kernel.clone(),
                initrd: self.initrd.clone(),
            },
            (None, None) => BootSource::EmbeddedFirmware,
        };
        let serial = match self.serial.as_str() {
            "stdout" => SerialOutput::Stdout,
            "null" | "none" => SerialOutput::Null,
            path => SerialOutput::File(PathBuf::from(path)),
        };
        Ok(VmConfig {
            platform: self.platform,
            memory: self.memory,
            vcpus: self.vcpus,
            cmdline: self.cmdline.clone(),
            boot,
            serial,
            on_violation: self.on_violation,
            memory_backing: self.memory_backing,
            ksm: self.ksm,
            timeout: match self.timeout {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 => Some(std::time::Duration::from_secs_f64(s)),
                Some(s) => {
                    return Err(format!(
                        "--timeout {s} must be a positive number of seconds"
                    ))
                }
            },
            snp: SnpOptions {
                vcpu_type: self.vcpu_type.clone(),
                guest_features: self.guest_features,
                policy: self.policy,
                host_data: self.host_data.unwrap_or([0; 32]),
                id_block: self.id_block.clone(),
                id_auth: self.id_auth.clone(),
                attest_out: self.attest_out.clone(),
                model_keys: self.model_keys.clone(),
            },
            disks: self.disk.clone(),
            rng: self.rng,
            vsock: self.vsock.clone(),
            iommu: self.iommu,
            seccomp: self.seccomp,
            api_socket: self.api_socket.clone(),
            metrics_json: self.metrics_json.clone(),
            numa_node: self.numa_node,
            balloon: self.balloon,
            acpi: self.acpi == Switch::On,
        })
    }
}

/// Runs the parsed command line and returns the process exit code.
pub fn run(cli: Cli, process_start: Instant) -> i32 {
    match cli.command {
        Command::Run(args) => run_vm(&args, process_start),
        Command::Host {
            what: HostCommand::Status { json },
        } => crate::host_status::host_status_command(json),
        Command::Stat {
            api_socket,
            interval,
            json,
            count,
        } => crate::stat::run(&api_socket, interval, json, count),
        Command::ExportFirmware { path } => {
            match std::fs::write(&path, crate::firmware::EMBEDDED_FIRMWARE) {
                Ok(()) => 0,
                Err(err) => {
                    umbra_attestation::errln!("umbra: cannot write {}: {err}", path.display());
                    exit_code::VMM_ERROR
                }
            }
        }
    }
}

fn run_vm(args: &RunArgs, process_start: Instant) -> i32 {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(message) => {
            umbra_attestation::errln!("umbra: {message}");
            return exit_code::VMM_ERROR;
        }
    };
    let features = config.snp.guest_features;
    if matches!(config.platform, Platform::Snp | Platform::SnpModel)
        && run::launched_features(features) != features
    {
        umbra_attestation::errln!(
            "umbra: note: --guest-features {features:#x} launches as {:#x}: KVM always sets SNPActive (bit 0) in an SNP guest's VMSA",
            run::launched_features(features)
        );
    }
    if let Some(dir) = &args.dump_acpi {
        return match crate::acpi::dump(&config, dir) {
            Ok(files) => {
                for file in files {
                    umbra_attestation::outln!("{}", file.display());
                }
                0
            }
            Err(err) => {
                umbra_attestation::errln!("umbra: {}", error_chain(&err));
                exit_code::VMM_ERROR
            }
        };
    }
    if args.print_measurement {
        return match run::predicted_measurement(&config) {
            Ok(digest) => {
                umbra_attestation::outln!("{}", umbra_attestation::hex::encode(&digest));
                0
            }
            Err(err) => {
                umbra_attestation::errln!("umbra: {}", error_chain(&err));
                exit_code::VMM_ERROR
            }
        };
    }
    let outcome = match run::run(&config, process_start) {
        Ok(outcome) => outcome,
        Err(err) => {
            umbra_attestation::errln!("umbra: {}", error_chain(&err));
            return exit_code::VMM_ERROR;
        }
    };
    if !matches!(outcome.reason, crate::run_control::StopReason::GuestExit(_)) {
        umbra_attestation::errln!("umbra: {}", run::describe(&outcome.reason));
    }
    if let Some(path) = &args.metrics_json {
        if let Err(err) = outcome.metrics.write_to(path) {
            umbra_attestation::errln!("umbra: cannot write metrics to {}: {err}", path.display());
            return exit_code::VMM_ERROR;
        }
    }
    outcome.exit_code
}

pub use crate::error::error_chain;

/// Prints help and version as clap does; a usage error becomes one line on
/// stderr and exit code 2.
pub fn exit_on_usage_error(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("invalid arguments");
    umbra_attestation::errln!("umbra: {}", first.trim_start_matches("error: "));
    std::process::exit(2);
}
