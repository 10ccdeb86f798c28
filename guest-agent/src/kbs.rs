//! `umbra-agent fetch-secret`: the whole KBS exchange (Trustee's RCAR
//! protocol) from inside the guest, with the protocol logic in the shared
//! `no_std` client library and the evidence from an [`EvidenceProvider`]
//! (configfs-tsm in a Linux SNP guest; tests put the SNP model's signer
//! behind the same trait, replacing only the kernel).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;
use umbra_attestation::http::{read_message, write_message, HttpError, Message};
use umbra_attestation::kbs::evidence::{snp_evidence, ReportAndCerts};
use umbra_kbs_client::flow::{fetch_resource, Fetch, FlowError, Reply};
use umbra_kbs_client::KbsError;

/// Where a report comes from.
pub trait EvidenceProvider {
    /// Its name, for the user.
    fn name(&self) -> &str;
    /// A signed report carrying `report_data`, and the certificates (DER)
    /// that came with it.
    fn evidence(
        &self,
        report_data: &[u8; 64],
    ) -> Result<ReportAndCerts, Box<dyn std::error::Error + Send + Sync>>;
}

/// Where the KBS listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://HOST:PORT`.
    Tcp(String),
    /// `https://HOST:PORT`: TLS, the server's name checked against `ca`
    /// (PEM trust anchors) or the system's roots.
    Https {
        /// `HOST:PORT`.
        host: String,
        /// Trust anchors (`--kbs-ca`).
        ca: Option<PathBuf>,
    },
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `http://HOST:PORT[/]`, `https://HOST:PORT[/]` or `unix:PATH`.
    pub fn parse(url: &str) -> Option<Endpoint> {
        if let Some(path) = url.strip_prefix("unix:") {
            return Some(Endpoint::Unix(PathBuf::from(path)));
        }
        let valid = |h: &str| !h.is_empty() && !h.contains('/');
        if let Some(host) = url
            .strip_prefix("https://")
            .map(|h| h.trim_end_matches('/'))
        {
            return valid(host).then(|| Endpoint::Https {
                host: host.to_string(),
                ca: None,
            });
        }
        let host = url.strip_prefix("http://")?.trim_end_matches('/');
        valid(host).then(|| Endpoint::Tcp(host.to_string()))
    }
}

