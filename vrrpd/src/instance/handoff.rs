//! The instance's side of the hand-off window (see `net::handoff` for the mechanism and
//! doc/vrrpd-LIFECYCLE.md, "The hand-off window", for the reasoning).
//!
//! - **New master.** Taking over from a router that is still up (it resigned, or we
//!   preempted it: `Fsm::taken_over_from`), the instance loads its hand-off table before
//!   the VIPs go up, so no packet of the old master's connections is reset here for
//!   `[lbd] handoff_ms` (the kernel ends the window), and removes it a second later.
//! - **A split healing.** A master that hears another master (a worse one, or one that
//!   resigns as it yields to us) re-announces the VIPs with GARP; the FSM asks for the same
//!   table towards that master first (`Action::HandOff`), since it held the VIPs too and
//!   keeps them for its hold as it steps down.
//! - **Old master.** Its `backup` event carries the hold, the window and a margin
//!   (`StateEvent::handoff_ms`); lbd keeps accepting and answering on the VIP that long
//!   before it acks, and the VIPs stay until that ack (`pair.rs`, release after idle).

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::Driver;
use crate::net::handoff::HandoffTable;

/// How much longer the old master keeps serving than the new one forwards: the old one's
/// hold begins only when it hears the new master's advert, after the table was loaded, so
/// it outlasts the forwarding already; this covers a packet forwarded at the last moment.
const HOLD_MARGIN: Duration = Duration::from_millis(50);

/// The table outlives its window by this much before it is removed (its set is empty by
/// then): removal is cleanup, and conntrack runs in the namespace until it is done.
const TABLE_LINGER: Duration = Duration::from_secs(1);

/// A configured hand-off window.
pub(super) struct Handoff {
    table: HandoffTable,
    window: Duration,
    /// Removes the table when the window ends.
    expiry: Option<JoinHandle<()>>,
    /// The resets table is loaded (an old master that can't serve holds its VIPs).
    resets_loaded: bool,
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
                resets_loaded: false,
            }),
            Err(e) => {
                warn!(error = %e, "no hand-off window for this instance");
                None
            }
        }
    }

    /// How long the old master keeps serving after a handover: the window and a margin.
    pub(super) fn hold(&self) -> Duration {
        self.window + HOLD_MARGIN
    }
}

impl Driver {
    /// How long lbd keeps serving after a `backup` event (`StateEvent::handoff_ms`): the
    /// hold when the VIPs went to a new master that is up (`handed_over`), 0 otherwise.
    pub(super) fn handoff_hold(&self, handed_over: bool) -> Duration {
        match &self.handoff {
            Some(h) if handed_over => h.hold(),
            _ => Duration::ZERO,
        }
    }

    /// Before the VIPs go up: if we take over from a router that is still up, load the
    /// table that sends it the packets of its connections, for the window.
    /// The receiver resolves once the table is loaded (or loading failed).
    pub(super) fn prepare_handoff(&mut self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let to = self.fsm.taken_over_from()?;
        self.hand_off_to(to)
    }

    /// [`Driver::hand_off_to`] for a split healing (`Action::HandOff`), unless a table is
    /// already in (its window and linger not over): a flood of worse adverts, answered once
    /// per interval, then runs `nft` at most once per window and linger, not once per
    /// interval, and a genuine heal happens once.
    pub(super) fn hand_off_once(
        &mut self,
        to: Ipv4Addr,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let busy = self
            .handoff
            .as_ref()?
            .expiry
            .as_ref()
            .is_some_and(|task| !task.is_finished());
        if busy {
            return None;
        }
        self.hand_off_to(to)
    }

    /// Load the table that sends `to` the packets of its connections for the window (and
    /// removes it after): before a takeover's VIPs go up, or before a master re-announces
    /// VIPs that another master held during a split (`Action::HandOff`). Loading again
    /// replaces the table and restarts the window. The receiver resolves once the table is
    /// loaded (or loading failed).
    pub(super) fn hand_off_to(
        &mut self,
        to: Ipv4Addr,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let handoff = self.handoff.as_mut()?;
        self.counters.handoff_tables += 1;
        if let Some(old) = handoff.expiry.take() {
            old.abort();
        }
        let table = handoff.table.clone();
        let window = handoff.window;
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        let (installed_tx, installed_rx) = tokio::sync::oneshot::channel();
        handoff.expiry = Some(tokio::spawn(async move {
            let installed = table.install(&vips, to, window).await;
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
                tokio::time::sleep(window + TABLE_LINGER).await;
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

    /// Leaving Master when our lbd can't answer for the VIPs (a fault, or lbd gone): the
    /// new master can't tell this from a switchover (both resign with priority 0), so it
    /// may forward our connections' packets to us for its window. Keep the VIPs for the
    /// hold with every TCP packet to them answered by a reset (what the new master would
    /// have answered without the window), then let them go (`Command::LbdIdle`, as after a
    /// handover). False when there is no window or the table could not be loaded: then the
    /// caller removes the VIPs at once.
    pub(super) async fn hold_vips_with_resets(&mut self) -> bool {
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        let Some(handoff) = self.handoff.as_mut() else {
            return false;
        };
        if let Err(e) = handoff.table.install_resets(&vips).await {
            warn!(error = %e, "hand-off: could not load the resets table; removing the VIPs now");
            return false;
        }
        handoff.resets_loaded = true;
        let hold = handoff.hold();
        let id = self.last_event_id;
        self.vip_release = Some(id);
        info!(
            hold_ms = hold.as_millis() as u64,
            "keeping the VIPs for the hand-off hold, resetting every connection to them"
        );
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            if let Some(tx) = commands.upgrade() {
                let _ = tx.send(super::Command::LbdIdle { event_id: id }).await;
            }
        });
        true
    }

    /// Unload the resets table, if loaded (the VIPs went, or are ours again).
    pub(super) async fn drop_resets(&mut self) {
        let Some(handoff) = self.handoff.as_mut().filter(|h| h.resets_loaded) else {
            return;
        };
        handoff.resets_loaded = false;
        if let Err(e) = handoff.table.remove_resets().await {
            warn!(error = %e, "hand-off: could not remove the resets table");
        }
    }

    /// Stop forwarding now (the instance stops) and remove tables a crash left behind.
    pub(super) async fn end_handoff(&mut self) {
        let Some(handoff) = self.handoff.as_mut() else {
            return;
        };
        if let Some(task) = handoff.expiry.take() {
            task.abort();
        }
        handoff.resets_loaded = false;
        for removed in [
            handoff.table.remove().await,
            handoff.table.remove_resets().await,
        ] {
            if let Err(e) = removed {
                warn!(table = handoff.table.name(), error = %e, "hand-off: could not remove a table");
            }
        }
    }
}
