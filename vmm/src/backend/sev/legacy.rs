//! Legacy SEV and SEV-ES on `KVM_X86_DEFAULT_VM`: `KVM_SEV_INIT` /
//! `KVM_SEV_ES_INIT`, `LAUNCH_START` (policy, guest owner's DH certificate
//! and session blob), `LAUNCH_UPDATE_DATA` (encrypts guest RAM in place),
//! `LAUNCH_UPDATE_VMSA` (SEV-ES), `LAUNCH_MEASURE`, `LAUNCH_SECRET`,
//! `LAUNCH_FINISH` (include/uapi/linux/kvm.h structs; amd-memory-encryption.rst).
//!
//! `LegacyHypervisor::with_init2` does the same on `KVM_X86_SEV_VM` /
//! `KVM_X86_SEV_ES_VM` with `KVM_SEV_INIT2`, which pins the VMSA features.
//!
//! Memory is ordinary memslots registered with
//! `KVM_MEMORY_ENCRYPT_REG_REGION` (pinned); vCPUs are plain KVM vCPUs.

use std::sync::{Arc, RwLock};

use super::snp::{check_vmsa_features, set_ap_reset};
use super::uapi::{self, PAGE_SIZE};
use super::{get_device_attr, sev_command, vm_types, SevDevice, SevError};
use crate::backend::kvm::{KvmHypervisor, KvmVcpu, KvmVm};
use crate::backend::{BackendError, Hypervisor, VcpuStart, Vm};

/// Which legacy flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyMode {
    /// SEV: encrypted memory, plain register state.
    Sev,
    /// SEV-ES: encrypted memory and register state (VMSA).
    SevEs,
}

/// SEV policy bits (SEV API 55766 "Guest Policy").
pub mod policy {
    /// Debugging is disallowed.
    pub const NODBG: u32 = 1 << 0;
    /// Key sharing is disallowed.
    pub const NOKS: u32 = 1 << 1;
    /// SEV-ES is required.
    pub const ES: u32 = 1 << 2;
    /// Sending to another platform is disallowed.
    pub const NOSEND: u32 = 1 << 3;
}

/// What LAUNCH_MEASURE returns (SEV API 55766 "LAUNCH_MEASURE": a 32-byte
/// HMAC measurement followed by the 16-byte MNONCE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchMeasurement {
    /// HMAC-SHA-256 over the launch, keyed with the TIK.
    pub measure: [u8; 32],
    /// Nonce chosen by the firmware.
    pub mnonce: [u8; 16],
}

/// Splits the LAUNCH_MEASURE blob; fewer than 48 bytes is an error.
pub fn parse_measurement(blob: &[u8]) -> Option<LaunchMeasurement> {
    let measure = blob.get(0..32)?.try_into().ok()?;
    let mnonce = blob.get(32..48)?.try_into().ok()?;
    Some(LaunchMeasurement { measure, mnonce })
}

/// Launch state, in command order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Init,
    Started,
    Measured,
    Finished,
}

/// The legacy SEV / SEV-ES hardware backend.
pub struct LegacyHypervisor {
    kvm: KvmHypervisor,
    sev: Arc<SevDevice>,
    mode: LegacyMode,
    ap_reset_eip: Option<u32>,
    /// `Some(vmsa_features)`: use VM type 2/3 with `KVM_SEV_INIT2`.
    init2: Option<u64>,
}

impl LegacyHypervisor {
    /// Opens `/dev/kvm` and `/dev/sev`. `ap_reset_eip`: the SEV-ES reset
    /// block of the firmware where application processors start.
    pub fn new(mode: LegacyMode, ap_reset_eip: Option<u32>) -> Result<Self, SevError> {
        let kvm = KvmHypervisor::new().map_err(|e| match e {
            BackendError::OpenKvm(e) => SevError::OpenKvm(e),
            other => SevError::CreateVm(other),
        })?;
        let sev = Arc::new(SevDevice::open()?);
        Ok(LegacyHypervisor {
            kvm,
            sev,
            mode,
            ap_reset_eip,
            init2: None,
        })
    }

