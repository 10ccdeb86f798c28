//! The SNP firmware model's guest context and launch state machine.
//!
//! SNP ABI 56860 chapter 8: a guest context is created in GSTATE_INIT,
//! SNP_LAUNCH_START moves it to GSTATE_LAUNCH, SNP_LAUNCH_UPDATE adds pages
//! (and extends the launch digest, §8.17), SNP_LAUNCH_FINISH checks the ID
//! block (§8.18) and moves it to GSTATE_RUNNING. Commands in the wrong state
//! fail with INVALID_GUEST_STATE; every refusal carries the status code the
//! firmware returns. The digest is computed by the attestation crate's
//! `LaunchDigest`, the same code that predicts it for `umbra-attest measure`.
//!
//! The pure state machine works on page buffers; [`SnpModelLaunch`] wraps it
//! with guest memory (anything implementing [`GuestPages`], in the VMM the
//! `GuestMemoryMmap`) and implements the backend's `ConfidentialLaunch`.

use std::sync::Arc;

use thiserror::Error;
use umbra_attestation::id_block::{IdAuth, IdBlock, ALGO_ECDSA_P384_SHA384};
use umbra_attestation::measure::gctx::{LaunchDigest, PAGE_SIZE, VMSA_GPA};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use super::cpuid::{self, CpuidCorrection};
use super::keys::ModelKeys;
use super::rmp::Rmp;
use super::secrets::{SecretsPage, VMPCK_LEN};
use crate::backend::confidential::{
    ConfidentialLaunch, FirmwareStatus, LaunchError, LaunchFinishParams, LaunchFinished,
    LaunchStartParams, LaunchUpdate, PageType,
};

/// The model firmware's API version (SNP_PLATFORM_STATUS API_MAJOR/MINOR):
/// a Milan release that accepts every policy bit defined up to ABI 1.55.
pub const FW_MAJOR: u8 = 1;
/// API minor version.
pub const FW_MINOR: u8 = 55;
/// Build number.
pub const FW_BUILD: u8 = 21;

/// CPUID Fn0000_0001 EAX of the model CPU: family 0x19, model 0x01,
/// stepping 1 (Milan).
pub const MODEL_FMS: u32 = 0x00A0_0F11;

/// Guest policy bits (SNP ABI 56860 §4.3, table "Guest Policy").
pub mod policy {
    /// SMT allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_ONE: u64 = 1 << 17;
    /// Association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// Single socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with guest memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// RAPL must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Page swap disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
}

/// Guest context states (SNP ABI 56860 §5.2, table "Guest States").
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum GuestState {
    /// GSTATE_INIT: context created, no launch yet.
    Init,
    /// GSTATE_LAUNCH: between LAUNCH_START and LAUNCH_FINISH.
    Launch,
    /// GSTATE_RUNNING: launched.
    Running,
}

/// Errors of the model outside the firmware's own status codes.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The random source failed (VMPCKs, report ID).
    #[error("cannot draw random bytes")]
    DrawRandom(#[source] openssl::error::ErrorStack),
}

/// What the model's platform offers, which LAUNCH_START checks the policy
/// against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    /// SMT enabled (PLATFORM_INFO bit 0): a policy without SMT is refused.
    pub smt_enabled: bool,
}

impl Default for Platform {
    fn default() -> Self {
        // A Milan server as shipped: SMT on.
        Platform { smt_enabled: true }
    }
}

/// What LAUNCH_FINISH recorded from the ID block (zero without one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityInfo {
    /// FAMILY_ID from the ID block.
    pub family_id: [u8; 16],
    /// IMAGE_ID from the ID block.
    pub image_id: [u8; 16],
    /// GUEST_SVN from the ID block.
    pub guest_svn: u32,
    /// SHA-384 of the ID public key.
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author public key (zero without one).
    pub author_key_digest: [u8; 48],
    /// Whether the author key was used (KEY_INFO.AUTHOR_KEY_EN).
    pub author_key_en: bool,
}

impl Default for IdentityInfo {
    fn default() -> Self {
        IdentityInfo {
            family_id: [0; 16],
            image_id: [0; 16],
            guest_svn: 0,
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            author_key_en: false,
        }
    }
}

