//! Verification of SEV-SNP evidence: report signature, certificate chain to
//! a pinned AMD root, validity, revocation, and the chip and TCB bindings
//! between the VCEK/VLEK and the report.
//!
//! Every check runs even when an earlier one failed, and each produces its
//! own named [`Check`], so a tampered report shows *all* that is wrong with
//! it (e.g. both a bad signature and a TCB mismatch). The chain part and the
//! per-report part are separate ([`verify_chain`], [`verify_report`]) so a
//! verifier can check a chain once and then many reports against it.

use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::pkey::Public;
use openssl::sha::sha384;
use openssl::x509::{X509Crl, X509};
use thiserror::Error;

use crate::chain::{self, ChainError, VekExtensions, VekKind};
use crate::hex;
use crate::report::{AttestationReport, GuestPolicy, Product, SigningKey, TcbLayout, TcbParts};

/// Why a binding or signature check failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("report is unsigned (KEY_INFO.SIGNING_KEY = 7)")]
    CheckReportSigned,
    #[error("report KEY_INFO names the {report} as signer, but a {given} was supplied")]
    MatchSigningKey {
        report: SigningKey,
        given: &'static str,
    },
    #[error("report signature does not verify with the {0} public key")]
    VerifyReportSignature(&'static str),
    #[error("cannot tell the product: {0}")]
    FindProduct(String),
    #[error("report CPUID says {report}, but the {cert_what} says {cert}")]
    MatchProduct {
        report: Product,
        cert_what: &'static str,
        cert: String,
    },
    #[error("VCEK hwID {cert} does not equal report CHIP_ID {report}")]
    MatchChipId { cert: String, report: String },
    #[error("VCEK has no hwID extension")]
    FindHwId,
    #[error("the file given as the VEK holds {subject}, which carries neither a VCEK's hwID nor a VLEK's CSP ID: not a VCEK or VLEK")]
    CheckVekCertificate { subject: String },
    #[error("TCB {component}: report REPORTED_TCB has {report}, {kind} certificate has {cert}")]
    MatchTcb {
        component: &'static str,
        report: u8,
        cert: String,
        kind: &'static str,
    },
    #[error("ECDSA verification could not run: {0}")]
    RunEcdsa(String),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// What a failed check means for the caller (and the exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckClass {
    /// Signature, chain, pinning, validity, revocation, bindings.
    Authenticity,
    /// A requirement of the caller's policy.
    Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Skip,
}

/// The outcome of one named check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub class: CheckClass,
    pub status: Status,
    pub detail: String,
}

impl Check {
    /// The check as one text line: `ok  `/`FAIL`/`warn`/`skip`, name, detail.
    pub fn line(&self) -> String {
        let tag = match self.status {
            Status::Pass => "ok  ",
            Status::Fail => "FAIL",
            Status::Warn => "warn",
            Status::Skip => "skip",
        };
        format!("{tag} {:<22} {}", self.name, self.detail)
    }

    pub fn new(name: &str, class: CheckClass, status: Status, detail: impl Into<String>) -> Self {
        Check {
            name: name.to_string(),
            class,
            status,
            detail: detail.into(),
        }
    }
    pub fn from_result<E: std::error::Error + 'static>(
        name: &str,
        class: CheckClass,
        r: Result<String, E>,
    ) -> Self {
        match r {
            Ok(detail) => Check::new(name, class, Status::Pass, detail),
            Err(e) => Check::new(name, class, Status::Fail, describe(&e)),
        }
    }
}

/// An error and its sources on one line, `outer: inner: innermost`
/// (messages do not repeat their source, so this is where they are joined).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Certificates offered with the report. Absent ARK/intermediate are taken
/// from the embedded AMD roots.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub vek: X509,
    /// `Some` when the caller said which kind it supplied (`--vcek`/`--vlek`).
    pub vek_kind: Option<VekKind>,
    pub intermediate: Option<X509>,
    pub ark: Option<X509>,
}

/// Verification settings that are not part of the evidence.
#[derive(Default)]
pub struct Options {
    /// Verification time, Unix seconds.
    pub at_unix: i64,
    /// Roots accepted besides AMD's (`--trust-root`).
    pub trust_roots: Vec<X509>,
    pub crl: Option<X509Crl>,
    /// Product to assume when neither report nor certificate names one.
    pub product: Option<Product>,
}

/// A chain that verified, reduced to what report checks need.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    pub product: Product,
    pub kind: VekKind,
    pub key: EcKey<Public>,
    pub extensions: VekExtensions,
}

