//! A hostile host on the LAN: the client namespace forges VRRP adverts with the
//! shared wire codec over a raw socket (`forge-vrrp`), and the pair must hold.
//!
//! - With `accept_from` (the default with unicast peers): forged priority 255, a forged
//!   4095-cs interval, a forgery from the master's own address and a 1-second repeating
//!   forger move nothing: exactly one node holds the VIP the whole time, and the counters
//!   show the discards.
//! - Without it (multicast, any source): the adopt window keeps every outage at most the
//!   master's configured Master_Down_Interval (RFC 5798 alone: 3 x 40.95 s + skew).
//! - A 10k/s flood of lower-priority adverts: the master answers at most about once per
//!   interval, keeps advertising on time (the backup never takes over), and its CPU is
//!   printed (and bounded).
//! - keepalived under the same forgeries, for the record (doc/vrrpd.md, "Security").
#![allow(clippy::disallowed_types)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netns_tests::capture::capture_advert_times;
use netns_tests::{
    margin, master_down_interval, Forgery, Lan, NodeId, ProcId, VrrpInstance, Vrrpd,
};
use serde_json::Value;

const ADV_CS: u16 = 10;
const PRIO_A: u8 = 200;
const PRIO_B: u8 = 100;
const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const POLL: Duration = Duration::from_millis(5);

/// A forged advert for VRID 51 from `src` to `dsts`: `count` of them at `rate` per second.
fn forgery(
    src: Ipv4Addr,
    dsts: &[Ipv4Addr],
    priority: u8,
    interval_cs: u16,
    vip: Ipv4Addr,
    count: u64,
    rate: u64,
) -> Forgery {
    Forgery {
        src,
        dsts: dsts.to_vec(),
        vrid: 51,
        priority,
        interval_cs,
        vips: vec![vip],
        count,
        rate,
    }
}

fn counter(status: &Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(&status["counters"], |v, k| &v[*k])
        .as_u64()
        .unwrap_or(0)
}

/// Both nodes' status of instance "web", their counters printed.
fn statuses(lan: &Lan, a: &Vrrpd, b: &Vrrpd) -> anyhow::Result<(Value, Value)> {
    let (sa, sb) = (lan.vrrpd_instance(a, "web")?, lan.vrrpd_instance(b, "web")?);
    eprintln!(
        "A counters: {}\nB counters: {}",
        sa["counters"], sb["counters"]
    );
    Ok((sa, sb))
}

/// What the VIP did while watched: the longest time nobody held it, and the most holders
/// seen at once.
#[derive(Debug, Default)]
struct Watch {
    longest_gap: Duration,
    gaps: usize,
    max_holders: usize,
    /// The longest time between two looks (each spawns `ip` in every namespace): a holder
    /// that came and went within it is not seen, so a measured gap is only this exact.
    resolution: Duration,
}

/// Polls who holds `vip` for `duration` (bounded in polls too).
fn watch_holders(lan: &Lan, vip: Ipv4Addr, duration: Duration) -> anyhow::Result<Watch> {
    let mut w = Watch::default();
    let start = Instant::now();
    let mut gap_since: Option<Instant> = None;
    let mut last_look: Option<Instant> = None;
    for _ in 0..100_000 {
        let now = Instant::now();
        if now - start >= duration {
            break;
        }
        if let Some(prev) = last_look {
            w.resolution = w.resolution.max(now - prev);
        }
        last_look = Some(now);
        let holders = lan.vip_holders(vip)?;
        w.max_holders = w.max_holders.max(holders.len());
        match (holders.is_empty(), gap_since) {
            (true, None) => {
                gap_since = Some(now);
                w.gaps += 1;
            }
            (false, Some(since)) => {
                w.longest_gap = w.longest_gap.max(now - since);
                gap_since = None;
            }
            _ => {}
        }
        std::thread::sleep(POLL);
    }
    if let Some(since) = gap_since {
        w.longest_gap = w.longest_gap.max(Instant::now() - since);
    }
    Ok(w)
}