/// The firmware's guest context for one SNP guest.
pub struct SnpFirmwareModel {
    pub(super) state: GuestState,
    pub(super) policy: u64,
    pub(super) gosvw: [u8; 16],
    pub(super) digest: LaunchDigest,
    pub(super) measurement: [u8; 48],
    pub(super) host_data: [u8; 32],
    pub(super) identity: IdentityInfo,
    pub(super) rmp: Rmp,
    pub(super) vmpck: [[u8; VMPCK_LEN]; 4],
    /// Per VMPCK: the last sequence number used (0 at launch).
    pub(super) seqno: [u64; 4],
    pub(super) report_id: [u8; 32],
    pub(super) keys: Option<Arc<ModelKeys>>,
    /// Root secret of MSG_KEY_REQ derivations.
    pub(super) kdf_root: [u8; 48],
    pub(super) platform: Platform,
    cpuid_corrections: Vec<CpuidCorrection>,
    pages_launched: u64,
}

impl std::fmt::Debug for SnpFirmwareModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the VMPCKs.
        f.debug_struct("SnpFirmwareModel")
            .field("state", &self.state)
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("rmp", &self.rmp)
            .field("pages_launched", &self.pages_launched)
            .finish()
    }
}

fn random<const N: usize>() -> Result<[u8; N], ModelError> {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).map_err(ModelError::DrawRandom)?;
    Ok(b)
}

/// Counts for the metrics JSON.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelSummary {
    /// Guest state.
    pub state: GuestState,
    /// Pages added by LAUNCH_UPDATE (VMSAs not included).
    pub pages_launched: u64,
    /// RMP counters.
    pub rmp: super::rmp::RmpSummary,
}

impl SnpFirmwareModel {
    /// A guest context in GSTATE_INIT over the guest-memory ranges
    /// `(gpa, size)`: the RAM ranges and, as on hardware where the firmware
    /// image is launched into private memory, the firmware region. `keys`
    /// signs reports; without them reports are unsigned, as with
    /// MASK_CHIP_KEY. VMPCKs and the report ID are drawn here.
    pub fn new(
        guest_memory: &[(u64, u64)],
        keys: Option<Arc<ModelKeys>>,
        platform: Platform,
    ) -> Result<Self, ModelError> {
        Ok(SnpFirmwareModel {
            state: GuestState::Init,
            policy: 0,
            gosvw: [0; 16],
            digest: LaunchDigest::new(),
            measurement: [0; 48],
            host_data: [0; 32],
            identity: IdentityInfo::default(),
            rmp: Rmp::new(guest_memory),
            vmpck: [random()?, random()?, random()?, random()?],
            seqno: [0; 4],
            report_id: random()?,
            // Fixed per key directory; a model without keys draws one, so
            // its derived keys last as long as the guest.
            kdf_root: match &keys {
                Some(k) => *k.root_secret(),
                None => random()?,
            },
            keys,
            platform,
            cpuid_corrections: Vec::new(),
            pages_launched: 0,
        })
    }

    /// The guest state.
    pub fn state(&self) -> GuestState {
        self.state
    }

    /// The launch digest so far (MEASUREMENT once running).
    pub fn launch_digest(&self) -> [u8; 48] {
        self.digest.digest()
    }

    /// The RMP (read side, for RMPREAD and metrics).
    pub fn rmp(&self) -> &Rmp {
        &self.rmp
    }

    /// The RMP, for page-state changes (RMPUPDATE), PVALIDATE and RMPADJUST.
    pub fn rmp_mut(&mut self) -> &mut Rmp {
        &mut self.rmp
    }

    /// What LAUNCH_FINISH recorded from the ID block.
    pub fn identity(&self) -> &IdentityInfo {
        &self.identity
    }

    /// The corrections of the last refused CPUID page.
    pub fn cpuid_corrections(&self) -> &[CpuidCorrection] {
        &self.cpuid_corrections
    }

    /// Counts for the metrics JSON.
    pub fn summary(&self) -> ModelSummary {
        ModelSummary {
            state: self.state,
            pages_launched: self.pages_launched,
            rmp: self.rmp.summary(),
        }
    }

