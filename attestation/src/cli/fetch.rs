//! `umbra-attest fetch {ca,vcek,vlek-chain,crl}`: download from AMD KDS into
//! the local cache so that `verify` works offline.
//!
//! Everything downloaded is checked before it is cached: the chain must end
//! in the embedded ARK, the VCEK must chain to the embedded ASK and carry the
//! report's hwID and TCB, the CRL must be signed by the ARK.
//! Exit codes: 0 ok, 3 bad input, 4 downloaded content is not authentic,
//! 5 network or KDS error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use openssl::x509::{X509Crl, X509};
use umbra_attestation::chain::{self, VekKind};
use umbra_attestation::kds::{self, Client, KDS_BASE};
use umbra_attestation::report::{AttestationReport, Product};
use umbra_attestation::verify;

use super::verify::{read_input, EXIT_AUTHENTICITY, EXIT_MALFORMED};

pub const EXIT_NETWORK: i32 = 5;

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand, Debug)]
enum What {
    /// The ARK and ASK (KDS `cert_chain`) of a product.
    Ca(Target),
    /// The VCEK for a report's CHIP_ID and REPORTED_TCB.
    Vcek(Target),
    /// The ARK and ASVK (KDS `vlek/.../cert_chain`) of a product.
    VlekChain(Target),
    /// AMD's CRL for a product (signed by its ARK).
    Crl {
        #[command(flatten)]
        target: Target,
        /// The VLEK CRL instead of the VCEK one.
        #[arg(long)]
        vlek: bool,
    },
}

#[derive(Args, Debug)]
struct Target {
    /// Product (milan, genoa, turin); taken from --report when omitted.
    #[arg(long, value_parser = parse_product)]
    product: Option<Product>,
    /// Attestation report naming the product (v3+), chip and TCB.
    #[arg(long)]
    report: Option<PathBuf>,
    /// KDS base URL (override for mirrors and tests).
    #[arg(long = "kds-url", default_value = KDS_BASE)]
    kds_url: String,
    /// Cache directory (default: $UMBRA_KDS_CACHE, else ~/.cache/umbra/kds).
    #[arg(long = "cache-dir")]
    cache_dir: Option<PathBuf>,
    /// Also write the downloaded file here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Connect/read timeout in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Attempts when KDS rate-limits (HTTP 429/503).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// First back-off in milliseconds when no Retry-After is sent.
    #[arg(long = "backoff-ms", default_value_t = 2000)]
    backoff_ms: u64,
    /// Download even when the cache already has the file.
    #[arg(long)]
    refresh: bool,
    /// Print the URL and exit without downloading.
    #[arg(long = "print-url")]
    print_url: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

fn parse_product(s: &str) -> Result<Product, String> {
    Product::from_name(s).ok_or_else(|| format!("{s:?} is not milan, genoa or turin"))
}

/// `$UMBRA_KDS_CACHE`, else `$XDG_CACHE_HOME/umbra/kds`, else `~/.cache/umbra/kds`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("UMBRA_KDS_CACHE") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("umbra/kds"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/umbra/kds"))
}

/// Evidence found in the KDS cache for one report.
#[derive(Default)]
pub struct CachedEvidence {
    pub vek: Option<X509>,
    pub intermediate: Option<X509>,
    pub ark: Option<X509>,
    pub crl: Option<X509Crl>,
}

