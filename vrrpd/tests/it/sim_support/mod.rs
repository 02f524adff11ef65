//! The discrete-event simulator shared by `sim_election.rs` and `sim_pair.rs`: N FSMs on a
//! simulated L2 segment with loss, bounded random delay (FIFO per directed link), link cuts,
//! and the events a shell feeds (startup, shutdown, link, priority; with `pair` also vrrpd
//! crashes and restarts with resume, switchovers, readiness and the switchover hold).
//!
//! A crashed vrrpd is modelled as its machine replaced by a fresh, unstarted one: it sends
//! nothing, and a crashed Master's VIPs stay on the interface (`stale_vips`) until it is
//! restarted, when the shell resumes with them (`handle_startup_resume`).
//!
//! The PRNG is SplitMix64, written here so a seed means the same run forever. A failing seed
//! panics with the seed and the last events, and `SIM_SEED=n` replays just that seed.

mod pair;
mod run;

pub use run::{run_all, settled_pair, PREEMPT};

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use vrrpd::fsm::{Action, Advert, Fsm, FsmConfig, StateKind};
use vrrpd::timers;

pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (the modulo bias is irrelevant here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn chance(&mut self, permille: u64) -> bool {
        self.range(0, 999) < permille
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.range(0, n as u64 - 1) as usize
    }
}

pub struct InFlight {
    at: Duration,
    /// Send order: packets arriving at the same instant are delivered in it, so equal
    /// arrival times on one link keep FIFO order.
    seq: u64,
    to: usize,
    adv: Advert,
}

pub struct Sim {
    pub seed: u64,
    pub rng: Rng,
    pub now: Duration,
    pub nodes: Vec<Fsm>,
    /// `cut[from][to]`: adverts from `from` do not reach `to`.
    pub cut: Vec<Vec<bool>>,
    /// `fifo[from][to]`: arrival time of the last packet on that link. One L2 segment does
    /// not reorder packets between two hosts, so neither does the simulation.
    pub fifo: Vec<Vec<Duration>>,
    pub loss_permille: u64,
    pub max_delay: Duration,
    pub interval_cs: u16,
    pub vips: Vec<Ipv4Addr>,
    pub flight: Vec<InFlight>,
    /// Packets sent so far (the `seq` of the last one).
    pub sent: u64,
    pub log: VecDeque<String>,
    /// Events processed, and how many since time last advanced (a livelock detector).
    pub events: u64,
    pub events_now: u64,
    pub split_brains: u64,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// Chaos includes the pair's events: crashes and restarts, switchovers, readiness.
    pub pair: bool,
    /// The vrrpd of this node is dead (its machine is a fresh, unstarted one).
    pub crashed: Vec<bool>,
    /// A crashed Master's VIPs, left on the interface.
    pub stale_vips: Vec<bool>,
    /// The interface is up (kept here too: a crash loses the machine's own view).
    pub iface_up: Vec<bool>,
    /// Switchovers that completed, and resumes, over the run (so tests can show they ran).
    pub switchovers_done: u64,
    pub resumes_done: u64,
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How the nodes are configured to preempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preempt {
    /// Preempt, with a `preempt_delay` drawn per seed up to this many milliseconds.
    On { max_delay_ms: u64 },
    /// Never preempt: the election still ends with one master, of any priority.
    Off,
}

impl Sim {
    pub fn new(seed: u64, n: usize, mode: Preempt) -> Sim {
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
                    // A two-node option (documented so): with three routers a resign can
                    // hand over to a follower that is about to yield itself.
                    fast_takeover_on_zero: n == 2 && rng.chance(300),
                    adopt_interval_cs: None,
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
            sent: 0,
            log: VecDeque::new(),
            events: 0,
            events_now: 0,
            split_brains: 0,
            preempt,
            preempt_delay,
            pair: false,
            crashed: vec![false; n],
            stale_vips: vec![false; n],
            iface_up: vec![true; n],
            switchovers_done: 0,
            resumes_done: 0,
        }
    }

    /// From a heal to a single master: the longest Master_Down_Interval any node can be
    /// waiting on (priority 1), plus two network delays and a centisecond of rounding.
    pub fn bound(&self) -> Duration {
        timers::master_down_interval(1, self.interval_cs) + self.max_delay * 2 + ms(10)
    }

