//! One VM run: lay out memory, load the guest, run the vCPUs on their own
//! threads, handle their exits, stop cleanly, report.

use crate::backend::kvm::KvmHypervisor;
use crate::backend::sev::snp::{SnpConfig, SnpHypervisor, SnpVm};
use crate::backend::{
    BackendError, Hypervisor, MemorySlot, SlotAccess, Vcpu, VcpuExit, VcpuStart, Vm,
};
use crate::config::{BootSource, ConfigError, Platform, SerialOutput, VmConfig};
use crate::devices::debug_exit::DebugExit;
use crate::devices::probe::MemoryProbe;
use crate::devices::serial::{ConsoleWriter, SerialPort, COM1};
use crate::devices::PioBus;
use crate::exit_code;
use crate::firmware::EMBEDDED_FIRMWARE;
use crate::launch::{self, LaunchOptions, LaunchPlan, PlanError};
use crate::loader::{self, LoadError};
use crate::memory::{GuestRam, MemoryError, MemoryMap, RegionRole};
use crate::metrics::{RunMetrics, Timings, VcpuExitCounts};
use crate::run_control::{RunControl, StopReason};
use crate::snp_model::ghcb::{CpuidTable, Exit, MODEL_MSRS};
use crate::snp_run;
use crate::violation::{Access, Violation, ViolationLog};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use umbra_firmware::layout::{
    DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE, MAX_VCPUS, PROBE_PORT, UMBRA_FEATURE_SNP_MODEL,
};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

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
        /// Why.
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
    /// The serial output file could not be opened.
    #[error("cannot open serial output {path}")]
    OpenSerial {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An eventfd or signal handler could not be created.
    #[error("cannot set up {0}")]
    HostSetup(&'static str, #[source] std::io::Error),
    /// The SEV-SNP hardware backend refused.
    #[error(transparent)]
    Sev(#[from] crate::backend::sev::SevError),
    /// The hardware SNP launch failed.
    #[error("the SNP launch failed")]
    HardwareLaunch(#[source] launch::ExecuteError),
    /// The SNP model could not be prepared or launched.
    #[error(transparent)]
    SnpModel(#[from] snp_run::SnpRunError),
    /// Two devices claim the same ports (a bug in the device layout).
    #[error("device ports at {0:#x} overlap another device")]
    PortConflict(u16),
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
}

/// The result of a run.
pub struct RunOutcome {
    /// Exit code for the process.
    pub exit_code: i32,
    /// Why the VM stopped.
    pub reason: StopReason,
    /// The summary for `--metrics-json`.
    pub metrics: RunMetrics,
}

/// What every vCPU thread shares.
struct ExitContext {
    snp: Option<snp_run::SnpLaunched>,
    bus: PioBus,
    map: MemoryMap,
    violations: ViolationLog,
    control: Arc<RunControl>,
    halted: std::sync::atomic::AtomicU32,
    vcpu_count: u32,
    first_instruction: OnceLock<Instant>,
}

/// The SNP launch plan for a configuration (firmware boots only).
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
        guest_features: config.snp.guest_features,
        policy: config.snp.policy,
        host_data: config.snp.host_data,
        id_block: read(&config.snp.id_block)?,
        id_auth: read(&config.snp.id_auth)?,
    })
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
    let (name, reason) = match platform {
        Platform::None => return None,
        Platform::SnpModel => return None,
        Platform::Snp if std::path::Path::new("/dev/sev").exists() => return None,
        Platform::Snp => (
            "snp",
            "/dev/sev does not exist (no AMD SEV firmware on this host); --platform snp-model runs the \
             software model instead"
                .to_string(),
        ),
        Platform::SevEs | Platform::Sev => {
            let name = if platform == Platform::SevEs { "sev-es" } else { "sev" };
            let reason = if std::path::Path::new("/dev/sev").exists() {
                "umbra run does not drive the legacy SEV/SEV-ES flows yet (they run in the hardware tests: \
                 cargo test -p umbra-vmm --test hardware with UMBRA_HW=1)"
                    .to_string()
            } else {
                "/dev/sev does not exist (no AMD SEV firmware on this host)".to_string()
            };
            (name, reason)
        }
    };
    Some(VmmError::PlatformUnavailable {
        platform: name,
        reason,
    })
}

/// Runs one VM to completion. `process_start` anchors the timings.
pub fn run(config: &VmConfig, process_start: Instant) -> Result<RunOutcome, VmmError> {
    config.validate()?;
    if let Some(err) = platform_unavailable(config.platform) {
        return Err(err);
    }
    // Read images before touching KVM so that a bad path fails fast.
    let firmware = match &config.boot {
        BootSource::EmbeddedFirmware => Some(EMBEDDED_FIRMWARE.to_vec()),
        BootSource::Firmware(path) => Some(loader::read_image(path)?),
        BootSource::Kernel { .. } => None,
    };
    let firmware_limit = matches!(config.boot, BootSource::EmbeddedFirmware).then_some(MAX_VCPUS);
    if let Some(max) = firmware_limit.filter(|max| config.vcpus > *max) {
        return Err(VmmError::TooManyVcpus {
            requested: config.vcpus,
            max,
            limit: "umbra firmware",
        });
    }
    let rom_size = firmware
        .as_ref()
        .map_or(umbra_firmware::layout::ROM_SIZE, |f| f.len() as u64);
    let map = MemoryMap::new(config.memory, rom_size)?;

    if config.platform == Platform::Snp {
        // Real hardware: the KVM SNP backend launches the plan; KVM builds
        // the VMSAs from the vCPUs' reset state at LAUNCH_FINISH.
        let image = firmware.as_deref().ok_or(VmmError::ConfidentialKernel)?;
        let plan = LaunchPlan::new(image, launch_options(config)?)?;
        let ap_reset_eip = umbra_attestation::measure::ovmf::FirmwareImage::parse(image)
            .ok()
            .and_then(|fw| fw.sev_es_reset_eip().ok().flatten());
        let hypervisor = SnpHypervisor::new(SnpConfig {
            vmsa_features: config.snp.guest_features,
            gosvw: [0; 16],
            vcek_disabled: false,
            ap_reset_eip,
        })?;
        check_vcpus(config, hypervisor.max_vcpus())?;
        let vm = hypervisor.create_snp_vm()?;
        let launch: HardwareLaunch<'_, SnpVm> = Box::new(move |vm: &mut SnpVm| {
            let (_, finished) = launch::execute(vm, &plan).map_err(VmmError::HardwareLaunch)?;
            Ok(finished.measurement)
        });
        return boot(
            config,
            process_start,
            "kvm-snp",
            vm,
            map,
            firmware.as_deref(),
            Some(launch),
        );
    }
    let hypervisor = KvmHypervisor::new()?;
    check_vcpus(config, hypervisor.max_vcpus())?;
    let vm = hypervisor.create_vm()?;
    boot(
        config,
        process_start,
        hypervisor.name(),
        vm,
        map,
        firmware.as_deref(),
        None,
    )
}

