//! The ID block and ID authentication structure passed to SNP_LAUNCH_FINISH.
//!
//! SNP ABI (AMD pub. 56860) §8.18 (ID block, ID auth) and chapter 10 (ECDSA
//! public key and signature formats); reference doc §8. The firmware checks
//! the ID block's signature with the ID key, the ID key's signature with the
//! author key, and compares the ID block's launch digest and policy with the
//! launch. The attestation report then carries SHA-384 of both public keys.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private, Public};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Errors from building or checking an ID block.
#[derive(Debug, thiserror::Error)]
pub enum IdBlockError {
    /// The PEM text does not hold a private key.
    #[error("cannot parse private key PEM")]
    ParseKey(#[source] openssl::error::ErrorStack),
    /// The key is not an EC key.
    #[error("key is not an EC private key")]
    KeyType(#[source] openssl::error::ErrorStack),
    /// The key is on another curve than P-384.
    #[error("SNP only supports the EC curve P-384")]
    Curve,
    /// Extracting the public key coordinates failed.
    #[error("cannot extract public key coordinates")]
    PublicKey(#[source] openssl::error::ErrorStack),
    /// Signing failed.
    #[error("ECDSA signing failed")]
    Sign(#[source] openssl::error::ErrorStack),
    /// A public key or signature in SNP format is malformed.
    #[error("malformed {0} in SNP format")]
    Decode(&'static str),
    /// A signature does not verify.
    #[error("{0} signature does not verify")]
    Verify(&'static str),
    /// A byte slice has the wrong size for the structure.
    #[error("{what} must be {expected} bytes, got {got}")]
    Size {
        /// Structure name.
        what: &'static str,
        /// Required size.
        expected: usize,
        /// Size given.
        got: usize,
    },
}

/// `ID_KEY_ALGO` / `AUTH_KEY_ALGO` value for ECDSA P-384 with SHA-384.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// `CURVE` value of P-384 in an SNP public key.
pub const CURVE_P384: u32 = 2;
/// sev-snp-measure's default policy (SMT allowed, bit 17 reserved-one).
pub const DEFAULT_POLICY: u64 = 0x30000;

/// The ID block (SNP ABI §8.18, 96 bytes).
#[derive(Debug, Clone, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdBlock {
    /// Expected launch digest.
    pub ld: [u8; 48],
    /// Family ID, copied to the report.
    pub family_id: [u8; 16],
    /// Image ID, copied to the report.
    pub image_id: [u8; 16],
    /// Structure version: 1.
    pub version: u32,
    /// Guest SVN, copied to the report.
    pub guest_svn: u32,
    /// Guest policy; must equal the launch policy.
    pub policy: u64,
}

/// An ECDSA public key in SNP format (SNP ABI chapter 10, 1028 bytes).
#[derive(Debug, Clone, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EcdsaPublicKey {
    /// Curve: 2 = P-384.
    pub curve: u32,
    /// X coordinate, little-endian, zero-extended.
    pub qx: [u8; 72],
    /// Y coordinate, little-endian, zero-extended.
    pub qy: [u8; 72],
    /// Reserved, zero.
    pub reserved: [u8; 880],
}

/// An ECDSA signature in SNP format (SNP ABI chapter 10, 512 bytes).
#[derive(Debug, Clone, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct EcdsaSignature {
    /// R, little-endian, zero-extended.
    pub r: [u8; 72],
    /// S, little-endian, zero-extended.
    pub s: [u8; 72],
    /// Reserved, zero.
    pub reserved: [u8; 368],
}

/// The ID authentication information structure (SNP ABI §8.18, 4096 bytes).
#[derive(Debug, Clone, PartialEq, Eq, IntoBytes, FromBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct IdAuth {
    /// Algorithm of the ID key: 1.
    pub id_key_algo: u32,
    /// Algorithm of the author key: 1.
    pub auth_key_algo: u32,
    /// Reserved.
    pub reserved1: [u8; 56],
    /// Signature of the ID block with the ID key.
    pub id_block_sig: EcdsaSignature,
    /// The ID public key.
    pub id_key: EcdsaPublicKey,
    /// Reserved.
    pub reserved2: [u8; 60],
    /// Signature of `id_key` with the author key.
    pub id_key_sig: EcdsaSignature,
    /// The author public key.
    pub author_key: EcdsaPublicKey,
    /// Reserved.
    pub reserved3: [u8; 892],
}

// SNP ABI 56860 §8.18 and chapter 10.
const _: () = assert!(core::mem::size_of::<IdBlock>() == 0x60);
const _: () = assert!(core::mem::size_of::<EcdsaPublicKey>() == 0x404);
const _: () = assert!(core::mem::size_of::<EcdsaSignature>() == 0x200);
const _: () = assert!(core::mem::size_of::<IdAuth>() == 0x1000);
const _: () = assert!(core::mem::offset_of!(IdAuth, id_block_sig) == 0x40);
const _: () = assert!(core::mem::offset_of!(IdAuth, id_key) == 0x240);
const _: () = assert!(core::mem::offset_of!(IdAuth, id_key_sig) == 0x680);
const _: () = assert!(core::mem::offset_of!(IdAuth, author_key) == 0x880);

fn le72(bn: &openssl::bn::BigNumRef) -> Result<[u8; 72], IdBlockError> {
    let be = bn.to_vec();
    if be.len() > 72 {
        return Err(IdBlockError::Decode("integer"));
    }
    let mut out = [0u8; 72];
    for (o, b) in out.iter_mut().zip(be.iter().rev()) {
        *o = *b;
    }
    Ok(out)
}

fn bn_le(le: &[u8]) -> Result<BigNum, openssl::error::ErrorStack> {
    let be: Vec<u8> = le.iter().rev().copied().collect();
    BigNum::from_slice(&be)
}

fn sha384(data: &[u8]) -> [u8; 48] {
    openssl::sha::sha384(data)
}

impl IdBlock {
    /// An ID block (version 1) for launch digest `ld`.
    pub fn new(
        ld: [u8; 48],
        family_id: [u8; 16],
        image_id: [u8; 16],
        guest_svn: u32,
        policy: u64,
    ) -> Self {
        Self {
            ld,
            family_id,
            image_id,
            version: 1,
            guest_svn,
            policy,
        }
    }

    /// Reads an ID block from its 96 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, IdBlockError> {
        Self::read_from_bytes(b).map_err(|_| IdBlockError::Size {
            what: "ID block",
            expected: 0x60,
            got: b.len(),
        })
    }
}

impl EcdsaPublicKey {
    /// SHA-384 of the 1028-byte structure: the report's `ID_KEY_DIGEST` /
    /// `AUTHOR_KEY_DIGEST`.
    pub fn digest(&self) -> [u8; 48] {
        sha384(self.as_bytes())
    }

