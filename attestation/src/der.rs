//! A minimal, bounds-checked DER reader: just enough to walk an X.509
//! certificate to its extensions and decode the AMD VCEK/VLEK extension
//! values (ITU-T X.690 definite-length encoding only).
//!
//! OpenSSL parses and verifies the certificates; this reader exists because
//! the `openssl` crate exposes no accessor for private-enterprise extensions
//! such as AMD's `1.3.6.1.4.1.3704.1.*`. Every length is checked against the
//! remaining input, so hostile input yields an error, never a panic.

use thiserror::Error;

/// Why a DER structure could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DerError {
    #[error("DER input ends inside a tag or length")]
    ReadHeader,
    #[error("DER length {len} runs past the end of the input ({left} bytes left)")]
    ReadContent { len: usize, left: usize },
    #[error("DER uses an indefinite or over-long length")]
    DecodeLength,
    #[error("expected DER tag {expected:#04x}, found {found:#04x}")]
    MatchTag { expected: u8, found: u8 },
    #[error("DER INTEGER is empty, negative or wider than 64 bits")]
    DecodeInteger,
    #[error("DER OBJECT IDENTIFIER is malformed")]
    DecodeOid,
}

pub const TAG_BOOLEAN: u8 = 0x01;
pub const TAG_INTEGER: u8 = 0x02;
pub const TAG_OCTET_STRING: u8 = 0x04;
pub const TAG_OID: u8 = 0x06;
pub const TAG_IA5_STRING: u8 = 0x16;
pub const TAG_SEQUENCE: u8 = 0x30;

/// One tag-length-value element borrowed from the input.
#[derive(Debug, Clone, Copy)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
}

/// A cursor over a sequence of DER elements.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// Reads the next element of any tag.
    pub fn next_tlv(&mut self) -> Result<Tlv<'a>, DerError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(DerError::ReadHeader)?;
        // High-tag-number form (low five bits all set) never occurs in X.509.
        if tag & 0x1f == 0x1f {
            return Err(DerError::ReadHeader);
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError::ReadHeader)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is BER's indefinite form; more than 4 length bytes cannot
            // describe anything that fits a certificate.
            if n == 0 || n > 4 {
                return Err(DerError::DecodeLength);
            }
            if after_len.len() < n {
                return Err(DerError::ReadHeader);
            }
            let mut len = 0usize;
            for &b in &after_len[..n] {
                len = (len << 8) | usize::from(b);
            }
            after_len = &after_len[n..];
            len
        };
        if after_len.len() < len {
            return Err(DerError::ReadContent {
                len,
                left: after_len.len(),
            });
        }
        let (content, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok(Tlv { tag, content })
    }

    /// Reads the next element and insists on its tag.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        let tlv = self.next_tlv()?;
        if tlv.tag != tag {
            return Err(DerError::MatchTag {
                expected: tag,
                found: tlv.tag,
            });
        }
        Ok(tlv.content)
    }

    /// Peeks at the next tag without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }
}

