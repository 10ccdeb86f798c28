//! The model's confidential launch: SNP_LAUNCH_START/UPDATE/FINISH on the
//! firmware model, through the launch-time view of guest memory (the
//! firmware reads and writes pages through the guest's own mapping, as the
//! PSP writes through the system physical address).

use super::{ModelGuest, ModelVm};
use crate::backend::confidential::{
    ConfidentialLaunch, FirmwareStatus, LaunchError, LaunchFinishParams, LaunchFinished,
    LaunchStartParams, LaunchUpdate, PageType,
};
use crate::memory::GuestRam;
use crate::sync::lock;
use umbra_attestation::measure::gctx::PAGE_SIZE;
use umbra_snp_model::abi::{CpuidEntry, CpuidPage, CPUID_MAX_ENTRIES};
use umbra_snp_model::psp::{GuestPageError, GuestPages};
use umbra_snp_model::SnpFirmwareModel;
use zerocopy::{FromZeros, IntoBytes};

/// The firmware reads and writes guest pages through the guest's mapping.
struct LaunchMemory<'a>(&'a GuestRam);

impl GuestPages for LaunchMemory<'_> {
    fn read_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.0
            .firmware_read(gpa, page)
            .then_some(())
            .ok_or(GuestPageError { gpa })
    }

    fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
        self.0
            .firmware_write(gpa, page)
            .then_some(())
            .ok_or(GuestPageError { gpa })
    }
}

/// The firmware model's launch over any guest memory: what [`ModelVm`]
/// launches through, and what tests drive directly.
pub struct ModelLaunch<'a> {
    model: &'a mut SnpFirmwareModel,
    memory: &'a dyn GuestPages,
}

impl std::fmt::Debug for ModelLaunch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLaunch")
            .field("model", &self.model)
            .finish()
    }
}

impl<'a> ModelLaunch<'a> {
    /// Launches into `model` with guest memory `memory`.
    pub fn new(model: &'a mut SnpFirmwareModel, memory: &'a dyn GuestPages) -> Self {
        ModelLaunch { model, memory }
    }
}

impl ConfidentialLaunch for ModelLaunch<'_> {
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
        update_with_cpuid_retry(self.model, update, self.memory)
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

fn guest(vm: &mut ModelVm) -> Result<&mut ModelGuest, LaunchError> {
    vm.guest.as_mut().ok_or_else(|| LaunchError::Backend {
        what: "the SNP model launch",
        source: Box::new(super::ModelError::FindRam),
    })
}

impl ConfidentialLaunch for ModelVm {
    fn launch_start(&mut self, params: &LaunchStartParams) -> Result<(), LaunchError> {
        let guest = guest(self)?;
        let mut runtime = lock(&guest.runtime);
        ModelLaunch::new(&mut runtime.model, &LaunchMemory(&guest.ram)).launch_start(params)
    }

    fn launch_update(&mut self, update: &LaunchUpdate<'_>) -> Result<(), LaunchError> {
        let guest = guest(self)?;
        let mut runtime = lock(&guest.runtime);
        let memory = LaunchMemory(&guest.ram);
        if update.page_type == PageType::Cpuid && update.contents.is_none() {
            // Propose a CPUID page built from the host's CPUID, as QEMU does
            // from KVM's; the model validates it like the firmware.
            let page = proposed_cpuid_page(runtime.cpuid());
            if !guest.ram.firmware_write(update.gpa, page.as_bytes()) {
                return Err(LaunchError::Update {
                    gpa: update.gpa,
                    pages: 1,
                    page_type: update.page_type,
                    status: FirmwareStatus::InvalidAddress,
                });
            }
        }
        ModelLaunch::new(&mut runtime.model, &memory).launch_update(update)
    }

    fn launch_finish(
        &mut self,
        params: &LaunchFinishParams,
    ) -> Result<LaunchFinished, LaunchError> {
        let guest = guest(self)?;
        let finished = {
            let mut runtime = lock(&guest.runtime);
            ModelLaunch::new(&mut runtime.model, &LaunchMemory(&guest.ram)).launch_finish(params)?
        };
        guest.measurement = Some(finished.measurement);
        Ok(finished)
    }
}

