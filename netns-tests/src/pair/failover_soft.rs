//! The soft state's failover promise, measured from outside: many clients hold sticky sessions
//! (learn mode in pool `app`, insert mode in pool `ins`) and rate-limit buckets (one per
//! `x-api-key`), the master is lost (kill -9 of vrrpd and lbd, link down: the pair's
//! power-off) at a random moment, and after the backup has taken over every client comes
//! back. What the figures say:
//!
//! - per sticky mode: sessions in all, those pinned more than [`OLD`] before the kill, and
//!   the share of those that reached their own backend again (the promise: ≥ 99.9%);
//! - per bucket: the requests the backup allowed after the failover against what the
//!   limit allows given what the master had actually allowed ([`ideal_allowed`]), in tokens,
//!   which are refill intervals (one token refills in 1/rate; the promise: within one).
//!
//! The kill comes at one of three [`KillMoment`]s. Used by `src/bin/bench-failover-softstate.rs`
//! (the benchmark, `scripts/bench-failover-softstate.sh`) and `tests/it/pair_softstate.rs` (the
//! bound, one kill per moment).
//!
//! Clients run on threads inside the client's namespace ([`in_netns`]; threads spawned there
//! inherit it), each request on a fresh connection, so 1000 clients take a second or two.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};

use super::softstate::{
    http, in_netns, HttpResponse, RateLimitOpts, SoftStateOpts, StickyMode, INSERT_COOKIE,
    INSERT_PREFIX, SESSION_COOKIE,
};
use super::{PairConfig, PairTopology};
use crate::lan::NodeId;
use crate::wait;

/// Sessions pinned longer than this before the kill are the ones the promise covers.
pub const OLD: Duration = Duration::from_millis(200);
/// The header the rate limiter keys on.
pub const API_KEY_HEADER: &str = "x-api-key";
/// How long after a burst of new sessions [`KillMoment::AfterBurst`] kills.
pub const AFTER_BURST: Duration = Duration::from_millis(50);
/// Advert interval: a failover takes a few hundred ms, so the figures are about soft
/// state, not VRRP timers.
const ADVERT_CS: u16 = 10;
/// A sustained client sends every this share of a refill interval (faster than the rate,
/// so the limiter, not the client, sets what passes).
pub const SUSTAIN_PACE: f64 = 0.3;
/// One request: connect and answer.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the peer link may take to connect and sync at startup.
const PEER_SETTLE: Duration = Duration::from_secs(20);
/// `[peer] warm_timeout_ms` in the resync moment: the backup, cold when the master dies,
/// reports warm (and takes over) only after it; shorter than lbd's default to keep runs short.
const RESYNC_WARM_TIMEOUT_MS: u64 = 2000;

/// When the master is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMoment {
    /// While clients keep pinning new sessions and taking tokens (a random moment 0.3–1.3 s
    /// into it).
    Steady,
    /// While the backup's lbd, just restarted (kill -9, its supervisor restarts it), receives
    /// the full resync from the master (a random moment within the resync's expected length).
    Resync,
    /// [`AFTER_BURST`] after a burst of new sessions (which starts at a random moment).
    AfterBurst,
}

impl KillMoment {
    pub const ALL: [KillMoment; 3] = [
        KillMoment::Steady,
        KillMoment::Resync,
        KillMoment::AfterBurst,
    ];

    /// A short name for namespaces and options.
    pub fn tag(self) -> &'static str {
        match self {
            KillMoment::Steady => "steady",
            KillMoment::Resync => "resync",
            KillMoment::AfterBurst => "burst",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KillMoment::Steady => "steady updates",
            KillMoment::Resync => "during a resync",
            KillMoment::AfterBurst => "50 ms after a burst",
        }
    }
}

