//! Losing the master node: its LAN link down (vrrpd goes to FAULT), or a power-off (all
//! its processes killed and its link down, the keepalived reference's "node lost"); and
//! the master's return, which preempts only once its lbd reports ready, failing nothing.
#![allow(clippy::disallowed_types)]

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail};
use netns_tests::pair::load::Record;
use netns_tests::pair::report;
use netns_tests::pair::scenario::{self, listening, measure, Measured, Verdict};
use netns_tests::pair::{PairConfig, PairTopology, HANDOFF_HOLD};
use netns_tests::{margin, NodeId};

/// A lost master costs Master_Down_Interval: the takeover (B's first answer) and the
/// client's outage are both bounded by it.
fn loss_bound(cfg: &PairConfig) -> Duration {
    cfg.mdi() + margin(Duration::from_millis(300))
}

fn link_down(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let bound = loss_bound(cfg);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.lan.set_link(NodeId::A, false),
                |p, _| Ok(p.holders(vip)? == [NodeId::B]),
                cfg.mdi() * 2 + Duration::from_secs(2),
                cfg.advert() * 2,
            )?;
            pair.await_state(NodeId::A, &cfg.instance, "fault", Duration::from_secs(1))?;
            let takeover = m
                .first_answer_after_fault(NodeId::B)
                .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
            eprintln!(
                "{desc} at {} cs: B answers after {takeover:.0} ms (bound {bound:?}); {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(takeover <= bound.as_secs_f64() * 1000.0, || {
                format!("B answered {takeover:.0} ms after A's link went down (bound {bound:?})")
            });
            sc.outage(&m, cfg, bound);
        }
        Ok(())
    })
}

fn power_off(id: &str, desc: &str, cfgs: &[PairConfig]) -> anyhow::Result<()> {
    scenario::run(id, desc, |sc| {
        for cfg in cfgs {
            sc.at(cfg.advert_cs);
            let bound = loss_bound(cfg);
            let mut pair = PairTopology::new(id, cfg.clone())?;
            let vip = pair.vip(0);
            let mut m = measure(
                &mut pair,
                vip,
                false,
                NodeId::A,
                |p| p.power_off(NodeId::A),
                |p, _| Ok(p.holders(vip)?.contains(&NodeId::B)),
                cfg.mdi() * 2 + Duration::from_secs(2),
                cfg.advert() * 3,
            )?;
            let takeover = m
                .first_answer_after_fault(NodeId::B)
                .ok_or_else(|| anyhow!("B never answered: {:?}", m.summary))?;
            eprintln!(
                "{desc} at {} cs: B answers after {takeover:.0} ms (bound {bound:?}); {}",
                cfg.advert_cs,
                m.summary.one_line()
            );
            sc.check(takeover <= bound.as_secs_f64() * 1000.0, || {
                format!("B answered {takeover:.0} ms after A's power-off (bound {bound:?})")
            });
            if !cfg.shipped {
                m.events = vec![
                    (m.fault_ms, "A powered off".into()),
                    (m.fault_ms + takeover, "B answers".into()),
                ];
                write_timeline(&m, cfg.advert_cs)?;
            }
            sc.outage(&m, cfg, bound);
        }
        Ok(())
    })
}

fn write_timeline(m: &Measured, cs: u16) -> anyhow::Result<()> {
    let svg = report::timeline_svg(
        &m.run,
        &m.events,
        &format!(
            "Power-off of the master at {cs} cs adverts: requests every 5 ms, by node \
             (blue A, green B), failures red; mark height = latency"
        ),
    );
    let name = if cs == 100 {
        "timeline.svg".to_owned()
    } else {
        format!("timeline-{cs}cs.svg")
    };
    let path = report::write_file(&name, &svg)?;
    eprintln!("timeline written to {}", path.display());
    Ok(())
}

#[test]
fn master_link_down_backup_serves_within_master_down_interval() -> anyhow::Result<()> {
    link_down(
        "07-link-down",
        "master's LAN link down (FAULT)",
        &PairConfig::every_interval(false),
    )
}

