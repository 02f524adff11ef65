//! The VRRPv3 state machine of RFC 5798 §6, with RFC 9568's changes. Pure and sans-IO.
//!
//! The machine owns no socket, no clock and no task. Time is a [`Duration`] since an arbitrary
//! epoch chosen by the caller, passed into every handler. Work comes out as [`Action`]s from
//! [`Fsm::poll_action`], and the next instant the machine wants to be woken at comes out of
//! [`Fsm::poll_timeout`]. The async shell (`instance`) turns actions into packets, netlink
//! calls and ARP, and calls [`Fsm::handle_timeout`] when the deadline passes. That split is
//! what lets `tests/fsm_*.rs` and `tests/sim_*.rs` drive every transition with injected time.
//!
//! Layout:
//! - `types` (re-exported here): the inputs and outputs, [`FsmConfig`], [`Advert`], [`Action`],
//!   [`StateKind`], [`TransitionReason`], [`FaultReason`], [`FsmCounters`];
//! - `State` (private): the deadlines live inside the variants (`Backup { master_down_at }`,
//!   `Master { next_advert_at }`), so a Backup with an advert timer cannot exist;
//! - [`Fsm`]: the handlers, and `Fsm::transition`, the one function through which every
//!   state change goes (exit actions, `Transition` action, counters, log, entry actions).
//!
//! The full table of states, events and actions is in `doc/vrrpd-LIFECYCLE.md`.
//!
//! Choices the RFC leaves open, made here:
//! - `preempt_delay` (keepalived's meaning): after startup (and after a restart from Fault),
//!   a Backup does not preempt a lower-priority master until `preempt_delay` has elapsed; in
//!   that window a lower-priority advert is accepted as if preemption were off. It never
//!   delays taking over from a master that went silent or resigned.
//! - RFC 9568 change 5: a Master that hears a worse advert (lower priority, or equal priority
//!   from a lower address) advertises at once, so the other side yields without waiting.
//! - A Master whose effective priority changes advertises at once, so backups learn it now.
//! - Adverts whose max advert interval or address list differ from ours are accepted (the
//!   Backup learns the interval, RFC 5798 §6.4.2) and counted in `interval_mismatch` /
//!   `addr_mismatch`.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use tracing::{debug, info};

use crate::timers;

mod types;

pub use types::{
    Action, Advert, FaultReason, FsmConfig, FsmCounters, StateKind, TransitionReason,
    OWNER_PRIORITY, RESIGN_PRIORITY,
};

/// The state with its deadline. Private: the deadline is only set by `Fsm::transition` and
/// the handlers, so the variants cannot be built with a timer the state does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initialize,
    Backup { master_down_at: Duration },
    Master { next_advert_at: Duration },
    Fault,
}

impl State {
    fn kind(self) -> StateKind {
        match self {
            Self::Initialize => StateKind::Initialize,
            Self::Backup { .. } => StateKind::Backup,
            Self::Master { .. } => StateKind::Master,
            Self::Fault => StateKind::Fault,
        }
    }
}

/// One virtual router's state machine.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    /// Effective priority: the configured one, changed by tracking.
    priority: u8,
    /// Master_Adver_Interval: learned from the master while Backup, ours while Master.
    master_adver_interval_cs: u16,
    master_addr: Option<Ipv4Addr>,
    state_since: Duration,
    /// Between `handle_startup` and `handle_shutdown`.
    started: bool,
    link_up: bool,
    fault: Option<FaultReason>,
    /// Before this instant a Backup does not preempt (`preempt_delay`).
    preempt_not_before: Duration,
    /// We discarded a lower-priority advert since the last accepted one: if master-down fires
    /// now, it is a preemption.
    preempting: bool,
    actions: VecDeque<Action>,
    counters: FsmCounters,
}

