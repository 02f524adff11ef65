//! Per-backend runtime state shared by the proxy, the health driver and the balancers.
//!
//! The pick path (every request) only does relaxed/acquire atomic loads on [`Backend`]: no
//! locks, no allocation. Writers are rare (health changes, admin drain) or are plain counter
//! increments (`in_flight` through [`InFlightGuard`]).
//!
//! The health *logic* lives in [`crate::upstream::health`] (pure). A [`Backend`] keeps its
//! [`HealthTracker`] behind a per-backend mutex that only the health and result-reporting paths
//! take, and mirrors the verdict into `healthy`/`ejected` flags that the pick path reads. Ejection
//! ends only when someone calls [`Backend::poll_health`] (or [`Backend::record_probe`], which
//! polls): the runtime must call it at [`Backend::health_deadline`] or on every probe tick.
//!
//! A [`Pool`] is a named list of backends plus a [`Balancer`]; [`BackendId`] is the index of a
//! backend in its pool and [`PoolId`] the index of a pool in the snapshot's pool list.
//!
//! Across a config reload, a backend whose address stays in its pool but whose position or
//! static fields change becomes a new [`Backend`] built with [`Backend::with_health_of`]: it
//! continues the old one's health (rise/fall streaks, ejection), drain flag and load counters
//! (requests still running on the old snapshot keep counting against the same
//! `in_flight`), and [`Backend::reconfigure_health`] then applies the new thresholds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::upstream::balance::{hash, Algorithm, Balancer, PickContext};
use crate::upstream::health::{ActiveConfig, Change, EjectionConfig, HealthTracker, Outcome};

/// Index of a backend in its [`Pool::backends`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub usize);

/// Index of a pool in the snapshot's list of pools (what the router returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub usize);

/// Static description of a backend, from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Stable identity used by the hashing balancers (IP hash, Maglev). Keep it identical on both
    /// nodes of the pair so a failover keeps client affinity; empty means "use the address".
    pub name: String,
    pub addr: SocketAddr,
    /// Relative share of traffic; 0 means "no new traffic" (a soft drain) for every algorithm.
    pub weight: u32,
    /// Cap on concurrent requests (`in_flight`); 0 means unlimited.
    pub max_conns: u32,
}

/// Snapshot state of one backend.
#[derive(Debug)]
pub struct Backend {
    pub id: BackendId,
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub max_conns: u32,
    /// Stable hash of `name`, precomputed for the hashing balancers.
    pub(crate) name_hash: u64,
    /// Shared with the previous snapshot's backend of the same address (see module docs).
    load: Arc<Load>,
    healthy: AtomicBool,
    ejected: AtomicBool,
    drained: AtomicBool,
    health: Mutex<HealthTracker>,
}

/// Counters that belong to the backend's address rather than to one config snapshot.
#[derive(Debug, Default)]
struct Load {
    /// Requests (or L4 sessions) currently using this backend: the load the balancers compare.
    in_flight: AtomicU32,
    /// Open upstream connections (busy or idle), a gauge for metrics and the pool.
    active_conns: AtomicU32,
}

impl Backend {
    pub fn new(id: BackendId, spec: BackendSpec, health: HealthTracker) -> Self {
        let name = if spec.name.is_empty() {
            spec.addr.to_string()
        } else {
            spec.name
        };
        let healthy = health.active.is_healthy();
        Self {
            id,
            name_hash: hash::stable_hash(name.as_bytes(), hash::SEED_NAME),
            name,
            addr: spec.addr,
            weight: spec.weight,
            max_conns: spec.max_conns,
            load: Arc::default(),
            healthy: AtomicBool::new(healthy),
            ejected: AtomicBool::new(false),
            drained: AtomicBool::new(false),
            health: Mutex::new(health),
        }
    }

    /// A new backend (new position and static fields, e.g. across a reload) that continues
    /// `old`'s state: a copy of its health tracker and flags (up/down, ejected, drained), and
    /// the *same* load counters. Call [`Self::reconfigure_health`] to apply new thresholds.
    pub fn with_health_of(id: BackendId, spec: BackendSpec, old: &Backend) -> Self {
        let health = old
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut b = Self::new(id, spec, health);
        b.load = Arc::clone(&old.load);
        b.ejected = AtomicBool::new(old.is_ejected());
        b.drained = AtomicBool::new(old.is_drained());
        b
    }

    /// Apply new health settings keeping the current state ([`HealthTracker::reconfigure`]).
    /// Without active checks (`probed == false`) nothing could ever raise a down backend, so
    /// its active state returns to `active.initial`. Returns the transitions this causes.
    pub fn reconfigure_health(
        &self,
        active: ActiveConfig,
        ejection: EjectionConfig,
        probed: bool,
        now: Duration,
    ) -> Vec<Change> {
        self.with_health(now, |h| {
            let was_healthy = h.active.is_healthy();
            let was_ejected = h.passive.is_ejected(now);
            h.reconfigure(active, ejection);
            if !probed {
                h.active.reset();
            }
            let mut changes = Vec::new();
            match (was_healthy, h.active.is_healthy()) {
                (false, true) => changes.push(Change::BecameHealthy { probes: 0 }),
                (true, false) => changes.push(Change::BecameUnhealthy { probes: 0 }),
                _ => {}
            }
            if was_ejected && !h.passive.is_ejected(now) {
                changes.push(Change::Reinstated);
            }
            changes
        })
    }