#[test]
fn master_power_off_backup_serves_within_master_down_interval() -> anyhow::Result<()> {
    power_off(
        "08-power-off",
        "master power-off (processes killed, link down)",
        &PairConfig::every_interval(false),
    )
}

/// Power-off with the shipped configs/node-{a,b} (see `netns_tests::pair::shipped`).
#[test]
fn master_power_off_with_the_shipped_configs() -> anyhow::Result<()> {
    let cfg = PairConfig::shipped()?;
    power_off(
        "08s-power-off-shipped",
        &format!("master power-off, {}", cfg.shipped_desc()),
        &[cfg],
    )
}

/// The intervals the preemption scenario runs at: 100, 10 and 2 cs, or the list in
/// `PREEMPT_INTERVALS_CS` (comma-separated; `scripts/preempt-loop.sh` runs one at a time).
fn preempt_intervals() -> anyhow::Result<Vec<u16>> {
    match std::env::var("PREEMPT_INTERVALS_CS") {
        Ok(list) => list
            .split(',')
            .map(|cs| {
                cs.trim()
                    .parse::<u16>()
                    .map_err(|e| anyhow!("PREEMPT_INTERVALS_CS {cs:?}: {e}"))
            })
            .collect(),
        Err(_) => Ok(vec![100, 10, 2]),
    }
}

