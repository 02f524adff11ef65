//! The sender's dirty set: which keys the peer has not acknowledged yet, one entry per key.
//!
//! Each local change gets the next per-boot sequence number; a key changed again replaces its
//! pending entry (the value is read from the store at send time, so the peer always gets the
//! latest one), which bounds the set by the store's distinct keys however long the peer is
//! away. Entries are sent in sequence order and dropped when a cumulative ACK covers them;
//! keys that left the store meanwhile are pruned in passes whose cost is amortised over the
//! changes that grew the set. See `replicator` for why cumulative ACKs are sound with the gaps
//! coalescing leaves in the sequence.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{RecordKey, ReplicaStore};

/// The dirty-set size under which no pruning pass runs.
pub const MIN_PRUNE_AT: usize = 1024;

#[derive(Debug)]
pub(crate) struct DirtyEntry {
    pub(crate) key: RecordKey,
    /// When this change was noted (for the lag).
    pub(crate) since: Duration,
}

#[derive(Debug)]
pub(crate) struct DirtySet {
    next_seq: u64,
    by_key: HashMap<RecordKey, u64>,
    by_seq: BTreeMap<u64, DirtyEntry>,
    /// Entries with seq ≤ this were sent on the current connection (or acked).
    sent_upto: u64,
    /// The highest seq ever sent (what an ACK may cover).
    max_seq_sent: u64,
    acked: u64,
    /// Set size that triggers the next pruning pass.
    prune_at: usize,
}

impl DirtySet {
    pub(crate) fn new() -> DirtySet {
        DirtySet {
            next_seq: 1,
            by_key: HashMap::new(),
            by_seq: BTreeMap::new(),
            sent_upto: 0,
            max_seq_sent: 0,
            acked: 0,
            prune_at: MIN_PRUNE_AT,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    pub(crate) fn max_seq_sent(&self) -> u64 {
        self.max_seq_sent
    }

    /// `key` changed at `now`: it gets a new seq, replacing its pending entry if any. Prunes
    /// keys the store no longer holds once the set has doubled since the last pass.
    pub(crate) fn note(&mut self, key: RecordKey, now: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(old) = self.by_key.insert(key.clone(), seq) {
            self.by_seq.remove(&old);
        }
        self.by_seq.insert(seq, DirtyEntry { key, since: now });
    }

    /// Run a pruning pass if the set has grown enough since the last one. Without it, keys that
    /// come and go while the peer is away (a flood of distinct client IPs through an LRU rate
    /// limiter) would grow the set past the store's own bound; running it when the set has
    /// doubled keeps the cost amortised O(1) per change and the set within about twice the
    /// store's live keys (plus [`MIN_PRUNE_AT`]).
    pub(crate) fn maybe_prune(&mut self, store: &impl ReplicaStore, now: Duration) {
        if self.by_key.len() <= self.prune_at {
            return;
        }
        let gone: Vec<u64> = self
            .by_seq
            .iter()
            .filter(|(_, e)| store.record(&e.key, now).is_none())
            .map(|(&s, _)| s)
            .collect();
        self.remove(&gone);
        self.prune_at = (2 * self.by_key.len()).max(MIN_PRUNE_AT);
    }

    /// Drop the entries with these seqs.
    pub(crate) fn remove(&mut self, seqs: &[u64]) {
        for seq in seqs {
            if let Some(e) = self.by_seq.remove(seq) {
                self.by_key.remove(&e.key);
            }
        }
    }

    /// A cumulative ACK of `seq`: every entry up to it arrived.
    pub(crate) fn ack(&mut self, seq: u64) {
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        let keep = self.by_seq.split_off(&seq.saturating_add(1));
        for (s, e) in std::mem::replace(&mut self.by_seq, keep) {
            // Only remove the key if this is still its pending seq (it always is: a newer
            // change replaced the old seq in both maps).
            if self.by_key.get(&e.key) == Some(&s) {
                self.by_key.remove(&e.key);
            }
        }
    }

    /// The peer resumes holding everything up to `seq`: drop that, resend the rest.
    pub(crate) fn resume_from(&mut self, seq: u64) {
        self.ack(seq);
        self.sent_upto = seq;
    }

    /// A full resync covers every pending change (it reads every key the store holds, at
    /// send time), so nothing stays pending; changes from here on are dirty again.
    pub(crate) fn clear_for_resync(&mut self) {
        self.by_key.clear();
        self.by_seq.clear();
        self.prune_at = MIN_PRUNE_AT;
        self.sent_upto = self.acked;
    }

    /// Whether an entry waits to be sent on the current connection.
    pub(crate) fn has_unsent(&self) -> bool {
        self.unsent().next().is_some()
    }

    /// Entries not yet sent on the current connection, in seq order.
    pub(crate) fn unsent(&self) -> impl Iterator<Item = (u64, &DirtyEntry)> {
        self.by_seq
            .range(self.sent_upto.saturating_add(1)..)
            .map(|(&s, e)| (s, e))
    }

    /// Everything up to `seq` went out on the current connection.
    pub(crate) fn mark_sent(&mut self, seq: u64) {
        self.sent_upto = self.sent_upto.max(seq);
    }

    /// `seq` was written to the peer (so an ACK up to it is valid).
    pub(crate) fn record_sent(&mut self, seq: u64) {
        self.max_seq_sent = self.max_seq_sent.max(seq);
    }

    /// Age of the oldest unacknowledged change.
    pub(crate) fn lag(&self, now: Duration) -> Option<Duration> {
        self.by_seq
            .values()
            .next()
            .map(|e| now.saturating_sub(e.since))
    }
}