    /// Healthy AND not ejected AND not admin-drained.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
            && !self.ejected.load(Ordering::Acquire)
            && !self.drained.load(Ordering::Acquire)
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Admin drain: no new requests; in-flight ones finish.
    pub fn set_drained(&self, drained: bool) {
        self.drained.store(drained, Ordering::Release);
    }

    /// Below `max_conns` (always true when unlimited). Advisory: two concurrent picks can both
    /// see room for one more; the overshoot is bounded by the number of worker threads.
    pub fn has_capacity(&self) -> bool {
        self.max_conns == 0 || self.in_flight() < self.max_conns
    }

    pub fn in_flight(&self) -> u32 {
        self.load.in_flight.load(Ordering::Relaxed)
    }

    pub fn active_conns(&self) -> u32 {
        self.load.active_conns.load(Ordering::Relaxed)
    }

    /// Count one request (or L4 session) until the guard drops; the balancers see it as load.
    pub fn begin_request(self: &Arc<Self>) -> InFlightGuard {
        self.load.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard {
            backend: Arc::clone(self),
        }
    }

    /// Count one open upstream connection until the guard drops.
    pub fn conn_opened(self: &Arc<Self>) -> ConnGuard {
        self.load.active_conns.fetch_add(1, Ordering::Relaxed);
        ConnGuard {
            backend: Arc::clone(self),
        }
    }

    /// Feed an active probe result (also ends an expired ejection).
    pub fn record_probe(&self, ok: bool, now: Duration) -> Vec<Change> {
        self.with_health(now, |h| {
            let mut changes = Vec::new();
            changes.extend(h.poll(now));
            changes.extend(h.record_probe(ok, now));
            changes
        })
    }

    /// Feed the outcome of a proxied request (passive health).
    pub fn record_result(&self, outcome: Outcome, now: Duration) -> Option<Change> {
        self.with_health(now, |h| h.record_result(outcome, now))
    }

    /// Advance time: ends an expired ejection.
    pub fn poll_health(&self, now: Duration) -> Option<Change> {
        self.with_health(now, |h| h.poll(now))
    }

    /// When [`Self::poll_health`] must next be called (the end of the current ejection).
    pub fn health_deadline(&self) -> Option<Duration> {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_timeout()
    }

    /// Run `f` on the tracker, then mirror its verdict into the lock-free flags.
    fn with_health<R>(&self, now: Duration, f: impl FnOnce(&mut HealthTracker) -> R) -> R {
        // A panic while holding the lock cannot leave the tracker half-updated in a way that
        // matters (each field is independently valid), so recover from poisoning.
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        let r = f(&mut h);
        self.healthy.store(h.active.is_healthy(), Ordering::Release);
        self.ejected
            .store(h.passive.is_ejected(now), Ordering::Release);
        r
    }
}

/// Decrements [`Backend::in_flight`] on drop.
#[derive(Debug)]
pub struct InFlightGuard {
    backend: Arc<Backend>,
}

impl InFlightGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.backend.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements [`Backend::active_conns`] on drop.
#[derive(Debug)]
pub struct ConnGuard {
    backend: Arc<Backend>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.backend
            .load
            .active_conns
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors building a [`Pool`] from existing backends.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("pool {pool:?}: backend {name:?} has id {id} but sits at index {index}")]
    IdMismatch {
        pool: String,
        name: String,
        id: usize,
        index: usize,
    },
}

/// A named group of backends and the balancer that chooses among them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub balancer: Balancer,
}

impl Pool {
    /// Build fresh backends (ids = indices) with the given health settings.
    pub fn new(
        name: impl Into<String>,
        specs: Vec<BackendSpec>,
        algorithm: Algorithm,
        active: ActiveConfig,
        ejection: EjectionConfig,
    ) -> Self {
        let backends = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                Arc::new(Backend::new(
                    BackendId(i),
                    spec,
                    HealthTracker::new(active, ejection),
                ))
            })
            .collect();
        Self {
            name: name.into(),
            backends,
            balancer: Balancer::new(algorithm),
        }
    }

    /// Reuse existing backends (e.g. across a config reload, keeping health state). Their ids
    /// must equal their indices because the balancers return indices.
    pub fn from_backends(
        name: impl Into<String>,
        backends: Vec<Arc<Backend>>,
        algorithm: Algorithm,
    ) -> Result<Self, PoolError> {
        let name = name.into();
        for (index, b) in backends.iter().enumerate() {
            if b.id.0 != index {
                return Err(PoolError::IdMismatch {
                    pool: name,
                    name: b.name.clone(),
                    id: b.id.0,
                    index,
                });
            }
        }
        Ok(Self {
            name,
            backends,
            balancer: Balancer::new(algorithm),
        })
    }

    /// Choose a backend for a request; `None` when no backend is usable.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<&Arc<Backend>> {
        let id = self.balancer.pick(ctx, &self.backends)?;
        self.backends.get(id.0)
    }

    pub fn backend(&self, id: BackendId) -> Option<&Arc<Backend>> {
        self.backends.get(id.0)
    }

    pub fn available_count(&self) -> usize {
        self.backends.iter().filter(|b| b.is_available()).count()
    }
}
