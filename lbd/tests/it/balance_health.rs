//! Health state machines: rise/fall, passive ejection with growing back-off, decay, recovery,
//! how a Backend mirrors them into its lock-free availability flag, and how that state is
//! carried into a reloaded Backend under new settings.

use std::net::SocketAddr;
use std::time::Duration;

use lbd::upstream::backend::{Backend, BackendId, BackendSpec};
use lbd::upstream::health::{
    ActiveConfig, ActiveHealth, Change, EjectionConfig, HealthState, HealthTracker, Outcome,
    PassiveHealth,
};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn ejection() -> EjectionConfig {
    EjectionConfig {
        consecutive_failures: 3,
        base_time: s(10),
        max_time: s(60),
        decay_after: s(100),
    }
}

/// Drive `n` failures at `now`; return the last change.
fn fail(p: &mut PassiveHealth, n: u32, now: Duration) -> Option<Change> {
    let mut last = None;
    for _ in 0..n {
        last = p.record_result(Outcome::ServerError, now);
    }
    last
}

#[test]
fn starts_healthy_by_default_and_falls_after_fall_probes() {
    let mut h = ActiveHealth::new(ActiveConfig::default());
    assert_eq!(h.state(), HealthState::Healthy);
    let fall = ActiveConfig::default().fall;
    for i in 1..fall {
        assert_eq!(h.record_probe(false, s(u64::from(i))), None);
        assert!(h.is_healthy());
    }
    assert_eq!(
        h.record_probe(false, s(10)),
        Some(Change::BecameUnhealthy { probes: fall })
    );
}

#[test]
fn unhealthy_start_needs_rise_probes() {
    let mut h = ActiveHealth::new(ActiveConfig {
        rise: 3,
        fall: 1,
        initial: HealthState::Unhealthy,
    });
    assert_eq!(h.record_probe(true, s(1)), None);
    assert_eq!(h.record_probe(true, s(2)), None);
    // A failure breaks the rise streak.
    assert_eq!(h.record_probe(false, s(3)), None);
    assert_eq!(h.record_probe(true, s(4)), None);
    assert_eq!(h.record_probe(true, s(5)), None);
    assert_eq!(
        h.record_probe(true, s(6)),
        Some(Change::BecameHealthy { probes: 3 })
    );
    // fall = 1: a single failure flips it back.
    assert_eq!(
        h.record_probe(false, s(7)),
        Some(Change::BecameUnhealthy { probes: 1 })
    );
}

#[test]
fn flapping_probes_never_flip() {
    let mut h = ActiveHealth::new(ActiveConfig {
        rise: 2,
        fall: 2,
        initial: HealthState::Healthy,
    });
    for i in 0..100 {
        assert_eq!(h.record_probe(i % 2 == 0, s(i)), None);
    }
    assert!(h.is_healthy());
}

#[test]
fn ejection_time_doubles_and_is_capped() {
    let mut p = PassiveHealth::new(ejection());
    let mut now = s(1000);
    for (n, want) in [(1u32, 10u64), (2, 20), (3, 40), (4, 60), (5, 60)] {
        assert_eq!(fail(&mut p, 2, now), None, "below the threshold");
        assert!(!p.is_ejected(now));
        let change = fail(&mut p, 1, now);
        assert_eq!(
            change,
            Some(Change::Ejected {
                until: now + s(want),
                duration: s(want),
                ejections: n,
            })
        );
        assert!(p.is_ejected(now + s(want) - ms(1)));
        assert!(!p.is_ejected(now + s(want)));
        assert_eq!(p.poll_timeout(), Some(now + s(want)));
        assert_eq!(p.poll(now + s(want) - ms(1)), None);
        now += s(want);
        assert_eq!(p.poll(now), Some(Change::Reinstated));
        assert_eq!(p.poll_timeout(), None);
        // Fail again soon after: well inside the decay period, so the back-off keeps growing.
        now += s(1);
    }
}

#[test]
fn success_resets_the_consecutive_count() {
    let mut p = PassiveHealth::new(ejection());
    for round in 0..10 {
        let now = s(round);
        assert_eq!(fail(&mut p, 2, now), None);
        assert_eq!(p.record_result(Outcome::Success, now), None);
        assert_eq!(p.consecutive_failures(), 0);
    }
    assert!(!p.is_ejected(s(10)));
    // Every kind of failure counts.
    assert_eq!(p.record_result(Outcome::ConnectFailure, s(11)), None);
    assert_eq!(p.record_result(Outcome::Timeout, s(11)), None);
    assert!(matches!(
        p.record_result(Outcome::ServerError, s(11)),
        Some(Change::Ejected { .. })
    ));
}

#[test]
fn results_during_ejection_are_ignored() {
    let mut p = PassiveHealth::new(ejection());
    assert!(fail(&mut p, 3, s(0)).is_some());
    // Late failures from requests sent before the ejection neither extend it nor count.
    assert_eq!(fail(&mut p, 10, s(5)), None);
    assert_eq!(p.poll_timeout(), Some(s(10)));
    assert_eq!(p.record_result(Outcome::Success, s(6)), None);
    // The first result after the end reports the reinstatement itself.
    assert_eq!(
        p.record_result(Outcome::ServerError, s(10)),
        Some(Change::Reinstated)
    );
    assert_eq!(p.consecutive_failures(), 1);
}

