//! The SNP guest context launch digest (GCTX.LD).
//!
//! SNP ABI (AMD pub. 56860) §8.17: every page added with SNP_LAUNCH_UPDATE, and
//! every VMSA that KVM adds at LAUNCH_FINISH, extends the 48-byte launch digest
//! as `LD = SHA-384(PAGE_INFO)` where `PAGE_INFO.DIGEST_CUR` is the previous LD.

use zerocopy::{Immutable, IntoBytes, KnownLayout};

use super::sha::sha384;

/// Size of one guest page in bytes.
pub const PAGE_SIZE: usize = 4096;

/// Size of the launch digest in bytes (SHA-384).
pub const LD_SIZE: usize = 48;

/// GPA recorded for VMSA pages: `(u64)-1` page-aligned with bits above 51 cleared.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// Page types of SNP_LAUNCH_UPDATE (SNP ABI §8.17, PAGE_TYPE field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// Measured page with contents supplied by the VMM.
    Normal = 1,
    /// A vCPU save area, added by KVM at LAUNCH_FINISH.
    Vmsa = 2,
    /// A zero page (no source data).
    Zero = 3,
    /// An unmeasured page: its contents do not enter the digest.
    Unmeasured = 4,
    /// The secrets page, filled in by the firmware.
    Secrets = 5,
    /// The CPUID page, validated by the firmware.
    Cpuid = 6,
}

impl PageType {
    /// Whether the page contents enter the digest (NORMAL and VMSA pages).
    pub fn is_measured(self) -> bool {
        matches!(self, PageType::Normal | PageType::Vmsa)
    }
}

/// PAGE_INFO, the structure hashed for every launch update (SNP ABI §8.17, Table 67).
#[derive(Debug, Clone, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PageInfo {
    /// Launch digest before this update.
    pub digest_cur: [u8; LD_SIZE],
    /// SHA-384 of the page for NORMAL and VMSA pages, zero otherwise.
    pub contents: [u8; LD_SIZE],
    /// Length of this structure: 0x70.
    pub length: u16,
    /// Page type, see [`PageType`].
    pub page_type: u8,
    /// Bit 0: page is part of an incoming migration image.
    pub imi_page: u8,
    /// VMPL3 permissions (0 during launch).
    pub vmpl3_perms: u8,
    /// VMPL2 permissions (0 during launch).
    pub vmpl2_perms: u8,
    /// VMPL1 permissions (0 during launch).
    pub vmpl1_perms: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// Guest-physical address of the page.
    pub gpa: u64,
}

// SNP ABI 56860 §8.17 (Table 67): PAGE_INFO is 0x70 bytes.
const _: () = assert!(core::mem::size_of::<PageInfo>() == 0x70);

/// The running launch digest of one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchDigest {
    ld: [u8; LD_SIZE],
}

impl Default for LaunchDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl LaunchDigest {
    /// A fresh digest: 48 zero bytes.
    pub fn new() -> Self {
        Self { ld: [0; LD_SIZE] }
    }

    /// Resumes from a precomputed digest (e.g. sev-snp-measure's `--snp-ovmf-hash`).
    pub fn with_seed(seed: [u8; LD_SIZE]) -> Self {
        Self { ld: seed }
    }

    /// Adds one page. `contents` is required for measured types (NORMAL, VMSA)
    /// and ignored for the others; a measured page given as `None` is taken as
    /// a page of zeros.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: Option<&[u8; PAGE_SIZE]>) {
        let digest = if page_type.is_measured() {
            match contents {
                Some(page) => sha384(page),
                None => sha384(&[0u8; PAGE_SIZE]),
            }
        } else {
            [0; LD_SIZE]
        };
        self.update_with_digest(page_type, gpa, &digest);
    }

    /// Adds one page whose SHA-384 the caller already knows (zero for
    /// unmeasured types). Used to hash identical AP VMSA pages once.
    pub fn update_with_digest(&mut self, page_type: PageType, gpa: u64, digest: &[u8; LD_SIZE]) {
        let info = PageInfo {
            digest_cur: self.ld,
            contents: if page_type.is_measured() {
                *digest
            } else {
                [0; LD_SIZE]
            },
            length: 0x70,
            page_type: page_type as u8,
            imi_page: 0,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            reserved: 0,
            gpa,
        };
        self.ld = sha384(info.as_bytes());
    }

    /// Adds `len / 4096` consecutive pages of one unmeasured type starting at `gpa`.
    pub fn update_range(&mut self, page_type: PageType, gpa: u64, len: u64) {
        let zero = [0u8; LD_SIZE];
        let mut off = 0;
        while off < len {
            self.update_with_digest(page_type, gpa + off, &zero);
            off += PAGE_SIZE as u64;
        }
    }

    /// Adds `data` (a multiple of 4 KiB) as consecutive NORMAL pages from `gpa`.
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) {
        let mut addr = gpa;
        for page in data.chunks_exact(PAGE_SIZE) {
            let digest = sha384(page);
            self.update_with_digest(PageType::Normal, addr, &digest);
            addr += PAGE_SIZE as u64;
        }
    }

    /// The current launch digest.
    pub fn digest(&self) -> [u8; LD_SIZE] {
        self.ld
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_info_field_offsets() {
        let info = PageInfo {
            digest_cur: [0; 48],
            contents: [0; 48],
            length: 0x70,
            page_type: 6,
            imi_page: 0,
            vmpl3_perms: 0,
            vmpl2_perms: 0,
            vmpl1_perms: 0,
            reserved: 0,
            gpa: 0x1122_3344_5566_7788,
        };
        let b = info.as_bytes();
        // Offsets from SNP ABI §8.17 Table 67 (reference doc §1).
        assert_eq!(&b[0x60..0x62], &[0x70, 0x00]);
        assert_eq!(b[0x62], 6);
        assert_eq!(&b[0x68..0x70], &0x1122_3344_5566_7788u64.to_le_bytes());
    }
}
