//! `--platform snp-model`: everything the run needs beyond plain KVM —
//! confidential RAM, the page-state tracker, the firmware model with its
//! keys, the launch through the typestate engine, and the run-time state
//! the vCPU loop hands MSR exits to.

use crate::backend::confidential::PageType;
use crate::backend::sev::uapi::CpuidEntry;
use crate::config::VmConfig;
use crate::launch::{self, LaunchPlan};
use crate::memory::{GuestRam, MemoryMap, RegionRole};
use crate::page_state::{PageState, PageStates};
use crate::shared_memory::SharedMemory;
use crate::snp_model::firmware::{
    GuestPageError, GuestPages, Platform, SnpFirmwareModel, SnpModelLaunch,
};
use crate::snp_model::ghcb::{CpuidTable, SnpRuntime};
use crate::snp_model::keys::ModelKeys;
use std::sync::{Arc, Mutex};
use thiserror::Error;
use umbra_attestation::measure::gctx::PAGE_SIZE;

/// Errors while preparing an SNP-model launch.
#[derive(Debug, Error)]
pub enum SnpRunError {
    /// The model's keys could not be loaded or generated.
    #[error("cannot load the SNP model's keys")]
    Keys(#[source] crate::snp_model::keys::KeyError),
    /// The model could not be created.
    #[error("cannot create the SNP firmware model")]
    Model(#[source] crate::snp_model::firmware::ModelError),
    /// The page-state tracker refused the memory map.
    #[error("cannot track page states")]
    PageStates(#[source] crate::page_state::PageStateError),
    /// The launch failed.
    #[error("the SNP launch failed")]
    Launch(#[source] launch::ExecuteError),
    /// The attestation output could not be written.
    #[error("cannot write the attestation output to {0}")]
    WriteAttestation(std::path::PathBuf, #[source] std::io::Error),
    /// The model's certificates could not be written.
    #[error("cannot write the SNP model's certificates")]
    WriteCerts(#[source] crate::snp_model::keys::KeyError),
    /// Sharing the boot-information page failed.
    #[error("cannot share the boot-information page")]
    ShareBootInfo(#[source] crate::snp_model::ghcb::ConvertError),
    /// The proposed CPUID page lies outside guest RAM.
    #[error("the CPUID page at {0:#x} lies outside guest RAM")]
    WriteCpuidPage(u64),
}

/// The firmware reads and writes guest pages through the guest's mapping.
impl GuestPages for GuestRam {
    fn read_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.firmware_read(gpa, page)
            .then_some(())
            .ok_or(GuestPageError { gpa })
    }

    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.firmware_write(gpa, page)
            .then_some(())
            .ok_or(GuestPageError { gpa })
    }
}

/// A launched SNP-model guest, ready to run.
pub struct SnpLaunched {
    /// The run-time protocol state the vCPU loop uses.
    pub runtime: Mutex<SnpRuntime>,
    /// The shared-only accessor (for devices).
    pub shared: SharedMemory,
    /// The launch digest the model computed.
    pub measurement: [u8; 48],
    /// The model's keys (to write the certificates out).
    pub keys: Arc<ModelKeys>,
}

/// Prints the banner that tells the operator memory is not protected.
pub fn warn_unencrypted() {
    eprintln!(
        "umbra: WARNING: --platform snp-model is a software model of the AMD SEV-SNP firmware on plain KVM: \
         guest memory is NOT encrypted or integrity-protected; use it to test launch, attestation and page-state \
         handling, never to protect data"
    );
}

/// Shares the page at `gpa` with the VMM before launch (the boot-information
/// page is the only page umbra hands the guest unmeasured).
pub fn share_page(runtime: &mut SnpRuntime, gpa: u64) -> Result<(), SnpRunError> {
    runtime
        .convert(gpa, PAGE_SIZE as u64, PageState::Shared)
        .map_err(SnpRunError::ShareBootInfo)
}

/// Creates the model and the page states, shares the boot-information page,
/// launches `image` through the typestate engine and returns the guest.
pub fn launch(
    config: &VmConfig,
    map: &MemoryMap,
    ram: &Arc<GuestRam>,
    plan: &LaunchPlan<'_>,
    cpuid: CpuidTable,
    write_boot_info: impl FnOnce(&GuestRam) -> Result<(), crate::loader::LoadError>,
) -> Result<SnpLaunched, crate::vmm::VmmError> {
    let keys_dir = match &config.snp.model_keys {
        Some(dir) => dir.clone(),
        None => ModelKeys::default_dir().map_err(SnpRunError::Keys)?,
    };
    let keys = Arc::new(ModelKeys::load_or_generate(&keys_dir).map_err(SnpRunError::Keys)?);
    let ram_ranges: Vec<(u64, u64)> = map
        .regions()
        .iter()
        .filter(|r| r.role == RegionRole::Ram)
        .map(|r| (r.gpa, r.size))
        .collect();
    let mut memory_ranges = ram_ranges.clone();
    if let Some(rom) = map.rom() {
        memory_ranges.push((rom.gpa, rom.size));
    }
    let model = SnpFirmwareModel::new(&memory_ranges, Some(keys.clone()), Platform::default())
        .map_err(SnpRunError::Model)?;
    let states =
        PageStates::new(&ram_ranges, PageState::Private).map_err(SnpRunError::PageStates)?;
    let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
    // Propose a CPUID page built from the host's CPUID, as QEMU does from
    // KVM's; the model validates it like the firmware and corrects it.
    if let Some(step) = plan.updates().find(|s| s.page_type == PageType::Cpuid) {
        let entries = cpuid_entries(&cpuid);
        if let Some(page) = crate::backend::sev::uapi::cpuid_page_bytes(&entries) {
            if !ram.firmware_write(step.gpa, &page) {
                return Err(SnpRunError::WriteCpuidPage(step.gpa).into());
            }
        }
    }
    let mut runtime = SnpRuntime::new(
        model,
        shared.clone(),
        config.vcpus,
        config.snp.guest_features,
        cpuid,
    );
    share_page(&mut runtime, umbra_firmware::layout::BOOT_INFO_GPA)?;
    write_boot_info(ram)?;

    let launch = SnpModelLaunch::new(&mut runtime.model, &**ram);
    let (_, finished) = launch::execute(launch, plan).map_err(SnpRunError::Launch)?;
    Ok(SnpLaunched {
        runtime: Mutex::new(runtime),
        shared,
        measurement: finished.measurement,
        keys,
    })
}

/// Writes `report.bin` (the last report the model signed) and the model's
/// ark.pem, ask.pem and vcek.pem into `dir` for `umbra-attest verify`.
pub fn write_attestation(launched: &SnpLaunched, dir: &std::path::Path) -> Result<(), SnpRunError> {
    let io_err = |e| SnpRunError::WriteAttestation(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(io_err)?;
    launched
        .keys
        .write_certs(dir)
        .map_err(SnpRunError::WriteCerts)?;
    let runtime = crate::devices::lock(&launched.runtime);
    if let Some(report) = &runtime.last_report {
        std::fs::write(dir.join("report.bin"), report).map_err(io_err)?;
    }
    Ok(())
}

/// The CPUID entries proposed for the CPUID page: every leaf in the basic
/// and extended ranges the host reports (subleaf 0), at most 64, leaf 0xD
/// subleaves as QEMU sets them (XCR0_IN 1, EBX 0x240).
fn cpuid_entries(cpuid: &CpuidTable) -> Vec<CpuidEntry> {
    let max_basic = cpuid.iter().find(|(l, _)| *l == 0).map_or(0, |(_, r)| r[0]);
    let max_ext = cpuid
        .iter()
        .find(|(l, _)| *l == 0x8000_0000)
        .map_or(0, |(_, r)| r[0]);
    cpuid
        .iter()
        .filter(|(leaf, _)| *leaf <= max_basic || (0x8000_0000..=max_ext).contains(leaf))
        .map(|(leaf, r)| {
            let mut e = CpuidEntry {
                eax_in: *leaf,
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
                ..Default::default()
            };
            if *leaf == 0xD {
                e.xcr0_in = 1;
                e.ebx = 0x240;
            }
            e
        })
        .take(crate::backend::sev::uapi::CPUID_MAX_ENTRIES)
        .collect()
}
