//! Token buckets shared by the two nodes: (limiter, key) -> per-node consumption.
//!
//! ## Representation
//! A bucket of rate `r` and burst `b` is kept as one *component per origin node*:
//! `(zero_at, count)`, where `zero_at` is the time at which the bucket, as that node last
//! left it, will have refilled (a GCRA "theoretical arrival time"), and `count` the tokens
//! that node took since its component last drained. Only the origin node ever advances its
//! own component, and it builds on everything it knows: taking a token sets
//! `zero_at = max(every component's zero_at, now) + 1/r`, `count += 1`.
//!
//! The bucket's debt at time `t` is `r * max(0, max over nodes of zero_at - t)` tokens, and a
//! request is allowed when `debt + 1 <= b`. A `Deny` carries the time until that holds
//! again (the largest component shrinks at rate 1), at least 1 ms.
//!
//! ## Why the merge is correct
//! `zero_at` only grows at its origin, so for each node the record with the larger `zero_at`
//! is the fresher view of it; the merge takes, per node, the larger `(zero_at, count)`. That
//! is a per-key maximum, i.e. a join on a product of total orders: commutative, associative
//! and idempotent, and it never double-counts (re-merging a node's component replaces it,
//! it never adds to it). Decay needs no state: it is implicit in comparing `zero_at` with
//! `now`, so both nodes decay every component identically. `zero_at` travels as the
//! remaining time until zero (a remaining TTL), converted back with the receiver's `now`.
//! A bucket whose components are all in the past is full and is dropped.
//!
//! ## What it approximates
//! Because a node's token goes on top of the other node's debt, the bucket refills at `r`
//! whoever took the tokens: after a failover the new node continues the old node's bucket
//! exactly (measured from outside by `scripts/bench-failover-softstate.sh`: a client hammering through the
//! failover gets what one bucket allows, within one refill interval; an earlier design that
//! summed independently decaying components let one extra burst through per failover).
//! Tokens the two nodes take without having seen each other's (within one replication
//! lag, or on both sides of a partition) build on the same base and count once: in a split
//! brain each side refills at `r`, so up to `2r` passes, and after the partition heals the
//! bucket holds the larger side's debt, not the sum. Merged `zero_at` values also absorb
//! the link delay (a component seen again after a round trip can be later by that delay),
//! which slightly over-counts, never under-counts. `count` is there for the time-free
//! digest.
//!
//! ## Bounds and long keys
//! The table is bounded in entries and estimated bytes by the segmented LRU of
//! [`super::lru`]: a key enters probation on its first token and is protected from its
//! second, so a flood of one-request keys (say, random header values) cannot evict the buckets
//! of clients that keep coming back (which would reset their limits). A peer's bucket with a
//! component that took two tokens or more is admitted as established.
//!
//! A client key longer than its cap is never stored raw: [`bounded_key`] replaces it with
//! [`HASHED_KEY_LEN`] bytes, a NUL (which no header value, address or route name contains)
//! and its SHA-256. The over-long value is still one bucket of its own, so padding a header
//! neither dodges a limit nor grows the table; a peer's record with a key over the table's
//! cap is refused (a merge error, counted by the link).
//!
//! Value layout (after the version byte): `n (u8) | n x (node id (u8 len) | remaining ns u64
//! | count u64)`; components already refilled are not sent.

use std::time::Duration;

use sha2::{Digest as _, Sha256};
use shared::peer::{Digest, MergeError, Table};

use super::changes::ChangeSets;
use super::codec::{
    decode_key, encode_key, encode_key_into, malformed, non_negative_diff, offset, put_node_id,
    stamp, NodeIds, Reader, Stamp, MAX_NODES, VALUE_VERSION,
};
use super::digest::{DigestSum, EntryHasher};
use super::lru::{Bounds, LruMap};

