//! Launch-digest cases from `$UMBRA_VECTORS/launch-measurement/measurement_cases.json`,
//! checked through the library API and through `umbra-attest measure`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use umbra_attestation::measure::{
    self, vcpu_types, FirmwareImage, KernelHashes, MeasureInputs, VmmType,
};

fn vectors() -> Option<PathBuf> {
    common::launch_vectors()
}

fn cases(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("measurement_cases.json"))
        .unwrap_or_else(|e| panic!("reading measurement_cases.json: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing: {e}"));
    v["cases"].as_array().cloned().unwrap_or_default()
}

fn s<'a>(c: &'a Value, k: &str) -> Option<&'a str> {
    c[k].as_str()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn file(dir: &Path, p: &str) -> Vec<u8> {
    let path = if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        dir.join(p)
    };
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_svsm(c: &Value) -> bool {
    s(c, "mode") == Some("snp:svsm")
}

/// Computes a case through the library; `Err` carries the error message.
fn library_digest(dir: &Path, c: &Value) -> Result<String, String> {
    let mode = s(c, "mode").unwrap_or("snp");
    let data = file(dir, s(c, "ovmf").unwrap_or_default());
    let fw = FirmwareImage::parse(&data).map_err(|e| e.to_string())?;
    if mode == "snp:ovmf-hash" {
        return measure::snp_ovmf_hash(&fw)
            .map(|d| hex(&d))
            .map_err(|e| e.to_string());
    }
    let kernel_hashes = s(c, "kernel").map(|k| {
        let kernel = file(dir, k);
        let initrd = s(c, "initrd").map(|p| file(dir, p));
        KernelHashes::new(&kernel, initrd.as_deref(), s(c, "append"))
    });
    let vcpu_sig = match (s(c, "vcpu_sig"), s(c, "vcpu_type")) {
        (Some(sig), _) => {
            u32::from_str_radix(sig.trim_start_matches("0x"), 16).unwrap_or_else(|e| panic!("{e}"))
        }
        (None, Some(t)) => vcpu_types::vcpu_sig_of(t).unwrap_or_else(|| panic!("type {t}")),
        _ => 0,
    };
    let features = s(c, "guest_features")
        .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).unwrap_or(1))
        .unwrap_or(1);
    let inp = MeasureInputs {
        firmware: &fw,
        vcpus: c["vcpus"].as_u64().unwrap_or(0) as u32,
        vcpu_sig,
        guest_features: features,
        vmm_type: s(c, "vmm_type")
            .unwrap_or("QEMU")
            .parse::<VmmType>()
            .unwrap_or_else(|e| panic!("{e}")),
        kernel_hashes,
        ovmf_hash: s(c, "snp_ovmf_hash").map(|h| {
            unhex(h)
                .try_into()
                .unwrap_or_else(|_| panic!("ovmf hash length"))
        }),
        firmware_page_digests: None,
    };
    let r = match mode {
        "snp" => measure::snp_launch_digest(&inp).map(|d| hex(&d)),
        "seves" => measure::seves_digest(&inp).map(|d| hex(&d)),
        "sev" => measure::sev_digest(&fw, inp.kernel_hashes.as_ref()).map(|d| hex(&d)),
        other => panic!("unexpected mode {other}"),
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn library_matches_every_case() {
    let Some(dir) = vectors() else { return };
    let mut checked = 0;
    for c in cases(&dir) {
        let name = s(&c, "name").unwrap_or("?");
        if is_svsm(&c) {
            println!("{name}: skipped: svsm.bin is not among the vectors (see MANIFEST.md)");
            continue;
        }
        let got = library_digest(&dir, &c);
        match (s(&c, "expected_digest_hex"), s(&c, "expected_error")) {
            (Some(exp), _) => assert_eq!(got.as_deref(), Ok(exp), "case {name}"),
            (None, Some(err)) => assert_eq!(got, Err(err.to_string()), "case {name}"),
            _ => panic!("case {name} has no expectation"),
        }
        checked += 1;
    }
    assert!(checked >= 21, "only {checked} cases checked");
}

#[test]
fn cli_matches_every_case() {
    let Some(dir) = vectors() else { return };
    for c in cases(&dir) {
        let name = s(&c, "name").unwrap_or("?");
        if is_svsm(&c) {
            println!("{name}: skipped: svsm.bin is not among the vectors (see MANIFEST.md)");
            continue;
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_umbra-attest"));
        cmd.current_dir(&dir).arg("measure");
        cmd.args(["--mode", s(&c, "mode").unwrap_or("snp")]);
        cmd.args(["--ovmf", s(&c, "ovmf").unwrap_or_default()]);
        if let Some(v) = c["vcpus"].as_u64() {
            cmd.args(["--vcpus", &v.to_string()]);
        }
        for (flag, key) in [
            ("--vcpu-type", "vcpu_type"),
            ("--vmm-type", "vmm_type"),
            ("--kernel", "kernel"),
            ("--initrd", "initrd"),
            ("--append", "append"),
            ("--guest-features", "guest_features"),
            ("--snp-ovmf-hash", "snp_ovmf_hash"),
        ] {
            if let Some(v) = s(&c, key) {
                cmd.args([flag, v]);
            }
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running umbra-attest: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        match (s(&c, "expected_digest_hex"), s(&c, "expected_error")) {
            (Some(exp), _) => {
                assert!(out.status.success(), "case {name}: {stderr}");
                assert_eq!(stdout.trim(), exp, "case {name}");
            }
            (None, Some(err)) => {
                assert_eq!(out.status.code(), Some(1), "case {name}");
                assert_eq!(stderr.trim(), format!("Error: {err}"), "case {name}");
                assert!(stdout.is_empty());
            }
            _ => panic!("case {name} has no expectation"),
        }
    }
}

#[test]
fn base64_and_verbose_output() {
    let Some(dir) = vectors() else { return };
    let c = cases(&dir)
        .into_iter()
        .find(|c| s(c, "name") == Some("snp_without_kernel_feature_snp_only"))
        .unwrap_or_else(|| panic!("case missing"));
    let exp = s(&c, "expected_digest_hex").unwrap_or_default().to_string();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
            .current_dir(&dir)
            .args([
                "measure",
                "--mode",
                "snp",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
            ])
            .args(["--ovmf", s(&c, "ovmf").unwrap_or_default()])
            .args(["--guest-features", "0x1"])
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        run(&["-v"]),
        format!("Calculated SEV_SNP guest measurement: {exp}")
    );
    let b64 = run(&["--output-format", "base64"]);
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hex(&decoded), exp);
}

#[test]
fn bad_input_gives_one_error_line() {
    let Some(dir) = vectors() else { return };
    let ovmf = dir.join("sev-snp-measure-fixtures/ovmf_AmdSev_suffix.bin");
    let ovmf = ovmf.to_string_lossy();
    let bad: &[&[&str]] = &[
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-v9",
            "--ovmf",
            &ovmf,
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            "/nonexistent/OVMF.fd",
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-sig",
            "0xZZ",
            "--ovmf",
            &ovmf,
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            &ovmf,
            "--snp-ovmf-hash",
            "abc",
        ],
        &["--mode", "snp", "--vcpus", "1", "--ovmf", &ovmf],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            &ovmf,
            "--kernel",
            "/nonexistent/vmlinuz",
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            "/dev/null",
        ],
        &[
            "--mode",
            "snp",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC",
            "--ovmf",
            &ovmf,
            "--vmm-type",
            "xen",
        ],
    ];
    let huge: &[&str] = &[
        "--mode",
        "snp",
        "--vcpus",
        "4294967295",
        "--vcpu-type",
        "EPYC",
        "--ovmf",
        &ovmf,
    ];
    let bad: Vec<&[&str]> = bad.iter().copied().chain([huge]).collect();
    for args in &bad {
        let out = Command::new(env!("CARGO_BIN_EXE_umbra-attest"))
            .arg("measure")
            .args(*args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            matches!(out.status.code(), Some(1 | 2)),
            "{args:?}: {:?}",
            out.status
        );
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// Damaged images are errors, never panics: random byte edits in the footer
/// table and SEV metadata of the AmdSev fixture, measured in every mode.
#[test]
fn mutated_images_never_panic() {
    let Some(dir) = vectors() else { return };
    let base = file(&dir, "sev-snp-measure-fixtures/ovmf_AmdSev_suffix.bin");
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let kernel = KernelHashes::new(b"kernel", Some(b"initrd"), Some("console=ttyS0"));
    let mut errors = 0;
    for _ in 0..3_000 {
        let mut img = base.clone();
        for _ in 0..1 + next() % 4 {
            // Bias towards the table and metadata near the end of the image.
            let at = img.len() - 1 - (next() as usize % 0x400);
            img[at] = next() as u8;
        }
        let Ok(fw) = FirmwareImage::parse(&img) else {
            errors += 1;
            continue;
        };
        for vmm in [VmmType::Qemu, VmmType::Ec2, VmmType::Gce] {
            let inp = MeasureInputs {
                firmware: &fw,
                vcpus: 2,
                vcpu_sig: 0x800f12,
                guest_features: 1,
                vmm_type: vmm,
                kernel_hashes: (next() % 2 == 0).then(|| kernel.clone()),
                ovmf_hash: None,
                firmware_page_digests: None,
            };
            let _ = measure::snp_launch_digest(&inp);
            let _ = measure::seves_digest(&inp);
            let _ = measure::sev_digest(&fw, inp.kernel_hashes.as_ref());
        }
        let _ = measure::snp_ovmf_hash(&fw);
    }
    println!("{errors} of 3000 mutated images rejected by the parser");
}

/// The page plan a VMM follows (`snp_launch_steps`, one LAUNCH_UPDATE per
/// page, VMSAs from `VcpuSaveAreas`) reproduces the vector digests.
#[test]
fn step_plan_walk_reproduces_snp_cases() {
    use measure::{LaunchDigest, PageType, PlanOptions, StepSource, VcpuSaveAreas};
    let Some(dir) = vectors() else { return };
    let mut checked = 0;
    for c in cases(&dir) {
        if s(&c, "mode") != Some("snp") || s(&c, "expected_digest_hex").is_none() {
            continue;
        }
        let data = file(&dir, s(&c, "ovmf").unwrap_or_default());
        let fw = FirmwareImage::parse(&data).unwrap_or_else(|e| panic!("{e}"));
        let vmm: VmmType = s(&c, "vmm_type")
            .unwrap_or("QEMU")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        let kernel = s(&c, "kernel").map(|k| {
            let initrd = s(&c, "initrd").map(|p| file(&dir, p));
            KernelHashes::new(&file(&dir, k), initrd.as_deref(), s(&c, "append"))
        });
        let seed = s(&c, "snp_ovmf_hash").map(|h| {
            let v: [u8; 48] = unhex(h).try_into().unwrap_or_else(|_| panic!("len"));
            v
        });
        let vcpus = c["vcpus"].as_u64().unwrap_or(0) as u32;
        let sig = s(&c, "vcpu_sig")
            .map(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap_or(0))
            .unwrap_or(0);
        let features = s(&c, "guest_features")
            .map(|f| u64::from_str_radix(f.trim_start_matches("0x"), 16).unwrap_or(1))
            .unwrap_or(1);
        let opts = PlanOptions {
            vmm_type: vmm,
            kernel_hashes: kernel.is_some(),
            include_firmware: seed.is_none(),
            vcpus,
        };
        let steps = measure::snp_launch_steps(&fw, &opts).unwrap_or_else(|e| panic!("{e}"));
        let areas = VcpuSaveAreas::new(&fw, features, sig, vmm).unwrap_or_else(|e| panic!("{e}"));
        let mut ld = seed.map_or_else(LaunchDigest::new, LaunchDigest::with_seed);
        for step in &steps {
            match step.source {
                StepSource::Image { .. } => {
                    let bytes = step.image_bytes(&fw).unwrap_or_else(|| panic!("bytes"));
                    for (gpa, page) in step.page_gpas().zip(bytes.chunks_exact(4096)) {
                        let page: &[u8; 4096] = page.try_into().unwrap_or_else(|_| panic!("page"));
                        ld.update(PageType::Normal, gpa, Some(page));
                    }
                }
                StepSource::KernelHashes { offset } => {
                    let page = kernel
                        .as_ref()
                        .and_then(|k| k.page(offset))
                        .unwrap_or_else(|| panic!("kernel hashes page"));
                    ld.update(step.page_type, step.gpa, Some(&page));
                }
                StepSource::None => {
                    for gpa in step.page_gpas() {
                        ld.update(step.page_type, gpa, None);
                    }
                }
                StepSource::Vmsa { vcpu } => {
                    let area = areas.get(vcpu).unwrap_or_else(|e| panic!("{e}"));
                    ld.update(PageType::Vmsa, step.gpa, Some(area.as_page()));
                }
            }
        }
        assert_eq!(
            hex(&ld.digest()),
            s(&c, "expected_digest_hex").unwrap_or_default(),
            "{}",
            s(&c, "name").unwrap_or("?")
        );
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} SNP cases");
}
