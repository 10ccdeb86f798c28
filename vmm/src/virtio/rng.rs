//! virtio-rng (virtio 1.2 §5.4): every driver-writable buffer filled from
//! the host's getrandom(2).

use super::chain::Cursor;
use super::{DeviceIo, VirtioDevice};
use virtio_queue::Queue;

/// Device ID (§5.4.1).
const DEVICE_ID: u32 = 4;
/// Most bytes given for one request: a driver may post a huge buffer, the
/// device need not fill it (§5.4.6.1: "as much entropy as possible").
const MAX_REQUEST: usize = 64 << 10;

/// A virtio-rng device.
#[derive(Debug, Default)]
pub(crate) struct Rng;

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn kind(&self) -> &'static str {
        "virtio-rng"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[64]
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        super::serve_chains(queue, io, |buffers| {
            let len = (buffers.writable_len() as usize).min(MAX_REQUEST);
            let mut entropy = vec![0u8; len];
            if let Err(e) = getrandom::fill(&mut entropy) {
                log::error!("{}: getrandom: {e}", io.name);
                io.counters.error();
                return 0;
            }
            match Cursor::new(&buffers.writable).write(io.memory, &entropy) {
                Ok(()) => {
                    io.counters.request(len as u64);
                    len as u32
                }
                Err(e) => {
                    io.refused(&e);
                    io.counters.error();
                    io.counters.request(0);
                    0
                }
            }
        })
    }
}
