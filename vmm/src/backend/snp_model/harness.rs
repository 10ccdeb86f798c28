//! What the fuzz targets in `vmm/fuzz` drive in the SNP model: arbitrary
//! GHCB MSR protocol values, GHCB pages (every NAE event, the page-state
//! change structure, guest requests), PVALIDATE arguments and guest
//! messages, fed to the same runtime the vCPUs use. Not part of the
//! VMM's interface.

use super::ghcb::SnpRuntime;
use crate::memory::{GuestRam, MemoryMap};
use crate::page_state::{PageState, PageStates};
use crate::shared_memory::SharedMemory;
use std::sync::{Arc, Mutex};
use umbra_firmware::layout::{MSR_GHCB, MSR_UMBRA_PVALIDATE, MSR_UMBRA_VMGEXIT};
use umbra_snp_model::{Platform, SnpFirmwareModel};

/// The shared GHCB page of the fuzzed guest.
const GHCB: u64 = 0x5000;
/// Two more shared pages (guest-request buffers, scratch).
const SHARED: [u64; 2] = [0x6000, 0x7000];

/// A 16 MiB confidential guest with one vCPU and its GHCB registered.
pub struct FuzzSnp {
    runtime: SnpRuntime,
    shared: SharedMemory,
}

impl std::fmt::Debug for FuzzSnp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FuzzSnp").finish_non_exhaustive()
    }
}

impl Default for FuzzSnp {
    fn default() -> Self {
        Self::new()
    }
}

impl FuzzSnp {
    /// A fresh guest.
    pub fn new() -> Self {
        let map = MemoryMap::new(16 << 20, 64 << 10).expect("memory map");
        let ram = Arc::new(GuestRam::allocate_confidential(&map).expect("RAM"));
        let states = PageStates::new(&map.ram_ranges(), PageState::Private).expect("states");
        let shared = SharedMemory::new(ram.clone(), Arc::new(Mutex::new(states)));
        let model =
            SnpFirmwareModel::new(&map.ram_ranges(), None, Platform::default()).expect("model");
        let mut runtime =
            SnpRuntime::new(model, ram, shared.clone(), 1, 1, vec![(0, [1, 2, 3, 4])]);
        for page in [GHCB].iter().chain(&SHARED) {
            let _ = runtime.convert(*page, 4096, PageState::Shared);
        }
        runtime.wrmsr(0, MSR_GHCB, GHCB | 0x12);
        runtime.wrmsr(0, MSR_UMBRA_VMGEXIT, 0);
        FuzzSnp { runtime, shared }
    }

    /// GHCB MSR protocol requests: each 8 bytes are a value written to the
    /// GHCB MSR, then a VMGEXIT.
    pub fn msr_protocol(&mut self, data: &[u8]) {
        for word in data.chunks_exact(8) {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            let _ = self.runtime.wrmsr(0, MSR_GHCB, value);
            let _ = self.runtime.wrmsr(0, MSR_UMBRA_VMGEXIT, 0);
            let _ = self.runtime.rdmsr(0, MSR_GHCB);
        }
        self.restore_ghcb();
    }

    /// One GHCB page of the guest's choosing (the first 4 KiB of `data`,
    /// the rest into the two other shared pages), then a VMGEXIT.
    pub fn ghcb_page(&mut self, data: &[u8]) {
        let mut page = [0u8; 4096];
        let n = data.len().min(4096);
        page[..n].copy_from_slice(&data[..n]);
        let _ = self.shared.write(GHCB, &page);
        for (i, chunk) in data
            .get(4096..)
            .unwrap_or_default()
            .chunks(4096)
            .take(2)
            .enumerate()
        {
            let _ = self.shared.write(SHARED[i], chunk);
        }
        self.restore_ghcb();
        let _ = self.runtime.wrmsr(0, MSR_UMBRA_VMGEXIT, 0);
    }

    /// A page-state change through the GHCB: `data` is the PSC structure
    /// (header and entries) in the shared buffer, the exit code 0x8000_0010.
    pub fn page_state_change(&mut self, data: &[u8]) {
        let mut page = [0u8; 4096];
        // SW_EXITCODE, SW_SCRATCH (the shared buffer at 0x800 of the
        // GHCB), marked valid in the bitmap (GHCB spec 56421 §2.5).
        use super::ghcb::ghcb_page::{
            SHARED_BUFFER, SHARED_BUFFER_END, SW_EXIT_CODE, SW_SCRATCH, VALID_BITMAP,
        };
        let put = |page: &mut [u8; 4096], at: usize, value: u64| {
            page[at..at + 8].copy_from_slice(&value.to_le_bytes());
            let bit = at / 8;
            page[VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
        };
        put(&mut page, SW_EXIT_CODE, 0x8000_0010);
        put(&mut page, SW_SCRATCH, GHCB + SHARED_BUFFER as u64);
        let n = data.len().min(SHARED_BUFFER_END - SHARED_BUFFER);
        page[SHARED_BUFFER..SHARED_BUFFER + n].copy_from_slice(&data[..n]);
        let _ = self.shared.write(GHCB, &page);
        self.restore_ghcb();
        let _ = self.runtime.wrmsr(0, MSR_UMBRA_VMGEXIT, 0);
    }

    /// PVALIDATE requests: each 8 bytes are `gpa | validate << 1 | 2M`.
    pub fn pvalidate(&mut self, data: &[u8]) {
        for word in data.chunks_exact(8) {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            // Keep addresses near the guest so that the RMP is reached.
            let value = value & ((64 << 20) - 1);
            let _ = self.runtime.wrmsr(0, MSR_UMBRA_PVALIDATE, value);
            let _ = self.runtime.rdmsr(0, MSR_UMBRA_PVALIDATE);
        }
    }

    /// A guest message: `data` is the request page the firmware model
    /// authenticates, decrypts and parses (SNP ABI chapter 7).
    pub fn guest_message(&mut self, data: &[u8]) {
        let mut page = [0u8; 4096];
        let n = data.len().min(4096);
        page[..n].copy_from_slice(&data[..n]);
        let _ = self.runtime.model.guest_request(&page);
        let _ = umbra_snp_model::guest_msg::open(&[0; 32], &page);
    }

    fn restore_ghcb(&mut self) {
        let _ = self.runtime.wrmsr(0, MSR_GHCB, GHCB);
    }
}
