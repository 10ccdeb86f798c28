//! The model's key hierarchy, in AMD's certificate profile so that
//! `umbra-attest verify --trust-root <model ARK>` checks model reports with
//! the same code that checks real ones (reference `snp-measurement.md` §11):
//!
//! - ARK: RSA-4096, self-signed, RSASSA-PSS with SHA-384, MGF1-SHA-384,
//!   salt 48 (as AMD's ARK-Milan);
//! - ASK: RSA-4096, CN `SEV-Milan`, signed by the ARK with PSS;
//! - VCEK: EC P-384, signed by the ASK with PSS, carrying AMD's extensions
//!   under 1.3.6.1.4.1.3704.1: .1 structVersion, .2 productName, .3.1/.3.2/
//!   .3.3/.3.8 bl/tee/snp/ucode SPL, .4 hwID (the 64-byte CHIP_ID).
//!
//! The `openssl` crate cannot sign an X.509 certificate with PSS, so the
//! TBSCertificate is DER-encoded here and signed with an `openssl` Signer
//! set to PSS; OpenSSL parses the result back as a check. The subjects say
//! "umbra snp-model": these certificates must never pass for AMD's.
//!
//! Keys are generated on first use into a [`KeyStore`] (items ark.pem,
//! ask.pem, vcek.pem, ark.key, ask.key, vcek.key — the keys marked secret —
//! and chip_id) and reused afterwards, so the chip ID and TCB are fixed per
//! store. Where the items live is the store's business: the model does no
//! file I/O (the VMM keeps them in a state directory).

use std::time::{SystemTime, UNIX_EPOCH};

use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer};
use openssl::x509::X509;
use thiserror::Error;
use umbra_attestation::chain::VekExtensions;
use umbra_attestation::hex;

/// The TCB a new key directory gets (Milan layout: bootloader 3, TEE 0,
/// SNP 8, microcode 115 — a released Milan TCB).
pub const DEFAULT_TCB: [u8; 8] = [3, 0, 0, 0, 0, 0, 8, 115];

/// VCEK productName for Milan (as on AMD's Milan VCEKs).
pub const PRODUCT_NAME: &str = "Milan-B0";

/// The items a complete key store holds.
pub const ITEMS: [&str; 7] = [
    "ark.pem", "ask.pem", "vcek.pem", "ark.key", "ask.key", "vcek.key", "chip_id",
];

/// One item handed to [`KeyStore::store`].
#[derive(Debug)]
pub struct KeyItem<'a> {
    /// One of [`ITEMS`].
    pub name: &'static str,
    /// The item's bytes (PEM, or the hex CHIP_ID).
    pub data: &'a [u8],
    /// Whether the item is a private key (stores keep it owner-only).
    pub secret: bool,
}