/// All checks of one verification, in order.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    pub product: Option<Product>,
    pub checks: Vec<Check>,
}

impl Verdict {
    pub fn failed(&self, class: CheckClass) -> bool {
        self.checks
            .iter()
            .any(|c| c.class == class && c.status == Status::Fail)
    }
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// The certificate's subject, for messages (`CN=SEV-Milan, ...`).
fn describe_subject(cert: &X509) -> String {
    let parts: Vec<String> = cert
        .subject_name()
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect();
    format!("the certificate {}", parts.join(", "))
}

/// Decides the product from the report's CPUID (v3+), the VEK's
/// productName, the intermediate's name, or the caller's hint, and insists
/// they agree where more than one is present.
pub fn determine_product(
    report: &AttestationReport,
    ext: Option<&VekExtensions>,
    intermediate: Option<&X509>,
    hint: Option<Product>,
) -> Result<Product, VerifyError> {
    let from_report = report.product_from_cpuid();
    let from_cert = ext
        .and_then(|e| e.product_name.as_deref())
        .map(|n| (n.to_string(), Product::from_name(n)));
    if let (Some(r), Some((name, c))) = (from_report, &from_cert) {
        if *c != Some(r) {
            return Err(VerifyError::MatchProduct {
                report: r,
                cert_what: "VEK productName",
                cert: name.clone(),
            });
        }
    }
    if let (Some(c), Some(h)) = (report.cpuid, hint) {
        if let Some(r) = Product::from_cpuid(c.family, c.model) {
            if r != h {
                return Err(VerifyError::MatchProduct {
                    report: r,
                    cert_what: "--product option",
                    cert: h.to_string(),
                });
            }
        }
    }
    // A VEK that names a product no one knows is not some other product's
    // VEK in disguise: refused, as go-sev-guest refuses it, rather than
    // taken for whatever the intermediate's name suggests.
    if let (None, Some((name, None))) = (from_report, &from_cert) {
        return Err(VerifyError::FindProduct(format!(
            "the VEK's productName {name:?} is not Milan, Genoa or Turin"
        )));
    }
    let from_intermediate = intermediate.and_then(|c| {
        let cn = chain::common_name(c);
        Product::from_name(cn.rsplit('-').next().unwrap_or(&cn))
    });
    from_report
        .or(from_cert.and_then(|(_, p)| p))
        .or(hint)
        .or(from_intermediate)
        .ok_or_else(|| {
            let why = match report.cpuid {
                Some(c) => format!(
                    "CPUID family {:#x} model {:#x} is not Milan, Genoa or Turin and no certificate names a product",
                    c.family, c.model
                ),
                None => "version 2 report has no CPUID and no certificate names a product (use --product)".into(),
            };
            VerifyError::FindProduct(why)
        })
}

/// Which key kind a certificate is: VLEKs carry cspID, VCEKs hwID.
fn cert_kind(ext: &VekExtensions, cert: &X509) -> Option<VekKind> {
    let cn = chain::common_name(cert);
    if ext.csp_id.is_some() || cn == "SEV-VLEK" {
        Some(VekKind::Vlek)
    } else if ext.hw_id.is_some() || cn == "SEV-VCEK" {
        Some(VekKind::Vcek)
    } else {
        None
    }
}

const A: CheckClass = CheckClass::Authenticity;

/// Verifies the chain for `report` and returns the checks, plus the chain's
/// key material when every authenticity check of the chain passed.
pub fn verify_chain(
    report: &AttestationReport,
    certs: &Certificates,
    opts: &Options,
) -> (Vec<Check>, Option<VerifiedChain>) {
    let mut checks = Vec::new();
    let ext = VekExtensions::from_cert(&certs.vek, "VEK certificate");
    let ext_ok = ext.as_ref().ok();

    // Signing key: KEY_INFO, the caller's flag and the certificate must agree.
    let report_kind = match report.key_info.signing_key {
        SigningKey::Vcek => Some(VekKind::Vcek),
        SigningKey::Vlek => Some(VekKind::Vlek),
        SigningKey::None => None,
    };
    let found_kind = ext_ok.and_then(|e| cert_kind(e, &certs.vek));
    let key_check = match (report_kind, certs.vek_kind, found_kind) {
        (None, _, _) => Err(VerifyError::CheckReportSigned),
        (Some(r), Some(g), _) if r != g => Err(VerifyError::MatchSigningKey {
            report: report.key_info.signing_key,
            given: g.name(),
        }),
        (Some(r), _, Some(f)) if r != f => Err(VerifyError::MatchSigningKey {
            report: report.key_info.signing_key,
            given: f.name(),
        }),
        (Some(r), _, _) => Ok(format!("report signed by the {}", r.name())),
    };
    let kind = report_kind.or(certs.vek_kind).unwrap_or(VekKind::Vcek);
    checks.push(Check::from_result("signing-key", A, key_check));

    // An ASK or ARK given as the VEK parses, but names no chip (hwID) and
    // no CSP (VLEK): say what the file holds instead of "ok".
    let ext_check = match &ext {
        Ok(e) if e.hw_id.is_none() && e.csp_id.is_none() => Err(VerifyError::CheckVekCertificate {
            subject: describe_subject(&certs.vek),
        }),
        Ok(_) => Ok("AMD extensions present".to_string()),
        Err(e) => Err(e.clone().into()),
    };
    checks.push(Check::from_result("vek-extensions", A, ext_check));

    let product = determine_product(report, ext_ok, certs.intermediate.as_ref(), opts.product);
    checks.push(Check::from_result(
        "product",
        A,
        product
            .as_ref()
            .map(|p| p.to_string())
            .map_err(Clone::clone),
    ));
    let Ok(product) = product else {
        return (checks, None);
    };

    let inter_name = kind.intermediate_name();
    // Without an ARK in the evidence, a `--trust-root` that issued the
    // offered intermediate is the root; otherwise AMD's embedded ARK.
    let issuing_root = certs.intermediate.as_ref().and_then(|i| {
        opts.trust_roots
            .iter()
            .find(|r| r.issued(i) == openssl::x509::X509VerifyResult::OK)
    });
    let ark = match (&certs.ark, issuing_root) {
        (Some(a), _) => Ok(a.clone()),
        (None, Some(r)) => Ok(r.clone()),
        (None, None) => chain::builtin_ark(product),
    };
    let inter = match &certs.intermediate {
        Some(i) => Ok(i.clone()),
        None => chain::builtin_intermediate(product, kind),
    };
    let (ark, inter) = match (ark, inter) {
        (Ok(a), Ok(i)) => (a, i),
        (Err(e), _) | (_, Err(e)) => {
            checks.push(Check::new("chain", A, Status::Fail, e.to_string()));
            return (checks, None);
        }
    };
    let describe = |c: &X509| {
        let fp = chain::fingerprint(c);
        format!(
            "{} ({})",
            chain::common_name(c),
            fp.get(..16).unwrap_or(&fp)
        )
    };

    checks.push(Check::from_result(
        "ark-pinned",
        A,
        chain::check_ark_pinned(&ark, product, &opts.trust_roots).map(|_| describe(&ark)),
    ));
    checks.push(Check::from_result(
        "ark-signature",
        A,
        chain::check_link(&ark, &ark, "ARK self-signature").map(|_| "self-signed".to_string()),
    ));
    let inter_link: &'static str = match kind {
        VekKind::Vcek => "ARK -> ASK",
        VekKind::Vlek => "ARK -> ASVK",
    };
    let vek_link: &'static str = match kind {
        VekKind::Vcek => "ASK -> VCEK",
        VekKind::Vlek => "ASVK -> VLEK",
    };
    let lname = |s: &str| s.to_ascii_lowercase();
    checks.push(Check::from_result(
        &format!("{}-product", lname(inter_name)),
        A,
        chain::check_intermediate_product(&inter, product, kind).map(|_| describe(&inter)),
    ));
    checks.push(Check::from_result(
        &format!("{}-signature", lname(inter_name)),
        A,
        chain::check_link(&inter, &ark, inter_link).map(|_| inter_link.to_string()),
    ));
    checks.push(Check::from_result(
        &format!("{}-signature", lname(kind.name())),
        A,
        chain::check_link(&certs.vek, &inter, vek_link).map(|_| vek_link.to_string()),
    ));

    // Validity at the verification time (historical evidence: `--at`).
    for (cert, what) in [
        (&ark, "ARK"),
        (&inter, inter_name),
        (&certs.vek, kind.name()),
    ] {
        checks.push(Check::from_result(
            &format!("{}-validity", lname(what)),
            A,
            chain::check_validity(cert, what, opts.at_unix)
                .map(|_| format!("{} to {}", cert.not_before(), cert.not_after())),
        ));
    }

    match &opts.crl {
        Some(crl) => {
            let r = chain::check_revocation(crl, &ark, &inter, inter_name);
            let stale = r.is_ok() && chain::crl_is_stale(crl, opts.at_unix);
            let mut c = Check::from_result(
                "revocation",
                A,
                r.map(|_| format!("{inter_name} not listed in the ARK's CRL")),
            );
            if stale {
                c.status = Status::Warn;
                c.detail = format!("{inter_name} not listed, but the CRL is past its nextUpdate");
            }
            checks.push(c);
        }
        None => checks.push(Check::new(
            "revocation",
            A,
            Status::Skip,
            "no CRL given (--crl, or `umbra-attest fetch crl` to cache one)",
        )),
    }

    let key = chain::vek_public_key(&certs.vek, kind.name()).and_then(|k| {
        k.ec_key().map_err(|e| ChainError::UseCertificate {
            what: kind.name().to_string(),
            detail: e.to_string(),
        })
    });
    let key = match key {
        Ok(k) => Some(k),
        Err(e) => {
            checks.push(Check::new("vek-key", A, Status::Fail, e.to_string()));
            None
        }
    };
    let all_ok = checks.iter().all(|c| c.status != Status::Fail);
    let verified = match (key, ext) {
        (Some(key), Ok(extensions)) if all_ok => Some(VerifiedChain {
            product,
            kind,
            key,
            extensions,
        }),
        _ => None,
    };
    (checks, verified)
}

