//! Round robin and nginx's smooth weighted round robin.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::{count_eligible, eligible, nth_eligible, PickContext};
use crate::upstream::backend::Backend;

/// Plain rotation over the eligible backends.
///
/// Counting the eligible backends first and taking the `counter % k`-th keeps the shares equal
/// when some are down; "next index after the counter, skipping down ones" would give the
/// backend after a down one a double share.
#[derive(Debug, Default)]
pub(super) struct RoundRobin {
    counter: AtomicUsize,
}

impl RoundRobin {
    pub(super) fn pick(&self, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
        let k = count_eligible(backends, ctx);
        if k == 0 {
            return None;
        }
        // A retry (something excluded) doesn't advance the rotation: its request already
        // took a turn. Otherwise, with one failing backend of two, every request's first pick
        // plus its retry would advance by two and each new request would start on the
        // failing backend again.
        let turn = if ctx.exclude.is_empty() {
            self.counter.fetch_add(1, Ordering::Relaxed)
        } else {
            self.counter.load(Ordering::Relaxed)
        };
        nth_eligible(backends, ctx, turn % k)
    }
}

/// nginx's smooth weighted round robin (`ngx_http_upstream_get_peer`).
///
/// Every pick adds each eligible backend's weight to its `current`, picks the largest
/// `current` and subtracts the total weight from it. Over `sum(weights)` picks each backend
/// is chosen exactly `weight` times and the picks are spread out (5:1:1 gives a a b a c a a,
/// not a a a a a b c).
#[derive(Debug, Default)]
pub(super) struct SmoothWeighted {
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    pub(super) fn pick(&self, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
        // The state is plain integers, valid after any partial update: recover from poison.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.len() != backends.len() {
            // First pick, or the pool changed shape: start the sequence over.
            current.clear();
            current.resize(backends.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, b) in backends.iter().enumerate() {
            if !eligible(i, b, ctx) {
                continue;
            }
            let w = i64::from(b.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|j| current[i] > current[j]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }
}
