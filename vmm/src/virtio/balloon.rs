//! virtio-balloon (virtio 1.2 §5.5): the inflate and deflate queues, the
//! target in `num_pages` and the driver's `actual`. Each page the driver
//! inflates goes back to the host (`DeviceMemory::reclaim`): on a plain
//! guest MADV_DONTNEED, so RSS falls; on a confidential guest only a page
//! shared at that moment, punched out of its memfd — a private page in an
//! inflate request is refused and counted, never discarded (Linux SNP
//! guests would fault on it when they touch it again, unvalidated).

use super::chain::Cursor;
use super::{DeviceIo, VirtioDevice};
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use virtio_queue::Queue;

/// Device ID (§5.5.1).
const DEVICE_ID: u32 = 5;
/// The balloon's page unit.
const PAGE: u64 = 4096;
/// Queues.
const INFLATE: usize = 0;
const DEFLATE: usize = 1;
/// Most PFNs read from one chain.
const MAX_PFNS: usize = 4096;

/// The balloon's figures, shared with the metrics and the API.
#[derive(Debug, Default)]
pub struct BalloonState {
    target_pages: AtomicU32,
    actual_pages: AtomicU32,
    reclaimed_bytes: AtomicU64,
    refused_private: AtomicU64,
}

/// `balloon` in `--metrics-json`.
#[derive(Clone, Debug, Serialize)]
pub struct BalloonMetrics {
    /// What the host asked for.
    pub target_mib: u64,
    /// What the driver says it gave.
    pub actual_mib: u64,
    /// What the host got back.
    pub reclaimed_bytes: u64,
    /// Private pages in inflate requests, refused (confidential guests).
    pub refused_private_pages: u64,
}

impl BalloonState {
    /// The balloon of `target` bytes.
    pub(crate) fn new(target: u64) -> Arc<Self> {
        let state = BalloonState::default();
        state.target_pages.store(
            (target / PAGE).min(u64::from(u32::MAX)) as u32,
            Ordering::Relaxed,
        );
        Arc::new(state)
    }

    /// Sets the target (the API's PATCH /balloon).
    pub(crate) fn set_target(&self, bytes: u64) {
        self.target_pages.store(
            (bytes / PAGE).min(u64::from(u32::MAX)) as u32,
            Ordering::Relaxed,
        );
    }

    /// The figures now.
    pub fn metrics(&self) -> BalloonMetrics {
        let mib = |pages: u32| (u64::from(pages) * PAGE) >> 20;
        BalloonMetrics {
            target_mib: mib(self.target_pages.load(Ordering::Relaxed)),
            actual_mib: mib(self.actual_pages.load(Ordering::Relaxed)),
            reclaimed_bytes: self.reclaimed_bytes.load(Ordering::Relaxed),
            refused_private_pages: self.refused_private.load(Ordering::Relaxed),
        }
    }
}

/// The balloon device.
pub(crate) struct Balloon {
    state: Arc<BalloonState>,
}

impl Balloon {
    pub(crate) fn new(state: Arc<BalloonState>) -> Self {
        Balloon { state }
    }

    /// Reclaims the pages of one inflate request; returns the bytes.
    fn inflate(&self, pfns: &[u8], io: &DeviceIo<'_>) -> u64 {
        let mut reclaimed = 0;
        // Runs of consecutive PFNs go back in one call.
        let mut run: Option<(u64, u64)> = None;
        let mut flush = |run: Option<(u64, u64)>| {
            let Some((first, count)) = run else {
                return;
            };
            if count > 1 && io.memory.reclaim(first * PAGE, count * PAGE).is_ok() {
                reclaimed += count * PAGE;
                return;
            }
            // Page by page only when the run as a whole is refused, so that
            // a private page among shared ones is counted alone.
            for page in first..first + count {
                match io.memory.reclaim(page * PAGE, PAGE) {
                    Ok(()) => reclaimed += PAGE,
                    Err(crate::dma::DmaError::Translate {
                        refusal: crate::dma::Refusal::Private,
                        ..
                    }) => {
                        self.state.refused_private.fetch_add(1, Ordering::Relaxed);
                        io.counters.dma_refusal();
                    }
                    Err(_) => io.counters.error(),
                }
            }
        };
        for word in pfns.chunks_exact(4) {
            let pfn = u64::from(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
            run = match run {
                Some((first, count)) if first + count == pfn => Some((first, count + 1)),
                other => {
                    flush(other);
                    Some((pfn, 1))
                }
            };
        }
        flush(run);
        reclaimed
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn kind(&self) -> &'static str {
        "virtio-balloon"
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[64, 64]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_balloon_config { le32 num_pages; le32 actual; } (§5.5.4)
        let mut config = [0u8; 8];
        config[..4].copy_from_slice(
            &self
                .state
                .target_pages
                .load(Ordering::Relaxed)
                .to_le_bytes(),
        );
        config[4..].copy_from_slice(
            &self
                .state
                .actual_pages
                .load(Ordering::Relaxed)
                .to_le_bytes(),
        );
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.len() == 4 {
            let actual = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.state.actual_pages.store(actual, Ordering::Relaxed);
        }
    }

    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        super::serve_chains(queue, io, |buffers| {
            let len = buffers.readable_len() as usize;
            let mut pfns = vec![0u8; len.min(MAX_PFNS * 4) & !3];
            match Cursor::new(&buffers.readable).read(io.memory, &mut pfns) {
                Ok(()) if index == INFLATE => {
                    let bytes = self.inflate(&pfns, io);
                    self.state
                        .reclaimed_bytes
                        .fetch_add(bytes, Ordering::Relaxed);
                    io.counters.request(bytes);
                }
                // Deflated pages fault back in when the guest touches them.
                Ok(()) if index == DEFLATE => io.counters.request(0),
                Ok(()) => {}
                Err(e) => io.refused(&e),
            }
            0
        })
    }
}