/// A started pair (A master at 200, B backup at 100), `extra_a` / `extra_b` added to each
/// node's instance.
fn pair(lan: &mut Lan, extra_a: &str, extra_b: &str) -> anyhow::Result<(Vrrpd, Vrrpd)> {
    let vip = lan.vip(0);
    let inst = VrrpInstance::new("web", 51, PRIO_A, ADV_CS, &[vip]);
    let a = lan.start_vrrpd(NodeId::A, [&inst.with_vrrpd_lines(extra_a)])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    let b_inst = inst.with_priority(PRIO_B).with_vrrpd_lines(extra_b);
    let b = lan.start_vrrpd(NodeId::B, [&b_inst])?;
    lan.await_state(&b, "web", "backup", Duration::from_secs(2))?;
    lan.await_state(&a, "web", "master", Duration::from_secs(2))?;
    Ok((a, b))
}

#[test]
fn with_accept_from_forged_adverts_move_nothing() -> anyhow::Result<()> {
    let mut lan = Lan::new("hostile-accept")?;
    let vip = lan.vip(0);
    let (addr_a, addr_b) = (lan.node(NodeId::A).addr, lan.node(NodeId::B).addr);
    let forger = lan.node(NodeId::Client).addr;
    // Unicast peers: accept_from defaults to them.
    let (a, b) = pair(
        &mut lan,
        &format!("unicast_peers = [\"{addr_b}\"]"),
        &format!("unicast_peers = [\"{addr_a}\"]"),
    )?;
    let both = [addr_a, addr_b];
    let cases = [
        (
            "priority 255",
            forgery(forger, &both, 255, ADV_CS, vip, 1, 1),
        ),
        (
            "4095-cs interval",
            forgery(forger, &both, 255, 4095, vip, 1, 1),
        ),
        (
            "from the master's address",
            forgery(addr_a, &both, 255, 4095, vip, 1, 1),
        ),
        (
            "repeating every second",
            forgery(forger, &both, 255, 4095, vip, 5, 1),
        ),
    ];
    let settle = master_down_interval(PRIO_B, ADV_CS) * 3;
    for (what, f) in &cases {
        let proc = lan.start_forger(f)?;
        lan.assert_stays_sole_holder(vip, NodeId::A, f.duration() + settle)
            .map_err(|e| anyhow::anyhow!("forged {what}: {e:#}"))?;
        lan.await_forger(proc, f)?;
    }
    let (sa, sb) = statuses(&lan, &a, &b)?;
    for (node, s) in [("A", &sa), ("B", &sb)] {
        let n = counter(s, &["discards", "source_not_allowed"]);
        assert!(
            n >= 7,
            "{node} discarded {n} forged adverts as source_not_allowed: {s}"
        );
    }
    // The forgery with A's own address never reaches A's socket (Linux drops packets with
    // a local source address, accept_local = 0); B believes it (an allowed source) but
    // only clamps the interval, and A stays master.
    assert!(counter(&sb, &["interval_clamped"]) >= 1, "B: {sb}");
    assert_eq!(counter(&sb, &["became_master"]), 0, "B: {sb}");
    assert_eq!(counter(&sa, &["became_master"]), 1, "A: {sa}");
    Ok(())
}

