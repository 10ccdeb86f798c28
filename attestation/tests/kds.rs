//! KDS: URL building against recorded inputs, and `umbra-attest fetch`
//! against a local HTTP server started by the test (there is no network):
//! download, progress, back-off on 429, timeout, validation before caching,
//! and `verify` working offline from the cache.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use umbra_attestation::chain::VekKind;
use umbra_attestation::kds;
use umbra_attestation::report::{AttestationReport, Product, TcbVersion};

fn vectors() -> Option<PathBuf> {
    common::vectors()
}

#[test]
fn urls_as_amd_documents_them() {
    let mut chip = [0u8; 64];
    chip[..8].copy_from_slice(&[0x59, 0x79, 0x0f, 0xb1, 0xc3, 0x9f, 0x35, 0xc1]);
    // Turin: fmcSPL first, 8-byte hwID (report 9 of the vectors).
    let turin = TcbVersion([1, 1, 1, 4, 0, 0, 0, 0x51]);
    assert_eq!(
        kds::vcek_url(kds::KDS_BASE, Product::Turin, &chip, &turin),
        "https://kdsintf.amd.com/vcek/v1/Turin/59790fb1c39f35c1?fmcSPL=01&blSPL=01&teeSPL=01&snpSPL=04&ucodeSPL=81"
    );
    let milan = TcbVersion([3, 0, 0, 0, 0, 0, 8, 115]);
    let url = kds::vcek_url("http://127.0.0.1:1/", Product::Milan, &[0xab; 64], &milan);
    assert_eq!(
        url,
        format!(
            "http://127.0.0.1:1/vcek/v1/Milan/{}?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115",
            "ab".repeat(64)
        )
    );
    assert_eq!(
        kds::cert_chain_url(kds::KDS_BASE, Product::Genoa, VekKind::Vcek),
        "https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain"
    );
    assert_eq!(
        kds::cert_chain_url(kds::KDS_BASE, Product::Turin, VekKind::Vlek),
        "https://kdsintf.amd.com/vlek/v1/Turin/cert_chain"
    );
    assert_eq!(
        kds::crl_url(kds::KDS_BASE, Product::Milan, VekKind::Vcek),
        "https://kdsintf.amd.com/vcek/v1/Milan/crl"
    );
    let p = kds::vcek_cache_path(Path::new("/c"), Product::Turin, &chip, &turin);
    assert_eq!(
        p,
        Path::new("/c/Turin/vcek/59790fb1c39f35c1/0101010400000051.der")
    );
}

/// Every VCEK vector: the URL built from the report equals the one built
/// from the VCEK's own recorded hwID and SPL extensions in EXPECTED.json.
#[test]
fn vcek_urls_for_every_vector() {
    let Some(dir) = vectors() else { return };
    let exp: Value =
        serde_json::from_slice(&std::fs::read(dir.join("EXPECTED.json")).expect("read"))
            .expect("json");
    let mut n = 0;
    for (name, case) in exp["cases"].as_object().expect("cases") {
        let cert = &case["vek_cert"];
        if case["signing_key_type"] != "VCEK"
            || case["expect_report_signature_valid"] != Value::Bool(true)
        {
            continue;
        }
        let f = case["report_file"]
            .as_str()
            .expect("f")
            .split(' ')
            .next()
            .unwrap_or("");
        let r =
            AttestationReport::from_any(&std::fs::read(dir.join(f)).expect("r")).expect("parses");
        let product = Product::from_name(case["product"].as_str().expect("p")).expect("product");
        let spl = |k: &str| cert[k].as_u64().expect("spl");
        let fmc = cert
            .get("fmcSPL")
            .map(|v| format!("fmcSPL={:02}&", v.as_u64().unwrap_or(0)))
            .unwrap_or_default();
        let want = format!(
            "https://kdsintf.amd.com/vcek/v1/{}/{}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
            product.kds_name(),
            cert["hwID"].as_str().expect("hwID"),
            spl("blSPL"),
            spl("teeSPL"),
            spl("snpSPL"),
            spl("ucodeSPL")
        );
        assert_eq!(
            kds::vcek_url(kds::KDS_BASE, product, &r.chip_id, &r.reported_tcb),
            want,
            "{name}"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
            .args([
                "fetch",
                "vcek",
                "--report",
                &dir.join(f).display().to_string(),
                "--print-url",
            ])
            .args(["--product", case["product"].as_str().unwrap_or("")])
            .output()
            .expect("run");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{name} CLI"
        );
        n += 1;
    }
    assert_eq!(n, 13);
}

