//! umbra-firmware: the project's own guest firmware.
//!
//! This library half is `no_std` and host-testable. It holds everything the
//! guest image and the VMM must agree on — the guest-physical memory layout,
//! the boot-information page, the OVMF-compatible footer table with its SEV
//! metadata, the I/O ports — plus the guest's command-line parser. The image
//! itself (`src/image/`) is only built by the VMM's build script, with the
//! linker flags a bare-metal binary needs.
#![cfg_attr(not(test), no_std)]

pub mod boot_info;
pub mod cmdline;
pub mod footer;
pub mod guest_msg;
pub mod http;
pub mod insn;
pub mod layout;
