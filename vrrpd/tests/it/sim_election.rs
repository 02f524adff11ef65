//! Seeded discrete-event simulation of 2 and 3 FSMs electing a master over a lossy network.
//!
//! Each seed alternates disturbed phases (random link cuts, isolated nodes, packet loss,
//! interface flaps, shutdowns and restarts, tracking priority changes) with healed phases
//! (every link up, no loss, every node started, delay still random but bounded by `D`).
//! From a heal at `t_heal`, with `MDI` the largest possible Master_Down_Interval:
//!
//! - two masters never persist past `t_heal + MDI + 2D` (+1 cs of timer rounding). The 2D:
//!   adverts in flight at the heal can still arrive up to `D` later and reset a timer, and
//!   the winner's first advert needs up to `D` to reach the others. After that, two masters
//!   exist only during a handover (a node whose `preempt_delay` ran out takes over, and the
//!   old master yields when the first advert arrives), for at most `D`;
//! - there is always a master after that point, and once the handover window has passed
//!   (`preempt_delay` more, for a node the heal restarted) exactly one: with preempt on, at
//!   the highest effective priority. From then on it does not change. With preempt off any
//!   priority may win, but the winner does not change either.
//!
//! Preemption variants: on without delay (2 and 3 nodes), on with a per-seed delay up to 8 s,
//! and off (3 nodes). Each runs 200 seeds, 5 heals per seed. Two timing tests on a settled
//! pair check the failover latency itself: a graceful shutdown hands over within one delay
//! plus Skew_Time, a silent master is replaced within one Master_Down_Interval (and not
//! before).
//!
//! Delays are random per packet but each directed link is FIFO, as one L2 segment is. (With
//! reordering, a resigning master's priority-0 advert can overtake its last normal one: the
//! backup takes over, the late advert makes it yield back to a master that is gone, and it
//! only takes over again a Master_Down_Interval later. VRRP has no sequence numbers to
//! prevent that; the convergence bounds above still hold.)
//!
//! The simulator itself is in `sim_support` (shared with `sim_pair.rs`). The PRNG is
//! SplitMix64, written there so a seed means the same run forever. A failing seed panics with
//! the seed and the last events, and `SIM_SEED=n` replays just that seed.

use crate::sim_support;

use sim_support::{ms, run_all, settled_pair, Preempt, Sim, PREEMPT};
use vrrpd::fsm::StateKind;
use vrrpd::timers;

#[test]
fn two_nodes_converge_after_every_heal() {
    run_all(2, 1, PREEMPT, false);
}

#[test]
fn three_nodes_converge_after_every_heal() {
    run_all(3, 1_000_003, PREEMPT, false);
}

#[test]
fn three_nodes_with_preempt_delay_converge_to_the_top_after_the_delay() {
    run_all(
        3,
        7_777_777,
        Preempt::On {
            max_delay_ms: 8_000,
        },
        false,
    );
}

#[test]
fn three_nodes_without_preempt_keep_one_master() {
    run_all(3, 31_337, Preempt::Off, false);
}

/// The simulator must be able to see a split brain: with every link cut for good, both
/// nodes end up master. (Guards against a simulation whose checks can never fire.)
#[test]
fn a_permanent_partition_is_a_split_brain() {
    let mut sim = Sim::new(7, 2, PREEMPT);
    for i in 0..2 {
        sim.cut[i][1 - i] = true;
        sim.nodes[i].handle_startup(ms(0));
        sim.drain(i);
    }
    sim.run_until(ms(60_000), &mut |_| {});
    assert_eq!(sim.masters().len(), 2);
}

#[test]
fn graceful_shutdown_hands_over_within_skew_time() {
    for seed in 1..=50 {
        let (mut sim, m) = settled_pair(seed);
        let b = 1 - m;
        let t = sim.now;
        sim.nodes[m].handle_shutdown(t);
        sim.drain(m);
        // The backup hears priority 0 within D, then waits Skew_Time (or nothing, with
        // fast_takeover_on_zero): far sooner than Master_Down_Interval.
        let skew = timers::skew_time(sim.nodes[b].priority(), sim.interval_cs);
        let by = t + sim.max_delay + skew + ms(1);
        sim.run_until(by, &mut |_| {});
        if sim.masters() != vec![b] {
            sim.fail(&format!("no takeover by {by:?}"));
        }
        assert!(skew < timers::master_down_interval(sim.nodes[b].priority(), sim.interval_cs));
    }
}

#[test]
fn silent_master_is_replaced_within_master_down_interval() {
    for seed in 1..=50 {
        let (mut sim, m) = settled_pair(seed);
        let b = 1 - m;
        let t = sim.now;
        sim.nodes[m].handle_link_down(t);
        sim.drain(m);
        // The backup's last accepted advert arrived in (t - I, t + D]: it takes over one
        // Master_Down_Interval after that, never before.
        let mdi = timers::master_down_interval(sim.nodes[b].priority(), sim.interval_cs);
        let interval = timers::adver_interval(sim.interval_cs);
        let too_early = t + mdi - interval - ms(1);
        sim.run_until(too_early, &mut |_| {});
        if sim.nodes[b].state() != StateKind::Backup {
            sim.fail("took over before Master_Down_Interval");
        }
        let by = t + sim.max_delay + mdi;
        sim.run_until(by, &mut |_| {});
        if sim.masters() != vec![b] {
            sim.fail(&format!("no takeover by {by:?}"));
        }
    }
}
