//! Capturing VRRP adverts with tshark, so the wire format is judged by an independent
//! decoder rather than by our own parser.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::lan::LAN_IF;

/// One advert as tshark decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedAdvert {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub version: u8,
    pub vrid: u8,
    pub priority: u8,
    pub interval_cs: u16,
    pub addr_count: u8,
    /// tshark's verdict on the checksum ("Good" when verified correct).
    pub checksum_status: String,
}

impl CapturedAdvert {
    /// Whether tshark verified the checksum.
    pub fn checksum_good(&self) -> bool {
        // tshark prints the enum as a number with -T fields: 1 = good, 0 = bad, 2 = unverified.
        self.checksum_status == "1" || self.checksum_status.eq_ignore_ascii_case("good")
    }
}

const FIELDS: [&str; 9] = [
    "ip.src",
    "ip.dst",
    "ip.ttl",
    "vrrp.version",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.short_adver_int",
    "vrrp.addr_count",
    "vrrp.checksum.status",
];

/// Captures up to `count` adverts (optionally only from `from`) on the namespace's LAN
/// interface, for at most `seconds` (tshark's own autostop, so this always returns).
pub fn capture_adverts(
    ns: &str,
    from: Option<Ipv4Addr>,
    count: u32,
    seconds: u32,
) -> Result<Vec<CapturedAdvert>> {
    cmd::require("tshark")?;
    let filter = match from {
        Some(src) => format!("ip proto 112 and src host {src}"),
        None => "ip proto 112".to_owned(),
    };
    let count = count.to_string();
    let duration = format!("duration:{seconds}");
    let mut args = vec![
        "-i",
        LAN_IF,
        "-n",
        "-l",
        "-c",
        &count,
        "-a",
        &duration,
        "-f",
        &filter,
        "-T",
        "fields",
        "-E",
        "separator=,",
    ];
    for f in FIELDS {
        args.push("-e");
        args.push(f);
    }
    let out = cmd::run_in(ns, "tshark", &args).context("tshark capture")?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// The arrival times (seconds from the capture's first packet) of up to `count` adverts
/// from `from` on the namespace's LAN interface, for at most `seconds`: how regular a
/// master's adverts are, e.g. under a flood from another host (the filter runs in the
/// kernel, so the flood doesn't reach tshark).
pub fn capture_advert_times(
    ns: &str,
    from: Ipv4Addr,
    count: u32,
    seconds: u32,
) -> Result<Vec<f64>> {
    cmd::require("tshark")?;
    let filter = format!("ip proto 112 and src host {from}");
    let count = count.to_string();
    let duration = format!("duration:{seconds}");
    let args = [
        "-i",
        LAN_IF,
        "-n",
        "-l",
        "-c",
        &count,
        "-a",
        &duration,
        "-f",
        &filter,
        "-T",
        "fields",
        "-e",
        "frame.time_relative",
    ];
    let out = cmd::run_in(ns, "tshark", &args).context("tshark capture")?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<f64>()
                .with_context(|| format!("bad frame.time_relative {l:?}"))
        })
        .collect()
}

fn parse_line(line: &str) -> Result<CapturedAdvert> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != FIELDS.len() {
        bail!("unexpected tshark line {line:?}");
    }
    let bad = |what: &str| anyhow::anyhow!("bad {what} in tshark line {line:?}");
    Ok(CapturedAdvert {
        src: f[0].parse().map_err(|_| bad("ip.src"))?,
        dst: f[1].parse().map_err(|_| bad("ip.dst"))?,
        ttl: f[2].parse().map_err(|_| bad("ip.ttl"))?,
        version: f[3].parse().map_err(|_| bad("vrrp.version"))?,
        vrid: f[4].parse().map_err(|_| bad("vrid"))?,
        priority: f[5].parse().map_err(|_| bad("prio"))?,
        interval_cs: f[6].parse().map_err(|_| bad("interval"))?,
        addr_count: f[7].parse().map_err(|_| bad("addr_count"))?,
        checksum_status: f[8].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_tshark_line() {
        let a = parse_line("10.77.3.1,224.0.0.18,255,3,51,200,10,1,1").expect("valid line");
        assert_eq!(a.version, 3);
        assert_eq!(a.priority, 200);
        assert_eq!(a.interval_cs, 10);
        assert!(a.checksum_good());
        assert!(parse_line("10.77.3.1,3").is_err());
    }
}
