//! Configuration rules hold for library callers, not only for the CLI: a
//! confidential platform never gets KSM or a backing it cannot honour.
#![allow(clippy::unwrap_used)]

use std::time::Instant;
use umbra_vmm::config::{ConfigError, MemoryBacking, Platform, VmConfig};
use umbra_vmm::run::{run, VmmError};

#[test]
fn a_library_caller_gets_the_configuration_error_not_a_vm() {
    for platform in [
        Platform::SnpModel,
        Platform::Snp,
        Platform::SevEs,
        Platform::Sev,
    ] {
        let mut config = VmConfig::embedded(64 << 20, 1, "");
        config.platform = platform;
        config.ksm = true;
        match run(&config, Instant::now()) {
            Err(VmmError::Config(ConfigError::KsmConfidential(name))) => {
                assert_eq!(name, platform.name())
            }
            other => panic!("{platform:?} with KSM: {other:?}"),
        }
        config.ksm = false;
        for backing in [MemoryBacking::Thp, MemoryBacking::Hugetlb] {
            config.memory_backing = backing;
            match run(&config, Instant::now()) {
                Err(VmmError::Config(ConfigError::BackingUnsupported { backing: b, .. })) => {
                    assert_eq!(b, backing.name())
                }
                other => panic!("{platform:?} with {backing:?}: {other:?}"),
            }
        }
    }
}
