//! Guest-written vsock transmit chains (headers, payloads, any op, any
//! port) parsed by virtio-vsock's `VsockPacket` over the DMA filter and
//! handled by umbra's vsock device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use umbra_vmm::virtio::harness::{fuzz_vsock, FuzzDevice, FuzzGuest, VSOCK_TX};

static GUEST: OnceLock<FuzzGuest> = OnceLock::new();
static DEVICE: OnceLock<Mutex<FuzzDevice>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let guest = GUEST.get_or_init(FuzzGuest::new);
    let device = DEVICE.get_or_init(|| Mutex::new(fuzz_vsock()));
    let mut device = device.lock().unwrap_or_else(|p| p.into_inner());
    guest.serve(&mut device, VSOCK_TX, data);
});
