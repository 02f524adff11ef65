//! Per-listener drain state and in-flight request counts, read by the proxy on every request.
//!
//! A [`Gate`] exists for each listener that belongs to a VRRP instance. The proxy enters it
//! at the start of a request ([`Gates::enter`]) and leaves when the response body ends (the
//! [`GateGuard`] drops); while the gate is *draining* (the node is no longer master for the
//! listener's VIP) every HTTP/1 response gets `Connection: close`, so the connection closes
//! after it.
//!
//! Two waits, for the two halves of a planned switchover:
//! - [`Gates::wait_in_flight`], before the node resigns, waits only for the requests in
//!   flight when it began: requests are counted in one of two slots chosen by the gate's
//!   epoch parity, and starting the wait flips the epoch. Requests that arrive meanwhile (the
//!   node still holds the VIP and the MAC, so they keep coming) count in the other slot and
//!   don't extend it. It does *not* set draining: keep-alive stays on, because a client
//!   pushed onto a fresh connection now could have its handshake cut by the MAC move.
//! - [`Gates::wait_idle`], once the node is backup (the peer holds the VIP, new requests go
//!   there), waits for *every* request, old slot and new; vrrpd keeps the address until then.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

/// One listener's drain flag and request counters.
#[derive(Debug, Default)]
pub struct Gate {
    draining: AtomicBool,
    epoch: AtomicU64,
    in_flight: [AtomicU64; 2],
    /// Woken whenever a slot drops to zero.
    idle: Notify,
    /// Woken when drain mode starts.
    drain_started: Notify,
}

impl Gate {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
        if draining {
            self.drain_started.notify_waiters();
        }
    }

    /// Resolves once the gate is draining (at once if it already is). For a connection
    /// loop that wants to close idle keep-alive connections gracefully on a drain.
    pub async fn wait_draining(&self) {
        loop {
            let notified = self.drain_started.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// Requests in progress on this listener.
    pub fn in_flight(&self) -> u64 {
        self.in_flight[0].load(Ordering::Acquire) + self.in_flight[1].load(Ordering::Acquire)
    }

    /// Flip the epoch and return the slot holding the requests already in flight.
    fn close_epoch(&self) -> usize {
        let old = self.epoch.fetch_add(1, Ordering::AcqRel);
        (old % 2) as usize
    }

    /// Resolves once `slot` has no request left.
    async fn wait_slot_empty(&self, slot: usize) {
        self.wait_until(|| self.in_flight[slot].load(Ordering::Acquire) == 0)
            .await;
    }

    /// Resolves once no request at all is in flight. The last request to leave empties its
    /// slot, which notifies.
    async fn wait_no_request(&self) {
        self.wait_until(|| self.in_flight() == 0).await;
    }

    async fn wait_until(&self, done: impl Fn() -> bool) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a decrement in between is not missed.
            notified.as_mut().enable();
            if done() {
                return;
            }
            notified.await;
        }
    }
}

/// A request in progress on a gated listener; leaves the gate on drop.
#[derive(Debug)]
pub struct GateGuard {
    gate: Arc<Gate>,
    slot: usize,
}

impl GateGuard {
    /// Should this response close the connection (the listener is draining)?
    pub fn is_draining(&self) -> bool {
        self.gate.is_draining()
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        if self.gate.in_flight[self.slot].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gate.idle.notify_waiters();
        }
    }
}

/// The gates of every VRRP listener, by listener name. Read lock-free per request; written
/// only by the vrrp task when it first sees a listener.
#[derive(Debug, Default)]
pub struct Gates {
    map: ArcSwap<HashMap<Arc<str>, Arc<Gate>>>,
}

impl Gates {
    /// Enter the listener's gate, if it has one (standalone listeners have none).
    pub fn enter(&self, listener: &str) -> Option<GateGuard> {
        let map = self.map.load();
        let gate = map.get(listener)?;
        let slot = (gate.epoch.load(Ordering::Acquire) % 2) as usize;
        gate.in_flight[slot].fetch_add(1, Ordering::AcqRel);
        Some(GateGuard {
            gate: Arc::clone(gate),
            slot,
        })
    }

    /// Resolves when the listener's gate starts draining; never for a listener without a
    /// gate (standalone). Meant for the connection loop: `graceful_shutdown()` on it closes
    /// idle keep-alive connections of a draining VIP listener at once.
    pub async fn wait_draining(&self, listener: &str) {
        let gate = self.map.load().get(listener).cloned();
        match gate {
            Some(g) => g.wait_draining().await,
            None => std::future::pending().await,
        }
    }

