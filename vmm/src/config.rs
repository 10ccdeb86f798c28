//! What a user asked for: the validated configuration of one VM run.

use std::path::PathBuf;
use thiserror::Error;

/// Errors in user-supplied configuration values.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A size string did not parse.
    #[error("invalid size '{0}': use a number with an optional K, M, G or T suffix (plain numbers are MiB)")]
    ParseSize(String),
    /// The memory size is zero or beyond what umbra supports.
    #[error("memory size {0} bytes is out of range: give between {min} MiB and {max} GiB", min = MIN_MEMORY >> 20, max = MAX_MEMORY >> 30)]
    MemorySize(u64),
    /// The memory size is not a multiple of the page size.
    #[error("memory size {0} bytes is not a multiple of 4 KiB")]
    MemoryAlignment(u64),
    /// The vCPU count is zero.
    #[error("at least one vCPU is required")]
    NoVcpus,
    /// A device asked for `iommu=on` without `--iommu`.
    #[error("{0} has iommu=on but there is no --iommu")]
    IommuMissing(&'static str),
    /// KSM was asked for on a confidential platform.
    #[error("--ksm is refused for confidential guests (--platform {0}): page merging leaks contents across VMs")]
    KsmConfidential(&'static str),
    /// A RAM backing the platform does not honour.
    #[error("--memory-backing {backing} is not supported on --platform {platform}: confidential RAM is a private memfd of 4 KiB pages")]
    BackingUnsupported {
        /// The backing asked for.
        backing: &'static str,
        /// The platform.
        platform: &'static str,
    },
}

/// Smallest guest umbra starts (the firmware's stacks end at 2 MiB).
pub const MIN_MEMORY: u64 = 4 << 20;
/// Largest guest umbra starts: 4 TiB, far beyond this product's use, small
/// enough that a typo (`--memory 1000000G`) is caught before any mmap.
pub const MAX_MEMORY: u64 = 4 << 40;

/// The confidential-computing platform to launch on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    /// Plain KVM, no memory encryption.
    None,
    /// The software model of the SNP firmware over plain KVM.
    SnpModel,
    /// AMD SEV-SNP hardware.
    Snp,
    /// AMD SEV-ES hardware.
    SevEs,
    /// AMD SEV hardware.
    Sev,
}

impl Platform {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Platform::None => "none",
            Platform::SnpModel => "snp-model",
            Platform::Snp => "snp",
            Platform::SevEs => "sev-es",
            Platform::Sev => "sev",
        }
    }

    /// Whether guest memory is (or models) encrypted, private memory.
    pub fn is_confidential(self) -> bool {
        self != Platform::None
    }
}

/// What to do when the guest makes a refused memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ViolationPolicy {
    /// Record it, log it, let the guest continue (the access is dropped).
    Log,
    /// Record it, log it and stop the VM with the violation exit code.
    Stop,
}

/// How guest RAM is backed on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBacking {
    /// Anonymous private memory (4 KiB pages).
    Anon,
    /// Anonymous memory advised for transparent huge pages.
    Thp,
    /// A memfd on the hugetlb pool (2 MiB pages, reserved up front).
    Hugetlb,
}

impl MemoryBacking {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MemoryBacking::Anon => "anon",
            MemoryBacking::Thp => "thp",
            MemoryBacking::Hugetlb => "hugetlb",
        }
    }
}

/// Where guest code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootSource {
    /// umbra's own firmware, embedded in the binary.
    EmbeddedFirmware,
    /// A ROM image such as OVMF.fd, mapped to end at 4 GiB.
    Firmware(PathBuf),
    /// Direct Linux boot of a bzImage.
    Kernel {
        /// The bzImage.
        kernel: PathBuf,
        /// An optional initramfs.
        initrd: Option<PathBuf>,
    },
}

/// Where the serial console goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SerialOutput {
    /// The VMM's standard output.
    Stdout,
    /// A file (created or truncated).
    File(PathBuf),
    /// Discarded.
    Null,
}

/// One VM run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Platform to launch on.
    pub platform: Platform,
    /// Bytes of guest RAM.
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Command line for the firmware or kernel.
    pub cmdline: String,
    /// Guest code.
    pub boot: BootSource,
    /// Serial console destination.
    pub serial: SerialOutput,
    /// Violation policy.
    pub on_violation: ViolationPolicy,
    /// RAM backing.
    pub memory_backing: MemoryBacking,
    /// Opt in to KSM page merging (plain guests only).
    pub ksm: bool,
    /// Stop the VM after this long.
    pub timeout: Option<std::time::Duration>,
    /// SEV-SNP launch inputs (used by the SNP platforms).
    pub snp: SnpOptions,
    /// virtio-blk disks (`--disk`), in transport order.
    pub disks: Vec<crate::device_config::DiskConfig>,
    /// A virtio-rng device (`--rng`).
    pub rng: bool,
    /// A virtio-vsock device (`--vsock`).
    pub vsock: Option<crate::device_config::VsockConfig>,
    /// A virtio-iommu (`--iommu`) for the devices given `iommu=on`.
    pub iommu: bool,
    /// Per-thread seccomp filters (`--seccomp`).
    pub seccomp: crate::seccomp::SeccompMode,
    /// The control API's Unix socket (`--api-socket`).
    pub api_socket: Option<PathBuf>,
    /// Where `--metrics-json` goes (the API's FlushMetrics writes there).
    pub metrics_json: Option<PathBuf>,
    /// Host NUMA node for guest memory and vCPU threads (`--numa-node`).
    pub numa_node: Option<u32>,
    /// A virtio-balloon with this initial target in bytes (`--balloon size=`).
    pub balloon: Option<u64>,
    /// ACPI tables for `--kernel` boots (`--acpi on`, the default); with
    /// `--acpi off` the kernel finds the virtio-mmio transports through
    /// `virtio_mmio.device=` on its command line instead.
    pub acpi: bool,
}