    fn to_openssl(&self, what: &'static str) -> Result<EcKey<Public>, IdBlockError> {
        if self.curve != CURVE_P384 {
            return Err(IdBlockError::Decode(what));
        }
        let group = openssl::ec::EcGroup::from_curve_name(Nid::SECP384R1)
            .map_err(|_| IdBlockError::Decode(what))?;
        let x = bn_le(&self.qx).map_err(|_| IdBlockError::Decode(what))?;
        let y = bn_le(&self.qy).map_err(|_| IdBlockError::Decode(what))?;
        EcKey::from_public_key_affine_coordinates(&group, &x, &y)
            .map_err(|_| IdBlockError::Decode(what))
    }

    /// Checks `sig` over `msg` (ECDSA P-384 with SHA-384).
    pub fn verify(
        &self,
        msg: &[u8],
        sig: &EcdsaSignature,
        what: &'static str,
    ) -> Result<(), IdBlockError> {
        let key = self.to_openssl(what)?;
        let r = bn_le(&sig.r).map_err(|_| IdBlockError::Decode(what))?;
        let s = bn_le(&sig.s).map_err(|_| IdBlockError::Decode(what))?;
        let sig =
            EcdsaSig::from_private_components(r, s).map_err(|_| IdBlockError::Decode(what))?;
        match sig.verify(&sha384(msg), &key) {
            Ok(true) => Ok(()),
            _ => Err(IdBlockError::Verify(what)),
        }
    }
}

/// A P-384 signing key (ID key or author key).
#[derive(Debug, Clone)]
pub struct SigningKey {
    key: EcKey<Private>,
}

impl SigningKey {
    /// Loads an unencrypted P-384 private key from PEM (SEC1 "EC PRIVATE KEY"
    /// or PKCS#8 "PRIVATE KEY").
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdBlockError> {
        let pkey = PKey::private_key_from_pem(pem).map_err(IdBlockError::ParseKey)?;
        let key = pkey.ec_key().map_err(IdBlockError::KeyType)?;
        if key.group().curve_name() != Some(Nid::SECP384R1) {
            return Err(IdBlockError::Curve);
        }
        Ok(Self { key })
    }

