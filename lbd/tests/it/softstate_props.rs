//! Property tests of `lbd::softstate`'s replication: the merge laws (commutative,
//! associative, idempotent: any order, grouping and duplication of the same records gives
//! the same digest), convergence of nodes that exchange records, the codec round trip,
//! decoding of arbitrary bytes (errors, never panics) and the changed-set bound.
//!
//! Records come from three nodes running random operations on clocks with unrelated
//! epochs (their `now`s differ by large offsets), as in a real pair after a partition.

use std::collections::HashSet;
use std::time::Duration;

use lbd::softstate::{Limits, RateSpec, SoftState};
use proptest::prelude::*;
use shared::peer::{Record, RecordKey, ReplicaStore, Table};

const POOLS: [&str; 2] = ["web", "api"];
const BACKENDS: [&str; 3] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"];
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// Each node's clock epoch: far apart, so only ages/remaining times can make sense of them.
const OFFSETS: [Duration; 3] = [
    Duration::from_secs(1_000),
    Duration::from_secs(50),
    Duration::from_secs(777_777),
];

#[derive(Debug, Clone)]
enum Op {
    Learn {
        node: usize,
        pool: usize,
        cookie: u8,
        backend: usize,
        ttl_s: u64,
    },
    Forget {
        node: usize,
        pool: usize,
        cookie: u8,
    },
    Rate {
        node: usize,
        limiter: usize,
        key: u8,
        tokens: u8,
    },
    Drain {
        node: usize,
        pool: usize,
        backend: usize,
        drained: bool,
    },
    /// Replicate `from`'s records to `to` right now (no delay: exact time conversion).
    Sync { from: usize, to: usize },
    /// Keep `node`'s records as encoded now, to be merged later (a delayed or stale view).
    Snapshot { node: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, 0..2usize, 0..5u8, 0..3usize, 1..20u64).prop_map(
            |(node, pool, cookie, backend, ttl_s)| Op::Learn { node, pool, cookie, backend, ttl_s }
        ),
        1 => (0..3usize, 0..2usize, 0..5u8).prop_map(|(node, pool, cookie)| Op::Forget {
            node,
            pool,
            cookie
        }),
        3 => (0..3usize, 0..2usize, 0..4u8, 1..8u8).prop_map(|(node, limiter, key, tokens)| {
            Op::Rate { node, limiter, key, tokens }
        }),
        2 => (0..3usize, 0..2usize, 0..3usize, any::<bool>()).prop_map(
            |(node, pool, backend, drained)| Op::Drain { node, pool, backend, drained }
        ),
        2 => (0..3usize, 0..3usize).prop_map(|(from, to)| Op::Sync { from, to }),
        1 => (0..3usize).prop_map(|node| Op::Snapshot { node }),
    ]
}

/// (time step before the op in ms, op)
fn history() -> impl Strategy<Value = Vec<(u64, Op)>> {
    // Zero steps are common so that different nodes write at the same instant (ties).
    let step = prop_oneof![Just(0u64), 0..3_000u64];
    prop::collection::vec((step, op()), 1..60)
}

const SPEC: RateSpec = RateSpec {
    rate_per_s: 2.0,
    burst: 6,
};

fn big() -> Limits {
    Limits {
        sticky_max_entries: 10_000,
        rate_max_keys: 10_000,
        admin_max_entries: 10_000,
        ..Limits::default()
    }
}

/// Entry bounds of `entries` and byte bounds of `bytes` on the sticky and rate tables.
fn bounded(entries: usize, bytes: usize) -> Limits {
    Limits {
        sticky_max_entries: entries,
        sticky_max_bytes: bytes,
        rate_max_keys: entries,
        rate_max_bytes: bytes,
        admin_max_entries: entries,
        ..Limits::default()
    }
}

fn node_now(node: usize, t: Duration) -> Duration {
    OFFSETS[node] + t
}

