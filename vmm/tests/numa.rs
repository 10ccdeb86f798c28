//! `--numa-node N`: guest memory bound to the node (numa_maps shows
//! `bind:N`), the vCPU threads pinned to its CPUs, the live per-node page
//! counts in the control API, and a node the host lacks as one error line.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, stderr, umbra};
use std::process::{Command, Stdio};

#[test]
fn guest_memory_and_vcpus_follow_the_node() {
    if !kvm_available() {
        return;
    }
    let cpus = std::fs::read_to_string("/sys/devices/system/node/node0/cpulist").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args([
            "run",
            "--numa-node",
            "0",
            "--memory",
            "256M",
            "--timeout",
            "30",
        ])
        .args(["--cmdline", "scenario=serial-echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut vcpu_cpus = None;
    let mut bound = 0;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(25));
        bound = bound_bytes(pid);
        vcpu_cpus = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .find_map(|t| {
                let t = t.ok()?.path();
                (std::fs::read_to_string(t.join("comm")).ok()?.trim() == "vcpu0").then(|| {
                    let status = std::fs::read_to_string(t.join("status")).unwrap();
                    status
                        .lines()
                        .find(|l| l.starts_with("Cpus_allowed_list:"))
                        .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
                })?
            });
        // RAM and the ROM are bound one after the other: wait for both.
        if bound >= GUEST_BYTES && vcpu_cpus.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    // RAM below 3 GiB and the ROM: each mapping carries the policy (the
    // kernel may merge the two mappings into one, so bytes are counted).
    assert!(
        bound >= GUEST_BYTES,
        "{bound} bytes bound to node 0, fewer than RAM and ROM"
    );
    assert_eq!(vcpu_cpus.as_deref(), Some(cpus.trim()));
}

/// Guest RAM (256 MiB) and the ROM.
const GUEST_BYTES: u64 = (256 << 20) + umbra_firmware::layout::ROM_SIZE;

/// Bytes of the mappings of `pid` whose memory policy is `bind:0`.
fn bound_bytes(pid: u32) -> u64 {
    let numa = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).unwrap_or_default();
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    numa.lines()
        .filter(|l| l.contains("bind:0"))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|start| {
            maps.lines().find_map(|m| {
                let (range, _) = m.split_once(' ')?;
                let (from, to) = range.split_once('-')?;
                (from == start).then(|| {
                    u64::from_str_radix(to, 16).unwrap_or(0)
                        - u64::from_str_radix(from, 16).unwrap_or(0)
                })
            })
        })
        .sum()
}

#[test]
fn a_node_the_host_lacks_is_one_error_line() {
    let out = umbra(&["run", "--numa-node", "4000"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("NUMA node 4000 does not exist on this host"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
}
