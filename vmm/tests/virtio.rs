//! virtio-mmio devices end to end: the firmware's driver against umbra's
//! devices on plain KVM and the SNP model, against QEMU's own virtio-mmio
//! devices (an implementation no one here wrote), and the hostile
//! scenarios that point a device at memory it must not reach.

#![allow(clippy::unwrap_used)]

mod common;

use common::{
    kvm_available, metrics, peer_available, platform_args, scratch, stderr, stdout, umbra,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use umbra_firmware::layout::{blk_test_byte, BLK_TEST_FIRST_SECTOR, BLK_TEST_SECTORS};

const PLATFORMS: [&str; 2] = ["none", "snp-model"];

fn disk(dir: &Path, name: &str, sectors: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![0u8; (sectors * 512) as usize]).unwrap();
    path
}

fn run(platform: &str, extra: &[&str], metrics_path: &Path) -> std::process::Output {
    let mut args = vec!["run".to_string()];
    args.extend(platform_args(platform));
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--metrics-json".into());
    args.push(metrics_path.display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    umbra(&refs)
}

/// The sectors the `virtio-blk` scenario writes, as the firmware defines them.
fn assert_written(image: &Path) {
    let bytes = std::fs::read(image).unwrap();
    for sector in BLK_TEST_FIRST_SECTOR..BLK_TEST_FIRST_SECTOR + BLK_TEST_SECTORS {
        let at = (sector * 512) as usize;
        for i in 0..512 {
            assert_eq!(
                bytes[at + i],
                blk_test_byte(sector, i),
                "sector {sector} byte {i} of {}",
                image.display()
            );
        }
    }
}

#[test]
fn virtio_blk_writes_reach_the_image_on_both_platforms() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("virtio-blk");
    for platform in PLATFORMS {
        let image = disk(&dir, &format!("{platform}.img"), 2048);
        // The host's pattern in sector 0, which the guest must read.
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[..4].copy_from_slice(&[0xDE, 0xAD, 0xBE, 0xEF]);
        std::fs::write(&image, bytes).unwrap();
        let m = dir.join(format!("{platform}.json"));
        let disk_arg = format!("path={}", image.display());
        let out = run(
            platform,
            &[
                "--disk",
                &disk_arg,
                "--cmdline",
                "scenario=virtio-blk disk_check=deadbeef",
            ],
            &m,
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{platform}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("sector 0 holds what the host wrote"));
        assert_written(&image);
        let devices = &metrics(&m)["devices"];
        assert_eq!(devices[0]["name"], "blk0");
        assert_eq!(devices[0]["kind"], "virtio-blk");
        assert_eq!(devices[0]["errors"], 0);
        assert_eq!(devices[0]["dma_refusals"], 0);
        // Read of sector 0, write, read back, flush.
        assert_eq!(devices[0]["requests"], 4);
        assert_eq!(devices[0]["bytes"], 512 + 2 * 4096);
    }
}

#[test]
fn virtio_rng_gives_entropy_on_both_platforms() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("virtio-rng");
    for platform in PLATFORMS {
        let m = dir.join(format!("{platform}.json"));
        let out = run(platform, &["--rng", "--cmdline", "scenario=virtio-rng"], &m);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{platform}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let devices = &metrics(&m)["devices"];
        assert_eq!(devices[0]["kind"], "virtio-rng");
        assert_eq!(devices[0]["bytes"], 128);
    }
}

#[test]
fn buffers_outside_device_memory_are_refused_and_counted() {
    if !kvm_available() {
        return;
    }
    let dir = scratch("virtio-dma");
    let mut cases: Vec<(&str, &str)> = Vec::new();
    for platform in PLATFORMS {
        for scenario in ["dma-rom", "dma-beyond", "dma-unmapped"] {
            cases.push((platform, scenario));
        }
    }
    cases.push(("snp-model", "dma-private"));
    for (platform, scenario) in cases {
        let image = disk(&dir, &format!("{platform}-{scenario}.img"), 64);
        let m = dir.join(format!("{platform}-{scenario}.json"));
        let disk_arg = format!("path={}", image.display());
        let cmdline = format!("scenario={scenario}");
        let out = run(platform, &["--disk", &disk_arg, "--cmdline", &cmdline], &m);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{platform} {scenario}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let devices = &metrics(&m)["devices"];
        assert_eq!(devices[0]["dma_refusals"], 1, "{platform} {scenario}");
        assert_eq!(devices[0]["errors"], 1, "{platform} {scenario}");
        // Nothing reached the disk: not the private page's secret, not a byte.
        let bytes = std::fs::read(&image).unwrap();
        assert!(
            bytes.iter().all(|&b| b == 0),
            "{platform} {scenario} wrote to the disk"
        );
    }
}