/// Decodes a non-negative INTEGER body that fits a u64.
pub fn integer_u64(content: &[u8]) -> Result<u64, DerError> {
    let (&first, _) = content.split_first().ok_or(DerError::DecodeInteger)?;
    if first & 0x80 != 0 {
        return Err(DerError::DecodeInteger);
    }
    // A leading zero byte is allowed (it keeps the sign bit clear).
    let digits = if first == 0 { &content[1..] } else { content };
    if digits.len() > 8 {
        return Err(DerError::DecodeInteger);
    }
    Ok(digits
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
}

/// Renders an OBJECT IDENTIFIER body in dotted form.
pub fn oid_string(content: &[u8]) -> Result<String, DerError> {
    if content.is_empty() || content.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(DerError::DecodeOid);
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for &b in content {
        if acc > (u64::MAX >> 7) {
            return Err(DerError::DecodeOid);
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let first = arcs.first().copied().ok_or(DerError::DecodeOid)?;
    let (a, b) = match first {
        0..=39 => (0, first),
        40..=79 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut out = format!("{a}.{b}");
    for arc in &arcs[1..] {
        out.push('.');
        out.push_str(&arc.to_string());
    }
    Ok(out)
}

/// The extensions of an X.509 certificate as `(dotted OID, value bytes)`.
///
/// Walks Certificate → TBSCertificate → `[3] EXPLICIT Extensions`
/// (RFC 5280 §4.1). The value is the content of the extnValue OCTET STRING.
pub fn certificate_extensions(cert_der: &[u8]) -> Result<Vec<(String, &[u8])>, DerError> {
    let cert = Reader::new(cert_der).expect(TAG_SEQUENCE)?;
    let tbs = Reader::new(cert).expect(TAG_SEQUENCE)?;
    let mut tbs = Reader::new(tbs);
    let mut out = Vec::new();
    while !tbs.is_empty() {
        let tlv = tbs.next_tlv()?;
        // [3] constructed, context-specific.
        if tlv.tag != 0xa3 {
            continue;
        }
        let exts = Reader::new(tlv.content).expect(TAG_SEQUENCE)?;
        let mut exts = Reader::new(exts);
        while !exts.is_empty() {
            let ext = exts.expect(TAG_SEQUENCE)?;
            let mut ext = Reader::new(ext);
            let oid = oid_string(ext.expect(TAG_OID)?)?;
            if ext.peek_tag() == Some(TAG_BOOLEAN) {
                ext.expect(TAG_BOOLEAN)?;
            }
            let value = ext.expect(TAG_OCTET_STRING)?;
            out.push((oid, value));
        }
    }
    Ok(out)
}

/// OID content bytes of SHA-384 (2.16.840.1.101.3.4.2.2).
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
/// OID content bytes of MGF1 (1.2.840.113549.1.1.8).
const OID_MGF1: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x08];
/// OID content bytes of RSASSA-PSS (1.2.840.113549.1.1.10).
const OID_RSASSA_PSS: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A];

/// Whether a certificate's outer signatureAlgorithm is RSASSA-PSS with
/// SHA-384, MGF1-SHA-384, a 48-byte salt and trailer field 1 — the only
/// parameters AMD uses (RFC 4055 §3.1; absent fields take the defaults
/// SHA-1 and salt 20, which are refused).
pub fn is_pss_sha384(cert_der: &[u8]) -> Result<bool, DerError> {
    let mut cert = Reader::new(Reader::new(cert_der).expect(TAG_SEQUENCE)?);
    cert.expect(TAG_SEQUENCE)?; // tbsCertificate
    let mut alg = Reader::new(cert.expect(TAG_SEQUENCE)?);
    if alg.expect(TAG_OID)? != OID_RSASSA_PSS {
        return Ok(false);
    }
    let mut params = Reader::new(alg.expect(TAG_SEQUENCE)?);
    let (mut hash_ok, mut mgf_ok, mut salt_ok) = (false, false, false);
    while !params.is_empty() {
        let field = params.next_tlv()?;
        let mut inner = Reader::new(field.content);
        match field.tag {
            0xA0 => {
                hash_ok = Reader::new(inner.expect(TAG_SEQUENCE)?).expect(TAG_OID)? == OID_SHA384
            }
            0xA1 => {
                let mut mgf = Reader::new(inner.expect(TAG_SEQUENCE)?);
                let is_mgf1 = mgf.expect(TAG_OID)? == OID_MGF1;
                let hash = Reader::new(mgf.expect(TAG_SEQUENCE)?).expect(TAG_OID)?;
                mgf_ok = is_mgf1 && hash == OID_SHA384;
            }
            0xA2 => salt_ok = integer_u64(inner.expect(TAG_INTEGER)?)? == 48,
            0xA3 => {
                if integer_u64(inner.expect(TAG_INTEGER)?)? != 1 {
                    return Ok(false);
                }
            }
            _ => return Ok(false),
        }
    }
    Ok(hash_ok && mgf_ok && salt_ok)
}

#[cfg(test)]
mod tests {

    fn amd_ark_der() -> Vec<u8> {
        openssl::x509::X509::from_pem(sev::certs::snp::builtin::milan::ARK)
            .expect("AMD's ARK")
            .to_der()
            .expect("DER")
    }

    /// Replaces the last occurrence of `from` in `der` with `to` (same length):
    /// the outer signatureAlgorithm follows the tbsCertificate.
    fn patched(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let at = der
            .windows(from.len())
            .rposition(|w| w == from)
            .expect("pattern present");
        let mut out = der.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    #[test]
    fn amd_pss_parameters_are_recognised_and_others_refused() {
        let ark = amd_ark_der();
        assert_eq!(is_pss_sha384(&ark), Ok(true));
        // saltLength [2] INTEGER 48 -> 32.
        let salt32 = patched(
            &ark,
            &[0xA2, 0x03, 0x02, 0x01, 0x30],
            &[0xA2, 0x03, 0x02, 0x01, 0x20],
        );
        assert_eq!(is_pss_sha384(&salt32), Ok(false));
        // The MGF1 hash (the last SHA-384 OID) -> SHA-256 (…04 02 01).
        let sha256 = patched(
            &ark,
            OID_SHA384,
            &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
        );
        assert_eq!(is_pss_sha384(&sha256), Ok(false));
        assert!(
            is_pss_sha384(&ark[..40]).is_err(),
            "truncated input is an error, not a panic"
        );
    }

    use super::*;

    #[test]
    fn decodes_amd_oid() {
        // 1.3.6.1.4.1.3704.1.3.1
        let body = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x9c, 0x78, 0x01, 0x03, 0x01];
        assert_eq!(oid_string(&body).as_deref(), Ok("1.3.6.1.4.1.3704.1.3.1"));
    }

    #[test]
    fn rejects_lengths_past_the_end() {
        let mut r = Reader::new(&[0x30, 0x05, 0x01]);
        assert_eq!(
            r.next_tlv().map(|t| t.tag),
            Err(DerError::ReadContent { len: 5, left: 1 })
        );
        assert_eq!(
            Reader::new(&[0x30, 0x80]).next_tlv().map(|t| t.tag),
            Err(DerError::DecodeLength)
        );
    }

    #[test]
    fn integers() {
        assert_eq!(integer_u64(&[0x00, 0xff]), Ok(255));
        assert_eq!(integer_u64(&[0x73]), Ok(115));
        assert_eq!(integer_u64(&[0x80]), Err(DerError::DecodeInteger));
        assert_eq!(integer_u64(&[]), Err(DerError::DecodeInteger));
    }
}
