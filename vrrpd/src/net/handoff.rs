//! The hand-off window: after taking over from a router that is still up, send it the
//! TCP packets of connections this host doesn't know.
//!
//! Why: the MAC of the VIP moves with the new master's gratuitous ARP, but clients don't
//! all move at the same instant as the connections they have open. A client whose SYN
//! reached the old master just before the ARP update sends the rest of its handshake and
//! its request to the new one, which knows no such connection and answers with a reset;
//! so does a client that sends its next request on a keep-alive connection to the old
//! master. The old master is still up and (for the hand-off window) keeps its copy of the
//! VIP and its listeners, so the new master hands it those packets instead of resetting
//! them.
//!
//! How: one nftables table per instance. In prerouting, a TCP packet to a VIP on the
//! instance's interface that is not a SYN and that conntrack has seen no reply for (`ct
//! state new`: nothing on this host ever answered its connection) is duplicated to the old
//! master's address (`dup to`: the same IP packet, sent to that router's MAC) and dropped
//! here. Connections opened here start with a SYN and are answered, so they never match.
//! The VIPs are elements of a set with a timeout, so the kernel ends the window on time;
//! the table itself is removed a little later (conntrack runs in the namespace only while
//! a table that needs it exists). A TCP connection conntrack first sees mid-stream is
//! tracked as new as long as the kernel's default `nf_conntrack_tcp_loose = 1` holds; with
//! it off such packets are `invalid`, don't match, and get the reset they would have got
//! without this.
//!
//! The table is loaded with the `nft` program (package `nftables`) in one transaction, as
//! keepalived does with its own nftables rules through libnftnl. There is no well-kept Rust
//! crate for nftables over netlink, and the two calls per handover are off the
//! advert path.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The longest `nft` may take; a takeover doesn't wait longer for its hand-off table.
pub const NFT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("interface name {0:?} can't be used in an nftables rule")]
    InterfaceName(String),
    #[error("cannot run nft: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nft did not finish within {} ms", NFT_TIMEOUT.as_millis())]
    Timeout,
    #[error("nft failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

/// One instance's hand-off tables: the new master's forwarding table, and the table an old
/// master that can't serve (a fault) answers the forwarded packets with resets from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffTable {
    name: String,
    resets_name: String,
    interface: String,
}

