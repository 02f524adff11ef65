//! The shape every pair scenario shares: load running, a fault, a wait on a condition,
//! the load stopped, and figures placed on the client's time axis.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use super::load::{LoadRun, Outcome, Record, Summary, Window};
use super::report::{self, Row};
use super::{PairConfig, PairTopology};
use crate::lan::NodeId;
use crate::wait;

/// What one measured fault produced.
pub struct Measured {
    pub run: LoadRun,
    /// The fault's instant on the client's axis (ms).
    pub fault_ms: f64,
    pub summary: Summary,
    /// Ms on the client's axis of events the scenario noted, by label.
    pub events: Vec<(f64, String)>,
}

impl Measured {
    /// Time from the fault to the first answer from `node` sent after it (ms).
    pub fn first_answer_after_fault(&self, node: NodeId) -> Option<f64> {
        self.run
            .first_answer_from(PairTopology::node_name(node), self.fault_ms)
            .map(|r| r.t_ms - self.fault_ms)
    }

    /// A report row; `bound` is the bound asserted on its outage (see [`Row::violations`]).
    pub fn row(&self, id: &str, scenario: &str, cfg: &PairConfig, bound: Option<Duration>) -> Row {
        let mut r = Row::from_summary(id, scenario, cfg.advert_cs, &self.summary);
        r.bound_ms = bound.map(|b| b.as_secs_f64() * 1000.0);
        r
    }
}

/// Load on `vip` (`keepalive` or fresh connections); once `before` answers, runs `fault`,
/// then calls `watch` every 10 ms until it returns `Ok(true)` (or fails the scenario by
/// returning an error; budget `watch_timeout` × patience), keeps the load on for
/// `settle`, and stops it.
#[allow(clippy::too_many_arguments)]
pub fn measure<F, W>(
    pair: &mut PairTopology,
    vip: Ipv4Addr,
    keepalive: bool,
    before: NodeId,
    fault: F,
    mut watch: W,
    watch_timeout: Duration,
    settle: Duration,
) -> Result<Measured>
where
    F: FnOnce(&mut PairTopology) -> Result<()>,
    W: FnMut(&PairTopology, Duration) -> Result<bool>,
{
    pair.await_past_startup_grace();
    let max = watch_timeout * 3 + settle + Duration::from_secs(20);
    let load = pair.start_load(vip, keepalive, max)?;
    pair.await_load_answer(&load, before, Duration::from_secs(3))?;
    // A few requests of steady state before the fault, for the timeline.
    std::thread::sleep(Duration::from_millis(100));
    let t_fault = SystemTime::now();
    let i_fault = Instant::now();
    fault(pair).context("injecting the fault")?;
    let mut watch_err = None;
    let watched = wait::eventually(watch_timeout, Duration::from_millis(10), || {
        match watch(pair, i_fault.elapsed()) {
            Ok(done) => Ok(done),
            Err(e) => {
                // A violated invariant ends the wait at once.
                watch_err = Some(e);
                Ok(true)
            }
        }
    });
    if watch_err.is_none() {
        wait::always_for(settle, Duration::from_millis(50), || Ok(true))?;
    }
    let run = pair.finish_load(load, Duration::from_secs(5))?;
    if let Some(e) = watch_err {
        return Err(e);
    }
    watched.context("the scenario's condition")?;
    let fault_ms = run.header.at(t_fault);
    let summary = run.summary();
    Ok(Measured {
        run,
        fault_ms,
        summary,
        events: vec![(fault_ms, "fault".into())],
    })
}

/// Fails when both nodes hold `vip`.
pub fn never_two_holders(pair: &PairTopology, vip: Ipv4Addr) -> Result<()> {
    let h = pair.holders(vip)?;
    if h.len() > 1 {
        bail!("{vip} has two holders: {h:?}");
    }
    Ok(())
}

