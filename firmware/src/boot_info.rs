//! The boot-information page: how the VMM tells the firmware its command
//! line, its vCPU count and its memory map.
//!
//! The VMM writes one [`BootInfo`] at [`crate::layout::BOOT_INFO_GPA`] before
//! the first vCPU runs. Under another VMM (QEMU `-bios`) the page is zero, the
//! magic does not match and the firmware falls back to its defaults.

/// "UMBRABI1" as a little-endian u64.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"UMBRABI1");
/// Layout version of [`BootInfo`].
pub const BOOT_INFO_VERSION: u32 = 1;
/// Bytes available for the command line.
pub const CMDLINE_CAPACITY: usize = 4096 - 64;

/// The boot-information page (project-defined wire format, one 4 KiB page).
#[repr(C)]
#[derive(Clone)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// Number of vCPUs the VMM started.
    pub vcpu_count: u32,
    /// Bytes of RAM starting at guest-physical 0.
    pub ram_size: u64,
    /// Base of a guard range: never backed, every access is a violation.
    pub guard_gpa: u64,
    /// Size of that guard range (0: none).
    pub guard_size: u64,
    /// vCPUs increment this when they reach 64-bit code (the `smp` scenario).
    pub checkin: u32,
    /// Length of the command line in `cmdline`.
    pub cmdline_len: u32,
    /// Reserved, zero.
    pub reserved: [u64; 2],
    /// Command line bytes (not NUL-terminated).
    pub cmdline: [u8; CMDLINE_CAPACITY],
}

const _: () = assert!(core::mem::size_of::<BootInfo>() == 4096);
/// Byte offset of [`BootInfo::checkin`] (the firmware updates it atomically).
pub const CHECKIN_OFFSET: usize = 40;
const _: () = assert!(core::mem::offset_of!(BootInfo, checkin) == CHECKIN_OFFSET);

impl BootInfo {
    /// A boot-information page for the given machine and command line.
    /// Returns `None` when the command line does not fit.
    pub fn new(vcpu_count: u32, ram_size: u64, guard: (u64, u64), cmdline: &str) -> Option<Self> {
        let bytes = cmdline.as_bytes();
        if bytes.len() > CMDLINE_CAPACITY {
            return None;
        }
        let mut info = BootInfo {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            vcpu_count,
            ram_size,
            guard_gpa: guard.0,
            guard_size: guard.1,
            checkin: 0,
            cmdline_len: bytes.len() as u32,
            reserved: [0; 2],
            cmdline: [0; CMDLINE_CAPACITY],
        };
        info.cmdline[..bytes.len()].copy_from_slice(bytes);
        Some(info)
    }

    /// Whether the page was written by umbra (and not left zero by another VMM).
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC
            && self.version == BOOT_INFO_VERSION
            && self.cmdline_len as usize <= CMDLINE_CAPACITY
    }

    /// The command line; empty when the page is not valid or not UTF-8.
    pub fn cmdline(&self) -> &str {
        if !self.is_valid() {
            return "";
        }
        core::str::from_utf8(&self.cmdline[..self.cmdline_len as usize]).unwrap_or("")
    }

    /// The page as bytes, to copy into guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: BootInfo is repr(C), made only of integers and byte arrays
        // with no padding (4096 bytes, asserted above), so every byte is
        // initialised and the slice covers exactly the struct.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_command_line_and_fields() {
        let info = BootInfo::new(4, 1 << 30, (0xE000_0000, 0x1000), "scenario=smp").unwrap();
        assert!(info.is_valid());
        assert_eq!(info.cmdline(), "scenario=smp");
        let bytes = info.as_bytes();
        assert_eq!(&bytes[0..8], b"UMBRABI1");
        assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 4);
        assert_eq!(
            u64::from_le_bytes(bytes[16..24].try_into().unwrap()),
            1 << 30
        );
        assert_eq!(&bytes[64..76], b"scenario=smp");
    }

    #[test]
    fn rejects_oversized_command_line() {
        let long = "x".repeat(CMDLINE_CAPACITY + 1);
        assert!(BootInfo::new(1, 1 << 20, (0, 0), &long).is_none());
    }

    #[test]
    fn zero_page_is_not_valid() {
        let mut info = BootInfo::new(1, 1 << 20, (0, 0), "scenario=guard").unwrap();
        info.magic = 0;
        assert!(!info.is_valid());
        assert_eq!(info.cmdline(), "");
    }
}
