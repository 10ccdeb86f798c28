//! Report verification throughput against OpenSSL's raw ECDSA P-384 verify
//! rate, side by side in one run.
//!
//! Ours: parse the 1184-byte report from bytes, then check its signature and
//! the chip/TCB bindings against a chain verified once and cached (what a
//! verifier serving many reports from one platform does). Peer: `openssl
//! speed -seconds N ecdsap384`, whose verify/s column is a bare ECDSA verify
//! of a pre-hashed digest. The ratio printed is ours / openssl's; the target
//! is at least 0.80.
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

fn rate(seconds: f64, mut f: impl FnMut()) -> f64 {
    // Warm up, then count iterations for the given wall time.
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let budget = Duration::from_secs_f64(seconds);
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..20 {
            f();
        }
        n += 20;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Parses the verify/s column of `openssl speed ecdsap384`.
fn openssl_speed(seconds: u64) -> Option<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &seconds.to_string(), "ecdsap384"])
        .output()
        .ok()?;
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

    // Three interleaved rounds, best of each: the build machines are shared,
    // and interleaving keeps a burst of someone else's load from landing on
    // one side only.
    let d20 = [7u8; 48];
    let key20 = openssl::ec::EcKey::generate(chain.key.group()).expect("key");
    let sig20 = openssl::ecdsa::EcdsaSig::sign(&d20, &key20).expect("sign");
    let (mut ours, mut sig_only, mut raw20, mut peer) = (0f64, 0f64, 0f64, None::<f64>);
    for _ in 0..3 {
        ours = ours.max(rate(seconds as f64, || {
            let r = AttestationReport::from_bytes(black_box(&bytes)).expect("parses");
            let checks = verify::verify_report(&r, &chain);
            assert!(checks.iter().all(|c| c.status != Status::Fail));
            black_box(checks);
        }));
        sig_only = sig_only.max(rate(seconds as f64 / 2.0, || {
            verify::verify_signature(black_box(&report), &chain.key).expect("verifies");
        }));
        raw20 = raw20.max(rate(seconds as f64 / 2.0, || {
            assert!(sig20.verify(black_box(&d20), &key20).unwrap_or(false));
        }));
        if let Some(p) = openssl_speed(seconds) {
            peer = Some(peer.map_or(p, |q: f64| q.max(p)));
        }
    }

    println!("chain (ARK->ASK->VCEK, pinning, validity) once: {chain_ms:.2} ms");
    println!("{:<56} {:>10}", "best of 3 rounds", "verifies/s");
    println!(
        "{:<56} {:>10.1}",
        "umbra: parse + signature + chip/TCB binding", ours
    );
    println!(
        "{:<56} {:>10.1}",
        "umbra: signature only (SHA-384 + ECDSA P-384)", sig_only
    );
    println!(
        "{:<56} {:>10.1}",
        "same libcrypto, bare ECDSA verify (no parse, no hash)", raw20
    );
    match peer {
        Some(p) => {
            println!(
                "{:<56} {:>10.1}",
                "openssl speed ecdsap384 (verify/s column)", p
            );
            println!(
                "ratio umbra/openssl speed: {:.2} (target >= 0.80)",
                ours / p
            );
        }
        None => {
            println!("openssl speed ecdsap384: not available (is the openssl command installed?)")
        }
    }
}
