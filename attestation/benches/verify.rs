//! Report verification throughput against OpenSSL's raw ECDSA P-384 verify
//! rate, side by side in one run.
//!
//! Ours: parse the 1184-byte report from bytes, then check its signature and
//! the chip/TCB bindings against a chain verified once and cached (what a
//! verifier serving many reports from one platform does). Peer: `openssl
//! speed -seconds N ecdsap384`, whose verify/s column is a bare ECDSA verify
//! of a pre-hashed digest.
//!
//! `openssl speed` divides by *user CPU time* unless given `-elapsed`, so on
//! a shared machine its figure does not drop when other work steals the CPU
//! while a wall-clock figure does. Both are measured here and compared like
//! with like: our user-CPU rate against plain `openssl speed`, and our
//! wall-clock rate against `openssl speed -elapsed`. Target: ratio >= 0.80.
//!
//! Run: `UMBRA_VECTORS=../shared/vectors cargo bench -p umbra-attestation --bench verify`
//! (or bench/verify.sh). BENCH_SECONDS sets the duration of each side.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use umbra_attestation::chain;
use umbra_attestation::report::AttestationReport;
use umbra_attestation::verify::{self, Certificates, Options, Status};

/// This process's user CPU time in seconds, from /proc/self/stat (utime,
/// field 14, in USER_HZ = 100 ticks per second on Linux).
fn user_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let utime: f64 = after
        .split_whitespace()
        .nth(11)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0);
    utime / 100.0
}

/// (wall-clock rate, user-CPU rate) of `f`.
fn rate(seconds: f64, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let cpu0 = user_cpu_seconds();
    let budget = Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..20 {
            f();
        }
        n += 20;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (user_cpu_seconds() - cpu0).max(0.01);
    (n as f64 / wall, n as f64 / cpu)
}

/// The verify/s column of `openssl speed ecdsap384` (with `-elapsed`: wall clock).
fn openssl_speed(seconds: u64, elapsed: bool) -> Option<f64> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-seconds", &seconds.to_string()]);
    if elapsed {
        cmd.arg("-elapsed");
    }
    let out = cmd.arg("ecdsap384").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("nistp384"))?;
    line.split_whitespace().last()?.parse().ok()
}

fn main() {
    let Some(dir) = std::env::var_os("UMBRA_VECTORS").map(PathBuf::from) else {
        eprintln!("skipped: UMBRA_VECTORS not set");
        return;
    };
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let bytes =
        read("ms-tee-attestation-verification/tests_test_data/milan_attestation_report.bin");
    let vcek = read("ms-tee-attestation-verification/tests_test_data/milan_vcek.pem");
    let report = AttestationReport::from_bytes(&bytes).expect("report parses");
    let certs = Certificates {
        vek: chain::load_cert(&vcek, "vcek").expect("vcek"),
        vek_kind: None,
        intermediate: None,
        ark: None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let opts = Options {
        at_unix: now,
        ..Default::default()
    };

    // The chain: checked once per run (reported for scale).
    let t = Instant::now();
    let (_, chain) = verify::verify_chain(&report, &certs, &opts);
    let chain = chain.expect("chain verifies");
    let chain_ms = t.elapsed().as_secs_f64() * 1e3;

    // Three interleaved rounds, best of each.
    let best = |a: (f64, f64), b: (f64, f64)| (a.0.max(b.0), a.1.max(b.1));
    let (mut ours, mut sig_only) = ((0f64, 0f64), (0f64, 0f64));
    let (mut peer_cpu, mut peer_wall) = (None::<f64>, None::<f64>);
    let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    for _ in 0..3 {
        ours = best(
            ours,
            rate(seconds as f64, || {
                let r = AttestationReport::from_bytes(black_box(&bytes)).expect("parses");
                let checks = verify::verify_report(&r, &chain);
                assert!(checks.iter().all(|c| c.status != Status::Fail));
                black_box(checks);
            }),
        );
        sig_only = best(
            sig_only,
            rate(seconds as f64 / 2.0, || {
                verify::verify_signature(black_box(&report), &chain.key).expect("verifies");
            }),
        );
        peer_cpu = max(peer_cpu, openssl_speed(seconds, false));
        peer_wall = max(peer_wall, openssl_speed(seconds, true));
    }

    println!("chain (ARK->ASK->VCEK, pinning, validity) once: {chain_ms:.2} ms");
    println!(
        "best of 3 interleaved rounds, verifies/s      {:>12} {:>12}",
        "user-CPU", "wall-clock"
    );
    println!(
        "umbra: parse + signature + chip/TCB binding  {:>12.1} {:>12.1}",
        ours.1, ours.0
    );
    println!(
        "umbra: signature only (SHA-384 + ECDSA)      {:>12.1} {:>12.1}",
        sig_only.1, sig_only.0
    );
    match (peer_cpu, peer_wall) {
        (Some(c), Some(w)) => {
            println!("openssl speed ecdsap384 (/ -elapsed)         {c:>12.1} {w:>12.1}");
            println!(
                "ratio umbra/openssl                          {:>12.2} {:>12.2}   (target >= 0.80)",
                ours.1 / c,
                ours.0 / w
            );
        }
        _ => println!("openssl speed ecdsap384: not available (is the openssl command installed?)"),
    }
}
