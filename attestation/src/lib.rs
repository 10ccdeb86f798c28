//! umbra-attestation: a pure library for SEV-SNP evidence and launch identity.
//!
//! No I/O happens in the core modules: callers pass bytes in and get typed
//! results out. The `umbra-attest` binary and the KDS client sit at the edge.

pub mod id_block;
pub mod measure;

// Verification side: report parsing, certificate chains, checks, policy, KDS.
pub mod chain;
pub mod console;
pub mod der;
pub mod hex;
pub mod http;
pub mod kbs;
pub mod kds;
pub mod policy;
pub mod report;
pub mod time;
pub mod verify;
