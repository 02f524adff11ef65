//! SIGHUP reload: unchanged instances keep their state (no re-election, no VIP
//! flap), changed ones restart, removed ones hand their VIPs to the backup, and a bad
//! config is rejected while the old one keeps running.
//!
//! Every scenario starts from the same converged pair: node A master of two instances
//! (`web`, VRID 51, and `api`, VRID 52, both at priority 200), node B backup of both at 100.
//! A reload is told apart from a restart by `time_in_state_ms`: an instance that kept
//! running has been in Master for as long as it had before the SIGHUP *plus* the time since;
//! a restarted one has been Master for at most the time since the SIGHUP. So before each
//! reload we wait until A has been Master for well over the watch window.
#![allow(clippy::disallowed_types)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use netns_tests::{always_for, eventually, Lan, NodeId, Signal, VrrpInstance, Vrrpd};
use serde_json::Value;

const ADV_CS: u16 = 10;
const PRIO_A: u8 = 200;
const PRIO_B: u8 = 100;
/// How long the VIPs are watched after a SIGHUP, and how often.
const WATCH: Duration = Duration::from_secs(2);
const WATCH_POLL: Duration = Duration::from_millis(20);
/// A's instances must have been Master this long before a reload, so that a reset
/// `time_in_state_ms` (at most the time since the SIGHUP) can't pass for a kept one.
const SETTLED: Duration = Duration::from_millis(1500);
/// Staleness of `time_in_state_ms`: a master publishes its status with every advert
/// (100 ms here) and the daemon refreshes its snapshot every 100 ms.
const STATUS_SLACK: Duration = Duration::from_millis(500);

/// The converged pair every scenario starts from.
struct Pair {
    lan: Lan,
    a: Vrrpd,
    b: Vrrpd,
    web: VrrpInstance,
    api: VrrpInstance,
}

impl Pair {
    fn start(tag: &str) -> Result<Pair> {
        let mut lan = Lan::new(tag)?;
        let web = VrrpInstance::new("web", 51, PRIO_A, ADV_CS, &[lan.vip(0)]);
        let api = VrrpInstance::new("api", 52, PRIO_A, ADV_CS, &[lan.vip(1)]);
        let a = lan.start_vrrpd(NodeId::A, [&web, &api])?;
        let b = lan.start_vrrpd(
            NodeId::B,
            [&web.with_priority(PRIO_B), &api.with_priority(PRIO_B)],
        )?;
        for inst in [&web, &api] {
            lan.await_sole_holder(inst.vips[0], NodeId::A, Duration::from_secs(5))?;
            lan.await_state(&a, &inst.name, "master", Duration::from_secs(2))?;
            lan.await_state(&b, &inst.name, "backup", Duration::from_secs(2))?;
        }
        let pair = Pair {
            lan,
            a,
            b,
            web,
            api,
        };
        pair.await_settled()?;
        Ok(pair)
    }

    /// Waits until both of A's instances have been Master for [`SETTLED`].
    fn await_settled(&self) -> Result<()> {
        for inst in [&self.web, &self.api] {
            eventually(Duration::from_secs(5), Duration::from_millis(50), || {
                let s = Snap::of(&self.lan, &self.a, &inst.name)?;
                Ok(s.state == "master" && s.time_in_state >= SETTLED)
            })
            .with_context(|| format!("A's {} never settled as master", inst.name))?;
        }
        Ok(())
    }

    /// Replaces A's `[[instance]]` tables with `body`, keeping its `[global]` section
    /// as the harness wrote it; returns the whole new text.
    fn rewrite_a(&self, body: &str) -> Result<String> {
        let old = std::fs::read_to_string(&self.a.config)
            .with_context(|| format!("reading {}", self.a.config.display()))?;
        let header = old
            .split("[[instance]]")
            .next()
            .ok_or_else(|| anyhow!("empty config"))?;
        let text = format!("{header}{body}");
        std::fs::write(&self.a.config, &text)
            .with_context(|| format!("writing {}", self.a.config.display()))?;
        Ok(text)
    }

    /// Sends SIGHUP to A and returns when its log shows `marker` once more than before.
    fn reload_a(&mut self, marker: &str) -> Result<Instant> {
        let before = self.lan.topo.log(self.a.proc)?.matches(marker).count();
        let t = Instant::now();
        self.lan.topo.signal(self.a.proc, Signal::SIGHUP)?;
        eventually(Duration::from_secs(5), Duration::from_millis(10), || {
            Ok(self.lan.topo.log(self.a.proc)?.matches(marker).count() > before)
        })
        .with_context(|| format!("A's log never showed {marker:?} after SIGHUP"))?;
        Ok(t)
    }

