//! Stress: 200 VMs booted and stopped one after another in one process,
//! through the library, leak no file descriptor, no thread and no memory;
//! and `scenario=smp` with 16 vCPUs on this machine's 2 cores completes.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, stdout, umbra};
use std::time::Instant;
use umbra_vmm::config::{SerialOutput, VmConfig};

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Resident set in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

#[test]
fn two_hundred_vms_leak_nothing() {
    if !kvm_available() {
        return;
    }
    // Its own thread: the run confines the calling thread with the main
    // thread's seccomp filter.
    std::thread::spawn(|| {
        let mut config = VmConfig::embedded(32 << 20, 2, "scenario=hello");
        config.serial = SerialOutput::Null;
        let run = |config: &VmConfig| {
            let outcome = umbra_vmm::run::run(config, Instant::now()).unwrap();
            assert_eq!(outcome.exit_code, 0);
        };
        // Warm up: lazily created statics, allocator arenas, signal handlers.
        for _ in 0..10 {
            run(&config);
        }
        let (fd0, th0, rss0) = (fds(), threads(), rss_kib());
        for _ in 0..200 {
            run(&config);
        }
        let (fd1, th1, rss1) = (fds(), threads(), rss_kib());
        eprintln!("fds {fd0} -> {fd1}, threads {th0} -> {th1}, RSS {rss0} -> {rss1} KiB");
        assert_eq!(fd1, fd0, "file descriptors leaked");
        assert_eq!(th1, th0, "threads leaked");
        // 200 runs of a 32 MiB guest: a leak of one guest's RAM or even a
        // page per run would show; allocator noise stays well below.
        assert!(rss1 <= rss0 + 2048, "RSS grew from {rss0} to {rss1} KiB");
    })
    .join()
    .unwrap();
}

#[test]
fn smp_with_16_vcpus_completes() {
    if !kvm_available() {
        return;
    }
    let out = umbra(&["run", "--vcpus", "16", "--cmdline", "scenario=smp"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("smp: 16 of 16 vCPUs checked in: ok"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_million_refusals_leave_a_bounded_log() {
    if !kvm_available() {
        return;
    }
    let dir = common::scratch("flood");
    let m = dir.join("m.json");
    let out = umbra(&[
        "run",
        "--on-violation",
        "log",
        "--cmdline",
        "scenario=flood count=1000000",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    assert!(stdout(&out).contains("flood: 1000000 writes to ROM, every one refused: ok"));
    assert_eq!(common::metrics(&m)["violation_count"], 1_000_000);
    // 16 lines, then one per power of two, then the total: a fixed bound
    // however long the guest keeps going.
    let log = common::stderr(&out);
    assert!(log.lines().count() <= 40, "{} lines", log.lines().count());
    assert!(log.len() < 8192, "{} bytes of log", log.len());
    assert!(log.contains("1000000 violations in all"), "{log}");
}
