//! What the HA pair adds to RFC 5798, still pure:
//!
//! - **readiness gate**: [`Fsm::set_ready`]. A Backup preempts a lower-priority master only
//!   while the local services (lbd) are ready. Readiness never holds back a takeover from a
//!   master that went silent or resigned: a degraded master is better than none.
//! - **make-before-break switchover**: [`Fsm::handle_switchover`]. The Master keeps its VIPs
//!   and stays Master, but advertises priority 0 (at once, then every interval) until it
//!   hears another router advertise with a priority above 0. Only then does it go to Backup
//!   (`SwitchoverComplete`) and remove its VIPs, so some node holds the VIPs at every
//!   instant. If nobody takes over before `resign_deadline`, the switchover is abandoned and
//!   normal adverts resume. A completed switchover sets the switchover hold: no preemption
//!   back until [`Fsm::clear_switchover_hold`].
//! - **resume**: [`Fsm::handle_startup_resume`], a restarted daemon that finds its VIPs still
//!   served claims mastership at once instead of dropping them (see `doc/vrrpd-LIFECYCLE.md`
//!   for why that is safe).

use std::time::Duration;

use tracing::{debug, info, warn};

use super::{Advert, Fsm, State, StateKind, TransitionReason, RESIGN_PRIORITY};
use crate::timers;

impl Fsm {
    // ----- accessors -----

    /// Whether the local services are ready (see [`Fsm::set_ready`]). True by default.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether a switchover is in progress: Master, advertising priority 0, VIPs kept.
    pub fn is_resigning(&self) -> bool {
        matches!(
            self.state,
            State::Master {
                resign_deadline: Some(_),
                ..
            }
        )
    }

    /// When an ongoing switchover will be abandoned, if one is in progress.
    pub fn resign_deadline(&self) -> Option<Duration> {
        match self.state {
            State::Master {
                resign_deadline, ..
            } => resign_deadline,
            _ => None,
        }
    }

    /// Whether preemption is held off after a completed switchover.
    pub fn switchover_hold(&self) -> bool {
        self.switchover_hold
    }

    // ----- inputs -----

    /// The local services became ready or stopped being ready. Only gates preemption: while
    /// not ready, a Backup treats a lower-priority master as if preemption were off. If it
    /// was already letting such a master's timer run out (it had discarded its adverts), it
    /// now accepts the last discarded advert after the fact, so the takeover happens only if
    /// that master really goes silent.
    pub fn set_ready(&mut self, ready: bool, now: Duration) {
        if self.ready == ready {
            return;
        }
        info!(vrid = self.cfg.vrid, ready, "local readiness changed");
        self.ready = ready;
        if !ready {
            self.stop_preempting(now);
        }
    }

    /// Planned switchover (operator `switchover`, or SIGTERM on a master). Returns false,
    /// doing nothing, if not Master. A Master starts resigning: it advertises priority 0 now
    /// and every interval, keeps its VIPs, and goes to Backup when another router advertises
    /// a non-zero priority. If none does within Master_Down_Interval (at our priority) plus
    /// one interval, it abandons the switchover and advertises its real priority again.
    /// Calling it again while resigning changes nothing and returns true.
    pub fn handle_switchover(&mut self, now: Duration) -> bool {
        let State::Master {
            resign_deadline, ..
        } = self.state
        else {
            debug!(vrid = self.cfg.vrid, state = %self.state.kind(), "switchover: not master");
            return false;
        };
        if resign_deadline.is_some() {
            return true;
        }
        let interval = self.cfg.advert_interval_cs;
        let deadline = now
            + timers::master_down_interval(self.priority, interval)
            + timers::adver_interval(interval);
        info!(
            vrid = self.cfg.vrid,
            deadline_ms = (deadline - now).as_millis() as u64,
            "switchover: resigning, keeping the VIPs until a new master advertises"
        );
        self.counters.switchovers += 1;
        self.state = State::Master {
            next_advert_at: now,
            resign_deadline: Some(deadline),
        };
        self.send_advert(RESIGN_PRIORITY);
        self.reset_advert_timer(now);
        true
    }

