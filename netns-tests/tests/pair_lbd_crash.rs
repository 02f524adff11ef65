//! kill -9 of lbd on the master. vrrpd sees its lbd's connection drop at once, goes to
//! FAULT and advertises priority 0. With `fast_takeover = true` (two-node pairs) the backup
//! takes over as soon as it hears that; without it, after Skew_Time. The supervisor then
//! restarts lbd, and the pair settles (A preempts back once its lbd is ready).
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use anyhow::anyhow;
use netns_tests::pair::report;
use netns_tests::pair::scenario::{measure, Verdict};
use netns_tests::pair::{PairConfig, PairTopology, INTERVALS};
use netns_tests::{margin, NodeId, Signal};

/// How often vrrpd refreshes the status it answers with.
const STATUS_REFRESH: Duration = Duration::from_millis(100);

fn lbd_crash(id: &str, fast_takeover: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        let mut cfg = PairConfig::coupled(cs);
        cfg.fast_takeover = fast_takeover;
        let hb = Duration::from_millis(cfg.heartbeat_timeout_ms);
        // The disconnect is seen at once; the heartbeat timeout is the worst case of
        // noticing a hung (not dead) lbd. The target with fast takeover: < 100 ms.
        let bound = if fast_takeover {
            hb + margin(Duration::from_millis(150))
        } else {
            hb + cfg.skew() + margin(Duration::from_millis(300))
        };
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        let mut b_at = None;
        let m = measure(
            &mut pair,
            vip,
            false,
            NodeId::A,
            |p| p.a.lbd.signal(Signal::SIGKILL),
            |p, since| {
                if b_at.is_none() && p.holders(vip)? == [NodeId::B] {
                    b_at = Some(since);
                }
                Ok(b_at.is_some())
            },
            bound * 3 + Duration::from_secs(2),
            cfg.advert() * 2 + Duration::from_millis(200),
        )?;
        let takeover = m
            .first_answer_after_fault(NodeId::B)
            .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
        eprintln!(
            "kill -9 lbd (fast_takeover {fast_takeover}) at {cs} cs: B holds the VIP after \
             {b_at:?}, answers after {takeover:.0} ms (bound {bound:?}); {}",
            m.summary.one_line()
        );
        // The whole outage as the client saw it, not only the first answer from B.
        verdict.check(m.summary.outage_ms <= bound.as_secs_f64() * 1000.0, || {
            format!(
                "outage {:.0} ms (bound {bound:?}): {:?}",
                m.summary.outage_ms, m.summary.windows
            )
        });
        pair.a.lbd.await_starts(2, Duration::from_secs(3))?;
        let desc = if fast_takeover {
            "kill -9 lbd, fast_takeover = true"
        } else {
            "kill -9 lbd, fast_takeover = false"
        };
        rows.push(m.row(id, desc, &cfg, Some(bound)));
    }
    report::record(id, &rows)?;
    verdict.finish()
}

#[test]
fn kill_9_of_lbd_with_fast_takeover_is_a_blip() -> anyhow::Result<()> {
    lbd_crash("03-kill9-lbd-fast", true)
}

#[test]
fn kill_9_of_lbd_without_fast_takeover_waits_skew_time() -> anyhow::Result<()> {
    lbd_crash("04-kill9-lbd-skew", false)
}

/// SIGSTOP of lbd on the master: a hung lbd, its socket open and silent. vrrpd must call it
/// down within `heartbeat_timeout_ms` (+ 100 ms) of its last heartbeat and resign at once
/// (FAULT, priority 0), so the backup takes over (at once: fast_takeover). lbd is resumed
/// (SIGCONT) afterwards.
///
/// The detection is timed by B's takeover: A keeps advertising priority 200 until it
/// resigns, so B holding the VIP alone proves A had noticed by then (an upper bound).
/// `vrrpd status` is refreshed every 100 ms, so A's FAULT shows there up to 100 ms later.
#[test]
fn sigstop_of_lbd_is_noticed_within_the_heartbeat_timeout() -> anyhow::Result<()> {
    let id = "05-sigstop-lbd";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        let mut cfg = PairConfig::coupled(cs);
        cfg.fast_takeover = true;
        let hb = Duration::from_millis(cfg.heartbeat_timeout_ms);
        let detect_bound = hb + margin(Duration::from_millis(100));
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        let mut a_fault = None;
        let mut b_at = None;
        let m = measure(
            &mut pair,
            vip,
            false,
            NodeId::A,
            |p| p.a.lbd.signal(Signal::SIGSTOP),
            |p, since| {
                if a_fault.is_none() && p.state(NodeId::A, "web")? == "fault" {
                    a_fault = Some(since);
                }
                if b_at.is_none() && p.holders(vip)? == [NodeId::B] {
                    b_at = Some(since);
                }
                Ok(a_fault.is_some() && b_at.is_some())
            },
            detect_bound * 3 + Duration::from_secs(2),
            cfg.advert() * 2 + Duration::from_millis(200),
        );
        // Resume lbd whatever happened, so nothing stays stopped.
        pair.a.lbd.signal(Signal::SIGCONT)?;
        let m = m?;
        let a_fault = a_fault.ok_or_else(|| anyhow!("A never went to FAULT"))?;
        let b_at = b_at.ok_or_else(|| anyhow!("B never held the VIP alone"))?;
        eprintln!(
            "SIGSTOP lbd at {cs} cs: A FAULT after {a_fault:?} (bound {detect_bound:?}), B holds \
             the VIP after {b_at:?}; {}",
            m.summary.one_line()
        );
        verdict.check(b_at <= detect_bound, || {
            format!(
                "A resigned (B held the VIP) {b_at:?} after lbd stopped (bound {detect_bound:?})"
            )
        });
        let status_bound = detect_bound + STATUS_REFRESH;
        verdict.check(a_fault <= status_bound, || {
            format!("A's status said FAULT {a_fault:?} after lbd stopped (bound {status_bound:?})")
        });
        rows.push(m.row(
            id,
            "SIGSTOP lbd (hung), fast_takeover = true",
            &cfg,
            Some(detect_bound),
        ));
    }
    report::record(id, &rows)?;
    verdict.finish()
}