/// What one run sets up.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Sticky sessions per mode held before the kill.
    pub clients: usize,
    /// Rate-limit buckets (API keys), each emptied before the kill.
    pub buckets: usize,
    /// The limiter's refill rate (tokens/s) and burst.
    pub rate: f64,
    pub burst: u32,
    /// Client threads.
    pub threads: usize,
    /// Buckets whose clients, after their first burst through the backup, keep sending
    /// (every [`SUSTAIN_PACE`] of a refill interval) until the master's inherited debt would
    /// have refilled: what a client hammering the API sees over the failover, not only at it.
    pub sustained_buckets: usize,
    /// New sessions per mode in [`KillMoment::AfterBurst`]'s burst.
    pub burst_sessions: usize,
    /// [`KillMoment::Resync`]: the full resync is paced (`[peer] resync_rate`) to last about
    /// this long, so a random moment can fall inside it.
    pub resync: Duration,
    /// Don't print the namespaces' process logs at teardown (the benchmark); a test keeps
    /// them, for its failures.
    pub quiet_teardown: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            clients: 1000,
            buckets: 1000,
            // A full refill takes 4 s, longer than from the last token before the kill to
            // the first after it: a bucket the backup didn't know shows as an error.
            rate: 1.0,
            burst: 4,
            threads: 8,
            sustained_buckets: 50,
            burst_sessions: 200,
            resync: Duration::from_millis(800),
            quiet_teardown: false,
        }
    }
}

/// The run's random source: seeded, so the printed seed replays the same kill moments.
#[derive(Debug, Clone)]
pub struct Rng(StdRng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// A seed for runs without `--seed`.
    pub fn fresh_seed() -> u64 {
        rand::random()
    }

    /// Uniform in `[lo, hi)` (`lo` when the range is empty).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        self.0.gen_range(lo..hi)
    }
}

/// A client's session: the cookie it sends back and the backend it was pinned to.
#[derive(Debug, Clone)]
struct Session {
    mode: StickyMode,
    cookie: String,
    backend: String,
    pinned_at: Instant,
}

/// One request of a bucket's client: when it was sent, and whether it was allowed.
type Take = (Instant, bool);

/// Sessions of one sticky mode across the kill.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeFigures {
    pub total: usize,
    /// Pinned more than [`OLD`] before the kill.
    pub old: usize,
    pub old_kept: usize,
    pub young: usize,
    pub young_kept: usize,
    /// No 200 after the failover within the budget (counted as moved).
    pub unanswered: usize,
}

impl ModeFigures {
    /// Share of old sessions that kept their backend, in percent.
    pub fn old_kept_pct(&self) -> f64 {
        if self.old == 0 {
            return 100.0;
        }
        100.0 * self.old_kept as f64 / self.old as f64
    }

    /// The most old sessions the promise lets move: 0.1%, rounded down.
    pub fn allowed_moves(&self) -> usize {
        self.old / 1000
    }

    pub fn meets_promise(&self) -> bool {
        self.old - self.old_kept <= self.allowed_moves()
    }
}

/// The rate-limit buckets across the kill. Errors are in tokens, i.e. in refill intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateFigures {
    pub buckets: usize,
    /// Per bucket: allowed after the failover minus what the limit allows, all requests
    /// after the failover (the sustained ones included).
    pub errors: Vec<i64>,
    /// The same for the first burst after the failover alone (what the backup knew of the
    /// master's consumption at the takeover).
    pub first_burst_errors: Vec<i64>,
    /// Buckets whose clients kept sending after the first burst.
    pub sustained: usize,
    /// Requests before the kill whose answer differed from the ideal bucket's (timing at a
    /// refill boundary; a sanity check of the model, expected ~0).
    pub pre_kill_mismatches: usize,
    /// Requests allowed after the failover in all, and what the limit allowed.
    pub allowed_after: u64,
    pub ideal_after: u64,
}

impl RateFigures {
    /// The largest error either way (the sign kept).
    pub fn worst(errors: &[i64]) -> i64 {
        errors.iter().copied().max_by_key(|e| e.abs()).unwrap_or(0)
    }

    /// Buckets off by more than one refill interval either way.
    pub fn beyond_one_interval(errors: &[i64]) -> usize {
        errors.iter().filter(|e| e.abs() > 1).count()
    }

