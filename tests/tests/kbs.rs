//! Attested secret release end to end on the host: `umbra-attest serve`'s
//! KBS (in process, on a Unix socket) and umbra-agent's client, with the
//! evidence signed by the SNP firmware model for the REPORT_DATA the
//! client asks — the kernel's configfs-tsm is the only part replaced.
//! Every tamper is refused with its own error type. And the JWE interop
//! with an independent JOSE implementation (python jwcrypto).

#![allow(clippy::unwrap_used)]

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use umbra_attestation::kbs::evidence::{CertKind, ReportAndCerts};
use umbra_attestation::kbs::server::{Kbs, ServeConfig};
use umbra_attestation::policy::PolicyFile;
use umbra_guest_agent::kbs::{
    fetch_secret, fetch_secret_with_init_data, Endpoint, EvidenceProvider, FetchError,
};
use umbra_snp_model::keys::ModelKeys;
use umbra_snp_model::psp::{Platform, SnpFirmwareModel};
use umbra_vmm::backend::confidential::{LaunchFinishParams, PageType};
use umbra_vmm::backend::snp_model::DirKeyStore;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const RAM: u64 = 1 << 20;
const SECRET: &[u8] = b"the disk key of the test guest\n";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("umbra-kbs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn keys() -> Arc<ModelKeys> {
    static KEYS: OnceLock<Arc<ModelKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        Arc::new(ModelKeys::load_or_generate(&DirKeyStore::new(scratch("keys"))).unwrap())
    })
    .clone()
}

/// A guest launched by the model; its code page is `code` bytes of one
/// value, so another value is another measurement.
struct ModelGuest {
    model: Mutex<SnpFirmwareModel>,
    measurement: [u8; 48],
}

fn launch(code: u8) -> ModelGuest {
    launch_with_host_data(code, [0; 32])
}

/// As [`launch`], with HOST_DATA (what `umbra run --host-data` sets).
fn launch_with_host_data(code: u8, host_data: [u8; 32]) -> ModelGuest {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let mut model = SnpFirmwareModel::new(&[(0, RAM)], Some(keys()), Platform::default()).unwrap();
    model.launch_start(0x30000, [0; 16]).unwrap();
    model
        .launch_update(0x1000, 4096, PageType::Normal, Some(&[code; 4096]), &mem)
        .unwrap();
    let measurement = model
        .launch_finish(&LaunchFinishParams {
            id_block: None,
            id_auth: None,
            auth_key_en: false,
            host_data,
            vmsa_pages: vec![vec![0; 4096]],
        })
        .unwrap();
    ModelGuest {
        model: Mutex::new(model),
        measurement,
    }
}

impl EvidenceProvider for ModelGuest {
    fn name(&self) -> &str {
        "the SNP firmware model"
    }

    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<ReportAndCerts, Box<dyn std::error::Error + Send + Sync>> {
        use zerocopy::IntoBytes;
        let report = self.model.lock().unwrap().build_report(report_data, 0)?;
        let k = keys();
        Ok((
            report.as_bytes().to_vec(),
            vec![
                (CertKind::Vcek, k.vcek().to_der()?),
                (CertKind::Ask, k.ask().to_der()?),
                (CertKind::Ark, k.ark().to_der()?),
            ],
        ))
    }
}

/// A KBS on a Unix socket releasing `default/key/1` to guests whose
/// measurement is `pinned`.
fn serve(name: &str, pinned: &[u8; 48], nonce_lifetime: Duration) -> Endpoint {
    serve_with_store(name, pinned, nonce_lifetime, Vec::new())
}

