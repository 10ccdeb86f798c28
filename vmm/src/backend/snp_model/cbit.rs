//! The model's check of the guest's C-bits. On silicon an SNP guest's
//! private accesses must carry the C-bit in its page tables and its shared
//! accesses must not: a private page reached without it, or a shared page
//! reached with it, faults (an RMP #NPF). This host's paging ignores the
//! model's C-bit (bit 52), so the model reads the guest's page tables
//! itself, as the hardware walker would, at the points where it knows what
//! the guest touches: at each guest request, the GHCB, the request and
//! response pages (and the extended request's certificate pages) must lack
//! the C-bit in every mapping the tables hold, and the pages under RIP and
//! RSP, in the mapping the CPU uses, must carry it. A C=1 alias of a shared
//! page is judged though the guest may not touch it through that alias:
//! it is one access away from a fault, and a guest keeps shared pages in
//! one C=0 mapping (Linux's direct map). Other mappings are not judged.
//! Four-level paging only: with CR4.LA57 or paging off the check is skipped.

use crate::backend::Vcpu;
use crate::memory::GuestRam;

/// Page-table entry bits (AMD APM vol. 2, "Long-Mode Page Translation").
const PRESENT: u64 = 1 << 0;
const PAGE_SIZE: u64 = 1 << 7;
/// Address bits 51:12 of an entry.
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// One leaf mapping: virtual base, physical base, size, C-bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Leaf {
    pub va: u64,
    pub pa: u64,
    pub size: u64,
    pub encrypted: bool,
}

/// What the walker reads: one 8-byte entry at a guest-physical address.
pub(super) trait Tables {
    fn entry(&self, gpa: u64) -> Option<u64>;
}

impl Tables for GuestRam {
    fn entry(&self, gpa: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        // The hardware walker reads the tables as private memory.
        self.firmware_read(gpa, &mut bytes)
            .then(|| u64::from_le_bytes(bytes))
    }
}

/// The leaf that maps `va` under `cr3`, if any.
pub(super) fn translate(tables: &dyn Tables, cr3: u64, c_bit: u64, va: u64) -> Option<Leaf> {
    let mask = ADDRESS & !c_bit;
    let mut table = cr3 & mask;
    for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
        let index = (va >> shift) & 0x1FF;
        let entry = tables.entry(table + index * 8)?;
        if entry & PRESENT == 0 {
            return None;
        }
        let size = 1u64 << shift;
        if level == 1 || (level <= 3 && entry & PAGE_SIZE != 0) {
            let pa = entry & mask & !(size - 1);
            return Some(Leaf {
                va: va & !(size - 1),
                pa,
                size,
                encrypted: entry & c_bit != 0,
            });
        }
        table = entry & mask;
    }
    None
}

/// Every leaf under `cr3` that maps one of `gpas`, with the index of the
/// page it maps, in one walk of at most `limit` entries (the guest controls
/// the tables; a hostile one cannot make the walk unbounded).
pub(super) fn leaves_mapping(
    tables: &dyn Tables,
    cr3: u64,
    c_bit: u64,
    gpas: &[u64],
    limit: usize,
) -> Vec<(usize, Leaf)> {
    let mask = ADDRESS & !c_bit;
    let mut found = Vec::new();
    let mut walker = Walker {
        tables,
        mask,
        c_bit,
        gpas,
        budget: limit,
        found: &mut found,
    };
    walker.walk(cr3 & mask, 4, 0);
    found
}

/// The state of one reverse lookup.
struct Walker<'a> {
    tables: &'a dyn Tables,
    mask: u64,
    c_bit: u64,
    gpas: &'a [u64],
    budget: usize,
    found: &'a mut Vec<(usize, Leaf)>,
}

impl Walker<'_> {
    fn walk(&mut self, table: u64, level: u32, va_base: u64) {
        let shift = 12 + 9 * (level - 1);
        for index in 0..512u64 {
            if self.budget == 0 {
                return;
            }
            self.budget -= 1;
            let Some(entry) = self.tables.entry(table + index * 8) else {
                return;
            };
            if entry & PRESENT == 0 {
                continue;
            }
            let va = va_base | (index << shift);
            let size = 1u64 << shift;
            if level == 1 || (level <= 3 && entry & PAGE_SIZE != 0) {
                let pa = entry & self.mask & !(size - 1);
                let leaf = Leaf {
                    va,
                    pa,
                    size,
                    encrypted: entry & self.c_bit != 0,
                };
                for (i, gpa) in self.gpas.iter().enumerate() {
                    if (pa..pa + size).contains(gpa) {
                        self.found.push((i, leaf));
                    }
                }
            } else {
                self.walk(entry & self.mask, level - 1, va);
            }
        }
    }
}

/// Entries a reverse lookup may read (a 4 GiB identity map in 4 KiB pages
/// is about 1 M; the firmware's is a few thousand).
const WALK_LIMIT: usize = 1 << 21;