    pub fn meets_promise(&self) -> bool {
        Self::beyond_one_interval(&self.errors) == 0
            && Self::beyond_one_interval(&self.first_burst_errors) == 0
    }
}

/// One kill and what it cost.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub moment: KillMoment,
    /// The random delay drawn for the moment.
    pub drawn: Duration,
    /// The backup's peer-link phase and record count read just before the kill, and the
    /// master's count.
    pub backup_phase: String,
    pub backup_records: u64,
    pub master_records: u64,
    /// From the kill until the backup held the VIP.
    pub takeover: Duration,
    pub learn: ModeFigures,
    pub insert: ModeFigures,
    pub rate: RateFigures,
    /// Notes on the run (what the resync looked like, ...).
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn meets_promise(&self) -> bool {
        self.learn.meets_promise() && self.insert.meets_promise() && self.rate.meets_promise()
    }
}

/// The pair's soft-state config for the runs: learn mode on `app`, insert mode on `ins`,
/// a limiter on the API key, the peer link.
fn soft_opts(moment: KillMoment, opts: &Opts) -> SoftStateOpts {
    let mut soft = SoftStateOpts::sticky(StickyMode::Learn);
    soft.insert_pool = true;
    soft.rate_limits = vec![RateLimitOpts {
        name: "per_api_key".into(),
        key: format!("header:{API_KEY_HEADER}"),
        rate: opts.rate,
        burst: opts.burst,
        routes: Vec::new(),
    }];
    if moment == KillMoment::Resync {
        // Learn entries and buckets (insert mode has no table), plus the steady load's.
        let records = (opts.clients + opts.buckets) as f64 * 1.1;
        let rate = records / opts.resync.as_secs_f64().max(0.05);
        soft.resync_rate = Some(rate.max(100.0) as u64);
        soft.warm_timeout_ms = RESYNC_WARM_TIMEOUT_MS;
    }
    soft
}

