//! Property test: random event sequences against random configurations, with the timers
//! fired the way a shell fires them, must keep the FSM's invariants:
//!
//! - each `Transition { from, to }` starts where the previous one ended, and the last one ends
//!   in `state()`; no state change happens without one;
//! - VIPs are added only when absent and removed only when present, and are present exactly
//!   while Master; `SendGarp` only while Master with the VIPs up;
//! - a non-zero advert is only sent as Master, a priority-0 advert only when leaving Master
//!   or while resigning (switchover), and a resigning Master sends nothing but priority 0;
//! - only a Master resigns; a switchover completes only from Master to Backup and leaves the
//!   hold set; a resume only leaves Initialize;
//! - a preemption (`preempt_lower_priority`) happens only while ready and not held;
//! - `poll_timeout()` exists exactly in Backup and Master and is never in the past;
//! - `master_addr()` is our own address exactly while Master;
//! - the counters agree with the actions that came out;
//! - a Backup's learned interval stays inside the adopt window, and its master-down deadline
//!   is never further than our own Master_Down_Interval (at the lowest priority) from now,
//!   whatever interval the adverts carried (so forged adverts can't stretch it).

use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;
use vrrpd::fsm::{Action, Advert, FaultReason, Fsm, FsmConfig, StateKind, TransitionReason};
use vrrpd::timers;

const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
const PEERS: [Ipv4Addr; 3] = [US, Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9)];

#[derive(Debug, Clone)]
enum Op {
    Startup,
    Shutdown,
    LinkDown,
    LinkUp,
    Fault(bool),
    FaultCleared,
    Priority(u8),
    Ready(bool),
    Switchover,
    ClearHold,
    Resume,
    Advert {
        peer: usize,
        priority: u8,
        interval: u16,
    },
}

fn advert() -> impl Strategy<Value = Op> {
    let priority = prop_oneof![Just(0u8), Just(255u8), any::<u8>()];
    let interval = prop_oneof![Just(100u16), 0..=4095u16];
    (0..3usize, priority, interval).prop_map(|(peer, priority, interval)| Op::Advert {
        peer,
        priority,
        interval,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Startup),
        1 => Just(Op::Shutdown),
        1 => Just(Op::LinkDown),
        1 => Just(Op::LinkUp),
        1 => any::<bool>().prop_map(Op::Fault),
        1 => Just(Op::FaultCleared),
        1 => any::<u8>().prop_map(Op::Priority),
        1 => any::<bool>().prop_map(Op::Ready),
        2 => Just(Op::Switchover),
        1 => Just(Op::ClearHold),
        1 => Just(Op::Resume),
        8 => advert(),
    ]
}

fn config() -> impl Strategy<Value = FsmConfig> {
    (
        prop_oneof![Just(255u8), Just(100u8), 1..=255u8],
        prop_oneof![Just(100u16), 1..=4095u16],
        any::<bool>(),
        0..10_000u64,
        any::<bool>(),
    )
        .prop_map(|(priority, interval, preempt, delay_ms, fast)| FsmConfig {
            vrid: 1,
            priority,
            advert_interval_cs: interval,
            preempt,
            preempt_delay: Duration::from_millis(delay_ms),
            primary_addr: US,
            vips: vec![Ipv4Addr::new(10, 0, 0, 100)],
            fast_takeover_on_zero: fast,
            adopt_interval_cs: None,
        })
}

/// What the shell would have observed so far.
struct Observer {
    state: StateKind,
    vips: bool,
    transitions: u64,
    became_master: u64,
    adverts: u64,
    resumes: u64,
}

