//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016, §3.4).
//!
//! A lookup table of [`TABLE_SIZE`] slots (a prime, so every skip is coprime with it) maps
//! `key_hash % TABLE_SIZE` to a backend. Each backend has a permutation of the slots,
//! `(offset + j * skip) % M`, with `offset` and `skip` derived from two hashes of its name. The
//! table is filled by letting backends take turns claiming their next preferred free slot;
//! a backend of weight `w` gets `w` turns per round (weights reduced by their gcd), so its share
//! of slots is proportional to its weight.
//!
//! The table covers the backends that are available with weight > 0. It is cached behind an
//! `ArcSwap` together with the fingerprint it was built for (each backend's name hash, weight
//! and membership). A pick compares the fingerprint in O(n) atomic loads; only a change in
//! membership rebuilds it (one builder at a time, others keep using the stale table meanwhile).
//! Rebuilding over the new set is what keeps the load balanced after a backend leaves; Maglev's
//! fill order keeps most surviving keys where they were.
//!
//! Per-request conditions that the table does not know about (retry exclusions, a backend at
//! `max_conns`, a flag flipped since the build) are handled by walking forward from the key's
//! slot to the next slot whose backend is eligible. Neighbouring slots belong to effectively
//! random backends, so the displaced keys spread over the others, deterministically per key.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::hash::mix64;
use super::{eligible, first_eligible, HashKey, PickContext};
use crate::upstream::backend::Backend;

/// Lookup table size: prime, and much larger than any pool (the paper wants M >> 100 N for
/// near-equal shares).
pub const TABLE_SIZE: usize = 65_537;

/// Marks an unfilled slot during the build.
const EMPTY: u32 = u32::MAX;

/// What the table was built from, per backend, in pool order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    name_hash: u64,
    weight: u32,
    in_table: bool,
}

impl Member {
    fn of(b: &Backend) -> Self {
        Self {
            name_hash: b.name_hash,
            weight: b.weight,
            in_table: b.weight > 0 && b.is_available(),
        }
    }
}

struct Table {
    members: Vec<Member>,
    /// Backend index per slot; empty when no backend was in the table.
    slots: Box<[u32]>,
}

impl Table {
    fn matches(&self, backends: &[Arc<Backend>]) -> bool {
        self.members.len() == backends.len()
            && self
                .members
                .iter()
                .zip(backends)
                .all(|(m, b)| *m == Member::of(b))
    }

    /// The first eligible backend at or after the key's slot. `None` when the table is empty or
    /// every member is ineligible (the caller then falls back to a backend outside the table).
    fn lookup(&self, key: u64, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let start = (key % TABLE_SIZE as u64) as usize;
        (0..TABLE_SIZE)
            .map(|step| self.slots[(start + step) % TABLE_SIZE] as usize)
            .find(|&i| backends.get(i).is_some_and(|b| eligible(i, b, ctx)))
    }

    fn build(backends: &[Arc<Backend>]) -> Self {
        let members: Vec<Member> = backends.iter().map(|b| Member::of(b)).collect();
        let slots = populate(&members);
        Self { members, slots }
    }
}