fn apply(nodes: &[SoftState], t: Duration, op: &Op, snapshots: &mut Vec<Record>) {
    match *op {
        Op::Learn {
            node,
            pool,
            cookie,
            backend,
            ttl_s,
        } => nodes[node].sticky_learn(
            POOLS[pool],
            &[cookie],
            BACKENDS[backend],
            Duration::from_secs(ttl_s),
            node_now(node, t),
        ),
        Op::Forget { node, pool, cookie } => {
            nodes[node].sticky_forget(POOLS[pool], &[cookie], node_now(node, t))
        }
        Op::Rate {
            node,
            limiter,
            key,
            tokens,
        } => {
            for _ in 0..tokens {
                nodes[node].rate_check(POOLS[limiter], &[key], SPEC, node_now(node, t));
            }
        }
        Op::Drain {
            node,
            pool,
            backend,
            drained,
        } => nodes[node].set_drained(POOLS[pool], BACKENDS[backend], drained, node_now(node, t)),
        Op::Sync { from, to } => {
            let recs = export(&nodes[from], node_now(from, t));
            merge_all(&nodes[to], &recs, node_now(to, t));
        }
        Op::Snapshot { node } => snapshots.extend(export(&nodes[node], node_now(node, t))),
    }
}

/// Run the history on three nodes (replicating only at `Sync` ops: mostly partitioned) and
/// return them, the end time and the snapshots taken on the way.
fn run(hist: &[(u64, Op)]) -> (Vec<SoftState>, Duration, Vec<Record>) {
    let nodes: Vec<SoftState> = NODES.iter().map(|n| SoftState::new(n, big())).collect();
    let mut t = Duration::ZERO;
    let mut snapshots = Vec::new();
    for (step, op) in hist {
        t += Duration::from_millis(*step);
        apply(&nodes, t, op, &mut snapshots);
    }
    (nodes, t, snapshots)
}

/// Every live record of a node, encoded at its own clock's `now`.
fn export(s: &SoftState, now: Duration) -> Vec<Record> {
    let g = s.lock();
    g.keys().iter().filter_map(|k| g.record(k, now)).collect()
}

/// A tiny deterministic PRNG so a proptest seed picks the order and duplicates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `recs` shuffled, with some records repeated.
fn shuffled_with_dups(recs: &[Record], seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed | 1);
    let mut out: Vec<Record> = recs.to_vec();
    for _ in 0..recs.len() / 2 + 1 {
        if !recs.is_empty() {
            out.push(recs[rng.below(recs.len())].clone());
        }
    }
    for i in (1..out.len()).rev() {
        let j = rng.below(i + 1);
        out.swap(i, j);
    }
    out
}

fn merge_all(s: &SoftState, recs: &[Record], now: Duration) {
    let mut g = s.lock();
    for r in recs {
        assert!(g.merge(r, now).is_ok(), "own records must decode: {r:?}");
    }
}

