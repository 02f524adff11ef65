//! The make-before-break switchover, driven with injected time: priority 0 while
//! resigning with the VIPs kept, completion on the new master's advert, the abort after
//! Master_Down_Interval + one interval, the preemption hold, shutdown and faults while
//! resigning, and two machines back to back checking make-before-break. Times are
//! milliseconds since an arbitrary epoch.

use crate::fsm_support;

use fsm_support::*;
use vrrpd::fsm::{Action, Advert, FaultReason, Fsm, FsmConfig, StateKind, TransitionReason as R};

// ----- switchover -----

#[test]
fn switchover_is_refused_unless_master() {
    let mut f = Fsm::new(cfg(100));
    assert!(!f.handle_switchover(ms(0)));
    f.handle_startup(ms(0));
    drain(&mut f);
    assert!(!f.handle_switchover(ms(10)));
    assert_eq!(drain(&mut f), vec![]);
    assert_eq!(f.counters().switchovers, 0);
}

#[test]
fn switchover_keeps_vips_and_advertises_priority_zero_every_interval() {
    let (mut f, since) = master(100);
    let t = since + ms(300);
    assert!(f.handle_switchover(t));
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 0 }]);
    assert_eq!(f.state(), StateKind::Master, "stays master, keeps the VIPs");
    assert!(f.is_resigning());
    assert_eq!(f.master_addr(), Some(US));
    // Abort deadline: MDI at priority 100 (3.6 s) + one interval.
    assert_eq!(f.resign_deadline(), Some(t + ms(4600)));
    assert_eq!(f.poll_timeout(), Some(t + ms(1000)));
    f.handle_timeout(t + ms(1000));
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 0 }]);
    assert_eq!(f.poll_timeout(), Some(t + ms(2000)));
    // Again: nothing new, still the same deadline.
    assert!(f.handle_switchover(t + ms(1500)));
    assert_eq!(drain(&mut f), vec![]);
    assert_eq!(f.resign_deadline(), Some(t + ms(4600)));
    let c = f.counters();
    assert_eq!((c.switchovers, c.priority_zero_sent), (1, 2));
}

#[test]
fn switchover_completes_when_the_new_master_advertises_whatever_its_priority() {
    for their_priority in [1u8, 50, 100, 200, 255] {
        for src in [LOWER_ADDR, HIGHER_ADDR] {
            let (mut f, since) = master(100);
            let t = since + ms(100);
            f.handle_switchover(t);
            drain(&mut f);
            let a = Advert {
                max_adver_int_cs: 50,
                ..adv(src, their_priority)
            };
            f.handle_advert(&a, t + ms(700));
            assert_eq!(
                drain(&mut f),
                vec![
                    tr(StateKind::Master, StateKind::Backup, R::SwitchoverComplete),
                    Action::RemoveVips,
                ],
                "priority {their_priority} from {src}"
            );
            assert!(!f.is_resigning());
            assert!(f.switchover_hold());
            assert_eq!(f.master_addr(), Some(src));
            assert_eq!(f.master_adver_interval_cs(), 50);
            assert_eq!(f.resign_deadline(), None);
        }
    }
}

#[test]
fn resigning_master_ignores_priority_zero_without_answering() {
    let (mut f, since) = master(100);
    let t = since + ms(100);
    f.handle_switchover(t);
    drain(&mut f);
    f.handle_advert(&adv(HIGHER_ADDR, 0), t + ms(10));
    assert_eq!(drain(&mut f), vec![]);
    assert!(f.is_resigning());
}

#[test]
fn switchover_aborts_when_nobody_takes_over() {
    let (mut f, since) = master(100);
    let t = since + ms(100);
    f.handle_switchover(t);
    drain(&mut f);
    let deadline = t + ms(4600);
    let mut zeros = 1;
    while let Some(next) = f.poll_timeout().filter(|&n| n < deadline) {
        f.handle_timeout(next);
        assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 0 }]);
        zeros += 1;
    }
    assert_eq!(zeros, 5, "at t, t+1s .. t+4s");
    assert_eq!(f.poll_timeout(), Some(deadline));
    f.handle_timeout(deadline);
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 100 }]);
    assert_eq!(f.state(), StateKind::Master);
    assert!(!f.is_resigning());
    assert!(!f.switchover_hold());
    assert_eq!(f.poll_timeout(), Some(deadline + ms(1000)));
    assert_eq!(f.counters().switchover_aborted, 1);
    // Normal master again: it answers a worse advert with its real priority.
    f.handle_advert(&adv(LOWER_ADDR, 50), deadline + ms(10));
    assert_eq!(
        drain(&mut f),
        vec![
            Action::HandOff { to: LOWER_ADDR },
            Action::SendGarp,
            Action::SendAdvert { priority: 100 }
        ]
    );
}

