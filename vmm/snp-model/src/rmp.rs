//! The model's Reverse Map Table: one entry per 4 KiB page of guest memory.
//!
//! Entry fields and instruction results follow the APM (pub. 24593/24594,
//! RMPUPDATE, PVALIDATE, RMPADJUST, PSMASH) as summarised in the reference
//! note `ghcb-and-guest-messages.md` §5. In the model a guest page's system
//! address *is* its GPA, and there is one guest, so "assigned" also means
//! "owned by this guest's ASID".
//!
//! Sparse: entries live in 2 MiB chunks (512 × 4 bytes) allocated on first
//! touch, so a 64 GiB guest costs nothing until its pages are used.

use std::collections::HashMap;

use serde::Serialize;
use thiserror::Error;

use crate::abi::{PageSize, PAGE_2M, PAGE_4K};

/// PVALIDATE/RMPADJUST return code (EAX): success.
pub const RET_SUCCESS: u32 = 0;
/// Return code: bad input (alignment, reserved bits, target VMPL).
pub const RET_FAIL_INPUT: u32 = 1;
/// RMPADJUST return code: the caller may not grant these permissions.
pub const RET_FAIL_PERMISSION: u32 = 2;
/// Return code: the request's page size differs from the RMP entry's.
pub const RET_FAIL_SIZEMISMATCH: u32 = 6;

/// The guest ASID the model uses in entries it assigns.
pub const MODEL_ASID: u32 = 1;

const ASSIGNED: u8 = 1 << 0;
const LARGE: u8 = 1 << 1;
const IMMUTABLE: u8 = 1 << 2;
const VALIDATED: u8 = 1 << 3;
const VMSA: u8 = 1 << 4;

/// VMPL permission bits (RMPADJUST EDX[11:8]): read, write, user-execute,
/// supervisor-execute.
pub const PERM_ALL: u8 = 0xF;

#[derive(Clone, Copy, Default)]
struct Entry {
    flags: u8,
    /// VMPL1..VMPL3 permission masks; VMPL0 always has full access.
    perms: [u8; 3],
}

type Chunk = [Entry; 512];

/// Why the RMP refused or faulted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RmpError {
    /// The page is outside the memory the guest may own.
    #[error("page {gpa:#x} is not guest memory")]
    FindGuestMemory {
        /// GPA of the page.
        gpa: u64,
    },
    /// The GPA is not aligned to the requested page size.
    #[error("page {gpa:#x} is not aligned to {size:?}")]
    CheckAlignment {
        /// GPA of the page.
        gpa: u64,
        /// Requested size.
        size: PageSize,
    },
    /// RMPUPDATE of an immutable page (FAIL_PERMISSION).
    #[error("page {gpa:#x} is immutable")]
    UpdateImmutable {
        /// GPA of the page.
        gpa: u64,
    },
    /// A guest instruction touched a page not assigned to it: on hardware a
    /// nested page fault with the RMP bit, handed to the hypervisor.
    #[error("page {gpa:#x} is not assigned to the guest (RMP #NPF)")]
    AccessUnassigned {
        /// GPA of the page.
        gpa: u64,
    },
}

/// The architectural view of one entry (what RMPREAD returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RmpEntry {
    /// GPA the page is assigned at.
    pub gpa: u64,
    /// Assigned to a guest.
    pub assigned: bool,
    /// ASID of the owner (0 = hypervisor).
    pub asid: u32,
    /// Validated by the guest (PVALIDATE) or by LAUNCH_UPDATE.
    pub validated: bool,
    /// Part of a 2 MiB entry.
    pub page_size: PageSize,
    /// The hypervisor may not change it (launch pages until LAUNCH_FINISH).
    pub immutable: bool,
    /// Marked as a VMSA by RMPADJUST.
    pub vmsa: bool,
    /// Permission masks of VMPL0..VMPL3.
    pub vmpl_perms: [u8; 4],
}

/// Result of PVALIDATE: EAX and rFLAGS.CF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pvalidate {
    /// EAX: [`RET_SUCCESS`], [`RET_FAIL_INPUT`] or [`RET_FAIL_SIZEMISMATCH`].
    pub eax: u32,
    /// CF: success, but the validated bit already had the requested value
    /// (double validation or double rescind: the guest must treat it as an
    /// attack, the hypervisor may be replaying a page).
    pub no_update: bool,
}

impl Pvalidate {
    fn ret(eax: u32) -> Self {
        Pvalidate {
            eax,
            no_update: false,
        }
    }
}

