//! The RFC 5798 §6.4 events: startup, shutdown, adverts, timers, link, local faults and the
//! tracking priority. Each handler changes state only through `Fsm::transition`.

use std::net::Ipv4Addr;
use std::time::Duration;

use tracing::{debug, info};

use super::{
    same_addrs, Advert, Discarded, FaultReason, Fsm, State, StateKind, TransitionReason,
    OWNER_PRIORITY, RESIGN_PRIORITY,
};
use crate::timers;

impl Fsm {
    /// The Startup event (RFC 5798 §6.4.1). Ignored if already started. If the link is down
    /// or a fault is active, the machine starts when they clear.
    pub fn handle_startup(&mut self, now: Duration) {
        if self.started {
            debug!(vrid = self.cfg.vrid, "startup ignored: already started");
            return;
        }
        self.started = true;
        if self.state == State::Initialize && self.can_run() {
            self.start(now);
        }
    }

    /// The Shutdown event. A Master (resigning or not) resigns with a priority-0 advert first
    /// (§6.4.3), then removes its VIPs; Backup goes to Initialize; Fault stays Fault (but is
    /// no longer started, so clearing the fault does not restart it).
    pub fn handle_shutdown(&mut self, now: Duration) {
        self.started = false;
        if self.state == State::Fault {
            // Nothing runs in Fault; staying there keeps "Fault iff the link is down or a
            // fault is active", so a later link-up lands in Initialize, not started.
            return;
        }
        if matches!(self.state, State::Master { .. }) {
            self.send_advert(RESIGN_PRIORITY);
        }
        self.transition(StateKind::Initialize, TransitionReason::Shutdown, now);
    }

    /// A validated advert for our VRID (§6.4.2 in Backup, §6.4.3 in Master).
    pub fn handle_advert(&mut self, adv: &Advert, now: Duration) {
        // rx filters our own adverts already; a second check costs nothing and keeps a looped
        // back packet from ever making us yield to ourselves.
        if adv.src == self.cfg.primary_addr {
            self.counters.adverts_ignored += 1;
            debug!(vrid = self.cfg.vrid, "ignored our own advert");
            return;
        }
        if !matches!(self.state, State::Backup { .. } | State::Master { .. }) {
            self.counters.adverts_ignored += 1;
            debug!(
                vrid = self.cfg.vrid,
                state = %self.state.kind(),
                src = %adv.src,
                "advert ignored in this state"
            );
            return;
        }
        self.counters.adverts_received += 1;
        if adv.max_adver_int_cs != self.cfg.advert_interval_cs {
            self.counters.interval_mismatch += 1;
            debug!(vrid = self.cfg.vrid, src = %adv.src, theirs = adv.max_adver_int_cs,
                ours = self.cfg.advert_interval_cs, "advert interval differs from ours");
        }
        if !same_addrs(&adv.addrs, &self.cfg.vips) {
            self.counters.addr_mismatch += 1;
            debug!(vrid = self.cfg.vrid, src = %adv.src, "advert address list differs from ours");
        }
        if adv.priority == RESIGN_PRIORITY {
            self.counters.priority_zero_received += 1;
        }
        match self.state {
            State::Backup { .. } => self.backup_advert(adv, now),
            State::Master {
                resign_deadline: Some(_),
                ..
            } => self.resigning_advert(adv, now),
            State::Master { .. } => self.master_advert(adv, now),
            State::Initialize | State::Fault => {}
        }
    }

    /// Fires the deadline from [`Fsm::poll_timeout`] if `now` has reached it; else no-op.
    pub fn handle_timeout(&mut self, now: Duration) {
        match self.state {
            State::Backup { master_down_at } if now >= master_down_at => {
                self.counters.master_down_expired += 1;
                let reason = if self.preempting {
                    TransitionReason::PreemptLowerPriority
                } else {
                    TransitionReason::MasterDown
                };
                self.transition(StateKind::Master, reason, now);
            }
            State::Master {
                resign_deadline: Some(deadline),
                ..
            } if now >= deadline => self.abort_switchover(now),
            State::Master { next_advert_at, .. } if now >= next_advert_at => {
                self.send_advert(self.advertised_priority());
                // Rescheduled from `now`, not from the missed deadline: a late wakeup must
                // not turn into a burst of catch-up adverts.
                self.reset_advert_timer(now);
            }
            _ => {}
        }
    }

