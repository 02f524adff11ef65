//! The state machine against forged or flooding adverts: the adopted advert
//! interval stays inside the adopt window, so one forged Max Adver Int can't hold the VIP
//! with nobody, and a Master answers worse adverts at most once per interval.

use crate::fsm_support;

use std::time::Duration;

use fsm_support::*;
use vrrpd::fsm::{default_adopt_window, Action, Advert, Fsm, FsmConfig, StateKind};
use vrrpd::timers;

fn forged(priority: u8, interval_cs: u16) -> Advert {
    Advert {
        max_adver_int_cs: interval_cs,
        ..adv(HIGHER_ADDR, priority)
    }
}

fn adverts_sent(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::SendAdvert { .. }))
        .count()
}

fn garps(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::SendGarp))
        .count()
}

#[test]
fn default_window_is_a_quarter_up_to_our_interval() {
    assert_eq!(default_adopt_window(100), (25, 100));
    assert_eq!(default_adopt_window(10), (2, 10));
    assert_eq!(default_adopt_window(3), (1, 3));
    assert_eq!(default_adopt_window(1), (1, 1));
    assert_eq!(default_adopt_window(4095), (1023, 4095));
    assert_eq!(Fsm::new(cfg(100)).adopt_window(), (25, 100));
}

/// The attack: priority 200 and Max Adver Int 4095 make the master yield. It must
/// adopt at most its own interval, so it takes the VIP back after its own
/// Master_Down_Interval (not 3 x 40.95 s) once the forger goes quiet.
#[test]
fn forged_long_interval_makes_a_master_yield_for_at_most_its_own_master_down_interval() {
    let (mut f, since) = master(150);
    let now = since + ms(500);
    f.handle_advert(&forged(200, 4095), now);
    assert_eq!(f.state(), StateKind::Backup);
    assert_eq!(
        f.master_adver_interval_cs(),
        100,
        "clamped to our own interval"
    );
    assert_eq!(f.counters().interval_clamped, 1);
    let own_mdi = timers::master_down_interval(150, 100);
    assert_eq!(f.poll_timeout(), Some(now + own_mdi));
    drain(&mut f);
    f.handle_timeout(now + own_mdi);
    assert_eq!(f.state(), StateKind::Master);
}

/// A Backup following the real master hears a forged better advert with a long interval:
/// its master-down deadline never goes past its own Master_Down_Interval.
#[test]
fn backup_never_waits_longer_than_its_own_master_down_interval() {
    for interval in [101, 400, 1000, 4095] {
        let mut f = backup(100);
        f.handle_advert(&adv(LOWER_ADDR, 200), ms(2000));
        f.handle_advert(&forged(255, interval), ms(2500));
        assert_eq!(f.master_adver_interval_cs(), 100, "{interval} cs");
        assert_eq!(
            f.poll_timeout(),
            Some(ms(2500) + timers::master_down_interval(100, 100)),
            "{interval} cs"
        );
        assert_eq!(f.counters().interval_clamped, 1, "{interval} cs");
    }
}

/// A forged short interval would make the Backup declare the real master dead between its
/// adverts: it is raised to the window's minimum (a quarter of ours).
#[test]
fn a_short_forged_interval_is_raised_to_the_window_minimum() {
    let mut f = backup(100);
    f.handle_advert(&forged(200, 1), ms(2000));
    assert_eq!(f.master_adver_interval_cs(), 25);
    assert_eq!(
        f.poll_timeout(),
        Some(ms(2000) + timers::master_down_interval(100, 25))
    );
    assert_eq!(f.counters().interval_clamped, 1);
}

/// Inside the window the RFC holds: the Backup learns the master's interval, not counted.
#[test]
fn intervals_inside_the_window_are_learned_as_the_rfc_says() {
    let mut f = backup_with(FsmConfig {
        adopt_interval_cs: Some((50, 400)),
        ..cfg(100)
    });
    for cs in [50, 99, 100, 250, 400] {
        f.handle_advert(&forged(200, cs), ms(2000));
        assert_eq!(f.master_adver_interval_cs(), cs);
    }
    assert_eq!(f.counters().interval_clamped, 0);
    f.handle_advert(&forged(200, 401), ms(2100));
    assert_eq!(f.master_adver_interval_cs(), 400);
    assert_eq!(f.counters().interval_clamped, 1);
}

/// A window given inverted or out of range is normalised, never trusted.
#[test]
fn a_degenerate_window_is_normalised() {
    let f = Fsm::new(FsmConfig {
        adopt_interval_cs: Some((5000, 0)),
        ..cfg(100)
    });
    assert_eq!(f.adopt_window(), (1, 4095));
}

/// 10k worse adverts in one interval: one advert and one GARP round, the rest counted.
#[test]
fn a_flood_of_worse_adverts_gets_one_reply_per_interval() {
    let (mut f, since) = master(150);
    let mut actions = Vec::new();
    let start = since + ms(10);
    for i in 0..10_000u64 {
        f.handle_advert(&adv(LOWER_ADDR, 100), start + Duration::from_micros(i * 99));
        actions.extend(drain(&mut f));
    }
    assert_eq!(adverts_sent(&actions), 1, "{actions:?}");
    assert_eq!(garps(&actions), 1);
    assert_eq!(f.counters().replies_suppressed, 9_999);
    assert_eq!(f.state(), StateKind::Master);
    // One interval after the reply, the next worse advert is answered again.
    f.handle_advert(&adv(LOWER_ADDR, 100), start + ms(1000));
    assert_eq!(adverts_sent(&drain(&mut f)), 1);
}

/// Priority 0 (another master resigning) is answered at most once per interval too.
#[test]
fn a_flood_of_priority_zero_gets_one_reply_per_interval() {
    let (mut f, since) = master(150);
    let mut actions = Vec::new();
    for i in 0..1000u64 {
        f.handle_advert(&adv(LOWER_ADDR, 0), since + ms(10) + ms(i / 2));
        actions.extend(drain(&mut f));
    }
    assert_eq!(adverts_sent(&actions), 1);
    assert_eq!(garps(&actions), 1);
    assert_eq!(f.counters().replies_suppressed, 999);
}

/// Under a sustained flood the Master's adverts keep their interval: between one and two
/// adverts per interval (the periodic one, or the reply that reset its timer), never zero
/// and never one per packet.
#[test]
fn under_a_sustained_flood_adverts_keep_their_interval() {
    let (mut f, since) = master(150);
    let mut sent_at = Vec::new();
    let end = since + ms(10_000);
    let mut now = since;
    while now < end {
        now += ms(1);
        if f.poll_timeout().is_some_and(|t| t <= now) {
            f.handle_timeout(now);
        }
        f.handle_advert(&adv(LOWER_ADDR, 100), now);
        for a in drain(&mut f) {
            if matches!(a, Action::SendAdvert { .. }) {
                sent_at.push(now);
            }
        }
    }
    assert_eq!(f.state(), StateKind::Master);
    assert!(
        (10..=20).contains(&sent_at.len()),
        "{} adverts in 10 s",
        sent_at.len()
    );
    for pair in sent_at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap <= ms(1000), "adverts {gap:?} apart");
    }
}

/// The rate limit never delays yielding to a better master.
#[test]
fn the_rate_limit_never_delays_yielding() {
    let (mut f, since) = master(150);
    f.handle_advert(&adv(LOWER_ADDR, 100), since + ms(10));
    f.handle_advert(&adv(LOWER_ADDR, 100), since + ms(20));
    f.handle_advert(&adv(HIGHER_ADDR, 200), since + ms(30));
    assert_eq!(f.state(), StateKind::Backup);
}
