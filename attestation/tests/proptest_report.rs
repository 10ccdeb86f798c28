//! Property tests and fuzzing of the report and certificate parsers.
//!
//! - Any single-bit change in the signed part (bytes 0..0x2A0) of a valid
//!   report fails verification: every bit of one report exhaustively, and a
//!   proptest over bits of every positive vector.
//! - Random and mutated inputs never panic the report parser, the DER
//!   reader, the certificate loader or the extension parser; the number of
//!   inputs run is printed (`cargo test -- --nocapture` shows it).

mod common;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use umbra_attestation::chain::{self, VekExtensions};
use umbra_attestation::report::{AttestationReport, REPORT_SIZE, SIGNED_LEN};
use umbra_attestation::verify::{self, Certificates, Options, Status, VerifiedChain};
use umbra_attestation::{der, time};

fn vectors() -> Option<PathBuf> {
    common::vectors()
}

/// (report bytes, verified chain) for positive vectors with a DER/PEM VEK.
fn positive_pairs(dir: &std::path::Path) -> Vec<(Vec<u8>, VerifiedChain)> {
    let pairs = [
        (
            "milan-gosevguest/attestation.bin",
            "milan-gosevguest/vcek.der",
        ),
        (
            "milan-trustee-vcek/test-report.bin",
            "milan-trustee-vcek/test-vcek.der",
        ),
        (
            "milan-trustee-vlek/test-vlek-report.bin",
            "milan-trustee-vlek/test-vlek.der",
        ),
        (
            "genoa-trustee-e2e/derived-report.bin",
            "genoa-trustee-e2e/derived-vcek.der",
        ),
        (
            "ms-tee-attestation-verification/tests_test_data/turin_attestation_report.bin",
            "ms-tee-attestation-verification/tests_test_data/turin_vcek.pem",
        ),
        (
            "azure-snp-vtpm/derived/v2_snp_report.bin",
            "azure-snp-vtpm/derived/v2_vcek.der",
        ),
    ];
    pairs
        .iter()
        .map(|(r, v)| {
            let bytes = std::fs::read(dir.join(r)).expect("report");
            let report = AttestationReport::from_bytes(&bytes).expect("parses");
            let certs = Certificates {
                vek: chain::load_cert(&std::fs::read(dir.join(v)).expect("vek"), v).expect("vek"),
                vek_kind: None,
                intermediate: None,
                ark: None,
            };
            // The AWS VLEK expired in 2025; judge it inside its validity.
            let at = if v.contains("vlek") {
                "2025-06-01T00:00:00Z"
            } else {
                "2026-11-01T00:00:00Z"
            };
            let opts = Options {
                at_unix: time::parse_rfc3339(at).expect("t"),
                ..Default::default()
            };
            let (checks, chain) = verify::verify_chain(&report, &certs, &opts);
            let chain = chain.unwrap_or_else(|| panic!("{r}: chain verifies: {checks:#?}"));
            assert!(verify::verify_report(&report, &chain)
                .iter()
                .all(|c| c.status != Status::Fail));
            (bytes, chain)
        })
        .collect()
}

/// True when the mutated bytes are rejected: a parse error, or a failed
/// signature check.
fn rejected(bytes: &[u8], chain: &VerifiedChain) -> bool {
    match AttestationReport::from_bytes(bytes) {
        Err(_) => true,
        Ok(r) => verify::verify_signature(&r, &chain.key).is_err(),
    }
}

