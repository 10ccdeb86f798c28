//! umbra-attest's policy_toml parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) { if let Ok(p) = umbra_attestation::policy::PolicyFile::from_toml(text) { let _ = p.compile(); } }
});
