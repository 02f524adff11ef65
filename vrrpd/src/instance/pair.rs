//! The instance's side of the vrrpd↔lbd coupling.
//!
//! - **Ack before VIP.** On becoming master the `master` event goes to lbd first; the VIP is
//!   added only once lbd has acknowledged it (it has bound its listeners), or after
//!   `ack_timeout` with a warning, so the VIP is never held by a node whose lbd isn't
//!   serving it.
//! - **Tracking.** lbd down (disconnected, silent, or unable) puts the instance in FAULT or
//!   lowers its priority, per `track_lbd`. The FSM makes a master advertise at once (priority
//!   0 when it faults), so the peer takes over after Skew_Time, not Master_Down_Interval.
//! - **Readiness.** lbd's `ready` gates preemption (a returning node waits for its lbd).
//! - **Switchover.** Drain lbd (it waits for the requests in flight, keep-alive stays on),
//!   then resign make-before-break: keep the VIP until the peer is master.
//! - **Release after idle.** Leaving Master for Backup (the peer holds the VIP now), lbd hears
//!   `backup` first and the VIP stays until lbd acks it, which it does once no request is in
//!   flight on the instance's listeners (bounded by `drain_timeout + ack_timeout`): a
//!   response written after the address is gone could not leave the host.
//! - **Resume.** A restarted vrrpd that finds its VIP still up and served by lbd resumes as
//!   master instead of dropping the VIP.

use std::time::Duration;

use shared::control::LbdView;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Command, Driver, LbdShared, SwitchoverError};
use crate::config::TrackLbd;
use crate::fsm::{FaultReason, StateKind, TransitionReason};
use crate::lbd_link::{LbdHealth, LBD_CLIENT};
use crate::timers;

/// What lbd tracking is doing to the instance right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LbdEffect {
    None,
    Fault,
    Priority(u8),
}

/// The longest a stopping instance waits for lbd to go idle: the daemon aborts an instance
/// that takes longer than its 3 s stop budget (`daemon::STOP_TIMEOUT`), VIPs and all.
const STOP_IDLE_LIMIT: Duration = Duration::from_secs(2);

/// A switchover in progress.
pub(super) struct PendingSwitchover {
    reply: oneshot::Sender<Result<String, SwitchoverError>>,
    /// False while lbd drains; true once the FSM is resigning.
    resigning: bool,
}

impl Driver {
    fn lbd_health(&self) -> LbdHealth {
        match &self.shared.lbd {
            Some(lbd) => lbd.health.borrow().clone(),
            None => LbdHealth::uncoupled(),
        }
    }

    /// Apply lbd's current health: tracking and the preemption gate.
    pub(super) async fn on_lbd_health(&mut self) {
        let health = self.lbd_health();
        let now = self.now();
        self.fsm.set_ready(health.ready, now);
        let wanted = match (health.is_down(), self.config.pair.track_lbd) {
            (false, _) | (_, TrackLbd::Off) => LbdEffect::None,
            (true, TrackLbd::Fault) => LbdEffect::Fault,
            (true, TrackLbd::Priority(weight)) => LbdEffect::Priority(weight),
        };
        if wanted != self.lbd_effect {
            match self.lbd_effect {
                LbdEffect::Fault => self.fsm.handle_fault_cleared(now),
                LbdEffect::Priority(_) => {
                    self.fsm.set_effective_priority(self.config.priority, now)
                }
                LbdEffect::None => {}
            }
            match wanted {
                LbdEffect::Fault => {
                    warn!(reasons = ?health.reasons, "lbd is down: FAULT");
                    self.fsm.handle_fault(FaultReason::Tracking, now);
                }
                LbdEffect::Priority(weight) => {
                    let lowered = self.config.priority.saturating_sub(weight).max(1);
                    warn!(reasons = ?health.reasons, priority = lowered, "lbd is down: lowering priority");
                    self.fsm.set_effective_priority(lowered, now);
                }
                LbdEffect::None => info!("lbd is back: tracking cleared"),
            }
            self.lbd_effect = wanted;
        }
        self.apply_actions().await;
    }

    /// Wait (bounded) for lbd to acknowledge the last event before the VIP goes up.
    pub(super) async fn wait_lbd_ack(&mut self) {
        let Some(lbd) = &self.shared.lbd else { return };
        if !lbd.health.borrow().connected {
            warn!("claiming the VIP without lbd's ack: lbd is not connected");
            return;
        }
        let id = self.last_event_id;
        let wait = lbd.subscribers.wait_acked(LBD_CLIENT, id);
        if tokio::time::timeout(lbd.config.ack_timeout, wait)
            .await
            .is_err()
        {
            warn!(
                event = id,
                timeout_ms = lbd.config.ack_timeout.as_millis() as u64,
                "lbd did not ack the master event in time; claiming the VIP anyway"
            );
        }
    }

