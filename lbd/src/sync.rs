//! Locking a `std` mutex the way every lbd module does.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, carrying on past poisoning: a poisoned mutex only means another thread panicked
/// while holding it, and every lbd operation leaves its data consistent between statements
/// that can panic (none should), so one panic must not take every later request down too.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