/// Looks up the report's VCEK (by product, hwID, TCB), the chain and the CRL
/// in the cache. Unreadable cache entries are ignored (they are re-fetched).
pub fn cached_evidence(dir: &Path, report: &AttestationReport) -> CachedEvidence {
    let kind = match report.key_info.signing_key {
        umbra_attestation::report::SigningKey::Vlek => VekKind::Vlek,
        _ => VekKind::Vcek,
    };
    // Version-2 reports do not name the product: try those that made them.
    let products: Vec<Product> = match report.product_from_cpuid() {
        Some(p) => vec![p],
        None => vec![Product::Milan, Product::Genoa],
    };
    let mut out = CachedEvidence::default();
    for p in products {
        let read_cert = |path: PathBuf| -> Option<Vec<X509>> {
            let bytes = std::fs::read(&path).ok()?;
            chain::load_certs(&bytes, &path.display().to_string()).ok()
        };
        let vek = match kind {
            VekKind::Vcek => read_cert(kds::vcek_cache_path(
                dir,
                p,
                &report.chip_id,
                &report.reported_tcb,
            ))
            .and_then(|c| c.into_iter().next()),
            VekKind::Vlek => None,
        };
        if vek.is_none() && out.vek.is_some() {
            continue;
        }
        let found = vek.is_some();
        out.vek = vek;
        if let Some(mut c) = read_cert(kds::chain_cache_path(dir, p, kind)) {
            if c.len() == 2 {
                out.ark = c.pop();
                out.intermediate = c.pop();
            }
        }
        out.crl = std::fs::read(kds::crl_cache_path(dir, p, kind))
            .ok()
            .and_then(|b| chain::load_crl(&b, "cached CRL").ok());
        if found {
            break;
        }
    }
    out
}

struct Failure(i32, String);

fn fail(code: i32, msg: impl std::fmt::Display) -> Failure {
    Failure(code, msg.to_string())
}

pub fn run(args: FetchArgs) -> i32 {
    match fetch(args.what) {
        Ok(()) => 0,
        Err(Failure(code, msg)) => {
            umbra_attestation::errln!("umbra-attest: {}", msg.replace('\n', " "));
            code
        }
    }
}

fn load_report(t: &Target) -> Result<Option<AttestationReport>, Failure> {
    let Some(p) = &t.report else { return Ok(None) };
    let bytes = read_input(p).map_err(|e| fail(EXIT_MALFORMED, e))?;
    AttestationReport::from_any(&bytes)
        .map(Some)
        .map_err(|e| fail(EXIT_MALFORMED, format!("{}: {e}", p.display())))
}

fn product_of(t: &Target, report: Option<&AttestationReport>) -> Result<Product, Failure> {
    let from_report = report.and_then(AttestationReport::product_from_cpuid);
    match (t.product, from_report) {
        (Some(a), Some(b)) if a != b => Err(fail(
            EXIT_MALFORMED,
            format!("--product {a} contradicts the report's CPUID ({b})"),
        )),
        (Some(p), _) | (None, Some(p)) => Ok(p),
        (None, None) => Err(fail(
            EXIT_MALFORMED,
            "cannot tell the product: give --product, or a version 3+ --report",
        )),
    }
}

fn client(t: &Target) -> Client {
    Client {
        timeout: Duration::from_secs(t.timeout.max(1)),
        max_attempts: t.retries.max(1),
        backoff: Duration::from_millis(t.backoff_ms),
        progress: !t.quiet,
    }
}

fn store(t: &Target, cache: &Path, bytes: &[u8]) -> Result<(), Failure> {
    kds::cache_store(cache, bytes).map_err(|e| fail(EXIT_MALFORMED, verify::describe(&e)))?;
    if let Some(out) = &t.out {
        std::fs::write(out, bytes).map_err(|e| {
            fail(
                EXIT_MALFORMED,
                format!("cannot write {}: {e}", out.display()),
            )
        })?;
    }
    umbra_attestation::outln!("{}", cache.display());
    Ok(())
}

fn cache_root(t: &Target) -> Result<PathBuf, Failure> {
    t.cache_dir
        .clone()
        .or_else(default_cache_dir)
        .ok_or_else(|| {
            fail(
                EXIT_MALFORMED,
                "no cache directory: give --cache-dir or set UMBRA_KDS_CACHE",
            )
        })
}

