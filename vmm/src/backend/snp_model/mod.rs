//! `--platform snp-model`: the SNP firmware model (`umbra-snp-model`) as a
//! backend. [`ModelVm`] and [`ModelVcpu`] wrap the plain KVM VM and vCPU
//! exactly as the hardware SNP backend wraps them: the VM owns confidential
//! RAM, the page-state tracker and the model, launches through
//! [`Vm::confidential`], and each vCPU answers the GHCB MSR protocol, the
//! GHCB-page requests and the paravirtual VMGEXIT/PVALIDATE MSRs inside
//! [`Vcpu::run`] ([`ghcb`]), returning [`VcpuExit::Handled`] or a typed
//! [`VcpuExit::GuestTerminate`]. The generic run loop never sees the GHCB.

pub mod ghcb;
mod key_dir;
mod launch;
pub use launch::ModelLaunch;

use super::kvm::{KvmHypervisor, KvmVcpu, KvmVm};
use super::{BackendError, Hypervisor, Vcpu, VcpuExit, VcpuStart, Vm};
use crate::memory::{GuestRam, MemoryMap};
use crate::page_state::{PageState, PageStates};
use crate::shared_memory::SharedMemory;
use crate::sync::lock;
use ghcb::{CpuidTable, GhcbMmio, GhcbOutcome, SnpRuntime, MODEL_MSRS};
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
    /// VMSA SEV_FEATURES (`--guest-features`).
    pub guest_features: u64,
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
    eprintln!(
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
        let inner = self.kvm.create_vm()?;
        inner.intercept_msrs(&MODEL_MSRS)?;
        Ok(ModelVm {
            inner,
            options: self.options.clone(),
            keys: self.keys.clone(),
            guest: None,
        })
    }
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
        let runtime = SnpRuntime::new(
            model,
            ram.clone(),
            shared.clone(),
            self.options.vcpus,
            self.options.guest_features,
            host_cpuid(),
        );
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
        Some(crate::dma::DeviceMemory::shared(guest.shared.clone()))
    }

    fn confidential_metrics(&self) -> Option<crate::metrics::SnpMetrics> {
        let guest = self.guest.as_ref()?;
        let runtime = lock(&guest.runtime);
        Some(crate::metrics::SnpMetrics {
            measurement: umbra_attestation::hex::encode(&guest.measurement.unwrap_or([0; 48])),
            page_states: lock(guest.shared.states()).summary(),
            model: runtime.model.summary(),
            reports_signed: runtime.reports_signed,
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
            mmio: None,
            mmio_data: [0; 8],
        })
    }
}

/// A vCPU of a model guest.
pub struct ModelVcpu {
    inner: KvmVcpu,
    runtime: Arc<Mutex<SnpRuntime>>,
    /// A GHCB MMIO request handed to the device handlers, finished on the
    /// next entry (as KVM completes it before re-entering the guest).
    mmio: Option<GhcbMmio>,
    mmio_data: [u8; 8],
}

impl Vcpu for ModelVcpu {
    fn index(&self) -> u32 {
        self.inner.index()
    }

    fn describe_state(&self) -> String {
        self.inner.describe_state()
    }

    /// Runs to the next exit, answering the model's MSRs here. An MSR the
    /// model does not answer gets #GP, as on silicon. An MMIO request made
    /// through the GHCB comes back as the same `MmioRead`/`MmioWrite` exit a
    /// plain guest's access makes, so one bus serves every platform.
    fn run(&mut self) -> Result<VcpuExit<'_>, BackendError> {
        let index = self.inner.index();
        if let Some(mmio) = self.mmio.take() {
            lock(&self.runtime).complete_mmio(index, &mmio, &self.mmio_data);
        }
        let runtime = &self.runtime;
        match self.inner.run()? {
            VcpuExit::MsrRead {
                index: msr,
                data,
                error,
            } => {
                match lock(runtime).rdmsr(index, msr) {
                    Some(value) => *data = value,
                    None => {
                        log::debug!("vCPU {index}: rdmsr {msr:#x} refused: #GP");
                        *error = 1;
                    }
                }
                Ok(VcpuExit::Handled)
            }
            VcpuExit::MsrWrite {
                index: msr,
                data,
                error,
            } => match lock(runtime).wrmsr(index, msr, data) {
                Some(GhcbOutcome::Resume) => Ok(VcpuExit::Handled),
                Some(GhcbOutcome::Terminate(set, code)) => {
                    Ok(VcpuExit::GuestTerminate { set, code })
                }
                Some(GhcbOutcome::Unregistered(gpa)) => Ok(VcpuExit::Unhandled(format!(
                    "GHCB exit from unregistered or private GPA {gpa:#x}"
                ))),
                Some(GhcbOutcome::Mmio(mmio)) => {
                    self.mmio = Some(mmio);
                    self.mmio_data = mmio.data;
                    let data = &mut self.mmio_data[..mmio.len];
                    Ok(if mmio.write {
                        VcpuExit::MmioWrite(mmio.gpa, data)
                    } else {
                        VcpuExit::MmioRead(mmio.gpa, data)
                    })
                }
                None => {
                    log::debug!("vCPU {index}: wrmsr {msr:#x} refused: #GP");
                    *error = 1;
                    Ok(VcpuExit::Handled)
                }
            },
            other => Ok(other),
        }
    }
}

/// The host's CPUID (subleaf 0) for the model's MSR-protocol CPUID answers
/// and the CPUID page it proposes.
fn host_cpuid() -> CpuidTable {
    (0..=0x1Fu32)
        .chain(0x8000_0000..=0x8000_0021)
        .map(|leaf| {
            let r = std::arch::x86_64::__cpuid_count(leaf, 0);
            (leaf, [r.eax, r.ebx, r.ecx, r.edx])
        })
        .collect()
}
