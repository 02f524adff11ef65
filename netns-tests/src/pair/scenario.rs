//! The shape every pair scenario shares: load running, a fault, a wait on a condition,
//! the load stopped, and figures placed on the client's time axis.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

use super::load::{LoadRun, Summary};
use super::report::{self, RefKind, Row};
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

    /// A report row.
    pub fn row(&self, id: &str, scenario: &str, cfg: &PairConfig, bound: Option<Duration>) -> Row {
        let mut r = Row::from_summary(id, scenario, cfg.advert_cs, &self.summary);
        r.bound_ms = bound.map(|b| b.as_secs_f64() * 1000.0);
        r
    }

    /// A report row with keepalived's reference figure.
    pub fn row_ref(
        &self,
        id: &str,
        scenario: &str,
        cfg: &PairConfig,
        bound: Option<Duration>,
        kind: RefKind,
    ) -> Row {
        let mut r = self.row(id, scenario, cfg, bound);
        r.reference = report::keepalived_reference(kind, cfg.advert_cs);
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
