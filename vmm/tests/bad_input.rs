//! Bad user input: one clear error line, a non-zero exit, never a panic.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const VMM_ERROR: i32 = 125;

/// Asserts a single-line error containing `needle` and exit code `code`.
fn refused(args: &[&str], code: i32, needle: &str) {
    let out = umbra(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "args {args:?}: {err}");
    assert!(
        err.contains(needle),
        "args {args:?}: expected '{needle}' in: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

#[test]
fn missing_and_unreadable_images() {
    refused(
        &["run", "--firmware", "/nonexistent/OVMF.fd"],
        VMM_ERROR,
        "cannot read /nonexistent/OVMF.fd",
    );
    refused(
        &["run", "--kernel", "/nonexistent/bzImage"],
        VMM_ERROR,
        "cannot read /nonexistent/bzImage",
    );
    let dir = scratch("bad-images");
    let empty = dir.join("empty.fd");
    std::fs::write(&empty, b"").unwrap();
    refused(
        &["run", "--firmware", empty.to_str().unwrap()],
        VMM_ERROR,
        "is empty",
    );
    refused(
        &["run", "--firmware", dir.to_str().unwrap()],
        VMM_ERROR,
        "cannot read",
    );
}

#[test]
fn image_larger_than_its_window() {
    let dir = scratch("big-image");
    let big = dir.join("big.fd");
    std::fs::write(&big, vec![0u8; 16 << 20]).unwrap();
    refused(
        &["run", "--firmware", big.to_str().unwrap()],
        VMM_ERROR,
        "does not fit the 8 MiB ROM window",
    );
    let odd = dir.join("odd.fd");
    std::fs::write(&odd, vec![0u8; 5000]).unwrap();
    refused(
        &["run", "--firmware", odd.to_str().unwrap()],
        VMM_ERROR,
        "not a multiple of 4 KiB",
    );
}

#[test]
fn zero_absurd_and_malformed_memory_sizes() {
    refused(&["run", "--memory", "0"], VMM_ERROR, "out of range");
    refused(&["run", "--memory", "100T"], VMM_ERROR, "out of range");
    refused(&["run", "--memory", "99999999999999T"], 2, "invalid size");
    refused(&["run", "--memory", "lots"], 2, "invalid size");
}

#[test]
fn too_many_vcpus() {
    refused(&["run", "--vcpus", "0"], VMM_ERROR, "at least one vCPU");
    refused(
        &["run", "--vcpus", "65"],
        VMM_ERROR,
        "at most 64 are supported (umbra firmware)",
    );
    if !kvm_available() {
        return;
    }
    let dir = scratch("many-vcpus");
    let fw = dir.join("fw.fd");
    std::fs::write(&fw, vec![0xF4u8; 64 << 10]).unwrap();
    refused(
        &[
            "run",
            "--firmware",
            fw.to_str().unwrap(),
            "--vcpus",
            "100000",
        ],
        VMM_ERROR,
        "(KVM on this host)",
    );
}

#[test]
fn platforms_not_available_here_say_why() {
    let out = umbra(&["run", "--platform", "snp"]);
    assert_eq!(out.status.code(), Some(VMM_ERROR));
    let err = stderr(&out);
    assert!(
        err.contains("platform 'snp' is not available on this host: "),
        "{err}"
    );
    refused(
        &["run", "--platform", "sev-es"],
        VMM_ERROR,
        "'sev-es' is not available on this host",
    );
    refused(
        &["run", "--platform", "snp", "--ksm"],
        VMM_ERROR,
        "--ksm is refused for confidential guests",
    );
}

#[test]
fn hugetlb_without_a_pool_is_a_clear_error() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let free: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    if free >= 64 {
        eprintln!("skipped: this host has a huge-page pool, so the error path cannot be reached");
        return;
    }
    refused(
        &["run", "--memory-backing", "hugetlb"],
        VMM_ERROR,
        "free huge pages of 2 MiB",
    );
}

#[test]
fn overlong_cmdline_and_bad_timeout() {
    let long = "x".repeat(5000);
    refused(
        &["run", "--cmdline", &long],
        VMM_ERROR,
        "command line of 5000 bytes exceeds",
    );
    refused(
        &["run", "--timeout=0"],
        VMM_ERROR,
        "must be a positive number",
    );
}
