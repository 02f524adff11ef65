//! Failover when the master's vrrpd dies (kill -9) or is stopped (SIGTERM), and the
//! gratuitous ARP that moves the client over.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::{
    margin, master_down_interval, skew_time, Lan, NodeId, Signal, VrrpInstance, Vrrpd,
};

const ADV_CS: u16 = 10;
const PRIO_B: u8 = 100;

/// A at 200 and B at `PRIO_B`, converged: A master holding the VIP alone, B backup.
fn converged_pair(lan: &mut Lan) -> anyhow::Result<(Vrrpd, Vrrpd)> {
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    let b = lan.start_vrrpd(NodeId::B, [&inst.with_priority(PRIO_B)])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;
    lan.assert_stays_sole_holder(vip, NodeId::A, Duration::from_millis(200))?;
    Ok((a, b))
}

#[test]
fn kill_9_of_the_master_backup_takes_over_within_master_down_interval() -> anyhow::Result<()> {
    let mut lan = Lan::new("kill9")?;
    let vip = lan.vip(0);
    let (a, b) = converged_pair(&mut lan)?;

    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGKILL)?;
    let bound = master_down_interval(PRIO_B, ADV_CS) + margin(Duration::from_millis(500));
    // No cleanup ran on A, so its VIP stays there: only B gaining it is asserted.
    let took = lan.await_since(vip, "B should hold the VIP", t0, bound, |h| {
        h.contains(&NodeId::B)
    })?;
    eprintln!("kill -9: B holds {vip} after {took:?} (bound {bound:?})");
    assert!(
        took >= master_down_interval(PRIO_B, ADV_CS) / 2,
        "B took over in {took:?}, long before Master_Down_Interval: it wasn't waiting for adverts"
    );
    lan.await_state(&b, "web", "master", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn sigterm_of_the_master_hands_over_within_skew_time_and_cleans_up() -> anyhow::Result<()> {
    let mut lan = Lan::new("sigterm")?;
    let vip = lan.vip(0);
    let (a, b) = converged_pair(&mut lan)?;

    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGTERM)?;
    // The master resigns with priority 0, so the backup waits Skew_Time, not MDI.
    let bound = skew_time(PRIO_B, ADV_CS) + margin(Duration::from_millis(500));
    let took = lan.await_since(vip, "B should hold the VIP", t0, bound, |h| {
        h.contains(&NodeId::B)
    })?;
    eprintln!("SIGTERM: B holds {vip} after {took:?} (bound {bound:?})");
    let status = lan.topo.wait_exit(a.proc, Duration::from_secs(5))?;
    assert!(status.success(), "vrrpd on A exited with {status}");
    assert!(
        !lan.has_addr(NodeId::A, vip)?,
        "A left {vip} behind after SIGTERM"
    );
    assert!(lan.sole_holder(vip, NodeId::B)?);
    lan.await_state(&b, "web", "master", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn gratuitous_arp_moves_the_clients_neighbour_entry() -> anyhow::Result<()> {
    let mut lan = Lan::new("garp")?;
    let vip = lan.vip(0);
    let (a, _b) = converged_pair(&mut lan)?;
    assert!(lan.client_ping(vip)?, "client can't ping {vip} on A");
    assert_eq!(lan.client_neigh_node(vip)?, Some(NodeId::A));

    // kill -9 leaves the VIP on A too, so nothing but B's gratuitous ARP can change the
    // client's entry (the client sends no traffic meanwhile).
    let t0 = Instant::now();
    lan.topo.signal(a.proc, Signal::SIGKILL)?;
    let bound = master_down_interval(PRIO_B, ADV_CS) + margin(Duration::from_millis(1000));
    let moved = netns_tests::eventually_until(t0, t0 + bound, Duration::from_millis(10), || {
        Ok(lan.client_neigh_node(vip)? == Some(NodeId::B))
    });
    if let Err(e) = moved {
        anyhow::bail!(
            "client's entry for {vip} still {:?} (B is {}): {e:#}",
            lan.client_neigh_mac(vip)?,
            lan.node(NodeId::B).mac
        );
    }
    eprintln!("client's entry moved to B after {:?}", t0.elapsed());
    Ok(())
}
