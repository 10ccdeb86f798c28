//! AMD Key Distribution Service (KDS): URLs, the local cache, and a small
//! HTTP/1.1 client.
//!
//! URL formats follow AMD's "Versioned Chip Endorsement Key (VCEK)
//! Certificate and KDS Interface Specification" (publication 57230):
//! `/vcek/v1/{product}/{hwid}?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..`
//! (Turin: `fmcSPL` first and an 8-byte hwID), `/{vcek,vlek}/v1/{product}/cert_chain`
//! and `/{vcek,vlek}/v1/{product}/crl`. SPL values are decimal, zero-padded
//! to two digits as in AMD's examples (KDS also accepts them unpadded).
//!
//! This module is the crate's network and file-system edge: URL and cache
//! path construction are pure; [`Client`] and the `cache_*` functions do
//! I/O. The client speaks plain HTTP/1.1 (`Connection: close`) over TCP, or
//! over TLS via system OpenSSL for `https://`, with connect/read timeouts,
//! a size cap, a progress line on stderr, and back-off on HTTP 429/503
//! (honouring `Retry-After`) because KDS rate-limits bulk fetches.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use crate::chain::VekKind;
use crate::hex;
use crate::report::{Product, TcbVersion};

/// AMD's production KDS.
pub const KDS_BASE: &str = "https://kdsintf.amd.com";
/// Responses larger than this are refused (a CRL is tens of KiB).
const MAX_BODY: usize = 8 << 20;
/// Longest wait honoured from a `Retry-After` header.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

/// Why a KDS download or cache operation failed.
#[derive(Debug, Error)]
pub enum KdsError {
    #[error("URL {0:?} is not http:// or https://host[:port]/path")]
    ParseUrl(String),
    #[error("cannot connect to {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("TLS handshake with {host} failed: {detail}")]
    Tls { host: String, detail: String },
    #[error("talking to {host}: {detail}")]
    Transfer { host: String, detail: String },
    #[error("malformed HTTP response from {host}: {detail}")]
    ParseResponse { host: String, detail: String },
    #[error("{url}: HTTP {status}")]
    CheckStatus { url: String, status: u16 },
    #[error("{url}: still rate-limited (HTTP {status}) after {attempts} attempts")]
    RateLimited {
        url: String,
        status: u16,
        attempts: u32,
    },
    #[error("{url}: response exceeds {MAX_BODY} bytes")]
    CheckSize { url: String },
    #[error("cannot write cache file {path}")]
    WriteCache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `{base}/vcek/v1/{product}/{hwid}?...` for the VCEK of `chip_id` at `tcb`
/// (use the report's REPORTED_TCB: the TCB the VCEK was derived at).
pub fn vcek_url(base: &str, product: Product, chip_id: &[u8; 64], tcb: &TcbVersion) -> String {
    let t = tcb.parts(product.tcb_layout());
    let hwid = hex::encode(&chip_id[..product.chip_id_len()]);
    let fmc = t.fmc.map(|f| format!("fmcSPL={f:02}&")).unwrap_or_default();
    format!(
        "{}/vcek/v1/{}/{hwid}?{fmc}blSPL={:02}&teeSPL={:02}&snpSPL={:02}&ucodeSPL={:02}",
        base.trim_end_matches('/'),
        product.kds_name(),
        t.bootloader,
        t.tee,
        t.snp,
        t.microcode
    )
}

fn kind_path(kind: VekKind) -> &'static str {
    match kind {
        VekKind::Vcek => "vcek",
        VekKind::Vlek => "vlek",
    }
}

/// `cert_chain`: PEM ASK (or ASVK) then ARK.
pub fn cert_chain_url(base: &str, product: Product, kind: VekKind) -> String {
    format!(
        "{}/{}/v1/{}/cert_chain",
        base.trim_end_matches('/'),
        kind_path(kind),
        product.kds_name()
    )
}

/// The ARK-signed CRL (DER).
pub fn crl_url(base: &str, product: Product, kind: VekKind) -> String {
    format!(
        "{}/{}/v1/{}/crl",
        base.trim_end_matches('/'),
        kind_path(kind),
        product.kds_name()
    )
}

/// Cache layout, keyed by product, hwID and TCB:
/// `{cache}/{product}/vcek/{hwid}/{reported_tcb hex}.der`.
pub fn vcek_cache_path(
    cache: &Path,
    product: Product,
    chip_id: &[u8; 64],
    tcb: &TcbVersion,
) -> PathBuf {
    cache
        .join(product.kds_name())
        .join("vcek")
        .join(hex::encode(&chip_id[..product.chip_id_len()]))
        .join(format!("{}.der", tcb.raw_hex()))
}