/// As [`serve`], with certificates for evidence that carries none.
fn serve_with_store(
    name: &str,
    pinned: &[u8; 48],
    nonce_lifetime: Duration,
    store: Vec<(CertKind, openssl::x509::X509)>,
) -> Endpoint {
    let (kbs, dir) = kbs_for(name, pinned, nonce_lifetime, store, None);
    let socket = dir.join("kbs.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || kbs.serve(listener.incoming()));
    Endpoint::Unix(socket)
}

/// The KBS of [`serve_with_store`], not yet serving, and its directory.
fn kbs_for(
    name: &str,
    pinned: &[u8; 48],
    nonce_lifetime: Duration,
    store: Vec<(CertKind, openssl::x509::X509)>,
    rate: Option<u32>,
) -> (Arc<Kbs>, PathBuf) {
    let dir = scratch(name);
    let resources = dir.join("resources");
    std::fs::create_dir_all(resources.join("default/key")).unwrap();
    std::fs::write(resources.join("default/key/1"), SECRET).unwrap();
    std::fs::create_dir_all(resources.join("other/key")).unwrap();
    std::fs::write(resources.join("other/key/1"), b"not for this guest").unwrap();
    let policy = PolicyFile {
        measurements: vec![umbra_attestation::hex::encode(pinned)],
        ..PolicyFile::default()
    }
    .compile()
    .unwrap();
    let kbs = Arc::new(
        Kbs::new(ServeConfig {
            resources,
            allowed: vec!["default/key/*".into()],
            policy: Some(policy),
            trust_roots: vec![keys().ark().clone()],
            store: store.clone(),
            nonce_lifetime,
            session_lifetime: Duration::from_secs(60),
            requests_per_second: rate,
        })
        .unwrap(),
    );
    (kbs, dir)
}

fn refused_kind(result: Result<Vec<u8>, FetchError>) -> (String, u16, &'static str) {
    match result {
        Err(FetchError::Refused {
            kind, status, step, ..
        }) => (kind, status, step),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_attested_guest_gets_the_secret_and_nothing_else() {
    let guest = launch(0x90);
    let kbs = serve("happy", &guest.measurement, Duration::from_secs(60));
    let secret = fetch_secret(&kbs, "default/key/1", &guest, &[1; 32]).unwrap();
    assert_eq!(secret, SECRET);
    // A resource outside the policy.
    let outside = fetch_secret(&kbs, "other/key/1", &guest, &[2; 32]);
    assert_eq!(
        refused_kind(outside),
        ("ResourceForbidden".into(), 403, "resource")
    );
}

/// A guest whose host gives it no certificates: the KBS's own store
/// supplies them (as Trustee's offline KDS store does).
struct WithoutCerts<'a>(&'a ModelGuest);

impl EvidenceProvider for WithoutCerts<'_> {
    fn name(&self) -> &str {
        "the SNP firmware model, no certificate table"
    }

    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<ReportAndCerts, Box<dyn std::error::Error + Send + Sync>> {
        Ok((self.0.evidence(report_data)?.0, Vec::new()))
    }
}

#[test]
fn evidence_without_certificates_uses_the_store() {
    let guest = launch(0x95);
    let none = serve("no-store", &guest.measurement, Duration::from_secs(60));
    let (kind, status, _) = refused_kind(fetch_secret(
        &none,
        "default/key/1",
        &WithoutCerts(&guest),
        &[12; 32],
    ));
    assert_eq!((kind.as_str(), status), ("InvalidEvidence", 401));
    let k = keys();
    let store = vec![
        (CertKind::Vcek, k.vcek().clone()),
        (CertKind::Ask, k.ask().clone()),
    ];
    let kbs = serve_with_store("store", &guest.measurement, Duration::from_secs(60), store);
    let secret = fetch_secret(&kbs, "default/key/1", &WithoutCerts(&guest), &[13; 32]).unwrap();
    assert_eq!(secret, SECRET);
}

#[test]
fn another_measurement_gets_no_secret() {
    let guest = launch(0x91);
    let kbs = serve(
        "measurement",
        &launch(0x92).measurement,
        Duration::from_secs(60),
    );
    let (kind, status, step) = refused_kind(fetch_secret(&kbs, "default/key/1", &guest, &[3; 32]));
    assert_eq!(
        (kind.as_str(), status, step),
        ("PolicyViolation", 403, "attest")
    );
}

/// Trustee's initdata document, as a CoCo deployment writes it.
const INIT_DATA: &str =
    "version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"aa.toml\" = \"url = 'http://kbs'\"\n";

#[test]
fn init_data_must_be_what_host_data_binds() {
    use sha2::{Digest, Sha384};
    // The launch binds the document: HOST_DATA = SHA-384 of its text, cut
    // to the 32 bytes HOST_DATA has (Trustee's regularize_data).
    let mut host_data = [0u8; 32];
    host_data.copy_from_slice(&Sha384::digest(INIT_DATA.as_bytes())[..32]);
    let guest = launch_with_host_data(0x95, host_data);
    let kbs = serve("init-data", &guest.measurement, Duration::from_secs(60));
    let fetch = |init_data: Option<&str>, seed: u8| {
        fetch_secret_with_init_data(&kbs, "default/key/1", &guest, &[seed; 32], init_data)
    };
    assert_eq!(fetch(Some(INIT_DATA), 20).unwrap(), SECRET);
    // Without init-data HOST_DATA is not checked (a policy may pin it).
    assert_eq!(fetch(None, 21).unwrap(), SECRET);
    // Another document: HOST_DATA does not bind it.
    let other = INIT_DATA.replace("http://kbs", "http://evil");
    let (kind, status, step) = refused_kind(fetch(Some(&other), 22));
    assert_eq!(
        (kind.as_str(), status, step),
        ("InitDataMismatch", 401, "attest")
    );
    // Not an initdata document at all.
    let (kind, status, _) = refused_kind(fetch(Some("algorithm = \"md5\""), 23));
    assert_eq!((kind.as_str(), status), ("InvalidRequest", 400));
}

/// A self-signed P-256 certificate for `localhost` and 127.0.0.1 (PEM),
/// which the client also takes as its trust anchor.
fn tls_identity(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
    let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
    let mut subject = x509::X509NameBuilder::new().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut b = x509::X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    let serial = openssl::bn::BigNum::from_u32(7)
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    let san = x509::extension::SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let (cert, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, key_path)
}

#[test]
fn the_exchange_runs_over_tls_and_curl_reaches_it() {
    let guest = launch(0x96);
    let (kbs, dir) = kbs_for(
        "tls",
        &guest.measurement,
        Duration::from_secs(60),
        Vec::new(),
        None,
    );
    let (cert, key) = tls_identity(&dir, "localhost");
    let acceptor = umbra_attestation::kbs::tls::acceptor(&cert, &key).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || kbs.serve_tls(listener.incoming(), acceptor));
    let https = |ca: &Path| Endpoint::Https {
        host: format!("localhost:{port}"),
        ca: Some(ca.to_path_buf()),
    };
    assert_eq!(
        fetch_secret(&https(&cert), "default/key/1", &guest, &[30; 32]).unwrap(),
        SECRET
    );
    // A client that trusts another certificate does not talk to this KBS.
    let (stranger, _) = tls_identity(&dir, "stranger");
    assert!(matches!(
        fetch_secret(&https(&stranger), "default/key/1", &guest, &[31; 32]),
        Err(FetchError::Connect(_))
    ));
    // curl, a TLS client no one here wrote, gets a challenge and the cookie.
    let curl = std::process::Command::new("curl")
        .args(["-sS", "-i", "--cacert"])
        .arg(&cert)
        .args(["-H", "Content-Type: application/json", "--data"])
        .arg(String::from_utf8(umbra_kbs_client::KbsSession::auth_request()).unwrap())
        .arg(format!("https://localhost:{port}/kbs/v0/auth"))
        .output();
    let present = curl.is_ok();
    if !present {
        assert!(
            std::env::var("UMBRA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "UMBRA_REQUIRE_PEERS=1 but curl is missing"
        );
        eprintln!("skipped the curl half: curl is missing");
        return;
    }
    let curl = curl.unwrap();
    let reply = String::from_utf8_lossy(&curl.stdout);
    assert!(
        curl.status.success(),
        "{reply}{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.to_lowercase().contains("set-cookie: kbs-session-id="),
        "{reply}"
    );
    assert!(reply.contains("\"nonce\""), "{reply}");
}

#[test]
fn a_flood_of_requests_is_refused_before_any_work() {
    let guest = launch(0x97);
    let (kbs, dir) = kbs_for(
        "rate",
        &guest.measurement,
        Duration::from_secs(60),
        Vec::new(),
        Some(2),
    );
    let socket = dir.join("kbs.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || kbs.serve(listener.incoming()));
    let kbs = Endpoint::Unix(socket);
    let auth = umbra_kbs_client::KbsSession::auth_request();
    let statuses: Vec<String> = (0..3)
        .map(|_| by_hand::post(&kbs, "/kbs/v0/auth", None, &auth).start)
        .collect();
    assert!(
        statuses[0].contains(" 200 ") && statuses[1].contains(" 200 "),
        "{statuses:?}"
    );
    assert!(statuses[2].contains(" 429 "), "{statuses:?}");
    let refused = by_hand::post(&kbs, "/kbs/v0/auth", None, &auth);
    assert_eq!(by_hand::kind(&refused), "TooManyRequests");
}

#[test]
fn a_full_session_table_evicts_the_oldest_unattested_session() {
    use umbra_attestation::http::Message;
    let guest = launch(0x98);
    let (kbs, _) = kbs_for(
        "evict",
        &guest.measurement,
        Duration::from_secs(60),
        Vec::new(),
        None,
    );
    let auth = Message {
        start: "POST /kbs/v0/auth HTTP/1.1".into(),
        headers: Vec::new(),
        body: umbra_kbs_client::KbsSession::auth_request(),
    };
    let cookie_of = |headers: &[(String, String)]| {
        headers
            .iter()
            .find(|(n, _)| n == "Set-Cookie")
            .and_then(|(_, v)| v.split(';').next())
            .unwrap()
            .to_string()
    };
    let (status, headers, _) = kbs.handle(&auth);
    assert_eq!(status, 200);
    let first = cookie_of(&headers);
    // A flood fills the table (4096 sessions) and more: every auth still
    // succeeds, and the oldest pending session is the one that gives way.
    for _ in 0..4096 {
        assert_eq!(kbs.handle(&auth).0, 200);
    }
    let session = umbra_kbs_client::KbsSession::new(&[5; 32]).unwrap();
    let body = session
        .attest_request(by_hand::evidence_for(&guest, &session))
        .unwrap();
    let attest = Message {
        start: "POST /kbs/v0/attest HTTP/1.1".into(),
        headers: vec![("cookie".into(), first)],
        body,
    };
    let (status, _, body) = kbs.handle(&attest);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("UnknownSession"));
}

#[test]
fn an_expired_nonce_is_refused() {
    let guest = launch(0x93);
    let kbs = serve("expired", &guest.measurement, Duration::ZERO);
    let (kind, _, step) = refused_kind(fetch_secret(&kbs, "default/key/1", &guest, &[4; 32]));
    assert_eq!((kind.as_str(), step), ("ExpiredSession", "attest"));
}

// The tampers below speak the protocol by hand, through the library's
// HTTP helpers, so that one field at a time can be wrong.
mod by_hand {
    use super::*;
    use umbra_attestation::http::{read_message, write_message, Message};
    use umbra_attestation::kbs::evidence::snp_evidence;
    use umbra_kbs_client::KbsSession;

    pub fn post(kbs: &Endpoint, path: &str, cookie: Option<&str>, body: &[u8]) -> Message {
        let Endpoint::Unix(socket) = kbs else {
            unreachable!()
        };
        let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
        let c = cookie.map(|c| format!("kbs-session-id={c}"));
        let mut headers = vec![("Host", "localhost")];
        if let Some(c) = &c {
            headers.push(("Cookie", c.as_str()));
        }
        write_message(&mut s, &format!("POST {path} HTTP/1.1"), &headers, body).unwrap();
        read_message(&mut s).unwrap()
    }

    pub fn kind(m: &Message) -> String {
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        v["type"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    }

    /// A session that authenticated: its cookie and client state.
    pub fn auth(kbs: &Endpoint, seed: u8) -> (String, KbsSession) {
        let mut session = KbsSession::new(&[seed; 32]).unwrap();
        let m = post(kbs, "/kbs/v0/auth", None, &KbsSession::auth_request());
        let cookie = m.header("set-cookie").unwrap().split(';').next().unwrap();
        session.accept_challenge(&m.body).unwrap();
        (cookie.split_once('=').unwrap().1.to_string(), session)
    }

    pub fn evidence_for(guest: &ModelGuest, session: &KbsSession) -> serde_json::Value {
        let (report, certs) = guest.evidence(&session.report_data().unwrap()).unwrap();
        snp_evidence(&report, &certs).unwrap()
    }
}

#[test]
fn every_tamper_is_refused_with_its_own_error() {
    use by_hand::*;
    let guest = launch(0x94);
    let kbs = serve("tampers", &guest.measurement, Duration::from_secs(60));

    // Wrong nonce: the runtime data answers another challenge.
    let (cookie, session) = auth(&kbs, 5);
    let (_, other) = auth(&kbs, 6);
    let evidence = evidence_for(&guest, &other);
    let m = post(
        &kbs,
        "/kbs/v0/attest",
        Some(&cookie),
        &other.attest_request(evidence).unwrap(),
    );
    assert_eq!(kind(&m), "NonceMismatch");

    // The right nonce and evidence: accepted. The request is also what
    // Trustee's KBS reads: kbs-types' Attestation, and the sev crate's
    // serde form of the report inside.
    let evidence = evidence_for(&guest, &session);
    let body = session.attest_request(evidence.clone()).unwrap();
    let parsed: kbs_types::Attestation = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed.runtime_data.nonce.len(), 44);
    assert!(parsed.tee_evidence.primary_evidence["attestation_report"]["measurement"].is_array());
    let m = post(&kbs, "/kbs/v0/attest", Some(&cookie), &body);
    assert!(
        m.start.contains(" 200 "),
        "{}",
        String::from_utf8_lossy(&m.body)
    );
    let token: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
    assert_eq!(token["token"].as_str().unwrap().split('.').count(), 3);

    // The nonce used twice.
    let m = post(&kbs, "/kbs/v0/attest", Some(&cookie), &body);
    assert_eq!(kind(&m), "NonceUsed");

    // The same evidence replayed in a new session.
    let (cookie2, session2) = auth(&kbs, 7);
    let m = post(
        &kbs,
        "/kbs/v0/attest",
        Some(&cookie2),
        &session2.attest_request(evidence).unwrap(),
    );
    assert_eq!(kind(&m), "EvidenceReplayed");

    // Evidence bound to one key, runtime data naming another.
    let (cookie3, session3) = auth(&kbs, 8);
    let mut impostor = umbra_kbs_client::KbsSession::new(&[9; 32]).unwrap();
    let nonce: serde_json::Value =
        serde_json::from_slice(&session3.attest_request(serde_json::json!({})).unwrap()).unwrap();
    impostor
        .accept_challenge(
            serde_json::json!({"nonce": nonce["runtime-data"]["nonce"], "extra-params": {}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let evidence = evidence_for(&guest, &session3);
    let m = post(
        &kbs,
        "/kbs/v0/attest",
        Some(&cookie3),
        &impostor.attest_request(evidence).unwrap(),
    );
    assert_eq!(kind(&m), "ReportDataMismatch");

    // Evidence signed by a chip the trust root does not know: the model
    // with fresh keys is another chip with another ARK.
    let (cookie4, session4) = auth(&kbs, 10);
    let (report, _) = guest.evidence(&session4.report_data().unwrap()).unwrap();
    let stranger = ModelKeys::load_or_generate(&DirKeyStore::new(scratch("stranger"))).unwrap();
    let certs = vec![
        (CertKind::Vcek, stranger.vcek().to_der().unwrap()),
        (CertKind::Ask, stranger.ask().to_der().unwrap()),
    ];
    let evidence = umbra_attestation::kbs::evidence::snp_evidence(&report, &certs).unwrap();
    let m = post(
        &kbs,
        "/kbs/v0/attest",
        Some(&cookie4),
        &session4.attest_request(evidence).unwrap(),
    );
    assert_eq!(kind(&m), "EvidenceNotAuthentic");

    // No session at all, and a resource before attesting.
    let m = post(&kbs, "/kbs/v0/attest", Some("nope"), b"{}");
    assert!(matches!(
        kind(&m).as_str(),
        "UnknownSession" | "InvalidRequest"
    ));
}

/// python3 with jwcrypto, if installed (CI installs it).
fn jwcrypto() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("UMBRA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "UMBRA_REQUIRE_PEERS=1 but python3 jwcrypto is missing"
        );
        eprintln!("skipped: python3 jwcrypto is missing");
    }
    ok
}

fn python(script: &str, dir: &Path) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn jwes_interoperate_with_jwcrypto() {
    if !jwcrypto() {
        return;
    }
    let dir = scratch("jwcrypto");
    // jwcrypto's key; umbra-attest serve seals for it; jwcrypto opens.
    let public = python(
        "from jwcrypto import jwk\nk = jwk.JWK.generate(kty='EC', crv='P-256')\nopen('k.json','w').write(k.export())\nprint(k.export_public())",
        &dir,
    );
    let jwk: serde_json::Value = serde_json::from_str(public.trim()).unwrap();
    let key = kbs_types::TeePubKey::EC {
        crv: "P-256".into(),
        alg: "ECDH-ES+A256KW".into(),
        x: jwk["x"].as_str().unwrap().into(),
        y: jwk["y"].as_str().unwrap().into(),
    };
    let sealed = umbra_attestation::kbs::jwe::seal(&key, SECRET).unwrap();
    std::fs::write(dir.join("sealed.json"), &sealed).unwrap();
    let opened = python(
        "from jwcrypto import jwk, jwe\nk = jwk.JWK.from_json(open('k.json').read())\nt = jwe.JWE()\nt.deserialize(open('sealed.json').read(), key=k)\nimport sys; sys.stdout.write(t.payload.decode())",
        &dir,
    );
    assert_eq!(opened.as_bytes(), SECRET);
    // The agent's key; jwcrypto seals for it; the agent opens.
    let session = umbra_kbs_client::KbsSession::new(&[11; 32]).unwrap();
    let pubkey = serde_json::to_value(session.tee_pubkey()).unwrap();
    std::fs::write(dir.join("agent.json"), pubkey.to_string()).unwrap();
    let theirs = python(
        "import json\nfrom jwcrypto import jwk, jwe\nk = jwk.JWK(**{f: v for f, v in json.load(open('agent.json')).items() if f in ('kty','crv','x','y')})\nt = jwe.JWE(b'sealed by jwcrypto', protected=json.dumps({'alg':'ECDH-ES+A256KW','enc':'A256GCM'}))\nt.add_recipient(k)\nprint(t.serialize())",
        &dir,
    );
    assert_eq!(
        session.decrypt(theirs.trim().as_bytes()).unwrap(),
        b"sealed by jwcrypto"
    );
}