    /// Like [`new`](Self::new), but the VMs are `KVM_X86_SEV_VM` /
    /// `KVM_X86_SEV_ES_VM` initialised with `KVM_SEV_INIT2`, which pins the
    /// VMSA features (the legacy `KVM_SEV_ES_INIT` may turn on DebugSwap
    /// depending on the kernel, changing the measurement) and copies the
    /// FPU state into the VMSA. `vmsa_features` must be 0 for SEV and within
    /// `KVM_X86_SEV_VMSA_FEATURES` for SEV-ES.
    pub fn with_init2(
        mode: LegacyMode,
        ap_reset_eip: Option<u32>,
        vmsa_features: u64,
    ) -> Result<Self, SevError> {
        let mut hv = Self::new(mode, ap_reset_eip)?;
        let vm_type = hv.vm_type(true);
        let offered = vm_types(hv.kvm.kvm());
        if offered & (1 << vm_type) == 0 {
            return Err(SevError::VmType { vm_type, offered });
        }
        let features = match mode {
            LegacyMode::Sev if vmsa_features != 0 => {
                return Err(SevError::VmsaFeatures {
                    requested: vmsa_features,
                    supported: 0,
                })
            }
            LegacyMode::Sev => 0,
            LegacyMode::SevEs => {
                let supported =
                    get_device_attr(hv.kvm.kvm(), uapi::GRP_SEV, uapi::ATTR_VMSA_FEATURES)?;
                check_vmsa_features(vmsa_features, supported)?
            }
        };
        hv.init2 = Some(features);
        Ok(hv)
    }

    fn vm_type(&self, init2: bool) -> u64 {
        match (init2, self.mode) {
            (false, _) => uapi::VM_TYPE_DEFAULT,
            (true, LegacyMode::Sev) => uapi::VM_TYPE_SEV,
            (true, LegacyMode::SevEs) => uapi::VM_TYPE_SEV_ES,
        }
    }

    /// `KVM_CREATE_VM(0)` then `KVM_SEV_INIT` or `KVM_SEV_ES_INIT`; or, when
    /// made [`with_init2`](Self::with_init2), `KVM_CREATE_VM(2|3)` then
    /// `KVM_SEV_INIT2`.
    pub fn create_legacy_vm(&self) -> Result<LegacyVm, SevError> {
        let inner = self
            .kvm
            .create_vm_of_type(self.vm_type(self.init2.is_some()))
            .map_err(SevError::CreateVm)?;
        match self.init2 {
            Some(vmsa_features) => {
                let mut init = uapi::kvm_sev_init {
                    vmsa_features,
                    ..Default::default()
                };
                sev_command(
                    inner.vm_fd(),
                    uapi::SEV_INIT2,
                    Some(&mut init),
                    Some(self.sev.fd()),
                )
                .map_err(SevError::Init2)?;
            }
            None => {
                let id = match self.mode {
                    LegacyMode::Sev => uapi::SEV_INIT,
                    LegacyMode::SevEs => uapi::SEV_ES_INIT,
                };
                sev_command::<()>(inner.vm_fd(), id, None, Some(self.sev.fd()))
                    .map_err(SevError::SevInit)?;
            }
        }
        Ok(LegacyVm {
            inner,
            sev: Arc::clone(&self.sev),
            mode: self.mode,
            ap_reset_eip: self.ap_reset_eip,
            slots: RwLock::new(Vec::new()),
            ram: Vec::new(),
            state: State::Init,
            handle: 0,
        })
    }
}

impl Hypervisor for LegacyHypervisor {
    type Vm = LegacyVm;

    fn name(&self) -> &'static str {
        match self.mode {
            LegacyMode::Sev => "kvm-sev",
            LegacyMode::SevEs => "kvm-sev-es",
        }
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.max_vcpus()
    }

    fn create_vm(&self) -> Result<LegacyVm, BackendError> {
        self.create_legacy_vm()
            .map_err(|e| super::snp::to_backend("creating the SEV VM", e))
    }
}

/// A legacy SEV or SEV-ES VM.
pub struct LegacyVm {
    inner: KvmVm,
    sev: Arc<SevDevice>,
    mode: LegacyMode,
    ap_reset_eip: Option<u32>,
    /// (gpa, size, host address) of every mapped slot.
    slots: RwLock<Vec<(u64, u64, u64)>>,
    ram: Vec<Arc<crate::memory::GuestRam>>,
    state: State,
    handle: u32,
}

