//! `--platform snp-model`: a software model of the AMD SEV-SNP firmware
//! (SNP ABI 56860, GHCB 56421) over plain KVM, for machines without SEV
//! hardware. It is not a mock: it keeps the firmware's guest state machine
//! and status codes ([`firmware`]), an RMP entry per 4 KiB page ([`rmp`]),
//! computes the launch digest exactly as the hardware does, checks the ID
//! block at LAUNCH_FINISH, writes the secrets page ([`secrets`]) and
//! validates the CPUID page ([`cpuid`]), answers guest messages encrypted
//! with the VMPCKs ([`guest_msg`]) and signs attestation reports
//! ([`report`]) with its own VCEK under its own ARK/ASK chain ([`keys`]).
//!
//! Guest memory is NOT encrypted: the model checks the protocol, not the
//! confidentiality. The guest reaches it through the GHCB MSR protocol
//! ([`ghcb`], owned by the VMM integration).
pub mod cpuid;
pub mod firmware;
pub mod ghcb;
pub mod guest_msg;
pub mod keys;
pub mod report;
pub mod rmp;
pub mod secrets;
