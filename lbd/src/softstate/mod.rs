//! Soft state a failover should not lose: learn-mode sticky sessions, rate-limit
//! buckets and operator drains, replicated to the peer node by [`crate::peer`].
//!
//! Layout:
//! - this file: [`SoftState`], the thread-safe facade the data path and the peer driver share
//!   (`Arc<SoftState>`), and [`SoftStateGuard`], its [`ReplicaStore`] view.
//! - [`sticky`]: (pool, cookie value) -> backend, LRU-bounded with TTL, last writer wins
//!   (by a per-key version, then node id: the same winner on both nodes whatever the delay).
//! - [`ratelimit`]: token buckets with one component per node, merged by per-node maximum
//!   (the design and what it approximates are in that module's doc).
//! - [`admin`]: (pool, backend) -> drained, last writer wins.
//! - `lru`: the bounded (entries and bytes), segmented map all three use: new keys enter a
//!   probationary segment and only keys used again are protected, so a flood of new keys
//!   evicts only other new keys; `codec`: key layout, bounds-checked reader,
//!   clock conversion; `digest`: the fixed, order-independent hash.
//! - [`persist`]: the state file (`global.soft_state_file`): loaded at start, journaled by a
//!   background thread from `changes`, each table's second change feed (local writes and
//!   merges), so the soft state survives a restart of lbd on the same node.
//!
//! Everything here is pure and synchronous: time is the `now` passed in (lbd's monotonic
//! `clock::now()`), never read inside, so tests drive it directly. Each table has its own
//! `std::sync::Mutex`, held only for one operation (a lookup is one hash probe on a borrowed
//! key, no allocation on a hit beyond the returned `String`).
//!
//! Replication rules shared by all tables: a record's value starts with a version byte and
//! expresses every time relative to the moment of encoding (age of the write, remaining
//! TTL); the receiver converts them with its own `now`. Each merge is a join (a maximum in a
//! total order per key), hence commutative, associative and idempotent. Local mutations go
//! into a per-table coalescing changed set (`take_changes`); merges don't (the peer already
//! has them), which is also what stops updates echoing back and forth. A full resync reads
//! the keys most recently changed first (`keys`).
//!
//! The peer driver reads drains that changed through merges with
//! [`SoftState::take_remote_admin_changes`] (alias [`SoftState::remote_changes`]) and applies
//! them to the data path.

pub mod admin;
mod changes;
mod codec;
mod digest;
mod lru;
pub mod persist;
pub mod ratelimit;
pub mod sticky;

use std::sync::Mutex;
use std::time::Duration;

use shared::peer::{Digest, MergeError, Record, RecordKey, ReplicaStore, Table};

pub use ratelimit::{RateDecision, RateSpec};

use admin::AdminTable;
use lru::Bounds;
use ratelimit::RateTable;
use sticky::StickyTable;

use crate::sync::lock;

/// Default bound of the sticky table.
pub const DEFAULT_STICKY_MAX_ENTRIES: usize = 100_000;
/// Default byte bound of the sticky table (estimated, see [`ENTRY_OVERHEAD`]).
pub const DEFAULT_STICKY_MAX_BYTES: usize = 32 << 20;
/// Default cap on a learned cookie value's length.
pub const DEFAULT_STICKY_MAX_KEY_BYTES: usize = 256;
/// Default bound of the rate-limit table (distinct (limiter, key) pairs).
pub const DEFAULT_RATE_MAX_KEYS: usize = 100_000;
/// Default byte bound of the rate-limit table (estimated, see [`ENTRY_OVERHEAD`]).
pub const DEFAULT_RATE_MAX_BYTES: usize = 32 << 20;
/// Default cap on a rate-limit client key's length (longer ones are hashed).
pub const DEFAULT_RATE_MAX_KEY_BYTES: usize = 256;
/// Default bound of the admin table: far above any real number of backends.
pub const DEFAULT_ADMIN_MAX_ENTRIES: usize = 4096;
/// Entries examined per table by one [`SoftState::sweep`] call.
pub const SWEEP_BUDGET: usize = 1024;

pub use lru::{ENTRY_OVERHEAD, PROTECTED_SHARE_PERCENT};
pub use ratelimit::{bounded_key, HASHED_KEY_LEN};

