//! Puts guest code into guest memory: firmware ROM images (with umbra's
//! boot-information page) and Linux bzImages for direct boot.

use crate::memory::{MemoryMap, RegionRole};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{bzimage::BzImage, KernelLoader};
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;
use umbra_firmware::boot_info::BootInfo;
use umbra_firmware::layout::BOOT_INFO_GPA;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Errors while loading guest images.
#[derive(Debug, Error)]
pub enum LoadError {
    /// An image file could not be read.
    #[error("cannot read {path}")]
    ReadImage {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An image file is empty.
    #[error("{0} is empty")]
    EmptyImage(PathBuf),
    /// Writing into guest memory failed (the image does not fit).
    #[error("{what} does not fit in guest memory")]
    WriteGuest {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// The command line does not fit.
    #[error("command line of {len} bytes exceeds the {max}-byte limit")]
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// linux-loader refused the kernel.
    #[error("cannot load kernel {path}")]
    Kernel {
        /// The file.
        path: PathBuf,
        /// linux-loader's reason.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// The boot parameters could not be written.
    #[error("cannot write Linux boot parameters")]
    BootParams(#[source] linux_loader::configurator::Error),
    /// The initrd does not fit below the kernel's limit.
    #[error("initrd of {size} bytes does not fit in low guest memory")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
    },
}

/// Reads a whole image file, refusing empty files.
pub fn read_image(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::ReadImage {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(LoadError::EmptyImage(path.to_path_buf()));
    }
    Ok(bytes)
}

fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    bytes: &[u8],
    gpa: u64,
) -> Result<(), LoadError> {
    mem.write_slice(bytes, GuestAddress(gpa))
        .map_err(|source| LoadError::WriteGuest { what, source })
}

/// Copies a ROM image into the ROM region and writes the boot-information
/// page umbra's firmware reads (other firmware ignores that RAM page).
pub fn load_firmware(
    ram: &crate::memory::GuestRam,
    map: &MemoryMap,
    image: &[u8],
    vcpus: u32,
    cmdline: &str,
) -> Result<(), LoadError> {
    let mem = &ram.memory;
    let rom_base = map.rom().map_or(0, |r| r.gpa);
    write(mem, "firmware image", image, rom_base)?;
    let guard = map.first_guard().map_or((0, 0), |g| (g.gpa, g.size));
    let info =
        BootInfo::new(vcpus, map.low_ram(), guard, cmdline).ok_or(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max: umbra_firmware::boot_info::CMDLINE_CAPACITY,
        })?;
    write(mem, "boot information", info.as_bytes(), BOOT_INFO_GPA)
}

/// Guest-physical addresses of the structures direct Linux boot writes,
/// as the x86 boot protocol and Firecracker lay them out.
pub mod linux_layout {
    /// GDT with the boot protocol's __BOOT_CS (0x10) and __BOOT_DS (0x18).
    pub const GDT: u64 = 0x500;
    /// The zero page (`struct boot_params`).
    pub const ZERO_PAGE: u64 = 0x7000;
    /// PML4 of the identity map of the first GiB.
    pub const PML4: u64 = 0x9000;
    /// Kernel command line.
    pub const CMDLINE: u64 = 0x20000;
    /// Most bytes of command line accepted.
    pub const CMDLINE_MAX: usize = 2048;
    /// Where the protected-mode kernel is loaded.
    pub const HIMEM_START: u64 = 0x10_0000;
    /// End of the usable legacy low memory (EBDA starts here).
    pub const EBDA_START: u64 = 0x9_FC00;
}

/// Where a loaded kernel starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelEntry {
    /// 64-bit entry point.
    pub entry: u64,
    /// `boot_params` address (RSI at entry).
    pub boot_params: u64,
    /// PML4 address (CR3).
    pub page_table: u64,
    /// GDT address.
    pub gdt: u64,
}

