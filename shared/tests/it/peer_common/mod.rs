//! Test helpers shared by the `peer_*` tests: an in-memory `ReplicaStore` and a harness
//! that wires two replicators back to back under simulated time.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use shared::peer::replicator::{ProtocolError, Replicator, ReplicatorConfig};
use shared::peer::{Digest, MergeError, Record, RecordKey, ReplicaStore, Role, Table};

pub const PSK: &[u8] = b"correct horse battery staple!!";

/// A map store whose merge keeps the larger value (commutative, associative, idempotent).
/// An empty value is "malformed" (so tests can provoke a MergeError).
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub map: BTreeMap<RecordKey, Vec<u8>>,
    changes: BTreeSet<RecordKey>,
    /// Every successful merge, with the time it happened (for pacing tests).
    pub merges: Vec<Duration>,
}

pub fn rk(table: Table, key: &str) -> RecordKey {
    RecordKey {
        table,
        key: key.as_bytes().to_vec(),
    }
}

impl MemStore {
    /// A local write: changes the value and reports the key as changed.
    pub fn set(&mut self, key: RecordKey, value: &[u8]) {
        self.map.insert(key.clone(), value.to_vec());
        self.changes.insert(key);
    }

    /// A local deletion (expiry): `record()` returns None for it afterwards.
    pub fn remove(&mut self, key: &RecordKey) {
        self.map.remove(key);
        self.changes.insert(key.clone());
    }

    pub fn get(&self, table: Table, key: &str) -> Option<&[u8]> {
        self.map.get(&rk(table, key)).map(Vec::as_slice)
    }

    pub fn with_keys(prefix: &str, n: usize) -> MemStore {
        let mut s = MemStore::default();
        for i in 0..n {
            s.map.insert(
                rk(Table::Sticky, &format!("{prefix}{i}")),
                format!("v{i}").into_bytes(),
            );
        }
        s
    }
}

impl ReplicaStore for MemStore {
    fn record(&self, key: &RecordKey, _now: Duration) -> Option<Record> {
        self.map.get(key).map(|v| Record {
            table: key.table,
            key: key.key.clone(),
            value: v.clone(),
        })
    }

    fn merge(&mut self, record: &Record, now: Duration) -> Result<bool, MergeError> {
        if record.value.is_empty() {
            return Err(MergeError::Malformed {
                table: record.table.as_str(),
                reason: "empty value".into(),
            });
        }
        self.merges.push(now);
        let slot = self.map.entry(record.record_key()).or_default();
        if record.value > *slot {
            *slot = record.value.clone();
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn keys(&self) -> Vec<RecordKey> {
        self.map.keys().cloned().collect()
    }

    fn digest(&self) -> Digest {
        let mut d = Digest::default();
        for (k, v) in &self.map {
            let mut h = DefaultHasher::new();
            (k, v).hash(&mut h);
            d.count += 1;
            d.hash = d.hash.wrapping_add(h.finish());
        }
        d
    }

    fn take_changes(&mut self) -> Vec<RecordKey> {
        std::mem::take(&mut self.changes).into_iter().collect()
    }
}

pub fn config(node: &str, peer: &str, boot_id: u64) -> ReplicatorConfig {
    let mut c = ReplicatorConfig::new("cluster-1", node, peer, PSK.to_vec(), boot_id);
    c.schema_hash = 0xabcd;
    c
}

pub struct Node {
    pub rep: Replicator,
    pub store: MemStore,
}

impl Node {
    pub fn new(cfg: ReplicatorConfig, store: MemStore) -> Node {
        Node {
            rep: Replicator::new(cfg).expect("valid config"),
            store,
        }
    }
}

/// Two nodes wired back to back: `a` dials, `b` accepts. Bytes move instantly unless a test
/// intercepts them; time only moves when the harness advances it.
pub struct Pair {
    pub a: Node,
    pub b: Node,
    pub now: Duration,
    nonce: u8,
    /// Deliver bytes in chunks of this size (exercises the streaming decoder).
    pub chunk: usize,
}

impl Pair {
    pub fn new(a: Node, b: Node) -> Pair {
        Pair {
            a,
            b,
            now: Duration::from_secs(1000),
            nonce: 0,
            chunk: usize::MAX,
        }
    }

    pub fn connect(&mut self) {
        self.nonce = self.nonce.wrapping_add(2);
        self.a.rep.connect(Role::Dialer, [self.nonce; 32], self.now);
        self.b
            .rep
            .connect(Role::Acceptor, [self.nonce.wrapping_add(1); 32], self.now);
    }

    pub fn disconnect(&mut self) {
        self.a.rep.disconnected(self.now);
        self.b.rep.disconnected(self.now);
    }

    /// Move every ready frame both ways until neither side has anything to send now.
    /// Panics on a protocol error (the tests that expect one do not use this).
    pub fn pump(&mut self) -> usize {
        let mut moved = 0;
        loop {
            let n = transfer(&mut self.a, &mut self.b, self.now, self.chunk).expect("a -> b")
                + transfer(&mut self.b, &mut self.a, self.now, self.chunk).expect("b -> a");
            if n == 0 {
                return moved;
            }
            moved += n;
        }
    }

    /// Pump and advance simulated time to the next timer, until `cond` holds or `limit`
    /// of simulated time has passed. Returns whether `cond` held.
    pub fn run_until(&mut self, limit: Duration, mut cond: impl FnMut(&Pair) -> bool) -> bool {
        let deadline = self.now + limit;
        loop {
            self.pump();
            if cond(self) {
                return true;
            }
            let next = [self.a.rep.poll_timeout(), self.b.rep.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(deadline);
            // At least 1 ms per step so a timer in the past cannot spin forever.
            self.now = next.max(self.now + Duration::from_millis(1));
            if self.now > deadline {
                return cond(self);
            }
            self.a.rep.handle_timeout(self.now).expect("a timeout");
            self.b.rep.handle_timeout(self.now).expect("b timeout");
        }
    }
}

/// Move everything `from` can send now into `to`. Returns bytes moved.
pub fn transfer(
    from: &mut Node,
    to: &mut Node,
    now: Duration,
    chunk: usize,
) -> Result<usize, ProtocolError> {
    from.rep.note_local_changes(&mut from.store, now);
    let mut n = 0;
    while let Some(bytes) = from.rep.poll_transmit(&from.store, now) {
        n += bytes.len();
        for c in bytes.chunks(chunk.max(1)) {
            to.rep.handle_bytes(c, &mut to.store, now)?;
        }
    }
    Ok(n)
}

/// Everything `from` would send now, without delivering it.
pub fn collect(from: &mut Node, now: Duration) -> Vec<Vec<u8>> {
    from.rep.note_local_changes(&mut from.store, now);
    std::iter::from_fn(|| from.rep.poll_transmit(&from.store, now)).collect()
}