/// Inputs of an SEV-SNP launch, with sev-snp-measure's meanings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnpOptions {
    /// QEMU CPU model name for the VMSA's CPUID signature.
    pub vcpu_type: String,
    /// VMSA SEV_FEATURES.
    pub guest_features: u64,
    /// Guest policy.
    pub policy: u64,
    /// HOST_DATA (32 bytes).
    pub host_data: [u8; 32],
    /// ID block file.
    pub id_block: Option<PathBuf>,
    /// ID auth file.
    pub id_auth: Option<PathBuf>,
    /// Where the model writes report.bin and its certificates.
    pub attest_out: Option<PathBuf>,
    /// The SNP model's key directory.
    pub model_keys: Option<PathBuf>,
}

impl Default for SnpOptions {
    fn default() -> Self {
        SnpOptions {
            vcpu_type: "EPYC-v4".into(),
            guest_features: 0x1,
            policy: 0x3_0000,
            host_data: [0; 32],
            id_block: None,
            id_auth: None,
            attest_out: None,
            model_keys: None,
        }
    }
}

impl VmConfig {
    /// A configuration that boots the embedded firmware with defaults.
    pub fn embedded(memory: u64, vcpus: u32, cmdline: &str) -> Self {
        VmConfig {
            platform: Platform::None,
            memory,
            vcpus,
            cmdline: cmdline.to_string(),
            boot: BootSource::EmbeddedFirmware,
            serial: SerialOutput::Stdout,
            on_violation: ViolationPolicy::Stop,
            memory_backing: MemoryBacking::Anon,
            ksm: false,
            timeout: None,
            snp: SnpOptions::default(),
            disks: Vec::new(),
            rng: false,
            vsock: None,
            iommu: false,
            seccomp: crate::seccomp::SeccompMode::On,
            api_socket: None,
            metrics_json: None,
            numa_node: None,
            balloon: None,
            acpi: true,
        }
    }

    /// Checks the values that do not depend on the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.iommu {
            if self.disks.iter().any(|d| d.iommu) {
                return Err(ConfigError::IommuMissing("--disk"));
            }
            if self.vsock.as_ref().is_some_and(|v| v.iommu) {
                return Err(ConfigError::IommuMissing("--vsock"));
            }
        }
        if self.memory < MIN_MEMORY || self.memory > MAX_MEMORY {
            return Err(ConfigError::MemorySize(self.memory));
        }
        if !self.memory.is_multiple_of(4096) {
            return Err(ConfigError::MemoryAlignment(self.memory));
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.platform.is_confidential() {
            if self.ksm {
                return Err(ConfigError::KsmConfidential(self.platform.name()));
            }
            if self.memory_backing != MemoryBacking::Anon {
                return Err(ConfigError::BackingUnsupported {
                    backing: self.memory_backing.name(),
                    platform: self.platform.name(),
                });
            }
        }
        Ok(())
    }
}

/// Parses a memory size as QEMU's `-m` does: a plain number is MiB; K, M, G
/// and T suffixes (optionally followed by `iB` or `B`) are binary units.
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let err = || ConfigError::ParseSize(text.to_string());
    let trimmed = text.trim();
    let lower = trimmed.to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, unit) = lower.split_at(unit_start);
    let number: u64 = digits.parse().map_err(|_| err())?;
    let shift = match unit.trim() {
        "" | "m" | "mb" | "mib" => 20,
        "b" => 0,
        "k" | "kb" | "kib" => 10,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(err()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_guests_may_merge_pages_and_use_thp() {
        // The confidential refusals are tested through the library in
        // vmm/tests/config_rules.rs.
        let mut plain = VmConfig::embedded(64 << 20, 1, "");
        plain.ksm = true;
        plain.memory_backing = MemoryBacking::Thp;
        assert_eq!(plain.validate(), Ok(()));
    }

    #[test]
    fn sizes_follow_qemu_units() {
        assert_eq!(parse_size("512"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("4096b"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn rejects_zero_absurd_and_unaligned_memory() {
        let mut c = VmConfig::embedded(0, 1, "");
        assert_eq!(c.validate(), Err(ConfigError::MemorySize(0)));
        c.memory = MAX_MEMORY + 4096;
        assert_eq!(
            c.validate(),
            Err(ConfigError::MemorySize(MAX_MEMORY + 4096))
        );
        c.memory = (64 << 20) + 1;
        assert_eq!(
            c.validate(),
            Err(ConfigError::MemoryAlignment((64 << 20) + 1))
        );
        c.memory = 64 << 20;
        c.vcpus = 0;
        assert_eq!(c.validate(), Err(ConfigError::NoVcpus));
        c.vcpus = 2;
        assert_eq!(c.validate(), Ok(()));
    }
}
