//! Link failure on the master: FAULT, VIPs withdrawn, the backup takes over; recovery.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::{margin, master_down_interval, Lan, NodeId, VrrpInstance};

const ADV_CS: u16 = 10;

#[test]
fn master_link_down_faults_and_link_up_returns() -> anyhow::Result<()> {
    let mut lan = Lan::new("link")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    let b = lan.start_vrrpd(NodeId::B, [&inst.with_priority(100)])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;

    let t0 = Instant::now();
    lan.set_link(NodeId::A, false)?;
    lan.await_state(&a, "web", "fault", Duration::from_secs(2))?;
    let bound = master_down_interval(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip, "B alone should hold the VIP", t0, bound, |h| {
        h == [NodeId::B]
    })?;
    eprintln!("link down: B alone holds {vip} after {took:?} (bound {bound:?})");
    // A stays in FAULT, without the VIP, while its link is down.
    lan.assert_stays_sole_holder(vip, NodeId::B, Duration::from_millis(300))?;
    assert_eq!(lan.vrrpd_state(&a, "web")?, "fault");

    lan.set_link(NodeId::A, true)?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(3))?;
    lan.await_state(&a, "web", "master", Duration::from_secs(1))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn master_carrier_loss_faults_and_carrier_return_recovers() -> anyhow::Result<()> {
    // The bridge-side port goes down: A's interface stays administratively up but loses
    // its carrier, like a pulled cable or a dead switch port.
    let mut lan = Lan::new("carrier")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    let b = lan.start_vrrpd(NodeId::B, [&inst.with_priority(100)])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;

    let t0 = Instant::now();
    lan.set_port(NodeId::A, false)?;
    lan.await_state(&a, "web", "fault", Duration::from_secs(2))?;
    let bound = master_down_interval(100, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip, "B alone should hold the VIP", t0, bound, |h| {
        h == [NodeId::B]
    })?;
    eprintln!("carrier lost: B alone holds {vip} after {took:?} (bound {bound:?})");

    lan.set_port(NodeId::A, true)?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(3))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(1))?;
    Ok(())
}