#[test]
fn bad_disks_are_one_error_line() {
    let dir = scratch("virtio-bad-disk");
    let odd = dir.join("odd.img");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    let arg = format!("path={}", odd.display());
    let out = umbra(&["run", "--disk", &arg]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a multiple of 512"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    let missing = format!("path={}", dir.join("missing.img").display());
    let out = umbra(&["run", "--disk", &missing]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let out = umbra(&["run", "--disk", "readonly=on"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

fn qemu(scenario: &str, device: &[&str]) -> Option<std::process::Output> {
    let present = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    if !peer_available("qemu-system-x86_64", present) {
        return None;
    }
    let dir = scratch(&format!("qemu-{scenario}"));
    let fw = dir.join("umbra.fd");
    std::fs::write(&fw, umbra_vmm::firmware::EMBEDDED_FIRMWARE).unwrap();
    let accel = if std::fs::metadata("/dev/kvm").is_ok() {
        "kvm"
    } else {
        "tcg"
    };
    let out = Command::new("qemu-system-x86_64")
        .args([
            "-M",
            "microvm",
            "-accel",
            accel,
            "-m",
            "128M",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-bios")
        .arg(&fw)
        .args(device)
        .args([
            "-fw_cfg",
            &format!("name=opt/umbra/cmdline,string=scenario={scenario}"),
        ])
        .output()
        .expect("spawn qemu");
    Some(out)
}

#[test]
fn the_firmware_drives_qemus_virtio_blk() {
    let dir = scratch("qemu-blk-image");
    let image = disk(&dir, "q.img", 2048);
    let drive = format!("file={},format=raw,if=none,id=d0", image.display());
    let Some(out) = qemu(
        "virtio-blk",
        &["-drive", &drive, "-device", "virtio-blk-device,drive=d0"],
    ) else {
        return;
    };
    // isa-debug-exit: QEMU exits with (code << 1) | 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("virtio-blk: 2048 sectors"),
        "{}",
        stdout(&out)
    );
    assert_written(&image);
}

#[test]
fn the_firmware_drives_qemus_virtio_rng() {
    let Some(out) = qemu("virtio-rng", &["-device", "virtio-rng-device"]) else {
        return;
    };
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("virtio-rng: two 64-byte requests filled with different bytes: ok")
    );
}

#[test]
fn dumped_acpi_tables_disassemble_with_iasl() {
    let present = Command::new("iasl").arg("-v").output().is_ok();
    if !peer_available("iasl (acpica-tools)", present) {
        return;
    }
    let dir = scratch("acpi-dump");
    let image = disk(&dir, "d.img", 64);
    let disk_arg = format!("path={}", image.display());
    let tables = dir.join("tables");
    let out = umbra(&[
        "run",
        "--disk",
        &disk_arg,
        "--disk",
        &disk_arg,
        "--rng",
        "--vcpus",
        "2",
        "--dump-acpi",
        tables.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for table in ["DSDT", "FACP", "APIC", "XSDT"] {
        let aml = tables.join(format!("{table}.aml"));
        let run = Command::new("iasl")
            .arg("-d")
            .arg(&aml)
            .current_dir(&tables)
            .output()
            .unwrap();
        let text = format!("{}{}", stdout(&run), stderr(&run));
        assert!(run.status.success(), "iasl -d {table}.aml: {text}");
        assert!(!text.contains("Error"), "iasl -d {table}.aml: {text}");
    }
    let dsdt = std::fs::read_to_string(tables.join("DSDT.dsl")).unwrap();
    assert_eq!(dsdt.matches("\"LNRO0005\"").count(), 3, "{dsdt}");
    for (base, irq) in [
        ("0xD0000000", "0x00000005"),
        ("0xD0001000", "0x00000006"),
        ("0xD0002000", "0x00000007"),
    ] {
        assert!(
            dsdt.contains(base) && dsdt.contains(irq),
            "{base} {irq}: {dsdt}"
        );
    }
    let madt = std::fs::read_to_string(tables.join("APIC.dsl")).unwrap();
    assert_eq!(madt.matches("Processor Local APIC").count(), 2, "{madt}");
    assert!(madt.contains("FEC00000"), "{madt}");
    let fadt = std::fs::read_to_string(tables.join("FACP.dsl")).unwrap();
    assert!(fadt.contains("Hardware Reduced (V5) : 1"), "{fadt}");
}

#[test]
fn vsock_echoes_both_ways_through_the_hybrid_socket() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    if !kvm_available() {
        return;
    }
    for platform in PLATFORMS {
        let dir = scratch(&format!("vsock-{platform}"));
        let socket = dir.join("v.sock");
        // The host's echo service on port 1234: the VMM connects to S_1234.
        let echo = UnixListener::bind(dir.join("v.sock_1234")).unwrap();
        let echo_thread = std::thread::spawn(move || {
            let (mut conn, _) = echo.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut total = 0;
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break total,
                    Ok(n) => {
                        total += n;
                        conn.write_all(&buf[..n]).unwrap();
                    }
                }
            }
        });
        let vsock = format!("cid=3,socket={}", socket.display());
        let mut args = vec!["run".to_string()];
        args.extend(platform_args(platform));
        args.extend(
            [
                "--vsock",
                &vsock,
                "--cmdline",
                "scenario=vsock-echo",
                "--timeout",
                "60",
            ]
            .map(String::from),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_umbra"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Host-initiated: CONNECT 5000 to S, answered OK <port>, echoed.
        let mut host = None;
        for _ in 0..400 {
            if let Ok(stream) = UnixStream::connect(&socket) {
                host = Some(stream);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        let mut host = host.expect("umbra listens on the vsock socket");
        host.write_all(b"CONNECT 5000\n").unwrap();
        let mut line = String::new();
        BufReader::new(host.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("OK "), "{platform}: {line:?}");
        line.trim()[3..]
            .parse::<u32>()
            .expect("OK carries the host port");
        host.write_all(b"ping from the host").unwrap();
        let mut back = [0u8; 18];
        host.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping from the host");
        drop(host);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{platform}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            stdout(&out).contains("port 1234 echoed 31 bytes"),
            "{}",
            stdout(&out)
        );
        assert_eq!(echo_thread.join().unwrap(), 31);
    }
}

#[test]
fn vsock_options_are_checked() {
    let out = umbra(&["run", "--vsock", "cid=2,socket=/tmp/x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("guest context IDs are 3"),
        "{}",
        stderr(&out)
    );
}
