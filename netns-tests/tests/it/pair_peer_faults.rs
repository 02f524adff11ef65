//! Faults on the peer link: loss and delay (`tc netem`) while state changes flow
//! must not lose converged state, and a partition of the peer link alone, while both nodes
//! keep creating state, heals to equal digests within 5 s.
//!
//! State is created on both sides: sticky learns through the VIP (A, the master) and
//! through B's `direct` listener (B serves it whatever its VRRP state), and operator drains
//! on both admins. Digests are lbd's `/status` "peer.digest" {count, hash}.
//!
//! Kernels without `sch_netem` (the Firecracker guests here) get nftables random drops and
//! a `tbf` queue instead (see `PairTopology::impair_peer_link`), and the lossy run also sends
//! the peer link through a `tcpdelay` relay in each namespace that adds 50 ms each way at
//! the byte-stream level (`SoftStateOpts::peer_delay_ms`); the figures say which ran, and the
//! run fails if the impairment dropped nothing.
#![allow(clippy::disallowed_types)]

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use netns_tests::cmd;
use netns_tests::pair::softstate::{
    in_netns, peer_addr, same_backend, RateLimitOpts, SoftStateOpts, StickyMode, PEER_IF,
    PEER_PORT, SESSION_COOKIE,
};
use netns_tests::pair::{PairConfig, PairTopology, BACKEND_PORT};
use netns_tests::{eventually, eventually_until, margin, NodeId};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const ADVERT_CS: u16 = 10;
const PEER_SETTLE: Duration = Duration::from_secs(20);
/// How long state changes flow over the impaired link.
const LOSSY_RUN: Duration = Duration::from_secs(5);
/// The issue's bound for a partition-and-heal run.
const HEAL_BOUND: Duration = Duration::from_secs(5);
/// One-way delay the lossy run adds on the peer link.
const DELAY_MS: u32 = 50;

fn pair(id: &str, peer_delay_ms: Option<u32>) -> Result<PairTopology> {
    let cfg = PairConfig {
        softstate: Some(SoftStateOpts {
            peer_delay_ms,
            ..SoftStateOpts::sticky(StickyMode::Learn)
        }),
        ..PairConfig::coupled(ADVERT_CS)
    };
    let pair = PairTopology::new(id, cfg)?;
    pair.await_past_startup_grace();
    pair.await_peer_steady(PEER_SETTLE)?;
    Ok(pair)
}

/// How long an operator drain on A takes to show on B (then undone on A): at least the
/// link's one-way delay.
fn drain_propagation(pair: &PairTopology) -> Result<Duration> {
    let be1 = backend(pair, 0);
    let t0 = Instant::now();
    pair.drain(NodeId::A, be1, true)?;
    let reached = eventually_until(
        t0,
        t0 + Duration::from_secs(10),
        Duration::from_millis(5),
        || {
            Ok(pair
                .drained(NodeId::B)?
                .iter()
                .any(|b| b.contains(&be1.to_string())))
        },
    );
    pair.drain(NodeId::A, be1, false)?;
    let at = reached.map_err(|e| anyhow::anyhow!("A's drain of {be1} never reached B: {e:#}"))?;
    Ok(at.saturating_duration_since(t0))
}

fn backend(pair: &PairTopology, n: usize) -> SocketAddrV4 {
    SocketAddrV4::new(pair.backends[n], BACKEND_PORT)
}