/// Whether lbd on `id` has a listening socket on `vip:80` (read with `ss` in its namespace).
pub fn listening(pair: &PairTopology, id: NodeId, vip: Ipv4Addr) -> Result<bool> {
    let out = crate::cmd::run_in(
        &pair.lan.node(id).ns,
        "ss",
        &["-Hltn", &format!("sport = :{}", super::VIP_PORT)],
    )?;
    let want = format!("{vip}:{}", super::VIP_PORT);
    Ok(out.split_whitespace().any(|w| w == want))
}

/// Collects a scenario's violated bounds, so that both advert intervals run and are
/// written to the report before the test fails with every violation at once.
#[derive(Debug, Default)]
pub struct Verdict {
    failures: Vec<String>,
}

impl Verdict {
    /// Notes `msg` as a failure unless `ok`.
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            eprintln!("VIOLATION: {m}");
            self.failures.push(m);
        }
    }

    /// Fails with every noted violation.
    pub fn finish(self) -> Result<()> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            bail!(
                "{} violation(s):\n- {}",
                self.failures.len(),
                self.failures.join("\n- ")
            )
        }
    }
}

/// One scenario test over its advert intervals: its rows, its violations, and its record
/// in the report, whatever happens. Run the body with [`run`].
pub struct Scenario {
    id: String,
    desc: String,
    /// The advert interval being run, for the violations and an error's row.
    cs: u16,
    rows: Vec<Row>,
    failures: Vec<(u16, String)>,
}

impl Scenario {
    /// Now running at `cs`.
    pub fn at(&mut self, cs: u16) {
        self.cs = cs;
    }

    /// Notes `msg` as a violation at the current interval unless `ok`.
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            eprintln!("VIOLATION at {} cs: {m}", self.cs);
            self.failures.push((self.cs, m));
        }
    }

    /// The row of `m` under the scenario's description, with the outage bound the row
    /// asserts (and the single outage window every row asserts).
    pub fn outage(&mut self, m: &Measured, cfg: &PairConfig, bound: Duration) -> &mut Row {
        log_windows(m);
        let desc = self.desc.clone();
        self.push(m.row(&self.id, &desc, cfg, Some(bound)))
    }

    /// [`Self::outage`] for a scenario that ends with the first master preempting back:
    /// a window after the fault's own one that is a single reset, sent once the backup
    /// had taken over (`taken_over`, from the fault), is that preemption's cut handshake
    /// ([`super::MAX_CUT_HANDSHAKES`], the rule the preemption test asserts), not a second
    /// outage. Any other extra window, or a timeout, still fails the row.
    pub fn outage_with_return(
        &mut self,
        m: &Measured,
        cfg: &PairConfig,
        bound: Duration,
        taken_over: Duration,
    ) -> &mut Row {
        log_windows(m);
        let mut row = m.row(&self.id, &self.desc, cfg, Some(bound));
        row.cut_handshakes =
            cut_handshakes_after(m, m.fault_ms + taken_over.as_secs_f64() * 1000.0);
        if row.cut_handshakes > 0 {
            eprintln!(
                "{} handshake(s) cut by the return's preemption",
                row.cut_handshakes
            );
        }
        self.push(row)
    }

    /// The row of `m` for the keepalived+HAProxy column: no bound, no assertion (it is
    /// the comparison, not a claim of ours).
    pub fn comparison(&mut self, m: &Measured, cfg: &PairConfig) -> &mut Row {
        let desc = self.desc.clone();
        let mut row = m.row(&self.id, &desc, cfg, None);
        row.stack = report::STACK_KEEPALIVED.to_owned();
        self.rows.push(row);
        self.rows.last_mut().expect("just pushed")
    }

    /// Adds a row at the current interval; its [`Row::violations`] are violations.
    pub fn push(&mut self, row: Row) -> &mut Row {
        for v in row.violations() {
            self.check(false, || v);
        }
        self.rows.push(row);
        self.rows.last_mut().expect("just pushed")
    }

    /// Records every row, marked pass or FAIL, plus a FAIL row for an interval that
    /// ended in `error` before giving one; fails with every violation and the error.
    fn finish(mut self, error: Option<String>) -> Result<()> {
        if let Some(e) = &error {
            self.failures.push((self.cs, format!("error: {e}")));
            if !self.rows.iter().any(|r| r.advert_cs == self.cs) {
                let mut r = Row::from_summary(&self.id, &self.desc, self.cs, &Summary::empty());
                r.note = "no figures: the attempt ended in an error".into();
                if self.id.ends_with(&report::keepalived_id("")) {
                    r.stack = report::STACK_KEEPALIVED.to_owned();
                }
                self.rows.push(r);
            }
        }
        for r in &mut self.rows {
            let mine: Vec<&str> = self
                .failures
                .iter()
                .filter(|(cs, _)| *cs == r.advert_cs)
                .map(|(_, m)| m.as_str())
                .collect();
            r.result = if mine.is_empty() {
                "pass".into()
            } else {
                format!("FAIL: {}", mine.join("; "))
            };
        }
        report::record_attempt(&self.id, &self.rows)?;
        if self.failures.is_empty() {
            return Ok(());
        }
        let all: Vec<String> = self
            .failures
            .iter()
            .map(|(cs, m)| format!("{cs} cs: {m}"))
            .collect();
        bail!("{} violation(s):\n- {}", all.len(), all.join("\n- "))
    }
}