fn fetch(what: What) -> Result<(), Failure> {
    let (t, kind, is_crl, is_vcek) = match &what {
        What::Ca(t) => (t, VekKind::Vcek, false, false),
        What::VlekChain(t) => (t, VekKind::Vlek, false, false),
        What::Crl { target, vlek } => (
            target,
            if *vlek { VekKind::Vlek } else { VekKind::Vcek },
            true,
            false,
        ),
        What::Vcek(t) => (t, VekKind::Vcek, false, true),
    };
    let report = load_report(t)?;
    if is_vcek && report.is_none() {
        return Err(fail(
            EXIT_MALFORMED,
            "fetch vcek needs --report (for CHIP_ID and REPORTED_TCB)",
        ));
    }
    let product = product_of(t, report.as_ref())?;
    let cache = cache_root(t)?;
    let (url, path) = if let (true, Some(r)) = (is_vcek, &report) {
        (
            kds::vcek_url(&t.kds_url, product, &r.chip_id, &r.reported_tcb),
            kds::vcek_cache_path(&cache, product, &r.chip_id, &r.reported_tcb),
        )
    } else if is_crl {
        (
            kds::crl_url(&t.kds_url, product, kind),
            kds::crl_cache_path(&cache, product, kind),
        )
    } else {
        (
            kds::cert_chain_url(&t.kds_url, product, kind),
            kds::chain_cache_path(&cache, product, kind),
        )
    };
    if t.print_url {
        umbra_attestation::outln!("{url}");
        return Ok(());
    }
    if path.is_file() && !t.refresh {
        if !t.quiet {
            umbra_attestation::errln!(
                "umbra-attest: already cached (use --refresh to download again)"
            );
        }
        umbra_attestation::outln!("{}", path.display());
        return Ok(());
    }
    let bytes = client(t)
        .get(&url)
        .map_err(|e| fail(EXIT_NETWORK, verify::describe(&e)))?;
    let ark = chain::builtin_ark(product).map_err(|e| fail(EXIT_MALFORMED, e))?;
    let reject = |why: String| fail(EXIT_AUTHENTICITY, format!("{url}: {why}; not cached"));
    if is_crl {
        let crl = chain::load_crl(&bytes, &url).map_err(|e| reject(e.to_string()))?;
        let key = ark.public_key().map_err(|e| reject(e.to_string()))?;
        if !matches!(crl.verify(&key), Ok(true)) {
            return Err(reject(format!("CRL is not signed by the {product} ARK")));
        }
        // Cached all the same (it is AMD's newest), but said: a CRL past
        // its nextUpdate may miss recent revocations.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if chain::crl_is_stale(&crl, now) {
            let next = crl
                .next_update()
                .map_or_else(|| "unknown".to_string(), |t| t.to_string());
            umbra_attestation::errln!(
                "umbra-attest: warning: {url}: the CRL's nextUpdate ({next}) has passed; it may miss recent revocations"
            );
        }
    } else if let (true, Some(r)) = (is_vcek, &report) {
        let vcek = chain::load_cert(&bytes, &url).map_err(|e| reject(e.to_string()))?;
        let ask = chain::builtin_intermediate(product, VekKind::Vcek)
            .map_err(|e| reject(e.to_string()))?;
        chain::check_link(&vcek, &ask, "ASK -> VCEK").map_err(|e| reject(e.to_string()))?;
        let ext = chain::VekExtensions::from_cert(&vcek, "VCEK")
            .map_err(|e| reject(verify::describe(&e)))?;
        verify::check_chip_id(r, product, &ext).map_err(|e| reject(e.to_string()))?;
        verify::check_tcb(r, product, VekKind::Vcek, &ext).map_err(|e| reject(e.to_string()))?;
    } else {
        let certs = chain::load_certs(&bytes, &url).map_err(|e| reject(e.to_string()))?;
        let [inter, got_ark] = certs.as_slice() else {
            return Err(reject(format!(
                "expected 2 certificates, got {}",
                certs.len()
            )));
        };
        chain::check_ark_pinned(got_ark, product, &[]).map_err(|e| reject(e.to_string()))?;
        chain::check_intermediate_product(inter, product, kind)
            .map_err(|e| reject(e.to_string()))?;
        chain::check_link(inter, &ark, "ARK -> intermediate").map_err(|e| reject(e.to_string()))?;
    }
    store(t, &path, &bytes)
}