/// Table bounds (entries beyond them evict, probation's least recently used first) and key
/// caps (the longest cookie value / client key stored; the peer's records are held to them
/// too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub sticky_max_entries: usize,
    pub sticky_max_bytes: usize,
    pub sticky_max_key_bytes: usize,
    pub rate_max_keys: usize,
    pub rate_max_bytes: usize,
    pub rate_max_key_bytes: usize,
    pub admin_max_entries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            sticky_max_entries: DEFAULT_STICKY_MAX_ENTRIES,
            sticky_max_bytes: DEFAULT_STICKY_MAX_BYTES,
            sticky_max_key_bytes: DEFAULT_STICKY_MAX_KEY_BYTES,
            rate_max_keys: DEFAULT_RATE_MAX_KEYS,
            rate_max_bytes: DEFAULT_RATE_MAX_BYTES,
            rate_max_key_bytes: DEFAULT_RATE_MAX_KEY_BYTES,
            admin_max_entries: DEFAULT_ADMIN_MAX_ENTRIES,
        }
    }
}

/// What a table (or one pool's share of the sticky table) holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableUsage {
    pub entries: usize,
    /// Estimated bytes: per entry twice the key plus [`ENTRY_OVERHEAD`].
    pub bytes: usize,
}

/// A table's counters since startup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Entries removed to respect the bounds (expiry is not counted).
    pub evictions: u64,
    /// Sticky: learns refused because the cookie value was over the table's key cap.
    pub keys_too_long: u64,
}

/// The node's replicated soft state. `Send + Sync`; share it as `Arc<SoftState>`.
pub struct SoftState {
    node_id: String,
    sticky: Mutex<StickyTable>,
    rate: Mutex<RateTable>,
    admin: Mutex<AdminTable>,
    /// The state file's counters (idle without `global.soft_state_file`).
    file_stats: persist::FileStats,
}