#[test]
fn every_single_bit_flip_of_one_report_is_rejected() {
    let Some(dir) = vectors() else { return };
    let pairs = positive_pairs(&dir);
    let (bytes, chain) = &pairs[0];
    let mut parse_rejects = 0;
    for bit in 0..SIGNED_LEN * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        assert!(rejected(&b, chain), "bit {bit} flip accepted");
        if AttestationReport::from_bytes(&b).is_err() {
            parse_rejects += 1;
        }
    }
    println!(
        "{} single-bit flips rejected ({parse_rejects} by the parser, the rest by the signature)",
        SIGNED_LEN * 8
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_single_bit_flip_in_the_signed_part_fails(pick in 0usize..6, bit in 0usize..SIGNED_LEN * 8) {
        let Some(dir) = vectors() else { return Ok(()) };
        thread_local! {
            static PAIRS: std::cell::OnceCell<Vec<(Vec<u8>, VerifiedChain)>> = const { std::cell::OnceCell::new() };
        }
        let rejected_flip = PAIRS.with(|p| {
            let pairs = p.get_or_init(|| positive_pairs(&dir));
            let (bytes, chain) = &pairs[pick % pairs.len()];
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            rejected(&b, chain)
        });
        prop_assert!(rejected_flip, "report {pick} bit {bit}");
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Mutations of a seed: byte overwrites, truncation and extension.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (
        proptest::collection::vec((0..len.max(1), any::<u8>()), 0..8),
        0..=len + 64,
        any::<bool>(),
    )
        .prop_map(move |(edits, new_len, resize)| {
            let mut b = seed.clone();
            for (i, v) in edits {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                }
            }
            if resize {
                b.resize(new_len, 0xA5);
            }
            b
        })
}

#[test]
fn fuzz_report_parser() {
    let count = std::cell::Cell::new(0u64);
    let mut r = runner(20_000);
    r.run(
        &proptest::collection::vec(any::<u8>(), 0..2 * REPORT_SIZE + 8),
        |b| {
            let _ = AttestationReport::from_any(&b);
            count.set(count.get() + 1);
            Ok(())
        },
    )
    .expect("random bytes never panic the report parser");
    let mut r = runner(5_000);
    let mut b = vec![0u8; REPORT_SIZE];
    b[0] = 3;
    b[8..16].copy_from_slice(&0x30000u64.to_le_bytes());
    b[0x34] = 1;
    r.run(&mutated(b), |b| {
        let _ = AttestationReport::from_any(&b);
        count.set(count.get() + 1);
        Ok(())
    })
    .expect("mutated reports never panic the parser");
    if let Some(dir) = vectors() {
        let pairs = positive_pairs(&dir);
        for (seed, chain) in pairs {
            let mut r = runner(1_000);
            r.run(&mutated(seed), |b| {
                if let Ok(rep) = AttestationReport::from_any(&b) {
                    let _ = verify::verify_report(&rep, &chain);
                }
                count.set(count.get() + 1);
                Ok(())
            })
            .expect("mutated real reports never panic parse or verify");
        }
    }
    println!(
        "fuzz_report_parser: {} inputs ran without a crash",
        count.get()
    );
}

#[test]
fn fuzz_certificate_parsers() {
    let count = std::cell::Cell::new(0u64);
    let mut r = runner(20_000);
    r.run(&proptest::collection::vec(any::<u8>(), 0..1500), |b| {
        let _ = chain::load_certs(&b, "fuzz");
        let _ = der::certificate_extensions(&b);
        let _ = VekExtensions::from_der(&b, "fuzz");
        let _ = chain::load_crl(&b, "fuzz");
        count.set(count.get() + 1);
        Ok(())
    })
    .expect("random bytes never panic the certificate parsers");
    let seeds: Vec<Vec<u8>> = match vectors() {
        Some(dir) => [
            "milan-gosevguest/vcek.der",
            "milan-trustee-vcek/test-vcek-invalid-new.der",
            "milan-trustee-vlek/test-vlek.der",
            "ms-tee-attestation-verification/tests_test_data/turin_vcek.pem",
        ]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("seed"))
        .collect(),
        None => vec![chain::builtin(umbra_attestation::report::Product::Milan)
            .ark
            .to_vec()],
    };
    for seed in seeds {
        let mut r = runner(3_000);
        r.run(&mutated(seed), |b| {
            if let Ok(certs) = chain::load_certs(&b, "fuzz") {
                for c in &certs {
                    let _ = VekExtensions::from_cert(c, "fuzz");
                    let _ = chain::vek_public_key(c, "fuzz");
                }
            }
            let _ = der::certificate_extensions(&b);
            let _ = VekExtensions::from_der(&b, "fuzz");
            count.set(count.get() + 1);
            Ok(())
        })
        .expect("mutated certificates never panic the parsers");
    }
    println!(
        "fuzz_certificate_parsers: {} inputs ran without a crash",
        count.get()
    );
}
