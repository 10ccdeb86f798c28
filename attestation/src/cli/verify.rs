//! `umbra-attest verify`: check a report's authenticity (signature, chain to
//! a pinned AMD root, validity, revocation, chip and TCB binding) and, when
//! asked, appraise it against a policy.
//!
//! Exit codes (stable; scripts rely on them):
//! 0 every check passed; 1 a policy check failed; 2 usage error (clap);
//! 3 malformed or unreadable input; 4 an authenticity check failed
//! (signature, chain, pinning, validity, revocation, binding).

use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use umbra_attestation::chain::{self, VekKind};
use umbra_attestation::policy::{BitRequirements, PolicyFile, TcbMinimum};
use umbra_attestation::report::{AttestationReport, Product, SigningKey};
use umbra_attestation::verify::{self, Certificates, CheckClass, Options, Verdict};

use super::report::Format;

pub const EXIT_OK: i32 = 0;
pub const EXIT_POLICY: i32 = 1;
pub const EXIT_MALFORMED: i32 = 3;
/// A flag has a bad value (clap answers an unknown flag with 2 too).
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_AUTHENTICITY: i32 = 4;

/// Boxed so that the subcommand enum stays small (the options are many).
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    opts: Box<VerifyOpts>,
}

#[derive(Args, Debug)]
struct VerifyOpts {
    /// Attestation report (binary, hex text, or Azure HCL report).
    #[arg(long)]
    report: PathBuf,
    /// VCEK certificate (PEM or DER).
    #[arg(long, conflicts_with = "vlek")]
    vcek: Option<PathBuf>,
    /// VLEK certificate (PEM or DER).
    #[arg(long)]
    vlek: Option<PathBuf>,
    /// Directory with ark/ask/asvk/vcek/vlek/crl as .pem or .der (any of them).
    #[arg(long)]
    certs: Option<PathBuf>,
    /// ARK certificate to use (must still be pinned).
    #[arg(long)]
    ark: Option<PathBuf>,
    /// ASK (or ASVK for a VLEK) certificate to use.
    #[arg(long)]
    ask: Option<PathBuf>,
    /// KDS cert_chain bundle: ASK or ASVK, then ARK (PEM).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Accept this root besides AMD's embedded ARKs (repeatable).
    #[arg(long = "trust-root")]
    trust_root: Vec<PathBuf>,
    /// AMD CRL (DER or PEM) to check revocation against.
    #[arg(long)]
    crl: Option<PathBuf>,
    /// KDS cache directory to take the VEK, chain and CRL from when not given.
    #[arg(long = "cache-dir")]
    cache_dir: Option<PathBuf>,
    /// Verification time (RFC 3339), for judging historical evidence.
    #[arg(long)]
    at: Option<String>,
    /// Product to assume for version-2 reports whose certificates name none.
    #[arg(long, value_parser = parse_product)]
    product: Option<Product>,
    /// Policy file (TOML); flags below are merged over it.
    #[arg(long)]
    policy: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// Allowed launch measurement (48 bytes hex; repeatable).
    #[arg(long)]
    measurement: Vec<String>,
    /// Expected REPORT_DATA (hex, up to 64 bytes; zero-padded).
    #[arg(long = "report-data")]
    report_data: Option<String>,
    /// REPORT_DATA must start with these bytes (hex).
    #[arg(long)]
    nonce: Option<String>,
    /// Expected HOST_DATA (32 bytes hex).
    #[arg(long = "host-data")]
    host_data: Option<String>,
    #[arg(long = "family-id")]
    family_id: Option<String>,
    #[arg(long = "image-id")]
    image_id: Option<String>,
    /// Allowed ID key digest (repeatable).
    #[arg(long = "id-key-digest")]
    id_key_digest: Vec<String>,
    /// Allowed author key digest (repeatable).
    #[arg(long = "author-key-digest")]
    author_key_digest: Vec<String>,
    /// Allowed CHIP_ID (repeatable).
    #[arg(long = "chip-id")]
    chip_id: Vec<String>,
    #[arg(long = "min-guest-svn")]
    min_guest_svn: Option<u32>,
    /// Minimum TCB, e.g. bl=3,tee=0,snp=8,ucode=115[,fmc=1].
    #[arg(long = "min-tcb")]
    min_tcb: Option<String>,
    #[arg(long = "min-launch-tcb")]
    min_launch_tcb: Option<String>,
    /// Minimum firmware build number.
    #[arg(long = "min-build")]
    min_build: Option<u8>,
    /// Minimum firmware version MAJOR.MINOR.
    #[arg(long = "min-version")]
    min_version: Option<String>,
    /// Minimum guest-policy ABI MAJOR.MINOR.
    #[arg(long = "min-abi")]
    min_abi: Option<String>,
    /// Guest-policy bit that must be set (smt, migrate_ma, debug, single_socket, ...).
    #[arg(long = "require-policy")]
    require_policy: Vec<String>,
    /// Guest-policy bit that must be clear.
    #[arg(long = "forbid-policy")]
    forbid_policy: Vec<String>,
    /// PLATFORM_INFO bit that must be set (smt_enabled, tsme_enabled, ...).
    #[arg(long = "require-platform")]
    require_platform: Vec<String>,
    /// PLATFORM_INFO bit that must be clear.
    #[arg(long = "forbid-platform")]
    forbid_platform: Vec<String>,
    /// Required VMPL.
    #[arg(long)]
    vmpl: Option<u32>,
    /// Accept only reports signed by this key kind.
    #[arg(long = "signing-key", value_parser = parse_signing_key)]
    signing_key: Option<SigningKey>,
}

