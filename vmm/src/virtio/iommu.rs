//! virtio-iommu (virtio 1.2 §5.13) on virtio-mmio: ATTACH, DETACH, MAP,
//! UNMAP and PROBE on the request queue, fault reports on the event queue.
//! The state it changes is `crate::iommu`'s; the endpoints' device memory
//! reads it on every access (`dma::FilterHandle`). A request that changes
//! mappings takes the state's write lock, which waits for every in-flight
//! endpoint access: UNMAP has taken effect when the guest sees its status.

use super::chain::{Buffers, Cursor};
use super::{DeviceIo, VirtioDevice};
use crate::iommu::{
    Fault, FaultReason, Status, VirtualIommu, INPUT_END, MAX_DOMAINS, MSI_END, MSI_START,
    PAGE_SIZE_MASK,
};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};

/// Device ID (§5.13.1).
const DEVICE_ID: u32 = 23;
/// Queues.
const REQUEST_Q: usize = 0;
const EVENT_Q: usize = 1;

/// Feature bits (§5.13.3).
const F_INPUT_RANGE: u64 = 1 << 0;
const F_MAP_UNMAP: u64 = 1 << 2;
const F_PROBE: u64 = 1 << 4;
const F_MMIO: u64 = 1 << 5;
const F_BYPASS_CONFIG: u64 = 1 << 6;

/// Request types (§5.13.6).
const T_ATTACH: u8 = 1;
const T_DETACH: u8 = 2;
const T_MAP: u8 = 3;
const T_UNMAP: u8 = 4;
const T_PROBE: u8 = 5;
/// ATTACH_F_BYPASS.
const ATTACH_F_BYPASS: u32 = 1;

/// Bytes of PROBE properties: one RESV_MEM (24) and an end marker.
const PROBE_SIZE: u32 = 32;
/// Offset of `bypass` in the configuration space.
const CONFIG_BYPASS: u64 = 36;
/// Most bytes a request's device-readable part may have (PROBE's 72).
const MAX_REQUEST: usize = 72;

/// Fault record (§5.13.6.9): reasons and flags.
const FAULT_R_DOMAIN: u8 = 1;
const FAULT_R_MAPPING: u8 = 2;
const FAULT_F_READ: u32 = 1 << 0;
const FAULT_F_WRITE: u32 = 1 << 1;
const FAULT_F_ADDRESS: u32 = 1 << 8;
/// Size of a fault record.
const FAULT_SIZE: usize = 24;

/// The virtio-iommu device.
pub(crate) struct VirtioIommu {
    iommu: Arc<VirtualIommu>,
    features: u64,
}

impl VirtioIommu {
    /// The device for `iommu`.
    pub(crate) fn new(iommu: Arc<VirtualIommu>) -> Self {
        VirtioIommu { iommu, features: 0 }
    }

