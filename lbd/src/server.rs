//! The running proxy: the snapshot, reload, listeners, drain.
//!
//! ## Snapshots
//! Everything a request needs (router, pools with their balancers and connection pools,
//! limits, header policy, retry budget) is one immutable [`Snapshot`] behind an
//! `ArcSwap`. A request loads the snapshot once and keeps that `Arc` until its response body
//! ends, so a reload never changes the rules under a request in flight; new requests see the
//! new snapshot as soon as it is stored.
//!
//! ## Reload (SIGHUP)
//! [`Server::reload`] reads and validates the file; on any error it logs every problem and
//! keeps serving the old snapshot. On success it builds a new [`Snapshot`] *carrying over*
//! state keyed by (pool name, backend address): the `Arc<Backend>` itself when the backend is
//! otherwise unchanged (same position, fields and health settings), else a new `Backend`
//! that continues its health, ejection, drain flag and in-flight counters
//! ([`crate::upstream::backend::Backend::with_health_of`]) under the new thresholds; and its [`crate::upstream::conns::BackendConns`] (idle
//! keep-alive connections and per-backend metrics) unless the pool's `[pool.tls]` changed, the pool's queue and its stats. The old snapshot's health-check tasks stop when it is retired.
//! Listeners are reconciled by name and address: new ones start, removed ones stop accepting.
//! Loading re-reads the files the config names, so a reload also picks up a rotated
//! `global.admin_token_file` (a bad one, like any error, keeps the old config and token).
//!
//! ## Soft state
//! [`Shared::soft`] holds the sticky learn table, the rate-limit buckets and operator drains
//! (`crate::softstate`), created once at startup with the bounds of the first config
//! ([`soft_limits`]; changing them needs a restart) and kept across reloads, since it is
//! replicated state rather than config. A task sweeps expired entries every second. The
//! per-snapshot views of it ([`PoolState::sticky`](crate::snapshot::PoolState::sticky) with each backend's cookie precomputed,
//! [`Snapshot::limiters`] listed per route) are rebuilt on every reload; the insert-mode cookie
//! key comes from `global.cookie_secret_file`, else a random key kept for the process.
//!
//! ## Lifecycle
//! [`Phase`] is published on a watch channel (Starting → Serving → Draining → Stopped) and on
//! `/readyz`. SIGTERM stops accepting, lets in-flight requests finish up to
//! `global.drain_timeout_ms`, then exits 0; SIGINT exits at once.
//!
//! ## Threads
//! `lbd run` starts `--workers N` worker threads (default: the CPUs the process may run on),
//! each a single-threaded tokio runtime ([`spawn_workers`]), and serves everything else on a
//! single-threaded control runtime on the main thread: signals, reload, the admin listener,
//! health checks and the vrrpd link. Every listener socket is accepted from on every worker
//! ([`crate::listener::start`]); a client connection, its requests and the upstream
//! connections they use then stay on that worker, and each worker keeps its own idle
//! upstream connections ([`crate::upstream::conns`]). What is shared between threads is only
//! what has to be: the snapshot behind the `ArcSwap`, backend health and load (atomics and
//! short locks), metrics, the global client connection semaphore, the sharded per-client
//! connection counts, the shutdown and vrrp gate signals.
//!
//! ## Seams for later issues
//! Listeners are started and stopped at runtime ([`Server::start_listener`],
//! [`Server::stop_listener`]) and can bind with IP_FREEBIND, which is what serving a VIP only
//! while vrrpd is Master needs. TLS would wrap the accepted stream in `listener.rs` before
//! hyper sees it; an L4 listener would replace `serve_connection` with a copy loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use shared::config::ConfigError;
use shared::shutdown::{Shutdown, ShutdownMode, Signal, Signals, TaskTracker};
use shared::systemd;
use tokio::sync::{watch, Semaphore};
use tracing::{error, info, warn};

use crate::clock;
use crate::config::{LbConfig, ListenerConfig};
use crate::listener::RunningListener;
use crate::metrics::GlobalStats;
use crate::softstate::SoftState;

use crate::snapshot::warn_cookie_key;
use crate::snapshot::{soft_limits, BuildError, Snapshot};

