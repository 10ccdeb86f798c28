//! Builds a VM for one run, in launch order: RAM allocated and registered
//! with the VM (which then owns it), the interrupt controller, the guest
//! loaded, the vCPUs created and, on confidential platforms, the launch
//! (KVM measures every vCPU's VMSA at LAUNCH_FINISH, so it comes last).

use crate::backend::{Hypervisor, VcpuStart, Vm};
use crate::config::{BootSource, Platform, VmConfig};
use crate::launch::{self, LaunchPlan};
use crate::loader;
use crate::memory::{GuestRam, MemoryMap};
use crate::run::VmmError;
use std::sync::Arc;
use std::time::Instant;

/// The interrupt controller a boot gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IrqChip {
    /// KVM's PIC, IOAPIC, local APICs and PIT (a Linux boot).
    Legacy,
    /// Local APICs in the kernel, the IOAPIC in userspace (firmware boots:
    /// tearing it down costs 0.2 ms where the legacy set costs 17-28 ms).
    Split,
}

/// A VM ready to run.
pub(crate) struct BuiltVm<V: Vm> {
    pub(crate) vm: V,
    pub(crate) vcpus: Vec<V::Vcpu>,
    pub(crate) irqchip: IrqChip,
    /// The kernel's memslot setup, reported apart from umbra's own work.
    pub(crate) memslots_ms: f64,
}

/// Builds the VM of `config` on `hypervisor`.
pub(crate) fn build<H: Hypervisor>(
    hypervisor: &H,
    config: &VmConfig,
    map: &MemoryMap,
    firmware: Option<&[u8]>,
) -> Result<BuiltVm<H::Vm>, VmmError> {
    let snp = matches!(config.platform, Platform::Snp | Platform::SnpModel);
    let plan = match (firmware, snp) {
        (Some(image), true) => Some(LaunchPlan::new(image, crate::run::launch_options(config)?)?),
        (None, true) => return Err(VmmError::ConfidentialKernel),
        _ => None,
    };
    let mut vm = hypervisor.create_vm()?;
    let ram = Arc::new(if config.platform == Platform::SnpModel {
        GuestRam::allocate_confidential(map)?
    } else {
        GuestRam::allocate(map, config.memory_backing, config.ksm)?
    });
    // Before anything touches the RAM, so every page comes from the node.
    if let Some(node) = config.numa_node {
        crate::numa::node_cpus(node)?;
        crate::numa::bind(&ram, node)?;
    }
    let memslots_start = Instant::now();
    vm.register_ram(ram.clone(), map)?;
    let memslots_ms = memslots_start.elapsed().as_secs_f64() * 1000.0;

    let (start, irqchip) = match (&config.boot, firmware) {
        (BootSource::Kernel { kernel, initrd }, _) => {
            vm.create_legacy_irqchip()?;
            // The kernel finds the virtio transports one way, never both.
            let (cmdline, acpi) = if config.acpi {
                (config.cmdline.clone(), crate::acpi::tables(config)?)
            } else {
                let words = crate::acpi::virtio_mmio_cmdline(config);
                (format!("{}{words}", config.cmdline), Vec::new())
            };
            let entry =
                loader::load_linux(&ram.memory, map, kernel, initrd.as_deref(), &cmdline, &acpi)?;
            let start = VcpuStart::Linux64 {
                entry: entry.entry,
                boot_params: entry.boot_params,
                page_table: entry.page_table,
                gdt: entry.gdt,
            };
            (start, IrqChip::Legacy)
        }
        (_, image) => {
            vm.create_split_irqchip(crate::interrupts::SPLIT_IRQCHIP_PINS)?;
            if let Some(image) = image {
                // The boot-information page is the only page umbra hands a
                // confidential guest unmeasured: shared, before it is written.
                if snp {
                    vm.share_before_launch(umbra_firmware::layout::BOOT_INFO_GPA, 4096)?;
                }
                // The ROM carries the image as on plain KVM; the launch
                // measures the same bytes.
                loader::load_firmware(&ram, map, image, config.vcpus, &config.cmdline)?;
            }
            (VcpuStart::Reset, IrqChip::Split)
        }
    };
    let vcpus = (0..config.vcpus)
        .map(|index| vm.create_vcpu(index, config.vcpus, start, 0))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(config.platform, Platform::Sev | Platform::SevEs) {
        let image = firmware.ok_or(VmmError::ConfidentialKernel)?;
        let rom = map.rom().ok_or(VmmError::ConfidentialKernel)?;
        let policy = crate::run::legacy_policy(config.platform);
        let launch = vm.legacy_launch().ok_or(VmmError::NotConfidential)?;
        let m = launch
            .launch_image(policy, rom.gpa, image.len() as u64)
            .map_err(|e| VmmError::Launch(launch::ExecuteError::Launch(e)))?;
        // Only the guest owner (who holds the TIK) can check it.
        log::info!(
            "SEV launch measurement {} mnonce {}",
            umbra_attestation::hex::encode(&m.measure),
            umbra_attestation::hex::encode(&m.mnonce)
        );
    }
    if let Some(plan) = &plan {
        {
            let launch = vm.confidential().ok_or(VmmError::NotConfidential)?;
            let (_, finished) = launch::execute(launch, plan).map_err(VmmError::Launch)?;
            log::info!(
                "SNP launch digest {}",
                umbra_attestation::hex::encode(&finished.measurement)
            );
        }
    }
    Ok(BuiltVm {
        vm,
        vcpus,
        irqchip,
        memslots_ms,
    })
}
