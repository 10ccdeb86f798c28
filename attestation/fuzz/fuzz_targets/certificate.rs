//! umbra-attest's certificate parser on hostile files: no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = umbra_attestation::chain::load_certs(data, "fuzz") { for c in &certs { let _ = umbra_attestation::chain::VekExtensions::from_cert(c, "fuzz"); } }
    let _ = umbra_attestation::chain::VekExtensions::from_der(data, "fuzz");
    let _ = umbra_attestation::der::certificate_extensions(data);
    let _ = umbra_attestation::der::is_pss_sha384(data);
});
