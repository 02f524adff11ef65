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
