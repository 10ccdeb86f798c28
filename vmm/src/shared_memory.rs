//! The one accessor through which the VMM reads and writes guest memory of
//! a confidential guest at run time: it sees shared pages only. Private
//! pages are refused here, and are also PROT_NONE in the VMM's view of RAM
//! (`memory::GuestRam::allocate_confidential`), so a path that bypassed this
//! accessor would fault instead of reading them.

use crate::dma::{DeviceMemory, DmaFilter};
use crate::memory::GuestRam;
use crate::page_state::{PageState, PageStates};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

/// Why an access was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SharedMemoryError {
    /// Some byte of the range is private to the guest.
    #[error("guest memory at {0:#x} is private to the guest")]
    CheckShared(u64),
    /// The range is not guest RAM.
    #[error("{0:#x} is not guest RAM")]
    FindRam(u64),
}

/// Shared-only access to a guest's RAM.
#[derive(Clone)]
pub struct SharedMemory {
    ram: Arc<GuestRam>,
    states: Arc<Mutex<PageStates>>,
    /// What devices may reach: the shared pages, kept in step with
    /// `states` by every conversion (`crate::dma`).
    devices: Arc<DmaFilter>,
}

impl SharedMemory {
    /// An accessor over `ram` governed by `states`.
    pub fn new(ram: Arc<GuestRam>, states: Arc<Mutex<PageStates>>) -> Self {
        let devices = Arc::new(DmaFilter::default());
        if let Ok(states) = states.lock() {
            for (gpa, len) in states.shared_ranges() {
                devices.map(gpa, len);
            }
        }
        SharedMemory {
            ram,
            states,
            devices,
        }
    }

    /// Runs `access` with the tracker locked, if every page of the range is
    /// shared. Holding the lock across the copy keeps a concurrent
    /// conversion (which changes the tracker and the VMM's page protection
    /// under the same lock) from making a page private mid-access.
    fn with_shared<T>(
        &self,
        gpa: u64,
        len: u64,
        access: impl FnOnce() -> T,
    ) -> Result<T, SharedMemoryError> {
        let states = crate::sync::lock(&self.states);
        match states.state(gpa) {
            None => return Err(SharedMemoryError::FindRam(gpa)),
            Some(PageState::Private) => return Err(SharedMemoryError::CheckShared(gpa)),
            Some(PageState::Shared) => {}
        }
        if !states.is_shared(gpa, len) {
            return Err(SharedMemoryError::CheckShared(gpa));
        }
        let result = access();
        drop(states);
        Ok(result)
    }

    /// Reads `buf.len()` bytes at `gpa` if every page is shared.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SharedMemoryError> {
        let len = buf.len() as u64;
        self.with_shared(gpa, len, || {
            self.ram.memory.read_slice(buf, GuestAddress(gpa))
        })?
        .map_err(|_| SharedMemoryError::FindRam(gpa))
    }

    /// Writes `data` at `gpa` if every page is shared.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), SharedMemoryError> {
        self.with_shared(gpa, data.len() as u64, || {
            self.ram.memory.write_slice(data, GuestAddress(gpa))
        })?
        .map_err(|_| SharedMemoryError::FindRam(gpa))
    }

    /// The page-state tracker.
    pub(crate) fn states(&self) -> &Arc<Mutex<PageStates>> {
        &self.states
    }

    /// The filter devices reach guest memory through. Conversions (which
    /// hold the tracker's lock) map a page there after it became shared
    /// and unmap it before it becomes inaccessible to the VMM.
    pub(crate) fn device_filter(&self) -> &Arc<DmaFilter> {
        &self.devices
    }

    /// Device memory that reaches the shared pages only.
    pub(crate) fn device_memory(&self) -> DeviceMemory {
        DeviceMemory::shared(&self.ram, self.devices.clone(), self.states.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryMap;

    #[test]
    fn sees_shared_pages_only() {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram = Arc::new(GuestRam::allocate_confidential(&map).unwrap());
        let states = PageStates::new(&[(0, 16 << 20)], PageState::Private).unwrap();
        let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
        let mut buf = [0u8; 4];
        assert_eq!(
            shared.read(0x8000, &mut buf),
            Err(SharedMemoryError::CheckShared(0x8000))
        );
        assert_eq!(
            shared.read(64 << 20, &mut buf),
            Err(SharedMemoryError::FindRam(64 << 20))
        );
        crate::sync::lock(shared.states())
            .convert(0x8000, 4096, PageState::Shared)
            .unwrap();
        ram.set_vmm_access(0x8000, 4096, true).unwrap();
        shared.write(0x8000, b"ok!!").unwrap();
        shared.read(0x8000, &mut buf).unwrap();
        assert_eq!(&buf, b"ok!!");
        // A read that straddles into a private page is refused as a whole.
        assert_eq!(
            shared.read(0x8FFE, &mut buf),
            Err(SharedMemoryError::CheckShared(0x8FFE))
        );
    }
}
