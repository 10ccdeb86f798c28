//! umbra-snp-model: a software model of the AMD SEV-SNP firmware (the PSP,
//! SNP ABI 56860) and of the RMP, with no knowledge of any VMM, so that the
//! VMM's model backend, tests, fuzzers and the attestation crate can all
//! use it as an oracle.
//!
//! It is not a mock: it keeps the firmware's guest state machine and status
//! codes ([`psp`]), an RMP entry per 4 KiB page ([`rmp`]), computes the
//! launch digest exactly as the hardware does, checks the ID block at
//! LAUNCH_FINISH, writes the secrets page ([`secrets`]) and validates the
//! CPUID page ([`cpuid`]), answers guest messages encrypted with the VMPCKs
//! ([`guest_msg`]) and signs attestation reports ([`report`]) with its own
//! VCEK under its own ARK/ASK chain ([`keys`]), whose storage is the
//! caller's ([`keys::KeyStore`]).
//!
//! Guest memory is NOT encrypted: the model checks the protocol, not the
//! confidentiality. How a guest reaches it (the GHCB protocol) belongs to
//! the hypervisor, not to the PSP, and lives in the VMM's model backend.

pub mod abi;
pub mod cpuid;
pub mod guest_msg;
pub mod keys;
pub mod psp;
pub mod report;
pub mod rmp;
pub mod secrets;

pub use psp::{LaunchFinishParams, Platform, SnpFirmwareModel};