/// One LAUNCH_UPDATE. A refused CPUID page comes back corrected in guest
/// memory: report the firmware's corrections and retry once, as QEMU and
/// the hardware backend do.
fn update_with_cpuid_retry(
    model: &mut SnpFirmwareModel,
    update: &LaunchUpdate<'_>,
    memory: &dyn GuestPages,
) -> Result<(), LaunchError> {
    let mut result = model.launch_update(
        update.gpa,
        update.len,
        update.page_type,
        update.contents,
        memory,
    );
    if update.page_type == PageType::Cpuid && result == Err(FirmwareStatus::InvalidParam) {
        for correction in model.cpuid_corrections() {
            log::warn!("SNP model corrected the CPUID page: {correction}");
        }
        result = model.launch_update(update.gpa, update.len, update.page_type, None, memory);
    }
    result.map_err(|status| LaunchError::Update {
        gpa: update.gpa,
        pages: update.len / PAGE_SIZE as u64,
        page_type: update.page_type,
        status,
    })
}

/// The CPUID page proposed to the firmware: every leaf in the basic and
/// extended ranges the host reports (subleaf 0), at most 64, leaf 0xD
/// subleaves as QEMU sets them (XCR0_IN 1, EBX 0x240).
fn proposed_cpuid_page(cpuid: &[(u32, [u32; 4])]) -> CpuidPage {
    let max_basic = cpuid.iter().find(|(l, _)| *l == 0).map_or(0, |(_, r)| r[0]);
    let max_ext = cpuid
        .iter()
        .find(|(l, _)| *l == 0x8000_0000)
        .map_or(0, |(_, r)| r[0]);
    let mut page = CpuidPage::new_zeroed();
    let entries = cpuid
        .iter()
        .filter(|(leaf, _)| {
            // The model CPU's SEV leaf is always offered, whatever the host's
            // highest extended leaf.
            *leaf <= max_basic || (0x8000_0000..=max_ext).contains(leaf) || *leaf == 0x8000_001F
        })
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
        .take(CPUID_MAX_ENTRIES);
    for (slot, entry) in page.entries.iter_mut().zip(entries) {
        *slot = entry;
        page.count += 1;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use umbra_snp_model::Platform;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    struct Mmap(GuestMemoryMmap);
    impl GuestPages for Mmap {
        fn read_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
            self.0.read_page(gpa, page)
        }
        fn write_page(&self, gpa: u64, page: &[u8; PAGE_SIZE]) -> Result<(), GuestPageError> {
            self.0.write_page(gpa, page)
        }
    }

    #[test]
    fn a_corrected_cpuid_page_is_retried_once() {
        let mem = Mmap(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap());
        let mut m = SnpFirmwareModel::new(&[(0, 4 << 20)], None, Platform::default()).unwrap();
        let mut page = [0u8; PAGE_SIZE];
        page[0..4].copy_from_slice(&1u32.to_le_bytes());
        page[0x10..0x14].copy_from_slice(&1u32.to_le_bytes());
        page[0x28..0x2C].copy_from_slice(&0x00B0_0F21u32.to_le_bytes()); // a Turin FMS
        mem.0.write_slice(&page, GuestAddress(0x5000)).unwrap();
        m.launch_start(0x30000, [0; 16]).unwrap();
        let update = LaunchUpdate {
            gpa: 0x5000,
            len: 4096,
            page_type: PageType::Cpuid,
            contents: None,
        };
        update_with_cpuid_retry(&mut m, &update, &mem).unwrap();
        let mut added = [0u8; PAGE_SIZE];
        mem.0.read_slice(&mut added, GuestAddress(0x5000)).unwrap();
        assert_eq!(
            &added[0x28..0x2C],
            &0x00A0_0F11u32.to_le_bytes(),
            "the model's Milan FMS"
        );
        assert_eq!(m.summary().pages_launched, 1);
    }

    #[test]
    fn the_proposed_cpuid_page_holds_at_most_64_entries() {
        let many: Vec<(u32, [u32; 4])> = (0..100u32).map(|l| (l, [99, 0, 0, 0])).collect();
        let page = proposed_cpuid_page(&many);
        assert_eq!(page.count, 64);
        assert_eq!(page.entries[63].eax_in, 63);
    }
}
