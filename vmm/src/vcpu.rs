//! The vCPU threads: each runs its vCPU to the next exit, hands the exit to
//! [`handle_exit`] and goes on until the run control says stop. Whatever a
//! backend answers itself (GHCB, page-state changes) never reaches here.

use crate::backend::{Vcpu, VcpuExit};
use crate::devices::bus::Bus;
use crate::error::error_chain;
use crate::memory::MemoryMap;
use crate::metrics::VcpuExitCounts;
use crate::run_control::{RunControl, StopReason};
use crate::violation::{Access, Violation, ViolationLog};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// What every vCPU thread shares: the buses, the memory map for refused
/// accesses, the violation log and the run control.
pub(crate) struct VcpuContext {
    pub(crate) pio: Bus,
    pub(crate) mmio: Bus,
    pub(crate) map: MemoryMap,
    pub(crate) violations: ViolationLog,
    pub(crate) control: Arc<RunControl>,
    pub(crate) halted: AtomicU32,
    pub(crate) vcpu_count: u32,
    pub(crate) first_instruction: OnceLock<Instant>,
    /// The vCPU threads' seccomp mode.
    pub(crate) seccomp: crate::seccomp::SeccompMode,
    /// CPUs the vCPU threads are pinned to (`--numa-node`); empty: any.
    pub(crate) cpus: Vec<usize>,
    /// Exits per vCPU so far, readable while the VM runs (the API).
    pub(crate) live_exits: Vec<std::sync::atomic::AtomicU64>,
}

/// What the loop does after an exit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Run the vCPU again.
    Resume,
    /// This vCPU is done (halted for good).
    Leave,
}

/// Installs the no-op handler of the signal that kicks a vCPU out of
/// KVM_RUN (the signal's only job is the EINTR).
pub(crate) fn install_kick_handler() -> std::io::Result<()> {
    extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    register_signal_handler(SIGRTMIN(), kick_handler)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Spawns one thread per vCPU.
pub(crate) fn spawn<V: Vcpu + 'static>(
    vcpus: Vec<V>,
    context: &Arc<VcpuContext>,
) -> Result<Vec<JoinHandle<VcpuExitCounts>>, std::io::Error> {
    let mut threads = Vec::new();
    for vcpu in vcpus {
        let ctx = context.clone();
        let running = context.control.vcpu_started();
        let spawned = std::thread::Builder::new()
            .name(format!("vcpu{}", vcpu.index()))
            .spawn(move || {
                let _running = running;
                if !ctx.cpus.is_empty() {
                    if let Err(e) = crate::numa::pin_current_thread(&ctx.cpus) {
                        log::error!(
                            "vCPU {}: cannot pin to the NUMA node's CPUs: {e}",
                            vcpu.index()
                        );
                    }
                }
                // Confined before the guest runs a single instruction.
                if let Err(e) =
                    crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu, ctx.seccomp)
                {
                    log::error!("vCPU {}: {}", vcpu.index(), crate::error::error_chain(&e));
                    ctx.control
                        .request_stop(crate::run_control::StopReason::VmmError(
                            crate::error::error_chain(&e),
                        ));
                    return VcpuExitCounts::default();
                }
                crate::seccomp::selftest(crate::seccomp::ThreadKind::Vcpu);
                vcpu_loop(vcpu, &ctx)
            });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                context
                    .control
                    .request_stop(StopReason::VmmError("vCPU thread spawn failed".into()));
                stop(&mut threads, &context.control);
                return Err(e);
            }
        }
    }
    Ok(threads)
}

