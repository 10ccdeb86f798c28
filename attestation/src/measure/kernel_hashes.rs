//! The kernel-hashes table of measured direct boot (QEMU `kernel-hashes=on`).
//!
//! Layout (reference doc §4): a header GUID and length, then three entries
//! `{GUID, u16 length, SHA-256}` for cmdline, initrd and kernel, padded to 16.

use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::gctx::PAGE_SIZE;
use super::ovmf::Guid;
use super::sha::sha256;

const TABLE_HEADER_GUID: Guid = Guid::from_fields(
    0x9438_d606,
    0x4f22,
    0x4cc9,
    [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
);
const CMDLINE_GUID: Guid = Guid::from_fields(
    0x97d0_2dd8,
    0xbd20,
    0x4c94,
    [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
);
const INITRD_GUID: Guid = Guid::from_fields(
    0x44ba_f731,
    0x3a2f,
    0x4bd7,
    [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
);
const KERNEL_GUID: Guid = Guid::from_fields(
    0x4de7_9437,
    0xabd2,
    0x427f,
    [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
);

/// One entry of the table.
#[derive(Debug, Clone, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct HashTableEntry {
    /// Entry GUID.
    pub guid: [u8; 16],
    /// Entry length: 50.
    pub length: u16,
    /// SHA-256 of the item.
    pub hash: [u8; 32],
}

/// The table as QEMU writes it, with padding to a multiple of 16 bytes.
#[derive(Debug, Clone, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PaddedHashTable {
    /// Header GUID.
    pub guid: [u8; 16],
    /// Table length without padding: 168.
    pub length: u16,
    /// Command line entry.
    pub cmdline: HashTableEntry,
    /// Initrd entry.
    pub initrd: HashTableEntry,
    /// Kernel entry.
    pub kernel: HashTableEntry,
    /// Zero padding.
    pub padding: [u8; 8],
}

const _: () = assert!(core::mem::size_of::<HashTableEntry>() == 50);
const _: () = assert!(core::mem::size_of::<PaddedHashTable>() == 176);

/// Hashes of the kernel, initrd and command line of a measured direct boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel file.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd (of nothing when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by one NUL.
    pub cmdline: [u8; 32],
}

impl KernelHashes {
    /// Hashes the inputs the way QEMU and sev-snp-measure do: the command line
    /// is used as given (not trimmed) plus a NUL; an absent or empty command
    /// line hashes as a single NUL.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let mut c = cmdline.unwrap_or("").as_bytes().to_vec();
        c.push(0);
        Self {
            kernel: sha256(kernel),
            initrd: sha256(initrd.unwrap_or(&[])),
            cmdline: sha256(&c),
        }
    }

    /// The padded table (176 bytes).
    pub fn table(&self) -> PaddedHashTable {
        let entry = |g: Guid, h: [u8; 32]| HashTableEntry {
            guid: g.0,
            length: 50,
            hash: h,
        };
        PaddedHashTable {
            guid: TABLE_HEADER_GUID.0,
            length: 168,
            cmdline: entry(CMDLINE_GUID, self.cmdline),
            initrd: entry(INITRD_GUID, self.initrd),
            kernel: entry(KERNEL_GUID, self.kernel),
            padding: [0; 8],
        }
    }

    /// The table bytes.
    pub fn table_bytes(&self) -> Vec<u8> {
        self.table().as_bytes().to_vec()
    }

    /// A 4 KiB page of zeros with the table at `offset` (the hash table GPA
    /// within its page); `None` when the table would not fit.
    pub fn page(&self, offset: usize) -> Option<Box<[u8; PAGE_SIZE]>> {
        let t = self.table();
        let bytes = t.as_bytes();
        let end = offset
            .checked_add(bytes.len())
            .filter(|&e| e <= PAGE_SIZE)?;
        let mut page = Box::new([0u8; PAGE_SIZE]);
        page[offset..end].copy_from_slice(bytes);
        Some(page)
    }
}
