//! The ACPI tables a `--kernel` guest gets (built with rust-vmm's
//! `acpi_tables`): RSDP -> XSDT -> FADT (hardware-reduced, as
//! cloud-hypervisor's) -> DSDT, and MADT. The DSDT has one `LNRO0005`
//! device per virtio-mmio transport (its 4 KiB register slot and its
//! interrupt), which is how Linux's virtio_mmio driver finds transports on
//! ACPI systems; the MADT lists the local APICs and the IOAPIC; with
//! `--iommu` a VIOT names the virtio-mmio IOMMU and its endpoints. With
//! `--acpi off` the kernel gets `virtio_mmio.device=` words on its command
//! line instead ([`virtio_mmio_cmdline`]) — never both, or Linux would
//! register each transport twice.
//!
//! The tables live in the BIOS area at [`ACPI_BASE`], which the e820 map
//! leaves out of RAM, and the RSDP's address goes to Linux in
//! `boot_params.acpi_rsdp_addr`.

use crate::config::VmConfig;
use crate::virtio::Transport;
use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::viot::{MmioEndpoint, VirtIoMmioIommu, VIOT};
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use std::path::Path;
use thiserror::Error;

/// Guest-physical address of the RSDP; the other tables follow it.
pub const ACPI_BASE: u64 = 0xE_0000;
/// End of the window the tables may use (the BIOS area ends at 1 MiB).
const ACPI_END: u64 = 0x10_0000;
/// OEM ID and table ID in every header.
const OEM_ID: [u8; 6] = *b"UMBRA ";
const OEM_TABLE_ID: [u8; 8] = *b"UMBRAVM ";
/// The local APICs' MMIO base (architectural).
const LOCAL_APIC_BASE: u32 = 0xFEE0_0000;
/// The IOAPIC's base (the userspace or in-kernel one, same address).
const IOAPIC_BASE: u32 = 0xFEC0_0000;

/// Why the tables could not be built or written.
#[derive(Debug, Error)]
pub enum AcpiError {
    /// More vCPUs than a MADT processor entry can number.
    #[error("{0} vCPUs do not fit the MADT's 8-bit APIC IDs")]
    CountVcpus(u32),
    /// The tables outgrew the BIOS area.
    #[error("the ACPI tables need {0} bytes, more than the BIOS area holds")]
    PlaceTables(u64),
    /// A table file could not be written (`--dump-acpi`).
    #[error("cannot write {path}")]
    WriteTable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One table: its signature, where it goes, its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    /// File name stem (`DSDT`, `FACP`, `APIC`, `XSDT`, `RSDP`).
    pub signature: &'static str,
    /// Guest-physical address.
    pub gpa: u64,
    /// Contents.
    pub bytes: Vec<u8>,
}

fn aml_bytes(object: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    object.to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT's body: `\_SB.VRnn` for transport `nn`.
fn dsdt_body(transports: &[Transport]) -> Vec<u8> {
    let names: Vec<String> = (0..transports.len())
        .map(|i| format!("VR{i:02X}"))
        .collect();
    let resources: Vec<(aml::Memory32Fixed, aml::Interrupt)> = transports
        .iter()
        .map(|t| {
            (
                aml::Memory32Fixed::new(true, t.base as u32, crate::virtio::SLOT_SIZE as u32),
                // Edge-triggered, active high, exclusive: each transport
                // has its own line, raised through an irqfd.
                aml::Interrupt::new(true, true, false, false, t.gsi),
            )
        })
        .collect();
    let templates: Vec<aml::ResourceTemplate<'_>> = resources
        .iter()
        .map(|(memory, irq)| aml::ResourceTemplate::new(vec![memory, irq]))
        .collect();
    let hids: Vec<aml::Name> = (0..transports.len())
        .map(|_| aml::Name::new("_HID".into(), &"LNRO0005"))
        .collect();
    let uids: Vec<aml::Name> = (0..transports.len())
        .map(|i| aml::Name::new("_UID".into(), &(i as u64)))
        .collect();
    let crss: Vec<aml::Name> = templates
        .iter()
        .map(|t| aml::Name::new("_CRS".into(), t))
        .collect();
    let devices: Vec<aml::Device<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            aml::Device::new(
                name.as_str().into(),
                vec![&hids[i] as &dyn Aml, &uids[i], &crss[i]],
            )
        })
        .collect();
    let children: Vec<&dyn Aml> = devices.iter().map(|d| d as &dyn Aml).collect();
    aml_bytes(&aml::Scope::new("\\_SB_".into(), children))
}

fn align(at: u64) -> u64 {
    at.next_multiple_of(16)
}

