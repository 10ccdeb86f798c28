//! SNP guest messages as the guest builds and checks them (AMD SEV-SNP ABI
//! spec 56860 chapter 9, "Guest Messages"; the header is `umbra_snp_abi`'s
//! `MsgHeader`, the same definition the firmware model uses): one 4 KiB page,
//! a 0x60-byte header, the payload encrypted with AES-256-GCM under VMPCKn,
//! IV = MSG_SEQNO (8 bytes LE) || 4 zero bytes, AAD = header bytes 0x30..0x60.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use umbra_snp_abi::{AEAD_AES_256_GCM, HDR_VERSION, TAG_LEN};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Message page size.
pub const PAGE: usize = 4096;
/// Header size (HDR_SZ).
pub const HEADER_SIZE: usize = HDR_SIZE;
pub use umbra_snp_abi::{
    MsgHeader, HDR_SIZE, MAX_PAYLOAD, MSG_KEY_REQ, MSG_REPORT_REQ, MSG_REPORT_RSP, REPORT_REQ_SIZE,
    REPORT_RSP_REPORT, REPORT_SIZE,
};

/// Where the AAD starts: the header from ALGO on.
const AAD_START: usize = core::mem::offset_of!(MsgHeader, algo);

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
    let mut hdr = MsgHeader::new_zeroed();
    hdr.msg_seqno = seqno;
    hdr.algo = AEAD_AES_256_GCM;
    hdr.hdr_version = HDR_VERSION;
    hdr.hdr_sz = HEADER_SIZE as u16;
    hdr.msg_type = msg_type;
    hdr.msg_version = 1;
    hdr.msg_sz = payload.len() as u16;
    hdr.msg_vmpck = vmpck;
    let (header, body) = page.split_at_mut(HEADER_SIZE);
    header.copy_from_slice(hdr.as_bytes());
    let body = &mut body[..payload.len()];
    body.copy_from_slice(payload);
    let cipher = Aes256Gcm::new(key.into());
    let tag = cipher
        .encrypt_inout_detached(
            &Nonce::from(nonce(seqno)),
            &header[AAD_START..HEADER_SIZE],
            body.into(),
        )
        .map_err(|_| MsgError::Encrypt)?;
    header[..TAG_LEN].copy_from_slice(&tag);
    Ok(())
}

/// Checks and decrypts a message in place; returns its type and plaintext.
/// The header is checked as Linux's sev-guest driver checks a response
/// (`verify_and_dec_payload`): algorithm, header version and size, message
/// version, the VMPCK it was sealed with, sequence number, payload size.
pub fn open<'a>(
    key: &[u8; 32],
    vmpck: u8,
    expected_seqno: u64,
    page: &'a mut [u8; PAGE],
) -> Result<(u8, &'a [u8]), MsgError> {
    let (header, body) = page.split_at_mut(HEADER_SIZE);
    let hdr = MsgHeader::read_from_bytes(header).map_err(|_| MsgError::Header)?;
    if hdr.algo != AEAD_AES_256_GCM
        || hdr.hdr_version != HDR_VERSION
        || usize::from(hdr.hdr_sz) != HEADER_SIZE
        || hdr.msg_version != 1
        || hdr.msg_vmpck != vmpck
    {
        return Err(MsgError::Header);
    }
    let seqno = hdr.msg_seqno;
    if seqno != expected_seqno {
        return Err(MsgError::Sequence);
    }
    let size = usize::from(hdr.msg_sz);
    if size > MAX_PAYLOAD {
        return Err(MsgError::Header);
    }
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&hdr.authtag[..TAG_LEN]);
    let body = &mut body[..size];
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt_inout_detached(
            &Nonce::from(nonce(seqno)),
            &header[AAD_START..HEADER_SIZE],
            body.into(),
            &Tag::from(tag),
        )
        .map_err(|_| MsgError::Tag)?;
    Ok((hdr.msg_type, body))
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
        let (ty, plain) = open(&key, 0, 1, &mut copy).unwrap();
        assert_eq!((ty, plain), (MSG_REPORT_REQ, &payload[..]));
        let mut copy = page;
        assert_eq!(open(&key, 0, 3, &mut copy), Err(MsgError::Sequence));
        let mut copy = page;
        copy[0x70] ^= 1;
        assert_eq!(open(&key, 0, 1, &mut copy), Err(MsgError::Tag));
        // A response sealed with another VMPCK, another header size or
        // message version is refused before its tag is even checked.
        for (at, value) in [(0x3C, 1u8), (0x32, 0x50), (0x35, 2)] {
            let mut copy = page;
            copy[at] = value;
            assert_eq!(
                open(&key, 0, 1, &mut copy),
                Err(MsgError::Header),
                "byte {at:#x}"
            );
        }
        assert_eq!(open(&key, 1, 1, &mut page.clone()), Err(MsgError::Header));
        assert_eq!(open(&[8u8; 32], 0, 1, &mut page), Err(MsgError::Tag));
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
