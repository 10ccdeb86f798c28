//! Device models and the bus that routes guest accesses to them.

pub mod bus;
pub mod debug_exit;
pub mod ioapic;
pub mod probe;
pub mod serial;
