//! The private/shared state of every 4 KiB guest RAM frame of a
//! confidential guest, as the VMM tracks it.
//!
//! What a device or the VMM may touch is the shared set only. In the SNP
//! model it is the hypervisor's half of the RMP (`snp_model::rmp` is the
//! firmware's half). The hardware SNP backend keeps the same state in KVM
//! itself (`KVM_SET_MEMORY_ATTRIBUTES`, attribute bit 3 = private) and does
//! not use this tracker yet.
//!
//! One bit per GFN (set = shared), one bitmap per RAM range: 64 GiB of RAM
//! (16 Mi frames) is a 2 MiB bitmap, allocated zeroed for the all-private
//! start of a confidential guest (so untouched words cost nothing until a
//! conversion writes them). Conversions work a 64-bit word at a time so a
//! 2 MiB page-state change is eight word operations and a popcount.

use serde::Serialize;
use thiserror::Error;

pub use umbra_snp_model::abi::{PageSize, PAGE_2M, PAGE_4K};

/// Whether a frame is private to the guest or shared with the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PageState {
    /// Host-visible (C-bit clear); devices and the VMM may access it.
    Shared,
    /// Guest-private (C-bit set); the host must not touch it.
    Private,
}

/// Why a page-state request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PageStateError {
    /// The GPA or the length is not a multiple of the page size.
    #[error("range {gpa:#x}+{len:#x} is not aligned to {align:#x}")]
    CheckAlignment {
        /// First GPA.
        gpa: u64,
        /// Length in bytes.
        len: u64,
        /// Required alignment.
        align: u64,
    },
    /// The length is zero.
    #[error("empty range at {gpa:#x}")]
    CheckLength {
        /// First GPA.
        gpa: u64,
    },
    /// The range is not wholly inside one guest RAM range (it touches ROM,
    /// MMIO, a guard or unmapped space, or overflows).
    #[error("range {gpa:#x}+{len:#x} is not guest RAM")]
    FindRam {
        /// First GPA.
        gpa: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A RAM range given at construction is unaligned or overlaps another.
    #[error("RAM range {gpa:#x}+{len:#x} is unaligned, empty or overlapping")]
    AddRange {
        /// Base GPA.
        gpa: u64,
        /// Size in bytes.
        len: u64,
    },
}

/// What one conversion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ConversionStats {
    /// 4 KiB frames in the request.
    pub pages: u64,
    /// Frames whose state changed.
    pub changed: u64,
}

/// Counts for the metrics JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PageStateSummary {
    /// 4 KiB RAM frames tracked.
    pub total_pages: u64,
    /// Frames currently private.
    pub private_pages: u64,
    /// Frames currently shared.
    pub shared_pages: u64,
    /// Accepted requests to make a range private.
    pub conversions_to_private: u64,
    /// Accepted requests to make a range shared.
    pub conversions_to_shared: u64,
    /// Frames that changed from shared to private.
    pub pages_made_private: u64,
    /// Frames that changed from private to shared.
    pub pages_made_shared: u64,
    /// Refused requests.
    pub refused: u64,
    /// Frames made shared whose private backing was discarded.
    pub discarded_private_pages: u64,
    /// Frames made private whose shared backing was discarded.
    pub discarded_shared_pages: u64,
}

struct Range {
    base: u64,
    pages: u64,
    /// Bit `i` set = frame `base/4096 + i` is shared.
    bits: Vec<u64>,
}

/// The page-state tracker.
pub struct PageStates {
    ranges: Vec<Range>,
    summary: PageStateSummary,
}

impl std::fmt::Debug for PageStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageStates")
            .field("ranges", &self.ranges.len())
            .field("summary", &self.summary)
            .finish()
    }
}

fn words(pages: u64) -> usize {
    pages.div_ceil(64) as usize
}

/// Mask of bits `lo..hi` (hi <= 64) within one word.
fn mask(lo: u64, hi: u64) -> u64 {
    let upper = if hi >= 64 { u64::MAX } else { (1u64 << hi) - 1 };
    upper & !((1u64 << lo) - 1)
}

