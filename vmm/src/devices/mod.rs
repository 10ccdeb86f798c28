//! Device models and the port-I/O bus that routes guest accesses to them.

pub mod debug_exit;
pub mod probe;
pub mod serial;

use std::sync::{Arc, Mutex};

/// A device on the port-I/O bus. `offset` is relative to its base port.
pub trait PioDevice: Send {
    /// Guest `in`: fill `data`.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest `out`.
    fn write(&mut self, offset: u16, data: &[u8]);
}

struct BusEntry {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// Port-I/O bus. Ports nobody claims read as all-ones and ignore writes,
/// as on a PC: operating systems probe many legacy ports.
#[derive(Default)]
pub struct PioBus {
    entries: Vec<BusEntry>,
}

impl PioBus {
    /// Adds a device at `[base, base + len)`. Returns false on overlap.
    pub fn insert(&mut self, base: u16, len: u16, device: Arc<Mutex<dyn PioDevice>>) -> bool {
        let end = u32::from(base) + u32::from(len);
        let overlaps = self.entries.iter().any(|e| {
            u32::from(base) < u32::from(e.base) + u32::from(e.len) && u32::from(e.base) < end
        });
        if overlaps || len == 0 {
            return false;
        }
        self.entries.push(BusEntry { base, len, device });
        true
    }

    fn find(&self, port: u16) -> Option<(&BusEntry, u16)> {
        self.entries
            .iter()
            .find(|e| port >= e.base && port - e.base < e.len)
            .map(|e| (e, port - e.base))
    }

    /// Routes a guest `in`; returns false when no device claimed the port.
    pub fn read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
            Some((entry, offset)) => {
                lock(&entry.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xFF);
                false
            }
        }
    }

    /// Routes a guest `out`; returns false when no device claimed the port.
    pub fn write(&self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
            Some((entry, offset)) => {
                lock(&entry.device).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a device model's state
/// stays usable even if another vCPU thread panicked while holding it.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Latch(Vec<(u16, Vec<u8>)>);
    impl PioDevice for Latch {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_port_and_rejects_overlaps() {
        let latch = Arc::new(Mutex::new(Latch::default()));
        let mut bus = PioBus::default();
        assert!(bus.insert(0x3F8, 8, latch.clone()));
        assert!(!bus.insert(0x3FF, 2, latch.clone()));
        assert!(!bus.insert(0x3F0, 0, latch.clone()));
        let mut data = [0u8; 1];
        assert!(bus.read(0x3FA, &mut data));
        assert_eq!(data, [2]);
        assert!(bus.write(0x3F9, &[7]));
        assert_eq!(latch.lock().unwrap().0, vec![(1, vec![7])]);
        let mut unclaimed = [0u8; 2];
        assert!(!bus.read(0x80, &mut unclaimed));
        assert_eq!(unclaimed, [0xFF, 0xFF]);
        assert!(!bus.write(0x80, &[1]));
    }
}
