//! Measures the failover gap a client sees: the time from a fault on the master until the
//! VIP answers from the new master, for vrrpd (and keepalived, in the same run, for
//! comparison), at several advert intervals, median of N rounds.
//!
//! Each round builds a fresh [`Lan`]: a tiny TCP server on each node answers every
//! connection with the node's name, and a probe in the client namespace connects to the VIP
//! every 10 ms (10 ms connect/read timeouts), logging wall-clock timestamps. The fault is
//! either "node lost" (the daemon is SIGKILLed and the master's link goes down, as in the
//! keepalived reference figures) or SIGTERM. The gap is the first answer from B after the
//! fault, minus the fault's timestamp; both are `SystemTime` because they come from two
//! processes (one per namespace).
//!
//! The binary re-executes itself inside namespaces for the `serve` and `probe` roles.
//! Usage: `measure-vrrp-failover [--rounds N] [--intervals 100,10] [--daemons vrrpd,keepalived]`.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use netns_tests::{master_down_interval, skew_time, Lan, NodeId, Signal, VrrpInstance};

const PORT: u16 = 8080;
const PROBE_EVERY: Duration = Duration::from_millis(10);
const PRIO_A: u8 = 200;
const PRIO_B: u8 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Vrrpd,
    Keepalived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    NodeLost,
    Sigterm,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::NodeLost => "node lost (kill -9 + link down)",
            Fault::Sigterm => "SIGTERM",
        }
    }

    /// keepalived's figures measured earlier on this kind of machine (2-core VM, kernel 6.18).
    fn reference_ms(self, interval_cs: u16) -> Option<&'static str> {
        match (self, interval_cs) {
            (Fault::NodeLost, 100) => Some("3150"),
            (Fault::NodeLost, 10) => Some("310-350"),
            (Fault::Sigterm, 100) => Some("610"),
            (Fault::Sigterm, 10) => Some("60"),
            _ => None,
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("probe") => probe(&args[1..]),
        _ => measure(&args),
    };
    if let Err(e) = result {
        eprintln!("measure-vrrp-failover: {e:#}");
        std::process::exit(1);
    }
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// `serve NAME`: answer every connection on 0.0.0.0:PORT with `NAME\n`.
fn serve(args: &[String]) -> Result<()> {
    let name = args.first().ok_or_else(|| anyhow!("serve NAME"))?;
    let listener = TcpListener::bind(("0.0.0.0", PORT)).context("bind")?;
    loop {
        // A failed accept or write only loses that one probe.
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.write_all(format!("{name}\n").as_bytes());
            }
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// `probe VIP UNTIL_NAME MAX_MS`: connect every 10 ms; print `micros name` per answer and
/// `micros -` per failure; stop after the first answer from UNTIL_NAME (plus a few more,
/// to show it's stable) or after MAX_MS.
fn probe(args: &[String]) -> Result<()> {
    let [vip, until, max_ms] = args else {
        bail!("probe VIP UNTIL_NAME MAX_MS");
    };
    let vip: Ipv4Addr = vip.parse().context("VIP")?;
    let max = Duration::from_millis(max_ms.parse().context("MAX_MS")?);
    let addr = SocketAddr::from((vip, PORT));
    let start = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut after_until = 0;
    let mut next = start;
    while start.elapsed() < max && after_until < 5 {
        let answer = attempt(addr);
        let line = match &answer {
            Some(name) => format!("{} {name}\n", now_us()),
            None => format!("{} -\n", now_us()),
        };
        out.write_all(line.as_bytes())?;
        if answer.as_deref() == Some(until.as_str()) {
            after_until += 1;
        }
        next += PROBE_EVERY;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out.flush()?;
    Ok(())
}

fn attempt(addr: SocketAddr) -> Option<String> {
    let timeout = Duration::from_millis(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?.trim().to_owned();
    (!text.is_empty()).then_some(text)
}

struct Options {
    rounds: usize,
    intervals: Vec<u16>,
    daemons: Vec<Daemon>,
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        rounds: 3,
        intervals: vec![100, 10],
        daemons: vec![Daemon::Vrrpd, Daemon::Keepalived],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--rounds" => o.rounds = value.parse().context("--rounds")?,
            "--intervals" => {
                o.intervals = value
                    .split(',')
                    .map(|v| v.trim().parse::<u16>().context("--intervals"))
                    .collect::<Result<_>>()?
            }
            "--daemons" => {
                o.daemons = value
                    .split(',')
                    .map(|d| match d.trim() {
                        "vrrpd" => Ok(Daemon::Vrrpd),
                        "keepalived" => Ok(Daemon::Keepalived),
                        other => Err(anyhow!("unknown daemon {other}")),
                    })
                    .collect::<Result<_>>()?
            }
            other => bail!(
                "unknown option {other}; usage: [--rounds N] [--intervals 100,10] \
                 [--daemons vrrpd,keepalived]"
            ),
        }
    }
    if o.rounds == 0 || o.intervals.iter().any(|&i| i == 0 || i > 4095) {
        bail!("--rounds must be > 0 and intervals in 1..=4095 cs");
    }
    Ok(o)
}

fn measure(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let faults = [Fault::NodeLost, Fault::Sigterm];
    // (fault, interval, daemon) -> gaps in ms
    let mut results: Vec<(Fault, u16, Daemon, Vec<Option<u64>>)> = Vec::new();
    for &fault in &faults {
        for &interval in &opts.intervals {
            let mut per: Vec<(Daemon, Vec<Option<u64>>)> =
                opts.daemons.iter().map(|&d| (d, Vec::new())).collect();
            // Interleave the daemons round by round, so drift in the machine's load hits
            // both alike.
            for round in 0..opts.rounds {
                for (daemon, gaps) in &mut per {
                    let gap = match one_round(*daemon, fault, interval) {
                        Ok(ms) => Some(ms),
                        Err(e) => {
                            eprintln!("{daemon:?} {fault:?} {interval} cs round {round}: {e:#}");
                            None
                        }
                    };
                    eprintln!(
                        "{daemon:?} {} at {interval} cs, round {}: {}",
                        fault.describe(),
                        round + 1,
                        gap.map_or("failed".into(), |g| format!("{g} ms"))
                    );
                    gaps.push(gap);
                }
            }
            for (daemon, gaps) in per {
                results.push((fault, interval, daemon, gaps));
            }
        }
    }
    print_table(&opts, &results);
    Ok(())
}

fn print_table(opts: &Options, results: &[(Fault, u16, Daemon, Vec<Option<u64>>)]) {
    println!(
        "\nFailover gap seen by a client probing every 10 ms: fault -> first answer from the new \
         master.\nMedian of {} rounds, in ms (each round in brackets).\n",
        opts.rounds
    );
    let mut header = "| failover | advert interval |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for d in &opts.daemons {
        header.push_str(&format!(" {d:?} (this run) |").to_ascii_lowercase());
        rule.push_str("---|");
    }
    header.push_str(" keepalived reference |");
    rule.push_str("---|");
    println!("{header}\n{rule}");
    let mut rows: Vec<(Fault, u16)> = Vec::new();
    for (f, i, _, _) in results {
        if !rows.contains(&(*f, *i)) {
            rows.push((*f, *i));
        }
    }
    for (fault, interval) in rows {
        let mut row = format!("| {} | {} cs |", fault.describe(), interval);
        for d in &opts.daemons {
            let cell = results
                .iter()
                .find(|(f, i, dd, _)| *f == fault && *i == interval && dd == d)
                .map(|(_, _, _, gaps)| summarize(gaps))
                .unwrap_or_default();
            row.push_str(&format!(" {cell} |"));
        }
        row.push_str(&format!(
            " {} |",
            fault.reference_ms(interval).unwrap_or("-")
        ));
        println!("{row}");
    }
    println!();
    for &interval in &opts.intervals {
        println!(
            "At {interval} cs, B (priority {PRIO_B}) has Master_Down_Interval {:?} and Skew_Time \
             {:?}: the gap the protocol implies for the two faults.",
            master_down_interval(PRIO_B, interval),
            skew_time(PRIO_B, interval)
        );
    }
}

