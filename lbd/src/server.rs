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
//! The engine's soft state ([`ProxyCtx::soft`]: sticky learn table, rate-limit buckets,
//! operator drains, `crate::softstate`) is created once at startup with the bounds of the first
//! config ([`soft_limits`]; changing them needs a restart) and kept across reloads, since it is
//! replicated state rather than config. The per-snapshot views of it
//! ([`PoolState::sticky`](crate::snapshot::PoolState::sticky) with each backend's cookie
//! precomputed, [`Snapshot::limiters`] listed per route) are rebuilt on every reload; the
//! insert-mode cookie key comes from `global.cookie_secret_file`, else a random key kept for the
//! process.
//!
//! ## Lifecycle
//! [`Phase`] is published on a watch channel (Starting → Serving → Draining → Stopped) and on
//! `/readyz`. SIGTERM stops accepting, lets in-flight requests finish up to
//! `global.drain_timeout_ms`, then exits 0; SIGINT exits at once. [`Server::serve`] also
//! pings systemd's watchdog once every worker runtime has run a task.
//!
//! The server builds nothing of the layers below it and starts no long-lived task: `app`
//! builds the contexts and spawns the control tasks and, per snapshot, the
//! [`SnapshotTasks`] it hands in.
//!
//! ## Seams for later issues
//! Listeners are started and stopped at runtime ([`Server::start_listener`],
//! [`Server::stop_listener`]) and can bind with IP_FREEBIND, which is what serving a VIP only
//! while vrrpd is Master needs (the coupling does it through [`Host`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shared::config::ConfigError;
use shared::shutdown::{ShutdownMode, Signal, Signals};
use shared::systemd;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::{LbConfig, ListenerConfig};
use crate::coupling::{Coupling, Host, ListenerClosed};
use crate::l7::ctx::ProxyCtx;
use crate::listener::{ListenerCtx, RunningListener};
use crate::peer::PeerHandle;
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

/// What to start for each snapshot the server stores (health checkers, certificate
/// watchers): tasks that end when the snapshot is retired. `app` says which.
pub type SnapshotTasks = fn(&Arc<Snapshot>);

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

/// The proxy process: its phase, its listeners, and the contexts of the layers below it,
/// which `app` builds and hands over.
pub struct Server {
    /// The listener's context, which holds the request engine's.
    listen: Arc<ListenerCtx>,
    pub phase: watch::Sender<Phase>,
    /// The coupling to vrrpd (inert without `[vrrp]`): active instances, status.
    pub vrrp: Coupling,
    /// The link to the peer node (`None` without `[peer]`): status, metrics, readiness.
    pub peer: Option<PeerHandle>,
    config_path: PathBuf,
    listeners: Mutex<HashMap<String, RunningListener>>,
    snapshot_tasks: SnapshotTasks,
}

impl Server {
    /// A server in phase Starting, serving the engine's snapshot on no listener yet.
    pub fn new(
        config_path: &Path,
        listen: Arc<ListenerCtx>,
        vrrp: Coupling,
        peer: Option<PeerHandle>,
        snapshot_tasks: SnapshotTasks,
    ) -> Server {
        let (phase, _) = watch::channel(Phase::Starting);
        Server {
            listen,
            phase,
            vrrp,
            peer,
            config_path: config_path.to_path_buf(),
            listeners: Mutex::new(HashMap::new()),
            snapshot_tasks,
        }
    }

    /// The request engine's context: snapshot, stats, soft state, shutdown, gates.
    pub fn engine(&self) -> &Arc<ProxyCtx> {
        &self.listen.engine
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.engine().snapshot()
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
        let running = crate::listener::start(Arc::clone(&self.listen), cfg.clone())?;
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
                crate::metrics::inc(&self.engine().stats.reloads_ok);
                info!(generation, path = %self.config_path.display(), "config reloaded");
            }
            Err(e) => {
                crate::metrics::inc(&self.engine().stats.reloads_failed);
                error!("config reload rejected, still serving the previous config:\n{e}");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<u64, ReloadError> {
        let config = LbConfig::load(&self.config_path)?;
        let old = self.snapshot();
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
        let vrrp_active = self.vrrp.active();
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
        self.engine().snapshot.store(Arc::clone(&new));
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
        (self.snapshot_tasks)(&new);
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
                    if workers_respond(&self.listen.workers, patience).await {
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
                    self.engine().shutdown.trigger(ShutdownMode::Fast);
                    self.phase.send_replace(Phase::Stopped);
                    return 130;
                }
            }
        }
    }

    /// Stop accepting, let in-flight requests finish up to the drain timeout.
    pub async fn drain(&self) -> i32 {
        self.phase.send_replace(Phase::Draining);
        // Coupled to vrrpd: keep serving the VIPs until vrrpd has moved them away, so no
        // client meets a VIP whose listener is already closed.
        if let Some(v) = self.snapshot().config.vrrp.as_ref() {
            if !self.vrrp.hand_over(v.drain_timeout).await {
                warn!(
                    timeout_ms = v.drain_timeout.as_millis() as u64,
                    "vrrpd did not release the VIPs in time; stopping anyway"
                );
            }
        }
        self.engine().shutdown.trigger(ShutdownMode::Graceful);
        let names: Vec<String> = self.listeners().keys().cloned().collect();
        for name in names {
            self.stop_listener(&name);
        }
        let grace = self.snapshot().config.global.drain_timeout;
        let clean = shared::shutdown::drain(&self.engine().tracker, grace).await;
        if clean {
            info!("drained, exiting");
        } else {
            warn!(
                drain_timeout_ms = grace.as_millis() as u64,
                "drain timeout: closing remaining connections"
            );
        }
        self.phase.send_replace(Phase::Stopped);
        0
    }
}

/// What the vrrpd coupling asks of the server.
impl Host for Server {
    fn engine(&self) -> &ProxyCtx {
        Server::engine(self)
    }

    fn coupling(&self) -> &Coupling {
        &self.vrrp
    }

    fn peer(&self) -> Option<&PeerHandle> {
        self.peer.as_ref()
    }

    fn start_listener(&self, cfg: &ListenerConfig) -> std::io::Result<SocketAddr> {
        Server::start_listener(self, cfg)
    }

    fn listener_running(&self, name: &str) -> bool {
        Server::listener_running(self, name)
    }

    fn stop_listener_closed(&self, name: &str) -> Option<ListenerClosed> {
        Server::stop_listener_closed(self, name).map(|closed| Box::pin(closed) as ListenerClosed)
    }
}

/// Whether every worker runtime runs a no-op task within `patience`.
async fn workers_respond(workers: &[tokio::runtime::Handle], patience: Duration) -> bool {
    let probes = workers.iter().map(|w| w.spawn(async {}));
    tokio::time::timeout(patience, futures::future::join_all(probes))
        .await
        .is_ok_and(|done| done.iter().all(Result::is_ok))
}

/// Wait until `phase` reaches `want` (tests, embedding).
pub async fn wait_phase(mut rx: watch::Receiver<Phase>, want: Phase) {
    let _ = rx.wait_for(|p| *p == want).await;
}