#[test]
fn ejection_count_decays_after_quiet_periods() {
    let mut p = PassiveHealth::new(ejection());
    // Three ejections back to back: 10 s, 20 s, 40 s.
    let mut now = s(0);
    for want in [10, 20, 40] {
        fail(&mut p, 3, now);
        now += s(want);
        assert_eq!(p.poll(now), Some(Change::Reinstated));
    }
    assert_eq!(p.ejections(), 3);
    // One quiet period (100 s) after the last reinstatement: 3 -> 2.
    p.poll(now + s(100) - ms(1));
    assert_eq!(p.ejections(), 3);
    p.poll(now + s(100));
    assert_eq!(p.ejections(), 2);
    // The next ejection is therefore the 3rd (40 s), not the 4th (60 s cap).
    let change = fail(&mut p, 3, now + s(150));
    assert!(
        matches!(change, Some(Change::Ejected { duration, ejections: 3, .. }) if duration == s(40)),
        "{change:?}"
    );
    // A long quiet time forgets everything.
    let later = now + s(150) + s(40);
    assert_eq!(p.poll(later), Some(Change::Reinstated));
    p.poll(later + s(10_000));
    assert_eq!(p.ejections(), 0);
    assert!(matches!(
        fail(&mut p, 3, later + s(10_001)),
        Some(Change::Ejected { ejections: 1, .. })
    ));
}

#[test]
fn disabled_ejection_never_ejects() {
    let mut p = PassiveHealth::new(EjectionConfig {
        consecutive_failures: 0,
        ..ejection()
    });
    assert_eq!(fail(&mut p, 1000, s(1)), None);
    assert!(!p.is_ejected(s(1)));
}

#[test]
fn tracker_needs_both_signals() {
    let mut t = HealthTracker::new(
        ActiveConfig {
            rise: 1,
            fall: 1,
            initial: HealthState::Healthy,
        },
        ejection(),
    );
    assert!(t.is_available(s(0)));
    fail(&mut t.passive, 3, s(0));
    assert!(!t.is_available(s(1)));
    assert!(t.is_available(s(10)));
    t.record_probe(false, s(11));
    assert!(!t.is_available(s(11)));
}

#[test]
fn backend_mirrors_health_into_its_flags() {
    let b = Backend::new(
        BackendId(0),
        BackendSpec {
            name: "web-1".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000)),
            weight: 1,
            max_conns: 0,
        },
        HealthTracker::new(
            ActiveConfig {
                rise: 2,
                fall: 2,
                initial: HealthState::Healthy,
            },
            ejection(),
        ),
    );
    assert!(b.is_available());

    // Active: two failed probes take it out, two good ones bring it back.
    assert!(b.record_probe(false, s(1)).is_empty());
    assert_eq!(
        b.record_probe(false, s(2)),
        [Change::BecameUnhealthy { probes: 2 }]
    );
    assert!(!b.is_available() && !b.is_healthy());
    b.record_probe(true, s(3));
    assert_eq!(
        b.record_probe(true, s(4)),
        [Change::BecameHealthy { probes: 2 }]
    );
    assert!(b.is_available());

    // Passive: ejected, and back only once someone polls after the deadline.
    for _ in 0..2 {
        assert_eq!(b.record_result(Outcome::ConnectFailure, s(5)), None);
    }
    assert!(matches!(
        b.record_result(Outcome::ConnectFailure, s(5)),
        Some(Change::Ejected { .. })
    ));
    assert!(b.is_ejected() && !b.is_available());
    assert_eq!(b.health_deadline(), Some(s(15)));
    assert_eq!(b.poll_health(s(14)), None);
    assert!(!b.is_available());
    assert_eq!(b.poll_health(s(15)), Some(Change::Reinstated));
    assert!(b.is_available());

    // A probe tick also ends an ejection (so a probe loop alone is enough to reinstate).
    for _ in 0..3 {
        b.record_result(Outcome::ServerError, s(20));
    }
    assert!(!b.is_available());
    let changes = b.record_probe(true, s(100));
    assert_eq!(changes, [Change::Reinstated]);
    assert!(b.is_available());

    // Admin drain is independent of health.
    b.set_drained(true);
    assert!(!b.is_available() && b.is_healthy() && !b.is_ejected());
    b.set_drained(false);
    assert!(b.is_available());
}

#[test]
fn reset_after_send_counts_toward_ejection() {
    let mut p = PassiveHealth::new(ejection());
    assert!(Outcome::ResetAfterSend.is_failure());
    assert_eq!(p.record_result(Outcome::ResetAfterSend, s(1)), None);
    assert_eq!(p.record_result(Outcome::ConnectFailure, s(1)), None);
    assert!(matches!(
        p.record_result(Outcome::ResetAfterSend, s(1)),
        Some(Change::Ejected { ejections: 1, .. })
    ));
}