#[test]
fn priority_change_while_resigning_is_not_advertised_but_used_on_abort() {
    let (mut f, since) = master(100);
    let t = since + ms(100);
    f.handle_switchover(t);
    drain(&mut f);
    f.set_effective_priority(80, t + ms(200));
    assert_eq!(drain(&mut f), vec![]);
    f.handle_timeout(t + ms(1000));
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 0 }]);
    f.handle_timeout(t + ms(4600));
    assert_eq!(drain(&mut f), vec![Action::SendAdvert { priority: 80 }]);
}

#[test]
fn shutdown_of_a_resigning_master_sends_priority_zero_and_removes_vips() {
    let (mut f, since) = master(100);
    let t = since + ms(100);
    f.handle_switchover(t);
    drain(&mut f);
    f.handle_shutdown(t + ms(500));
    assert_eq!(
        drain(&mut f),
        vec![
            Action::SendAdvert { priority: 0 },
            tr(StateKind::Master, StateKind::Initialize, R::Shutdown),
            Action::RemoveVips,
        ]
    );
    assert_eq!(f.poll_timeout(), None);
    assert!(!f.is_resigning());
}

#[test]
fn shutdown_after_a_completed_switchover_is_a_backup_shutdown() {
    let (mut f, since) = master(100);
    f.handle_switchover(since);
    f.handle_advert(&adv(LOWER_ADDR, 50), since + ms(600));
    drain(&mut f);
    f.handle_shutdown(since + ms(700));
    assert_eq!(
        drain(&mut f),
        vec![tr(StateKind::Backup, StateKind::Initialize, R::Shutdown)]
    );
}

#[test]
fn fault_and_link_down_while_resigning() {
    let (mut f, since) = master(100);
    f.handle_switchover(since);
    drain(&mut f);
    f.handle_fault(FaultReason::Tracking, since + ms(10));
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
    let (mut g, since) = master(100);
    g.handle_switchover(since);
    drain(&mut g);
    g.handle_link_down(since + ms(10));
    assert_eq!(
        drain(&mut g),
        vec![
            tr(StateKind::Master, StateKind::Fault, R::LinkDown),
            Action::RemoveVips,
        ]
    );
}

#[test]
fn switchover_hold_blocks_preemption_until_cleared() {
    let (mut f, since) = master(100);
    f.handle_switchover(since);
    let t = since + ms(600);
    f.handle_advert(&adv(LOWER_ADDR, 50), t);
    drain(&mut f);
    // Held: the lower new master is accepted, no preemption back.
    for k in 1..=5u64 {
        f.handle_advert(&adv(LOWER_ADDR, 50), t + ms(1000 * k));
        assert_eq!(f.poll_timeout(), Some(t + ms(1000 * k + 3600)));
    }
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.counters().preempt_discards, 0);
    // The hold survives a fault.
    f.handle_fault(FaultReason::Admin, t + ms(5500));
    f.handle_fault_cleared(t + ms(5600));
    assert!(f.switchover_hold());
    // Resume: discards and takes over when the timer runs out.
    f.clear_switchover_hold(t + ms(6000));
    assert!(!f.switchover_hold());
    drain(&mut f);
    f.handle_advert(&adv(LOWER_ADDR, 50), t + ms(7000));
    assert_eq!(f.counters().preempt_discards, 1);
    let at = f.poll_timeout().expect("deadline");
    f.handle_timeout(at);
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
fn switchover_hold_never_blocks_takeover_from_a_silent_master() {
    let (mut f, since) = master(100);
    f.handle_switchover(since);
    f.handle_advert(&adv(LOWER_ADDR, 50), since + ms(600));
    drain(&mut f);
    let at = f.poll_timeout().expect("deadline");
    assert_eq!(at, since + ms(600 + 3600));
    f.handle_timeout(at);
    assert_eq!(
        drain(&mut f)[0],
        tr(StateKind::Backup, StateKind::Master, R::MasterDown)
    );
}