/// A returns after a power-off and takes the VIP back from B (preemption, once its lbd is
/// ready) while two clients run: a keep-alive client and a client opening a new connection
/// per request, each sending a request every 5 ms. No request may fail (none in flight at
/// the yield, and no handshake straddling the MAC move: the hand-off window), the VIP never
/// has two masters, and B's residual copy after it yields is bounded ([`ResidualCopy`]).
/// Never retried (`.config/nextest.toml`).
/// The report table shows the 100 and 10 cs rows; 2 cs is in the test's output.
#[test]
fn returning_master_preempts_once_ready_without_failures() -> anyhow::Result<()> {
    let id = "09-preempt-return";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in preempt_intervals()? {
        let cfg = PairConfig::coupled(cs);
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        pair.power_off(NodeId::A)?;
        // A's dead vrrpd left the VIP on its (down) interface: only B's gaining it counts.
        netns_tests::eventually(
            cfg.mdi() * 2 + Duration::from_secs(2),
            Duration::from_millis(10),
            || Ok(pair.holders(vip)?.contains(&NodeId::B)),
        )?;
        pair.await_answer(vip, NodeId::B, Duration::from_secs(3))?;
        let capture = ClientCapture::start(&mut pair)?;
        let watch_timeout = cfg.mdi() * 2 + Duration::from_secs(8);
        let fresh = pair.start_load(vip, false, watch_timeout * 3 + Duration::from_secs(30))?;
        // Counted from its first answer, like the keep-alive client `measure` starts: a client
        // process starting on a loaded machine can miss its very first deadline.
        pair.await_load_answer(&fresh, NodeId::B, Duration::from_secs(3))?;
        let mut a_back = None;
        let mut residual = ResidualCopy::default();
        let m = measure(
            &mut pair,
            vip,
            true,
            NodeId::B,
            |p| p.power_on(NodeId::A),
            |p, since| {
                // A's interface is up again from here on.
                residual.check(p, vip, since)?;
                if a_back.is_none() && p.holders(vip)? == [NodeId::A] {
                    a_back = Some(since);
                }
                Ok(a_back.is_some())
            },
            watch_timeout,
            cfg.advert() * 3,
        )?;
        let fresh = pair.finish_load(fresh, Duration::from_secs(5))?;
        let warm_ms = fresh
            .first_answer_from(PairTopology::node_name(NodeId::B), 0.0)
            .map_or(0.0, |r| r.t_ms);
        let fresh_summary = fresh.summary_from(warm_ms);
        pair.await_state(NodeId::B, "web", "backup", Duration::from_secs(2))?;
        let back = m
            .first_answer_after_fault(NodeId::A)
            .ok_or_else(|| anyhow!("A never answered again: {:?}", m.summary))?;
        eprintln!(
            "A returns at {cs} cs: sole holder after {a_back:?}, answers after {back:.0} ms; \
             B's copy of the VIP seen alongside A's in {} polls, for at most {:?}",
            residual.polls, residual.longest
        );
        // One line per interval for scripts/preempt-loop.sh.
        eprintln!(
            "preempt-figures cs={cs} keepalive_failed={} keepalive_total={} keepalive_retried={} \
             fresh_failed={} fresh_total={}",
            m.summary.failed,
            m.summary.total,
            m.summary.retried,
            fresh_summary.failed,
            fresh_summary.total
        );
        eprintln!("keep-alive client: {}", m.summary.one_line());
        eprintln!("fresh-connection client: {}", fresh_summary.one_line());
        // The two clients started at different instants: put A's power-on on each one's axis.
        let offset_ms =
            (fresh.header.start_unix_us as f64 - m.run.header.start_unix_us as f64) / 1000.0;
        let clients = [
            ("keep-alive", &m.run, m.fault_ms),
            ("fresh-connection", &fresh, m.fault_ms - offset_ms),
        ];
        for (client, run, fault_ms) in clients {
            let counted = |r: &&Record| {
                !r.outcome.is_ok() && (client != "fresh-connection" || r.t_ms >= warm_ms)
            };
            for r in run.records.iter().filter(counted) {
                eprintln!(
                    "failed {client} request (sent {:+.1} ms after A's power-on): {r:?}",
                    r.t_ms - fault_ms
                );
            }
        }
        if let Some(capture) = capture {
            capture.finish(&mut pair, cs, m.summary.failed + fresh_summary.failed > 0)?;
        }
        // No request in flight at the yield is lost: B keeps its copy of the VIP until its
        // lbd has answered them (a timeout is what losing one looks like).
        let timeouts = |s: &netns_tests::pair::load::Summary| {
            s.by_outcome.get("timeout").copied().unwrap_or(0)
        };
        verdict.check(timeouts(&m.summary) + timeouts(&fresh_summary) == 0, || {
            format!(
                "a request timed out at {cs} cs: keep-alive {:?}; fresh-connection {fresh_summary:?}",
                m.summary
            )
        });
        // Not even a new connection whose handshake straddles the MAC move (SYN answered by
        // B, the request sent to A after its GARP): A hands it to B for the hand-off window
        // (README, "Preemption, repeated").
        let failed = m.summary.failed + fresh_summary.failed;
        verdict.check(failed == 0, || {
            format!(
                "{failed} failed requests at {cs} cs (none allowed): \
                 keep-alive {:?}; fresh-connection {fresh_summary:?}",
                m.summary
            )
        });
        rows.push(m.row(
            id,
            "master returns and preempts (once its lbd is ready)",
            &cfg,
            Some(Duration::ZERO),
        ));
    }
    report::record(id, &rows)?;
    verdict.finish()
}

/// Two holders of the VIP during a preemption are allowed only as the yielding master's
/// residual copy: B, already backup (A is master and sent its GARP), keeps its copy for the
/// hand-off hold ([`HANDOFF_HOLD`]: A hands B's connections back to it meanwhile) and until
/// its lbd has answered the requests it has in flight, so their responses can leave the host
/// (doc/vrrpd-LIFECYCLE.md, "Preemption and in-flight requests", "The hand-off window").
/// B's lbd keeps its VIP listeners for the hold only, and closes them before it acks: two
/// holders while B's lbd still listens are allowed for the make-before-break moment (A adds
/// the VIP before the advert that makes B yield) and the hold, bounded by
/// [`ResidualCopy::BOTH_SERVING`]. The residual copy itself is bounded by
/// [`ResidualCopy::BOUND`] (the hold, and the test's requests take about a millisecond;
/// lbd's own bound is `drain_timeout_ms`). (`vrrpd status` can't tell: its snapshot is
/// refreshed every 100 ms.)
#[derive(Default)]
struct ResidualCopy {
    /// When two holders were first seen in the current run of polls.
    since: Option<Duration>,
    /// When two holders with B's lbd listening were first seen in the current run of polls.
    both_serving_since: Option<Duration>,
    longest: Duration,
    /// Polls that saw two holders.
    polls: usize,
}

