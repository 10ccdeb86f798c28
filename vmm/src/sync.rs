//! Locking shared by devices, the run control and the backends.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering from a poisoned lock: device and protocol state
/// stays usable even if another thread panicked while holding it (release
/// builds abort on panic, so this only matters in tests).
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
