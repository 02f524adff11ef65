use proptest::prelude::*;

use super::*;

fn keys(evicted: Vec<(Box<[u8]>, u32)>) -> Vec<Vec<u8>> {
    evicted.into_iter().map(|(k, _)| k.into_vec()).collect()
}

#[test]
fn bound_holds_under_ten_times_max_inserts() {
    let mut m = LruMap::new(100);
    let mut evicted = 0;
    for i in 0u32..1000 {
        evicted += m.insert(&i.to_be_bytes(), i).len();
        assert!(m.len() <= 100);
    }
    assert_eq!(m.len(), 100);
    assert_eq!(evicted, 900);
    assert_eq!(m.evictions(), 900);
    // The survivors are the 100 most recent, and iteration sees each exactly once.
    let mut seen: Vec<u32> = m.iter().map(|(_, v)| *v).collect();
    seen.sort_unstable();
    assert_eq!(seen, (900..1000).collect::<Vec<_>>());
    assert_eq!(m.capacity(), 100);
}

#[test]
fn a_used_entry_outlives_one_shot_keys() {
    let mut m = LruMap::new(3);
    m.insert(b"a", 1);
    m.insert(b"b", 2);
    m.insert(b"c", 3);
    assert_eq!(m.get_mut(b"a"), Some(&mut 1));
    assert!(m.is_protected(b"a"));
    assert_eq!(keys(m.insert(b"d", 4)), vec![b"b".to_vec()]);
    // However many new keys follow, "a" stays; the one-shot keys replace each other.
    for i in 0u32..100 {
        assert_eq!(m.insert(&i.to_be_bytes(), i).len(), 1);
    }
    assert_eq!(m.peek(b"a"), Some(&1));
    assert_eq!(m.len(), 3);
}

#[test]
fn protected_overflow_is_demoted_not_dropped() {
    // 4 entries: protected holds at most 3.
    let mut m = LruMap::new(4);
    for k in [b"a", b"b", b"c", b"d"] {
        m.insert(k, 0);
        m.get_mut(k);
    }
    assert_eq!(m.protected_len(), 3);
    assert_eq!(m.len(), 4);
    assert!(!m.is_protected(b"a"), "least recently used, demoted");
    // The demoted entry is the first to go when a new key needs room.
    assert_eq!(keys(m.insert(b"e", 0)), vec![b"a".to_vec()]);
}

#[test]
fn byte_bound_counts_keys_twice_plus_overhead() {
    let cost = entry_cost(100);
    assert_eq!(cost, 200 + ENTRY_OVERHEAD);
    let mut m = LruMap::with_bounds(Bounds {
        max_entries: 1000,
        max_bytes: 10 * cost,
    });
    for i in 0u8..50 {
        m.insert(&[i; 100], u32::from(i));
        assert!(m.bytes() <= 10 * cost);
    }
    assert_eq!(m.len(), 10);
    assert_eq!(m.bytes(), 10 * cost);
    // One entry larger than the whole bound is refused, the others stay.
    let huge = vec![7u8; 10 * cost];
    assert_eq!(keys(m.insert(&huge, 0)), vec![huge.clone()]);
    assert_eq!(m.len(), 10);
    assert_eq!(
        m.max_entry_cost(),
        10 * cost / 4,
        "a quarter stays open to new keys"
    );
}

#[test]
fn replacing_a_value_is_a_use_and_costs_nothing_more() {
    let mut m = LruMap::new(2);
    m.insert(b"a", 1);
    let before = m.bytes();
    assert!(m.insert(b"a", 2).is_empty());
    assert_eq!(m.bytes(), before);
    assert!(m.is_protected(b"a"));
    assert_eq!(m.peek(b"a"), Some(&2));
}

#[test]
fn established_inserts_enter_protected() {
    let mut m = LruMap::new(4);
    m.insert_established(b"a", 1);
    assert!(m.is_protected(b"a"));
    m.insert(b"b", 2);
    assert!(!m.is_protected(b"b"));
}

