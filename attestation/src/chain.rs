//! AMD certificate chains: ARK → ASK → VCEK and ARK → ASVK → VLEK.
//!
//! The roots of trust are AMD's published ARK/ASK/ASVK certificates for
//! Milan, Genoa and Turin, embedded below and pinned by SHA-256 fingerprint
//! in the tests. A chain that is merely self-consistent proves nothing (the
//! gap in `sev`'s `Chain::verify` and `snpguest verify certs`), so the ARK
//! must byte-for-byte equal one of these, or one the caller named explicitly.
//!
//! Every link is RSASSA-PSS with SHA-384 (SEV-SNP ABI spec 56860 and AMD's
//! "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
//! Specification", publication 57230). OpenSSL checks the signatures; this
//! module adds pinning, product matching, validity, revocation and the
//! AMD-specific extensions.

use std::cmp::Ordering;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::x509::{CrlStatus, X509Crl, X509};
use thiserror::Error;

use crate::der;
use crate::report::Product;

/// Why a certificate could not be loaded or a chain link does not hold.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChainError {
    #[error("{what}: empty input")]
    LoadEmpty { what: String },
    #[error("{what}: not a PEM certificate ({detail})")]
    ParsePem { what: String, detail: String },
    #[error("{what}: not a DER certificate ({detail})")]
    ParseDer { what: String, detail: String },
    #[error("{what}: not a CRL ({detail})")]
    ParseCrl { what: String, detail: String },
    #[error("{what}: cannot read AMD extensions")]
    ParseExtensions {
        what: String,
        #[source]
        source: der::DerError,
    },
    #[error("{what}: extension {oid} is malformed")]
    ParseExtensionValue { what: String, oid: String },
    #[error("{what}: missing extension {name} ({oid})")]
    FindExtension {
        what: String,
        name: &'static str,
        oid: String,
    },
    #[error("{what}: public key is not ECDSA P-384")]
    CheckVekKey { what: String },
    #[error("{what}: OpenSSL could not use the certificate: {detail}")]
    UseCertificate { what: String, detail: String },
    #[error("ARK {subject} (SHA-256 {fingerprint}) is not an AMD root for {product} and was not given with --trust-root")]
    PinArk {
        subject: String,
        fingerprint: String,
        product: Product,
    },
    #[error("{link}: signature algorithm is {found}, expected RSASSA-PSS")]
    CheckSignatureAlgorithm { link: &'static str, found: String },
    #[error("{link}: signature does not verify")]
    VerifyLink { link: &'static str },
    #[error("{what} is for {found}, but the report needs {expected}")]
    MatchProduct {
        what: String,
        found: String,
        expected: Product,
    },
    #[error("{what} is not valid before {not_before}")]
    CheckNotYetValid { what: String, not_before: String },
    #[error("{what} expired at {not_after}")]
    CheckExpired { what: String, not_after: String },
    #[error("CRL issuer is not the ARK")]
    MatchCrlIssuer,
    #[error("CRL signature does not verify with the ARK")]
    VerifyCrl,
    #[error("{what} (serial {serial}) is revoked by the CRL")]
    CheckRevoked { what: String, serial: String },
    #[error("time {0} is out of range")]
    ConvertTime(i64),
}

fn ossl(what: &str, e: openssl::error::ErrorStack) -> ChainError {
    ChainError::UseCertificate {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

/// The endorsement-key certificate kind (which intermediate signs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VekKind {
    Vcek,
    Vlek,
}

impl VekKind {
    pub fn name(self) -> &'static str {
        match self {
            VekKind::Vcek => "VCEK",
            VekKind::Vlek => "VLEK",
        }
    }
    /// Name of the intermediate CA for this kind.
    pub fn intermediate_name(self) -> &'static str {
        match self {
            VekKind::Vcek => "ASK",
            VekKind::Vlek => "ASVK",
        }
    }
    /// Common name AMD gives the intermediate for `product`.
    pub fn intermediate_cn(self, product: Product) -> String {
        match self {
            VekKind::Vcek => format!("SEV-{}", product.kds_name()),
            VekKind::Vlek => format!("SEV-VLEK-{}", product.kds_name()),
        }
    }
}

