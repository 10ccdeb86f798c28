//! umbra-attest's crl parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = umbra_attestation::chain::load_crl(data, "fuzz");
});
