//! The umbra guest firmware image: boots from the reset vector, prints a
//! banner and runs the scenario named on its command line.
#![no_std]
#![no_main]

mod boot;
mod fw_cfg;
mod ghcb;
mod interrupts;
mod io;
mod mem;
mod platform;
mod scenarios;
mod snp;

use core::sync::atomic::{AtomicU32, Ordering};
use umbra_firmware::boot_info::{BootInfo, CHECKIN_OFFSET};
use umbra_firmware::cmdline::{Cmdline, Scenario};
use umbra_firmware::footer;
use umbra_firmware::layout::{BOOT_INFO_GPA, ROM_BOOT_PAGE};

/// OVMF-compatible footer table; SEV-ES APs would start at the 16-bit entry.
#[used]
#[link_section = ".footer"]
static FOOTER: [u8; footer::FOOTER_BLOB_LEN] = footer::footer_blob(ROM_BOOT_PAGE as u32);

/// SEV metadata (`ASEV`) the footer table points at.
#[used]
#[link_section = ".sev_metadata"]
static SEV_METADATA: [u8; footer::SEV_METADATA_LEN] = footer::sev_metadata();

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

/// Entered by every vCPU in 64-bit mode with its initial APIC ID.
#[no_mangle]
pub extern "C" fn firmware_main(apic_id: u32) -> ! {
    checkin_counter().fetch_add(1, Ordering::AcqRel);
    if apic_id != 0 {
        io::halt();
    }
    let info = boot_info();
    let (platform, sev_status) = platform::detect();
    io::print("umbra firmware ");
    io::print(env!("CARGO_PKG_VERSION"));
    io::print(": booted in 64-bit mode on the bootstrap vCPU, platform ");
    io::print(platform.name());
    if platform != platform::Platform::Plain {
        io::print(", SEV_STATUS ");
        io::print_hex(sev_status);
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
        Ok(Scenario::Guard) => scenarios::guard(info),
        Ok(Scenario::Smp) => scenarios::smp(info, checkin_counter()),
        Ok(Scenario::Memtest) => scenarios::memtest(info, &cmdline),
        Ok(Scenario::Attest) => snp::attest(&cmdline),
        Ok(Scenario::Psc) => snp::psc_scenario(),
        Ok(Scenario::PrivateRead) => snp::private_read(),
        Ok(Scenario::SerialIrq) => scenarios::serial_irq(),
        Ok(Scenario::SerialEcho) => scenarios::serial_echo(),
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