    fn le32(bytes: &[u8], at: usize) -> u32 {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    fn le64(bytes: &[u8], at: usize) -> u64 {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    /// Parses and executes one request given as its device-readable bytes;
    /// returns the status and, for PROBE, the properties.
    pub(crate) fn execute(&self, request: &[u8], writable: u64) -> Option<(Status, Vec<u8>)> {
        let kind = *request.first()?;
        let (size, tail) = match kind {
            T_ATTACH | T_DETACH => (20, 4),
            T_MAP => (36, 4),
            T_UNMAP => (28, 4),
            T_PROBE => (72, u64::from(PROBE_SIZE) + 4),
            // Unknown type: leave the buffer unwritten (§5.13.6.2).
            _ => return None,
        };
        if writable < 4 {
            return None;
        }
        let reserved_clear = |from: usize, to: usize| request[from..to].iter().all(|&b| b == 0);
        if request.len() != size || writable != tail || !reserved_clear(1, 4) {
            return Some((Status::Inval, Vec::new()));
        }
        let status = match kind {
            T_ATTACH => {
                let flags = Self::le32(request, 12);
                if flags & !ATTACH_F_BYPASS != 0
                    || !reserved_clear(16, 20)
                    || (flags & ATTACH_F_BYPASS != 0 && self.features & F_BYPASS_CONFIG == 0)
                {
                    Status::Inval
                } else {
                    self.iommu.write().attach(
                        Self::le32(request, 4),
                        Self::le32(request, 8),
                        flags & ATTACH_F_BYPASS != 0,
                    )
                }
            }
            T_DETACH => {
                if !reserved_clear(12, 20) {
                    Status::Inval
                } else {
                    self.iommu
                        .write()
                        .detach(Self::le32(request, 4), Self::le32(request, 8))
                }
            }
            T_MAP => {
                let (start, end) = (Self::le64(request, 8), Self::le64(request, 16));
                let flags = Self::le32(request, 32);
                if start <= MSI_END && end >= MSI_START {
                    // Never over the reserved MSI doorbell (§5.13.6.6).
                    Status::Inval
                } else if flags & crate::iommu::MAP_MMIO != 0 && self.features & F_MMIO == 0 {
                    Status::Inval
                } else {
                    self.iommu.write().map(
                        Self::le32(request, 4),
                        start,
                        end,
                        Self::le64(request, 24),
                        flags,
                    )
                }
            }
            T_UNMAP => {
                if !reserved_clear(24, 28) {
                    Status::Inval
                } else {
                    self.iommu.write().unmap(
                        Self::le32(request, 4),
                        Self::le64(request, 8),
                        Self::le64(request, 16),
                    )
                }
            }
            _ => {
                // PROBE.
                let endpoint = Self::le32(request, 4);
                if !reserved_clear(8, 72) {
                    Status::Inval
                } else if !self.iommu.read().has_endpoint(endpoint) {
                    Status::NoEnt
                } else {
                    let mut properties = vec![0u8; PROBE_SIZE as usize];
                    // RESV_MEM (type 1, length 20), subtype MSI.
                    properties[0..2].copy_from_slice(&1u16.to_le_bytes());
                    properties[2..4].copy_from_slice(&20u16.to_le_bytes());
                    properties[4] = 1;
                    properties[8..16].copy_from_slice(&MSI_START.to_le_bytes());
                    properties[16..24].copy_from_slice(&MSI_END.to_le_bytes());
                    return Some((Status::Ok, properties));
                }
            }
        };
        Some((status, Vec::new()))
    }

    fn serve_requests(&mut self, queue: &mut Queue, io: &DeviceIo<'_>) -> bool {
        super::serve_chains(queue, io, |buffers| self.serve_request(buffers, io))
    }

    fn serve_request(&self, buffers: &Buffers, io: &DeviceIo<'_>) -> u32 {
        let writable = buffers.writable_len();
        let len = (buffers.readable_len() as usize).min(MAX_REQUEST + 1);
        let mut request = vec![0u8; len];
        if let Err(e) = Cursor::new(&buffers.readable).read(io.memory, &mut request) {
            io.refused(&e);
            io.counters.error();
            return 0;
        }
        let Some((status, properties)) = self.execute(&request, writable) else {
            io.counters.error();
            return 0;
        };
        io.counters.request(0);
        if status != Status::Ok {
            io.counters.error();
        }
        let mut reply = properties;
        reply.extend_from_slice(&[status as u8, 0, 0, 0]);
        match Cursor::new(&buffers.writable).write(io.memory, &reply) {
            Ok(()) => reply.len() as u32,
            Err(e) => {
                io.refused(&e);
                0
            }
        }
    }

    /// Writes pending faults into the driver's event buffers.
    fn report_faults(&mut self, queue: &mut Queue, io: &DeviceIo<'_>) -> bool {
        let memory = io.memory.guest_dma();
        let mut used = false;
        loop {
            let Some(fault) = self.iommu.write().next_fault() else {
                return used;
            };
            let Some(chain) = queue.pop_descriptor_chain(memory) else {
                self.iommu.write().requeue_fault(fault);
                return used;
            };
            let head = chain.head_index();
            let record = fault_record(&fault);
            let written = match Buffers::collect(chain) {
                Ok(buffers) => match Cursor::new(&buffers.writable).write(io.memory, &record) {
                    Ok(()) => FAULT_SIZE as u32,
                    Err(e) => {
                        io.refused(&e);
                        0
                    }
                },
                Err(_) => 0,
            };
            if queue.add_used(memory, head, written).is_err() {
                return used;
            }
            used = true;
        }
    }
}

fn fault_record(fault: &Fault) -> [u8; FAULT_SIZE] {
    let mut record = [0u8; FAULT_SIZE];
    record[0] = match fault.reason {
        FaultReason::Domain => FAULT_R_DOMAIN,
        FaultReason::Mapping => FAULT_R_MAPPING,
    };
    let access = if fault.write {
        FAULT_F_WRITE
    } else {
        FAULT_F_READ
    };
    record[4..8].copy_from_slice(&(access | FAULT_F_ADDRESS).to_le_bytes());
    record[8..12].copy_from_slice(&fault.endpoint.to_le_bytes());
    record[16..24].copy_from_slice(&fault.iova.to_le_bytes());
    record
}

impl VirtioDevice for VirtioIommu {
    fn device_type(&self) -> u32 {
        DEVICE_ID
    }

    fn kind(&self) -> &'static str {
        "virtio-iommu"
    }

    fn features(&self) -> u64 {
        F_INPUT_RANGE | F_MAP_UNMAP | F_PROBE | F_MMIO | F_BYPASS_CONFIG
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[64, 64]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_iommu_config (§5.13.4).
        let mut config = [0u8; 40];
        config[0..8].copy_from_slice(&PAGE_SIZE_MASK.to_le_bytes());
        config[16..24].copy_from_slice(&INPUT_END.to_le_bytes());
        config[28..32].copy_from_slice(&(MAX_DOMAINS as u32 - 1).to_le_bytes());
        config[32..36].copy_from_slice(&PROBE_SIZE.to_le_bytes());
        config[36] = u8::from(self.iommu.read().bypass());
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // `bypass` is the only writable field, with BYPASS_CONFIG.
        if offset == CONFIG_BYPASS && data.len() == 1 && self.features & F_BYPASS_CONFIG != 0 {
            self.iommu.write().set_bypass(data[0] == 1);
        }
    }

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn process(&mut self, index: usize, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        match index {
            REQUEST_Q => self.serve_requests(queue, io),
            EVENT_Q => self.report_faults(queue, io),
            _ => false,
        }
    }

    fn host_fd(&self) -> Option<RawFd> {
        Some(self.iommu.fault_signal().as_raw_fd())
    }

    fn host_event(&mut self, queues: &mut [Queue], io: &DeviceIo<'_>) -> bool {
        let _ = self.iommu.fault_signal().read();
        match queues.get_mut(EVENT_Q) {
            Some(queue) => self.report_faults(queue, io),
            None => false,
        }
    }

    fn reset(&mut self) {
        self.features = 0;
        self.iommu.write().reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> VirtioIommu {
        let mut d = VirtioIommu::new(Arc::new(VirtualIommu::new([0, 1]).unwrap()));
        d.activate(F_MAP_UNMAP | F_BYPASS_CONFIG);
        d
    }

    fn attach(domain: u32, endpoint: u32, flags: u32) -> Vec<u8> {
        let mut r = vec![T_ATTACH, 0, 0, 0];
        r.extend_from_slice(&domain.to_le_bytes());
        r.extend_from_slice(&endpoint.to_le_bytes());
        r.extend_from_slice(&flags.to_le_bytes());
        r.extend_from_slice(&[0; 4]);
        r
    }

    fn map(domain: u32, start: u64, end: u64, phys: u64, flags: u32) -> Vec<u8> {
        let mut r = vec![T_MAP, 0, 0, 0];
        r.extend_from_slice(&domain.to_le_bytes());
        r.extend_from_slice(&start.to_le_bytes());
        r.extend_from_slice(&end.to_le_bytes());
        r.extend_from_slice(&phys.to_le_bytes());
        r.extend_from_slice(&flags.to_le_bytes());
        r
    }

    #[test]
    fn requests_answer_the_architected_status() {
        let d = device();
        let ok = |r: &[u8]| d.execute(r, 4).map(|(s, _)| s);
        assert_eq!(ok(&attach(1, 0, 0)), Some(Status::Ok));
        assert_eq!(ok(&attach(1, 5, 0)), Some(Status::NoEnt));
        assert_eq!(ok(&attach(1, 0, 2)), Some(Status::Inval));
        assert_eq!(ok(&map(1, 0x1000, 0x1FFF, 0x5000, 3)), Some(Status::Ok));
        assert_eq!(ok(&map(2, 0x1000, 0x1FFF, 0x5000, 3)), Some(Status::NoEnt));
        assert_eq!(
            ok(&map(1, MSI_START, MSI_START + 0xFFF, 0, 1)),
            Some(Status::Inval)
        );
        // A request of the wrong size, and an unknown type.
        assert_eq!(ok(&attach(1, 0, 0)[..16]), Some(Status::Inval));
        assert_eq!(ok(&[9, 0, 0, 0]), None);
        // A tail too small to hold the status: nothing written.
        assert_eq!(d.execute(&attach(1, 0, 0), 2), None);
    }

    #[test]
    fn probe_reports_the_msi_doorbell() {
        let d = device();
        let mut probe = vec![T_PROBE, 0, 0, 0];
        probe.extend_from_slice(&0u32.to_le_bytes());
        probe.extend_from_slice(&[0; 64]);
        let (status, props) = d.execute(&probe, u64::from(PROBE_SIZE) + 4).unwrap();
        assert_eq!(status, Status::Ok);
        assert_eq!(&props[0..5], &[1, 0, 20, 0, 1]);
        assert_eq!(
            u64::from_le_bytes(props[8..16].try_into().unwrap()),
            MSI_START
        );
        assert_eq!(
            u64::from_le_bytes(props[16..24].try_into().unwrap()),
            MSI_END
        );
        assert_eq!(d.execute(&probe, 8).map(|(s, _)| s), Some(Status::Inval));
    }

    #[test]
    fn fault_records_follow_the_specification_layout() {
        let record = fault_record(&Fault {
            reason: FaultReason::Mapping,
            iova: 0x1234_5000,
            endpoint: 3,
            domain: Some(1),
            write: true,
        });
        assert_eq!(record[0], 2);
        assert_eq!(u32::from_le_bytes(record[4..8].try_into().unwrap()), 0x102);
        assert_eq!(u32::from_le_bytes(record[8..12].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_le_bytes(record[16..24].try_into().unwrap()),
            0x1234_5000
        );
    }
}
