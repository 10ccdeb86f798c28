//! virtio-blk (virtio 1.2 §5.2) on a raw image file: read, write, flush,
//! get-id, discard and write-zeroes; read-only images refuse writes with
//! IOERR (and offer VIRTIO_BLK_F_RO); `direct=on` opens the file with
//! O_DIRECT and copies through a block-aligned bounce buffer.

use super::chain::{last_byte, Buffers, ChainError, Cursor};
use super::{DeviceIo, VirtioDevice};
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use virtio_queue::Queue;

/// Sector size of the request protocol.
const SECTOR: u64 = 512;
/// Device ID (§5.2.1).
const DEVICE_ID: u32 = 2;

/// Feature bits (§5.2.3).
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_DISCARD: u64 = 1 << 13;
const F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types (§5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const T_DISCARD: u32 = 11;
const T_WRITE_ZEROES: u32 = 13;

/// Status values (§5.2.6).
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;

/// Longest serial string GET_ID returns (§5.2.6: 20 bytes, no NUL if full).
const ID_LEN: usize = 20;
/// Most segments per request the device accepts (config `seg_max`).
const SEG_MAX: u32 = 128;
/// Most sectors one discard or write-zeroes segment may cover.
const MAX_ZERO_SECTORS: u32 = 1 << 16;
/// The bounce buffer: the most bytes moved per copy.
const BOUNCE: usize = 64 << 10;
/// O_DIRECT's alignment for the buffer, the offset and the length.
const DIRECT_ALIGN: usize = 4096;

/// Why a disk could not be opened.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The image could not be opened.
    #[error("cannot open disk image {path}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The image's size is not whole sectors.
    #[error("disk image {path} is {size} bytes, not a multiple of 512")]
    CheckSize {
        /// The image.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
}

/// Why one request failed (the guest sees IOERR or UNSUPP).
#[derive(Debug, Error)]
enum RequestError {
    #[error("cannot serve the descriptor chain")]
    Chain(#[from] ChainError),
    #[error("sector {sector} + {len} bytes is past the end of the disk")]
    CheckBounds { sector: u64, len: u64 },
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("request type {0} is not supported")]
    Unsupported(u32),
    #[error("disk I/O failed")]
    Io(#[from] std::io::Error),
}

/// A virtio-blk device.
pub(crate) struct Block {
    file: File,
    capacity: u64,
    read_only: bool,
    id: [u8; ID_LEN],
    bounce: Vec<u8>,
}

impl Block {
    /// Opens `path` (`read_only`, `direct` as the `--disk` options say).
    pub(crate) fn open(path: &Path, read_only: bool, direct: bool) -> Result<Self, BlockError> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(!read_only);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        let open_error = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = options.open(path).map_err(open_error)?;
        let size = file.metadata().map_err(open_error)?.len();
        if size % SECTOR != 0 {
            return Err(BlockError::CheckSize {
                path: path.to_path_buf(),
                size,
            });
        }
        let mut id = [0u8; ID_LEN];
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (slot, byte) in id.iter_mut().zip(name.bytes()) {
            *slot = byte;
        }
        Ok(Block {
            file,
            capacity: size / SECTOR,
            read_only,
            id,
            bounce: vec![0; BOUNCE + DIRECT_ALIGN],
        })
    }

    fn check_bounds(&self, sector: u64, len: u64) -> Result<u64, RequestError> {
        let bad = RequestError::CheckBounds { sector, len };
        let Some(offset) = sector.checked_mul(SECTOR) else {
            return Err(bad);
        };
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity * SECTOR && len.is_multiple_of(SECTOR) => Ok(offset),
            _ => Err(bad),
        }
    }

    /// Serves one request; returns the bytes it moved.
    fn serve(
        &mut self,
        io: &DeviceIo<'_>,
        buffers: &Buffers,
        data_out: &mut Cursor<'_>,
        data_in: &mut Cursor<'_>,
    ) -> Result<u64, RequestError> {
        let mut header = [0u8; 16];
        data_out.read(io.memory, &mut header)?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or([0; 8]));
        match kind {
            T_IN => {
                // The status byte is the last writable byte, not data.
                let len = buffers.writable_len().saturating_sub(1);
                let mut offset = self.check_bounds(sector, len)?;
                let mut left = len;
                while left > 0 {
                    let take = left.min(BOUNCE as u64) as usize;
                    let chunk = aligned(&mut self.bounce, take);
                    self.file.read_exact_at(chunk, offset)?;
                    data_in.write(io.memory, chunk)?;
                    offset += take as u64;
                    left -= take as u64;
                }
                Ok(len)
            }
            T_OUT => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let len = data_out.remaining();
                let mut offset = self.check_bounds(sector, len)?;
                let mut left = len;
                while left > 0 {
                    let take = left.min(BOUNCE as u64) as usize;
                    let chunk = aligned(&mut self.bounce, take);
                    data_out.read(io.memory, chunk)?;
                    self.file.write_all_at(chunk, offset)?;
                    offset += take as u64;
                    left -= take as u64;
                }
                Ok(len)
            }
            T_FLUSH => {
                if !self.read_only {
                    self.file.sync_data()?;
                }
                Ok(0)
            }
            T_GET_ID => {
                let id = self.id;
                let len = (data_in.remaining().saturating_sub(1)).min(ID_LEN as u64) as usize;
                data_in.write(io.memory, &id[..len])?;
                Ok(len as u64)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                if self.read_only {
                    return Err(RequestError::ReadOnly);
                }
                let mut moved = 0;
                while data_out.remaining() >= 16 {
                    let mut segment = [0u8; 16];
                    data_out.read(io.memory, &mut segment)?;
                    let first = u64::from_le_bytes(segment[..8].try_into().unwrap_or([0; 8]));
                    let count = u32::from_le_bytes(segment[8..12].try_into().unwrap_or([0; 4]));
                    if count > MAX_ZERO_SECTORS {
                        return Err(RequestError::CheckBounds {
                            sector: first,
                            len: u64::from(count) * SECTOR,
                        });
                    }
                    let len = u64::from(count) * SECTOR;
                    let offset = self.check_bounds(first, len)?;
                    // Both leave zeroes behind: discard as a hint that the
                    // host may free the blocks, write-zeroes as a promise.
                    zero_range(&self.file, offset, len)?;
                    moved += len;
                }
                Ok(moved)
            }
            other => Err(RequestError::Unsupported(other)),
        }
    }
}

