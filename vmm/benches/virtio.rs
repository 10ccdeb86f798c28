//! virtio device costs on the host side, side by side in one run:
//! - one virtio-blk request (4 KiB read: descriptor walk, translation,
//!   file read, copy) over a plain guest's RAM and over the shared-only
//!   filter of a confidential guest that shares one contiguous bounce
//!   region (as Linux's SWIOTLB does): target ratio at most 1.10; and,
//!   as the worst case, with every other page shared (8192 ranges);
//! - one filter translation among 1, 1024 and 65536 mapped ranges:
//!   target under 50 ns, growing as O(log n).
//!
//! Prints the ratio and the per-translation figures.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;
use umbra_vmm::virtio::harness::{
    endpoint_with_mappings, filter_with_ranges, translate, BlkRequest, Sharing,
};

fn image() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("umbra-bench-{}.img", std::process::id()));
    std::fs::write(&path, vec![0x5Au8; 1 << 20]).expect("write the bench image");
    path
}

fn per_op(mut op: impl FnMut(), n: u32) -> f64 {
    for _ in 0..n / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..n {
        op();
    }
    start.elapsed().as_secs_f64() * 1e9 / f64::from(n)
}

fn bench(c: &mut Criterion) {
    let path = image();
    let mut plain = BlkRequest::new(&path, Sharing::Plain);
    let mut contiguous = BlkRequest::new(&path, Sharing::Contiguous);
    let mut fragmented = BlkRequest::new(&path, Sharing::Fragmented);
    assert!(plain.serve() && contiguous.serve() && fragmented.serve());
    let mut group = c.benchmark_group("virtio-blk request");
    group.bench_function("plain RAM", |b| b.iter(|| black_box(plain.serve())));
    group.bench_function("shared-only, contiguous", |b| {
        b.iter(|| black_box(contiguous.serve()))
    });
    group.bench_function("shared-only, 8192 ranges", |b| {
        b.iter(|| black_box(fragmented.serve()))
    });
    group.finish();
    // The side-by-side figures, measured interleaved so all see the same
    // host conditions.
    let (mut a, mut b, mut f) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..9 {
        a.push(per_op(|| assert!(plain.serve()), 20_000));
        b.push(per_op(|| assert!(contiguous.serve()), 20_000));
        f.push(per_op(|| assert!(fragmented.serve()), 20_000));
    }
    for v in [&mut a, &mut b, &mut f] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "virtio-blk 4 KiB read: plain {:.0} ns; shared-only filter, one contiguous shared region {:.0} ns, ratio {:.3} (target <= 1.10); every other page shared {:.0} ns, ratio {:.3}",
        a[4],
        b[4],
        b[4] / a[4],
        f[4],
        f[4] / a[4]
    );
    let mut group = c.benchmark_group("filter translation");
    for ranges in [1u64, 1024, 65536] {
        let dma = filter_with_ranges(ranges);
        let probe = (ranges / 2) * 0x2000;
        assert!(translate(&dma, probe));
        group.bench_function(format!("{ranges} ranges"), |bench| {
            bench.iter(|| black_box(translate(&dma, black_box(probe))))
        });
        let ns = per_op(|| assert!(translate(&dma, probe)), 1_000_000);
        println!("filter translation among {ranges} ranges: {ns:.1} ns (target < 50 ns)");
    }
    group.finish();

    // The virtio-iommu: a block request by an endpoint whose domain holds
    // 10,000 mappings, against the same request without the IOMMU; and
    // one translation among those mappings.
    let mut behind = BlkRequest::behind_iommu(&path, 10_000);
    assert!(behind.serve(), "the request through the IOMMU must succeed");
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        a.push(per_op(|| assert!(plain.serve()), 20_000));
        b.push(per_op(|| assert!(behind.serve()), 20_000));
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "virtio-blk 4 KiB read: without the IOMMU {:.0} ns, behind the IOMMU (10,000 mappings) {:.0} ns, ratio {:.3}",
        a[4],
        b[4],
        b[4] / a[4]
    );
    let dma = endpoint_with_mappings(10_000);
    let probe = (8 << 20) + 5_000 * 0x2000;
    assert!(translate(&dma, probe));
    c.bench_function("iommu translation among 10000 mappings", |bench| {
        bench.iter(|| black_box(translate(&dma, black_box(probe))))
    });
    let ns = per_op(|| assert!(translate(&dma, probe)), 1_000_000);
    println!("iommu translation among 10,000 mappings: {ns:.1} ns (target < 50 ns)");
    let _ = std::fs::remove_file(&path);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