type Routes = HashMap<String, Vec<(u16, Vec<(String, String)>, Vec<u8>)>>;

/// A tiny HTTP/1.1 server: each path answers with its queued responses in
/// order (the last one repeats). "/hang" accepts and never answers.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(routes: Routes) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let routes = Arc::new(Mutex::new(routes));
    let h = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).into_owned();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
                if path == "/hang" {
                    std::thread::sleep(Duration::from_secs(30));
                    return;
                }
                let resp = {
                    let mut r = routes.lock().unwrap_or_else(|e| e.into_inner());
                    match r.get_mut(&path) {
                        Some(q) if q.len() > 1 => Some(q.remove(0)),
                        Some(q) => q.first().cloned(),
                        None => None,
                    }
                };
                let (status, headers, body) = resp.unwrap_or((404, vec![], b"not found".to_vec()));
                let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                let chunked = headers.iter().any(|(k, _)| k == "Transfer-Encoding");
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                let mut bytes = if chunked {
                    out.push_str("\r\n");
                    let mut o = out.into_bytes();
                    for c in body.chunks(500) {
                        o.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        o.extend_from_slice(c);
                        o.extend_from_slice(b"\r\n");
                    }
                    o.extend_from_slice(b"0\r\n\r\n");
                    o
                } else {
                    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
                    out.into_bytes()
                };
                if !chunked {
                    bytes.extend_from_slice(&body);
                }
                let _ = s.write_all(&bytes);
            });
        }
    });
    Server { base, hits }
}