/// The tables for `config`, placed from [`ACPI_BASE`].
pub(crate) fn tables(config: &VmConfig) -> Result<Vec<Table>, AcpiError> {
    if config.vcpus > 255 {
        return Err(AcpiError::CountVcpus(config.vcpus));
    }
    let transports = crate::virtio::transports(config);
    let rsdp_gpa = ACPI_BASE;
    let dsdt_gpa = align(rsdp_gpa + Rsdp::len() as u64);
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, 1);
    dsdt.append_slice(&dsdt_body(&transports));
    let dsdt = dsdt.as_slice().to_vec();

    let fadt_gpa = align(dsdt_gpa + dsdt.len() as u64);
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, 1).dsdt_64(dsdt_gpa);
    // Hardware-reduced ACPI: no PM timer, no SCI, no legacy fixed hardware
    // (cloud-hypervisor's FADT); the kernel needs no more to read the DSDT.
    fadt.flags =
        (Flags::HwReducedAcpi as u32 | Flags::PwrButton as u32 | Flags::SlpButton as u32).into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"UMBRAVMM").into();
    let fadt = aml_bytes(&fadt.finalize());

    let madt_gpa = align(fadt_gpa + fadt.len() as u64);
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        1,
        LocalInterruptController::Address(LOCAL_APIC_BASE),
    );
    for cpu in 0..config.vcpus as u8 {
        madt.add_structure(ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(0, IOAPIC_BASE, 0));
    let madt = aml_bytes(&madt);

    // The virtio-iommu and the endpoints behind it (Linux's VIOT parser
    // matches an MMIO endpoint by its first memory resource).
    let viot = transports
        .iter()
        .find(|t| t.kind == crate::virtio::Kind::Iommu)
        .map(|iommu| {
            let mut viot = VIOT::new(OEM_ID, OEM_TABLE_ID, 1);
            let handle = viot.add_virtio_mmio_iommu(VirtIoMmioIommu::new(iommu.base));
            for (endpoint, t) in (0u32..).zip(&transports) {
                if t.behind_iommu {
                    viot.add_mmio_endpoint(MmioEndpoint::new(endpoint, t.base, &handle));
                }
            }
            aml_bytes(&viot)
        });
    let viot_gpa = align(madt_gpa + madt.len() as u64);
    let xsdt_gpa = align(viot_gpa + viot.as_ref().map_or(0, |v| v.len() as u64));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, 1);
    xsdt.add_entry(fadt_gpa);
    xsdt.add_entry(madt_gpa);
    if viot.is_some() {
        xsdt.add_entry(viot_gpa);
    }
    let xsdt = aml_bytes(&xsdt);
    let end = xsdt_gpa + xsdt.len() as u64;
    if end > ACPI_END {
        return Err(AcpiError::PlaceTables(end - ACPI_BASE));
    }
    let rsdp = aml_bytes(&Rsdp::new(OEM_ID, xsdt_gpa));
    let mut tables = vec![
        Table {
            signature: "RSDP",
            gpa: rsdp_gpa,
            bytes: rsdp,
        },
        Table {
            signature: "DSDT",
            gpa: dsdt_gpa,
            bytes: dsdt,
        },
        Table {
            signature: "FACP",
            gpa: fadt_gpa,
            bytes: fadt,
        },
        Table {
            signature: "APIC",
            gpa: madt_gpa,
            bytes: madt,
        },
        Table {
            signature: "XSDT",
            gpa: xsdt_gpa,
            bytes: xsdt,
        },
    ];
    if let Some(bytes) = viot {
        tables.push(Table {
            signature: "VIOT",
            gpa: viot_gpa,
            bytes,
        });
    }
    Ok(tables)
}

/// `--dump-acpi DIR`: one file per table, `SIG.aml` (the RSDP, a pointer
/// rather than a table, which `iasl -d` does not read, is left out).
pub fn dump(config: &VmConfig, dir: &Path) -> Result<Vec<std::path::PathBuf>, AcpiError> {
    let tables: Vec<Table> = tables(config)?
        .into_iter()
        .filter(|t| t.signature != "RSDP")
        .collect();
    let write_error = |path: &Path, source| AcpiError::WriteTable {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    let mut written = Vec::new();
    for table in tables {
        let path = dir.join(format!("{}.aml", table.signature));
        std::fs::write(&path, &table.bytes).map_err(|e| write_error(&path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// The `virtio_mmio.device=4K@ADDR:IRQ` words for `--acpi off` boots.
pub(crate) fn virtio_mmio_cmdline(config: &VmConfig) -> String {
    crate::virtio::transports(config)
        .iter()
        .map(|t| format!(" virtio_mmio.device=4K@{:#x}:{}", t.base, t.gsi))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(bytes: &[u8]) -> bool {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_chain_from_the_rsdp_and_checksum() {
        let mut config = VmConfig::embedded(64 << 20, 2, "");
        config.rng = true;
        let tables = tables(&config).unwrap();
        let rsdp = &tables[0].bytes;
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(rsdp));
        let xsdt_gpa = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
        let xsdt = tables.iter().find(|t| t.gpa == xsdt_gpa).unwrap();
        assert_eq!(xsdt.signature, "XSDT");
        for table in &tables[1..] {
            assert_eq!(&table.bytes[..4], table.signature.as_bytes());
            assert!(checksum_ok(&table.bytes), "{}", table.signature);
            let len = u32::from_le_bytes(table.bytes[4..8].try_into().unwrap());
            assert_eq!(len as usize, table.bytes.len());
        }
        let dsdt = &tables[1].bytes;
        assert!(dsdt.windows(8).any(|w| w == b"LNRO0005"));
    }

    #[test]
    fn acpi_off_names_every_transport_on_the_command_line() {
        let mut config = VmConfig::embedded(64 << 20, 1, "");
        config.rng = true;
        config.disks.push(crate::device_config::DiskConfig {
            path: "d.img".into(),
            read_only: false,
            direct: false,
            iommu: false,
        });
        assert_eq!(
            virtio_mmio_cmdline(&config),
            " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
    }
}