#[test]
fn loss_and_delay_on_the_peer_link_lose_no_converged_state() -> Result<()> {
    let pair = pair("f1-peer-netem", Some(DELAY_MS))?;
    let mut netem = String::new();
    for id in NodeId::LB {
        netem = pair.impair_peer_link(id, 20, 50)?;
    }
    // The relays are what the link goes through: the established connection's round trip
    // includes their delay.
    let one_way = drain_propagation(&pair)?;
    ensure!(
        one_way >= Duration::from_millis(u64::from(DELAY_MS)),
        "a drain reached B after {one_way:?}: the {DELAY_MS} ms relays are not in the path"
    );
    let t_load = Instant::now();
    // State changes on both sides while the link is lossy, for LOSSY_RUN: learns on A
    // (VIP) and on B (direct), and a drain/undrain of be3 on alternate admins per round.
    let be3 = backend(&pair, 2);
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    let mut round = 0usize;
    while t_load.elapsed() < LOSSY_RUN {
        on_a.extend(pair.pin_clients(
            pair.vip_target(),
            SESSION_COOKIE,
            20,
            Duration::from_secs(30),
        )?);
        on_b.extend(pair.pin_clients(
            pair.direct_target(NodeId::B),
            SESSION_COOKIE,
            5,
            Duration::from_secs(30),
        )?);
        let node = if round.is_multiple_of(2) {
            NodeId::A
        } else {
            NodeId::B
        };
        pair.drain(node, be3, round % 4 < 2)?;
        round += 1;
    }
    // Whatever the interleaving, the last word: be3 undrained, by B.
    pair.drain(NodeId::B, be3, false)?;
    let load_took = t_load.elapsed();
    let during = (pair.peer_view(NodeId::A)?, pair.peer_view(NodeId::B)?);
    let drops = pair.impaired_drops(NodeId::A)? + pair.impaired_drops(NodeId::B)?;
    ensure!(
        drops > 0,
        "the impairment dropped nothing: the run tested a clean link"
    );
    for id in NodeId::LB {
        pair.unimpair_peer_link(id)?;
    }
    let t0 = Instant::now();
    let learned = (on_a.len() + on_b.len()) as u64;
    let bound = Duration::from_secs(10);
    let (took, count) = pair.await_equal_digests(t0, t0 + margin(bound), learned)?;
    eprintln!(
        "{netem}, {DELAY_MS} ms each way through tcpdelay (a drain reached B in {one_way:?}), on both peer0 for {load_took:?} ({} learns on A, {} on B, {round} drain \
         changes, {drops} packets dropped): digests then A {:?} B {:?}; equal {took:?} after netem removed, {count} records",
        on_a.len(),
        on_b.len(),
        during.0.digest(),
        during.1.digest()
    );

    // Converged means usable: every client keeps its backend on either node, and neither
    // node has be3 drained.
    let mut all = on_a;
    all.extend(on_b);
    for id in NodeId::LB {
        let drained = pair.drained(id)?;
        ensure!(drained.is_empty(), "{id:?} has {drained:?} drained");
        let replay = pair.replay_clients(pair.direct_target(id), &all, Duration::from_secs(30))?;
        let same = same_backend(&all, &replay);
        eprintln!("{id:?}: {same}/{} clients on their backend", all.len());
        ensure!(
            same == all.len(),
            "{id:?}: only {same}/{} clients reached their backend after the netem run",
            all.len()
        );
    }
    Ok(())
}

