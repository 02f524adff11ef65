//! kill -9 of vrrpd on the master, supervised like `deploy/systemd/vrrpd.service`:
//! (a) restarted by the supervisor: it finds its VIP still up and served by lbd and resumes
//!     as master: no failed request, and the VIP never has two holders;
//! (b) dead for good: the failure handler (`vrrpd release-vips`) removes the VIP, the peer
//!     serves within Master_Down_Interval, and the dead node's lbd stops serving the VIP
//!     (it has lost vrrpd for master_down_ms), so no answer comes from it after the
//!     takeover plus one advert interval.
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use anyhow::{anyhow, bail};
use netns_tests::pair::scenario::{self, listening, measure, never_two_holders};
use netns_tests::pair::{PairConfig, PairTopology, INTERVALS};
use netns_tests::{margin, NodeId, Signal};

#[test]
fn kill_9_of_vrrpd_restarted_by_the_supervisor_keeps_serving() -> anyhow::Result<()> {
    let id = "01-kill9-vrrpd-restart";
    scenario::run(id, "kill -9 vrrpd, supervisor restarts it", |sc| {
        for cs in INTERVALS {
            sc.at(cs);
            let cfg = PairConfig::coupled(cs);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            // After the restart, watch this long more for a second holder or a lost VIP.
            let settle = cfg.advert() * 3 + margin(Duration::from_millis(300));
            let mut resumed_at: Option<Duration> = None;
            let m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.a.vrrpd.signal(Signal::SIGKILL),
                |p, since| {
                    never_two_holders(p, vip)?;
                    if p.holders(vip)? != [NodeId::A] {
                        bail!(
                            "A dropped {vip} after {since:?}: holders {:?}",
                            p.holders(vip)?
                        );
                    }
                    if resumed_at.is_none()
                        && p.a.vrrpd.starts() >= 2
                        && p.state(NodeId::A, "web").ok().as_deref() == Some("master")
                    {
                        resumed_at = Some(since);
                    }
                    Ok(resumed_at.is_some_and(|r| since >= r + settle))
                },
                Duration::from_secs(10),
                Duration::ZERO,
            )?;
            eprintln!(
                "kill -9 vrrpd (restart) at {cs} cs: resumed after {resumed_at:?}; {}",
                m.summary.one_line()
            );
            sc.check(m.summary.failed == 0, || {
                format!("failed requests: {:?}", m.summary)
            });
            sc.check(!m.summary.by_node.contains_key("b"), || {
                format!("B answered although A resumed: {:?}", m.summary)
            });
            pair.await_state(NodeId::B, "web", "backup", Duration::from_secs(1))?;
            sc.outage(&m, &cfg, Duration::ZERO);
        }
        Ok(())
    })
}

#[test]
fn kill_9_of_vrrpd_dead_for_good_peer_takes_over_and_lbd_stops() -> anyhow::Result<()> {
    let id = "02-kill9-vrrpd-dead";
    scenario::run(
        id,
        "kill -9 vrrpd, dead for good (failure handler releases the VIP)",
        |sc| {
            for cs in INTERVALS {
                sc.at(cs);
                let cfg = PairConfig::coupled(cs);
                let mut pair = PairTopology::new(id, cfg.clone())?;
                let vip = pair.vip(0);
                let bound = cfg.mdi() + margin(Duration::from_millis(300));
                let mut b_holds = None;
                let mut a_stopped = None;
                let m = measure(
                    &mut pair,
                    vip,
                    false,
                    NodeId::A,
                    |p| p.a.vrrpd.fail_for_good(),
                    |p, since| {
                        if b_holds.is_none() && p.holders(vip)?.contains(&NodeId::B) {
                            b_holds = Some(since);
                        }
                        if a_stopped.is_none() && !listening(p, NodeId::A, vip)? {
                            a_stopped = Some(since);
                        }
                        Ok(b_holds.is_some() && a_stopped.is_some())
                    },
                    cfg.mdi() * 3 + Duration::from_secs(3),
                    cfg.advert() * 2,
                )?;
                sc.check(pair.a.vrrpd.await_handler(Duration::from_secs(2))?, || {
                    "the failure handler (vrrpd release-vips) failed: see vrrpd-a's log".to_owned()
                });
                sc.check(!pair.lan.has_addr(NodeId::A, vip)?, || {
                    format!("release-vips left {vip} on A")
                });
                let takeover = m
                    .first_answer_after_fault(NodeId::B)
                    .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
                let last_a = m.run.last_answer_from("a").map_or(0.0, |r| r.t_ms) - m.fault_ms;
                eprintln!(
            "kill -9 vrrpd (dead) at {cs} cs: B holds the VIP after {b_holds:?}, B answers after \
             {takeover:.0} ms (bound {bound:?}), A's lbd stopped listening after {a_stopped:?}, \
             last answer from A {last_a:.0} ms after the fault; {}",
            m.summary.one_line()
        );
                sc.check(takeover <= bound.as_secs_f64() * 1000.0, || {
                    format!("B answered {takeover:.0} ms after the kill (bound {bound:?})")
                });
                let stop_bound = Duration::from_secs_f64(takeover / 1000.0)
                    + cfg.advert()
                    + margin(Duration::from_millis(300));
                let a_stopped = a_stopped.ok_or_else(|| anyhow!("A's lbd kept listening"))?;
                sc.check(a_stopped <= stop_bound, || format!("A's lbd still listened on {vip} {a_stopped:?} after the kill (bound {stop_bound:?})"));
                sc.check(last_a <= stop_bound.as_secs_f64() * 1000.0, || {
                    format!("A answered {last_a:.0} ms after the kill (bound {stop_bound:?})")
                });
                sc.outage(&m, &cfg, bound);
            }
            Ok(())
        },
    )
}

