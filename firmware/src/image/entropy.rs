//! Randomness for keys made inside the guest: RDRAND, the CPU's own
//! generator. Under SEV-SNP the host is not trusted, so a host-provided
//! source (virtio-rng, a seed on the command line) would let it choose the
//! guest's private key; without RDRAND there is no key.

use crate::platform;
use core::arch::asm;

/// CPUID.1:ECX bit 30 (Intel SDM vol. 2, "RDRAND"; AMD APM vol. 3).
const CPUID_1_ECX_RDRAND: u32 = 1 << 30;
/// Retries per word after a CF=0 (Intel's DRNG guide recommends 10).
const RETRIES: usize = 10;

fn rdrand64() -> Option<u64> {
    for _ in 0..RETRIES {
        let value: u64;
        let ok: u8;
        // SAFETY: RDRAND only writes the output register and CF; the
        // caller checked CPUID that the instruction exists.
        unsafe {
            asm!("rdrand {v}", "setc {ok}", v = out(reg) value, ok = out(reg_byte) ok,
                 options(nomem, nostack))
        };
        if ok != 0 {
            return Some(value);
        }
    }
    None
}

/// 32 random bytes, or `None` if the CPU has no RDRAND or it keeps failing.
pub fn random32() -> Option<[u8; 32]> {
    if platform::cpuid(1, 0)[2] & CPUID_1_ECX_RDRAND == 0 {
        return None;
    }
    let mut out = [0u8; 32];
    for chunk in out.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rdrand64()?.to_le_bytes());
    }
    Some(out)
}
