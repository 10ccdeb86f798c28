//! virtio devices on virtio-mmio (virtio 1.2 §4.2, version-2 registers).
//!
//! Each device sits in its own 4 KiB slot of the MMIO window with its own
//! interrupt line (an irqfd on its GSI) and one ioeventfd per queue on the
//! QueueNotify register. Queues are virtio-queue's, walked over the VM's
//! [`crate::dma::GuestDma`]: every ring, descriptor and buffer access is
//! translated by the DMA filter first, so a device reaches only what the
//! guest shared (confidential guests) or RAM (plain ones), and an access
//! elsewhere fails with the device's architected error.

pub(crate) mod balloon;
pub(crate) mod block;
pub(crate) mod chain;
#[doc(hidden)]
pub mod harness;
pub(crate) mod iommu;
pub(crate) mod mmio;
pub(crate) mod rng;
pub(crate) mod vsock;

use crate::metrics::DeviceMetrics;
use std::sync::atomic::{AtomicU64, Ordering};
use umbra_firmware::layout::{VIRTIO_MMIO_BASE, VIRTIO_MMIO_FIRST_GSI, VIRTIO_MMIO_SLOT};

pub(crate) use umbra_firmware::layout::VIRTIO_MMIO_MAX;
/// Bytes of one transport's register slot.
pub(crate) const SLOT_SIZE: u64 = VIRTIO_MMIO_SLOT;
use virtio_queue::Queue;

/// VIRTIO_F_VERSION_1 (virtio 1.2 §6): the modern interface.
pub(crate) const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM (§6): the device's accesses are translated
/// by the platform; required for confidential guests, whose drivers then
/// use shared (bounce) buffers.
pub(crate) const F_ACCESS_PLATFORM: u64 = 1 << 33;
/// VIRTIO_RING_F_INDIRECT_DESC (§2.7.5.3): indirect descriptor tables
/// (virtio-queue walks them through the same filter).
pub(crate) const F_INDIRECT_DESC: u64 = 1 << 28;

/// What kind of device a transport carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `--disk` number `n`.
    Block(usize),
    /// `--rng`.
    Rng,
    /// `--vsock`.
    Vsock,
    /// `--balloon`.
    Balloon,
    /// `--iommu`.
    Iommu,
}

/// One transport of the VM: its device, MMIO slot and GSI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Transport {
    /// Name in logs and metrics (`blk0`, `rng0`, `vsock0`).
    pub(crate) name: String,
    /// The device.
    pub(crate) kind: Kind,
    /// Base of its 4 KiB register slot.
    pub(crate) base: u64,
    /// Its interrupt line.
    pub(crate) gsi: u32,
    /// Whether it sits behind the virtio-iommu (`iommu=on`); its endpoint
    /// ID is its index in the transport list.
    pub(crate) behind_iommu: bool,
}

/// The transports `config` asks for, in slot order: disks, then the
/// entropy device, then vsock. The ACPI tables, the kernel command line
/// and the device manager all read this one list.
pub(crate) fn transports(config: &crate::config::VmConfig) -> Vec<Transport> {
    let kinds = (0..config.disks.len())
        .map(Kind::Block)
        .chain(config.rng.then_some(Kind::Rng))
        .chain(config.vsock.is_some().then_some(Kind::Vsock))
        .chain(config.balloon.is_some().then_some(Kind::Balloon))
        .chain(config.iommu.then_some(Kind::Iommu));
    kinds
        .enumerate()
        .map(|(index, kind)| Transport {
            name: match &kind {
                Kind::Block(n) => format!("blk{n}"),
                Kind::Rng => "rng0".into(),
                Kind::Vsock => "vsock0".into(),
                Kind::Iommu => "iommu0".into(),
                Kind::Balloon => "balloon0".into(),
            },
            behind_iommu: match &kind {
                Kind::Block(n) => config.disks.get(*n).is_some_and(|d| d.iommu),
                Kind::Vsock => config.vsock.as_ref().is_some_and(|v| v.iommu),
                Kind::Rng | Kind::Iommu | Kind::Balloon => false,
            },
            kind,
            base: VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_SLOT,
            gsi: VIRTIO_MMIO_FIRST_GSI + index as u32,
        })
        .collect()
}

