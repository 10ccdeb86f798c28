//! SNP guest messages: the SNP_GUEST_REQUEST path from a guest's request
//! page to the firmware's response page.
//!
//! Format and crypto: SNP ABI 56860 §8.26 "SNP_GUEST_REQUEST" and chapter 9
//! "Guest Messages" (tables "Message Header", "Message Type Encodings",
//! MSG_REPORT_REQ/RSP, MSG_KEY_REQ/RSP); reference note
//! `ghcb-and-guest-messages.md` §3, which Linux, Oak and Coconut agree on
//! byte for byte. AES-256-GCM with VMPCK[MSG_VMPCK], IV = MSG_SEQNO (8 bytes
//! little-endian) followed by 4 zero bytes, AAD = header bytes 0x30..0x60,
//! 16-byte tag in AUTHTAG.
//!
//! Every request is hostile input: each field and length is checked and a
//! failure is an error carrying a firmware status, never a panic. The
//! firmware status for a bad header, tag or sequence number is not published
//! (reference "unconfirmed" item 6); the model answers INVALID_PARAM, and
//! AEAD_OFLOW when the sequence number would wrap.

use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use thiserror::Error;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::abi::FirmwareStatus;
use crate::psp::{GuestState, SnpFirmwareModel};
use crate::report;

pub use umbra_snp_abi::{
    MsgHeader, AEAD_AES_256_GCM, HDR_SIZE, HDR_VERSION, MAX_PAYLOAD, MSG_KEY_REQ, MSG_KEY_RSP,
    MSG_REPORT_REQ, MSG_REPORT_RSP, TAG_LEN,
};

/// MSG_REPORT_REQ (SNP ABI 56860 chapter 9, table "MSG_REPORT_REQ").
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportReq {
    /// Guest data copied into the report.
    pub report_data: [u8; 64],
    /// VMPL for the report: at least the requester's, at most 3.
    pub vmpl: u32,
    /// Bits 1:0 KEY_SEL: 0 VLEK if installed else VCEK, 1 VCEK, 2 VLEK.
    pub key_sel: u32,
    /// Reserved, zero.
    pub reserved: [u8; 24],
}

/// MSG_REPORT_RSP (SNP ABI 56860 chapter 9, table "MSG_REPORT_RSP").
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ReportRsp {
    /// 0, INVALID_PARAM or INVALID_KEY.
    pub status: u32,
    /// 0x4A0.
    pub report_size: u32,
    /// Reserved.
    pub reserved: [u8; 24],
    /// The signed attestation report.
    pub report: [u8; report::REPORT_SIZE],
}

/// MSG_KEY_REQ (SNP ABI 56860 chapter 9, table "MSG_KEY_REQ"); message
/// version 2 appends LAUNCH_MIT_VECTOR.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KeyReq {
    /// Bit 0 ROOT_KEY_SELECT (0 VCEK, 1 VMRK), bits 2:1 KEY_SEL.
    pub key_select: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Which guest fields to mix in (bits 0..6).
    pub guest_field_select: u64,
    /// VMPL to mix in: at least the requester's, at most 3.
    pub vmpl: u32,
    /// Guest SVN to mix in: at most the ID block's.
    pub guest_svn: u32,
    /// TCB to mix in: at most the committed TCB.
    pub tcb_version: u64,
    /// Launch mitigation vector (message version 2).
    pub launch_mit_vector: u64,
}

/// MSG_KEY_RSP (SNP ABI 56860 chapter 9, table "MSG_KEY_RSP").
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct KeyRsp {
    /// 0, INVALID_PARAM or INVALID_KEY.
    pub status: u32,
    /// Reserved.
    pub reserved: [u8; 28],
    /// The derived key.
    pub derived_key: [u8; 32],
}

// SNP ABI 56860 chapter 9: request/response sizes.
const _: () = assert!(core::mem::size_of::<ReportReq>() == 0x60);
const _: () = assert!(core::mem::size_of::<ReportRsp>() == 0x4C0);
const _: () = assert!(core::mem::size_of::<KeyReq>() == 0x28);
const _: () = assert!(core::mem::size_of::<KeyRsp>() == 0x40);
/// MSG_KEY_REQ size in message version 1 (without LAUNCH_MIT_VECTOR).
pub const KEY_REQ_V1_SIZE: usize = 0x20;

