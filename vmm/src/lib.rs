//! umbra-vmm: a confidential-computing VMM for AMD SEV-SNP on KVM.
//!
//! Code map: `cli` parses the command line into a `config::VmConfig`;
//! `vmm::run` lays out `memory`, loads the guest through `loader`, creates
//! vCPUs through the `backend` boundary and runs them, routing port I/O to
//! `devices` and refused memory accesses to `violation`; `metrics` is the
//! JSON summary. `firmware` embeds the image built from `umbra-firmware`.

pub mod backend;
pub mod cli;
pub mod config;
pub mod devices;
pub mod exit_code;
pub mod firmware;
pub mod host_status;
pub mod launch;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod page_state;
pub mod run_control;
pub mod shared_memory;
pub mod snp_model;
pub mod snp_run;
pub mod violation;
pub mod vmm;