/// Builds a pair, loads it, kills the master at `moment`, brings every client back
/// through the backup, and returns the figures.
pub fn run(tag: &str, moment: KillMoment, opts: &Opts, rng: &mut Rng) -> Result<Outcome> {
    let cfg = PairConfig {
        softstate: Some(soft_opts(moment, opts)),
        ..PairConfig::coupled(ADVERT_CS)
    };
    let mut pair = PairTopology::new(tag, cfg)?;
    pair.lan.topo.set_dump_logs(!opts.quiet_teardown);
    pair.await_past_startup_grace();
    pair.await_peer_steady(PEER_SETTLE)?;
    let clients = Clients::new(&pair, opts);

    let mut sessions = clients.pin(StickyMode::Learn, opts.clients)?;
    sessions.extend(clients.pin(StickyMode::Insert, opts.clients)?);
    let keys: Vec<String> = (0..opts.buckets).map(|i| format!("key-{i}")).collect();
    let mut takes = clients.empty_buckets(&keys)?;

    let mut notes = Vec::new();
    // The takeover is timed inside the steady load's scope: joining its threads first would
    // wait out their requests to the dead master and start the clock late.
    let (drawn, t_kill, before, takeover) = match moment {
        KillMoment::Steady => {
            let drawn = rng.between(Duration::from_millis(300), Duration::from_millis(1300));
            let (t_kill, before, takeover, more, more_takes) = clients.under_steady_load(
                &keys,
                || std::thread::sleep(drawn),
                |t_kill| await_takeover(&pair, t_kill, moment),
            )?;
            notes.push(format!(
                "steady load: {} new sessions, {} bucket requests",
                more.len(),
                more_takes.values().map(Vec::len).sum::<usize>()
            ));
            sessions.extend(more);
            for (k, t) in more_takes {
                takes.entry(k).or_default().extend(t);
            }
            (drawn, t_kill, before, Some(takeover))
        }
        KillMoment::Resync => {
            let drawn = rng.between(Duration::ZERO, opts.resync);
            let (t_kill, before) = kill_during_resync(&pair, drawn, &mut notes)?;
            (drawn, t_kill, before, None)
        }
        KillMoment::AfterBurst => {
            let drawn = rng.between(Duration::ZERO, Duration::from_millis(500));
            std::thread::sleep(drawn);
            let mut burst = clients.pin(StickyMode::Learn, opts.burst_sessions)?;
            burst.extend(clients.pin(StickyMode::Insert, opts.burst_sessions)?);
            let last = burst
                .iter()
                .map(|s| s.pinned_at)
                .max()
                .unwrap_or_else(Instant::now);
            let since = last.elapsed();
            std::thread::sleep(AFTER_BURST.saturating_sub(since));
            notes.push(format!(
                "burst of {} sessions in {:?}",
                burst.len(),
                last.saturating_duration_since(
                    burst.iter().map(|s| s.pinned_at).min().unwrap_or(last)
                )
            ));
            sessions.extend(burst);
            let before = views_before_kill(&pair);
            let t_kill = Instant::now();
            pair.power_off(NodeId::A)?;
            (drawn, t_kill, before, None)
        }
    };
    notes.push(format!("kill {:?} after the last session", {
        let last = sessions.iter().map(|s| s.pinned_at).max();
        last.map(|l| t_kill.saturating_duration_since(l))
    }));

    let takeover = match takeover {
        Some(t) => t,
        None => await_takeover(&pair, t_kill, moment)?,
    };

    // Buckets first: the closer to the kill, the less refill blurs what was lost.
    let first = clients.burst_buckets(&keys, opts.burst as usize + 2)?;
    let sustained = opts.sustained_buckets.min(keys.len());
    let mut after = first.clone();
    if sustained > 0 {
        // Until the master's debt (a full bucket at the kill) has refilled, and a little more.
        let window = Duration::from_secs_f64((f64::from(opts.burst) + 1.0) / opts.rate);
        let pace = Duration::from_secs_f64(SUSTAIN_PACE / opts.rate);
        let more = clients.sustain_buckets(&keys[..sustained], window, pace)?;
        for (log, more) in after.iter_mut().zip(more) {
            log.extend(more);
        }
    }
    let replayed = clients.replay(&sessions)?;
    let (learn, insert) = session_figures(&sessions, &replayed, t_kill);
    let mut rate = rate_figures(&keys, &takes, &after, t_kill, opts.rate, opts.burst);
    rate.first_burst_errors =
        rate_figures(&keys, &takes, &first, t_kill, opts.rate, opts.burst).errors;
    rate.sustained = sustained;
    Ok(Outcome {
        moment,
        drawn,
        backup_phase: before.0,
        backup_records: before.1,
        master_records: before.2,
        takeover,
        learn,
        insert,
        rate,
        notes,
    })
}

/// Waits from the kill until the backup holds the VIP; the time it took.
fn await_takeover(pair: &PairTopology, t_kill: Instant, moment: KillMoment) -> Result<Duration> {
    // A cold backup (the resync kill) reports warm without its peer only after the warm
    // timeout, twice at most (see lbd's peer link); it has taken over sooner so far.
    let budget = pair.cfg.mdi() * 2
        + Duration::from_secs(2)
        + Duration::from_millis(2 * RESYNC_WARM_TIMEOUT_MS)
            * u32::from(moment == KillMoment::Resync);
    let vip = pair.vip(0);
    let at = wait::eventually_until(
        t_kill,
        t_kill + wait::scaled(budget),
        Duration::from_millis(5),
        || Ok(pair.holders(vip)?.contains(&NodeId::B)),
    )
    .context("the backup never took the VIP over")?;
    Ok(at.saturating_duration_since(t_kill))
}

/// (backup phase, backup records, master records), read just before a kill; errors shown
/// as the phase (a figure must not fail the run).
fn views_before_kill(pair: &PairTopology) -> (String, u64, u64) {
    let master = pair.peer_view(NodeId::A).map(|v| v.count).unwrap_or(0);
    match pair.peer_view(NodeId::B) {
        Ok(v) => (v.phase, v.count, master),
        Err(e) => (format!("unknown ({e:#})"), 0, master),
    }
}