/// Why SNP_GUEST_REQUEST failed; [`code`](Self::code) is the firmware
/// status the hypervisor returns in `sw_exit_info_2`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GuestRequestError {
    /// The guest is not running (no launch, or not finished).
    #[error("guest is in state {0:?}, not running")]
    CheckGuestState(GuestState),
    /// A header field is not what the firmware accepts.
    #[error("message header {field} = {value:#x} is invalid")]
    CheckHeader {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// MSG_SEQNO is not the next one for the VMPCK (replay or skip).
    #[error("sequence number {got} for VMPCK{vmpck}, expected {expected}")]
    CheckSeqno {
        /// The VMPCK.
        vmpck: u8,
        /// What the firmware expects.
        expected: u64,
        /// What the request carries.
        got: u64,
    },
    /// The sequence number space of the VMPCK is exhausted.
    #[error("sequence numbers of VMPCK{0} exhausted")]
    AdvanceSeqno(u8),
    /// Authentication of the request failed (tampered or wrong key).
    #[error("request does not authenticate with VMPCK{0}")]
    DecryptRequest(u8),
    /// The message type, version or size is not one the firmware serves.
    #[error("message type {msg_type} version {msg_version} of {msg_sz} bytes is not served")]
    CheckMessage {
        /// MSG_TYPE.
        msg_type: u8,
        /// MSG_VERSION.
        msg_version: u8,
        /// MSG_SZ.
        msg_sz: u16,
    },
    /// OpenSSL failed (encryption of the response, signing).
    #[error("firmware crypto failed: {0}")]
    RunCrypto(String),
}

impl GuestRequestError {
    /// The firmware status of the failure.
    pub fn status(&self) -> FirmwareStatus {
        match self {
            GuestRequestError::CheckGuestState(_) => FirmwareStatus::InvalidGuestState,
            GuestRequestError::AdvanceSeqno(_) => FirmwareStatus::AeadOflow,
            _ => FirmwareStatus::InvalidParam,
        }
    }

    /// The firmware status as the raw code for `sw_exit_info_2`.
    pub fn code(&self) -> u32 {
        self.status() as u32
    }
}

/// A served request.
#[derive(Debug)]
pub struct GuestRequestOutcome {
    /// The response page.
    pub response: Box<[u8; 4096]>,
    /// The attestation report, when a report was produced (for logs).
    pub report: Option<Vec<u8>>,
    /// The VMPCK used.
    pub vmpck: u8,
    /// The request's MSG_TYPE.
    pub msg_type: u8,
}

fn iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Builds a message page: `header` (its size, algo and version fields are
/// set here) and `payload` encrypted with `key`. Used by the firmware for
/// responses and by tests and tools for requests.
pub fn seal(
    key: &[u8; 32],
    mut header: MsgHeader,
    payload: &[u8],
) -> Result<Box<[u8; 4096]>, GuestRequestError> {
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_PAYLOAD)
        .ok_or(GuestRequestError::CheckHeader {
            field: "MSG_SZ",
            value: payload.len() as u64,
        })?;
    header.algo = AEAD_AES_256_GCM;
    header.hdr_version = HDR_VERSION;
    header.hdr_sz = HDR_SIZE as u16;
    header.msg_sz = len;
    header.authtag = [0; 32];
    let mut page = Box::new([0u8; 4096]);
    page[..HDR_SIZE].copy_from_slice(header.as_bytes());
    let mut tag = [0u8; TAG_LEN];
    let ct = encrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv(header.msg_seqno)),
        &page[0x30..HDR_SIZE],
        payload,
        &mut tag,
    )
    .map_err(|e| GuestRequestError::RunCrypto(e.to_string()))?;
    page[..TAG_LEN].copy_from_slice(&tag);
    page[HDR_SIZE..HDR_SIZE + ct.len()].copy_from_slice(&ct);
    Ok(page)
}

/// Checks a message page's header and authenticates and decrypts it with
/// `key`. Returns the header and the plaintext.
pub fn open(key: &[u8; 32], page: &[u8; 4096]) -> Result<(MsgHeader, Vec<u8>), GuestRequestError> {
    let header = parse_header(page)?;
    decrypt(key, page, &header)
        .map(|p| (header, p))
        .map_err(|()| GuestRequestError::DecryptRequest(header.msg_vmpck))
}

fn parse_header(page: &[u8; 4096]) -> Result<MsgHeader, GuestRequestError> {
    let (header, _) = MsgHeader::read_from_prefix(page.as_slice()).map_err(|_| {
        GuestRequestError::CheckHeader {
            field: "size",
            value: 0,
        }
    })?;
    let bad = |field, value: u64| Err(GuestRequestError::CheckHeader { field, value });
    if header.algo != AEAD_AES_256_GCM {
        return bad("ALGO", header.algo.into());
    }
    if header.hdr_version != HDR_VERSION {
        return bad("HDR_VERSION", header.hdr_version.into());
    }
    if usize::from(header.hdr_sz) != HDR_SIZE {
        return bad("HDR_SZ", header.hdr_sz.into());
    }
    if usize::from(header.msg_sz) > MAX_PAYLOAD {
        return bad("MSG_SZ", header.msg_sz.into());
    }
    if header.msg_vmpck > 3 {
        return bad("MSG_VMPCK", header.msg_vmpck.into());
    }
    Ok(header)
}

fn decrypt(key: &[u8; 32], page: &[u8; 4096], header: &MsgHeader) -> Result<Vec<u8>, ()> {
    let end = HDR_SIZE + usize::from(header.msg_sz);
    let ct = page.get(HDR_SIZE..end).ok_or(())?;
    decrypt_aead(
        Cipher::aes_256_gcm(),
        key,
        Some(&iv(header.msg_seqno)),
        &page[0x30..HDR_SIZE],
        ct,
        &page[..TAG_LEN],
    )
    .map_err(|_| ())
}

