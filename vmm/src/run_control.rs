//! Stop requests shared by the vCPU threads and devices: the first reason
//! to stop wins, and every vCPU loop checks the flag between exits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

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
}

/// The shared stop flag and the reason of the first stop.
#[derive(Default)]
pub struct RunControl {
    stopping: AtomicBool,
    reason: Mutex<Option<StopReason>>,
}

impl RunControl {
    /// Asks every vCPU to stop; only the first reason is kept.
    pub fn request_stop(&self, reason: StopReason) {
        let mut slot = crate::devices::lock(&self.reason);
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The reason of the first stop.
    pub fn reason(&self) -> Option<StopReason> {
        crate::devices::lock(&self.reason).clone()
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
}