// AMD's ARKs and ASKs come from the `sev` crate's built-ins. It has no
// ASVKs, so those are AMD's published VLEK chains (kdsintf.amd.com
// /vlek/v1/{product}/cert_chain), public data; their fingerprints are pinned
// by a test below.
use sev::certs::snp::builtin::{genoa, milan, turin};
const MILAN_ASVK: &[u8] = include_bytes!("roots/milan_asvk.pem");
const GENOA_ASVK: &[u8] = include_bytes!("roots/genoa_asvk.pem");
const TURIN_ASVK: &[u8] = include_bytes!("roots/turin_asvk.pem");

/// Embedded AMD certificates for one product.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinRoots {
    pub ark: &'static [u8],
    pub ask: &'static [u8],
    pub asvk: &'static [u8],
}

pub fn builtin(product: Product) -> BuiltinRoots {
    match product {
        Product::Milan => BuiltinRoots {
            ark: milan::ARK,
            ask: milan::ASK,
            asvk: MILAN_ASVK,
        },
        Product::Genoa => BuiltinRoots {
            ark: genoa::ARK,
            ask: genoa::ASK,
            asvk: GENOA_ASVK,
        },
        Product::Turin => BuiltinRoots {
            ark: turin::ARK,
            ask: turin::ASK,
            asvk: TURIN_ASVK,
        },
    }
}

/// The embedded ARK for `product`.
pub fn builtin_ark(product: Product) -> Result<X509, ChainError> {
    load_cert(builtin(product).ark, "embedded ARK")
}

/// The embedded ASK (VCEK) or ASVK (VLEK) for `product`.
pub fn builtin_intermediate(product: Product, kind: VekKind) -> Result<X509, ChainError> {
    let roots = builtin(product);
    let pem = match kind {
        VekKind::Vcek => roots.ask,
        VekKind::Vlek => roots.asvk,
    };
    load_cert(pem, "embedded intermediate")
}

/// Loads one certificate, PEM or DER, whichever the bytes are.
/// `what` names the input in errors (e.g. the file path).
pub fn load_cert(bytes: &[u8], what: &str) -> Result<X509, ChainError> {
    load_certs(bytes, what)?
        .into_iter()
        .next()
        .ok_or_else(|| ChainError::LoadEmpty {
            what: what.to_string(),
        })
}

/// Loads every certificate in a PEM bundle, or the single DER certificate.
pub fn load_certs(bytes: &[u8], what: &str) -> Result<Vec<X509>, ChainError> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.is_empty() {
        return Err(ChainError::LoadEmpty {
            what: what.to_string(),
        });
    }
    if trimmed.starts_with(b"-----BEGIN") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let certs = X509::stack_from_pem(bytes).map_err(|e| ChainError::ParsePem {
            what: what.to_string(),
            detail: first_reason(&e),
        })?;
        if certs.is_empty() {
            return Err(ChainError::ParsePem {
                what: what.to_string(),
                detail: "no CERTIFICATE block".into(),
            });
        }
        return Ok(certs);
    }
    X509::from_der(bytes)
        .map(|c| vec![c])
        .map_err(|e| ChainError::ParseDer {
            what: what.to_string(),
            detail: first_reason(&e),
        })
}

/// Loads a CRL, PEM or DER.
pub fn load_crl(bytes: &[u8], what: &str) -> Result<X509Crl, ChainError> {
    let r = if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        X509Crl::from_pem(bytes)
    } else {
        X509Crl::from_der(bytes)
    };
    r.map_err(|e| ChainError::ParseCrl {
        what: what.to_string(),
        detail: first_reason(&e),
    })
}

/// OpenSSL error stacks are long; the first reason is the useful part.
fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_string))
        .unwrap_or_else(|| "unrecognised encoding".to_string())
}

/// SHA-256 of the DER encoding, as hex.
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(|d| crate::hex::encode(&d))
        .unwrap_or_default()
}

/// The subject's common name, or the empty string.
pub fn common_name(cert: &X509) -> String {
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().to_string().ok())
        .unwrap_or_default()
}

