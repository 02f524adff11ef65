//! Helpers shared by the state-machine tests (`fsm_transitions`, `fsm_pair`,
//! `fsm_switchover`): one configuration, adverts from a lower and a higher address, and
//! machines already in Backup or Master. Times are milliseconds since an arbitrary epoch.

use std::net::Ipv4Addr;
use std::time::Duration;

use vrrpd::fsm::{Action, Advert, Fsm, FsmConfig, StateKind, TransitionReason};

pub const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
pub const LOWER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const HIGHER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn cfg(priority: u8) -> FsmConfig {
    FsmConfig {
        vrid: 7,
        priority,
        advert_interval_cs: 100,
        preempt: true,
        preempt_delay: Duration::ZERO,
        primary_addr: US,
        vips: vec![VIP],
        fast_takeover_on_zero: false,
        adopt_interval_cs: None,
    }
}

pub fn adv(src: Ipv4Addr, priority: u8) -> Advert {
    Advert {
        src,
        priority,
        max_adver_int_cs: 100,
        addrs: vec![VIP],
    }
}

pub fn drain(f: &mut Fsm) -> Vec<Action> {
    std::iter::from_fn(|| f.poll_action()).collect()
}

pub fn tr(from: StateKind, to: StateKind, reason: TransitionReason) -> Action {
    Action::Transition { from, to, reason }
}

/// A started Backup at priority `p` (started at t = 1000 ms), actions drained.
pub fn backup(p: u8) -> Fsm {
    backup_with(cfg(p))
}

/// A started Backup (at t = 1000 ms), actions drained.
pub fn backup_with(c: FsmConfig) -> Fsm {
    let mut f = Fsm::new(c);
    f.handle_startup(ms(1000));
    assert_eq!(f.state(), StateKind::Backup);
    drain(&mut f);
    f
}

/// A Master at priority `p` (master-down at 1000 + MDI), drained; returns when it became one.
pub fn master(p: u8) -> (Fsm, Duration) {
    let mut f = backup(p);
    let at = f.poll_timeout().expect("backup has a master-down deadline");
    f.handle_timeout(at);
    assert_eq!(f.state(), StateKind::Master);
    drain(&mut f);
    (f, at)
}
