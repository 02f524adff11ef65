//! Preemption: a returning higher-priority node takes the VIP back only if it may preempt.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use netns_tests::{margin, master_down_interval, Lan, NodeId, Signal, VrrpInstance};

const ADV_CS: u16 = 10;

fn hand_over_to_b(lan: &mut Lan, a_inst: &VrrpInstance) -> anyhow::Result<netns_tests::Vrrpd> {
    let vip = lan.vip(0);
    let a = lan.start_vrrpd(NodeId::A, [a_inst])?;
    let b = lan.start_vrrpd(NodeId::B, [&a_inst.with_priority(100).preempt(true)])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;
    lan.topo.signal(a.proc, Signal::SIGTERM)?;
    lan.topo.wait_exit(a.proc, Duration::from_secs(5))?;
    lan.await_sole_holder(vip, NodeId::B, Duration::from_secs(2))?;
    Ok(b)
}

#[test]
fn returning_higher_priority_node_preempts() -> anyhow::Result<()> {
    let mut lan = Lan::new("preempt-on")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]);
    let b = hand_over_to_b(&mut lan, &inst)?;

    let t0 = Instant::now();
    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    // A starts as backup, ignores B's lower-priority adverts, and takes over when its
    // Master_Down_Timer fires; the margin covers process start-up.
    let bound = master_down_interval(200, ADV_CS) + margin(Duration::from_millis(1500));
    let took = lan.await_since(vip, "A should take the VIP back alone", t0, bound, |h| {
        h == [NodeId::A]
    })?;
    eprintln!("A preempted after {took:?} (bound {bound:?})");
    lan.await_state(&a, "web", "master", Duration::from_secs(1))?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(1))?;
    Ok(())
}

#[test]
fn returning_node_without_preempt_stays_backup() -> anyhow::Result<()> {
    let mut lan = Lan::new("preempt-off")?;
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, 200, ADV_CS, &[vip]).preempt(false);
    let _b = hand_over_to_b(&mut lan, &inst)?;

    let a = lan.start_vrrpd(NodeId::A, [&inst])?;
    lan.await_state(&a, "web", "backup", Duration::from_secs(2))?;
    // Long enough for A's Master_Down_Timer to have fired several times over.
    lan.assert_stays_sole_holder(vip, NodeId::B, master_down_interval(200, ADV_CS) * 4)?;
    assert_eq!(lan.vrrpd_state(&a, "web")?, "backup");
    Ok(())
}
