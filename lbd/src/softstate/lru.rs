//! A map from byte-string keys to values, bounded in entries and in (estimated) bytes, with
//! segmented-LRU eviction so that a flood of new keys cannot push out established ones.
//!
//! ## Segments (2Q / SLRU admission)
//! Every entry sits in one of two LRU lists:
//! - **probation**: where a new key enters ([`LruMap::insert`]);
//! - **protected**: where an entry moves when it is used again ([`LruMap::get_mut`], or an
//!   insert replacing an existing key's value), or enters directly when the caller knows it
//!   is established ([`LruMap::insert_established`]: a replicated record that was written
//!   more than once).
//!
//! The protected segment may hold at most [`PROTECTED_SHARE_PERCENT`] of the entry and byte
//! bounds; when a promotion overflows it, its least recently used entries are demoted to the
//! front of probation (not dropped). Probation has no cap of its own: while the table is not
//! full it may hold everything. Eviction, needed only when an insert would break a bound,
//! takes the least recently used *probation* entry first and touches protected entries only
//! when probation is empty. Since protected is capped below the bounds, that never happens
//! for an entry of at most the remaining share ([`LruMap::max_entry_cost`]), so a stream of
//! one-shot keys of any length only ever evicts other one-shot keys. An entry costing more
//! than the whole byte bound is refused (handed back as evicted).
//!
//! ## Bytes
//! An entry's cost is [`entry_cost`]: twice its key (the key is held by the index and by the
//! node) plus [`ENTRY_OVERHEAD`], a fixed estimate of the node, index slot and value
//! (values here are small and fixed-size apart from a backend address). The byte bound is on
//! this estimate, not a measurement of the allocator.
//!
//! ## Layout
//! A slab of nodes (`Vec<Option<Node>>` plus a free list) threaded on two intrusive
//! doubly-linked lists by slot index (head = most recent, tail = least recent), and a
//! `HashMap<Box<[u8]>, usize>` from key to slot. Lookups take a borrowed `&[u8]`, so the hit
//! path allocates nothing; only inserting a new key allocates (the key, twice: map and node,
//! which keeps eviction O(1) without unsafe aliasing).

use std::collections::HashMap;

const NIL: usize = usize::MAX;

/// Per-entry bytes counted on top of the key: node links and segment (~40), the index's slot
/// and two boxed-key headers (~48), a value of up to ~40 bytes plus a short heap string.
pub const ENTRY_OVERHEAD: usize = 128;
/// Share of each bound the protected segment may fill; the rest is always available to
/// probation, i.e. to new keys.
pub const PROTECTED_SHARE_PERCENT: usize = 75;

/// The estimated bytes an entry with a key of `key_len` bytes costs.
pub(crate) fn entry_cost(key_len: usize) -> usize {
    key_len.saturating_mul(2).saturating_add(ENTRY_OVERHEAD)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Probation = 0,
    Protected = 1,
}

struct Node<V> {
    key: Box<[u8]>,
    value: V,
    prev: usize,
    next: usize,
    segment: Segment,
}

#[derive(Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
    len: usize,
    bytes: usize,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
    bytes: 0,
};

/// The two bounds of a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: usize,
}

impl Bounds {
    /// Bounded in entries only.
    pub(crate) fn entries(max_entries: usize) -> Bounds {
        Bounds {
            max_entries,
            max_bytes: usize::MAX,
        }
    }

    fn protected(self) -> Bounds {
        let share = |n: usize| {
            if n == usize::MAX {
                n
            } else {
                n / 100 * PROTECTED_SHARE_PERCENT + n % 100 * PROTECTED_SHARE_PERCENT / 100
            }
        };
        Bounds {
            // At least one entry always stays available to probation.
            max_entries: share(self.max_entries).min(self.max_entries.saturating_sub(1)),
            max_bytes: share(self.max_bytes),
        }
    }
}

pub(crate) struct LruMap<V> {
    map: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Node<V>>>,
    free: Vec<usize>,
    lists: [List; 2],
    bounds: Bounds,
    protected_bounds: Bounds,
    /// Entries removed to respect the bounds (not expiries or explicit removals).
    evictions: u64,
}

impl<V> LruMap<V> {
    /// A map that never holds more than `cap` entries (`cap == 0` holds nothing).
    pub(crate) fn new(cap: usize) -> LruMap<V> {
        LruMap::with_bounds(Bounds::entries(cap))
    }

