//! Wiring: the one place that builds the layers' contexts and spawns the long-lived tasks.
//!
//! [`run`] loads the config, builds the request engine's [`ProxyCtx`], the listener's
//! [`ListenerCtx`] around it, the vrrpd [`Coupling`] and the peer handle, hands them to a
//! [`Server`], and starts, in order: the admin listener, the per-snapshot tasks (health
//! checkers, certificate watchers), the soft-state sweeper, the TLS ticket rotation, the peer
//! link, the listeners that are not VIPs (phase Serving), then the vrrpd link, which binds the
//! VIP listeners while vrrpd says Master. Each layer below sees only its own context, so
//! nothing but this module (and `main.rs`, which calls it) depends on all of them.
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

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shared::config::ConfigError;
use shared::shutdown::Signals;
use tokio::sync::Semaphore;
use tracing::info;

use crate::clock;
use crate::config::LbConfig;
use crate::coupling::{Coupling, Host};
use crate::l7::ctx::ProxyCtx;
use crate::listener::ListenerCtx;
use crate::peer::PeerHandle;
use crate::server::{Phase, Server};
use crate::snapshot::{soft_limits, warn_cookie_key, BuildError, Snapshot};
use crate::softstate::SoftState;

/// Why lbd could not start.
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

/// `lbd run`: load, start, serve until a signal. Returns the exit code.
pub async fn run(
    config_path: &Path,
    workers: Vec<tokio::runtime::Handle>,
) -> Result<i32, StartError> {
    let config = LbConfig::load(config_path)?;
    let signals = Signals::install().map_err(StartError::Signals)?;
    let server = start(config_path, config, workers).await?;
    Ok(server.serve(signals).await)
}

/// Build the contexts and the server, start every task, bind the listeners that are not
/// VIPs; the server is Serving when this returns.
pub async fn start(
    config_path: &Path,
    config: LbConfig,
    workers: Vec<tokio::runtime::Handle>,
) -> Result<Arc<Server>, StartError> {
    let _ = clock::start();
    let listener_cfgs = config.listeners.clone();
    let admin = config.global.admin;
    let vrrp_cfg = config.vrrp.clone();
    let listen = Arc::new(ListenerCtx {
        conn_limit: Arc::new(Semaphore::new(config.global.max_client_conns as usize)),
        client_conns: Arc::default(),
        workers,
        engine: Arc::new(engine(config)?),
    });
    let engine = Arc::clone(&listen.engine);
    let snapshot = engine.snapshot();
    let vrrp = Coupling::new(vrrp_cfg.as_ref());
    let peer = PeerHandle::from_config(snapshot.config.peer.as_ref());
    let server = Arc::new(Server::new(
        config_path,
        listen,
        vrrp,
        peer,
        spawn_snapshot_tasks,
    ));
    let admin_addr = crate::admin::start(Arc::clone(&server), admin)
        .await
        .map_err(|source| StartError::Admin {
            addr: admin,
            source,
        })?;
    spawn_snapshot_tasks(&snapshot);
    spawn_soft_sweeper(&engine.soft);
    // Runs as long as the control runtime, like the soft-state sweeper.
    tokio::spawn(crate::tls::tickets::run(Arc::clone(
        crate::tls::tickets::ring(),
    )));
    // The peer link runs until a fast shutdown or the process ends. Its listener is bound
    // here, before lbd reports ready, so a peer (or a test) that waits for /readyz finds it.
    if let Some(peer) = &server.peer {
        let bound = crate::peer::link::bind_listener(peer).await;
        tokio::spawn(crate::peer::link::run(
            Arc::clone(&engine),
            peer.clone(),
            bound,
        ));
    }
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
    server.phase.send_replace(Phase::Serving);
    info!(
        listeners = listener_cfgs.len(),
        admin = %admin_addr,
        pools = snapshot.pools.len(),
        "lbd serving"
    );
    if let Some(cfg) = vrrp_cfg {
        let host: Arc<dyn Host> = Arc::clone(&server) as Arc<dyn Host>;
        tokio::spawn(crate::coupling::link::run(host, cfg));
    }
    Ok(server)
}

/// The request engine's context on the first snapshot of `config`, with the soft state the
/// process keeps across reloads.
fn engine(config: LbConfig) -> Result<ProxyCtx, StartError> {
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
    crate::tls::tickets::ring().set_rotation(config.global.tls_ticket_rotate);
    let snapshot = Arc::new(Snapshot::build(config, None, 1)?);
    // The state file (softstate::persist): loaded before serving and before the peer link
    // starts, its drains applied to the backends, then kept up to date by its own thread.
    if let Some(path) = &snapshot.config.global.soft_state_file {
        crate::softstate::persist::start(path, snapshot.config.global.soft_state_flush, &soft)?;
        snapshot.apply_drains(&soft.take_remote_admin_changes());
    }
    Ok(ProxyCtx::new(snapshot, soft))
}

/// The tasks each stored snapshot runs until it is retired: its pools' health checkers and
/// its certificate watchers.
fn spawn_snapshot_tasks(snapshot: &Arc<Snapshot>) {
    snapshot.spawn_health_checks();
    snapshot.spawn_tls_watchers();
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