/// Prints every outage window of a run that had more than one, and the failures of the
/// short ones one by one (their outcome says why).
fn log_windows(m: &Measured) {
    if m.summary.windows.len() <= 1 {
        return;
    }
    for w in &m.summary.windows {
        eprintln!(
            "outage window from {:+.0} ms to {:?} ms after the fault: {} failed",
            w.start_ms - m.fault_ms,
            w.end_ms.map(|e| (e - m.fault_ms).round()),
            w.failed
        );
    }
    for w in m.summary.windows.iter().filter(|w| w.failed <= 3) {
        for r in failures_in(m, w) {
            eprintln!(
                "  failed at {:+.1} ms: {:?} after {:.1} ms {}",
                r.t_ms - m.fault_ms,
                r.outcome,
                r.latency_ms,
                r.detail.as_deref().unwrap_or("")
            );
        }
    }
}

/// The failed requests of window `w`.
fn failures_in<'a>(m: &'a Measured, w: &'a Window) -> impl Iterator<Item = &'a Record> {
    let end = w.end_ms.unwrap_or(f64::INFINITY);
    m.run
        .records
        .iter()
        .filter(move |r| !r.outcome.is_ok() && r.t_ms >= w.start_ms && r.t_ms < end)
}

/// The windows after the fault's own one that start after `from_ms` (client axis) and are
/// a single reset: what a preemption's MAC move does to a handshake it straddles.
fn cut_handshakes_after(m: &Measured, from_ms: f64) -> usize {
    m.summary
        .windows
        .iter()
        .skip(1)
        .filter(|w| w.start_ms >= from_ms && w.failed == 1)
        .filter(|w| failures_in(m, w).all(|r| r.outcome == Outcome::Reset))
        .count()
}

/// Runs scenario `id` ("desc" in the report) and records its rows even when the body
/// fails early or panics, so a failed attempt is in the report beside the one that passed.
pub fn run<F>(id: &str, desc: &str, body: F) -> Result<()>
where
    F: FnOnce(&mut Scenario) -> Result<()>,
{
    let mut sc = Scenario {
        id: id.to_owned(),
        desc: desc.to_owned(),
        cs: 0,
        rows: Vec::new(),
        failures: Vec::new(),
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut sc))) {
        Ok(Ok(())) => sc.finish(None),
        Ok(Err(e)) => sc.finish(Some(format!("{e:#}"))),
        Err(panic) => {
            let _ = sc.finish(Some("panicked".into()));
            std::panic::resume_unwind(panic)
        }
    }
}
