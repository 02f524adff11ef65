//! Load-aware algorithms: least connections and power of two choices.
//!
//! Both compare `in_flight / weight`, cross-multiplied in u64 so there is no division and no
//! rounding. In-flight counts are read with relaxed loads: they are a hint that is a few
//! requests stale at worst, which is what every load balancer works with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rand::Rng;

use super::{count_eligible, eligible, less_loaded, PickContext};
use crate::upstream::backend::Backend;

/// Fewest in-flight requests per weight (nginx `least_conn`). Ties are broken by starting the
/// scan at a rotating offset, so equally loaded backends (e.g. all idle) share in rotation
/// instead of the first one taking everything.
#[derive(Debug, Default)]
pub(super) struct LeastConnections {
    counter: AtomicUsize,
}

impl LeastConnections {
    pub(super) fn pick(&self, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.counter.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<usize> = None;
        for step in 0..n {
            let i = (start + step) % n;
            let b = &backends[i];
            if !eligible(i, b, ctx) {
                continue;
            }
            if best.is_none_or(|j| less_loaded(b, &backends[j])) {
                best = Some(i);
            }
        }
        best
    }
}

/// Power of two choices (Mitzenmacher): sample two distinct eligible backends uniformly and
/// take the less loaded. Nearly as good as a global least-loaded scan, but two random samples
/// keep concurrent pickers from all piling onto the same "least loaded" backend.
pub(super) fn two_choices(ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
    let k = count_eligible(backends, ctx);
    let (a, b) = match k {
        0 => return None,
        1 => (0, 0),
        _ => {
            let mut rng = rand::thread_rng();
            let a = rng.gen_range(0..k);
            let mut b = rng.gen_range(0..k - 1);
            if b >= a {
                b += 1;
            }
            (a, b)
        }
    };
    // One pass maps both ranks to indices.
    let (mut ia, mut ib) = (None, None);
    let mut rank = 0;
    for (i, backend) in backends.iter().enumerate() {
        if !eligible(i, backend, ctx) {
            continue;
        }
        if rank == a {
            ia = Some(i);
        }
        if rank == b {
            ib = Some(i);
        }
        rank += 1;
    }
    match (ia, ib) {
        (Some(x), Some(y)) => Some(if less_loaded(&backends[y], &backends[x]) {
            y
        } else {
            x
        }),
        // Availability changed between the count and the scan: take whatever was found.
        (Some(x), None) | (None, Some(x)) => Some(x),
        (None, None) => super::first_eligible(backends, ctx),
    }
}