    /// The operator's "resume" after a switchover: preemption is allowed again (with the
    /// usual gates: preempt on, `preempt_delay`, readiness). Nothing happens at once; the next
    /// lower-priority advert is discarded and the master-down timer takes mastership back.
    pub fn clear_switchover_hold(&mut self, now: Duration) {
        if !self.switchover_hold {
            return;
        }
        self.switchover_hold = false;
        info!(
            vrid = self.cfg.vrid,
            state = %self.state.kind(),
            in_state_ms = now.saturating_sub(self.state_since).as_millis() as u64,
            "switchover hold cleared: preemption allowed again"
        );
    }

    /// Startup of a daemon that restarted and found its VIPs still on the interface, served
    /// by lbd: Initialize -> Master at once (`Resumed`), advertising now and re-announcing
    /// with GARP (`AddVips` is idempotent in the shell). A better master, if there is one,
    /// makes it yield as usual.
    ///
    /// Returns false if it did not resume: already started (ignored), or the link is down or
    /// a fault is active (it is now started and starts normally, as Backup, when they clear).
    /// The caller then owns the VIPs it found and must remove them.
    pub fn handle_startup_resume(&mut self, now: Duration) -> bool {
        if self.started {
            debug!(vrid = self.cfg.vrid, "resume ignored: already started");
            return false;
        }
        self.started = true;
        if self.state != State::Initialize || !self.can_run() {
            info!(vrid = self.cfg.vrid, state = %self.state.kind(),
                "cannot resume as master: will start normally when the fault clears");
            return false;
        }
        self.preempt_not_before = now + self.cfg.preempt_delay;
        self.counters.resumes += 1;
        self.transition(StateKind::Master, TransitionReason::Resumed, now);
        true
    }

    // ----- internals -----

    /// A resigning Master receiving an advert.
    pub(super) fn resigning_advert(&mut self, adv: &Advert, now: Duration) {
        if adv.priority == RESIGN_PRIORITY {
            // Another resigning master. Not answered: two resigning masters answering each
            // other's priority 0 at once would never stop.
            debug!(vrid = self.cfg.vrid, src = %adv.src, "resigning: ignored priority 0");
            return;
        }
        // Whatever its priority, someone else now advertises as master: it holds the VIPs
        // (it added them before advertising), so releasing ours leaves no gap.
        self.master_adver_interval_cs = self.adopted_interval(adv.max_adver_int_cs);
        self.master_addr = Some(adv.src);
        self.switchover_hold = true;
        self.transition(StateKind::Backup, TransitionReason::SwitchoverComplete, now);
    }

    /// The resign deadline passed with nobody taking over: stay Master, advertise for real.
    pub(super) fn abort_switchover(&mut self, now: Duration) {
        self.counters.switchover_aborted += 1;
        warn!(
            vrid = self.cfg.vrid,
            "switchover abandoned: no other router took over; advertising as master again"
        );
        self.state = State::Master {
            next_advert_at: now,
            resign_deadline: None,
        };
        self.send_advert(self.priority);
        self.reset_advert_timer(now);
    }

    /// Preemption just became forbidden: a Backup that was letting a lower master's timer
    /// run out accepts that master's last advert, as it would have had preemption been off.
    fn stop_preempting(&mut self, now: Duration) {
        if !matches!(self.state, State::Backup { .. }) || !self.preempting {
            return;
        }
        match self.last_discard {
            Some(d) => {
                self.accept_master(d.src, d.interval_cs, d.at);
                // A deadline that has already passed means that master is silent: take over
                // now (a plain master-down), never in the past.
                if let State::Backup { master_down_at } = &mut self.state {
                    *master_down_at = (*master_down_at).max(now);
                }
            }
            None => self.preempting = false,
        }
    }
}
