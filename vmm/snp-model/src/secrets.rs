//! The secrets page the firmware writes at SNP_LAUNCH_UPDATE (page type
//! SECRETS).
//!
//! Layout: SNP ABI 56860 §8.17.2 "Secrets Page Format" (table "SECRETS_PAGE"),
//! guest OS area per GHCB spec 56421 §2.7; reference note
//! `ghcb-and-guest-messages.md` §4. Cross-checked with Linux
//! `struct snp_secrets_page` and Oak `secrets.rs`.

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The secrets-page format the model writes. Oak requires at least 2; the
/// exact firmware release that moved to 3 is not recorded (reference note
/// "unconfirmed" item 11), 3 matches the TSC_FACTOR field being present.
pub const SECRETS_VERSION: u32 = 3;

/// Bytes in a VMPCK.
pub const VMPCK_LEN: usize = 32;

/// SECRETS_PAGE (SNP ABI 56860 §8.17.2), 4096 bytes.
#[derive(Clone, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SecretsPage {
    /// Format version.
    pub version: u32,
    /// Bit 0: launched from an incoming migration image.
    pub imi_en: u32,
    /// CPUID Fn0000_0001 EAX of the platform.
    pub fms: u32,
    /// Reserved.
    pub reserved0: u32,
    /// Guest-OS-visible workarounds from SNP_LAUNCH_START.
    pub gosvw: [u8; 16],
    /// VMPCK0..VMPCK3: the AES-256-GCM keys of guest messages, one per VMPL.
    pub vmpck: [[u8; VMPCK_LEN]; 4],
    /// Guest OS area (GHCB spec): the firmware leaves it zero.
    pub os_area: [u8; 96],
    /// VMSA tweak bitmap (VMSA register protection only).
    pub vmsa_tweak_bitmap: [u8; 64],
    /// SVSM area, written by an SVSM; zero otherwise.
    pub svsm_area: [u8; 32],
    /// Mean-TSC correction factor.
    pub tsc_factor: u32,
    /// Reserved.
    pub reserved1: u32,
    /// Launch mitigation vector (newer firmware).
    pub launch_mit_vector: u64,
    /// Reserved to the end of the page.
    pub reserved2: [u8; 0xE90],
}

// SNP ABI 56860 §8.17.2: one 4 KiB page; offsets from the SECRETS_PAGE table.
const _: () = assert!(core::mem::size_of::<SecretsPage>() == 4096);
const _: () = assert!(core::mem::offset_of!(SecretsPage, gosvw) == 0x10);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmpck) == 0x20);
const _: () = assert!(core::mem::offset_of!(SecretsPage, os_area) == 0xA0);
const _: () = assert!(core::mem::offset_of!(SecretsPage, vmsa_tweak_bitmap) == 0x100);
const _: () = assert!(core::mem::offset_of!(SecretsPage, svsm_area) == 0x140);
const _: () = assert!(core::mem::offset_of!(SecretsPage, tsc_factor) == 0x160);
const _: () = assert!(core::mem::offset_of!(SecretsPage, launch_mit_vector) == 0x168);

impl SecretsPage {
    /// The page the model writes: version, FMS, GOSVW and the four VMPCKs;
    /// everything else zero.
    pub fn new(fms: u32, gosvw: [u8; 16], vmpck: [[u8; VMPCK_LEN]; 4]) -> Self {
        let mut page = SecretsPage::new_zeroed();
        page.version = SECRETS_VERSION;
        page.fms = fms;
        page.gosvw = gosvw;
        page.vmpck = vmpck;
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_abi_offsets() {
        let mut vmpck = [[0u8; 32]; 4];
        for (i, k) in vmpck.iter_mut().enumerate() {
            *k = [i as u8 + 1; 32];
        }
        let p = SecretsPage::new(0x00A0_0F11, [0xAB; 16], vmpck);
        let b = p.as_bytes();
        assert_eq!(&b[0x08..0x0C], &0x00A0_0F11u32.to_le_bytes());
        assert_eq!(b[0x10], 0xAB);
        // VMPCK0..3 at 0x20, 0x40, 0x60, 0x80 (reference note §4).
        for (i, off) in [0x20, 0x40, 0x60, 0x80].into_iter().enumerate() {
            assert_eq!(&b[off..off + 32], &[i as u8 + 1; 32]);
        }
        assert!(b[0xA0..].iter().all(|&x| x == 0));
    }
}
