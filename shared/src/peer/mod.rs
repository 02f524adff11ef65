//! The peer link's wire format and sans-IO protocol: how two lbd nodes replicate
//! their soft state (sticky tables, rate-limit buckets, operator drains).
//!
//! Layout:
//! - this file: the seam every side agrees on: [`Table`], [`Record`], [`RecordKey`], [`Digest`]
//!   and the [`ReplicaStore`] trait that lbd's soft-state store implements.
//! - [`frame`]: the versioned, length-checked frame codec (HELLO MAC'd, every later frame
//!   encrypted with ChaCha20-Poly1305).
//! - [`auth`]: pre-shared-key key schedule, the AEAD and HELLO keys, frame counters and the
//!   HELLO replay guard.
//! - [`replicator`]: the sans-IO protocol (HELLO, full resync, ACK, RESUME, phases), driven by
//!   `handle_*(now)` / `poll_*()`; its config, errors and status types are in
//!   `replicator/types.rs`.
//! - `dirty`: the sender's coalescing dirty set (one pending entry per key, bounded).
//!
//! The frame codec treats a record's key and value as opaque bytes: each table's codec lives
//! beside the table in lbd (`lbd::softstate`), so adding a table never changes the frame format.
//! Times inside values travel as ages or remaining TTLs, never as wall-clock timestamps,
//! because the two nodes' clocks are not synchronised.

use std::time::Duration;

pub mod auth;
mod dirty;
pub mod frame;
pub mod replicator;

pub use auth::{AuthError, Role};
pub use frame::{Frame, FrameError};
pub use replicator::{Phase, ProtocolError, Replicator, ReplicatorConfig, ReplicatorStatus};

/// Which replicated table a record belongs to. The discriminant is the wire byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Table {
    /// Learn-mode sticky sessions: (pool, application cookie value) -> backend.
    Sticky = 1,
    /// Token buckets: (limiter, key) -> per-node consumption.
    RateLimit = 2,
    /// Operator state: (pool, backend) -> drained or not.
    Admin = 3,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Sticky, Table::RateLimit, Table::Admin];

    pub fn from_u8(b: u8) -> Option<Table> {
        match b {
            1 => Some(Table::Sticky),
            2 => Some(Table::RateLimit),
            3 => Some(Table::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Table::Sticky => "sticky",
            Table::RateLimit => "rate_limit",
            Table::Admin => "admin",
        }
    }
}

/// A key within one table, as opaque bytes (the table's codec defines them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub table: Table,
    pub key: Vec<u8>,
}

/// One replicated entry as it travels: the table's codec encodes the value, with every time
/// in it relative to the moment of encoding (an age or a remaining TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub table: Table,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Record {
    pub fn record_key(&self) -> RecordKey {
        RecordKey {
            table: self.table,
            key: self.key.clone(),
        }
    }
}

/// An order-independent digest of a store's replicated state, free of times, so two nodes
/// that hold the same entries report the same digest (compared after SYNC_DONE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest {
    /// Number of entries.
    pub count: u64,
    /// Combination of a 64-bit hash per entry (wrapping sum, so order does not matter).
    pub hash: u64,
}

/// Why a peer's record could not be merged (the record is dropped, nothing changes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("malformed {table} record: {reason}")]
    Malformed { table: &'static str, reason: String },
}

/// What the replicator needs from the node's soft-state store. `now` is the node's monotonic
/// clock (time since an arbitrary epoch), passed in so the protocol stays sans-IO.
pub trait ReplicaStore {
    /// The current value of `key`, encoded for the wire relative to `now`; `None` if the entry
    /// is gone (expired or evicted), in which case nothing is sent for it.
    fn record(&self, key: &RecordKey, now: Duration) -> Option<Record>;
    /// Merge a peer's record into local state (commutative, associative, idempotent).
    /// Returns whether local state changed.
    fn merge(&mut self, record: &Record, now: Duration) -> Result<bool, MergeError>;
    /// Every key currently held, for a full resync (any order).
    fn keys(&self) -> Vec<RecordKey>;
    /// The digest of the replicated state.
    fn digest(&self) -> Digest;
    /// Keys changed by local activity since the last call (coalesced: each at most once).
    /// Changes made by `merge` are not reported: the peer already has them.
    fn take_changes(&mut self) -> Vec<RecordKey>;
}