impl LegacyVm {
    /// The plain-KVM VM underneath.
    pub fn kvm_vm(&self) -> &KvmVm {
        &self.inner
    }

    /// The firmware guest handle from LAUNCH_START.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    fn command<T>(
        &self,
        what: &'static str,
        id: u32,
        data: Option<&mut T>,
    ) -> Result<(), SevError> {
        sev_command(self.inner.vm_fd(), id, data, Some(self.sev.fd()))
            .map_err(|failure| SevError::LegacyCommand { what, failure })
    }

    fn expect(&self, state: State, what: &'static str) -> Result<(), SevError> {
        if self.state != state {
            return Err(SevError::Order(what));
        }
        Ok(())
    }

    /// The host address of `[gpa, gpa + len)`, which must lie in one slot.
    fn host_range(&self, gpa: u64, len: u64) -> Result<u64, SevError> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        let end = gpa.checked_add(len).ok_or(SevError::Range { gpa, len })?;
        slots
            .iter()
            .find(|(b, s, _)| *b <= gpa && end <= b.saturating_add(*s))
            .map(|(b, _, h)| h + (gpa - b))
            .ok_or(SevError::Range { gpa, len })
    }

    /// LAUNCH_START with the guest owner's policy, DH certificate and
    /// session blob (both optional: without them the firmware generates
    /// its own keys and nothing can be injected with LAUNCH_SECRET).
    pub fn launch_start(
        &mut self,
        policy: u32,
        dh_cert: Option<&[u8]>,
        session: Option<&[u8]>,
    ) -> Result<u32, SevError> {
        self.expect(State::Init, "KVM_SEV_LAUNCH_START")?;
        if self.mode == LegacyMode::SevEs && policy & policy::ES == 0 {
            log::warn!("SEV-ES launch with a policy without the ES bit ({policy:#x})");
        }
        let len = |what, b: Option<&[u8]>| {
            u32::try_from(b.map_or(0, <[u8]>::len)).map_err(|_| SevError::BlobSize {
                what,
                len: b.map_or(0, <[u8]>::len),
            })
        };
        let mut start = uapi::kvm_sev_launch_start {
            handle: 0,
            policy,
            dh_uaddr: dh_cert.map_or(0, |b| b.as_ptr() as u64),
            dh_len: len("DH certificate", dh_cert)?,
            pad0: 0,
            session_uaddr: session.map_or(0, |b| b.as_ptr() as u64),
            session_len: len("session blob", session)?,
            pad1: 0,
        };
        self.command(
            "KVM_SEV_LAUNCH_START",
            uapi::SEV_LAUNCH_START,
            Some(&mut start),
        )?;
        self.handle = start.handle;
        self.state = State::Started;
        Ok(start.handle)
    }

    /// LAUNCH_UPDATE_DATA: encrypts (and measures) guest RAM in place.
    pub fn launch_update_data(&mut self, gpa: u64, len: u64) -> Result<(), SevError> {
        self.expect(State::Started, "KVM_SEV_LAUNCH_UPDATE_DATA")?;
        if len == 0 || !gpa.is_multiple_of(16) || !len.is_multiple_of(16) {
            return Err(SevError::Range { gpa, len });
        }
        let uaddr = self.host_range(gpa, len)?;
        let len32 = u32::try_from(len).map_err(|_| SevError::Range { gpa, len })?;
        let mut data = uapi::kvm_sev_launch_update_data {
            uaddr,
            len: len32,
            pad0: 0,
        };
        self.command(
            "KVM_SEV_LAUNCH_UPDATE_DATA",
            uapi::SEV_LAUNCH_UPDATE_DATA,
            Some(&mut data),
        )
    }

    /// LAUNCH_UPDATE_VMSA (SEV-ES): encrypts every vCPU's register state;
    /// all vCPUs must exist with their final reset registers.
    pub fn launch_update_vmsa(&mut self) -> Result<(), SevError> {
        self.expect(State::Started, "KVM_SEV_LAUNCH_UPDATE_VMSA")?;
        if self.mode != LegacyMode::SevEs {
            return Err(SevError::Order("KVM_SEV_LAUNCH_UPDATE_VMSA (SEV-ES only)"));
        }
        self.command::<()>(
            "KVM_SEV_LAUNCH_UPDATE_VMSA",
            uapi::SEV_LAUNCH_UPDATE_VMSA,
            None,
        )
    }

    /// LAUNCH_MEASURE: queries the length, then reads measure + mnonce.
    pub fn launch_measure(&mut self) -> Result<LaunchMeasurement, SevError> {
        self.expect(State::Started, "KVM_SEV_LAUNCH_MEASURE")?;
        let mut query = uapi::kvm_sev_launch_measure::default();
        // With len = 0 the firmware answers INVALID_LEN and KVM copies the
        // needed length back; the error is expected (QEMU ignores it too).
        let _ = self.command(
            "KVM_SEV_LAUNCH_MEASURE",
            uapi::SEV_LAUNCH_MEASURE,
            Some(&mut query),
        );
        let need = query.len as usize;
        if !(48..=4096).contains(&need) {
            return Err(SevError::BlobSize {
                what: "LAUNCH_MEASURE blob",
                len: need,
            });
        }
        let mut blob = vec![0u8; need];
        let mut m = uapi::kvm_sev_launch_measure {
            uaddr: blob.as_mut_ptr() as u64,
            len: query.len,
            pad0: 0,
        };
        self.command(
            "KVM_SEV_LAUNCH_MEASURE",
            uapi::SEV_LAUNCH_MEASURE,
            Some(&mut m),
        )?;
        let out = parse_measurement(&blob).ok_or(SevError::BlobSize {
            what: "LAUNCH_MEASURE blob",
            len: blob.len(),
        })?;
        self.state = State::Measured;
        Ok(out)
    }

    /// LAUNCH_SECRET: injects a guest-owner secret at `guest_gpa` (packet
    /// header and encrypted secret from the guest owner, after they checked
    /// the measurement).
    pub fn launch_secret(
        &mut self,
        header: &[u8],
        guest_gpa: u64,
        secret: &[u8],
    ) -> Result<(), SevError> {
        self.expect(State::Measured, "KVM_SEV_LAUNCH_SECRET")?;
        let len = secret.len() as u64;
        let guest_uaddr = self.host_range(guest_gpa, len)?;
        let blob = |what, b: &[u8]| {
            u32::try_from(b.len()).map_err(|_| SevError::BlobSize { what, len: b.len() })
        };
        let mut s = uapi::kvm_sev_launch_secret {
            hdr_uaddr: header.as_ptr() as u64,
            hdr_len: blob("secret header", header)?,
            guest_uaddr,
            guest_len: blob("secret", secret)?,
            trans_uaddr: secret.as_ptr() as u64,
            trans_len: blob("secret", secret)?,
            ..Default::default()
        };
        self.command(
            "KVM_SEV_LAUNCH_SECRET",
            uapi::SEV_LAUNCH_SECRET,
            Some(&mut s),
        )
    }

    /// LAUNCH_FINISH: the guest can run.
    pub fn launch_finish(&mut self) -> Result<(), SevError> {
        if !matches!(self.state, State::Started | State::Measured) {
            return Err(SevError::Order("KVM_SEV_LAUNCH_FINISH"));
        }
        self.command::<()>("KVM_SEV_LAUNCH_FINISH", uapi::SEV_LAUNCH_FINISH, None)?;
        self.state = State::Finished;
        Ok(())
    }

    /// Whether LAUNCH_FINISH is done.
    pub fn finished(&self) -> bool {
        self.state == State::Finished
    }
}