/// The first `len` bytes of `bounce` from an O_DIRECT-aligned address.
fn aligned(bounce: &mut [u8], len: usize) -> &mut [u8] {
    let misalignment = bounce.as_ptr() as usize % DIRECT_ALIGN;
    let start = (DIRECT_ALIGN - misalignment) % DIRECT_ALIGN;
    &mut bounce[start..start + len]
}

/// Zeroes `[offset, offset + len)`: punches a hole where the filesystem
/// can, writes zeroes where it cannot.
fn zero_range(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let zeroes = vec![0u8; (len.min(BOUNCE as u64)) as usize];
    let mut done = 0;
    while done < len {
        let take = (len - done).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..take], offset + done)?;
        done += take as u64;
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn kind(&self) -> &'static str {
        "virtio-blk"
    }

    fn features(&self) -> u64 {
        let ro = if self.read_only { F_RO } else { 0 };
        F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_DISCARD | F_WRITE_ZEROES | ro
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[256]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config (§5.2.4), the fields umbra fills.
        let mut config = [0u8; 60];
        config[0..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        config[36..40].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
        config[40..44].copy_from_slice(&1u32.to_le_bytes());
        config[44..48].copy_from_slice(&1u32.to_le_bytes());
        config[48..52].copy_from_slice(&MAX_ZERO_SECTORS.to_le_bytes());
        config[52..56].copy_from_slice(&1u32.to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        super::serve_chains(queue, io, |buffers| self.complete(io, buffers))
    }
}

impl Block {
    /// Serves one request and writes its status byte; returns the bytes
    /// written to the driver (data, then the status).
    fn complete(&mut self, io: &DeviceIo<'_>, buffers: &Buffers) -> u32 {
        let Some(status_at) = last_byte(&buffers.writable) else {
            // No byte to put a status in: nothing can be answered.
            io.counters.error();
            io.counters.request(0);
            return 0;
        };
        let mut data_out = Cursor::new(&buffers.readable);
        // Data the device writes stops before the status byte.
        let mut data_in = Cursor::new(&buffers.writable);
        let (code, moved) = match self.serve(io, buffers, &mut data_out, &mut data_in) {
            Ok(moved) => (S_OK, moved),
            Err(e) => {
                if matches!(e, RequestError::Chain(ChainError::Copy(_))) {
                    io.refused(&e);
                } else {
                    log::debug!("{}: {}", io.name, crate::error::error_chain(&e));
                }
                io.counters.error();
                let code = if matches!(e, RequestError::Unsupported(_)) {
                    S_UNSUPP
                } else {
                    S_IOERR
                };
                (code, 0)
            }
        };
        io.counters.request(moved);
        match io.memory.write(status_at, &[code]) {
            Ok(()) => data_in_written(buffers, code, moved) + 1,
            Err(e) => {
                io.refused(&e);
                0
            }
        }
    }
}

/// Bytes of data (before the status byte) a read or get-id wrote.
fn data_in_written(buffers: &Buffers, code: u8, moved: u64) -> u32 {
    if code != S_OK || buffers.writable_len() <= 1 {
        return 0;
    }
    u32::try_from(moved.min(buffers.writable_len() - 1)).unwrap_or(0)
}
