//! `--platform snp-model`: the SNP firmware model (`umbra-snp-model`) as a
//! backend. [`ModelVm`] and [`ModelVcpu`] wrap the plain KVM VM and vCPU
//! exactly as the hardware SNP backend wraps them: the VM owns confidential
//! RAM, the page-state tracker and the model, launches through
//! [`Vm::confidential`], and each vCPU answers the GHCB MSR protocol, the
//! GHCB-page requests and the paravirtual VMGEXIT/PVALIDATE MSRs inside
//! [`Vcpu::run`] ([`ghcb`]), returning [`VcpuExit::Handled`] or a typed
//! [`VcpuExit::GuestTerminate`]. The generic run loop never sees the GHCB.

mod cbit;
pub mod ghcb;
#[doc(hidden)]
pub mod harness;
mod key_dir;
mod launch;
mod vc;
pub use launch::ModelLaunch;

use super::kvm::{KvmHypervisor, KvmVcpu, KvmVm};
use super::{BackendError, Hypervisor, Vcpu, VcpuExit, VcpuStart, Vm};
use crate::memory::{GuestRam, MemoryMap};
use crate::page_state::{PageState, PageStates};
use crate::shared_memory::SharedMemory;
use crate::sync::lock;
use ghcb::{CpuidTable, DeviceAccess, GhcbAccess, GhcbOutcome, SnpRuntime, MODEL_MSRS};
pub use key_dir::DirKeyStore;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use umbra_snp_model::keys::{KeyError, ModelKeys};
use umbra_snp_model::psp::ModelError as PspError;
use umbra_snp_model::{Platform, SnpFirmwareModel};

