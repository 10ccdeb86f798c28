//! NUMA placement (`--numa-node N`): guest RAM bound to host node N with
//! mbind(MPOL_BIND) before the guest touches it, and the vCPU threads
//! pinned to that node's CPUs, as `numactl --membind N --cpunodebind N`
//! would place a whole QEMU. `/proc/PID/numa_maps` shows `bind:N` on the
//! guest's mappings; [`pages_per_node`] reads it back for the metrics.

use crate::memory::GuestRam;
use std::collections::BTreeMap;
use thiserror::Error;

/// `MPOL_BIND` (linux/mempolicy.h).
const MPOL_BIND: libc::c_ulong = 2;
/// Bits in the node mask handed to mbind.
const MAX_NODES: usize = 1024;

/// Why a placement could not be made.
#[derive(Debug, Error)]
pub enum NumaError {
    /// The host has no such node.
    #[error("NUMA node {node} does not exist on this host (it has {have})")]
    FindNode {
        /// The node asked for.
        node: u32,
        /// The nodes there are.
        have: String,
    },
    /// The node's CPU list is unreadable.
    #[error("cannot read the CPUs of NUMA node {0}")]
    ReadCpus(u32, #[source] std::io::Error),
    /// mbind refused.
    #[error("cannot bind guest memory to NUMA node {node}")]
    Bind {
        /// The node.
        node: u32,
        /// errno.
        #[source]
        source: std::io::Error,
    },
}

/// The host nodes with memory, e.g. "0-1" (what `/sys` says).
fn host_nodes() -> String {
    std::fs::read_to_string("/sys/devices/system/node/has_memory")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "none".into())
}

/// Parses a kernel CPU or node list such as `0-3,8,10-11`.
fn parse_list(text: &str) -> Vec<usize> {
    text.trim()
        .split(',')
        .filter(|p| !p.is_empty())
        .flat_map(|part| {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let (lo, hi) = (
                lo.trim().parse().unwrap_or(1),
                hi.trim().parse().unwrap_or(0),
            );
            lo..=hi
        })
        .collect()
}

/// The CPUs of host node `node`, checking that the node has memory.
pub fn node_cpus(node: u32) -> Result<Vec<usize>, NumaError> {
    if !parse_list(&host_nodes()).contains(&(node as usize)) {
        return Err(NumaError::FindNode {
            node,
            have: host_nodes(),
        });
    }
    let path = format!("/sys/devices/system/node/node{node}/cpulist");
    let text = std::fs::read_to_string(path).map_err(|e| NumaError::ReadCpus(node, e))?;
    Ok(parse_list(&text))
}

/// Binds every guest RAM mapping of `ram` to `node`.
pub(crate) fn bind(ram: &GuestRam, node: u32) -> Result<(), NumaError> {
    let mut mask = [0 as libc::c_ulong; MAX_NODES / 64];
    let bits = libc::c_ulong::BITS as usize;
    mask[node as usize / bits] |= 1 << (node as usize % bits);
    for range in ram.guest_ranges() {
        // SAFETY: [host_addr, host_addr + size) is a mapping `ram` owns
        // (guest RAM or the ROM); mbind only sets its memory policy, and
        // the mask is a valid array of MAX_NODES bits.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                range.host_addr as usize,
                range.size as usize,
                MPOL_BIND,
                mask.as_ptr(),
                MAX_NODES as libc::c_ulong,
                0 as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(NumaError::Bind {
                node,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpus`.
pub(crate) fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the
    // calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Resident pages of this process per host node, from
/// `/proc/self/numa_maps` (`N0=123` fields).
pub fn pages_per_node() -> BTreeMap<String, u64> {
    let mut pages = BTreeMap::new();
    let text = std::fs::read_to_string("/proc/self/numa_maps").unwrap_or_default();
    for field in text.split_whitespace() {
        if let Some((node, count)) = field.split_once('=') {
            if node.starts_with('N') && node[1..].bytes().all(|b| b.is_ascii_digit()) {
                *pages.entry(node.to_string()).or_default() += count.parse::<u64>().unwrap_or(0);
            }
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lists_parse() {
        assert_eq!(parse_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_list("0"), vec![0]);
        assert_eq!(parse_list(""), Vec::<usize>::new());
    }

    #[test]
    fn a_node_the_host_lacks_is_named() {
        let err = node_cpus(4000).unwrap_err();
        assert!(
            err.to_string().contains("NUMA node 4000 does not exist"),
            "{err}"
        );
    }
}
