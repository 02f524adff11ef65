//! Learn-mode sticky table: (pool, application cookie value) -> backend address.
//!
//! Each entry is a last-writer-wins register ordered by `(version, writer node id)`, with the
//! backend as the final tie-breaker so the order is total and the merge is a true join
//! (commutative, associative, idempotent). `version` is a per-key write counter: a write is
//! one more than the version this node held for the key, so a write made after another was
//! seen (the normal case: one active node, or an operator on either) always outranks it.
//! Writes made without seeing each other (within the link delay, or on both sides of a
//! partition) carry equal versions and are ordered by node id, the same way on both nodes.
//!
//! Why not order by write time: write times can only travel as ages, which the receiver turns
//! into `now - age`, so each node sees the other's writes late by the link's one-way delay.
//! Two writes closer together than that would each look older than the other's on its own
//! node: both nodes would swap values and stay different (the delayed peer-link fault run
//! showed it). Ages still carry what needs no agreement: the remaining TTL.
//!
//! Re-learning the backend an entry already has is written (and so replicated) only when it
//! extends the expiry by at least 1/16 of the TTL: the data path may call `learn` on every
//! response without turning each request into a peer update.
//!
//! `forget` writes a tombstone (empty backend) that keeps the forgotten
//! entry's expiry, so the deletion replicates and outranks older writes until then.
//!
//! Bounds: one table serves every learn-mode pool, bounded in entries and estimated bytes
//! (the pools' `max_entries` and `max_bytes` summed) with the segmented LRU of [`super::lru`]:
//! a cookie value enters probation when first learned and is protected once it is used again
//! (a second request carrying it), so a flood of invented session ids evicts only other
//! invented ids. A peer's record of an entry written more than once (`version > 1`) is
//! admitted as established. Cookie values longer than the table's key cap are never stored,
//! whether learned here or sent by the peer (a merge error, counted by the link). Per-pool
//! entries and bytes are kept for the metrics ([`StickyTable::usage`]).
//!
//! Value layout (after the format version byte): `writer node id (u8 len) | version u64 |
//! age ns i64 | remaining TTL ns u64 | backend (u16 len, UTF-8; empty = tombstone)`.

use std::collections::HashMap;
use std::time::Duration;

use shared::peer::{Digest, MergeError, Table};

use super::changes::ChangeSets;
use super::codec::{
    age, decode_key, encode_key, encode_key_into, malformed, nanos, non_negative_diff, offset,
    put_node_id, stamp, NodeIds, Reader, Stamp, VALUE_VERSION,
};
use super::digest::{DigestSum, EntryHasher};
use super::lru::{entry_cost, Bounds, LruMap};
use super::TableUsage;

const TABLE: Table = Table::Sticky;
/// Expired entries removed from the LRU tail per mutation, so dead entries don't wait for
/// eviction pressure to free memory (amortised, bounded work on the request path).
const SWEEP_PER_WRITE: usize = 2;
/// Re-learning the same backend is only written when it extends the expiry by at least
/// `ttl / REFRESH_FRACTION`: TTLs slide in steps instead of per request.
const REFRESH_FRACTION: i64 = 16;

struct Entry {
    /// Empty: a tombstone left by `forget`.
    backend: Box<str>,
    writer: u8,
    /// Per-key write counter (see the module docs): what orders writes, with `writer`.
    version: u64,
    written: Stamp,
    expires: Stamp,
}

pub(crate) struct StickyTable {
    map: LruMap<Entry>,
    nodes: NodeIds,
    changed: ChangeSets,
    /// Latest `now` seen: the time `keys` and `digest` (which get none) judge expiry by.
    last_now: Stamp,
    scratch: Vec<u8>,
    /// Longest cookie value stored (learned or merged).
    max_key_bytes: usize,
    /// Learns refused because the cookie value was longer than `max_key_bytes`.
    too_long: u64,
    /// Per pool name: what its entries hold (pools without entries are absent).
    usage: HashMap<Box<[u8]>, TableUsage>,
}

impl StickyTable {
    pub(crate) fn new(node_id: &str, bounds: Bounds, max_key_bytes: usize) -> StickyTable {
        StickyTable {
            map: LruMap::with_bounds(bounds),
            nodes: NodeIds::new(node_id),
            changed: ChangeSets::default(),
            last_now: i64::MIN,
            scratch: Vec::new(),
            max_key_bytes,
            too_long: 0,
            usage: HashMap::new(),
        }
    }