    /// Checks every [`WATCH_POLL`] for [`WATCH`] that A alone holds `vip`; returns the
    /// number of polls (so a watch that hardly sampled can't pass unnoticed).
    fn watch_sole_holder_a(&self, vip: Ipv4Addr) -> Result<u32> {
        let mut polls = 0u32;
        always_for(WATCH, WATCH_POLL, || {
            polls += 1;
            self.lan.sole_holder(vip, NodeId::A)
        })
        .map_err(|e| {
            anyhow!(
                "{vip} left A (or B took it too) during the reload: {e:#}; holders now: {:?}",
                self.lan.vip_holders(vip)
            )
        })?;
        // Each poll spawns `ip` twice; on a loaded 2-core machine that alone can take
        // 200 ms, so ask for a handful of samples, not a rate.
        if polls < 5 {
            bail!("only {polls} polls of {vip} in {WATCH:?}: the watch proves nothing");
        }
        Ok(polls)
    }
}

/// What a reload must (or must not) change about an instance, from `vrrpd status --json`.
#[derive(Debug, Clone, PartialEq)]
struct Snap {
    state: String,
    time_in_state: Duration,
    transitions: u64,
    became_master: u64,
    configured_priority: u64,
    /// When the status was read.
    at: Instant,
}

impl Snap {
    fn of(lan: &Lan, d: &Vrrpd, name: &str) -> Result<Snap> {
        let inst = lan.vrrpd_instance(d, name)?;
        let at = Instant::now();
        let num = |ptr: &str| {
            inst.pointer(ptr)
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no {ptr} in {inst}"))
        };
        Ok(Snap {
            state: inst
                .get("state")
                .and_then(Value::as_str)
                .map(str::to_ascii_lowercase)
                .ok_or_else(|| anyhow!("no state in {inst}"))?,
            time_in_state: Duration::from_millis(num("/time_in_state_ms")?),
            transitions: num("/counters/transitions")?,
            became_master: num("/counters/became_master")?,
            configured_priority: num("/configured_priority")?,
            at,
        })
    }

    /// Whether `later` is the same run of the same state: nothing counted in between and
    /// the time in state went on growing instead of starting again from zero.
    fn kept_by(&self, later: &Snap) -> bool {
        let elapsed = later.at.saturating_duration_since(self.at);
        later.state == self.state
            && later.transitions == self.transitions
            && later.became_master == self.became_master
            && later.configured_priority == self.configured_priority
            && later.time_in_state + STATUS_SLACK >= self.time_in_state + elapsed
    }
}

/// 1-based number of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> Result<usize> {
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
        .ok_or_else(|| anyhow!("no line starting with {prefix:?} in:\n{text}"))
}

/// `s` with `from` replaced by `to`, failing if `from` isn't there (so a change in how the
/// harness renders instances can't silently turn a bad config into a good one).
fn replace_once(s: &str, from: &str, to: &str) -> Result<String> {
    if !s.contains(from) {
        bail!("{from:?} not found in:\n{s}");
    }
    Ok(s.replacen(from, to, 1))
}

#[test]
fn reload_keeps_unchanged_instances_and_restarts_changed_ones() -> Result<()> {
    let mut p = Pair::start("reload-change")?;
    let web0 = Snap::of(&p.lan, &p.a, "web")?;
    let api0 = Snap::of(&p.lan, &p.a, "api")?;

    // `web` unchanged; `api` at a lower priority that still beats B's.
    let api_new = p.api.with_priority(PRIO_A - 20);
    p.rewrite_a(&format!("{}\n{}", p.web.vrrpd_toml(), api_new.vrrpd_toml()))?;
    let t_hup = Instant::now();
    p.lan.topo.signal(p.a.proc, Signal::SIGHUP)?;
    let polls = p.watch_sole_holder_a(p.web.vips[0])?;
    eprintln!("web's VIP stayed on A alone for {polls} polls after SIGHUP");
    // The watch proves something only if the reload happened inside it.
    let log = p.lan.topo.log(p.a.proc)?;
    assert!(
        log.contains("reload done"),
        "A had not finished reloading {WATCH:?} after SIGHUP:\n{log}"
    );

    let web1 = Snap::of(&p.lan, &p.a, "web")?;
    assert!(
        web0.kept_by(&web1),
        "unchanged instance web was disturbed by the reload:\nbefore {web0:?}\nafter  {web1:?}"
    );

    p.lan
        .await_state(&p.a, "api", "master", Duration::from_secs(3))?;
    p.lan
        .await_sole_holder(p.api.vips[0], NodeId::A, Duration::from_secs(3))?;
    let api1 = Snap::of(&p.lan, &p.a, "api")?;
    assert_eq!(
        api1.configured_priority,
        u64::from(api_new.priority),
        "api runs with the old priority: {api1:?}"
    );
    let since_hup = api1.at.saturating_duration_since(t_hup);
    assert!(
        api1.time_in_state <= since_hup,
        "changed instance api was not restarted: master for {:?}, but the SIGHUP was {since_hup:?} ago\n\
         before {api0:?}\nafter  {api1:?}",
        api1.time_in_state
    );
    assert!(!api0.kept_by(&api1), "{api0:?} -> {api1:?}");
    p.lan
        .await_state(&p.b, "api", "backup", Duration::from_secs(2))?;
    eprintln!(
        "api restarted and master again {:?} after SIGHUP",
        since_hup.saturating_sub(api1.time_in_state)
    );
    Ok(())
}

