//! SNP memory hygiene on the model: every conversion discards the half
//! the guest no longer uses (both ways, as QEMU does), and counts it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, metrics, scratch, stderr, umbra};

#[test]
fn both_halves_of_each_conversion_are_discarded() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("hygiene");
    let m = dir.join("m.json");
    let keys = common::model_keys();
    let out = umbra(&[
        "run",
        "--platform",
        "snp-model",
        "--model-keys",
        keys.to_str().unwrap(),
        "--cmdline",
        "scenario=psc",
        "--metrics-json",
        m.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pages = &metrics(&m)["snp"]["page_states"];
    // The psc scenario makes its test page shared and then private again;
    // the GHCB and the boot-information page were made shared too.
    let made_shared = pages["pages_made_shared"].as_u64().unwrap();
    let made_private = pages["pages_made_private"].as_u64().unwrap();
    assert!(made_private >= 1, "{pages}");
    assert_eq!(
        pages["discarded_private_pages"].as_u64(),
        Some(made_shared),
        "{pages}"
    );
    assert_eq!(
        pages["discarded_shared_pages"].as_u64(),
        Some(made_private),
        "{pages}"
    );
}
