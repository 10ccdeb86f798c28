//! The firmware's scenarios under real KVM, through the `umbra` CLI.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const VIOLATION: i32 = 120;

#[test]
fn hello_prints_banner_and_exits_zero() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("hello");
    let m = dir.join("m.json");
    let out = umbra(&["run", "--metrics-json", m.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("umbra firmware "), "{text}");
    assert!(text.contains("hello: ok"), "{text}");
    let m = metrics(&m);
    assert_eq!(m["exit_code"], 0);
    assert_eq!(m["violation_count"], 0);
    let t = &m["timings"];
    let first = t["to_first_instruction_ms"].as_f64().unwrap();
    let serial = t["to_first_serial_byte_ms"].as_f64().unwrap();
    assert!(first > 0.0 && first <= serial && serial <= t["to_exit_ms"].as_f64().unwrap());
    let roles: Vec<_> = m["memory_regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["role"].as_str().unwrap())
        .collect();
    assert!(roles.contains(&"rom") && roles.contains(&"guard") && roles.contains(&"ram"));
    // The banner went out through the UART: its data port was written.
    assert!(
        m["vcpu_exits"][0]["pio_out_ports"]["1016"]
            .as_u64()
            .unwrap()
            > 20
    );
}

fn violation_scenario(scenario: &str, kind: &str, gpa_check: impl Fn(u64) -> bool, ok_line: &str) {
    let dir = scratch(scenario);
    let m = dir.join("m.json");
    let cmdline = format!("scenario={scenario}");
    let out = umbra(&[
        "run",
        "--cmdline",
        &cmdline,
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(VIOLATION),
        "default policy stops: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("stopped on a memory violation"));
    let m = metrics(&m);
    assert_eq!(m["exit_code"], VIOLATION);
    let v = &m["violations"][0];
    assert_eq!(v["kind"], kind);
    assert_eq!(v["vcpu"], 0);
    assert!(gpa_check(v["gpa"].as_u64().unwrap()), "gpa {}", v["gpa"]);

    let out = umbra(&["run", "--cmdline", &cmdline, "--on-violation", "log"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "log policy continues: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains(ok_line), "{}", stdout(&out));
}

#[test]
fn rom_write_is_refused_and_recorded() {
    if !kvm_available() {
        return;
    }
    violation_scenario(
        "rom-write",
        "rom-write",
        |gpa| (umbra_firmware::layout::ROM_BASE..0x1_0000_0000).contains(&gpa),
        "bytes unchanged: ok",
    );
}

#[test]
fn guard_access_is_refused_and_recorded() {
    if !kvm_available() {
        return;
    }
    // 128 MiB guest: the guard range starts right after RAM.
    violation_scenario(
        "guard",
        "guard",
        |gpa| gpa == 128 << 20,
        "no memory answered: ok",
    );
}

#[test]
fn guard_log_policy_records_both_accesses() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("guard-log");
    let m = dir.join("m.json");
    let out = umbra(&[
        "run",
        "--cmdline",
        "scenario=guard",
        "--on-violation",
        "log",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let m = metrics(&m);
    assert_eq!(m["violation_count"], 2);
    assert_eq!(m["violations"][0]["access"], "read");
    assert_eq!(m["violations"][1]["access"], "write");
    assert_eq!(m["violations"][1]["size"], 4);
}

#[test]
fn smp_sees_every_vcpu() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("smp");
    let m = dir.join("m.json");
    let out = umbra(&[
        "run",
        "--vcpus",
        "4",
        "--cmdline",
        "scenario=smp",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("smp: 4 of 4 vCPUs checked in: ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(metrics(&m)["vcpu_exits"].as_array().unwrap().len(), 4);
}

#[test]
fn memtest_passes_on_a_1_gib_guest() {
    if !kvm_available() {
        return;
    }
    let out = umbra(&[
        "run",
        "--memory",
        "1G",
        "--cmdline",
        "scenario=memtest memtest=2M-1G stride=4096",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    // (1 GiB - 2 MiB) / 4 KiB words were written and read back.
    assert!(
        stdout(&out).contains("memtest: 261632 words verified"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn memtest_outside_ram_is_a_guest_error() {
    if !kvm_available() {
        return;
    }
    let out = umbra(&[
        "run",
        "--memory",
        "64M",
        "--cmdline",
        "scenario=memtest memtest=2M-1G",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("range must lie in RAM"));
}

#[test]
fn unknown_scenario_is_reported_by_the_guest() {
    if !kvm_available() {
        return;
    }
    let out = umbra(&["run", "--cmdline", "scenario=nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("unknown scenario 'nope'"));
}

#[test]
fn serial_goes_to_a_file_and_thp_backing_boots() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("serial");
    let console = dir.join("console.log");
    let out = umbra(&[
        "run",
        "--serial",
        console.to_str().unwrap(),
        "--memory-backing",
        "thp",
        "--ksm",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(std::fs::read_to_string(&console)
        .unwrap()
        .contains("hello: ok"));
}

/// The interrupt path end to end: the firmware programs the userspace
/// IOAPIC, enables the UART's THR-empty interrupt and takes it on its
/// x2APIC through KVM's split irqchip (irqfd on GSI 4, MSI route).
fn serial_irq_on(platform: &str) {
    if !kvm_available() {
        return;
    }
    let dir = scratch(&format!("serial-irq-{platform}"));
    let m = dir.join("m.json");
    let mut args = vec![
        "run",
        "--platform",
        platform,
        "--cmdline",
        "scenario=serial-irq",
    ];
    let keys = model_keys();
    if platform == "snp-model" {
        args.extend(["--model-keys", keys.to_str().unwrap()]);
    }
    args.extend(["--metrics-json", m.to_str().unwrap()]);
    let out = umbra(&args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("serial-irq: interrupt vector 0x30 received through the IOAPIC"),
        "{text}"
    );
    let m = metrics(&m);
    assert_eq!(m["platform"], platform.replace("none", "kvm"));
    // The IOAPIC was programmed through MMIO exits to the userspace model.
    assert!(m["vcpu_exits"][0]["mmio_write"].as_u64().unwrap() >= 2);
    assert_eq!(m["violation_count"], 0);
}

#[test]
fn serial_irq_is_delivered_on_plain_kvm() {
    serial_irq_on("none");
}

#[test]
fn serial_irq_is_delivered_on_the_snp_model() {
    serial_irq_on("snp-model");
}

/// Runs `umbra` with `input` on a pipe as its stdin (closed after the
/// write, so the VMM sees EOF), with the same safety timeout as
/// [`common::umbra`].
fn umbra_with_input(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args(args)
        .args(["--timeout", "120"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn umbra");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input).expect("write umbra's stdin");
    drop(stdin);
    child.wait_with_output().expect("wait for umbra")
}

/// Console input end to end: the VMM feeds a piped stdin into the UART's
/// receive FIFO and the firmware reads the line back out of RBR.
#[test]
fn serial_input_reaches_the_guest() {
    if !kvm_available() {
        return;
    }
    let out = umbra_with_input(
        &["run", "--cmdline", "scenario=serial-echo"],
        b"hello umbra\n",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(
        text.contains("serial-echo: got 'hello umbra': ok"),
        "{text}"
    );
}
