//! Page-state change throughput in 2 MiB requests: the page-state tracker
//! alone, and the SNP model's full path (tracker + RMPUPDATE + PVALIDATE).
//! Target: at least 1 million 4 KiB pages per second. Prints the figure.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use umbra_snp_model::rmp::Rmp;
use umbra_vmm::page_state::{PageSize, PageState, PageStates, PAGE_2M, PAGE_4K};

const GIB: u64 = 1 << 30;
/// A 64 GiB guest laid out like memory::MemoryMap (low RAM to 3 GiB).
const RAM: [(u64, u64); 2] = [(0, 3 * GIB), (4 * GIB, 61 * GIB)];
/// Requests per iteration: 1 GiB of 2 MiB pages.
const REQUESTS: u64 = 512;
const PAGES: u64 = REQUESTS * PAGE_2M / PAGE_4K;

/// One iteration: 1 GiB of high RAM to `to` in 2 MiB requests.
fn tracker_pass(p: &mut PageStates, to: PageState) {
    for i in 0..REQUESTS {
        let r = p.convert_sized(4 * GIB + i * PAGE_2M, PAGE_2M, PageSize::Size2M, to);
        black_box(r.ok());
    }
}

/// The model's PSC path for one 2 MiB page: the hypervisor's tracker and
/// RMPUPDATE, then the guest's PVALIDATE (or the reverse for shared).
fn model_pass(p: &mut PageStates, rmp: &mut Rmp, to: PageState) {
    for i in 0..REQUESTS {
        let gpa = 4 * GIB + i * PAGE_2M;
        let r = match to {
            PageState::Private => p
                .convert_sized(gpa, PAGE_2M, PageSize::Size2M, to)
                .ok()
                .and_then(|_| rmp.assign(gpa, PageSize::Size2M, false).ok())
                .and_then(|()| rmp.pvalidate(gpa, PageSize::Size2M, true).ok())
                .is_some_and(|v| v.eax == 0 && !v.no_update),
            PageState::Shared => rmp
                .pvalidate(gpa, PageSize::Size2M, false)
                .ok()
                .and_then(|_| rmp.unassign(gpa, PageSize::Size2M).ok())
                .and_then(|()| p.convert_sized(gpa, PAGE_2M, PageSize::Size2M, to).ok())
                .is_some(),
        };
        assert!(r, "PSC of {gpa:#x} to {to:?} failed");
    }
}

/// One iteration at 4 KiB granularity: 16 MiB of high RAM to `to` in
/// 4 KiB requests (4096 of them).
fn tracker_pass_4k(p: &mut PageStates, to: PageState) {
    for i in 0..4096u64 {
        let r = p.convert_sized(4 * GIB + i * PAGE_4K, PAGE_4K, PageSize::Size4K, to);
        black_box(r.ok());
    }
}

fn pages_per_second(mut pass: impl FnMut(PageState)) -> f64 {
    let rounds = 20;
    let start = Instant::now();
    for i in 0..rounds {
        pass(if i % 2 == 0 {
            PageState::Private
        } else {
            PageState::Shared
        });
    }
    (rounds * PAGES) as f64 / start.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("psc-2mib");
    g.throughput(Throughput::Elements(PAGES));
    let mut p = PageStates::new(&RAM, PageState::Shared).unwrap_or_else(|e| panic!("{e}"));
    let mut flip = false;
    g.bench_function("page-state tracker", |b| {
        b.iter(|| {
            flip = !flip;
            tracker_pass(
                &mut p,
                if flip {
                    PageState::Private
                } else {
                    PageState::Shared
                },
            );
        })
    });
    let mut p = PageStates::new(&RAM, PageState::Shared).unwrap_or_else(|e| panic!("{e}"));
    let mut rmp = Rmp::new(&RAM);
    let mut flip = false;
    g.bench_function("snp-model (tracker + RMPUPDATE + PVALIDATE)", |b| {
        b.iter(|| {
            flip = !flip;
            let to = if flip {
                PageState::Private
            } else {
                PageState::Shared
            };
            model_pass(&mut p, &mut rmp, to);
        })
    });
    g.finish();

    let mut p = PageStates::new(&RAM, PageState::Shared).unwrap_or_else(|e| panic!("{e}"));
    let tracker = pages_per_second(|to| tracker_pass(&mut p, to));
    let mut p = PageStates::new(&RAM, PageState::Shared).unwrap_or_else(|e| panic!("{e}"));
    let mut rmp = Rmp::new(&RAM);
    let model = pages_per_second(|to| model_pass(&mut p, &mut rmp, to));
    let mut p = PageStates::new(&RAM, PageState::Shared).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    for i in 0..20 {
        tracker_pass_4k(
            &mut p,
            if i % 2 == 0 {
                PageState::Private
            } else {
                PageState::Shared
            },
        );
    }
    let per_4k = (20 * 4096) as f64 / start.elapsed().as_secs_f64();
    println!(
        "PSC page-state tracker: {:.1} million 4 KiB pages/s in 4 KiB requests; 2 MiB requests are {:.1}x faster per page",
        per_4k / 1e6,
        tracker / per_4k
    );
    for (what, v) in [
        ("page-state tracker", tracker),
        ("snp-model PSC path", model),
    ] {
        println!(
            "PSC {what}: {:.1} million 4 KiB pages/s in 2 MiB requests ({:.0}x the 1 M/s target)",
            v / 1e6,
            v / 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
