//! The lbpair demo (`sudo ./scripts/demo.sh`): the pair in network namespaces, a client
//! sending requests to the VIP, and a master that loses power and comes back, shown live.
//!
//! ```text
//! demo [--advert-cs 10] [--interval-ms 5] [--timeout-ms 200] [--tick-ms 400]
//!      [--steady-s 5] [--after-s 5] [--uncoupled] [--keep-logs]
//! ```
//!
//! The show, in order:
//! 1. [`PairTopology`] builds the client, nodes A and B (vrrpd + lbd each, under the
//!    `Restart=always` supervisor) and three backends, and waits until A serves the VIP.
//! 2. The load client (`loadclient`, in the client namespace) sends `GET /` every
//!    `--interval-ms`. Its records are tailed from its output file and shown one line per
//!    `--tick-ms`: time, the node that answered (lbd's node header), requests/s, failures
//!    so far, the backend mix, and what each vrrpd says right now.
//! 3. Node A is powered off (both daemons SIGKILLed, its LAN link down) and the display
//!    runs until B answers, then for `--after-s`.
//! 4. A is powered on (link up, daemons started) and the display runs until A answers again
//!    (it preempts once its lbd is ready), then for `--after-s`.
//! 5. The report: outage window and failed requests of the failover and of the return,
//!    SVG timelines under `target/netns-report/`, and (coupled) what the peer link carried:
//!    the lbds run with `[peer]` and learn-mode sticky sessions, so the returning A resyncs
//!    B's sessions (its state shows `+cold`/`+learning` until warm) before it preempts.
//!
//! The display lags real time by the request timeout: a request's outcome is known only
//! when it's answered or timed out, and a line is printed once every request sent in its
//! interval has one, so a line never changes after it's shown.
//!
//! SIGINT/SIGTERM/SIGHUP are taken by a `sigwait` thread (they're blocked in every other
//! thread, and spawned children get a clean mask from std): it raises a flag the show
//! checks between steps, so the topology is always dropped (daemons killed, namespaces
//! deleted) rather than the process dying with it in place. Every wait is bounded.
#![allow(clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use serde_json::Value;

use netns_tests::pair::load::{summarize, Header, LoadRun, Record, Summary};
use netns_tests::pair::report::{self, RefKind};
use netns_tests::pair::softstate::{SoftStateOpts, StickyMode};
use netns_tests::pair::{PairConfig, PairTopology, BACKEND_PORT, VIP_PORT};
use netns_tests::NodeId;

/// Slots of the per-line request bar.
const BAR: usize = 30;
/// How often the show looks at the load file, the flag and its conditions.
const POLL: Duration = Duration::from_millis(40);
/// How long the load client may run at most (it's stopped at the end of the show).
const LOAD_MAX: Duration = Duration::from_secs(180);
/// Log lines of each daemon printed when the show fails.
const LOG_TAIL: usize = 40;
/// The most the display may lag (it grows from the request timeout when records come late).
const MAX_LAG_MS: f64 = 3000.0;
/// How often each vrrpd is asked for its state.
const STATE_EVERY: f64 = 100.0;

struct Options {
    advert_cs: u16,
    interval_ms: u64,
    timeout_ms: u64,
    tick: Duration,
    steady: Duration,
    after: Duration,
    coupled: bool,
    /// Keep the namespace's config and log directory (removed by the next run).
    keep_logs: bool,
}

fn usage() -> &'static str {
    "usage: demo [--advert-cs N (10)] [--interval-ms N (5)] [--timeout-ms N (200)] \
     [--tick-ms N (400)] [--steady-s N (5)] [--after-s N (5)] [--uncoupled] [--keep-logs]"
}

impl Default for Options {
    fn default() -> Self {
        Self {
            advert_cs: 10,
            interval_ms: 5,
            timeout_ms: 200,
            tick: Duration::from_millis(400),
            steady: Duration::from_secs(5),
            after: Duration::from_secs(5),
            coupled: true,
            keep_logs: false,
        }
    }
}

