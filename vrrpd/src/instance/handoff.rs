//! The instance's side of the hand-off window (see `net::handoff` for the mechanism and
//! doc/vrrpd-LIFECYCLE.md, "The hand-off window", for the reasoning).
//!
//! - **New master.** Taking over from a router that is still up (it resigned, or we
//!   preempted it: `Fsm::taken_over_from`), the instance loads its hand-off table before
//!   the VIPs go up, so no packet of the old master's connections is reset here, and
//!   removes it `[lbd] handoff_ms` later.
//! - **Old master.** Its `backup` event carries the window (`StateEvent::handoff_ms`); lbd
//!   keeps accepting and answering on the VIP that long before it acks, and the VIPs stay
//!   until that ack (`pair.rs`, release after idle).

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Driver;
use crate::net::handoff::HandoffTable;

/// A configured hand-off window.
pub(super) struct Handoff {
    table: HandoffTable,
    window: Duration,
    /// Removes the table when the window ends.
    expiry: Option<JoinHandle<()>>,
}

impl Handoff {
    /// The instance's hand-off, if `[lbd] handoff_ms` is not 0 and the interface name can
    /// go in a rule.
    pub(super) fn configured(
        lbd: Option<&crate::config::LbdConfig>,
        interface: &str,
        ifindex: u32,
        vrid: u8,
    ) -> Option<Handoff> {
        let window = lbd.map(|l| l.handoff).filter(|w| !w.is_zero())?;
        match HandoffTable::new(interface, ifindex, vrid) {
            Ok(table) => Some(Handoff {
                table,
                window,
                expiry: None,
            }),
            Err(e) => {
                warn!(error = %e, "no hand-off window for this instance");
                None
            }
        }
    }

    pub(super) fn window(&self) -> Duration {
        self.window
    }
}

impl Driver {
    /// The hand-off window to announce with a `backup` event for `reason`: the configured
    /// one when the VIPs go to a new master that is up, 0 otherwise.
    pub(super) fn handoff_window_for(&self, handed_over: bool) -> Duration {
        match &self.handoff {
            Some(h) if handed_over => h.window(),
            _ => Duration::ZERO,
        }
    }

    /// Before the VIPs go up: if we take over from a router that is still up, load the
    /// table that sends it the packets of its connections, for the window.
    /// The receiver resolves once the table is loaded (or loading failed).
    pub(super) fn prepare_handoff(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let to = self.fsm.taken_over_from()?;
        let handoff = self.handoff.as_mut()?;
        if let Some(old) = handoff.expiry.take() {
            old.abort();
        }
        let table = handoff.table.clone();
        let window = handoff.window;
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        let (installed_tx, installed_rx) = tokio::sync::oneshot::channel();
        handoff.expiry = Some(tokio::spawn(async move {
            let installed = table.install(&vips, to).await;
            let ok = installed.is_ok();
            match installed {
                Ok(()) => info!(table = table.name(), old_master = %to,
                    window_ms = window.as_millis() as u64,
                    "hand-off: forwarding the old master's connections to it"),
                Err(e) => warn!(error = %e, old_master = %to,
                    "hand-off: could not load the table; the old master's connections get resets here"),
            }
            let _ = installed_tx.send(());
            if ok {
                tokio::time::sleep(window).await;
                match table.remove().await {
                    Ok(()) => info!(table = table.name(), "hand-off: window over"),
                    Err(e) => {
                        warn!(table = table.name(), error = %e, "hand-off: could not remove the table")
                    }
                }
            }
        }));
        Some(installed_rx)
    }

    /// Stop forwarding now (the instance stops) and remove a table a crash left behind.
    pub(super) async fn end_handoff(&mut self) {
        let Some(handoff) = self.handoff.as_mut() else {
            return;
        };
        if let Some(task) = handoff.expiry.take() {
            task.abort();
        }
        if let Err(e) = handoff.table.remove().await {
            warn!(table = handoff.table.name(), error = %e, "hand-off: could not remove the table");
        }
    }
}
