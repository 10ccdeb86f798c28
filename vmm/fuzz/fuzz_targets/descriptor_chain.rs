//! Guest-written descriptor tables, available rings and buffers, walked
//! by virtio-queue over the DMA filter and served by virtio-blk: nothing
//! a guest writes may panic the VMM or reach past the filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use umbra_vmm::virtio::harness::{fuzz_block, FuzzDevice, FuzzGuest};

static GUEST: OnceLock<FuzzGuest> = OnceLock::new();
static DEVICE: OnceLock<Mutex<FuzzDevice>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let guest = GUEST.get_or_init(FuzzGuest::new);
    let device = DEVICE.get_or_init(|| Mutex::new(fuzz_block()));
    let mut device = device.lock().unwrap_or_else(|p| p.into_inner());
    guest.serve(&mut device, 0, data);
});