/// Verifies the ECDSA P-384 signature over bytes 0..0x2A0 of the report.
pub fn verify_signature(
    report: &AttestationReport,
    key: &EcKey<Public>,
) -> Result<(), VerifyError> {
    let run = |e: openssl::error::ErrorStack| VerifyError::RunEcdsa(e.to_string());
    let digest = sha384(report.signed_bytes());
    let r = BigNum::from_slice(&report.sig_r).map_err(run)?;
    let s = BigNum::from_slice(&report.sig_s).map_err(run)?;
    let sig = EcdsaSig::from_private_components(r, s).map_err(run)?;
    // OpenSSL reports an out-of-range (r, s) as an error, not `false`:
    // both are a signature that does not verify.
    match sig.verify(&digest, key) {
        Ok(true) => Ok(()),
        _ => Err(VerifyError::VerifyReportSignature("VEK")),
    }
}

/// CHIP_ID must equal the VCEK hwID (8 bytes on Turin).
pub fn check_chip_id(
    report: &AttestationReport,
    product: Product,
    ext: &VekExtensions,
) -> Result<String, VerifyError> {
    let hw = ext.hw_id.as_deref().ok_or(VerifyError::FindHwId)?;
    let n = product.chip_id_len();
    let report_id = &report.chip_id[..n];
    // Turin's hwID is 8 bytes; AMD leaves CHIP_ID[8..64] zero there, and a
    // non-zero tail means the report is not from the chip the VCEK names.
    let tail_zero = report.chip_id[n..].iter().all(|&b| b == 0);
    if hw != report_id || !tail_zero {
        return Err(VerifyError::MatchChipId {
            cert: hex::encode(hw),
            report: hex::encode(&report.chip_id[..if tail_zero { n } else { 64 }]),
        });
    }
    Ok(format!("hwID {}", hex::encode(hw)))
}