    /// The FSM's `RemoveVips`, `why` being the reason of the transition it follows. When
    /// another router has become master (the end of a planned switchover, or a better
    /// master: preemption, a healed partition) it holds the VIPs and clients are already
    /// sent there by its GARP; ours only serve the requests lbd still has in flight, so they
    /// go once lbd has acked the `backup` event just published (it acks when idle). A fault
    /// (or a handover with lbd gone) with a hand-off window: kept for the hold, answering
    /// with resets (`hold_vips_with_resets`). Anything else (link down, shutdown): at once
    /// (see doc/vrrpd-LIFECYCLE.md).
    pub(super) async fn release_vips(&mut self, why: Option<TransitionReason>) {
        let lbd = self
            .shared
            .lbd
            .clone()
            .filter(|l| l.health.borrow().connected);
        let handed_over = why.is_some_and(TransitionReason::hands_over_to_new_master)
            && self.fsm.state() == StateKind::Backup;
        let Some(lbd) = lbd.filter(|_| handed_over) else {
            self.vip_release = None;
            let peer_may_forward = why.is_some_and(|w| {
                matches!(w, TransitionReason::Fault(_)) || w.hands_over_to_new_master()
            });
            if peer_may_forward && self.hold_vips_with_resets().await {
                return;
            }
            self.remove_vips().await;
            return;
        };
        let id = self.last_event_id;
        self.vip_release = Some(id);
        self.after_lbd_ack(
            lbd,
            Command::LbdIdle { event_id: id },
            "lbd still has requests in flight; removing the VIPs anyway",
        );
    }

