//! `global.max_conns_per_client`: how many connections one client IP (the TCP peer) may hold
//! open at once.
//!
//! Why: `max_client_conns` bounds the process, but one address could take all of it and lock
//! every other client out. The cap is per address of the *direct* peer, so it stays far above
//! what one user opens (NAT and carrier-grade NAT put many users behind one address); 0 turns
//! it off.
//!
//! The counts live in a map split into [`SHARDS`] independently locked shards keyed by the
//! address' hash, so two workers accepting at once rarely meet on a lock, and each lock is
//! held for one hash-map update. A [`ClientSlot`] holds one count and gives it back when it
//! drops: however the connection task ends (closed, failed, cancelled at shutdown), the count
//! is released. An address with no open connection has no entry.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Independently locked parts of the map (a power of two).
const SHARDS: usize = 32;

/// Open connections per client address.
pub struct ClientConns {
    shards: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    /// Picks the shard; random per process, so a client cannot aim at one shard.
    hasher: RandomState,
}

impl Default for ClientConns {
    fn default() -> Self {
        ClientConns {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// The address was already at the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtCap;

/// One connection counted against its address; dropping it releases the count.
pub struct ClientSlot {
    /// `None` when the cap is off (nothing was counted).
    counted: Option<(Arc<ClientConns>, IpAddr)>,
}

impl ClientConns {
    /// Count a new connection from `ip`, unless `cap` connections from it are already open.
    /// `cap == 0`: no cap, nothing counted.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr, cap: u32) -> Result<ClientSlot, AtCap> {
        if cap == 0 {
            return Ok(ClientSlot { counted: None });
        }
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: the same client.
        let ip = ip.to_canonical();
        let mut shard = self.shard(ip);
        let open = shard.entry(ip).or_insert(0);
        if *open >= cap {
            return Err(AtCap);
        }
        *open += 1;
        Ok(ClientSlot {
            counted: Some((Arc::clone(self), ip)),
        })
    }

    /// Open connections from `ip` (tests, diagnostics).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let ip = ip.to_canonical();
        self.shard(ip).get(&ip).copied().unwrap_or(0)
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = self.hasher.hash_one(ip) as usize & (SHARDS - 1);
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, ip: IpAddr) {
        let mut shard = self.shard(ip);
        if let Some(open) = shard.get_mut(&ip) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&ip);
            }
        }
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((conns, ip)) = self.counted.take() {
            conns.release(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_cap_counts_per_address_and_slots_give_it_back() {
        let conns = Arc::new(ClientConns::default());
        let a = ip("192.0.2.1");
        let mut slots: Vec<ClientSlot> = (0..3)
            .map(|_| conns.try_acquire(a, 3).expect("under the cap"))
            .collect();
        assert_eq!(conns.try_acquire(a, 3).err(), Some(AtCap));
        // Another address is not affected, and the mapped form of `a` is `a`.
        let other = conns
            .try_acquire(ip("192.0.2.2"), 3)
            .expect("other address");
        assert_eq!(
            conns.try_acquire(ip("::ffff:192.0.2.1"), 3).err(),
            Some(AtCap)
        );
        drop(slots.pop());
        assert_eq!(conns.open(a), 2);
        let again = conns.try_acquire(a, 3).expect("a slot was released");
        drop(again);
        drop(other);
        assert_eq!(conns.open(ip("192.0.2.2")), 0);
        assert!(
            conns
                .shards
                .iter()
                .map(|s| s.lock().expect("lock").len())
                .sum::<usize>()
                == 1,
            "only a's entry is left"
        );
    }

    #[test]
    fn cap_zero_counts_nothing() {
        let conns = Arc::new(ClientConns::default());
        let slots: Vec<ClientSlot> = (0..10)
            .map(|_| conns.try_acquire(ip("2001:db8::1"), 0).expect("no cap"))
            .collect();
        assert_eq!(conns.open(ip("2001:db8::1")), 0);
        drop(slots);
    }

    #[test]
    fn every_slot_released_leaves_an_empty_map() {
        let conns = Arc::new(ClientConns::default());
        let mut slots = Vec::new();
        for i in 0..200u32 {
            let addr = IpAddr::from([10, 0, (i % 7) as u8, (i % 13) as u8]);
            if let Ok(s) = conns.try_acquire(addr, 2) {
                slots.push(s);
            }
        }
        drop(slots);
        assert!(conns
            .shards
            .iter()
            .all(|s| s.lock().expect("lock").is_empty()));
    }
}
