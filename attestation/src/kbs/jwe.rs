//! Sealing a resource for a guest's `tee-pubkey` as Trustee's KBS does: a
//! flattened JWE with `alg` ECDH-ES+A256KW and `enc` A256GCM (RFC 7518
//! §4.6, §5.3), the additional data being the protected header's
//! base64url text. The Concat KDF is the client library's, so both ends
//! derive the key-encryption key with one piece of code.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use thiserror::Error;

/// Why a resource could not be sealed.
#[derive(Debug, Error)]
pub enum SealError {
    /// The guest's key is not an EC P-256 JWK for ECDH-ES+A256KW.
    #[error("the tee-pubkey is not a P-256 key for ECDH-ES+A256KW")]
    CheckKey,
    /// An OpenSSL operation failed.
    #[error("cannot seal the resource")]
    Crypto(#[from] openssl::error::ErrorStack),
}

fn coordinate(text: &str) -> Result<BigNum, SealError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SealError::CheckKey)?;
    if bytes.len() != 32 {
        return Err(SealError::CheckKey);
    }
    Ok(BigNum::from_slice(&bytes)?)
}

/// Seals `plaintext` for `key`; returns the flattened JWE JSON.
pub fn seal(key: &kbs_types::TeePubKey, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let kbs_types::TeePubKey::EC { crv, alg, x, y } = key else {
        return Err(SealError::CheckKey);
    };
    if crv != "P-256" || alg != umbra_kbs_client::KEY_ALG {
        return Err(SealError::CheckKey);
    }
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let (px, py) = (coordinate(x)?, coordinate(y)?);
    let peer = EcKey::from_public_key_affine_coordinates(&group, &px, &py)
        .map_err(|_| SealError::CheckKey)?;
    peer.check_key().map_err(|_| SealError::CheckKey)?;
    let ephemeral = EcKey::generate(&group)?;
    let (mut ex, mut ey) = (BigNum::new()?, BigNum::new()?);
    let mut ctx = BigNumContext::new()?;
    ephemeral
        .public_key()
        .affine_coordinates(&group, &mut ex, &mut ey, &mut ctx)?;
    let b64 = |n: &BigNum| -> Result<String, SealError> {
        Ok(URL_SAFE_NO_PAD.encode(n.to_vec_padded(32)?))
    };
    let header = serde_json::json!({
        "alg": umbra_kbs_client::KEY_ALG,
        "enc": "A256GCM",
        "epk": {"crv": "P-256", "kty": "EC", "x": b64(&ex)?, "y": b64(&ey)?},
    });
    let protected = URL_SAFE_NO_PAD.encode(header.to_string());
    let ours = PKey::from_ec_key(ephemeral)?;
    let theirs = PKey::from_ec_key(peer)?;
    let mut deriver = Deriver::new(&ours)?;
    deriver.set_peer(&theirs)?;
    let z = deriver.derive_to_vec()?;
    let kek = umbra_kbs_client::jwe::concat_kdf(&z, umbra_kbs_client::KEY_ALG, &[], &[]);
    let mut cek = [0u8; 32];
    openssl::rand::rand_bytes(&mut cek)?;
    let mut iv = [0u8; 12];
    openssl::rand::rand_bytes(&mut iv)?;
    let wrap_key = openssl::aes::AesKey::new_encrypt(&kek).map_err(|_| SealError::CheckKey)?;
    let mut wrapped = [0u8; 40];
    openssl::aes::wrap_key(&wrap_key, None, &mut wrapped, &cek).map_err(|_| SealError::CheckKey)?;
    let mut tag = [0u8; 16];
    let ciphertext = openssl::symm::encrypt_aead(
        openssl::symm::Cipher::aes_256_gcm(),
        &cek,
        Some(&iv),
        protected.as_bytes(),
        plaintext,
        &mut tag,
    )?;
    let jwe = serde_json::json!({
        "protected": protected,
        "encrypted_key": URL_SAFE_NO_PAD.encode(wrapped),
        "iv": URL_SAFE_NO_PAD.encode(iv),
        "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
        "tag": URL_SAFE_NO_PAD.encode(tag),
    });
    Ok(jwe.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_library_opens_what_the_server_seals() {
        let session = umbra_kbs_client::KbsSession::new(&[7; 32]).unwrap();
        let jwe = seal(&session.tee_pubkey(), b"the disk key").unwrap();
        assert_eq!(session.decrypt(&jwe).unwrap(), b"the disk key");
        // Another session's key opens nothing.
        let other = umbra_kbs_client::KbsSession::new(&[8; 32]).unwrap();
        assert!(other.decrypt(&jwe).is_err());
        // A flipped ciphertext bit does not authenticate.
        let mut value: serde_json::Value = serde_json::from_slice(&jwe).unwrap();
        let ct = value["ciphertext"].as_str().unwrap().to_string();
        let mut bytes = URL_SAFE_NO_PAD.decode(ct).unwrap();
        bytes[0] ^= 1;
        value["ciphertext"] = URL_SAFE_NO_PAD.encode(bytes).into();
        assert_eq!(
            session.decrypt(value.to_string().as_bytes()),
            Err(umbra_kbs_client::KbsError::Decrypt(
                umbra_kbs_client::jwe::JweError::Decrypt
            ))
        );
    }
}
