//! `umbra-attest serve`'s attestation rate on loopback TCP with real
//! P-384 verification (the whole appraisal: chain, signature, policy),
//! side by side with this machine's raw ECDSA P-384 verification rate;
//! prints the ratio (target at least 0.5). The guest side (nonce, report
//! signed by the SNP model) is prepared outside the timed part: only the
//! server's work on `POST /kbs/v0/attest` is measured.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use umbra_attestation::http::{read_message, write_message, Message};
use umbra_attestation::kbs::evidence::{snp_evidence, CertKind};
use umbra_attestation::kbs::server::{Kbs, ServeConfig};
use umbra_attestation::policy::PolicyFile;
use umbra_kbs_client::KbsSession;
use umbra_snp_model::keys::ModelKeys;
use umbra_snp_model::psp::{Platform, SnpFirmwareModel};
use umbra_vmm::backend::confidential::{LaunchFinishParams, PageType};
use umbra_vmm::backend::snp_model::DirKeyStore;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

const ATTESTATIONS: u32 = 300;

fn post(addr: &str, path: &str, cookie: Option<&str>, body: &[u8]) -> Message {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let c = cookie.map(|c| format!("kbs-session-id={c}"));
    let mut headers = vec![("Host", addr)];
    if let Some(c) = &c {
        headers.push(("Cookie", c.as_str()));
    }
    write_message(&mut s, &format!("POST {path} HTTP/1.1"), &headers, body).expect("send");
    read_message(&mut s).expect("receive")
}

