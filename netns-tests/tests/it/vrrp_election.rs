//! Election: the higher priority wins and keeps the VIP alone; two VRIDs split the work.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::{margin, master_down_interval, Lan, NodeId, Signal, VrrpInstance};

const ADV_CS: u16 = 10;

#[test]
fn higher_priority_becomes_the_only_master() -> anyhow::Result<()> {
    let mut lan = Lan::new("election")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    let b = lan.start_vrrpd(NodeId::B, [&inst.with_priority(100)])?;

    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&a, "web", "master", Duration::from_secs(2))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;
    // Over several advert intervals nobody else grabs it (a backup that rejected the
    // master's adverts would take it after Master_Down_Interval).
    let watch = master_down_interval(100, ADV_CS) * 3;
    lan.assert_stays_sole_holder(vip, NodeId::A, watch)?;
    assert_eq!(lan.vrrpd_state(&b, "web")?, "backup");

    let b_status = lan.vrrpd_instance(&b, "web")?;
    assert_eq!(
        b_status["master_addr"].as_str(),
        Some(lan.node(NodeId::A).addr.to_string().as_str()),
        "B should know A is master: {b_status}"
    );
    let received = b_status["counters"]["adverts_received"]
        .as_u64()
        .unwrap_or(0);
    assert!(received >= 3, "B counted {received} adverts: {b_status}");
    let a_status = lan.vrrpd_instance(&a, "web")?;
    assert!(
        a_status["counters"]["adverts_sent"].as_u64().unwrap_or(0) >= 3,
        "{a_status}"
    );
    Ok(())
}

#[test]
fn two_vrids_run_active_active_and_the_survivor_takes_both() -> anyhow::Result<()> {
    let mut lan = Lan::new("active-active")?;
    let (vip1, vip2) = (lan.vip(0), lan.vip(1));
    let one = VrrpInstance::new("one", 51, 200, ADV_CS, &[vip1]);
    let two = VrrpInstance::new("two", 52, 100, ADV_CS, &[vip2]);
    let a = lan.start_vrrpd(NodeId::A, [&one, &two])?;
    let b = lan.start_vrrpd(
        NodeId::B,
        [&one.with_priority(100), &two.with_priority(200)],
    )?;

    lan.await_sole_holder(vip1, NodeId::A, Duration::from_secs(5))?;
    lan.await_sole_holder(vip2, NodeId::B, Duration::from_secs(5))?;
    lan.await_state(&a, "two", "backup", Duration::from_secs(2))?;
    lan.await_state(&b, "one", "backup", Duration::from_secs(2))?;
    lan.assert_stays_sole_holder(vip1, NodeId::A, Duration::from_millis(300))?;
    assert!(lan.sole_holder(vip2, NodeId::B)?);

    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGKILL)?;
    let bound = master_down_interval(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip1, "B should take VIP1", t0, bound, |h| {
        h.contains(&NodeId::B)
    })?;
    eprintln!("VIP1 moved to B in {took:?} (bound {bound:?})");
    assert!(lan.has_addr(NodeId::B, vip2)?, "B lost VIP2");
    lan.await_state(&b, "one", "master", Duration::from_secs(1))?;
    assert_eq!(lan.vrrpd_state(&b, "two")?, "master");
    Ok(())
}