/// Kicks every vCPU thread out of KVM_RUN until it has exited, then joins.
pub(crate) fn stop(
    threads: &mut Vec<JoinHandle<VcpuExitCounts>>,
    control: &RunControl,
) -> Vec<VcpuExitCounts> {
    // A kick can land just before a thread enters KVM_RUN and be lost, so
    // kick again each time the wait for the vCPU loops' ends runs out. Once
    // every loop has ended, stop kicking: a thread finishing its exit must
    // not be interrupted in a storm of signals.
    loop {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            let _ = t.kill(SIGRTMIN());
        }
        if control.wait_vcpus_ended(Duration::from_micros(200)) {
            break;
        }
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

/// Kicks every vCPU thread still running out of KVM_RUN (a pause).
pub(crate) fn kick(threads: &[JoinHandle<VcpuExitCounts>]) {
    for t in threads.iter().filter(|t| !t.is_finished()) {
        let _ = t.kill(SIGRTMIN());
    }
}

fn vcpu_loop<V: Vcpu>(mut vcpu: V, ctx: &VcpuContext) -> VcpuExitCounts {
    let index = vcpu.index();
    let mut counts = VcpuExitCounts {
        vcpu: index,
        ..Default::default()
    };
    while !ctx.control.is_stopping() {
        ctx.control.park();
        if index == 0 {
            ctx.first_instruction.get_or_init(Instant::now);
        }
        let next = match vcpu.run() {
            Ok(exit) => handle_exit(ctx, index, exit, &mut counts),
            Err(e) => {
                let why = error_chain(&e);
                log::error!("{why}");
                ctx.control.request_stop(StopReason::VmmError(why));
                Next::Leave
            }
        };
        if next == Next::Leave {
            break;
        }
        if ctx.control.reason() == Some(StopReason::Timeout) {
            log::warn!("vCPU {index} at timeout: {}", vcpu.describe_state());
        }
    }
    counts
}

/// Dispatches one exit: port I/O and MMIO to the buses (an MMIO access no
/// device claims is a violation), halts and guest deaths to the run control.
pub(crate) fn handle_exit(
    ctx: &VcpuContext,
    index: u32,
    exit: VcpuExit<'_>,
    counts: &mut VcpuExitCounts,
) -> Next {
    counts.total += 1;
    if let Some(live) = ctx.live_exits.get(index as usize) {
        live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    match exit {
        VcpuExit::PioIn(port, data) => {
            counts.pio_in += 1;
            if !ctx.pio.read(u64::from(port), data) {
                // Ports nobody claims read as all-ones, as on a PC.
                data.fill(0xFF);
            }
        }
        VcpuExit::PioOut(port, data) => {
            counts.pio_out += 1;
            *counts.pio_out_ports.entry(port).or_default() += 1;
            ctx.pio.write(u64::from(port), data);
        }
        VcpuExit::MmioRead(gpa, data) => {
            counts.mmio_read += 1;
            if !ctx.mmio.read(gpa, data) {
                // Nothing answers: reads see open bus, as on real hardware.
                data.fill(0xFF);
                refuse(ctx, index, gpa, data.len(), Access::Read);
            }
        }
        VcpuExit::MmioWrite(gpa, data) => {
            counts.mmio_write += 1;
            if !ctx.mmio.write(gpa, data) {
                refuse(ctx, index, gpa, data.len(), Access::Write);
            }
        }
        VcpuExit::Halt => {
            counts.halt += 1;
            let halted = ctx.halted.fetch_add(1, Ordering::AcqRel) + 1;
            if halted == ctx.vcpu_count {
                ctx.control.request_stop(StopReason::AllHalted);
            }
            return Next::Leave;
        }
        VcpuExit::Shutdown => {
            counts.other += 1;
            ctx.control.request_stop(StopReason::GuestCrash(format!(
                "vCPU {index} shut down (triple fault)"
            )));
        }
        VcpuExit::MsrRead {
            index: msr, error, ..
        } => {
            // Only backends intercept MSRs, and they answer their own.
            counts.msr += 1;
            log::debug!("vCPU {index}: rdmsr {msr:#x} refused: #GP");
            *error = 1;
        }
        VcpuExit::MsrWrite {
            index: msr, error, ..
        } => {
            counts.msr += 1;
            log::debug!("vCPU {index}: wrmsr {msr:#x} refused: #GP");
            *error = 1;
        }
        VcpuExit::Handled => counts.handled += 1,
        VcpuExit::Interrupted => counts.interrupted += 1,
        VcpuExit::GuestTerminate { set, code } => {
            counts.other += 1;
            ctx.control.request_stop(StopReason::GuestCrash(format!(
                "guest requested termination, reason set {set} code {code}"
            )));
        }
        VcpuExit::FidelityViolation(what) => {
            counts.other += 1;
            log::error!("{what}");
            ctx.control
                .request_stop(StopReason::FidelityViolation(what));
        }
        VcpuExit::Unhandled(what) => {
            counts.other += 1;
            log::error!("vCPU {index}: unhandled exit {what}");
            ctx.control.request_stop(StopReason::GuestCrash(format!(
                "unhandled exit {what} on vCPU {index}"
            )));
        }
    }
    Next::Resume
}

/// Handles an access that reached the VMM without a device behind it.
fn refuse(ctx: &VcpuContext, vcpu: u32, gpa: u64, size: usize, access: Access) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ViolationPolicy;
    use crate::devices::bus::BusDevice;
    use std::sync::Mutex;

    struct Answer;
    impl BusDevice for Answer {
        fn read(&mut self, _: u64, data: &mut [u8]) {
            data.fill(0x42);
        }
        fn write(&mut self, _: u64, _: &[u8]) {}
    }

    fn context(vcpus: u32) -> VcpuContext {
        let mut mmio = Bus::default();
        mmio.insert(0xD000_0000, 0x1000, Arc::new(Mutex::new(Answer)))
            .unwrap();
        VcpuContext {
            pio: Bus::default(),
            mmio,
            map: MemoryMap::new(64 << 20, 64 << 10).unwrap(),
            violations: ViolationLog::new(ViolationPolicy::Stop),
            control: Arc::new(RunControl::default()),
            halted: AtomicU32::new(0),
            vcpu_count: vcpus,
            first_instruction: OnceLock::new(),
            seccomp: crate::seccomp::SeccompMode::Off,
            cpus: Vec::new(),
            live_exits: Vec::new(),
        }
    }

    #[test]
    fn mmio_goes_to_the_device_else_it_is_a_violation() {
        let ctx = context(1);
        let mut counts = VcpuExitCounts::default();
        let mut data = [0u8; 4];
        let next = handle_exit(
            &ctx,
            0,
            VcpuExit::MmioRead(0xD000_0010, &mut data),
            &mut counts,
        );
        assert_eq!((next, data), (Next::Resume, [0x42; 4]));
        assert!(!ctx.control.is_stopping());
        let rom_write = VcpuExit::MmioWrite((1 << 32) - 0x1000, &[1]);
        handle_exit(&ctx, 0, rom_write, &mut counts);
        assert_eq!(ctx.control.reason(), Some(StopReason::Violation));
        assert_eq!(ctx.violations.count(), 1);
    }

    #[test]
    fn unclaimed_ports_read_all_ones_and_msrs_get_gp() {
        let ctx = context(1);
        let mut counts = VcpuExitCounts::default();
        let mut data = [0u8; 2];
        handle_exit(&ctx, 0, VcpuExit::PioIn(0x80, &mut data), &mut counts);
        assert_eq!(data, [0xFF, 0xFF]);
        let (mut value, mut error) = (0u64, 0u8);
        let exit = VcpuExit::MsrRead {
            index: 0xC001_0130,
            data: &mut value,
            error: &mut error,
        };
        handle_exit(&ctx, 0, exit, &mut counts);
        assert_eq!(error, 1);
    }

    #[test]
    fn the_last_halt_stops_the_run_and_termination_is_a_crash() {
        let ctx = context(2);
        let mut counts = VcpuExitCounts::default();
        assert_eq!(
            handle_exit(&ctx, 0, VcpuExit::Halt, &mut counts),
            Next::Leave
        );
        assert!(!ctx.control.is_stopping());
        handle_exit(&ctx, 1, VcpuExit::Halt, &mut counts);
        assert_eq!(ctx.control.reason(), Some(StopReason::AllHalted));
        let ctx = context(1);
        handle_exit(
            &ctx,
            0,
            VcpuExit::GuestTerminate { set: 0, code: 3 },
            &mut counts,
        );
        assert!(
            matches!(ctx.control.reason(), Some(StopReason::GuestCrash(why)) if why.contains("code 3"))
        );
    }
}
