//! The certificate table a host may attach to an extended report (configfs-tsm
//! `auxblob`, GHCB spec "SNP Extended Guest Request"): entries of
//! `{GUID (16), u32 offset, u32 length}` ending with an all-zero entry,
//! offsets relative to the start of the table. The table comes from the
//! untrusted host: every offset and length is bounds-checked, and a
//! malformed table is an error, never a panic.

use thiserror::Error;

/// Why a certificate table was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CertTableError {
    /// The table ends before its terminating all-zero entry.
    #[error("the certificate table has no terminating entry")]
    FindTerminator,
    /// An entry points outside the table.
    #[error(
        "certificate entry {index} ({offset:#x}+{length:#x}) lies outside the {size}-byte table"
    )]
    CheckBounds {
        /// Entry index.
        index: usize,
        /// Offset it names.
        offset: u32,
        /// Length it names.
        length: u32,
        /// Table size.
        size: usize,
    },
}

/// What a certificate in the table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertKind {
    /// AMD Root Key.
    Ark,
    /// AMD SEV Key (signs VCEKs).
    Ask,
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// AMD's certificate revocation list.
    Crl,
    /// A GUID this agent does not know.
    Other([u8; 16]),
}

impl CertKind {
    /// File name under which `umbra-attest verify --certs DIR` finds it.
    pub fn file_name(self) -> Option<&'static str> {
        match self {
            CertKind::Ark => Some("ark.der"),
            CertKind::Ask => Some("ask.der"),
            CertKind::Vcek => Some("vcek.der"),
            CertKind::Vlek => Some("vlek.der"),
            CertKind::Crl => Some("crl.der"),
            CertKind::Other(_) => None,
        }
    }
}

/// GUIDs in their byte order on the wire (GHCB spec, extended guest request).
const GUIDS: [([u8; 16], CertKind); 5] = [
    (
        guid(
            0xc0b406a4,
            0xa803,
            0x4952,
            [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
        ),
        CertKind::Ark,
    ),
    (
        guid(
            0x4ab7b379,
            0xbbac,
            0x4fe4,
            [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
        ),
        CertKind::Ask,
    ),
    (
        guid(
            0x63da758d,
            0xe664,
            0x4564,
            [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
        ),
        CertKind::Vcek,
    ),
    (
        guid(
            0xa8074bc2,
            0xa25a,
            0x483e,
            [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1],
        ),
        CertKind::Vlek,
    ),
    (
        guid(
            0x92f81bc3,
            0x5811,
            0x4d3d,
            [0x97, 0xff, 0xd1, 0x9f, 0x88, 0xdc, 0x67, 0xea],
        ),
        CertKind::Crl,
    ),
];

/// A GUID in RFC 4122 byte order (the string's hex digits in order), as
/// the kernel (`guid_t` filled by `guid_parse`/UUID strings), virtee/sev
/// and go-sev-guest store it in the table: a real configfs-tsm capture
/// carries 63da758d-... as the bytes 63 da 75 8d.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes());
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The wire GUID of a kind (for building tables in tests and tools).
pub fn guid_of(kind: CertKind) -> Option<[u8; 16]> {
    GUIDS.iter().find(|(_, k)| *k == kind).map(|(g, _)| *g)
}

const ENTRY: usize = 24;

/// Parses a table into `(kind, certificate bytes)` pairs. An empty table
/// (a host that supplies no certificates, the normal case without an
/// extended report) holds no certificates; it is not malformed.
pub fn parse(table: &[u8]) -> Result<Vec<(CertKind, &[u8])>, CertTableError> {
    let mut out = Vec::new();
    if table.is_empty() {
        return Ok(out);
    }
    for (index, entry) in table.chunks(ENTRY).enumerate() {
        if entry.len() < ENTRY {
            break;
        }
        if entry.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&entry[..16]);
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
        let length = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]);
        let bad = CertTableError::CheckBounds {
            index,
            offset,
            length,
            size: table.len(),
        };
        let start = offset as usize;
        let end = start
            .checked_add(length as usize)
            .ok_or_else(|| bad.clone())?;
        let bytes = table.get(start..end).ok_or(bad)?;
        let kind = GUIDS
            .iter()
            .find(|(g, _)| *g == id)
            .map_or(CertKind::Other(id), |(_, k)| *k);
        out.push((kind, bytes));
    }
    Err(CertTableError::FindTerminator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(CertKind, &[u8])]) -> Vec<u8> {
        let header = (entries.len() + 1) * ENTRY;
        let mut out = vec![0u8; header];
        for (i, (kind, data)) in entries.iter().enumerate() {
            let at = i * ENTRY;
            out[at..at + 16].copy_from_slice(&guid_of(*kind).unwrap());
            let offset = out.len() as u32;
            out[at + 16..at + 20].copy_from_slice(&offset.to_le_bytes());
            out[at + 20..at + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }

    #[test]
    fn vcek_guid_matches_the_ghcb_spec_bytes() {
        // 63da758d-e664-4564-adc5-f4b93be8accd in RFC 4122 byte order.
        assert_eq!(
            guid_of(CertKind::Vcek).unwrap()[..8],
            [0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64]
        );
        assert_eq!(
            guid_of(CertKind::Vcek).unwrap()[8..],
            [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]
        );
    }

    #[test]
    fn an_empty_table_holds_no_certificates() {
        assert_eq!(parse(&[]), Ok(vec![]));
    }

    #[test]
    fn parses_a_well_formed_table() {
        let t = table(&[(CertKind::Vcek, b"vcek-bytes"), (CertKind::Ask, b"ask")]);
        let parsed = parse(&t).unwrap();
        assert_eq!(
            parsed,
            vec![
                (CertKind::Vcek, &b"vcek-bytes"[..]),
                (CertKind::Ask, &b"ask"[..])
            ]
        );
        assert_eq!(parse(&[0u8; 24]).unwrap(), vec![]);
    }

    #[test]
    fn refuses_hostile_tables() {
        // One in-bounds entry and no terminating entry.
        let mut t = vec![0u8; ENTRY];
        t[..16].copy_from_slice(&guid_of(CertKind::Vcek).unwrap());
        assert_eq!(parse(&t), Err(CertTableError::FindTerminator));
        let mut t = table(&[(CertKind::Vcek, b"vcek")]);
        t[20..24].copy_from_slice(&0x1000u32.to_le_bytes()); // runs past the end
        assert!(matches!(
            parse(&t),
            Err(CertTableError::CheckBounds { index: 0, .. })
        ));
        let mut t = table(&[(CertKind::Vcek, b"vcek")]);
        t[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        t[20..24].copy_from_slice(&u32::MAX.to_le_bytes()); // wraps
        assert!(matches!(parse(&t), Err(CertTableError::CheckBounds { .. })));
    }
}
