//! `Fsm::taken_over_from`: which takeovers leave the old master up (it resigned, or we
//! preempted it), so that the shell opens the hand-off window towards it, and which don't
//! (a master that went silent). Times are milliseconds since an arbitrary epoch.

use crate::fsm_support;

use fsm_support::*;
use vrrpd::fsm::{Action, FsmConfig, StateKind};

fn fast(p: u8) -> FsmConfig {
    FsmConfig {
        fast_takeover_on_zero: true,
        ..cfg(p)
    }
}

#[test]
fn a_resigning_master_is_handed_its_connections_with_fast_takeover() {
    let mut f = backup_with(fast(100));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(1500));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.taken_over_from(), Some(HIGHER_ADDR));
}

#[test]
fn a_resigning_master_is_handed_its_connections_after_skew_time() {
    let mut f = backup(100);
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(1500));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(f.state(), StateKind::Backup, "waits Skew_Time");
    let at = f.poll_timeout().expect("skew deadline");
    f.handle_timeout(at);
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.taken_over_from(), Some(HIGHER_ADDR));
}

#[test]
fn a_preempted_master_is_handed_its_connections() {
    let mut f = backup(100);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(3000));
    f.handle_timeout(ms(4600));
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.taken_over_from(), Some(LOWER_ADDR));
}

#[test]
fn a_silent_master_is_not() {
    let mut f = backup(100);
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(1500));
    let at = f.poll_timeout().expect("master-down deadline");
    f.handle_timeout(at);
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(f.taken_over_from(), None);
    // Nor on a cold start, with nobody heard.
    let (f, _) = master(100);
    assert_eq!(f.taken_over_from(), None);
}

#[test]
fn a_master_accepted_after_a_discard_makes_its_silence_a_plain_takeover() {
    let mut f = backup(100);
    f.handle_advert(&adv(LOWER_ADDR, 50), ms(2000));
    // Not ready any more: the discarded advert is accepted, the lower master followed.
    f.set_ready(false, ms(2500));
    f.handle_timeout(ms(2000 + 3600));
    assert_eq!(f.state(), StateKind::Master);
    assert_eq!(
        f.taken_over_from(),
        None,
        "it went silent: nobody to hand anything to"
    );
}

#[test]
fn leaving_master_forgets_the_old_master() {
    let mut f = backup_with(fast(100));
    f.handle_advert(&adv(HIGHER_ADDR, 0), ms(2000));
    assert_eq!(f.taken_over_from(), Some(HIGHER_ADDR));
    f.handle_advert(&adv(HIGHER_ADDR, 200), ms(2100));
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(f.taken_over_from(), None);
}

/// A split healing: the other master held the VIPs too. Whichever advert crosses first (its
/// worse advert, or the priority 0 it sends as it yields to us), the re-announce that
/// brings its clients back is preceded by a hand-off to it; a suppressed reply (at most one
/// per interval) asks for none.
#[test]
fn a_master_that_hears_another_master_hands_it_its_connections_before_the_garp() {
    for (other, priority) in [(LOWER_ADDR, 50), (HIGHER_ADDR, 0), (LOWER_ADDR, 100)] {
        let (mut f, since) = master(100);
        let now = since + ms(300);
        f.handle_advert(&adv(other, priority), now);
        assert_eq!(
            drain(&mut f),
            vec![
                Action::HandOff { to: other },
                Action::SendGarp,
                Action::SendAdvert { priority: 100 }
            ],
            "advert p{priority} from {other}"
        );
        f.handle_advert(&adv(other, 0), now + ms(10));
        assert_eq!(drain(&mut f), vec![], "within the interval: suppressed");
        assert_eq!(f.state(), StateKind::Master);
    }
}

#[test]
fn a_better_master_gets_no_hand_off_from_us() {
    let (mut f, since) = master(100);
    f.handle_advert(&adv(HIGHER_ADDR, 200), since + ms(300));
    let actions = drain(&mut f);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::HandOff { .. })),
        "we yield: {actions:?}"
    );
    assert_eq!(f.state(), StateKind::Backup);
}