fn summarize(gaps: &[Option<u64>]) -> String {
    let mut ok: Vec<u64> = gaps.iter().flatten().copied().collect();
    let each: Vec<String> = gaps
        .iter()
        .map(|g| g.map_or("fail".into(), |v| v.to_string()))
        .collect();
    if ok.is_empty() {
        return format!("failed [{}]", each.join(" "));
    }
    ok.sort_unstable();
    format!("{} [{}]", ok[ok.len() / 2], each.join(" "))
}

fn one_round(daemon: Daemon, fault: Fault, interval_cs: u16) -> Result<u64> {
    let mut lan = Lan::new("measure")?;
    lan.topo.set_dump_logs(false);
    lan.topo
        .keep_dir(std::env::var_os("MEASURE_KEEP_LOGS").is_some());
    // Not current_exe(): a rebuild during the run replaces the file, and the path would
    // then name the new binary or nothing. /proc/PID/exe stays bound to the running one.
    let me = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    let vip = lan.vip(0);
    let ns_a = lan.node(NodeId::A).ns.clone();
    let ns_b = lan.node(NodeId::B).ns.clone();
    let serve_a = lan.topo.spawn(&ns_a, "serve-A", &me, &["serve", "A"])?;
    lan.topo.spawn(&ns_b, "serve-B", &me, &["serve", "B"])?;
    let inst = VrrpInstance::new("web", 51, PRIO_A, interval_cs, &[vip]);
    let b_inst = inst.with_priority(PRIO_B);
    let a_proc = match daemon {
        Daemon::Vrrpd => {
            let a = lan.start_vrrpd(NodeId::A, [&inst])?;
            let b = lan.start_vrrpd(NodeId::B, [&b_inst])?;
            let startup = master_down_interval(PRIO_A, interval_cs) * 2 + Duration::from_secs(3);
            lan.await_sole_holder(vip, NodeId::A, startup)?;
            lan.await_state(&b, "web", "backup", startup)?;
            a.proc
        }
        Daemon::Keepalived => {
            let a = lan.start_keepalived(NodeId::A, [&inst])?;
            let _b = lan.start_keepalived(NodeId::B, [&b_inst])?;
            let startup = master_down_interval(PRIO_A, interval_cs) * 2 + Duration::from_secs(3);
            lan.await_sole_holder(vip, NodeId::A, startup)?;
            a.proc
        }
    };
    // Let B see a few adverts, so it's a settled backup.
    lan.assert_stays_sole_holder(
        vip,
        NodeId::A,
        Duration::from_millis(u64::from(interval_cs) * 30),
    )?;

    let max = master_down_interval(PRIO_B, interval_cs) * 3 + Duration::from_secs(3);
    let client_ns = lan.node(NodeId::Client).ns.clone();
    let probe = lan.topo.spawn(
        &client_ns,
        "probe",
        &me,
        &["probe", &vip.to_string(), "B", &max.as_millis().to_string()],
    )?;
    // The probe must be getting answers from A before the fault, or the gap means nothing.
    netns_tests::eventually(Duration::from_secs(10), Duration::from_millis(10), || {
        Ok(lan.topo.log(probe)?.lines().any(|l| l.ends_with(" A")))
    })
    .with_context(|| {
        let logs: Vec<String> = [serve_a, probe]
            .iter()
            .map(|&id| lan.topo.log(id).unwrap_or_else(|e| format!("<{e:#}>")))
            .collect();
        format!(
            "the probe never reached A; serve-A log: {:?}; probe log: {:?}",
            logs[0], logs[1]
        )
    })?;

    let t0 = now_us();
    match (daemon, fault) {
        (_, Fault::Sigterm) => lan.topo.signal(a_proc, Signal::SIGTERM)?,
        (Daemon::Vrrpd, Fault::NodeLost) => {
            lan.topo.signal(a_proc, Signal::SIGKILL)?;
            lan.set_link(NodeId::A, false)?;
        }
        (Daemon::Keepalived, Fault::NodeLost) => {
            lan.topo.signal_group(a_proc, Signal::SIGKILL)?;
            lan.set_link(NodeId::A, false)?;
        }
    }
    lan.topo.wait_exit(probe, max + Duration::from_secs(2))?;
    let log = lan.topo.log(probe)?;
    let first_b = log
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| *name == "B")
        .filter_map(|(t, _)| t.parse::<u128>().ok())
        .find(|&t| t >= t0)
        .ok_or_else(|| anyhow!("B never answered within {max:?}"))?;
    u64::try_from((first_b - t0) / 1000).map_err(|_| anyhow!("gap out of range"))
}