impl Fsm {
    /// A machine in Initialize. Out-of-range config values are clamped (priority 0 -> 1,
    /// interval to 1..=4095 cs); config validation should have rejected them already.
    pub fn new(mut cfg: FsmConfig) -> Fsm {
        cfg.priority = cfg.priority.max(1);
        cfg.advert_interval_cs = cfg
            .advert_interval_cs
            .clamp(timers::MIN_ADVER_INT_CS, timers::MAX_ADVER_INT_CS);
        Fsm {
            priority: cfg.priority,
            master_adver_interval_cs: cfg.advert_interval_cs,
            cfg,
            state: State::Initialize,
            master_addr: None,
            state_since: Duration::ZERO,
            started: false,
            link_up: true,
            fault: None,
            preempt_not_before: Duration::ZERO,
            preempting: false,
            actions: VecDeque::new(),
            counters: FsmCounters::default(),
        }
    }

    // ----- accessors -----

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    pub fn state(&self) -> StateKind {
        self.state.kind()
    }

    /// Effective priority (configured, changed by [`Fsm::set_effective_priority`]).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Who we believe is Master: ourselves when Master, the last accepted advert's source
    /// when Backup, `None` when unknown (no advert yet, the master resigned, or not running).
    pub fn master_addr(&self) -> Option<Ipv4Addr> {
        self.master_addr
    }

