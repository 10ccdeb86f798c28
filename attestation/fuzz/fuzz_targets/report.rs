//! umbra-attest's report parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = umbra_attestation::report::AttestationReport::from_bytes(data);
});