/// The fill loop of the paper (Pseudocode 1), with weighted turns.
fn populate(members: &[Member]) -> Box<[u32]> {
    struct Filler {
        index: u32,
        offset: u64,
        skip: u64,
        turns: u32,
        next: u64,
    }
    let m = TABLE_SIZE as u64;
    let g = members
        .iter()
        .filter(|mb| mb.in_table)
        .fold(0, |g, mb| gcd(g, mb.weight));
    let mut fillers: Vec<Filler> = members
        .iter()
        .enumerate()
        .filter(|(_, mb)| mb.in_table)
        .filter_map(|(i, mb)| {
            Some(Filler {
                index: u32::try_from(i).ok()?,
                // Two different mixes of the name hash stand in for the paper's two hashes.
                offset: mix64(mb.name_hash ^ 0x6f66_6673_6574) % m,
                skip: mix64(mb.name_hash ^ 0x0073_6b69_7000) % (m - 1) + 1,
                turns: mb.weight / g.max(1),
                next: 0,
            })
        })
        .collect();
    if fillers.is_empty() {
        return Box::new([]);
    }
    let mut slots = vec![EMPTY; TABLE_SIZE].into_boxed_slice();
    let mut filled = 0usize;
    'fill: loop {
        for f in &mut fillers {
            for _ in 0..f.turns {
                // Terminates: the permutation visits every slot within M steps and at least
                // one slot is still empty while `filled < M`.
                loop {
                    let c = ((f.offset + (f.next % m) * f.skip) % m) as usize;
                    f.next += 1;
                    if slots[c] == EMPTY {
                        slots[c] = f.index;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
    }
    slots
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

pub(super) struct Maglev {
    key: HashKey,
    table: ArcSwapOption<Table>,
    /// Held by the one thread rebuilding the table.
    rebuilding: Mutex<()>,
    /// Tables built so far (a metric, and how tests prove the cache works).
    builds: AtomicU64,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.table.load();
        f.debug_struct("Maglev")
            .field("key", &self.key)
            .field("table_built", &table.is_some())
            .field("builds", &self.builds())
            .finish()
    }
}

impl Maglev {
    pub(super) fn new(key: HashKey) -> Self {
        Self {
            key,
            table: ArcSwapOption::empty(),
            rebuilding: Mutex::new(()),
            builds: AtomicU64::new(0),
        }
    }

    /// The table for the current membership, rebuilt if stale (slow path of [`Self::pick`]).
    /// While another thread rebuilds, the stale table is returned: the eligibility walk keeps
    /// its answers correct, only less evenly spread for that moment.
    fn table_slow(&self, backends: &[Arc<Backend>]) -> Arc<Table> {
        if let Some(t) = self.table.load_full() {
            if t.matches(backends) {
                return t;
            }
            if let Ok(_guard) = self.rebuilding.try_lock() {
                return self.rebuild(backends);
            }
            return t;
        }
        // First use: wait for whoever is building so the work is done once. Call
        // `Balancer::warm` when creating the pool so no request ever waits here.
        let _guard = self
            .rebuilding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match self.table.load_full() {
            Some(t) if t.matches(backends) => t,
            _ => self.rebuild(backends),
        }
    }

    fn rebuild(&self, backends: &[Arc<Backend>]) -> Arc<Table> {
        let t = Arc::new(Table::build(backends));
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.table.store(Some(Arc::clone(&t)));
        t
    }

    pub(super) fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    pub(super) fn refresh(&self, backends: &[Arc<Backend>]) {
        let _ = self.table_slow(backends);
    }

    pub(super) fn pick(&self, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<usize> {
        // Without this check, "nothing eligible" (e.g. every backend excluded by retries) would
        // cost a walk over all 65537 slots.
        let fallback = first_eligible(backends, ctx)?;
        let key = ctx.key_hash(&self.key);
        // Fast path: a guard load, no reference-count traffic on a shared cache line.
        let current = self.table.load();
        match &*current {
            Some(t) if t.matches(backends) => {
                Some(t.lookup(key, ctx, backends).unwrap_or(fallback))
            }
            _ => {
                drop(current);
                let t = self.table_slow(backends);
                Some(t.lookup(key, ctx, backends).unwrap_or(fallback))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                name_hash: super::super::hash::stable_hash(
                    format!("b{i}").as_bytes(),
                    super::super::hash::SEED_NAME,
                ),
                weight: w,
                in_table: w > 0,
            })
            .collect()
    }

    #[test]
    fn table_is_full_and_weighted() {
        let slots = populate(&members(&[1, 2, 1]));
        assert_eq!(slots.len(), TABLE_SIZE);
        let mut counts = [0usize; 3];
        for &s in slots.iter() {
            assert_ne!(s, EMPTY);
            counts[s as usize] += 1;
        }
        // Turns are exact per round, so shares are within one round of 1:2:1.
        assert!(counts[1].abs_diff(2 * counts[0]) <= 4, "{counts:?}");
        assert!(counts[0].abs_diff(counts[2]) <= 2, "{counts:?}");
    }

    #[test]
    fn empty_membership_gives_empty_table() {
        assert!(populate(&members(&[0, 0])).is_empty());
        assert!(populate(&[]).is_empty());
    }
}