    /// Master_Adver_Interval in centiseconds: learned while Backup, ours otherwise.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_interval_cs
    }

    /// When the current state was entered.
    pub fn state_since(&self) -> Duration {
        self.state_since
    }

    pub fn counters(&self) -> &FsmCounters {
        &self.counters
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// The active local fault, if any.
    pub fn fault(&self) -> Option<FaultReason> {
        self.fault
    }

    // ----- outputs -----

    /// The next instant [`Fsm::handle_timeout`] must be called at, if any.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Backup { master_down_at } => Some(master_down_at),
            State::Master { next_advert_at } => Some(next_advert_at),
            State::Initialize | State::Fault => None,
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ----- inputs -----

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

    /// The Shutdown event. A Master resigns with a priority-0 advert first (§6.4.3), then
    /// removes its VIPs; Backup goes to Initialize; Fault stays Fault (but is no longer
    /// started, so clearing the fault does not restart it).
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
            State::Master { next_advert_at } if now >= next_advert_at => {
                self.send_advert(self.priority);
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
    /// to restore it). A Master advertises the new priority at once.
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
        if matches!(self.state, State::Master { .. }) {
            self.send_advert(priority);
            self.reset_advert_timer(now);
        }
    }

    // ----- internals -----

    fn can_run(&self) -> bool {
        self.link_up && self.fault.is_none()
    }

    /// §6.4.1: the Initialize state's Startup logic.
    fn start(&mut self, now: Duration) {
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

    /// §6.4.2, Backup receiving an advert.
    fn backup_advert(&mut self, adv: &Advert, now: Duration) {
        if adv.priority == RESIGN_PRIORITY {
            if self.master_addr == Some(adv.src) {
                self.master_addr = None;
            }
            // Whoever we were about to preempt resigned: what follows is a plain takeover.
            self.preempting = false;
            if self.cfg.fast_takeover_on_zero {
                self.transition(
                    StateKind::Master,
                    TransitionReason::PriorityZeroReceived,
                    now,
                );
            } else {
                let skew = timers::skew_time(self.priority, self.master_adver_interval_cs);
                self.state = State::Backup {
                    master_down_at: now + skew,
                };
            }
            return;
        }
        let may_preempt = self.cfg.preempt && now >= self.preempt_not_before;
        if !may_preempt || adv.priority >= self.priority {
            self.master_adver_interval_cs = clamp_interval(adv.max_adver_int_cs);
            self.master_addr = Some(adv.src);
            self.preempting = false;
            self.reset_master_down_timer(now);
        } else {
            // Lower priority and we may preempt: let the master-down timer run out.
            self.counters.preempt_discards += 1;
            self.preempting = true;
            debug!(vrid = self.cfg.vrid, src = %adv.src, theirs = adv.priority,
                ours = self.priority, "discarded lower-priority advert to preempt");
        }
    }

    /// §6.4.3, Master receiving an advert (with RFC 9568 change 5).
    fn master_advert(&mut self, adv: &Advert, now: Duration) {
        if adv.priority == RESIGN_PRIORITY {
            // Another master resigned; make sure everyone hears the real one now.
            self.send_advert(self.priority);
            self.reset_advert_timer(now);
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
                self.master_adver_interval_cs = clamp_interval(adv.max_adver_int_cs);
                self.master_addr = Some(adv.src);
                self.transition(StateKind::Backup, reason, now);
            }
            None => {
                // RFC 9568 change 5: answer a worse master at once so it yields now rather
                // than after our next scheduled advert.
                self.send_advert(self.priority);
                self.reset_advert_timer(now);
            }
        }
    }

    fn send_advert(&mut self, priority: u8) {
        self.counters.adverts_sent += 1;
        if priority == RESIGN_PRIORITY {
            self.counters.priority_zero_sent += 1;
        }
        self.actions.push_back(Action::SendAdvert { priority });
    }

    fn reset_advert_timer(&mut self, now: Duration) {
        if let State::Master { next_advert_at } = &mut self.state {
            *next_advert_at = now + timers::adver_interval(self.cfg.advert_interval_cs);
        }
    }

    fn reset_master_down_timer(&mut self, now: Duration) {
        let mdi = timers::master_down_interval(self.priority, self.master_adver_interval_cs);
        if let State::Backup { master_down_at } = &mut self.state {
            *master_down_at = now + mdi;
        }
    }

    /// The one place the state changes. No-op if `to` is the current state; otherwise runs
    /// the exit actions of the old state, emits [`Action::Transition`], counts, logs, and
    /// enters the new state with its deadline computed from the current fields (callers set
    /// a learned Master_Adver_Interval before calling).
    fn transition(&mut self, to: StateKind, reason: TransitionReason, now: Duration) {
        let from = self.state.kind();
        if from == to {
            return;
        }
        // Exit actions.
        if from == StateKind::Master {
            self.actions.push_back(Action::RemoveVips);
        }
        self.counters.transitions += 1;
        info!(vrid = self.cfg.vrid, from = %from, to = %to, reason = %reason, "vrrp transition");
        self.actions
            .push_back(Action::Transition { from, to, reason });
        self.state_since = now;
        self.preempting = false;
        // Entry actions.
        self.state = match to {
            StateKind::Initialize => {
                self.master_addr = None;
                self.master_adver_interval_cs = self.cfg.advert_interval_cs;
                State::Initialize
            }
            StateKind::Fault => {
                self.counters.entered_fault += 1;
                self.master_addr = None;
                self.master_adver_interval_cs = self.cfg.advert_interval_cs;
                State::Fault
            }
            StateKind::Backup => {
                self.counters.became_backup += 1;
                let mdi =
                    timers::master_down_interval(self.priority, self.master_adver_interval_cs);
                State::Backup {
                    master_down_at: now + mdi,
                }
            }
            StateKind::Master => {
                self.counters.became_master += 1;
                self.master_addr = Some(self.cfg.primary_addr);
                self.master_adver_interval_cs = self.cfg.advert_interval_cs;
                self.send_advert(self.priority);
                self.actions.push_back(Action::AddVips);
                self.actions.push_back(Action::SendGarp);
                State::Master {
                    next_advert_at: now + timers::adver_interval(self.cfg.advert_interval_cs),
                }
            }
        };
    }
}

fn clamp_interval(cs: u16) -> u16 {
    cs.clamp(timers::MIN_ADVER_INT_CS, timers::MAX_ADVER_INT_CS)
}

/// Same set of addresses, in any order (senders may list them differently).
fn same_addrs(theirs: &[Ipv4Addr], ours: &[Ipv4Addr]) -> bool {
    if theirs.len() != ours.len() {
        return false;
    }
    let mut a = theirs.to_vec();
    let mut b = ours.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
