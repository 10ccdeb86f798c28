//! The umbra guest firmware image: boots from the reset vector, prints a
//! banner and runs the scenario named on its command line.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod entropy;
mod exceptions;
mod fw_cfg;
mod ghcb;
mod heap;
mod interrupts;
mod io;
mod iommu_scenarios;
mod kbs;
mod mem;
mod mmio;
mod paging;
mod platform;
mod scenarios;
mod snp;
mod vc;
mod virtio;
mod virtio_scenarios;
mod vsock;
mod vsock_scenario;

use core::sync::atomic::{AtomicU32, Ordering};
use umbra_firmware::boot_info::{BootInfo, CHECKIN_OFFSET};
use umbra_firmware::cmdline::{Cmdline, Scenario};
use umbra_firmware::footer;
use umbra_firmware::layout::{BOOT_INFO_GPA, ROM_BOOT_PAGE};
use virtio_scenarios::Target;

/// OVMF-compatible footer table; SEV-ES APs would start at the 16-bit entry.
#[used]
#[link_section = ".footer"]
static FOOTER: [u8; footer::FOOTER_BLOB_LEN] = footer::footer_blob(ROM_BOOT_PAGE as u32);

/// SEV metadata (`ASEV`) the footer table points at.
#[used]
#[link_section = ".sev_metadata"]
static SEV_METADATA: [u8; footer::SEV_METADATA_LEN] = footer::sev_metadata();

/// The heap allocator: a zero-sized value, kept in the ROM so that no
/// reference to it needs RIP-relative reach into the statics window.
#[global_allocator]
#[link_section = ".rodata.heap"]
static HEAP: heap::Heap = heap::Heap;

/// Exit code for a bad command line (unknown scenario, bad range).
pub const EXIT_BAD_CMDLINE: u32 = 2;
/// Exit code when a scenario's check failed.
pub const EXIT_FAILED: u32 = 1;

fn boot_info() -> &'static BootInfo {
    // SAFETY: the boot-information page is identity-mapped RAM at a fixed
    // address; the VMM wrote it before any vCPU ran (or it is zero under
    // another VMM, which `is_valid` detects). Only `checkin` changes later,
    // and only through the atomic in `checkin_counter`.
    unsafe { &*(BOOT_INFO_GPA as *const BootInfo) }
}

fn checkin_counter() -> &'static AtomicU32 {
    // SAFETY: the field is 4-byte aligned inside the identity-mapped boot
    // page; every access to it goes through this atomic.
    unsafe { &*((BOOT_INFO_GPA as usize + CHECKIN_OFFSET) as *const AtomicU32) }
}

/// Waits (bounded) until `expected` vCPUs checked in, i.e. every vCPU left
/// the boot code that writes the page tables.
fn wait_for_checkins(expected: u32) -> u32 {
    let mut seen = checkin_counter().load(Ordering::Acquire);
    for _ in 0..50_000_000u64 {
        seen = checkin_counter().load(Ordering::Acquire);
        if seen >= expected {
            break;
        }
        core::hint::spin_loop();
    }
    seen
}

