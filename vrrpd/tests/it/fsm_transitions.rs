//! Every transition and action of RFC 5798 §6.4 (with RFC 9568 change 5), driven with
//! injected time. Times are milliseconds since an arbitrary epoch.

use crate::fsm_support;

use std::net::Ipv4Addr;

use fsm_support::*;
use vrrpd::fsm::{Action, Advert, FaultReason, Fsm, FsmConfig, StateKind, TransitionReason as R};

// ----- Initialize -----

#[test]
fn new_machine_is_initialize_and_idle() {
    let mut f = Fsm::new(cfg(100));
    assert_eq!(f.state(), StateKind::Initialize);
    assert_eq!(f.poll_timeout(), None);
    assert_eq!(f.poll_action(), None);
    assert_eq!(f.master_addr(), None);
    assert_eq!(f.priority(), 100);
    // Timeouts and adverts do nothing before startup.
    f.handle_timeout(ms(1_000_000));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(10));
    assert_eq!(f.state(), StateKind::Initialize);
    assert_eq!(f.counters().adverts_ignored, 1);
    assert_eq!(f.counters().adverts_received, 0);
}

#[test]
fn startup_non_owner_becomes_backup_with_master_down_interval() {
    let mut f = Fsm::new(cfg(100));
    f.handle_startup(ms(1000));
    assert_eq!(
        drain(&mut f),
        vec![tr(StateKind::Initialize, StateKind::Backup, R::Startup)]
    );
    assert_eq!(f.state(), StateKind::Backup);
    // Priority 100, interval 100 cs: skew = 156*100/256 = 60 cs, MDI = 360 cs = 3.6 s.
    assert_eq!(f.poll_timeout(), Some(ms(1000 + 3600)));
    assert_eq!(f.master_adver_interval_cs(), 100);
    assert_eq!(f.state_since(), ms(1000));
    assert_eq!(f.master_addr(), None);
    assert_eq!(f.counters().transitions, 1);
    assert_eq!(f.counters().became_backup, 1);
}

#[test]
fn startup_address_owner_becomes_master_at_once() {
    let mut f = Fsm::new(cfg(255));
    f.handle_startup(ms(1000));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Initialize, StateKind::Master, R::AddressOwner),
            Action::AddVips,
            Action::SendGarp,
            Action::SendAdvert { priority: 255 },
        ]
    );
    assert_eq!(f.poll_timeout(), Some(ms(2000)));
    assert_eq!(f.master_addr(), Some(US));
    assert_eq!(f.counters().became_master, 1);
    assert_eq!(f.counters().adverts_sent, 1);
}

#[test]
fn second_startup_is_ignored() {
    let mut f = backup(100);
    let deadline = f.poll_timeout();
    f.handle_startup(ms(2000));
    assert_eq!(drain(&mut f), vec![]);
    assert_eq!(f.poll_timeout(), deadline);
}

// ----- Backup -----

#[test]
fn backup_master_down_timer_makes_master() {
    let mut f = backup(100);
    // One millisecond early: nothing.
    f.handle_timeout(ms(4599));
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(drain(&mut f), vec![]);
    f.handle_timeout(ms(4600));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Backup, StateKind::Master, R::MasterDown),
            Action::AddVips,
            Action::SendGarp,
            Action::SendAdvert { priority: 100 },
        ]
    );
    assert_eq!(f.poll_timeout(), Some(ms(5600)));
    assert_eq!(f.master_addr(), Some(US));
    assert_eq!(f.state_since(), ms(4600));
    assert_eq!(f.counters().master_down_expired, 1);
}

#[test]
fn backup_accepts_higher_priority_and_resets_timer() {
    let mut f = backup(100);
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(3000));
    assert_eq!(drain(&mut f), vec![]);
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.poll_timeout(), Some(ms(3000 + 3600)));
    assert_eq!(f.master_addr(), Some(HIGHER_ADDR));
    assert_eq!(f.counters().adverts_received, 1);
    // The old deadline passes without effect.
    f.handle_timeout(ms(4600));
    assert_eq!(f.state(), StateKind::Backup);
}

#[test]
fn backup_accepts_equal_priority_whatever_the_address() {
    let mut f = backup(100);
    f.handle_advert(&adv(LOWER_ADDR, 100), ms(3000));
    assert_eq!(f.poll_timeout(), Some(ms(6600)));
    assert_eq!(f.master_addr(), Some(LOWER_ADDR));
}

