//! Operator drains: (pool, backend) -> drained, replicated so a backend an operator drained
//! on one node stays drained after a failover.
//!
//! Each entry is a last-writer-wins register ordered by `(version, writer node id, drained)`
//! (total order, so the merge is a join), where `version` is a per-key write counter as in
//! the sticky table (see there why not write times: they would diverge under link delay).
//! The write's age travels too, for the record, but orders nothing. Entries don't expire: "not drained" is an explicit entry, because an
//! undrain must outrank the drain it reverses. The table is bounded (LRU on writes) as a
//! guard against a runaway peer; its default bound is far above any real pool size.
//!
//! A drain set while the node is *cold* (restarted, its resync from the peer not done yet) is
//! the newest word on that backend, but carries version 1: the peer's older history has
//! higher versions. So while cold, a local write that a merge would override is kept, and
//! re-versioned above the incoming one (and replicated back), instead of being silently
//! undone when the resync arrives. Once warm, the normal order applies.
//!
//! Drains changed by a *merge* are also collected in a second coalescing set, read through
//! [`super::SoftState::take_remote_admin_changes`], so the data path can apply them (local
//! `set_drained` calls are applied by whoever made them).
//!
//! Value layout (after the format version byte): `drained (u8: 0 or 1) | writer node id
//! (u8 len) | version u64 | age ns i64`.

use std::collections::HashSet;
use std::time::Duration;

use shared::peer::{Digest, MergeError, Table};

use super::changes::ChangeSets;
use super::codec::{
    age, decode_key, encode_key, encode_key_into, malformed, put_node_id, stamp, NodeIds, Reader,
    Stamp, VALUE_VERSION,
};
use super::digest::{DigestSum, EntryHasher};
use super::lru::LruMap;

const TABLE: Table = Table::Admin;

struct Entry {
    drained: bool,
    writer: u8,
    /// Per-key write counter: what orders writes, with `writer` (see the module docs).
    version: u64,
    written: Stamp,
    /// Written locally while the node was cold.
    cold_write: bool,
}

pub(crate) struct AdminTable {
    map: LruMap<Entry>,
    nodes: NodeIds,
    changed: ChangeSets,
    remote: HashSet<Box<[u8]>>,
    scratch: Vec<u8>,
    /// The node has not finished its first resync from the peer (see the module docs).
    cold: bool,
}

/// Both halves of an admin key as text (keys are validated as UTF-8 before being stored).
fn split(key: &[u8]) -> Option<(String, String)> {
    let (pool, backend) = decode_key(TABLE, key).ok()?;
    Some((
        std::str::from_utf8(pool).ok()?.to_owned(),
        std::str::from_utf8(backend).ok()?.to_owned(),
    ))
}

impl AdminTable {
    pub(crate) fn new(node_id: &str, max_entries: usize) -> AdminTable {
        AdminTable {
            map: LruMap::new(max_entries),
            nodes: NodeIds::new(node_id),
            changed: ChangeSets::default(),
            remote: HashSet::new(),
            scratch: Vec::new(),
            cold: false,
        }
    }

