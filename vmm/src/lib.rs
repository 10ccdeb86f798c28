//! umbra-vmm: a confidential-computing VMM for AMD SEV-SNP on KVM.
//!
//! Code map (docs/architecture.md has the picture): `cli` parses the command
//! line into a `config::VmConfig`; `run` picks the backend for the platform
//! and drives one run: `builder` (memory, memslots, load, vCPUs, launch),
//! `device_manager` (buses, interrupts, devices), `vcpu` (threads and exit
//! dispatch) and `event_loop` (the device thread). `backend` is the
//! hypervisor boundary (plain KVM, hardware SEV/SNP, the SNP model);
//! `dma` is the only way devices reach guest memory. Leaf utilities:
//! `error`, `sync`.

pub mod acpi;
pub(crate) mod api;
pub mod backend;
pub(crate) mod builder;
pub mod cli;
pub mod config;
pub mod device_config;
pub(crate) mod device_manager;
pub(crate) mod devices;
pub mod dma;
pub mod error;
pub(crate) mod event_loop;
pub mod exit_code;
pub mod firmware;
pub mod host_status;
pub(crate) mod interrupts;
pub mod iommu;
pub mod launch;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod numa;
pub mod page_state;
pub(crate) mod reclaim;
pub mod run;
pub mod run_control;
pub mod seccomp;
pub mod shared_memory;
pub mod snp_policy;
pub mod stat;
pub(crate) mod sync;
pub(crate) mod vcpu;
pub mod violation;
pub mod virtio;
