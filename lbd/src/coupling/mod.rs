//! The coupling to vrrpd: lbd serves a VIP only while its node is Master for it.
//!
//! Layout:
//! - [`link`]       the connection task: connect to vrrpd's Unix socket (retrying every
//!   `reconnect_interval`), subscribe, check that event seqs grow by exactly one (a gap
//!   means a lost event: reconnect for a fresh snapshot), hand each event to the
//!   controller *in order*, ack it only after acting, and heartbeat every
//!   `heartbeat_interval` on the same connection.
//! - [`controller`] per-instance state and the actions: `master` binds the instance's
//!   listeners (IP_FREEBIND) before the ack, because vrrpd adds the VIP on that ack;
//!   `master` + `draining` (a switchover) acks once the requests in flight have finished
//!   (bounded), keep-alive staying on; `backup` for a new master (the end of a switchover,
//!   a preemption) keeps accepting for the event's hand-off window (the new master hands
//!   back the packets of our connections meanwhile), then stops accepting and acks once
//!   *no* request is in flight (bounded by `drain_timeout`), because vrrpd keeps the VIP
//!   until that ack; other `backup`s, `fault` and `initialize` stop accepting
//!   (vrrpd removes the VIP at once). Losing vrrpd for longer than the instance's
//!   `master_down_ms` stops serving, because by then the peer has taken the VIP over; a
//!   quicker vrrpd restart keeps serving, and the new subscription's snapshot tells the
//!   truth.
//! - [`gate`]       per-listener drain flag and in-flight counts: the request engine owns
//!   them ([`crate::l7::ctx::ProxyCtx::gates`]) and enters one per request; the controller
//!   flips and waits on them.
//! - [`readiness`]  the named conditions behind the heartbeat's `able` and `ready`.
//!
//! The coupling reaches the server only through [`Host`] (start and stop a VIP's listeners,
//! read the engine, the peer handle and this [`Coupling`]), which `server::Server`
//! implements, so the coupling sits below the server rather than importing it.
//!
//! [`Coupling`] is what the rest of lbd sees: the set of instances whose
//! listeners should be bound (reload reconciles listeners against it), a status snapshot
//! (`/status` on the admin listener, `lbd status`), and [`Coupling::hand_over`]: on SIGTERM
//! lbd first reports itself unable and keeps serving until vrrpd has moved the VIPs away
//! (bounded), so the VIP is never held by a node whose lbd has stopped accepting.

pub mod controller;
pub mod gate;
pub mod link;
pub mod readiness;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use serde::Serialize;

use crate::config::{ListenerConfig, VrrpConfig};
use crate::l7::ctx::ProxyCtx;
use crate::peer::PeerHandle;
use readiness::Condition;

/// Resolves once a stopped listener's socket is closed.
pub type ListenerClosed = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the coupling needs from the server it runs in: the VIP listeners to start and stop,
/// and the state its heartbeat reports on. `server::Server` implements it; `app` hands it to
/// the vrrpd link.
pub trait Host: Send + Sync + 'static {
    /// The request engine: the snapshot (listeners, pools), the shutdown, the listener gates.
    fn engine(&self) -> &ProxyCtx;
    fn coupling(&self) -> &Coupling;
    /// The peer link's handle (`None` without `[peer]`), for the `peer_warm` readiness.
    fn peer(&self) -> Option<&PeerHandle>;
    /// Start accepting on a listener (idempotent for an identical running listener).
    fn start_listener(&self, cfg: &ListenerConfig) -> std::io::Result<SocketAddr>;
    fn listener_running(&self, name: &str) -> bool;
    /// Stop accepting on a listener (`None` when it wasn't running).
    fn stop_listener_closed(&self, name: &str) -> Option<ListenerClosed>;
}

/// The coupling state shared with the admin listener and reload.
#[derive(Debug, Default)]
pub struct Coupling {
    /// Instances whose listeners should be bound now. Held while listeners of an instance
    /// are started or stopped, so a concurrent reload never undoes the vrrp task's work.
    active: Mutex<BTreeSet<String>>,
    status: Mutex<CouplingStatus>,
    /// lbd is on its way out (SIGTERM): report unable, bind nothing new.
    leaving: AtomicBool,
    /// Asks the link for a heartbeat now rather than at the next tick.
    kick: Notify,
}

