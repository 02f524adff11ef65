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
//! The PRNG is SplitMix64, written here so a seed means the same run forever. A failing seed
//! panics with the seed and the last events, and `SIM_SEED=n` replays just that seed.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use vrrpd::fsm::{Action, Advert, Fsm, FsmConfig, StateKind};
use vrrpd::timers;

struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    fn chance(&mut self, permille: u64) -> bool {
        self.range(0, 999) < permille
    }

    fn index(&mut self, n: usize) -> usize {
        self.range(0, n as u64 - 1) as usize
    }
}

struct InFlight {
    at: Duration,
    to: usize,
    adv: Advert,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: Duration,
    nodes: Vec<Fsm>,
    /// `cut[from][to]`: adverts from `from` do not reach `to`.
    cut: Vec<Vec<bool>>,
    /// `fifo[from][to]`: arrival time of the last packet on that link. One L2 segment does
    /// not reorder packets between two hosts, so neither does the simulation.
    fifo: Vec<Vec<Duration>>,
    loss_permille: u64,
    max_delay: Duration,
    interval_cs: u16,
    vips: Vec<Ipv4Addr>,
    flight: Vec<InFlight>,
    log: VecDeque<String>,
    /// Events processed, and how many since time last advanced (a livelock detector).
    events: u64,
    events_now: u64,
    split_brains: u64,
    preempt: bool,
    preempt_delay: Duration,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How the nodes are configured to preempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Preempt {
    /// Preempt, with a `preempt_delay` drawn per seed up to this many milliseconds.
    On { max_delay_ms: u64 },
    /// Never preempt: the election still ends with one master, of any priority.
    Off,
}

impl Sim {
    fn new(seed: u64, n: usize, mode: Preempt) -> Sim {
        let mut rng = Rng(seed);
        let (preempt, preempt_delay) = match mode {
            Preempt::On { max_delay_ms } => (true, ms(rng.range(0, max_delay_ms))),
            Preempt::Off => (false, Duration::ZERO),
        };
        let interval_cs = [10u16, 50, 100][rng.index(3)];
        // Delay stays well under the interval, as on any LAN VRRP runs on.
        let max_delay = ms(rng.range(0, (u64::from(interval_cs) * 10 / 4).min(50)));
        let vips = vec![Ipv4Addr::new(192, 0, 2, 1)];
        let mut priorities: Vec<u8> = (0..n).map(|_| rng.range(1, 254) as u8).collect();
        if rng.chance(200) {
            // A tie for the top: the election must still end with one master.
            let top = priorities.iter().copied().max().unwrap_or(100);
            priorities[0] = top;
            priorities[1] = top;
        } else if rng.chance(120) {
            priorities[n - 1] = 255;
        }
        let nodes = priorities
            .iter()
            .enumerate()
            .map(|(i, &priority)| {
                Fsm::new(FsmConfig {
                    vrid: 42,
                    priority,
                    advert_interval_cs: interval_cs,
                    preempt,
                    preempt_delay,
                    primary_addr: Ipv4Addr::new(10, 0, 0, i as u8 + 1),
                    vips: vips.clone(),
                    fast_takeover_on_zero: rng.chance(300),
                })
            })
            .collect();
        Sim {
            seed,
            rng,
            now: Duration::ZERO,
            nodes,
            cut: vec![vec![false; n]; n],
            fifo: vec![vec![Duration::ZERO; n]; n],
            loss_permille: 0,
            max_delay,
            interval_cs,
            vips,
            flight: Vec::new(),
            log: VecDeque::new(),
            events: 0,
            events_now: 0,
            split_brains: 0,
            preempt,
            preempt_delay,
        }
    }

    /// From a heal to a single master: the longest Master_Down_Interval any node can be
    /// waiting on (priority 1), plus two network delays and a centisecond of rounding.
    fn bound(&self) -> Duration {
        timers::master_down_interval(1, self.interval_cs) + self.max_delay * 2 + ms(10)
    }

    /// From a heal to the top-priority node being that master: a node restarted by the heal
    /// holds back its preemption for `preempt_delay` first.
    fn top_bound(&self) -> Duration {
        self.bound() + self.preempt_delay
    }

    fn note(&mut self, what: String) {
        if self.log.len() == 60 {
            self.log.pop_front();
        }
        self.log.push_back(format!("{:>9?} {what}", self.now));
    }

    fn fail(&self, msg: &str) -> ! {
        let states: Vec<String> = self
            .nodes
            .iter()
            .map(|f| format!("{}@{}:{}", f.config().primary_addr, f.priority(), f.state()))
            .collect();
        panic!(
            "seed {}: {msg}\nnow {:?}, interval {} cs, max delay {:?}, preempt {} (delay {:?})\n\
             nodes {states:?}\nlast events:\n{}",
            self.seed,
            self.now,
            self.interval_cs,
            self.max_delay,
            self.preempt,
            self.preempt_delay,
            self.log.iter().cloned().collect::<Vec<_>>().join("\n")
        );
    }

