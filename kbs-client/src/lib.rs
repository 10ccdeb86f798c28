//! The client side of the Trustee KBS attestation protocol (RCAR,
//! confidential-containers/trustee `kbs/docs/kbs_attestation_protocol.md`),
//! `no_std` + `alloc`, so that umbra-agent in Linux and the firmware share
//! one implementation:
//!
//! 1. `POST /kbs/v0/auth` with [`KbsSession::auth_request`]; the reply is a
//!    `Challenge` with a nonce.
//! 2. The evidence must carry [`KbsSession::report_data`] as REPORT_DATA:
//!    SHA-384 of the RFC 8785 (JCS) form of
//!    `{"additional-evidence", "nonce", "tee-pubkey"}`, zero-padded to 64
//!    bytes, as Trustee's verifier recomputes it.
//! 3. `POST /kbs/v0/attest` with [`KbsSession::attest_request`].
//! 4. `GET /kbs/v0/resource/<repo>/<type>/<tag>`: a flattened JWE
//!    (ECDH-ES+A256KW, A256GCM) that [`KbsSession::decrypt`] opens with
//!    the session's ephemeral P-256 key.
//!
//! The wire types are Trustee's own (`kbs-types`). Randomness comes from
//! the caller: there is no RNG in `no_std`.
#![no_std]

extern crate alloc;

pub mod evidence;
pub mod flow;
pub mod jcs;
pub mod jwe;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::{Attestation, Challenge, CompositeEvidence, Request, RuntimeData, Tee, TeePubKey};
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha384};

/// The protocol version Trustee requires.
pub const KBS_PROTOCOL_VERSION: &str = "0.4.0";
/// The key-wrapping algorithm of the session key.
pub const KEY_ALG: &str = "ECDH-ES+A256KW";

/// Why a step of the exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum KbsError {
    /// The 32 bytes given are not a valid P-256 scalar.
    CreateKey,
    /// A message could not be encoded or parsed as JSON.
    Json,
    /// The challenge's nonce is not what a KBS sends.
    CheckNonce,
    /// The JWE could not be opened (see [`jwe::JweError`]).
    Decrypt(jwe::JweError),
}

impl core::fmt::Display for KbsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            KbsError::CreateKey => f.write_str("the key seed is not a valid P-256 scalar"),
            KbsError::Json => f.write_str("malformed KBS message"),
            KbsError::CheckNonce => f.write_str("the KBS challenge carries no usable nonce"),
            KbsError::Decrypt(e) => write!(f, "cannot decrypt the resource: {e}"),
        }
    }
}

impl core::error::Error for KbsError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            KbsError::Decrypt(e) => Some(e),
            _ => None,
        }
    }
}

/// One attestation session: the ephemeral key whose public half the
/// evidence binds, and the nonce it answers.
pub struct KbsSession {
    secret: p256::SecretKey,
    /// Init-data (Trustee's initdata TOML) sent with the evidence; the
    /// KBS checks its digest against HOST_DATA.
    init_data: Option<String>,
    /// Kept: each derivation is a scalar multiplication, which takes a
    /// second in an emulated guest.
    public: p256::PublicKey,
    nonce: Option<String>,
}

impl core::fmt::Debug for KbsSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KbsSession")
            .field("nonce", &self.nonce)
            .finish_non_exhaustive()
    }
}

impl KbsSession {
    /// A session whose key is derived from 32 random bytes.
    pub fn new(seed: &[u8; 32]) -> Result<Self, KbsError> {
        let secret = p256::SecretKey::from_slice(seed).map_err(|_| KbsError::CreateKey)?;
        Ok(KbsSession {
            init_data: None,
            public: secret.public_key(),
            secret,
            nonce: None,
        })
    }

    /// Sends `toml` (an initdata document: `version`, `algorithm`, `[data]`)
    /// as the attestation's `init-data`, format `toml`. The launch must
    /// have put its digest in HOST_DATA (Trustee's initdata binding).
    pub fn with_init_data(mut self, toml: &str) -> Self {
        self.init_data = Some(toml.to_string());
        self
    }

    /// The body of `POST /kbs/v0/auth`.
    pub fn auth_request() -> Vec<u8> {
        let request = Request {
            version: KBS_PROTOCOL_VERSION.to_string(),
            tee: Tee::Snp,
            extra_params: serde_json::Value::Object(serde_json::Map::new()),
        };
        serde_json::to_vec(&request).unwrap_or_default()
    }

    /// Takes the challenge `POST /kbs/v0/auth` returned.
    pub fn accept_challenge(&mut self, body: &[u8]) -> Result<(), KbsError> {
        let challenge: Challenge = serde_json::from_slice(body).map_err(|_| KbsError::Json)?;
        if challenge.nonce.is_empty() || challenge.nonce.len() > 512 {
            return Err(KbsError::CheckNonce);
        }
        self.nonce = Some(challenge.nonce);
        Ok(())
    }

    /// The ephemeral key as the JWK `tee-pubkey`.
    pub fn tee_pubkey(&self) -> TeePubKey {
        let point = self.public.to_sec1_point(false);
        let coordinate = |c: Option<&[u8]>| URL_SAFE_NO_PAD.encode(c.unwrap_or_default());
        TeePubKey::EC {
            crv: "P-256".to_string(),
            alg: KEY_ALG.to_string(),
            x: coordinate(point.x().map(|x| x.as_slice())),
            y: coordinate(point.y().map(|y| y.as_slice())),
        }
    }

    fn runtime_data(&self) -> RuntimeData {
        RuntimeData {
            nonce: self.nonce.clone().unwrap_or_default(),
            tee_pubkey: self.tee_pubkey(),
        }
    }

    /// REPORT_DATA for the evidence: SHA-384 of
    /// JCS(`{"additional-evidence": "", "nonce", "tee-pubkey"}`), padded.
    pub fn report_data(&self) -> Result<[u8; 64], KbsError> {
        let runtime = self.runtime_data();
        let bound = serde_json::json!({
            "additional-evidence": "",
            "nonce": runtime.nonce,
            "tee-pubkey": serde_json::to_value(&runtime.tee_pubkey).map_err(|_| KbsError::Json)?,
        });
        let digest = Sha384::digest(jcs::canonical(&bound).as_bytes());
        let mut data = [0u8; 64];
        data[..48].copy_from_slice(&digest);
        Ok(data)
    }

    /// The body of `POST /kbs/v0/attest`: the runtime data and the SNP
    /// evidence (`{"attestation_report": ..., "cert_chain": ...}`, as
    /// guest-components' SNP attester builds it).
    pub fn attest_request(&self, evidence: serde_json::Value) -> Result<Vec<u8>, KbsError> {
        let attestation = Attestation {
            init_data: self.init_data.as_ref().map(|body| kbs_types::InitData {
                format: "toml".to_string(),
                body: body.clone(),
            }),
            runtime_data: self.runtime_data(),
            tee_evidence: CompositeEvidence {
                primary_evidence: evidence,
                additional_evidence: String::new(),
            },
        };
        serde_json::to_vec(&attestation).map_err(|_| KbsError::Json)
    }

    /// Opens the JWE a resource request returned.
    pub fn decrypt(&self, body: &[u8]) -> Result<Vec<u8>, KbsError> {
        jwe::decrypt(&self.secret, body).map_err(KbsError::Decrypt)
    }
}