    /// SNP_LAUNCH_START (SNP ABI 56860 §8.16).
    pub fn launch_start(&mut self, policy: u64, gosvw: [u8; 16]) -> Result<(), FirmwareStatus> {
        if self.state != GuestState::Init {
            return Err(FirmwareStatus::InvalidGuestState);
        }
        // Bits 63:26 reserved (zero), bit 17 reserved (one).
        if policy >> 26 != 0 || policy & policy::RESERVED_ONE == 0 {
            return Err(FirmwareStatus::InvalidParam);
        }
        let (minor, major) = (policy as u8, (policy >> 8) as u8);
        if (major, minor) > (FW_MAJOR, FW_MINOR) {
            return Err(FirmwareStatus::PolicyFailure);
        }
        // Requirements the model platform cannot meet: no migration agent,
        // Milan has neither AES-256-XTS nor ciphertext hiding, RAPL is on.
        let unmet = policy::MIGRATE_MA
            | policy::MEM_AES_256_XTS
            | policy::RAPL_DIS
            | policy::CIPHERTEXT_HIDING;
        if policy & unmet != 0 || (self.platform.smt_enabled && policy & policy::SMT == 0) {
            return Err(FirmwareStatus::PolicyFailure);
        }
        self.policy = policy;
        self.gosvw = gosvw;
        self.state = GuestState::Launch;
        Ok(())
    }

    /// SNP_LAUNCH_UPDATE of `len / 4096` pages of `page_type` from `gpa`
    /// (SNP ABI 56860 §8.17). NORMAL and UNMEASURED contents come from
    /// `contents` when given (and are copied into guest memory, as KVM
    /// does) or from `memory`; ZERO pages are zeroed, the SECRETS page is
    /// written, the CPUID page is validated (on refusal the corrected table
    /// is written back and [`cpuid_corrections`](Self::cpuid_corrections)
    /// lists the changes). The whole range is checked before any page is
    /// added. VMSA pages are added by LAUNCH_FINISH, as KVM does.
    pub fn launch_update(
        &mut self,
        gpa: u64,
        len: u64,
        page_type: PageType,
        contents: Option<&[u8]>,
        memory: &dyn GuestPages,
    ) -> Result<(), FirmwareStatus> {
        if self.state != GuestState::Launch {
            return Err(FirmwareStatus::InvalidGuestState);
        }
        let page = PAGE_SIZE as u64;
        if !gpa.is_multiple_of(page) {
            return Err(FirmwareStatus::InvalidAddress);
        }
        if len == 0 || !len.is_multiple_of(page) || contents.is_some_and(|c| c.len() as u64 != len)
        {
            return Err(FirmwareStatus::InvalidLength);
        }
        match page_type {
            PageType::Vmsa => return Err(FirmwareStatus::InvalidParam),
            PageType::Secrets | PageType::Cpuid if len != page => {
                return Err(FirmwareStatus::InvalidLength)
            }
            _ => {}
        }
        if !self.rmp.covers(gpa, len) {
            return Err(FirmwareStatus::InvalidAddress);
        }
        // A page already assigned (an overlapping update, or a page the
        // guest owns) is not in the hypervisor state LAUNCH_UPDATE needs.
        if (0..len / page).any(|i| {
            self.rmp
                .entry(gpa + i * page)
                .is_none_or(|e| e.assigned || e.immutable)
        }) {
            return Err(FirmwareStatus::InvalidPageState);
        }
        let mut buf = [0u8; PAGE_SIZE];
        for i in 0..len / page {
            let addr = gpa + i * page;
            let off = (i * page) as usize;
            let given = contents.and_then(|c| c.get(off..off + PAGE_SIZE));
            match given {
                Some(c) => buf.copy_from_slice(c),
                None if page_type == PageType::Zero => buf.fill(0),
                None => memory
                    .read_page(addr, &mut buf)
                    .map_err(|_| FirmwareStatus::InvalidAddress)?,
            }
            match page_type {
                PageType::Zero => buf.fill(0),
                PageType::Secrets => {
                    buf.copy_from_slice(
                        SecretsPage::new(MODEL_FMS, self.gosvw, self.vmpck).as_bytes(),
                    );
                }
                PageType::Cpuid => {
                    self.cpuid_corrections = cpuid::validate(&mut buf, MODEL_FMS);
                    if !self.cpuid_corrections.is_empty() {
                        // The firmware leaves the corrected table readable
                        // by the VMM and does not add the page.
                        memory
                            .write_page(addr, &buf)
                            .map_err(|_| FirmwareStatus::InvalidAddress)?;
                        return Err(FirmwareStatus::InvalidParam);
                    }
                }
                _ => {}
            }
            memory
                .write_page(addr, &buf)
                .map_err(|_| FirmwareStatus::InvalidAddress)?;
            self.digest.update(page_type, addr, Some(&buf));
            self.rmp.set_launch_page(addr);
            self.pages_launched += 1;
        }
        Ok(())
    }