    /// The interface went down: Fault. A Master removes its VIPs; it cannot advertise.
    pub fn handle_link_down(&mut self, now: Duration) {
        if !self.link_up {
            return;
        }
        self.link_up = false;
        self.transition(StateKind::Fault, TransitionReason::LinkDown, now);
    }

    /// The interface came back: Fault -> Initialize, then the startup logic if started.
    pub fn handle_link_up(&mut self, now: Duration) {
        if self.link_up {
            return;
        }
        self.link_up = true;
        self.leave_fault(TransitionReason::LinkUp, now);
    }

    /// A local fault (tracking): Fault. A Master resigns with a priority-0 advert first, since
    /// the link is still up and the backup can take over after Skew_Time instead of
    /// Master_Down_Interval. Faults are not counted: the caller aggregates its sources.
    pub fn handle_fault(&mut self, reason: FaultReason, now: Duration) {
        if self.fault.is_some() {
            self.fault = Some(reason);
            return;
        }
        self.fault = Some(reason);
        if matches!(self.state, State::Master { .. }) {
            self.send_advert(RESIGN_PRIORITY);
        }
        self.transition(StateKind::Fault, TransitionReason::Fault(reason), now);
    }

    /// The local fault cleared: Fault -> Initialize, then the startup logic if started and
    /// the link is up.
    pub fn handle_fault_cleared(&mut self, now: Duration) {
        if self.fault.take().is_none() {
            return;
        }
        self.leave_fault(TransitionReason::FaultCleared, now);
    }

    /// Tracking changed our priority. Kept in 1..=254 (255 only when configured as owner,
    /// to restore it). A Master advertises the new priority at once, except while resigning:
    /// it keeps advertising 0, and uses the new priority if the switchover is abandoned.
    pub fn set_effective_priority(&mut self, priority: u8, now: Duration) {
        let priority = if priority == OWNER_PRIORITY && self.cfg.priority == OWNER_PRIORITY {
            OWNER_PRIORITY
        } else {
            priority.clamp(1, OWNER_PRIORITY - 1)
        };
        if priority == self.priority {
            return;
        }
        info!(
            vrid = self.cfg.vrid,
            from = self.priority,
            to = priority,
            "vrrp priority change"
        );
        self.priority = priority;
        self.counters.priority_changes += 1;
        if matches!(
            self.state,
            State::Master {
                resign_deadline: None,
                ..
            }
        ) {
            self.send_advert(priority);
            self.reset_advert_timer(now);
        }
    }

    // ----- internals -----

    /// §6.4.1: the Initialize state's Startup logic.
    pub(super) fn start(&mut self, now: Duration) {
        self.preempt_not_before = now + self.cfg.preempt_delay;
        if self.priority == OWNER_PRIORITY {
            self.transition(StateKind::Master, TransitionReason::AddressOwner, now);
        } else {
            self.master_adver_interval_cs = self.cfg.advert_interval_cs;
            self.transition(StateKind::Backup, TransitionReason::Startup, now);
        }
    }

    fn leave_fault(&mut self, reason: TransitionReason, now: Duration) {
        if self.state != State::Fault || !self.can_run() {
            return;
        }
        self.transition(StateKind::Initialize, reason, now);
        if self.started {
            self.start(now);
        }
    }

    /// May a Backup push aside a lower-priority master now? Only with preemption on, after
    /// `preempt_delay`, when the local services are ready, and not after handing mastership
    /// away by a switchover.
    fn may_preempt(&self, now: Duration) -> bool {
        self.cfg.preempt && now >= self.preempt_not_before && self.ready && !self.switchover_hold
    }

