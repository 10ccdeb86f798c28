//! QEMU's `isa-debug-exit` device: a guest write of `code` ends the run.
//!
//! QEMU turns `code` into the process exit status `(code << 1) | 1`; umbra
//! exits with `code` itself so that a guest can report success as 0. The
//! port and width are QEMU's defaults (0xF4, 4 bytes), so the same firmware
//! image runs under both.

use super::bus::BusDevice;
use crate::run_control::{RunControl, StopReason};
use std::sync::Arc;

/// The debug-exit register.
pub struct DebugExit {
    control: Arc<RunControl>,
}

impl DebugExit {
    /// A debug-exit device that stops `control`'s run.
    pub fn new(control: Arc<RunControl>) -> Self {
        DebugExit { control }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Byte and word writes count too; the value is little-endian from
        // the written offset, as QEMU's memory API assembles it.
        let mut bytes = [0u8; 4];
        for (i, b) in data.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(offset as usize + i) {
                *slot = *b;
            }
        }
        self.control
            .request_stop(StopReason::GuestExit(u32::from_le_bytes(bytes)));
    }
}