/// `{cache}/{product}/{vcek,vlek}_cert_chain.pem`.
pub fn chain_cache_path(cache: &Path, product: Product, kind: VekKind) -> PathBuf {
    cache
        .join(product.kds_name())
        .join(format!("{}_cert_chain.pem", kind_path(kind)))
}

/// `{cache}/{product}/{vcek,vlek}_crl.der`.
pub fn crl_cache_path(cache: &Path, product: Product, kind: VekKind) -> PathBuf {
    cache
        .join(product.kds_name())
        .join(format!("{}_crl.der", kind_path(kind)))
}

/// Writes a cache file atomically (temp file, then rename), so a reader
/// never sees half a certificate.
pub fn cache_store(path: &Path, bytes: &[u8]) -> Result<(), KdsError> {
    let err = |source| KdsError::WriteCache {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A parsed `scheme://host[:port]/path?query`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url, KdsError> {
        let bad = || KdsError::ParseUrl(url.to_string());
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (authority, if tls { 443 } else { 80 }),
        };
        // The host goes into the Host header and the path into the request
        // line: neither may carry whitespace or control characters. IPv6
        // literals ([...]) are not supported.
        let clean = |s: &str| !s.chars().any(|c| c.is_whitespace() || c.is_control());
        let host_ok = !host.is_empty() && clean(host) && !host.contains(['[', ']', '/', '@']);
        if !host_ok || !clean(path) {
            return Err(bad());
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// Download settings.
#[derive(Debug, Clone)]
pub struct Client {
    /// Connect and per-read timeout.
    pub timeout: Duration,
    /// Attempts in total when KDS answers 429 or 503.
    pub max_attempts: u32,
    /// First back-off when no `Retry-After` is given; doubles each time.
    pub backoff: Duration,
    /// Print a progress line on stderr.
    pub progress: bool,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            timeout: Duration::from_secs(30),
            max_attempts: 5,
            backoff: Duration::from_secs(2),
            progress: true,
        }
    }
}

/// One HTTP response.
#[derive(Debug)]
struct Response {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Client {
    /// GETs `url`, backing off while KDS rate-limits, and returns the body
    /// of a 200 response.
    pub fn get(&self, url: &str) -> Result<Vec<u8>, KdsError> {
        let parsed = Url::parse(url)?;
        let mut wait = self.backoff;
        let attempts = self.max_attempts.max(1);
        for attempt in 1..=attempts {
            let resp = self.request(&parsed, url)?;
            match resp.status {
                200 => return Ok(resp.body),
                429 | 503 if attempt < attempts => {
                    let delay = resp.retry_after.unwrap_or(wait).min(MAX_BACKOFF);
                    if self.progress {
                        crate::errln!(
                            "umbra-attest: {url}: HTTP {} (rate limited), retrying in {}s ({attempt}/{attempts})",
                            resp.status,
                            delay.as_secs()
                        );
                    }
                    std::thread::sleep(delay);
                    wait = wait.saturating_mul(2).min(MAX_BACKOFF);
                }
                429 | 503 => {
                    return Err(KdsError::RateLimited {
                        url: url.to_string(),
                        status: resp.status,
                        attempts,
                    })
                }
                status => {
                    return Err(KdsError::CheckStatus {
                        url: url.to_string(),
                        status,
                    })
                }
            }
        }
        Err(KdsError::RateLimited {
            url: url.to_string(),
            status: 429,
            attempts,
        })
    }

    fn request(&self, url: &Url, full: &str) -> Result<Response, KdsError> {
        let host = format!("{}:{}", url.host, url.port);
        let connect = |detail: String| KdsError::Connect {
            host: host.clone(),
            detail,
        };
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .map_err(|e| connect(e.to_string()))?
            .next()
            .ok_or_else(|| connect("no address".into()))?;
        let tcp =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| connect(e.to_string()))?;
        let transfer = |e: std::io::Error| KdsError::Transfer {
            host: host.clone(),
            detail: e.to_string(),
        };
        tcp.set_read_timeout(Some(self.timeout)).map_err(transfer)?;
        tcp.set_write_timeout(Some(self.timeout))
            .map_err(transfer)?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: umbra-attest/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            url.path,
            url.host,
            env!("CARGO_PKG_VERSION")
        );
        let raw = if url.tls {
            let connector =
                openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                    .map_err(|e| KdsError::Tls {
                        host: host.clone(),
                        detail: e.to_string(),
                    })?
                    .build();
            let mut s = connector
                .connect(&url.host, tcp)
                .map_err(|e| KdsError::Tls {
                    host: host.clone(),
                    detail: e.to_string(),
                })?;
            s.write_all(request.as_bytes()).map_err(transfer)?;
            self.read_all(&mut s, full, &host)?
        } else {
            let mut s = tcp;
            s.write_all(request.as_bytes()).map_err(transfer)?;
            self.read_all(&mut s, full, &host)?
        };
        parse_response(&raw, &host)
    }

    /// Reads until EOF (the server closes: `Connection: close`), showing
    /// progress against Content-Length once the head has arrived.
    fn read_all(&self, s: &mut impl Read, url: &str, host: &str) -> Result<Vec<u8>, KdsError> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut total: Option<usize> = None;
        loop {
            let n = match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                // Some TLS servers drop the connection without close_notify.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => break,
                Err(e) => {
                    return Err(KdsError::Transfer {
                        host: host.to_string(),
                        detail: e.to_string(),
                    })
                }
            };
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_BODY {
                return Err(KdsError::CheckSize {
                    url: url.to_string(),
                });
            }
            if total.is_none() {
                total = head_end(&buf).and_then(|h| content_length(&buf[..h]));
            }
            if self.progress {
                let body = head_end(&buf).map_or(0, |h| buf.len() - h);
                let line = match total {
                    Some(t) => format!("\r  {url}: {body}/{t} bytes"),
                    None => format!("\r  {url}: {body} bytes"),
                };
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            }
        }
        if self.progress {
            crate::errln!("");
        }
        Ok(buf)
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn content_length(head: &[u8]) -> Option<usize> {
    header(&String::from_utf8_lossy(head), "content-length").and_then(|v| v.parse().ok())
}

