//! OVMF-format firmware images: the footer GUID table and the SEV metadata.
//!
//! Any ROM image that ends with an OVMF footer table is accepted: edk2's OVMF,
//! Coconut-SVSM images and umbra's own firmware. Layout (reference doc §3):
//! the 18-byte footer entry `{u16 size, GUID}` sits 0x20 bytes before the end
//! of the image; the table before it is parsed backwards, each entry ending
//! with `{u16 size, GUID}` where `size` includes those 18 bytes.

use std::fmt;

/// Errors from parsing a firmware image.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OvmfError {
    /// The image is larger than 4 GiB or below its end address.
    #[error("firmware image of {size} bytes does not fit below GPA {end_gpa:#x}")]
    Place {
        /// Image size in bytes.
        size: usize,
        /// Address the image should end at.
        end_gpa: u64,
    },
    /// The footer table's size field points outside the image.
    #[error("OVMF footer table size {0} is out of bounds")]
    FooterTable(usize),
    /// A table entry is shorter than its header or longer than what is left.
    #[error("invalid OVMF footer table entry size {0}")]
    TableEntry(usize),
    /// An entry that must hold data is too short.
    #[error("OVMF table entry {guid} holds {len} bytes, expected at least {need}")]
    EntryData {
        /// GUID of the entry.
        guid: Guid,
        /// Bytes present.
        len: usize,
        /// Bytes required.
        need: usize,
    },
    /// The SEV metadata header is outside the image.
    #[error("SEV metadata offset {0:#x} is out of bounds")]
    MetadataOffset(u32),
    /// The SEV metadata header has no "ASEV" signature.
    #[error("Wrong SEV metadata signature")]
    MetadataSignature,
    /// The SEV metadata header has a version other than 1.
    #[error("Wrong SEV metadata version")]
    MetadataVersion,
    /// The descriptors overrun the header's length or the image.
    #[error("SEV metadata with {0} sections overruns its header")]
    MetadataSections(u32),
}

/// A GUID as stored in EFI byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its textual fields (`d1-d2-d3-d4[0..2]-d4[2..8]`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9]
        )?;
        for b in &g[10..] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `96b582de-1fb2-45f7-baea-a366c55a082d`: the footer entry of the table.
pub const TABLE_FOOTER_GUID: Guid = Guid::from_fields(
    0x96b5_82de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// `00f771de-1a7e-4fcb-890e-68c77e2fb44e`: SEV-ES reset block (u32 AP reset EIP).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::from_fields(
    0x00f7_71de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// `7255371f-3a3b-4b04-927b-1da6efa8d454`: SEV hash table (u32 GPA, u32 size).
pub const SEV_HASH_TABLE_GUID: Guid = Guid::from_fields(
    0x7255_371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);
/// `dc886566-984a-4798-a75e-5585a7bf67cc`: SEV metadata (u32 offset from the end).
pub const SEV_METADATA_GUID: Guid = Guid::from_fields(
    0xdc88_6566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// `4c2eb361-7d9b-4cc3-8081-127c90d3d294`: SEV secret block (u32 GPA, u32 size).
pub const SEV_SECRET_BLOCK_GUID: Guid = Guid::from_fields(
    0x4c2e_b361,
    0x7d9b,
    0x4cc3,
    [0x80, 0x81, 0x12, 0x7c, 0x90, 0xd3, 0xd2, 0x94],
);
/// `a789a612-0597-4c4b-a49f-cbb1fe9d1ddd`: SVSM info (u32 entry offset).
pub const SVSM_INFO_GUID: Guid = Guid::from_fields(
    0xa789_a612,
    0x0597,
    0x4c4b,
    [0xa4, 0x9f, 0xcb, 0xb1, 0xfe, 0x9d, 0x1d, 0xdd],
);

/// Types of SEV metadata sections (edk2 `OvmfSevMetadata.asm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionType {
    /// Pre-validated memory the firmware uses before it can validate (1).
    SnpSecMem,
    /// The SNP secrets page (2).
    SnpSecrets,
    /// The CPUID page (3).
    Cpuid,
    /// The SVSM calling area (4).
    SvsmCaa,
    /// The kernel/initrd/cmdline hash table page (0x10).
    SnpKernelHashes,
    /// Any other value.
    Unknown(u32),
}

impl SectionType {
    /// Decodes the raw descriptor type.
    pub fn from_raw(v: u32) -> Self {
        match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            other => SectionType::Unknown(other),
        }
    }
}

/// One SEV metadata section descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataSection {
    /// Guest-physical base address.
    pub gpa: u32,
    /// Length in bytes.
    pub size: u32,
    /// Section type.
    pub section_type: SectionType,
}

/// One footer table entry.
#[derive(Debug, Clone, Copy)]
pub struct TableEntry<'a> {
    /// The entry's GUID.
    pub guid: Guid,
    /// The entry's data (without the trailing size and GUID).
    pub data: &'a [u8],
}