/// Partitions the peer link (A's `peer0` down: B loses its carrier too) while both nodes
/// create state, heals it, and measures the time to equal digests. `until_dropped`: the
/// partition lasts until both lbds have given the connection up (their keepalive, 3 x
/// `ping_ms`), so the heal is a reconnect (RESUME or resync), not TCP retransmitting.
fn partition_and_heal(id: &str, until_dropped: bool) -> Result<()> {
    let pair = pair(id, None)?;
    let base = pair.peer_view(NodeId::A)?.count;
    let t_cut = Instant::now();
    pair.set_peer_link(NodeId::A, false)?;
    // Both sides keep creating state: A serves the VIP, B its direct listener.
    let (be2, be3) = (backend(&pair, 1), backend(&pair, 2));
    let on_a = pair.pin_clients(
        pair.vip_target(),
        SESSION_COOKIE,
        200,
        Duration::from_secs(30),
    )?;
    pair.drain(NodeId::A, be2, true)?;
    let on_b = pair.pin_clients(
        pair.direct_target(NodeId::B),
        SESSION_COOKIE,
        200,
        Duration::from_secs(30),
    )?;
    pair.drain(NodeId::B, be3, true)?;
    let (a, b) = (pair.peer_view(NodeId::A)?, pair.peer_view(NodeId::B)?);
    // The partition is real: neither side has the other's new state.
    ensure!(
        a.digest() != b.digest(),
        "digests equal during the partition: A {:?} B {:?}",
        a.digest(),
        b.digest()
    );
    if until_dropped {
        eventually(Duration::from_secs(15), Duration::from_millis(20), || {
            Ok(!pair.peer_view(NodeId::A)?.connected && !pair.peer_view(NodeId::B)?.connected)
        })
        .map_err(|e| anyhow::anyhow!("the lbds never noticed the cut peer link: {e:#}"))?;
    }
    let cut_for = t_cut.elapsed();
    let drained_a = pair.drained(NodeId::A)?;
    ensure!(
        drained_a == [be2.to_string()],
        "A drained {drained_a:?} during the partition (only {be2} expected)"
    );

    pair.set_peer_link(NodeId::A, true)?;
    let t0 = Instant::now();
    let learned = base + (on_a.len() + on_b.len()) as u64;
    // Measured up to twice the bound, so a miss is reported with its figure.
    let (took, count) = pair.await_equal_digests(t0, t0 + HEAL_BOUND * 2, learned)?;
    eprintln!(
        "peer link partitioned for {cut_for:?} (until dropped: {until_dropped}): A {:?}, B {:?} \
         ({} learns on A, {} on B); equal digests {took:?} after the heal (bound \
         {HEAL_BOUND:?}), {count} records",
        a.digest(),
        b.digest(),
        on_a.len(),
        on_b.len()
    );
    ensure!(
        took <= HEAL_BOUND,
        "digests equal only {took:?} after the heal (bound {HEAL_BOUND:?})"
    );
    // Both drains, made on different sides of the partition, hold on both nodes.
    let mut want = vec![be2.to_string(), be3.to_string()];
    want.sort();
    for id in NodeId::LB {
        eventually(Duration::from_secs(2), Duration::from_millis(20), || {
            Ok(pair.drained(id)? == want)
        })
        .map_err(|e| anyhow::anyhow!("{id:?} drained {:?}: {e:#}", pair.drained(id)))?;
    }
    Ok(())
}

#[test]
fn short_peer_link_partition_heals_to_equal_digests_within_5s() -> Result<()> {
    partition_and_heal("f2-peer-partition-short", false)
}

#[test]
fn long_peer_link_partition_heals_to_equal_digests_within_5s() -> Result<()> {
    partition_and_heal("f3-peer-partition-long", true)
}

// ---------------------------------------------------------------------------------------
// Secrecy: the link is encrypted and strangers cannot keep the pair from getting warm.

/// What the link carries in these runs: a learn-mode session cookie and an API key (a
/// `header:x-api-key` limiter's bucket key), both replicated.
fn secrets_pair(id: &str) -> Result<PairTopology> {
    let cfg = PairConfig {
        softstate: Some(SoftStateOpts {
            rate_limits: vec![RateLimitOpts {
                name: "api".into(),
                key: "header:x-api-key".into(),
                // Slow refill: the bucket stays below full (so replicated) for the whole run.
                rate: 0.01,
                burst: 100,
                routes: Vec::new(),
            }],
            ..SoftStateOpts::sticky(StickyMode::Learn)
        }),
        ..PairConfig::coupled(ADVERT_CS)
    };
    let pair = PairTopology::new(id, cfg)?;
    pair.await_past_startup_grace();
    pair.await_peer_steady(PEER_SETTLE)?;
    Ok(pair)
}

/// `tcpdump` on node `id`'s peer interface, writing everything on the peer port to a pcap.
/// A tcpdump of one node's peer link, written packet by packet (`-U`).
///
/// Stopping tcpdump loses whatever its ring buffer still holds (a CI run once wrote 8 of
/// the 13 packets its filter had taken, the resync among the lost). So `finish` first sends
/// a marker datagram over the same link from the other node and waits until the file holds
/// it: the kernel hands the interface's packets to tcpdump in order, so everything the link
/// carried before the marker is on disk by then.
struct Capture {
    child: Child,
    path: PathBuf,
    /// The other node's namespace (the marker's sender) and this node's peer address.
    marker_from: String,
    marker_to: SocketAddrV4,
}