fn parse_product(s: &str) -> Result<Product, String> {
    Product::from_name(s).ok_or_else(|| format!("{s:?} is not milan, genoa or turin"))
}

fn parse_signing_key(s: &str) -> Result<SigningKey, String> {
    match s.to_ascii_lowercase().as_str() {
        "vcek" => Ok(SigningKey::Vcek),
        "vlek" => Ok(SigningKey::Vlek),
        _ => Err(format!("{s:?} is not vcek or vlek")),
    }
}

/// Reads a file, naming it in the error.
pub fn read_input(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn load_cert_file(path: &Path) -> Result<openssl::x509::X509, String> {
    let bytes = read_input(path)?;
    chain::load_cert(&bytes, &path.display().to_string()).map_err(|e| e.to_string())
}

/// Finds `name.pem`, `name.der`, `name.crt` or `name.cer` in `dir`.
fn find_in_dir(dir: &Path, name: &str) -> Option<PathBuf> {
    ["pem", "der", "crt", "cer"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
}

/// Everything read from disk before verification starts.
struct Inputs {
    report: AttestationReport,
    certs: Certificates,
    opts: Options,
    policy: Option<umbra_attestation::policy::Policy>,
}

fn gather(a: &VerifyOpts) -> Result<Inputs, String> {
    let report_bytes = read_input(&a.report)?;
    let report = AttestationReport::from_any(&report_bytes)
        .map_err(|e| format!("{}: {e}", a.report.display()))?;

    let dir = a.certs.as_deref();
    let from_dir = |name: &str| dir.and_then(|d| find_in_dir(d, name));
    let (mut vek_path, mut vek_kind) = match (&a.vcek, &a.vlek) {
        (Some(p), _) => (Some(p.clone()), Some(VekKind::Vcek)),
        (_, Some(p)) => (Some(p.clone()), Some(VekKind::Vlek)),
        _ => (None, None),
    };
    if vek_path.is_none() {
        // In a directory, take the file that matches what KEY_INFO names, so
        // a directory holding both still works.
        let order = match report.key_info.signing_key {
            SigningKey::Vlek => [("vlek", VekKind::Vlek), ("vcek", VekKind::Vcek)],
            _ => [("vcek", VekKind::Vcek), ("vlek", VekKind::Vlek)],
        };
        for (name, kind) in order {
            if let Some(p) = from_dir(name) {
                vek_path = Some(p);
                vek_kind = Some(kind);
                break;
            }
        }
    }
    let mut chain_bundle: Vec<openssl::x509::X509> = Vec::new();
    if let Some(p) = &a.chain {
        let bytes = read_input(p)?;
        chain_bundle =
            chain::load_certs(&bytes, &p.display().to_string()).map_err(|e| e.to_string())?;
        // KDS serves (ASK, ARK), but bundles come in either order: the
        // self-issued certificate is the root, whatever its position.
        let self_issued = |c: &openssl::x509::X509| {
            c.subject_name()
                .try_cmp(c.issuer_name())
                .is_ok_and(|o| o == std::cmp::Ordering::Equal)
        };
        if chain_bundle.len() == 2
            && self_issued(&chain_bundle[0])
            && !self_issued(&chain_bundle[1])
        {
            chain_bundle.swap(0, 1);
        }
    }
    let cache = a.cache_dir.clone().or_else(super::fetch::default_cache_dir);
    let cached = cache
        .as_deref()
        .map(|c| super::fetch::cached_evidence(c, &report));
    let vek = match &vek_path {
        Some(p) => load_cert_file(p)?,
        None => match cached.as_ref().and_then(|c| c.vek.clone()) {
            Some(c) => c,
            None => {
                return Err(
                    "no VCEK/VLEK: give --vcek, --vlek or --certs DIR, or `umbra-attest fetch vcek` it into the cache"
                        .into(),
                )
            }
        },
    };
    let inter_name = match report.key_info.signing_key {
        SigningKey::Vlek => "asvk",
        _ => "ask",
    };
    let intermediate = match (&a.ask, from_dir(inter_name), chain_bundle.first()) {
        (Some(p), _, _) => Some(load_cert_file(p)?),
        (None, Some(p), _) => Some(load_cert_file(&p)?),
        (None, None, Some(c)) => Some(c.clone()),
        _ => cached.as_ref().and_then(|c| c.intermediate.clone()),
    };
    let ark = match (&a.ark, from_dir("ark"), chain_bundle.get(1)) {
        (Some(p), _, _) => Some(load_cert_file(p)?),
        (None, Some(p), _) => Some(load_cert_file(&p)?),
        (None, None, Some(c)) => Some(c.clone()),
        _ => cached.as_ref().and_then(|c| c.ark.clone()),
    };
    let trust_roots = a
        .trust_root
        .iter()
        .map(|p| load_cert_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    // --crl, else crl.der/crl.pem in --certs DIR, else the cache.
    let crl = match a.crl.clone().or_else(|| from_dir("crl")) {
        Some(p) => {
            let bytes = read_input(&p)?;
            Some(chain::load_crl(&bytes, &p.display().to_string()).map_err(|e| e.to_string())?)
        }
        None => cached.and_then(|c| c.crl),
    };
    let at_unix = match &a.at {
        Some(t) => umbra_attestation::time::parse_rfc3339(t).map_err(|e| e.to_string())?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };

    let mut policy_file = match &a.policy {
        Some(p) => {
            let bytes = read_input(p)?;
            let text =
                String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text", p.display()))?;
            PolicyFile::from_toml(&text)
                .map_err(|e| format!("{}: {}", p.display(), verify::describe(&e)))?
        }
        None => PolicyFile::default(),
    };
    policy_file = policy_file.merge(flags_policy(a)?);
    let policy = if policy_file.is_empty() {
        None
    } else {
        Some(policy_file.compile().map_err(|e| verify::describe(&e))?)
    };
    Ok(Inputs {
        report,
        certs: Certificates {
            vek,
            vek_kind,
            intermediate,
            ark,
        },
        opts: Options {
            at_unix,
            trust_roots,
            crl,
            product: a.product,
        },
        policy,
    })
}

/// The policy flags as a [`PolicyFile`], so they mean exactly what the
/// same keys mean in a file.
fn flags_policy(a: &VerifyOpts) -> Result<PolicyFile, String> {
    let tcb = |field: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|s| TcbMinimum::parse(field, s))
            .transpose()
            .map_err(|e| e.to_string())
    };
    let bits = |req: &[String], forbid: &[String], min_abi: Option<String>| {
        (!req.is_empty() || !forbid.is_empty() || min_abi.is_some()).then(|| BitRequirements {
            require: req.to_vec(),
            forbid: forbid.to_vec(),
            min_abi,
        })
    };
    Ok(PolicyFile {
        measurements: a.measurement.clone(),
        report_data: a.report_data.clone(),
        nonce: a.nonce.clone(),
        host_data: a.host_data.clone(),
        family_id: a.family_id.clone(),
        image_id: a.image_id.clone(),
        id_key_digests: a.id_key_digest.clone(),
        author_key_digests: a.author_key_digest.clone(),
        chip_ids: a.chip_id.clone(),
        require_author_key: None,
        min_guest_svn: a.min_guest_svn,
        vmpl: a.vmpl,
        signing_key: a.signing_key,
        product: None,
        min_tcb: tcb("--min-tcb", &a.min_tcb)?,
        min_launch_tcb: tcb("--min-launch-tcb", &a.min_launch_tcb)?,
        min_build: a.min_build,
        min_version: a.min_version.clone(),
        guest_policy: bits(&a.require_policy, &a.forbid_policy, a.min_abi.clone()),
        platform_info: bits(&a.require_platform, &a.forbid_platform, None),
    })
}

pub fn run(args: VerifyArgs) -> i32 {
    let args = args.opts;
    // A bad value in a policy flag is a usage error (exit 2), told apart
    // from a bad file (exit 3) before any file is read.
    let at = args.at.as_deref().map_or(Ok(0), |t| {
        umbra_attestation::time::parse_rfc3339(t).map_err(|e| e.to_string())
    });
    if let Err(e) = at
        .and_then(|_| flags_policy(&args))
        .and_then(|p| p.compile().map(drop).map_err(|e| verify::describe(&e)))
    {
        umbra_attestation::errln!("umbra-attest: {e}");
        return EXIT_USAGE;
    }
    let inputs = match gather(&args) {
        Ok(i) => i,
        Err(e) => {
            let e = e.replace('\n', " ");
            if args.format == Format::Json {
                umbra_attestation::outln!(
                    "{}",
                    json!({ "ok": false, "error": e, "exit_code": EXIT_MALFORMED })
                );
            }
            umbra_attestation::errln!("umbra-attest: {e}");
            return EXIT_MALFORMED;
        }
    };
    let mut verdict: Verdict = verify::verify(&inputs.report, &inputs.certs, &inputs.opts);
    if let Some(policy) = &inputs.policy {
        verdict
            .checks
            .extend(policy.check(&inputs.report, verdict.product));
    }
    let code = if verdict.failed(CheckClass::Authenticity) {
        EXIT_AUTHENTICITY
    } else if verdict.failed(CheckClass::Policy) {
        EXIT_POLICY
    } else {
        EXIT_OK
    };
    match args.format {
        Format::Json => {
            let v = json!({
                "ok": code == EXIT_OK,
                "exit_code": code,
                "product": verdict.product.map(|p| p.to_string()),
                "checks": verdict.checks,
                "report": super::report::report_json(&inputs.report),
            });
            umbra_attestation::outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        Format::Text => {
            for c in &verdict.checks {
                umbra_attestation::outln!("{}", c.line());
            }
            let summary = match code {
                EXIT_OK => "verified".to_string(),
                EXIT_POLICY => "authentic, but policy checks failed".to_string(),
                _ => "NOT authentic".to_string(),
            };
            umbra_attestation::outln!("result: {summary}");
        }
    }
    code
}