/// Checks that `ark` is pinned: one of the embedded ARKs for `product`, or
/// byte-equal to a caller-supplied trust root.
pub fn check_ark_pinned(
    ark: &X509,
    product: Product,
    extra_roots: &[X509],
) -> Result<(), ChainError> {
    let der = ark.to_der().map_err(|e| ossl("ARK", e))?;
    let builtin = builtin_ark(product)?.to_der().map_err(|e| ossl("ARK", e))?;
    if der == builtin {
        return Ok(());
    }
    for root in extra_roots {
        if root.to_der().map_err(|e| ossl("trust root", e))? == der {
            return Ok(());
        }
    }
    Err(ChainError::PinArk {
        subject: common_name(ark),
        fingerprint: fingerprint(ark),
        product,
    })
}

/// Verifies that `issuer` signed `child` with RSASSA-PSS.
pub fn check_link(child: &X509, issuer: &X509, link: &'static str) -> Result<(), ChainError> {
    let nid = child.signature_algorithm().object().nid();
    if nid != Nid::RSASSAPSS {
        return Err(ChainError::CheckSignatureAlgorithm {
            link,
            found: child.signature_algorithm().object().to_string(),
        });
    }
    // OpenSSL verifies with whatever PSS parameters the certificate names;
    // AMD signs with SHA-384 / MGF1-SHA-384 / salt 48 only, so insist on it.
    let der = child.to_der().map_err(|e| ossl(link, e))?;
    if !crate::der::is_pss_sha384(&der).unwrap_or(false) {
        return Err(ChainError::CheckSignatureAlgorithm {
            link,
            found: "RSASSA-PSS with parameters other than SHA-384, MGF1-SHA-384, salt 48".into(),
        });
    }
    let key = issuer.public_key().map_err(|e| ossl(link, e))?;
    // A malformed signature is an OpenSSL error rather than `false`; both
    // mean the link does not hold.
    match child.verify(&key) {
        Ok(true) => Ok(()),
        _ => Err(ChainError::VerifyLink { link }),
    }
}

/// Checks that the intermediate is the one AMD issues for `product` and `kind`
/// (an ASK from another product, or an ASK offered for a VLEK, is named as such).
pub fn check_intermediate_product(
    intermediate: &X509,
    product: Product,
    kind: VekKind,
) -> Result<(), ChainError> {
    let cn = common_name(intermediate);
    let expected = kind.intermediate_cn(product);
    if cn == expected {
        return Ok(());
    }
    Err(ChainError::MatchProduct {
        what: format!("{} {:?}", kind.intermediate_name(), cn),
        found: format!("{cn:?} (expected {expected:?})"),
        expected: product,
    })
}

/// Checks notBefore <= at <= notAfter.
pub fn check_validity(cert: &X509, what: &str, at_unix: i64) -> Result<(), ChainError> {
    let at = asn1_time(at_unix)?;
    let cmp = |t: &openssl::asn1::Asn1TimeRef| t.compare(&at).map_err(|e| ossl(what, e));
    if cmp(cert.not_before())? == Ordering::Greater {
        return Err(ChainError::CheckNotYetValid {
            what: what.to_string(),
            not_before: cert.not_before().to_string(),
        });
    }
    if cmp(cert.not_after())? == Ordering::Less {
        return Err(ChainError::CheckExpired {
            what: what.to_string(),
            not_after: cert.not_after().to_string(),
        });
    }
    Ok(())
}

fn asn1_time(at_unix: i64) -> Result<Asn1Time, ChainError> {
    // time_t is i64 on every target this VMM supports (x86_64 Linux).
    Asn1Time::from_unix(at_unix).map_err(|_| ChainError::ConvertTime(at_unix))
}

/// Checks the ARK-issued CRL: its issuer and signature, then whether the
/// intermediate is listed. AMD's CRL is issued by the ARK and lists revoked
/// ASKs/ASVKs; VCEKs all carry serial 0 under their ASK, so they are not
/// matched against it by serial.
pub fn check_revocation(
    crl: &X509Crl,
    ark: &X509,
    intermediate: &X509,
    what: &str,
) -> Result<(), ChainError> {
    let crl_issuer = crl.issuer_name().to_der().map_err(|e| ossl("CRL", e))?;
    let ark_subject = ark.subject_name().to_der().map_err(|e| ossl("ARK", e))?;
    if crl_issuer != ark_subject {
        return Err(ChainError::MatchCrlIssuer);
    }
    let key = ark.public_key().map_err(|e| ossl("ARK", e))?;
    if !matches!(crl.verify(&key), Ok(true)) {
        return Err(ChainError::VerifyCrl);
    }
    match crl.get_by_cert(intermediate) {
        CrlStatus::NotRevoked => Ok(()),
        CrlStatus::Revoked(_) | CrlStatus::RemoveFromCrl(_) => Err(ChainError::CheckRevoked {
            what: what.to_string(),
            serial: intermediate
                .serial_number()
                .to_bn()
                .and_then(|b| b.to_hex_str().map(|s| s.to_string()))
                .unwrap_or_default(),
        }),
    }
}

