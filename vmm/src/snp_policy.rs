//! The guest-policy checks SNP_LAUNCH_START makes on silicon, made by the
//! VMM before the launch and shared by `--platform snp` and `snp-model`, so
//! a refused bit is named in one line instead of surfacing as the kernel's
//! bare EINVAL:
//!
//! - the kernel's (arch/x86/kvm/svm/sev.c `snp_launch_start`): since 6.17
//!   the bits it accepts are published as `KVM_X86_SNP_POLICY_BITS`; Linux
//!   6.11-6.16 accept ABI major/minor, SMT, the reserved-one bit, DEBUG and
//!   SINGLE_SOCKET, require SMT and refuse SINGLE_SOCKET;
//! - the firmware's structural rules (SNP ABI 56860 §4.3): bit 17 is one,
//!   bits 63:26 are zero. What else the firmware refuses (an ABI version
//!   it does not implement, features the platform lacks) it answers itself
//!   with POLICY_FAILURE, on silicon and in the model.

use thiserror::Error;

/// The policy bits a Linux 6.11-6.16 kernel accepts.
pub const LINUX_6_11_POLICY_BITS: u64 = 0xFFFF | SMT | RESERVED_ONE | DEBUG | SINGLE_SOCKET;

const SMT: u64 = 1 << 16;
const RESERVED_ONE: u64 = 1 << 17;
const DEBUG: u64 = 1 << 19;
const SINGLE_SOCKET: u64 = 1 << 20;

/// Names of the policy bits from 16 (SNP ABI 56860 table "Guest Policy").
const NAMES: [&str; 10] = [
    "SMT",
    "reserved, must be one",
    "MIGRATE_MA",
    "DEBUG",
    "SINGLE_SOCKET",
    "CXL_ALLOW",
    "MEM_AES_256_XTS",
    "RAPL_DIS",
    "CIPHERTEXT_HIDING",
    "PAGE_SWAP_DISABLE",
];

/// A policy the launch would refuse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("--policy {policy:#x}: bit {bit} ({name}) {why}")]
pub struct PolicyError {
    /// The policy given.
    pub policy: u64,
    /// The offending bit.
    pub bit: u32,
    /// Its name.
    pub name: &'static str,
    /// Who refuses it and why.
    pub why: String,
}

fn name(bit: u32) -> &'static str {
    bit.checked_sub(16)
        .and_then(|i| NAMES.get(i as usize))
        .copied()
        .unwrap_or("reserved")
}

/// The firmware's structural rules alone (bit 17 one, bits 63:26 zero),
/// which no kernel changes: checked before the host is probed.
pub fn check_structure(policy: u64) -> Result<(), PolicyError> {
    // Every kernel accepts what the structural rules leave, as far as
    // this check goes: pass the bits themselves as "published".
    check(policy, Some(policy | RESERVED_ONE))
}

/// Checks `policy` against the kernel's accepted bits (`None`: the kernel
/// does not publish them, so Linux 6.11's rules apply) and the firmware's
/// structural rules.
pub fn check(policy: u64, kernel_bits: Option<u64>) -> Result<(), PolicyError> {
    let refuse = |bit: u32, why: String| PolicyError {
        policy,
        bit,
        name: name(bit),
        why,
    };
    if policy & RESERVED_ONE == 0 {
        return Err(refuse(
            17,
            "must be set: the firmware answers INVALID_PARAM".into(),
        ));
    }
    if let Some(bit) = (26..64).find(|b| policy & (1 << b) != 0) {
        return Err(refuse(
            bit,
            "is reserved and must be zero: the firmware answers INVALID_PARAM".into(),
        ));
    }
    let (allowed, kernel) = match kernel_bits {
        Some(bits) => (
            bits,
            format!("this kernel (KVM_X86_SNP_POLICY_BITS {bits:#x})"),
        ),
        None => (
            LINUX_6_11_POLICY_BITS,
            "Linux 6.11-6.16 (no KVM_X86_SNP_POLICY_BITS)".to_string(),
        ),
    };
    if let Some(bit) = (16..26).find(|b| policy & (1 << b) != 0 && allowed & (1 << b) == 0) {
        return Err(refuse(bit, format!("is not accepted by {kernel}")));
    }
    if kernel_bits.is_none() {
        if policy & SMT == 0 {
            return Err(refuse(16, format!("must be set for {kernel}")));
        }
        if policy & SINGLE_SOCKET != 0 {
            return Err(refuse(20, format!("is refused by {kernel}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_6_11_rules_without_the_attribute() {
        assert_eq!(check(0x30000, None), Ok(()));
        assert_eq!(check(0xB0000, None), Ok(()), "DEBUG is accepted");
        let bit = |p, k| check(p, k).map_err(|e| (e.bit, e.name));
        assert_eq!(bit(0x20000, None), Err((16, "SMT")));
        assert_eq!(bit(0x10000, None), Err((17, "reserved, must be one")));
        assert_eq!(bit(0x70000, None), Err((18, "MIGRATE_MA")));
        assert_eq!(bit(0x130000, None), Err((20, "SINGLE_SOCKET")));
        assert_eq!(bit(0x430000, None), Err((22, "MEM_AES_256_XTS")));
        assert_eq!(bit(0x1_0003_0000, None), Err((32, "reserved")));
    }

    #[test]
    fn the_structural_rules_need_no_kernel() {
        assert_eq!(
            check_structure(0x130000),
            Ok(()),
            "a kernel may allow SINGLE_SOCKET"
        );
        assert_eq!(check_structure(0x10000).map_err(|e| e.bit), Err(17));
        assert_eq!(check_structure(0x4_0003_0000).map_err(|e| e.bit), Err(34));
    }

    #[test]
    fn the_kernel_attribute_decides_when_published() {
        let bits = LINUX_6_11_POLICY_BITS | (1 << 21);
        assert_eq!(check(0x230000, Some(bits)), Ok(()), "CXL_ALLOW published");
        assert_eq!(check(0x20000, Some(bits)), Ok(()), "SMT no longer required");
        assert_eq!(check(0x130000, Some(bits)), Ok(()), "SINGLE_SOCKET allowed");
        let e = check(0x70000, Some(bits)).unwrap_err();
        assert_eq!((e.bit, e.name), (18, "MIGRATE_MA"));
        assert!(e
            .to_string()
            .starts_with("--policy 0x70000: bit 18 (MIGRATE_MA) is not accepted by this kernel"));
    }
}
