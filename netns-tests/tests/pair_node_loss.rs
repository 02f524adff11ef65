//! Losing the master node: its LAN link down (vrrpd goes to FAULT), or a power-off (all
//! its processes killed and its link down, the keepalived reference's "node lost"); and
//! the master's return, which preempts only once its lbd reports ready, failing nothing.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use anyhow::anyhow;
use netns_tests::pair::report;
use netns_tests::pair::scenario::{self, measure, never_two_holders, Measured, Verdict};
use netns_tests::pair::{PairConfig, PairTopology, INTERVALS};
use netns_tests::{margin, NodeId};

/// A lost master costs Master_Down_Interval: the takeover (B's first answer) and the
/// client's outage are both bounded by it.
fn loss_bound(cfg: &PairConfig) -> Duration {
    cfg.mdi() + margin(Duration::from_millis(300))
}

fn link_down(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let bound = loss_bound(cfg);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.lan.set_link(NodeId::A, false),
                |p, _| Ok(p.holders(vip)? == [NodeId::B]),
                cfg.mdi() * 2 + Duration::from_secs(2),
                cfg.advert() * 2,
            )?;
            pair.await_state(NodeId::A, &cfg.instance, "fault", Duration::from_secs(1))?;
            let takeover = m
                .first_answer_after_fault(NodeId::B)
                .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
            eprintln!(
                "{desc} at {} cs: B answers after {takeover:.0} ms (bound {bound:?}); {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(takeover <= bound.as_secs_f64() * 1000.0, || {
                format!("B answered {takeover:.0} ms after A's link went down (bound {bound:?})")
            });
            sc.outage(&m, cfg, bound);
        }
        Ok(())
    })
}

fn power_off(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let bound = loss_bound(cfg);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let mut m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.power_off(NodeId::A),
                |p, _| Ok(p.holders(vip)?.contains(&NodeId::B)),
                cfg.mdi() * 2 + Duration::from_secs(2),
                cfg.advert() * 3,
            )?;
            let takeover = m
                .first_answer_after_fault(NodeId::B)
                .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
            eprintln!(
                "{desc} at {} cs: B answers after {takeover:.0} ms (bound {bound:?}); {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(takeover <= bound.as_secs_f64() * 1000.0, || {
                format!("B answered {takeover:.0} ms after A's power-off (bound {bound:?})")
            });
            if !cfg.shipped {
                m.events = vec![
                    (m.fault_ms, "A powered off".into()),
                    (m.fault_ms + takeover, "B answers".into()),
                ];
                write_timeline(&m, cfg.advert_cs)?;
            }
            sc.outage(&m, cfg, bound);
        }
        Ok(())
    })
}

fn write_timeline(m: &Measured, cs: u16) -> anyhow::Result<()> {
    let svg = report::timeline_svg(
        &m.run,
        &m.events,
        &format!(
            "Power-off of the master at {cs} cs adverts: requests every 5 ms, by node \
             (blue A, green B), failures red; mark height = latency"
        ),
    );
    let name = if cs == 100 {
        "timeline.svg".to_owned()
    } else {
        format!("timeline-{cs}cs.svg")
    };
    let path = report::write_file(&name, &svg)?;
    eprintln!("timeline written to {}", path.display());
    Ok(())
}

#[test]
fn master_link_down_backup_serves_within_master_down_interval() -> anyhow::Result<()> {
    link_down(
        "07-link-down",
        "master's LAN link down (FAULT)",
        &PairConfig::every_interval(false),
    )
}

#[test]
fn master_power_off_backup_serves_within_master_down_interval() -> anyhow::Result<()> {
    power_off(
        "08-power-off",
        "master power-off (processes killed, link down)",
        &PairConfig::every_interval(false),
    )
}

/// Power-off with the shipped configs/node-{a,b} (see `netns_tests::pair::shipped`).
#[test]
fn master_power_off_with_the_shipped_configs() -> anyhow::Result<()> {
    let cfg = PairConfig::shipped()?;
    power_off(
        "08s-power-off-shipped",
        &format!("master power-off, {}", cfg.shipped_desc()),
        &[cfg],
    )
}

#[test]
fn returning_master_preempts_once_ready_without_failures() -> anyhow::Result<()> {
    let id = "09-preempt-return";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        let cfg = PairConfig::coupled(cs);
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        pair.power_off(NodeId::A)?;
        // A's dead vrrpd left the VIP on its (down) interface: only B's gaining it counts.
        netns_tests::eventually(
            cfg.mdi() * 2 + Duration::from_secs(2),
            Duration::from_millis(10),
            || Ok(pair.holders(vip)?.contains(&NodeId::B)),
        )?;
        pair.await_answer(vip, NodeId::B, Duration::from_secs(3))?;
        let mut a_back = None;
        let m = measure(
            &mut pair,
            vip,
            // The VIP moves between two live nodes: the keep-alive client that retries a
            // reused connection that was reset (curl, browsers). A fresh connection whose
            // handshake straddles the ARP change is lost whatever the servers do.
            true,
            NodeId::B,
            |p| p.power_on(NodeId::A),
            |p, since| {
                // A's interface is up again from here on: two holders would be real.
                never_two_holders(p, vip)?;
                if a_back.is_none() && p.holders(vip)? == [NodeId::A] {
                    a_back = Some(since);
                }
                Ok(a_back.is_some())
            },
            cfg.mdi() * 2 + Duration::from_secs(8),
            cfg.advert() * 3,
        )?;
        pair.await_state(NodeId::B, "web", "backup", Duration::from_secs(2))?;
        let back = m
            .first_answer_after_fault(NodeId::A)
            .ok_or_else(|| anyhow!("A never answered again: {:?}", m.summary))?;
        eprintln!(
            "A returns at {cs} cs: sole holder after {a_back:?}, answers after {back:.0} ms; {}",
            m.summary.one_line()
        );
        verdict.check(m.summary.failed == 0, || format!("{:?}", m.summary));
        rows.push(m.row(
            id,
            "master returns and preempts (once its lbd is ready)",
            &cfg,
            Some(Duration::ZERO),
        ));
    }
    report::record(id, &rows)?;
    verdict.finish()
}
