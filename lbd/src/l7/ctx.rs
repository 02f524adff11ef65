//! What the request engine reads besides the request: [`ProxyCtx`], one per process, shared by
//! every connection of both HTTP paths.
//!
//! It holds only what a request touches (the snapshot it runs on, the counters it bumps, the
//! soft state it pins and limits with, the listener gates it enters, the shutdown it watches
//! and the tracker its tunnels join), so the engine depends on nothing above it: not on the
//! listener's limits, the vrrpd coupling or the server's lifecycle. `app` builds it.

use std::sync::Arc;

use arc_swap::ArcSwap;
use shared::shutdown::{Shutdown, TaskTracker};

use crate::coupling::gate::Gates;
use crate::metrics::GlobalStats;
use crate::snapshot::Snapshot;
use crate::softstate::SoftState;

/// The request engine's context.
pub struct ProxyCtx {
    /// The config a new request runs on; a reload stores the next one.
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: GlobalStats,
    pub shutdown: Shutdown,
    /// Client connections and tunnels: what a drain waits for.
    pub tracker: TaskTracker,
    /// Sticky tables, rate-limit buckets and operator drains, replicated to the peer node.
    pub soft: Arc<SoftState>,
    /// Drain flags and in-flight counts of VIP listeners: a request enters its listener's
    /// gate, and the vrrpd coupling flips and waits on them.
    pub gates: Gates,
}

impl ProxyCtx {
    /// A context serving `snapshot` with fresh counters, shutdown and gates.
    pub fn new(snapshot: Arc<Snapshot>, soft: Arc<SoftState>) -> ProxyCtx {
        ProxyCtx {
            snapshot: ArcSwap::new(snapshot),
            stats: GlobalStats::default(),
            shutdown: Shutdown::new(),
            tracker: TaskTracker::new(),
            soft,
            gates: Gates::default(),
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}