/// Why the exchange failed; each refusal keeps the KBS's error type.
#[derive(Debug, Error)]
pub enum FetchError {
    /// The KBS could not be reached.
    #[error("cannot reach the KBS")]
    Connect(#[source] std::io::Error),
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the KBS failed")]
    Http(#[from] HttpError),
    /// The KBS refused a step.
    #[error("the KBS refused {step} ({status} {kind}): {detail}")]
    Refused {
        /// `auth`, `attest` or `resource`.
        step: &'static str,
        /// HTTP status.
        status: u16,
        /// The error type it named.
        kind: String,
        /// Its detail.
        detail: String,
    },
    /// The evidence could not be obtained.
    #[error("cannot obtain evidence from {provider}")]
    Evidence {
        /// The provider.
        provider: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A protocol step failed on this side (bad challenge, JWE...).
    #[error("KBS protocol")]
    Protocol(#[from] KbsError),
    /// The evidence could not be put in Trustee's form.
    #[error("cannot build the evidence")]
    BuildEvidence(#[from] umbra_attestation::kbs::evidence::EvidenceError),
    /// The KBS's auth reply set no session cookie.
    #[error("the KBS set no session cookie")]
    NoCookie,
    /// TLS could not be set up (trust anchors).
    #[error("cannot set up TLS to the KBS")]
    Tls(#[from] umbra_attestation::kbs::tls::TlsError),
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// HTTP/1.1 to the KBS, one connection per request.
struct HttpTransport<'a> {
    endpoint: &'a Endpoint,
    tls: Option<openssl::ssl::SslConnector>,
}

impl<'a> HttpTransport<'a> {
    fn new(endpoint: &'a Endpoint) -> Result<Self, FetchError> {
        let tls = match endpoint {
            Endpoint::Https { ca, .. } => {
                Some(umbra_attestation::kbs::tls::connector(ca.as_deref())?)
            }
            _ => None,
        };
        Ok(HttpTransport { endpoint, tls })
    }
}

impl umbra_kbs_client::flow::Transport for HttpTransport<'_> {
    type Error = FetchError;

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, FetchError> {
        let endpoint = self.endpoint;
        let mut stream: Box<dyn Stream> = match endpoint {
            Endpoint::Tcp(host) => {
                Box::new(std::net::TcpStream::connect(host).map_err(FetchError::Connect)?)
            }
            Endpoint::Https { host, .. } => {
                let Some(tls) = &self.tls else {
                    return Err(FetchError::Connect(std::io::ErrorKind::NotConnected.into()));
                };
                Box::new(
                    umbra_attestation::kbs::tls::connect(tls, host).map_err(FetchError::Connect)?,
                )
            }
            Endpoint::Unix(path) => Box::new(
                std::os::unix::net::UnixStream::connect(path).map_err(FetchError::Connect)?,
            ),
        };
        let host = match endpoint {
            Endpoint::Tcp(h) | Endpoint::Https { host: h, .. } => h.as_str(),
            Endpoint::Unix(_) => "localhost",
        };
        let cookie_header = cookie.map(|c| format!("{}={c}", umbra_kbs_client::flow::COOKIE));
        let mut headers = vec![("Host", host), ("Content-Type", "application/json")];
        if let Some(c) = &cookie_header {
            headers.push(("Cookie", c));
        }
        write_message(
            &mut stream,
            &format!("{method} {path} HTTP/1.1"),
            &headers,
            body,
        )?;
        let message = read_message(&mut stream)?;
        Ok(Reply {
            status: status(&message),
            set_cookie: message.header("set-cookie").map(str::to_string),
            body: message.body,
        })
    }
}

fn status(message: &Message) -> u16 {
    message
        .start
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Evidence from a provider, in Trustee's form through the sev crate.
struct ProviderAttester<'a>(&'a dyn EvidenceProvider);

impl umbra_kbs_client::flow::Attester for ProviderAttester<'_> {
    type Error = FetchError;

    fn evidence(&mut self, report_data: &[u8; 64]) -> Result<serde_json::Value, FetchError> {
        let provider = self.0;
        let (report, certs) =
            provider
                .evidence(report_data)
                .map_err(|source| FetchError::Evidence {
                    provider: provider.name().to_string(),
                    source,
                })?;
        Ok(snp_evidence(&report, &certs)?)
    }
}

/// Runs the exchange for `resource` (`repo/type/tag`) with a session key
/// from `seed`; returns the secret. The steps are the shared client
/// library's (`umbra_kbs_client::flow`), as in the firmware.
pub fn fetch_secret(
    endpoint: &Endpoint,
    resource: &str,
    provider: &dyn EvidenceProvider,
    seed: &[u8; 32],
) -> Result<Vec<u8>, FetchError> {
    fetch_secret_with_init_data(endpoint, resource, provider, seed, None)
}

/// [`fetch_secret`], sending `init_data` (an initdata TOML document) whose
/// digest the KBS checks against the report's HOST_DATA.
pub fn fetch_secret_with_init_data(
    endpoint: &Endpoint,
    resource: &str,
    provider: &dyn EvidenceProvider,
    seed: &[u8; 32],
    init_data: Option<&str>,
) -> Result<Vec<u8>, FetchError> {
    let mut transport = HttpTransport::new(endpoint)?;
    let mut attester = ProviderAttester(provider);
    let fetch = Fetch {
        seed,
        resource,
        init_data,
    };
    fetch_resource(&mut transport, &mut attester, fetch).map_err(|e| match e {
        FlowError::Transport(e) | FlowError::Attester(e) => e,
        FlowError::Refused {
            step,
            status,
            kind,
            detail,
        } => FetchError::Refused {
            step: step.name(),
            status,
            kind,
            detail,
        },
        FlowError::NoCookie => FetchError::NoCookie,
        FlowError::Protocol(e) => FetchError::Protocol(e),
    })
}

/// Whether `path` is on a filesystem that keeps data across reboots
/// (anything but tmpfs and ramfs): a secret belongs in memory.
pub fn is_persistent(path: &Path) -> bool {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return true;
    };
    let Ok(dir) = dir.canonicalize() else {
        return true;
    };
    // The longest mount point that contains the directory decides.
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, fstype) = (f.next()?, f.next()?, f.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), fstype.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .is_none_or(|(_, fstype)| fstype != "tmpfs" && fstype != "ramfs")
}