fn spec(addr: &str, weight: u32) -> BackendSpec {
    BackendSpec {
        name: String::new(),
        addr: addr.parse::<SocketAddr>().expect("addr"),
        weight,
        max_conns: 0,
    }
}

fn active(rise: u32, fall: u32) -> ActiveConfig {
    ActiveConfig {
        rise,
        fall,
        initial: HealthState::Healthy,
    }
}

#[test]
fn reconfigure_keeps_state_and_applies_new_thresholds() {
    // Down after 3 failures, 1 of 3 successes towards rising.
    let mut h = HealthTracker::new(active(3, 3), ejection());
    for t in 1..=3 {
        h.record_probe(false, s(t));
    }
    assert!(!h.active.is_healthy());
    h.record_probe(true, s(4));
    h.reconfigure(active(2, 5), ejection());
    assert!(!h.active.is_healthy(), "still down after the reload");
    assert_eq!(
        h.record_probe(true, s(5)),
        Some(Change::BecameHealthy { probes: 2 }),
        "the streak carries over under the new rise"
    );
    // Healthy with a 3-failure streak, then fall lowered to 2: the next failure flips it
    // (clamped), not the reload itself.
    let mut h = HealthTracker::new(active(2, 5), ejection());
    for t in 1..=3 {
        assert_eq!(h.record_probe(false, s(t)), None);
    }
    h.reconfigure(active(2, 2), ejection());
    assert!(h.active.is_healthy());
    assert_eq!(
        h.record_probe(false, s(4)),
        Some(Change::BecameUnhealthy { probes: 2 })
    );
}

#[test]
fn reconfigure_passive_keeps_ejection_unless_disabled() {
    let mut p = PassiveHealth::new(ejection());
    fail(&mut p, 3, s(1));
    assert!(p.is_ejected(s(2)));
    p.reconfigure(EjectionConfig {
        consecutive_failures: 1,
        ..ejection()
    });
    assert!(p.is_ejected(s(2)), "a running ejection is kept");
    assert_eq!(p.poll(s(11)), Some(Change::Reinstated));
    // Two failures in a row, then the threshold drops to 2: the next failure ejects.
    let mut p = PassiveHealth::new(ejection());
    fail(&mut p, 2, s(1));
    p.reconfigure(EjectionConfig {
        consecutive_failures: 2,
        ..ejection()
    });
    assert!(matches!(
        p.record_result(Outcome::ServerError, s(2)),
        Some(Change::Ejected { .. })
    ));
    // Disabling passive ejection ends the ejection at once.
    p.reconfigure(EjectionConfig {
        consecutive_failures: 0,
        ..ejection()
    });
    assert!(!p.is_ejected(s(3)));
    assert_eq!(p.record_result(Outcome::ServerError, s(3)), None);
}

#[test]
fn with_health_of_carries_state_and_shares_load() {
    let old = std::sync::Arc::new(Backend::new(
        BackendId(0),
        spec("127.0.0.1:1", 1),
        HealthTracker::new(active(2, 1), ejection()),
    ));
    old.record_probe(false, s(1));
    for _ in 0..3 {
        old.record_result(Outcome::ConnectFailure, s(1));
    }
    old.set_drained(true);
    let in_flight = old.begin_request();
    assert!(!old.is_healthy() && old.is_ejected());

    let new = Backend::with_health_of(BackendId(3), spec("127.0.0.1:1", 7), &old);
    assert_eq!((new.id, new.weight), (BackendId(3), 7));
    assert!(!new.is_healthy() && new.is_ejected() && new.is_drained());
    assert_eq!(new.health_deadline(), old.health_deadline());
    assert_eq!(
        new.in_flight(),
        1,
        "requests on the old snapshot still count"
    );
    drop(in_flight);
    assert_eq!(new.in_flight(), 0);
    // The copy moves on its own: one good probe is not enough under rise = 2 ...
    assert!(new.record_probe(true, s(2)).is_empty());
    // ... and new thresholds apply to the kept state.
    let changes = new.reconfigure_health(active(1, 1), ejection(), true, s(2));
    assert!(changes.is_empty());
    assert_eq!(
        new.record_probe(true, s(3)),
        [Change::BecameHealthy { probes: 1 }]
    );
    assert!(!old.is_healthy(), "the old backend is not changed");
    // Without active checks a down backend comes back (nothing could raise it), and
    // disabling passive ejection ends the running ejection.
    let down = Backend::with_health_of(BackendId(0), spec("127.0.0.1:1", 1), &old);
    let off = EjectionConfig {
        consecutive_failures: 0,
        ..ejection()
    };
    assert_eq!(
        down.reconfigure_health(active(2, 2), off, false, s(5)),
        [Change::BecameHealthy { probes: 0 }, Change::Reinstated]
    );
    assert!(down.is_healthy() && !down.is_ejected());
}