    /// §6.4.2, Backup receiving an advert.
    fn backup_advert(&mut self, adv: &Advert, now: Duration) {
        if adv.priority == RESIGN_PRIORITY {
            // Only the resignation of the master we follow (or of any master when we follow
            // none, or of the one we were preempting) matters. A late priority 0 from a router
            // that already handed over (a switchover repeats it every interval) must not make
            // us take over from the master we now follow.
            let relevant = self.master_addr.is_none()
                || self.master_addr == Some(adv.src)
                || self.last_discard.is_some_and(|d| d.src == adv.src);
            if !relevant {
                debug!(vrid = self.cfg.vrid, src = %adv.src, master = ?self.master_addr,
                    "ignored priority 0 from a router that is not our master");
                return;
            }
            if self.master_addr == Some(adv.src) {
                self.master_addr = None;
            }
            // Whoever we were about to preempt resigned: what follows is a plain takeover,
            // from a router that is still up (it keeps its VIPs for the hand-off window).
            self.preempting = false;
            self.last_discard = None;
            self.live_predecessor = Some(adv.src);
            if self.cfg.fast_takeover_on_zero {
                self.transition(
                    StateKind::Master,
                    TransitionReason::PriorityZeroReceived,
                    now,
                );
            } else {
                let skew = timers::skew_time(self.priority, self.master_adver_interval_cs);
                if let State::Backup { master_down_at } = &mut self.state {
                    // Never later than already planned: a repeated priority 0 (a resigning
                    // master repeats it every interval) must not postpone the takeover.
                    *master_down_at = (*master_down_at).min(now + skew);
                }
            }
            return;
        }
        if !self.may_preempt(now) || adv.priority >= self.priority {
            self.accept_master(adv.src, adv.max_adver_int_cs, now);
        } else {
            // Lower priority and we may preempt: let the master-down timer run out.
            self.counters.preempt_discards += 1;
            self.preempting = true;
            self.live_predecessor = Some(adv.src);
            self.last_discard = Some(Discarded {
                at: now,
                src: adv.src,
                interval_cs: adv.max_adver_int_cs,
            });
            debug!(vrid = self.cfg.vrid, src = %adv.src, theirs = adv.priority,
                ours = self.priority, "discarded lower-priority advert to preempt");
        }
    }

    /// A Backup accepts `src` as its master, as of an advert received at `at`.
    pub(super) fn accept_master(&mut self, src: Ipv4Addr, interval_cs: u16, at: Duration) {
        self.master_adver_interval_cs = self.adopted_interval(interval_cs);
        self.master_addr = Some(src);
        self.preempting = false;
        self.last_discard = None;
        self.live_predecessor = None;
        self.reset_master_down_timer(at);
    }

    /// §6.4.3, a (non-resigning) Master receiving an advert (with RFC 9568 change 5).
    fn master_advert(&mut self, adv: &Advert, now: Duration) {
        if adv.priority == RESIGN_PRIORITY {
            // Another master resigned: make sure everyone hears the real one now, and
            // re-announce the VIP, since clients may have the resigner's MAC for it (it is
            // what a master that yields to us sends; see below). Rate-limited like the
            // answer to a worse master below.
            if !self.may_reply(now) {
                return;
            }
            self.reannounce_over(adv.src, now);
            return;
        }
        let reason = if adv.priority > self.priority {
            Some(TransitionReason::HigherPriorityAdvert)
        } else if adv.priority == self.priority
            && u32::from(adv.src) > u32::from(self.cfg.primary_addr)
        {
            Some(TransitionReason::EqualPriorityHigherAddress)
        } else {
            None
        };
        match reason {
            Some(reason) => {
                // Two masters: a partition is healing. If the better master's advert
                // crossed first, it never hears one of ours and wouldn't know that clients
                // on our side still have our MAC for the VIP. In a two-node pair one
                // priority-0 advert as we step down tells it, and it re-announces (the
                // branch above). Not with three or more routers: a backup that still
                // follows us would take the priority 0 as its cue to take over, and the
                // seeded simulation shows convergence slowing past Master_Down_Interval.
                if self.cfg.fast_takeover_on_zero {
                    self.send_advert(RESIGN_PRIORITY);
                }
                self.master_adver_interval_cs = self.adopted_interval(adv.max_adver_int_cs);
                self.master_addr = Some(adv.src);
                self.transition(StateKind::Backup, reason, now);
            }
            None => {
                // RFC 9568 change 5: answer a worse master at once so it yields now rather
                // than after our next scheduled advert. Two masters means the segment was
                // split (a partition healing): clients on the other side may have the other
                // master's MAC for the VIP, so re-announce it too. At most once per
                // interval: a flood of worse adverts must not be amplified.
                if !self.may_reply(now) {
                    return;
                }
                self.reannounce_over(adv.src, now);
            }
        }
    }

    /// Two masters (a split healing): re-announce the VIPs and advertise now. The other
    /// master (`other`) held the VIPs too and keeps them for its hold as it steps down, so
    /// the connections our GARP brings here that are its own go to it for the hand-off
    /// window (`Action::HandOff`), as after a takeover from a live master.
    fn reannounce_over(&mut self, other: Ipv4Addr, now: Duration) {
        if other != self.cfg.primary_addr {
            self.actions.push_back(super::Action::HandOff { to: other });
        }
        self.actions.push_back(super::Action::SendGarp);
        self.send_advert(self.priority);
        self.reset_advert_timer(now);
    }
}
