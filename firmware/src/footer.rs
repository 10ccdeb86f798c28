//! The OVMF-compatible GUID footer table and SEV metadata the ROM carries.
//!
//! Layout as OVMF's `ResetVector` lays it out and as QEMU (`target/i386/sev.c`)
//! and sev-snp-measure (`ovmf.py`) parse it: the footer entry
//! `{u16 size, GUID 96b582de-…}` ends 0x20 bytes before the image end; the
//! entries before it are read backwards, each ending with `{u16 size, GUID}`
//! and preceded by its data. The SEV metadata header (`ASEV`, version 1, then
//! 12-byte `{u32 gpa, u32 len, u32 type}` descriptors) sits at
//! `image_end - offset`, the offset being the metadata entry's data.
//! See ../shared/docs/reference/snp-measurement.md §3.

use crate::layout;

/// Builds a GUID in EFI byte order (first three fields little-endian).
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: the table footer.
pub const FOOTER_GUID: [u8; 16] = guid(
    0x96b582de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `00f771de-1a7e-4fcb-890e-68c77e2fb44e`: SEV-ES AP reset block.
pub const SEV_ES_RESET_BLOCK_GUID: [u8; 16] = guid(
    0x00f771de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// `dc886566-984a-4798-a75e-5585a7bf67cc`: offset of the SEV metadata.
pub const SEV_METADATA_GUID: [u8; 16] = guid(
    0xdc886566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);

/// SEV metadata section types (OVMF `OvmfPkg/ResetVector`, QEMU `sev.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum SectionType {
    /// Pre-validated memory the firmware uses before it can validate pages.
    SnpSecMem = 1,
    /// The SNP secrets page.
    SnpSecrets = 2,
    /// The SNP CPUID page.
    Cpuid = 3,
}

/// One SEV metadata descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    /// Guest-physical base.
    pub gpa: u32,
    /// Length in bytes.
    pub len: u32,
    /// What the section holds.
    pub kind: SectionType,
}

/// The SEV metadata sections, in the order a launch adds them.
pub const SEV_SECTIONS: [Section; 5] = [
    Section {
        gpa: layout::PAGE_TABLES_GPA as u32,
        len: layout::PAGE_TABLES_SIZE as u32,
        kind: SectionType::SnpSecMem,
    },
    Section {
        gpa: layout::SECRETS_PAGE_GPA as u32,
        len: 0x1000,
        kind: SectionType::SnpSecrets,
    },
    Section {
        gpa: layout::CPUID_PAGE_GPA as u32,
        len: 0x1000,
        kind: SectionType::Cpuid,
    },
    Section {
        gpa: layout::BSS_GPA as u32,
        len: layout::BSS_SIZE as u32,
        kind: SectionType::SnpSecMem,
    },
    Section {
        gpa: (layout::STACKS_TOP - layout::MAX_VCPUS as u64 * layout::STACK_SIZE) as u32,
        len: (layout::MAX_VCPUS as u64 * layout::STACK_SIZE) as u32,
        kind: SectionType::SnpSecMem,
    },
];

/// Size of the metadata blob: 16-byte header plus 12 bytes per descriptor.
pub const SEV_METADATA_LEN: usize = 16 + 12 * SEV_SECTIONS.len();

/// The `ASEV` metadata blob placed at [`layout::SEV_METADATA_GPA`].
pub const fn sev_metadata() -> [u8; SEV_METADATA_LEN] {
    let mut out = [0u8; SEV_METADATA_LEN];
    put(&mut out, 0, b"ASEV");
    put(&mut out, 4, &(SEV_METADATA_LEN as u32).to_le_bytes());
    put(&mut out, 8, &1u32.to_le_bytes());
    put(&mut out, 12, &(SEV_SECTIONS.len() as u32).to_le_bytes());
    let mut i = 0;
    while i < SEV_SECTIONS.len() {
        let at = 16 + 12 * i;
        put(&mut out, at, &SEV_SECTIONS[i].gpa.to_le_bytes());
        put(&mut out, at + 4, &SEV_SECTIONS[i].len.to_le_bytes());
        put(
            &mut out,
            at + 8,
            &(SEV_SECTIONS[i].kind as u32).to_le_bytes(),
        );
        i += 1;
    }
    out
}

/// Bytes of the footer blob: from [`layout::FOOTER_GPA`] to `image_end - 0x20`.
pub const FOOTER_BLOB_LEN: usize = 0xE0;
const ENTRY_TRAILER: usize = 18;
const TABLE_LEN: usize = (4 + ENTRY_TRAILER) * 2 + ENTRY_TRAILER;

