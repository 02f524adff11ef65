//! Whole runs: one seed through startup, heals, disturbances (and with `pair`, switchovers),
//! all seeds with the checks that the checks had something to check, and a settled pair for
//! the timing tests.

use vrrpd::timers;

use super::{ms, Preempt, Sim};

/// Runs one seed; returns how many disturbed stretches saw two masters at once. With `pair`,
/// chaos includes the pair's events, and each healed phase ends with a switchover phase.
pub fn run_seed(seed: u64, n: usize, mode: Preempt, pair: bool) -> Summary {
    let mut sim = Sim::new(seed, n, mode);
    sim.pair = pair;
    // Staggered startups.
    for i in 0..n {
        let at = ms(sim.rng.range(0, 1500));
        sim.run_until(at.max(sim.now), &mut |_| {});
        sim.nodes[i].handle_startup(sim.now);
        sim.drain(i);
    }
    let first_heal_end = sim.now + sim.top_bound() + ms(sim.rng.range(0, 5000));
    sim.healed_phase(first_heal_end);
    for _round in 0..4 {
        let end = sim.now + ms(sim.rng.range(500, 20_000));
        sim.disturbed_phase(end);
        sim.heal();
        let end = sim.now + sim.top_bound() + ms(sim.rng.range(0, 10_000));
        sim.healed_phase(end);
        if pair {
            let end =
                sim.now + timers::adver_interval(sim.interval_cs) * 2 + ms(sim.rng.range(0, 5000));
            sim.switchover_phase(end);
            // The operator resumes the old master: back to the heal's guarantees (with
            // preempt, it takes mastership back).
            let now = sim.now;
            for f in &mut sim.nodes {
                f.clear_switchover_hold(now);
            }
            let end = sim.now + sim.top_bound() + ms(sim.rng.range(0, 5000));
            sim.healed_phase(end);
        }
    }
    Summary {
        split_brains: sim.split_brains,
        switchovers: sim.switchovers_done,
        resumes: sim.resumes_done,
    }
}

/// What one seed did, so callers can check the checks had something to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Disturbed stretches that saw two masters at once.
    pub split_brains: u64,
    pub switchovers: u64,
    pub resumes: u64,
}

pub fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=200).collect(),
    }
}

/// Runs every seed, and checks the disturbances really did split the brain in most seeds:
/// a simulation whose network never misbehaves would pass without testing anything. With
/// `pair`, also that switchovers and resumes really happened.
pub fn run_all(n: usize, salt: u64, mode: Preempt, pair: bool) {
    let seeds = seeds();
    let mut split = 0;
    let mut total = Summary::default();
    for &seed in &seeds {
        let s = run_seed(seed.wrapping_mul(salt), n, mode, pair);
        split += usize::from(s.split_brains > 0);
        total.switchovers += s.switchovers;
        total.resumes += s.resumes;
    }
    assert!(
        seeds.len() < 10 || split * 2 > seeds.len(),
        "only {split} of {} seeds ever had two masters",
        seeds.len()
    );
    if pair && seeds.len() >= 10 {
        assert!(total.switchovers >= seeds.len() as u64, "{total:?}");
        assert!(
            total.resumes > 0,
            "no resume in {} seeds: {total:?}",
            seeds.len()
        );
    }
}

pub const PREEMPT: Preempt = Preempt::On { max_delay_ms: 0 };

/// Two nodes, settled; returns the sim and the index of the master.
pub fn settled_pair(seed: u64) -> (Sim, usize) {
    let mut sim = Sim::new(seed, 2, PREEMPT);
    for i in 0..2 {
        sim.nodes[i].handle_startup(ms(0));
        sim.drain(i);
    }
    let t = sim.top_bound();
    sim.run_until(t, &mut |_| {});
    let masters = sim.masters();
    assert_eq!(masters.len(), 1, "seed {seed}: not settled");
    (sim, masters[0])
}
