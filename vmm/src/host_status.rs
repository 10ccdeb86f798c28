//! `umbra host status [--json]`: what this host offers for confidential
//! guests — `/dev/sev` and the firmware's SEV and SNP platform status, the
//! kvm_amd module parameters, the VM types KVM offers and the VMSA features
//! it accepts. Everything is probed, nothing is assumed; anything missing
//! is reported as such, and the command exits 0 either way.

use std::path::{Path, PathBuf};

use serde::Serialize;
use thiserror::Error;

use crate::backend::sev::uapi::{self, SevPlatformStatus, SnpPlatformStatus};
use crate::backend::sev::{get_device_attr, vm_types, SevDevice};

/// Errors of the host-status probe (each is reported inside the status,
/// not as a failure of the command).
#[derive(Debug, Error)]
pub enum HostStatusError {
    /// A kvm_amd parameter file exists but could not be read.
    #[error("reading {path} failed")]
    ReadParameter {
        /// The file.
        path: String,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// The status could not be serialised as JSON.
    #[error("serialising the host status failed")]
    Serialize(#[source] serde_json::Error),
}

/// Where the probe looks (overridable for tests).
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// The SEV device node.
    pub sev_device: PathBuf,
    /// kvm_amd's parameter directory.
    pub kvm_amd_parameters: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sev_device: PathBuf::from(crate::backend::sev::SEV_DEVICE),
            kvm_amd_parameters: PathBuf::from("/sys/module/kvm_amd/parameters"),
        }
    }
}

/// The kvm_amd module parameters (`None`: file absent, e.g. no kvm_amd).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmAmdParameters {
    /// `sev`.
    pub sev: Option<bool>,
    /// `sev_es`.
    pub sev_es: Option<bool>,
    /// `sev_snp`.
    pub sev_snp: Option<bool>,
    /// Problems reading them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What KVM offers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KvmStatus {
    /// Whether `/dev/kvm` opened.
    pub available: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `KVM_CAP_VM_TYPES` (bit N = type N).
    pub vm_types_mask: u64,
    /// The same, by name.
    pub vm_types: Vec<String>,
    /// `KVM_X86_SEV_VMSA_FEATURES`, if KVM has the attribute.
    pub vmsa_features: Option<u64>,
    /// `KVM_X86_SNP_POLICY_BITS`, if KVM has the attribute.
    pub snp_policy_bits: Option<u64>,
}

/// `/dev/sev` and the firmware behind it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SevStatus {
    /// Whether the device node exists.
    pub present: bool,
    /// Why it could not be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// SEV_PLATFORM_STATUS.
    pub platform: Option<SevPlatformStatus>,
    /// SNP_PLATFORM_STATUS.
    pub snp: Option<SnpPlatformStatus>,
    /// Why SNP_PLATFORM_STATUS failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snp_error: Option<String>,
}

/// Which platforms this host can launch now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `--platform sev`.
    pub sev: bool,
    /// `--platform sev-es`.
    pub sev_es: bool,
    /// `--platform snp`.
    pub snp: bool,
}

/// Everything `umbra host status` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostStatus {
    /// SEV device and firmware.
    pub sev_device: SevStatus,
    /// kvm_amd parameters.
    pub kvm_amd: KvmAmdParameters,
    /// KVM.
    pub kvm: KvmStatus,
    /// The conclusion.
    pub can_launch: Capabilities,
}

