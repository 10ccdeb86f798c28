//! The JSON summary `--metrics-json` writes at exit.

use crate::memory::Region;
use crate::violation::Violation;
use serde::Serialize;

/// Exit counts of one vCPU.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct VcpuExitCounts {
    /// vCPU index.
    pub vcpu: u32,
    /// All exits.
    pub total: u64,
    /// Port reads.
    pub pio_in: u64,
    /// Port writes.
    pub pio_out: u64,
    /// MMIO reads.
    pub mmio_read: u64,
    /// MMIO writes.
    pub mmio_write: u64,
    /// HLT exits.
    pub halt: u64,
    /// Intercepted MSR accesses (the SNP model's GHCB protocol).
    pub msr: u64,
    /// Signal kicks.
    pub interrupted: u64,
    /// Exits the backend answered itself (GHCB, page-state changes).
    pub handled: u64,
    /// Anything else.
    pub other: u64,
    /// Port writes by port number (how far a guest got, e.g. which UART
    /// registers a kernel programmed).
    pub pio_out_ports: std::collections::BTreeMap<u16, u64>,
}

/// Milliseconds since process start for the run's milestones.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Until the bootstrap vCPU entered the guest for the first time.
    pub to_first_instruction_ms: Option<f64>,
    /// Until the first byte left the serial port.
    pub to_first_serial_byte_ms: Option<f64>,
    /// Until the VM stopped.
    pub to_exit_ms: f64,
    /// Spent in the kernel registering memslots (KVM_SET_USER_MEMORY_REGION).
    pub memslots_ms: f64,
}

/// The summary of one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunMetrics {
    /// The process exit code.
    pub exit_code: i32,
    /// Why the VM stopped, in words.
    pub stop_reason: String,
    /// Platform name.
    pub platform: String,
    /// vCPU count.
    pub vcpus: u32,
    /// Bytes of guest RAM.
    pub memory_bytes: u64,
    /// The memory map.
    pub memory_regions: Vec<Region>,
    /// Violations seen (all of them are counted, the first 1024 listed).
    pub violation_count: u64,
    /// The recorded violations.
    pub violations: Vec<Violation>,
    /// Exit counts per vCPU.
    pub vcpu_exits: Vec<VcpuExitCounts>,
    /// Milestones.
    pub timings: Timings,
    /// The SNP model's launch and page-state figures (`--platform snp-model`).
    pub snp: Option<SnpMetrics>,
    /// The virtio devices, in transport order.
    pub devices: Vec<DeviceMetrics>,
    /// The virtio-iommu (`--iommu`).
    pub iommu: Option<IommuMetrics>,
    /// The balloon (`--balloon`).
    pub balloon: Option<crate::virtio::balloon::BalloonMetrics>,
}

/// What the virtio-iommu saw.
#[derive(Clone, Debug, Serialize)]
pub struct IommuMetrics {
    /// Refused endpoint accesses, the first 1024 (each with `iova`,
    /// `endpoint`, `domain`, `reason`, `write`).
    pub faults: Vec<crate::iommu::Fault>,
    /// All refused endpoint accesses.
    pub fault_count: u64,
    /// Domains at the end of the run.
    pub domains: usize,
}

impl IommuMetrics {
    /// The figures of `iommu` now.
    pub fn of(iommu: &crate::iommu::VirtualIommu) -> Self {
        let state = iommu.read();
        let (faults, fault_count) = state.faults();
        IommuMetrics {
            faults: faults.to_vec(),
            fault_count,
            domains: state.domain_count(),
        }
    }
}

/// One device in the metrics JSON.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DeviceMetrics {
    /// The device's name (`blk0`, `rng0`, `vsock0`).
    pub name: String,
    /// Its kind (`virtio-blk`, `virtio-rng`, `virtio-vsock`).
    pub kind: &'static str,
    /// Requests completed (successfully or not).
    pub requests: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Requests completed with an error status.
    pub errors: u64,
    /// Device accesses the DMA filter refused.
    pub dma_refusals: u64,
}

/// What the SNP model launched and how the guest's pages moved.
#[derive(Clone, Debug, Serialize)]
pub struct SnpMetrics {
    /// The launch digest (hex).
    pub measurement: String,
    /// Private/shared page counts and conversions.
    pub page_states: crate::page_state::PageStateSummary,
    /// The firmware model's state and RMP counters.
    pub model: umbra_snp_model::psp::ModelSummary,
    /// Attestation reports the model signed.
    pub reports_signed: u64,
    /// GHCB-page exits by event (`ioio`, `mmio_read`, `mmio_write`, `msr`,
    /// `cpuid`, `psc`, `guest_request`, `unsupported`).
    pub ghcb_exits: std::collections::BTreeMap<&'static str, u64>,
    /// #VCs the model delivered for direct port accesses.
    pub vc_injected: u64,
    /// Direct accesses silicon would not have let through.
    pub fidelity_violations: Vec<crate::backend::snp_model::ghcb::FidelityViolation>,
}

impl RunMetrics {
    /// Writes the summary as pretty JSON.
    pub fn write_to(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }
}