fn main() {
    let keys_dir = std::env::temp_dir().join("umbra-bench-model-keys");
    let keys = Arc::new(ModelKeys::load_or_generate(&DirKeyStore::new(keys_dir)).expect("keys"));
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).expect("memory");
    let mut model = SnpFirmwareModel::new(&[(0, 1 << 20)], Some(keys.clone()), Platform::default())
        .expect("model");
    model.launch_start(0x30000, [0; 16]).expect("start");
    model
        .launch_update(0x1000, 4096, PageType::Normal, Some(&[0x42; 4096]), &mem)
        .expect("update");
    let measurement = model
        .launch_finish(&LaunchFinishParams {
            id_block: None,
            id_auth: None,
            auth_key_en: false,
            host_data: [0; 32],
            vmsa_pages: vec![vec![0; 4096]],
        })
        .expect("finish");
    let resources = std::env::temp_dir().join(format!("umbra-bench-kbs-{}", std::process::id()));
    std::fs::create_dir_all(&resources).expect("resources");
    let policy = PolicyFile {
        measurements: vec![umbra_attestation::hex::encode(&measurement)],
        ..PolicyFile::default()
    }
    .compile()
    .expect("policy");
    let kbs = Arc::new(
        Kbs::new(ServeConfig {
            resources,
            allowed: vec![],
            policy: Some(policy),
            trust_roots: vec![keys.ark().clone()],
            store: Vec::new(),
            nonce_lifetime: Duration::from_secs(600),
            session_lifetime: Duration::from_secs(600),
            requests_per_second: None,
        })
        .expect("kbs"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || kbs.serve(listener.incoming()));
    let certs = vec![
        (CertKind::Vcek, keys.vcek().to_der().expect("der")),
        (CertKind::Ask, keys.ask().to_der().expect("der")),
        (CertKind::Ark, keys.ark().to_der().expect("der")),
    ];
    let mut timed = Duration::ZERO;
    let mut signed_report = Vec::new();
    for i in 0..ATTESTATIONS {
        let mut seed = [1u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let mut session = KbsSession::new(&seed).expect("session");
        let auth = post(&addr, "/kbs/v0/auth", None, &KbsSession::auth_request());
        let cookie = auth
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("cookie");
        let cookie = cookie.split_once('=').expect("cookie").1.to_string();
        session.accept_challenge(&auth.body).expect("challenge");
        let report = model
            .build_report(&session.report_data().expect("rd"), 0)
            .expect("report");
        signed_report = report.as_bytes().to_vec();
        let body = session
            .attest_request(snp_evidence(&signed_report, &certs).expect("evidence"))
            .expect("body");
        if i == 0 && std::env::var("UMBRA_BENCH_PROFILE").is_ok() {
            profile(&body, &signed_report);
            profile_verify(&signed_report, &keys);
        }
        let start = Instant::now();
        let reply = post(&addr, "/kbs/v0/attest", Some(&cookie), &body);
        timed += start.elapsed();
        assert!(
            reply.start.contains(" 200 "),
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let attest_rate = f64::from(ATTESTATIONS) / timed.as_secs_f64();
    if std::env::var("UMBRA_BENCH_PROFILE").is_ok() {
        let t = Instant::now();
        for _ in 0..100 {
            post(&addr, "/kbs/v0/auth", None, &KbsSession::auth_request());
        }
        eprintln!("auth round trip: {:?}", t.elapsed() / 100);
    }
    // Raw ECDSA P-384 verification of the same report with the VCEK key.
    let vcek = keys.vcek().public_key().expect("key").ec_key().expect("ec");
    let (r, s) = (
        &signed_report[0x2A0..0x2A0 + 48],
        &signed_report[0x2E8..0x2E8 + 48],
    );
    let le =
        |b: &[u8]| openssl::bn::BigNum::from_slice(&b.iter().rev().copied().collect::<Vec<_>>());
    let sig =
        openssl::ecdsa::EcdsaSig::from_private_components(le(r).expect("r"), le(s).expect("s"))
            .expect("sig");
    let digest = {
        use sha2::Digest;
        sha2::Sha384::digest(&signed_report[..0x2A0])
    };
    assert!(
        sig.verify(&digest, &vcek).expect("verify"),
        "raw verification must pass"
    );
    let n = 2000u32;
    let start = Instant::now();
    for _ in 0..n {
        assert!(sig.verify(&digest, &vcek).expect("verify"));
    }
    let raw_rate = f64::from(n) / start.elapsed().as_secs_f64();
    println!(
        "umbra-attest serve: {attest_rate:.0} attestations/s on loopback; raw ECDSA P-384 verification {raw_rate:.0}/s; ratio {:.3} (target >= 0.5)",
        attest_rate / raw_rate
    );
}

#[allow(dead_code)]
fn profile(body: &[u8], report: &[u8]) {
    let t = Instant::now();
    for _ in 0..100 {
        let a: kbs_types::Attestation = serde_json::from_slice(body).expect("parse");
        std::hint::black_box(a);
    }
    eprintln!("parse attestation: {:?}", t.elapsed() / 100);
    let a: kbs_types::Attestation = serde_json::from_slice(body).expect("parse");
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(
            umbra_attestation::kbs::evidence::read_snp_evidence(&a.tee_evidence.primary_evidence)
                .expect("evidence"),
        );
    }
    eprintln!("read evidence: {:?}", t.elapsed() / 100);
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(
            umbra_attestation::report::AttestationReport::from_bytes(report).expect("r"),
        );
    }
    eprintln!("parse report: {:?}", t.elapsed() / 100);
}

#[allow(dead_code)]
fn profile_verify(report: &[u8], keys: &ModelKeys) {
    use umbra_attestation::verify::{self, Certificates, Options};
    let r = umbra_attestation::report::AttestationReport::from_bytes(report).expect("r");
    let certs = Certificates {
        vek: keys.vcek().clone(),
        vek_kind: None,
        intermediate: Some(keys.ask().clone()),
        ark: Some(keys.ark().clone()),
    };
    let opts = Options {
        at_unix: 1_800_000_000,
        trust_roots: vec![keys.ark().clone()],
        ..Default::default()
    };
    let t = Instant::now();
    let (_, chain) = verify::verify_chain(&r, &certs, &opts);
    eprintln!("verify chain: {:?}", t.elapsed());
    let chain = chain.expect("chain");
    let t = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(verify::verify_report(&r, &chain));
    }
    eprintln!("verify report: {:?}", t.elapsed() / 100);
}