#[test]
fn without_accept_from_a_forgery_costs_at_most_master_down_interval() -> anyhow::Result<()> {
    let mut lan = Lan::new("hostile-open")?;
    let vip = lan.vip(0);
    let addr_a = lan.node(NodeId::A).addr;
    let forger = lan.node(NodeId::Client).addr;
    // Multicast, no accept_from: any source is believed, as RFC 5798 says.
    let (a, b) = pair(&mut lan, "", "")?;
    let mdi = master_down_interval(PRIO_A, ADV_CS);
    let bound = mdi + margin(Duration::from_millis(300));
    let group = [VRRP_GROUP];
    let cases = [
        (
            "priority 255",
            forgery(forger, &group, 255, ADV_CS, vip, 1, 1),
            true,
        ),
        (
            "priority 200, 4095-cs interval",
            forgery(forger, &group, 200, 4095, vip, 1, 1),
            true,
        ),
        (
            "from the master's address",
            forgery(addr_a, &group, 255, 4095, vip, 1, 1),
            false,
        ),
        (
            "4095 cs, repeating every second",
            forgery(forger, &group, 255, 4095, vip, 5, 1),
            true,
        ),
    ];
    for (what, f, moves) in &cases {
        let proc = lan.start_forger(f)?;
        let w = watch_holders(&lan, vip, f.duration() + mdi * 3)?;
        lan.await_forger(proc, f)?;
        eprintln!("forged {what}: {w:?} (bound {bound:?} per gap)");
        assert!(w.max_holders <= 1, "forged {what}: two holders: {w:?}");
        // A holder seen for less than the watch's resolution can be missed, joining two
        // gaps into one: the bound holds up to that measurement error, which is printed.
        assert!(
            w.longest_gap <= bound + w.resolution,
            "forged {what}: VIP held by nobody for {:?} (bound {bound:?} + resolution {:?})",
            w.longest_gap,
            w.resolution
        );
        if !moves {
            assert_eq!(w.gaps, 0, "forged {what}: {w:?}");
        }
        lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(2))?;
    }
    let (sa, sb) = statuses(&lan, &a, &b)?;
    assert!(counter(&sa, &["interval_clamped"]) >= 1, "A: {sa}");
    assert!(counter(&sb, &["interval_clamped"]) >= 1, "B: {sb}");
    Ok(())
}