    /// Turns node `i`'s pending actions into packets in flight.
    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].poll_action() {
            match action {
                Action::SendAdvert { priority } => {
                    if priority != 0 && self.nodes[i].state() != StateKind::Master {
                        self.fail(&format!("node {i} advertised {priority} while not master"));
                    }
                    self.note(format!("n{i} sends p{priority}"));
                    self.send(i, priority);
                }
                Action::Transition { from, to, reason } => {
                    self.note(format!("n{i} {from} -> {to} ({reason})"));
                }
                Action::AddVips | Action::RemoveVips | Action::SendGarp => {}
            }
        }
    }

    fn send(&mut self, from: usize, priority: u8) {
        if !self.nodes[from].link_up() {
            return;
        }
        let adv = Advert {
            src: self.nodes[from].config().primary_addr,
            priority,
            max_adver_int_cs: self.interval_cs,
            addrs: self.vips.clone(),
        };
        for to in 0..self.nodes.len() {
            if to == from || self.cut[from][to] || self.rng.chance(self.loss_permille) {
                continue;
            }
            let delay = ms(self.rng.range(0, self.max_delay.as_millis() as u64));
            let at = (self.now + delay).max(self.fifo[from][to]);
            self.fifo[from][to] = at;
            self.flight.push(InFlight {
                at,
                to,
                adv: adv.clone(),
            });
        }
    }

    /// Runs every packet and timer up to `until` (inclusive), calling `check` after each.
    fn run_until(&mut self, until: Duration, check: &mut dyn FnMut(&Sim)) {
        loop {
            self.events += 1;
            self.events_now += 1;
            // A healthy run has a handful of events per instant; thousands mean two machines
            // answering each other forever (a livelock), which must fail, not hang.
            if self.events > 2_000_000 || self.events_now > 10_000 || self.flight.len() > 10_000 {
                self.fail("runaway simulation (livelock?)");
            }
            let next_packet = self
                .flight
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.at)
                .map(|(k, p)| (p.at, k));
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, f)| f.poll_timeout().map(|t| (t, i)))
                .min();
            let packet_first = match (next_packet, next_timer) {
                (Some((p, _)), Some((t, _))) => p <= t,
                (Some(_), None) => true,
                _ => false,
            };
            match (packet_first, next_packet, next_timer) {
                (true, Some((at, k)), _) if at <= until => {
                    if at < self.now {
                        self.fail("time went backwards (packet)");
                    }
                    self.advance(at);
                    let p = self.flight.swap_remove(k);
                    if self.nodes[p.to].link_up() {
                        self.nodes[p.to].handle_advert(&p.adv, at);
                        self.drain(p.to);
                    }
                }
                (false, _, Some((at, i))) if at <= until => {
                    if at < self.now {
                        self.fail("time went backwards (timer)");
                    }
                    self.advance(at);
                    self.nodes[i].handle_timeout(at);
                    self.drain(i);
                }
                _ => break,
            }
            check(self);
        }
        self.advance(until);
        check(self);
    }

    fn advance(&mut self, to: Duration) {
        if to > self.now {
            self.events_now = 0;
        }
        self.now = to;
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].state() == StateKind::Master)
            .collect()
    }

    /// One random disturbance.
    fn chaos(&mut self) {
        let n = self.nodes.len();
        let now = self.now;
        let i = self.rng.index(n);
        match self.rng.range(0, 8) {
            0 => {
                let j = (i + 1 + self.rng.index(n - 1)) % n;
                self.cut[i][j] = true;
                self.note(format!("cut n{i} -> n{j}"));
            }
            1 => {
                for j in 0..n {
                    self.cut[i][j] = true;
                    self.cut[j][i] = true;
                }
                self.note(format!("isolate n{i}"));
            }
            2 => {
                let j = (i + 1 + self.rng.index(n - 1)) % n;
                self.cut[i][j] = false;
                self.note(format!("heal n{i} -> n{j}"));
            }
            3 => {
                self.note(format!("link down n{i}"));
                self.nodes[i].handle_link_down(now);
            }
            4 => {
                self.note(format!("link up n{i}"));
                self.nodes[i].handle_link_up(now);
            }
            5 => {
                self.note(format!("shutdown n{i}"));
                self.nodes[i].handle_shutdown(now);
            }
            6 => {
                self.note(format!("startup n{i}"));
                self.nodes[i].handle_startup(now);
            }
            7 => {
                let p = if self.rng.chance(300) {
                    self.nodes[i].config().priority
                } else {
                    self.rng.range(1, 254) as u8
                };
                self.note(format!("n{i} priority {p}"));
                self.nodes[i].set_effective_priority(p, now);
            }
            _ => {
                self.loss_permille = self.rng.range(0, 400);
                self.note(format!("loss {}‰", self.loss_permille));
            }
        }
        self.drain(i);
    }

    fn heal(&mut self) {
        let now = self.now;
        self.note("HEAL".to_string());
        self.loss_permille = 0;
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
        for i in 0..self.nodes.len() {
            self.nodes[i].handle_link_up(now);
            self.nodes[i].handle_startup(now);
            self.drain(i);
        }
    }

    /// A healed phase: asserts one master within `bound()`, and (with preempt) the
    /// top-priority one within `top_bound()`, stable until `end`.
    fn healed_phase(&mut self, end: Duration) {
        let t_heal = self.now;
        let one_at = t_heal + self.bound();
        let stable_at = if self.preempt {
            t_heal + self.top_bound()
        } else {
            one_at
        };
        let preempt = self.preempt;
        let mut winner: Option<usize> = None;
        let mut dual_since: Option<Duration> = None;
        let handover = self.max_delay;
        let mut check = |sim: &Sim| {
            let masters = sim.masters();
            if masters.len() >= 2 {
                // From `one_at` on, two masters are only allowed for one network delay: the
                // moment between a preempting node taking over and its first advert arriving.
                let since = *dual_since.get_or_insert(sim.now);
                if sim.now >= one_at && sim.now - since > handover {
                    sim.fail(&format!(
                        "two masters {masters:?} since {since:?}, healed at {t_heal:?}"
                    ));
                }
            } else {
                dual_since = None;
            }
            if sim.now >= one_at && masters.is_empty() {
                sim.fail(&format!("no master, healed at {t_heal:?}"));
            }
            if sim.now >= stable_at && masters.len() != 1 {
                sim.fail(&format!(
                    "expected one master, healed at {t_heal:?}, got {masters:?}"
                ));
            }
            if sim.now >= stable_at {
                let m = masters[0];
                let top = sim.nodes.iter().map(Fsm::priority).max().unwrap_or(0);
                if preempt && sim.nodes[m].priority() != top {
                    sim.fail(&format!(
                        "master n{m} is not at the top priority {top}, healed at {t_heal:?}"
                    ));
                }
                if *winner.get_or_insert(m) != m {
                    sim.fail("master changed in a healed network");
                }
            }
        };
        self.run_until(one_at, &mut check);
        self.run_until(stable_at, &mut check);
        self.run_until(end.max(stable_at), &mut check);
    }

    fn disturbed_phase(&mut self, end: Duration) {
        while self.now < end {
            let next = (self.now + ms(self.rng.range(50, 3000))).min(end);
            let mut split = false;
            self.run_until(next, &mut |sim| split |= sim.masters().len() >= 2);
            self.split_brains += u64::from(split);
            if self.now < end {
                self.chaos();
            }
        }
    }
}