/// Two machines wired back to back with zero delay: the old master releases its VIPs only
/// after the new one has added them (make-before-break), at every step.
#[test]
fn switchover_between_two_machines_is_make_before_break() {
    for fast in [false, true] {
        let c = |p, addr| FsmConfig {
            primary_addr: addr,
            fast_takeover_on_zero: fast,
            ..cfg(p)
        };
        let mut nodes = [Fsm::new(c(200, US)), Fsm::new(c(100, LOWER_ADDR))];
        let mut vips = [false, false];
        let mut inbox: Vec<(usize, Advert)> = Vec::new();
        let mut now = ms(0);
        let pump =
            |nodes: &mut [Fsm; 2], vips: &mut [bool; 2], inbox: &mut Vec<(usize, Advert)>| {
                for (i, f) in nodes.iter_mut().enumerate() {
                    while let Some(a) = f.poll_action() {
                        match a {
                            Action::AddVips => vips[i] = true,
                            Action::RemoveVips => {
                                vips[i] = false;
                                assert!(vips[1 - i], "released before the other holds the VIPs");
                            }
                            Action::SendAdvert { priority } => {
                                let src = f.config().primary_addr;
                                inbox.push((1 - i, adv(src, priority)));
                            }
                            _ => {}
                        }
                    }
                }
            };
        nodes[0].handle_startup(now);
        nodes[1].handle_startup(now);
        // Run until settled with node 0 (200) as master, then switch over.
        let mut switched_at = None;
        while now < ms(30_000) {
            pump(&mut nodes, &mut vips, &mut inbox);
            while !inbox.is_empty() {
                let (to, a) = inbox.remove(0);
                nodes[to].handle_advert(&a, now);
                pump(&mut nodes, &mut vips, &mut inbox);
            }
            if switched_at.is_none() && now >= ms(10_000) {
                assert_eq!(nodes[0].state(), StateKind::Master);
                assert!(nodes[0].handle_switchover(now));
                switched_at = Some(now);
                continue;
            }
            if switched_at.is_some() {
                assert!(vips[0] || vips[1], "nobody holds the VIPs at {now:?}");
            }
            now = nodes
                .iter()
                .filter_map(Fsm::poll_timeout)
                .min()
                .expect("a running machine has a deadline");
            for f in &mut nodes {
                f.handle_timeout(now);
            }
        }
        assert_eq!(nodes[0].state(), StateKind::Backup, "fast {fast}");
        assert_eq!(nodes[1].state(), StateKind::Master, "fast {fast}");
        assert!(nodes[0].switchover_hold());
        assert_eq!(nodes[0].counters().switchover_aborted, 0);
        assert_eq!(vips, [false, true]);
    }
}

// ----- which exits from Master hand the VIPs to a new master -----

/// Every reason, so a new one must be classified here (the match below is exhaustive).
fn every_reason() -> Vec<R> {
    let all = [
        R::Startup,
        R::AddressOwner,
        R::MasterDown,
        R::PreemptLowerPriority,
        R::PriorityZeroReceived,
        R::HigherPriorityAdvert,
        R::EqualPriorityHigherAddress,
        R::Shutdown,
        R::LinkDown,
        R::LinkUp,
        R::Fault(FaultReason::Tracking),
        R::Fault(FaultReason::Admin),
        R::FaultCleared,
        R::SwitchoverComplete,
        R::Resumed,
    ];
    for r in all {
        // Fails to compile when a variant is added: add it to the list above too.
        match r {
            R::Startup
            | R::AddressOwner
            | R::MasterDown
            | R::PreemptLowerPriority
            | R::PriorityZeroReceived
            | R::HigherPriorityAdvert
            | R::EqualPriorityHigherAddress
            | R::Shutdown
            | R::LinkDown
            | R::LinkUp
            | R::Fault(_)
            | R::FaultCleared
            | R::SwitchoverComplete
            | R::Resumed => {}
        }
    }
    all.to_vec()
}

/// The shell keeps the VIPs until lbd is idle exactly when another router has become master
/// (a switchover completed, or a better master appeared: preemption, a healed partition),
/// and lbd acks such a `backup` only once idle: both sides must agree on the labels.
#[test]
fn hand_over_reasons_are_the_yields_to_a_new_master_and_lbd_knows_their_labels() {
    let handed: Vec<R> = every_reason()
        .into_iter()
        .filter(|r| r.hands_over_to_new_master())
        .collect();
    assert_eq!(
        handed,
        vec![
            R::HigherPriorityAdvert,
            R::EqualPriorityHigherAddress,
            R::SwitchoverComplete
        ]
    );
    let labels: Vec<&str> = handed.iter().map(|r| r.as_str()).collect();
    let mut shared_labels = shared::control::HANDED_OVER_REASONS.to_vec();
    shared_labels.sort_unstable();
    let mut labels_sorted = labels.clone();
    labels_sorted.sort_unstable();
    assert_eq!(labels_sorted, shared_labels);
}

/// A preempted master's exit: `Transition` (lbd hears `backup` with the reason that makes
/// it ack once idle) before `RemoveVips` (which the shell then defers until that ack).
#[test]
fn preempted_master_tells_lbd_before_removing_the_vips() {
    let (mut f, since) = master(100);
    let t = since + ms(300);
    f.handle_advert(&adv(LOWER_ADDR, 200), t);
    let actions = drain(&mut f);
    assert_eq!(
        actions,
        vec![
            Action::Transition {
                from: StateKind::Master,
                to: StateKind::Backup,
                reason: R::HigherPriorityAdvert
            },
            Action::RemoveVips,
        ]
    );
    assert!(R::HigherPriorityAdvert.hands_over_to_new_master());
}
