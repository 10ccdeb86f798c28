//! `umbra-attest serve`: sessions, nonces, evidence appraisal and resource
//! release, over HTTP on TCP or a Unix socket (a guest reaches the Unix
//! socket through hybrid vsock). Every decision is one structured log
//! line on stderr, without secrets; every refusal is Trustee's
//! `{type, detail}` with 400, 401, 403 or 404.

use crate::http::{read_message, write_message, Message};
use crate::policy::Policy;
use crate::report::AttestationReport;
use crate::verify::{self, Certificates, CheckClass, Options};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use openssl::x509::X509;
use sha2::{Digest, Sha256, Sha384};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Most sessions held at once (older, expired ones are dropped first).
const MAX_SESSIONS: usize = 4096;
/// Most connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// The session cookie, as Trustee names it.
pub const COOKIE: &str = "kbs-session-id";

/// What the server decides with.
#[derive(Debug)]
pub struct ServeConfig {
    /// Resources: `DIR/<repo>/<type>/<tag>`.
    pub resources: PathBuf,
    /// Resources the policy releases: `repo/type/tag`, `*` for a segment.
    pub allowed: Vec<String>,
    /// The policy the evidence must satisfy.
    pub policy: Option<Policy>,
    /// Trust roots (ARKs) the VCEK chain must end in.
    pub trust_roots: Vec<X509>,
    /// Certificates used when the evidence carries none of that kind
    /// (`--certs DIR`, like Trustee's offline KDS store): the guest then
    /// needs no certificate table from its host.
    pub store: Vec<(super::evidence::CertKind, X509)>,
    /// How long a nonce (and an unattested session) lives.
    pub nonce_lifetime: Duration,
    /// How long an attested session lives.
    pub session_lifetime: Duration,
    /// `auth` and `attest` requests admitted a second (`None`: no limit).
    pub requests_per_second: Option<u32>,
}

/// A refusal: Trustee's error type, the HTTP status, a detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Error type (the last path segment of Trustee's error URIs).
    pub kind: &'static str,
    /// What was wrong, for the log and the client.
    pub detail: String,
}

fn refuse(status: u16, kind: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        status,
        kind,
        detail: detail.into(),
    }
}

struct Session {
    nonce: String,
    created: Instant,
    attested: Option<Attested>,
}

struct Attested {
    key: kbs_types::TeePubKey,
    at: Instant,
    token: String,
}

/// A verified chain: when, its checks, the chain.
type CachedChain = (Instant, Vec<verify::Check>, verify::VerifiedChain);

/// The server's state.
pub struct Kbs {
    config: ServeConfig,
    sessions: Mutex<HashMap<String, Session>>,
    /// Reports that earned a token, with when (kept for a nonce lifetime:
    /// an older report binds a nonce no session holds any more).
    seen_evidence: Mutex<HashMap<[u8; 32], Instant>>,
    /// Certificate chains verified in the last minute, by the digest of
    /// the certificates and the report fields the chain checks read.
    chains: Mutex<HashMap<[u8; 32], CachedChain>>,
    token_key: openssl::pkey::PKey<openssl::pkey::Private>,
    connections: AtomicUsize,
    /// The `--rate` bucket for `auth` and `attest`.
    rate: Option<super::rate::RateLimit>,
}

impl std::fmt::Debug for Kbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kbs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn random_b64(n: usize) -> Result<String, openssl::error::ErrorStack> {
    let mut bytes = vec![0u8; n];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(STANDARD.encode(bytes))
}

fn log(event: serde_json::Value) {
    crate::errln!("{event}");
}