#[test]
fn backup_learns_master_adver_interval() {
    let mut f = backup(100);
    let a = Advert {
        max_adver_int_cs: 50,
        ..adv(HIGHER_ADDR, 200)
    };
    f.handle_advert(&a, ms(3000));
    assert_eq!(f.master_adver_interval_cs(), 50);
    // Interval 50 cs at priority 100: skew = 156*50/256 = 7800/256 = 30 cs, MDI = 150 + 30.
    assert_eq!(f.poll_timeout(), Some(ms(3000 + 1800)));
    assert_eq!(f.counters().interval_mismatch, 1);
    // A priority-0 advert now waits the skew of the learned interval: 30 cs.
    f.handle_advert(&Advert { priority: 0, ..a }, ms(4000));
    assert_eq!(f.poll_timeout(), Some(ms(4300)));
}

#[test]
fn backup_with_preempt_discards_lower_priority_then_takes_over() {
    let mut f = backup(100);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(3000));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(4000));
    // Timer not reset: still the startup deadline.
    assert_eq!(f.poll_timeout(), Some(ms(4600)));
    assert_eq!(f.counters().preempt_discards, 3);
    assert_eq!(f.master_addr(), None);
    f.handle_timeout(ms(4600));
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
fn backup_without_preempt_accepts_lower_priority() {
    let mut f = backup_with(FsmConfig {
        preempt: false,
        ..cfg(100)
    });
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(4000));
    assert_eq!(f.poll_timeout(), Some(ms(4000 + 3600)));
    assert_eq!(f.master_addr(), Some(LOWER_ADDR));
    f.handle_timeout(ms(4600));
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.counters().preempt_discards, 0);
}

#[test]
fn preempt_delay_holds_preemption_until_it_elapses() {
    let mut f = backup_with(FsmConfig {
        preempt_delay: ms(10_000),
        ..cfg(100)
    });
    // Started at 1000: no preemption before 11000; the lower master is accepted.
    for t in [2000, 5000, 8000, 10_999] {
        f.handle_advert(&adv(LOWER_ADDR, 50), ms(t));
        assert_eq!(f.poll_timeout(), Some(ms(t + 3600)), "accepted at {t}");
    }
    assert_eq!(f.counters().preempt_discards, 0);
    // From 11000 on, discarded: the timer armed at 10999 runs out and we preempt.
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(11_000));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(12_000));
    assert_eq!(f.poll_timeout(), Some(ms(14_599)));
    assert_eq!(f.counters().preempt_discards, 2);
    f.handle_timeout(ms(14_599));
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
fn preempt_delay_does_not_delay_takeover_from_a_silent_master() {
    let mut f = backup_with(FsmConfig {
        preempt_delay: ms(60_000),
        ..cfg(100)
    });
    f.handle_timeout(ms(4600));
    assert_eq!(f.state(), StateKind::Master);
}

#[test]
fn preempt_delay_rearms_after_restart_from_fault() {
    let mut f = backup_with(FsmConfig {
        preempt_delay: ms(10_000),
        ..cfg(100)
    });
    f.handle_link_down(ms(20_000));
    f.handle_link_up(ms(30_000));
    assert_eq!(f.state(), StateKind::Backup);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(35_000));
    assert_eq!(
        f.poll_timeout(),
        Some(ms(38_600)),
        "still inside the re-armed delay"
    );
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(40_000));
    assert_eq!(f.poll_timeout(), Some(ms(38_600)), "delay over: discarded");
}

#[test]
fn backup_priority_zero_waits_only_skew_time() {
    let mut f = backup(100);
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(2000));
    assert_eq!(f.master_addr(), Some(HIGHER_ADDR));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(3000));
    // Skew at priority 100, interval 100: 60 cs.
    assert_eq!(f.poll_timeout(), Some(ms(3600)));
    assert_eq!(f.master_addr(), None);
    assert_eq!(f.counters().priority_zero_received, 1);
    assert_eq!(drain(&mut f), vec![]);
    f.handle_timeout(ms(3600));
    assert_eq!(
        drain(&mut f)[0],
        tr(StateKind::Backup, StateKind::Master, R::MasterDown)
    );
}

#[test]
fn resignation_of_the_master_we_were_preempting_is_a_plain_takeover() {
    let mut f = backup(100);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    f.handle_advert(&adv(LOWER_ADDR, 0), ms(2500));
    assert_eq!(f.poll_timeout(), Some(ms(3100)));
    f.handle_timeout(ms(3100));
    assert_eq!(
        drain(&mut f)[0],
        tr(StateKind::Backup, StateKind::Master, R::MasterDown)
    );
}