use crate::backend::confidential::LaunchError;

impl crate::backend::confidential::LegacyLaunch for LegacyVm {
    fn launch_image(
        &mut self,
        policy: u32,
        image_gpa: u64,
        len: u64,
    ) -> Result<crate::backend::confidential::LegacyMeasurement, LaunchError> {
        let backend = |what: &'static str| {
            move |e: SevError| LaunchError::Backend {
                what,
                source: Box::new(e),
            }
        };
        self.launch_start(policy, None, None)
            .map_err(backend("KVM_SEV_LAUNCH_START"))?;
        self.launch_update_data(image_gpa, len)
            .map_err(backend("KVM_SEV_LAUNCH_UPDATE_DATA"))?;
        if self.mode == LegacyMode::SevEs {
            self.launch_update_vmsa()
                .map_err(backend("KVM_SEV_LAUNCH_UPDATE_VMSA"))?;
        }
        let m = self
            .launch_measure()
            .map_err(backend("KVM_SEV_LAUNCH_MEASURE"))?;
        self.launch_finish()
            .map_err(backend("KVM_SEV_LAUNCH_FINISH"))?;
        Ok(crate::backend::confidential::LegacyMeasurement {
            measure: m.measure,
            mnonce: m.mnonce,
        })
    }
}

impl Vm for LegacyVm {
    crate::backend::forward_to_inner_kvm!();

