//! The virtio-mmio transport, version 2 (virtio 1.2 §4.2.2), as a device on
//! the MMIO bus. It negotiates features (VERSION_1 always;
//! ACCESS_PLATFORM offered always and, for confidential guests, required:
//! a driver that does not accept it has FEATURES_OK refused), keeps the
//! queue registers, and hands notifications to the device model.
//!
//! Queue notifications arrive two ways: on KVM a guest write to
//! QueueNotify signals the queue's ioeventfd in the kernel (no exit); a
//! write that reaches the bus instead (the SNP model's GHCB MMIO event)
//! signals the same eventfd here. Either way the event loop thread serves
//! the queue, so the vCPU never runs device code.

use super::{
    DeviceCounters, DeviceIo, VirtioDevice, F_ACCESS_PLATFORM, F_INDIRECT_DESC, F_VERSION_1,
};
use crate::devices::bus::BusDevice;
use crate::dma::DeviceMemory;
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// "virt" (§4.2.2).
const MAGIC: u32 = 0x7472_6976;
/// The non-legacy interface.
const VERSION: u32 = 2;
/// Vendor ID: "UMBR" is not registered; virtio leaves it free-form.
const VENDOR: u32 = 0x554D_4252;

/// Device status bits (§2.1).
#[cfg(test)]
const STATUS_ACKNOWLEDGE: u32 = 1;
#[cfg(test)]
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
const STATUS_FAILED: u32 = 128;

/// InterruptStatus bits (§4.2.2).
const INT_USED_BUFFER: u32 = 1;
const INT_CONFIG_CHANGE: u32 = 2;

/// Register offsets (§4.2.2, table "MMIO Device Register Layout").
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Offset of QueueNotify, for the ioeventfds.
pub(crate) const QUEUE_NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// One virtio-mmio transport with its device.
pub(crate) struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    name: String,
    memory: DeviceMemory,
    counters: Arc<DeviceCounters>,
    require_access_platform: bool,
    queues: Vec<Queue>,
    notify: Vec<EventFd>,
    irq: EventFd,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
}

