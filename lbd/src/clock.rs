//! lbd's monotonic clock: time since the process started, the epoch of the pure state machines
//! (health, soft state, the peer link's replication) and of the millisecond timestamps kept in
//! atomics.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Monotonic time since process start.
pub fn now() -> Duration {
    start().elapsed()
}

/// The instant [`now`] counts from (fixed on first use; the server asks for it at startup).
pub fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}
