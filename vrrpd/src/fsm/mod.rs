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
//! - this file: `State` (private) and [`Fsm`] itself: construction, accessors, outputs, and
//!   `Fsm::transition`, the one function through which every state change goes (exit
//!   actions, `Transition` action, counters, log, entry actions);
//! - `events`: the RFC 5798 events (startup, shutdown, adverts, timers, link, faults,
//!   tracking priority);
//! - `pair`: what the HA pair adds: the readiness gate on preemption, the
//!   make-before-break switchover with its preemption hold, and resuming after a restart.
//!
//! The deadlines live inside the `State` variants (`Backup { master_down_at }`,
//! `Master { next_advert_at, resign_deadline }`), so a Backup with an advert timer cannot
//! exist. The full table of states, events and actions is in `doc/vrrpd-LIFECYCLE.md`.
//!
//! Choices the RFC leaves open, made here:
//! - `preempt_delay` (keepalived's meaning): after startup (and after a restart from Fault),
//!   a Backup does not preempt a lower-priority master until `preempt_delay` has elapsed; in
//!   that window a lower-priority advert is accepted as if preemption were off. It never
//!   delays taking over from a master that went silent or resigned. Readiness
//!   ([`Fsm::set_ready`]) and the switchover hold gate preemption the same way.
//! - RFC 9568 change 5: a Master that hears a worse advert (lower priority, or equal priority
//!   from a lower address) advertises at once, so the other side yields without waiting.
//! - A Master whose effective priority changes advertises at once, so backups learn it now.
//! - A priority-0 advert never postpones a Backup's takeover: the timer becomes Skew_Time
//!   from now only if that is sooner than the running deadline. (A resigning master repeats
//!   priority 0 every interval; with jitter, a repeat could otherwise keep pushing the
//!   takeover of a low-priority backup, whose Skew_Time is nearly one interval, back.)
//! - Adverts whose max advert interval or address list differ from ours are accepted (the
//!   Backup learns the interval, RFC 5798 §6.4.2) and counted in `interval_mismatch` /
//!   `addr_mismatch`.
//! - **Deviation from RFC 5798 §6.4.2:** the learned Master_Adver_Interval is
//!   clamped into `FsmConfig::adopt_interval_cs` (default: a quarter of our interval up to
//!   our interval) and every clamp is counted in `interval_clamped`. Adopting any interval
//!   lets one forged advert (priority 200, Max Adver Int 4095) make the master yield and
//!   the backup wait 3 x 40.95 s before taking over: the VIP is held by nobody for ~140 s.
//!   With the clamp the worst case is our own Master_Down_Interval. A real master with a
//!   longer interval than the window allows is declared down between its adverts, which is
//!   a misconfiguration the `interval_mismatch` counter shows.
//! - A Master answers worse or priority-0 adverts (RFC 9568 change 5, and the re-announce
//!   after a resignation) at most once per advert interval; the others are counted in
//!   `replies_suppressed`. Otherwise a flood of worse adverts is amplified into one advert
//!   and one GARP round per packet.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use tracing::{debug, info};

use crate::timers;

mod events;
mod pair;
mod types;

pub use types::{
    default_adopt_window, Action, Advert, FaultReason, FsmConfig, FsmCounters, StateKind,
    TransitionReason, OWNER_PRIORITY, RESIGN_PRIORITY,
};

/// The state with its deadlines. Private: the deadlines are only set by `Fsm::transition` and
/// the handlers, so the variants cannot be built with a timer the state does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Initialize,
    Backup {
        master_down_at: Duration,
    },
    Master {
        next_advert_at: Duration,
        /// `Some` while resigning (switchover): priority 0 is advertised, and at this instant
        /// the switchover is abandoned if nobody has taken over.
        resign_deadline: Option<Duration>,
    },
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

/// A lower-priority advert a preempting Backup discarded: if preemption becomes forbidden
/// (readiness lost) the Backup accepts it after the fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Discarded {
    at: Duration,
    src: Ipv4Addr,
    interval_cs: u16,
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
    /// The last advert discarded while `preempting`.
    last_discard: Option<Discarded>,
    /// While Backup: a master that is about to be replaced while still alive (it resigned
    /// with priority 0, or we are preempting it). Taken by the transition to Master.
    live_predecessor: Option<Ipv4Addr>,
    /// While Master: the router we took over from while it was alive (see
    /// [`Fsm::taken_over_from`]).
    taken_over_from: Option<Ipv4Addr>,
    /// The local services are ready (lbd): a Backup may preempt. True by default, so a vrrpd
    /// without lbd behaves as plain VRRP.
    ready: bool,
    /// Set by a completed switchover: do not take mastership back by preemption until
    /// `clear_switchover_hold`.
    switchover_hold: bool,
    /// When a Master last answered a worse or priority-0 advert (reply rate limit).
    last_reply_at: Option<Duration>,
    /// `cfg.adopt_interval_cs` resolved: the window a learned interval is clamped into.
    adopt_window: (u16, u16),
    actions: VecDeque<Action>,
    counters: FsmCounters,
}

