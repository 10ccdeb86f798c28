//! One bus type for port I/O and MMIO (as Firecracker's `vstate/bus.rs`):
//! devices at non-overlapping ranges, found by address, with typed insert
//! errors. Addresses nobody claims are the caller's business (open bus for
//! ports, a violation for memory).

use crate::sync::lock;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// A device on a bus. `offset` is relative to the device's base.
pub trait BusDevice: Send {
    /// A guest read: fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A guest write.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Why a device could not be placed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The range overlaps a device already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps the device at {other:#x}")]
    CheckOverlap {
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
        /// Base of the device in the way.
        other: u64,
    },
    /// The range is empty or wraps the address space.
    #[error("bus range {base:#x}+{len:#x} is empty or wraps")]
    CheckRange {
        /// Requested base.
        base: u64,
        /// Requested length.
        len: u64,
    },
}

type Shared = Arc<Mutex<dyn BusDevice>>;

/// A bus: base -> (length, device).
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, Shared)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<_> = self.devices.iter().map(|(b, (l, _))| (*b, *l)).collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, base: u64, len: u64, device: Shared) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::CheckRange { base, len })?;
        // The nearest device at or below the end; ranges never overlap, so
        // it is the only candidate for an overlap.
        if let Some((&other, &(other_len, _))) = self.devices.range(..end).next_back() {
            if other + other_len > base {
                return Err(BusError::CheckOverlap { base, len, other });
            }
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&Shared, u64)> {
        let (&base, (len, device)) = self.devices.range(..=addr).next_back()?;
        (addr - base < *len).then_some((device, addr - base))
    }

    /// Routes a read; false when no device claims `addr` (`data` untouched).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((device, offset)) => {
                lock(device).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Routes a write; false when no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((device, offset)) => {
                lock(device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Latch(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Latch {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_address_and_refuses_overlaps() {
        let latch = Arc::new(Mutex::new(Latch::default()));
        let mut bus = Bus::default();
        bus.insert(0x3F8, 8, latch.clone()).unwrap();
        assert_eq!(
            bus.insert(0x3FF, 2, latch.clone()),
            Err(BusError::CheckOverlap {
                base: 0x3FF,
                len: 2,
                other: 0x3F8
            })
        );
        assert_eq!(
            bus.insert(0x3F0, 9, latch.clone()),
            Err(BusError::CheckOverlap {
                base: 0x3F0,
                len: 9,
                other: 0x3F8
            })
        );
        assert!(bus.insert(0x3F0, 0, latch.clone()).is_err());
        assert!(bus.insert(u64::MAX, 2, latch.clone()).is_err());
        bus.insert(0x3F0, 8, latch.clone()).unwrap();
        let mut data = [0u8; 1];
        assert!(bus.read(0x3FA, &mut data));
        assert_eq!(data, [2]);
        assert!(bus.write(0x3F9, &[7]));
        assert_eq!(latch.lock().unwrap().0, vec![(1, vec![7])]);
        let mut unclaimed = [0u8; 2];
        assert!(!bus.read(0x80, &mut unclaimed));
        assert!(!bus.read(0x400, &mut unclaimed));
        assert!(!bus.write(0x80, &[1]));
    }
}
