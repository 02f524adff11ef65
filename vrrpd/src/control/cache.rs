//! The snapshot cache: the last broadcast event of every instance, so a subscriber that
//! connects late (or reconnects) learns the present before the live events.
//!
//! A state may be delivered twice (in the snapshot and again live) when a transition races
//! the subscription; states are idempotent, so clients need not care. The snapshot prefers
//! the last *broadcast* state of an instance over the (periodically refreshed) status, so a
//! transition is never missed between a status refresh and a subscription.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shared::control::{DaemonStatus, StateEvent};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tracing::warn;

use super::SNAPSHOT_REASON;

/// The last broadcast event of every instance, for the subscribe snapshot.
///
/// It holds its own receiver, drained synchronously when a snapshot is taken. A connection
/// subscribes its live receiver *first* and drains the cache *second*, so every event is
/// either in the snapshot or on the live receiver (or both), never in neither. A
/// background task drains it after each broadcast too, so it doesn't lag when nobody
/// subscribes for a long time.
pub(super) struct StateCache {
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    rx: broadcast::Receiver<StateEvent>,
    latest: BTreeMap<String, StateEvent>,
    max_id: u64,
}

impl StateCache {
    pub(super) fn new(rx: broadcast::Receiver<StateEvent>) -> Self {
        StateCache {
            inner: Mutex::new(CacheInner {
                rx,
                latest: BTreeMap::new(),
                max_id: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding this lock can't leave the map inconsistent (each update is
        // one insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(inner: &mut CacheInner) {
        loop {
            match inner.rx.try_recv() {
                Ok(ev) => {
                    inner.max_id = inner.max_id.max(ev.seq);
                    inner.latest.insert(ev.instance.clone(), ev);
                }
                Err(TryRecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "control state cache lagged; the status snapshot fills the gap"
                    );
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    pub(super) fn refresh(&self) {
        Self::drain(&mut self.lock());
    }

    /// One event per instance describing its present state, and the highest daemon event
    /// id they cover.
    pub(super) fn snapshot(&self, status: &DaemonStatus) -> (Vec<StateEvent>, u64) {
        let mut inner = self.lock();
        Self::drain(&mut inner);
        let mut out = Vec::new();
        for inst in &status.instances {
            let cached = inner
                .latest
                .get(&inst.name)
                .filter(|e| e.vrid == inst.vrid && e.interface == inst.interface);
            let ev = match cached {
                Some(e) => StateEvent {
                    seq: 0,
                    instance: e.instance.clone(),
                    vrid: e.vrid,
                    interface: e.interface.clone(),
                    // The broadcast state is never older than the status refresh.
                    priority: if e.state == inst.state {
                        inst.priority
                    } else {
                        e.priority
                    },
                    state: e.state.clone(),
                    vips: e.vips.clone(),
                    reason: SNAPSHOT_REASON.into(),
                    draining: e.draining,
                    master_down_ms: e.master_down_ms,
                    handoff_ms: e.handoff_ms,
                },
                None => StateEvent {
                    seq: 0,
                    instance: inst.name.clone(),
                    vrid: inst.vrid,
                    interface: inst.interface.clone(),
                    state: inst.state.clone(),
                    priority: inst.priority,
                    vips: inst.vips.clone(),
                    reason: SNAPSHOT_REASON.into(),
                    draining: false,
                    master_down_ms: 0,
                    handoff_ms: 0,
                },
            };
            out.push(ev);
        }
        // Instances that broadcast but aren't in the status yet (started by a reload since
        // the last refresh), or any more (their last event says where they ended).
        for (name, e) in &inner.latest {
            if !status.instances.iter().any(|i| &i.name == name) {
                let mut e = e.clone();
                e.seq = 0;
                e.reason = SNAPSHOT_REASON.into();
                out.push(e);
            }
        }
        (out, inner.max_id)
    }
}

pub(super) async fn keep_cache_fresh(
    cache: Arc<StateCache>,
    mut wake: broadcast::Receiver<StateEvent>,
) {
    loop {
        match wake.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => cache.refresh(),
            Err(RecvError::Closed) => return,
        }
    }
}