/// A parsed OVMF-format firmware image, borrowed from its bytes.
#[derive(Debug, Clone)]
pub struct FirmwareImage<'a> {
    data: &'a [u8],
    size: usize,
    gpa: u64,
    table: Vec<TableEntry<'a>>,
    sections: Vec<MetadataSection>,
}

/// Where QEMU maps the end of the firmware: 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;
const ENTRY_HEADER: usize = 18;

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn guid_at(b: &[u8], at: usize) -> Option<Guid> {
    Some(Guid(b.get(at..at + 16)?.try_into().ok()?))
}

impl<'a> FirmwareImage<'a> {
    /// Parses an image mapped to end at 4 GiB (as QEMU maps OVMF).
    pub fn parse(data: &'a [u8]) -> Result<Self, OvmfError> {
        Self::parse_at(data, FOUR_GIB)
    }

    /// Parses an image mapped to end at `end_gpa` (SVSM images end below the
    /// firmware and its variable store).
    pub fn parse_at(data: &'a [u8], end_gpa: u64) -> Result<Self, OvmfError> {
        Self::parse_tail(data, data.len(), end_gpa)
    }

    /// Parses an image of `image_size` bytes from its last `tail.len()` bytes
    /// only: the footer table and the SEV metadata sit near the end, so a
    /// caller that hashes the pages while streaming the file (see
    /// [`MeasureInputs::firmware_page_digests`](super::MeasureInputs)) need
    /// not hold the whole image. Fails when the metadata lies outside `tail`.
    pub fn parse_tail(tail: &'a [u8], image_size: usize, end_gpa: u64) -> Result<Self, OvmfError> {
        let data = tail;
        let gpa = end_gpa
            .checked_sub(image_size as u64)
            .filter(|_| tail.len() <= image_size)
            .ok_or(OvmfError::Place {
                size: image_size,
                end_gpa,
            })?;
        let table = parse_footer_table(data)?;
        let mut image = FirmwareImage {
            data,
            size: image_size,
            gpa,
            table,
            sections: Vec::new(),
        };
        image.sections = image.parse_metadata()?;
        Ok(image)
    }

    /// The image bytes held: the whole image, or only its tail when parsed
    /// with [`FirmwareImage::parse_tail`].
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Whether [`FirmwareImage::data`] holds the whole image.
    pub fn is_complete(&self) -> bool {
        self.data.len() == self.size
    }

    /// Guest-physical address of the first byte of the image.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Image size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the image carries a footer GUID table.
    pub fn has_footer_table(&self) -> bool {
        !self.table.is_empty()
    }

    /// All footer table entries, in the order they were parsed (from the footer backwards).
    pub fn table_entries(&self) -> &[TableEntry<'a>] {
        &self.table
    }