    /// SNP_LAUNCH_FINISH (SNP ABI 56860 §8.18), after adding `vmsa_pages` to
    /// the digest at GPA 0xFFFF_FFFF_F000 in vCPU order as KVM does. The
    /// VMSAs enter the digest only if FINISH succeeds, so a refused FINISH
    /// leaves the context unchanged.
    pub fn launch_finish(
        &mut self,
        params: &LaunchFinishParams,
    ) -> Result<[u8; 48], FirmwareStatus> {
        if self.state != GuestState::Launch {
            return Err(FirmwareStatus::InvalidGuestState);
        }
        let mut digest = self.digest.clone();
        for vmsa in &params.vmsa_pages {
            let page: &[u8; PAGE_SIZE] = vmsa
                .as_slice()
                .try_into()
                .map_err(|_| FirmwareStatus::InvalidLength)?;
            digest.update(PageType::Vmsa, VMSA_GPA, Some(page));
        }
        let ld = digest.digest();
        let identity = match &params.id_block {
            None if params.auth_key_en => return Err(FirmwareStatus::InvalidParam),
            None => IdentityInfo::default(),
            Some(block) => self.check_id_block(block, params, &ld)?,
        };
        self.digest = digest;
        self.measurement = ld;
        self.identity = identity;
        self.host_data = params.host_data;
        self.rmp.clear_immutable();
        self.state = GuestState::Running;
        Ok(ld)
    }

    fn check_id_block(
        &self,
        block: &[u8],
        params: &LaunchFinishParams,
        ld: &[u8; 48],
    ) -> Result<IdentityInfo, FirmwareStatus> {
        let block = IdBlock::from_slice(block).map_err(|_| FirmwareStatus::InvalidLength)?;
        let auth = params
            .id_auth
            .as_deref()
            .ok_or(FirmwareStatus::InvalidParam)?;
        let auth = IdAuth::from_slice(auth).map_err(|_| FirmwareStatus::InvalidLength)?;
        if auth.id_key_algo != ALGO_ECDSA_P384_SHA384
            || (params.auth_key_en && auth.auth_key_algo != ALGO_ECDSA_P384_SHA384)
        {
            return Err(FirmwareStatus::InvalidParam);
        }
        auth.id_key
            .verify(block.as_bytes(), &auth.id_block_sig, "ID block")
            .map_err(|_| FirmwareStatus::BadSignature)?;
        if params.auth_key_en {
            auth.author_key
                .verify(auth.id_key.as_bytes(), &auth.id_key_sig, "ID key")
                .map_err(|_| FirmwareStatus::BadSignature)?;
        }
        if &block.ld != ld {
            return Err(FirmwareStatus::BadMeasurement);
        }
        if block.policy != self.policy {
            return Err(FirmwareStatus::PolicyFailure);
        }
        Ok(IdentityInfo {
            family_id: block.family_id,
            image_id: block.image_id,
            guest_svn: block.guest_svn,
            id_key_digest: auth.id_key.digest(),
            author_key_digest: if params.auth_key_en {
                auth.author_key.digest()
            } else {
                [0; 48]
            },
            author_key_en: params.auth_key_en,
        })
    }
}

/// Why guest memory could not be read or written.
#[derive(Debug, Error)]
#[error("guest page {gpa:#x} is not backed by host memory")]
pub struct GuestPageError {
    /// GPA of the page.
    pub gpa: u64,
}

/// Page access to guest memory for the firmware model (the firmware reads
/// and writes guest pages through the RMP-checked system address).
pub trait GuestPages {
    /// Reads the 4 KiB page at `gpa`.
    fn read_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), GuestPageError>;
    /// Writes the 4 KiB page at `gpa`.
    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE]) -> Result<(), GuestPageError>;
}

impl GuestPages for GuestMemoryMmap {
    fn read_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.read_slice(page, GuestAddress(gpa))
            .map_err(|_| GuestPageError { gpa })
    }

    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.write_slice(page, GuestAddress(gpa))
            .map_err(|_| GuestPageError { gpa })
    }
}

