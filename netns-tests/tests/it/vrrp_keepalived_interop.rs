//! Interop with keepalived 2.2 (VRRPv3) in both roles, and vrrpd's adverts on the wire as
//! tshark decodes them.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::capture::capture_adverts;
use netns_tests::{margin, master_down_interval, skew_time, Lan, NodeId, Signal, VrrpInstance};

const ADV_CS: u16 = 10;

#[test]
fn keepalived_with_higher_priority_preempts_vrrpd_and_vrrpd_takes_over_when_it_dies(
) -> anyhow::Result<()> {
    let mut lan = Lan::new("interop-ka-master")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);

    // vrrpd alone first: it becomes master; then keepalived's higher-priority adverts
    // must make it back off (so vrrpd accepts keepalived's packets, checksum included).
    let b = lan.start_vrrpd(NodeId::B, [&inst.with_priority(100)])?;
    lan.await_sole_holder(vip, NodeId::B, Duration::from_secs(5))?;
    let ka = lan.start_keepalived(NodeId::A, [&inst])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;
    lan.assert_stays_sole_holder(vip, NodeId::A, master_down_interval(100, ADV_CS) * 3)?;
    let status = lan.vrrpd_instance(&b, "web")?;
    let counters = &status["counters"];
    assert!(
        counters["adverts_received"].as_u64().unwrap_or(0) >= 3,
        "vrrpd should count keepalived's adverts: {status}"
    );
    assert_eq!(
        counters["discards"]["checksum"].as_u64().unwrap_or(0),
        0,
        "vrrpd rejected keepalived's checksums: {status}"
    );

    // keepalived dies hard (its whole process group, VRRP child included).
    let t0 = Instant::now();
    lan.topo.signal_group(ka.proc, Signal::SIGKILL)?;
    let bound = master_down_interval(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip, "vrrpd on B should hold the VIP", t0, bound, |h| {
        h.contains(&NodeId::B)
    })?;
    eprintln!("keepalived killed: vrrpd took over after {took:?} (bound {bound:?})");
    lan.await_state(&b, "web", "master", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn vrrpd_with_higher_priority_preempts_keepalived_and_resigns_to_it() -> anyhow::Result<()> {
    let mut lan = Lan::new("interop-vrrpd-master")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);

    let _ka = lan.start_keepalived(NodeId::B, [&inst.with_priority(100)])?;
    lan.await_sole_holder(vip, NodeId::B, Duration::from_secs(5))?;
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    // keepalived giving up the VIP proves it accepts vrrpd's adverts.
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&a, "web", "master", Duration::from_secs(1))?;
    lan.assert_stays_sole_holder(vip, NodeId::A, master_down_interval(100, ADV_CS) * 3)?;

    // vrrpd's adverts as an independent decoder sees them.
    let a_addr = lan.node(NodeId::A).addr;
    let adverts = capture_adverts(&lan.node(NodeId::Client).ns, Some(a_addr), 3, 10)?;
    assert_eq!(
        adverts.len(),
        3,
        "expected 3 adverts from {a_addr}: {adverts:?}"
    );
    for ad in &adverts {
        assert_eq!(ad.dst.to_string(), "224.0.0.18", "{ad:?}");
        assert_eq!(ad.ttl, 255, "{ad:?}");
        assert_eq!(ad.version, 3, "{ad:?}");
        assert_eq!(
            (ad.vrid, ad.priority, ad.interval_cs, ad.addr_count),
            (51, 200, ADV_CS, 1),
            "{ad:?}"
        );
        assert!(
            ad.checksum_good(),
            "tshark says the checksum is bad: {ad:?}"
        );
    }

    // SIGTERM: vrrpd resigns with priority 0, keepalived takes over after its Skew_Time.
    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGTERM)?;
    let bound = skew_time(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(
        vip,
        "keepalived on B alone should hold the VIP",
        t0,
        bound,
        |h| h == [NodeId::B],
    )?;
    eprintln!("vrrpd stopped: keepalived took over after {took:?} (bound {bound:?})");
    let status = lan.topo.wait_exit(a.proc, Duration::from_secs(5))?;
    assert!(status.success(), "vrrpd exit: {status}");
    Ok(())
}

#[test]
fn keepalived_takes_over_when_vrrpd_is_killed() -> anyhow::Result<()> {
    let mut lan = Lan::new("interop-kill")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    let _ka = lan.start_keepalived(NodeId::B, [&inst.with_priority(100)])?;
    lan.assert_stays_sole_holder(vip, NodeId::A, master_down_interval(100, ADV_CS) * 3)?;

    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGKILL)?;
    let bound = master_down_interval(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip, "keepalived on B should hold the VIP", t0, bound, |h| {
        h.contains(&NodeId::B)
    })?;
    eprintln!("vrrpd killed: keepalived took over after {took:?} (bound {bound:?})");
    Ok(())
}
