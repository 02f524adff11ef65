//! One shutdown path for both daemons.
//!
//! Signals map to intents: SIGTERM asks for a graceful drain, SIGINT for a fast exit, SIGHUP
//! for a reload. Every task holds a clone of [`Shutdown`] and selects on
//! [`Shutdown::triggered`]; the main task then waits for the [`TaskTracker`] with a grace
//! timeout, so "stop accepting, finish in-flight work, exit" is written once.

use std::time::Duration;

use tokio::signal::unix::{signal, Signal as UnixSignal, SignalKind};
use tokio::sync::watch;
pub use tokio_util::task::TaskTracker;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: drain gracefully, then exit 0.
    Terminate,
    /// SIGINT: exit fast.
    Interrupt,
    /// SIGHUP: reload the config.
    Reload,
}

/// The process's signal handlers, installed once at startup.
pub struct Signals {
    term: UnixSignal,
    int: UnixSignal,
    hup: UnixSignal,
}

impl Signals {
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal received.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// How the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Finish in-flight work up to a drain timeout.
    Graceful,
    /// Stop now; only the cleanup that keeps the network sane (VIP removal, priority 0).
    Fast,
}

/// A cloneable handle every task watches. Triggering it twice keeps the first mode unless
/// the second is `Fast`: a second Ctrl-C during a drain should cut the drain short.
#[derive(Clone)]
pub struct Shutdown {
    tx: std::sync::Arc<watch::Sender<Option<ShutdownMode>>>,
    rx: watch::Receiver<Option<ShutdownMode>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, rx) = watch::channel(None);
        Shutdown {
            tx: std::sync::Arc::new(tx),
            rx,
        }
    }

    pub fn trigger(&self, mode: ShutdownMode) {
        self.tx.send_if_modified(|current| match (*current, mode) {
            (None, m) => {
                *current = Some(m);
                true
            }
            (Some(ShutdownMode::Graceful), ShutdownMode::Fast) => {
                *current = Some(ShutdownMode::Fast);
                true
            }
            _ => false,
        });
    }

    /// The mode if shutdown has begun.
    pub fn mode(&self) -> Option<ShutdownMode> {
        *self.rx.borrow()
    }

    pub fn is_triggered(&self) -> bool {
        self.mode().is_some()
    }

    /// Resolves once shutdown begins, with its mode.
    pub async fn triggered(&self) -> ShutdownMode {
        let mut rx = self.rx.clone();
        loop {
            if let Some(mode) = *rx.borrow_and_update() {
                return mode;
            }
            if rx.changed().await.is_err() {
                // The sender lives in every clone, so this only happens at process teardown.
                return ShutdownMode::Fast;
            }
        }
    }

    /// Resolves once shutdown is `Fast` (a drain cut short).
    pub async fn fast(&self) {
        let mut rx = self.rx.clone();
        loop {
            if *rx.borrow_and_update() == Some(ShutdownMode::Fast) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

/// Wait for every tracked task to finish, at most `grace`. Returns whether they all did.
pub async fn drain(tracker: &TaskTracker, grace: Duration) -> bool {
    tracker.close();
    tokio::time::timeout(grace, tracker.wait()).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn graceful_can_be_escalated_to_fast_but_not_back() {
        let s = Shutdown::new();
        assert_eq!(s.mode(), None);
        s.trigger(ShutdownMode::Graceful);
        assert_eq!(s.triggered().await, ShutdownMode::Graceful);
        s.trigger(ShutdownMode::Fast);
        assert_eq!(s.mode(), Some(ShutdownMode::Fast));
        s.trigger(ShutdownMode::Graceful);
        assert_eq!(s.mode(), Some(ShutdownMode::Fast));
        tokio::time::timeout(Duration::from_secs(1), s.fast())
            .await
            .expect("fast resolves once escalated");
    }

    #[tokio::test(start_paused = true)]
    async fn drain_reports_stragglers() {
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_secs(10)));
        assert!(!drain(&tracker, Duration::from_secs(1)).await);
        let tracker = TaskTracker::new();
        tracker.spawn(tokio::time::sleep(Duration::from_millis(10)));
        assert!(drain(&tracker, Duration::from_secs(1)).await);
    }
}
