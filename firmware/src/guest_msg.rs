//! SNP guest messages as the guest builds and checks them (AMD SEV-SNP ABI
//! spec 56860, "Guest Messages"; layout in
//! ../shared/docs/reference/ghcb-and-guest-messages.md §3): one 4 KiB page,
//! a 0x60-byte header, the payload encrypted with AES-256-GCM under VMPCKn,
//! IV = MSG_SEQNO (8 bytes LE) || 4 zero bytes, AAD = header bytes 0x30..0x60.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

/// Message page size.
pub const PAGE: usize = 4096;
/// Header size (HDR_SZ).
pub const HEADER_SIZE: usize = 0x60;
/// Largest payload that fits the page.
pub const MAX_PAYLOAD: usize = PAGE - HEADER_SIZE;
/// MSG_REPORT_REQ.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_REPORT_RSP.
pub const MSG_REPORT_RSP: u8 = 6;
/// MSG_KEY_REQ.
pub const MSG_KEY_REQ: u8 = 3;
/// Size of MSG_REPORT_REQ.
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Offset of the report in MSG_REPORT_RSP.
pub const REPORT_RSP_REPORT: usize = 0x20;
/// Size of an attestation report.
pub const REPORT_SIZE: usize = 0x4A0;

/// Header field offsets.
mod off {
    pub const AUTHTAG: usize = 0x00;
    pub const SEQNO: usize = 0x20;
    pub const ALGO: usize = 0x30;
    pub const HDR_VERSION: usize = 0x31;
    pub const HDR_SZ: usize = 0x32;
    pub const MSG_TYPE: usize = 0x34;
    pub const MSG_VERSION: usize = 0x35;
    pub const MSG_SZ: usize = 0x36;
    pub const VMPCK: usize = 0x3C;
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// The payload does not fit.
    TooLarge,
    /// AES-GCM refused to encrypt (the payload exceeds what GCM allows).
    Encrypt,
    /// Header fields are not what was expected.
    Header,
    /// The sequence number is not the expected one.
    Sequence,
    /// The tag did not verify.
    Tag,
}

fn nonce(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Builds an encrypted message in `page`.
pub fn seal(
    key: &[u8; 32],
    seqno: u64,
    msg_type: u8,
    vmpck: u8,
    payload: &[u8],
    page: &mut [u8; PAGE],
) -> Result<(), MsgError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(MsgError::TooLarge);
    }
    page.fill(0);
    page[off::SEQNO..off::SEQNO + 8].copy_from_slice(&seqno.to_le_bytes());
    page[off::ALGO] = 1;
    page[off::HDR_VERSION] = 1;
    page[off::HDR_SZ..off::HDR_SZ + 2].copy_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
    page[off::MSG_TYPE] = msg_type;
    page[off::MSG_VERSION] = 1;
    page[off::MSG_SZ..off::MSG_SZ + 2].copy_from_slice(&(payload.len() as u16).to_le_bytes());
    page[off::VMPCK] = vmpck;
    let (header, body) = page.split_at_mut(HEADER_SIZE);
    let body = &mut body[..payload.len()];
    body.copy_from_slice(payload);
    let cipher = Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::from(nonce(seqno)),
            &header[off::ALGO..HEADER_SIZE],
            body.into(),
        )
        .map_err(|_| MsgError::Encrypt)?;
    header[off::AUTHTAG..off::AUTHTAG + 16].copy_from_slice(&tag);
    Ok(())
}

/// Checks and decrypts a message in place; returns its type and plaintext.
pub fn open<'a>(
    key: &[u8; 32],
    expected_seqno: u64,
    page: &'a mut [u8; PAGE],
) -> Result<(u8, &'a [u8]), MsgError> {
    let (header, body) = page.split_at_mut(HEADER_SIZE);
    if header[off::ALGO] != 1 || header[off::HDR_VERSION] != 1 {
        return Err(MsgError::Header);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[off::SEQNO..off::SEQNO + 8]);
    let seqno = u64::from_le_bytes(seq);
    if seqno != expected_seqno {
        return Err(MsgError::Sequence);
    }
    let size = usize::from(u16::from_le_bytes([
        header[off::MSG_SZ],
        header[off::MSG_SZ + 1],
    ]));
    if size > MAX_PAYLOAD {
        return Err(MsgError::Header);
    }
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&header[off::AUTHTAG..off::AUTHTAG + 16]);
    let body = &mut body[..size];
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_inout_detached(
            &Nonce::from(nonce(seqno)),
            &header[off::ALGO..HEADER_SIZE],
            body.into(),
            &Tag::from(tag),
        )
        .map_err(|_| MsgError::Tag)?;
    Ok((header[off::MSG_TYPE], body))
}

/// The MSG_REPORT_REQ payload: REPORT_DATA, VMPL 0, KEY_SEL 0.
pub fn report_request(report_data: &[u8; 64]) -> [u8; REPORT_REQ_SIZE] {
    let mut req = [0u8; REPORT_REQ_SIZE];
    req[..64].copy_from_slice(report_data);
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_detects_tampering() {
        let key = [7u8; 32];
        let mut page = [0u8; PAGE];
        let payload = report_request(&[0xAB; 64]);
        seal(&key, 1, MSG_REPORT_REQ, 0, &payload, &mut page).unwrap();
        assert_eq!(page[0x30], 1);
        assert_eq!(&page[0x32..0x34], &[0x60, 0]);
        assert_eq!(&page[0x36..0x38], &[0x60, 0]);
        assert_ne!(&page[0x60..0x70], &payload[..16], "payload is encrypted");
        let mut copy = page;
        let (ty, plain) = open(&key, 1, &mut copy).unwrap();
        assert_eq!((ty, plain), (MSG_REPORT_REQ, &payload[..]));
        let mut copy = page;
        assert_eq!(open(&key, 3, &mut copy), Err(MsgError::Sequence));
        let mut copy = page;
        copy[0x70] ^= 1;
        assert_eq!(open(&key, 1, &mut copy), Err(MsgError::Tag));
        let mut copy = page;
        copy[0x3C] = 1; // AAD covers MSG_VMPCK
        assert_eq!(open(&key, 1, &mut copy), Err(MsgError::Tag));
        assert_eq!(open(&[8u8; 32], 1, &mut page), Err(MsgError::Tag));
    }

    /// NIST SP 800-38D test case 14 (AES-256, 96-bit IV of zeros, one zero
    /// block): checks the GCM code against the standard, not against itself.
    #[test]
    fn aes_256_gcm_matches_nist_vector() {
        let cipher = Aes256Gcm::new(&[0u8; 32].into());
        let mut block = [0u8; 16];
        let tag = cipher
            .encrypt_inout_detached(&Nonce::from([0u8; 12]), &[], (&mut block[..]).into())
            .unwrap();
        assert_eq!(
            block,
            [
                0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e, 0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3,
                0x9d, 0x18
            ]
        );
        let tag: [u8; 16] = tag.into();
        assert_eq!(
            tag,
            [
                0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0, 0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a,
                0xb9, 0x19
            ]
        );
    }
}