fn parse_options() -> Result<Options> {
    parse_args(std::env::args().skip(1))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut o = Options::default();
    while let Some(flag) = args.next() {
        if flag == "--uncoupled" {
            o.coupled = false;
            continue;
        }
        if flag == "--keep-logs" {
            o.keep_logs = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let v = args
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{}", usage()))?;
        let n: u64 = v
            .parse()
            .with_context(|| format!("{flag} {v}: not a number"))?;
        match flag.as_str() {
            "--advert-cs" => {
                o.advert_cs = u16::try_from(n)
                    .ok()
                    .filter(|c| (1..=4095).contains(c))
                    .ok_or_else(|| anyhow!("--advert-cs must be 1..=4095"))?;
            }
            "--interval-ms" => o.interval_ms = n.clamp(1, 1000),
            "--timeout-ms" => o.timeout_ms = n.clamp(10, 5000),
            "--tick-ms" => o.tick = Duration::from_millis(n.clamp(100, 5000)),
            "--steady-s" => o.steady = Duration::from_secs(n.min(60)),
            "--after-s" => o.after = Duration::from_secs(n.min(60)),
            other => bail!("unknown option {other}\n{}", usage()),
        }
    }
    Ok(o)
}

fn main() {
    // Blocked before any other thread exists, so every thread inherits the mask and only
    // the sigwait thread ever sees these signals.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    if let Err(e) = mask.thread_block() {
        eprintln!("demo: cannot block signals: {e}");
        std::process::exit(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let spawned = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                // Bounded: after a few signals we're surely exiting anyway.
                for n in 0..16 {
                    let Ok(sig) = mask.wait() else {
                        return;
                    };
                    stop.store(true, Ordering::SeqCst);
                    if n == 0 {
                        eprintln!("\ndemo: {sig}: stopping, cleaning up the namespaces ...");
                    } else {
                        eprintln!("demo: still cleaning up (bounded; a few seconds at most)");
                    }
                }
            });
        if let Err(e) = spawned {
            eprintln!("demo: cannot start the signal thread: {e}");
            std::process::exit(1);
        }
    }
    let code = match parse_options().and_then(|o| run(&o, &stop)) {
        Ok(End::Done) => 0,
        Ok(End::Interrupted) => {
            eprintln!("demo: interrupted; namespaces and daemons removed");
            130
        }
        Err(e) => {
            eprintln!("demo: {e:#}");
            if stop.load(Ordering::SeqCst) {
                130
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Done,
    Interrupted,
}

/// How a phase of the show ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its condition held (and the display ran on for the phase's `after`).
    Met,
    /// The budget ran out first.
    TimedOut,
    Interrupted,
}

fn run(o: &Options, stop: &AtomicBool) -> Result<End> {
    // Two-node fast takeover stays off (the default): it acts on a priority-0 advert, and a
    // powered-off master sends none, so the RFC timers are what a power-off shows.
    let cfg = if o.coupled {
        // With the peer link and learn-mode sticky sessions (every backend answer sets a
        // session cookie, which lbd learns and replicates): the returning node shows
        // cold -> learning -> warm before it takes the VIP back.
        PairConfig {
            softstate: Some(SoftStateOpts {
                warm_timeout_ms: 10_000,
                ..SoftStateOpts::sticky(StickyMode::Learn)
            }),
            ..PairConfig::coupled(o.advert_cs)
        }
    } else {
        PairConfig::uncoupled(o.advert_cs)
    };
    say(&format!(
        "starting the pair: advert interval {} cs ({}), Master_Down_Interval of B {} ms ...",
        o.advert_cs,
        if o.coupled {
            "vrrpd<->lbd coupled"
        } else {
            "UNCOUPLED: lbd always listening, vrrpd alone moves the VIP"
        },
        cfg.mdi().as_millis()
    ));
    let mut pair = PairTopology::new("demo", cfg.clone()).context(
        "starting the pair (run with --uncoupled to try without the vrrpd<->lbd coupling)",
    )?;
    // Started: from here a failure prints short log tails itself, so the pair's own
    // teardown (which dumps 150 lines of each daemon's log) is kept quiet.
    std::env::set_var("NETNS_QUIET", "1");
    pair.lan.topo.set_dump_logs(false);
    pair.lan.topo.keep_dir(o.keep_logs);
    if stop.load(Ordering::SeqCst) {
        return Ok(End::Interrupted);
    }
    let result = show(o, &cfg, &mut pair, stop);
    if result.is_err() && !stop.load(Ordering::SeqCst) {
        print_log_tails(&pair);
    }
    result
}

fn show(o: &Options, cfg: &PairConfig, pair: &mut PairTopology, stop: &AtomicBool) -> Result<End> {
    let vip = pair.vip(0);
    let client = pair.lan.node(NodeId::Client).addr;
    say(&format!(
        "topology up, namespaces {}-*:\n\
         \x20 VIP {vip}:{VIP_PORT}   node A {} (priority {}, master)   node B {} (priority {})\n\
         \x20 backends {}\n\
         \x20 client {client}: GET / every {} ms, {} ms timeout, a new connection each",
        pair.lan.topo.prefix(),
        pair.lan.node(NodeId::A).addr,
        cfg.prio_high,
        pair.lan.node(NodeId::B).addr,
        cfg.prio_low,
        pair.backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("be{} {b}:{BACKEND_PORT}", i + 1))
            .collect::<Vec<_>>()
            .join("   "),
        o.interval_ms,
        o.timeout_ms,
    ));
    pair.await_past_startup_grace();
    let load = pair.start_load_with(vip, false, LOAD_MAX, o.interval_ms, o.timeout_ms)?;
    let mut live = Live::open(&load.out, o)?;
    live.print_legend();

    // 1. Steady state.
    match live.phase(pair, stop, Duration::from_secs(3), o.steady, |l| {
        l.first_ok_from("a", 0.0).is_some()
    })? {
        Phase::Met => {}
        Phase::Interrupted => return Ok(End::Interrupted),
        Phase::TimedOut => bail!("node A doesn't answer the client"),
    }

    // 2. Power-off of the master.
    let t_off = live.header.at(SystemTime::now());
    pair.power_off(NodeId::A).context("powering off node A")?;
    live.mark(
        t_off,
        "power-off A: vrrpd+lbd SIGKILLed, eth0 down",
        "A off",
    );
    let takeover_budget = cfg.mdi() * 3 + Duration::from_secs(5);
    let took_over = live.phase(pair, stop, takeover_budget, o.after, |l| {
        l.first_ok_from("b", t_off).is_some()
    })?;
    match took_over {
        Phase::Met => {}
        Phase::Interrupted => return Ok(End::Interrupted),
        Phase::TimedOut => say("!! B did not take over within its budget; bringing A back anyway"),
    }

    // 3. Power-on: A comes back and preempts once its lbd is ready.
    let t_on = live.header.at(SystemTime::now());
    pair.power_on(NodeId::A)
        .context("powering node A back on")?;
    live.mark(t_on, "power-on A: eth0 up, vrrpd+lbd started", "A on");
    let preempt_budget = pair.startup_budget() + Duration::from_secs(5);
    let came_back = live.phase(pair, stop, preempt_budget, o.after, |l| {
        l.first_ok_from("a", t_on).is_some()
    })?;
    if came_back == Phase::Interrupted {
        return Ok(End::Interrupted);
    }

    // 4. Stop the load and report.
    let run = pair.finish_load(load, Duration::from_secs(5))?;
    live.print_rest()?;
    print_report(o, &run, t_off, t_on, &live.events)?;
    print_peer_report(pair);
    if came_back == Phase::TimedOut {
        bail!("node A did not serve again within {preempt_budget:?} of power-on");
    }
    if took_over == Phase::TimedOut {
        bail!("node B did not take over within {takeover_budget:?}");
    }
    Ok(End::Done)
}