impl SoftState {
    pub fn new(node_id: &str, limits: Limits) -> SoftState {
        SoftState {
            node_id: node_id.to_owned(),
            sticky: Mutex::new(StickyTable::new(
                node_id,
                Bounds {
                    max_entries: limits.sticky_max_entries,
                    max_bytes: limits.sticky_max_bytes,
                },
                limits.sticky_max_key_bytes,
            )),
            rate: Mutex::new(RateTable::new(
                node_id,
                Bounds {
                    max_entries: limits.rate_max_keys,
                    max_bytes: limits.rate_max_bytes,
                },
                limits.rate_max_key_bytes,
            )),
            admin: Mutex::new(AdminTable::new(node_id, limits.admin_max_entries)),
            file_stats: persist::FileStats::default(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether this node is cold: restarted, its first resync from the peer not complete.
    /// While cold, a drain set here outranks the peer's older history instead of being
    /// undone by it (see [`admin`]). lbd sets it at startup when `[peer]` is configured and
    /// clears it when the link reports warm.
    pub fn set_cold(&self, cold: bool) {
        lock(&self.admin).set_cold(cold);
    }

    // --- sticky (learn mode) ---

    /// The backend address learned for `cookie` in `pool`, if it is alive. Does not extend
    /// the TTL: the data path re-learns when it wants to. A hit is a use: the entry is
    /// protected from a flood of new keys.
    pub fn sticky_lookup(&self, pool: &str, cookie: &[u8], now: Duration) -> Option<String> {
        lock(&self.sticky).lookup(pool, cookie, now)
    }

    /// Pin `cookie` in `pool` to `backend` for `ttl` (a zero TTL or empty backend is ignored;
    /// a cookie over the table's key cap is not stored, and counted).
    /// Cheap to call on every response: re-learning the same backend only writes (and
    /// replicates) once it would extend the expiry by at least `ttl / 16`.
    pub fn sticky_learn(
        &self,
        pool: &str,
        cookie: &[u8],
        backend: &str,
        ttl: Duration,
        now: Duration,
    ) {
        lock(&self.sticky).learn(pool, cookie, backend, ttl, now)
    }

    /// Unpin `cookie` (replicated as a tombstone until the old entry would have expired).
    pub fn sticky_forget(&self, pool: &str, cookie: &[u8], now: Duration) {
        lock(&self.sticky).forget(pool, cookie, now)
    }

    /// Count a learn refused by the data path for a cookie value over its pool's
    /// `max_key_bytes` (the table counts those over its own cap itself).
    pub fn count_sticky_key_too_long(&self) {
        lock(&self.sticky).count_too_long();
    }

    /// Entries and estimated bytes of `pool`'s sticky entries.
    pub fn sticky_usage(&self, pool: &str) -> TableUsage {
        lock(&self.sticky).usage(pool)
    }

    /// The whole sticky table: usage and counters.
    pub fn sticky_table(&self) -> (TableUsage, TableCounters) {
        let t = lock(&self.sticky);
        let (evictions, keys_too_long) = t.evictions_and_refusals();
        let usage = TableUsage {
            entries: t.len(),
            bytes: t.bytes(),
        };
        (
            usage,
            TableCounters {
                evictions,
                keys_too_long,
            },
        )
    }

    // --- rate limiting ---

    /// Take one token from the (limiter, key) bucket if the nodes' combined consumption
    /// allows it. Only an `Allow` is a change (replicated); a `Deny` consumes nothing. A key
    /// over the table's key cap is hashed ([`bounded_key`]).
    pub fn rate_check(
        &self,
        limiter: &str,
        key: &[u8],
        spec: RateSpec,
        now: Duration,
    ) -> RateDecision {
        lock(&self.rate).check(limiter, key, spec, now)
    }

    /// The rate-limit table: usage and counters.
    pub fn rate_table(&self) -> (TableUsage, TableCounters) {
        let t = lock(&self.rate);
        let usage = TableUsage {
            entries: t.len(),
            bytes: t.bytes(),
        };
        let counters = TableCounters {
            evictions: t.evictions(),
            keys_too_long: 0,
        };
        (usage, counters)
    }

    // --- operator drains ---

    pub fn set_drained(&self, pool: &str, backend: &str, drained: bool, now: Duration) {
        lock(&self.admin).set(pool, backend, drained, now)
    }

    pub fn is_drained(&self, pool: &str, backend: &str) -> bool {
        lock(&self.admin).is_drained(pool, backend)
    }

    /// (pool, backend, drained) for every known entry, any order.
    pub fn drained(&self) -> Vec<(String, String, bool)> {
        lock(&self.admin).all()
    }

    /// Drains whose value changed through a merge of a peer's record since the last call
    /// (coalesced; current value), for the data path to apply. Local `set_drained` calls are
    /// not included.
    pub fn take_remote_admin_changes(&self) -> Vec<(String, String, bool)> {
        lock(&self.admin).take_remote()
    }

    /// Same as [`SoftState::take_remote_admin_changes`]: drains changed by merge since the
    /// last call (only drains need applying elsewhere; sticky and rate entries are read
    /// from here on every request).
    pub fn remote_changes(&self) -> Vec<(String, String, bool)> {
        self.take_remote_admin_changes()
    }

    // --- maintenance and replication ---

    /// Drop expired sticky entries and refilled buckets from each table's least recently used
    /// end (up to [`SWEEP_BUDGET`] per table, stopping at the first live one; cheap to call
    /// every second). Mutations also sweep a little; the LRU bound caps memory regardless.
    /// Returns how many entries were dropped.
    pub fn sweep(&self, now: Duration) -> usize {
        lock(&self.sticky).sweep_at(now, SWEEP_BUDGET)
            + lock(&self.rate).sweep_at(now, SWEEP_BUDGET)
    }

    /// The replication view. Each call on the guard locks the one table it touches, so
    /// holding the guard does not stall the data path.
    pub fn lock(&self) -> SoftStateGuard<'_> {
        SoftStateGuard { state: self }
    }

    /// Order-independent, time-free digest of all tables (entries expired as of the latest
    /// `now` any call passed are left out).
    pub fn digest(&self) -> Digest {
        digest::combine([
            lock(&self.sticky).digest(),
            lock(&self.rate).digest(),
            lock(&self.admin).digest(),
        ])
    }

    // --- the state file's change feed ([`persist`]) ---

    /// Start (or stop) noting every change, local or merged, for the state file.
    pub(crate) fn set_file_feed(&self, on: bool) {
        lock(&self.sticky).file_changes().set_file_feed(on);
        lock(&self.rate).file_changes().set_file_feed(on);
        lock(&self.admin).file_changes().set_file_feed(on);
    }

    /// Keys changed locally or by merge since the last call (coalesced; empty while the file
    /// feed is off). Independent of [`ReplicaStore::take_changes`], the peer driver's feed.
    pub(crate) fn take_file_changes(&self) -> Vec<RecordKey> {
        let mut out = Vec::new();
        let tagged = |table: Table, keys: Vec<Vec<u8>>| {
            keys.into_iter().map(move |key| RecordKey { table, key })
        };
        out.extend(tagged(
            Table::Sticky,
            lock(&self.sticky).file_changes().take_file(),
        ));
        out.extend(tagged(
            Table::RateLimit,
            lock(&self.rate).file_changes().take_file(),
        ));
        out.extend(tagged(
            Table::Admin,
            lock(&self.admin).file_changes().take_file(),
        ));
        out
    }

    pub fn file_stats(&self) -> &persist::FileStats {
        &self.file_stats
    }

    /// Entries held per table (may include expired entries not yet swept).
    pub fn len_by_table(&self) -> Vec<(Table, usize)> {
        vec![
            (Table::Sticky, lock(&self.sticky).len()),
            (Table::RateLimit, lock(&self.rate).len()),
            (Table::Admin, lock(&self.admin).len()),
        ]
    }
}

/// [`ReplicaStore`] over a [`SoftState`], from [`SoftState::lock`].
pub struct SoftStateGuard<'a> {
    state: &'a SoftState,
}

impl ReplicaStore for SoftStateGuard<'_> {
    fn record(&self, key: &RecordKey, now: Duration) -> Option<Record> {
        let s = self.state;
        let value = match key.table {
            Table::Sticky => lock(&s.sticky).record(&key.key, now),
            Table::RateLimit => lock(&s.rate).record(&key.key, now),
            Table::Admin => lock(&s.admin).record(&key.key, now),
        }?;
        Some(Record {
            table: key.table,
            key: key.key.clone(),
            value,
        })
    }

