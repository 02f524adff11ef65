//! Rate-limited logging for events that come in floods (refused connections, refused admin
//! requests): one line per interval, saying how many were held back since the last one.

use std::sync::atomic::{AtomicU64, Ordering};

/// Lets one log line through per [`LogLimiter::INTERVAL_MS`], and counts the ones it held
/// back.
pub struct LogLimiter {
    /// When the last line went out ([`crate::clock::now`] ms); `u64::MAX`: never.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LogLimiter {
    pub const INTERVAL_MS: u64 = 1_000;

    pub const fn new() -> Self {
        LogLimiter {
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Call `log` with the number of events held back since the last line, unless a line
    /// went out less than an interval ago.
    pub fn note(&self, log: impl FnOnce(u64)) {
        self.note_at(crate::clock::now().as_millis() as u64, log);
    }

    fn note_at(&self, now_ms: u64, log: impl FnOnce(u64)) {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now_ms.saturating_sub(last) >= Self::INTERVAL_MS;
        // Of two threads that find it due, one logs.
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log(self.suppressed.swap(0, Ordering::Relaxed));
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_one_line_a_second_through() {
        let l = LogLimiter::new();
        let mut lines = Vec::new();
        for t in [0, 10, 500, 999, 1_000, 1_001, 2_500] {
            l.note_at(t, |suppressed| lines.push((t, suppressed)));
        }
        assert_eq!(lines, vec![(0, 0), (1_000, 3), (2_500, 1)]);
    }
}