impl super::ModelVcpu {
    /// The check after a guest request: the GHCB, request and response
    /// pages (`shared`) must be mapped without the C-bit wherever they are
    /// mapped, and the pages under RIP and RSP with it. A violation is
    /// recorded; in strict mode it stops the run, as silicon would fault.
    pub(super) fn check_c_bits(
        &mut self,
        shared: super::ghcb::SharedUse,
    ) -> Option<crate::backend::VcpuExit<'static>> {
        let index = self.inner.index();
        let (regs, sregs) = match (self.inner.fd().get_regs(), self.inner.fd().get_sregs()) {
            (Ok(r), Ok(s)) => (r, s),
            _ => return None,
        };
        const CR0_PG: u64 = 1 << 31;
        const CR4_LA57: u64 = 1 << 12;
        if sregs.cr0 & CR0_PG == 0 || sregs.cr4 & CR4_LA57 != 0 {
            log::debug!("vCPU {index}: C-bit check skipped (paging off or five-level)");
            return None;
        }
        let c_bit = super::lock(&self.runtime).c_bit_mask();
        let ram: &GuestRam = &self.ram;
        let mut found = None;
        let mut pages = vec![
            ("the GHCB", shared.ghcb),
            ("the request page", shared.request),
            ("the response page", shared.response),
        ];
        if let Some((first, count)) = shared.certs {
            pages.extend((0..count.min(64)).map(|i| ("a certificate page", first + i * 4096)));
        }
        let gpas: Vec<u64> = pages.iter().map(|(_, gpa)| *gpa).collect();
        if let Some((i, leaf)) = leaves_mapping(ram, sregs.cr3, c_bit, &gpas, WALK_LIMIT)
            .into_iter()
            .find(|(_, l)| l.encrypted)
        {
            let (what, gpa) = pages[i];
            found = Some((
                format!(
                    "{what} at {gpa:#x}, shared, is mapped with the C-bit at VA {:#x}",
                    leaf.va
                ),
                gpa,
            ));
        }
        if found.is_none() {
            for (what, va) in [
                ("the code under RIP", regs.rip),
                ("the stack under RSP", regs.rsp),
            ] {
                if let Some(leaf) = translate(ram, sregs.cr3, c_bit, va).filter(|l| !l.encrypted) {
                    let gpa = leaf.pa + (va - leaf.va);
                    found = Some((
                        format!("{what} (VA {va:#x}, GPA {gpa:#x}), private, is mapped without the C-bit"),
                        gpa,
                    ));
                    break;
                }
            }
        }
        let (what, gpa) = found?;
        let line = format!("vCPU {index}: {what}; silicon would fault (RMP #NPF) on the access");
        let mut runtime = super::lock(&self.runtime);
        runtime
            .fidelity_violations
            .push(super::ghcb::FidelityViolation {
                vcpu: index,
                kind: "c-bit",
                address: gpa,
                write: false,
                silicon: "RMP #NPF".to_string(),
            });
        if self.strict {
            Some(crate::backend::VcpuExit::FidelityViolation(line))
        } else {
            log::warn!("{line}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const C: u64 = 1 << 52;

    /// Tables in a map: PML4 at 0x1000, PDPT 0x2000, PD 0x3000, PT 0x4000.
    fn tables() -> HashMap<u64, u64> {
        let mut t = HashMap::new();
        t.insert(0x1000, 0x2000 | PRESENT | C);
        t.insert(0x2000, 0x3000 | PRESENT | C);
        // PD[0] -> the 4 KiB table; PD[1] a 2 MiB private page at 2 MiB.
        t.insert(0x3000, 0x4000 | PRESENT | C);
        t.insert(0x3008, 0x20_0000 | PRESENT | PAGE_SIZE | C);
        // PT[5]: 0x5000 private; PT[6]: 0x6000 shared (no C-bit).
        t.insert(0x4000 + 5 * 8, 0x5000 | PRESENT | C);
        t.insert(0x4000 + 6 * 8, 0x6000 | PRESENT);
        t
    }

    impl Tables for HashMap<u64, u64> {
        fn entry(&self, gpa: u64) -> Option<u64> {
            Some(self.get(&gpa).copied().unwrap_or(0))
        }
    }

    #[test]
    fn translation_finds_the_leaf_and_its_c_bit() {
        let t = tables();
        let leaf = |va| translate(&t, 0x1000 | C, C, va);
        assert_eq!(
            leaf(0x5123),
            Some(Leaf {
                va: 0x5000,
                pa: 0x5000,
                size: 0x1000,
                encrypted: true
            })
        );
        assert_eq!(leaf(0x6000).map(|l| l.encrypted), Some(false));
        assert_eq!(
            leaf(0x2F_0000),
            Some(Leaf {
                va: 0x20_0000,
                pa: 0x20_0000,
                size: 0x20_0000,
                encrypted: true
            })
        );
        assert_eq!(leaf(0x7000), None, "not present");
    }

    #[test]
    fn reverse_lookup_finds_every_mapping_within_its_budget() {
        let mut t = tables();
        // A second mapping of 0x6000, private this time, at PT[9].
        t.insert(0x4000 + 9 * 8, 0x6000 | PRESENT | C);
        let leaves = leaves_mapping(&t, 0x1000, C, &[0x6010], 1 << 16);
        assert_eq!(leaves.len(), 2);
        assert_eq!(
            leaves
                .iter()
                .map(|(_, l)| (l.va, l.encrypted))
                .collect::<Vec<_>>(),
            vec![(0x6000, false), (0x9000, true)]
        );
        // Several pages in one walk: each leaf names the page it maps.
        let both = leaves_mapping(&t, 0x1000, C, &[0x6010, 0x5000], 1 << 16);
        assert_eq!(
            both.iter().map(|(i, l)| (*i, l.va)).collect::<Vec<_>>(),
            vec![(1, 0x5000), (0, 0x6000), (0, 0x9000)]
        );
        // A table that points at itself ends within the budget.
        let mut looped = HashMap::new();
        looped.insert(0x1000u64, 0x1000 | PRESENT);
        assert!(leaves_mapping(&looped, 0x1000, C, &[0x1000], 10_000).len() < 10_000);
    }
}