    fn legacy_launch(&mut self) -> Option<&mut dyn crate::backend::confidential::LegacyLaunch> {
        Some(self)
    }

    type Vcpu = KvmVcpu;

    fn register_ram(
        &mut self,
        ram: Arc<crate::memory::GuestRam>,
        map: &crate::memory::MemoryMap,
    ) -> Result<(), BackendError> {
        for slot in KvmVm::own_ram(&mut self.ram, ram, map) {
            // SAFETY: the mapping's owner is in `self.ram` (own_ram), so it
            // outlives the VM's memslots.
            unsafe { self.inner.map_slot(&slot) }?;
            let region = uapi::kvm_enc_region {
                addr: slot.host_addr,
                size: slot.size,
            };
            self.inner
                .vm_fd()
                .register_enc_memory_region(&region)
                .map_err(|e| BackendError::VmSetup("KVM_MEMORY_ENCRYPT_REG_REGION", e))?;
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            slots.push((slot.gpa, slot.size, slot.host_addr));
            debug_assert!(slot.size.is_multiple_of(PAGE_SIZE));
        }
        Ok(())
    }

    fn device_memory(&self) -> Option<crate::dma::DeviceMemory> {
        // Hardware page states are not tracked for devices yet: no device
        // that needs guest memory can be attached, rather than one that
        // could read a private page's stale shared backing.
        None
    }

    fn create_vcpu(
        &self,
        index: u32,
        vcpu_count: u32,
        start: VcpuStart,
        umbra_features: u32,
    ) -> Result<KvmVcpu, BackendError> {
        let vcpu = self
            .inner
            .create_vcpu(index, vcpu_count, start, umbra_features)?;
        if let (LegacyMode::SevEs, true, VcpuStart::Reset, Some(eip)) =
            (self.mode, index > 0, start, self.ap_reset_eip)
        {
            set_ap_reset(&vcpu, eip)
                .map_err(|e| super::snp::to_backend("setting the SEV-ES AP reset state", e))?;
        }
        Ok(vcpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurement_blob_is_measure_then_mnonce() {
        // SEV API 55766 LAUNCH_MEASURE: MEASURE[32] then MNONCE[16].
        let blob: Vec<u8> = (0u8..48).collect();
        let m = parse_measurement(&blob).expect("48 bytes");
        assert_eq!(m.measure[0], 0);
        assert_eq!(m.measure[31], 31);
        assert_eq!(m.mnonce[0], 32);
        assert_eq!(m.mnonce[15], 47);
        assert!(parse_measurement(&blob[..47]).is_none());
    }

    #[test]
    fn policy_bits_follow_the_sev_api() {
        assert_eq!(policy::NODBG | policy::NOKS | policy::ES, 0x7);
        assert_eq!(policy::NOSEND, 0x8);
    }

    #[test]
    fn legacy_backend_without_sev_is_a_clean_error() {
        match LegacyHypervisor::new(LegacyMode::SevEs, None) {
            Ok(_) => eprintln!("SEV host: legacy backend available"),
            Err(e) => assert!(
                matches!(e, SevError::OpenSev(_) | SevError::OpenKvm(_)),
                "{e}"
            ),
        }
    }
}
