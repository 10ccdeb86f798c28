//! MSG_REPORT_REQ and MSG_KEY_REQ: the attestation report the model signs
//! with its VCEK, and the keys it derives for the guest.
//!
//! Report layout: SNP ABI 56860 §7.3 table "ATTESTATION_REPORT Structure"
//! (version 3 with the CPUID fields); reference `snp-measurement.md` §10.
//! The report parses with `umbra_attestation::report::AttestationReport` and
//! verifies with `umbra-attest verify --trust-root <model ARK>`.

use zerocopy::{FromZeros, IntoBytes};

use crate::abi::FirmwareStatus;
use crate::guest_msg::{GuestRequestError, KeyReq, KeyRsp, ReportReq, ReportRsp};
use crate::keys::{hmac_sha384, DEFAULT_TCB};
use crate::psp::{SnpFirmwareModel, FW_BUILD, FW_MAJOR, FW_MINOR};

pub use umbra_attestation::report::{AttestationReportRaw, REPORT_SIZE, SIGNED_LEN};
/// The report version the model produces (3: with CPUID fields).
pub const REPORT_VERSION: u32 = 3;

/// KEY_INFO signing-key values (bits 4:2).
const SIGNING_KEY_VCEK: u32 = 0;
const SIGNING_KEY_NONE: u32 = 7;

/// GUEST_FIELD_SELECT bits the model mixes in (ABI: policy, image ID,
/// family ID, measurement, guest SVN, TCB version, launch mitigation vector).
const FIELD_SELECT_V1: u64 = 0x3F;
const FIELD_SELECT_V2: u64 = 0x7F;

/// The status a response carries.
fn status(s: FirmwareStatus) -> u32 {
    s as u32
}

/// Whether every Milan TCB component of `a` is at most that of `b`
/// (bootloader byte 0, TEE byte 1, SNP byte 6, microcode byte 7).
fn tcb_le(a: u64, b: u64) -> bool {
    let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
    [0, 1, 6, 7].into_iter().all(|i| a[i] <= b[i]) && [2, 3, 4, 5].into_iter().all(|i| a[i] == 0)
}

impl SnpFirmwareModel {
    fn tcb(&self) -> [u8; 8] {
        self.keys.as_ref().map_or(DEFAULT_TCB, |k| k.tcb())
    }

    /// MSG_REPORT_REQ from a guest using VMPCK `requester` (VMPCKn belongs
    /// to VMPLn, so it is also the requester's VMPL).
    pub(super) fn report_response(
        &self,
        req: &ReportReq,
        requester: u8,
    ) -> Result<ReportRsp, GuestRequestError> {
        let mut rsp = ReportRsp::new_zeroed();
        if req.vmpl > 3 || req.vmpl < u32::from(requester) || req.reserved != [0; 24] {
            rsp.status = status(FirmwareStatus::InvalidParam);
            return Ok(rsp);
        }
        match req.key_sel {
            // 0: the VLEK if one is installed, else the VCEK; 1: the VCEK.
            0 | 1 => {}
            // No VLEK is ever installed in the model.
            2 => {
                rsp.status = status(FirmwareStatus::InvalidKey);
                return Ok(rsp);
            }
            _ => {
                rsp.status = status(FirmwareStatus::InvalidParam);
                return Ok(rsp);
            }
        }
        let report = self.build_report(&req.report_data, req.vmpl)?;
        rsp.report_size = REPORT_SIZE as u32;
        rsp.report.copy_from_slice(report.as_bytes());
        Ok(rsp)
    }