impl Coupling {
    pub fn new(cfg: Option<&VrrpConfig>) -> Coupling {
        let c = Coupling::default();
        if let Some(cfg) = cfg {
            let mut s = c.status_lock();
            s.enabled = true;
            s.socket = cfg.socket.display().to_string();
        }
        c
    }

    /// The set of instances whose listeners should be bound; lock it while changing
    /// listeners to match.
    pub fn active(&self) -> MutexGuard<'_, BTreeSet<String>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn status_lock(&self) -> MutexGuard<'_, CouplingStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the current status.
    pub fn status(&self) -> CouplingStatus {
        self.status_lock().clone()
    }

    fn update(&self, f: impl FnOnce(&mut CouplingStatus)) {
        f(&mut self.status_lock());
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// Resolves when someone wants a heartbeat sent at once.
    pub async fn kicked(&self) {
        self.kick.notified().await;
    }

    /// Before a graceful exit: tell vrrpd we can't serve, and keep serving until it has
    /// moved every VIP away (it then sends backup/fault and the instances' listeners stop),
    /// at most `limit`. Returns at once when vrrpd isn't connected or nothing is served.
    /// Returns whether every instance was released in time.
    pub async fn hand_over(&self, limit: Duration) -> bool {
        let status = self.status();
        if !status.enabled || !status.connected || self.active().is_empty() {
            return true;
        }
        self.leaving.store(true, Ordering::Release);
        self.kick.notify_one();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.active().is_empty() || !self.status().connected {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

/// The coupling as `/status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CouplingStatus {
    /// A `[vrrp]` table is configured.
    pub enabled: bool,
    pub socket: String,
    /// Subscribed to vrrpd right now.
    pub connected: bool,
    /// How long vrrpd has been unreachable (absent while connected or before the first try).
    pub disconnected_ms: Option<u64>,
    /// Successful subscriptions since start.
    pub connects: u64,
    /// Subscriptions dropped because an event seq was skipped.
    pub seq_gaps: u64,
    /// Last event seq received and last acked on the current subscription.
    pub last_seq: u64,
    pub acked_seq: u64,
    pub events: u64,
    pub heartbeats_sent: u64,
    /// The last heartbeat's verdicts.
    pub able: bool,
    pub ready: bool,
    pub reasons: Vec<String>,
    pub able_conditions: Vec<Condition>,
    pub ready_conditions: Vec<Condition>,
    pub instances: Vec<InstanceView>,
}

/// One VRRP instance as lbd sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub name: String,
    /// vrrpd's last reported state ("master", "backup", ...; "lost" after lbd gave up on
    /// an unreachable vrrpd).
    pub state: String,
    /// Every listener of the instance is bound.
    pub serving: bool,
    /// A switchover is waiting for requests in flight (keep-alive stays on).
    pub draining: bool,
    pub listeners: Vec<String>,
    pub master_down_ms: Option<u64>,
    /// vrrpd hasn't confirmed this instance's state for this long (disconnected, or its
    /// snapshot said "initialize"); serving stops when it reaches the lost timeout.
    pub unconfirmed_ms: Option<u64>,
    pub reason: String,
    pub errors: Vec<String>,
}

impl CouplingStatus {
    /// The `lbd_vrrp_*` families (none when lbd is not coupled to vrrpd).
    pub fn render_metrics(&self, e: &mut crate::metrics::Exposition) {
        let v = self;
        if v.enabled {
            e.family(
                "lbd_vrrp_connected",
                "gauge",
                "1 while subscribed to vrrpd's state stream.",
            );
            e.sample("lbd_vrrp_connected", &[], u8::from(v.connected));
            e.family(
                "lbd_vrrp_heartbeats_sent_total",
                "counter",
                "Heartbeats sent to vrrpd.",
            );
            e.sample("lbd_vrrp_heartbeats_sent_total", &[], v.heartbeats_sent);
            e.family(
                "lbd_vrrp_events_total",
                "counter",
                "State events received from vrrpd.",
            );
            e.sample("lbd_vrrp_events_total", &[], v.events);
            e.family(
                "lbd_vrrp_instance_serving",
                "gauge",
                "1 while the instance's VIP listeners are bound.",
            );
            for i in &v.instances {
                e.sample(
                    "lbd_vrrp_instance_serving",
                    &[("instance", &i.name)],
                    u8::from(i.serving),
                );
            }
        }
    }
}