#[test]
fn fast_takeover_on_zero_becomes_master_at_once() {
    let mut f = backup_with(FsmConfig {
        fast_takeover_on_zero: true,
        ..cfg(100)
    });
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(3000));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(
                StateKind::Backup,
                StateKind::Master,
                R::PriorityZeroReceived
            ),
            Action::AddVips,
            Action::SendGarp,
            Action::SendAdvert { priority: 100 },
        ]
    );
}

// ----- Master -----

#[test]
fn master_advert_timer_sends_and_reschedules() {
    let (mut f, since) = master(100);
    let first = since + ms(1000);
    assert_eq!(f.poll_timeout(), Some(first));
    f.handle_timeout(first - ms(1));
    assert_eq!(drain(&mut f), vec![]);
    f.handle_timeout(first);
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(f.poll_timeout(), Some(first + ms(1000)));
    // A late wakeup reschedules from now, without a burst.
    f.handle_timeout(first + ms(3500));
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(f.poll_timeout(), Some(first + ms(4500)));
    assert_eq!(f.counters().adverts_sent, 3);
}

#[test]
fn master_answers_priority_zero_at_once() {
    let (mut f, since) = master(100);
    let now = since + ms(300);
    f.handle_advert(&adv(HIGHER_ADDR, 0), now);
    // The resigner may have been master on the other side of a partition: re-announce.
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: HIGHER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 100 }
        ]
    );
    assert_eq!(f.poll_timeout(), Some(now + ms(1000)));
    assert_eq!(f.state(), StateKind::Master);
}

#[test]
fn master_yields_to_higher_priority_and_learns_interval() {
    // A window wide enough for 200 cs (the default never adopts more than our 100 cs; see
    // fsm_hostile.rs).
    let mut f = backup_with(FsmConfig {
        adopt_interval_cs: Some((25, 400)),
        ..cfg(100)
    });
    let since = f.poll_timeout().expect("master-down deadline");
    f.handle_timeout(since);
    drain(&mut f);
    let now = since + ms(300);
    f.handle_advert(
        &Advert {
            max_adver_int_cs: 200,
            ..adv(LOWER_ADDR, 150)
        },
        now,
    );
    assert_eq!(
        drain(&mut f),
        vec![
            tr(
                StateKind::Master,
                StateKind::Backup,
                R::HigherPriorityAdvert
            ),
            Action::RemoveVips,
        ]
    );
    assert_eq!(f.master_adver_interval_cs(), 200);
    // Priority 100, interval 200: skew = 156*200/256 = 31200/256 = 121 cs, MDI = 600 + 121.
    assert_eq!(f.poll_timeout(), Some(now + ms(7210)));
    assert_eq!(f.master_addr(), Some(LOWER_ADDR));
    assert_eq!(f.state_since(), now);
}

#[test]
fn master_yields_to_equal_priority_with_higher_address() {
    let (mut f, since) = master(100);
    f.handle_advert(&adv(HIGHER_ADDR, 100), since + ms(10));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(
                StateKind::Master,
                StateKind::Backup,
                R::EqualPriorityHigherAddress
            ),
            Action::RemoveVips,
        ]
    );
}

#[test]
fn address_comparison_is_numeric_not_lexical() {
    // 10.0.0.10 > 10.0.0.9 as u32 even though "10.0.0.10" < "10.0.0.9" as text.
    let mut c = cfg(100);
    c.primary_addr = Ipv4Addr::new(10, 0, 0, 9);
    let mut f = Fsm::new(c);
    f.handle_startup(ms(0));
    f.handle_timeout(ms(3600));
    drain(&mut f);
    f.handle_advert(&adv(Ipv4Addr::new(10, 0, 0, 10), 100), ms(3700));
    assert_eq!(f.state(), StateKind::Backup);
}

#[test]
fn master_answers_equal_priority_with_lower_address_and_stays() {
    let (mut f, since) = master(100);
    let now = since + ms(400);
    f.handle_advert(&adv(LOWER_ADDR, 100), now);
    // Answered at once, and the VIP re-announced: two masters means a split segment.
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: LOWER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 100 }
        ]
    );
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.poll_timeout(), Some(now + ms(1000)));
}

#[test]
fn master_answers_lower_priority_at_once_rfc9568() {
    let (mut f, since) = master(100);
    let now = since + ms(250);
    f.handle_advert(&adv(HIGHER_ADDR, 99), now);
    // Answered at once, and the VIP re-announced: two masters means a split segment.
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: HIGHER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 100 }
        ]
    );
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.poll_timeout(), Some(now + ms(1000)), "advert timer reset");
    assert_eq!(f.master_addr(), Some(US));
}

