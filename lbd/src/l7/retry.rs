//! When a failed request may be sent again, and how many retries the proxy can afford.
//!
//! Retries turn a backend's failure into more load on the others; during an outage that can
//! snowball. So on top of the per-request bound (`retries.attempts`) a [`RetryBudget`] caps
//! retries at a share of recent traffic (Finagle's / linkerd's retry budget): every request
//! deposits `budget_percent / 100` of a token, every retry withdraws a whole one, and a
//! floor of `min_per_sec` tokens per second keeps low-traffic services retryable.
//!
//! The budget is lock-free and uses a coarse clock (milliseconds since an epoch the caller
//! passes in), so it is deterministic in tests.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use http::Method;

/// One token, in milli-tokens (integers keep the budget lock-free).
const TOKEN: i64 = 1000;

/// A retry budget shared by all requests of one snapshot.
#[derive(Debug)]
pub struct RetryBudget {
    /// Milli-tokens added per request.
    deposit: i64,
    /// Milli-tokens added per elapsed second (the floor).
    per_sec: i64,
    /// Maximum balance: ten seconds of floor plus 100 retries, so a burst after a quiet period
    /// is bounded.
    cap: i64,
    balance: AtomicI64,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_sec: u32, now_ms: u64) -> Self {
        let per_sec = i64::from(min_per_sec) * TOKEN;
        let cap = per_sec * 10 + 100 * TOKEN;
        RetryBudget {
            deposit: i64::from(percent) * TOKEN / 100,
            per_sec,
            cap,
            // Start with one second of floor so the first failures after boot can retry.
            balance: AtomicI64::new(per_sec),
            last_refill_ms: AtomicU64::new(now_ms),
        }
    }

    /// Count a request (call once per client request).
    pub fn deposit(&self) {
        self.add(self.deposit);
    }

    fn add(&self, amount: i64) {
        if amount == 0 {
            return;
        }
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((b + amount).min(self.cap))
            });
    }

    fn refill(&self, now_ms: u64) {
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        let elapsed = now_ms.saturating_sub(last);
        if elapsed < 100 {
            return;
        }
        // Only the thread that moves the clock forward adds the floor for that interval.
        if self
            .last_refill_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let amount = self.per_sec.saturating_mul(elapsed.min(60_000) as i64) / 1000;
            self.add(amount);
        }
    }

    /// Take one retry from the budget; `false` when it is exhausted.
    pub fn try_withdraw(&self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= TOKEN).then_some(b - TOKEN)
            })
            .is_ok()
    }
}

/// Methods whose repetition has no extra effect (RFC 9110 §9.2.2) and may be retried after
/// the request reached the backend.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_share_of_requests_plus_a_floor() {
        let b = RetryBudget::new(20, 0, 0);
        assert!(!b.try_withdraw(0), "no floor, no traffic: nothing to spend");
        for _ in 0..100 {
            b.deposit();
        }
        let mut granted = 0;
        while b.try_withdraw(0) {
            granted += 1;
        }
        assert_eq!(granted, 20);

        let b = RetryBudget::new(0, 5, 0);
        let mut granted = 0;
        while b.try_withdraw(0) {
            granted += 1;
        }
        assert_eq!(granted, 5, "one second of floor at start");
        assert!(b.try_withdraw(1000), "a second later the floor refilled");
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::PUT));
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }
}
