//! Direct Linux boot with a real Debian bzImage. A kernel cannot finish
//! booting here (guest code is emulated), so the test checks that it starts
//! executing: its decompressor parses our command line and programs the
//! UART named by `earlyprintk`, and does not without it.
//!
//! The kernel comes from UMBRA_TEST_KERNEL (.ci/run downloads Debian's
//! linux-image package); it is a peer input under the skip/require rule.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

fn uart_register_writes(kernel: &str, cmdline: &str) -> std::collections::BTreeMap<String, u64> {
    let dir = scratch("linux");
    let m = dir.join("m.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args([
            "run",
            "--kernel",
            kernel,
            "--memory",
            "256M",
            "--cmdline",
            cmdline,
            "--timeout",
            // The UART is programmed about 2 s in; leave room for a loaded
            // CI machine (guest code is emulated).
            "12",
        ])
        .args(["--metrics-json", m.to_str().unwrap()])
        .output()
        .unwrap();
    // The kernel is still decompressing when the timeout stops it.
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = metrics(&m);
    let ports = m["vcpu_exits"][0]["pio_out_ports"]
        .as_object()
        .unwrap()
        .clone();
    ports
        .into_iter()
        .filter(|(p, _)| (0x3F8..0x400).contains(&p.parse::<u16>().unwrap()))
        .map(|(p, n)| (p, n.as_u64().unwrap()))
        .collect()
}

#[test]
fn debian_kernel_starts_and_reads_our_command_line() {
    if !kvm_available() {
        return;
    }
    let kernel = std::env::var("UMBRA_TEST_KERNEL").unwrap_or_default();
    if !peer_available(
        "a Debian bzImage in UMBRA_TEST_KERNEL",
        std::path::Path::new(&kernel).is_file(),
    ) {
        return;
    }
    let with = uart_register_writes(&kernel, "console=ttyS0 earlyprintk=serial,ttyS0,115200");
    // early_serial_init: LCR (0x3FB) for 8N1 and DLAB, the divisor latch
    // (0x3F8/0x3F9), FCR (0x3FA) and MCR (0x3FC).
    for port in ["1019", "1016", "1017", "1018", "1020"] {
        assert!(
            with.contains_key(port),
            "UART register {port} not programmed: {with:?}"
        );
    }
    let without = uart_register_writes(&kernel, "console=ttyS0");
    assert!(
        without.is_empty(),
        "no earlyprintk, no early UART setup: {without:?}"
    );
}