/// The UDP port the end-of-capture marker goes to (nothing listens; the filter takes it).
const MARKER_PORT: u16 = 9;

impl Capture {
    fn start(pair: &PairTopology, id: NodeId, name: &str) -> Result<Capture> {
        cmd::require("tcpdump")?;
        let path = pair.lan.topo.dir().join(name);
        let log = std::fs::File::create(path.with_extension("log")).context("tcpdump log")?;
        let ns = pair.lan.node(id).ns.clone();
        let other = if id == NodeId::A {
            NodeId::B
        } else {
            NodeId::A
        };
        let marker_from = pair.lan.node(other).ns.clone();
        let marker_to = SocketAddrV4::new(peer_addr(&pair.lan, id), MARKER_PORT);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "tcpdump",
                "-i",
                PEER_IF,
                "-n",
                "-U",
                "--immediate-mode",
                "-s",
                "0",
            ])
            .arg("-w")
            .arg(&path)
            .arg(format!("tcp port {PEER_PORT} or udp port {MARKER_PORT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning tcpdump")?;
        // tcpdump writes the pcap header once it listens.
        eventually(Duration::from_secs(10), Duration::from_millis(20), || {
            Ok(std::fs::metadata(&path).is_ok_and(|m| m.len() >= 24))
        })
        .context("tcpdump never started capturing")?;
        Ok(Capture {
            child,
            path,
            marker_from,
            marker_to,
        })
    }

    /// Waits until the capture holds everything sent so far (see the type's doc), stops it
    /// and returns the pcap's bytes.
    fn finish(mut self) -> Result<Vec<u8>> {
        let marker = format!("END-OF-CAPTURE-{:016x}", random_u64());
        let to = self.marker_to;
        in_netns(&self.marker_from, || {
            let s = UdpSocket::bind("0.0.0.0:0").context("marker socket")?;
            s.send_to(marker.as_bytes(), to)
                .context("sending the marker")?;
            Ok(())
        })?;
        eventually(Duration::from_secs(10), Duration::from_millis(20), || {
            Ok(contains(&std::fs::read(&self.path)?, marker.as_bytes()))
        })
        .context("the end-of-capture marker never reached the pcap")?;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).context("stopping tcpdump")?;
        self.child.wait().context("waiting for tcpdump")?;
        let said = std::fs::read_to_string(self.path.with_extension("log")).unwrap_or_default();
        eprintln!("tcpdump: {}", said.trim());
        std::fs::read(&self.path).context("reading the capture")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A random u64 (std's per-process random hash keys; no rand dependency for this).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The payload of the first segment sent *to* the peer port that holds a HELLO (a dialer's
/// first message), decoded by tshark from the capture.
fn first_message(pcap: &std::path::Path) -> Result<Vec<u8>> {
    cmd::require("tshark")?;
    let filter = format!("tcp.dstport == {PEER_PORT} && tcp.len > 0");
    let path = pcap.display().to_string();
    let out = cmd::run(
        "tshark",
        [
            "-r",
            &path,
            "-Y",
            &filter,
            "-T",
            "fields",
            "-e",
            "tcp.payload",
        ],
    )?;
    for line in out.lines() {
        let hex: String = line.chars().filter(char::is_ascii_hexdigit).collect();
        // "LP", the frame version, kind 1 (HELLO).
        if hex.starts_with(&format!("4c50{:02x}01", shared::peer::frame::VERSION)) {
            return (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).context("tshark hex"))
                .collect();
        }
    }
    anyhow::bail!("no HELLO sent to port {PEER_PORT} in the capture")
}

/// `n` connections from namespace `ns` to `to`, silent except the first, which sends
/// `replay`. Returned open: the listener has to close them.
fn strangers(ns: &str, to: SocketAddrV4, n: usize, replay: &[u8]) -> Result<Vec<TcpStream>> {
    let replay = replay.to_vec();
    in_netns(ns, move || {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))
                .with_context(|| format!("stranger {i} to {to}"))?;
            if i == 0 {
                s.write_all(&replay).context("replaying")?;
            }
            out.push(s);
        }
        Ok(out)
    })
}