fn all_records(nodes: &[SoftState], t: Duration) -> Vec<Record> {
    let mut all = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        n.sweep(node_now(i, t));
        all.extend(export(n, node_now(i, t)));
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Same records, any order, any duplicates, any grouping: same digest; and merging
    /// everything a second time changes nothing.
    #[test]
    fn merge_is_commutative_associative_idempotent(
        hist in history(),
        seed1 in any::<u64>(),
        seed2 in any::<u64>(),
    ) {
        let (nodes, t, mut all) = run(&hist);
        // Stale snapshots plus the final state: several versions of the same keys.
        all.extend(all_records(&nodes, t));
        let r = Duration::from_secs(5_000) + t;

        let x = SoftState::new("recv-x", big());
        merge_all(&x, &all, r);
        let y = SoftState::new("recv-y", big());
        merge_all(&y, &shuffled_with_dups(&all, seed1), r);
        prop_assert_eq!(x.digest(), y.digest());

        // Associativity: merge two arbitrary halves separately, then merge the results.
        let mixed = shuffled_with_dups(&all, seed2);
        let (h1, h2) = mixed.split_at(mixed.len() / 2);
        let m1 = SoftState::new("m1", big());
        let m2 = SoftState::new("m2", big());
        merge_all(&m1, h1, r);
        merge_all(&m2, h2, r);
        let z = SoftState::new("z", big());
        merge_all(&z, &export(&m2, r), r);
        merge_all(&z, &export(&m1, r), r);
        prop_assert_eq!(x.digest(), z.digest());

        // Idempotence: nothing changes the second time round.
        let before = x.digest();
        for rec in &all {
            prop_assert_eq!(x.lock().merge(rec, r), Ok(false), "{:?}", rec);
        }
        prop_assert_eq!(before, x.digest());
        // Merges never show up as local changes.
        prop_assert!(x.lock().take_changes().is_empty());
    }

    /// Three partitioned nodes that then exchange all their records end up equal, to each
    /// other and to an outside observer.
    #[test]
    fn exchanging_records_converges(hist in history(), seed in any::<u64>()) {
        let (nodes, t, _) = run(&hist);
        let all = all_records(&nodes, t);
        for (i, n) in nodes.iter().enumerate() {
            merge_all(n, &shuffled_with_dups(&all, seed ^ i as u64), node_now(i, t));
        }
        let obs = SoftState::new("observer", big());
        merge_all(&obs, &all, Duration::from_secs(1));
        let d = obs.digest();
        for n in &nodes {
            prop_assert_eq!(n.digest(), d);
        }
    }

    /// record -> merge into an empty store -> record gives the same bytes back, at any
    /// receiver clock.
    #[test]
    fn codec_round_trip(hist in history(), recv_now_s in 0..10_000_000u64) {
        let (nodes, t, mut recs) = run(&hist);
        recs.extend(all_records(&nodes, t));
        let now = Duration::from_secs(recv_now_s);
        for rec in recs {
            let s = SoftState::new("rt", big());
            let mut g = s.lock();
            prop_assert_eq!(g.merge(&rec, now), Ok(true));
            let back = g.record(&rec.record_key(), now);
            prop_assert_eq!(back.as_ref(), Some(&rec));
        }
    }

    /// Arbitrary bytes, and valid records truncated or with a flipped bit, never panic.
    #[test]
    fn decoding_garbage_never_panics(
        table in 1..=3u8,
        key in prop::collection::vec(any::<u8>(), 0..64),
        value in prop::collection::vec(any::<u8>(), 0..128),
        hist in history(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let s = SoftState::new("fuzz", bounded(8, usize::MAX));
        let now = Duration::from_secs(3);
        let mut g = s.lock();
        if let Some(table) = Table::from_u8(table) {
            let _ = g.merge(&Record { table, key, value }, now);
        }
        let (nodes, t, mut recs) = run(&hist);
        recs.extend(all_records(&nodes, t));
        for mut rec in recs {
            let mut short = rec.clone();
            short.value.truncate(cut.index(rec.value.len() + 1));
            let shortened = short.value.len() < rec.value.len();
            let res = g.merge(&short, now);
            prop_assert!(!shortened || res.is_err(), "truncated value accepted: {:?}", short);
            let bit = flip.index(rec.value.len() * 8);
            rec.value[bit / 8] ^= 1 << (bit % 8);
            let _ = g.merge(&rec, now);
            let _ = g.record(&rec.record_key(), now);
        }
        let _ = s.digest();
    }

    /// The changed set holds each locally changed key once, never more keys than were
    /// changed, and never more than the table bounds.
    #[test]
    fn changed_set_is_bounded_by_distinct_keys(hist in history(), bound in 1..6usize) {
        let limits = bounded(bound, usize::MAX);
        let nodes: Vec<SoftState> = NODES.iter().map(|n| SoftState::new(n, limits)).collect();
        let mut t = Duration::ZERO;
        let mut touched: HashSet<(usize, RecordKey)> = HashSet::new();
        let mut snapshots = Vec::new();
        for (step, op) in &hist {
            t += Duration::from_millis(*step);
            apply(&nodes, t, op, &mut snapshots);
            touched.extend(touched_key(op));
        }
        for (i, n) in nodes.iter().enumerate() {
            let changes = n.lock().take_changes();
            let distinct: HashSet<&RecordKey> = changes.iter().collect();
            prop_assert_eq!(distinct.len(), changes.len(), "a key reported twice");
            for k in &changes {
                prop_assert!(touched.contains(&(i, k.clone())), "{:?} never changed", k);
            }
            for table in Table::ALL {
                prop_assert!(changes.iter().filter(|k| k.table == table).count() <= bound);
            }
            prop_assert!(n.lock().take_changes().is_empty());
        }
    }
}

/// A cookie or client key: short ones repeat, long ones (up to past the 256-byte caps) fill
/// the byte bound.
fn flood_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (0u8..20).prop_map(|b| vec![b]),
        1 => (0u8..4, 1usize..300).prop_map(|(b, n)| vec![b; n]),
    ]
}

