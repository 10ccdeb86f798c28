//! The KBS client's parsers on hostile bytes, with the sev crate as the
//! oracle: the firmware's HTTP reply reader must not panic, and the no_std
//! evidence writer must accept exactly the reports the sev crate reads
//! (through umbra-attestation) and write the same JSON for them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = umbra_firmware::http::parse_reply(data);
    let mut report = [0u8; 1184];
    let n = data.len().min(report.len());
    report[..n].copy_from_slice(&data[..n]);
    let ours = umbra_kbs_client::evidence::snp_evidence(&report, &[]);
    let sev = umbra_attestation::kbs::evidence::snp_evidence(&report, &[]);
    match (ours, sev) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the writer and the sev crate disagree"),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("one side refused: no_std {:?}, sev {:?}", a.is_ok(), b.is_ok()),
    }
});