    /// Entries and estimated bytes of `pool`'s entries.
    pub(crate) fn usage(&self, pool: &str) -> TableUsage {
        self.usage.get(pool.as_bytes()).copied().unwrap_or_default()
    }

    /// Entries evicted by the bounds, and learns refused for an over-long cookie value.
    pub(crate) fn evictions_and_refusals(&self) -> (u64, u64) {
        (self.map.evictions(), self.too_long)
    }

    pub(crate) fn count_too_long(&mut self) {
        self.too_long += 1;
    }

    pub(crate) fn bytes(&self) -> usize {
        self.map.bytes()
    }

    fn account(&mut self, key: &[u8], added: bool) {
        let Ok((pool, _)) = decode_key(TABLE, key) else {
            return;
        };
        let cost = entry_cost(key.len());
        if added {
            let u = self.usage.entry(pool.into()).or_default();
            u.entries += 1;
            u.bytes += cost;
        } else if let Some(u) = self.usage.get_mut(pool) {
            u.entries = u.entries.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(cost);
            if u.entries == 0 {
                self.usage.remove(pool);
            }
        }
    }

    /// Drop what an evicted or removed key left behind.
    fn gone(&mut self, key: &[u8]) {
        self.changed.gone(key);
        self.account(key, false);
    }

    /// Insert into the LRU, keeping the per-pool usage and the changed set in step.
    fn store(&mut self, key: &[u8], entry: Entry, established: bool) {
        if !self.map.contains(key) {
            self.account(key, true);
        }
        let evicted = if established {
            self.map.insert_established(key, entry)
        } else {
            self.map.insert(key, entry)
        };
        for (k, _) in evicted {
            self.gone(&k);
        }
    }

