//! Weighted rendezvous (highest random weight) hashing, used for `IpHash`.
//!
//! Each eligible backend scores `-ln(u) / weight` where `u` in (0, 1] is a hash of (key,
//! backend name); the lowest score wins. Properties that matter here:
//!
//! - stable: a key maps to the same backend for as long as that backend is eligible, on both
//!   nodes of the pair (names and hashes are the same);
//! - minimal disruption: when a backend leaves, only its own keys move (to their second
//!   choice), and they spread over the survivors in proportion to weight;
//! - weights: the share of backend `i` is `w_i / sum(w)` (the exponential-race identity).
//!
//! O(n) per pick, which is fine for pools of tens of backends; Maglev is the O(1) option.

use std::sync::Arc;

use super::hash::mix64;
use super::{eligible, PickContext};
use crate::upstream::backend::Backend;

pub(super) fn pick(key: u64, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, b) in backends.iter().enumerate() {
        if !eligible(i, b, ctx) {
            continue;
        }
        let score = score(key, b.name_hash, b.weight);
        // Strict `<`: on an (astronomically unlikely) tie the lower index wins, deterministically.
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

fn score(key: u64, name_hash: u64, weight: u32) -> f64 {
    let h = mix64(key ^ mix64(name_hash));
    // 53 random bits mapped to (0, 1]: never 0, so ln is finite.
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
    -u.ln() / f64::from(weight)
}
