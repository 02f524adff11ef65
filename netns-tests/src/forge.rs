//! A hostile host on the LAN: the `forge-vrrp` binary run in the client's namespace, sending
//! forged adverts with any source address (the scenarios are in `tests/it/vrrp_hostile.rs`).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::lan::{Lan, NodeId};
use crate::pair::workspace_bin;
use crate::topology::ProcId;

/// What to forge and how often.
#[derive(Debug, Clone)]
pub struct Forgery {
    /// IPv4 source written into the packets (spoofed at will).
    pub src: Ipv4Addr,
    /// Every advert goes to each of these (224.0.0.18 or unicast addresses).
    pub dsts: Vec<Ipv4Addr>,
    pub vrid: u8,
    pub priority: u8,
    pub interval_cs: u16,
    pub vips: Vec<Ipv4Addr>,
    /// How many adverts (to each destination), at most.
    pub count: u64,
    /// Adverts per second; the first goes at once.
    pub rate: u64,
}

impl Forgery {
    fn args(&self) -> Vec<String> {
        let list = |a: &[Ipv4Addr]| {
            a.iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        vec![
            format!("src={}", self.src),
            format!("dst={}", list(&self.dsts)),
            format!("vrid={}", self.vrid),
            format!("priority={}", self.priority),
            format!("interval={}", self.interval_cs),
            format!("vips={}", list(&self.vips)),
            format!("count={}", self.count),
            format!("rate={}", self.rate),
        ]
    }

    /// How long sending takes at `rate`.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.count.saturating_sub(1) as f64 / self.rate.max(1) as f64)
    }
}

impl Lan {
    /// Starts `forge-vrrp` in the client's namespace; it exits by itself when done.
    pub fn start_forger(&mut self, f: &Forgery) -> Result<ProcId> {
        let bin = workspace_bin("forge-vrrp", "FORGE_VRRP_BIN")?;
        let ns = self.node(NodeId::Client).ns.clone();
        let args = f.args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.topo.spawn(&ns, "forge-vrrp", &bin, &args)
    }

    /// Sends `f` and waits until the forger is done; returns its report line.
    pub fn forge(&mut self, f: &Forgery) -> Result<String> {
        let proc = self.start_forger(f)?;
        self.await_forger(proc, f)
    }

    /// Waits for a forger started with [`Lan::start_forger`]; returns its report line.
    pub fn await_forger(&mut self, proc: ProcId, f: &Forgery) -> Result<String> {
        let status = self
            .topo
            .wait_exit(proc, f.duration() + Duration::from_secs(10))?;
        let log = self.topo.log(proc).unwrap_or_default();
        if !status.success() {
            bail!("forge-vrrp failed ({status}): {log}");
        }
        let report = log.lines().last().unwrap_or_default().to_owned();
        if !report.starts_with("forge-vrrp: sent") {
            return Err(anyhow!("forge-vrrp said nothing useful: {log}"));
        }
        eprintln!("{report}");
        Ok(report)
    }
}
