//! virtio-rng (virtio 1.2 §5.4): every driver-writable buffer filled from
//! the host's getrandom(2).

use super::chain::{Buffers, Cursor};
use super::{DeviceIo, VirtioDevice};
use virtio_queue::{Queue, QueueT};

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
        let memory = io.memory.guest_dma();
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(memory) {
            let head = chain.head_index();
            let written = match Buffers::collect(chain) {
                Ok(buffers) => {
                    let len = (buffers.writable_len() as usize).min(MAX_REQUEST);
                    let mut entropy = vec![0u8; len];
                    let mut cursor = Cursor::new(&buffers.writable);
                    let filled = getrandom::fill(&mut entropy).map_err(|e| {
                        std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EIO))
                    });
                    match filled {
                        Err(e) => {
                            log::error!("{}: getrandom: {e}", io.name);
                            io.counters.error();
                            0
                        }
                        Ok(()) => match cursor.write(io.memory, &entropy) {
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
                        },
                    }
                }
                Err(e) => {
                    log::warn!("{}: {}", io.name, crate::error::error_chain(&e));
                    io.counters.error();
                    0
                }
            };
            if let Err(e) = queue.add_used(memory, head, written) {
                log::warn!("{}: used ring: {e}", io.name);
                break;
            }
            used = true;
        }
        used
    }
}