impl Observer {
    fn drain(&mut self, f: &mut Fsm) -> Result<(), TestCaseError> {
        let mut pending_zero = false;
        let mut nonzero_advert = false;
        let mut handing_off = false;
        while let Some(a) = f.poll_action() {
            // A hand-off is asked for only right before the re-announce it prepares.
            prop_assert!(
                !handing_off || a == Action::SendGarp,
                "{a:?} after a hand-off instead of the GARP"
            );
            match a {
                Action::Transition { from, to, reason } => {
                    match reason {
                        TransitionReason::SwitchoverComplete => {
                            prop_assert_eq!((from, to), (StateKind::Master, StateKind::Backup));
                            prop_assert!(f.switchover_hold());
                        }
                        TransitionReason::Resumed => {
                            prop_assert_eq!((from, to), (StateKind::Initialize, StateKind::Master));
                            self.resumes += 1;
                        }
                        TransitionReason::PreemptLowerPriority => {
                            prop_assert!(f.is_ready() && !f.switchover_hold());
                        }
                        _ => {}
                    }
                    prop_assert_eq!(from, self.state);
                    prop_assert_ne!(from, to);
                    if pending_zero {
                        prop_assert_eq!(from, StateKind::Master);
                        // A resign (shutdown, fault) leaves for Initialize or Fault; only a
                        // pair's master yielding to a better one leaves for Backup.
                        prop_assert!(
                            to != StateKind::Backup || f.config().fast_takeover_on_zero,
                            "priority 0 before {from} -> {to}"
                        );
                        pending_zero = false;
                    }
                    self.state = to;
                    self.transitions += 1;
                    if to == StateKind::Master {
                        self.became_master += 1;
                    }
                }
                Action::AddVips => {
                    prop_assert!(!self.vips, "VIPs added twice");
                    prop_assert_eq!(self.state, StateKind::Master);
                    self.vips = true;
                }
                Action::RemoveVips => {
                    prop_assert!(self.vips, "VIPs removed while absent");
                    self.vips = false;
                }
                Action::SendGarp => {
                    // Right after claiming the VIPs, or as a re-announce by a master that
                    // holds them (a partition healing): never for VIPs we don't hold.
                    prop_assert!(self.vips, "GARP for VIPs not held");
                    prop_assert_eq!(self.state, StateKind::Master);
                    handing_off = false;
                }
                Action::HandOff { to } => {
                    // Only a master that holds the VIPs hands another router its
                    // connections, and never to itself.
                    prop_assert!(self.vips, "hand-off without the VIPs");
                    prop_assert_eq!(self.state, StateKind::Master);
                    prop_assert_ne!(to, f.config().primary_addr);
                    handing_off = true;
                }
                Action::SendAdvert { priority } => {
                    self.adverts += 1;
                    prop_assert_eq!(self.state, StateKind::Master);
                    if priority == 0 {
                        pending_zero = true;
                    } else {
                        nonzero_advert = true;
                        prop_assert_eq!(priority, f.priority());
                    }
                }
            }
        }
        prop_assert!(
            !pending_zero || f.is_resigning(),
            "priority-0 advert without leaving Master or resigning"
        );
        if f.is_resigning() {
            prop_assert_eq!(f.state(), StateKind::Master);
            prop_assert!(
                !nonzero_advert,
                "a resigning master advertised its priority"
            );
            prop_assert!(f.resign_deadline().is_some());
        }
        prop_assert_eq!(self.state, f.state());
        prop_assert_eq!(self.vips, f.state() == StateKind::Master);
        prop_assert_eq!(f.master_addr() == Some(US), f.state() == StateKind::Master);
        let c = f.counters();
        prop_assert_eq!(c.transitions, self.transitions);
        prop_assert_eq!(c.became_master, self.became_master);
        prop_assert_eq!(c.adverts_sent, self.adverts);
        prop_assert_eq!(c.resumes, self.resumes);
        prop_assert!(c.switchover_aborted <= c.switchovers);
        prop_assert!(f.priority() >= 1);
        let timed = matches!(f.state(), StateKind::Backup | StateKind::Master);
        prop_assert_eq!(f.poll_timeout().is_some(), timed);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold(
        cfg in config(),
        ops in proptest::collection::vec((0..3000u64, op()), 1..80),
    ) {
        let mut f = Fsm::new(cfg);
        let mut obs = Observer {
            state: StateKind::Initialize,
            vips: false,
            transitions: 0,
            became_master: 0,
            adverts: 0,
            resumes: 0,
        };
        let mut now = Duration::ZERO;
        for (dt, op) in ops {
            now += Duration::from_millis(dt);
            // Fire every deadline up to now, at its own time, as the shell does.
            let mut fired = 0;
            while let Some(t) = f.poll_timeout().filter(|&t| t <= now) {
                fired += 1;
                prop_assert!(fired < 100_000, "timer does not advance");
                f.handle_timeout(t);
                obs.drain(&mut f)?;
                if let Some(next) = f.poll_timeout() {
                    prop_assert!(next >= t, "deadline in the past");
                }
            }
            match op {
                Op::Startup => f.handle_startup(now),
                Op::Shutdown => f.handle_shutdown(now),
                Op::LinkDown => f.handle_link_down(now),
                Op::LinkUp => f.handle_link_up(now),
                Op::Fault(admin) => f.handle_fault(
                    if admin { FaultReason::Admin } else { FaultReason::Tracking },
                    now,
                ),
                Op::FaultCleared => f.handle_fault_cleared(now),
                Op::Priority(p) => f.set_effective_priority(p, now),
                Op::Ready(ready) => f.set_ready(ready, now),
                Op::Switchover => {
                    let was_master = f.state() == StateKind::Master;
                    prop_assert_eq!(f.handle_switchover(now), was_master);
                }
                Op::ClearHold => f.clear_switchover_hold(now),
                Op::Resume => {
                    let resumed = f.handle_startup_resume(now);
                    prop_assert_eq!(resumed, f.state() == StateKind::Master && f.counters().resumes > obs.resumes);
                }
                Op::Advert { peer, priority, interval } => f.handle_advert(
                    &Advert {
                        src: PEERS[peer],
                        priority,
                        max_adver_int_cs: interval,
                        addrs: vec![],
                    },
                    now,
                ),
            }
            obs.drain(&mut f)?;
            if let Some(next) = f.poll_timeout() {
                prop_assert!(next >= now, "deadline in the past");
            }
            let faulted = !f.link_up() || f.fault().is_some();
            prop_assert_eq!(faulted, f.state() == StateKind::Fault);
            if f.state() == StateKind::Backup {
                let (lo, hi) = f.adopt_window();
                let learned = f.master_adver_interval_cs();
                prop_assert!((lo..=hi).contains(&learned), "learned {} outside [{}, {}]", learned, lo, hi);
                let longest = timers::master_down_interval(1, f.config().advert_interval_cs);
                let deadline = f.poll_timeout().unwrap_or(now);
                prop_assert!(deadline <= now + longest, "master-down {:?} after now", deadline - now);
            }
        }
    }
}