/// Whether the CRL's nextUpdate has passed at `at_unix` (a stale CRL may
/// miss recent revocations).
pub fn crl_is_stale(crl: &X509Crl, at_unix: i64) -> bool {
    let Ok(at) = asn1_time(at_unix) else {
        return true;
    };
    match crl.next_update() {
        Some(next) => next
            .compare(&at)
            .map(|o| o == Ordering::Less)
            .unwrap_or(true),
        None => false,
    }
}

/// The public key of a VCEK/VLEK, insisting on ECDSA P-384.
pub fn vek_public_key(vek: &X509, what: &str) -> Result<PKey<Public>, ChainError> {
    let key = vek.public_key().map_err(|e| ossl(what, e))?;
    let ok = key
        .ec_key()
        .ok()
        .and_then(|k| k.group().curve_name())
        .is_some_and(|n| n == Nid::SECP384R1);
    if !ok {
        return Err(ChainError::CheckVekKey {
            what: what.to_string(),
        });
    }
    Ok(key)
}

/// OID prefix of AMD's VCEK/VLEK extensions.
const AMD_OID: &str = "1.3.6.1.4.1.3704.1";

/// AMD's X.509 extensions on a VCEK or VLEK (publication 57230, table
/// "VCEK Certificate Extensions").
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct VekExtensions {
    pub struct_version: Option<u64>,
    pub product_name: Option<String>,
    pub bl_spl: Option<u8>,
    pub tee_spl: Option<u8>,
    pub snp_spl: Option<u8>,
    pub ucode_spl: Option<u8>,
    pub fmc_spl: Option<u8>,
    /// VCEK only: CHIP_ID (64 bytes, 8 on Turin).
    #[serde(serialize_with = "ser_hex_opt")]
    pub hw_id: Option<Vec<u8>>,
    /// VLEK only: the cloud provider's identity.
    pub csp_id: Option<String>,
}

