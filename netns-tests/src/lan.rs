//! [`Lan`]: the VRRP test network, two load-balancer nodes and a client on one bridge.
//!
//! ```text
//!   <pfx>-a  eth0 10.77.S.1  ──va─┐
//!   <pfx>-b  eth0 10.77.S.2  ──vb─┤ br0 (in <pfx>-br)
//!   <pfx>-c  eth0 10.77.S.10 ──vc─┘
//!   VIPs: 10.77.S.100, .101, ...
//! ```
//!
//! The bridge sits in its own namespace so the host's root namespace is never touched.
//! `S` is derived from the test process's PID only to make logs of different runs easier to
//! tell apart; the namespaces are isolated, so addresses can't clash anyway. MACs are fixed (`02:77:S:00:00:0N`) so a
//! neighbour entry can be checked against the node it should point at.
//!
//! Observations are read from the kernel (`ip addr`, `ip neigh`), not from the daemons:
//! the VIP being on an interface is the fact that matters to clients.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::cmd;
use crate::topology::Topology;
use crate::wait;

/// How often observations are polled: well under the smallest advert interval tested.
const POLL: Duration = Duration::from_millis(10);

/// The LAN interface name inside every node namespace.
pub const LAN_IF: &str = "eth0";

/// A namespace on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeId {
    A,
    B,
    Client,
}

impl NodeId {
    /// The two load-balancer nodes.
    pub const LB: [NodeId; 2] = [NodeId::A, NodeId::B];

    fn index(self) -> usize {
        match self {
            NodeId::A => 0,
            NodeId::B => 1,
            NodeId::Client => 2,
        }
    }

    fn role(self) -> &'static str {
        match self {
            NodeId::A => "a",
            NodeId::B => "b",
            NodeId::Client => "c",
        }
    }

    fn host(self) -> u8 {
        match self {
            NodeId::A => 1,
            NodeId::B => 2,
            NodeId::Client => 10,
        }
    }
}

/// One namespace on the LAN.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeId,
    pub ns: String,
    pub addr: Ipv4Addr,
    /// Lower-case `aa:bb:..` form, as `ip neigh` prints it.
    pub mac: String,
}

/// The topology of the module docs. Dropping it tears everything down.
pub struct Lan {
    pub topo: Topology,
    pub bridge_ns: String,
    subnet: u8,
    nodes: Vec<Node>,
    /// `global.log_level` of the vrrpd configs written from now on (default "debug"; a CPU
    /// measurement wants the production level).
    pub vrrpd_log_level: String,
}