/// Counts for the metrics JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RmpSummary {
    /// 4 KiB pages assigned to the guest.
    pub assigned_pages: u64,
    /// 4 KiB pages assigned and validated.
    pub validated_pages: u64,
    /// PVALIDATE executions.
    pub pvalidates: u64,
    /// PVALIDATEs that reported "no update" (CF = 1).
    pub pvalidate_no_update: u64,
    /// PVALIDATEs that failed (EAX != 0).
    pub pvalidate_failures: u64,
    /// 2 MiB entries split to 4 KiB (PSMASH).
    pub psmashes: u64,
}

/// The RMP of one guest.
pub struct Rmp {
    ranges: Vec<(u64, u64)>,
    chunks: HashMap<u64, Box<Chunk>>,
    summary: RmpSummary,
}

impl std::fmt::Debug for Rmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rmp")
            .field("ranges", &self.ranges)
            .field("chunks", &self.chunks.len())
            .field("summary", &self.summary)
            .finish()
    }
}

impl Rmp {
    /// An RMP covering the guest-memory ranges `(gpa, size)`: RAM, and the
    /// firmware region when it is launched into private memory as on
    /// hardware. Every entry starts hypervisor-owned.
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        Rmp {
            ranges: ranges.to_vec(),
            chunks: HashMap::new(),
            summary: RmpSummary::default(),
        }
    }

    /// Whether every page of `gpa..gpa+len` is guest memory.
    pub fn covers(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|&(base, size)| gpa >= base && end <= base.saturating_add(size))
    }

    fn get(&self, gpa: u64) -> Entry {
        self.chunks
            .get(&(gpa / PAGE_2M))
            .map_or(Entry::default(), |c| {
                c[((gpa % PAGE_2M) / PAGE_4K) as usize]
            })
    }

    fn get_mut(&mut self, gpa: u64) -> &mut Entry {
        let chunk = self
            .chunks
            .entry(gpa / PAGE_2M)
            .or_insert_with(|| Box::new([Entry::default(); 512]));
        &mut chunk[((gpa % PAGE_2M) / PAGE_4K) as usize]
    }

    fn check(&self, gpa: u64, size: PageSize) -> Result<(), RmpError> {
        if !gpa.is_multiple_of(size.bytes()) {
            return Err(RmpError::CheckAlignment { gpa, size });
        }
        if !self.covers(gpa, size.bytes()) {
            return Err(RmpError::FindGuestMemory { gpa });
        }
        Ok(())
    }

    fn pages(gpa: u64, size: PageSize) -> impl Iterator<Item = u64> {
        (0..size.bytes() / PAGE_4K).map(move |i| gpa + i * PAGE_4K)
    }

    /// Keeps the counters in step with one entry's change.
    fn account(&mut self, before: Entry, after: Entry) {
        let assigned = |e: Entry| u64::from(e.flags & ASSIGNED != 0);
        let valid = |e: Entry| u64::from(e.flags & (ASSIGNED | VALIDATED) == ASSIGNED | VALIDATED);
        let s = &mut self.summary;
        s.assigned_pages = s.assigned_pages + assigned(after) - assigned(before);
        s.validated_pages = s.validated_pages + valid(after) - valid(before);
    }

    fn set(&mut self, gpa: u64, e: Entry) {
        let slot = self.get_mut(gpa);
        let before = *slot;
        *slot = e;
        self.account(before, e);
    }

    /// RMPUPDATE from the hypervisor: assign a page (4 KiB or a whole 2 MiB
    /// entry) to the guest, unvalidated (page-state change to private).
    pub fn assign(&mut self, gpa: u64, size: PageSize, immutable: bool) -> Result<(), RmpError> {
        self.check(gpa, size)?;
        if let Some(p) = Self::pages(gpa, size).find(|&p| self.get(p).flags & IMMUTABLE != 0) {
            return Err(RmpError::UpdateImmutable { gpa: p });
        }
        // A 4 KiB RMPUPDATE inside a 2 MiB entry needs the entry split
        // first (KVM issues PSMASH before it; the firmware would refuse).
        if size == PageSize::Size4K {
            self.psmash(gpa);
        }
        let mut flags = ASSIGNED;
        if size == PageSize::Size2M {
            flags |= LARGE;
        }
        if immutable {
            flags |= IMMUTABLE;
        }
        for p in Self::pages(gpa, size) {
            self.set(
                p,
                Entry {
                    flags,
                    perms: [0; 3],
                },
            );
        }
        Ok(())
    }

    /// RMPUPDATE from the hypervisor: return pages to the hypervisor
    /// (page-state change to shared). Clears validation.
    pub fn unassign(&mut self, gpa: u64, size: PageSize) -> Result<(), RmpError> {
        self.check(gpa, size)?;
        if let Some(p) = Self::pages(gpa, size).find(|&p| self.get(p).flags & IMMUTABLE != 0) {
            return Err(RmpError::UpdateImmutable { gpa: p });
        }
        if size == PageSize::Size4K {
            self.psmash(gpa);
        }
        for p in Self::pages(gpa, size) {
            self.set(p, Entry::default());
        }
        Ok(())
    }

    /// PSMASH: splits the 2 MiB entry holding `gpa` into 512 4 KiB entries
    /// with the same state. Returns whether there was one to split.
    pub fn psmash(&mut self, gpa: u64) -> bool {
        let base = gpa & !(PAGE_2M - 1);
        if self.get(base).flags & LARGE == 0 {
            return false;
        }
        for p in Self::pages(base, PageSize::Size2M) {
            self.get_mut(p).flags &= !LARGE;
        }
        self.summary.psmashes += 1;
        true
    }

    /// PVALIDATE `validate` (true = validate, false = rescind) of the page at
    /// `gpa` of `size`. Architected outcomes are in the `Ok` value; an `Err`
    /// is a fault the hypervisor sees instead of an instruction result.
    pub fn pvalidate(
        &mut self,
        gpa: u64,
        size: PageSize,
        validate: bool,
    ) -> Result<Pvalidate, RmpError> {
        self.summary.pvalidates += 1;
        let out = self.pvalidate_inner(gpa, size, validate);
        match out {
            Ok(p) if p.eax != RET_SUCCESS => self.summary.pvalidate_failures += 1,
            Ok(p) if p.no_update => self.summary.pvalidate_no_update += 1,
            _ => {}
        }
        out
    }

    fn pvalidate_inner(
        &mut self,
        gpa: u64,
        size: PageSize,
        validate: bool,
    ) -> Result<Pvalidate, RmpError> {
        if !gpa.is_multiple_of(size.bytes()) {
            return Ok(Pvalidate::ret(RET_FAIL_INPUT));
        }
        if !self.covers(gpa, size.bytes()) {
            return Err(RmpError::FindGuestMemory { gpa });
        }
        let first = self.get(gpa);
        if first.flags & ASSIGNED == 0 {
            return Err(RmpError::AccessUnassigned { gpa });
        }
        match size {
            // A 2 MiB request needs a 2 MiB entry, whole; the guest falls
            // back to 4 KiB.
            PageSize::Size2M
                if Self::pages(gpa, size)
                    .any(|p| self.get(p).flags & (LARGE | ASSIGNED) != LARGE | ASSIGNED) =>
            {
                return Ok(Pvalidate::ret(RET_FAIL_SIZEMISMATCH));
            }
            // A 4 KiB request in a 2 MiB entry is a size-mismatch #NPF that the
            // hypervisor answers with PSMASH and a retry; the model does both.
            PageSize::Size4K if first.flags & LARGE != 0 => {
                self.psmash(gpa);
            }
            _ => {}
        }
        if (first.flags & VALIDATED != 0) == validate {
            return Ok(Pvalidate {
                eax: RET_SUCCESS,
                no_update: true,
            });
        }
        for p in Self::pages(gpa, size) {
            let mut e = self.get(p);
            if validate {
                e.flags |= VALIDATED;
            } else {
                e.flags &= !VALIDATED;
            }
            self.set(p, e);
        }
        Ok(Pvalidate::ret(RET_SUCCESS))
    }

    /// RMPADJUST from a guest running at `caller_vmpl`: sets the permission
    /// mask of `target_vmpl` (and, from VMPL0 only, the VMSA bit). Returns EAX.
    pub fn rmpadjust(
        &mut self,
        gpa: u64,
        size: PageSize,
        caller_vmpl: u8,
        target_vmpl: u8,
        perms: u8,
        vmsa: bool,
    ) -> Result<u32, RmpError> {
        if !gpa.is_multiple_of(size.bytes()) || target_vmpl > 3 || perms & !PERM_ALL != 0 {
            return Ok(RET_FAIL_INPUT);
        }
        if !self.covers(gpa, size.bytes()) {
            return Err(RmpError::FindGuestMemory { gpa });
        }
        let first = self.get(gpa);
        if first.flags & ASSIGNED == 0 {
            return Err(RmpError::AccessUnassigned { gpa });
        }
        if first.flags & VALIDATED == 0 {
            return Ok(RET_FAIL_INPUT);
        }
        if (size == PageSize::Size2M) != (first.flags & LARGE != 0) {
            return Ok(RET_FAIL_SIZEMISMATCH);
        }
        // Only a more privileged (numerically lower) VMPL may adjust, and it
        // cannot grant what it does not hold.
        let held = if caller_vmpl == 0 {
            PERM_ALL
        } else {
            first.perms[usize::from(caller_vmpl.min(3)) - 1]
        };
        if target_vmpl <= caller_vmpl || perms & !held != 0 || (vmsa && caller_vmpl != 0) {
            return Ok(RET_FAIL_PERMISSION);
        }
        for p in Self::pages(gpa, size) {
            let mut e = self.get(p);
            e.perms[usize::from(target_vmpl) - 1] = perms;
            if vmsa {
                e.flags |= VMSA;
            } else {
                e.flags &= !VMSA;
            }
            self.set(p, e);
        }
        Ok(RET_SUCCESS)
    }

    /// LAUNCH_UPDATE's effect on a page: assigned, validated and immutable
    /// until LAUNCH_FINISH, VMPL1-3 without access (PAGE_INFO VMPLn_PERMS 0).
    pub(crate) fn set_launch_page(&mut self, gpa: u64) {
        self.set(
            gpa,
            Entry {
                flags: ASSIGNED | VALIDATED | IMMUTABLE,
                perms: [0; 3],
            },
        );
    }

    /// LAUNCH_FINISH: launch pages become ordinary guest-valid pages.
    pub(crate) fn clear_immutable(&mut self) {
        for chunk in self.chunks.values_mut() {
            for e in chunk.iter_mut() {
                e.flags &= !IMMUTABLE;
            }
        }
    }

    /// RMPREAD: the entry of the page holding `gpa`, or `None` outside guest
    /// memory.
    pub fn entry(&self, gpa: u64) -> Option<RmpEntry> {
        let gpa = gpa & !(PAGE_4K - 1);
        if !self.covers(gpa, PAGE_4K) {
            return None;
        }
        let e = self.get(gpa);
        let assigned = e.flags & ASSIGNED != 0;
        Some(RmpEntry {
            gpa,
            assigned,
            asid: if assigned { MODEL_ASID } else { 0 },
            validated: e.flags & VALIDATED != 0,
            page_size: if e.flags & LARGE != 0 {
                PageSize::Size2M
            } else {
                PageSize::Size4K
            },
            immutable: e.flags & IMMUTABLE != 0,
            vmsa: e.flags & VMSA != 0,
            vmpl_perms: if assigned {
                [PERM_ALL, e.perms[0], e.perms[1], e.perms[2]]
            } else {
                [0; 4]
            },
        })
    }

    /// Counts for the metrics JSON.
    pub fn summary(&self) -> RmpSummary {
        self.summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn rmp() -> Rmp {
        Rmp::new(&[(0, 3 * GIB), (4 * GIB, 60 * GIB)])
    }

    fn ok(no_update: bool) -> Pvalidate {
        Pvalidate {
            eax: RET_SUCCESS,
            no_update,
        }
    }

    #[test]
    fn sixty_four_gib_costs_nothing_until_touched() {
        let mut r = rmp();
        assert_eq!(r.chunks.len(), 0);
        assert!(!r.entry(63 * GIB).unwrap().assigned);
        r.assign(63 * GIB, PageSize::Size4K, false).unwrap();
        assert_eq!(r.chunks.len(), 1);
        assert_eq!(r.summary().assigned_pages, 1);
    }

    #[test]
    fn double_validation_is_reported() {
        let mut r = rmp();
        r.assign(0x10_0000, PageSize::Size4K, false).unwrap();
        assert_eq!(
            r.pvalidate(0x10_0000, PageSize::Size4K, true),
            Ok(ok(false))
        );
        // APM: CF = 1 when the validated bit already has the requested value.
        assert_eq!(r.pvalidate(0x10_0000, PageSize::Size4K, true), Ok(ok(true)));
        assert_eq!(
            r.pvalidate(0x10_0000, PageSize::Size4K, false),
            Ok(ok(false))
        );
        assert_eq!(
            r.pvalidate(0x10_0000, PageSize::Size4K, false),
            Ok(ok(true))
        );
        let s = r.summary();
        assert_eq!((s.pvalidates, s.pvalidate_no_update), (4, 2));
    }

    #[test]
    fn pvalidate_return_codes() {
        let mut r = rmp();
        assert_eq!(
            r.pvalidate(0x1000, PageSize::Size2M, true),
            Ok(Pvalidate::ret(RET_FAIL_INPUT))
        );
        assert_eq!(
            r.pvalidate(0x1000, PageSize::Size4K, true),
            Err(RmpError::AccessUnassigned { gpa: 0x1000 })
        );
        assert_eq!(
            r.pvalidate(0xD000_0000, PageSize::Size4K, true),
            Err(RmpError::FindGuestMemory { gpa: 0xD000_0000 })
        );
        // 2 MiB request over 4 KiB entries: FAIL_SIZEMISMATCH (6).
        r.assign(PAGE_2M, PageSize::Size4K, false).unwrap();
        assert_eq!(
            r.pvalidate(PAGE_2M, PageSize::Size2M, true),
            Ok(Pvalidate::ret(RET_FAIL_SIZEMISMATCH))
        );
        assert_eq!(r.summary().pvalidate_failures, 2);
    }

    #[test]
    fn two_mib_entries_validate_whole_and_smash_on_4k() {
        let mut r = rmp();
        r.assign(4 * PAGE_2M, PageSize::Size2M, false).unwrap();
        assert_eq!(r.summary().assigned_pages, 512);
        assert_eq!(
            r.pvalidate(4 * PAGE_2M, PageSize::Size2M, true),
            Ok(ok(false))
        );
        assert_eq!(r.summary().validated_pages, 512);
        // 4 KiB rescind inside the 2 MiB entry: PSMASH, then the page alone.
        assert_eq!(
            r.pvalidate(4 * PAGE_2M + PAGE_4K, PageSize::Size4K, false),
            Ok(ok(false))
        );
        assert_eq!(r.summary().psmashes, 1);
        assert_eq!(r.summary().validated_pages, 511);
        let e = r.entry(4 * PAGE_2M).unwrap();
        assert_eq!(e.page_size, PageSize::Size4K);
        assert!(e.validated);
        assert!(!r.entry(4 * PAGE_2M + PAGE_4K).unwrap().validated);
    }

    #[test]
    fn a_4k_conversion_inside_a_2m_entry_splits_it_first() {
        let mut r = rmp();
        r.assign(0x20_0000, PageSize::Size2M, false).unwrap();
        r.unassign(0x20_1000, PageSize::Size4K).unwrap();
        // The entry was split: no 2 MiB validation over an unassigned page.
        assert_eq!(
            r.pvalidate(0x20_0000, PageSize::Size2M, true).unwrap(),
            Pvalidate::ret(RET_FAIL_SIZEMISMATCH)
        );
        assert!(r.entry(0x20_1000).is_some_and(|e| !e.assigned));
        assert!(r.entry(0x20_2000).is_some_and(|e| e.assigned));
        assert_eq!(r.summary().psmashes, 1);
        // The rest stays usable 4 KiB at a time.
        assert_eq!(
            r.pvalidate(0x20_2000, PageSize::Size4K, true).unwrap(),
            Pvalidate::ret(RET_SUCCESS)
        );
    }

    #[test]
    fn launch_pages_are_immutable_until_finish() {
        let mut r = rmp();
        r.set_launch_page(0x5000);
        let e = r.entry(0x5000).unwrap();
        assert!(e.assigned && e.validated && e.immutable);
        assert_eq!(e.vmpl_perms, [PERM_ALL, 0, 0, 0]);
        assert_eq!(
            r.unassign(0x5000, PageSize::Size4K),
            Err(RmpError::UpdateImmutable { gpa: 0x5000 })
        );
        r.clear_immutable();
        r.unassign(0x5000, PageSize::Size4K).unwrap();
        assert_eq!(r.summary().assigned_pages, 0);
        assert_eq!(r.summary().validated_pages, 0);
    }

    #[test]
    fn rmpadjust_rules() {
        let mut r = rmp();
        r.assign(0x8000, PageSize::Size4K, false).unwrap();
        // Unvalidated page.
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 0, 1, 0, true),
            Ok(RET_FAIL_INPUT)
        );
        r.pvalidate(0x8000, PageSize::Size4K, true).unwrap();
        // Linux's VMPL0 probe and VMSA marking: target VMPL1, no permissions.
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 0, 1, 0, true),
            Ok(RET_SUCCESS)
        );
        assert!(r.entry(0x8000).unwrap().vmsa);
        // Target not less privileged than the caller, or more than held.
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 1, 1, 0, false),
            Ok(RET_FAIL_PERMISSION)
        );
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 1, 2, 0x3, false),
            Ok(RET_FAIL_PERMISSION)
        );
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 0, 4, 0, false),
            Ok(RET_FAIL_INPUT)
        );
        assert_eq!(
            r.rmpadjust(0x8000, PageSize::Size4K, 0, 2, 0x3, false),
            Ok(RET_SUCCESS)
        );
        assert_eq!(r.entry(0x8000).unwrap().vmpl_perms, [PERM_ALL, 0, 0x3, 0]);
    }
}
