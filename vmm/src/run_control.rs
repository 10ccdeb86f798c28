//! Stop requests shared by the vCPU threads and devices: the first reason
//! to stop wins, every vCPU loop checks the flag between exits, and the
//! main thread sleeps on a condition variable until a stop or the last
//! vCPU thread's exit wakes it (no polling).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why the VM stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The guest wrote an exit code to the debug-exit port.
    GuestExit(u32),
    /// A memory violation under `--on-violation stop`.
    Violation,
    /// The guest triple-faulted or otherwise died.
    GuestCrash(String),
    /// Every vCPU halted without reporting an exit code.
    AllHalted,
    /// A backend call failed on a vCPU thread.
    VmmError(String),
    /// The run exceeded `--timeout`.
    Timeout,
    /// (SNP model) The guest did what silicon would not have allowed.
    FidelityViolation(String),
    /// `PUT /actions {"action_type": "Shutdown"}` on the control API.
    ApiShutdown,
}

/// What woke the main thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// A stop, or every vCPU thread ended.
    Stop,
    /// The deadline passed.
    Deadline,
    /// A pause is wanted and some vCPU has not parked yet: kick them.
    Kick,
}

#[derive(Debug, Default)]
struct State {
    reason: Option<StopReason>,
    running_vcpus: u32,
    /// vCPU threads waiting in [`RunControl::park`].
    parked: u32,
}

/// The shared stop flag and the reason of the first stop.
#[derive(Debug, Default)]
pub struct RunControl {
    stopping: AtomicBool,
    paused: AtomicBool,
    state: Mutex<State>,
    changed: Condvar,
}

/// Marks one running vCPU thread; dropping it (however the thread ends)
/// tells the run control. Taken before the thread is spawned, so a wait
/// that starts before the thread runs still counts it.
#[derive(Debug)]
pub struct VcpuRunning(Arc<RunControl>);

impl Drop for VcpuRunning {
    fn drop(&mut self) {
        let mut state = crate::sync::lock(&self.0.state);
        state.running_vcpus = state.running_vcpus.saturating_sub(1);
        self.0.changed.notify_all();
    }
}

impl RunControl {
    /// Asks every vCPU to stop; only the first reason is kept.
    pub fn request_stop(&self, reason: StopReason) {
        let mut state = crate::sync::lock(&self.state);
        if state.reason.is_none() {
            state.reason = Some(reason);
        }
        self.stopping.store(true, Ordering::Release);
        self.changed.notify_all();
    }

    /// Counts a vCPU thread as running until the guard drops.
    pub fn vcpu_started(self: &Arc<Self>) -> VcpuRunning {
        crate::sync::lock(&self.state).running_vcpus += 1;
        VcpuRunning(self.clone())
    }

    /// Sleeps until a stop is requested, every vCPU thread has ended, or
    /// `deadline` passes. Returns false when the deadline passed first.
    pub fn wait(&self, deadline: Option<Instant>) -> bool {
        loop {
            match self.wait_wake(deadline) {
                Wake::Stop => return true,
                Wake::Deadline => return false,
                // Only the owner of the vCPU threads can kick them; here a
                // pause waits for them to park on their own.
                Wake::Kick => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// Sleeps until a stop, the deadline, or a pause the vCPUs have not
    /// all reached yet.
    pub fn wait_wake(&self, deadline: Option<Instant>) -> Wake {
        let mut state = crate::sync::lock(&self.state);
        loop {
            if state.reason.is_some() || state.running_vcpus == 0 {
                return Wake::Stop;
            }
            if self.paused.load(Ordering::Acquire) && state.parked < state.running_vcpus {
                return Wake::Kick;
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Wake::Deadline;
                    }
                    self.changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Sleeps until every vCPU thread has ended or `timeout` passes;
    /// returns whether they all ended.
    pub fn wait_vcpus_ended(&self, timeout: Duration) -> bool {
        let state = crate::sync::lock(&self.state);
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.running_vcpus > 0)
            .unwrap_or_else(|p| p.into_inner());
        state.running_vcpus == 0
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether the VM is paused (or pausing).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Pauses or resumes the vCPUs. A pause returns once every running
    /// vCPU thread has parked (the main thread kicks them out of KVM_RUN),
    /// false if that took over two seconds.
    pub fn set_paused(&self, paused: bool) -> bool {
        let state = crate::sync::lock(&self.state);
        self.paused.store(paused, Ordering::Release);
        self.changed.notify_all();
        if !paused {
            return true;
        }
        let (state, _) = self
            .changed
            .wait_timeout_while(state, Duration::from_secs(2), |s| {
                s.parked < s.running_vcpus && s.reason.is_none()
            })
            .unwrap_or_else(|p| p.into_inner());
        state.parked >= state.running_vcpus || state.reason.is_some()
    }

    /// A vCPU thread's pause point, between two runs: waits while the VM
    /// is paused (and not stopping).
    pub fn park(&self) {
        if !self.paused.load(Ordering::Acquire) {
            return;
        }
        let mut state = crate::sync::lock(&self.state);
        state.parked += 1;
        self.changed.notify_all();
        while self.paused.load(Ordering::Acquire) && state.reason.is_none() {
            state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.parked -= 1;
    }

    /// The reason of the first stop.
    pub fn reason(&self) -> Option<StopReason> {
        crate::sync::lock(&self.state).reason.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let control = RunControl::default();
        assert!(!control.is_stopping());
        control.request_stop(StopReason::Violation);
        control.request_stop(StopReason::GuestExit(0));
        assert!(control.is_stopping());
        assert_eq!(control.reason(), Some(StopReason::Violation));
    }

    #[test]
    fn wait_wakes_on_stop_and_on_the_last_vcpu() {
        let control = Arc::new(RunControl::default());
        let running = control.vcpu_started();
        let past = Instant::now();
        assert!(
            !control.wait(Some(past)),
            "deadline passed, nothing happened"
        );
        drop(running);
        assert!(control.wait(None), "no vCPU left");
        let _running = control.vcpu_started();
        let c = control.clone();
        let waiter = std::thread::spawn(move || c.wait(None));
        control.request_stop(StopReason::Timeout);
        assert!(waiter.join().unwrap());
    }
}