/// Per-device counters, as `--metrics-json` reports them.
#[derive(Debug, Default)]
pub(crate) struct DeviceCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    dma_refusals: AtomicU64,
}

impl DeviceCounters {
    /// One request completed, moving `bytes` of payload.
    pub(crate) fn request(&self, bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// One request completed with an error status.
    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    /// One access the DMA filter refused; returns how many so far.
    pub(crate) fn dma_refusal(&self) -> u64 {
        self.dma_refusals.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl DeviceCounters {
    /// The counters as the metrics JSON lists them.
    pub(crate) fn snapshot(&self, name: &str, kind: &'static str) -> DeviceMetrics {
        DeviceMetrics {
            name: name.to_string(),
            kind,
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dma_refusals: self.dma_refusals.load(Ordering::Relaxed),
        }
    }
}

/// What a device model does; the transport does the rest (registers,
/// feature negotiation, queue setup, interrupts).
pub(crate) trait VirtioDevice: Send {
    /// Device ID (§5: 2 block, 4 entropy, 19 socket).
    fn device_type(&self) -> u32;
    /// Kind for the metrics (`virtio-blk`).
    fn kind(&self) -> &'static str;
    /// Device-specific feature bits (the transport adds VERSION_1,
    /// ACCESS_PLATFORM and INDIRECT_DESC).
    fn features(&self) -> u64;
    /// Maximum size of each queue.
    fn queue_max_sizes(&self) -> &'static [u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// A driver write to the configuration space (read-only by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver accepted `features` and set DRIVER_OK.
    fn activate(&mut self, _features: u64) {}
    /// Serves queue `index` (after a notification). Returns whether any
    /// buffer went to the used ring.
    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool;
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// A host descriptor the event loop watches for this device (vsock's
    /// own epoll of its sockets).
    fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// The host descriptor is ready. Returns whether any buffer went to
    /// a used ring.
    fn host_event(&mut self, _queues: &mut [Queue], _io: &DeviceIo<'_>) -> bool {
        false
    }
}

/// Copies the config-space bytes at `offset` into `data` (zero past the end).
pub(crate) fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// Pops every chain the driver made available on `queue`, hands its
/// buffers to `serve` (a malformed chain is counted, logged and used with
/// length 0) and puts each on the used ring with the length `serve`
/// wrote. Returns whether any chain went to the used ring. The loop every
/// request/response device shares.
pub(crate) fn serve_chains(
    queue: &mut Queue,
    io: &DeviceIo<'_>,
    mut serve: impl FnMut(&chain::Buffers) -> u32,
) -> bool {
    use virtio_queue::QueueT;
    let memory = io.memory.guest_dma();
    let mut used = false;
    while let Some(chain) = queue.pop_descriptor_chain(memory) {
        let head = chain.head_index();
        let written = match chain::Buffers::collect(chain) {
            Ok(buffers) => serve(&buffers),
            Err(e) => {
                io.counters.error();
                log::warn!("{}: {}", io.name, crate::error::error_chain(&e));
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

/// What a device uses while serving a queue.
pub(crate) struct DeviceIo<'a> {
    /// Guest memory through the DMA filter.
    pub(crate) memory: &'a crate::dma::DeviceMemory,
    /// The device's counters.
    pub(crate) counters: &'a DeviceCounters,
    /// The device's name, for (rate-limited) log lines.
    pub(crate) name: &'a str,
}

impl DeviceIo<'_> {
    /// Counts and logs (rate-limited) a refused guest buffer.
    pub(crate) fn refused(&self, why: &(dyn std::error::Error + 'static)) {
        let n = self.counters.dma_refusal();
        if crate::violation::should_log(n) {
            log::warn!(
                "{}: guest buffer refused (refusal {n}): {}",
                self.name,
                crate::error::error_chain(why)
            );
        }
    }
}