#[test]
fn bad_config_is_rejected_and_the_old_one_keeps_running() -> Result<()> {
    let mut p = Pair::start("reload-bad")?;
    let good = format!("{}\n{}", p.web.vrrpd_toml(), p.api.vrrpd_toml());
    let path = p.a.config.display().to_string();

    // Two kinds of rejection: a value out of range (found by validation, keyed by its
    // path) and an unknown key (found by the parser, named in serde's message).
    let out_of_range = replace_once(&good, "vrid = 52\n", "vrid = 300\n")?;
    let unknown_key = replace_once(&good, "vrid = 52\n", "vrid = 52\nbogus_reload_key = 1\n")?;
    let cases = [
        (out_of_range, "vrid = 300", "`instance[1].vrid`"),
        (unknown_key, "bogus_reload_key", "bogus_reload_key"),
    ];
    for (body, bad_line, key) in cases {
        let before: Vec<Snap> = ["web", "api"]
            .iter()
            .map(|n| Snap::of(&p.lan, &p.a, n))
            .collect::<Result<_>>()?;
        let text = p.rewrite_a(&body)?;
        let line = line_of(&text, bad_line)?;
        p.reload_a("reload rejected")?;
        // The rejection is logged before anything would be touched; keep watching for
        // a while in case the daemon went on to apply part of the file anyway.
        p.watch_sole_holder_a(p.web.vips[0])?;
        assert!(
            p.lan.topo.is_running(p.a.proc)?,
            "vrrpd on A died on a bad config"
        );
        let log = p.lan.topo.log(p.a.proc)?;
        let at = format!("{path}:{line}:");
        assert!(
            log.contains(&at) && log.contains(key),
            "A's log lacks the rejection at {at} naming {key}:\n{log}"
        );
        for (name, b) in ["web", "api"].iter().zip(&before) {
            let after = Snap::of(&p.lan, &p.a, name)?;
            assert!(
                b.kept_by(&after),
                "{name} changed on a rejected reload ({key}):\nbefore {b:?}\nafter  {after:?}"
            );
            assert_eq!(after.configured_priority, u64::from(PRIO_A));
        }
        for inst in [&p.web, &p.api] {
            assert!(p.lan.sole_holder(inst.vips[0], NodeId::A)?);
            assert_eq!(p.lan.vrrpd_state(&p.b, &inst.name)?, "backup");
        }
        eprintln!("rejected ({key}) at {at}, both instances untouched");
    }
    Ok(())
}

#[test]
fn removed_instance_hands_its_vip_to_the_backup() -> Result<()> {
    let mut p = Pair::start("reload-remove")?;
    let web0 = Snap::of(&p.lan, &p.a, "web")?;
    let api_vip = p.api.vips[0];

    p.rewrite_a(&p.web.vrrpd_toml())?;
    let t_hup = p.reload_a("reload done")?;
    // A resigns `api` with priority 0, so B takes it after Skew_Time, not after
    // Master_Down_Interval; the budget covers process scheduling, not the protocol.
    let took = p.lan.await_since(
        api_vip,
        "B alone should hold api's VIP",
        t_hup,
        Duration::from_secs(2),
        |h| h == [NodeId::B],
    )?;
    eprintln!("api's VIP moved to B {took:?} after SIGHUP");
    p.lan
        .await_state(&p.b, "api", "master", Duration::from_secs(1))?;
    p.watch_sole_holder_a(p.web.vips[0])?;

    let status = p.lan.vrrpd_status(&p.a)?;
    let names: Vec<&str> = status
        .get("instances")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|i| i.get("name")?.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["web"],
        "A still reports a removed instance: {status}"
    );
    let web1 = Snap::of(&p.lan, &p.a, "web")?;
    assert!(
        web0.kept_by(&web1),
        "web was disturbed by removing api:\nbefore {web0:?}\nafter  {web1:?}"
    );
    assert_eq!(p.lan.vrrpd_state(&p.b, "web")?, "backup");
    Ok(())
}