const TABLE: Table = Table::RateLimit;
/// Refilled buckets removed from the LRU tail per token taken (amortised cleanup).
const SWEEP_PER_WRITE: usize = 2;
/// Longest time one token can stand for: a rate of 0 (or garbage) would otherwise mean an
/// infinite interval; one day is "effectively never" while keeping the arithmetic finite.
const MAX_INTERVAL_NS: i64 = 86_400 * 1_000_000_000;
const MIN_RETRY_NS: i64 = 1_000_000;
/// Length of a hashed over-long key: a NUL marker and a SHA-256.
pub const HASHED_KEY_LEN: usize = 33;

/// `key` if it is at most `max` bytes, else its fixed-size stand-in (see the module docs),
/// built in `buf`.
pub fn bounded_key<'a>(key: &'a [u8], max: usize, buf: &'a mut [u8; HASHED_KEY_LEN]) -> &'a [u8] {
    if key.len() <= max {
        return key;
    }
    buf[0] = 0;
    buf[1..].copy_from_slice(&Sha256::digest(key));
    &buf[..]
}

/// A token bucket's parameters (per limiter, from config).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSpec {
    /// Tokens added per second (refill rate).
    pub rate_per_s: f64,
    /// Bucket size: requests allowed back to back from full. 0 is treated as 1.
    pub burst: u32,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateDecision {
    Allow,
    /// Over the limit; one token will be available after `retry_after` (at least 1 ms).
    Deny {
        retry_after: Duration,
    },
}

#[derive(Clone, Copy)]
struct Component {
    node: u8,
    zero_at: Stamp,
    count: u64,
}

struct Bucket {
    parts: Vec<Component>,
    /// When this node last took a token from it or merged a change into it: a full resync
    /// sends the most recently changed entries first (see `SoftState`'s `keys`).
    changed: Stamp,
}

impl Bucket {
    /// The largest component's remaining time at `now` (nanoseconds of debt at rate 1).
    fn debt(&self, now: Stamp) -> i64 {
        self.latest_zero_at().saturating_sub(now).max(0)
    }

    /// When the whole bucket will have refilled: the latest component's `zero_at`.
    fn latest_zero_at(&self) -> Stamp {
        self.parts
            .iter()
            .map(|c| c.zero_at)
            .max()
            .unwrap_or(i64::MIN)
    }

    fn live(&self, at: Stamp) -> impl Iterator<Item = &Component> {
        self.parts.iter().filter(move |c| c.zero_at > at)
    }

    fn is_full(&self, now: Stamp) -> bool {
        self.live(now).next().is_none()
    }
}

/// Nanoseconds one token stands for at `rate_per_s`, clamped to [1 ns, one day].
fn interval_ns(rate_per_s: f64) -> i64 {
    if rate_per_s.is_nan() || rate_per_s <= 0.0 {
        return MAX_INTERVAL_NS;
    }
    let ns = 1e9 / rate_per_s;
    if ns >= MAX_INTERVAL_NS as f64 {
        MAX_INTERVAL_NS
    } else {
        (ns.round() as i64).max(1)
    }
}

pub(crate) struct RateTable {
    map: LruMap<Bucket>,
    nodes: NodeIds,
    changed: ChangeSets,
    last_now: Stamp,
    scratch: Vec<u8>,
    /// Longest client key stored raw; longer ones are hashed ([`bounded_key`]).
    max_key_bytes: usize,
}