/// Lifecycle phase, published for tests and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Serving,
    Draining,
    Stopped,
}

/// Drop expired sticky entries and refilled rate buckets once a second, so memory returns
/// after a burst of distinct keys even when no further traffic sweeps them. Ends with the
/// soft state.
fn spawn_soft_sweeper(soft: &Arc<SoftState>) {
    let soft = Arc::downgrade(soft);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(soft) = soft.upgrade() else { return };
            soft.sweep(clock::now());
        }
    });
}

/// State shared by every task of the process.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub stats: GlobalStats,
    pub shutdown: Shutdown,
    /// Client connections and tunnels: what a drain waits for.
    pub tracker: TaskTracker,
    /// `global.max_client_conns`, taken before each accept.
    pub conn_limit: Arc<Semaphore>,
    /// Open connections per client IP, for `global.max_conns_per_client`.
    pub client_conns: Arc<crate::client_cap::ClientConns>,
    pub phase: watch::Sender<Phase>,
    /// The coupling to vrrpd (inert without `[vrrp]`): listener gates, status.
    pub vrrp: crate::coupling::Coupling,
    /// The worker runtimes client connections run on (see [`spawn_workers`]); empty means
    /// the runtime that starts the listener (tests, embedding).
    pub workers: Vec<tokio::runtime::Handle>,
    /// Sticky tables, rate-limit buckets and operator drains, replicated to the peer node.
    pub soft: Arc<SoftState>,
    /// The link to the peer node (`None` without `[peer]`): status, metrics, readiness.
    pub peer: Option<crate::peer::PeerHandle>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// Why a reload was rejected (the previous config keeps running).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("listener {listener:?}: cannot bind {address}: {source}")]
    Bind {
        listener: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Build(#[from] BuildError),
    #[error("listener {name:?}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("admin listener: cannot bind {addr}: {source}")]
    Admin {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    SoftStateFile(#[from] crate::softstate::persist::FileError),
}

/// The proxy process.
pub struct Server {
    pub shared: Arc<Shared>,
    config_path: PathBuf,
    listeners: Mutex<HashMap<String, RunningListener>>,
    admin_addr: SocketAddr,
}

impl Server {
    /// Build the first snapshot, bind the admin and proxy listeners, start health checks.
    pub async fn start(
        config_path: &Path,
        config: LbConfig,
        workers: Vec<tokio::runtime::Handle>,
    ) -> Result<Server, StartError> {
        let _ = clock::start();
        let listener_cfgs = config.listeners.clone();
        let admin = config.global.admin;
        let max_conns = config.global.max_client_conns as usize;
        let vrrp = crate::coupling::Coupling::new(config.vrrp.as_ref());
        // The soft state's merges tell nodes apart by id: with a peer link that must be the
        // id the peer knows us by (two nodes may share a hostname, hence a node_name).
        let soft = Arc::new(SoftState::new(
            config
                .peer
                .as_ref()
                .map_or(&config.global.node_name, |p| &p.node_id),
            soft_limits(&config),
        ));
        // Cold until the peer link's first resync (or its warm timeout): see SoftState.
        soft.set_cold(config.peer.is_some());
        warn_cookie_key(&config);
        let tickets = crate::tls::tickets::ring();
        tickets.set_rotation(config.global.tls_ticket_rotate);
        let snapshot = Arc::new(Snapshot::build(config, None, 1)?);
        // The state file (softstate::persist): loaded before serving and before the peer link
        // starts, its drains applied to the backends, then kept up to date by its own thread.
        if let Some(path) = &snapshot.config.global.soft_state_file {
            crate::softstate::persist::start(path, snapshot.config.global.soft_state_flush, &soft)?;
            snapshot.apply_drains(&soft.take_remote_admin_changes());
        }
        let (phase, _) = watch::channel(Phase::Starting);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::new(Arc::clone(&snapshot)),
            stats: GlobalStats::default(),
            shutdown: Shutdown::new(),
            tracker: TaskTracker::new(),
            conn_limit: Arc::new(Semaphore::new(max_conns)),
            client_conns: Arc::default(),
            phase,
            vrrp,
            workers,
            soft,
            peer: crate::peer::PeerHandle::from_config(snapshot.config.peer.as_ref()),
        });
        let admin_addr = crate::admin::start(Arc::clone(&shared), admin)
            .await
            .map_err(|source| StartError::Admin {
                addr: admin,
                source,
            })?;
        crate::upstream::checker::spawn_all(&snapshot);
        snapshot.spawn_tls_watchers();
        spawn_soft_sweeper(&shared.soft);
        // Runs as long as the control runtime, like the soft-state sweeper.
        tokio::spawn(crate::tls::tickets::run(Arc::clone(tickets)));
        // The peer link runs until a fast shutdown or the process ends.
        if let Some(peer) = &shared.peer {
            tokio::spawn(crate::peer::link::run(Arc::clone(&shared), peer.clone()));
        }
        let server = Server {
            shared,
            config_path: config_path.to_path_buf(),
            listeners: Mutex::new(HashMap::new()),
            admin_addr,
        };
        // A VIP listener is bound only once vrrpd says Master (crate::coupling).
        for l in listener_cfgs.iter().filter(|l| l.vrrp_instance.is_none()) {
            server
                .start_listener(l)
                .map_err(|source| StartError::Bind {
                    name: l.name.clone(),
                    addr: l.address,
                    source,
                })?;
        }
        server.shared.phase.send_replace(Phase::Serving);
        info!(
            listeners = listener_cfgs.len(),
            admin = %admin_addr,
            pools = snapshot.pools.len(),
            "lbd serving"
        );
        Ok(server)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    fn listeners(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningListener>> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Start accepting on a listener (idempotent for an identical running listener).
    pub fn start_listener(&self, cfg: &ListenerConfig) -> std::io::Result<SocketAddr> {
        let mut map = self.listeners();
        if let Some(running) = map.get(&cfg.name) {
            if running.cfg == *cfg {
                return Ok(running.local_addr);
            }
        }
        if let Some(old) = map.remove(&cfg.name) {
            old.stop();
        }
        let running = crate::listener::start(Arc::clone(&self.shared), cfg.clone())?;
        let addr = running.local_addr;
        info!(listener = %cfg.name, address = %addr, "listening");
        map.insert(cfg.name.clone(), running);
        Ok(addr)
    }

    /// Is the listener bound and accepting?
    pub fn listener_running(&self, name: &str) -> bool {
        self.listeners().contains_key(name)
    }

    /// Stop accepting on a listener; its open connections finish normally.
    pub fn stop_listener(&self, name: &str) -> bool {
        self.stop_listener_closed(name).is_some()
    }

    /// Like [`Server::stop_listener`], returning a future that resolves once the socket is
    /// closed (`None` when the listener wasn't running).
    pub fn stop_listener_closed(
        &self,
        name: &str,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let l = self.listeners().remove(name)?;
        info!(listener = name, "listener stopped");
        l.stop();
        Some(l.closed())
    }

    /// Reload the config file: validate, build, swap; keep the old snapshot on any error.
    pub fn reload(&self) -> Result<u64, ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(generation) => {
                crate::metrics::inc(&self.shared.stats.reloads_ok);
                info!(generation, path = %self.config_path.display(), "config reloaded");
            }
            Err(e) => {
                crate::metrics::inc(&self.shared.stats.reloads_failed);
                error!("config reload rejected, still serving the previous config:\n{e}");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<u64, ReloadError> {
        let config = LbConfig::load(&self.config_path)?;
        let old = self.shared.snapshot();
        for (what, changed) in [
            (
                "global.admin",
                config.global.admin != old.config.global.admin,
            ),
            (
                "global.max_client_conns",
                config.global.max_client_conns != old.config.global.max_client_conns,
            ),
            (
                "global.log_format/log_level",
                config.global.log_format != old.config.global.log_format
                    || config.global.log_level != old.config.global.log_level,
            ),
            ("vrrp", config.vrrp != old.config.vrrp),
            ("peer", config.peer != old.config.peer),
            (
                "global.workers",
                config.global.workers != old.config.global.workers,
            ),
            (
                "global.rate_limit_max_keys/rate_limit_max_bytes, pool.sticky.max_entries/max_bytes, \
                 the largest pool.sticky/rate_limit max_key_bytes",
                soft_limits(&config) != soft_limits(&old.config),
            ),
        ] {
            if changed {
                warn!(
                    setting = what,
                    "changed setting needs a restart; keeping the current value"
                );
            }
        }
        if config.global.cookie_secret != old.config.global.cookie_secret {
            warn_cookie_key(&config);
        }
        let listeners = config.listeners.clone();
        let new = Arc::new(Snapshot::build(config, Some(&old), old.generation + 1)?);
        // Bind new listeners before swapping so a bind failure keeps the old config whole.
        // The vrrp task starts and stops VIP listeners under this same lock, so the set of
        // instances it serves can't change under the reconciliation.
        let vrrp_active = self.shared.vrrp.active();
        let wanted = |l: &ListenerConfig| {
            l.vrrp_instance
                .as_ref()
                .is_none_or(|i| vrrp_active.contains(i))
        };
        let running: Vec<(String, ListenerConfig)> = self
            .listeners()
            .iter()
            .map(|(k, v)| (k.clone(), v.cfg.clone()))
            .collect();
        for l in listeners.iter().filter(|l| wanted(l)) {
            if !running.iter().any(|(_, r)| r == l) {
                self.start_listener(l).map_err(|source| ReloadError::Bind {
                    listener: l.name.clone(),
                    address: l.address,
                    source,
                })?;
            }
        }
        let generation = new.generation;
        crate::tls::tickets::ring().set_rotation(new.config.global.tls_ticket_rotate);
        self.shared.snapshot.store(Arc::clone(&new));
        old.retired.cancel();
        // Backends that disappeared: close their idle connections now.
        for op in &old.pools {
            for c in &op.conns {
                let kept = new
                    .pools
                    .iter()
                    .any(|np| np.conns.iter().any(|n| Arc::ptr_eq(n, c)));
                if !kept {
                    c.clear();
                }
            }
        }
        crate::upstream::checker::spawn_all(&new);
        new.spawn_tls_watchers();
        for (name, _) in running {
            if !listeners.iter().any(|l| l.name == name && wanted(l)) {
                self.stop_listener(&name);
            }
        }
        drop(vrrp_active);
        Ok(generation)
    }

    /// Serve until a terminating signal; returns the process exit code.
    pub async fn serve(&self, mut signals: Signals) -> i32 {
        // Pinged from this loop (the control runtime) once every worker runtime has run a
        // task too: a wedged runtime anywhere stops the pings, and systemd restarts lbd.
        let watchdog = systemd::Watchdog::from_env();
        let mut ticker = systemd::Watchdog::ticker(watchdog);
        systemd::ready("serving");
        loop {
            let signal = tokio::select! {
                signal = signals.recv() => signal,
                _ = ticker.tick() => {
                    let patience = watchdog.map_or(Duration::from_secs(1), |w| w.period);
                    if workers_respond(&self.shared.workers, patience).await {
                        systemd::watchdog_ping();
                    } else {
                        warn!("a worker runtime did not run a task in time; not pinging the watchdog");
                    }
                    continue;
                }
            };
            match signal {
                Signal::Reload => {
                    info!("SIGHUP: reloading config");
                    systemd::reloading();
                    let outcome = self.reload();
                    systemd::ready(if outcome.is_ok() {
                        "serving; reloaded"
                    } else {
                        "serving; last reload rejected, the previous config is running"
                    });
                }
                Signal::Terminate => {
                    info!("SIGTERM: draining");
                    systemd::stopping("draining");
                    return self.drain().await;
                }
                Signal::Interrupt => {
                    info!("SIGINT: exiting now");
                    systemd::stopping("exiting");
                    self.shared.shutdown.trigger(ShutdownMode::Fast);
                    self.shared.phase.send_replace(Phase::Stopped);
                    return 130;
                }
            }
        }
    }

    /// Stop accepting, let in-flight requests finish up to the drain timeout.
    pub async fn drain(&self) -> i32 {
        self.shared.phase.send_replace(Phase::Draining);
        // Coupled to vrrpd: keep serving the VIPs until vrrpd has moved them away, so no
        // client meets a VIP whose listener is already closed.
        if let Some(v) = self.shared.snapshot().config.vrrp.as_ref() {
            if !self.shared.vrrp.hand_over(v.drain_timeout).await {
                warn!(
                    timeout_ms = v.drain_timeout.as_millis() as u64,
                    "vrrpd did not release the VIPs in time; stopping anyway"
                );
            }
        }
        self.shared.shutdown.trigger(ShutdownMode::Graceful);
        let names: Vec<String> = self.listeners().keys().cloned().collect();
        for name in names {
            self.stop_listener(&name);
        }
        let grace = self.shared.snapshot().config.global.drain_timeout;
        let clean = shared::shutdown::drain(&self.shared.tracker, grace).await;
        if clean {
            info!("drained, exiting");
        } else {
            warn!(
                drain_timeout_ms = grace.as_millis() as u64,
                "drain timeout: closing remaining connections"
            );
        }
        self.shared.phase.send_replace(Phase::Stopped);
        0
    }
}

/// Whether every worker runtime runs a no-op task within `patience`.
async fn workers_respond(workers: &[tokio::runtime::Handle], patience: Duration) -> bool {
    let probes = workers.iter().map(|w| w.spawn(async {}));
    tokio::time::timeout(patience, futures::future::join_all(probes))
        .await
        .is_ok_and(|done| done.iter().all(Result::is_ok))
}

/// `lbd run`: load, start, serve until a signal. Returns the exit code.
pub async fn run(
    config_path: &Path,
    workers: Vec<tokio::runtime::Handle>,
) -> Result<i32, StartError> {
    let config = LbConfig::load(config_path)?;
    let signals = Signals::install().map_err(StartError::Signals)?;
    let vrrp = config.vrrp.clone();
    let server = Arc::new(Server::start(config_path, config, workers).await?);
    if let Some(cfg) = vrrp {
        tokio::spawn(crate::coupling::link::run(Arc::clone(&server), cfg));
    }
    Ok(server.serve(signals).await)
}

/// How many tasks a worker runs between two non-blocking checks for I/O events (tokio's
/// default is 61). Under load every check is an `epoll_wait` that finds a few events; checking
/// less often finds more per call. 256 measured 1.6% less CPU per request on the L7
/// benchmark (4 of 4 interleaved rounds); a worker still checks as soon as it runs out of
/// tasks, so an idle or lightly loaded worker reacts as before.
const EVENT_INTERVAL: u32 = 256;

/// The default worker count: the CPUs this process may run on (`sched_getaffinity`, which
/// `available_parallelism` reads on Linux), so a proxy pinned with `taskset -c 1` gets one.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Start `n` worker threads, each running its own single-threaded tokio runtime, and return
/// their handles.
///
/// Why one current_thread runtime per thread rather than one multi_thread runtime: a client
/// connection, the requests on it and the upstream connections they use then stay on one
/// thread, so the hand-offs between hyper's server task, its client dispatch channel and the
/// upstream connection task are same-thread wake-ups with no work stealing or cross-CPU
/// notification. Measured on the L7 benchmark (BENCHMARKS.md): multi_thread with one
/// worker cost about 18% more CPU per request than current_thread, and made wrk and the
/// backend spend more too. Every listener socket is served by all workers (see
/// [`crate::listener::start`]), and each worker keeps its own idle upstream connections
/// ([`crate::upstream::conns`]).
///
/// The threads run until the process exits: `main` returns without joining them.
pub fn spawn_workers(n: usize) -> std::io::Result<Vec<tokio::runtime::Handle>> {
    let n = n.max(1);
    crate::upstream::conns::set_worker_count(n);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("lbd-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .event_interval(EVENT_INTERVAL)
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                crate::upstream::conns::set_worker_slot(i);
                let _ = tx.send(Ok(rt.handle().clone()));
                // block_on is what drives this runtime's tasks; nothing ever completes it.
                rt.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("worker thread ended during startup"))??;
        handles.push(handle);
    }
    Ok(handles)
}

/// Wait until `phase` reaches `want` (tests, embedding).
pub async fn wait_phase(mut rx: watch::Receiver<Phase>, want: Phase) {
    let _ = rx.wait_for(|p| *p == want).await;
}
