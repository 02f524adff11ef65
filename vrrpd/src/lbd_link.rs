//! vrrpd's view of the local lbd, for tracking and for the ack before claiming a VIP.
//!
//! lbd subscribes to the control socket as client `"lbd"` and sends a heartbeat every
//! interval. [`LbdMonitor`] turns the subscriber table into one [`LbdHealth`] value that
//! instances watch. lbd counts as *down* when it is not connected, when its last heartbeat
//! is older than `heartbeat_timeout`, or when it says it is not able to serve. A monitor
//! wakes on every subscriber change (connect, disconnect, heartbeat), at the moment the last
//! heartbeat expires, and on a short tick, because a *missed* heartbeat is an absence that
//! no message announces (a stopped lbd keeps its socket open). The control server admits one
//! `"lbd"` subscription at a time, from root or the lbd user only.
//!
//! At startup lbd may not have connected yet; for `startup_grace` that counts as
//! "starting", not as down, so booting both daemons together doesn't flap the priority.
//! The grace ends early once lbd has connected: an lbd that connects and then dies is down.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::LbdConfig;
use crate::control::Subscribers;

/// The client name lbd uses when it subscribes.
pub use crate::control::LBD_CLIENT;

/// How lbd looks from here, as instances need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbdHealth {
    /// lbd is connected and subscribed.
    pub connected: bool,
    /// Connected, heartbeating in time, and able to serve.
    pub up: bool,
    /// lbd reports it is ready to take over (gates preemption).
    pub ready: bool,
    /// Still within the startup grace without lbd: neither up nor counted as down.
    pub starting: bool,
    /// Instances whose VIP listeners lbd has bound.
    pub serving: Vec<String>,
    /// Why lbd is not up or not ready, for logs and status.
    pub reasons: Vec<String>,
}

impl LbdHealth {
    /// Tracking should act: lbd is down and we are past the startup grace.
    pub fn is_down(&self) -> bool {
        !self.up && !self.starting
    }

    /// The health used when vrrpd runs without lbd: always up and ready.
    pub fn uncoupled() -> LbdHealth {
        LbdHealth {
            connected: false,
            up: true,
            ready: true,
            starting: false,
            serving: Vec::new(),
            reasons: Vec::new(),
        }
    }
}

/// Computes [`LbdHealth`] from the control socket's subscribers.
pub struct LbdMonitor {
    config: LbdConfig,
    subscribers: Subscribers,
    started: Instant,
    /// lbd has been connected at least once; the startup grace no longer applies.
    seen: bool,
    tx: watch::Sender<LbdHealth>,
}

/// How often a missed heartbeat is looked for, as a share of the heartbeat timeout.
const TICKS_PER_TIMEOUT: u32 = 4;

impl LbdMonitor {
    pub fn new(
        config: LbdConfig,
        subscribers: Subscribers,
    ) -> (LbdMonitor, watch::Receiver<LbdHealth>) {
        let started = Instant::now();
        let initial = evaluate(&config, &subscribers, started, started, false);
        let (tx, rx) = watch::channel(initial);
        (
            LbdMonitor {
                config,
                subscribers,
                started,
                seen: false,
                tx,
            },
            rx,
        )
    }

    /// Run until every receiver is gone.
    pub async fn run(mut self) {
        let mut changes = self.subscribers.watch();
        let tick =
            (self.config.heartbeat_timeout / TICKS_PER_TIMEOUT).max(Duration::from_millis(5));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The tick alone would notice a heartbeat's expiry up to a tick late; waking at
            // the expiry itself keeps a hung lbd's detection at heartbeat_timeout, whatever
            // the timeout is.
            let expiry = heartbeat_expiry(&self.config, &self.subscribers);
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = ticker.tick() => {}
                _ = sleep_until_opt(expiry) => {}
            }
            let health = evaluate(
                &self.config,
                &self.subscribers,
                self.started,
                Instant::now(),
                self.seen,
            );
            self.seen |= health.connected;
            let previous = self.tx.borrow().clone();
            if health != previous {
                log_change(&previous, &health);
                if self.tx.send(health).is_err() {
                    return;
                }
            }
        }
    }
}

/// Just after the lbd heartbeat now on record goes stale.
fn heartbeat_expiry(config: &LbdConfig, subscribers: &Subscribers) -> Option<Instant> {
    subscribers
        .list()
        .iter()
        .filter(|(_, info)| info.client == LBD_CLIENT)
        .filter_map(|(_, info)| info.heartbeat_at)
        .max()
        .map(|at| at + config.heartbeat_timeout + Duration::from_millis(1))
        .filter(|t| *t > Instant::now())
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn log_change(old: &LbdHealth, new: &LbdHealth) {
    if old.up != new.up || old.starting != new.starting {
        if new.up {
            info!(ready = new.ready, "lbd is up");
        } else if new.starting {
            info!("waiting for lbd to connect");
        } else {
            warn!(reasons = ?new.reasons, "lbd is down");
        }
    } else if old.ready != new.ready {
        info!(ready = new.ready, reasons = ?new.reasons, "lbd readiness changed");
    }
}

/// The pure part: health from the subscriber table at `now`.
fn evaluate(
    config: &LbdConfig,
    subscribers: &Subscribers,
    started: Instant,
    now: Instant,
    seen: bool,
) -> LbdHealth {
    let subs = subscribers.list();
    // The freshest lbd connection wins (a reconnect may briefly overlap the old one).
    let lbd = subs
        .iter()
        .map(|(_, info)| info)
        .filter(|info| info.client == LBD_CLIENT)
        .max_by_key(|info| info.heartbeat_at);
    let in_grace = !seen && now.saturating_duration_since(started) < config.startup_grace;
    let Some(info) = lbd else {
        return LbdHealth {
            starting: in_grace,
            reasons: vec!["lbd is not connected".into()],
            ..LbdHealth::default()
        };
    };
    let Some((hb, at)) = info.heartbeat.as_ref().zip(info.heartbeat_at) else {
        // Connected but no heartbeat yet: give it one timeout before calling it silent.
        return LbdHealth {
            connected: true,
            starting: in_grace,
            reasons: vec!["lbd has not sent a heartbeat yet".into()],
            ..LbdHealth::default()
        };
    };
    let age = now.saturating_duration_since(at);
    let fresh = age <= config.heartbeat_timeout;
    let mut reasons = hb.reasons.clone();
    if !fresh {
        reasons.insert(
            0,
            format!("no heartbeat from lbd for {} ms", age.as_millis()),
        );
    }
    if !hb.able && hb.reasons.is_empty() {
        reasons.push("lbd reports it cannot serve".into());
    }
    LbdHealth {
        connected: true,
        up: fresh && hb.able,
        ready: fresh && hb.able && hb.ready,
        starting: false,
        serving: if fresh {
            hb.serving.clone()
        } else {
            Vec::new()
        },
        reasons,
    }
}