/// REPORTED_TCB must equal the SPLs the VCEK/VLEK was issued for.
pub fn check_tcb(
    report: &AttestationReport,
    product: Product,
    kind: VekKind,
    ext: &VekExtensions,
) -> Result<String, VerifyError> {
    let t: TcbParts = report.reported_tcb.parts(product.tcb_layout());
    let mut pairs = vec![
        ("bootloader", t.bootloader, ext.bl_spl),
        ("tee", t.tee, ext.tee_spl),
        ("snp", t.snp, ext.snp_spl),
        ("microcode", t.microcode, ext.ucode_spl),
    ];
    if let Some(fmc) = t.fmc {
        pairs.insert(0, ("fmc", fmc, ext.fmc_spl));
    }
    for (component, rep, cert) in pairs {
        if Some(rep) != cert {
            return Err(VerifyError::MatchTcb {
                component,
                report: rep,
                cert: cert.map_or_else(|| "no such extension".to_string(), |c| c.to_string()),
                kind: kind.name(),
            });
        }
    }
    Ok(format!("reported_tcb {}", tcb_summary(&t)))
}

pub fn tcb_summary(t: &TcbParts) -> String {
    let fmc = t.fmc.map(|f| format!("fmc={f} ")).unwrap_or_default();
    format!(
        "{fmc}bl={} tee={} snp={} ucode={}",
        t.bootloader, t.tee, t.snp, t.microcode
    )
}

