//! Validates the harness itself against keepalived on both nodes: if these fail, the
//! topology or the observations are wrong, not vrrpd.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::capture::capture_adverts;
use netns_tests::{
    always_for, assert_eventually, eventually_until, margin, skew_time, Lan, NodeId, Signal,
    VrrpInstance,
};

#[test]
fn keepalived_pair_elects_fails_over_and_garps() -> anyhow::Result<()> {
    let mut lan = Lan::new("harness-keepalived")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, 10, &[vip]);
    let a = lan.start_keepalived(NodeId::A, [&inst])?;
    let _b = lan.start_keepalived(NodeId::B, [&inst.with_priority(100)])?;

    assert_eventually!(
        Duration::from_secs(5),
        lan.sole_holder(vip, NodeId::A),
        "A (priority 200) should hold {vip} alone"
    );
    always_for(
        Duration::from_millis(500),
        Duration::from_millis(20),
        || lan.sole_holder(vip, NodeId::A),
    )?;

    let adverts = capture_adverts(&lan.node(NodeId::Client).ns, None, 3, 10)?;
    assert_eq!(adverts.len(), 3, "{adverts:?}");
    for ad in &adverts {
        assert_eq!(ad.src, lan.node(NodeId::A).addr, "{ad:?}");
        assert_eq!(
            (ad.version, ad.vrid, ad.priority, ad.interval_cs),
            (3, 51, 200, 10),
            "{ad:?}"
        );
        assert_eq!(ad.ttl, 255);
        assert!(ad.checksum_good(), "{ad:?}");
    }

    assert!(lan.client_ping(vip)?, "client can't ping {vip}");
    assert_eq!(lan.client_neigh_node(vip)?, Some(NodeId::A));

    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGTERM)?;
    let bound = skew_time(100, 10) + margin(Duration::from_millis(500));
    eventually_until(t0, t0 + bound, Duration::from_millis(5), || {
        lan.sole_holder(vip, NodeId::B)
    })
    .map_err(|e| anyhow::anyhow!("B should hold {vip} alone within {bound:?}: {e:#}"))?;
    assert_eventually!(
        Duration::from_secs(2),
        Ok(lan.client_neigh_node(vip)? == Some(NodeId::B)),
        "the client's entry for {vip} should move to B's MAC"
    );
    let status = lan.topo.wait_exit(a.proc, Duration::from_secs(5))?;
    assert!(status.success(), "keepalived exit: {status}");
    Ok(())
}
