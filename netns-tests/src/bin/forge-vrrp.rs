//! A hostile host on the LAN: sends forged VRRPv3 adverts, built with the shared wire codec,
//! over a raw socket with a chosen IPv4 source (for `tests/it/vrrp_hostile.rs`).
//!
//! ```text
//! forge-vrrp src=10.77.1.10 dst=224.0.0.18[,10.77.1.2] vrid=51 priority=255 interval=4095 \
//!            vips=10.77.1.100 count=5 rate=1 [iface=eth0]
//! ```
//!
//! Sends `count` adverts to every `dst`, paced at `rate` per second (the first at once), and
//! stops after `count / rate + 5` seconds whatever happened. Prints what it sent. Run it
//! only inside a test namespace: it spoofs addresses.
#![allow(clippy::disallowed_types)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use shared::wire::ipv4;
use shared::wire::vrrp::{ChecksumMode, Repr};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

struct Spec {
    src: Ipv4Addr,
    dsts: Vec<Ipv4Addr>,
    vrid: u8,
    priority: u8,
    interval_cs: u16,
    vips: Vec<Ipv4Addr>,
    count: u64,
    rate: u64,
    iface: String,
}

fn addrs(s: &str) -> Result<Vec<Ipv4Addr>> {
    s.split(',')
        .map(|a| {
            a.parse()
                .with_context(|| format!("{a:?} is not an IPv4 address"))
        })
        .collect()
}

fn parse_args() -> Result<Spec> {
    let kv: HashMap<String, String> = std::env::args()
        .skip(1)
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("argument {a:?} is not key=value"))
        })
        .collect::<Result<_>>()?;
    let get = |k: &str| kv.get(k).ok_or_else(|| anyhow!("missing {k}="));
    let num = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .with_context(|| format!("{k}= is not a number"))
    };
    let spec = Spec {
        src: get("src")?.parse().context("src=")?,
        dsts: addrs(get("dst")?)?,
        vrid: u8::try_from(num("vrid")?)?,
        priority: u8::try_from(num("priority")?)?,
        interval_cs: u16::try_from(num("interval")?)?,
        vips: addrs(get("vips")?)?,
        count: num("count")?,
        rate: num("rate")?.max(1),
        iface: kv.get("iface").cloned().unwrap_or_else(|| "eth0".into()),
    };
    if spec.count == 0 {
        bail!("count=0 sends nothing");
    }
    Ok(spec)
}

fn main() -> Result<()> {
    let spec = parse_args()?;
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112)))?;
    sock.set_header_included_v4(true)?;
    sock.bind_device(Some(spec.iface.as_bytes()))?;
    let repr = Repr::advertisement(
        spec.vrid,
        spec.priority,
        spec.interval_cs,
        spec.vips.clone(),
    );
    let datagrams: Vec<(SockAddr, Vec<u8>)> = spec
        .dsts
        .iter()
        .map(|&dst| {
            let payload = repr.to_bytes(spec.src, dst, ChecksumMode::PseudoHeader)?;
            let datagram = ipv4::build_datagram(spec.src, dst, &payload)?;
            Ok((SockAddr::from(SocketAddrV4::new(dst, 0)), datagram))
        })
        .collect::<Result<_, shared::wire::Error>>()
        .map_err(|e| anyhow!("building the advert: {e}"))?;

    let start = Instant::now();
    let give_up = Duration::from_secs(spec.count / spec.rate + 5);
    let (mut sent, mut errors) = (0u64, 0u64);
    while sent < spec.count && start.elapsed() < give_up {
        // Adverts due by now at `rate` per second, the first one at once.
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * spec.rate as f64) as u64 + 1).min(spec.count);
        while sent < due {
            for (to, datagram) in &datagrams {
                if sock.send_to(datagram, to).is_err() {
                    errors += 1;
                }
            }
            sent += 1;
        }
        let next = Duration::from_secs_f64(sent as f64 / spec.rate as f64);
        let wait = next.saturating_sub(start.elapsed());
        std::thread::sleep(wait.clamp(Duration::from_micros(100), Duration::from_millis(100)));
    }
    println!(
        "forge-vrrp: sent {sent} x {} destinations in {:.3}s ({errors} send errors)",
        datagrams.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