/// Where the model's keys live. Implementations decide the medium; the
/// model only reads items back and hands over a freshly generated set.
pub trait KeyStore {
    /// Reads one item; `Ok(None)` when the store does not hold it.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, std::io::Error>;
    /// Stores a complete, freshly generated set as one unit: either every
    /// item lands or none does. A store that already holds a complete set
    /// (a concurrent first use won) may keep it and return `Ok`.
    fn store(&self, items: &[KeyItem<'_>]) -> Result<(), std::io::Error>;
    /// Names the store for messages (e.g. its directory).
    fn describe(&self) -> String;
}

/// A key store in memory: for tests, fuzzers and one-off models whose
/// chip identity need not outlive the process.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    items: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl KeyStore for MemoryKeyStore {
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, std::io::Error> {
        let items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        Ok(items.get(name).cloned())
    }

    fn store(&self, new: &[KeyItem<'_>]) -> Result<(), std::io::Error> {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        if !items.contains_key("vcek.pem") {
            for item in new {
                items.insert(item.name.to_string(), item.data.to_vec());
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        "in memory".into()
    }
}

/// Errors of the model's key hierarchy.
#[derive(Debug, Error)]
pub enum KeyError {
    /// The key store could not be read.
    #[error("cannot read {item} from the key store {store}")]
    ReadStore {
        /// The item.
        item: String,
        /// The store.
        store: String,
        /// The store's error.
        #[source]
        source: std::io::Error,
    },
    /// The key store could not take a generated set.
    #[error("cannot write new keys to the key store {store}")]
    WriteStore {
        /// The store.
        store: String,
        /// The store's error.
        #[source]
        source: std::io::Error,
    },
    /// An item is missing from a store that holds a VCEK.
    #[error("the key store {store} lacks {item}")]
    FindItem {
        /// The store.
        store: String,
        /// The item.
        item: String,
    },
    /// A certificate or key item does not parse.
    #[error("{item} in the key store {store} is not a valid {what}")]
    ParseItem {
        /// The store.
        store: String,
        /// The item.
        item: String,
        /// What it should hold.
        what: &'static str,
    },
    /// The key store is inconsistent (VCEK key, chip ID or extensions do
    /// not match the VCEK certificate).
    #[error("the key store {store} is inconsistent: {detail}")]
    MatchKeys {
        /// The store.
        store: String,
        /// What does not match.
        detail: String,
    },
    /// OpenSSL failed to generate a key, encode or sign.
    #[error("OpenSSL failed to {what}")]
    RunOpenssl {
        /// The operation.
        what: &'static str,
        /// OpenSSL's errors.
        #[source]
        source: ErrorStack,
    },
}

fn ossl(what: &'static str) -> impl FnOnce(ErrorStack) -> KeyError {
    move |source| KeyError::RunOpenssl { what, source }
}

/// The model's ARK/ASK/VCEK, chip ID and TCB.
pub struct ModelKeys {
    store: String,
    ark: X509,
    ask: X509,
    vcek: X509,
    vcek_key: EcKey<Private>,
    chip_id: [u8; 64],
    tcb: [u8; 8],
    root_secret: [u8; 48],
}

impl std::fmt::Debug for ModelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelKeys")
            .field("store", &self.store)
            .field("chip_id", &hex::encode(&self.chip_id))
            .field("tcb", &self.tcb)
            .finish()
    }
}

impl ModelKeys {
    /// Loads the keys in `store`, generating a new set into it first if
    /// it holds none.
    pub fn load_or_generate(store: &dyn KeyStore) -> Result<Self, KeyError> {
        let has_vcek = store
            .read("vcek.pem")
            .map_err(|source| KeyError::ReadStore {
                item: "vcek.pem".into(),
                store: store.describe(),
                source,
            })?
            .is_some();
        if !has_vcek {
            let generated = generate(DEFAULT_TCB)?;
            let items: Vec<KeyItem<'_>> = generated
                .iter()
                .map(|(name, data, secret)| KeyItem {
                    name,
                    data,
                    secret: *secret,
                })
                .collect();
            store.store(&items).map_err(|source| KeyError::WriteStore {
                store: store.describe(),
                source,
            })?;
        }
        Self::load(store)
    }

    /// Loads the keys in `store` (`--model-keys DIR`).
    pub fn load(store: &dyn KeyStore) -> Result<Self, KeyError> {
        let describe = store.describe();
        let read = |name: &str| match store.read(name) {
            Ok(Some(data)) => Ok(data),
            Ok(None) => Err(KeyError::FindItem {
                store: describe.clone(),
                item: name.into(),
            }),
            Err(source) => Err(KeyError::ReadStore {
                item: name.into(),
                store: describe.clone(),
                source,
            }),
        };
        let bad = |name: &str, what| KeyError::ParseItem {
            store: describe.clone(),
            item: name.into(),
            what,
        };
        let cert =
            |name: &str| X509::from_pem(&read(name)?).map_err(|_| bad(name, "PEM certificate"));
        let (ark, ask, vcek) = (cert("ark.pem")?, cert("ask.pem")?, cert("vcek.pem")?);
        let vcek_key = PKey::private_key_from_pem(&read("vcek.key")?)
            .and_then(|k| k.ec_key())
            .map_err(|_| bad("vcek.key", "PEM EC private key"))?;
        let chip_text = read("chip_id")?;
        let chip_id: [u8; 64] = std::str::from_utf8(&chip_text)
            .ok()
            .and_then(|t| hex::decode(t.trim()).ok())
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("chip_id", "hex CHIP_ID of 64 bytes"))?;
        let mismatch = |detail: &str| KeyError::MatchKeys {
            store: describe.clone(),
            detail: detail.to_string(),
        };
        let cert_key = vcek
            .public_key()
            .and_then(|k| k.ec_key())
            .map_err(|_| mismatch("the VCEK certificate has no EC key"))?;
        let mut ctx = openssl::bn::BigNumContext::new().map_err(ossl("compare keys"))?;
        let same = cert_key
            .public_key()
            .eq(vcek_key.group(), vcek_key.public_key(), &mut ctx)
            .map_err(ossl("compare keys"))?;
        if !same {
            return Err(mismatch("vcek.key does not belong to vcek.pem"));
        }
        let ext = VekExtensions::from_cert(&vcek, "model VCEK")
            .map_err(|e| mismatch(&format!("VCEK extensions: {e}")))?;
        if ext.hw_id.as_deref() != Some(&chip_id[..]) {
            return Err(mismatch("chip_id differs from the VCEK's hwID"));
        }
        let (Some(bl), Some(tee), Some(snp), Some(ucode)) =
            (ext.bl_spl, ext.tee_spl, ext.snp_spl, ext.ucode_spl)
        else {
            return Err(mismatch("the VCEK lacks an SPL extension"));
        };
        let tcb = [bl, tee, 0, 0, 0, 0, snp, ucode];
        let root_secret = derive_root(&vcek_key)?;
        Ok(ModelKeys {
            store: describe.clone(),
            ark,
            ask,
            vcek,
            vcek_key,
            chip_id,
            tcb,
            root_secret,
        })
    }