impl SnpFirmwareModel {
    /// SNP_GUEST_REQUEST: authenticates and decrypts `request_page` with the
    /// VMPCK it names, checks its sequence number, serves MSG_REPORT_REQ or
    /// MSG_KEY_REQ and returns the encrypted response page. The sequence
    /// number of that VMPCK advances by 2 only on success.
    pub fn guest_request(
        &mut self,
        request_page: &[u8; 4096],
    ) -> Result<GuestRequestOutcome, GuestRequestError> {
        if self.state != GuestState::Running {
            return Err(GuestRequestError::CheckGuestState(self.state));
        }
        let header = parse_header(request_page)?;
        let n = header.msg_vmpck;
        let vmpck = usize::from(n);
        let last = self.seqno[vmpck];
        let expected = last
            .checked_add(1)
            .filter(|e| e.checked_add(1).is_some())
            .ok_or(GuestRequestError::AdvanceSeqno(n))?;
        if header.msg_seqno != expected {
            return Err(GuestRequestError::CheckSeqno {
                vmpck: n,
                expected,
                got: header.msg_seqno,
            });
        }
        let plain = decrypt(&self.vmpck[vmpck], request_page, &header)
            .map_err(|()| GuestRequestError::DecryptRequest(n))?;
        let unserved = GuestRequestError::CheckMessage {
            msg_type: header.msg_type,
            msg_version: header.msg_version,
            msg_sz: header.msg_sz,
        };
        let (payload, rsp_type, report) = match (header.msg_type, header.msg_version) {
            (MSG_REPORT_REQ, 1) => {
                let req = ReportReq::read_from_bytes(&plain).map_err(|_| unserved)?;
                let rsp = self.report_response(&req, n)?;
                let report = (rsp.status == 0).then(|| rsp.report.to_vec());
                (rsp.as_bytes().to_vec(), MSG_REPORT_RSP, report)
            }
            (MSG_KEY_REQ, 1 | 2) => {
                let want = if header.msg_version == 1 {
                    KEY_REQ_V1_SIZE
                } else {
                    core::mem::size_of::<KeyReq>()
                };
                if plain.len() != want {
                    return Err(unserved);
                }
                let mut req = KeyReq::new_zeroed();
                req.as_mut_bytes()[..want].copy_from_slice(&plain);
                let rsp = self.key_response(&req, n, header.msg_version)?;
                (rsp.as_bytes().to_vec(), MSG_KEY_RSP, None)
            }
            _ => return Err(unserved),
        };
        let mut rsp_header = MsgHeader::new_zeroed();
        rsp_header.msg_seqno = expected + 1;
        rsp_header.msg_type = rsp_type;
        rsp_header.msg_version = header.msg_version;
        rsp_header.msg_vmpck = n;
        let response = seal(&self.vmpck[vmpck], rsp_header, &payload)?;
        self.seqno[vmpck] = expected + 1;
        Ok(GuestRequestOutcome {
            response,
            report,
            vmpck: n,
            msg_type: header.msg_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_agree_with_the_aead_layout() {
        let key = [7u8; 32];
        let mut h = MsgHeader::new_zeroed();
        h.msg_seqno = 1;
        h.msg_type = MSG_REPORT_REQ;
        h.msg_version = 1;
        h.msg_vmpck = 2;
        let page = seal(&key, h, b"hello").unwrap();
        // Header fields at the ABI offsets.
        assert_eq!(page[0x30], 1);
        assert_eq!(page[0x31], 1);
        assert_eq!(&page[0x32..0x34], &[0x60, 0]);
        assert_eq!(page[0x34], MSG_REPORT_REQ);
        assert_eq!(&page[0x36..0x38], &[5, 0]);
        assert_eq!(page[0x3C], 2);
        assert!(page[0x10..0x20].iter().all(|&b| b == 0));
        // An independent AES-256-GCM decryption with IV = seqno || 0^4 and
        // AAD = bytes 0x30..0x60.
        let mut iv = [0u8; 12];
        iv[0] = 1;
        let plain = openssl::symm::decrypt_aead(
            Cipher::aes_256_gcm(),
            &key,
            Some(&iv),
            &page[0x30..0x60],
            &page[0x60..0x65],
            &page[..16],
        )
        .unwrap();
        assert_eq!(plain, b"hello");
        let (hdr, p) = open(&key, &page).unwrap();
        assert_eq!((hdr.msg_seqno, p.as_slice()), (1, &b"hello"[..]));
        // The AAD covers MSG_VMPCK: changing it breaks the tag.
        let mut bad = page.clone();
        bad[0x3C] = 1;
        assert_eq!(
            open(&key, &bad).unwrap_err(),
            GuestRequestError::DecryptRequest(1)
        );
        let mut bad = page;
        bad[0x31] = 2;
        assert_eq!(
            open(&key, &bad).unwrap_err().status(),
            FirmwareStatus::InvalidParam
        );
    }
}