    fn merge(&mut self, record: &Record, now: Duration) -> Result<bool, MergeError> {
        let s = self.state;
        match record.table {
            Table::Sticky => lock(&s.sticky).merge(&record.key, &record.value, now),
            Table::RateLimit => lock(&s.rate).merge(&record.key, &record.value, now),
            Table::Admin => lock(&s.admin).merge(&record.key, &record.value, now),
        }
    }

    /// Most recently changed first, whatever the table: what a restarted peer most likely
    /// lacks (its state file holds everything older than its last flush) arrives first, so a
    /// resync cut short by a second failure still leaves it nearly whole.
    fn keys(&self) -> Vec<RecordKey> {
        let s = self.state;
        let mut out = Vec::new();
        let tagged = |table: Table, keys: Vec<(codec::Stamp, Vec<u8>)>| {
            keys.into_iter()
                .map(move |(at, key)| (at, RecordKey { table, key }))
        };
        out.extend(tagged(Table::Sticky, lock(&s.sticky).keys_by_recency()));
        out.extend(tagged(Table::RateLimit, lock(&s.rate).keys_by_recency()));
        out.extend(tagged(Table::Admin, lock(&s.admin).keys_by_recency()));
        out.sort_unstable_by_key(|(at, _)| std::cmp::Reverse(*at));
        out.into_iter().map(|(_, k)| k).collect()
    }

    fn digest(&self) -> Digest {
        self.state.digest()
    }

