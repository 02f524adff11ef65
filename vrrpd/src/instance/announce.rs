//! What an instance tells the world: gratuitous ARP bursts on the LAN, state events to
//! the control socket's subscribers, and the status snapshot.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use shared::control::StateEvent;
use tracing::{warn, Instrument};

use super::Driver;
use crate::fsm::StateKind;
use crate::net::garp::GarpSender;
use crate::timers;

impl Driver {
    /// Send the GARP burst (and the optional periodic refresh) in a task of its own, so the
    /// spacing between GARPs never delays an advert. A re-announce that a hand-off table must
    /// precede (`Action::HandOff` set `garp_after`) waits for it in that task, not in the
    /// instance's loop, so our adverts never wait for `nft`.
    pub(super) fn start_garp(&mut self) {
        self.stop_garp();
        let count = self.config.garp_count;
        let interval = self.config.garp_interval;
        let refresh = self.config.garp_refresh;
        let garp = Arc::clone(&self.garp);
        let (ifindex, mac) = (self.ifindex, self.mac);
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        self.counters.garps_sent += u64::from(count) * vips.len() as u64;
        let table_loaded = self.garp_after.take();
        if table_loaded.is_none() {
            // The first round goes out now, before the advert that follows it in the FSM's
            // actions: clients must learn our MAC before the old master lets go of the VIP.
            send_garps(&garp, ifindex, mac, &vips);
        }
        self.garp_task = Some(tokio::spawn(
            async move {
                if let Some(loaded) = table_loaded {
                    // Loaded, or loading failed: either way the VIPs are re-announced.
                    let _ = loaded.await;
                    send_garps(&garp, ifindex, mac, &vips);
                }
                for _ in 1..count {
                    tokio::time::sleep(interval).await;
                    send_garps(&garp, ifindex, mac, &vips);
                }
                if let Some(every) = refresh {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        send_garps(&garp, ifindex, mac, &vips);
                    }
                }
            }
            .in_current_span(),
        ));
    }

    pub(super) fn stop_garp(&mut self) {
        if let Some(task) = self.garp_task.take() {
            task.abort();
        }
    }

    /// Stream a state to subscribers (lbd). `draining` re-sends `master` as a drain request.
    pub(super) fn publish_event(&mut self, state: StateKind, reason: &str, draining: bool) {
        if self.last_published == Some(state) && !draining {
            return;
        }
        self.last_published = Some(state);
        self.last_event_id = self.shared.next_event_id.fetch_add(1, Ordering::Relaxed) + 1;
        // The longest a backup may wait before taking over from us, not our own
        // Master_Down_Interval: ours is shorter than any lower-priority backup's, and lbd
        // would stop serving a hung vrrpd's VIP before the peer could have taken it.
        let master_down =
            timers::longest_backup_master_down_interval(self.fsm.master_adver_interval_cs());
        let handed_over =
            state == StateKind::Backup && shared::control::HANDED_OVER_REASONS.contains(&reason);
        let handoff = self.handoff_hold(handed_over);
        // No subscriber is fine: the control server snapshots state for late joiners.
        let _ = self.shared.events.send(StateEvent {
            seq: self.last_event_id,
            instance: self.config.name.clone(),
            vrid: self.config.vrid,
            interface: self.config.interface.clone(),
            state: state.as_str().to_string(),
            priority: self.fsm.priority(),
            vips: self.config.vips.iter().map(|v| v.to_string()).collect(),
            reason: reason.to_string(),
            draining,
            master_down_ms: master_down.as_millis() as u64,
            handoff_ms: handoff.as_millis() as u64,
        });
    }

    pub(super) fn publish_status(&self) {
        let now = self.now();
        let fc = self.fsm.counters();
        let mut counters = self.counters.clone();
        counters.adverts_sent = fc.adverts_sent;
        counters.adverts_received = fc.adverts_received;
        counters.transitions = fc.transitions;
        counters.became_master = fc.became_master;
        counters.interval_clamped = fc.interval_clamped;
        counters.replies_suppressed = fc.replies_suppressed;
        self.status.send_modify(|s| {
            s.state = self.fsm.state().as_str().to_string();
            s.priority = self.fsm.priority();
            s.master_addr = self.fsm.master_addr();
            s.advert_interval_cs = self.fsm.master_adver_interval_cs();
            s.time_in_state_ms = now.saturating_sub(self.fsm.state_since()).as_millis() as u64;
            s.counters = counters;
            s.lbd = self.lbd_view();
            s.resigning = self.fsm.is_resigning();
            s.switchover_hold = self.fsm.switchover_hold();
        });
    }
}

/// One gratuitous ARP per VIP; failures are logged, never fatal (the next round may work).
fn send_garps(garp: &GarpSender, ifindex: u32, mac: [u8; 6], vips: &[Ipv4Addr]) {
    for vip in vips {
        if let Err(e) = garp.send(ifindex, mac, *vip) {
            warn!(vip = %vip, error = %e, "gratuitous ARP failed");
        }
    }
}