/// The model's `ConfidentialLaunch`: the firmware model plus the guest
/// memory it writes secrets, zero and CPUID pages into.
pub struct SnpModelLaunch<'a, M: GuestPages = GuestMemoryMmap> {
    model: &'a mut SnpFirmwareModel,
    memory: &'a M,
}

impl<M: GuestPages> std::fmt::Debug for SnpModelLaunch<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpModelLaunch")
            .field("model", &self.model)
            .finish()
    }
}

impl<'a, M: GuestPages> SnpModelLaunch<'a, M> {
    /// Launches into `model` with guest memory `memory`.
    pub fn new(model: &'a mut SnpFirmwareModel, memory: &'a M) -> Self {
        SnpModelLaunch { model, memory }
    }

    /// The corrections of the last refused CPUID page (empty if none).
    pub fn cpuid_corrections(&self) -> &[CpuidCorrection] {
        self.model.cpuid_corrections()
    }
}

impl<M: GuestPages> ConfidentialLaunch for SnpModelLaunch<'_, M> {
    fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError> {
        self.model
            .launch_start(params.policy, [0; 16])
            .map_err(LaunchError::Start)
    }

    fn launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), LaunchError> {
        if let Some(c) = update.contents {
            if c.len() % PAGE_SIZE != 0 || c.len() as u64 != update.len {
                return Err(LaunchError::ContentsLength(c.len()));
            }
        }
        let mut result = self.model.launch_update(
            update.gpa,
            update.len,
            update.page_type,
            update.contents,
            self.memory,
        );
        // A refused CPUID page comes back corrected in guest memory: the VMM
        // reports the firmware's corrections and retries once, as QEMU and
        // the hardware backend do.
        if update.page_type == PageType::Cpuid && result == Err(FirmwareStatus::InvalidParam) {
            for correction in self.model.cpuid_corrections() {
                log::warn!("SNP model corrected the CPUID page: {correction}");
            }
            result = self.model.launch_update(
                update.gpa,
                update.len,
                update.page_type,
                None,
                self.memory,
            );
        }
        result.map_err(|status| LaunchError::Update {
            gpa: update.gpa,
            pages: update.len / PAGE_SIZE as u64,
            page_type: update.page_type,
            status,
        })
    }

    fn launch_finish(
        &mut self,
        params: &LaunchFinishParams,
    ) -> Result<LaunchFinished, LaunchError> {
        if let Some(v) = params.vmsa_pages.iter().find(|v| v.len() != PAGE_SIZE) {
            return Err(LaunchError::ContentsLength(v.len()));
        }
        let measurement = self
            .model
            .launch_finish(params)
            .map_err(LaunchError::Finish)?;
        Ok(LaunchFinished { measurement })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_attestation::id_block::SigningKey;
    use umbra_attestation::measure::gctx::LaunchDigest;

    const RAM: u64 = 4 << 20;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap()
    }

    fn model() -> SnpFirmwareModel {
        SnpFirmwareModel::new(&[(0, RAM)], None, Platform::default()).unwrap()
    }

    fn started() -> SnpFirmwareModel {
        let mut m = model();
        m.launch_start(0x30000, [0; 16]).unwrap();
        m
    }

    fn finish(m: &mut SnpFirmwareModel) -> Result<[u8; 48], FirmwareStatus> {
        m.launch_finish(&finish_params(None, None, false))
    }

    fn finish_params(
        block: Option<Vec<u8>>,
        auth: Option<Vec<u8>>,
        auth_key_en: bool,
    ) -> LaunchFinishParams {
        LaunchFinishParams {
            id_block: block,
            id_auth: auth,
            auth_key_en,
            host_data: [0; 32],
            vmsa_pages: vec![vec![0x11; PAGE_SIZE]],
        }
    }

    fn p384() -> SigningKey {
        let group = openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::SECP384R1).unwrap();
        let ec = openssl::ec::EcKey::generate(&group).unwrap();
        SigningKey::from_pem(&ec.private_key_to_pem().unwrap()).unwrap()
    }

    #[test]
    fn status_values_are_those_of_psp_sev_h() {
        // Linux include/uapi/linux/psp-sev.h, enum sev_ret_code.
        for (s, v) in [
            (FirmwareStatus::InvalidGuestState, 0x02),
            (FirmwareStatus::InvalidLength, 0x04),
            (FirmwareStatus::PolicyFailure, 0x07),
            (FirmwareStatus::InvalidAddress, 0x09),
            (FirmwareStatus::BadSignature, 0x0A),
            (FirmwareStatus::BadMeasurement, 0x0B),
            (FirmwareStatus::InvalidParam, 0x16),
            (FirmwareStatus::InvalidPageState, 0x1A),
            (FirmwareStatus::AeadOflow, 0x1D),
            (FirmwareStatus::InvalidKey, 0x27),
        ] {
            assert_eq!(s as u32, v, "{s}");
            assert_eq!(FirmwareStatus::from_code(v), Some(s));
        }
    }

    #[test]
    fn launch_start_policy_checks() {
        let mut m = model();
        // Bit 17 clear; a reserved bit (26) set.
        assert_eq!(
            m.launch_start(0x10000, [0; 16]),
            Err(FirmwareStatus::InvalidParam)
        );
        assert_eq!(
            m.launch_start(0x30000 | 1 << 26, [0; 16]),
            Err(FirmwareStatus::InvalidParam)
        );
        // ABI 2.0 is newer than the firmware's 1.55; 1.56 too.
        assert_eq!(
            m.launch_start(0x30200, [0; 16]),
            Err(FirmwareStatus::PolicyFailure)
        );
        assert_eq!(
            m.launch_start(0x30138, [0; 16]),
            Err(FirmwareStatus::PolicyFailure)
        );
        // SMT disallowed on an SMT platform; ciphertext hiding on Milan.
        assert_eq!(
            m.launch_start(0x20000, [0; 16]),
            Err(FirmwareStatus::PolicyFailure)
        );
        assert_eq!(
            m.launch_start(0x30000 | 1 << 24, [0; 16]),
            Err(FirmwareStatus::PolicyFailure)
        );
        assert_eq!(m.state(), GuestState::Init);
        m.launch_start(0x30137, [0; 16]).unwrap();
        assert_eq!(
            m.launch_start(0x30000, [0; 16]),
            Err(FirmwareStatus::InvalidGuestState)
        );
    }

    #[test]
    fn update_refusals() {
        let mem = memory();
        let mut m = model();
        let page = [0u8; PAGE_SIZE];
        assert_eq!(
            m.launch_update(0, 4096, PageType::Normal, Some(&page), &mem),
            Err(FirmwareStatus::InvalidGuestState)
        );
        m.launch_start(0x30000, [0; 16]).unwrap();
        let up = |m: &mut SnpFirmwareModel, gpa, len, t| m.launch_update(gpa, len, t, None, &mem);
        assert_eq!(
            up(&mut m, 0x1800, 4096, PageType::Zero),
            Err(FirmwareStatus::InvalidAddress)
        );
        assert_eq!(
            up(&mut m, 0x1000, 0x800, PageType::Zero),
            Err(FirmwareStatus::InvalidLength)
        );
        assert_eq!(
            up(&mut m, RAM, 4096, PageType::Zero),
            Err(FirmwareStatus::InvalidAddress)
        );
        assert_eq!(
            up(&mut m, 0xD000_0000, 4096, PageType::Zero),
            Err(FirmwareStatus::InvalidAddress)
        );
        assert_eq!(
            up(&mut m, RAM - 4096, 8192, PageType::Zero),
            Err(FirmwareStatus::InvalidAddress)
        );
        assert_eq!(
            up(&mut m, 0, 4096, PageType::Vmsa),
            Err(FirmwareStatus::InvalidParam)
        );
        // Overlapping updates: the second range shares a page with the first.
        up(&mut m, 0x10000, 0x3000, PageType::Zero).unwrap();
        let before = m.launch_digest();
        assert_eq!(
            up(&mut m, 0x12000, 0x2000, PageType::Unmeasured),
            Err(FirmwareStatus::InvalidPageState)
        );
        assert_eq!(
            m.launch_digest(),
            before,
            "a refused update measures nothing"
        );
        assert!(!m.rmp().entry(0x13000).unwrap().assigned);
        let e = m.rmp().entry(0x12000).unwrap();
        assert!(e.assigned && e.validated && e.immutable);
        // After FINISH: INVALID_GUEST_STATE, and launch pages are mutable.
        finish(&mut m).unwrap();
        assert_eq!(
            up(&mut m, 0x20000, 4096, PageType::Zero),
            Err(FirmwareStatus::InvalidGuestState)
        );
        assert!(!m.rmp().entry(0x12000).unwrap().immutable);
        assert_eq!(finish(&mut m), Err(FirmwareStatus::InvalidGuestState));
    }

    #[test]
    fn digest_follows_the_attestation_crate_page_by_page() {
        let mem = memory();
        let mut m = started();
        let data: Vec<u8> = (0..3 * PAGE_SIZE).map(|i| (i * 7) as u8).collect();
        m.launch_update(
            0x100000,
            data.len() as u64,
            PageType::Normal,
            Some(&data),
            &mem,
        )
        .unwrap();
        m.launch_update(0x200000, 0x2000, PageType::Zero, None, &mem)
            .unwrap();
        let mut ld = LaunchDigest::new();
        ld.update_normal_pages(0x100000, &data);
        ld.update_range(PageType::Zero, 0x200000, 0x2000);
        assert_eq!(m.launch_digest(), ld.digest());
        let got = finish(&mut m).unwrap();
        ld.update(PageType::Vmsa, VMSA_GPA, Some(&[0x11; PAGE_SIZE]));
        assert_eq!(got, ld.digest());
        // The NORMAL contents were copied into guest memory, as KVM does.
        let mut back = vec![0u8; data.len()];
        mem.read_slice(&mut back, GuestAddress(0x100000)).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn secrets_page_is_written() {
        let mem = memory();
        mem.write_slice(&[0xEE; PAGE_SIZE], GuestAddress(0x3000))
            .unwrap();
        let mut m = started();
        m.launch_update(0x3000, 4096, PageType::Secrets, None, &mem)
            .unwrap();
        let mut p = [0u8; PAGE_SIZE];
        mem.read_slice(&mut p, GuestAddress(0x3000)).unwrap();
        assert_eq!(
            &p[0..4],
            &super::super::secrets::SECRETS_VERSION.to_le_bytes()
        );
        assert_eq!(&p[8..12], &MODEL_FMS.to_le_bytes());
        for k in 0..4 {
            let key = &p[0x20 + 32 * k..0x40 + 32 * k];
            assert!(key.iter().any(|&b| b != 0), "VMPCK{k} is not zero");
            assert_eq!(key, &m.vmpck[k]);
        }
        assert!(p[0xA0..].iter().all(|&b| b == 0));
        assert_ne!(&p[0x20..0x40], &p[0x40..0x60]);
    }

    #[test]
    fn cpuid_page_with_refused_bits_is_corrected_and_refused_once() {
        let mem = memory();
        let mut m = started();
        let mut page = [0u8; PAGE_SIZE];
        page[0..4].copy_from_slice(&2u32.to_le_bytes());
        // Entry 0: leaf 7 subleaf 0 with EDX SPEC_CTRL (bit 26) set.
        let e0 = 0x10;
        page[e0..e0 + 4].copy_from_slice(&7u32.to_le_bytes());
        page[e0 + 0x24..e0 + 0x28].copy_from_slice(&(1u32 << 26 | 1).to_le_bytes());
        // Entry 1: leaf 1 with the wrong family/model/stepping.
        let e1 = 0x40;
        page[e1..e1 + 4].copy_from_slice(&1u32.to_le_bytes());
        page[e1 + 0x18..e1 + 0x1C].copy_from_slice(&0x000906EAu32.to_le_bytes());
        let before = m.launch_digest();
        assert_eq!(
            m.launch_update(0x5000, 4096, PageType::Cpuid, Some(&page), &mem),
            Err(FirmwareStatus::InvalidParam)
        );
        assert_eq!(m.launch_digest(), before);
        let fixes = m.cpuid_corrections().to_vec();
        assert_eq!(fixes.len(), 2, "{fixes:?}");
        assert_eq!((fixes[0].leaf, fixes[0].field), (7, "EDX"));
        assert_eq!((fixes[0].proposed, fixes[0].accepted), (1 << 26 | 1, 1));
        assert_eq!(
            (fixes[1].leaf, fixes[1].field, fixes[1].accepted),
            (1, "EAX", 0x00A0_0F11)
        );
        // The corrected table is in guest memory; resubmitting it succeeds.
        let mut fixed = [0u8; PAGE_SIZE];
        mem.read_slice(&mut fixed, GuestAddress(0x5000)).unwrap();
        assert_eq!(&fixed[e0 + 0x24..e0 + 0x28], &1u32.to_le_bytes());
        m.launch_update(0x5000, 4096, PageType::Cpuid, None, &mem)
            .unwrap();
        assert!(m.cpuid_corrections().is_empty());
        // More than 64 entries is refused too.
        let mut page = [0u8; PAGE_SIZE];
        page[0..4].copy_from_slice(&65u32.to_le_bytes());
        assert_eq!(
            m.launch_update(0x6000, 4096, PageType::Cpuid, Some(&page), &mem),
            Err(FirmwareStatus::InvalidParam)
        );
    }

    #[test]
    fn launch_wrapper_retries_a_corrected_cpuid_page_once() {
        let mem = memory();
        let mut m = model();
        let mut page = [0u8; PAGE_SIZE];
        page[0..4].copy_from_slice(&1u32.to_le_bytes());
        page[0x10..0x14].copy_from_slice(&1u32.to_le_bytes());
        page[0x28..0x2C].copy_from_slice(&0x00B0_0F21u32.to_le_bytes()); // a Turin FMS
        mem.write_slice(&page, GuestAddress(0x5000)).unwrap();
        let mut launch = SnpModelLaunch::new(&mut m, &mem);
        launch
            .launch_start(&LaunchStartParams { policy: 0x30000 })
            .unwrap();
        let update = LaunchUpdate {
            gpa: 0x5000,
            len: 4096,
            page_type: PageType::Cpuid,
            contents: None,
        };
        launch.launch_update(&update).unwrap();
        let mut added = [0u8; PAGE_SIZE];
        mem.read_slice(&mut added, GuestAddress(0x5000)).unwrap();
        assert_eq!(
            &added[0x28..0x2C],
            &0x00A0_0F11u32.to_le_bytes(),
            "the model's Milan FMS"
        );
        assert_eq!(m.pages_launched, 1);
    }

    #[test]
    fn id_block_checks() {
        let key = p384();
        let author = p384();
        let mut m = started();
        let ld = {
            let mut d = m.digest.clone();
            d.update(PageType::Vmsa, VMSA_GPA, Some(&[0x11; PAGE_SIZE]));
            d.digest()
        };
        let signed = |ld, policy, author: Option<&SigningKey>| {
            let block = IdBlock::new(ld, [3; 16], [4; 16], 9, policy);
            let auth = IdAuth::sign(&block, &key, author).unwrap();
            (block.as_bytes().to_vec(), auth.as_bytes().to_vec())
        };
        let try_finish = |m: &mut SnpFirmwareModel, (b, a): (Vec<u8>, Vec<u8>), en| {
            m.launch_finish(&finish_params(Some(b), Some(a), en))
        };
        let mut wrong = ld;
        wrong[47] ^= 0x80;
        assert_eq!(
            try_finish(&mut m, signed(wrong, 0x30000, None), false),
            Err(FirmwareStatus::BadMeasurement)
        );
        assert_eq!(
            try_finish(&mut m, signed(ld, 0x30001, None), false),
            Err(FirmwareStatus::PolicyFailure)
        );
        // A block altered after signing.
        let (mut b, a) = signed(ld, 0x30000, None);
        b[0x54] ^= 1;
        assert_eq!(
            try_finish(&mut m, (b, a), false),
            Err(FirmwareStatus::BadSignature)
        );
        // auth_key_en without an author signature.
        assert_eq!(
            try_finish(&mut m, signed(ld, 0x30000, None), true),
            Err(FirmwareStatus::BadSignature)
        );
        assert_eq!(
            m.launch_finish(&finish_params(None, None, true)),
            Err(FirmwareStatus::InvalidParam)
        );
        assert_eq!(m.state(), GuestState::Launch);
        try_finish(&mut m, signed(ld, 0x30000, Some(&author)), true).unwrap();
        let id = m.identity();
        assert_eq!(
            (id.guest_svn, id.family_id, id.image_id),
            (9, [3; 16], [4; 16])
        );
        assert_eq!(id.author_key_digest, author.public_key().unwrap().digest());
        assert_eq!(id.id_key_digest, key.public_key().unwrap().digest());
        assert!(id.author_key_en);
    }
}