impl PageStates {
    /// A tracker for the RAM ranges `(gpa, size)` (4 KiB aligned, disjoint),
    /// every frame starting in `initial` state.
    pub fn new(ram: &[(u64, u64)], initial: PageState) -> Result<Self, PageStateError> {
        let mut sorted = ram.to_vec();
        sorted.sort_unstable();
        let mut ranges: Vec<Range> = Vec::with_capacity(sorted.len());
        let mut total = 0;
        for (gpa, len) in sorted {
            let bad = || PageStateError::AddRange { gpa, len };
            if len == 0 || !gpa.is_multiple_of(PAGE_4K) || !len.is_multiple_of(PAGE_4K) {
                return Err(bad());
            }
            gpa.checked_add(len).ok_or_else(bad)?;
            if let Some(prev) = ranges.last() {
                if prev.base + prev.pages * PAGE_4K > gpa {
                    return Err(bad());
                }
            }
            let pages = len / PAGE_4K;
            // A set bit means shared. Confidential guests start all private,
            // so their bitmap is vec![0; n]: calloc, zero pages handed out
            // lazily, and launch time does not grow with guest RAM.
            let bits = match initial {
                PageState::Private => vec![0u64; words(pages)],
                PageState::Shared => {
                    let mut v = vec![u64::MAX; words(pages)];
                    if let Some(last) = v.last_mut() {
                        *last = mask(0, pages - (words(pages) as u64 - 1) * 64);
                    }
                    v
                }
            };
            total += pages;
            ranges.push(Range {
                base: gpa,
                pages,
                bits,
            });
        }
        let private = if initial == PageState::Private {
            total
        } else {
            0
        };
        Ok(PageStates {
            ranges,
            summary: PageStateSummary {
                total_pages: total,
                private_pages: private,
                shared_pages: total - private,
                ..PageStateSummary::default()
            },
        })
    }

    /// The index of the range holding all of `gpa..gpa+len`, and the first
    /// frame's index within it.
    fn locate(&self, gpa: u64, len: u64) -> Result<(usize, u64), PageStateError> {
        let end = gpa
            .checked_add(len)
            .ok_or(PageStateError::FindRam { gpa, len })?;
        // Few ranges (low and high RAM): a linear scan beats a tree.
        self.ranges
            .iter()
            .position(|r| gpa >= r.base && end <= r.base + r.pages * PAGE_4K)
            .map(|i| (i, (gpa - self.ranges[i].base) / PAGE_4K))
            .ok_or(PageStateError::FindRam { gpa, len })
    }

    fn check(gpa: u64, len: u64, size: PageSize) -> Result<(), PageStateError> {
        if len == 0 {
            return Err(PageStateError::CheckLength { gpa });
        }
        let align = size.bytes();
        if !gpa.is_multiple_of(align) || !len.is_multiple_of(align) {
            return Err(PageStateError::CheckAlignment { gpa, len, align });
        }
        Ok(())
    }

    /// Checks that `gpa..gpa+len` could be converted in pages of `size`
    /// without converting anything (so callers can prepare other state
    /// first); a refusal is counted as a refused request.
    pub fn check_range(
        &mut self,
        gpa: u64,
        len: u64,
        size: PageSize,
    ) -> Result<(), PageStateError> {
        let checked = Self::check(gpa, len, size).and_then(|()| self.locate(gpa, len).map(|_| ()));
        if checked.is_err() {
            self.summary.refused += 1;
        }
        checked
    }

    /// Converts `gpa..gpa+len` (4 KiB pages) to `to`.
    pub fn convert(
        &mut self,
        gpa: u64,
        len: u64,
        to: PageState,
    ) -> Result<ConversionStats, PageStateError> {
        self.convert_sized(gpa, len, PageSize::Size4K, to)
    }

    /// Converts `gpa..gpa+len` in pages of `size` (a 2 MiB request must be
    /// 2 MiB aligned). The whole range is checked before anything changes.
    pub fn convert_sized(
        &mut self,
        gpa: u64,
        len: u64,
        size: PageSize,
        to: PageState,
    ) -> Result<ConversionStats, PageStateError> {
        let located = Self::check(gpa, len, size).and_then(|()| self.locate(gpa, len));
        let (ri, first) = match located {
            Ok(v) => v,
            Err(e) => {
                self.summary.refused += 1;
                return Err(e);
            }
        };
        let pages = len / PAGE_4K;
        let bits = &mut self.ranges[ri].bits;
        let mut changed = 0u64;
        let (mut i, end) = (first, first + pages);
        while i < end {
            let w = (i / 64) as usize;
            let lo = i % 64;
            let hi = (end - (i - lo)).min(64);
            let m = mask(lo, hi);
            let word = &mut bits[w];
            let before = *word;
            *word = match to {
                PageState::Private => before & !m,
                PageState::Shared => before | m,
            };
            changed += u64::from((before ^ *word).count_ones());
            i += hi - lo;
        }
        let s = &mut self.summary;
        match to {
            PageState::Private => {
                s.conversions_to_private += 1;
                s.pages_made_private += changed;
                s.private_pages += changed;
                s.shared_pages -= changed;
            }
            PageState::Shared => {
                s.conversions_to_shared += 1;
                s.pages_made_shared += changed;
                s.private_pages -= changed;
                s.shared_pages += changed;
            }
        }
        Ok(ConversionStats { pages, changed })
    }