    /// Send ourselves `then` once lbd has acked the last event published, or after
    /// `drain_timeout + ack_timeout` (plus the hand-off window lbd was told to keep serving)
    /// (logging `late`), without holding up the instance.
    fn after_lbd_ack(&self, lbd: LbdShared, then: Command, late: &'static str) {
        let id = self.last_event_id;
        let handoff = match then {
            Command::LbdIdle { .. } => self.handoff_hold(true),
            _ => Duration::ZERO,
        };
        let limit = lbd.config.drain_timeout + lbd.config.ack_timeout + handoff;
        let commands = self.commands.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(limit, lbd.subscribers.wait_acked(LBD_CLIENT, id))
                .await
                .is_err()
            {
                warn!(timeout_ms = limit.as_millis() as u64, "{late}");
            }
            if let Some(tx) = commands.upgrade() {
                let _ = tx.send(then).await;
            }
        });
    }

    /// Stopping while the VIPs are kept for lbd (SIGTERM on a master: the handover has just
    /// completed): let lbd answer what is in flight first, within the stop budget.
    pub(super) async fn await_lbd_idle_before_stop(&mut self) {
        let Some(id) = self.vip_release.take() else {
            return;
        };
        let Some(lbd) = self.shared.lbd.clone() else {
            return;
        };
        let limit = (lbd.config.drain_timeout + lbd.config.ack_timeout).min(STOP_IDLE_LIMIT);
        if tokio::time::timeout(limit, lbd.subscribers.wait_acked(LBD_CLIENT, id))
            .await
            .is_err()
        {
            warn!(
                timeout_ms = limit.as_millis() as u64,
                "stopping: lbd still has requests in flight; removing the VIPs anyway"
            );
        }
    }

    /// lbd is idle after `event_id` (or the wait timed out): remove the kept VIPs, unless
    /// the node has become Master again since (then they are in use).
    pub(super) async fn release_vips_now(&mut self, event_id: u64) {
        if self.vip_release != Some(event_id) {
            return;
        }
        self.vip_release = None;
        if self.fsm.state() != StateKind::Master {
            info!(
                event = event_id,
                "lbd is idle (or the hold is over): removing the VIPs"
            );
            self.remove_vips().await;
        }
        self.drop_resets().await;
    }

    /// At startup: are this instance's VIPs still up and served by lbd (vrrpd crashed and
    /// was restarted)? Then resume as master rather than drop them.
    pub(super) async fn should_resume(&mut self) -> bool {
        let Some(lbd) = self.shared.lbd.clone() else {
            return false;
        };
        let mut present = true;
        for vip in &self.vips {
            present &= matches!(self.shared.vips.present(self.ifindex, vip).await, Ok(true));
        }
        if !present {
            return false;
        }
        // lbd reconnects within moments of vrrpd's restart; wait for its report, but not so
        // long that the peer's Master_Down_Interval runs out first.
        let mdi =
            timers::master_down_interval(self.config.priority, self.config.advert_interval_cs);
        let patience = lbd.config.startup_grace.min(mdi / 2);
        let name = self.config.name.clone();
        let mut health = lbd.health.clone();
        let served = tokio::time::timeout(
            patience,
            health.wait_for(|h| h.up && h.serving.contains(&name)),
        )
        .await;
        let resume = matches!(served, Ok(Ok(_)));
        if !resume {
            info!(
                waited_ms = patience.as_millis() as u64,
                "VIPs are on the interface but lbd doesn't report serving them: removing them"
            );
        }
        resume
    }

    /// `vrrpd switchover`: drain lbd, then resign make-before-break.
    pub(super) async fn begin_switchover(
        &mut self,
        reply: oneshot::Sender<Result<String, SwitchoverError>>,
    ) {
        if self.fsm.state() != StateKind::Master || self.fsm.is_resigning() {
            let _ = reply.send(Err(SwitchoverError::NotMaster {
                instance: self.config.name.clone(),
                state: self.fsm.state().to_string(),
            }));
            return;
        }
        if self.switchover.is_some() {
            let _ = reply.send(Err(SwitchoverError::AlreadyUnderWay {
                instance: self.config.name.clone(),
            }));
            return;
        }
        self.switchover = Some(PendingSwitchover {
            reply,
            resigning: false,
        });
        let Some(lbd) = self
            .shared
            .lbd
            .clone()
            .filter(|l| l.health.borrow().connected)
        else {
            // Nothing to drain: resign now.
            self.resign_after_drain(self.last_event_id).await;
            return;
        };
        info!("switchover: asking lbd to drain");
        self.publish_event(StateKind::Master, "switchover", true);
        self.after_lbd_ack(
            lbd,
            Command::Drained {
                event_id: self.last_event_id,
            },
            "lbd did not finish draining in time; handing over anyway",
        );
    }

    /// lbd has drained: send priority 0 but keep the VIP until the peer is master.
    pub(super) async fn resign_after_drain(&mut self, event_id: u64) {
        let now = self.now();
        let Some(pending) = self.switchover.as_mut() else {
            return;
        };
        if self.fsm.handle_switchover(now) {
            info!(
                drained_event = event_id,
                "switchover: resigning, keeping the VIP until the peer is master"
            );
            pending.resigning = true;
            // A GARP of ours still due (the burst after becoming master, or the refresh)
            // would pull clients back from the new master after its own GARP.
            self.stop_garp();
        } else if let Some(p) = self.switchover.take() {
            let _ = p.reply.send(Err(SwitchoverError::NoLongerMaster {
                instance: self.config.name.clone(),
            }));
        }
        self.apply_actions().await;
    }

    /// After each step: has the switchover completed or been aborted?
    pub(super) fn check_switchover_outcome(&mut self) {
        let Some(pending) = &self.switchover else {
            return;
        };
        if !pending.resigning {
            return;
        }
        let outcome = if self.fsm.state() != StateKind::Master {
            Ok(format!(
                "{}: handed over to {} (now {})",
                self.config.name,
                self.fsm
                    .master_addr()
                    .map_or_else(|| "the peer".to_string(), |a| a.to_string()),
                self.fsm.state()
            ))
        } else if !self.fsm.is_resigning() {
            // Still master: announce ourselves again (the resign stopped our GARPs).
            self.start_garp();
            Err(SwitchoverError::NoPeerTookOver {
                instance: self.config.name.clone(),
            })
        } else {
            return;
        };
        if let Some(p) = self.switchover.take() {
            let _ = p.reply.send(outcome);
        }
    }

    pub(super) fn lbd_view(&self) -> Option<LbdView> {
        self.shared.lbd.as_ref()?;
        let health = self.lbd_health();
        Some(LbdView {
            connected: health.connected,
            able: health.up,
            ready: health.ready,
            effect: match self.lbd_effect {
                LbdEffect::None => "ok".into(),
                LbdEffect::Fault => "fault".into(),
                LbdEffect::Priority(w) => format!("priority -{w}"),
            },
            reasons: health.reasons,
        })
    }
}

/// Resolves when the watched value changes (true) or its sender is gone (false); never
/// resolves when there is nothing to watch.
pub(super) async fn wait_changed<T>(rx: &mut Option<tokio::sync::watch::Receiver<T>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// How long a SIGTERM'd master waits for its peer to take over before giving up.
pub fn handover_patience(priority: u8, interval_cs: u16) -> Duration {
    timers::master_down_interval(priority, interval_cs) + timers::adver_interval(interval_cs)
}