fn ok(body: Vec<u8>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    (200, vec![], body)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
        .args(args)
        .env("UMBRA_KDS_CACHE", "/nonexistent/umbra-kds-test")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!err.contains("panicked"), "{err}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

#[test]
fn fetch_into_cache_then_verify_offline() {
    let Some(v) = vectors() else { return };
    let report_path = v.join("milan-gosevguest/attestation.bin");
    let report =
        AttestationReport::from_bytes(&std::fs::read(&report_path).expect("r")).expect("parses");
    let vcek_url = kds::vcek_url("", Product::Milan, &report.chip_id, &report.reported_tcb);
    let bundle = std::fs::read(v.join("amd-roots/go-sev-guest/ask_ark_milan.pem")).expect("bundle");
    let mut routes: Routes = HashMap::new();
    routes.insert(
        vcek_url,
        vec![ok(
            std::fs::read(v.join("milan-gosevguest/vcek.der")).expect("vcek")
        )],
    );
    // Rate-limited once, then served.
    routes.insert(
        "/vcek/v1/Milan/cert_chain".into(),
        vec![
            (429, vec![("Retry-After".into(), "0".into())], vec![]),
            ok(bundle.clone()),
        ],
    );
    // Chunked transfer encoding.
    routes.insert(
        "/vlek/v1/Milan/cert_chain".into(),
        vec![(
            200,
            vec![("Transfer-Encoding".into(), "chunked".into())],
            std::fs::read(v.join("amd-roots/go-sev-guest/ask_ark_milan_vlek.pem"))
                .expect("vlek bundle"),
        )],
    );
    // Wrong content: a Milan chain served as Genoa's, and a non-CRL.
    routes.insert("/vcek/v1/Genoa/cert_chain".into(), vec![ok(bundle)]);
    routes.insert("/vcek/v1/Milan/crl".into(), vec![ok(b"not a crl".to_vec())]);
    routes.insert(
        "/vcek/v1/Turin/cert_chain".into(),
        vec![(429, vec![], vec![])],
    );
    let srv = serve(routes);

    let cache = std::env::temp_dir().join(format!("umbra-kds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let c = cache.display().to_string();
    let r = report_path.display().to_string();
    let common = [
        "--kds-url",
        srv.base.as_str(),
        "--cache-dir",
        c.as_str(),
        "--backoff-ms",
        "10",
    ];

    let (code, out, err) = run(&[
        &["fetch", "vcek", "--report", &r, "--product", "milan"][..],
        &common,
    ]
    .concat());
    assert_eq!(code, 0, "{err}");
    let want = kds::vcek_cache_path(
        &cache,
        Product::Milan,
        &report.chip_id,
        &report.reported_tcb,
    );
    assert_eq!(out.trim(), want.display().to_string());
    assert!(want.is_file());
    assert!(err.contains("bytes"), "progress shown: {err}");

    let (code, _, err) = run(&[&["fetch", "ca", "--product", "milan"][..], &common].concat());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("HTTP 429"), "backed off: {err}");
    assert!(kds::chain_cache_path(&cache, Product::Milan, VekKind::Vcek).is_file());

    let (code, _, err) =
        run(&[&["fetch", "vlek-chain", "--product", "milan"][..], &common].concat());
    assert_eq!(code, 0, "{err}");

    // Offline: no --vcek; everything comes from the cache.
    let (code, out, err) = run(&["verify", "--report", &r, "--cache-dir", &c]);
    assert_eq!(code, 0, "{out}{err}");

    // Cached: the server is not asked again.
    let before = srv.hits.load(Ordering::SeqCst);
    let (code, _, _) = run(&[
        &["fetch", "vcek", "--report", &r, "--product", "milan"][..],
        &common,
    ]
    .concat());
    assert_eq!(code, 0);
    assert_eq!(srv.hits.load(Ordering::SeqCst), before);

    // Content that fails validation is not cached (exit 4).
    let (code, _, err) = run(&[&["fetch", "ca", "--product", "genoa"][..], &common].concat());
    assert_eq!(code, 4, "{err}");
    assert!(!kds::chain_cache_path(&cache, Product::Genoa, VekKind::Vcek).exists());
    let (code, _, err) = run(&[&["fetch", "crl", "--product", "milan"][..], &common].concat());
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not a CRL"), "{err}");

    // KDS errors (exit 5): not found, still rate-limited.
    let (code, _, err) = run(&[&["fetch", "crl", "--product", "genoa"][..], &common].concat());
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("HTTP 404"), "{err}");
    let (code, _, err) = run(&[
        &["fetch", "ca", "--product", "turin", "--retries", "2"][..],
        &common,
    ]
    .concat());
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("rate-limited"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn downloads_time_out() {
    let srv = serve(HashMap::new());
    let client = kds::Client {
        timeout: Duration::from_secs(1),
        max_attempts: 1,
        backoff: Duration::from_millis(1),
        progress: false,
    };
    let start = Instant::now();
    let r = client.get(&format!("{}/hang", srv.base));
    assert!(matches!(r, Err(kds::KdsError::Transfer { .. })), "{r:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // Nothing listening.
    let r = client.get("http://127.0.0.1:1/x");
    assert!(matches!(r, Err(kds::KdsError::Connect { .. })), "{r:?}");
}

/// A real AMD CRL that went stale in 2024 (vectors/amd-crl-spire): still
/// AMD's and signed by the Milan ARK, so it is cached, but with a warning
/// that it may miss recent revocations.
#[test]
fn a_stale_crl_is_cached_with_a_warning() {
    let Some(v) = vectors() else { return };
    let crl = std::fs::read(v.join("amd-crl-spire/crl-milan.der")).expect("crl");
    let mut routes: Routes = HashMap::new();
    routes.insert("/vcek/v1/Milan/crl".into(), vec![ok(crl)]);
    let srv = serve(routes);
    let cache = std::env::temp_dir().join(format!("umbra-kds-stale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let c = cache.display().to_string();
    let (code, _, err) = run(&[
        "fetch",
        "crl",
        "--product",
        "milan",
        "--kds-url",
        srv.base.as_str(),
        "--cache-dir",
        c.as_str(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("nextUpdate"),
        "{err}"
    );
    assert!(kds::crl_cache_path(&cache, Product::Milan, VekKind::Vcek).is_file());
    let _ = std::fs::remove_dir_all(&cache);
}