impl Fsm {
    /// A machine in Initialize. Out-of-range config values are clamped (priority 0 -> 1,
    /// interval to 1..=4095 cs); config validation should have rejected them already.
    pub fn new(mut cfg: FsmConfig) -> Fsm {
        cfg.priority = cfg.priority.max(1);
        cfg.advert_interval_cs = clamp_interval(cfg.advert_interval_cs);
        let (lo, hi) = cfg
            .adopt_interval_cs
            .unwrap_or_else(|| default_adopt_window(cfg.advert_interval_cs));
        let adopt_window = (clamp_interval(lo.min(hi)), clamp_interval(hi.max(lo)));
        Fsm {
            adopt_window,
            last_reply_at: None,
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
            last_discard: None,
            live_predecessor: None,
            taken_over_from: None,
            ready: true,
            switchover_hold: false,
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

    /// While Master: the router we took over from while it was still alive (it resigned
    /// with priority 0, or we preempted it), `None` after a takeover from a silent master
    /// and in every other state. That router keeps its copy of the VIPs for a moment (the
    /// hand-off window), so the shell can send it the packets of its connections.
    pub fn taken_over_from(&self) -> Option<Ipv4Addr> {
        self.taken_over_from
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

    /// The interface's primary address changed (after a link flap or a readdress). It is
    /// what our adverts are recognised by and what breaks priority ties (RFC 5798 §6.4.3),
    /// so it must follow the address the socket now sends from. While Master, the address
    /// we report as the master's changes with it.
    pub fn set_primary_addr(&mut self, addr: Ipv4Addr) {
        if self.cfg.primary_addr == addr {
            return;
        }
        if self.master_addr == Some(self.cfg.primary_addr) {
            self.master_addr = Some(addr);
        }
        self.cfg.primary_addr = addr;
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
            State::Master {
                next_advert_at,
                resign_deadline,
            } => Some(resign_deadline.map_or(next_advert_at, |d| d.min(next_advert_at))),
            State::Initialize | State::Fault => None,
        }
    }

    /// The next action to perform, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether [`Fsm::poll_action`] has something: most adverts change nothing, and the
    /// shell skips its per-step work (publishing status) for them.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    // ----- internals shared by `events` and `pair` -----

    fn can_run(&self) -> bool {
        self.link_up && self.fault.is_none()
    }

    /// The priority a Master puts in its adverts: 0 while resigning.
    fn advertised_priority(&self) -> u8 {
        if self.is_resigning() {
            RESIGN_PRIORITY
        } else {
            self.priority
        }
    }

    fn send_advert(&mut self, priority: u8) {
        self.counters.adverts_sent += 1;
        if priority == RESIGN_PRIORITY {
            self.counters.priority_zero_sent += 1;
        }
        self.actions.push_back(Action::SendAdvert { priority });
    }

    /// The Master_Adver_Interval to adopt from an advert carrying `cs`: clamped into the
    /// adopt window (counted when it had to be).
    fn adopted_interval(&mut self, cs: u16) -> u16 {
        let (lo, hi) = self.adopt_window;
        let adopted = cs.clamp(lo, hi);
        if adopted != cs {
            self.counters.interval_clamped += 1;
            debug!(
                vrid = self.cfg.vrid,
                theirs = cs,
                adopted,
                "learned interval clamped into the adopt window"
            );
        }
        adopted
    }

    /// The adopt window `[min, max]` in effect, in centiseconds.
    pub fn adopt_window(&self) -> (u16, u16) {
        self.adopt_window
    }

    /// May a Master answer a worse or priority-0 advert now? At most once per advert
    /// interval, so a flood of such adverts costs one reply per interval, not one per packet.
    fn may_reply(&mut self, now: Duration) -> bool {
        let interval = timers::adver_interval(self.cfg.advert_interval_cs);
        if self.last_reply_at.is_some_and(|at| now < at + interval) {
            self.counters.replies_suppressed += 1;
            return false;
        }
        self.last_reply_at = Some(now);
        true
    }

    fn reset_advert_timer(&mut self, now: Duration) {
        if let State::Master { next_advert_at, .. } = &mut self.state {
            *next_advert_at = now + timers::adver_interval(self.cfg.advert_interval_cs);
        }
    }

    fn reset_master_down_timer(&mut self, now: Duration) {
        let mdi = timers::master_down_interval(self.priority, self.master_adver_interval_cs);
        if let State::Backup { master_down_at } = &mut self.state {
            *master_down_at = now + mdi;
        }
    }

    /// The one place the state changes. No-op if `to` is the current state; otherwise emits
    /// [`Action::Transition`], counts, logs, runs the exit actions of the old state, and
    /// enters the new state with its deadline computed from the current fields (callers set
    /// a learned Master_Adver_Interval before calling).
    fn transition(&mut self, to: StateKind, reason: TransitionReason, now: Duration) {
        let from = self.state.kind();
        if from == to {
            return;
        }
        self.counters.transitions += 1;
        info!(vrid = self.cfg.vrid, from = %from, to = %to, reason = %reason, "vrrp transition");
        self.actions
            .push_back(Action::Transition { from, to, reason });
        // Exit actions, after the `Transition` that tells lbd: lbd must hear that it no
        // longer owns the VIP before the address goes, so that (leaving for Backup) the shell
        // can keep the address until lbd's requests in flight have been answered.
        if from == StateKind::Master {
            self.actions.push_back(Action::RemoveVips);
        }
        self.state_since = now;
        self.preempting = false;
        self.last_discard = None;
        let predecessor = self.live_predecessor.take();
        self.taken_over_from = None;
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
                self.taken_over_from = predecessor.filter(|p| *p != self.cfg.primary_addr);
                // Claim, then announce: the VIP is up and clients are told our MAC before
                // the advert that makes the old master let go, so a preemption leaves no
                // instant in which nobody answers (make-before-break; RFC 5798 §6.4.2 lists
                // these entry actions without requiring an order between them).
                self.actions.push_back(Action::AddVips);
                self.actions.push_back(Action::SendGarp);
                self.send_advert(self.priority);
                State::Master {
                    next_advert_at: now + timers::adver_interval(self.cfg.advert_interval_cs),
                    resign_deadline: None,
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
    // The usual case, without allocating: the same list in the same order.
    if theirs == ours {
        return true;
    }
    let mut a = theirs.to_vec();
    let mut b = ours.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