/// Entered by every vCPU in 64-bit mode with the ticket of its stack slot.
#[no_mangle]
pub extern "C" fn firmware_main(ticket: u32) -> ! {
    // The IDT first: detection may raise #GP or #VC, and under SEV-ES so
    // does every port access afterwards.
    exceptions::install();
    let (platform, sev_status) = platform::detect();
    let bootstrap = platform::is_bootstrap(ticket);
    if bootstrap {
        mem::copy_initialised_statics();
    }
    checkin_counter().fetch_add(1, Ordering::AcqRel);
    if !bootstrap {
        io::halt();
    }
    let info = boot_info();
    if platform.is_snp() {
        // Every vCPU runs the boot code at once under the model: the page
        // tables change (C-bits of shared pages) only once all left it.
        if platform == platform::Platform::SnpModel && info.is_valid() {
            wait_for_checkins(info.vcpu_count);
        }
        // The GHCB before the first port access: the console is #VC.
        if ghcb::establish(&[]).is_err() {
            ghcb::terminate(ghcb::TERM_SET_UMBRA, ghcb::TERM_GHCB_SETUP);
        }
    }
    io::print("umbra firmware ");
    io::print(env!("CARGO_PKG_VERSION"));
    io::print(": booted in 64-bit mode on the bootstrap vCPU, platform ");
    io::print(platform.name());
    if platform.is_snp() {
        io::print(", SEV_STATUS ");
        io::print_hex(sev_status);
        io::print(", C-bit ");
        match platform::c_bit_mask() {
            0 => io::print("none"),
            mask => io::print_dec(u64::from(mask.trailing_zeros())),
        }
    }
    io::print("\n");
    // Under QEMU the boot-information page is zero: take fw_cfg's instead.
    let cmdline = Cmdline::new(if info.is_valid() {
        info.cmdline()
    } else {
        fw_cfg::cmdline()
    });
    let code = match cmdline.scenario() {
        Ok(Scenario::Hello) => scenarios::hello(),
        Ok(Scenario::RomWrite) => scenarios::rom_write(),
        Ok(Scenario::Flood) => scenarios::flood(&cmdline),
        Ok(Scenario::Guard) => scenarios::guard(info),
        Ok(Scenario::Smp) => scenarios::smp(info, checkin_counter()),
        Ok(Scenario::Memtest) => scenarios::memtest(info, &cmdline),
        Ok(Scenario::Attest) => snp::attest(&cmdline),
        Ok(Scenario::Psc) => snp::psc_scenario(),
        Ok(Scenario::PrivateRead) => snp::private_read(),
        Ok(Scenario::SerialIrq) => scenarios::serial_irq(),
        Ok(Scenario::SerialEcho) => scenarios::serial_echo(),
        Ok(Scenario::NoVc) => snp::no_vc(),
        Ok(Scenario::VirtioBlk) => virtio_scenarios::virtio_blk(&cmdline),
        Ok(Scenario::VirtioRng) => virtio_scenarios::virtio_rng(),
        Ok(Scenario::VsockEcho) => vsock_scenario::vsock_echo(),
        Ok(Scenario::Balloon) => virtio_scenarios::balloon(info, &cmdline),
        Ok(Scenario::IommuBlk) => iommu_scenarios::iommu_blk(),
        Ok(Scenario::IommuUnmapped) => iommu_scenarios::iommu_unmapped(),
        Ok(Scenario::IommuRo) => iommu_scenarios::iommu_ro(),
        Ok(Scenario::IommuUnmapRace) => iommu_scenarios::iommu_unmap_race(),
        Ok(Scenario::IommuDetached) => iommu_scenarios::iommu_detached(),
        Ok(Scenario::DmaPrivate) => virtio_scenarios::dma_refused(Target::Private, info),
        Ok(Scenario::DmaRom) => virtio_scenarios::dma_refused(Target::Rom, info),
        Ok(Scenario::DmaBeyond) => virtio_scenarios::dma_refused(Target::Beyond, info),
        Ok(Scenario::DmaUnmapped) => virtio_scenarios::dma_refused(Target::Unmapped, info),
        Ok(Scenario::Kbs) => kbs::kbs(&cmdline),
        Ok(Scenario::NoCbit) => snp::no_cbit(),
        Err(name) => {
            io::print("error: unknown scenario '");
            io::print(name);
            io::print("'\n");
            EXIT_BAD_CMDLINE
        }
    };
    io::exit(code)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    io::print("firmware panic");
    if let Some(location) = info.location() {
        io::print(" at ");
        io::print(location.file());
        io::print(":");
        io::print_dec(u64::from(location.line()));
    }
    io::print("\n");
    io::exit(0xFE)
}

/// Never called: the image aborts on panic, but the prebuilt `alloc` of
/// the host target was compiled with unwinding and its landing pads name
/// this symbol and the one below.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    io::exit(0xFD)
}

/// See [`_Unwind_Resume`].
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