/// A hardware backend's launch, run after the vCPUs exist and before they run.
type HardwareLaunch<'a, V> = Box<dyn FnOnce(&mut V) -> Result<[u8; 48], VmmError> + 'a>;

fn check_vcpus(config: &VmConfig, max: u32) -> Result<(), VmmError> {
    if config.vcpus > max {
        return Err(VmmError::TooManyVcpus {
            requested: config.vcpus,
            max,
            limit: "KVM on this host",
        });
    }
    Ok(())
}

/// Maps memory, loads the guest, creates the vCPUs, launches (SNP model or
/// hardware), runs them to a stop and reports.
fn boot<V>(
    config: &VmConfig,
    process_start: Instant,
    backend_name: &str,
    mut vm: V,
    map: MemoryMap,
    firmware: Option<&[u8]>,
    hardware_launch: Option<HardwareLaunch<'_, V>>,
) -> Result<RunOutcome, VmmError>
where
    V: Vm,
    V::Vcpu: 'static,
{
    let confidential = config.platform == Platform::SnpModel;
    let plan = match (firmware, confidential) {
        (Some(image), true) => Some(LaunchPlan::new(image, launch_options(config)?)?),
        (None, true) => return Err(VmmError::ConfidentialKernel),
        _ => None,
    };
    let ram = Arc::new(if confidential {
        snp_run::warn_unencrypted();
        GuestRam::allocate_confidential(&map)?
    } else {
        GuestRam::allocate(&map, config.memory_backing, config.ksm)?
    });
    let memslots_start = Instant::now();
    for (slot, range) in ram.guest_ranges().into_iter().enumerate() {
        let role = map.find(range.gpa).map_or(RegionRole::Ram, |r| r.role);
        let access = if role == RegionRole::Rom {
            SlotAccess::ReadOnly
        } else {
            SlotAccess::ReadWrite
        };
        let slot = MemorySlot {
            slot: slot as u32,
            gpa: range.gpa,
            size: range.size,
            host_addr: range.host_addr,
            access,
        };
        // SAFETY: the mapping is owned by `ram`, which lives until this
        // function returns, after every vCPU thread has been joined and
        // dropped along with the VM.
        unsafe { vm.map_memory(&slot)? };
    }
    // The kernel's memslot setup grows with guest RAM on shadow-paging KVM;
    // the metrics report it apart from umbra's own launch work.
    let memslots_ms = memslots_start.elapsed().as_secs_f64() * 1000.0;

    let mut snp: Option<snp_run::SnpLaunched> = None;
    let start = match (&config.boot, firmware) {
        (BootSource::Kernel { kernel, initrd }, _) => {
            vm.create_legacy_irqchip()?;
            let entry = loader::load_linux(
                &ram.memory,
                &map,
                kernel,
                initrd.as_deref(),
                &config.cmdline,
            )?;
            VcpuStart::Linux64 {
                entry: entry.entry,
                boot_params: entry.boot_params,
                page_table: entry.page_table,
                gdt: entry.gdt,
            }
        }
        (_, Some(image)) if !confidential => {
            loader::load_firmware(&ram.memory, &map, image, config.vcpus, &config.cmdline)?;
            VcpuStart::Reset
        }
        (_, Some(image)) => {
            // The ROM carries the image as on plain KVM; the launch measures
            // the same bytes (on hardware they would be encrypted in place).
            let plan = plan.as_ref().ok_or(VmmError::ConfidentialKernel)?;
            let launched = snp_run::launch(config, &map, &ram, plan, host_cpuid(), |ram| {
                loader::load_firmware(&ram.memory, &map, image, config.vcpus, &config.cmdline)
            })?;
            log::info!(
                "SNP model launch digest {}",
                umbra_attestation::hex::encode(&launched.measurement)
            );
            vm.intercept_msrs(&MODEL_MSRS)?;
            snp = Some(launched);
            VcpuStart::Reset
        }
        (_, None) => VcpuStart::Reset,
    };

    let control = Arc::new(RunControl::default());
    let first_serial_byte = Arc::new(OnceLock::new());
    let mut bus = PioBus::default();
    let serial_out: Box<dyn std::io::Write + Send> =
        match &config.serial {
            SerialOutput::Stdout => Box::new(std::io::stdout()),
            SerialOutput::Null => Box::new(std::io::sink()),
            SerialOutput::File(path) => Box::new(std::fs::File::create(path).map_err(
                |source| VmmError::OpenSerial {
                    path: path.clone(),
                    source,
                },
            )?),
        };
    let serial_irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::HostSetup("serial eventfd", e))?;
    let serial = SerialPort::new(
        serial_irq,
        ConsoleWriter::new(serial_out, first_serial_byte.clone()),
    );
    bus.insert(COM1, 8, Arc::new(Mutex::new(serial)));
    bus.insert(
        DEBUG_EXIT_PORT,
        DEBUG_EXIT_SIZE,
        Arc::new(Mutex::new(DebugExit::new(control.clone()))),
    );

    if let Some(launched) = &snp {
        let probe = MemoryProbe::new(launched.shared.clone());
        if !bus.insert(PROBE_PORT, 8, Arc::new(Mutex::new(probe))) {
            return Err(VmmError::PortConflict(PROBE_PORT));
        }
    }
    let context = Arc::new(ExitContext {
        snp,
        bus,
        map,
        violations: ViolationLog::new(config.on_violation),
        control: control.clone(),
        halted: Default::default(),
        vcpu_count: config.vcpus,
        first_instruction: OnceLock::new(),
    });

    extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| {
        VmmError::HostSetup(
            "the vCPU kick signal",
            std::io::Error::from_raw_os_error(e.errno()),
        )
    })?;

    let features = if confidential {
        UMBRA_FEATURE_SNP_MODEL
    } else {
        0
    };
    let vcpus = (0..config.vcpus)
        .map(|index| vm.create_vcpu(index, config.vcpus, start, features))
        .collect::<Result<Vec<_>, _>>()?;
    // KVM measures every vCPU's VMSA at LAUNCH_FINISH: launch now that they
    // all exist, before any of them runs.
    let hardware_measurement = match hardware_launch {
        Some(launch) => Some(launch(&mut vm)?),
        None => None,
    };
    if let Some(m) = &hardware_measurement {
        log::info!("SNP launch digest {}", umbra_attestation::hex::encode(m));
    }
    let mut threads: Vec<JoinHandle<VcpuExitCounts>> = Vec::new();
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let ctx = context.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{index}"))
            .spawn(move || vcpu_loop(vcpu, &ctx));
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                control.request_stop(StopReason::VmmError("vCPU thread spawn failed".into()));
                stop_threads(&mut threads);
                return Err(VmmError::SpawnVcpu(e));
            }
        }
    }

    let deadline = config.timeout.map(|t| Instant::now() + t);
    while !control.is_stopping() && !threads.iter().all(|t| t.is_finished()) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            control.request_stop(StopReason::Timeout);
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let exited = Instant::now();
    let vcpu_exits = stop_threads(&mut threads);
    drop(vm);

    let reason = control.reason().unwrap_or(StopReason::AllHalted);
    let exit_code = match &reason {
        StopReason::GuestExit(code) => (*code & 0xFF) as i32,
        StopReason::Violation => exit_code::VIOLATION,
        StopReason::GuestCrash(_) => exit_code::GUEST_CRASH,
        StopReason::AllHalted => exit_code::ALL_HALTED,
        StopReason::VmmError(_) => exit_code::VMM_ERROR,
        StopReason::Timeout => exit_code::TIMEOUT,
    };
    let ms = |t: Instant| t.saturating_duration_since(process_start).as_secs_f64() * 1000.0;
    let snp = context.snp.as_ref().map(|s| {
        let runtime = crate::devices::lock(&s.runtime);
        crate::metrics::SnpMetrics {
            measurement: umbra_attestation::hex::encode(&s.measurement),
            page_states: crate::devices::lock(s.shared.states()).summary(),
            model: runtime.model.summary(),
            reports_signed: runtime.reports_signed,
        }
    });
    if let (Some(s), Some(dir)) = (context.snp.as_ref(), config.snp.attest_out.as_ref()) {
        snp_run::write_attestation(s, dir)?;
    }
    let metrics = RunMetrics {
        snp,
        exit_code,
        stop_reason: describe(&reason),
        platform: backend_name.to_string(),
        vcpus: config.vcpus,
        memory_bytes: config.memory,
        memory_regions: context.map.regions().to_vec(),
        violation_count: context.violations.count(),
        violations: context.violations.recorded(),
        vcpu_exits,
        timings: Timings {
            to_first_instruction_ms: context.first_instruction.get().copied().map(ms),
            to_first_serial_byte_ms: first_serial_byte.get().copied().map(ms),
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

/// Words for a stop reason, for the log and the metrics.
pub fn describe(reason: &StopReason) -> String {
    match reason {
        StopReason::GuestExit(code) => format!("guest exited with code {code}"),
        StopReason::Violation => "stopped on a memory violation".into(),
        StopReason::GuestCrash(why) => format!("guest crashed: {why}"),
        StopReason::AllHalted => "every vCPU halted without an exit code".into(),
        StopReason::VmmError(why) => format!("VMM error: {why}"),
        StopReason::Timeout => "stopped after the --timeout expired".into(),
    }
}

/// Kicks every vCPU thread out of KVM_RUN until it has exited, then joins.
fn stop_threads(threads: &mut Vec<JoinHandle<VcpuExitCounts>>) -> Vec<VcpuExitCounts> {
    // A kick can land just before a thread enters KVM_RUN and be lost, so
    // keep kicking until each thread is gone.
    while threads.iter().any(|t| !t.is_finished()) {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(SIGRTMIN());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    threads
        .drain(..)
        .enumerate()
        .map(|(i, t)| {
            t.join().unwrap_or(VcpuExitCounts {
                vcpu: i as u32,
                ..Default::default()
            })
        })
        .collect()
}

fn vcpu_loop<V: Vcpu>(mut vcpu: V, ctx: &ExitContext) -> VcpuExitCounts {
    let index = vcpu.index();
    let mut counts = VcpuExitCounts {
        vcpu: index,
        ..Default::default()
    };
    while !ctx.control.is_stopping() {
        if index == 0 {
            ctx.first_instruction.get_or_init(Instant::now);
        }
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) => {
                let why = crate::cli::error_chain(&e);
                log::error!("{why}");
                ctx.control.request_stop(StopReason::VmmError(why));
                break;
            }
        };
        counts.total += 1;
        match exit {
            VcpuExit::PioIn(port, data) => {
                counts.pio_in += 1;
                ctx.bus.read(port, data);
            }
            VcpuExit::PioOut(port, data) => {
                counts.pio_out += 1;
                *counts.pio_out_ports.entry(port).or_default() += 1;
                ctx.bus.write(port, data);
            }
            VcpuExit::MmioRead(gpa, data) => {
                counts.mmio_read += 1;
                // Nothing answers: reads see open bus, as on real hardware.
                data.fill(0xFF);
                refuse(ctx, index, gpa, data.len(), Access::Read);
            }
            VcpuExit::MmioWrite(gpa, data) => {
                counts.mmio_write += 1;
                refuse(ctx, index, gpa, data.len(), Access::Write);
            }
            VcpuExit::Halt => {
                counts.halt += 1;
                let halted = ctx.halted.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
                if halted == ctx.vcpu_count {
                    ctx.control.request_stop(StopReason::AllHalted);
                }
                break;
            }
            VcpuExit::Shutdown => {
                counts.other += 1;
                ctx.control.request_stop(StopReason::GuestCrash(format!(
                    "vCPU {index} shut down (triple fault)"
                )));
            }
            VcpuExit::MsrRead {
                index: msr,
                data,
                error,
            } => {
                counts.msr += 1;
                let value = ctx
                    .snp
                    .as_ref()
                    .and_then(|s| crate::devices::lock(&s.runtime).rdmsr(index, msr));
                match value {
                    Some(value) => *data = value,
                    None => {
                        log::warn!("vCPU {index}: rdmsr {msr:#x} refused: #GP");
                        *error = 1;
                    }
                }
            }
            VcpuExit::MsrWrite {
                index: msr,
                data,
                error,
            } => {
                counts.msr += 1;
                let outcome = ctx
                    .snp
                    .as_ref()
                    .and_then(|s| crate::devices::lock(&s.runtime).wrmsr(index, msr, data));
                match outcome {
                    Some(Exit::Resume) => {}
                    Some(Exit::Terminate(set, code)) => {
                        ctx.control.request_stop(StopReason::GuestCrash(format!(
                            "guest requested termination, reason set {set} code {code}"
                        )))
                    }
                    Some(Exit::Unregistered(gpa)) => {
                        ctx.control.request_stop(StopReason::GuestCrash(format!(
                            "GHCB exit from unregistered or private GPA {gpa:#x} on vCPU {index}"
                        )))
                    }
                    None => {
                        log::warn!("vCPU {index}: wrmsr {msr:#x} refused: #GP");
                        *error = 1;
                    }
                }
            }
            VcpuExit::Interrupted => {
                counts.interrupted += 1;
                if ctx.control.reason() == Some(StopReason::Timeout) {
                    log::warn!("vCPU {index} at timeout: {}", vcpu.describe_state());
                }
            }
            VcpuExit::Unhandled(what) => {
                counts.other += 1;
                log::error!("vCPU {index}: unhandled exit {what}");
                ctx.control.request_stop(StopReason::GuestCrash(format!(
                    "unhandled exit {what} on vCPU {index}"
                )));
            }
        }
    }
    counts
}

/// Handles an access that reached the VMM without a device behind it.
fn refuse(ctx: &ExitContext, vcpu: u32, gpa: u64, size: usize, access: Access) {
    let Some((kind, region)) = ViolationLog::classify(&ctx.map, gpa, access) else {
        return;
    };
    let violation = Violation {
        gpa,
        access,
        size,
        kind,
        vcpu,
        region,
    };
    if ctx.violations.record(violation) {
        ctx.control.request_stop(StopReason::Violation);
    }
}

/// The host's CPUID (subleaf 0) for the model's MSR-protocol CPUID answers.
fn host_cpuid() -> CpuidTable {
    (0..=0x1Fu32)
        .chain(0x8000_0000..=0x8000_0021)
        .map(|leaf| {
            let r = std::arch::x86_64::__cpuid_count(leaf, 0);
            (leaf, [r.eax, r.ebx, r.ecx, r.edx])
        })
        .collect()
}