/// Loads a bzImage, an optional initrd and the command line, and writes
/// the zero page, e820 map, GDT and identity page tables, and the ACPI
/// tables if given (the first is the RSDP, whose address goes to the
/// kernel in `boot_params.acpi_rsdp_addr`).
pub fn load_linux(
    mem: &GuestMemoryMmap,
    map: &MemoryMap,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
    acpi: &[crate::acpi::Table],
) -> Result<KernelEntry, LoadError> {
    use linux_layout::*;
    if cmdline.len() >= CMDLINE_MAX {
        return Err(LoadError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    let mut file = File::open(kernel).map_err(|source| LoadError::ReadImage {
        path: kernel.to_path_buf(),
        source,
    })?;
    let loaded =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            LoadError::Kernel {
                path: kernel.to_path_buf(),
                source,
            }
        })?;

    let mut params = boot_params::default();
    if let Some(header) = loaded.setup_header {
        params.hdr = header;
    }
    params.hdr.type_of_loader = 0xFF;
    params.hdr.boot_flag = 0xAA55;
    params.hdr.header = 0x5372_6448; // "HdrS"
    params.hdr.loadflags |= 0x01; // LOADED_HIGH
    params.hdr.cmd_line_ptr = CMDLINE as u32;
    params.hdr.cmdline_size = cmdline.len() as u32;
    let mut nul_terminated = cmdline.as_bytes().to_vec();
    nul_terminated.push(0);
    write(mem, "kernel command line", &nul_terminated, CMDLINE)?;

    if let Some(path) = initrd {
        let image = read_image(path)?;
        let size = image.len() as u64;
        let limit = map
            .low_ram()
            .min(u64::from(params.hdr.initrd_addr_max).saturating_add(1));
        let addr = limit
            .checked_sub(size)
            .map(|a| a & !0xFFF)
            .filter(|a| *a >= loaded.kernel_end);
        let addr = addr.ok_or(LoadError::InitrdTooLarge { size })?;
        write(mem, "initrd", &image, addr)?;
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let mut e820 = vec![(0, EBDA_START)];
    for r in map.regions().iter().filter(|r| r.role == RegionRole::Ram) {
        let start = r.gpa.max(HIMEM_START);
        if r.end() > start {
            e820.push((start, r.end() - start));
        }
    }
    for (i, (addr, size)) in e820.iter().enumerate() {
        params.e820_table[i] = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: 1,
        };
    }
    params.e820_entries = e820.len() as u8;
    for table in acpi {
        write(mem, "ACPI table", &table.bytes, table.gpa)?;
    }
    if let Some(rsdp) = acpi.first() {
        params.acpi_rsdp_addr = rsdp.gpa;
    }
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
        &BootParams::new::<boot_params>(&params, GuestAddress(ZERO_PAGE)),
        mem,
    )
    .map_err(LoadError::BootParams)?;

    // GDT: null, null, 64-bit code (0x10), data (0x18).
    let gdt: [u64; 4] = [0, 0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];
    let gdt_bytes: Vec<u8> = gdt.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, "GDT", &gdt_bytes, GDT)?;
    // Identity map of the first GiB with 2 MiB pages: PML4 -> PDPT -> PD.
    let pdpt = PML4 + 0x1000;
    let pd = PML4 + 0x2000;
    write(mem, "page tables", &(pdpt | 3).to_le_bytes(), PML4)?;
    write(mem, "page tables", &(pd | 3).to_le_bytes(), pdpt)?;
    let pd_entries: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | 0x83).to_le_bytes())
        .collect();
    write(mem, "page tables", &pd_entries, pd)?;

    Ok(KernelEntry {
        // The 64-bit entry point is 0x200 bytes into the protected-mode kernel.
        entry: loaded.kernel_load.0 + 0x200,
        boot_params: ZERO_PAGE,
        page_table: PML4,
        gdt: GDT,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryBacking;
    use crate::memory::GuestRam;

    fn guest(ram: u64) -> (MemoryMap, GuestRam) {
        let map = MemoryMap::new(ram, 64 << 10).unwrap();
        let ram = GuestRam::allocate(&map, MemoryBacking::Anon, false).unwrap();
        (map, ram)
    }

    #[test]
    fn firmware_lands_at_rom_and_boot_info_in_ram() {
        let (map, ram) = guest(16 << 20);
        let image: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
        load_firmware(&ram, &map, &image, 3, "scenario=smp").unwrap();
        let mut back = vec![0u8; image.len()];
        ram.memory
            .read_slice(&mut back, GuestAddress(0xFFFF_0000))
            .unwrap();
        assert_eq!(back, image);
        let mut page = [0u8; 4096];
        ram.memory
            .read_slice(&mut page, GuestAddress(BOOT_INFO_GPA))
            .unwrap();
        assert_eq!(&page[..8], b"UMBRABI1");
        assert_eq!(u32::from_le_bytes(page[12..16].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_le_bytes(page[16..24].try_into().unwrap()),
            16 << 20
        );
        // The guard range the firmware gets is the one right after RAM.
        assert_eq!(
            u64::from_le_bytes(page[24..32].try_into().unwrap()),
            16 << 20
        );
        assert_eq!(&page[64..76], b"scenario=smp");
    }

    #[test]
    fn refuses_missing_and_empty_images() {
        let missing = read_image(Path::new("/nonexistent/OVMF.fd")).unwrap_err();
        assert!(matches!(missing, LoadError::ReadImage { .. }));
        let empty = std::env::temp_dir().join(format!("umbra-empty-{}", std::process::id()));
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(read_image(&empty), Err(LoadError::EmptyImage(_))));
        std::fs::remove_file(empty).unwrap();
    }

    /// A minimal bzImage: a setup header that linux-loader accepts followed
    /// by a protected-mode payload, as in the x86 boot protocol.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut image = vec![0u8; (setup_sects as usize + 1) * 512];
        image[0x1F1] = setup_sects;
        image[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes()); // protocol 2.15
        image[0x211] = 0x01; // loadflags: LOADED_HIGH
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
        image[0x22C..0x230].copy_from_slice(&0x37FF_FFFFu32.to_le_bytes()); // initrd_addr_max
        image[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        image[0x238..0x23C].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn writes_boot_protocol_structures() {
        let (map, ram) = guest(64 << 20);
        let dir = std::env::temp_dir().join(format!("umbra-linux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("bzImage");
        let payload: Vec<u8> = (0..8192).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(&kernel, fake_bzimage(&payload)).unwrap();
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, vec![0x5A; 10_000]).unwrap();

        let entry = load_linux(
            &ram.memory,
            &map,
            &kernel,
            Some(&initrd),
            "console=ttyS0 quiet",
            &crate::acpi::tables(&crate::config::VmConfig::embedded(64 << 20, 1, "")).unwrap(),
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(entry.entry, 0x10_0000 + 0x200);
        assert_eq!(entry.boot_params, 0x7000);

        let params: boot_params = ram.memory.read_obj(GuestAddress(0x7000)).unwrap();
        assert_eq!({ params.hdr.boot_flag }, 0xAA55);
        assert_eq!({ params.hdr.type_of_loader }, 0xFF);
        assert_eq!({ params.acpi_rsdp_addr }, crate::acpi::ACPI_BASE);
        let mut signature = [0u8; 8];
        ram.memory
            .read_slice(&mut signature, GuestAddress(crate::acpi::ACPI_BASE))
            .unwrap();
        assert_eq!(&signature, b"RSD PTR ");
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
        let mut cmdline = [0u8; 20];
        ram.memory
            .read_slice(&mut cmdline, GuestAddress(0x20000))
            .unwrap();
        assert_eq!(&cmdline, b"console=ttyS0 quiet\0");
        // The payload sits at 1 MiB, the initrd page-aligned at the top of RAM.
        let mut loaded = vec![0u8; payload.len()];
        ram.memory
            .read_slice(&mut loaded, GuestAddress(0x10_0000))
            .unwrap();
        assert_eq!(loaded, payload);
        let (rd_addr, rd_size) = ({ params.hdr.ramdisk_image }, { params.hdr.ramdisk_size });
        assert_eq!(rd_size, 10_000);
        assert_eq!(rd_addr % 4096, 0);
        assert!(u64::from(rd_addr) + 10_000 <= 64 << 20);
        assert_eq!(
            ram.memory
                .read_obj::<u8>(GuestAddress(u64::from(rd_addr)))
                .unwrap(),
            0x5A
        );
        // e820: low memory below the EBDA, then RAM from 1 MiB to the end.
        assert_eq!(params.e820_entries, 2);
        let e = params.e820_table;
        assert_eq!(
            ({ e[0].addr }, { e[0].size }, { e[0].r#type }),
            (0, 0x9FC00, 1)
        );
        assert_eq!(
            ({ e[1].addr }, { e[1].size }),
            (0x10_0000, (64 << 20) - 0x10_0000)
        );
        // The identity map's first PDE maps 2 MiB at 0 as a large page.
        assert_eq!(
            ram.memory.read_obj::<u64>(GuestAddress(0xB000)).unwrap(),
            0x83
        );
        assert_eq!(
            ram.memory.read_obj::<u64>(GuestAddress(0xB008)).unwrap(),
            0x20_0083
        );
    }

    #[test]
    fn rejects_overlong_cmdline_and_garbage_kernel() {
        let (map, ram) = guest(16 << 20);
        let long = "x".repeat(4096);
        let err =
            load_linux(&ram.memory, &map, Path::new("/dev/null"), None, &long, &[]).unwrap_err();
        assert!(matches!(err, LoadError::CmdlineTooLong { .. }));
        let junk = std::env::temp_dir().join(format!("umbra-junk-{}", std::process::id()));
        std::fs::write(&junk, vec![0u8; 8192]).unwrap();
        let err = load_linux(&ram.memory, &map, &junk, None, "", &[]).unwrap_err();
        std::fs::remove_file(&junk).unwrap();
        assert!(matches!(err, LoadError::Kernel { .. }));
    }
}