/// utime + stime of a process, in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ")".
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow::anyhow!("odd /proc/{pid}/stat: {stat}"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

const USER_HZ: f64 = 100.0;

#[test]
fn a_flood_of_lower_priority_adverts_is_not_amplified() -> anyhow::Result<()> {
    let mut lan = Lan::new("hostile-flood")?;
    // Debug logging writes lines per packet: measure CPU at the production level.
    lan.vrrpd_log_level = "info".to_owned();
    let vip = lan.vip(0);
    let forger = lan.node(NodeId::Client).addr;
    let (a, b) = pair(&mut lan, "", "")?;
    let pid_a = lan.topo.pid(a.proc)?;
    let before_a = lan.vrrpd_instance(&a, "web")?;
    let before_b = lan.vrrpd_instance(&b, "web")?;
    let ticks0 = cpu_ticks(pid_a)?;
    let t0 = Instant::now();

    let flood = forgery(forger, &[VRRP_GROUP], 50, ADV_CS, vip, 50_000, 10_000);
    let proc: ProcId = lan.start_forger(&flood)?;
    // The master's adverts as the backup's interface sees them, during the flood (tshark
    // takes about a second to start; it captures for 3 s of the 5).
    let (ns_b, addr_a) = (lan.node(NodeId::B).ns.clone(), lan.node(NodeId::A).addr);
    let capture = std::thread::spawn(move || capture_advert_times(&ns_b, addr_a, 200, 3));
    lan.assert_stays_sole_holder(vip, NodeId::A, flood.duration())?;
    let report = lan.await_forger(proc, &flood)?;
    let times = capture
        .join()
        .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
    let elapsed = t0.elapsed();
    let ticks = cpu_ticks(pid_a)? - ticks0;
    let cpu = ticks as f64 / USER_HZ / elapsed.as_secs_f64();

    let after_a = lan.vrrpd_instance(&a, "web")?;
    let after_b = lan.vrrpd_instance(&b, "web")?;
    let delta = |s0: &Value, s1: &Value, path: &[&str]| counter(s1, path) - counter(s0, path);
    let sent = delta(&before_a, &after_a, &["adverts_sent"]);
    let suppressed = delta(&before_a, &after_a, &["replies_suppressed"]);
    let received = delta(&before_a, &after_a, &["adverts_received"]);
    let late = delta(&before_a, &after_a, &["late_timers"]);
    let b_received = delta(&before_b, &after_b, &["adverts_received"]);
    let b_suppressed = delta(&before_b, &after_b, &["replies_suppressed"]);
    let intervals = elapsed.as_secs_f64() / (f64::from(ADV_CS) / 100.0);
    eprintln!(
        "flood ({report}) over {elapsed:?} = {intervals:.0} intervals: master received {received}, \
         sent {sent} adverts, suppressed {suppressed} replies, late timers {late}; backup \
         received {b_received} (replies suppressed {b_suppressed}); master CPU {:.1}% of a core ({ticks} ticks)",
        cpu * 100.0
    );
    // The flood reached the state machine and was answered about once per interval: the
    // periodic advert and at most one reply per interval, never one per packet.
    assert!(
        received >= 10_000,
        "the flood should reach the FSM: {received}"
    );
    assert!(
        suppressed + 3 * (intervals as u64) >= received,
        "{suppressed} of {received}"
    );
    assert!(
        (sent as f64) <= 2.0 * intervals + 5.0,
        "{sent} adverts in {intervals:.0} intervals"
    );
    // Its own adverts kept their interval: as many as intervals passed, none late, and
    // the backup (Master_Down_Interval = 3.6 intervals) never took over.
    assert!(
        (sent as f64) >= 0.9 * intervals,
        "{sent} adverts in {intervals:.0} intervals"
    );
    assert_eq!(late, 0, "late timers under the flood: {after_a}");
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    let longest = gaps.iter().copied().fold(0.0, f64::max);
    let interval = f64::from(ADV_CS) / 100.0;
    let late_10 = gaps.iter().filter(|&&g| g > 1.1 * interval).count();
    eprintln!(
        "master adverts seen by the backup during the flood: {} in {:.2}s, longest gap \
         {:.1} ms, {late_10} gaps over +10% of the interval",
        times.len(),
        times.last().copied().unwrap_or(0.0),
        longest * 1000.0
    );
    assert!(times.len() >= 10, "too few adverts captured: {times:?}");
    assert!(
        longest <= 1.5 * interval,
        "adverts {:.1} ms apart",
        longest * 1000.0
    );
    assert_eq!(counter(&after_b, &["became_master"]), 0, "{after_b}");
    assert_eq!(lan.vrrpd_state(&b, "web")?, "backup");
    // The target is 10% of a core; this debug build measured 8-10% on the 2-core
    // dev machine (doc/vrrpd.md). Asserted with room for a loaded CI machine: it catches
    // a loop that wakes up per packet again (16-22%) only when the machine is quiet.
    assert!(cpu < 0.25, "vrrpd used {:.1}% of a core", cpu * 100.0);
    Ok(())
}

/// The VRRP child of a keepalived started by the harness (its pid file).
fn keepalived_vrrp_pid(lan: &Lan, node: &str) -> anyhow::Result<i32> {
    let file = lan.topo.dir().join(format!("keepalived-{node}-vrrp.pid"));
    let mut pid = None;
    netns_tests::eventually(Duration::from_secs(3), Duration::from_millis(20), || {
        pid = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        Ok(pid.is_some())
    })?;
    pid.ok_or_else(|| anyhow::anyhow!("no pid in {}", file.display()))
}

/// keepalived 2.2 (VRRPv3, multicast, no authentication) under the same forgeries, for the
/// comparison in doc/vrrpd.md. Its figures are printed, not asserted: they are keepalived's.
#[test]
fn keepalived_under_the_same_forgeries_for_the_record() -> anyhow::Result<()> {
    let mut lan = Lan::new("hostile-keepalived")?;
    let vip = lan.vip(0);
    let forger = lan.node(NodeId::Client).addr;
    let inst = VrrpInstance::new("web", 51, PRIO_A, ADV_CS, &[vip]);
    let mut kas = start_keepalived_pair(&mut lan, &inst)?;
    let group = [VRRP_GROUP];
    let mdi = master_down_interval(PRIO_A, ADV_CS);

    let f = forgery(forger, &group, 255, ADV_CS, vip, 1, 1);
    let proc = lan.start_forger(&f)?;
    let w = watch_holders(&lan, vip, mdi * 4)?;
    lan.await_forger(proc, &f)?;
    eprintln!("keepalived, forged priority 255: {w:?}");
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;

    // RFC 5798 as written: the backups adopt 40.95 s and wait 3 x 40.95 s + skew. Watched
    // for a bounded time only; doc/vrrpd.md has the full figure.
    let watch = Duration::from_secs(8);
    let f = forgery(forger, &group, 200, 4095, vip, 1, 1);
    let proc = lan.start_forger(&f)?;
    let w = watch_holders(&lan, vip, watch)?;
    lan.await_forger(proc, &f)?;
    let holders = lan.vip_holders(vip)?;
    eprintln!(
        "keepalived, forged priority 200 + 4095 cs: {w:?}; after {watch:?} the VIP is held by {holders:?}"
    );
    // It would come back after ~3 x 40.95 s (132 s measured): restart the pair instead.
    for ka in kas.drain(..) {
        lan.topo.signal_group(ka, netns_tests::Signal::SIGKILL)?;
        lan.topo.wait_exit(ka, Duration::from_secs(5))?;
    }
    // keepalived refuses to start while its pid files name a live process: its VRRP child
    // may outlive the parent for a moment, so wait for it and clear the files.
    for node in ["a", "b"] {
        if let Ok(pid) = keepalived_vrrp_pid(&lan, node) {
            netns_tests::eventually(Duration::from_secs(5), Duration::from_millis(20), || {
                Ok(!std::path::Path::new(&format!("/proc/{pid}")).exists())
            })?;
        }
        for suffix in ["", "-vrrp"] {
            let file = lan
                .topo
                .dir()
                .join(format!("keepalived-{node}{suffix}.pid"));
            let _ = std::fs::remove_file(file);
        }
    }
    kas = start_keepalived_pair(&mut lan, &inst)?;

    let pid_a = keepalived_vrrp_pid(&lan, "a")?;
    let ticks0 = cpu_ticks(pid_a)?;
    let t0 = Instant::now();
    let flood = forgery(forger, &group, 50, ADV_CS, vip, 50_000, 10_000);
    let proc = lan.start_forger(&flood)?;
    let (ns_b, addr_a) = (lan.node(NodeId::B).ns.clone(), lan.node(NodeId::A).addr);
    let capture = std::thread::spawn(move || capture_advert_times(&ns_b, addr_a, 100_000, 3));
    let w = watch_holders(&lan, vip, flood.duration())?;
    lan.await_forger(proc, &flood)?;
    let cpu = (cpu_ticks(pid_a)? - ticks0) as f64 / USER_HZ / t0.elapsed().as_secs_f64();
    let times = capture
        .join()
        .map_err(|_| anyhow::anyhow!("capture thread panicked"))??;
    eprintln!(
        "keepalived, 10k/s flood of priority 50: {w:?}; master sent {} adverts in {:.2}s \
         ({:.0}/s); master VRRP process CPU {:.1}% of a core",
        times.len(),
        times.last().copied().unwrap_or(0.0),
        times.len() as f64 / times.last().copied().unwrap_or(1.0).max(0.001),
        cpu * 100.0
    );
    drop(kas);
    Ok(())
}

/// keepalived on A (master) and B (backup), A alone holding the VIP; returns their procs.
fn start_keepalived_pair(lan: &mut Lan, inst: &VrrpInstance) -> anyhow::Result<Vec<ProcId>> {
    let vip = inst.vips[0];
    let a = lan.start_keepalived(NodeId::A, [inst])?;
    lan.await_sole_holder(vip, NodeId::A, Duration::from_secs(5))?;
    let b = lan.start_keepalived(NodeId::B, [&inst.with_priority(PRIO_B)])?;
    lan.assert_stays_sole_holder(vip, NodeId::A, master_down_interval(PRIO_B, ADV_CS) * 3)?;
    Ok(vec![a.proc, b.proc])
}