    /// The data of the table entry with `guid` (the last one parsed wins, as in sev-snp-measure).
    pub fn table_entry(&self, guid: &Guid) -> Option<&'a [u8]> {
        self.table
            .iter()
            .rev()
            .find(|e| e.guid == *guid)
            .map(|e| e.data)
    }

    fn entry_u32(&self, guid: &Guid, at: usize) -> Result<Option<u32>, OvmfError> {
        match self.table_entry(guid) {
            None => Ok(None),
            Some(d) => le_u32(d, at).map(Some).ok_or(OvmfError::EntryData {
                guid: *guid,
                len: d.len(),
                need: at + 4,
            }),
        }
    }

    /// The SEV metadata sections in table order (empty without metadata).
    pub fn sections(&self) -> &[MetadataSection] {
        &self.sections
    }

    /// Whether a metadata section of type `t` exists.
    pub fn has_section(&self, t: SectionType) -> bool {
        self.sections.iter().any(|s| s.section_type == t)
    }

    /// The AP reset EIP from the SEV-ES reset block, if present.
    pub fn sev_es_reset_eip(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, 0)
    }

    /// GPA of the kernel-hashes table (SEV hash table entry), if present.
    pub fn hash_table_gpa(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SEV_HASH_TABLE_GUID, 0)
    }

    /// Size of the kernel-hashes area, if present.
    pub fn hash_table_size(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SEV_HASH_TABLE_GUID, 4)
    }

    /// Whether the image supports measured direct boot: a hash table entry with a nonzero GPA.
    pub fn supports_kernel_hashes(&self) -> Result<bool, OvmfError> {
        Ok(matches!(self.hash_table_gpa()?, Some(g) if g != 0))
    }

    /// The SEV secret block `(gpa, size)`, if present.
    pub fn secret_block(&self) -> Result<Option<(u32, u32)>, OvmfError> {
        match (
            self.entry_u32(&SEV_SECRET_BLOCK_GUID, 0)?,
            self.entry_u32(&SEV_SECRET_BLOCK_GUID, 4)?,
        ) {
            (Some(g), Some(s)) => Ok(Some((g, s))),
            _ => Ok(None),
        }
    }

    /// The SVSM entry offset from the SVSM info entry, if present.
    pub fn svsm_entry_offset(&self) -> Result<Option<u32>, OvmfError> {
        self.entry_u32(&SVSM_INFO_GUID, 0)
    }

    fn parse_metadata(&self) -> Result<Vec<MetadataSection>, OvmfError> {
        let Some(offset) = self.entry_u32(&SEV_METADATA_GUID, 0)? else {
            return Ok(Vec::new());
        };
        let data = self.data;
        let start = data
            .len()
            .checked_sub(offset as usize)
            .ok_or(OvmfError::MetadataOffset(offset))?;
        let hdr = data
            .get(start..start + 16)
            .ok_or(OvmfError::MetadataOffset(offset))?;
        if &hdr[0..4] != b"ASEV" {
            return Err(OvmfError::MetadataSignature);
        }
        let len = le_u32(hdr, 4).unwrap_or(0) as usize;
        if le_u32(hdr, 8) != Some(1) {
            return Err(OvmfError::MetadataVersion);
        }
        let count = le_u32(hdr, 12).unwrap_or(0);
        let descs_end = start
            .checked_add(len)
            .filter(|&e| e <= data.len())
            .ok_or(OvmfError::MetadataSections(count))?;
        let descs = data
            .get(start + 16..descs_end)
            .ok_or(OvmfError::MetadataSections(count))?;
        let need = (count as usize)
            .checked_mul(12)
            .filter(|&n| n <= descs.len())
            .ok_or(OvmfError::MetadataSections(count))?;
        Ok(descs[..need]
            .chunks_exact(12)
            .map(|d| MetadataSection {
                gpa: le_u32(d, 0).unwrap_or(0),
                size: le_u32(d, 4).unwrap_or(0),
                section_type: SectionType::from_raw(le_u32(d, 8).unwrap_or(0)),
            })
            .collect())
    }
}

fn parse_footer_table(data: &[u8]) -> Result<Vec<TableEntry<'_>>, OvmfError> {
    let mut entries = Vec::new();
    let Some(footer_start) = data.len().checked_sub(32 + ENTRY_HEADER) else {
        return Ok(entries);
    };
    if guid_at(data, footer_start + 2) != Some(TABLE_FOOTER_GUID) {
        return Ok(entries);
    }
    let total = le_u16(data, footer_start).unwrap_or(0) as usize;
    let Some(table_size) = total.checked_sub(ENTRY_HEADER) else {
        return Ok(entries);
    };
    let table_start = footer_start
        .checked_sub(table_size)
        .ok_or(OvmfError::FooterTable(total))?;
    let mut table = &data[table_start..footer_start];
    while table.len() >= ENTRY_HEADER {
        let hdr = table.len() - ENTRY_HEADER;
        let size = le_u16(table, hdr).unwrap_or(0) as usize;
        if size < ENTRY_HEADER || size > table.len() {
            return Err(OvmfError::TableEntry(size));
        }
        let guid = guid_at(table, hdr + 2).ok_or(OvmfError::TableEntry(size))?;
        let entry_start = table.len() - size;
        entries.push(TableEntry {
            guid,
            data: &table[entry_start..hdr],
        });
        table = &table[..entry_start];
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_matches_efi_byte_order() {
        assert_eq!(
            TABLE_FOOTER_GUID.to_string(),
            "96b582de-1fb2-45f7-baea-a366c55a082d"
        );
        // uuid.UUID("96b582de-...").bytes_le starts with de 82 b5 96 b2 1f f7 45.
        assert_eq!(
            &TABLE_FOOTER_GUID.0[..8],
            &[0xde, 0x82, 0xb5, 0x96, 0xb2, 0x1f, 0xf7, 0x45]
        );
    }

    #[test]
    fn image_without_footer_has_no_table() {
        let data = vec![0u8; 8192];
        let img = FirmwareImage::parse(&data).unwrap_or_else(|e| panic!("{e}"));
        assert!(!img.has_footer_table());
        assert_eq!(img.gpa(), (1 << 32) - 8192);
        assert_eq!(img.sev_es_reset_eip(), Ok(None));
    }

    #[test]
    fn truncated_table_is_an_error_not_a_panic() {
        let mut data = vec![0u8; 4096];
        let f = 4096 - 32 - 18;
        data[f..f + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        data[f + 2..f + 18].copy_from_slice(&TABLE_FOOTER_GUID.0);
        assert!(FirmwareImage::parse(&data).is_err());
        for n in [0, 1, 17, 18, 49, 50, 51] {
            let _ = FirmwareImage::parse(&data[..n.min(data.len())]);
        }
    }
}