/// Whether `path` (`repo/type/tag`) matches `pattern` (`*` per segment).
fn allowed(pattern: &str, path: &str) -> bool {
    let (p, s): (Vec<_>, Vec<_>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == s.len() && p.iter().zip(&s).all(|(p, s)| *p == "*" || p == s)
}

/// A resource path segment: letters, digits, `.`, `_`, `-`, not `.`/`..`.
/// Trustee's initdata document (kbs/docs/initdata.md): a TOML table with
/// the digest algorithm; its digest is taken over the whole text.
#[derive(serde::Deserialize)]
struct InitDataDocument {
    /// Required, not interpreted.
    #[serde(rename = "version")]
    _version: String,
    algorithm: kbs_types::HashAlgorithm,
    /// The entries must be strings; what they mean is the guest's business.
    #[serde(default, rename = "data")]
    _data: std::collections::BTreeMap<String, String>,
}

/// The HOST_DATA a launch with `init_data` carries: the document's digest
/// by its own algorithm, cut or zero-padded to 32 bytes, as Trustee's SNP
/// verifier regularises it.
fn init_data_binding(init_data: &kbs_types::InitData) -> Result<[u8; 32], String> {
    if init_data.format != "toml" {
        return Err(format!("format {:?} is not toml", init_data.format));
    }
    let document: InitDataDocument =
        toml::from_str(&init_data.body).map_err(|e| e.message().to_string())?;
    let digest = document.algorithm.digest(init_data.body.as_bytes());
    let mut out = [0u8; 32];
    let n = digest.len().min(32);
    out[..n].copy_from_slice(&digest[..n]);
    Ok(out)
}

fn segment_ok(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Kbs {
    /// A server deciding with `config`.
    pub fn new(config: ServeConfig) -> Result<Self, openssl::error::ErrorStack> {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1)?;
        let token_key = openssl::pkey::PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?;
        Ok(Kbs {
            sessions: Mutex::new(HashMap::new()),
            seen_evidence: Mutex::new(HashMap::new()),
            chains: Mutex::new(HashMap::new()),
            token_key,
            connections: AtomicUsize::new(0),
            rate: config.requests_per_second.map(super::rate::RateLimit::new),
            config,
        })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `POST /kbs/v0/auth`.
    fn auth(&self, request: &Message) -> Result<(String, Vec<u8>), Refusal> {
        let req: kbs_types::Request = serde_json::from_slice(&request.body)
            .map_err(|e| refuse(400, "InvalidRequest", format!("auth request: {e}")))?;
        if req.version != umbra_kbs_client::KBS_PROTOCOL_VERSION {
            return Err(refuse(
                400,
                "ProtocolVersion",
                format!("protocol version {} (this KBS speaks 0.4.0)", req.version),
            ));
        }
        if req.tee != kbs_types::Tee::Snp {
            return Err(refuse(
                400,
                "UnsupportedTee",
                "only tee \"snp\" is appraised here",
            ));
        }
        let nonce = random_b64(32).map_err(|_| refuse(500, "Internal", "no randomness"))?;
        let id = random_b64(24)
            .map_err(|_| refuse(500, "Internal", "no randomness"))?
            .replace(['+', '/', '='], "");
        let mut sessions = self.sessions();
        let (nonce_life, session_life) = (self.config.nonce_lifetime, self.config.session_lifetime);
        // An unattested session lives as long as its nonce, an attested
        // one its session lifetime from the attestation.
        sessions.retain(|_, s| match &s.attested {
            Some(a) => a.at.elapsed() < session_life,
            None => s.created.elapsed() < nonce_life,
        });
        if sessions.len() >= MAX_SESSIONS {
            // A flood of `auth` must not lock real guests out for a nonce
            // lifetime: the oldest session that has not attested makes
            // room (a real guest attests within its round trip). Only a
            // table full of attested sessions refuses.
            let oldest = sessions
                .iter()
                .filter(|(_, s)| s.attested.is_none())
                .min_by_key(|(_, s)| s.created)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    sessions.remove(&id);
                }
                None => return Err(refuse(503, "TooManySessions", "session table full")),
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                nonce: nonce.clone(),
                created: Instant::now(),
                attested: None,
            },
        );
        let challenge = kbs_types::Challenge {
            nonce,
            extra_params: serde_json::json!({}),
        };
        let body = serde_json::to_vec(&challenge).unwrap_or_default();
        Ok((id, body))
    }

    /// `POST /kbs/v0/attest`.
    fn attest(&self, request: &Message) -> Result<Vec<u8>, Refusal> {
        let id = request
            .cookie(COOKIE)
            .ok_or_else(|| refuse(401, "MissingCookie", "no kbs-session-id cookie"))?
            .to_string();
        let attestation: super::evidence::SnpAttestation = serde_json::from_slice(&request.body)
            .map_err(|e| refuse(400, "InvalidRequest", format!("attestation: {e}")))?;
        let nonce = {
            let mut sessions = self.sessions();
            let session = sessions
                .get(&id)
                .ok_or_else(|| refuse(401, "UnknownSession", "no such session"))?;
            if session.created.elapsed() > self.config.nonce_lifetime {
                sessions.remove(&id);
                return Err(refuse(
                    401,
                    "ExpiredSession",
                    "the nonce's lifetime is over",
                ));
            }
            if session.attested.is_some() {
                return Err(refuse(
                    401,
                    "NonceUsed",
                    "this session's nonce was already used",
                ));
            }
            session.nonce.clone()
        };
        let runtime = &attestation.runtime_data;
        if runtime.nonce != nonce {
            return Err(refuse(
                401,
                "NonceMismatch",
                "runtime-data carries another nonce",
            ));
        }
        let additional = attestation.tee_evidence.additional_evidence;
        let (report_bytes, certs) =
            super::evidence::split(attestation.tee_evidence.primary_evidence)
                .map_err(|e| refuse(401, "InvalidEvidence", verify::describe(&e)))?;
        let report = AttestationReport::from_bytes(&report_bytes)
            .map_err(|e| refuse(401, "InvalidEvidence", verify::describe(&e)))?;
        // The binding Trustee checks: SHA-384 of the JCS runtime data.
        let bound = serde_json::json!({
            "additional-evidence": additional,
            "nonce": runtime.nonce,
            "tee-pubkey": serde_json::to_value(&runtime.tee_pubkey).unwrap_or_default(),
        });
        let digest = Sha384::digest(umbra_kbs_client::jcs::canonical(&bound).as_bytes());
        let fingerprint: [u8; 32] = Sha256::digest(&report_bytes).into();
        if self
            .seen_evidence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&fingerprint)
        {
            return Err(refuse(
                401,
                "EvidenceReplayed",
                "this report was presented before",
            ));
        }
        if report.report_data[..48] != digest[..]
            || report.report_data[48..].iter().any(|&b| b != 0)
        {
            return Err(refuse(
                401,
                "ReportDataMismatch",
                "REPORT_DATA does not bind this nonce and tee-pubkey",
            ));
        }
        if let Some(init_data) = &attestation.init_data {
            let expected = init_data_binding(init_data)
                .map_err(|why| refuse(400, "InvalidRequest", format!("init-data: {why}")))?;
            if report.host_data != expected {
                return Err(refuse(
                    401,
                    "InitDataMismatch",
                    "HOST_DATA is not the digest of the init-data sent",
                ));
            }
        }
        let options = Options {
            at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0),
            trust_roots: self.config.trust_roots.clone(),
            crl: None,
            product: None,
        };
        let mut verdict = self.appraise(&report, &report_bytes, &certs, &options)?;
        let failed = |v: &verify::Verdict, class| {
            v.checks
                .iter()
                .filter(|c| c.class == class && c.status == verify::Status::Fail)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if verdict.failed(CheckClass::Authenticity) {
            return Err(refuse(
                401,
                "EvidenceNotAuthentic",
                failed(&verdict, CheckClass::Authenticity),
            ));
        }
        if let Some(policy) = &self.config.policy {
            verdict
                .checks
                .extend(policy.check(&report, verdict.product));
        }
        if verdict.failed(CheckClass::Policy) {
            return Err(refuse(
                403,
                "PolicyViolation",
                failed(&verdict, CheckClass::Policy),
            ));
        }
        {
            let mut seen = self.seen_evidence.lock().unwrap_or_else(|p| p.into_inner());
            let life = self.config.nonce_lifetime;
            seen.retain(|_, at| at.elapsed() < life);
            seen.insert(fingerprint, Instant::now());
        }
        let token = self
            .token(&report, &runtime.tee_pubkey)
            .map_err(|_| refuse(500, "Internal", "cannot sign the token"))?;
        let mut sessions = self.sessions();
        let session = sessions
            .get_mut(&id)
            .ok_or_else(|| refuse(401, "UnknownSession", "the session ended"))?;
        session.attested = Some(Attested {
            key: runtime.tee_pubkey.clone(),
            at: Instant::now(),
            token: token.clone(),
        });
        Ok(serde_json::to_vec(&serde_json::json!({ "token": token })).unwrap_or_default())
    }

    /// The authenticity verdict. A chain verified in the last minute for
    /// the same certificates and the same report fields the chain checks
    /// read (version, signing key, CPUID) is not verified again: only the
    /// report's own checks (signature, chip, TCB) run.
    ///
    /// The certificates are parsed only when the chain is not cached:
    /// OpenSSL's DER decoding of three certificates costs as much as the
    /// report's signature check.
    fn appraise(
        &self,
        report: &AttestationReport,
        raw: &[u8],
        certs: &[(super::evidence::CertKind, Vec<u8>)],
        options: &Options,
    ) -> Result<verify::Verdict, Refusal> {
        const CACHE_FOR: Duration = Duration::from_secs(60);
        const CACHE_MAX: usize = 256;
        let mut hash = Sha256::new();
        for (kind, der) in certs {
            hash.update(umbra_snp_abi::cert_table::guid_of(*kind));
            hash.update((der.len() as u64).to_le_bytes());
            hash.update(der);
        }
        // version, then key_info, then the CPUID bytes (ABI table 23).
        hash.update(&raw[0..4]);
        hash.update(&raw[0x48..0x4C]);
        hash.update(&raw[0x188..0x18B]);
        let key: [u8; 32] = hash.finalize().into();
        let cached = {
            let chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
            chains
                .get(&key)
                .filter(|(at, _, _)| at.elapsed() < CACHE_FOR)
                .map(|(_, checks, chain)| (checks.clone(), chain.clone()))
        };
        // A cached chain verified; only the report's own checks run.
        let (mut checks, chain) = match cached {
            Some(cached) => cached,
            None => {
                let certificates = self.certificates(certs, report.key_info.signing_key)?;
                let (checks, chain) = verify::verify_chain(report, &certificates, options);
                let Some(chain) = chain else {
                    // A chain that fails gets the whole diagnosis.
                    return Ok(verify::verify(report, &certificates, options));
                };
                if !checks.iter().any(|c| c.status == verify::Status::Fail) {
                    let mut chains = self.chains.lock().unwrap_or_else(|p| p.into_inner());
                    chains.retain(|_, (at, _, _)| at.elapsed() < CACHE_FOR);
                    if chains.len() < CACHE_MAX {
                        chains.insert(key, (Instant::now(), checks.clone(), chain.clone()));
                    }
                }
                (checks, chain)
            }
        };
        checks.extend(verify::verify_report(report, &chain));
        let product = Some(chain.product);
        Ok(verify::Verdict { product, checks })
    }

    /// The certificates to verify with: the evidence's own first, then the
    /// `--certs` store's.
    fn certificates(
        &self,
        certs: &[(super::evidence::CertKind, Vec<u8>)],
        signed_by: crate::report::SigningKey,
    ) -> Result<Certificates, Refusal> {
        super::evidence::certificates(certs, &self.config.store, signed_by).map_err(|e| {
            let detail = match e {
                super::evidence::EvidenceError::FindVek(kind) => {
                    format!("neither the evidence nor --certs has a {kind}")
                }
                other => verify::describe(&other),
            };
            refuse(401, "InvalidEvidence", detail)
        })
    }

    /// An ES256 JWT in the shape of Trustee's attestation token.
    fn token(
        &self,
        report: &AttestationReport,
        key: &kbs_types::TeePubKey,
    ) -> Result<String, openssl::error::ErrorStack> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": "umbra-attest",
            "iat": now,
            "exp": now + self.config.session_lifetime.as_secs(),
            "customized_claims": {"runtime_data": {"tee-pubkey": key}},
            "tee": "snp",
            "measurement": crate::hex::encode(&report.measurement),
            "evaluation-reports": [{"policy-id": "umbra", "allow": true}],
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut signer =
            openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &self.token_key)?;
        let der = signer.sign_oneshot_to_vec(signing_input.as_bytes())?;
        // JWS wants r || s, not DER.
        let sig = openssl::ecdsa::EcdsaSig::from_der(&der)?;
        let mut raw = sig.r().to_vec_padded(32)?;
        raw.extend(sig.s().to_vec_padded(32)?);
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(raw)))
    }

    /// `GET /kbs/v0/resource/<repo>/<type>/<tag>`.
    fn resource(&self, request: &Message, path: &str) -> Result<Vec<u8>, Refusal> {
        let id = request
            .cookie(COOKIE)
            .ok_or_else(|| refuse(401, "MissingCookie", "no kbs-session-id cookie"))?;
        let key = {
            let sessions = self.sessions();
            let session = sessions
                .get(id)
                .ok_or_else(|| refuse(401, "UnknownSession", "no such session"))?;
            let attested = session
                .attested
                .as_ref()
                .ok_or_else(|| refuse(401, "NotAttested", "the session has not attested"))?;
            if attested.at.elapsed() > self.config.session_lifetime {
                return Err(refuse(
                    401,
                    "ExpiredSession",
                    "the attested session expired",
                ));
            }
            let _ = &attested.token;
            attested.key.clone()
        };
        let segments: Vec<&str> = path.split('/').collect();
        if segments.len() != 3 || !segments.iter().all(|s| segment_ok(s)) {
            return Err(refuse(
                404,
                "ResourceNotFound",
                "a resource is repo/type/tag",
            ));
        }
        if !self.config.allowed.iter().any(|p| allowed(p, path)) {
            return Err(refuse(
                403,
                "ResourceForbidden",
                format!("{path} is outside the policy"),
            ));
        }
        let file = segments
            .iter()
            .fold(self.config.resources.clone(), |p, s| p.join(s));
        let secret = std::fs::read(&file)
            .map_err(|_| refuse(404, "ResourceNotFound", format!("no resource {path}")))?;
        super::jwe::seal(&key, &secret)
            .map_err(|e| refuse(401, "InvalidTeePubKey", verify::describe(&e)))
    }

    /// Serves one request.
    pub fn handle(&self, request: &Message) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut parts = request.start.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        let json = ("Content-Type".to_string(), "application/json".to_string());
        let costly = method == "POST" && (path == "/kbs/v0/auth" || path == "/kbs/v0/attest");
        let limited = costly && self.rate.as_ref().is_some_and(|r| !r.admit());
        let result = match (method, path) {
            _ if limited => Err(refuse(
                429,
                "TooManyRequests",
                "the KBS's request rate is exceeded; retry later",
            )),
            ("POST", "/kbs/v0/auth") => self.auth(request).map(|(id, body)| {
                let cookie = format!("{COOKIE}={id}; Path=/kbs; HttpOnly");
                (
                    vec![json.clone(), ("Set-Cookie".to_string(), cookie)],
                    body,
                    "auth",
                )
            }),
            ("POST", "/kbs/v0/attest") => self
                .attest(request)
                .map(|body| (vec![json.clone()], body, "attest")),
            ("GET", p) if p.starts_with("/kbs/v0/resource/") => self
                .resource(request, &p["/kbs/v0/resource/".len()..])
                .map(|body| (vec![json.clone()], body, "resource")),
            _ => Err(refuse(404, "NotFound", format!("{method} {path}"))),
        };
        match result {
            Ok((headers, body, event)) => {
                log(serde_json::json!({"event": event, "path": path, "decision": "allow"}));
                (200, headers, body)
            }
            Err(r) => {
                log(
                    serde_json::json!({"path": path, "decision": "refuse", "type": r.kind, "detail": r.detail}),
                );
                let body = serde_json::to_vec(&kbs_types::ErrorInformation {
                    error_type: format!(
                        "https://github.com/confidential-containers/kbs/errors/{}",
                        r.kind
                    ),
                    detail: r.detail,
                })
                .unwrap_or_default();
                (r.status, vec![json], body)
            }
        }
    }

    /// Serves one connection: one request, one response.
    pub fn serve_connection<S: std::io::Read + std::io::Write>(&self, stream: S) {
        let mut stream = stream;
        let (status, headers, body) = match read_message(&mut stream) {
            Ok(request) => self.handle(&request),
            Err(e) => {
                let detail = verify::describe(&e);
                (
                    400,
                    Vec::new(),
                    format!(r#"{{"type":"InvalidRequest","detail":"{detail}"}}"#).into_bytes(),
                )
            }
        };
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let _ = write_message(
            &mut stream,
            &format!("HTTP/1.1 {status} {reason}"),
            &headers,
            &body,
        );
    }

    /// Serves `incoming` until it ends, a thread per connection, at most
    /// [`MAX_CONNECTIONS`] at once (more wait in the listen queue).
    pub fn serve<S, I>(self: &Arc<Self>, incoming: I)
    where
        S: std::io::Read + std::io::Write + Send + 'static,
        I: Iterator<Item = std::io::Result<S>>,
    {
        self.serve_upgraded(incoming, Some);
    }

    /// [`Kbs::serve`], with each connection first turned by `upgrade` (a
    /// TLS handshake) in its own thread; `None` drops it.
    pub fn serve_upgraded<S, T, I, U>(self: &Arc<Self>, incoming: I, upgrade: U)
    where
        S: Send + 'static,
        T: std::io::Read + std::io::Write,
        I: Iterator<Item = std::io::Result<S>>,
        U: Fn(S) -> Option<T> + Clone + Send + 'static,
    {
        for stream in incoming.flatten() {
            while self.connections.load(Ordering::Acquire) >= MAX_CONNECTIONS {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.connections.fetch_add(1, Ordering::AcqRel);
            let kbs = self.clone();
            let upgrade = upgrade.clone();
            let spawned = std::thread::Builder::new()
                .name("kbs".into())
                .spawn(move || {
                    if let Some(stream) = upgrade(stream) {
                        kbs.serve_connection(stream);
                    }
                    kbs.connections.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.connections.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}