/// Per-report checks against a verified chain: signature and bindings.
pub fn verify_report(report: &AttestationReport, chain: &VerifiedChain) -> Vec<Check> {
    let kind = chain.kind;
    let mut checks = Vec::with_capacity(4);
    checks.push(Check::from_result(
        "report-signature",
        A,
        verify_signature(report, &chain.key)
            .map(|_| format!("ECDSA P-384/SHA-384 by the {}", kind.name()))
            .map_err(|_| VerifyError::VerifyReportSignature(kind.name())),
    ));
    match kind {
        VekKind::Vlek => checks.push(Check::new(
            "chip-id",
            A,
            Status::Skip,
            format!(
                "VLEK is issued to a cloud provider ({}), not a chip",
                chain.extensions.csp_id.as_deref().unwrap_or("no cspID")
            ),
        )),
        VekKind::Vcek if report.key_info.mask_chip_key => checks.push(Check::new(
            "chip-id",
            A,
            Status::Warn,
            "MASK_CHIP_KEY set: CHIP_ID is hidden; only the VCEK signature ties the report to a chip",
        )),
        VekKind::Vcek => checks.push(Check::from_result(
            "chip-id",
            A,
            check_chip_id(report, chain.product, &chain.extensions),
        )),
    }
    checks.push(Check::from_result(
        "tcb",
        A,
        check_tcb(report, chain.product, kind, &chain.extensions),
    ));
    checks
}

/// Warnings about guest-policy bits that weaken confidentiality.
pub fn risky_policy_warnings(report: &AttestationReport) -> Vec<Check> {
    let mut out = Vec::new();
    if report.policy.bit(GuestPolicy::DEBUG) {
        out.push(Check::new(
            "policy-debug",
            CheckClass::Policy,
            Status::Warn,
            "guest policy allows debugging: the host can read and write guest memory",
        ));
    }
    if report.policy.bit(GuestPolicy::MIGRATE_MA) {
        out.push(Check::new(
            "policy-migrate-ma",
            CheckClass::Policy,
            Status::Warn,
            "guest policy allows a migration agent: guest state can leave this chip",
        ));
    }
    out
}

/// Full authenticity verification: chain, then report checks, then warnings.
pub fn verify(report: &AttestationReport, certs: &Certificates, opts: &Options) -> Verdict {
    let (mut checks, chain) = verify_chain(report, certs, opts);
    let product = checks
        .iter()
        .find(|c| c.name == "product" && c.status == Status::Pass)
        .and_then(|c| Product::from_name(&c.detail));
    match &chain {
        Some(chain) => checks.extend(verify_report(report, chain)),
        None => {
            // The chain failed, but the report can still be checked against
            // the offered VEK, so every fault is reported, not just the first.
            let fallback = product.and_then(|p| {
                let ext = VekExtensions::from_cert(&certs.vek, "VEK").ok()?;
                let key = chain::vek_public_key(&certs.vek, "VEK")
                    .ok()?
                    .ec_key()
                    .ok()?;
                let kind = match report.key_info.signing_key {
                    SigningKey::Vlek => VekKind::Vlek,
                    _ => VekKind::Vcek,
                };
                Some(VerifiedChain {
                    product: p,
                    kind,
                    key,
                    extensions: ext,
                })
            });
            // Without a product (a mismatch, say) the chip and TCB checks
            // cannot run, but the signature still can: report it as it is.
            let key_only = || {
                chain::vek_public_key(&certs.vek, "VEK")
                    .ok()
                    .and_then(|k| k.ec_key().ok())
            };
            match (fallback, key_only()) {
                (Some(c), _) => checks.extend(verify_report(report, &c)),
                (None, Some(key)) => checks.push(Check::from_result(
                    "report-signature",
                    A,
                    verify_signature(report, &key)
                        .map(|_| "ECDSA P-384/SHA-384 by the offered VEK (product unknown: chip and TCB not checked)".to_string())
                        .map_err(|_| VerifyError::VerifyReportSignature("offered VEK")),
                )),
                (None, None) => checks.push(Check::new(
                    "report-signature",
                    A,
                    Status::Fail,
                    "no usable VEK public key to check the report with",
                )),
            }
        }
    }
    checks.extend(risky_policy_warnings(report));
    Verdict { product, checks }
}

/// The TCB layout of a product, for callers that display TCBs.
pub fn layout_for(product: Option<Product>, report: &AttestationReport) -> TcbLayout {
    product.map_or_else(|| report.tcb_layout(), Product::tcb_layout)
}
