//! Per-thread seccomp filters: every thread of a running VM is confined
//! (mode 2), a forbidden system call from a vCPU thread ends the VMM with
//! SIGSYS and a line naming the thread and the call, and `--seccomp log`
//! lets the same call through.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, stderr};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

fn umbra() -> Command {
    Command::new(env!("CARGO_BIN_EXE_umbra"))
}

#[test]
fn a_forbidden_call_from_a_vcpu_thread_ends_the_vmm_with_sigsys() {
    if !kvm_available() {
        return;
    }
    let out = umbra()
        .args(["run", "--timeout", "60"])
        .env("UMBRA_SECCOMP_SELFTEST", "vcpu")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("seccomp: thread 'vcpu0' made system call 63"),
        "{}",
        stderr(&out)
    );
    // Logged, not enforced: the run finishes.
    let out = umbra()
        .args(["run", "--timeout", "60", "--seccomp", "log"])
        .env("UMBRA_SECCOMP_SELFTEST", "vcpu")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn seccomp_modes(args: &[&str]) -> Vec<(String, String)> {
    let mut child = umbra()
        .args([
            "run",
            "--vcpus",
            "2",
            "--rng",
            "--timeout",
            "60",
            "--cmdline",
            "scenario=serial-echo",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let task_dir = format!("/proc/{}/task", child.id());
    // Wait until the vCPU threads and the device thread exist.
    let mut modes = Vec::new();
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        modes = std::fs::read_dir(&task_dir)
            .unwrap()
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm"))
                    .ok()?
                    .trim()
                    .to_string();
                let status = std::fs::read_to_string(t.join("status")).ok()?;
                let mode = status.lines().find(|l| l.starts_with("Seccomp:"))?;
                Some((comm, mode.split_whitespace().nth(1)?.to_string()))
            })
            .filter(|(comm, _)| comm == "umbra" || comm.starts_with("vcpu") || comm == "devices")
            .collect();
        if modes.len() >= 4 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    modes
}

#[test]
fn every_thread_of_a_running_vm_is_confined() {
    if !kvm_available() {
        return;
    }
    let modes = seccomp_modes(&[]);
    let names: Vec<&str> = modes.iter().map(|(c, _)| c.as_str()).collect();
    for name in ["umbra", "vcpu0", "vcpu1", "devices"] {
        assert!(names.contains(&name), "{name} missing from {modes:?}");
    }
    assert!(modes.iter().all(|(_, m)| m == "2"), "{modes:?}");
    let off = seccomp_modes(&["--seccomp", "off"]);
    assert!(off.iter().all(|(_, m)| m == "0"), "{off:?}");
}