/// Restarts the backup's lbd (kill -9; its supervisor starts it again), waits until its
/// resync from the master is under way, waits `drawn` more and kills the master.
fn kill_during_resync(
    pair: &PairTopology,
    drawn: Duration,
    notes: &mut Vec<String>,
) -> Result<(Instant, (String, u64, u64))> {
    let starts = pair.b.lbd.starts();
    pair.b.lbd.signal(nix::sys::signal::Signal::SIGKILL)?;
    pair.b
        .lbd
        .await_starts(starts + 1, Duration::from_secs(5))?;
    let t_restart = Instant::now();
    let mut phases: Vec<(Duration, String, u64)> = Vec::new();
    wait::eventually(Duration::from_secs(10), Duration::from_millis(2), || {
        let v = pair.peer_view(NodeId::B)?;
        if phases.last().map(|p| &p.1) != Some(&v.phase) {
            phases.push((t_restart.elapsed(), v.phase.clone(), v.count));
        }
        // Learning: the resync streams. Warm already: it was quicker than the polling.
        Ok(v.phase == "learning" || v.is_warm())
    })
    .context("the restarted backup never started its resync")?;
    std::thread::sleep(drawn);
    let before = views_before_kill(pair);
    let t_kill = Instant::now();
    pair.power_off(NodeId::A)?;
    notes.push(format!(
        "backup lbd restarted; its phases after the restart {phases:?}; kill {drawn:?} after \
         the resync was seen"
    ));
    Ok((t_kill, before))
}

/// The client side: requests from threads in the client's namespace.
#[derive(Clone, Copy)]
struct Clients<'a> {
    pair: &'a PairTopology,
    target: SocketAddrV4,
    threads: usize,
    /// Budget for one client's retries (connection failures during the failover).
    budget: Duration,
}

/// One GET to `target` with `headers` (a fresh connection).
fn get(target: SocketAddrV4, path: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    http(
        SocketAddr::V4(target),
        "GET",
        path,
        headers,
        REQUEST_TIMEOUT,
    )
}

fn path_of(mode: StickyMode) -> &'static str {
    match mode {
        StickyMode::Learn => "/",
        StickyMode::Insert => INSERT_PREFIX,
    }
}

fn cookie_of(mode: StickyMode) -> &'static str {
    match mode {
        StickyMode::Learn => SESSION_COOKIE,
        StickyMode::Insert => INSERT_COOKIE,
    }
}

impl<'a> Clients<'a> {
    fn new(pair: &'a PairTopology, opts: &Opts) -> Self {
        Self {
            pair,
            target: pair.vip_target(),
            threads: opts.threads.max(1),
            budget: Duration::from_secs(10),
        }
    }

    fn ns(&self) -> String {
        self.pair.lan.node(NodeId::Client).ns.clone()
    }

    /// `f` over `items` on `self.threads` threads in the client's namespace; results in
    /// the items' order.
    fn par_map<T, R, F>(&self, items: &[T], f: F) -> Result<Vec<R>>
    where
        T: Sync,
        R: Send,
        F: Fn(&T) -> Result<R> + Sync,
    {
        let threads = self.threads.min(items.len()).max(1);
        let f = &f;
        in_netns(&self.ns(), move || {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        s.spawn(move || {
                            items
                                .iter()
                                .enumerate()
                                .skip(t)
                                .step_by(threads)
                                .map(|(i, item)| f(item).map(|r| (i, r)))
                                .collect::<Result<Vec<_>>>()
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(items.len());
                for h in handles {
                    out.extend(
                        h.join()
                            .map_err(|_| anyhow!("a client thread panicked"))??,
                    );
                }
                out.sort_by_key(|(i, _)| *i);
                Ok(out.into_iter().map(|(_, r)| r).collect())
            })
        })
    }

    /// `n` new sessions of `mode`.
    fn pin(&self, mode: StickyMode, n: usize) -> Result<Vec<Session>> {
        let slots: Vec<()> = vec![(); n];
        let (target, budget) = (self.target, self.budget);
        self.par_map(&slots, |()| pin_one(target, mode, budget))
    }

