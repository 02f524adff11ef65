//! The HA pair's events in the seeded simulation (`sim_support`): planned switchovers, vrrpd
//! crashes with a supervisor restart that resumes, readiness and the switchover hold.
//!
//! - Chaos with the pair's events (crash, restart, switchover, readiness, hold), 200 seeds
//!   each for 2 and 3 nodes with preempt, 3 with a preempt delay, and 3 without preempt: after
//!   every heal the election guarantees of `sim_election.rs` still hold (a heal restarts a
//!   crashed vrrpd with resume, makes every lbd ready and resumes switched-over nodes).
//! - After every heal, a planned switchover of the master on the healed (lossless) network:
//!   some node is master at every instant (make-before-break: the old master releases only
//!   after hearing the new one), then exactly one master, not the old one, within one
//!   interval plus three delays, the old one held as Backup, no abort. Then the operator
//!   resumes it and the heal's guarantees apply again.
//! - On a settled pair: a vrrpd crash of the master with a quick restart resumes without the
//!   backup ever taking over and without a moment where nobody holds the VIPs; a restart
//!   after the backup took over settles on one master within two delays.

use crate::sim_support;

use sim_support::{ms, run_all, settled_pair, Preempt, PREEMPT};
use vrrpd::fsm::StateKind;
use vrrpd::timers;

#[test]
fn two_nodes_with_pair_events_converge_and_switch_over() {
    run_all(2, 77, PREEMPT, true);
}

#[test]
fn three_nodes_with_pair_events_converge_and_switch_over() {
    run_all(3, 1_000_033, PREEMPT, true);
}

#[test]
fn three_nodes_with_pair_events_and_preempt_delay() {
    run_all(
        3,
        7_777_919,
        Preempt::On {
            max_delay_ms: 8_000,
        },
        true,
    );
}

#[test]
fn three_nodes_with_pair_events_without_preempt() {
    run_all(3, 31_357, Preempt::Off, true);
}

#[test]
fn switchover_on_a_settled_pair_is_make_before_break() {
    for seed in 1..=50 {
        let (mut sim, m) = settled_pair(seed);
        let end = sim.now + ms(10_000);
        sim.switchover_phase(end);
        assert_eq!(sim.masters(), vec![1 - m], "seed {seed}");
        assert!(sim.nodes[m].switchover_hold());
        // Resumed by the operator, the top-priority old master takes over again (preempt).
        let now = sim.now;
        sim.nodes[m].clear_switchover_hold(now);
        let end = sim.now + sim.top_bound() + ms(1000);
        sim.healed_phase(end);
        if sim.nodes[m].priority() > sim.nodes[1 - m].priority() {
            assert_eq!(sim.masters(), vec![m], "seed {seed}: not taken back");
        }
    }
}

#[test]
fn quick_vrrpd_restart_on_the_master_resumes_without_a_takeover() {
    for seed in 1..=50 {
        let (mut sim, m) = settled_pair(seed);
        let b = 1 - m;
        let t = sim.now;
        let before = sim.nodes[b].counters().became_master;
        sim.crash(m);
        // The backup's last accepted advert left the master in (t - I, t], so it waits until
        // at least t - I + MDI. A restart (and its advert, arriving within D) before that
        // keeps it Backup.
        let mdi = timers::master_down_interval(sim.nodes[b].priority(), sim.interval_cs);
        let interval = timers::adver_interval(sim.interval_cs);
        let latest = t + mdi - interval - sim.max_delay - ms(10);
        let span = latest.saturating_sub(t).as_millis() as u64;
        let restart_at = t + ms(sim.rng.range(0, span));
        let mut one_holder = |sim: &sim_support::Sim| {
            if sim.holders() != vec![m] {
                sim.fail(&format!(
                    "VIP holders {:?}, expected only n{m}",
                    sim.holders()
                ));
            }
        };
        sim.run_until(restart_at, &mut one_holder);
        sim.restart(m);
        assert_eq!(sim.nodes[m].state(), StateKind::Master, "seed {seed}");
        let end = sim.now + mdi * 3;
        sim.run_until(end, &mut one_holder);
        if sim.nodes[b].counters().became_master != before {
            sim.fail("the backup took over during a quick restart");
        }
        assert_eq!(sim.resumes_done, 1);
    }
}

#[test]
fn late_vrrpd_restart_after_a_takeover_settles_within_two_delays() {
    for seed in 1..=50 {
        let (mut sim, m) = settled_pair(seed);
        let b = 1 - m;
        let t = sim.now;
        sim.crash(m);
        let mdi = timers::master_down_interval(sim.nodes[b].priority(), sim.interval_cs);
        let took_over = t + mdi + sim.max_delay + ms(10);
        sim.run_until(took_over, &mut |_| {});
        if sim.masters() != vec![b] {
            sim.fail("the backup did not take over from a dead vrrpd");
        }
        let restart_at = sim.now + ms(sim.rng.range(0, 5000));
        sim.run_until(restart_at, &mut |_| {});
        sim.restart(m);
        // The resumed master and the backup-turned-master hear each other within D; the
        // worse one yields at once (the better one answers at once, RFC 9568).
        let settled = sim.now + sim.max_delay * 2 + ms(10);
        sim.run_until(settled, &mut |_| {});
        // The better of the two (priority, then address) is the master, and stays.
        let key = |i: usize| {
            let f = &sim.nodes[i];
            (f.priority(), u32::from(f.config().primary_addr))
        };
        let best = if key(m) > key(b) { m } else { b };
        let end = sim.now + mdi * 3;
        let mut only_best = |sim: &sim_support::Sim| {
            if sim.masters() != vec![best] {
                sim.fail(&format!("masters {:?}, expected n{best}", sim.masters()));
            }
        };
        sim.run_until(end, &mut only_best);
    }
}