fn peer_port(pair: &PairTopology, id: NodeId) -> SocketAddrV4 {
    SocketAddrV4::new(peer_addr(&pair.lan, id), PEER_PORT)
}

fn rejected(pair: &PairTopology, id: NodeId, reason: &str) -> Result<u64> {
    let s = pair.lbd_status(id)?;
    Ok(s["peer"]["rejected"][reason].as_u64().unwrap_or(0))
}

#[test]
fn the_link_carries_no_cookie_or_api_key_in_clear_and_strangers_do_not_delay_warm() -> Result<()> {
    let pair = secrets_pair("f4-peer-encrypted")?;
    let tag = random_u64();
    let cookie = format!("SECRET-{tag:016x}");
    let api_key = format!("APIKEY-{:016x}", random_u64());
    let capture = Capture::start(&pair, NodeId::A, "peer-link.pcap")?;
    let base = pair.peer_view(NodeId::A)?.count;

    // (a) The secrets are replicated live (A serves the VIP) and again in a full resync
    // (B's lbd restarted), both on the captured link.
    let r = pair.client_request(
        pair.vip_target(),
        &[
            ("cookie", &format!("{SESSION_COOKIE}={cookie}")),
            ("x-api-key", &api_key),
        ],
    )?;
    ensure!(r.status == 200, "the client's request: {r:?}");
    let t0 = Instant::now();
    pair.await_equal_digests(t0, t0 + margin(Duration::from_secs(5)), base + 2)?;
    pair.b.lbd.power_off();
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        Ok(!pair.peer_view(NodeId::A)?.connected)
    })
    .context("A never noticed B's lbd gone")?;
    pair.b.lbd.power_on()?;
    let (a, b) = pair.await_peer_steady(PEER_SETTLE)?;
    for table in ["sticky", "rate_limit"] {
        ensure!(
            b.raw["entries"][table].as_u64().unwrap_or(0) >= 1,
            "B's resync brought no {table} entry: {b:?}"
        );
    }
    let pcap_path = capture.path.clone();
    let pcap = capture.finish()?;
    let header = [b'L', b'P', shared::peer::frame::VERSION];
    let frames = pcap.windows(3).filter(|w| *w == header).count();
    eprintln!(
        "captured {} bytes on A's peer0 ({frames} frame headers) while {cookie} and the API key \
         were replicated live and in B's resync ({} records)",
        pcap.len(),
        a.count
    );
    // The capture saw the link (so this test can fail): headers of many frames, and the
    // resync's volume.
    ensure!(frames >= 10, "the capture saw only {frames} peer frames");
    for (what, secret) in [
        ("cookie", cookie.as_bytes()),
        ("API key", api_key.as_bytes()),
    ] {
        ensure!(
            !contains(&pcap, secret),
            "the {what} crossed the peer link in cleartext"
        );
    }

    // (b) 8 strangers at each node's peer port, from the allowed address (the other node's
    // namespace), one replaying the captured first message, while B's lbd comes back: both
    // nodes still get warm within reconnect + handshake + 1 s.
    let replay = first_message(&pcap_path)?;
    let replays_before =
        rejected(&pair, NodeId::A, "replay")? + rejected(&pair, NodeId::B, "replay")?;
    pair.b.lbd.power_off();
    eventually(Duration::from_secs(10), Duration::from_millis(20), || {
        Ok(!pair.peer_view(NodeId::A)?.connected)
    })
    .context("A never noticed B's lbd gone")?;
    let ns_a = pair.lan.node(NodeId::A).ns.clone();
    let ns_b = pair.lan.node(NodeId::B).ns.clone();
    let at_a = strangers(&ns_b, peer_port(&pair, NodeId::A), 8, &replay)?;
    let t_on = Instant::now();
    pair.b.lbd.power_on()?;
    let mut at_b = Vec::new();
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(5),
        || match strangers(&ns_a, peer_port(&pair, NodeId::B), 8, &replay) {
            Ok(s) => {
                at_b = s;
                Ok(true)
            }
            Err(_) => Ok(false),
        },
    )
    .context("B's peer port never opened")?;
    // From the moment B listens (its strangers are in): reconnect_ms (500) + handshake + 1 s.
    let t_up = Instant::now();
    let bound = Duration::from_millis(500) + Duration::from_secs(1) + Duration::from_secs(1);
    let mut last = None;
    let took = eventually(margin(bound) * 3, Duration::from_millis(10), || {
        let (a, b) = (pair.peer_view(NodeId::A)?, pair.peer_view(NodeId::B)?);
        let ok = a.connected && b.connected && a.is_warm() && b.is_warm();
        last = Some((a, b));
        Ok(ok)
    })
    .map_err(|e| anyhow::anyhow!("never warm with strangers about: {last:?}: {e:#}"))?;
    let took = took.min(t_up.elapsed());
    eprintln!(
        "8 strangers at each peer port (one replaying a captured first message): both warm \
         {took:?} after B listened (bound {bound:?}), {:?} after B's lbd was started",
        t_on.elapsed()
    );
    ensure!(
        took <= margin(bound),
        "warm only {took:?} after B listened, with strangers about (bound {bound:?})"
    );
    // The strangers were refused: the replay at once or at its verification, the silent ones
    // after 1 s, and none got a byte.
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(
            rejected(&pair, NodeId::A, "replay")? + rejected(&pair, NodeId::B, "replay")?
                > replays_before
                || rejected(&pair, NodeId::B, "own_node_id")? > 0,
        )
    })
    .context("the replayed first message was not refused")?;
    for s in at_a.iter().chain(&at_b) {
        ensure!(
            got_nothing_and_closed(s)?,
            "a stranger got bytes or was left open"
        );
    }
    let count = |reason| -> Result<u64> {
        Ok(rejected(&pair, NodeId::A, reason)? + rejected(&pair, NodeId::B, reason)?)
    };
    eprintln!(
        "refused: replay {}, own_node_id {}, first_message_timeout {}",
        count("replay")? - replays_before,
        count("own_node_id")?,
        count("first_message_timeout")?
    );
    Ok(())
}

