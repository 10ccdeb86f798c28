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
//! The state machine reads and writes guest memory through [`GuestPages`]
//! (the VMM's launch-time view of guest RAM, or a `GuestMemoryMmap` in
//! tests); the VMM's model backend drives it through its launch interface.

use std::sync::Arc;

use thiserror::Error;
use umbra_attestation::id_block::{IdAuth, IdBlock, ALGO_ECDSA_P384_SHA384};
use umbra_attestation::measure::gctx::{LaunchDigest, PAGE_SIZE, VMSA_GPA};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use zerocopy::IntoBytes;

use crate::abi::{FirmwareStatus, PageType};
use crate::cpuid::{self, CpuidCorrection};
use crate::keys::ModelKeys;
use crate::rmp::Rmp;
use crate::secrets::{SecretsPage, VMPCK_LEN};

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

/// The model CPU's C-bit position (CPUID Fn8000_001F EBX[5:0]). Milan and
/// Genoa report 51; the model reports 52 because the hosts it runs on
/// (plain KVM, often Intel) treat bit 51 of a page-table entry as reserved
/// but ignore bit 52, so a guest that marks its private mappings with the
/// C-bit, as an SNP guest must, still runs.
pub const MODEL_C_BIT: u32 = 52;

/// CPUID Fn8000_001F EAX of the model CPU: SEV (bit 1), SEV-ES (bit 3),
/// SEV-SNP (bit 4).
pub const MODEL_SEV_FEATURES: u32 = (1 << 1) | (1 << 3) | (1 << 4);

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
    pub(crate) state: GuestState,
    pub(crate) policy: u64,
    pub(crate) gosvw: [u8; 16],
    pub(crate) digest: LaunchDigest,
    pub(crate) measurement: [u8; 48],
    pub(crate) host_data: [u8; 32],
    pub(crate) identity: IdentityInfo,
    pub(crate) rmp: Rmp,
    pub(crate) vmpck: [[u8; VMPCK_LEN]; 4],
    /// Per VMPCK: the last sequence number used (0 at launch).
    pub(crate) seqno: [u64; 4],
    pub(crate) report_id: [u8; 32],
    pub(crate) keys: Option<Arc<ModelKeys>>,
    /// Root secret of MSG_KEY_REQ derivations.
    pub(crate) kdf_root: [u8; 48],
    pub(crate) platform: Platform,
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
    pub rmp: crate::rmp::RmpSummary,
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
        // Requirements the model platform cannot meet: Milan has neither
        // AES-256-XTS nor ciphertext hiding, and RAPL is on. MIGRATE_MA only
        // *allows* a migration agent (nothing to meet), so the firmware
        // accepts it; the kernel is what refuses it today.
        let unmet = policy::MEM_AES_256_XTS | policy::RAPL_DIS | policy::CIPHERTEXT_HIDING;
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

/// LAUNCH_FINISH parameters.
#[derive(Clone, Debug)]
pub struct LaunchFinishParams {
    /// ID block (96 bytes, spec §8.18), if any.
    pub id_block: Option<Vec<u8>>,
    /// ID authentication structure (4096 bytes), with the ID block.
    pub id_auth: Option<Vec<u8>>,
    /// Whether the author key in `id_auth` is used.
    pub auth_key_en: bool,
    /// HOST_DATA copied into every report.
    pub host_data: [u8; 32],
    /// The VMSA page of each vCPU, in vCPU order, as measured (KVM builds
    /// its own from vCPU state on hardware; the model takes these).
    pub vmsa_pages: Vec<Vec<u8>>,
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

#[cfg(test)]
#[path = "psp_tests.rs"]
mod tests;
