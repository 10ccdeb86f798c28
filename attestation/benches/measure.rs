//! Launch-digest benchmark, side by side in one run, with ratios:
//! umbra's `snp_launch_digest` against the `sev` crate's
//! `snp_calc_launch_digest` on the same inputs (Debian's OVMF.fd, 64 vCPUs,
//! EPYC-v4, QEMU, guest features 0x1, file read included in both), against
//! the in-process hashing bound, and OpenSSL's SHA-384 against the `sha2`
//! crate on the page sizes the digest hashes.
//!
//! `cargo bench -p umbra-attestation --bench measure`. Under `cargo test`
//! (no `--bench` argument) it runs each case once as a smoke test.
//! `UMBRA_BENCH_OVMF` overrides the OVMF path.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest as _;
use umbra_attestation::measure::{
    self, vcpu_types, FirmwareImage, MeasureInputs, PlanOptions, VmmType,
};

const VCPUS: u32 = 64;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` for about `budget` (at least 5 times) and returns the median.
fn time<F: FnMut()>(budget: Duration, full: bool, mut f: F) -> Duration {
    let mut samples = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
        if !full || (samples.len() >= 5 && start.elapsed() > budget) {
            break;
        }
    }
    median(samples)
}

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

fn umbra_digest(path: &Path) -> [u8; 48] {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fw = FirmwareImage::parse(&data).unwrap_or_else(|e| panic!("{e}"));
    let inp = MeasureInputs {
        firmware: &fw,
        vcpus: VCPUS,
        vcpu_sig: vcpu_types::vcpu_sig_of("EPYC-v4").unwrap_or(0),
        guest_features: 0x1,
        vmm_type: VmmType::Qemu,
        kernel_hashes: None,
        ovmf_hash: None,
        firmware_page_digests: None,
    };
    measure::snp_launch_digest(&inp).unwrap_or_else(|e| panic!("{e}"))
}

/// The same digest through the public step plan on one thread (what the
/// VMM's launch loop does), to show what the two-thread page hashing buys.
fn umbra_digest_one_thread(path: &Path) -> [u8; 48] {
    use measure::{LaunchDigest, StepSource, VcpuSaveAreas};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fw = FirmwareImage::parse(&data).unwrap_or_else(|e| panic!("{e}"));
    let sig = vcpu_types::vcpu_sig_of("EPYC-v4").unwrap_or(0);
    let areas = VcpuSaveAreas::new(&fw, 0x1, sig, VmmType::Qemu).unwrap_or_else(|e| panic!("{e}"));
    let opts = PlanOptions {
        vmm_type: VmmType::Qemu,
        kernel_hashes: false,
        include_firmware: true,
        vcpus: VCPUS,
    };
    let steps = measure::snp_launch_steps(&fw, &opts).unwrap_or_else(|e| panic!("{e}"));
    let mut ld = LaunchDigest::new();
    let bsp = openssl::sha::sha384(areas.bsp.as_page());
    let ap = areas.ap.as_ref().map(|a| openssl::sha::sha384(a.as_page()));
    for s in &steps {
        match s.source {
            StepSource::Image { offset, .. } => {
                ld.update_normal_pages(s.gpa, &data[offset..offset + s.len as usize])
            }
            StepSource::Vmsa { vcpu } => {
                let d = if vcpu == 0 { bsp } else { ap.unwrap_or(bsp) };
                ld.update_with_digest(s.page_type, s.gpa, &d);
            }
            _ => ld.update_range(s.page_type, s.gpa, s.len),
        }
    }
    ld.digest()
}

fn sev_crate_digest(path: &Path) -> Vec<u8> {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::GuestFeatures;
    let ld = snp_calc_launch_digest(SnpMeasurementArgs {
        vcpus: VCPUS,
        vcpu_type: CpuType::EpycV4,
        ovmf_file: path.to_path_buf(),
        guest_features: GuestFeatures::default(), // 0x1
        kernel_file: None,
        initrd_file: None,
        append: None,
        ovmf_hash_str: None,
        vmm_type: None,
    })
    .unwrap_or_else(|e| panic!("sev crate: {e:?}"));
    let hex = ld.get_hex_ld();
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_secs(3);
    let path = PathBuf::from(
        std::env::var("UMBRA_BENCH_OVMF").unwrap_or_else(|_| "/usr/share/ovmf/OVMF.fd".into()),
    );
    if !path.exists() {
        println!(
            "skipped: {} is absent (apt-get install ovmf)",
            path.display()
        );
        return;
    }
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let fw = FirmwareImage::parse(&data).unwrap_or_else(|e| panic!("{e}"));
    let steps = measure::snp_launch_steps(
        &fw,
        &PlanOptions {
            vmm_type: VmmType::Qemu,
            kernel_hashes: false,
            include_firmware: true,
            vcpus: VCPUS,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let updates: u64 = steps.iter().map(|s| s.len / 4096).sum();
    println!(
        "inputs: {} ({} KiB), {VCPUS} vCPUs EPYC-v4, QEMU, features 0x1: {updates} launch updates",
        path.display(),
        data.len() / 1024
    );

    // Same answer first.
    let ours = umbra_digest(&path);
    let theirs = sev_crate_digest(&path);
    assert_eq!(ours.to_vec(), theirs, "umbra and the sev crate disagree");
    assert_eq!(
        umbra_digest_one_thread(&path),
        ours,
        "step plan walk disagrees"
    );

    // Hash backends on the shapes the digest hashes: 4 KiB pages, 112-byte PAGE_INFO.
    let pages: Vec<&[u8]> = data.chunks_exact(4096).collect();
    let info = [0x5au8; 0x70];
    let ossl_pages = time(budget, full, || {
        for p in &pages {
            black_box(openssl::sha::sha384(black_box(p)));
        }
    });
    let sha2_pages = time(budget, full, || {
        for p in &pages {
            black_box(sha2::Sha384::digest(black_box(p)));
        }
    });
    let ossl_info = time(budget, full, || {
        for _ in 0..updates {
            black_box(openssl::sha::sha384(black_box(&info)));
        }
    });
    let sha2_info = time(budget, full, || {
        for _ in 0..updates {
            black_box(sha2::Sha384::digest(black_box(&info)));
        }
    });
    // The hashing bound: every byte the digest must hash, one thread, no I/O
    // (the firmware pages, two distinct VMSA pages, one PAGE_INFO per update),
    // each size with its faster backend.
    let vmsa = [0u8; 4096];
    let bound = time(budget, full, || {
        for p in &pages {
            black_box(openssl::sha::sha384(black_box(p)));
        }
        for _ in 0..2 {
            black_box(openssl::sha::sha384(black_box(&vmsa)));
        }
        for _ in 0..updates {
            black_box(sha2::Sha384::digest(black_box(&info)));
        }
    });
    let t_one = time(budget, full, || {
        black_box(umbra_digest_one_thread(black_box(&path)));
    });
    let t_ours = time(budget, full, || {
        black_box(umbra_digest(black_box(&path)));
    });
    let t_sev = time(budget, full, || {
        black_box(sev_crate_digest(black_box(&path)));
    });

    println!(
        "\nSHA-384 backends ({} pages of 4 KiB, {updates} PAGE_INFOs):",
        pages.len()
    );
    println!(
        "  openssl  pages {}   page_info {}",
        ms(ossl_pages),
        ms(ossl_info)
    );
    println!(
        "  sha2     pages {}   page_info {}",
        ms(sha2_pages),
        ms(sha2_info)
    );
    println!(
        "  sha2 / openssl: pages {:.2}x, page_info {:.2}x",
        sha2_pages.as_secs_f64() / ossl_pages.as_secs_f64(),
        sha2_info.as_secs_f64() / ossl_info.as_secs_f64()
    );
    println!("\nlaunch digest (median, file read included):");
    println!("  umbra snp_launch_digest         {}", ms(t_ours));
    println!("  umbra, step plan on 1 thread     {}", ms(t_one));
    println!("  sev crate snp_calc_launch_digest {}", ms(t_sev));
    println!("  hashing bound (1 thread, no I/O) {}", ms(bound));
    println!(
        "  sev crate / umbra = {:.2}x   umbra / bound = {:.2}x",
        t_sev.as_secs_f64() / t_ours.as_secs_f64(),
        t_ours.as_secs_f64() / bound.as_secs_f64()
    );
}