    /// Sends each key's requests until its first 429: every bucket empty.
    fn empty_buckets(&self, keys: &[String]) -> Result<BTreeMap<String, Vec<Take>>> {
        let target = self.target;
        let max = 64;
        let logs = self.par_map(keys, |key| {
            let mut log = Vec::new();
            while log.len() < max {
                let (t, allowed) = take(target, key)?;
                log.push((t, allowed));
                if !allowed {
                    return Ok(log);
                }
            }
            bail!("{key}: {max} requests allowed, never a 429: is the limiter on?")
        })?;
        Ok(keys.iter().cloned().zip(logs).collect())
    }

    /// After the failover: `n` requests back to back per key (connection failures retried
    /// within the budget).
    fn burst_buckets(&self, keys: &[String], n: usize) -> Result<Vec<Vec<Take>>> {
        let (target, budget) = (self.target, self.budget);
        self.par_map(keys, |key| {
            let deadline = Instant::now() + budget;
            let mut log = Vec::with_capacity(n);
            while log.len() < n {
                match take(target, key) {
                    Ok(t) => log.push(t),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => {}
                }
            }
            Ok(log)
        })
    }

    /// One thread per key: a request every `pace` for `window`.
    fn sustain_buckets(
        &self,
        keys: &[String],
        window: Duration,
        pace: Duration,
    ) -> Result<Vec<Vec<Take>>> {
        let wide = Clients {
            threads: keys.len(),
            ..*self
        };
        let target = self.target;
        wide.par_map(keys, |key| {
            let end = Instant::now() + window;
            let mut log = Vec::new();
            let mut next = Instant::now();
            while next < end {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                // A failed request is only a gap in the pace; the model sees what was sent.
                if let Ok(t) = take(target, key) {
                    log.push(t);
                }
                next += pace;
            }
            Ok(log)
        })
    }

    /// Every session once more: the backend it reached (`None`: no 200 within the budget).
    fn replay(&self, sessions: &[Session]) -> Result<Vec<Option<String>>> {
        let (target, budget) = (self.target, self.budget);
        self.par_map(sessions, |s| {
            let deadline = Instant::now() + budget;
            while Instant::now() < deadline {
                if let Ok(r) = get(target, path_of(s.mode), &[("cookie", &s.cookie)]) {
                    if r.status == 200 {
                        return Ok(r.backend().map(str::to_owned));
                    }
                }
            }
            Ok(None)
        })
    }