/// The load file, tailed, and the lines shown so far.
struct Live {
    file: File,
    pos: u64,
    partial: Vec<u8>,
    header: Header,
    /// Every record read so far, in arrival order.
    all: Vec<Record>,
    /// Records not yet shown, sorted by send time when a line is cut.
    pending: Vec<Record>,
    /// The client-time (ms) up to which lines have been printed.
    shown_ms: f64,
    tick_ms: f64,
    /// A line for [t, t + tick) is printed once t + tick + lag has passed on the client:
    /// the timeout plus a margin, grown (up to [`MAX_LAG_MS`]) when records come later.
    lag_ms: f64,
    failed_total: usize,
    /// Labelled instants (client ms) not yet printed, and all of them for the SVG.
    unprinted: Vec<(f64, String)>,
    events: Vec<(f64, String)>,
    /// vrrpd's state of A and B, sampled every [`STATE_EVERY`] (client ms), so a line
    /// shows the states as they were at its end rather than when it's printed.
    states: Vec<(f64, String, String)>,
    colour: bool,
}

impl Live {
    fn open(path: &Path, o: &Options) -> Result<Self> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut first = String::new();
        // The header line is there: start_load waited for it.
        BufReader::new(&mut file).read_line(&mut first)?;
        let header: Header = serde_json::from_str(&first).context("load file header")?;
        let pos = u64::try_from(first.len()).unwrap_or(0);
        file.seek(SeekFrom::Start(pos))?;
        Ok(Self {
            file,
            pos,
            partial: Vec::new(),
            header,
            all: Vec::new(),
            pending: Vec::new(),
            shown_ms: 0.0,
            tick_ms: o.tick.as_secs_f64() * 1000.0,
            lag_ms: o.timeout_ms as f64 + 100.0,
            failed_total: 0,
            unprinted: Vec::new(),
            events: Vec::new(),
            states: Vec::new(),
            colour: std::io::stdout().is_terminal(),
        })
    }

    /// Reads what the client has appended since the last call.
    fn poll(&mut self) -> Result<()> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        let n = (&mut self.file)
            .take(16 * 1024 * 1024)
            .read_to_end(&mut buf)?;
        self.pos += u64::try_from(n).unwrap_or(0);
        self.partial.extend_from_slice(&buf);
        let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(last_nl + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            if let Ok(r) = serde_json::from_slice::<Record>(line) {
                if r.t_ms < self.shown_ms {
                    // Later than the lag allowed for (a starved client or machine): wait
                    // longer from now on, so the next lines are whole again.
                    let late = self.header.at(SystemTime::now()) - r.t_ms + 100.0;
                    self.lag_ms = self.lag_ms.max(late).min(MAX_LAG_MS);
                }
                self.pending.push(r.clone());
                self.all.push(r);
            }
        }
        Ok(())
    }

    fn first_ok_from(&self, node: &str, from_ms: f64) -> Option<&Record> {
        self.all
            .iter()
            .filter(|r| r.t_ms >= from_ms && r.outcome.is_ok() && r.node.as_deref() == Some(node))
            .min_by(|a, b| a.t_ms.total_cmp(&b.t_ms))
    }

    /// An event at `t_ms`: `label` for the terminal, `short` for the pictures (where
    /// neighbouring labels would overlap).
    fn mark(&mut self, t_ms: f64, label: &str, short: &str) {
        self.unprinted.push((t_ms, label.to_owned()));
        self.events.push((t_ms, short.to_owned()));
    }

    /// Shows lines until `done` holds, then for `after` more; bounded by `budget` (for
    /// `done`) and by a poll count.
    fn phase<F>(
        &mut self,
        pair: &PairTopology,
        stop: &AtomicBool,
        budget: Duration,
        after: Duration,
        mut done: F,
    ) -> Result<Phase>
    where
        F: FnMut(&Live) -> bool,
    {
        let start = Instant::now();
        let mut met: Option<Instant> = None;
        let max_polls = (budget + after).as_millis() / POLL.as_millis() + 10;
        for _ in 0..max_polls {
            if stop.load(Ordering::SeqCst) {
                return Ok(Phase::Interrupted);
            }
            self.poll()?;
            self.sample_states(pair);
            self.print_due();
            if met.is_none() && done(self) {
                met = Some(Instant::now());
            }
            match met {
                Some(at) if at.elapsed() >= after => return Ok(Phase::Met),
                None if start.elapsed() >= budget => return Ok(Phase::TimedOut),
                _ => {}
            }
            thread::sleep(POLL);
        }
        Ok(if met.is_some() {
            Phase::Met
        } else {
            Phase::TimedOut
        })
    }

    fn sample_states(&mut self, pair: &PairTopology) {
        let now = self.header.at(SystemTime::now());
        if self
            .states
            .last()
            .is_some_and(|(t, _, _)| now - t < STATE_EVERY)
        {
            return;
        }
        let a = node_state(pair, NodeId::A, &pair.a.socket);
        let b = node_state(pair, NodeId::B, &pair.b.socket);
        self.states.push((now, a, b));
    }

    /// The last sampled states at or before `t_ms` (the first sample if none is).
    fn states_at(&self, t_ms: f64) -> (&str, &str) {
        self.states
            .iter()
            .rev()
            .find(|(t, _, _)| *t <= t_ms)
            .or(self.states.first())
            .map_or(("?", "?"), |(_, a, b)| (a.as_str(), b.as_str()))
    }

    /// Prints every line whose interval is complete (and the marks that fall before it).
    fn print_due(&mut self) {
        let now = self.header.at(SystemTime::now());
        self.print_until(now - self.lag_ms);
    }

    /// Once the client has stopped (every record is in): the lines still held back by the lag.
    fn print_rest(&mut self) -> Result<()> {
        self.poll()?;
        let last = self.all.iter().map(|r| r.t_ms).fold(0.0, f64::max);
        // Up to the line holding the last request; a partial last line would look like a drop.
        let limit = ((last / self.tick_ms).floor()) * self.tick_ms;
        self.print_until(limit);
        Ok(())
    }

    /// Prints the lines that end at or before `limit_ms`.
    fn print_until(&mut self, limit_ms: f64) {
        // Bounded: at most the lines a full minute behind could need.
        for _ in 0..1000 {
            let end = self.shown_ms + self.tick_ms;
            if end > limit_ms {
                break;
            }
            self.unprinted.sort_by(|a, b| a.0.total_cmp(&b.0));
            while self.unprinted.first().is_some_and(|(t, _)| *t < end) {
                let (t, label) = self.unprinted.remove(0);
                println!("{:>7.2}s  ── {label} ──", t / 1000.0);
            }
            let (mut now_in, later): (Vec<Record>, Vec<Record>) =
                self.pending.drain(..).partition(|r| r.t_ms < end);
            self.pending = later;
            now_in.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
            let line = self.line(self.shown_ms, end, &now_in);
            println!("{line}");
            self.shown_ms = end;
        }
        let _ = std::io::stdout().flush();
    }

    fn print_legend(&self) {
        println!(
            "\none line per {:.0} ms of requests, by send time, printed once each has its outcome; \
             bar: {}A{}/{}B{} answered by node A/B, {}x{} failed",
            self.tick_ms,
            self.paint("A"),
            self.reset(),
            self.paint("B"),
            self.reset(),
            self.paint("x"),
            self.reset()
        );
        println!(
            "{:>8}  {:<7}  {:^32}  {:>5}  {:<11}  {:<24}  vrrpd A / B",
            "time", "serving", "requests", "req/s", "failed", "backends"
        );
    }

    fn paint(&self, c: &str) -> &'static str {
        if !self.colour {
            return "";
        }
        match c {
            "A" => "\x1b[34;1m",
            "B" => "\x1b[32;1m",
            "x" => "\x1b[31;1m",
            _ => "",
        }
    }

    fn reset(&self) -> &'static str {
        if self.colour {
            "\x1b[0m"
        } else {
            ""
        }
    }

    /// One line: the requests sent in [from, to).
    fn line(&mut self, from: f64, to: f64, all: &[Record]) -> String {
        let failed = all.iter().filter(|r| !r.outcome.is_ok()).count();
        self.failed_total += failed;
        // A record later than the display's lag (a starved client or machine) belongs to a
        // line already shown: it counts in the failures, not in this line's picture.
        let recs: Vec<&Record> = all.iter().filter(|r| r.t_ms >= from).collect();
        // The bar: each slot shows a failure if any request in it failed, else the node.
        let mut slots = [' '; BAR];
        for r in &recs {
            let i = (((r.t_ms - from) / (to - from)) * BAR as f64) as usize;
            let slot = &mut slots[i.min(BAR - 1)];
            let c = if r.outcome.is_ok() {
                match r.node.as_deref() {
                    Some("a") => 'A',
                    Some("b") => 'B',
                    _ => '?',
                }
            } else {
                'x'
            };
            if *slot != 'x' {
                *slot = c;
            }
        }
        let mut bar = String::new();
        let mut prev = ' ';
        for c in slots {
            if c != prev {
                bar.push_str(self.reset());
                bar.push_str(self.paint(&c.to_string()));
                prev = c;
            }
            bar.push(c);
        }
        bar.push_str(self.reset());
        // Serving: the nodes that answered, in order ("a>b" across a takeover).
        let mut serving: Vec<&str> = Vec::new();
        for r in recs.iter().filter(|r| r.outcome.is_ok()) {
            let n = r.node.as_deref().unwrap_or("?");
            if serving.last() != Some(&n) {
                serving.push(n);
            }
        }
        let serving = if serving.is_empty() {
            "--".to_owned()
        } else {
            serving.join(">").to_ascii_uppercase()
        };
        let mut by_backend: BTreeMap<&str, usize> = BTreeMap::new();
        for r in recs.iter().filter(|r| r.outcome.is_ok()) {
            *by_backend
                .entry(r.backend.as_deref().unwrap_or("?"))
                .or_default() += 1;
        }
        let ok: usize = by_backend.values().sum();
        let mix = if ok == 0 {
            "-".to_owned()
        } else {
            by_backend
                .iter()
                .map(|(b, n)| format!("{b} {:>2}%", n * 100 / ok))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let rate = recs.len() as f64 * 1000.0 / (to - from);
        // Padded before it's painted: escape codes would count as width.
        let new_failed = if failed > 0 {
            format!("{:<6}", format!("(+{failed})"))
        } else {
            " ".repeat(6)
        };
        let new_failed = format!("{}{new_failed}{}", self.paint("x"), self.reset());
        let (a, b) = self.states_at(to);
        format!(
            "{:>7.2}s  {serving:<7}  |{bar}|  {rate:>5.0}  {:>5}{new_failed}  {mix:<24}  {a} / {b}",
            to / 1000.0,
            self.failed_total,
        )
    }
}