fn ser_hex_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&crate::hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl VekExtensions {
    /// Reads the AMD extensions of a certificate.
    pub fn from_cert(cert: &X509, what: &str) -> Result<Self, ChainError> {
        let der_bytes = cert.to_der().map_err(|e| ossl(what, e))?;
        Self::from_der(&der_bytes, what)
    }

    pub fn from_der(cert_der: &[u8], what: &str) -> Result<Self, ChainError> {
        let exts = der::certificate_extensions(cert_der).map_err(|source| {
            ChainError::ParseExtensions {
                what: what.to_string(),
                source,
            }
        })?;
        let mut out = VekExtensions::default();
        for (oid, value) in exts {
            let Some(suffix) = oid.strip_prefix(AMD_OID).and_then(|s| s.strip_prefix('.')) else {
                continue;
            };
            let bad = || ChainError::ParseExtensionValue {
                what: what.to_string(),
                oid: oid.clone(),
            };
            let int = || -> Result<u64, ChainError> {
                let body = der::Reader::new(value)
                    .expect(der::TAG_INTEGER)
                    .map_err(|_| bad())?;
                der::integer_u64(body).map_err(|_| bad())
            };
            let spl = || -> Result<u8, ChainError> { u8::try_from(int()?).map_err(|_| bad()) };
            match suffix {
                "1" => out.struct_version = Some(int()?),
                "2" => {
                    let body = der::Reader::new(value)
                        .expect(der::TAG_IA5_STRING)
                        .map_err(|_| bad())?;
                    out.product_name = Some(String::from_utf8_lossy(body).into_owned());
                }
                "3.1" => out.bl_spl = Some(spl()?),
                "3.2" => out.tee_spl = Some(spl()?),
                "3.3" => out.snp_spl = Some(spl()?),
                "3.8" => out.ucode_spl = Some(spl()?),
                "3.9" => out.fmc_spl = Some(spl()?),
                // hwID: older VCEKs carry the raw 64 bytes as the extension
                // value; newer ones (and Turin's 8 bytes) wrap it in an
                // OCTET STRING. A raw 64-byte value can start with 0x04 by
                // chance, so the wrapped form is accepted only when its
                // length accounts for every byte.
                "4" => {
                    let mut r = der::Reader::new(value);
                    let unwrapped = match r.next_tlv() {
                        Ok(t)
                            if t.tag == der::TAG_OCTET_STRING
                                && r.is_empty()
                                && value.len() != 64 =>
                        {
                            t.content.to_vec()
                        }
                        _ => value.to_vec(),
                    };
                    if unwrapped.len() != 64 && unwrapped.len() != 8 {
                        return Err(bad());
                    }
                    out.hw_id = Some(unwrapped);
                }
                "5" => {
                    let body = der::Reader::new(value)
                        .expect(der::TAG_IA5_STRING)
                        .map_err(|_| bad())?;
                    out.csp_id = Some(String::from_utf8_lossy(body).into_owned());
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded certificates are AMD's, identified by the SHA-256
    /// fingerprints AMD and the peers publish (see MANIFEST.md §1).
    #[test]
    fn embedded_roots_have_amds_fingerprints() {
        let expected = [
            (
                Product::Milan,
                "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
                "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
                "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5",
            ),
            (
                Product::Genoa,
                "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
                "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521",
                "197e610743a917d6b9bb982a5a9226ccc0a15b611be0619e626aca9151457372",
            ),
            (
                Product::Turin,
                "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
                "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185",
                "104e10a8bd060a3c20a434261a57d0588fd65a88915b4f65b08bdecaf8df1a3c",
            ),
        ];
        for (p, ark, ask, asvk) in expected {
            let r = builtin(p);
            let fp = |pem: &[u8]| fingerprint(&load_cert(pem, "t").expect("embedded PEM"));
            assert_eq!(fp(r.ark), ark, "{p} ARK");
            assert_eq!(fp(r.ask), ask, "{p} ASK");
            assert_eq!(fp(r.asvk), asvk, "{p} ASVK");
        }
    }

    #[test]
    fn embedded_chains_verify_and_do_not_cross() {
        for p in Product::ALL {
            let ark = builtin_ark(p).expect("ark");
            check_link(&ark, &ark, "ARK self-signature").expect("self-signed");
            for kind in [VekKind::Vcek, VekKind::Vlek] {
                let inter = builtin_intermediate(p, kind).expect("intermediate");
                check_link(&inter, &ark, "ARK -> ASK").expect("link");
                check_intermediate_product(&inter, p, kind).expect("product");
            }
        }
        let genoa_ask = builtin_intermediate(Product::Genoa, VekKind::Vcek).expect("ask");
        let milan_ark = builtin_ark(Product::Milan).expect("ark");
        assert_eq!(
            check_link(&genoa_ask, &milan_ark, "ARK -> ASK"),
            Err(ChainError::VerifyLink { link: "ARK -> ASK" })
        );
        assert!(check_intermediate_product(&genoa_ask, Product::Milan, VekKind::Vcek).is_err());
        let milan_ask = builtin_intermediate(Product::Milan, VekKind::Vcek).expect("ask");
        assert!(check_ark_pinned(&milan_ask, Product::Milan, &[]).is_err());
        assert!(check_ark_pinned(&milan_ark, Product::Genoa, &[]).is_err());
        assert!(check_ark_pinned(&milan_ark, Product::Milan, &[]).is_ok());
    }

    #[test]
    fn pem_der_garbage() {
        assert!(matches!(
            load_cert(b"", "x"),
            Err(ChainError::LoadEmpty { .. })
        ));
        assert!(matches!(
            load_cert(b"hello", "x"),
            Err(ChainError::ParseDer { .. })
        ));
        assert!(matches!(
            load_cert(
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "x"
            ),
            Err(ChainError::ParsePem { .. })
        ));
    }
}
