//! The memory probe: the guest names a GPA and asks the VMM to read it,
//! which tests the VMM's shared-only accessor from inside the guest (the
//! `psc` and `private-read` firmware scenarios). Protocol in
//! `umbra_firmware::layout::PROBE_PORT`.

use super::bus::BusDevice;
use crate::dma::{DeviceMemory, DmaError, Refusal};
use umbra_firmware::layout::{PROBE_NOT_RAM, PROBE_OK, PROBE_REFUSED_PRIVATE};

/// The probe device.
pub struct MemoryProbe {
    memory: DeviceMemory,
    value: u32,
    status: u32,
}

impl MemoryProbe {
    /// A probe reading through `memory`.
    pub fn new(memory: DeviceMemory) -> Self {
        MemoryProbe {
            memory,
            value: 0,
            status: PROBE_NOT_RAM,
        }
    }
}

impl BusDevice for MemoryProbe {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = if offset < 4 { self.value } else { self.status };
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.to_le_bytes().get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.len() != 4 {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let gpa = u64::from(u32::from_le_bytes(bytes));
        let mut word = [0u8; 4];
        (self.value, self.status) = match self.memory.read(gpa, &mut word) {
            Ok(()) => (u32::from_le_bytes(word), PROBE_OK),
            Err(DmaError::Translate {
                refusal: Refusal::Private,
                ..
            }) => (u32::MAX, PROBE_REFUSED_PRIVATE),
            Err(_) => (u32::MAX, PROBE_NOT_RAM),
        };
        log::info!("probe of {gpa:#x}: status {}", self.status);
    }
}