    /// From a heal to the top-priority node being that master: a node restarted by the heal
    /// holds back its preemption for `preempt_delay` first.
    pub fn top_bound(&self) -> Duration {
        self.bound() + self.preempt_delay
    }

    pub fn note(&mut self, what: String) {
        if self.log.len() == 60 {
            self.log.pop_front();
        }
        self.log.push_back(format!("{:>9?} {what}", self.now));
    }

    pub fn fail(&self, msg: &str) -> ! {
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
    pub fn drain(&mut self, i: usize) {
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
                Action::AddVips
                | Action::RemoveVips
                | Action::SendGarp
                | Action::HandOff { .. } => {}
            }
        }
    }

    pub fn send(&mut self, from: usize, priority: u8) {
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
            self.sent += 1;
            self.flight.push(InFlight {
                at,
                seq: self.sent,
                to,
                adv: adv.clone(),
            });
        }
    }

    /// Runs every packet and timer up to `until` (inclusive), calling `check` after each.
    pub fn run_until(&mut self, until: Duration, check: &mut dyn FnMut(&Sim)) {
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
                .min_by_key(|(_, p)| (p.at, p.seq))
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

    pub fn advance(&mut self, to: Duration) {
        if to > self.now {
            self.events_now = 0;
        }
        self.now = to;
    }

    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].state() == StateKind::Master)
            .collect()
    }

    /// Nodes whose interface holds the VIPs: masters, and crashed masters' leftovers.
    pub fn holders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].state() == StateKind::Master || self.stale_vips[i])
            .collect()
    }

    /// One random disturbance.
    pub fn chaos(&mut self) {
        let n = self.nodes.len();
        let now = self.now;
        let i = self.rng.index(n);
        let kinds = if self.pair { 12 } else { 8 };
        let kind = self.rng.range(0, kinds);
        if self.crashed[i] {
            // A dead daemon takes no events; its interface may still go down.
            match kind {
                3 => self.iface_up[i] = false,
                4 => self.iface_up[i] = true,
                _ => self.restart(i),
            }
            return;
        }
        match kind {
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
                self.iface_up[i] = false;
                self.nodes[i].handle_link_down(now);
            }
            4 => {
                self.note(format!("link up n{i}"));
                self.iface_up[i] = true;
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
            9 => self.crash(i),
            10 => {
                let ok = self.nodes[i].handle_switchover(now);
                self.note(format!("switchover n{i} ({ok})"));
            }
            11 => {
                if self.rng.chance(500) {
                    self.note(format!("n{i} clears switchover hold"));
                    self.nodes[i].clear_switchover_hold(now);
                } else {
                    let ready = self.rng.chance(500);
                    self.note(format!("n{i} ready {ready}"));
                    self.nodes[i].set_ready(ready, now);
                }
            }
            _ => {
                self.loss_permille = self.rng.range(0, 400);
                self.note(format!("loss {}‰", self.loss_permille));
            }
        }
        self.drain(i);
    }

    pub fn heal(&mut self) {
        let now = self.now;
        self.note("HEAL".to_string());
        self.loss_permille = 0;
        for row in &mut self.cut {
            row.iter_mut().for_each(|c| *c = false);
        }
        for i in 0..self.nodes.len() {
            self.iface_up[i] = true;
            if self.crashed[i] {
                self.restart(i);
            }
            // The operator resumes any switched-over node, and lbd is ready everywhere, so
            // the healed network must converge to the top priority as before.
            self.nodes[i].set_ready(true, now);
            self.nodes[i].clear_switchover_hold(now);
            self.nodes[i].handle_link_up(now);
            self.nodes[i].handle_startup(now);
            self.drain(i);
        }
        // A switchover still running at the heal ends first (completes, on a healed network),
        // then the operator resumes that node too.
        let until = self.nodes.iter().filter_map(Fsm::resign_deadline).max();
        if let Some(until) = until {
            while self.now < until && self.nodes.iter().any(Fsm::is_resigning) {
                let step = self.now + ms(10);
                self.run_until(step.min(until), &mut |_| {});
            }
            let now = self.now;
            for f in &mut self.nodes {
                f.clear_switchover_hold(now);
            }
        }
    }

    /// A healed phase: asserts one master within `bound()`, and (with preempt) the
    /// top-priority one within `top_bound()`, stable until `end`.
    pub fn healed_phase(&mut self, end: Duration) {
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

    pub fn disturbed_phase(&mut self, end: Duration) {
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