/// Whether `s` is closed by the other side without having received a byte (within 5 s).
fn got_nothing_and_closed(s: &TcpStream) -> Result<bool> {
    let mut s = s.try_clone()?;
    s.set_read_timeout(Some(margin(Duration::from_secs(5))))?;
    let mut buf = [0u8; 64];
    Ok(match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        // A reset (the listener closed with our replay unread) is a close too.
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    })
}

#[test]
fn a_silent_stranger_at_the_peer_port_gets_no_byte_and_is_closed_after_1s() -> Result<()> {
    let pair = pair("f5-peer-silent", None)?;
    let before = rejected(&pair, NodeId::A, "first_message_timeout")?;
    // From B's namespace: the address A allows.
    let to = peer_port(&pair, NodeId::A);
    let (got, closed_after) = in_netns(&pair.lan.node(NodeId::B).ns, move || {
        let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
        let t0 = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => return Err(anyhow::anyhow!("no close within 5 s: {e}")),
            }
        }
        Ok((got, t0.elapsed()))
    })?;
    eprintln!(
        "a silent connection from B's address: {} bytes received, closed after {closed_after:?}",
        got.len()
    );
    ensure!(
        got.is_empty(),
        "the acceptor sent {} bytes to a stranger",
        got.len()
    );
    ensure!(
        closed_after >= Duration::from_millis(900)
            && closed_after <= margin(Duration::from_secs(2)),
        "closed after {closed_after:?}, not ~1 s"
    );
    eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(rejected(&pair, NodeId::A, "first_message_timeout")? > before)
    })
    .context("the timeout was not counted")?;
    // The real link was not disturbed.
    ensure!(
        pair.peer_view(NodeId::A)?.connected,
        "the peer link dropped"
    );
    Ok(())
}
