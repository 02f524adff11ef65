//! A bounded map from byte-string keys to values with least-recently-used eviction.
//!
//! Layout: a slab of nodes (`Vec<Option<Node>>` plus a free list) threaded on an intrusive
//! doubly-linked list by slot index (head = most recent, tail = least recent), and a
//! `HashMap<Box<[u8]>, usize>` from key to slot. Lookups take a borrowed `&[u8]`, so the hit
//! path allocates nothing; only inserting a new key allocates (the key, twice: map and node,
//! which keeps eviction O(1) without unsafe aliasing).

use std::collections::HashMap;

const NIL: usize = usize::MAX;

struct Node<V> {
    key: Box<[u8]>,
    value: V,
    prev: usize,
    next: usize,
}

pub(crate) struct LruMap<V> {
    map: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Node<V>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    cap: usize,
}

impl<V> LruMap<V> {
    /// A map that never holds more than `cap` entries (`cap == 0` holds nothing).
    pub(crate) fn new(cap: usize) -> LruMap<V> {
        LruMap {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    fn node(&self, slot: usize) -> Option<&Node<V>> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, slot: usize) -> Option<&mut Node<V>> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next) = match self.node(slot) {
            Some(n) => (n.prev, n.next),
            None => return,
        };
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, slot: usize) {
        let old_head = self.head;
        if let Some(n) = self.node_mut(slot) {
            n.prev = NIL;
            n.next = old_head;
        }
        match self.node_mut(old_head) {
            Some(h) => h.prev = slot,
            None => self.tail = slot,
        }
        self.head = slot;
    }

    fn touch(&mut self, slot: usize) {
        if self.head != slot {
            self.unlink(slot);
            self.push_front(slot);
        }
    }

    /// The value for `key`, without changing its recency.
    pub(crate) fn peek(&self, key: &[u8]) -> Option<&V> {
        let slot = *self.map.get(key)?;
        self.node(slot).map(|n| &n.value)
    }

    /// The value for `key`, marked most recently used.
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let slot = *self.map.get(key)?;
        self.touch(slot);
        self.node_mut(slot).map(|n| &mut n.value)
    }

    /// Insert or replace `key` as the most recently used entry. Returns the entry evicted to
    /// make room, if any (never the key just inserted unless `cap == 0`).
    pub(crate) fn insert(&mut self, key: &[u8], value: V) -> Option<(Box<[u8]>, V)> {
        if let Some(&slot) = self.map.get(key) {
            self.touch(slot);
            if let Some(n) = self.node_mut(slot) {
                n.value = value;
            }
            return None;
        }
        if self.cap == 0 {
            return Some((key.into(), value));
        }
        let evicted = if self.map.len() >= self.cap {
            self.pop_lru()
        } else {
            None
        };
        let node = Node {
            key: key.into(),
            value,
            prev: NIL,
            next: NIL,
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
        self.push_front(slot);
        evicted
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.unlink(slot);
        self.free.push(slot);
        self.slots
            .get_mut(slot)
            .and_then(Option::take)
            .map(|n| n.value)
    }

    /// The least recently used entry, without changing anything.
    pub(crate) fn peek_lru(&self) -> Option<(&[u8], &V)> {
        self.node(self.tail).map(|n| (&n.key[..], &n.value))
    }

    pub(crate) fn pop_lru(&mut self) -> Option<(Box<[u8]>, V)> {
        let slot = self.tail;
        let key = self.node(slot)?.key.clone();
        self.map.remove(&key[..]);
        self.unlink(slot);
        self.free.push(slot);
        self.slots
            .get_mut(slot)
            .and_then(Option::take)
            .map(|n| (n.key, n.value))
    }

    /// Every entry, most recently used first.
    pub(crate) fn iter(&self) -> Iter<'_, V> {
        Iter {
            map: self,
            at: self.head,
        }
    }
}

pub(crate) struct Iter<'a, V> {
    map: &'a LruMap<V>,
    at: usize,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (&'a [u8], &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.map.node(self.at)?;
        self.at = n.next;
        Some((&n.key[..], &n.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_holds_under_ten_times_max_inserts() {
        let mut m = LruMap::new(100);
        let mut evicted = 0;
        for i in 0u32..1000 {
            if m.insert(&i.to_be_bytes(), i).is_some() {
                evicted += 1;
            }
            assert!(m.len() <= 100);
        }
        assert_eq!(m.len(), 100);
        assert_eq!(evicted, 900);
        // The survivors are the 100 most recent, and iteration sees each exactly once.
        let mut seen: Vec<u32> = m.iter().map(|(_, v)| *v).collect();
        seen.sort_unstable();
        assert_eq!(seen, (900..1000).collect::<Vec<_>>());
        assert_eq!(m.capacity(), 100);
    }

    #[test]
    fn get_refreshes_recency() {
        let mut m = LruMap::new(3);
        m.insert(b"a", 1);
        m.insert(b"b", 2);
        m.insert(b"c", 3);
        assert_eq!(m.get_mut(b"a"), Some(&mut 1));
        let ev = m.insert(b"d", 4).map(|(k, _)| k.to_vec());
        assert_eq!(ev, Some(b"b".to_vec()));
        assert_eq!(m.peek(b"a"), Some(&1));
        assert_eq!(m.peek(b"b"), None);
        assert_eq!(m.peek_lru().map(|(k, _)| k.to_vec()), Some(b"c".to_vec()));
    }

    #[test]
    fn remove_and_reuse_slots() {
        let mut m = LruMap::new(2);
        m.insert(b"a", 1);
        m.insert(b"b", 2);
        assert_eq!(m.remove(b"a"), Some(1));
        assert_eq!(m.remove(b"a"), None);
        assert!(m.insert(b"c", 3).is_none());
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.pop_lru().map(|(k, v)| (k.to_vec(), v)),
            Some((b"b".to_vec(), 2))
        );
        assert_eq!(
            m.pop_lru().map(|(k, v)| (k.to_vec(), v)),
            Some((b"c".to_vec(), 3))
        );
        assert!(m.pop_lru().is_none());
        assert!(m.iter().next().is_none());
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let mut m = LruMap::new(0);
        assert!(m.insert(b"a", 1).is_some());
        assert_eq!(m.len(), 0);
    }
}