    /// The signed report for `report_data` at `vmpl`.
    pub fn build_report(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
    ) -> Result<AttestationReportRaw, GuestRequestError> {
        let tcb = u64::from_le_bytes(self.tcb());
        let mut r = AttestationReportRaw::new_zeroed();
        r.version = REPORT_VERSION;
        r.guest_svn = self.identity.guest_svn;
        r.policy = self.policy;
        r.family_id = self.identity.family_id;
        r.image_id = self.identity.image_id;
        r.vmpl = vmpl;
        r.signature_algo = 1;
        r.current_tcb = tcb;
        r.platform_info = u64::from(self.platform.smt_enabled);
        let signing = if self.keys.is_some() {
            SIGNING_KEY_VCEK << 2
        } else {
            // Without keys the model behaves as MASK_CHIP_KEY: no chip ID,
            // no signature, signing key "none".
            SIGNING_KEY_NONE << 2 | 1 << 1
        };
        r.key_info = u32::from(self.identity.author_key_en) | signing;
        r.report_data = *report_data;
        r.measurement = self.measurement;
        r.host_data = self.host_data;
        r.id_key_digest = self.identity.id_key_digest;
        r.author_key_digest = self.identity.author_key_digest;
        r.report_id = self.report_id;
        r.report_id_ma = [0xFF; 32];
        r.reported_tcb = tcb;
        // Family 0x19, model 0x01, stepping 1: the model CPU (Milan).
        (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step) = (0x19, 0x01, 0x01);
        r.committed_tcb = tcb;
        r.current_version = [FW_BUILD, FW_MINOR, FW_MAJOR, 0];
        r.committed_version = r.current_version;
        r.launch_tcb = tcb;
        if let Some(keys) = &self.keys {
            r.chip_id = keys.chip_id();
            let (sr, ss) = keys
                .sign(&r.as_bytes()[..SIGNED_LEN])
                .map_err(|e| GuestRequestError::RunCrypto(e.to_string()))?;
            r.sig_r[..48].copy_from_slice(&sr);
            r.sig_s[..48].copy_from_slice(&ss);
        }
        Ok(r)
    }

    /// MSG_KEY_REQ from a guest using VMPCK `requester`.
    ///
    /// The firmware's KDF is not observable (reference note §3); the model's
    /// is its own: HMAC-SHA-384 keyed with the chip-unique root secret (from
    /// the key directory), over a label, the key selection, the VMPL,
    /// GUEST_FIELD_SELECT and each selected field in a fixed-size encoding,
    /// truncated to 32 bytes. The requested SVN and TCB (bounded by the
    /// current ones) are mixed in, not the current ones, so sealed data
    /// survives upgrades as on hardware.
    pub(super) fn key_response(
        &self,
        req: &KeyReq,
        requester: u8,
        msg_version: u8,
    ) -> Result<KeyRsp, GuestRequestError> {
        let mut rsp = KeyRsp::new_zeroed();
        let select_mask = if msg_version >= 2 {
            FIELD_SELECT_V2
        } else {
            FIELD_SELECT_V1
        };
        let tcb = u64::from_le_bytes(self.tcb());
        let invalid = req.key_select >> 3 != 0
            || req.reserved != 0
            || req.guest_field_select & !select_mask != 0
            || req.vmpl > 3
            || req.vmpl < u32::from(requester)
            || req.guest_svn > self.identity.guest_svn
            || !tcb_le(req.tcb_version, tcb);
        let root_key_select = req.key_select & 1;
        let key_sel = (req.key_select >> 1) & 3;
        if invalid || key_sel == 3 {
            rsp.status = status(FirmwareStatus::InvalidParam);
            return Ok(rsp);
        }
        // No VMRK (no migration agent) and no VLEK in the model.
        if root_key_select == 1 || key_sel == 2 {
            rsp.status = status(FirmwareStatus::InvalidKey);
            return Ok(rsp);
        }
        let sel = req.guest_field_select;
        let pick = |bit: u32, bytes: &[u8]| -> Vec<u8> {
            if sel >> bit & 1 == 1 {
                bytes.to_vec()
            } else {
                Vec::new()
            }
        };
        let fields = [
            pick(0, &self.policy.to_le_bytes()),
            pick(1, &self.identity.image_id),
            pick(2, &self.identity.family_id),
            pick(3, &self.measurement),
            pick(4, &req.guest_svn.to_le_bytes()),
            pick(5, &req.tcb_version.to_le_bytes()),
            pick(6, &req.launch_mit_vector.to_le_bytes()),
        ];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(12);
        // KEY_SEL 0 means "the VLEK if one is installed, else the VCEK";
        // the model installs none, so 0 and 1 derive from the same key.
        let effective_key: u32 = 1;
        let header = [effective_key.to_le_bytes(), req.vmpl.to_le_bytes()].concat();
        let sel_bytes = sel.to_le_bytes();
        parts.push(b"umbra snp-model MSG_KEY_REQ v1");
        parts.push(&header);
        parts.push(&sel_bytes);
        parts.extend(fields.iter().map(Vec::as_slice));
        let mac = hmac_sha384(&self.kdf_root, &parts)
            .map_err(|e| GuestRequestError::RunCrypto(e.to_string()))?;
        rsp.derived_key.copy_from_slice(&mac[..32]);
        Ok(rsp)
    }
}