/// SIGSTOP of vrrpd on the master: a hung vrrpd, its control socket open and silent, its
/// VIP still on the interface. lbd must stop serving the VIP once vrrpd's keepalives have
/// been missing for the lost timeout (the instance's master_down_ms: by then the peer has
/// taken over), within 100 ms, although the socket never closes. vrrpd is resumed
/// (SIGCONT) afterwards.
#[test]
fn sigstop_of_vrrpd_makes_lbd_stop_serving_after_the_lost_timeout() -> anyhow::Result<()> {
    let id = "02b-sigstop-vrrpd";
    scenario::run(id, "SIGSTOP vrrpd (hung)", |sc| {
        for cs in INTERVALS {
            sc.at(cs);
            let cfg = PairConfig::coupled(cs);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            pair.await_converged()?;
            let lbd = pair.lbd_status(NodeId::A)?;
            let lost = lbd["vrrp"]["instances"][0]["master_down_ms"]
                .as_u64()
                .map(Duration::from_millis)
                .ok_or_else(|| anyhow!("no master_down_ms in A's lbd status: {lbd}"))?;
            // vrrpd's keepalive period: the last one came at most this long before the stop.
            let keepalive = (cfg.advert() / 2).min(Duration::from_millis(100));
            let bound = lost + margin(Duration::from_millis(100));
            let mut a_stopped = None;
            let mut b_holds = None;
            let m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.a.vrrpd.signal(Signal::SIGSTOP),
                |p, since| {
                    if a_stopped.is_none() && !listening(p, NodeId::A, vip)? {
                        a_stopped = Some(since);
                    }
                    if b_holds.is_none() && p.holders(vip)?.contains(&NodeId::B) {
                        b_holds = Some(since);
                    }
                    Ok(a_stopped.is_some() && b_holds.is_some())
                },
                cfg.mdi() * 3 + Duration::from_secs(3),
                Duration::ZERO,
            );
            pair.a.vrrpd.signal(Signal::SIGCONT)?;
            let m = m?;
            let a_stopped = a_stopped.ok_or_else(|| anyhow!("A's lbd kept listening"))?;
            eprintln!(
                "SIGSTOP vrrpd at {cs} cs: A's lbd stopped listening after {a_stopped:?} (lost \
             timeout {lost:?}, bound {bound:?}), B holds the VIP after {b_holds:?}; {}",
                m.summary.one_line()
            );
            sc.check(a_stopped <= bound, || {
                format!(
                    "A's lbd listened on {vip} {a_stopped:?} after vrrpd stopped (bound {bound:?})"
                )
            });
            sc.check(a_stopped + keepalive >= lost, || {
                format!("A's lbd stopped after {a_stopped:?}, before the lost timeout {lost:?}")
            });
            // Resumed, vrrpd is master again (it outranks B) without a state change of its
            // own; lbd must pick that up (it resubscribes for a fresh snapshot) and serve again.
            pair.await_converged().map_err(|e| {
                anyhow!("after SIGCONT the pair did not settle on A serving: {e:#}")
            })?;
            // The client's outage: never worse than losing the node (the peer takes over
            // after Master_Down_Interval; lbd stops serving about then).
            sc.outage(&m, &cfg, cfg.mdi() + margin(Duration::from_millis(300)));
        }
        Ok(())
    })
}
