//! virtio-balloon: on plain KVM the pages a guest inflates go back to the
//! host (reclaimed_bytes, and RSS read through the control API); on the
//! SNP model only shared pages are reclaimed and a private page in an
//! inflate request is refused and counted.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, metrics, scratch, stderr, umbra};
use std::io::BufRead;
use std::process::{Command, Stdio};
use umbra_attestation::http::{read_message, write_message};

/// RSS through the API of a VM that touched 256 MiB and inflated `size`.
fn rss_after_inflating(size: &str, dir: &std::path::Path) -> u64 {
    let socket = dir.join(format!("api-{size}.sock"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_umbra"))
        .args([
            "run",
            "--memory",
            "512M",
            "--timeout",
            "60",
            "--balloon",
            &format!("size={size}"),
        ])
        .args(["--cmdline", "scenario=balloon hold=1", "--api-socket"])
        .arg(&socket)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .find(|l| l.starts_with("balloon:"))
        .map(|l| line = l)
        .unwrap();
    assert!(line.ends_with(": ok"), "{line}");
    let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    write_message(
        &mut s,
        "GET /metrics HTTP/1.1",
        &[("Host", "localhost")],
        b"",
    )
    .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&read_message(&mut s).unwrap().body).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    m["memory"]["rss_bytes"].as_u64().unwrap()
}

#[test]
fn inflated_pages_go_back_to_the_host() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("balloon");
    let m = dir.join("m.json");
    let out = umbra(&[
        "run",
        "--memory",
        "512M",
        "--balloon",
        "size=192M",
        "--cmdline",
        "scenario=balloon",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let balloon = &metrics(&m)["balloon"];
    assert_eq!(balloon["target_mib"], 192);
    assert_eq!(balloon["actual_mib"], 192);
    assert!(
        balloon["reclaimed_bytes"].as_u64().unwrap() >= 150 << 20,
        "{balloon}"
    );
    // The RSS of the VM after it touched 256 MiB: with no balloon target,
    // and after inflating 192 MiB.
    let full = rss_after_inflating("0M", &dir);
    let ballooned = rss_after_inflating("192M", &dir);
    assert!(
        full >= ballooned + (150 << 20),
        "RSS {full} without, {ballooned} with the balloon"
    );
}

#[test]
fn a_confidential_guest_gives_back_shared_pages_only() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("balloon-snp");
    let m = dir.join("m.json");
    let keys = common::model_keys();
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--model-keys",
        keys.to_str().unwrap(),
        "--balloon",
        "size=1M",
        "--cmdline",
        "scenario=balloon",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let balloon = &metrics(&m)["balloon"];
    assert_eq!(balloon["reclaimed_bytes"], 8 * 4096, "{balloon}");
    assert_eq!(balloon["refused_private_pages"], 1, "{balloon}");
    assert_eq!(metrics(&m)["devices"][0]["dma_refusals"], 1);
}