impl RateTable {
    pub(crate) fn new(node_id: &str, bounds: Bounds, max_key_bytes: usize) -> RateTable {
        RateTable {
            map: LruMap::with_bounds(bounds),
            nodes: NodeIds::new(node_id),
            changed: ChangeSets::default(),
            last_now: i64::MIN,
            scratch: Vec::new(),
            max_key_bytes: max_key_bytes.max(HASHED_KEY_LEN),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.map.bytes()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.map.evictions()
    }

    fn observe(&mut self, now: Duration) -> Stamp {
        let s = stamp(now);
        self.last_now = self.last_now.max(s);
        s
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn check(
        &mut self,
        limiter: &str,
        key: &[u8],
        spec: RateSpec,
        now: Duration,
    ) -> RateDecision {
        let now = self.observe(now);
        let interval = interval_ns(spec.rate_per_s);
        let tolerance = interval.saturating_mul(i64::from(spec.burst.max(1)) - 1);
        let mut hashed = [0u8; HASHED_KEY_LEN];
        let key = bounded_key(key, self.max_key_bytes, &mut hashed);
        encode_key_into(&mut self.scratch, limiter.as_bytes(), key);
        match self.map.get_mut(&self.scratch) {
            Some(bucket) => {
                let debt = bucket.debt(now);
                if debt > tolerance {
                    let wait = (debt - tolerance).max(MIN_RETRY_NS);
                    return RateDecision::Deny {
                        retry_after: Duration::from_nanos(wait as u64),
                    };
                }
                // The token goes on top of all the debt this node knows of, the peer's
                // included: one bucket, refilling at `rate` whoever took from it.
                let zero_at = bucket.latest_zero_at().max(now).saturating_add(interval);
                // Components already refilled carry no debt: drop them so the bucket stays
                // as small as the set of nodes currently holding debt.
                bucket.parts.retain(|c| c.zero_at > now);
                match bucket.parts.iter_mut().find(|c| c.node == NodeIds::LOCAL) {
                    Some(c) => {
                        c.zero_at = zero_at;
                        c.count += 1;
                    }
                    None => bucket.parts.push(Component {
                        node: NodeIds::LOCAL,
                        zero_at,
                        count: 1,
                    }),
                }
                bucket.changed = now;
            }
            None => {
                let bucket = Bucket {
                    parts: vec![Component {
                        node: NodeIds::LOCAL,
                        zero_at: now.saturating_add(interval),
                        count: 1,
                    }],
                    changed: now,
                };
                for (k, _) in self.map.insert(&self.scratch, bucket) {
                    self.changed.gone(&k);
                }
            }
        }
        if self.map.contains(&self.scratch) {
            self.changed.local(&self.scratch);
        }
        self.sweep(now, SWEEP_PER_WRITE);
        RateDecision::Allow
    }

    /// Remove up to `budget` full (refilled) buckets from the least-recently-used ends.
    pub(crate) fn sweep(&mut self, now: Stamp, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some((k, _)) = self.map.pop_dead(|b| b.is_full(now)) else {
                break;
            };
            self.changed.gone(&k);
            n += 1;
        }
        n
    }

    pub(crate) fn sweep_at(&mut self, now: Duration, budget: usize) -> usize {
        let now = self.observe(now);
        self.sweep(now, budget)
    }

    pub(crate) fn record(&self, key: &[u8], now: Duration) -> Option<Vec<u8>> {
        let now = stamp(now);
        let b = self.map.peek(key)?;
        let n = b.live(now).count();
        if n == 0 {
            return None;
        }
        let mut v = Vec::with_capacity(2 + n * 24);
        v.push(VALUE_VERSION);
        v.push(n as u8);
        for c in b.live(now) {
            put_node_id(&mut v, self.nodes.name(c.node));
            v.extend_from_slice(&non_negative_diff(c.zero_at, now).to_be_bytes());
            v.extend_from_slice(&c.count.to_be_bytes());
        }
        Some(v)
    }

    pub(crate) fn merge(
        &mut self,
        key: &[u8],
        value: &[u8],
        now: Duration,
    ) -> Result<bool, MergeError> {
        let (_, client_key) = decode_key(TABLE, key)?;
        if client_key.len() > self.max_key_bytes {
            return Err(malformed(
                TABLE,
                format!(
                    "client key of {} bytes, over the {}-byte cap",
                    client_key.len(),
                    self.max_key_bytes
                ),
            ));
        }
        let mut r = Reader::new(TABLE, value);
        r.version()?;
        let n = r.u8()? as usize;
        if n > MAX_NODES {
            return Err(malformed(TABLE, format!("{n} components")));
        }
        let mut incoming: [(&str, u64, u64); MAX_NODES] = [("", 0, 0); MAX_NODES];
        for i in 0..n {
            let node = r.node_id()?;
            if incoming[..i].iter().any(|(id, _, _)| *id == node) {
                return Err(malformed(TABLE, format!("node {node:?} twice")));
            }
            incoming[i] = (node, r.u64()?, r.u64()?);
        }
        r.finish()?;

        let now = self.observe(now);
        let mut parts = [Component {
            node: 0,
            zero_at: 0,
            count: 0,
        }; MAX_NODES];
        let mut live = 0;
        for &(node, remaining, count) in &incoming[..n] {
            let zero_at = now.saturating_add(offset(remaining));
            // An already-refilled component carries no debt: skipping it commutes with the
            // per-node maximum, since the maximum of two refilled ones is refilled too.
            if zero_at > now {
                parts[live] = Component {
                    node: self.nodes.intern(TABLE, node)?,
                    zero_at,
                    count,
                };
                live += 1;
            }
        }
        let parts = &parts[..live];
        let Some(bucket) = self.map.get_mut(key) else {
            if parts.is_empty() {
                return Ok(false);
            }
            let bucket = Bucket {
                parts: parts.to_vec(),
                changed: now,
            };
            // A component that took two tokens or more: a client that came back.
            let evicted = if parts.iter().any(|c| c.count > 1) {
                self.map.insert_established(key, bucket)
            } else {
                self.map.insert(key, bucket)
            };
            for (k, _) in evicted {
                self.changed.gone(&k);
            }
            if self.changed.feeds_file() && self.map.contains(key) {
                self.changed.merged(key);
            }
            return Ok(true);
        };
        let mut changed = false;
        for inc in parts {
            match bucket.parts.iter_mut().find(|c| c.node == inc.node) {
                Some(c) => {
                    if (inc.zero_at, inc.count) > (c.zero_at, c.count) {
                        *c = *inc;
                        changed = true;
                    }
                }
                None => {
                    bucket.parts.push(*inc);
                    changed = true;
                }
            }
        }
        if changed {
            bucket.changed = now;
            self.changed.merged(key);
        }
        Ok(changed)
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> Vec<Vec<u8>> {
        self.map
            .iter()
            .filter(|(_, b)| !b.is_full(self.last_now))
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    /// Live keys with when each last changed here (for a most-recent-first resync).
    pub(crate) fn keys_by_recency(&self) -> Vec<(Stamp, Vec<u8>)> {
        self.map
            .iter()
            .filter(|(_, b)| !b.is_full(self.last_now))
            .map(|(k, b)| (b.changed, k.to_vec()))
            .collect()
    }

    /// Per bucket: key and each live component's (node id, count), sorted by node id.
    pub(crate) fn digest(&self) -> Digest {
        let mut d = DigestSum::default();
        for (k, b) in self.map.iter() {
            let mut parts: [(&str, u64); MAX_NODES] = [("", 0); MAX_NODES];
            let mut n = 0;
            for c in b.live(self.last_now).take(MAX_NODES) {
                parts[n] = (self.nodes.name(c.node), c.count);
                n += 1;
            }
            if n == 0 {
                continue;
            }
            parts[..n].sort_unstable();
            let mut h = EntryHasher::new(TABLE, k);
            for (node, count) in &parts[..n] {
                h.field(node.as_bytes());
                h.u64(*count);
            }
            d.add(h.finish());
        }
        d.finish()
    }

    pub(crate) fn take_changes(&mut self) -> Vec<Vec<u8>> {
        self.changed.take_peer()
    }

    pub(crate) fn file_changes(&mut self) -> &mut ChangeSets {
        &mut self.changed
    }
}

/// `value` as it would have been encoded `elapsed` ns later: components that have refilled
/// by then are dropped; `None` if none is left. For records kept in the state file across a
/// restart.
pub(crate) fn aged(value: &[u8], elapsed: i64) -> Result<Option<Vec<u8>>, MergeError> {
    let mut r = Reader::new(TABLE, value);
    r.version()?;
    let n = r.u8()? as usize;
    if n > MAX_NODES {
        return Err(malformed(TABLE, format!("{n} components")));
    }
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        let node = r.node_id()?;
        let remaining = offset(r.u64()?).saturating_sub(elapsed);
        let count = r.u64()?;
        if remaining > 0 {
            parts.push((node, remaining as u64, count));
        }
    }
    r.finish()?;
    if parts.is_empty() {
        return Ok(None);
    }
    let mut v = Vec::with_capacity(value.len());
    v.push(VALUE_VERSION);
    v.push(parts.len() as u8);
    for (node, remaining, count) in parts {
        put_node_id(&mut v, node);
        v.extend_from_slice(&remaining.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
    }
    Ok(Some(v))
}

/// Encode a rate-limit key (for callers building a [`shared::peer::RecordKey`]).
pub fn key(limiter: &str, client_key: &[u8]) -> Vec<u8> {
    encode_key(limiter.as_bytes(), client_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rtable(node: &str, max_keys: usize) -> RateTable {
        RateTable::new(node, Bounds::entries(max_keys), 256)
    }
    const SPEC: RateSpec = RateSpec {
        rate_per_s: 10.0,
        burst: 5,
    };

    fn deny_after(d: RateDecision) -> Option<Duration> {
        match d {
            RateDecision::Allow => None,
            RateDecision::Deny { retry_after } => Some(retry_after),
        }
    }

    #[test]
    fn burst_then_deny_then_refill_at_rate() {
        let mut t = rtable("a", 100);
        let t0 = Duration::from_secs(100);
        for i in 0..5 {
            assert_eq!(
                t.check("l", b"ip", SPEC, t0),
                RateDecision::Allow,
                "token {i}"
            );
        }
        // Empty: the next token arrives after one interval (100 ms at 10/s).
        let wait = deny_after(t.check("l", b"ip", SPEC, t0));
        assert_eq!(wait, Some(100 * MS));
        // Other keys and limiters are independent.
        assert_eq!(t.check("l", b"other", SPEC, t0), RateDecision::Allow);
        assert_eq!(t.check("m", b"ip", SPEC, t0), RateDecision::Allow);
        // Just before: still denied, with the remaining time.
        assert_eq!(
            deny_after(t.check("l", b"ip", SPEC, t0 + 60 * MS)),
            Some(40 * MS)
        );
        // After one interval exactly one token.
        assert_eq!(
            t.check("l", b"ip", SPEC, t0 + 100 * MS),
            RateDecision::Allow
        );
        assert!(deny_after(t.check("l", b"ip", SPEC, t0 + 100 * MS)).is_some());
        // After a long idle period the bucket is full again (burst, not more).
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..5 {
            assert_eq!(t.check("l", b"ip", SPEC, t1), RateDecision::Allow);
        }
        assert!(deny_after(t.check("l", b"ip", SPEC, t1)).is_some());
        // Sustained: at 10/s, over 1 s of requests every 10 ms, about 10 are allowed.
        let t2 = t1 + Duration::from_secs(10);
        let allowed = (0..100)
            .filter(|i| t.check("l", b"ip", SPEC, t2 + *i * 10 * MS) == RateDecision::Allow)
            .count();
        assert!((5 + 9..=5 + 10).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn retry_after_has_a_floor_and_zero_rate_is_finite() {
        let fast = RateSpec {
            rate_per_s: 1e6,
            burst: 1,
        };
        let mut t = rtable("a", 10);
        let now = Duration::from_secs(1);
        assert_eq!(t.check("l", b"k", fast, now), RateDecision::Allow);
        assert_eq!(deny_after(t.check("l", b"k", fast, now)), Some(MS));
        let never = RateSpec {
            rate_per_s: 0.0,
            burst: 0,
        };
        assert_eq!(t.check("z", b"k", never, now), RateDecision::Allow);
        assert_eq!(
            deny_after(t.check("z", b"k", never, now)),
            Some(Duration::from_secs(86_400))
        );
        let nan = RateSpec {
            rate_per_s: f64::NAN,
            burst: 1,
        };
        assert_eq!(t.check("n", b"k", nan, now), RateDecision::Allow);
    }

    #[test]
    fn merge_is_idempotent_and_unseen_takes_count_once() {
        let spec = RateSpec {
            rate_per_s: 1.0,
            burst: 10,
        };
        let k = key("l", b"ip");
        let now = Duration::from_secs(50);
        let mut a = rtable("a", 10);
        let mut b = rtable("b", 10);
        // A partition: each side takes 5 without seeing the other's.
        for _ in 0..5 {
            assert_eq!(a.check("l", b"ip", spec, now), RateDecision::Allow);
            assert_eq!(b.check("l", b"ip", spec, now), RateDecision::Allow);
        }
        let ra = a.record(&k, now).unwrap_or_default();
        let rb = b.record(&k, now).unwrap_or_default();
        assert_eq!(a.merge(&k, &rb, now), Ok(true));
        assert_eq!(b.merge(&k, &ra, now), Ok(true));
        // Merging again changes nothing: no double count.
        assert_eq!(a.merge(&k, &rb, now), Ok(false));
        assert_eq!(b.merge(&k, &ra, now), Ok(false));
        // Our own component echoed back doesn't add either.
        assert_eq!(a.merge(&k, &ra, now), Ok(false));
        assert_eq!(a.digest(), b.digest());
        // Takes that could not see each other built on the same base: the healed bucket
        // holds the larger side's debt (5 of 10), the same on both sides, so both allow
        // exactly 5 more (the documented approximation).
        for t in [&mut a, &mut b] {
            let allowed = (0..10)
                .filter(|_| t.check("l", b"ip", spec, now) == RateDecision::Allow)
                .count();
            assert_eq!(allowed, 5);
        }
    }

    #[test]
    fn synced_nodes_share_one_bucket_refilling_at_rate() {
        // Both nodes serve the key and see each other's takes (synced after every request):
        // together they get what one bucket allows, not twice the rate.
        let spec = RateSpec {
            rate_per_s: 10.0,
            burst: 2,
        };
        let k = key("l", b"ip");
        let t0 = Duration::from_secs(100);
        let mut a = rtable("a", 10);
        let mut b = rtable("b", 10);
        let mut allowed = 0;
        for i in 0..200u64 {
            let now = t0 + MS * (i as u32) * 10;
            let (this, other) = if i.is_multiple_of(2) {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            if this.check("l", b"ip", spec, now) == RateDecision::Allow {
                allowed += 1;
            }
            if let Some(r) = this.record(&k, now) {
                let _ = other.merge(&k, &r, now);
            }
        }
        // 2 s at 10/s plus the burst of 2.
        assert!((21..=22).contains(&allowed), "allowed {allowed}");
    }

    #[test]
    fn inherited_debt_after_failover() {
        // Node a limited a client, then died; b learned a's component and keeps denying.
        let spec = RateSpec {
            rate_per_s: 1.0,
            burst: 3,
        };
        let k = key("l", b"ip");
        let mut a = rtable("a", 10);
        let mut b = rtable("b", 10);
        let now = Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(a.check("l", b"ip", spec, now), RateDecision::Allow);
        }
        let ra = a.record(&k, now).unwrap_or_default();
        // b's clock is unrelated; the remaining time travels.
        let bnow = Duration::from_secs(9000);
        assert_eq!(b.merge(&k, &ra, bnow), Ok(true));
        assert_eq!(
            deny_after(b.check("l", b"ip", spec, bnow)),
            Some(Duration::from_secs(1))
        );
        assert!(
            b.take_changes().is_empty(),
            "deny and merge are not changes"
        );
    }

    #[test]
    fn a_client_hammering_through_a_failover_gets_one_bucket() {
        // a emptied the bucket (burst 4 at 2/s), died; b continues it. A client sending
        // every 50 ms for 4 s through b gets what one bucket refills in that time (8), not
        // a second burst on top: the inherited debt and b's own takes refill at `rate`
        // together, not in parallel.
        let spec = RateSpec {
            rate_per_s: 2.0,
            burst: 4,
        };
        let k = key("l", b"ip");
        let mut a = rtable("a", 10);
        let mut b = rtable("b", 10);
        let t0 = Duration::from_secs(10);
        for _ in 0..4 {
            assert_eq!(a.check("l", b"ip", spec, t0), RateDecision::Allow);
        }
        let ra = a.record(&k, t0).unwrap_or_default();
        assert_eq!(b.merge(&k, &ra, t0), Ok(true));
        let allowed = (1..=80u64)
            .filter(|i| {
                b.check("l", b"ip", spec, t0 + MS * (*i as u32) * 50) == RateDecision::Allow
            })
            .count();
        assert_eq!(allowed, 8);
    }

    #[test]
    fn bounded_lru_and_full_buckets_dropped() {
        let mut t = rtable("a", 64);
        let now = Duration::from_secs(1);
        for i in 0u32..640 {
            t.check("l", &i.to_be_bytes(), SPEC, now);
            assert!(t.len() <= 64);
        }
        assert_eq!(t.take_changes().len(), 64);
        assert!(t.record(&key("l", &639u32.to_be_bytes()), now).is_some());
        // Refilled after one interval: no record, excluded from keys after time moves on.
        let later = now + Duration::from_secs(1);
        assert!(t.record(&key("l", &639u32.to_be_bytes()), later).is_none());
        assert_eq!(t.sweep_at(later, 1000), 64);
        assert_eq!(t.len(), 0);
        assert!(t.keys().is_empty());
    }

    #[test]
    fn over_long_keys_are_hashed_into_one_bucket_each() {
        let spec = RateSpec {
            rate_per_s: 1.0,
            burst: 2,
        };
        let now = Duration::from_secs(1);
        let mut t = rtable("a", 10);
        let long = vec![b'k'; 5000];
        let mut padded = long.clone();
        padded.push(b'!');
        for _ in 0..2 {
            assert_eq!(t.check("l", &long, spec, now), RateDecision::Allow);
        }
        assert!(deny_after(t.check("l", &long, spec, now)).is_some());
        // Padding makes another key, but one as small: it has its own (full) bucket.
        assert_eq!(t.check("l", &padded, spec, now), RateDecision::Allow);
        assert_eq!(t.len(), 2);
        for k in t.keys() {
            assert_eq!(k.len(), 2 + 1 + HASHED_KEY_LEN, "never the raw bytes");
        }
        let mut buf = [0u8; HASHED_KEY_LEN];
        assert_eq!(bounded_key(b"short", 256, &mut buf), b"short");
        assert_eq!(bounded_key(&long, 256, &mut buf)[0], 0);
        // A peer's record with a raw over-long key is refused.
        let mut big = RateTable::new("b", Bounds::entries(10), 900);
        big.check("l", &long[..800], spec, now);
        let k = key("l", &long[..800]);
        let r = big.record(&k, now).unwrap_or_default();
        assert!(matches!(
            t.merge(&k, &r, now),
            Err(MergeError::Malformed { .. })
        ));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_returning_client_keeps_its_debt_through_a_flood() {
        let spec = RateSpec {
            rate_per_s: 1.0,
            burst: 2,
        };
        let now = Duration::from_secs(1);
        let mut t = rtable("a", 64);
        t.check("l", b"me", spec, now);
        t.check("l", b"me", spec, now);
        for i in 0u32..5000 {
            t.check("l", &i.to_be_bytes(), spec, now);
        }
        assert!(
            deny_after(t.check("l", b"me", spec, now)).is_some(),
            "the flood did not reset the limit"
        );
        assert_eq!(t.len(), 64);
        assert_eq!(t.evictions(), 5000 + 1 - 64);
    }

    #[test]
    fn malformed_values_rejected() {
        let mut a = rtable("a", 10);
        let now = Duration::from_secs(1);
        a.check("l", b"k", SPEC, now);
        let k = key("l", b"k");
        let good = a.record(&k, now).unwrap_or_default();
        let mut b = rtable("b", 10);
        for n in 0..good.len() {
            assert!(b.merge(&k, &good[..n], now).is_err(), "prefix {n}");
        }
        let mut dup = vec![VALUE_VERSION, 2];
        dup.extend_from_slice(&good[2..]);
        dup.extend_from_slice(&good[2..]);
        assert!(b.merge(&k, &dup, now).is_err(), "duplicate node");
        let mut many = good.clone();
        many[1] = (MAX_NODES + 1) as u8;
        assert!(b.merge(&k, &many, now).is_err());
        assert_eq!(b.len(), 0);
    }
}