#[derive(Debug, Clone)]
enum FloodOp {
    Learn(usize, Vec<u8>),
    Lookup(usize, Vec<u8>),
    Rate(Vec<u8>),
    /// A peer's record of a one-shot sticky key (written once over there).
    PeerLearn(Vec<u8>),
}

fn flood_op() -> impl Strategy<Value = FloodOp> {
    prop_oneof![
        3 => (0..2usize, flood_key()).prop_map(|(p, k)| FloodOp::Learn(p, k)),
        2 => (0..2usize, flood_key()).prop_map(|(p, k)| FloodOp::Lookup(p, k)),
        3 => flood_key().prop_map(FloodOp::Rate),
        1 => flood_key().prop_map(FloodOp::PeerLearn),
    ]
}

fn apply_flood(s: &SoftState, peer: &SoftState, op: &FloodOp, now: Duration) {
    let ttl = Duration::from_secs(600);
    match op {
        FloodOp::Learn(p, k) => s.sticky_learn(POOLS[*p], k, BACKENDS[0], ttl, now),
        FloodOp::Lookup(p, k) => {
            s.sticky_lookup(POOLS[*p], k, now);
        }
        FloodOp::Rate(k) => {
            s.rate_check("rl", k, SPEC, now);
        }
        FloodOp::PeerLearn(k) => {
            peer.sticky_learn(POOLS[0], k, BACKENDS[1], ttl, now);
            let key = lbd::softstate::sticky::key(POOLS[0], k);
            let rec = peer.lock().record(
                &RecordKey {
                    table: Table::Sticky,
                    key,
                },
                now,
            );
            if let Some(rec) = rec {
                let _ = s.lock().merge(&rec, now);
            }
        }
    }
}

proptest! {
    /// Whatever the keys (lengths up to past the caps, repeats, peer records), both tables
    /// stay within their entry and byte bounds, and the per-pool sticky usage adds up to the
    /// table's.
    #[test]
    fn tables_hold_their_entry_and_byte_bounds(
        ops in prop::collection::vec(flood_op(), 1..300),
        entries in 1..40usize,
        bytes in 500..20_000usize,
    ) {
        let s = SoftState::new("a", bounded(entries, bytes));
        let peer = SoftState::new("b", Limits::default());
        let now = Duration::from_secs(5);
        for op in &ops {
            apply_flood(&s, &peer, op, now);
            let (sticky, _) = s.sticky_table();
            let (rate, _) = s.rate_table();
            prop_assert!(sticky.entries <= entries && sticky.bytes <= bytes, "{:?}", sticky);
            prop_assert!(rate.entries <= entries && rate.bytes <= bytes, "{:?}", rate);
            let per_pool = POOLS.iter().map(|p| s.sticky_usage(p));
            let (n, b) = per_pool.fold((0, 0), |(n, b), u| (n + u.entries, b + u.bytes));
            prop_assert_eq!((n, b), (sticky.entries, sticky.bytes));
        }
    }

    /// A pin used twice (learned, then looked up) survives any sequence of new cookies,
    /// each seen once, learned locally or merged from the peer.
    #[test]
    fn an_established_pin_survives_a_flood_of_one_shot_cookies(
        lens in prop::collection::vec(1usize..=256, 1..400),
        from_peer in prop::collection::vec(any::<bool>(), 400),
        entries in 2..40usize,
        bytes in 4_000..40_000usize,
    ) {
        let s = SoftState::new("a", bounded(entries, bytes));
        let peer = SoftState::new("b", Limits::default());
        let now = Duration::from_secs(5);
        let ttl = Duration::from_secs(600);
        s.sticky_learn("web", b"established", BACKENDS[2], ttl, now);
        prop_assert!(s.sticky_lookup("web", b"established", now).is_some());
        for (i, len) in lens.iter().enumerate() {
            // Distinct by construction: a counter, padded to the length.
            let mut k = (i as u32).to_be_bytes().to_vec();
            k.resize((*len).max(4), b'.');
            let op = if from_peer[i] {
                FloodOp::PeerLearn(k)
            } else {
                FloodOp::Learn(0, k)
            };
            apply_flood(&s, &peer, &op, now);
        }
        let pinned = s.sticky_lookup("web", b"established", now);
        prop_assert_eq!(pinned.as_deref(), Some(BACKENDS[2]));
    }
}