#[test]
fn owner_stays_master_against_254() {
    let mut f = Fsm::new(cfg(255));
    f.handle_startup(ms(0));
    drain(&mut f);
    f.handle_advert(&adv(HIGHER_ADDR, 254), ms(100));
    assert_eq!(f.state(), StateKind::Master);
    // Answered at once, and the VIP re-announced: two masters means a split segment.
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: HIGHER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 255 }
        ]
    );
}

// ----- own adverts -----

#[test]
fn own_adverts_are_ignored_in_every_state() {
    let mut f = backup(100);
    f.handle_advert(&adv(US, 0), ms(2000));
    f.handle_advert(&adv(US, 200), ms(2000));
    assert_eq!(f.poll_timeout(), Some(ms(4600)));
    let (mut m, since) = master(100);
    m.handle_advert(&adv(US, 200), since + ms(1));
    assert_eq!(m.state(), StateKind::Master);
    assert_eq!(drain(&mut m), vec![]);
    assert_eq!(f.counters().adverts_ignored, 2);
    assert_eq!(f.counters().adverts_received, 0);
}

// ----- Shutdown -----

#[test]
fn shutdown_master_resigns_with_priority_zero() {
    let (mut f, since) = master(100);
    let now = since + ms(500);
    f.handle_shutdown(now);
    assert_eq!(
        drain(&mut f),
        vec![
            Action::SendAdvert { priority: 0 },
            tr(StateKind::Master, StateKind::Initialize, R::Shutdown),
            Action::RemoveVips,
        ]
    );
    assert_eq!(f.poll_timeout(), None);
    assert_eq!(f.master_addr(), None);
    assert_eq!(f.counters().priority_zero_sent, 1);
    // Stopped: adverts and timeouts do nothing any more.
    f.handle_advert(&adv(HIGHER_ADDR, 200), now + ms(10));
    f.handle_timeout(now + ms(100_000));
    assert_eq!(drain(&mut f), vec![]);
    assert!(!f.is_started());
}

#[test]
fn shutdown_backup_goes_to_initialize() {
    let mut f = backup(100);
    f.handle_shutdown(ms(2000));
    assert_eq!(
        drain(&mut f),
        vec![tr(StateKind::Backup, StateKind::Initialize, R::Shutdown)]
    );
    assert_eq!(f.poll_timeout(), None);
    // It can start again.
    f.handle_startup(ms(3000));
    assert_eq!(f.state(), StateKind::Backup);
}

#[test]
fn shutdown_in_fault_stays_fault_and_does_not_restart_on_link_up() {
    let mut f = backup(100);
    f.handle_link_down(ms(2000));
    drain(&mut f);
    f.handle_shutdown(ms(3000));
    assert_eq!(f.state(), StateKind::Fault);
    assert_eq!(drain(&mut f), vec![]);
    f.handle_link_up(ms(4000));
    assert_eq!(
        drain(&mut f),
        vec![tr(StateKind::Fault, StateKind::Initialize, R::LinkUp)]
    );
}

// ----- Link and faults -----

#[test]
fn link_down_master_removes_vips_without_advert() {
    let (mut f, since) = master(100);
    f.handle_link_down(since + ms(1));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Master, StateKind::Fault, R::LinkDown),
            Action::RemoveVips,
        ]
    );
    assert_eq!(f.poll_timeout(), None);
    assert_eq!(f.counters().entered_fault, 1);
    f.handle_advert(&adv(HIGHER_ADDR, 200), since + ms(2));
    assert_eq!(f.state(), StateKind::Fault);
    // A repeated link-down is not a second transition.
    f.handle_link_down(since + ms(3));
    assert_eq!(drain(&mut f), vec![]);
}

#[test]
fn link_down_backup_then_up_restarts() {
    let mut f = backup(100);
    f.handle_link_down(ms(2000));
    assert_eq!(
        drain(&mut f),
        vec![tr(StateKind::Backup, StateKind::Fault, R::LinkDown)]
    );
    f.handle_link_up(ms(5000));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Fault, StateKind::Initialize, R::LinkUp),
            tr(StateKind::Initialize, StateKind::Backup, R::Startup),
        ]
    );
    assert_eq!(f.poll_timeout(), Some(ms(5000 + 3600)));
}

