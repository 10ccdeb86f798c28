//! Opening the flattened JWE a KBS returns for a resource (RFC 7516 §7.2.2)
//! with `alg` ECDH-ES+A256KW and `enc` A256GCM (RFC 7518 §4.6, §4.4,
//! §5.3), as Trustee's `kbs/src/jwe` builds it: ECDH with the header's
//! ephemeral key, Concat KDF (SHA-256) to a key-encryption key, AES key
//! unwrap of the content key, AES-256-GCM with the protected header's
//! base64url text as additional data.

use alloc::string::String;
use alloc::vec::Vec;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Why a JWE could not be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum JweError {
    /// Not a flattened JWE JSON object with the members needed.
    ParseJwe,
    /// `alg` or `enc` is not ECDH-ES+A256KW / A256GCM.
    CheckAlgorithm,
    /// The header's `epk` is not a P-256 public key.
    ParseEphemeralKey,
    /// The content key does not unwrap (wrong key or tampered).
    UnwrapKey,
    /// The ciphertext does not authenticate (wrong key or tampered).
    Decrypt,
}

impl core::fmt::Display for JweError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            JweError::ParseJwe => "not a flattened JWE",
            JweError::CheckAlgorithm => "the JWE is not ECDH-ES+A256KW with A256GCM",
            JweError::ParseEphemeralKey => "the JWE's ephemeral key is not a P-256 point",
            JweError::UnwrapKey => "the content key does not unwrap for this session's key",
            JweError::Decrypt => "the content does not authenticate",
        })
    }
}

impl core::error::Error for JweError {}

fn member<'a>(object: &'a Value, name: &str) -> Result<&'a str, JweError> {
    object
        .get(name)
        .and_then(Value::as_str)
        .ok_or(JweError::ParseJwe)
}

fn decode(text: &str) -> Result<Vec<u8>, JweError> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| JweError::ParseJwe)
}

/// Concat KDF (NIST SP 800-56A §5.8.1, RFC 7518 §4.6.2) for a 256-bit key.
pub fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8]) -> [u8; 32] {
    let len = |n: usize| (n as u32).to_be_bytes();
    let mut hash = Sha256::new();
    hash.update(1u32.to_be_bytes());
    hash.update(z);
    hash.update(len(alg.len()));
    hash.update(alg.as_bytes());
    hash.update(len(apu.len()));
    hash.update(apu);
    hash.update(len(apv.len()));
    hash.update(apv);
    hash.update(256u32.to_be_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(&hash.finalize());
    key
}

/// Opens `body` with `secret`, the session's key.
pub fn decrypt(secret: &p256::SecretKey, body: &[u8]) -> Result<Vec<u8>, JweError> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let jwe: Value = serde_json::from_slice(body).map_err(|_| JweError::ParseJwe)?;
    // The exact protected text is the additional data: re-encoding the
    // parsed header could reorder its members.
    let protected_text = member(&jwe, "protected")?;
    let mut header: Value =
        serde_json::from_slice(&decode(protected_text)?).map_err(|_| JweError::ParseJwe)?;
    // The JOSE header is the union of the protected header, the shared
    // unprotected one and the recipient's (RFC 7516 §7.2.1): jwcrypto puts
    // `epk` in the recipient's.
    for extra in ["unprotected", "header"] {
        if let (Some(Value::Object(more)), Value::Object(all)) = (jwe.get(extra), &mut header) {
            for (name, value) in more {
                all.entry(name.clone()).or_insert_with(|| value.clone());
            }
        }
    }
    let alg = member(&header, "alg")?;
    if alg != crate::KEY_ALG || member(&header, "enc")? != "A256GCM" {
        return Err(JweError::CheckAlgorithm);
    }
    let epk = header.get("epk").ok_or(JweError::ParseEphemeralKey)?;
    if member(epk, "kty").ok() != Some("EC") || member(epk, "crv").ok() != Some("P-256") {
        return Err(JweError::ParseEphemeralKey);
    }
    let (x, y) = (decode(member(epk, "x")?)?, decode(member(epk, "y")?)?);
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::ParseEphemeralKey);
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 4;
    sec1[1..33].copy_from_slice(&x);
    sec1[33..].copy_from_slice(&y);
    let peer = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| JweError::ParseEphemeralKey)?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
    let party = |name: &str| match header.get(name).and_then(Value::as_str) {
        Some(text) => decode(text),
        None => Ok(Vec::new()),
    };
    let kek = concat_kdf(
        shared.raw_secret_bytes().as_slice(),
        alg,
        &party("apu")?,
        &party("apv")?,
    );
    let wrapped = decode(member(&jwe, "encrypted_key")?)?;
    let kw = aes_kw::KwAes256::new(&kek.into());
    let mut cek = [0u8; 32];
    if wrapped.len() != 40 {
        return Err(JweError::UnwrapKey);
    }
    kw.unwrap_key(&wrapped, &mut cek)
        .map_err(|_| JweError::UnwrapKey)?;
    let iv = decode(member(&jwe, "iv")?)?;
    if iv.len() != 12 {
        return Err(JweError::ParseJwe);
    }
    let mut sealed = decode(member(&jwe, "ciphertext")?)?;
    sealed.extend_from_slice(&decode(member(&jwe, "tag")?)?);
    let mut aad = String::from(protected_text);
    if let Some(extra) = jwe.get("aad").and_then(Value::as_str) {
        aad.push('.');
        aad.push_str(extra);
    }
    let cipher = aes_gcm::Aes256Gcm::new(&cek.into());
    let nonce = aes_gcm::Nonce::try_from(iv.as_slice()).map_err(|_| JweError::ParseJwe)?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| JweError::Decrypt)
}