impl HandoffTable {
    /// The table of instance `vrid` on `interface` (index `ifindex`: table names are
    /// unique per interface and VRID within the namespace).
    pub fn new(interface: &str, ifindex: u32, vrid: u8) -> Result<HandoffTable, HandoffError> {
        if !is_plain_interface_name(interface) {
            return Err(HandoffError::InterfaceName(interface.to_string()));
        }
        Ok(HandoffTable {
            name: format!("lbpair_handoff_{ifindex}_{vrid}"),
            resets_name: format!("lbpair_resets_{ifindex}_{vrid}"),
            interface: interface.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ruleset that forwards strays for `vips` to `to` for `window`, replacing any
    /// earlier table of the same name in the same transaction. The window is kept by the
    /// kernel (the VIPs are set elements with a timeout), not by a second `nft` run, so it
    /// ends exactly `window` after the transaction, however late the removal runs.
    pub fn ruleset(&self, vips: &[Ipv4Addr], to: Ipv4Addr, window: Duration) -> String {
        let ms = window.as_millis();
        let elements: Vec<String> = vips.iter().map(|v| format!("{v} timeout {ms}ms")).collect();
        format!(
            "table ip {name}\n\
             delete table ip {name}\n\
             table ip {name} {{\n\
             \tset vips {{\n\
             \t\ttype ipv4_addr; flags timeout;\n\
             \t\telements = {{ {elements} }}\n\
             \t}}\n\
             \tchain strays {{\n\
             \t\ttype filter hook prerouting priority mangle; policy accept;\n\
             \t\tiifname \"{ifname}\" ip daddr @vips tcp flags & syn == 0 ct state new \
             counter dup to {to} device \"{ifname}\" drop\n\
             \t}}\n\
             }}\n",
            name = self.name,
            ifname = self.interface,
            elements = elements.join(", "),
        )
    }

    /// Load the table: from now on, for `window`, strays for `vips` go to `to`.
    pub async fn install(
        &self,
        vips: &[Ipv4Addr],
        to: Ipv4Addr,
        window: Duration,
    ) -> Result<(), HandoffError> {
        run_nft(&self.ruleset(vips, to, window)).await
    }

    /// Remove the forwarding table (absent already is fine).
    pub async fn remove(&self) -> Result<(), HandoffError> {
        run_nft(&delete_script(&self.name)).await
    }

    /// The ruleset that answers every TCP packet to `vips` with a reset: what an old master
    /// that can't serve (its lbd is dead or hung) loads while it keeps the VIPs for the
    /// hold, so the packets a new master forwards to it get the reset they would have got
    /// there, rather than vanish (or, for a hung lbd, wait on sockets nobody reads).
    pub fn resets_ruleset(&self, vips: &[Ipv4Addr]) -> String {
        let vips: Vec<String> = vips.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "table ip {name}\n\
             delete table ip {name}\n\
             table ip {name} {{\n\
             \tchain resets {{\n\
             \t\ttype filter hook input priority filter; policy accept;\n\
             \t\tip daddr {{ {vips} }} meta l4proto tcp counter reject with tcp reset\n\
             \t}}\n\
             }}\n",
            name = self.resets_name,
            vips = vips.join(", "),
        )
    }

    pub async fn install_resets(&self, vips: &[Ipv4Addr]) -> Result<(), HandoffError> {
        run_nft(&self.resets_ruleset(vips)).await
    }

    /// Remove the resets table (absent already is fine).
    pub async fn remove_resets(&self) -> Result<(), HandoffError> {
        run_nft(&delete_script(&self.resets_name)).await
    }
}

/// Delete table `name` whether or not it exists (declaring it first makes the delete
/// succeed either way, in one transaction).
fn delete_script(name: &str) -> String {
    format!("table ip {name}\ndelete table ip {name}\n")
}

/// Letters, digits and `.-_` only: nothing that could end the quoted name in a rule.
fn is_plain_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Run `nft -f -` with `script` on its standard input, bounded by [`NFT_TIMEOUT`].
async fn run_nft(script: &str) -> Result<(), HandoffError> {
    let run = async {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(HandoffError::Spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(HandoffError::Spawn)?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(HandoffError::Spawn)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HandoffError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    };
    tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| HandoffError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_the_interface_vips_window_and_old_master() {
        let t = HandoffTable::new("veth-a", 7, 51).expect("plain name");
        let rules = t.ruleset(
            &[Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 101)],
            Ipv4Addr::new(10, 0, 0, 2),
            Duration::from_millis(200),
        );
        assert!(rules
            .starts_with("table ip lbpair_handoff_7_51\ndelete table ip lbpair_handoff_7_51\n"));
        assert!(rules.contains("elements = { 10.0.0.100 timeout 200ms, 10.0.0.101 timeout 200ms }"));
        assert!(rules.contains(
            "iifname \"veth-a\" ip daddr @vips tcp flags & syn == 0 \
             ct state new counter dup to 10.0.0.2 device \"veth-a\" drop"
        ));
    }

    #[test]
    fn the_resets_ruleset_resets_tcp_to_the_vips_on_input() {
        let t = HandoffTable::new("eth0", 3, 9).expect("plain name");
        let rules = t.resets_ruleset(&[Ipv4Addr::new(10, 0, 0, 100)]);
        assert!(
            rules.starts_with("table ip lbpair_resets_3_9\ndelete table ip lbpair_resets_3_9\n")
        );
        assert!(rules.contains("type filter hook input priority filter;"));
        assert!(rules
            .contains("ip daddr { 10.0.0.100 } meta l4proto tcp counter reject with tcp reset"));
    }

    #[test]
    fn interface_names_that_could_break_the_rule_are_refused() {
        for bad in [
            "",
            "eth0\"",
            "a b",
            "eth0;x",
            "x\n",
            "averyveryverylongname",
        ] {
            assert!(
                matches!(
                    HandoffTable::new(bad, 1, 1),
                    Err(HandoffError::InterfaceName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(HandoffTable::new("eth0.100", 1, 1).is_ok());
    }
}
