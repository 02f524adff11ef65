//! lbd failing on the master. kill -9: vrrpd sees its lbd's connection drop at once, goes to
//! FAULT and advertises priority 0; with `fast_takeover = true` (two-node pairs, as shipped)
//! the backup takes over as soon as it hears that, without it after Skew_Time; the
//! supervisor restarts lbd and A takes the VIP back. SIGSTOP: the
//! socket stays open and silent, and vrrpd must call lbd down once its heartbeats are
//! `heartbeat_timeout_ms` old. Every scenario asserts the client's outage and a single
//! outage window (`report::Row::violations`); A's return is a preemption, which may cut
//! one handshake straddling the MAC move, as the preemption test allows (README).
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use anyhow::anyhow;
use netns_tests::pair::scenario::{self, measure};
use netns_tests::pair::{PairConfig, PairTopology};
use netns_tests::{margin, NodeId, Signal};

/// How often vrrpd refreshes the status it answers with.
const STATUS_REFRESH: Duration = Duration::from_millis(100);

/// The bound on the outage of a crashed lbd (its socket closes, so nothing waits
/// for a timeout), beyond Skew_Time when the backup waits for it.
const LBD_CRASH_BOUND: Duration = Duration::from_millis(100);

/// kill -9 of lbd on A under load, once per config; the outage bound is
/// [`LBD_CRASH_BOUND`], plus Skew_Time without fast takeover. The supervisor restarts lbd
/// at once and A preempts back once it is ready: the load runs until A is the sole holder
/// again (and a few adverts more), so the single-window assertion covers that return too,
/// every run. The client keeps its connections alive, as the return is a move between two
/// live nodes (see pair_node_loss's preemption test).
fn lbd_crash(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let bound = if cfg.fast_takeover {
                margin(LBD_CRASH_BOUND)
            } else {
                cfg.skew() + margin(LBD_CRASH_BOUND)
            };
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let (mut b_at, mut a_back) = (None, None);
            let m = measure(
                &mut pair,
                vip,
                true,
                NodeId::A,
                |p| p.a.lbd.signal(Signal::SIGKILL),
                |p, since| {
                    if b_at.is_none() && p.holders(vip)?.contains(&NodeId::B) {
                        b_at = Some(since);
                    }
                    if b_at.is_some()
                        && a_back.is_none()
                        && p.holders(vip)? == [NodeId::A]
                        && p.state(NodeId::B, &cfg.instance)? == "backup"
                    {
                        a_back = Some(since);
                    }
                    Ok(a_back.is_some())
                },
                bound * 3
                    + cfg.mdi() * 2
                    + Duration::from_millis(cfg.preempt_delay_ms)
                    + Duration::from_secs(8),
                cfg.advert() * 3 + Duration::from_millis(300),
            )?;
            let takeover = m
                .first_answer_after_fault(NodeId::B)
                .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
            eprintln!(
                "{desc} at {} cs: B holds the VIP after {b_at:?}, answers after \
                 {takeover:.0} ms (outage bound {bound:?}), A sole holder again after \
                 {a_back:?}; {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(pair.a.lbd.starts() >= 2, || "lbd was not restarted".into());
            let b_at = b_at.ok_or_else(|| anyhow!("B never held the VIP"))?;
            sc.outage_with_return(&m, cfg, bound, b_at);
        }
        Ok(())
    })
}

#[test]
fn kill_9_of_lbd_with_fast_takeover_is_a_blip() -> anyhow::Result<()> {
    lbd_crash(
        "03-kill9-lbd-fast",
        "kill -9 lbd, fast_takeover = true",
        &PairConfig::every_interval(true),
    )
}

#[test]
fn kill_9_of_lbd_without_fast_takeover_waits_skew_time() -> anyhow::Result<()> {
    lbd_crash(
        "04-kill9-lbd-skew",
        "kill -9 lbd, fast_takeover = false",
        &PairConfig::every_interval(false),
    )
}

/// The same with the shipped configs/node-{a,b} (see [`PairConfig::shipped`]).
#[test]
fn kill_9_of_lbd_with_the_shipped_configs_is_a_blip() -> anyhow::Result<()> {
    let cfg = PairConfig::shipped()?;
    lbd_crash(
        "03s-kill9-lbd-shipped",
        &format!("kill -9 lbd, {}", cfg.shipped_desc()),
        &[cfg],
    )
}

