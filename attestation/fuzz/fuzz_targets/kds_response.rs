//! umbra-attest's kds_response parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = umbra_attestation::kds::fuzz_parse_response(data);
});