/// Errors of the model backend.
#[derive(Debug, Error)]
pub enum ModelError {
    /// The model's keys could not be loaded or generated.
    #[error("cannot load the SNP model's keys")]
    LoadKeys(#[source] KeyError),
    /// The model could not be created.
    #[error("cannot create the SNP firmware model")]
    CreateModel(#[source] PspError),
    /// The page-state tracker refused the memory map.
    #[error("cannot track page states")]
    TrackPageStates(#[source] crate::page_state::PageStateError),
    /// The VM was used before its RAM was registered.
    #[error("the SNP model VM has no RAM registered yet")]
    FindRam,
    /// A page could not be shared before the launch.
    #[error("cannot share {gpa:#x}+{len:#x} before the launch")]
    ShareBeforeLaunch {
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
        /// Why.
        #[source]
        source: ghcb::ConvertError,
    },
    /// The attestation output could not be written.
    #[error("cannot write the attestation output to {0}")]
    WriteEvidence(PathBuf, #[source] std::io::Error),
    /// The model's certificates could not be encoded.
    #[error("cannot encode the SNP model's certificates")]
    EncodeCerts(#[source] KeyError),
    /// A certificate could not be put in DER form.
    #[error("cannot encode a certificate of the SNP model as DER")]
    EncodeCertificate(#[source] openssl::error::ErrorStack),
    /// The certificate table for extended guest requests could not be built.
    #[error("cannot build the certificate table")]
    BuildCertificateTable(#[source] umbra_snp_abi::cert_table::CertTableError),
}

impl From<ModelError> for BackendError {
    fn from(e: ModelError) -> Self {
        BackendError::SnpModel(Box::new(e))
    }
}

/// What the model needs beyond a plain VM.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// `--model-keys DIR`; the state directory when `None`.
    pub keys_dir: Option<PathBuf>,
    /// vCPUs of the guest.
    pub vcpus: u32,
    /// CPUID Fn0000_0001 EAX (and reset RDX) of `--vcpu-type`.
    pub vcpu_signature: Option<u32>,
    /// VMSA SEV_FEATURES (`--guest-features`).
    pub guest_features: u64,
    /// As strict as silicon: a direct port access raises #VC in the guest,
    /// a direct MMIO access stops the run as a fidelity violation.
    pub strict: bool,
}

/// The model platform: plain KVM underneath.
pub struct ModelHypervisor {
    kvm: KvmHypervisor,
    options: ModelOptions,
    keys: Arc<ModelKeys>,
}

impl ModelHypervisor {
    /// Opens /dev/kvm and loads (or generates) the model's keys.
    pub fn new(options: ModelOptions) -> Result<Self, BackendError> {
        let kvm = KvmHypervisor::new()?;
        let dir = match &options.keys_dir {
            Some(dir) => dir.clone(),
            None => key_dir::default_dir().map_err(ModelError::LoadKeys)?,
        };
        let keys =
            ModelKeys::load_or_generate(&DirKeyStore::new(dir)).map_err(ModelError::LoadKeys)?;
        Ok(ModelHypervisor {
            kvm,
            options,
            keys: Arc::new(keys),
        })
    }
}

/// Prints the banner that tells the operator memory is not protected.
fn warn_unencrypted() {
    umbra_attestation::errln!(
        "umbra: WARNING: --platform snp-model is a software model of the AMD SEV-SNP firmware on plain KVM: \
         guest memory is NOT encrypted or integrity-protected; use it to test launch, attestation and page-state \
         handling, never to protect data"
    );
}

impl Hypervisor for ModelHypervisor {
    type Vm = ModelVm;

    fn name(&self) -> &'static str {
        "snp-model"
    }

    fn max_vcpus(&self) -> u32 {
        self.kvm.max_vcpus()
    }

    fn create_vm(&self) -> Result<ModelVm, BackendError> {
        warn_unencrypted();
        let mut inner = self.kvm.create_vm()?;
        if let Some(signature) = self.options.vcpu_signature {
            inner.set_cpu_signature(signature);
        }
        inner.intercept_msrs(&MODEL_MSRS)?;
        Ok(ModelVm {
            inner,
            options: self.options.clone(),
            keys: self.keys.clone(),
            guest: None,
        })
    }
}

/// The certificate table the model's host hands to extended guest
/// requests: the model's VCEK, ASK and ARK (DER), as a host configured
/// with its chip's certificates hands out AMD's.
fn certificate_table(keys: &ModelKeys) -> Result<Vec<u8>, ModelError> {
    use umbra_snp_abi::cert_table::{self, CertKind};
    let der = |c: &openssl::x509::X509| c.to_der().map_err(ModelError::EncodeCertificate);
    let (vcek, ask, ark) = (der(keys.vcek())?, der(keys.ask())?, der(keys.ark())?);
    let certs: [(CertKind, &[u8]); 3] = [
        (CertKind::Vcek, &vcek),
        (CertKind::Ask, &ask),
        (CertKind::Ark, &ark),
    ];
    let mut table = vec![0u8; cert_table::table_len(&certs)];
    cert_table::write(&certs, &mut table).map_err(ModelError::BuildCertificateTable)?;
    Ok(table)
}

/// The model's state once RAM exists.
struct ModelGuest {
    runtime: Arc<Mutex<SnpRuntime>>,
    shared: SharedMemory,
    ram: Arc<GuestRam>,
    measurement: Option<[u8; 48]>,
}

/// An SNP guest on the firmware model.
pub struct ModelVm {
    inner: KvmVm,
    options: ModelOptions,
    keys: Arc<ModelKeys>,
    guest: Option<ModelGuest>,
}

impl ModelVm {
    fn guest(&self) -> Result<&ModelGuest, ModelError> {
        self.guest.as_ref().ok_or(ModelError::FindRam)
    }
}

impl Vm for ModelVm {
    crate::backend::forward_to_inner_kvm!();

    type Vcpu = ModelVcpu;

    fn register_ram(&mut self, ram: Arc<GuestRam>, map: &MemoryMap) -> Result<(), BackendError> {
        let ram_ranges = map.ram_ranges();
        let mut memory_ranges = ram_ranges.clone();
        // As on hardware, where the firmware image is launched into private
        // memory, the model's RMP covers the ROM too.
        if let Some(rom) = map.rom() {
            memory_ranges.push((rom.gpa, rom.size));
        }
        let model =
            SnpFirmwareModel::new(&memory_ranges, Some(self.keys.clone()), Platform::default())
                .map_err(ModelError::CreateModel)?;
        let states = PageStates::new(&ram_ranges, PageState::Private)
            .map_err(ModelError::TrackPageStates)?;
        let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
        let mut runtime = SnpRuntime::new(
            model,
            ram.clone(),
            shared.clone(),
            self.options.vcpus,
            self.options.guest_features,
            host_cpuid(),
        );
        runtime.set_certificates(certificate_table(&self.keys)?);
        self.inner.register_ram(ram.clone(), map)?;
        self.guest = Some(ModelGuest {
            runtime: Arc::new(Mutex::new(runtime)),
            shared,
            ram,
            measurement: None,
        });
        Ok(())
    }

    fn share_before_launch(&mut self, gpa: u64, len: u64) -> Result<(), BackendError> {
        let guest = self.guest()?;
        lock(&guest.runtime)
            .convert(gpa, len, PageState::Shared)
            .map_err(|source| ModelError::ShareBeforeLaunch { gpa, len, source })?;
        Ok(())
    }

    fn confidential(&mut self) -> Option<&mut dyn super::confidential::ConfidentialLaunch> {
        Some(self)
    }

    fn device_memory(&self) -> Option<crate::dma::DeviceMemory> {
        let guest = self.guest.as_ref()?;
        Some(guest.shared.device_memory())
    }

    fn confidential_metrics(&self) -> Option<crate::metrics::SnpMetrics> {
        let guest = self.guest.as_ref()?;
        let runtime = lock(&guest.runtime);
        Some(crate::metrics::SnpMetrics {
            measurement: umbra_attestation::hex::encode(&guest.measurement.unwrap_or([0; 48])),
            page_states: lock(guest.shared.states()).summary(),
            model: runtime.model.summary(),
            reports_signed: runtime.reports_signed,
            ghcb_exits: runtime.ghcb_exits.clone(),
            vc_injected: runtime.vc_injected,
            fidelity_violations: runtime.fidelity_violations.clone(),
        })
    }

    /// Writes `report.bin` (the last report the model signed) and the
    /// model's ark.pem, ask.pem and vcek.pem into `dir` for
    /// `umbra-attest verify`.
    fn write_evidence(&self, dir: &std::path::Path) -> Result<(), BackendError> {
        let io_err = |e| ModelError::WriteEvidence(dir.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(io_err)?;
        for (name, pem) in self
            .keys
            .certificates_pem()
            .map_err(ModelError::EncodeCerts)?
        {
            std::fs::write(dir.join(name), pem).map_err(io_err)?;
        }
        let guest = self.guest()?;
        if let Some(report) = &lock(&guest.runtime).last_report {
            std::fs::write(dir.join("report.bin"), report).map_err(io_err)?;
        }
        Ok(())
    }

    fn create_vcpu(
        &self,
        index: u32,
        vcpu_count: u32,
        start: VcpuStart,
        umbra_features: u32,
    ) -> Result<ModelVcpu, BackendError> {
        let guest = self.guest()?;
        let features = umbra_features | umbra_firmware::layout::UMBRA_FEATURE_SNP_MODEL;
        Ok(ModelVcpu {
            inner: self.inner.create_vcpu(index, vcpu_count, start, features)?,
            runtime: guest.runtime.clone(),
            ram: guest.ram.clone(),
            strict: self.options.strict,
            pending: None,
            data: [0; 8],
            deferred: None,
        })
    }
}

/// A vCPU of a model guest.
pub struct ModelVcpu {
    inner: KvmVcpu,
    runtime: Arc<Mutex<SnpRuntime>>,
    ram: Arc<GuestRam>,
    strict: bool,
    /// A GHCB device access handed to the device handlers, finished on the
    /// next entry (as KVM completes it before re-entering the guest).
    pending: Option<GhcbAccess>,
    data: [u8; 8],
    /// Work that needs the vCPU's registers, done before the next entry
    /// (while an exit is alive its borrow of the vCPU forbids ioctls).
    deferred: Option<Deferred>,
}

/// See [`ModelVcpu::deferred`].
#[derive(Clone, Copy, Debug)]
enum Deferred {
    /// Deliver #VC for a direct access (`size` 0 for MMIO).
    Vc {
        kind: &'static str,
        at: u64,
        write: bool,
        size: usize,
    },
    /// Emulate an MSR access asked for through the GHCB.
    Msr {
        access: GhcbAccess,
        index: u32,
        write: bool,
    },
    /// Check the C-bits of what a guest request used (`cbit.rs`): these
    /// pages shared, RIP's and RSP's private.
    CBits { shared: ghcb::SharedUse },
}

/// #GP as a GHCB event-injection value (vector 13, exception, valid), what
/// KVM answers for an MSR access it refuses.
const GHCB_INJECT_GP: u64 = 13 | (3 << 8) | (1 << 31);

impl ModelVcpu {
    /// An MSR access asked for through the GHCB: emulated by KVM itself
    /// (KVM_GET/SET_MSRS), as KVM does for the MSR NAE event.
    fn emulate_msr(&mut self, access: &GhcbAccess, index: u32, write: bool) {
        let mut msrs = match kvm_bindings::Msrs::from_entries(&[kvm_bindings::kvm_msr_entry {
            index,
            data: u64::from_le_bytes(access.data),
            ..Default::default()
        }]) {
            Ok(m) => m,
            Err(_) => return,
        };
        let fd = self.inner.fd();
        let done = if write {
            fd.set_msrs(&msrs).map(|n| n == 1)
        } else {
            fd.get_msrs(&mut msrs).map(|n| n == 1)
        };
        let mut runtime = lock(&self.runtime);
        match done {
            Ok(true) => {
                let value = msrs.as_slice().first().map_or(0, |e| e.data);
                runtime.complete_access(self.inner.index(), access, &value.to_le_bytes());
            }
            _ => runtime.fail_access(self.inner.index(), access, GHCB_INJECT_GP),
        }
    }

    /// A direct device access by the guest. On silicon, port I/O raises
    /// #VC and the model delivers it; MMIO (a nested page fault there) it
    /// cannot inject over KVM's pending emulation, so that is a fidelity
    /// violation. Either way it is recorded.
    fn direct_access(
        &mut self,
        kind: &'static str,
        at: u64,
        write: bool,
        size: usize,
    ) -> Option<VcpuExit<'static>> {
        let index = self.inner.index();
        let error_code = if kind == "ioio" {
            vc::SVM_EXIT_IOIO
        } else {
            vc::SVM_EXIT_NPF
        };
        let delivered = if kind == "ioio" {
            let access = vc::PortAccess {
                port: at as u16,
                size,
                write,
            };
            vc::fault_rip(self.inner.fd_mut(), &self.ram, access)
                .and_then(|rip| vc::deliver(self.inner.fd(), &self.ram, error_code, rip))
        } else {
            Err(vc::DeliveryError::CheckGate(
                "MMIO is not injectable over KVM's emulation",
            ))
        };
        let mut runtime = lock(&self.runtime);
        match delivered {
            Ok(()) => {
                runtime.vc_injected += 1;
                None
            }
            Err(why) => {
                let what = format!(
                    "vCPU {index}: direct {} {} {at:#x} by an SNP guest; silicon would raise #VC \
                     (error code {error_code:#x}) and the model could not deliver it: {why}",
                    if kind == "ioio" { "port" } else { "MMIO" },
                    if write { "write to" } else { "read of" },
                );
                runtime.fidelity_violations.push(ghcb::FidelityViolation {
                    vcpu: index,
                    kind,
                    address: at,
                    write,
                    silicon: format!("#VC, error code {error_code:#x}"),
                });
                Some(VcpuExit::FidelityViolation(what))
            }
        }
    }
}

impl Vcpu for ModelVcpu {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn describe_state(&self) -> String {
        self.inner.describe_state()
    }

    /// Runs to the next exit, answering the model's MSRs here. An MSR the
    /// model does not answer gets #GP, as on silicon. A device access made
    /// through the GHCB comes back as the same port or MMIO exit a plain
    /// guest's access makes, so one bus serves every platform.
    fn run(&mut self) -> Result<VcpuExit<'_>, BackendError> {
        let index = self.inner.index();
        match self.deferred.take() {
            Some(Deferred::Vc {
                kind,
                at,
                write,
                size,
            }) => {
                if let Some(stop) = self.direct_access(kind, at, write, size) {
                    return Ok(stop);
                }
            }
            Some(Deferred::Msr {
                access,
                index: msr,
                write,
            }) => self.emulate_msr(&access, msr, write),
            Some(Deferred::CBits { shared }) => {
                if let Some(stop) = self.check_c_bits(shared) {
                    return Ok(stop);
                }
            }
            None => {}
        }
        if let Some(access) = self.pending.take() {
            lock(&self.runtime).complete_access(index, &access, &self.data);
        }
        let strict = self.strict;
        let exit = self.inner.run()?;
        let direct = |kind, at, write, size| {
            Some(Deferred::Vc {
                kind,
                at,
                write,
                size,
            })
        };
        let outcome = match exit {
            VcpuExit::MsrRead {
                index: msr,
                data,
                error,
            } => {
                match lock(&self.runtime).rdmsr(index, msr) {
                    Some(value) => *data = value,
                    None => {
                        log::debug!("vCPU {index}: rdmsr {msr:#x} refused: #GP");
                        *error = 1;
                    }
                }
                return Ok(VcpuExit::Handled);
            }
            VcpuExit::MsrWrite {
                index: msr,
                data,
                error,
            } => {
                let mut runtime = lock(&self.runtime);
                let outcome = runtime.wrmsr(index, msr, data);
                if outcome.is_none() {
                    log::debug!("vCPU {index}: wrmsr {msr:#x} refused: #GP");
                    *error = 1;
                }
                if let Some(shared) = runtime.take_mapping_check(index as usize) {
                    self.deferred = Some(Deferred::CBits { shared });
                }
                outcome
            }
            // On silicon these never reach the hypervisor: they raise #VC.
            VcpuExit::PioIn(port, data) if strict => {
                self.deferred = direct("ioio", u64::from(port), false, data.len());
                return Ok(VcpuExit::Handled);
            }
            VcpuExit::PioOut(port, data) if strict => {
                self.deferred = direct("ioio", u64::from(port), true, data.len());
                return Ok(VcpuExit::Handled);
            }
            VcpuExit::MmioRead(gpa, _) if strict => {
                self.deferred = direct("mmio", gpa, false, 0);
                return Ok(VcpuExit::Handled);
            }
            VcpuExit::MmioWrite(gpa, _) if strict => {
                self.deferred = direct("mmio", gpa, true, 0);
                return Ok(VcpuExit::Handled);
            }
            other => return Ok(other),
        };
        match outcome {
            None | Some(GhcbOutcome::Resume) => Ok(VcpuExit::Handled),
            Some(GhcbOutcome::Terminate(set, code)) => Ok(VcpuExit::GuestTerminate { set, code }),
            Some(GhcbOutcome::Unregistered(gpa)) => Ok(VcpuExit::Unhandled(format!(
                "GHCB exit from unregistered or private GPA {gpa:#x}"
            ))),
            Some(GhcbOutcome::Device(access)) => {
                self.data = access.data;
                match access.access {
                    DeviceAccess::Msr { index: msr, write } => {
                        self.deferred = Some(Deferred::Msr {
                            access,
                            index: msr,
                            write,
                        });
                        Ok(VcpuExit::Handled)
                    }
                    DeviceAccess::Mmio { gpa, len, write } => {
                        self.pending = Some(access);
                        let data = &mut self.data[..len];
                        Ok(if write {
                            VcpuExit::MmioWrite(gpa, data)
                        } else {
                            VcpuExit::MmioRead(gpa, data)
                        })
                    }
                    DeviceAccess::Pio { port, len, write } => {
                        self.pending = Some(access);
                        let data = &mut self.data[..len];
                        Ok(if write {
                            VcpuExit::PioOut(port, data)
                        } else {
                            VcpuExit::PioIn(port, data)
                        })
                    }
                }
            }
        }
    }
}

/// The host's CPUID (subleaf 0) for the model's MSR-protocol CPUID answers
/// and the CPUID page it proposes.
/// The model CPU's SEV leaf (Fn8000_001F) replaces the host's (an Intel
/// host has none): SEV, SEV-ES and SNP, the model's C-bit, one bit of
/// physical-address reduction.
fn host_cpuid() -> CpuidTable {
    use umbra_snp_model::psp::{MODEL_C_BIT, MODEL_SEV_FEATURES};
    let mut table: CpuidTable = (0..=0x1Fu32)
        .chain(0x8000_0000..=0x8000_0021)
        .filter(|leaf| *leaf != 0x8000_001F)
        .map(|leaf| {
            let r = std::arch::x86_64::__cpuid_count(leaf, 0);
            (leaf, [r.eax, r.ebx, r.ecx, r.edx])
        })
        .collect();
    table.push((
        0x8000_001F,
        [MODEL_SEV_FEATURES, MODEL_C_BIT | (1 << 6), 0, 0],
    ));
    if let Some((_, max_ext)) = table.iter_mut().find(|(leaf, _)| *leaf == 0x8000_0000) {
        max_ext[0] = max_ext[0].max(0x8000_001F);
    }
    table
}