    /// The listener's gate, created on first use.
    pub fn get(&self, listener: &str) -> Arc<Gate> {
        if let Some(g) = self.map.load().get(listener) {
            return Arc::clone(g);
        }
        let mut out = None;
        self.map.rcu(|m| {
            let mut m = HashMap::clone(m);
            let g = m
                .entry(Arc::from(listener))
                .or_insert_with(|| Arc::new(Gate::default()));
            out = Some(Arc::clone(g));
            m
        });
        out.unwrap_or_default()
    }

    /// A future that waits (at most `limit`) for the requests in flight on `gates` at this
    /// moment to finish, and resolves to whether they all did. The set of requests is fixed
    /// here, not when the future is first polled. Keep-alive is left on.
    pub fn wait_in_flight(
        gates: &[Arc<Gate>],
        limit: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let slots: Vec<(Arc<Gate>, usize)> = gates
            .iter()
            .map(|g| (Arc::clone(g), g.close_epoch()))
            .collect();
        async move {
            let wait = async {
                for (g, slot) in &slots {
                    g.wait_slot_empty(*slot).await;
                }
            };
            tokio::time::timeout(limit, wait).await.is_ok()
        }
    }

    /// A future that waits (at most `limit`) until no request is in flight on any of
    /// `gates`, including requests that start while it waits; resolves to whether that
    /// happened in time.
    pub fn wait_idle(
        gates: &[Arc<Gate>],
        limit: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let gates = gates.to_vec();
        async move {
            let wait = async {
                for g in &gates {
                    g.wait_no_request().await;
                }
            };
            tokio::time::timeout(limit, wait).await.is_ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_in_flight_waits_for_old_requests_only_and_keeps_keep_alive() {
        let gates = Gates::default();
        assert!(gates.enter("vip").is_none(), "no gate until created");
        let g = gates.get("vip");
        let old = gates.enter("vip").expect("gated");
        assert!(!old.is_draining());
        // The set of requests waited for is fixed when the future is made.
        let drain = tokio::spawn(Gates::wait_in_flight(
            &[Arc::clone(&g)],
            Duration::from_secs(5),
        ));
        // A request that arrives during the wait doesn't hold it up, and keep-alive stays
        // on for it (no `Connection: close` before the node is backup).
        let new = gates.enter("vip").expect("gated");
        assert!(!new.is_draining());
        assert_eq!(g.in_flight(), 2);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drain.is_finished(), "the old request is still running");
        drop(old);
        assert!(drain.await.expect("join"), "drain completes");
        assert_eq!(g.in_flight(), 1);
        drop(new);
        assert_eq!(g.in_flight(), 0);
    }

    #[tokio::test]
    async fn wait_draining_wakes_on_drain_start() {
        let gates = Arc::new(Gates::default());
        let g = gates.get("vip");
        let waiter = tokio::spawn({
            let gates = Arc::clone(&gates);
            async move { gates.wait_draining("vip").await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        g.set_draining(true);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("join");
        // Already draining: at once.
        tokio::time::timeout(Duration::from_secs(5), gates.wait_draining("vip"))
            .await
            .expect("immediate");
        // No gate: never.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), gates.wait_draining("other"))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn drain_is_bounded() {
        let gates = Gates::default();
        let g = gates.get("vip");
        let _stuck = gates.enter("vip");
        assert!(!Gates::wait_in_flight(&[Arc::clone(&g)], Duration::from_millis(30)).await);
        assert!(!Gates::wait_idle(&[g], Duration::from_millis(30)).await);
    }

    #[tokio::test]
    async fn wait_idle_waits_for_requests_that_start_while_it_waits() {
        let gates = Gates::default();
        let g = gates.get("vip");
        assert!(
            Gates::wait_idle(&[Arc::clone(&g)], Duration::from_millis(30)).await,
            "nothing in flight: idle at once"
        );
        let old = gates.enter("vip").expect("gated");
        let idle = tokio::spawn(Gates::wait_idle(&[Arc::clone(&g)], Duration::from_secs(5)));
        // A request accepted after the wait began (a straggler on the old MAC) counts too.
        g.close_epoch();
        let new = gates.enter("vip").expect("gated");
        drop(old);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!idle.is_finished(), "the newer request is still running");
        drop(new);
        assert!(idle.await.expect("join"), "idle once both are done");
    }
}
