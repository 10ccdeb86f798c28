//! Refused guest memory accesses: recorded, logged and handled per policy.

use crate::config::ViolationPolicy;
use crate::memory::{MemoryMap, RegionRole};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Kind of access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// Why the access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViolationKind {
    /// A write to read-only memory.
    RomWrite,
    /// Any access to a guard range.
    Guard,
    /// An access to an address nothing backs.
    Unbacked,
    /// An access to the MMIO window where no device answers.
    UnclaimedMmio,
}

/// One refused access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Guest-physical address.
    pub gpa: u64,
    /// Read or write.
    pub access: Access,
    /// Access size in bytes.
    pub size: usize,
    /// Why it was refused.
    pub kind: ViolationKind,
    /// vCPU that made it.
    pub vcpu: u32,
    /// Name of the region it hit, if any.
    pub region: Option<&'static str>,
}

/// Most violations kept for the metrics; the count keeps going.
const MAX_RECORDED: usize = 1024;

/// The violation log of one run.
pub struct ViolationLog {
    policy: ViolationPolicy,
    count: AtomicU64,
    recorded: Mutex<Vec<Violation>>,
}

/// Events logged one by one before the log thins out.
const LOGGED_IN_FULL: u64 = 16;

/// Whether event number `n` (from 1) gets a log line: the rate limit for
/// every log line a guest can trigger at will. The first
/// [`LOGGED_IN_FULL`], then the 32nd, 64th, 128th...: a guest that makes a
/// billion of them writes about 45 lines, each saying how many there were.
pub(crate) fn should_log(n: u64) -> bool {
    n <= LOGGED_IN_FULL || n.is_power_of_two()
}

/// How many events went unlogged before event `n` (which is logged).
pub(crate) fn suppressed_before(n: u64) -> u64 {
    if n <= LOGGED_IN_FULL + 1 {
        0
    } else {
        n - (n / 2).max(LOGGED_IN_FULL) - 1
    }
}

impl ViolationLog {
    /// An empty log applying `policy`.
    pub fn new(policy: ViolationPolicy) -> Self {
        ViolationLog {
            policy,
            count: AtomicU64::new(0),
            recorded: Mutex::new(Vec::new()),
        }
    }

    /// Classifies an access that exited to the VMM as MMIO. Returns `None`
    /// when the access is legitimate device traffic.
    pub fn classify(
        map: &MemoryMap,
        gpa: u64,
        access: Access,
    ) -> Option<(ViolationKind, Option<&'static str>)> {
        match map.find(gpa) {
            Some(r) if r.role == RegionRole::Rom && access == Access::Write => {
                Some((ViolationKind::RomWrite, Some(r.name)))
            }
            Some(r) if r.role == RegionRole::Guard => Some((ViolationKind::Guard, Some(r.name))),
            Some(r) if r.role == RegionRole::Mmio => {
                Some((ViolationKind::UnclaimedMmio, Some(r.name)))
            }
            Some(r) if r.role == RegionRole::Ram || r.role == RegionRole::Rom => None,
            _ => Some((ViolationKind::Unbacked, None)),
        }
    }

    /// Records and logs a violation; returns true when the VM must stop.
    /// A guest controls how many there are, so the log is bounded
    /// ([`should_log`]); every line says how many went unlogged before it
    /// (all are counted).
    pub fn record(&self, violation: Violation) -> bool {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if !should_log(n) {
            let mut recorded = crate::sync::lock(&self.recorded);
            if recorded.len() < MAX_RECORDED {
                recorded.push(violation);
            }
            return self.policy == ViolationPolicy::Stop;
        }
        let region = violation
            .region
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let suppressed = match suppressed_before(n) {
            0 => String::new(),
            k => format!(" ({k} since the last line not logged)"),
        };
        log::warn!(
            "violation #{n}: {:?} {} of {} bytes at {:#x}{} by vCPU {}{suppressed}",
            violation.kind,
            match violation.access {
                Access::Read => "read",
                Access::Write => "write",
            },
            violation.size,
            violation.gpa,
            region,
            violation.vcpu
        );
        let mut recorded = crate::sync::lock(&self.recorded);
        if recorded.len() < MAX_RECORDED {
            recorded.push(violation);
        }
        self.policy == ViolationPolicy::Stop
    }

    /// Number of violations seen.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The recorded violations (the first [`MAX_RECORDED`]).
    pub fn recorded(&self) -> Vec<Violation> {
        crate::sync::lock(&self.recorded).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_violations_is_logged_sparsely() {
        let logged = (1..=1_000_000u64).filter(|n| should_log(*n)).count();
        // 1-16, then 32, 64, ... 524288.
        assert_eq!(logged, 16 + 15);
        assert!(should_log(1) && should_log(16) && !should_log(17) && should_log(1024));
        assert_eq!(suppressed_before(16), 0);
        assert_eq!(suppressed_before(32), 15);
        assert_eq!(suppressed_before(64), 31);
    }

    #[test]
    fn classifies_by_region_role() {
        let map = MemoryMap::new(64 << 20, 64 << 10).unwrap();
        assert_eq!(
            ViolationLog::classify(&map, 0xFFFF_0010, Access::Write),
            Some((ViolationKind::RomWrite, Some("rom")))
        );
        assert_eq!(
            ViolationLog::classify(&map, 0xFFFF_0010, Access::Read),
            None
        );
        assert_eq!(
            ViolationLog::classify(&map, 64 << 20, Access::Read),
            Some((ViolationKind::Guard, Some("guard-after-ram")))
        );
        assert_eq!(
            ViolationLog::classify(&map, 0x8000_0000, Access::Read),
            Some((ViolationKind::Unbacked, None))
        );
        assert_eq!(
            ViolationLog::classify(&map, 0xD000_0000, Access::Write),
            Some((ViolationKind::UnclaimedMmio, Some("mmio")))
        );
    }

    #[test]
    fn policy_decides_stop_and_log_counts() {
        let v = Violation {
            gpa: 1,
            access: Access::Read,
            size: 4,
            kind: ViolationKind::Guard,
            vcpu: 0,
            region: None,
        };
        let log = ViolationLog::new(ViolationPolicy::Log);
        assert!(!log.record(v.clone()));
        assert!(!log.record(v.clone()));
        assert_eq!(log.count(), 2);
        assert_eq!(log.recorded().len(), 2);
        assert!(ViolationLog::new(ViolationPolicy::Stop).record(v));
    }
}
