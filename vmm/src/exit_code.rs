//! Process exit codes of `umbra run`.
//!
//! A guest that writes `code` to the debug-exit port makes umbra exit with
//! `code` (its low 8 bits, as every Unix exit status). The VMM's own outcomes
//! use codes above what test firmware reports.

/// The VM stopped on a memory violation (`--on-violation stop`).
pub const VIOLATION: i32 = 120;
/// The guest crashed (triple fault, unhandled exit).
pub const GUEST_CRASH: i32 = 121;
/// Every vCPU halted without reporting an exit code.
pub const ALL_HALTED: i32 = 122;
/// (SNP model) The guest made an access silicon would not have let reach
/// the hypervisor, and the model could not turn it into what silicon does.
pub const FIDELITY_VIOLATION: i32 = 123;
/// The run exceeded `--timeout`.
pub const TIMEOUT: i32 = 124;
/// The VMM failed: bad input, host without KVM, a failed ioctl.
pub const VMM_ERROR: i32 = 125;