    /// The state of the frame holding `gpa`, or `None` outside RAM.
    pub fn state(&self, gpa: u64) -> Option<PageState> {
        let (ri, idx) = self.locate(gpa & !(PAGE_4K - 1), PAGE_4K).ok()?;
        let word = self.ranges[ri].bits[(idx / 64) as usize];
        Some(if word >> (idx % 64) & 1 == 1 {
            PageState::Shared
        } else {
            PageState::Private
        })
    }

    /// Whether every frame touched by `gpa..gpa+len` is RAM and shared: the
    /// test a device or the VMM applies before touching guest memory.
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        if len == 0 {
            return false;
        }
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let first = gpa & !(PAGE_4K - 1);
        let Some(last) = end.checked_next_multiple_of(PAGE_4K) else {
            return false;
        };
        let Ok((ri, idx)) = self.locate(first, last - first) else {
            return false;
        };
        let pages = (end - first).div_ceil(PAGE_4K);
        let bits = &self.ranges[ri].bits;
        let (mut i, stop) = (idx, idx + pages);
        while i < stop {
            let lo = i % 64;
            let hi = (stop - (i - lo)).min(64);
            if !bits[(i / 64) as usize] & mask(lo, hi) != 0 {
                return false;
            }
            i += hi - lo;
        }
        true
    }

    /// The shared frames as maximal `(gpa, len)` runs, in address order.
    pub fn shared_ranges(&self) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        for range in &self.ranges {
            let mut start = None;
            for i in 0..=range.pages {
                let shared =
                    i < range.pages && range.bits[(i / 64) as usize] & (1 << (i % 64)) != 0;
                match (shared, start) {
                    (true, None) => start = Some(i),
                    (false, Some(first)) => {
                        runs.push((range.base + first * PAGE_4K, (i - first) * PAGE_4K));
                        start = None;
                    }
                    _ => {}
                }
            }
        }
        runs
    }

    /// Counts `pages` discarded halves of conversions to `to`.
    pub fn count_discarded(&mut self, to: PageState, pages: u64) {
        match to {
            PageState::Shared => self.summary.discarded_private_pages += pages,
            PageState::Private => self.summary.discarded_shared_pages += pages,
        }
    }

    /// Counts for the metrics JSON.
    pub fn summary(&self) -> PageStateSummary {
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// The memory map of a 4 GiB guest (memory::MemoryMap): low RAM to
    /// 3 GiB, then ROM/MMIO/guards, high RAM from 4 GiB.
    fn four_gib() -> PageStates {
        PageStates::new(&[(0, 3 * GIB), (4 * GIB, GIB)], PageState::Shared).unwrap()
    }

    #[test]
    fn refuses_rom_mmio_guard_and_out_of_range() {
        let mut p = four_gib();
        // ROM just below 4 GiB, the MMIO window, the guard after low RAM.
        for gpa in [0xFFFF_F000, 0xD000_0000, 3 * GIB, 5 * GIB, !0xfff_u64] {
            assert!(
                matches!(
                    p.convert(gpa, PAGE_4K, PageState::Private),
                    Err(PageStateError::FindRam { .. })
                ),
                "{gpa:#x}"
            );
        }
        // Straddles the end of low RAM.
        assert!(matches!(
            p.convert(3 * GIB - PAGE_4K, 2 * PAGE_4K, PageState::Private),
            Err(PageStateError::FindRam { .. })
        ));
        // Wraps around.
        assert!(matches!(
            p.convert(!0xfff_u64, 2 * PAGE_4K, PageState::Private),
            Err(PageStateError::FindRam { .. })
        ));
        assert_eq!(p.summary().refused, 7);
        assert_eq!(p.summary().private_pages, 0);
    }

    #[test]
    fn refuses_unaligned_empty_and_bad_2m() {
        let mut p = four_gib();
        assert_eq!(
            p.convert(0x1001, PAGE_4K, PageState::Private),
            Err(PageStateError::CheckAlignment {
                gpa: 0x1001,
                len: PAGE_4K,
                align: PAGE_4K
            })
        );
        assert!(p.convert(0x1000, 0x800, PageState::Private).is_err());
        assert_eq!(
            p.convert(0x1000, 0, PageState::Private),
            Err(PageStateError::CheckLength { gpa: 0x1000 })
        );
        assert!(matches!(
            p.convert_sized(0x1000, PAGE_2M, PageSize::Size2M, PageState::Private),
            Err(PageStateError::CheckAlignment { align: PAGE_2M, .. })
        ));
        assert!(matches!(
            p.convert_sized(PAGE_2M, PAGE_4K, PageSize::Size2M, PageState::Private),
            Err(PageStateError::CheckAlignment { .. })
        ));
        assert_eq!(p.summary().private_pages, 0);
    }

    #[test]
    fn converts_and_counts() {
        let mut p = four_gib();
        let total = (4 * GIB) / PAGE_4K;
        assert_eq!(p.summary().total_pages, total);
        // An odd range that crosses word boundaries: 100 pages from frame 30.
        let s = p
            .convert(30 * PAGE_4K, 100 * PAGE_4K, PageState::Private)
            .unwrap();
        assert_eq!(
            s,
            ConversionStats {
                pages: 100,
                changed: 100
            }
        );
        assert_eq!(p.state(29 * PAGE_4K), Some(PageState::Shared));
        assert_eq!(p.state(30 * PAGE_4K), Some(PageState::Private));
        assert_eq!(p.state(129 * PAGE_4K + 0xfff), Some(PageState::Private));
        assert_eq!(p.state(130 * PAGE_4K), Some(PageState::Shared));
        assert_eq!(p.state(0xD000_0000), None);
        // Overlapping conversion changes only the new frames.
        let s = p.convert(0, 200 * PAGE_4K, PageState::Private).unwrap();
        assert_eq!(
            s,
            ConversionStats {
                pages: 200,
                changed: 100
            }
        );
        let s = p
            .convert_sized(4 * GIB, PAGE_2M, PageSize::Size2M, PageState::Private)
            .unwrap();
        assert_eq!(s.changed, 512);
        let s = p.convert(50 * PAGE_4K, PAGE_4K, PageState::Shared).unwrap();
        assert_eq!(s.changed, 1);
        let sum = p.summary();
        assert_eq!(sum.private_pages, 200 + 512 - 1);
        assert_eq!(sum.shared_pages, total - sum.private_pages);
        assert_eq!(sum.conversions_to_private, 3);
        assert_eq!(sum.conversions_to_shared, 1);
        assert_eq!(sum.pages_made_private, 100 + 100 + 512);
        assert_eq!(sum.pages_made_shared, 1);
    }

    #[test]
    fn shared_test_for_devices() {
        let mut p = four_gib();
        assert!(p.is_shared(0x1234, 100));
        p.convert(0x2000, PAGE_4K, PageState::Private).unwrap();
        assert!(p.is_shared(0x1000, PAGE_4K));
        // Touches the last byte of a shared frame and the first of the private one.
        assert!(!p.is_shared(0x1fff, 2));
        assert!(!p.is_shared(0xD000_0000, 4));
        assert!(!p.is_shared(0x1000, 0));
        assert!(!p.is_shared(u64::MAX - 1, 4));
    }

    #[test]
    fn initial_private_and_64_gib_is_cheap() {
        let p = PageStates::new(&[(0, 3 * GIB), (4 * GIB, 61 * GIB)], PageState::Private).unwrap();
        let s = p.summary();
        assert_eq!(s.total_pages, 16 << 20);
        assert_eq!(s.private_pages, 16 << 20);
        assert_eq!(p.state(65 * GIB - 1), Some(PageState::Private));
        assert_eq!(p.state(65 * GIB), None);
        // A range whose size is not a multiple of 64 frames: the last word
        // carries only the frames that exist.
        let p = PageStates::new(&[(0, 65 * PAGE_4K)], PageState::Private).unwrap();
        assert_eq!(p.summary().private_pages, 65);
        assert!(PageStates::new(&[(0, 0x1800)], PageState::Shared).is_err());
        assert!(
            PageStates::new(&[(0, 2 * PAGE_4K), (PAGE_4K, PAGE_4K)], PageState::Shared).is_err()
        );
    }
}