impl ResidualCopy {
    const BOUND: Duration = HANDOFF_HOLD.saturating_add(Duration::from_millis(300));
    const BOTH_SERVING: Duration = HANDOFF_HOLD.saturating_add(Duration::from_millis(100));

    fn check(&mut self, pair: &PairTopology, vip: Ipv4Addr, now: Duration) -> anyhow::Result<()> {
        if pair.holders(vip)?.len() < 2 {
            self.since = None;
            self.both_serving_since = None;
            return Ok(());
        }
        self.polls += 1;
        let since = *self.since.get_or_insert(now);
        self.longest = self.longest.max(now - since);
        let bound = margin(Self::BOUND);
        if now - since > bound {
            bail!(
                "{vip} has had two holders for {:?}: more than B's copy for its requests in \
                 flight (bound {bound:?})",
                now - since
            );
        }
        if !listening(pair, NodeId::B, vip)? {
            self.both_serving_since = None;
            return Ok(());
        }
        let serving_since = *self.both_serving_since.get_or_insert(now);
        let bound = margin(Self::BOTH_SERVING);
        if now - serving_since > bound {
            bail!(
                "{vip} has had two holders for {:?} with B's lbd still listening: two masters \
                 (bound {bound:?})",
                now - serving_since
            );
        }
        Ok(())
    }
}

/// With `PREEMPT_PCAP_DIR` set (`scripts/preempt-loop.sh --pcap`): dumpcap on the client's
/// LAN interface (TCP to port 80 and ARP, link-layer headers kept, so each packet shows
/// which node's MAC it went to or came from) while the scenario runs; the file is kept in
/// that directory only when a request failed, to find which packet lost it.
struct ClientCapture {
    proc: netns_tests::ProcId,
    file: std::path::PathBuf,
    keep_dir: std::path::PathBuf,
}

impl ClientCapture {
    fn start(pair: &mut PairTopology) -> anyhow::Result<Option<Self>> {
        let Some(keep_dir) = std::env::var_os("PREEMPT_PCAP_DIR") else {
            return Ok(None);
        };
        let file = pair.lan.topo.dir().join("client.pcap");
        let ns = pair.lan.node(NodeId::Client).ns.clone();
        let out = file.to_string_lossy().into_owned();
        let args = [
            "-i",
            "eth0",
            "-q",
            "-s",
            "128",
            "-f",
            "tcp port 80 or arp",
            "-w",
            &out,
        ];
        let proc = pair
            .lan
            .topo
            .spawn(&ns, "dumpcap", std::path::Path::new("dumpcap"), &args)?;
        // dumpcap creates the file once it captures. (Not tcpdump: stopped, it dropped the
        // last third of the packets it had received, the preemption among them.)
        netns_tests::eventually(Duration::from_secs(3), Duration::from_millis(10), || {
            Ok(file.exists())
        })?;
        Ok(Some(Self {
            proc,
            file,
            keep_dir: keep_dir.into(),
        }))
    }

    fn finish(self, pair: &mut PairTopology, cs: u16, keep: bool) -> anyhow::Result<()> {
        // Wait until the file has stopped growing (the clients are done).
        let mut size = 0;
        netns_tests::eventually(Duration::from_secs(3), Duration::from_millis(100), || {
            let now = std::fs::metadata(&self.file)?.len();
            let settled = now == size;
            size = now;
            Ok(settled)
        })?;
        pair.lan
            .topo
            .signal(self.proc, netns_tests::Signal::SIGTERM)?;
        pair.lan.topo.wait_exit(self.proc, Duration::from_secs(3))?;
        if keep {
            let name = format!(
                "preempt-{cs}cs-{}.pcapng",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis()
            );
            let kept = self.keep_dir.join(name);
            std::fs::copy(&self.file, &kept)?;
            eprintln!("client capture kept: {}", kept.display());
        }
        Ok(())
    }
}