/// The key an op may change, in the tables' key layout (u16 BE name length, name, rest).
fn touched_key(op: &Op) -> Option<(usize, RecordKey)> {
    fn k(table: Table, a: &str, b: &[u8]) -> RecordKey {
        let mut key = (a.len() as u16).to_be_bytes().to_vec();
        key.extend_from_slice(a.as_bytes());
        key.extend_from_slice(b);
        RecordKey { table, key }
    }
    Some(match *op {
        Op::Learn {
            node, pool, cookie, ..
        }
        | Op::Forget { node, pool, cookie } => (node, k(Table::Sticky, POOLS[pool], &[cookie])),
        Op::Rate {
            node, limiter, key, ..
        } => (node, k(Table::RateLimit, POOLS[limiter], &[key])),
        Op::Drain {
            node,
            pool,
            backend,
            ..
        } => (
            node,
            k(Table::Admin, POOLS[pool], BACKENDS[backend].as_bytes()),
        ),
        Op::Sync { .. } | Op::Snapshot { .. } => return None,
    })
}

/// A concrete split-brain scenario, outside proptest: both sides consume and drain during
/// a partition, then heal in opposite orders and agree.
#[test]
fn split_brain_heals_to_equal_digests() {
    let a = SoftState::new("a", Limits::default());
    let b = SoftState::new("b", Limits::default());
    let (ta, tb) = (Duration::from_secs(100), Duration::from_secs(7));
    let spec = RateSpec {
        rate_per_s: 1.0,
        burst: 10,
    };
    for _ in 0..6 {
        a.rate_check("rl", b"client", spec, ta);
        b.rate_check("rl", b"client", spec, tb);
    }
    a.sticky_learn("web", b"s1", "10.0.0.1:80", Duration::from_secs(60), ta);
    b.sticky_learn(
        "web",
        b"s1",
        "10.0.0.2:80",
        Duration::from_secs(60),
        tb + Duration::from_secs(1),
    );
    a.set_drained("web", "10.0.0.3:80", true, ta);
    let ra = export(&a, ta + Duration::from_secs(1));
    let rb = export(&b, tb + Duration::from_secs(1));
    merge_all(&a, &rb, ta + Duration::from_secs(1));
    merge_all(&b, &ra, tb + Duration::from_secs(1));
    assert_eq!(a.digest(), b.digest());
    // b's sticky write was 1 s later: it wins on both.
    let now_a = ta + Duration::from_secs(1);
    assert_eq!(
        a.sticky_lookup("web", b"s1", now_a).as_deref(),
        Some("10.0.0.2:80")
    );
    // Each side took 6 without seeing the other's: they count once (the larger side's
    // debt, less 1 s of refill: 5 of 10), the same on both sides, so each allows 5 more.
    let now_b = tb + Duration::from_secs(1);
    for (node, now) in [(&a, now_a), (&b, now_b)] {
        let allowed = (0..10)
            .filter(|_| {
                node.rate_check("rl", b"client", spec, now) == lbd::softstate::RateDecision::Allow
            })
            .count();
        assert_eq!(allowed, 5);
    }
    assert!(b.is_drained("web", "10.0.0.3:80"));
}