/// The fuzz target's door to [`parse_response`]: the status and body of a
/// raw KDS response.
#[doc(hidden)]
pub fn fuzz_parse_response(raw: &[u8]) -> Option<(u16, usize)> {
    parse_response(raw, "kds.fuzz")
        .ok()
        .map(|r| (r.status, r.body.len()))
}

/// Splits status, headers and body; undoes chunked transfer encoding.
fn parse_response(raw: &[u8], host: &str) -> Result<Response, KdsError> {
    let bad = |detail: &str| KdsError::ParseResponse {
        host: host.to_string(),
        detail: detail.to_string(),
    };
    let h = head_end(raw).ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..h]).into_owned();
    let status_line = head.lines().next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status code"))?;
    let retry_after = header(&head, "retry-after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = raw[h..].to_vec();
    let chunked =
        header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked encoding"))?;
    } else if let Some(len) = content_length(&raw[..h]) {
        if body.len() < len {
            return Err(bad("body shorter than Content-Length"));
        }
        body.truncate(len);
    }
    Ok(Response {
        status,
        retry_after,
        body,
    })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size.checked_add(2)? {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u = Url::parse("http://127.0.0.1:8080/vcek/v1/Milan/crl").expect("url");
        assert_eq!(
            (u.tls, u.port, u.path.as_str()),
            (false, 8080, "/vcek/v1/Milan/crl")
        );
        assert_eq!(
            Url::parse("https://kdsintf.amd.com").map(|u| u.port).ok(),
            Some(443)
        );
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://x/a b").is_err());
        assert!(
            Url::parse("http://evil\r\nX-Injected: 1/").is_err(),
            "header injection through the host"
        );
        assert!(Url::parse("http://user@host/").is_err());
        assert!(Url::parse("http://host/a\tb").is_err());
    }

    #[test]
    fn responses_parse() {
        let r =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef", "h").expect("ok");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "h",
        )
        .expect("chunked");
        assert_eq!(r.body, b"abcde");
        let r =
            parse_response(b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\n\r\n", "h").expect("429");
        assert_eq!(
            (r.status, r.retry_after),
            (429, Some(Duration::from_secs(7)))
        );
        assert!(parse_response(b"garbage", "h").is_err());
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert!(parse_response(huge, "h").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", "h").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 3000, failure_persistence: None, ..Default::default() })]
        #[test]
        fn response_parser_never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(&body);
            let _ = parse_response(&raw, "h");
            let _ = parse_response(&body, "h");
            let _ = Url::parse(&String::from_utf8_lossy(&body));
        }
    }
}
