//! The HA pair's additions to the state machine, driven with injected time: the
//! readiness gate on preemption, resuming after a restart, and the existing behaviours the
//! pair relies on (a Master advertises a priority drop at once, a local fault sends priority 0
//! first, fast takeover on priority 0). The switchover is in `fsm_switchover.rs`. Times are
//! milliseconds since an arbitrary epoch.

use crate::fsm_support;

use fsm_support::*;
use vrrpd::fsm::{Action, FaultReason, Fsm, FsmConfig, StateKind, TransitionReason as R};

// ----- readiness gate -----

#[test]
fn ready_by_default() {
    let f = Fsm::new(cfg(100));
    assert!(f.is_ready());
    assert!(!f.switchover_hold());
    assert!(!f.is_resigning());
}

#[test]
fn not_ready_backup_accepts_a_lower_master_instead_of_preempting() {
    let mut f = backup_with(cfg(100));
    f.set_ready(false, ms(1500));
    assert!(!f.is_ready());
    assert_eq!(drain(&mut f), vec![], "readiness is not a transition");
    for t in [2000, 3000, 6000] {
        f.handle_advert(&adv(LOWER_ADDR, 50), ms(t));
        assert_eq!(f.poll_timeout(), Some(ms(t + 3600)), "accepted at {t}");
    }
    assert_eq!(f.master_addr(), Some(LOWER_ADDR));
    assert_eq!(f.counters().preempt_discards, 0);
    // Ready again: the next lower advert is discarded and the timer armed at 6000 runs out.
    f.set_ready(true, ms(6500));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(7000));
    assert_eq!(f.counters().preempt_discards, 1);
    f.handle_timeout(ms(9600));
    assert_eq!(
        drain(&mut f)[0],
        tr(
            StateKind::Backup,
            StateKind::Master,
            R::PreemptLowerPriority
        )
    );
}

#[test]
fn readiness_and_preempt_delay_must_both_allow_preemption() {
    let mut f = backup_with(FsmConfig {
        preempt_delay: ms(5000),
        ..cfg(100)
    });
    // Ready, but inside the delay (started at 1000, delay until 6000): accepted.
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    assert_eq!(f.poll_timeout(), Some(ms(5600)));
    // Delay over, but not ready: accepted.
    f.set_ready(false, ms(5500));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(6000));
    assert_eq!(f.poll_timeout(), Some(ms(9600)));
    // Both: discarded.
    f.set_ready(true, ms(6500));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(7000));
    assert_eq!(f.poll_timeout(), Some(ms(9600)));
    assert_eq!(f.counters().preempt_discards, 1);
}

#[test]
fn losing_readiness_mid_preemption_accepts_the_last_discarded_advert() {
    let mut f = backup_with(cfg(100));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(3000));
    assert_eq!(
        f.poll_timeout(),
        Some(ms(4600)),
        "preempting: timer not reset"
    );
    f.set_ready(false, ms(3500));
    // As if the advert at 3000 had been accepted: no preemption at 4600.
    assert_eq!(f.poll_timeout(), Some(ms(3000 + 3600)));
    assert_eq!(f.master_addr(), Some(LOWER_ADDR));
    f.handle_timeout(ms(4600));
    assert_eq!(f.state(), StateKind::Backup);
    // And if that master then goes silent, the takeover is a plain master-down.
    f.handle_timeout(ms(6600));
    assert_eq!(
        drain(&mut f)[0],
        tr(StateKind::Backup, StateKind::Master, R::MasterDown)
    );
}

#[test]
fn losing_readiness_long_after_the_last_discard_takes_over_now_not_in_the_past() {
    let mut f = backup_with(cfg(100));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(1100));
    // The startup deadline (4600) has not been fired yet by a late shell; the discarded
    // advert's own deadline (1100 + 3600 = 4700) has passed too.
    f.set_ready(false, ms(5000));
    assert_eq!(f.poll_timeout(), Some(ms(5000)));
    f.handle_timeout(ms(5000));
    assert_eq!(
        drain(&mut f)[0],
        tr(StateKind::Backup, StateKind::Master, R::MasterDown)
    );
}

#[test]
fn not_ready_never_blocks_takeover_from_a_silent_master() {
    let mut f = backup_with(cfg(100));
    f.set_ready(false, ms(1000));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(2000));
    f.handle_timeout(ms(5600));
    assert_eq!(f.state(), StateKind::Master);
}

#[test]
fn not_ready_never_blocks_takeover_on_priority_zero() {
    let mut f = backup_with(cfg(100));
    f.set_ready(false, ms(1000));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    f.handle_timeout(ms(2600));
    assert_eq!(f.state(), StateKind::Master);
    let mut g = backup_with(FsmConfig {
        fast_takeover_on_zero: true,
        ..cfg(100)
    });
    g.set_ready(false, ms(1000));
    g.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(g.state(), StateKind::Master);
}

#[test]
fn readiness_does_not_affect_a_master() {
    let (mut f, since) = master(100);
    f.set_ready(false, since + ms(10));
    assert_eq!(drain(&mut f), vec![]);
    assert_eq!(f.state(), StateKind::Master);
}

// ----- resume after a restart -----

#[test]
fn resume_becomes_master_at_once_and_reannounces() {
    let mut f = Fsm::new(cfg(100));
    assert!(f.handle_startup_resume(ms(1000)));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Initialize, StateKind::Master, R::Resumed),
            Action::AddVips,
            Action::SendGarp,
            Action::SendAdvert { priority: 100 },
        ]
    );
    assert_eq!(f.poll_timeout(), Some(ms(2000)));
    assert_eq!(f.master_addr(), Some(US));
    assert_eq!(f.counters().resumes, 1);
    assert!(f.is_started());
    // Once started, neither startup variant does anything.
    assert!(!f.handle_startup_resume(ms(1100)));
    f.handle_startup(ms(1100));
    assert_eq!(drain(&mut f), vec![]);
}