/// Runs one seed; returns how many disturbed stretches saw two masters at once.
fn run_seed(seed: u64, n: usize, mode: Preempt) -> u64 {
    let mut sim = Sim::new(seed, n, mode);
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
    }
    sim.split_brains
}

fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=200).collect(),
    }
}

/// Runs every seed, and checks the disturbances really did split the brain in most seeds:
/// a simulation whose network never misbehaves would pass without testing anything.
fn run_all(n: usize, salt: u64, mode: Preempt) {
    let seeds = seeds();
    let split = seeds
        .iter()
        .filter(|&&seed| run_seed(seed.wrapping_mul(salt), n, mode) > 0)
        .count();
    assert!(
        seeds.len() < 10 || split * 2 > seeds.len(),
        "only {split} of {} seeds ever had two masters",
        seeds.len()
    );
}

const PREEMPT: Preempt = Preempt::On { max_delay_ms: 0 };

#[test]
fn two_nodes_converge_after_every_heal() {
    run_all(2, 1, PREEMPT);
}

#[test]
fn three_nodes_converge_after_every_heal() {
    run_all(3, 1_000_003, PREEMPT);
}

#[test]
fn three_nodes_with_preempt_delay_converge_to_the_top_after_the_delay() {
    run_all(
        3,
        7_777_777,
        Preempt::On {
            max_delay_ms: 8_000,
        },
    );
}

#[test]
fn three_nodes_without_preempt_keep_one_master() {
    run_all(3, 31_337, Preempt::Off);
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

/// Two nodes, settled; returns the sim and the index of the master.
fn settled_pair(seed: u64) -> (Sim, usize) {
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
