//! A descriptor chain as a device consumes it: the driver-readable
//! buffers first, then the driver-writable ones (virtio 1.2 §2.7.4.2: a
//! device MUST treat a readable descriptor after a writable one as an
//! error). The walk itself is virtio-queue's (bounded by the queue size,
//! indirect tables through the same filtered memory); what it yields is
//! kept as addresses only, and every copy goes through the DMA filter at
//! the moment it happens, so a page converted to private between two
//! copies is refused at the second.

use crate::dma::{DeviceMemory, DmaError};
use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;

/// Why a chain cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A driver-readable descriptor follows a writable one.
    #[error("descriptor chain {head} has a readable buffer after a writable one")]
    CheckOrder {
        /// Head index.
        head: u16,
    },
    /// The chain's buffers are shorter than the request needs.
    #[error("descriptor chain ends {missing} bytes short")]
    CheckLength {
        /// Bytes that were not there.
        missing: u64,
    },
    /// A copy was refused by the DMA filter.
    #[error("guest buffer refused")]
    Copy(#[from] DmaError),
}

/// One buffer: guest address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) addr: u64,
    pub(crate) len: u32,
}

/// The buffers of one chain, split by direction.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Buffers {
    /// Head index, for the used ring.
    pub(crate) head: u16,
    /// Driver-readable (device reads), in order.
    pub(crate) readable: Vec<Segment>,
    /// Driver-writable (device writes), in order.
    pub(crate) writable: Vec<Segment>,
}

impl Buffers {
    /// Splits the descriptors `descriptors` of chain `head`.
    pub(crate) fn from_descriptors(
        head: u16,
        descriptors: impl IntoIterator<Item = Descriptor>,
    ) -> Result<Self, ChainError> {
        let mut buffers = Buffers {
            head,
            ..Buffers::default()
        };
        for desc in descriptors {
            let segment = Segment {
                addr: desc.addr().0,
                len: desc.len(),
            };
            if desc.is_write_only() {
                buffers.writable.push(segment);
            } else if buffers.writable.is_empty() {
                buffers.readable.push(segment);
            } else {
                return Err(ChainError::CheckOrder { head });
            }
        }
        Ok(buffers)
    }

    /// Walks `chain` (virtio-queue's iterator over the filtered memory).
    pub(crate) fn collect<M>(chain: DescriptorChain<M>) -> Result<Self, ChainError>
    where
        M: std::ops::Deref,
        M::Target: vm_memory::GuestMemory,
    {
        let head = chain.head_index();
        Self::from_descriptors(head, chain)
    }

    /// Bytes the device may read.
    pub(crate) fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }

    /// Bytes the device may write.
    pub(crate) fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
}

/// A cursor over a list of segments.
#[derive(Debug)]
pub(crate) struct Cursor<'a> {
    segments: &'a [Segment],
    index: usize,
    offset: u32,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(segments: &'a [Segment]) -> Self {
        Cursor {
            segments,
            index: 0,
            offset: 0,
        }
    }

    /// Bytes left after the cursor.
    pub(crate) fn remaining(&self) -> u64 {
        let rest: u64 = self
            .segments
            .iter()
            .skip(self.index)
            .map(|s| u64::from(s.len))
            .sum();
        rest - u64::from(self.offset)
    }

    /// The next piece of at most `max` bytes, advancing past it.
    fn next_piece(&mut self, max: usize) -> Option<(u64, usize)> {
        while let Some(segment) = self.segments.get(self.index) {
            let left = segment.len - self.offset;
            if left == 0 {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let take = (left as usize).min(max);
            let addr = segment.addr.wrapping_add(u64::from(self.offset));
            self.offset += take as u32;
            return Some((addr, take));
        }
        None
    }

    /// Copies the next `buf.len()` readable bytes into `buf`.
    pub(crate) fn read(&mut self, memory: &DeviceMemory, buf: &mut [u8]) -> Result<(), ChainError> {
        let mut done = 0;
        while done < buf.len() {
            let Some((addr, take)) = self.next_piece(buf.len() - done) else {
                return Err(ChainError::CheckLength {
                    missing: (buf.len() - done) as u64,
                });
            };
            memory.read(addr, &mut buf[done..done + take])?;
            done += take;
        }
        Ok(())
    }

    /// Copies `data` to the next writable bytes.
    pub(crate) fn write(&mut self, memory: &DeviceMemory, data: &[u8]) -> Result<(), ChainError> {
        let mut done = 0;
        while done < data.len() {
            let Some((addr, take)) = self.next_piece(data.len() - done) else {
                return Err(ChainError::CheckLength {
                    missing: (data.len() - done) as u64,
                });
            };
            memory.write(addr, &data[done..done + take])?;
            done += take;
        }
        Ok(())
    }
}

/// The address of the last byte of `segments` (a status byte), if any.
pub(crate) fn last_byte(segments: &[Segment]) -> Option<u64> {
    let last = segments.iter().rev().find(|s| s.len > 0)?;
    last.addr.checked_add(u64::from(last.len) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    fn desc(addr: u64, len: u32, write: bool) -> Descriptor {
        let flags = VRING_DESC_F_NEXT as u16 | if write { VRING_DESC_F_WRITE as u16 } else { 0 };
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn readable_after_writable_is_refused() {
        let chain = [
            desc(0x1000, 16, false),
            desc(0x2000, 1, true),
            desc(0x3000, 8, false),
        ];
        assert_eq!(
            Buffers::from_descriptors(7, chain),
            Err(ChainError::CheckOrder { head: 7 })
        );
    }

    #[test]
    fn a_cursor_spans_segments_and_reports_what_is_missing() {
        let segments = [
            Segment {
                addr: 0x1000,
                len: 3,
            },
            Segment { addr: 0, len: 0 },
            Segment {
                addr: 0x2000,
                len: 5,
            },
        ];
        let mut cursor = Cursor::new(&segments);
        assert_eq!(cursor.remaining(), 8);
        assert_eq!(cursor.next_piece(10), Some((0x1000, 3)));
        assert_eq!(cursor.next_piece(2), Some((0x2000, 2)));
        assert_eq!(cursor.remaining(), 3);
        assert_eq!(cursor.next_piece(4), Some((0x2002, 3)));
        assert_eq!(cursor.next_piece(4), None);
        assert_eq!(last_byte(&segments), Some(0x2004));
    }
}
