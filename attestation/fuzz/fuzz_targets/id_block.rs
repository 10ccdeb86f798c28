//! umbra-attest's id_block parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = umbra_attestation::id_block::IdBlock::from_slice(data);
    let _ = umbra_attestation::id_block::IdAuth::from_slice(data);
});
