//! Builds the guest firmware image and hands it to the `umbra` binary.
//!
//! The firmware is a workspace crate, but a bare-metal image needs its own
//! link flags and profile, so it is built by a nested cargo invocation into
//! a separate target directory (no lock contention with the outer build) and
//! flattened from ELF into the 512 KiB ROM image the VMM maps below 4 GiB
//! (`umbra_firmware::layout::ROM_SIZE`; `firmware.rs` tests that they agree).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const ROM_BASE: u64 = 0xFFF8_0000;
const ROM_SIZE: usize = 0x8_0000;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let firmware_dir = manifest_dir.join("../firmware");
    for path in ["src", "layout.ld", "build.rs", "Cargo.toml"] {
        println!(
            "cargo:rerun-if-changed={}",
            firmware_dir.join(path).display()
        );
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out_dir.join("firmware-target");
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--bin",
            "umbra-firmware",
            "--features",
            "image",
        ])
        .arg("--manifest-path")
        .arg(firmware_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The image gets its own flags; nothing of the outer build leaks in.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        // Guest code on the CI machines runs under KVM's instruction
        // emulator, which cannot execute SSE: keep the compiler off the
        // vector registers entirely.
        .env(
            "RUSTFLAGS",
            "-C target-feature=+soft-float,-sse,-sse2,-avx,-avx2 -C target-cpu=x86-64 \
             -C code-model=large \
             --cfg aes_backend=\"soft\" --cfg polyval_backend=\"soft\" \
             --cfg sha2_backend=\"soft\"",
        )
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "s")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .status()
        .expect("run cargo to build the firmware");
    assert!(status.success(), "building the umbra firmware image failed");

    let elf = fs::read(target_dir.join("release/umbra-firmware")).expect("read the firmware ELF");
    let rom = flatten(&elf);
    fs::write(out_dir.join("umbra-firmware.bin"), rom).expect("write the firmware ROM image");
    let _ = Path::new(&out_dir);
}

/// Copies every PT_LOAD segment of a static ELF64 into a ROM image that
/// starts at `ROM_BASE`. Panics (failing the build) on anything else.
fn flatten(elf: &[u8]) -> Vec<u8> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().expect("2 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    assert_eq!(&elf[..4], b"\x7fELF", "firmware is not an ELF file");
    assert_eq!(elf[4], 2, "firmware is not ELF64");
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    let mut rom = vec![0u8; ROM_SIZE];
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64_at(ph + 0x08) as usize;
        let paddr = u64_at(ph + 0x18);
        let filesz = u64_at(ph + 0x20) as usize;
        if filesz == 0 {
            continue;
        }
        assert!(
            paddr >= ROM_BASE,
            "firmware segment at {paddr:#x} lies below the ROM"
        );
        let at = (paddr - ROM_BASE) as usize;
        assert!(
            at + filesz <= ROM_SIZE,
            "firmware segment at {paddr:#x} overflows the ROM"
        );
        rom[at..at + filesz].copy_from_slice(&elf[offset..offset + filesz]);
    }
    rom
}