#[test]
fn remove_pop_dead_and_reuse_slots() {
    let mut m = LruMap::new(2);
    m.insert(b"a", 1);
    m.insert(b"b", 2);
    assert_eq!(m.remove(b"a"), Some(1));
    assert_eq!(m.remove(b"a"), None);
    assert!(m.insert(b"c", 3).is_empty());
    assert_eq!(m.len(), 2);
    assert!(m.pop_dead(|v| *v == 3).is_none(), "c is not at a tail");
    let popped = m.pop_dead(|_| true).map(|(k, v)| (k.to_vec(), v));
    assert_eq!(popped, Some((b"b".to_vec(), 2)));
    assert!(m.pop_dead(|_| true).is_some());
    assert!(m.pop_dead(|_| true).is_none());
    assert!(m.iter().next().is_none());
    assert_eq!(m.bytes(), 0);
    assert_eq!(m.evictions(), 0, "removals are not evictions");
}

#[test]
fn zero_capacity_holds_nothing() {
    let mut m = LruMap::new(0);
    assert_eq!(m.insert(b"a", 1).len(), 1);
    assert_eq!(m.len(), 0);
}

#[derive(Debug, Clone)]
enum Op {
    Insert(Vec<u8>),
    Established(Vec<u8>),
    Get(Vec<u8>),
    Remove(Vec<u8>),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few short keys (so they repeat) and some long ones (so the byte bound bites).
    prop_oneof![
        3 => (0u8..12).prop_map(|b| vec![b]),
        1 => (0u8..4, 1usize..400).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => key().prop_map(Op::Insert),
        1 => key().prop_map(Op::Established),
        3 => key().prop_map(Op::Get),
        1 => key().prop_map(Op::Remove),
    ]
}

/// Recomputed from scratch: what the incremental counters must equal.
fn recount(m: &LruMap<u32>) -> (usize, usize) {
    let n = m.iter().count();
    let bytes = m.iter().map(|(k, _)| entry_cost(k.len())).sum();
    (n, bytes)
}

proptest! {
    #[test]
    fn bounds_always_hold(
        ops in proptest::collection::vec(op(), 0..200),
        max_entries in 0usize..12,
        max_bytes in 0usize..3000,
    ) {
        let mut m = LruMap::with_bounds(Bounds { max_entries, max_bytes });
        for op in ops {
            match op {
                Op::Insert(k) => { m.insert(&k, 0); }
                Op::Established(k) => { m.insert_established(&k, 0); }
                Op::Get(k) => { m.get_mut(&k); }
                Op::Remove(k) => { m.remove(&k); }
            }
            prop_assert!(m.len() <= max_entries);
            prop_assert!(m.bytes() <= max_bytes);
            prop_assert_eq!(recount(&m), (m.len(), m.bytes()));
            prop_assert!(m.protected_len() <= m.protected_bounds.max_entries);
            prop_assert!(m.lists[1].bytes <= m.protected_bounds.max_bytes);
        }
    }

    #[test]
    fn protected_entries_survive_any_flood_of_new_one_shot_keys(
        setup in proptest::collection::vec(op(), 0..60),
        flood in proptest::collection::vec(1usize..200, 1..300),
        max_entries in 1usize..40,
        max_bytes in 1000usize..20_000,
    ) {
        let mut m = LruMap::with_bounds(Bounds { max_entries, max_bytes });
        for op in setup {
            match op {
                Op::Insert(k) => { m.insert(&k, 0); }
                Op::Established(k) => { m.insert_established(&k, 0); }
                Op::Get(k) => { m.get_mut(&k); }
                Op::Remove(k) => { m.remove(&k); }
            }
        }
        let protected: Vec<Vec<u8>> =
            m.iter().take(m.protected_len()).map(|(k, _)| k.to_vec()).collect();
        // New keys (a distinct prefix never used in setup), each inserted once, of any
        // length up to what probation can always make room for.
        for (i, len) in flood.into_iter().enumerate() {
            let mut k = vec![0xEE; len.min(m.max_entry_cost().saturating_sub(ENTRY_OVERHEAD) / 2)];
            k.extend_from_slice(&(i as u32).to_be_bytes());
            if entry_cost(k.len()) > m.max_entry_cost() {
                continue;
            }
            m.insert(&k, 1);
            prop_assert!(m.len() <= max_entries && m.bytes() <= max_bytes);
        }
        for k in &protected {
            prop_assert!(m.is_protected(k), "lost {:?}", k);
        }
    }
}
