//! umbra-agent's certificate-table parser (the host's auxblob, hostile
//! input in a confidential guest): no input may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = umbra_guest_agent::cert_table::parse(data) {
        for (kind, der) in entries {
            let _ = umbra_guest_agent::cert_table::file_name(kind);
            let _ = umbra_attestation::chain::load_cert(der, "fuzz");
        }
    }
});