    /// ark.pem, ask.pem and vcek.pem, for
    /// `umbra-attest verify --certs DIR --trust-root DIR/ark.pem`.
    pub fn certificates_pem(&self) -> Result<[(&'static str, Vec<u8>); 3], KeyError> {
        let pem = |c: &X509| c.to_pem().map_err(ossl("encode a certificate"));
        Ok([
            ("ark.pem", pem(&self.ark)?),
            ("ask.pem", pem(&self.ask)?),
            ("vcek.pem", pem(&self.vcek)?),
        ])
    }

    /// Names the store the keys came from.
    pub fn store(&self) -> &str {
        &self.store
    }

    /// The model chip's CHIP_ID.
    pub fn chip_id(&self) -> [u8; 64] {
        self.chip_id
    }

    /// The model platform's TCB (current = reported = committed = launch).
    pub fn tcb(&self) -> [u8; 8] {
        self.tcb
    }

    /// The ARK certificate (the `--trust-root`).
    pub fn ark(&self) -> &X509 {
        &self.ark
    }

    /// The ASK certificate.
    pub fn ask(&self) -> &X509 {
        &self.ask
    }

    /// The VCEK certificate.
    pub fn vcek(&self) -> &X509 {
        &self.vcek
    }

    /// Signs `msg` with the VCEK (ECDSA P-384, SHA-384). Returns R and S
    /// little-endian, as the report stores them (SNP ABI chapter 10).
    pub fn sign(&self, msg: &[u8]) -> Result<([u8; 48], [u8; 48]), KeyError> {
        let digest = openssl::sha::sha384(msg);
        let sig = EcdsaSig::sign(&digest, &self.vcek_key).map_err(ossl("sign a report"))?;
        let le = |bn: &openssl::bn::BigNumRef| -> Result<[u8; 48], KeyError> {
            let mut v = bn.to_vec_padded(48).map_err(ossl("encode a signature"))?;
            v.reverse();
            let mut out = [0u8; 48];
            out.copy_from_slice(&v);
            Ok(out)
        };
        Ok((le(sig.r())?, le(sig.s())?))
    }

    /// The chip-unique secret the model derives guest keys from
    /// (MSG_KEY_REQ): HMAC-SHA-384 of a fixed label keyed by the VCEK's
    /// private scalar, so it is fixed per key directory.
    pub(crate) fn root_secret(&self) -> &[u8; 48] {
        &self.root_secret
    }
}

fn derive_root(vcek_key: &EcKey<Private>) -> Result<[u8; 48], KeyError> {
    let scalar = vcek_key
        .private_key()
        .to_vec_padded(48)
        .map_err(ossl("derive the root secret"))?;
    hmac_sha384(&scalar, &[b"umbra snp-model key-derivation root v1"])
}

/// HMAC-SHA-384 over the concatenation of `parts`.
pub(crate) fn hmac_sha384(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 48], KeyError> {
    let run = || ossl("compute an HMAC");
    let pkey = PKey::hmac(key).map_err(run())?;
    let mut signer = Signer::new(MessageDigest::sha384(), &pkey).map_err(run())?;
    for p in parts {
        signer.update(p).map_err(run())?;
    }
    let mut out = [0u8; 48];
    // SHA-384 output is always 48 bytes; `sign` refuses a short buffer.
    let n = signer.sign(&mut out).map_err(run())?;
    debug_assert_eq!(n, 48);
    Ok(out)
}

/// A generated item: name, bytes, secret.
type Generated = (&'static str, Vec<u8>, bool);

/// Generates a complete key set: every item of [`ITEMS`].
fn generate(tcb: [u8; 8]) -> Result<Vec<Generated>, KeyError> {
    let rsa = || {
        Rsa::generate(4096)
            .and_then(PKey::from_rsa)
            .map_err(ossl("generate an RSA-4096 key"))
    };
    let (ark_key, ask_key) = (rsa()?, rsa()?);
    let group = EcGroup::from_curve_name(Nid::SECP384R1).map_err(ossl("generate a P-384 key"))?;
    let vcek_ec = EcKey::generate(&group).map_err(ossl("generate a P-384 key"))?;
    let vcek_key = PKey::from_ec_key(vcek_ec).map_err(ossl("generate a P-384 key"))?;
    let mut chip_id = [0u8; 64];
    openssl::rand::rand_bytes(&mut chip_id).map_err(ossl("draw a chip ID"))?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let year = 365 * 86400;
    let not_before = now - 86400;
    let ark_name = name("ARK-Milan");
    let ask_name = name("SEV-Milan");
    let ca_ext = [
        // basicConstraints, critical, CA:TRUE.
        extension(
            &oid::BASIC_CONSTRAINTS,
            true,
            &der::seq(&[&[0x01, 0x01, 0xFF]]),
        ),
        // keyUsage, critical, keyCertSign | cRLSign (bits 5 and 6).
        extension(&oid::KEY_USAGE, true, &[0x03, 0x02, 0x01, 0x06]),
    ];
    let ark = certificate(&CertSpec {
        serial: &random_serial()?,
        issuer: &ark_name,
        subject: &ark_name,
        not_before,
        not_after: now + 25 * year,
        subject_key: &ark_key,
        extensions: &ca_ext,
        issuer_key: &ark_key,
    })?;
    let ask = certificate(&CertSpec {
        serial: &random_serial()?,
        issuer: &ark_name,
        subject: &ask_name,
        not_before,
        not_after: now + 25 * year,
        subject_key: &ask_key,
        extensions: &ca_ext,
        issuer_key: &ark_key,
    })?;
    let amd = |tail: &[u64]| {
        let mut arcs = vec![1, 3, 6, 1, 4, 1, 3704, 1];
        arcs.extend_from_slice(tail);
        arcs
    };
    let int = |v: u8| der::integer(&[v]);
    let vcek_ext = [
        extension(&amd(&[1]), false, &int(0)),
        extension(&amd(&[2]), false, &der::tlv(0x16, PRODUCT_NAME.as_bytes())),
        extension(&amd(&[3, 1]), false, &int(tcb[0])),
        extension(&amd(&[3, 2]), false, &int(tcb[1])),
        extension(&amd(&[3, 3]), false, &int(tcb[6])),
        // Reserved SPLs 4-7, present (zero) in KDS-issued Milan VCEKs.
        extension(&amd(&[3, 4]), false, &int(tcb[2])),
        extension(&amd(&[3, 5]), false, &int(tcb[3])),
        extension(&amd(&[3, 6]), false, &int(tcb[4])),
        extension(&amd(&[3, 7]), false, &int(tcb[5])),
        extension(&amd(&[3, 8]), false, &int(tcb[7])),
        // A Milan VCEK from the KDS carries the 64-byte hwID raw, not
        // wrapped in an OCTET STRING.
        extension(&amd(&[4]), false, &chip_id),
    ];
    let vcek = certificate(&CertSpec {
        // AMD issues every VCEK with serial 0.
        serial: &[0],
        issuer: &ask_name,
        subject: &name("SEV-VCEK"),
        not_before,
        not_after: now + 7 * year,
        subject_key: &vcek_key,
        extensions: &vcek_ext,
        issuer_key: &ask_key,
    })?;

    let pem = |c: &X509| c.to_pem().map_err(ossl("encode a certificate"));
    let key = |k: &PKey<Private>| k.private_key_to_pem_pkcs8().map_err(ossl("encode a key"));
    Ok(vec![
        ("ark.pem", pem(&ark)?, false),
        ("ask.pem", pem(&ask)?, false),
        ("vcek.pem", pem(&vcek)?, false),
        ("ark.key", key(&ark_key)?, true),
        ("ask.key", key(&ask_key)?, true),
        ("vcek.key", key(&vcek_key)?, true),
        ("chip_id", hex::encode(&chip_id).into_bytes(), false),
    ])
}

fn random_serial() -> Result<Vec<u8>, KeyError> {
    let mut s = vec![0u8; 16];
    openssl::rand::rand_bytes(&mut s).map_err(ossl("draw a serial number"))?;
    Ok(s)
}

/// Object identifiers used in the certificates.
mod oid {
    pub const CN: [u64; 4] = [2, 5, 4, 3];
    pub const O: [u64; 4] = [2, 5, 4, 10];
    pub const OU: [u64; 4] = [2, 5, 4, 11];
    pub const BASIC_CONSTRAINTS: [u64; 4] = [2, 5, 29, 19];
    pub const KEY_USAGE: [u64; 4] = [2, 5, 29, 15];
    pub const RSASSA_PSS: [u64; 7] = [1, 2, 840, 113549, 1, 1, 10];
    pub const MGF1: [u64; 7] = [1, 2, 840, 113549, 1, 1, 8];
    pub const SHA384: [u64; 9] = [2, 16, 840, 1, 101, 3, 4, 2, 2];
}

/// A minimal DER writer (ITU-T X.690, definite lengths).
mod der {
    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x30, &parts.concat())
    }