    fn take_changes(&mut self) -> Vec<RecordKey> {
        let s = self.state;
        let mut out = Vec::new();
        let tagged = |table: Table, keys: Vec<Vec<u8>>| {
            keys.into_iter().map(move |key| RecordKey { table, key })
        };
        out.extend(tagged(Table::Sticky, lock(&s.sticky).take_changes()));
        out.extend(tagged(Table::RateLimit, lock(&s.rate).take_changes()));
        out.extend(tagged(Table::Admin, lock(&s.admin).take_changes()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn facade_is_shareable_and_replicates() {
        assert_send_sync::<SoftState>();
        let a = SoftState::new("a", Limits::default());
        let b = SoftState::new("b", Limits::default());
        a.sticky_learn("web", b"sess1", "10.0.0.1:80", 60 * S, S);
        a.set_drained("web", "10.0.0.2:80", true, S);
        let spec = RateSpec {
            rate_per_s: 1.0,
            burst: 2,
        };
        assert_eq!(a.rate_check("rl", b"1.2.3.4", spec, S), RateDecision::Allow);
        assert_eq!(a.rate_check("rl", b"1.2.3.4", spec, S), RateDecision::Allow);
        assert!(matches!(
            a.rate_check("rl", b"1.2.3.4", spec, S),
            RateDecision::Deny { .. }
        ));

        let mut ga = a.lock();
        let mut gb = b.lock();
        let changes = ga.take_changes();
        assert_eq!(changes.len(), 3, "each key once: {changes:?}");
        assert!(ga.take_changes().is_empty());
        let mut keys = ga.keys();
        keys.sort();
        let mut sorted = changes.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for k in &changes {
            let r = ga.record(k, 2 * S);
            assert!(r.is_some(), "{k:?}");
            if let Some(r) = r {
                assert_eq!(gb.merge(&r, 2 * S), Ok(true));
            }
        }
        assert!(gb.take_changes().is_empty(), "merges are not changes");
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().count, 3);
        assert_eq!(
            b.sticky_lookup("web", b"sess1", 2 * S).as_deref(),
            Some("10.0.0.1:80")
        );
        assert!(b.is_drained("web", "10.0.0.2:80"));
        assert_eq!(
            b.take_remote_admin_changes(),
            vec![("web".into(), "10.0.0.2:80".into(), true)]
        );
        assert!(b.remote_changes().is_empty());
        // b inherited a's consumption: of a's 2 tokens one has refilled by t=2 s (1/s), so b
        // gets exactly one, then denies.
        assert_eq!(
            b.rate_check("rl", b"1.2.3.4", spec, 2 * S),
            RateDecision::Allow
        );
        assert!(matches!(
            b.rate_check("rl", b"1.2.3.4", spec, 2 * S),
            RateDecision::Deny { .. }
        ));
        assert_eq!(
            b.len_by_table(),
            vec![(Table::Sticky, 1), (Table::RateLimit, 1), (Table::Admin, 1)]
        );
        assert_eq!(
            b.drained(),
            vec![("web".into(), "10.0.0.2:80".into(), true)]
        );
        assert_eq!(b.node_id(), "b");
    }

    #[test]
    fn resync_sends_the_most_recently_changed_first() {
        let a = SoftState::new("a", Limits::default());
        let b = SoftState::new("b", Limits::default());
        // Slow enough that no bucket refills (and leaves the resync) during the test.
        let spec = RateSpec {
            rate_per_s: 0.01,
            burst: 4,
        };
        a.sticky_learn("web", b"old", "10.0.0.1:80", 60 * S, S);
        assert_eq!(a.rate_check("rl", b"k", spec, 2 * S), RateDecision::Allow);
        a.set_drained("web", "10.0.0.2:80", true, 3 * S);
        // A merge is a change too: b's bucket, merged at 4 s.
        assert_eq!(b.rate_check("rl", b"peer", spec, S), RateDecision::Allow);
        let r = b.lock().record(
            &RecordKey {
                table: Table::RateLimit,
                key: ratelimit::key("rl", b"peer"),
            },
            S,
        );
        if let Some(r) = r {
            assert_eq!(a.lock().merge(&r, 4 * S), Ok(true));
        }
        a.sticky_learn("web", b"new", "10.0.0.1:80", 60 * S, 5 * S);
        let order: Vec<RecordKey> = a.lock().keys();
        let expected = vec![
            RecordKey {
                table: Table::Sticky,
                key: sticky::key("web", b"new"),
            },
            RecordKey {
                table: Table::RateLimit,
                key: ratelimit::key("rl", b"peer"),
            },
            RecordKey {
                table: Table::Admin,
                key: admin::key("web", "10.0.0.2:80"),
            },
            RecordKey {
                table: Table::RateLimit,
                key: ratelimit::key("rl", b"k"),
            },
            RecordKey {
                table: Table::Sticky,
                key: sticky::key("web", b"old"),
            },
        ];
        assert_eq!(order, expected);
    }

    #[test]
    fn concurrent_workers_share_one_bucket() {
        // No refill (one token a day): exactly `burst` requests pass across all threads.
        let s = std::sync::Arc::new(SoftState::new("a", Limits::default()));
        let spec = RateSpec {
            rate_per_s: 1.0 / 86_400.0,
            burst: 100,
        };
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| s.rate_check("rl", b"k", spec, S) == RateDecision::Allow)
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
        assert_eq!(allowed, 100);
        assert_eq!(s.lock().take_changes().len(), 1, "coalesced to one key");
    }

    #[test]
    fn unknown_garbage_is_an_error_not_a_panic() {
        let s = SoftState::new("a", Limits::default());
        let mut g = s.lock();
        for table in Table::ALL {
            let r = Record {
                table,
                key: vec![0xff; 3],
                value: vec![1, 2, 3],
            };
            assert!(g.merge(&r, S).is_err());
        }
        assert_eq!(s.digest(), Digest::default());
    }
}