#[test]
fn link_up_owner_becomes_master_again() {
    let mut f = Fsm::new(cfg(255));
    f.handle_startup(ms(0));
    f.handle_link_down(ms(10));
    f.handle_link_up(ms(20));
    let actions = drain(&mut f);
    assert_eq!(
        actions[actions.len() - 4..],
        [
            tr(StateKind::Initialize, StateKind::Master, R::AddressOwner),
            Action::AddVips,
            Action::SendGarp,
            Action::SendAdvert { priority: 255 },
        ]
    );
}

#[test]
fn link_down_before_startup_defers_start_to_link_up() {
    let mut f = Fsm::new(cfg(100));
    f.handle_link_down(ms(0));
    assert_eq!(f.state(), StateKind::Fault);
    f.handle_startup(ms(10));
    assert_eq!(f.state(), StateKind::Fault);
    f.handle_link_up(ms(20));
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.poll_timeout(), Some(ms(20 + 3600)));
}

#[test]
fn local_fault_master_resigns_then_recovers() {
    let (mut f, since) = master(100);
    f.handle_fault(FaultReason::Tracking, since + ms(5));
    assert_eq!(
        drain(&mut f),
        vec![
            Action::SendAdvert { priority: 0 },
            tr(
                StateKind::Master,
                StateKind::Fault,
                R::Fault(FaultReason::Tracking)
            ),
            Action::RemoveVips,
        ]
    );
    assert_eq!(f.fault(), Some(FaultReason::Tracking));
    f.handle_fault_cleared(since + ms(100));
    assert_eq!(
        drain(&mut f),
        vec![
            tr(StateKind::Fault, StateKind::Initialize, R::FaultCleared),
            tr(StateKind::Initialize, StateKind::Backup, R::Startup),
        ]
    );
}

#[test]
fn fault_needs_both_link_and_local_fault_cleared() {
    let mut f = backup(100);
    f.handle_link_down(ms(2000));
    f.handle_fault(FaultReason::Admin, ms(2100));
    drain(&mut f);
    f.handle_link_up(ms(3000));
    assert_eq!(f.state(), StateKind::Fault);
    f.handle_fault_cleared(ms(4000));
    assert_eq!(f.state(), StateKind::Backup);
    // And the other order.
    f.handle_fault(FaultReason::Admin, ms(5000));
    f.handle_link_down(ms(5100));
    f.handle_fault_cleared(ms(6000));
    assert_eq!(f.state(), StateKind::Fault);
    f.handle_link_up(ms(7000));
    assert_eq!(f.state(), StateKind::Backup);
}

// ----- Effective priority (tracking) -----

#[test]
fn master_advertises_changed_priority_at_once() {
    let (mut f, since) = master(100);
    let now = since + ms(300);
    f.set_effective_priority(80, now);
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 80 }]);
    assert_eq!(f.priority(), 80);
    assert_eq!(f.poll_timeout(), Some(now + ms(1000)));
    // Unchanged: nothing.
    f.set_effective_priority(80, now);
    assert_eq!(drain(&mut f), vec![]);
    // Now an advert at 90 wins over us.
    f.handle_advert(&adv(LOWER_ADDR, 90), now + ms(10));
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.counters().priority_changes, 1);
}

#[test]
fn effective_priority_is_clamped() {
    let mut f = backup(100);
    f.set_effective_priority(0, ms(0));
    assert_eq!(f.priority(), 1);
    f.set_effective_priority(255, ms(0));
    assert_eq!(f.priority(), 254, "only a configured owner may be 255");
    let mut owner = Fsm::new(cfg(255));
    owner.set_effective_priority(200, ms(0));
    assert_eq!(owner.priority(), 200);
    owner.set_effective_priority(255, ms(0));
    assert_eq!(owner.priority(), 255);
}

#[test]
fn backup_compares_with_effective_priority() {
    let mut f = backup(100);
    f.set_effective_priority(120, ms(1500));
    // 110 < 120 now: discarded (preempt on).
    f.handle_advert(&adv(HIGHER_ADDR, 110), ms(2000));
    assert_eq!(f.counters().preempt_discards, 1);
    f.set_effective_priority(110, ms(2500));
    // 110 >= 110: accepted.
    f.handle_advert(&adv(HIGHER_ADDR, 110), ms(3000));
    assert_eq!(f.master_addr(), Some(HIGHER_ADDR));
    // Backup timers use the effective priority: 110 -> skew = 146*100/256 = 57 cs.
    assert_eq!(f.poll_timeout(), Some(ms(3000 + 3570)));
}