    pub fn set(parts: &[&[u8]]) -> Vec<u8> {
        tlv(0x31, &parts.concat())
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub fn integer(be: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = match be.iter().position(|&b| b != 0) {
            Some(i) => be[i..].to_vec(),
            None => vec![0],
        };
        let mut body = Vec::with_capacity(trimmed.len() + 1);
        if trimmed[0] & 0x80 != 0 {
            body.push(0);
        }
        body.extend_from_slice(&trimmed);
        tlv(0x02, &body)
    }

    pub fn oid(arcs: &[u64]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut push = |mut v: u64| {
            let mut tmp = vec![(v & 0x7F) as u8];
            v >>= 7;
            while v > 0 {
                tmp.push(0x80 | (v & 0x7F) as u8);
                v >>= 7;
            }
            tmp.reverse();
            body.extend_from_slice(&tmp);
        };
        if arcs.len() >= 2 {
            push(arcs[0] * 40 + arcs[1]);
            arcs[2..].iter().for_each(|&a| push(a));
        }
        tlv(0x06, &body)
    }

    pub fn explicit(n: u8, content: &[u8]) -> Vec<u8> {
        tlv(0xA0 | n, content)
    }

    /// UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5).
    pub fn time(unix: i64) -> Vec<u8> {
        let days = unix.div_euclid(86400);
        let secs = unix.rem_euclid(86400);
        let (y, m, d) = civil_from_days(days);
        let hms = format!("{:02}{:02}{:02}Z", secs / 3600, secs / 60 % 60, secs % 60);
        if (1950..2050).contains(&y) {
            tlv(0x17, format!("{:02}{m:02}{d:02}{hms}", y % 100).as_bytes())
        } else {
            tlv(0x18, format!("{y:04}{m:02}{d:02}{hms}").as_bytes())
        }
    }

    /// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
    /// (H. Hinnant's `civil_from_days`).
    fn civil_from_days(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    #[cfg(test)]
    #[test]
    fn dates_and_lengths() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(time(951_782_400), tlv(0x17, b"000229000000Z"));
        assert_eq!(time(2_524_608_000), tlv(0x18, b"20500101000000Z"));
        assert_eq!(&tlv(0x04, &[0; 300])[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(integer(&[0x80]), vec![0x02, 0x02, 0x00, 0x80]);
        assert_eq!(integer(&[0, 0]), vec![0x02, 0x01, 0x00]);
        // 1.2.840.113549 (X.690 §8.19 example style).
        assert_eq!(
            oid(&[1, 2, 840, 113_549]),
            vec![0x06, 0x06, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D]
        );
    }
}

/// A distinguished name: OU, O, CN (UTF8String), marked as the model's.
fn name(cn: &str) -> Vec<u8> {
    let rdn = |arcs: &[u64], v: &str| {
        der::set(&[&der::seq(&[&der::oid(arcs), &der::tlv(0x0C, v.as_bytes())])])
    };
    der::seq(&[
        &rdn(&oid::OU, "umbra snp-model (not AMD)"),
        &rdn(&oid::O, "umbra"),
        &rdn(&oid::CN, cn),
    ])
}

fn extension(arcs: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    let id = der::oid(arcs);
    let v = der::tlv(0x04, value);
    if critical {
        der::seq(&[&id, &[0x01, 0x01, 0xFF], &v])
    } else {
        der::seq(&[&id, &v])
    }
}

/// AlgorithmIdentifier of RSASSA-PSS with SHA-384, MGF1-SHA-384, salt 48
/// (RFC 4055 §3.1), as in AMD's certificates.
fn pss_algorithm() -> Vec<u8> {
    let sha384 = der::seq(&[&der::oid(&oid::SHA384)]);
    let mgf = der::seq(&[&der::oid(&oid::MGF1), &sha384]);
    let params = der::seq(&[
        &der::explicit(0, &sha384),
        &der::explicit(1, &mgf),
        &der::explicit(2, &der::integer(&[48])),
    ]);
    der::seq(&[&der::oid(&oid::RSASSA_PSS), &params])
}

struct CertSpec<'a> {
    serial: &'a [u8],
    issuer: &'a [u8],
    subject: &'a [u8],
    not_before: i64,
    not_after: i64,
    subject_key: &'a PKey<Private>,
    extensions: &'a [Vec<u8>],
    issuer_key: &'a PKey<Private>,
}

fn certificate(spec: &CertSpec<'_>) -> Result<X509, KeyError> {
    let spki = spec
        .subject_key
        .public_key_to_der()
        .map_err(ossl("encode a public key"))?;
    let alg = pss_algorithm();
    let exts: Vec<&[u8]> = spec.extensions.iter().map(Vec::as_slice).collect();
    let tbs = der::seq(&[
        &der::explicit(0, &der::integer(&[2])),
        &der::integer(spec.serial),
        &alg,
        spec.issuer,
        &der::seq(&[&der::time(spec.not_before), &der::time(spec.not_after)]),
        spec.subject,
        &spki,
        &der::explicit(3, &der::seq(&exts)),
    ]);
    let mut signer = Signer::new(MessageDigest::sha384(), spec.issuer_key)
        .map_err(ossl("sign a certificate"))?;
    signer
        .set_rsa_padding(Padding::PKCS1_PSS)
        .and_then(|()| signer.set_rsa_pss_saltlen(RsaPssSaltlen::custom(48)))
        .and_then(|()| signer.set_rsa_mgf1_md(MessageDigest::sha384()))
        .map_err(ossl("sign a certificate"))?;
    signer.update(&tbs).map_err(ossl("sign a certificate"))?;
    let sig = signer.sign_to_vec().map_err(ossl("sign a certificate"))?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(&sig);
    let cert = der::seq(&[&tbs, &alg, &der::tlv(0x03, &bits)]);
    X509::from_der(&cert).map_err(ossl("parse the certificate it made"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha384_known_answer() {
        // RFC 4231 §4.2, test case 1.
        let mac = hmac_sha384(&[0x0b; 20], &[b"Hi ", b"There"]).unwrap();
        assert_eq!(
            hex::encode(&mac),
            "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec6\
             82aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"
        );
    }

    #[test]
    fn pss_algorithm_identifier_is_rfc4055_sha384_salt48() {
        let alg = pss_algorithm();
        // SEQUENCE { OID rsassa-pss, SEQUENCE { [0] sha384, [1] mgf1(sha384), [2] 48 } }
        assert_eq!(&alg[2..13], &der::oid(&oid::RSASSA_PSS)[..]);
        assert!(alg.ends_with(&[0xA2, 0x03, 0x02, 0x01, 48]));
        let sha384 = [
            0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        ];
        assert_eq!(
            alg.windows(sha384.len()).filter(|w| *w == sha384).count(),
            2
        );
    }
}
