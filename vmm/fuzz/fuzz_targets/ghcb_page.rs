//! The SNP model's `ghcb_page` on guest-controlled bytes: no input may panic
//! the VMM (see umbra_vmm::backend::snp_model::harness).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use umbra_vmm::backend::snp_model::harness::FuzzSnp;

static GUEST: OnceLock<Mutex<FuzzSnp>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let guest = GUEST.get_or_init(|| Mutex::new(FuzzSnp::new()));
    let mut guest = guest.lock().unwrap_or_else(|p| p.into_inner());
    guest.ghcb_page(data);
});