    /// The public key in SNP format.
    pub fn public_key(&self) -> Result<EcdsaPublicKey, IdBlockError> {
        let mut ctx = BigNumContext::new().map_err(IdBlockError::PublicKey)?;
        let mut x = BigNum::new().map_err(IdBlockError::PublicKey)?;
        let mut y = BigNum::new().map_err(IdBlockError::PublicKey)?;
        self.key
            .public_key()
            .affine_coordinates(self.key.group(), &mut x, &mut y, &mut ctx)
            .map_err(IdBlockError::PublicKey)?;
        let mut pk = EcdsaPublicKey::new_zeroed();
        pk.curve = CURVE_P384;
        pk.qx = le72(&x)?;
        pk.qy = le72(&y)?;
        Ok(pk)
    }

    /// Signs `msg` (ECDSA P-384 over SHA-384). Signatures are randomized.
    pub fn sign(&self, msg: &[u8]) -> Result<EcdsaSignature, IdBlockError> {
        let sig = EcdsaSig::sign(&sha384(msg), &self.key).map_err(IdBlockError::Sign)?;
        let mut out = EcdsaSignature::new_zeroed();
        out.r = le72(sig.r())?;
        out.s = le72(sig.s())?;
        Ok(out)
    }
}

impl IdAuth {
    /// Assembles the structure from keys and signatures made elsewhere.
    pub fn assemble(
        id_block_sig: EcdsaSignature,
        id_key: EcdsaPublicKey,
        id_key_sig: EcdsaSignature,
        author_key: EcdsaPublicKey,
    ) -> Self {
        let mut a = Self::new_zeroed();
        a.id_key_algo = ALGO_ECDSA_P384_SHA384;
        a.auth_key_algo = ALGO_ECDSA_P384_SHA384;
        a.id_block_sig = id_block_sig;
        a.id_key = id_key;
        a.id_key_sig = id_key_sig;
        a.author_key = author_key;
        a
    }

    /// Signs `block` with `id_key`, and the ID public key with `author_key`
    /// when given (otherwise the author fields stay zero and LAUNCH_FINISH
    /// must be issued with `auth_key_en = 0`).
    pub fn sign(
        block: &IdBlock,
        id_key: &SigningKey,
        author_key: Option<&SigningKey>,
    ) -> Result<Self, IdBlockError> {
        let id_pub = id_key.public_key()?;
        let block_sig = id_key.sign(block.as_bytes())?;
        let (key_sig, author_pub) = match author_key {
            Some(a) => (a.sign(id_pub.as_bytes())?, a.public_key()?),
            None => (EcdsaSignature::new_zeroed(), EcdsaPublicKey::new_zeroed()),
        };
        Ok(Self::assemble(block_sig, id_pub, key_sig, author_pub))
    }

    /// Reads the structure from its 4096 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, IdBlockError> {
        Self::read_from_bytes(b).map_err(|_| IdBlockError::Size {
            what: "ID auth",
            expected: 0x1000,
            got: b.len(),
        })
    }

    /// Whether an author key is present (the report's AUTHOR_KEY_EN).
    pub fn has_author_key(&self) -> bool {
        self.author_key.curve != 0
    }

    /// Checks the signatures the firmware checks at LAUNCH_FINISH: the ID
    /// block with the ID key and, when present, the ID key with the author key.
    pub fn verify(&self, block: &IdBlock) -> Result<(), IdBlockError> {
        self.id_key
            .verify(block.as_bytes(), &self.id_block_sig, "ID block")?;
        if self.has_author_key() {
            self.author_key
                .verify(self.id_key.as_bytes(), &self.id_key_sig, "ID key")?;
        }
        Ok(())
    }

    /// The report's `ID_KEY_DIGEST`.
    pub fn id_key_digest(&self) -> [u8; 48] {
        self.id_key.digest()
    }

    /// The report's `AUTHOR_KEY_DIGEST` (zero without an author key).
    pub fn author_key_digest(&self) -> [u8; 48] {
        if self.has_author_key() {
            self.author_key.digest()
        } else {
            [0; 48]
        }
    }
}