    /// Runs `wait` (the random delay) while two client threads keep pinning new sessions
    /// of both modes and taking tokens round the keys, then kills the master, tells the
    /// load to stop and runs `after_kill` (the takeover wait) while its last requests time
    /// out. Returns the kill instant, the views before it, `after_kill`'s answer, and what
    /// the load did.
    #[allow(clippy::type_complexity)]
    fn under_steady_load<T: Send>(
        &self,
        keys: &[String],
        wait: impl FnOnce(),
        after_kill: impl FnOnce(Instant) -> Result<T>,
    ) -> Result<(
        Instant,
        (String, u64, u64),
        T,
        Vec<Session>,
        BTreeMap<String, Vec<Take>>,
    )> {
        let stop = AtomicBool::new(false);
        let sessions = Mutex::new(Vec::new());
        let takes: Mutex<BTreeMap<String, Vec<Take>>> = Mutex::new(BTreeMap::new());
        let target = self.target;
        let ns = self.ns();
        let load = |lane: usize| {
            in_netns(&ns, || {
                let mut i = lane;
                while !stop.load(Ordering::Relaxed) {
                    let mode = if i.is_multiple_of(2) {
                        StickyMode::Learn
                    } else {
                        StickyMode::Insert
                    };
                    // Failures at the kill are expected: the load stops right after it.
                    if let Ok(s) = pin_once(target, mode) {
                        lock(&sessions).push(s);
                    }
                    if let Some(key) = keys.get(i % keys.len().max(1)) {
                        if let Ok(t) = take(target, key) {
                            lock(&takes).entry(key.clone()).or_default().push(t);
                        }
                    }
                    i += 2;
                }
                Ok(())
            })
        };
        let (t_kill, before, after) = std::thread::scope(|s| -> Result<_> {
            let lanes: Vec<_> = (0..2).map(|lane| s.spawn(move || load(lane))).collect();
            wait();
            let before = views_before_kill(self.pair);
            let t_kill = Instant::now();
            let killed = self.pair.power_off(NodeId::A);
            stop.store(true, Ordering::Relaxed);
            let after = killed.and_then(|()| after_kill(t_kill));
            for l in lanes {
                l.join().map_err(|_| anyhow!("a load thread panicked"))??;
            }
            Ok((t_kill, before, after?))
        })?;
        let sessions = sessions.into_inner().unwrap_or_else(|e| e.into_inner());
        let takes = takes.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((t_kill, before, after, sessions, takes))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One new session of `mode`: a request without cookies; the cookie set and the backend.
fn pin_once(target: SocketAddrV4, mode: StickyMode) -> Result<Session> {
    let r = get(target, path_of(mode), &[])?;
    if r.status != 200 {
        bail!("status {} {}", r.status, r.body.trim());
    }
    let cookie = cookie_of(mode);
    let (Some(value), Some(backend)) = (r.set_cookie(cookie), r.backend()) else {
        bail!("no {cookie} cookie or x-backend in {r:?}");
    };
    Ok(Session {
        mode,
        cookie: format!("{cookie}={value}"),
        backend: backend.to_owned(),
        pinned_at: Instant::now(),
    })
}

/// [`pin_once`], retried within `budget`.
fn pin_one(target: SocketAddrV4, mode: StickyMode, budget: Duration) -> Result<Session> {
    let deadline = Instant::now() + budget;
    loop {
        match pin_once(target, mode) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("pinning a {mode:?} session")))
            }
            Err(_) => {}
        }
    }
}

/// One request on `key`'s bucket (to the insert pool: no learn entry per request):
/// when it was sent and whether it was allowed (200) or limited (429).
fn take(target: SocketAddrV4, key: &str) -> Result<Take> {
    let t = Instant::now();
    let r = get(target, INSERT_PREFIX, &[(API_KEY_HEADER, key)])?;
    match r.status {
        200 => Ok((t, true)),
        429 => Ok((t, false)),
        s => bail!("{key}: status {s} {}", r.body.trim()),
    }
}

fn session_figures(
    sessions: &[Session],
    replayed: &[Option<String>],
    t_kill: Instant,
) -> (ModeFigures, ModeFigures) {
    let mut learn = ModeFigures::default();
    let mut insert = ModeFigures::default();
    for (s, r) in sessions.iter().zip(replayed) {
        let f = match s.mode {
            StickyMode::Learn => &mut learn,
            StickyMode::Insert => &mut insert,
        };
        let kept = r.as_deref() == Some(s.backend.as_str());
        f.total += 1;
        f.unanswered += usize::from(r.is_none());
        if t_kill.saturating_duration_since(s.pinned_at) > OLD {
            f.old += 1;
            f.old_kept += usize::from(kept);
        } else {
            f.young += 1;
            f.young_kept += usize::from(kept);
        }
    }
    (learn, insert)
}