/// Parses a module parameter's contents (`Y`/`N`, `1`/`0`).
pub fn parse_parameter(s: &str) -> Option<bool> {
    match s.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn read_parameter(dir: &Path, name: &str) -> Result<Option<bool>, HostStatusError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(parse_parameter(&s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(HostStatusError::ReadParameter {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn probe_kvm_amd(dir: &Path) -> KvmAmdParameters {
    let mut p = KvmAmdParameters::default();
    let mut get = |name| {
        read_parameter(dir, name).unwrap_or_else(|e| {
            p.errors.push(e.to_string());
            None
        })
    };
    let (sev, sev_es, sev_snp) = (get("sev"), get("sev_es"), get("sev_snp"));
    p.sev = sev;
    p.sev_es = sev_es;
    p.sev_snp = sev_snp;
    p
}

/// Names of the VM types in a `KVM_CAP_VM_TYPES` mask.
pub fn vm_type_names(mask: u64) -> Vec<String> {
    (0..64)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            uapi::VM_TYPE_NAMES
                .iter()
                .find(|(v, _)| u64::from(*v) == bit)
                .map_or_else(|| format!("type-{bit}"), |(_, n)| (*n).to_string())
        })
        .collect()
}

fn probe_kvm() -> KvmStatus {
    let kvm = match kvm_ioctls::Kvm::new() {
        Ok(k) => k,
        Err(e) => {
            return KvmStatus {
                error: Some(format!("cannot open /dev/kvm: {e}")),
                ..Default::default()
            }
        }
    };
    let mask = vm_types(&kvm);
    KvmStatus {
        available: true,
        error: None,
        vm_types_mask: mask,
        vm_types: vm_type_names(mask),
        vmsa_features: get_device_attr(&kvm, uapi::GRP_SEV, uapi::ATTR_VMSA_FEATURES).ok(),
        snp_policy_bits: get_device_attr(&kvm, uapi::GRP_SEV, uapi::ATTR_SNP_POLICY_BITS).ok(),
    }
}

fn probe_sev(path: &Path) -> SevStatus {
    if !path.exists() {
        return SevStatus::default();
    }
    let mut s = SevStatus {
        present: true,
        ..Default::default()
    };
    match SevDevice::open_path(path) {
        Err(e) => s.error = Some(crate::error::error_chain(&e)),
        Ok(dev) => {
            match dev.platform_status() {
                Ok(p) => s.platform = Some(p),
                Err(e) => s.error = Some(e.to_string()),
            }
            match dev.snp_platform_status() {
                Ok(p) => s.snp = Some(p),
                Err(e) => s.snp_error = Some(e.to_string()),
            }
        }
    }
    s
}

/// What can be launched, from the probed facts.
pub fn capabilities(sev: &SevStatus, amd: &KvmAmdParameters, kvm: &KvmStatus) -> Capabilities {
    let firmware = sev.present && sev.error.is_none();
    let snp_fw = sev.snp.is_some_and(|s| s.rmp_initialized) || amd.sev_snp == Some(true);
    Capabilities {
        sev: firmware && kvm.available && amd.sev == Some(true),
        sev_es: firmware && kvm.available && amd.sev_es == Some(true),
        snp: firmware
            && kvm.available
            && snp_fw
            && kvm.vm_types_mask & (1 << uapi::VM_TYPE_SNP) != 0
            && kvm.vmsa_features.is_some(),
    }
}

/// Probes the host at `paths`.
pub fn collect_from(paths: &HostPaths) -> HostStatus {
    let sev_device = probe_sev(&paths.sev_device);
    let kvm_amd = probe_kvm_amd(&paths.kvm_amd_parameters);
    let kvm = probe_kvm();
    let can_launch = capabilities(&sev_device, &kvm_amd, &kvm);
    HostStatus {
        sev_device,
        kvm_amd,
        kvm,
        can_launch,
    }
}

/// Probes this host.
pub fn collect() -> HostStatus {
    collect_from(&HostPaths::default())
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "Y",
        Some(false) => "N",
        None => "not available (kvm_amd not loaded?)",
    }
}

/// The human-readable report.
pub fn render_human(s: &HostStatus) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let d = &s.sev_device;
    if !d.present {
        let _ = writeln!(
            o,
            "/dev/sev: not available (no SEV firmware driver on this host)"
        );
    } else if let Some(e) = &d.error {
        let _ = writeln!(o, "/dev/sev: present, not usable: {e}");
    } else {
        let _ = writeln!(o, "/dev/sev: present");
    }
    match &d.platform {
        Some(p) => {
            let _ = writeln!(
                o,
                "SEV platform: API {}.{} build {}, state {}, flags {:#x}{}, {} guest(s)",
                p.api_major,
                p.api_minor,
                p.build,
                uapi::platform_state_name(p.state),
                p.flags,
                if p.flags & uapi::SEV_STATUS_FLAGS_CONFIG_ES != 0 {
                    " (SEV-ES initialised)"
                } else {
                    ""
                },
                p.guest_count
            );
        }
        None => {
            let _ = writeln!(o, "SEV platform status: not available");
        }
    }
    match &d.snp {
        Some(p) => {
            let _ = writeln!(
                o,
                "SNP platform: {}, API {}.{} build {}, state {}, {} guest(s)",
                if p.rmp_initialized {
                    "enabled (RMP initialised)"
                } else {
                    "RMP not initialised"
                },
                p.api_major,
                p.api_minor,
                p.build_id,
                uapi::platform_state_name(p.state),
                p.guest_count
            );
            let _ = writeln!(o, "  TCB current:  {}", p.current_tcb);
            let _ = writeln!(o, "  TCB reported: {}", p.reported_tcb);
            let _ = writeln!(
                o,
                "  mask_chip_id {} mask_chip_key {} vlek {} ciphertext_hiding {}",
                p.mask_chip_id, p.mask_chip_key, p.vlek_en, p.ciphertext_hiding_en
            );
        }
        None => {
            let why = d.snp_error.as_deref().unwrap_or("no /dev/sev");
            let _ = writeln!(o, "SNP platform status: not available ({why})");
        }
    }
    let a = &s.kvm_amd;
    let _ = writeln!(
        o,
        "kvm_amd: sev={} sev_es={} sev_snp={}",
        yes_no(a.sev),
        yes_no(a.sev_es),
        yes_no(a.sev_snp)
    );
    for e in &a.errors {
        let _ = writeln!(o, "  {e}");
    }
    let k = &s.kvm;
    if k.available {
        let _ = writeln!(
            o,
            "KVM VM types: {} (mask {:#x})",
            k.vm_types.join(", "),
            k.vm_types_mask
        );
        match k.vmsa_features {
            Some(f) => {
                let _ = writeln!(o, "KVM VMSA features: {f:#x}");
            }
            None => {
                let _ = writeln!(
                    o,
                    "KVM VMSA features: not available (no SEV support in KVM)"
                );
            }
        }
    } else {
        let _ = writeln!(
            o,
            "KVM: not available ({})",
            k.error.as_deref().unwrap_or("unknown")
        );
    }
    let c = &s.can_launch;
    let word = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(
        o,
        "Can launch: snp {}, sev-es {}, sev {} (snp-model and none need only /dev/kvm)",
        word(c.snp),
        word(c.sev_es),
        word(c.sev)
    );
    o
}

/// The JSON report.
pub fn render_json(s: &HostStatus) -> Result<String, HostStatusError> {
    serde_json::to_string_pretty(s).map_err(HostStatusError::Serialize)
}

/// `umbra host status [--json]`: prints the report; exits 0 whatever the
/// host offers (1 only if the report cannot be written).
pub fn host_status_command(json: bool) -> i32 {
    let status = collect();
    let text = if json {
        match render_json(&status) {
            Ok(t) => t + "\n",
            Err(e) => {
                umbra_attestation::errln!("umbra: {e}");
                return 1;
            }
        }
    } else {
        render_human(&status)
    };
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("umbra-host-status-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn parameters_parse_y_n_and_numbers() {
        assert_eq!(parse_parameter("Y\n"), Some(true));
        assert_eq!(parse_parameter("N\n"), Some(false));
        assert_eq!(parse_parameter("1"), Some(true));
        assert_eq!(parse_parameter("0"), Some(false));
        assert_eq!(parse_parameter("maybe"), None);
    }

    #[test]
    fn kvm_amd_parameters_are_read_from_sysfs_files() {
        let d = dir("params");
        std::fs::write(d.join("sev"), "Y\n").expect("write");
        std::fs::write(d.join("sev_es"), "N\n").expect("write");
        let p = probe_kvm_amd(&d);
        assert_eq!(
            (p.sev, p.sev_es, p.sev_snp),
            (Some(true), Some(false), None)
        );
        assert!(p.errors.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn vm_type_names_follow_asm_kvm_h() {
        assert_eq!(vm_type_names(0b1), vec!["default"]);
        assert_eq!(
            vm_type_names(0b11101),
            vec!["default", "sev", "sev-es", "sev-snp"]
        );
        assert_eq!(vm_type_names(1 << 9), vec!["type-9"]);
    }

    #[test]
    fn snp_capability_needs_every_piece() {
        let sev = SevStatus {
            present: true,
            ..Default::default()
        };
        let amd = KvmAmdParameters {
            sev: Some(true),
            sev_es: Some(true),
            sev_snp: Some(true),
            errors: vec![],
        };
        let kvm = KvmStatus {
            available: true,
            vm_types_mask: 0b11101,
            vmsa_features: Some(0x20),
            ..Default::default()
        };
        assert_eq!(
            capabilities(&sev, &amd, &kvm),
            Capabilities {
                sev: true,
                sev_es: true,
                snp: true
            }
        );
        let plain = KvmStatus {
            vm_types_mask: 1,
            vmsa_features: None,
            ..kvm.clone()
        };
        assert!(!capabilities(&sev, &amd, &plain).snp);
        assert_eq!(
            capabilities(&SevStatus::default(), &amd, &kvm),
            Capabilities::default()
        );
    }

    /// On this machine (no SEV hardware) the report must say so truthfully,
    /// in both forms, and the command must exit 0.
    #[test]
    fn report_without_sev_hardware_is_truthful_and_exits_zero() {
        let d = dir("nosev");
        let paths = HostPaths {
            sev_device: d.join("no-such-sev"),
            kvm_amd_parameters: d.join("no-such-module"),
        };
        let s = collect_from(&paths);
        assert!(!s.sev_device.present);
        assert_eq!(s.sev_device.platform, None);
        assert_eq!(s.sev_device.snp, None);
        assert_eq!(s.can_launch, Capabilities::default());
        let human = render_human(&s);
        assert!(human.contains("/dev/sev: not available"), "{human}");
        assert!(
            human.contains("SNP platform status: not available"),
            "{human}"
        );
        assert!(human.contains("kvm_amd: sev=not available"), "{human}");
        assert!(
            human.contains("Can launch: snp no, sev-es no, sev no"),
            "{human}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&s).expect("json")).expect("valid JSON");
        assert_eq!(json["sev_device"]["present"], false);
        assert!(json["sev_device"]["snp"].is_null());
        assert_eq!(json["can_launch"]["snp"], false);
        if s.kvm.available {
            assert_ne!(s.kvm.vm_types_mask & 1, 0, "default VM type always offered");
            assert!(human.contains("KVM VM types: default"), "{human}");
            assert_eq!(json["kvm"]["vm_types"][0], "default");
        }
        let _ = std::fs::remove_dir_all(&d);
        // The real probe of this host, both forms.
        if !Path::new(crate::backend::sev::SEV_DEVICE).exists() {
            let real = collect();
            assert!(!real.sev_device.present);
            assert!(!real.can_launch.snp);
        }
        assert_eq!(host_status_command(false), 0);
        assert_eq!(host_status_command(true), 0);
    }
}