#[test]
fn resumed_master_yields_to_a_better_master() {
    for (src, p, reason) in [
        (LOWER_ADDR, 150, R::HigherPriorityAdvert),
        (HIGHER_ADDR, 100, R::EqualPriorityHigherAddress),
    ] {
        let mut f = Fsm::new(cfg(100));
        f.handle_startup_resume(ms(0));
        drain(&mut f);
        f.handle_advert(&adv(src, p), ms(5));
        assert_eq!(
            drain(&mut f),
            vec![
                tr(StateKind::Master, StateKind::Backup, reason),
                Action::RemoveVips,
            ]
        );
    }
}

#[test]
fn resumed_master_keeps_mastership_against_a_worse_one() {
    let mut f = Fsm::new(cfg(100));
    f.handle_startup_resume(ms(0));
    drain(&mut f);
    f.handle_advert(&adv(HIGHER_ADDR, 90), ms(5));
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: HIGHER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 100 }
        ]
    );
    assert_eq!(f.state(), StateKind::Master);
}

#[test]
fn resume_with_link_down_or_fault_reports_false_and_starts_normally_later() {
    let mut f = Fsm::new(cfg(100));
    f.handle_link_down(ms(0));
    drain(&mut f);
    assert!(!f.handle_startup_resume(ms(10)));
    assert!(f.is_started());
    f.handle_link_up(ms(20));
    assert_eq!(f.state(), StateKind::Backup, "normal start, not a resume");
    assert_eq!(f.counters().resumes, 0);
    let mut g = Fsm::new(cfg(100));
    g.handle_fault(FaultReason::Tracking, ms(0));
    assert!(!g.handle_startup_resume(ms(10)));
    assert_eq!(g.state(), StateKind::Fault);
}

#[test]
fn resume_arms_preempt_delay() {
    let mut f = Fsm::new(FsmConfig {
        preempt_delay: ms(10_000),
        ..cfg(100)
    });
    f.handle_startup_resume(ms(0));
    // Lose to a better master, then hear a lower one inside the delay: accepted.
    f.handle_advert(&adv(LOWER_ADDR, 150), ms(10));
    assert_eq!(f.state(), StateKind::Backup);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(1000));
    assert_eq!(f.poll_timeout(), Some(ms(4600)));
    assert_eq!(f.counters().preempt_discards, 0);
}

// ----- existing behaviour the pair relies on -----

#[test]
fn pair_master_advertises_a_priority_drop_at_once_and_the_backup_preempts() {
    let (mut f, since) = master(150);
    let t = since + ms(100);
    f.set_effective_priority(50, t);
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 50 }]);
    // The peer (priority 100, preempt) discards priority 50 and takes over; its advert makes
    // us yield.
    let mut peer = backup_with(FsmConfig {
        primary_addr: HIGHER_ADDR,
        ..cfg(100)
    });
    peer.handle_advert(&adv(US, 150), t - ms(100));
    peer.handle_advert(&adv(US, 50), t);
    assert_eq!(peer.counters().preempt_discards, 1);
    let at = peer.poll_timeout().expect("deadline");
    peer.handle_timeout(at);
    assert_eq!(peer.state(), StateKind::Master);
    f.handle_advert(&adv(HIGHER_ADDR, 100), at);
    assert_eq!(f.state(), StateKind::Backup);
}

#[test]
fn pair_fault_on_master_sends_priority_zero_before_releasing() {
    let (mut f, since) = master(100);
    f.handle_fault(FaultReason::Tracking, since + ms(1));
    let actions = drain(&mut f);
    assert_eq!(actions[0], Action::SendAdvert { priority: 0 });
    assert_eq!(actions[2], Action::RemoveVips);
}

#[test]
fn pair_fast_takeover_on_zero_is_immediate_even_when_not_ready() {
    let mut f = backup_with(FsmConfig {
        fast_takeover_on_zero: true,
        ..cfg(100)
    });
    f.set_ready(false, ms(1000));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(1500));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(
        drain(&mut f)[0],
        tr(
            StateKind::Backup,
            StateKind::Master,
            R::PriorityZeroReceived
        )
    );
    assert_eq!(f.state_since(), ms(2000));
}

#[test]
fn repeated_priority_zero_never_postpones_the_takeover() {
    let mut f = backup_with(cfg(1));
    // Skew at priority 1, interval 100 cs: 255*100/256 = 99 cs.
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(f.poll_timeout(), Some(ms(2990)));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2980));
    assert_eq!(f.poll_timeout(), Some(ms(2990)));
}

#[test]
fn new_labels() {
    assert_eq!(R::SwitchoverComplete.as_str(), "switchover_complete");
    assert_eq!(R::Resumed.to_string(), "resumed");
    assert_eq!(
        serde_json::to_string(&R::SwitchoverComplete).expect("serializes"),
        r#""switchover_complete""#
    );
}

#[test]
fn backup_ignores_a_late_priority_zero_from_a_router_it_does_not_follow() {
    let mut f = backup_with(cfg(100));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(2000));
    // A router that handed over earlier repeats priority 0: we follow HIGHER_ADDR now.
    f.handle_advert(&adv(LOWER_ADDR, 0), ms(2100));
    assert_eq!(f.poll_timeout(), Some(ms(5600)));
    assert_eq!(f.master_addr(), Some(HIGHER_ADDR));
    assert_eq!(f.counters().priority_zero_received, 1, "still counted");
    // From the master we follow: Skew_Time.
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2200));
    assert_eq!(f.poll_timeout(), Some(ms(2800)));
    assert_eq!(f.master_addr(), None);
}