/// The footer blob. The table is right-aligned so that its footer entry ends
/// exactly at `image_end - 0x20`; the bytes before it are zero padding.
/// `ap_reset_eip` is where SEV-ES application processors start.
pub const fn footer_blob(ap_reset_eip: u32) -> [u8; FOOTER_BLOB_LEN] {
    let mut out = [0u8; FOOTER_BLOB_LEN];
    let mut at = FOOTER_BLOB_LEN - TABLE_LEN;
    // SEV-ES reset block: u32 AP reset EIP.
    put(&mut out, at, &ap_reset_eip.to_le_bytes());
    put(
        &mut out,
        at + 4,
        &((4 + ENTRY_TRAILER) as u16).to_le_bytes(),
    );
    put(&mut out, at + 6, &SEV_ES_RESET_BLOCK_GUID);
    at += 4 + ENTRY_TRAILER;
    // SEV metadata: u32 offset of the header from the image end.
    let offset = ((1u64 << 32) - layout::SEV_METADATA_GPA) as u32;
    put(&mut out, at, &offset.to_le_bytes());
    put(
        &mut out,
        at + 4,
        &((4 + ENTRY_TRAILER) as u16).to_le_bytes(),
    );
    put(&mut out, at + 6, &SEV_METADATA_GUID);
    at += 4 + ENTRY_TRAILER;
    // Footer: u16 size of the whole table including this entry.
    put(&mut out, at, &(TABLE_LEN as u16).to_le_bytes());
    put(&mut out, at + 2, &FOOTER_GUID);
    out
}

const fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    let mut i = 0;
    while i < bytes.len() {
        out[at + i] = bytes[i];
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a whole ROM image the way sev-snp-measure's `ovmf.py` does and
    /// returns (GUID, data) pairs.
    fn parse_table(image: &[u8]) -> Vec<([u8; 16], Vec<u8>)> {
        let footer_end = image.len() - 0x20;
        let footer = footer_end - ENTRY_TRAILER;
        assert_eq!(&image[footer + 2..footer_end], &FOOTER_GUID);
        let size = u16::from_le_bytes([image[footer], image[footer + 1]]) as usize;
        let table = &image[footer + ENTRY_TRAILER - size..footer];
        let mut entries = Vec::new();
        let mut end = table.len();
        while end > 0 {
            let guid: [u8; 16] = table[end - 16..end].try_into().unwrap();
            let len = u16::from_le_bytes([table[end - 18], table[end - 17]]) as usize;
            entries.push((guid, table[end - len..end - 18].to_vec()));
            end -= len;
        }
        entries
    }

    #[test]
    fn guid_bytes_match_efi_order() {
        // The footer GUID as it appears in OVMF.fd (uuid.bytes_le).
        assert_eq!(FOOTER_GUID[..4], [0xde, 0x82, 0xb5, 0x96]);
        assert_eq!(FOOTER_GUID[4..8], [0xb2, 0x1f, 0xf7, 0x45]);
        assert_eq!(
            FOOTER_GUID[8..],
            [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d]
        );
    }

    #[test]
    fn table_parses_like_ovmf() {
        let mut image = vec![0u8; layout::ROM_SIZE as usize];
        let blob_at = (layout::FOOTER_GPA - layout::ROM_BASE) as usize;
        image[blob_at..blob_at + FOOTER_BLOB_LEN].copy_from_slice(&footer_blob(0xFFFF_F000));
        let meta_at = (layout::SEV_METADATA_GPA - layout::ROM_BASE) as usize;
        image[meta_at..meta_at + SEV_METADATA_LEN].copy_from_slice(&sev_metadata());

        let entries = parse_table(&image);
        assert_eq!(entries.len(), 2);
        let reset = entries
            .iter()
            .find(|e| e.0 == SEV_ES_RESET_BLOCK_GUID)
            .unwrap();
        assert_eq!(reset.1, 0xFFFF_F000u32.to_le_bytes());
        let meta = entries.iter().find(|e| e.0 == SEV_METADATA_GUID).unwrap();
        let offset = u32::from_le_bytes(meta.1[..4].try_into().unwrap()) as usize;
        let header = &image[image.len() - offset..];
        assert_eq!(&header[..4], b"ASEV");
        assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 1);
        let count = u32::from_le_bytes(header[12..16].try_into().unwrap()) as usize;
        assert_eq!(count, 5);
        let secrets = &header[16 + 12..16 + 24];
        assert_eq!(
            u32::from_le_bytes(secrets[..4].try_into().unwrap()),
            0x18000
        );
        assert_eq!(u32::from_le_bytes(secrets[8..12].try_into().unwrap()), 2);
    }

    #[test]
    fn sections_are_page_aligned_and_disjoint() {
        let mut ranges: Vec<(u32, u32)> = SEV_SECTIONS
            .iter()
            .map(|s| (s.gpa, s.gpa + s.len))
            .collect();
        ranges.sort();
        for s in &ranges {
            assert_eq!(s.0 % 0x1000, 0);
            assert_eq!(s.1 % 0x1000, 0);
        }
        for pair in ranges.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        assert!(ranges.iter().all(|r| u64::from(r.1) <= layout::STACKS_TOP));
    }
}
