//! systemd's notification protocol (`Type=notify`, `WatchdogSec=`), for both daemons.
//!
//! - [`ready`] once startup is complete (the control socket and listeners are up), so
//!   `systemctl start` and units ordered `After=` wait for a daemon that can work;
//! - [`Watchdog`]: pings every half `WATCHDOG_USEC`. The daemons ping from their main
//!   loop, never from a thread of its own, so a wedged runtime stops the pings and systemd
//!   kills and restarts the daemon (for vrrpd the failure handler then releases its VIPs);
//! - [`reloading`] / [`ready`] around a reload, and [`stopping`] when a stop begins.
//!
//! Without `NOTIFY_SOCKET` (not run by systemd, or `Type=simple`) every call is a no-op.
//! A failed send is logged and otherwise ignored: notifications must never stop the daemon.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => debug!(?states, "told systemd"),
        Err(e) => warn!(error = %e, ?states, "could not notify systemd"),
    }
}

/// Startup (or a reload) is complete; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. systemd 253+ wants the monotonic time with it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// A stop begins.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog as systemd configured it for this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// How often to ping: half the timeout, as sd_watchdog_enabled(3) advises.
    pub period: Duration,
}

impl Watchdog {
    /// `None` when systemd set no watchdog (or set it for another PID).
    pub fn from_env() -> Option<Watchdog> {
        let timeout = sd_notify::watchdog_enabled()?;
        (!timeout.is_zero()).then(|| Watchdog {
            period: timeout / 2,
        })
    }

    /// A ticker for the main loop: ticks every `period`, or never without a watchdog.
    pub fn ticker(watchdog: Option<Watchdog>) -> WatchdogTicker {
        WatchdogTicker {
            interval: watchdog.map(|w| {
                let mut i = tokio::time::interval(w.period);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
        }
    }
}

/// See [`Watchdog::ticker`].
#[derive(Debug)]
pub struct WatchdogTicker {
    interval: Option<tokio::time::Interval>,
}

impl WatchdogTicker {
    /// Resolves at the next ping time; pending forever without a watchdog.
    pub async fn tick(&mut self) {
        match self.interval.as_mut() {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Tell systemd we are alive. Call it from the loop whose progress it vouches for.
pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}
