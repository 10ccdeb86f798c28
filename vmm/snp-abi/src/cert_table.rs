//! The certificate table a host attaches to an extended guest request
//! (GHCB spec 56421 §4.1.8 "SNP Extended Guest Request"; Linux
//! `struct cert_table` in drivers/virt/coco/sev-guest, configfs-tsm's
//! `auxblob`): entries of `{GUID (16), u32 offset, u32 length}` ending with
//! an all-zero entry, offsets from the start of the table. Built by the
//! VMM (the SNP model's host side), read by umbra-agent and the firmware.
//! The table comes from the untrusted host: every offset and length is
//! bounds-checked, and a malformed table is an error, never a panic.

/// Bytes of one table entry.
pub const ENTRY_SIZE: usize = 24;

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
    /// A GUID no umbra crate knows.
    Other([u8; 16]),
}

/// Why a table was refused or could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertTableError {
    /// The table ends before its terminating all-zero entry.
    FindTerminator,
    /// An entry points outside the table.
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
    /// The buffer cannot hold the table: `needed` bytes.
    WriteTable {
        /// Bytes the table takes.
        needed: usize,
    },
}

impl core::fmt::Display for CertTableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CertTableError::FindTerminator => {
                f.write_str("the certificate table has no terminating entry")
            }
            CertTableError::CheckBounds {
                index,
                offset,
                length,
                size,
            } => write!(
                f,
                "certificate entry {index} ({offset:#x}+{length:#x}) lies outside the {size}-byte table"
            ),
            CertTableError::WriteTable { needed } => {
                write!(f, "the certificate table needs {needed} bytes")
            }
        }
    }
}

impl core::error::Error for CertTableError {}

/// A GUID in RFC 4122 byte order (the string's hex digits in order), as
/// the kernel (`guid_t` filled from UUID strings), virtee/sev and
/// go-sev-guest store it in the table: a real configfs-tsm capture carries
/// 63da758d-... as the bytes 63 da 75 8d.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes());
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// GUIDs of the known kinds (GHCB spec, extended guest request).
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

/// The wire GUID of a kind.
pub fn guid_of(kind: CertKind) -> [u8; 16] {
    match kind {
        CertKind::Other(id) => id,
        known => GUIDS
            .iter()
            .find(|(_, k)| *k == known)
            .map_or([0; 16], |(g, _)| *g),
    }
}

fn kind_of(id: [u8; 16]) -> CertKind {
    GUIDS
        .iter()
        .find(|(g, _)| *g == id)
        .map_or(CertKind::Other(id), |(_, k)| *k)
}

/// The entries of `table`, in order, each `(kind, bytes)` or the error that
/// ends the walk. An empty table (a host that supplies no certificates)
/// holds none; it is not malformed.
pub fn entries(table: &[u8]) -> Entries<'_> {
    Entries {
        table,
        index: 0,
        done: table.is_empty(),
    }
}

/// Iterator of [`entries`].
#[derive(Debug)]
pub struct Entries<'a> {
    table: &'a [u8],
    index: usize,
    done: bool,
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(CertKind, &'a [u8]), CertTableError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let at = self.index * ENTRY_SIZE;
        let Some(entry) = self.table.get(at..at + ENTRY_SIZE) else {
            self.done = true;
            return Some(Err(CertTableError::FindTerminator));
        };
        if entry.iter().all(|&b| b == 0) {
            self.done = true;
            return None;
        }
        let index = self.index;
        self.index += 1;
        let mut id = [0u8; 16];
        id.copy_from_slice(&entry[..16]);
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
        let length = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]);
        let bad = CertTableError::CheckBounds {
            index,
            offset,
            length,
            size: self.table.len(),
        };
        let bytes = (offset as usize)
            .checked_add(length as usize)
            .and_then(|end| self.table.get(offset as usize..end));
        match bytes {
            Some(bytes) => Some(Ok((kind_of(id), bytes))),
            None => {
                self.done = true;
                Some(Err(bad))
            }
        }
    }
}

/// Bytes the table for `certs` takes: the entries, the terminator, the data.
pub fn table_len(certs: &[(CertKind, &[u8])]) -> usize {
    (certs.len() + 1) * ENTRY_SIZE + certs.iter().map(|(_, d)| d.len()).sum::<usize>()
}

/// Writes the table for `certs` to the start of `out`; returns its length.
pub fn write(certs: &[(CertKind, &[u8])], out: &mut [u8]) -> Result<usize, CertTableError> {
    let needed = table_len(certs);
    if out.len() < needed || needed > u32::MAX as usize {
        return Err(CertTableError::WriteTable { needed });
    }
    let mut data_at = (certs.len() + 1) * ENTRY_SIZE;
    out[..data_at].fill(0);
    for (i, (kind, data)) in certs.iter().enumerate() {
        let at = i * ENTRY_SIZE;
        out[at..at + 16].copy_from_slice(&guid_of(*kind));
        out[at + 16..at + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
        out[at + 20..at + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        out[data_at..data_at + data.len()].copy_from_slice(data);
        data_at += data.len();
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn table(certs: &[(CertKind, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; table_len(certs)];
        write(certs, &mut out).unwrap();
        out
    }

    fn parse(t: &[u8]) -> Result<Vec<(CertKind, &[u8])>, CertTableError> {
        entries(t).collect()
    }

    #[test]
    fn vcek_guid_matches_the_ghcb_spec_bytes() {
        // 63da758d-e664-4564-adc5-f4b93be8accd in RFC 4122 byte order.
        assert_eq!(
            guid_of(CertKind::Vcek),
            [
                0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
                0xac, 0xcd
            ]
        );
    }

    #[test]
    fn an_empty_table_holds_no_certificates() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&[0u8; 24]), Ok(vec![]));
    }

    #[test]
    fn written_tables_read_back() {
        let certs: [(CertKind, &[u8]); 3] = [
            (CertKind::Vcek, b"vcek-bytes"),
            (CertKind::Ask, b"ask"),
            (CertKind::Other([7; 16]), b"?"),
        ];
        assert_eq!(parse(&table(&certs)).unwrap(), certs.to_vec());
        let mut small = [0u8; 40];
        assert_eq!(
            write(&certs, &mut small),
            Err(CertTableError::WriteTable {
                needed: table_len(&certs)
            })
        );
    }

    #[test]
    fn refuses_hostile_tables() {
        // One in-bounds entry and no terminating entry.
        let mut t = vec![0u8; ENTRY_SIZE];
        t[..16].copy_from_slice(&guid_of(CertKind::Vcek));
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