    pub(crate) fn with_bounds(bounds: Bounds) -> LruMap<V> {
        LruMap {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            lists: [EMPTY; 2],
            bounds,
            protected_bounds: bounds.protected(),
            evictions: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Estimated bytes held (see the module docs).
    pub(crate) fn bytes(&self) -> usize {
        self.lists[0].bytes + self.lists[1].bytes
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.bounds.max_entries
    }

    /// The largest entry cost that can be inserted without evicting a protected entry.
    #[cfg(test)]
    pub(crate) fn max_entry_cost(&self) -> usize {
        self.bounds.max_bytes - self.protected_bounds.max_bytes
    }

    #[cfg(test)]
    fn protected_len(&self) -> usize {
        self.lists[Segment::Protected as usize].len
    }

    /// Whether `key` is in the protected segment.
    #[cfg(test)]
    pub(crate) fn is_protected(&self, key: &[u8]) -> bool {
        self.map
            .get(key)
            .and_then(|&s| self.node(s))
            .is_some_and(|n| n.segment == Segment::Protected)
    }

    fn node(&self, slot: usize) -> Option<&Node<V>> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, slot: usize) -> Option<&mut Node<V>> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next, seg, cost) = match self.node(slot) {
            Some(n) => (n.prev, n.next, n.segment, entry_cost(n.key.len())),
            None => return,
        };
        let list = seg as usize;
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.lists[list].head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.lists[list].tail = prev,
        }
        self.lists[list].len -= 1;
        self.lists[list].bytes -= cost;
    }

    fn push_front(&mut self, slot: usize, seg: Segment) {
        let list = seg as usize;
        let old_head = self.lists[list].head;
        let Some(n) = self.node_mut(slot) else { return };
        n.prev = NIL;
        n.next = old_head;
        n.segment = seg;
        let cost = entry_cost(n.key.len());
        match self.node_mut(old_head) {
            Some(h) => h.prev = slot,
            None => self.lists[list].tail = slot,
        }
        let l = &mut self.lists[list];
        l.head = slot;
        l.len += 1;
        l.bytes += cost;
    }

    /// A use: move to the front of the protected segment, demoting its overflow.
    fn promote(&mut self, slot: usize) {
        let protected = Segment::Protected as usize;
        if self.lists[protected].head == slot {
            return;
        }
        self.unlink(slot);
        self.push_front(slot, Segment::Protected);
        self.demote_overflow();
    }

    fn demote_overflow(&mut self) {
        let cap = self.protected_bounds;
        loop {
            let l = self.lists[Segment::Protected as usize];
            if l.len == 0 || (l.len <= cap.max_entries && l.bytes <= cap.max_bytes) {
                return;
            }
            self.unlink(l.tail);
            self.push_front(l.tail, Segment::Probation);
        }
    }

    /// The value for `key`, without changing its recency.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<&V> {
        let slot = *self.map.get(key)?;
        self.node(slot).map(|n| &n.value)
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// The value for `key`, counted as a use: the entry moves to the front of the protected
    /// segment.
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let slot = *self.map.get(key)?;
        self.promote(slot);
        self.node_mut(slot).map(|n| &mut n.value)
    }

    /// Insert `key` (a new key enters probation) or replace its value (a use: promoted).
    /// Returns the entries evicted to respect the bounds: probation's least recently used
    /// first; the key itself if it alone exceeds a bound.
    pub(crate) fn insert(&mut self, key: &[u8], value: V) -> Vec<(Box<[u8]>, V)> {
        self.insert_in(key, value, Segment::Probation)
    }

    /// Like [`LruMap::insert`], but a new key enters the protected segment directly (the
    /// caller knows it was used more than once, e.g. a peer's record of a re-written entry).
    pub(crate) fn insert_established(&mut self, key: &[u8], value: V) -> Vec<(Box<[u8]>, V)> {
        self.insert_in(key, value, Segment::Protected)
    }

    fn insert_in(&mut self, key: &[u8], value: V, seg: Segment) -> Vec<(Box<[u8]>, V)> {
        if let Some(&slot) = self.map.get(key) {
            self.promote(slot);
            if let Some(n) = self.node_mut(slot) {
                n.value = value;
            }
            return Vec::new();
        }
        let cost = entry_cost(key.len());
        if self.bounds.max_entries == 0 || cost > self.bounds.max_bytes {
            self.evictions += 1;
            return vec![(key.into(), value)];
        }
        let mut evicted = Vec::new();
        while self.len() >= self.bounds.max_entries || self.bytes() > self.bounds.max_bytes - cost {
            match self.pop_victim() {
                Some(e) => evicted.push(e),
                None => break,
            }
        }
        self.evictions += evicted.len() as u64;
        let node = Node {
            key: key.into(),
            value,
            prev: NIL,
            next: NIL,
            segment: seg,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s] = Some(node);
                s
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        self.map.insert(key.into(), slot);
        self.push_front(slot, seg);
        self.demote_overflow();
        evicted
    }

    /// The eviction victim: probation's least recently used entry, else protected's.
    fn pop_victim(&mut self) -> Option<(Box<[u8]>, V)> {
        let probation = self.lists[Segment::Probation as usize].tail;
        let slot = if probation != NIL {
            probation
        } else {
            self.lists[Segment::Protected as usize].tail
        };
        self.take(slot)
    }

    fn take(&mut self, slot: usize) -> Option<(Box<[u8]>, V)> {
        let key = self.node(slot)?.key.clone();
        self.map.remove(&key[..]);
        self.unlink(slot);
        self.free.push(slot);
        self.slots
            .get_mut(slot)
            .and_then(Option::take)
            .map(|n| (n.key, n.value))
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let slot = *self.map.get(key)?;
        self.take(slot).map(|(_, v)| v)
    }

    /// Remove and return one least recently used entry (of either segment's tail) for which
    /// `dead` holds, e.g. an expired one; `None` when neither tail is dead. Sweeping calls
    /// this until `None`, so dead entries at either end go without waiting for eviction.
    pub(crate) fn pop_dead(&mut self, dead: impl Fn(&V) -> bool) -> Option<(Box<[u8]>, V)> {
        let slot = self
            .lists
            .iter()
            .map(|l| l.tail)
            .find(|&t| self.node(t).is_some_and(|n| dead(&n.value)))?;
        self.take(slot)
    }

    /// Every entry: protected most recent first, then probation most recent first.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        Iter {
            map: self,
            at: self.lists[Segment::Protected as usize].head,
            segment: Segment::Protected,
        }
    }
}

pub(crate) struct Iter<'a, V> {
    map: &'a LruMap<V>,
    at: usize,
    segment: Segment,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a [u8], &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == NIL && self.segment == Segment::Protected {
            self.segment = Segment::Probation;
            self.at = self.map.lists[Segment::Probation as usize].head;
        }
        let n = self.map.node(self.at)?;
        self.at = n.next;
        Some((&n.key[..], &n.value))
    }
}

#[cfg(test)]
mod tests;
