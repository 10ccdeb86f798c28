//! The one handle through which a device reaches guest memory.
//!
//! Devices never get `GuestRam` or a `GuestMemoryMmap`: they get a
//! [`DeviceMemory`] from the VM (`Vm::device_memory`). For a plain guest it
//! reaches guest RAM and nothing else (not the ROM, not MMIO, not guard
//! ranges); for a confidential guest it reaches only the pages that are
//! shared at the moment of the access, checked under the page-state
//! tracker's lock ([`SharedMemory`]). Every refusal is an error the device
//! turns into its architected failure; nothing here panics on a guest
//! address.

use crate::memory::GuestRam;
use crate::shared_memory::{SharedMemory, SharedMemoryError};
use std::sync::Arc;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

/// Why a device access to guest memory was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DmaError {
    /// The range is not (entirely) guest RAM.
    #[error("device access to {gpa:#x}+{len:#x} is outside guest RAM")]
    CheckRam {
        /// First byte.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// The confidential guest has not shared (all of) the range.
    #[error("device access refused by the shared-only rule")]
    CheckShared(#[source] SharedMemoryError),
}

#[derive(Clone)]
enum Access {
    /// Plain guest: RAM ranges `(gpa, size)`.
    Plain(Arc<GuestRam>, Arc<[(u64, u64)]>),
    /// Confidential guest: shared pages only.
    Shared(SharedMemory),
}

/// Guest memory as devices may see it.
#[derive(Clone)]
pub struct DeviceMemory {
    access: Access,
}

impl std::fmt::Debug for DeviceMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.access {
            Access::Plain(..) => "plain RAM",
            Access::Shared(_) => "shared pages only",
        };
        f.debug_struct("DeviceMemory")
            .field("reaches", &kind)
            .finish()
    }
}

impl DeviceMemory {
    /// A plain guest's RAM: the ranges given, nothing else.
    pub(crate) fn plain(ram: Arc<GuestRam>, ram_ranges: Vec<(u64, u64)>) -> Self {
        DeviceMemory {
            access: Access::Plain(ram, ram_ranges.into()),
        }
    }

    /// A confidential guest's shared pages.
    pub(crate) fn shared(shared: SharedMemory) -> Self {
        DeviceMemory {
            access: Access::Shared(shared),
        }
    }

    fn check_ram(ranges: &[(u64, u64)], gpa: u64, len: u64) -> Result<(), DmaError> {
        crate::memory::range_in_ram(gpa, len, ranges)
            .then_some(())
            .ok_or(DmaError::CheckRam { gpa, len })
    }

    /// Reads `buf.len()` bytes at `gpa`.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len() as u64;
        match &self.access {
            Access::Plain(ram, ranges) => {
                Self::check_ram(ranges, gpa, len)?;
                ram.memory
                    .read_slice(buf, GuestAddress(gpa))
                    .map_err(|_| DmaError::CheckRam { gpa, len })
            }
            Access::Shared(shared) => shared.read(gpa, buf).map_err(DmaError::CheckShared),
        }
    }

    /// Writes `data` at `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), DmaError> {
        let len = data.len() as u64;
        match &self.access {
            Access::Plain(ram, ranges) => {
                Self::check_ram(ranges, gpa, len)?;
                ram.memory
                    .write_slice(data, GuestAddress(gpa))
                    .map_err(|_| DmaError::CheckRam { gpa, len })
            }
            Access::Shared(shared) => shared.write(gpa, data).map_err(DmaError::CheckShared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryMap;

    #[test]
    fn plain_memory_reaches_ram_only() {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram =
            Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).unwrap());
        let dma = DeviceMemory::plain(ram, map.ram_ranges());
        dma.write(0x1000, b"umbra").unwrap();
        let mut buf = [0u8; 5];
        dma.read(0x1000, &mut buf).unwrap();
        assert_eq!(&buf, b"umbra");
        let rom = map.rom().unwrap().gpa;
        assert_eq!(
            dma.write(rom, b"x"),
            Err(DmaError::CheckRam { gpa: rom, len: 1 })
        );
        // Straddling the end of RAM, and wrapping the address space.
        assert!(dma.read((16 << 20) - 2, &mut buf).is_err());
        assert!(dma.read(u64::MAX - 1, &mut buf).is_err());
    }
}