    pub(crate) fn set_cold(&mut self, cold: bool) {
        self.cold = cold;
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn evicted(&mut self, k: &[u8]) {
        self.changed.gone(k);
        self.remote.remove(k);
    }

    pub(crate) fn set(&mut self, pool: &str, backend: &str, drained: bool, now: Duration) {
        let now = stamp(now);
        encode_key_into(&mut self.scratch, pool.as_bytes(), backend.as_bytes());
        let (written, version) = match self.map.peek(&self.scratch) {
            Some(e) => (now.max(e.written.saturating_add(1)), e.version + 1),
            None => (now, 1),
        };
        let key = std::mem::take(&mut self.scratch);
        let entry = Entry {
            drained,
            writer: NodeIds::LOCAL,
            version,
            written,
            cold_write: self.cold,
        };
        for (k, _) in self.map.insert(&key, entry) {
            self.evicted(&k);
        }
        self.changed.local(&key);
        self.scratch = key;
    }

    pub(crate) fn is_drained(&mut self, pool: &str, backend: &str) -> bool {
        encode_key_into(&mut self.scratch, pool.as_bytes(), backend.as_bytes());
        self.map.peek(&self.scratch).is_some_and(|e| e.drained)
    }

    pub(crate) fn all(&self) -> Vec<(String, String, bool)> {
        self.map
            .iter()
            .filter_map(|(k, e)| split(k).map(|(p, b)| (p, b, e.drained)))
            .collect()
    }

    pub(crate) fn take_remote(&mut self) -> Vec<(String, String, bool)> {
        let keys: Vec<Box<[u8]>> = self.remote.drain().collect();
        keys.iter()
            .filter_map(|k| {
                let drained = self.map.peek(k)?.drained;
                split(k).map(|(p, b)| (p, b, drained))
            })
            .collect()
    }

    pub(crate) fn record(&self, key: &[u8], now: Duration) -> Option<Vec<u8>> {
        let now = stamp(now);
        let e = self.map.peek(key)?;
        let mut v = Vec::with_capacity(16);
        v.push(VALUE_VERSION);
        v.push(u8::from(e.drained));
        put_node_id(&mut v, self.nodes.name(e.writer));
        v.extend_from_slice(&e.version.to_be_bytes());
        v.extend_from_slice(&age(now, e.written));
        Some(v)
    }

    pub(crate) fn merge(
        &mut self,
        key: &[u8],
        value: &[u8],
        now: Duration,
    ) -> Result<bool, MergeError> {
        let (pool, backend) = decode_key(TABLE, key)?;
        if std::str::from_utf8(pool).is_err() || std::str::from_utf8(backend).is_err() {
            return Err(malformed(TABLE, "pool or backend is not UTF-8"));
        }
        let mut r = Reader::new(TABLE, value);
        r.version()?;
        let drained = match r.u8()? {
            0 => false,
            1 => true,
            x => return Err(malformed(TABLE, format!("drained flag {x}"))),
        };
        let writer = r.node_id()?;
        let version = r.u64()?;
        let age = r.age()?;
        r.finish()?;

        let written = stamp(now).saturating_sub(age);
        let was = match self.map.peek(key) {
            Some(e) => {
                if (version, writer, drained) <= (e.version, self.nodes.name(e.writer), e.drained) {
                    return Ok(false);
                }
                if self.cold && e.cold_write {
                    return Ok(self.keep_cold_write(key, version));
                }
                Some(e.drained)
            }
            None => None,
        };
        let writer = self.nodes.intern(TABLE, writer)?;
        let entry = Entry {
            drained,
            writer,
            version,
            written,
            cold_write: false,
        };
        for (k, _) in self.map.insert(key, entry) {
            self.evicted(&k);
        }
        if was != Some(drained) && !self.remote.contains(key) {
            self.remote.insert(key.into());
        }
        if self.changed.feeds_file() && self.map.contains(key) {
            self.changed.merged(key);
        }
        Ok(true)
    }

    /// A merge would undo a drain set while cold: keep it, one version above `incoming`, and
    /// send it back to the peer as a local change.
    fn keep_cold_write(&mut self, key: &[u8], incoming: u64) -> bool {
        let Some(e) = self.map.get_mut(key) else {
            return false;
        };
        e.version = incoming.saturating_add(1);
        self.changed.local(key);
        true
    }

    /// Keys with the time of their write (for a most-recent-first resync).
    pub(crate) fn keys_by_recency(&self) -> Vec<(Stamp, Vec<u8>)> {
        self.map
            .iter()
            .map(|(k, e)| (e.written, k.to_vec()))
            .collect()
    }

    /// Per entry: key and drained flag.
    pub(crate) fn digest(&self) -> Digest {
        let mut d = DigestSum::default();
        for (k, e) in self.map.iter() {
            let mut h = EntryHasher::new(TABLE, k);
            h.u64(u64::from(e.drained));
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

/// `value` as it would have been encoded `elapsed` ns later (an older write; drains don't
/// expire). For records kept in the state file across a restart.
pub(crate) fn aged(value: &[u8], elapsed: i64) -> Result<Option<Vec<u8>>, MergeError> {
    let mut r = Reader::new(TABLE, value);
    r.version()?;
    let drained = r.u8()?;
    let writer = r.node_id()?;
    let version = r.u64()?;
    let age = r.age()?;
    r.finish()?;
    let mut v = Vec::with_capacity(value.len());
    v.push(VALUE_VERSION);
    v.push(drained);
    put_node_id(&mut v, writer);
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&age.saturating_add(elapsed).to_be_bytes());
    Ok(Some(v))
}

/// Encode an admin key (for callers building a [`shared::peer::RecordKey`]).
pub fn key(pool: &str, backend: &str) -> Vec<u8> {
    encode_key(pool.as_bytes(), backend.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn drains_last_writer_wins() {
        let k = key("web", "10.0.0.1:80");
        let mut a = AdminTable::new("a", 10);
        let mut b = AdminTable::new("b", 10);
        a.set("web", "10.0.0.1:80", true, 10 * S);
        assert!(a.is_drained("web", "10.0.0.1:80"));
        assert!(!a.is_drained("web", "10.0.0.2:80"));
        // b learns a's drain, then undrains: a later write, whatever the clocks say.
        let ra = a.record(&k, 30 * S).unwrap_or_default(); // age 20 s
        assert_eq!(b.merge(&k, &ra, 15 * S), Ok(true));
        assert!(b.take_remote().len() == 1);
        b.set("web", "10.0.0.1:80", false, 20 * S);
        let rb = b.record(&k, 20 * S).unwrap_or_default(); // age 0
        assert_eq!(a.merge(&k, &rb, 30 * S), Ok(true));
        assert!(!a.is_drained("web", "10.0.0.1:80"));
        assert_eq!(
            a.take_remote(),
            vec![("web".into(), "10.0.0.1:80".into(), false)]
        );
        assert!(a.take_remote().is_empty(), "taken once");
        assert_eq!(b.merge(&k, &ra, 20 * S), Ok(false), "older drain loses");
        assert!(!b.is_drained("web", "10.0.0.1:80"));
        assert!(b.take_remote().is_empty());
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.merge(&k, &rb, 30 * S), Ok(false), "idempotent");
        assert_eq!(a.all(), vec![("web".into(), "10.0.0.1:80".into(), false)]);
        // Local changes are reported, merges not.
        assert_eq!(a.take_changes(), vec![k.clone()]);
        assert!(a.take_changes().is_empty());
    }

    #[test]
    fn a_drain_set_while_cold_survives_the_resync() {
        let k = key("p", "b");
        // a's history of the backend: drained and undrained twice (version 4, undrained).
        let mut a = AdminTable::new("a", 10);
        for (i, drained) in [true, false, true, false].into_iter().enumerate() {
            a.set("p", "b", drained, (i as u32 + 1) * S);
        }
        let ra = a.record(&k, 5 * S).unwrap_or_default();
        // A warm node that drains with an old version loses to a's history...
        let mut warm = AdminTable::new("c", 10);
        warm.set("p", "b", true, S);
        assert_eq!(warm.merge(&k, &ra, 2 * S), Ok(true));
        assert!(!warm.is_drained("p", "b"));
        // ...but b, restarted and still cold, keeps its operator's drain and sends it back.
        let mut b = AdminTable::new("b", 10);
        b.set_cold(true);
        b.set("p", "b", true, S);
        assert_eq!(b.take_changes(), vec![k.clone()]);
        assert_eq!(b.merge(&k, &ra, 2 * S), Ok(true));
        assert!(b.is_drained("p", "b"), "the cold drain is kept");
        assert_eq!(b.take_changes(), vec![k.clone()], "and replicated again");
        assert!(
            b.take_remote().is_empty(),
            "nothing to apply: the value didn't change"
        );
        let rb = b.record(&k, 2 * S).unwrap_or_default();
        assert_eq!(a.merge(&k, &rb, 5 * S), Ok(true));
        assert!(a.is_drained("p", "b"));
        assert_eq!(a.digest(), b.digest());
        // Warm, the normal order applies again: a's newer undrain wins on b.
        b.set_cold(false);
        a.set("p", "b", false, 6 * S);
        let ra = a.record(&k, 6 * S).unwrap_or_default();
        assert_eq!(b.merge(&k, &ra, 3 * S), Ok(true));
        assert!(!b.is_drained("p", "b"));
        assert_eq!(a.digest(), b.digest());
    }

    #[test]
    fn equal_times_tie_break_on_node_id() {
        let k = key("p", "b");
        let mut a = AdminTable::new("a", 10);
        let mut b = AdminTable::new("b", 10);
        a.set("p", "b", true, 5 * S);
        b.set("p", "b", false, 5 * S);
        let ra = a.record(&k, 5 * S).unwrap_or_default();
        let rb = b.record(&k, 5 * S).unwrap_or_default();
        assert_eq!(a.merge(&k, &rb, 5 * S), Ok(true));
        assert_eq!(b.merge(&k, &ra, 5 * S), Ok(false));
        assert!(!a.is_drained("p", "b") && !b.is_drained("p", "b"));
    }

    #[test]
    fn malformed_rejected() {
        let k = key("p", "b");
        let mut a = AdminTable::new("a", 10);
        a.set("p", "b", true, S);
        let good = a.record(&k, S).unwrap_or_default();
        let mut b = AdminTable::new("b", 10);
        for n in 0..good.len() {
            assert!(b.merge(&k, &good[..n], S).is_err(), "prefix {n}");
        }
        let mut flag = good.clone();
        flag[1] = 2;
        assert!(b.merge(&k, &flag, S).is_err());
        assert!(b.merge(&[0, 1, 0xff], &good, S).is_err(), "non-UTF-8 key");
        assert_eq!(b.len(), 0);
    }
}
