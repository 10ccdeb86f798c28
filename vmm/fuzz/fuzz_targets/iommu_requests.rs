//! virtio-iommu MAP/UNMAP sequences against a reference model of the
//! mappings: statuses and translations must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    umbra_vmm::virtio::harness::fuzz_iommu(data);
});