#[test]
fn tracked_down_owner_starts_as_backup() {
    let mut f = Fsm::new(cfg(255));
    f.set_effective_priority(200, ms(0));
    f.handle_startup(ms(0));
    assert_eq!(f.state(), StateKind::Backup);
}

// ----- Bookkeeping -----

#[test]
fn mismatching_address_lists_are_accepted_and_counted() {
    let mut f = backup(100);
    let a = Advert {
        addrs: vec![VIP, Ipv4Addr::new(10, 0, 0, 101)],
        ..adv(HIGHER_ADDR, 200)
    };
    f.handle_advert(&a, ms(2000));
    assert_eq!(f.master_addr(), Some(HIGHER_ADDR));
    assert_eq!(f.counters().addr_mismatch, 1);
    // The same set in another order is not a mismatch.
    let mut g = backup_with(FsmConfig {
        vips: vec![VIP, LOWER_ADDR],
        ..cfg(100)
    });
    g.handle_advert(
        &Advert {
            addrs: vec![LOWER_ADDR, VIP],
            ..adv(HIGHER_ADDR, 200)
        },
        ms(2000),
    );
    assert_eq!(g.counters().addr_mismatch, 0);
}

#[test]
fn transition_counts_and_labels() {
    let (mut f, _) = master(100);
    f.handle_shutdown(ms(100_000));
    let c = f.counters();
    assert_eq!((c.transitions, c.became_backup, c.became_master), (3, 1, 1));
    assert_eq!(StateKind::Master.as_str(), "master");
    assert_eq!(StateKind::Fault.to_string(), "fault");
    assert_eq!(
        R::PreemptLowerPriority.to_string(),
        "preempt_lower_priority"
    );
    assert_eq!(R::Fault(FaultReason::Admin).as_str(), "fault_admin");
}

#[test]
fn serializes_lower_case() {
    let s = serde_json::to_string(&StateKind::ALL).expect("serializes");
    assert_eq!(s, r#"["initialize","backup","master","fault"]"#);
}

#[test]
fn out_of_range_config_is_clamped() {
    let mut f = Fsm::new(FsmConfig {
        priority: 0,
        advert_interval_cs: 0,
        ..cfg(100)
    });
    f.handle_startup(ms(0));
    assert_eq!(f.priority(), 1);
    // Interval 1 cs, priority 1: skew = 255/256 = 0, MDI = 3 cs.
    assert_eq!(f.poll_timeout(), Some(ms(30)));
}

/// A pair's master that yields to a better one (a partition healing) says so with one
/// priority-0 advert, so the winner knows to re-announce the VIP to clients on our side.
#[test]
fn pair_master_yielding_sends_priority_zero_first() {
    let mut f = backup_with(FsmConfig {
        fast_takeover_on_zero: true,
        ..cfg(100)
    });
    let at = f.poll_timeout().expect("master-down deadline");
    f.handle_timeout(at);
    drain(&mut f);
    f.handle_advert(&adv(LOWER_ADDR, 150), at + ms(300));
    assert_eq!(
        drain(&mut f),
        vec![
            Action::SendAdvert { priority: 0 },
            tr(
                StateKind::Master,
                StateKind::Backup,
                R::HigherPriorityAdvert
            ),
            Action::RemoveVips,
        ]
    );
}

// ----- primary address changes -----

#[test]
fn a_new_primary_address_decides_equal_priority_ties_and_own_adverts() {
    let between = Ipv4Addr::new(10, 0, 0, 7);
    let new_primary = Ipv4Addr::new(10, 0, 0, 8);

    // With the old address (10.0.0.5), an equal-priority advert from 10.0.0.7 wins.
    let (mut old, at) = master(100);
    old.handle_advert(&adv(between, 100), at + ms(10));
    assert_eq!(old.state(), StateKind::Backup);

    // After the interface is readdressed to 10.0.0.8, the same advert loses the tie.
    let (mut f, at) = master(100);
    f.set_primary_addr(new_primary);
    assert_eq!(f.config().primary_addr, new_primary);
    assert_eq!(f.master_addr(), Some(new_primary));
    f.handle_advert(&adv(between, 100), at + ms(10));
    assert_eq!(f.state(), StateKind::Master);

    // An advert from the new address is our own (looped back), whatever its priority.
    let ignored = f.counters().adverts_ignored;
    f.handle_advert(&adv(new_primary, 255), at + ms(20));
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.counters().adverts_ignored, ignored + 1);
}
