//! virtio-iommu end to end: the firmware's IOMMU driver attaches the block
//! device, maps its buffers, and provokes every refusal; on plain KVM and
//! the SNP model. And the VIOT table, read back with `iasl -d`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, metrics, peer_available, scratch, stderr, stdout, umbra};
use std::path::Path;
use std::process::Command;

const PLATFORMS: [&str; 2] = ["none", "snp-model"];
/// Where the firmware maps the block device's area in its IOVA space.
const IOVA_BASE: u64 = 0x40_0000_0000;

fn run(platform: &str, scenario: &str, dir: &Path) -> (std::process::Output, serde_json::Value) {
    let image = dir.join(format!("{platform}-{scenario}.img"));
    std::fs::write(&image, vec![0u8; 1 << 20]).unwrap();
    let m = dir.join(format!("{platform}-{scenario}.json"));
    let disk = format!("path={},iommu=on", image.display());
    let cmdline = format!("scenario={scenario}");
    let mut args = vec!["run".to_string()];
    args.extend(common::platform_args(platform));
    args.extend(
        [
            "--iommu",
            "--disk",
            &disk,
            "--cmdline",
            &cmdline,
            "--metrics-json",
            m.to_str().unwrap(),
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = umbra(&args);
    let json = metrics(&m);
    (out, json)
}

fn check(platform: &str, scenario: &str, dir: &Path) -> serde_json::Value {
    let (out, m) = run(platform, scenario, dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{platform} {scenario}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(": ok"),
        "{platform} {scenario}: {}",
        stdout(&out)
    );
    m
}

#[test]
fn iommu_scenarios_pass_on_both_platforms() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("iommu-scenarios");
    for platform in PLATFORMS {
        let m = check(platform, "iommu-blk", &dir);
        assert_eq!(m["iommu"]["fault_count"], 0, "{platform}");
        assert_eq!(m["iommu"]["domains"], 1, "{platform}");
        assert_eq!(m["devices"][0]["errors"], 0, "{platform}");

        // An unmapped IOVA and a write through a read-only mapping: one
        // fault each, naming the IOVA, the endpoint and the domain.
        for scenario in ["iommu-unmapped", "iommu-ro", "iommu-unmap-race"] {
            let m = check(platform, scenario, &dir);
            let faults = m["iommu"]["faults"].as_array().unwrap();
            assert_eq!(faults.len(), 1, "{platform} {scenario}: {faults:?}");
            assert_eq!(
                faults[0]["iova"],
                IOVA_BASE + 0x4000,
                "{platform} {scenario}"
            );
            assert_eq!(faults[0]["endpoint"], 0, "{platform} {scenario}");
            assert_eq!(faults[0]["domain"], 1, "{platform} {scenario}");
            assert_eq!(faults[0]["reason"], "mapping", "{platform} {scenario}");
            assert_eq!(faults[0]["write"], true, "{platform} {scenario}");
            assert_eq!(m["devices"][0]["dma_refusals"], 1, "{platform} {scenario}");
        }

        // Not attached: not even the rings; the fault names no domain.
        let m = check(platform, "iommu-detached", &dir);
        let faults = m["iommu"]["faults"].as_array().unwrap();
        assert_eq!(faults[0]["reason"], "domain", "{platform}");
        assert_eq!(faults[0]["iova"], IOVA_BASE, "{platform}");
        assert!(faults[0]["domain"].is_null(), "{platform}");
    }
}

#[test]
fn iommu_on_needs_an_iommu() {
    let out = umbra(&["run", "--disk", "path=/dev/null,iommu=on"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("iommu=on but there is no --iommu"),
        "{}",
        stderr(&out)
    );
}

/// Reads a little-endian field of `len` bytes from the VIOT.
fn field(table: &[u8], at: usize, len: usize) -> u64 {
    table[at..at + len]
        .iter()
        .rev()
        .fold(0u64, |v, b| (v << 8) | u64::from(*b))
}

#[test]
fn viot_names_the_iommu_and_its_endpoints() {
    let present = Command::new("iasl").arg("-v").output().is_ok();
    if !peer_available("iasl (acpica-tools)", present) {
        return;
    }
    let dir = scratch("iommu-viot");
    let image = dir.join("d.img");
    std::fs::write(&image, vec![0u8; 4096]).unwrap();
    let on = format!("path={},iommu=on", image.display());
    let off = format!("path={}", image.display());
    let tables = dir.join("tables");
    let out = umbra(&[
        "run",
        "--iommu",
        "--disk",
        &on,
        "--disk",
        &off,
        "--dump-acpi",
        tables.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = Command::new("iasl")
        .arg("-d")
        .arg("VIOT.aml")
        .current_dir(&tables)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&run), stderr(&run));
    assert!(run.status.success() && !text.contains("Error"), "{text}");
    let dsl = std::fs::read_to_string(tables.join("VIOT.dsl")).unwrap();
    assert!(dsl.contains("Signature : \"VIOT\""), "{dsl}");
    // The nodes (ACPICA actbl3.h): a virtio-mmio IOMMU and one MMIO
    // endpoint, the first disk (the second is not behind the IOMMU).
    let viot = std::fs::read(tables.join("VIOT.aml")).unwrap();
    assert_eq!(field(&viot, 36, 2), 2, "node count");
    let first = field(&viot, 38, 2) as usize;
    assert_eq!(
        (viot[first], field(&viot, first + 2, 2)),
        (4, 16),
        "virtio-mmio IOMMU node"
    );
    // Transports: blk0, blk1, iommu0.
    assert_eq!(field(&viot, first + 8, 8), 0xD000_2000, "IOMMU base");
    let ep = first + 16;
    assert_eq!(
        (viot[ep], field(&viot, ep + 2, 2)),
        (2, 24),
        "MMIO endpoint node"
    );
    assert_eq!(field(&viot, ep + 4, 4), 0, "endpoint id");
    assert_eq!(field(&viot, ep + 8, 8), 0xD000_0000, "endpoint base");
    assert_eq!(field(&viot, ep + 16, 2) as usize, first, "output node");
    let xsdt = std::fs::read(tables.join("XSDT.aml")).unwrap();
    assert_eq!((xsdt.len() - 36) / 8, 3, "XSDT lists FADT, MADT and VIOT");
}