/// SIGSTOP of lbd on the master, once per config: a hung lbd, its socket open and silent.
/// vrrpd must call it down within `heartbeat_timeout_ms` (+ 100 ms) of the stop and resign
/// at once (FAULT, priority 0), so the backup takes over at once (fast_takeover): the
/// client's outage is bounded by the same. lbd is then resumed (SIGCONT) with the load still
/// running, and the pair must settle back on A (which preempts once its lbd is ready)
/// without a second outage window.
///
/// The detection is timed by B's takeover: A keeps advertising priority 200 until it
/// resigns, so B holding the VIP proves A had noticed by then (an upper bound; A, in FAULT,
/// keeps its copy for the hand-off hold, answering with resets).
/// `vrrpd status` is refreshed every 100 ms, so A's FAULT shows there up to 100 ms later.
/// The client keeps its connections alive, as the return to A is a move between two live
/// nodes (see pair_node_loss's preemption test).
fn lbd_hang(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let hb = Duration::from_millis(cfg.heartbeat_timeout_ms);
            let bound = hb + margin(Duration::from_millis(100));
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let (mut a_fault, mut b_at, mut resumed, mut a_back) = (None, None, None, None);
            let m = measure(
                &mut pair,
                vip,
                true,
                NodeId::A,
                |p| p.a.lbd.signal(Signal::SIGSTOP),
                |p, since| {
                    if a_fault.is_none() && p.state(NodeId::A, &cfg.instance)? == "fault" {
                        a_fault = Some(since);
                    }
                    if b_at.is_none() && p.holders(vip)?.contains(&NodeId::B) {
                        b_at = Some(since);
                    }
                    if resumed.is_none() && a_fault.is_some() && b_at.is_some() {
                        p.a.lbd.signal(Signal::SIGCONT)?;
                        resumed = Some(since);
                    }
                    if resumed.is_some()
                        && a_back.is_none()
                        && p.holders(vip)? == [NodeId::A]
                        && p.state(NodeId::B, &cfg.instance)? == "backup"
                    {
                        a_back = Some(since);
                    }
                    Ok(a_back.is_some())
                },
                bound * 3
                    + cfg.mdi() * 2
                    + Duration::from_millis(cfg.preempt_delay_ms)
                    + Duration::from_secs(8),
                cfg.advert() * 3 + Duration::from_millis(300),
            );
            // Resume lbd whatever happened, so nothing stays stopped (an error: it already
            // runs, or the supervisor has gone).
            let _ = pair.a.lbd.signal(Signal::SIGCONT);
            let m = m?;
            let a_fault = a_fault.ok_or_else(|| anyhow!("A never went to FAULT"))?;
            let b_at = b_at.ok_or_else(|| anyhow!("B never held the VIP"))?;
            eprintln!(
                "{desc} at {} cs: A FAULT after {a_fault:?}, B holds the VIP after {b_at:?} \
                 (bound {bound:?}), SIGCONT at {resumed:?}, A sole holder again after \
                 {a_back:?}; {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(b_at <= bound, || {
                format!("A resigned (B held the VIP) {b_at:?} after lbd stopped (bound {bound:?})")
            });
            let status_bound = bound + STATUS_REFRESH;
            sc.check(a_fault <= status_bound, || {
                format!(
                    "A's status said FAULT {a_fault:?} after lbd stopped (bound {status_bound:?})"
                )
            });
            // The outage bound, and one window over the whole run: the return after
            // SIGCONT must not cost a second outage (beyond the cut handshake a
            // preemption may cost, see `outage_with_return`).
            sc.outage_with_return(&m, cfg, bound, b_at).note = format!(
                "heartbeat_timeout_ms = {}; A resumed as sole holder {:.0} ms after SIGCONT",
                cfg.heartbeat_timeout_ms,
                a_back
                    .zip(resumed)
                    .map_or(f64::NAN, |(b, r)| (b - r).as_secs_f64() * 1000.0)
            );
        }
        Ok(())
    })
}

#[test]
fn sigstop_of_lbd_is_noticed_within_the_heartbeat_timeout() -> anyhow::Result<()> {
    lbd_hang(
        "05-sigstop-lbd",
        "SIGSTOP lbd (hung), fast_takeover = true, then SIGCONT",
        &PairConfig::every_interval(true),
    )
}

/// The same with the shipped configs: their 300 ms heartbeat timeout.
#[test]
fn sigstop_of_lbd_with_the_shipped_configs_is_noticed_within_300_ms() -> anyhow::Result<()> {
    let cfg = PairConfig::shipped()?;
    lbd_hang(
        "05s-sigstop-lbd-shipped",
        &format!("SIGSTOP lbd (hung), then SIGCONT, {}", cfg.shipped_desc()),
        &[cfg],
    )
}