impl Lan {
    /// Builds the LAN; `tag` names the log directory.
    pub fn new(tag: &str) -> Result<Self> {
        let mut topo = Topology::new(tag)?;
        let subnet = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
        let bridge_ns = topo.add_namespace("br")?;
        topo.add_bridge(&bridge_ns, "br0")?;
        let mut nodes = Vec::new();
        for id in [NodeId::A, NodeId::B, NodeId::Client] {
            let ns = topo.add_namespace(id.role())?;
            let mac = format!("02:77:{subnet:02x}:00:00:{:02x}", id.host());
            let port = format!("v{}", id.role());
            topo.add_veth(&bridge_ns, "br0", &port, &ns, LAN_IF, &mac)?;
            let addr = Ipv4Addr::new(10, 77, subnet, id.host());
            cmd::ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                LAN_IF,
            ])?;
            nodes.push(Node { id, ns, addr, mac });
        }
        Ok(Self {
            topo,
            bridge_ns,
            subnet,
            nodes,
            vrrpd_log_level: "debug".to_owned(),
        })
    }

    /// A node's namespace and addresses.
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// The `n`th VIP of this LAN: 10.77.S.(100 + n).
    pub fn vip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.subnet, 100u8.saturating_add(n))
    }

    /// Whether `addr` is configured on the node's LAN interface.
    pub fn has_addr(&self, id: NodeId, addr: Ipv4Addr) -> Result<bool> {
        let out = cmd::ip(&[
            "-n",
            &self.node(id).ns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            LAN_IF,
        ])?;
        Ok(addrs_in(&out).contains(&addr))
    }

    /// The load-balancer nodes that have `vip` on their LAN interface.
    pub fn vip_holders(&self, vip: Ipv4Addr) -> Result<Vec<NodeId>> {
        let mut holders = Vec::new();
        for id in NodeId::LB {
            if self.has_addr(id, vip)? {
                holders.push(id);
            }
        }
        Ok(holders)
    }

    /// Whether `id` is the only node holding `vip`.
    pub fn sole_holder(&self, vip: Ipv4Addr, id: NodeId) -> Result<bool> {
        Ok(self.vip_holders(vip)? == [id])
    }

    /// Waits (`timeout` × patience) until `id` alone holds `vip`; returns the time taken.
    pub fn await_sole_holder(
        &self,
        vip: Ipv4Addr,
        id: NodeId,
        timeout: Duration,
    ) -> Result<Duration> {
        wait::eventually(timeout, POLL, || self.sole_holder(vip, id))
            .map_err(|e| self.holder_error(vip, &format!("{id:?} alone should hold {vip}"), e))
    }

    /// Waits until `check` holds for `vip`, at most until `t0 + bound` (not scaled: the
    /// bound is what's being tested); returns the time from `t0`.
    pub fn await_since<F>(
        &self,
        vip: Ipv4Addr,
        what: &str,
        t0: Instant,
        bound: Duration,
        mut check: F,
    ) -> Result<Duration>
    where
        F: FnMut(&[NodeId]) -> bool,
    {
        wait::eventually_until(t0, t0 + bound, POLL, || Ok(check(&self.vip_holders(vip)?)))
            .map(|t| t - t0)
            .map_err(|e| self.holder_error(vip, &format!("{what} within {bound:?}"), e))
    }

    /// Checks at every poll for `duration` that `id` alone holds `vip`.
    pub fn assert_stays_sole_holder(
        &self,
        vip: Ipv4Addr,
        id: NodeId,
        duration: Duration,
    ) -> Result<()> {
        wait::always_for(duration, POLL, || self.sole_holder(vip, id)).map_err(|e| {
            self.holder_error(
                vip,
                &format!("{id:?} should keep {vip} alone for {duration:?}"),
                e,
            )
        })
    }

    fn holder_error(&self, vip: Ipv4Addr, what: &str, e: anyhow::Error) -> anyhow::Error {
        let now = match self.vip_holders(vip) {
            Ok(h) => format!("{h:?}"),
            Err(e) => format!("<{e:#}>"),
        };
        anyhow!("{what}: {e:#}; holders now: {now}")
    }

    /// The MAC in the client's neighbour entry for `ip`, if it has a usable one.
    pub fn client_neigh_mac(&self, ip: Ipv4Addr) -> Result<Option<String>> {
        let out = cmd::ip(&[
            "-n",
            &self.node(NodeId::Client).ns,
            "neigh",
            "show",
            &ip.to_string(),
            "dev",
            LAN_IF,
        ])?;
        Ok(neigh_mac(&out))
    }

    /// Which node the client's neighbour entry for `ip` points at.
    pub fn client_neigh_node(&self, ip: Ipv4Addr) -> Result<Option<NodeId>> {
        let mac = self.client_neigh_mac(ip)?;
        Ok(mac.and_then(|m| self.nodes.iter().find(|n| n.mac == m).map(|n| n.id)))
    }

    /// One ping from the client (1 s timeout); creates the client's neighbour entry.
    pub fn client_ping(&self, ip: Ipv4Addr) -> Result<bool> {
        cmd::require("ping")?;
        let mut command = std::process::Command::new("ip");
        command.args([
            "netns",
            "exec",
            &self.node(NodeId::Client).ns,
            "ping",
            "-n",
            "-q",
            "-c",
            "1",
            "-W",
            "1",
            &ip.to_string(),
        ]);
        Ok(cmd::output(&mut command)?.status.success())
    }

    /// Sets a node's LAN interface up or down (from inside the node, like a cable pull
    /// seen by the node: the carrier and the operstate both drop).
    pub fn set_link(&self, id: NodeId, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        cmd::ip(&["-n", &self.node(id).ns, "link", "set", LAN_IF, state])
            .with_context(|| format!("setting {id:?} {LAN_IF} {state}"))?;
        Ok(())
    }

    /// Sets the bridge-side port of a node up or down (the node sees its carrier go).
    pub fn set_port(&self, id: NodeId, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        let port = format!("v{}", id.role());
        cmd::ip(&["-n", &self.bridge_ns, "link", "set", &port, state])?;
        Ok(())
    }

    /// Finds the node whose namespace is `ns`.
    pub fn node_by_ns(&self, ns: &str) -> Result<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.ns == ns)
            .map(|n| n.id)
            .ok_or_else(|| anyhow!("no node in {ns}"))
    }
}

/// The IPv4 addresses in `ip -4 -o addr show` output.
fn addrs_in(out: &str) -> Vec<Ipv4Addr> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet")?;
            let cidr = words.next()?;
            cidr.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The `lladdr` of an `ip neigh show` line, unless the entry is FAILED/INCOMPLETE.
fn neigh_mac(out: &str) -> Option<String> {
    let line = out.lines().next()?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_addr_output() {
        let out = "2: eth0    inet 10.77.3.1/24 scope global eth0\\       valid_lft forever\n\
                   2: eth0    inet 10.77.3.100/24 scope global secondary eth0\\ valid_lft forever\n";
        assert_eq!(
            addrs_in(out),
            vec![Ipv4Addr::new(10, 77, 3, 1), Ipv4Addr::new(10, 77, 3, 100)]
        );
        assert!(addrs_in("").is_empty());
    }

    #[test]
    fn parses_neighbour_entries() {
        assert_eq!(
            neigh_mac("10.77.3.100 lladdr 02:77:03:00:00:01 REACHABLE\n").as_deref(),
            Some("02:77:03:00:00:01")
        );
        assert_eq!(neigh_mac("10.77.3.100 FAILED\n"), None);
        assert_eq!(neigh_mac(""), None);
    }
}
