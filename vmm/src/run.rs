//! One VM run: choose the backend for the platform (the only place that
//! does), build the VM, attach its devices, run the vCPU threads, wait for
//! a stop without polling, and report.

use crate::backend::kvm::KvmHypervisor;
use crate::backend::sev::snp::{SnpConfig, SnpHypervisor};
use crate::backend::snp_model::{ModelHypervisor, ModelOptions};
use crate::backend::{BackendError, Hypervisor, Vm};
use crate::builder::{self, BuiltVm, IrqChip};
use crate::config::{BootSource, ConfigError, Platform, VmConfig};
use crate::device_manager::{self, DeviceError};
use crate::exit_code;
use crate::firmware::EMBEDDED_FIRMWARE;
use crate::launch::{self, LaunchOptions, LaunchPlan, PlanError};
use crate::loader::{self, LoadError};
use crate::memory::{MemoryError, MemoryMap};
use crate::metrics::{RunMetrics, Timings};
use crate::run_control::{RunControl, StopReason};
use crate::vcpu::{self, VcpuContext};
use crate::violation::ViolationLog;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use thiserror::Error;
use umbra_firmware::layout::MAX_VCPUS;

/// Errors that prevent a run from starting or finishing.
#[derive(Debug, Error)]
pub enum VmmError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The platform cannot be used on this host.
    #[error("platform '{platform}' is not available on this host: {reason}")]
    PlatformUnavailable {
        /// The platform name.
        platform: &'static str,
        /// What is missing.
        reason: String,
    },
    /// More vCPUs than the host or the firmware supports.
    #[error("{requested} vCPUs requested but at most {max} are supported ({limit})")]
    TooManyVcpus {
        /// vCPUs asked for.
        requested: u32,
        /// The limit.
        max: u32,
        /// Who sets the limit.
        limit: &'static str,
    },
    /// A hypervisor call failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Guest images could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A NUMA placement could not be made.
    #[error("cannot place the VM on its NUMA node")]
    Numa(#[from] crate::numa::NumaError),
    /// The control API could not start.
    #[error("cannot start the control API")]
    Api(#[from] crate::api::ApiError),
    /// A seccomp filter could not be installed.
    #[error("cannot confine the VMM's threads")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The ACPI tables could not be built.
    #[error("cannot build the ACPI tables")]
    Acpi(#[from] crate::acpi::AcpiError),
    /// The devices could not be attached.
    #[error(transparent)]
    Devices(#[from] DeviceError),
    /// The vCPU kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler")]
    InstallKickHandler(#[source] std::io::Error),
    /// The SEV-SNP hardware backend refused.
    #[error(transparent)]
    Sev(#[from] crate::backend::sev::SevError),
    /// The confidential launch failed.
    #[error("the SNP launch failed")]
    Launch(#[source] launch::ExecuteError),
    /// A confidential platform's backend offered no launch (a bug).
    #[error("the backend of a confidential platform has no confidential launch")]
    NotConfidential,
    /// A confidential platform was asked to boot a kernel directly.
    #[error("--platform snp-model boots firmware (the embedded one or --firmware); measured direct kernel boot is not built yet")]
    ConfidentialKernel,
    /// The SNP launch plan could not be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// --print-measurement without an SNP firmware boot.
    #[error("--print-measurement needs --platform snp or snp-model and a firmware boot")]
    MeasurementPlatform,
    /// A vCPU thread could not be spawned.
    #[error("cannot spawn a vCPU thread")]
    SpawnVcpu(#[source] std::io::Error),
    /// The guest policy would be refused at LAUNCH_START.
    #[error(transparent)]
    Policy(#[from] crate::snp_policy::PolicyError),
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// Exit code for the process.
    pub exit_code: i32,
    /// Why the VM stopped.
    pub reason: StopReason,
    /// The summary for `--metrics-json`.
    pub metrics: RunMetrics,
}

/// The SNP launch inputs of a configuration (firmware boots only).
pub fn launch_options(config: &VmConfig) -> Result<LaunchOptions, VmmError> {
    let read = |path: &Option<std::path::PathBuf>| -> Result<Option<Vec<u8>>, VmmError> {
        path.as_deref()
            .map(loader::read_image)
            .transpose()
            .map_err(VmmError::from)
    };
    Ok(LaunchOptions {
        vcpus: config.vcpus,
        vcpu_type: config.snp.vcpu_type.clone(),
        guest_features: launched_features(config.snp.guest_features),
        policy: config.snp.policy,
        host_data: config.snp.host_data,
        id_block: read(&config.snp.id_block)?,
        id_auth: read(&config.snp.id_auth)?,
    })
}

/// The SEV / SEV-ES guest policy (SEV API 55766 table "Guest Policy"):
/// no debugging, and for SEV-ES the ES bit. `--policy` is SNP's.
pub fn legacy_policy(platform: Platform) -> u32 {
    use crate::backend::sev::legacy::policy;
    match platform {
        Platform::SevEs => policy::NODBG | policy::ES,
        _ => policy::NODBG,
    }
}

/// The VMSA SEV_FEATURES an SNP guest launches with: KVM always sets
/// SNPActive (bit 0, `__sev_guest_init`), whatever was asked for.
pub fn launched_features(requested: u64) -> u64 {
    requested | 1
}

/// The launch digest an SNP launch of this configuration produces,
/// computed without launching (`umbra run --print-measurement`).
pub fn predicted_measurement(config: &VmConfig) -> Result<[u8; 48], VmmError> {
    config.validate()?;
    if !matches!(config.platform, Platform::Snp | Platform::SnpModel) {
        return Err(VmmError::MeasurementPlatform);
    }
    let image = match &config.boot {
        BootSource::EmbeddedFirmware => EMBEDDED_FIRMWARE.to_vec(),
        BootSource::Firmware(path) => loader::read_image(path)?,
        BootSource::Kernel { .. } => return Err(VmmError::MeasurementPlatform),
    };
    let plan = LaunchPlan::new(&image, launch_options(config)?)?;
    Ok(plan.expected_measurement()?)
}

/// Reasons a platform other than `none` cannot run here yet.
fn platform_unavailable(platform: Platform) -> Option<VmmError> {
    let dev_sev = std::path::Path::new("/dev/sev").exists();
    let reason = match platform {
        Platform::None | Platform::SnpModel => return None,
        Platform::Snp if dev_sev => return None,
        Platform::Snp => {
            "/dev/sev does not exist (no AMD SEV firmware on this host); --platform snp-model runs the \
             software model instead"
        }
        Platform::SevEs | Platform::Sev if dev_sev => return None,
        Platform::SevEs | Platform::Sev => "/dev/sev does not exist (no AMD SEV firmware on this host)",
    };
    Some(VmmError::PlatformUnavailable {
        platform: platform.name(),
        reason: reason.to_string(),
    })
}

/// Runs one VM to completion. `process_start` anchors the timings.
pub fn run(config: &VmConfig, process_start: Instant) -> Result<RunOutcome, VmmError> {
    config.validate()?;
    if matches!(config.platform, Platform::Snp | Platform::SnpModel) {
        // What no kernel accepts is refused before the host is probed; the
        // kernel's own bits are checked once it is.
        crate::snp_policy::check_structure(config.snp.policy)?;
    }
    if let Some(err) = platform_unavailable(config.platform) {
        return Err(err);
    }
    // Read images before touching KVM so that a bad path fails fast.
    let firmware = match &config.boot {
        BootSource::EmbeddedFirmware => Some(EMBEDDED_FIRMWARE.to_vec()),
        BootSource::Firmware(path) => Some(loader::read_image(path)?),
        BootSource::Kernel { .. } => None,
    };
    if matches!(config.boot, BootSource::EmbeddedFirmware) && config.vcpus > MAX_VCPUS {
        return Err(VmmError::TooManyVcpus {
            requested: config.vcpus,
            max: MAX_VCPUS,
            limit: "umbra firmware",
        });
    }
    let rom_size = firmware
        .as_ref()
        .map_or(umbra_firmware::layout::ROM_SIZE, |f| f.len() as u64);
    let map = MemoryMap::new(config.memory, rom_size)?;
    let firmware = firmware.as_deref();
    match config.platform {
        Platform::None => run_on(&KvmHypervisor::new()?, config, map, firmware, process_start),
        Platform::SnpModel => {
            // The model stands for the whole stack silicon has: the kernel's
            // checks here (as Linux 6.11 makes them), the firmware's in it.
            crate::snp_policy::check(config.snp.policy, None)?;
            let hypervisor = ModelHypervisor::new(ModelOptions {
                keys_dir: config.snp.model_keys.clone(),
                vcpus: config.vcpus,
                vcpu_signature: vcpu_signature(config)?,
                guest_features: launched_features(config.snp.guest_features),
                // As strict as silicon: direct port I/O raises #VC.
                strict: true,
            })?;
            run_on(&hypervisor, config, map, firmware, process_start)
        }
        Platform::Snp => {
            // KVM builds the VMSAs from the vCPUs' reset state at
            // LAUNCH_FINISH; APs start at the firmware's SEV-ES reset block.
            let ap_reset_eip = ap_reset_eip(firmware);
            let hypervisor = SnpHypervisor::new(SnpConfig {
                vmsa_features: launched_features(config.snp.guest_features),
                gosvw: [0; 16],
                vcek_disabled: false,
                ap_reset_eip,
                vcpu_signature: vcpu_signature(config)?,
            })?;
            crate::snp_policy::check(config.snp.policy, hypervisor.kernel_policy_bits())?;
            run_on(&hypervisor, config, map, firmware, process_start)
        }
        Platform::SevEs | Platform::Sev => {
            use crate::backend::sev::legacy::{LegacyHypervisor, LegacyMode};
            let ap_reset_eip = ap_reset_eip(firmware);
            let hypervisor = if config.platform == Platform::SevEs {
                // INIT2 pins the VMSA features (the legacy SEV_ES_INIT may
                // turn on DebugSwap, which changes the measurement).
                LegacyHypervisor::with_init2(
                    LegacyMode::SevEs,
                    ap_reset_eip,
                    config.snp.guest_features & !1,
                )?
            } else {
                LegacyHypervisor::new(LegacyMode::Sev, ap_reset_eip)?
            };
            run_on(&hypervisor, config, map, firmware, process_start)
        }
    }
}

/// The firmware's SEV-ES reset block, where application processors start
/// on SEV-ES/SNP (QEMU's `sev_es_set_reset_vector`).
fn ap_reset_eip(firmware: Option<&[u8]>) -> Option<u32> {
    let image = firmware?;
    umbra_attestation::measure::ovmf::FirmwareImage::parse(image)
        .ok()
        .and_then(|fw| fw.sev_es_reset_eip().ok().flatten())
}

/// CPUID Fn0000_0001 EAX of `--vcpu-type`, which the vCPUs report and KVM
/// measures in RDX.
fn vcpu_signature(config: &VmConfig) -> Result<Option<u32>, VmmError> {
    umbra_attestation::measure::vcpu_types::vcpu_sig_of(&config.snp.vcpu_type)
        .map(Some)
        .ok_or_else(|| PlanError::VcpuType(config.snp.vcpu_type.clone()).into())
}

/// Builds, runs and reports a VM on `hypervisor`.
fn run_on<H>(
    hypervisor: &H,
    config: &VmConfig,
    map: MemoryMap,
    firmware: Option<&[u8]>,
    process_start: Instant,
) -> Result<RunOutcome, VmmError>
where
    H: Hypervisor,
    H::Vm: 'static,
    <H::Vm as Vm>::Vcpu: 'static,
{
    if config.vcpus > hypervisor.max_vcpus() {
        return Err(VmmError::TooManyVcpus {
            requested: config.vcpus,
            max: hypervisor.max_vcpus(),
            limit: "KVM on this host",
        });
    }
    let BuiltVm {
        vm,
        vcpus,
        irqchip,
        memslots_ms,
    } = builder::build(hypervisor, config, &map, firmware)?;
    let vm = Arc::new(vm);
    let control = Arc::new(RunControl::default());
    let devices = device_manager::attach(&vm, config, &control, irqchip == IrqChip::Split)?;
    vcpu::install_kick_handler().map_err(VmmError::InstallKickHandler)?;
    let context = Arc::new(VcpuContext {
        pio: devices.pio,
        mmio: devices.mmio,
        map,
        violations: ViolationLog::new(config.on_violation),
        control: control.clone(),
        halted: Default::default(),
        vcpu_count: config.vcpus,
        first_instruction: OnceLock::new(),
        seccomp: config.seccomp,
        cpus: match config.numa_node {
            Some(node) => crate::numa::node_cpus(node)?,
            None => Vec::new(),
        },
        live_exits: (0..config.vcpus).map(|_| Default::default()).collect(),
    });
    if config.seccomp != crate::seccomp::SeccompMode::Off {
        crate::seccomp::install_sigsys_handler().map_err(VmmError::InstallKickHandler)?;
    }
    let mut threads = vcpu::spawn(vcpus, &context).map_err(VmmError::SpawnVcpu)?;
    let _api = match &config.api_socket {
        Some(path) => Some(start_api(
            path,
            config,
            &vm,
            &context,
            &devices.virtio,
            devices.balloon.clone(),
        )?),
        None => None,
    };
    // The main thread last, once it has started the others.
    crate::seccomp::install(crate::seccomp::ThreadKind::Main, config.seccomp)?;

    let deadline = config.timeout.map(|t| Instant::now() + t);
    loop {
        match control.wait_wake(deadline) {
            crate::run_control::Wake::Stop => break,
            crate::run_control::Wake::Deadline => {
                control.request_stop(StopReason::Timeout);
                break;
            }
            // A pause over the API: kick the vCPUs out of KVM_RUN until
            // all have parked (a kick can land just before KVM_RUN).
            crate::run_control::Wake::Kick => {
                vcpu::kick(&threads);
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
    }
    let exited = Instant::now();
    let vcpu_exits = vcpu::stop(&mut threads, &control);
    drop(devices.event_loop);
    let device_metrics = device_manager::metrics(&devices.virtio);
    let balloon_metrics = devices.balloon.as_ref().map(|(b, _)| b.metrics());
    let iommu_metrics = devices
        .iommu
        .as_deref()
        .map(crate::metrics::IommuMetrics::of);

    let reason = control.reason().unwrap_or(StopReason::AllHalted);
    let exit_code = match &reason {
        StopReason::GuestExit(code) => (*code & 0xFF) as i32,
        StopReason::Violation => exit_code::VIOLATION,
        StopReason::GuestCrash(_) => exit_code::GUEST_CRASH,
        StopReason::AllHalted => exit_code::ALL_HALTED,
        StopReason::VmmError(_) => exit_code::VMM_ERROR,
        StopReason::Timeout => exit_code::TIMEOUT,
        StopReason::FidelityViolation(_) => exit_code::FIDELITY_VIOLATION,
        StopReason::ApiShutdown => 0,
    };
    if let Some(dir) = config.snp.attest_out.as_ref() {
        vm.write_evidence(dir)?;
    }
    let violations = context.violations.count();
    if violations > 16 {
        log::warn!("{violations} violations in all; the log shows the first 16 and then every power of two");
    }
    let snp = vm.confidential_metrics();
    let ms = |t: Instant| t.saturating_duration_since(process_start).as_secs_f64() * 1000.0;
    let metrics = RunMetrics {
        snp,
        devices: device_metrics,
        iommu: iommu_metrics,
        balloon: balloon_metrics,
        exit_code,
        stop_reason: describe(&reason),
        platform: hypervisor.name().to_string(),
        vcpus: config.vcpus,
        memory_bytes: config.memory,
        memory_regions: context.map.regions().to_vec(),
        violation_count: context.violations.count(),
        violations: context.violations.recorded(),
        vcpu_exits,
        timings: Timings {
            to_first_instruction_ms: context.first_instruction.get().copied().map(ms),
            to_first_serial_byte_ms: devices.first_serial_byte.get().copied().map(ms),
            to_exit_ms: ms(exited),
            memslots_ms,
        },
    };
    Ok(RunOutcome {
        exit_code,
        reason,
        metrics,
    })
}

/// Starts the control API for a running VM.
fn start_api<V: Vm + 'static>(
    path: &std::path::Path,
    config: &VmConfig,
    vm: &Arc<V>,
    context: &Arc<VcpuContext>,
    virtio: &[Arc<std::sync::Mutex<crate::virtio::mmio::MmioTransport>>],
    balloon: Option<(
        Arc<crate::virtio::balloon::BalloonState>,
        device_manager::SharedTransport,
    )>,
) -> Result<crate::api::ApiServer, VmmError> {
    let transports = virtio.to_vec();
    let transports_for_flush = virtio.to_vec();
    let pages_vm = vm.clone();
    let violations_ctx = context.clone();
    let flush_ctx = context.clone();
    let metrics_path = config.metrics_json.clone();
    let machine = serde_json::json!({
        "vcpu_count": config.vcpus,
        "mem_size_mib": config.memory >> 20,
        "smt": false,
        "track_dirty_pages": false,
        "huge_pages": match config.memory_backing {
            crate::config::MemoryBacking::Hugetlb => "2M",
            _ => "None",
        },
        "platform": config.platform.name(),
    });
    let view = crate::api::ApiView {
        control: context.control.clone(),
        machine,
        devices: Box::new(move || device_manager::metrics(&transports)),
        pages: Box::new(move || {
            pages_vm
                .confidential_metrics()
                .and_then(|m| serde_json::to_value(m.page_states).ok())
        }),
        violations: Box::new(move || violations_ctx.violations.count()),
        vcpu_exits: {
            let ctx = context.clone();
            Box::new(move || {
                ctx.live_exits
                    .iter()
                    .map(|e| e.load(std::sync::atomic::Ordering::Relaxed))
                    .collect()
            })
        },
        flush_metrics: Box::new(move || {
            let Some(path) = &metrics_path else {
                return Err("no --metrics-json file to flush to".into());
            };
            let snapshot = serde_json::json!({
                "flushed": true,
                "violation_count": flush_ctx.violations.count(),
                "devices": device_manager::metrics(&transports_for_flush),
            });
            std::fs::write(path, snapshot.to_string() + "\n").map_err(|e| e.to_string())
        }),
        seccomp: config.seccomp,
        balloon,
    };
    crate::api::start(path, view).map_err(VmmError::Api)
}

/// Words for a stop reason, for the log and the metrics.
pub fn describe(reason: &StopReason) -> String {
    match reason {
        StopReason::GuestExit(code) => format!("guest exited with code {code}"),
        StopReason::Violation => "stopped on a memory violation".into(),
        StopReason::GuestCrash(why) => format!("guest crashed: {why}"),
        StopReason::AllHalted => "every vCPU halted without an exit code".into(),
        StopReason::VmmError(why) => format!("VMM error: {why}"),
        StopReason::Timeout => "stopped after the --timeout expired".into(),
        StopReason::ApiShutdown => "stopped by the control API's Shutdown action".into(),
        StopReason::FidelityViolation(why) => format!("SNP model fidelity violation: {why}"),
    }
}