    fn observe(&mut self, now: Duration) -> Stamp {
        let s = stamp(now);
        self.last_now = self.last_now.max(s);
        s
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// The backend pinned for `cookie`; a hit counts as a use (the entry is protected).
    pub(crate) fn lookup(&mut self, pool: &str, cookie: &[u8], now: Duration) -> Option<String> {
        if cookie.len() > self.max_key_bytes {
            return None;
        }
        let now = self.observe(now);
        encode_key_into(&mut self.scratch, pool.as_bytes(), cookie);
        let e = self.map.get_mut(&self.scratch)?;
        if e.expires <= now {
            // Lazily drop it; not a replicated change: the peer expires it on its own.
            let key = std::mem::take(&mut self.scratch);
            self.map.remove(&key);
            self.gone(&key);
            self.scratch = key;
            return None;
        }
        if e.backend.is_empty() {
            None
        } else {
            Some(e.backend.to_string())
        }
    }

    pub(crate) fn learn(
        &mut self,
        pool: &str,
        cookie: &[u8],
        backend: &str,
        ttl: Duration,
        now: Duration,
    ) {
        // Zero TTL would be dead on arrival; an over-long address could not be encoded.
        if ttl.is_zero() || backend.is_empty() || backend.len() > u16::MAX as usize {
            return;
        }
        if cookie.len() > self.max_key_bytes {
            self.too_long += 1;
            return;
        }
        let now = self.observe(now);
        let expires = now.saturating_add(nanos(ttl));
        encode_key_into(&mut self.scratch, pool.as_bytes(), cookie);
        if let Some(e) = self.map.peek(&self.scratch) {
            // The data path re-learns on every response to slide the TTL. A refresh that
            // moves the expiry by less than 1/16 of the TTL is not worth a replicated write
            // (it would send one update per request); the entry stays as it is.
            if e.expires > now
                && *e.backend == *backend
                && expires.saturating_sub(e.expires) < nanos(ttl) / REFRESH_FRACTION
            {
                return;
            }
        }
        self.write(pool, cookie, backend.into(), expires, now);
    }

    pub(crate) fn forget(&mut self, pool: &str, cookie: &[u8], now: Duration) {
        let now = self.observe(now);
        encode_key_into(&mut self.scratch, pool.as_bytes(), cookie);
        let expires = match self.map.peek(&self.scratch) {
            Some(e) if e.expires > now && !e.backend.is_empty() => e.expires,
            _ => return,
        };
        self.write(pool, cookie, "".into(), expires, now);
    }

    fn write(&mut self, pool: &str, cookie: &[u8], backend: Box<str>, expires: Stamp, now: Stamp) {
        encode_key_into(&mut self.scratch, pool.as_bytes(), cookie);
        // A local write must outrank whatever this node holds (it is, here, the latest), and
        // strictly, so both nodes order it after the entry it replaces.
        let (written, version) = match self.map.peek(&self.scratch) {
            Some(e) if e.expires > now => (now.max(e.written.saturating_add(1)), e.version + 1),
            Some(e) => (now, e.version + 1),
            None => (now, 1),
        };
        let entry = Entry {
            backend,
            writer: NodeIds::LOCAL,
            version,
            written,
            expires,
        };
        let key = std::mem::take(&mut self.scratch);
        self.store(&key, entry, false);
        if self.map.contains(&key) {
            self.changed.local(&key);
        }
        self.scratch = key;
        self.sweep(now, SWEEP_PER_WRITE);
    }

    /// Remove up to `budget` expired entries from the least-recently-used ends.
    pub(crate) fn sweep(&mut self, now: Stamp, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let Some((k, _)) = self.map.pop_dead(|e| e.expires <= now) else {
                break;
            };
            self.gone(&k);
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
        let e = self.map.peek(key)?;
        if e.expires <= now {
            return None;
        }
        let mut v = Vec::with_capacity(32 + e.backend.len());
        v.push(VALUE_VERSION);
        put_node_id(&mut v, self.nodes.name(e.writer));
        v.extend_from_slice(&e.version.to_be_bytes());
        v.extend_from_slice(&age(now, e.written));
        v.extend_from_slice(&non_negative_diff(e.expires, now).to_be_bytes());
        v.extend_from_slice(&(e.backend.len() as u16).to_be_bytes());
        v.extend_from_slice(e.backend.as_bytes());
        Some(v)
    }

    pub(crate) fn merge(
        &mut self,
        key: &[u8],
        value: &[u8],
        now: Duration,
    ) -> Result<bool, MergeError> {
        let (_, cookie) = decode_key(TABLE, key)?;
        if cookie.len() > self.max_key_bytes {
            return Err(malformed(
                TABLE,
                format!(
                    "cookie value of {} bytes, over the {}-byte cap",
                    cookie.len(),
                    self.max_key_bytes
                ),
            ));
        }
        let mut r = Reader::new(TABLE, value);
        r.version()?;
        let writer = r.node_id()?;
        let version = r.u64()?;
        let age = r.age()?;
        let remaining = r.u64()?;
        let blen = r.u16()? as usize;
        let backend = std::str::from_utf8(r.bytes(blen)?)
            .map_err(|_| malformed(TABLE, "backend is not UTF-8"))?;
        r.finish()?;

        let now = self.observe(now);
        let written = now.saturating_sub(age);
        let expires = now.saturating_add(offset(remaining));
        if expires <= now {
            // Dead on arrival: ignoring it (rather than letting it delete) keeps the merge
            // independent of the order records arrive in.
            return Ok(false);
        }
        if let Some(e) = self.map.peek(key) {
            if e.expires > now {
                // The same (version, writer) is the same write seen again: its expiry, an
                // estimate that differs by the link delay, must not make it "newer".
                let local = (e.version, self.nodes.name(e.writer), &*e.backend);
                if (version, writer, backend) <= local {
                    return Ok(false);
                }
            }
        }
        let writer = self.nodes.intern(TABLE, writer)?;
        let entry = Entry {
            backend: backend.into(),
            writer,
            version,
            written,
            expires,
        };
        // A peer's newer write of a known key, or a key the peer wrote more than once, was
        // used again over there: established, like a second request here.
        self.store(key, entry, version > 1);
        if self.changed.feeds_file() && self.map.contains(key) {
            self.changed.merged(key);
        }
        Ok(true)
    }

    /// Live keys with the time of their write (for a most-recent-first resync).
    pub(crate) fn keys_by_recency(&self) -> Vec<(Stamp, Vec<u8>)> {
        self.map
            .iter()
            .filter(|(_, e)| e.expires > self.last_now)
            .map(|(k, e)| (e.written, k.to_vec()))
            .collect()
    }

    /// Per entry: key, backend and writer (not the times, which differ by the link delay).
    pub(crate) fn digest(&self) -> Digest {
        let mut d = DigestSum::default();
        for (k, e) in self.map.iter().filter(|(_, e)| e.expires > self.last_now) {
            let mut h = EntryHasher::new(TABLE, k);
            h.field(e.backend.as_bytes());
            h.field(self.nodes.name(e.writer).as_bytes());
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

/// `value` as it would have been encoded `elapsed` ns later (older write, less time left);
/// `None` if it has expired by then. For records kept in the state file across a restart.
pub(crate) fn aged(value: &[u8], elapsed: i64) -> Result<Option<Vec<u8>>, MergeError> {
    let mut r = Reader::new(TABLE, value);
    r.version()?;
    let writer = r.node_id()?;
    let version = r.u64()?;
    let age = r.age()?;
    let remaining = offset(r.u64()?);
    let blen = r.u16()? as usize;
    let backend = r.bytes(blen)?;
    r.finish()?;
    let remaining = remaining.saturating_sub(elapsed);
    if remaining <= 0 {
        return Ok(None);
    }
    let mut v = Vec::with_capacity(value.len());
    v.push(VALUE_VERSION);
    put_node_id(&mut v, writer);
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&age.saturating_add(elapsed).to_be_bytes());
    v.extend_from_slice(&(remaining as u64).to_be_bytes());
    v.extend_from_slice(&(blen as u16).to_be_bytes());
    v.extend_from_slice(backend);
    Ok(Some(v))
}

/// Encode a sticky key (for callers building a [`shared::peer::RecordKey`]).
pub fn key(pool: &str, cookie: &[u8]) -> Vec<u8> {
    encode_key(pool.as_bytes(), cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn table(node: &str, max_entries: usize) -> StickyTable {
        StickyTable::new(node, Bounds::entries(max_entries), 256)
    }

    /// Rewrite the age field of a record written by a one-letter node id (after the value
    /// version, the node id and the write version).
    fn with_age(mut v: Vec<u8>, age: Duration) -> Vec<u8> {
        let off = 1 + 1 + 1 + 8;
        v[off..off + 8].copy_from_slice(&(age.as_nanos() as u64).to_be_bytes());
        v
    }

    #[test]
    fn learn_lookup_and_ttl_expiry() {
        let mut t = table("a", 10);
        t.learn("web", b"c1", "10.0.0.1:80", 10 * S, 100 * S);
        assert_eq!(
            t.lookup("web", b"c1", 105 * S).as_deref(),
            Some("10.0.0.1:80")
        );
        assert_eq!(t.lookup("api", b"c1", 105 * S), None, "pools are separate");
        assert_eq!(t.lookup("web", b"c1", 110 * S), None, "expired at ttl");
        assert_eq!(t.len(), 0, "expired entry dropped lazily");
        assert!(t.record(&key("web", b"c1"), 110 * S).is_none());
    }

    #[test]
    fn lru_bound_under_ten_times_max() {
        let mut t = table("a", 50);
        for i in 0u32..500 {
            t.learn("p", &i.to_be_bytes(), "b:1", 60 * S, S);
            assert!(t.len() <= 50);
        }
        assert_eq!(t.len(), 50);
        assert!(t.lookup("p", &499u32.to_be_bytes(), S).is_some());
        assert!(t.lookup("p", &0u32.to_be_bytes(), S).is_none());
        // The changed set never exceeds the table: evicted keys leave it.
        assert_eq!(t.take_changes().len(), 50);
    }

    #[test]
    fn refreshes_are_rate_limited() {
        let mut t = table("a", 10);
        t.learn("p", b"c", "b:1", 160 * S, 100 * S);
        assert_eq!(t.take_changes().len(), 1);
        // 9 s later: extends by 9 s < 160/16 s, no write.
        t.learn("p", b"c", "b:1", 160 * S, 109 * S);
        assert!(t.take_changes().is_empty());
        // A different backend is always written.
        t.learn("p", b"c", "b:2", 160 * S, 109 * S);
        assert_eq!(t.take_changes().len(), 1);
        // 10 s after that write: written, and the expiry slides.
        t.learn("p", b"c", "b:2", 160 * S, 119 * S);
        assert_eq!(t.take_changes().len(), 1);
        assert!(t.lookup("p", b"c", 278 * S).is_some());
        assert!(t.lookup("p", b"c", 279 * S).is_none());
    }

    #[test]
    fn sweep_frees_expired_tail() {
        let mut t = table("a", 100);
        for i in 0u32..10 {
            t.learn("p", &i.to_be_bytes(), "b:1", S, S);
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.sweep_at(3 * S, 100), 10);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn concurrent_writes_converge_whatever_the_link_delay() {
        // a and b write the same key 30 ms apart, each before seeing the other's write, over
        // a link with 50 ms of delay: each receives the other's record aged as if written
        // *later* than its own. Ordered by age they would swap values and stay different;
        // ordered by (version, node id) both keep b's.
        let k = key("p", b"c");
        let mut a = table("a", 10);
        let mut b = table("b", 10);
        a.learn("p", b"c", "A:1", 60 * S, 10 * S);
        let ms = Duration::from_millis;
        b.learn("p", b"c", "B:1", 60 * S, 10 * S + ms(30));
        let ra = a.record(&k, 10 * S).unwrap_or_default(); // sent at once, age 0
        let rb = b.record(&k, 10 * S + ms(30)).unwrap_or_default();
        b.merge(&k, &ra, 10 * S + ms(50)).unwrap_or(false); // arrives 50 ms later, age 0
        a.merge(&k, &rb, 10 * S + ms(80)).unwrap_or(false);
        assert_eq!(a.lookup("p", b"c", 11 * S).as_deref(), Some("B:1"));
        assert_eq!(b.lookup("p", b"c", 11 * S).as_deref(), Some("B:1"));
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn lww_by_version_then_node_id() {
        let k = key("p", b"c");
        let mut a = table("a", 10);
        let mut b = table("b", 10);
        a.learn("p", b"c", "A:1", 60 * S, 10 * S);
        b.learn("p", b"c", "B:1", 60 * S, 10 * S);
        assert_eq!(b.take_changes(), vec![k.clone()]);
        // Concurrent first writes (version 1 each): node "b" > "a", both pick B.
        let ra = a.record(&k, 10 * S).unwrap_or_default();
        let rb = b.record(&k, 10 * S).unwrap_or_default();
        assert_eq!(a.merge(&k, &rb, 10 * S), Ok(true));
        assert_eq!(b.merge(&k, &ra, 10 * S), Ok(false));
        assert_eq!(a.lookup("p", b"c", 10 * S).as_deref(), Some("B:1"));
        assert_eq!(b.lookup("p", b"c", 10 * S).as_deref(), Some("B:1"));
        assert_eq!(a.digest(), b.digest());
        // A write by "a" after it saw B's (version 2) wins everywhere.
        a.learn("p", b"c", "A:2", 60 * S, 20 * S);
        let ra = a.record(&k, 20 * S).unwrap_or_default();
        assert_eq!(b.merge(&k, &ra, 20 * S), Ok(true));
        assert_eq!(b.merge(&k, &ra, 20 * S), Ok(false), "idempotent");
        assert_eq!(b.lookup("p", b"c", 21 * S).as_deref(), Some("A:2"));
        // The same write again, whatever its age, changes nothing.
        let stale = with_age(b.record(&k, 20 * S).unwrap_or_default(), 100 * S);
        assert_eq!(b.merge(&k, &stale, 20 * S), Ok(false));
        // Merges are not local changes.
        assert!(b.take_changes().is_empty());
        assert_eq!(a.take_changes(), vec![k]);
    }

    #[test]
    fn remaining_ttl_travels() {
        let k = key("p", b"c");
        let mut a = table("a", 10);
        let mut b = table("b", 10);
        a.learn("p", b"c", "A:1", 10 * S, Duration::ZERO);
        let r = a.record(&k, 4 * S).unwrap_or_default();
        // b's clock is far ahead: the entry still has 6 s left there.
        assert_eq!(b.merge(&k, &r, 1000 * S), Ok(true));
        assert!(b.lookup("p", b"c", 1005 * S).is_some());
        assert!(b.lookup("p", b"c", 1006 * S).is_none());
    }

    #[test]
    fn forget_replicates_as_tombstone() {
        let k = key("p", b"c");
        let mut a = table("a", 10);
        let mut b = table("b", 10);
        a.learn("p", b"c", "A:1", 60 * S, S);
        let r = a.record(&k, S).unwrap_or_default();
        assert_eq!(b.merge(&k, &r, S), Ok(true));
        a.forget("p", b"c", 2 * S);
        assert_eq!(a.lookup("p", b"c", 2 * S), None);
        let t = a.record(&k, 2 * S).unwrap_or_default();
        assert_eq!(b.merge(&k, &t, 2 * S), Ok(true));
        assert_eq!(b.lookup("p", b"c", 2 * S), None);
        // The older learn (1 s old by now) can't resurrect it.
        assert_eq!(b.merge(&k, &with_age(r, S), 2 * S), Ok(false));
    }

    #[test]
    fn over_long_cookies_are_never_stored() {
        let mut t = table("a", 10);
        let long = vec![b'x'; 257];
        t.learn("p", &long, "b:1", 60 * S, S);
        assert_eq!(t.len(), 0);
        assert_eq!(t.lookup("p", &long, S), None);
        assert_eq!(t.evictions_and_refusals(), (0, 1));
        t.count_too_long();
        assert_eq!(t.evictions_and_refusals(), (0, 2));
        // The peer's record of one is refused too (a merge error), and stores nothing.
        let mut big = table("b", 10);
        big.max_key_bytes = 1000;
        big.learn("p", &long, "b:1", 60 * S, S);
        let k = key("p", &long);
        let r = big.record(&k, S).unwrap_or_default();
        assert!(matches!(
            t.merge(&k, &r, S),
            Err(MergeError::Malformed { .. })
        ));
        assert_eq!(t.len(), 0);
        assert_eq!(t.usage("p"), TableUsage::default());
    }

    #[test]
    fn usage_is_kept_per_pool() {
        let mut t = table("a", 3);
        t.learn("web", b"c1", "b:1", 60 * S, S);
        t.learn("web", b"c2", "b:1", 60 * S, S);
        t.learn("api", b"c1", "b:1", 60 * S, S);
        let cost = entry_cost(key("web", b"c1").len());
        assert_eq!(
            t.usage("web"),
            TableUsage {
                entries: 2,
                bytes: 2 * cost
            }
        );
        assert_eq!(t.usage("api").entries, 1);
        // An eviction, an expiry sweep and a lazy expiry each leave the usage exact.
        t.learn("api", b"c2", "b:1", S, S);
        assert_eq!(t.usage("web").entries, 1, "web's c1 was probation's oldest");
        assert_eq!(t.lookup("api", b"c2", 2 * S), None);
        assert_eq!(t.sweep_at(100 * S, 10), 2);
        assert_eq!(t.usage("web"), TableUsage::default());
        assert_eq!(t.usage("api"), TableUsage::default());
        assert_eq!(t.bytes(), 0);
        assert_eq!(t.evictions_and_refusals(), (1, 0));
    }

    #[test]
    fn a_used_pin_survives_a_flood_of_new_cookies() {
        let mut t = table("a", 100);
        t.learn("p", b"mine", "b:1", 600 * S, S);
        assert!(t.lookup("p", b"mine", S).is_some(), "second request: a use");
        for i in 0u32..10_000 {
            t.learn("p", &i.to_be_bytes(), "b:2", 600 * S, S);
        }
        assert_eq!(t.lookup("p", b"mine", 2 * S).as_deref(), Some("b:1"));
        assert_eq!(t.len(), 100);
        // The flood's last keys made it in; the evicted ones left the changed set.
        assert!(t.take_changes().len() <= 100);
    }

    #[test]
    fn a_peer_record_written_twice_is_admitted_as_established() {
        let k = key("p", b"c");
        let mut a = table("a", 10);
        a.learn("p", b"c", "A:1", 60 * S, S);
        a.learn("p", b"c", "A:2", 60 * S, S);
        let r = a.record(&k, S).unwrap_or_default();
        let mut b = table("b", 4);
        assert_eq!(b.merge(&k, &r, S), Ok(true));
        assert!(b.map.is_protected(&k));
        for i in 0u32..50 {
            b.learn("p", &i.to_be_bytes(), "B:1", 60 * S, S);
        }
        assert_eq!(b.lookup("p", b"c", S).as_deref(), Some("A:2"));
    }

    #[test]
    fn malformed_values_rejected() {
        let k = key("p", b"c");
        let mut a = table("a", 10);
        a.learn("p", b"c", "A:1", 60 * S, S);
        let good = a.record(&k, S).unwrap_or_default();
        let mut b = table("b", 10);
        for n in 0..good.len() {
            assert!(b.merge(&k, &good[..n], S).is_err(), "prefix {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(b.merge(&k, &long, S).is_err());
        let mut badver = good.clone();
        badver[0] = 9;
        assert!(b.merge(&k, &badver, S).is_err());
        assert!(b.merge(b"\x00", &good, S).is_err(), "bad key");
        assert_eq!(b.len(), 0);
    }
}
