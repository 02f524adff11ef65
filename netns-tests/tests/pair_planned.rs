//! Planned handovers: SIGTERM of vrrpd on the master (as `systemctl stop vrrpd` sends),
//! and `vrrpd switchover` under load. Both drain lbd, then resign with priority 0 and keep
//! the VIP until the peer advertises as master (make-before-break).
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use anyhow::anyhow;
use netns_tests::pair::report::{self, RefKind};
use netns_tests::pair::scenario::{measure, Verdict};
use netns_tests::pair::{PairConfig, PairTopology, INTERVALS};
use netns_tests::{margin, NodeId, Signal};

#[test]
fn sigterm_of_vrrpd_on_the_master_hands_over_within_skew_time() -> anyhow::Result<()> {
    let id = "05-sigterm-vrrpd";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        let cfg = PairConfig::coupled(cs);
        let bound = cfg.skew() + margin(Duration::from_millis(300));
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        let mut b_at = None;
        let m = measure(
            &mut pair,
            vip,
            false,
            NodeId::A,
            // `systemctl stop`: SIGTERM, and no restart.
            |p| p.a.vrrpd.stop_with(Signal::SIGTERM),
            |p, since| {
                if b_at.is_none() && p.holders(vip)? == [NodeId::B] {
                    b_at = Some(since);
                }
                Ok(b_at.is_some() && p.a.vrrpd.pid().is_none())
            },
            Duration::from_secs(10),
            cfg.advert() * 2,
        )?;
        let exits = pair.a.vrrpd.exits();
        verdict.check(exits.last().is_some_and(|s| s.success()), || {
            format!("vrrpd on A exited with {exits:?}")
        });
        let takeover = m
            .first_answer_after_fault(NodeId::B)
            .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
        eprintln!(
            "SIGTERM vrrpd at {cs} cs: B sole holder after {b_at:?}, answers after \
             {takeover:.0} ms; {}",
            m.summary.one_line()
        );
        verdict.check(m.summary.outage_ms <= bound.as_secs_f64() * 1000.0, || {
            format!(
                "outage {:.0} ms (bound {bound:?}): {:?}",
                m.summary.outage_ms, m.summary.windows
            )
        });
        rows.push(m.row_ref(
            id,
            "SIGTERM of vrrpd on the master",
            &cfg,
            Some(bound),
            RefKind::Sigterm,
        ));
    }
    report::record(id, &rows)?;
    verdict.finish()
}

#[test]
fn switchover_under_load_fails_no_request() -> anyhow::Result<()> {
    let id = "06-switchover";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        // The pair mode, as shipped in configs/node-*: the backup takes over the moment the
        // master resigns. Without it, every request in the Skew_Time between the resign and
        // the takeover opens a fresh connection to the old master (the drain answers
        // `Connection: close`), and one caught mid-handshake when the VIP moves is lost,
        // which no client retry policy covers.
        let cfg = PairConfig {
            fast_takeover: true,
            ..PairConfig::coupled(cs)
        };
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        let mut out = String::new();
        let m = measure(
            &mut pair,
            vip,
            // Keep-alive, retrying once when a reused connection is closed under it.
            true,
            NodeId::A,
            |p| {
                out = p.switchover(NodeId::A)?;
                Ok(())
            },
            |p, _| Ok(p.holders(vip)? == [NodeId::B]),
            Duration::from_secs(10),
            cfg.advert() * 2,
        )?;
        eprintln!(
            "switchover at {cs} cs ({}): {}",
            out.trim(),
            m.summary.one_line()
        );
        verdict.check(m.summary.failed == 0, || format!("{:?}", m.summary));
        verdict.check(m.first_answer_after_fault(NodeId::B).is_some(), || {
            format!("B never answered: {:?}", m.summary)
        });
        pair.await_state(NodeId::A, "web", "backup", Duration::from_secs(2))?;
        let mut row = m.row(
            id,
            "planned switchover under load (keep-alive client)",
            &cfg,
            Some(Duration::ZERO),
        );
        row.note = format!("{} keep-alive retries", m.summary.retried);
        rows.push(row);
    }
    report::record(id, &rows)?;
    verdict.finish()
}
