//! The report's keepalived+HAProxy column, measured: the faults of the lbpair scenarios
//! that keepalived and HAProxy can undergo the same way, on the same topology, with the same
//! load client (`netns_tests::pair::keepalived`). Each row goes beside the lbpair row of the
//! scenario it copies (`report::keepalived_id`); the other lbpair rows say "not measured":
//! lbd without fast takeover, vrrpd restarted or dead for good (no control socket, no
//! failure handler), hung daemons, the planned switchover (keepalived has none), the
//! preemption, partition and active-active runs, and the shipped-config runs.
//!
//! These rows assert nothing about keepalived (it is the comparison); the test fails only
//! when the run itself can't be made (keepalived never takes over).
#![allow(clippy::disallowed_types)]

use std::time::Duration;

use netns_tests::pair::report::keepalived_id;
use netns_tests::pair::scenario::{self, measure};
use netns_tests::pair::{PairConfig, PairTopology, INTERVALS};
use netns_tests::{NodeId, Signal};

/// Runs `fault` on A with keepalived+HAProxy at both intervals, until B holds the VIP.
fn compare<F>(of: &str, desc: &str, fault: F) -> anyhow::Result<()>
where
    F: Fn(&mut PairTopology) -> anyhow::Result<()>,
{
    let id = keepalived_id(of);
    scenario::run(&id, desc, |sc| {
        for cs in INTERVALS {
            sc.at(cs);
            let cfg = PairConfig::keepalived(cs);
            let mut pair = PairTopology::new(&id, cfg.clone())?;
            let vip = pair.vip(0);
            let m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                &fault,
                |p, _| Ok(p.holders(vip)?.contains(&NodeId::B)),
                cfg.mdi() * 2 + Duration::from_secs(3),
                cfg.advert() * 3,
            )?;
            eprintln!(
                "keepalived+HAProxy, {desc} at {cs} cs: {}",
                m.summary.one_line()
            );
            sc.comparison(&m, &cfg);
        }
        Ok(())
    })
}

#[test]
fn keepalived_sigterm_of_the_master() -> anyhow::Result<()> {
    compare(
        "05-sigterm-vrrpd",
        "SIGTERM of keepalived on the master",
        |p| p.a.vrrpd.stop_with(Signal::SIGTERM),
    )
}

/// The proxy dies on the master and stays dead; keepalived's `track_script` (every second)
/// notices and puts the instance in FAULT. Beside lbpair's kill -9 of lbd with fast
/// takeover, where lbd's closed socket is noticed at once.
#[test]
fn keepalived_kill_9_of_haproxy() -> anyhow::Result<()> {
    compare(
        "03-kill9-lbd-fast",
        "kill -9 of HAProxy on the master (tracked by a 1 s track_script)",
        |p| p.a.lbd.stop_with(Signal::SIGKILL),
    )
}

#[test]
fn keepalived_master_link_down() -> anyhow::Result<()> {
    compare("07-link-down", "master's LAN link down", |p| {
        p.lan.set_link(NodeId::A, false)
    })
}

#[test]
fn keepalived_master_power_off() -> anyhow::Result<()> {
    compare("08-power-off", "master power-off", |p| {
        p.power_off(NodeId::A)
    })
}