impl MmioTransport {
    /// A transport for `device`, reaching guest memory through `memory`,
    /// raising `irq`, with one notification eventfd per queue.
    pub(crate) fn new(
        device: Box<dyn VirtioDevice>,
        name: String,
        memory: DeviceMemory,
        confidential: bool,
        irq: EventFd,
    ) -> std::io::Result<Self> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| std::io::Error::other(format!("queue: {e}")))?;
        let notify = (0..queues.len())
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(MmioTransport {
            device,
            name,
            memory,
            counters: Arc::new(DeviceCounters::default()),
            require_access_platform: confidential,
            queues,
            notify,
            irq,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
        })
    }

    /// The device's name (`blk0`).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The device's kind.
    pub(crate) fn kind(&self) -> &'static str {
        self.device.kind()
    }

    /// The counters, for the metrics.
    pub(crate) fn counters(&self) -> Arc<DeviceCounters> {
        self.counters.clone()
    }

    /// The queues' notification eventfds, in queue order.
    pub(crate) fn notify_fds(&self) -> &[EventFd] {
        &self.notify
    }

    /// The interrupt eventfd.
    pub(crate) fn irq(&self) -> &EventFd {
        &self.irq
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | F_VERSION_1 | F_ACCESS_PLATFORM | F_INDIRECT_DESC
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn driver_ok(&self) -> bool {
        self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_NEEDS_RESET == 0
    }

    fn raise(&mut self, bits: u32) {
        self.interrupt_status |= bits;
        if let Err(e) = self.irq.write(1) {
            log::error!("{}: cannot raise the interrupt: {e}", self.name);
        }
    }

    /// The device's host descriptor, for the event loop.
    pub(crate) fn host_fd(&self) -> Option<std::os::fd::RawFd> {
        self.device.host_fd()
    }

    /// Serves queue `index` after a notification (event loop thread).
    pub(crate) fn serve_queue(&mut self, index: usize) {
        if index < self.queues.len() {
            self.serve(|device, queues, io| device.process(index, queues, io));
        }
    }

    /// Serves the device's host descriptor (event loop thread).
    pub(crate) fn serve_host(&mut self) {
        self.serve(|device, queues, io| device.host_event(queues, io));
    }

    /// Runs `work` on the device while the driver is running, and raises
    /// the used-buffer interrupt if it used any buffer.
    fn serve(
        &mut self,
        work: impl FnOnce(&mut dyn VirtioDevice, &mut [Queue], &DeviceIo<'_>) -> bool,
    ) {
        if !self.driver_ok() {
            return;
        }
        let io = DeviceIo {
            memory: &self.memory,
            counters: &self.counters,
            name: &self.name,
        };
        if work(self.device.as_mut(), &mut self.queues, &io) {
            self.raise(INT_USED_BUFFER);
        }
    }

    /// The device's configuration changed (a new balloon target): the
    /// driver is told by a configuration-change interrupt (§4.2.2).
    pub(crate) fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.driver_ok() {
            self.raise(INT_CONFIG_CHANGE);
        }
    }

    fn reset(&mut self) {
        for queue in &mut self.queues {
            queue.reset();
        }
        self.device.reset();
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt_status = 0;
    }

    /// The device failed in a way only a reset repairs (§2.1.2).
    fn needs_reset(&mut self, why: &str) {
        log::warn!("{}: {why}; the device needs a reset", self.name);
        self.counters.error();
        self.status |= STATUS_NEEDS_RESET;
        self.raise(INT_CONFIG_CHANGE);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let added = value & !self.status;
        if added & STATUS_FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.offered_features();
            let refused = unknown != 0
                || self.driver_features & F_VERSION_1 == 0
                || (self.require_access_platform && self.driver_features & F_ACCESS_PLATFORM == 0);
            if refused {
                // FEATURES_OK stays clear: the driver reads it back and
                // gives up (§3.1.1 step 6).
                log::warn!(
                    "{}: driver features {:#x} refused (offered {:#x}{})",
                    self.name,
                    self.driver_features,
                    self.offered_features(),
                    if self.require_access_platform {
                        ", ACCESS_PLATFORM required"
                    } else {
                        ""
                    }
                );
                self.status = value & !STATUS_FEATURES_OK;
                return;
            }
        }
        if added & STATUS_DRIVER_OK != 0 {
            if self.status & STATUS_FEATURES_OK == 0 {
                self.status = value | STATUS_FAILED;
                return;
            }
            self.status = value;
            let mem = self.memory.guest_dma();
            let bad = self
                .queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(mem));
            if let Some(index) = bad {
                self.needs_reset(&format!(
                    "queue {index}'s rings are not in memory the device may reach"
                ));
                return;
            }
            self.device.activate(self.driver_features);
            return;
        }
        self.status = value;
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: length -1 (§4.2.2).
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        // Queue registers may only change before the queue is ready and the
        // driver is running (§4.2.2.2); later writes are ignored.
        let configurable = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if self.status & STATUS_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xFFFF_FFFF) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xFFFF_FFFF) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if configurable => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_READY if configurable => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH if configurable => {
                let high = offset == reg::QUEUE_DESC_HIGH;
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_desc_table_address(None, Some(value));
                    } else {
                        q.set_desc_table_address(Some(value), None);
                    }
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH if configurable => {
                let high = offset == reg::QUEUE_DRIVER_HIGH;
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_avail_ring_address(None, Some(value));
                    } else {
                        q.set_avail_ring_address(Some(value), None);
                    }
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH if configurable => {
                let high = offset == reg::QUEUE_DEVICE_HIGH;
                if let Some(q) = self.selected_queue() {
                    if high {
                        q.set_used_ring_address(None, Some(value));
                    } else {
                        q.set_used_ring_address(Some(value), None);
                    }
                }
            }
            reg::QUEUE_NOTIFY => {
                // Reached the bus, not the kernel's ioeventfd: signal it.
                if let Some(fd) = self.notify.get(value as usize) {
                    let _ = fd.write(1);
                }
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.set_status(value),
            _ => {}
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        // Registers are 32-bit and aligned (§4.2.2.1); anything else reads 0.
        let value = if data.len() == 4 && offset.is_multiple_of(4) {
            self.read_register(offset)
        } else {
            0
        };
        for (i, b) in data.iter_mut().enumerate() {
            *b = value.to_le_bytes().get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset.is_multiple_of(4) {
            self.write_register(offset, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestRam, MemoryMap};

    struct Null;
    impl VirtioDevice for Null {
        fn device_type(&self) -> u32 {
            4
        }
        fn kind(&self) -> &'static str {
            "test"
        }
        fn features(&self) -> u64 {
            0
        }
        fn queue_max_sizes(&self) -> &'static [u16] {
            &[8]
        }
        fn read_config(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0);
        }
        fn process(&mut self, _: usize, _: &mut [Queue], _: &DeviceIo<'_>) -> bool {
            false
        }
    }

    fn transport(confidential: bool) -> MmioTransport {
        let map = MemoryMap::new(16 << 20, 64 << 10).unwrap();
        let ram =
            Arc::new(GuestRam::allocate(&map, crate::config::MemoryBacking::Anon, false).unwrap());
        let memory = DeviceMemory::plain(ram, map.ram_ranges());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        MmioTransport::new(Box::new(Null), "t0".into(), memory, confidential, irq).unwrap()
    }

    fn write(t: &mut MmioTransport, offset: u64, value: u32) {
        BusDevice::write(t, offset, &value.to_le_bytes());
    }

    fn read(t: &mut MmioTransport, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        BusDevice::read(t, offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn negotiate(t: &mut MmioTransport, high: u32) -> u32 {
        write(t, reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        write(t, reg::DRIVER_FEATURES_SEL, 1);
        write(t, reg::DRIVER_FEATURES, high);
        write(
            t,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        read(t, reg::STATUS)
    }

    #[test]
    fn identifies_as_a_version_2_transport() {
        let mut t = transport(false);
        assert_eq!(read(&mut t, reg::MAGIC), 0x7472_6976);
        assert_eq!(read(&mut t, reg::VERSION), 2);
        assert_eq!(read(&mut t, reg::DEVICE_ID), 4);
        write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&mut t, reg::DEVICE_FEATURES), 0b11);
        assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 8);
    }

    #[test]
    fn confidential_guests_must_accept_access_platform() {
        let mut t = transport(true);
        assert_eq!(negotiate(&mut t, 1) & STATUS_FEATURES_OK, 0);
        write(&mut t, reg::STATUS, 0);
        assert_ne!(negotiate(&mut t, 0b11) & STATUS_FEATURES_OK, 0);
        let mut plain = transport(false);
        assert_ne!(negotiate(&mut plain, 1) & STATUS_FEATURES_OK, 0);
        // VERSION_1 is always required, and unknown bits are refused.
        let mut legacy = transport(false);
        assert_eq!(negotiate(&mut legacy, 0) & STATUS_FEATURES_OK, 0);
        let mut greedy = transport(false);
        assert_eq!(negotiate(&mut greedy, 0b111) & STATUS_FEATURES_OK, 0);
    }

    #[test]
    fn rings_outside_device_memory_need_a_reset() {
        let mut t = transport(false);
        negotiate(&mut t, 1);
        write(&mut t, reg::QUEUE_NUM, 8);
        // The descriptor table in the ROM, which devices cannot reach.
        write(&mut t, reg::QUEUE_DESC_LOW, 0xFFFF_0000);
        write(&mut t, reg::QUEUE_DRIVER_LOW, 0x2000);
        write(&mut t, reg::QUEUE_DEVICE_LOW, 0x3000);
        write(&mut t, reg::QUEUE_READY, 1);
        write(
            &mut t,
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_ne!(read(&mut t, reg::STATUS) & STATUS_NEEDS_RESET, 0);
        assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INT_CONFIG_CHANGE);
        assert_eq!(t.irq().read().unwrap(), 1);
    }
}