/// A node's VRRP state, and with the peer link its lbd's soft-state phase unless warm
/// (`backup+cold`, `backup+learning`): what a returning node waits for before preempting.
fn node_state(pair: &PairTopology, id: NodeId, socket: &Path) -> String {
    let vrrp = vrrp_state(socket);
    if pair.cfg.softstate.is_none() || vrrp == "down" {
        return vrrp;
    }
    match pair.peer_view(id) {
        Ok(v) if v.phase == "warm" => vrrp,
        Ok(v) => format!("{vrrp}+{}", v.phase),
        Err(_) => format!("{vrrp}+lbd?"),
    }
}

/// Instance "web"'s state from a node's vrrpd control socket, right now (`down` when
/// nothing answers: killed, or not started yet).
fn vrrp_state(socket: &Path) -> String {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return "down".into();
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    if s.write_all(b"{\"cmd\":\"status\"}\n").is_err() {
        return "down".into();
    }
    let mut line = String::new();
    if BufReader::new(s.take(256 * 1024))
        .read_line(&mut line)
        .is_err()
    {
        return "?".into();
    }
    serde_json::from_str::<Value>(&line)
        .ok()
        .and_then(|v| {
            v.get("instances")?
                .as_array()?
                .iter()
                .find(|i| i.get("name").and_then(Value::as_str) == Some("web"))?
                .get("state")?
                .as_str()
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_else(|| "?".into())
}

fn say(msg: &str) {
    println!("\n==> {msg}");
}

/// The figures of the requests sent in [from, to).
fn range(run: &LoadRun, from: f64, to: f64) -> Summary {
    summarize(run.records.iter().filter(|r| r.t_ms >= from && r.t_ms < to))
}

fn describe(s: &Summary) -> String {
    let windows = match s.windows.len() {
        0 => String::new(),
        1 => " in 1 window".into(),
        n => format!(" in {n} windows, longest {:.0} ms", s.longest_ms),
    };
    // How they failed (timeout: nobody answered; refused: a holder with no listener; ...).
    let how: Vec<String> = s
        .by_outcome
        .iter()
        .filter(|(k, _)| k.as_str() != "ok")
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let how = if how.is_empty() {
        String::new()
    } else {
        format!(" ({})", how.join(", "))
    };
    format!(
        "outage {:.0} ms{windows}, {} failed{how} of {} requests",
        s.outage_ms, s.failed, s.total
    )
}

/// With the peer link: what A got back from B after its power cycle, and whether both
/// nodes now hold the same soft state.
fn print_peer_report(pair: &PairTopology) {
    if pair.cfg.softstate.is_none() {
        return;
    }
    match (pair.lbd_status(NodeId::A), pair.peer_view(NodeId::B)) {
        (Ok(a), Ok(b)) => {
            let p = &a["peer"];
            let equal = p["digest"]["count"].as_u64() == Some(b.count)
                && p["digest"]["hash"].to_string().trim_matches('"') == b.hash;
            println!(
                "peer link         A resynced {} sticky/rate/drain entries from B (cold -> warm \
                 before preempting); now {} on A, {} on B, digests {}",
                p["entries_received"],
                p["digest"]["count"],
                b.count,
                if equal { "equal" } else { "DIFFERENT" }
            );
        }
        (a, b) => println!(
            "peer link         status unavailable: A {:?}, B {:?}",
            a.err(),
            b.err()
        ),
    }
}

fn print_report(
    o: &Options,
    run: &LoadRun,
    t_off: f64,
    t_on: f64,
    events: &[(f64, String)],
) -> Result<()> {
    // A request sent just before the power-off can fail because of it (it was in flight).
    let lead = o.timeout_ms as f64;
    let before = range(run, 0.0, t_off - lead);
    let failover = range(run, t_off - lead, t_on);
    let back = range(run, t_on, f64::INFINITY);
    let whole = run.summary();
    let b_first = run.first_answer_from("b", t_off).map(|r| r.t_ms - t_off);
    let a_again = run.first_answer_from("a", t_on).map(|r| r.t_ms - t_on);
    let ms = |v: Option<f64>| v.map_or("never".to_owned(), |v| format!("+{v:.0} ms"));

    say("report");
    println!("steady state      {}", describe(&before));
    if before.failed > 0 {
        // Nothing was wrong yet: the client, the daemons or the whole machine were starved.
        println!(
            "                  (failures before any fault: the machine is busy; load average {}; \
             the figures below include that noise)",
            load_average()
        );
    }
    println!(
        "failover          A powered off at {:.2} s; B answered first at {}\n\
         \x20                 {}",
        t_off / 1000.0,
        ms(b_first),
        describe(&failover)
    );
    if let Some(r) = report::keepalived_reference(RefKind::NodeLoss, o.advert_cs) {
        println!(
            "                  keepalived+HAProxy, node loss at {} cs: about {r} ms",
            o.advert_cs
        );
    }
    println!(
        "return            A powered on at {:.2} s; A answered again at {}{}\n\
         \x20                 {}",
        t_on / 1000.0,
        ms(a_again),
        if o.coupled {
            " (it preempts once its lbd is ready)"
        } else {
            " (it preempts at once: uncoupled)"
        },
        describe(&back)
    );
    println!(
        "whole run         {} requests, {} failed; by node {:?}; by backend {:?}; by outcome {:?}",
        whole.total, whole.failed, whole.by_node, whole.by_backend, whole.by_outcome
    );
    println!("machine           load average {}", load_average());

    let title = format!(
        "lbpair demo: power-off of master A and its return, advert {} cs, GET / every {} ms",
        o.advert_cs, o.interval_ms
    );
    let full = report::write_file(
        "demo-timeline.svg",
        &report::timeline_svg(run, events, &title),
    )?;
    // The failover zoomed in: from half a second before the power-off to a second after
    // B's first answer, shifted so the picture starts at 0.
    let z0 = (t_off - 500.0).max(0.0);
    let z1 = t_off + b_first.unwrap_or(2000.0) + 1000.0;
    let zoom = LoadRun {
        header: run.header.clone(),
        records: run
            .records
            .iter()
            .filter(|r| r.t_ms >= z0 && r.t_ms < z1)
            .map(|r| Record {
                t_ms: r.t_ms - z0,
                ..r.clone()
            })
            .collect(),
    };
    // Here "B serves" has room beside "A off" (in the whole run it would overlap).
    let b_serves = b_first.map(|d| (t_off + d, "B serves".to_owned()));
    let zoom_events: Vec<(f64, String)> = events
        .iter()
        .chain(b_serves.iter())
        .filter(|(t, _)| *t >= z0 && *t < z1)
        .map(|(t, l)| (t - z0, l.clone()))
        .collect();
    let zoomed = report::write_file(
        "demo-failover.svg",
        &report::timeline_svg(
            &zoom,
            &zoom_events,
            &format!("the failover, zoomed: ms from {:.2} s", z0 / 1000.0),
        ),
    )?;
    println!("timeline          {}", canonical(&full).display());
    println!("failover zoomed   {}", canonical(&zoomed).display());
    Ok(())
}

/// `/proc/loadavg`'s three averages: on a shared 2-core machine, the context of a figure.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_owned())
}

/// The last lines of each daemon's log, for a show that failed.
fn print_log_tails(pair: &PairTopology) {
    let dir = pair.lan.topo.dir();
    for name in ["vrrpd-a", "lbd-a", "vrrpd-b", "lbd-b"] {
        let path = dir.join(format!("{name}.log"));
        let text = std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let skip = lines.len().saturating_sub(LOG_TAIL);
        eprintln!("----- {name}: last {} lines -----", lines.len() - skip);
        for l in &lines[skip..] {
            eprintln!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netns_tests::pair::load::Outcome;

    fn rec(t_ms: f64, node: Option<&str>, backend: &str) -> Record {
        Record {
            t_ms,
            outcome: if node.is_some() {
                Outcome::Ok
            } else {
                Outcome::Timeout
            },
            latency_ms: 1.0,
            status: node.map(|_| 200),
            node: node.map(str::to_owned),
            backend: node.map(|_| backend.to_owned()),
            retried: false,
            detail: None,
        }
    }

    /// A load file with its header, in a fresh temp dir; the `Live` over it.
    fn live_over(name: &str, lines: &str) -> (Live, PathBuf) {
        let dir = std::env::temp_dir().join(format!("demo-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("load.jsonl");
        let header = "{\"start_unix_us\":0,\"target\":\"x:80\",\"interval_ms\":5,\
                      \"timeout_ms\":200,\"mode\":\"fresh\"}\n";
        std::fs::write(&path, format!("{header}{lines}")).expect("write");
        let mut live = Live::open(&path, &Options::default()).expect("open");
        live.colour = false;
        (live, dir)
    }

    #[test]
    fn options_parse_and_reject() {
        let o = parse_args(
            ["--advert-cs", "100", "--uncoupled"]
                .map(String::from)
                .into_iter(),
        )
        .expect("parses");
        assert_eq!((o.advert_cs, o.coupled), (100, false));
        assert!(parse_args(["--advert-cs", "0"].map(String::from).into_iter()).is_err());
        assert!(parse_args(["--advert-cs"].map(String::from).into_iter()).is_err());
        assert!(parse_args(["--frobnicate", "1"].map(String::from).into_iter()).is_err());
    }

    #[test]
    fn a_line_shows_the_takeover_in_order() {
        let (mut live, dir) = live_over("line", "");
        // 400 ms: A answers for 100 ms, then 200 ms of failures, then B.
        let mut recs = Vec::new();
        for i in 0..80 {
            let t = f64::from(i) * 5.0;
            let node = match t {
                t if t < 100.0 => Some("a"),
                t if t < 300.0 => None,
                _ => Some("b"),
            };
            recs.push(rec(t, node, if i % 2 == 0 { "be1" } else { "be2" }));
        }
        live.states.push((0.0, "master".into(), "backup".into()));
        let line = live.line(0.0, 400.0, &recs);
        let _ = std::fs::remove_dir_all(dir);
        let bar = line.split('|').nth(1).expect("a bar");
        assert_eq!(bar.len(), BAR, "{line}");
        assert!(
            bar.starts_with("AAAAAAA") && bar.ends_with("BBBBBBB"),
            "{line}"
        );
        assert!(
            bar.contains("xxxxxxxxxxxxxx") && !bar.contains(' '),
            "{line}"
        );
        assert!(line.contains("A>B"), "{line}");
        assert!(line.contains("40(+40)"), "{line}");
        assert!(line.contains("be1 50% be2 50%"), "{line}");
        assert!(line.contains("master / backup"), "{line}");
        assert!(line.contains("  200  "), "200 req/s: {line}");
        assert_eq!(live.failed_total, 40);
    }

    #[test]
    fn the_tail_reads_whole_lines_only_and_grows_the_lag_for_late_ones() {
        let (mut live, dir) = live_over(
            "tail",
            "{\"t_ms\":0.0,\"outcome\":\"ok\",\"latency_ms\":1,\"node\":\"a\"}\n{\"t_ms\":5",
        );
        live.poll().expect("poll");
        assert_eq!(live.all.len(), 1);
        let path = dir.join("load.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append");
        f.write_all(b".0,\"outcome\":\"timeout\",\"latency_ms\":200}\n")
            .expect("write");
        live.poll().expect("poll");
        assert_eq!(live.all.len(), 2, "the torn line, completed, is read once");
        assert_eq!(live.all[1].outcome, Outcome::Timeout);
        assert!(live.first_ok_from("a", 0.0).is_some() && live.first_ok_from("b", 0.0).is_none());

        // Lines up to 800 ms shown; then a record sent at 10 ms arrives: the lag grows
        // (the header's start is the epoch, so "now" is far later: capped).
        live.print_until(800.0);
        assert_eq!(live.shown_ms, 800.0);
        let before = live.lag_ms;
        f.write_all(b"{\"t_ms\":10.0,\"outcome\":\"ok\",\"latency_ms\":1,\"node\":\"a\"}\n")
            .expect("write");
        live.poll().expect("poll");
        let _ = std::fs::remove_dir_all(dir);
        assert!(
            live.lag_ms > before && live.lag_ms <= MAX_LAG_MS,
            "{}",
            live.lag_ms
        );
    }

    #[test]
    fn the_report_names_how_requests_failed() {
        let recs = [
            rec(0.0, Some("a"), "be1"),
            rec(5.0, None, ""),
            rec(10.0, Some("b"), "be1"),
        ];
        let s = summarize(recs.iter());
        let text = describe(&s);
        assert!(
            text.contains("1 failed (1 timeout) of 3 requests"),
            "{text}"
        );
        assert!(text.contains("outage 5 ms in 1 window"), "{text}");
    }
}
