//! The pair harness itself, without the vrrpd↔lbd coupling: lbd listens on 0.0.0.0:80 all
//! the time and vrrpd only moves the VIP. Checks that the topology converges, the load
//! client sees the node and backend that answered, the supervisor restarts a daemon, and a
//! SIGTERM failover is measured and written to the report.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, SystemTime};

use netns_tests::pair::report::{self, Row};
use netns_tests::pair::{PairConfig, PairTopology};
use netns_tests::{margin, NodeId, Signal};

#[test]
fn uncoupled_pair_serves_and_fails_over_on_sigterm() -> anyhow::Result<()> {
    let cfg = PairConfig::uncoupled(10);
    let pair = &mut PairTopology::new("pair-harness", cfg.clone())?;
    let vip = pair.vip(0);

    let load = pair.start_load(vip, false, Duration::from_secs(20))?;
    pair.await_load_answer(&load, NodeId::A, Duration::from_secs(2))?;
    let t_fault = SystemTime::now();
    pair.a.vrrpd.signal(Signal::SIGTERM)?;
    let bound = cfg.skew() + margin(Duration::from_millis(300));
    pair.await_load_answer(&load, NodeId::B, bound + Duration::from_secs(1))?;
    // The supervisor brings vrrpd back (exit 0 counts: Restart=always).
    pair.a.vrrpd.await_starts(2, Duration::from_secs(3))?;
    let run = pair.finish_load(load, Duration::from_secs(5))?;
    let fault_ms = run.header.at(t_fault);
    let s = run.summary();
    eprintln!(
        "uncoupled SIGTERM at {} cs: {}",
        cfg.advert_cs,
        s.one_line()
    );

    assert!(
        s.by_node.get("a").copied().unwrap_or(0) > 0,
        "A never answered: {s:?}"
    );
    assert!(
        s.by_node.get("b").copied().unwrap_or(0) > 0,
        "B never answered: {s:?}"
    );
    assert_eq!(
        s.by_backend.len(),
        3,
        "round robin over 3 backends: {:?}",
        s.by_backend
    );
    let first_b = run
        .first_answer_from("b", fault_ms)
        .ok_or_else(|| anyhow::anyhow!("no answer from B after the fault"))?;
    let gap = first_b.t_ms - fault_ms;
    assert!(
        gap <= bound.as_secs_f64() * 1000.0,
        "B answered {gap:.0} ms after SIGTERM (bound {bound:?})"
    );
    let mut row = Row::from_summary(
        "00-harness-uncoupled-sigterm",
        "harness: SIGTERM of vrrpd, lbd uncoupled (baseline)",
        cfg.advert_cs,
        &s,
    );
    row.bound_ms = Some(bound.as_secs_f64() * 1000.0);
    report::record("00-harness-uncoupled-sigterm", &[row])?;
    Ok(())
}