/// `after[i]` are the requests of `keys[i]` after the failover.
fn rate_figures(
    keys: &[String],
    before: &BTreeMap<String, Vec<Take>>,
    after: &[Vec<Take>],
    t_kill: Instant,
    rate: f64,
    burst: u32,
) -> RateFigures {
    let mut f = RateFigures {
        buckets: after.len(),
        ..RateFigures::default()
    };
    for (key, post) in keys.iter().zip(after) {
        let mut pre: Vec<Take> = before
            .get(key)
            .map(|v| v.iter().copied().filter(|(t, _)| *t < t_kill).collect())
            .unwrap_or_default();
        pre.sort_by_key(|(t, _)| *t);
        let ideal_pre = ideal_allowed(&[], &pre, rate, burst);
        f.pre_kill_mismatches += pre
            .iter()
            .zip(&ideal_pre)
            .filter(|((_, actual), ideal)| actual != *ideal)
            .count();
        let ideal = ideal_allowed(&pre, post, rate, burst);
        let actual = post.iter().filter(|(_, a)| *a).count() as i64;
        let want = ideal.iter().filter(|a| **a).count() as i64;
        f.allowed_after += actual as u64;
        f.ideal_after += want as u64;
        f.errors.push(actual - want);
    }
    f
}

/// What a single token bucket (`rate`/s, `burst`) decides for each of `requests`, after
/// consuming one token for every allowed request of `history` (the master's actual
/// decisions). GCRA: a request at `t` passes when the debt after it, `max(tat, t) + T - t`,
/// is at most `burst × T`.
pub fn ideal_allowed(history: &[Take], requests: &[Take], rate: f64, burst: u32) -> Vec<bool> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let limit = interval * burst.max(1);
    // The theoretical arrival time: when the bucket's debt will be zero.
    let mut tat: Option<Instant> = None;
    let consume =
        |tat: Option<Instant>, t: Instant| Some(tat.map_or(t, |tat| tat.max(t)) + interval);
    for (t, allowed) in history {
        if *allowed {
            tat = consume(tat, *t);
        }
    }
    let mut out = Vec::with_capacity(requests.len());
    for (t, _) in requests {
        let debt_after = tat.map_or(interval, |tat| tat.max(*t) + interval - *t);
        let ok = debt_after <= limit;
        if ok {
            tat = consume(tat, *t);
        }
        out.push(ok);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ideal_bucket_allows_the_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let reqs: Vec<Take> = (0..7).map(|i| (ms(i), false)).collect();
        let got = ideal_allowed(&[], &reqs, 1.0, 5);
        assert_eq!(got, [true, true, true, true, true, false, false]);
        // The same history consumed: 1.5 s later one token has come back.
        let history: Vec<Take> = (0..5).map(|i| (ms(i), true)).collect();
        let later = [(ms(1500), false), (ms(1501), false)];
        assert_eq!(ideal_allowed(&history, &later, 1.0, 5), [true, false]);
        // 10 s later: a full burst again.
        let much_later: Vec<Take> = (0..6).map(|i| (ms(10_000 + i), false)).collect();
        assert_eq!(
            ideal_allowed(&history, &much_later, 1.0, 5)
                .iter()
                .filter(|a| **a)
                .count(),
            5
        );
    }

    #[test]
    fn rate_error_counts_tokens_over_the_ideal() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut before = BTreeMap::new();
        let pre: Vec<Take> = (0..6).map(|i| (ms(i), i < 5)).collect();
        before.insert("k".to_owned(), pre);
        // A backup that forgot everything allows the full burst again 0.5 s later.
        let post: Vec<Take> = (0..7).map(|i| (ms(500 + i), i < 5)).collect();
        let f = rate_figures(&["k".to_owned()], &before, &[post], ms(100), 1.0, 5);
        assert_eq!(f.errors, vec![5]);
        assert_eq!(f.pre_kill_mismatches, 0);
        assert!(!f.meets_promise());
    }

    #[test]
    fn the_promise_allows_a_tenth_of_a_percent() {
        let f = ModeFigures {
            old: 1000,
            old_kept: 999,
            ..ModeFigures::default()
        };
        assert!(f.meets_promise());
        let g = ModeFigures {
            old_kept: 998,
            ..f.clone()
        };
        assert!(!g.meets_promise());
    }

    #[test]
    fn seeded_rng_replays() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let lo = Duration::from_millis(300);
        let hi = Duration::from_millis(1300);
        for _ in 0..100 {
            let x = a.between(lo, hi);
            assert_eq!(x, b.between(lo, hi));
            assert!(x >= lo && x < hi);
        }
    }
}
