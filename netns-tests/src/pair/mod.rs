//! The pair: vrrpd + lbd on two nodes, three HTTP backends and a load client, supervised
//! the way the systemd units supervise them, for the failover scenarios.
//!
//! ```text
//!   <pfx>-a   eth0 10.77.S.1  ──va──┐            <pfx>-a peer0 10.78.S.1/30
//!   <pfx>-b   eth0 10.77.S.2  ──vb──┤               │ (veth, the peer link)
//!   <pfx>-c   eth0 10.77.S.10 ──vc──┤ br0           <pfx>-b peer0 10.78.S.2/30
//!   <pfx>-be1 eth0 10.77.S.21 ──vk1─┤ (in <pfx>-br)
//!   <pfx>-be2 eth0 10.77.S.22 ──vk2─┤
//!   <pfx>-be3 eth0 10.77.S.23 ──vk3─┘   backends: `backend` bin on :8080
//!   VIP1 10.77.S.100 (instance "web", VRID 51), VIP2 10.77.S.101 ("web2", VRID 52)
//! ```
//!
//! Built on [`Lan`] (so on [`crate::Topology`]: unique prefix, cleanup on drop even on
//! panic). Each LB node runs vrrpd and lbd under a [`Supervisor`]; the supervisors are
//! fields declared before the `Lan`, so they kill their daemons before the namespaces go.
//! Nodes are named `a` and `b` in lbd's node header (and `Via`), which is what the load
//! client records as "the node that answered".
//!
//! Layout of the module:
//! - [`supervisor`] `Restart=always` + `OnFailure=` for one daemon.
//! - [`load`]       the load client's records and the outage figures.
//! - [`report`]     the Markdown table and the SVG timeline under `target/netns-report/`.
//! - [`scenario`]   load, fault, wait, figures: the shape every scenario shares.
//! - [`keepalived`] keepalived + HAProxy in place of vrrpd + lbd, for the report's
//!   keepalived column.
//! - [`shipped`]    the shipped `configs/node-{a,b}` files, given the namespaces' addresses.
//! - [`softstate`]  sticky sessions, rate limits and the peer link (`[peer]` on
//!   `peer0`), off unless [`PairConfig::softstate`] is set; HTTP from inside a namespace.
//! - [`failover_soft`] the soft-state promise across a kill -9 of the master,
//!   measured from outside (the benchmark `bench-failover-softstate` and its test).

pub mod failover_soft;
pub mod keepalived;
pub mod load;
pub mod report;
pub mod scenario;
pub mod shipped;
pub mod soak;
pub mod softstate;
pub mod supervisor;
pub mod tls;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cmd;
use crate::lan::{Lan, NodeId, LAN_IF};
use crate::topology::{write_file, ProcId};
use crate::vrrp::{master_down_interval, vrrpd_bin};
use crate::wait;
use load::LoadRun;
use softstate::SoftStateOpts;
use supervisor::Supervisor;

/// The backends' port.
pub const BACKEND_PORT: u16 = 8080;
/// The VIP listeners' port.
pub const VIP_PORT: u16 = 80;
/// Instance names, VRIDs.
/// The niceness of lbd and the load client (see `start_node`).
const NICE: &str = "-10";
/// vrrpd `[lbd] startup_grace_ms`: lbd connects within tens of ms here.
pub const STARTUP_GRACE_MS: u64 = 1000;
pub const INSTANCES: [(&str, u8); 2] = [("web", 51), ("web2", 52)];
/// Advert intervals (centiseconds) every scenario runs at: keepalived's default 1 s, and the
/// 0.1 s the reference figures were also measured at.
pub const INTERVALS: [u16; 2] = [100, 10];

/// How long a master that hands the VIP to a new one (a switchover, a preemption, a healed
/// partition) keeps its copy and its lbd's VIP listeners: vrrpd's default `[lbd]
/// handoff_ms` (200) plus the hold's 50 ms margin (doc/vrrpd-LIFECYCLE.md, "The hand-off
/// window"), then until its lbd has nothing in flight.
pub const HANDOFF_HOLD: Duration = Duration::from_millis(250);

/// Requests a preemption may fail: none. A new connection whose handshake straddles the MAC
/// move (SYN answered by the yielding master, the request sent to the new one after its
/// GARP) used to be reset there, about once in 50 preemptions at 2 cs; the hand-off window
/// hands it to the yielding master now (README, "Preemption, repeated"). The scenarios keep
/// counting such resets (`cut_handshakes`) so that one is named for what it is.
pub const MAX_CUT_HANDSHAKES: usize = 0;

/// How the pair is configured.
#[derive(Debug, Clone)]
pub struct PairConfig {
    pub advert_cs: u16,
    /// vrrpd `[lbd]` + `track_lbd`, lbd `[vrrp]` + `vrrp_instance` listeners. Off: lbd
    /// listens on 0.0.0.0:80 all the time and vrrpd runs alone (the harness's baseline).
    pub coupled: bool,
    pub fast_takeover: bool,
    /// Two instances: A master of VIP1, B of VIP2.
    pub active_active: bool,
    pub prio_high: u8,
    pub prio_low: u8,
    pub preempt_delay_ms: u64,
    /// vrrpd `[lbd] heartbeat_timeout_ms`.
    pub heartbeat_timeout_ms: u64,
    /// Sticky sessions, rate limits and the peer link. `None`: none of it, lbd's config
    /// exactly as the plain failover scenarios have it.
    pub softstate: Option<SoftStateOpts>,
    /// vrrpd `[lbd] startup_grace_ms`.
    pub startup_grace_ms: u64,
    /// The (first) VRRP instance's name.
    pub instance: String,
    /// Run lbd under `nice -n -10` (see `start_node`); the shipped units don't.
    pub nice_lbd: bool,
    /// Both daemons run the shipped `configs/node-{a,b}` files (see [`shipped`]); the
    /// fields above are read from them.
    pub shipped: bool,
    /// keepalived + HAProxy instead of vrrpd + lbd (see [`keepalived`]).
    pub keepalived: bool,
    /// vrrpd `[lbd] handoff_ms`; `None`: vrrpd's default (the shipped configs set none).
    pub handoff_ms: Option<u64>,
}

impl PairConfig {
    /// The coupled pair at `advert_cs`.
    pub fn coupled(advert_cs: u16) -> Self {
        Self {
            advert_cs,
            coupled: true,
            fast_takeover: false,
            active_active: false,
            prio_high: 200,
            prio_low: 100,
            preempt_delay_ms: 0,
            // vrrpd's default is 300 ms. On this shared 2-core machine lbd's heartbeats were
            // seen 300-600 ms late while other builds ran (lbd at nice -10), and vrrpd
            // then rightly faulted a healthy node, so the suite allows more. A dead lbd is
            // seen at once anyway (its socket closes), which is what the lbd-crash
            // scenarios measure.
            heartbeat_timeout_ms: 800,
            softstate: None,
            startup_grace_ms: STARTUP_GRACE_MS,
            instance: INSTANCES[0].0.to_owned(),
            nice_lbd: true,
            shipped: false,
            keepalived: false,
            handoff_ms: None,
        }
    }

    /// keepalived + HAProxy at `advert_cs`, the suite's priorities (see [`keepalived`]).
    pub fn keepalived(advert_cs: u16) -> Self {
        Self {
            coupled: false,
            startup_grace_ms: 0,
            keepalived: true,
            ..Self::coupled(advert_cs)
        }
    }

    /// The coupled pair at each of [`INTERVALS`], with or without `fast_takeover`.
    pub fn every_interval(fast_takeover: bool) -> Vec<Self> {
        INTERVALS
            .iter()
            .map(|&cs| Self {
                fast_takeover,
                ..Self::coupled(cs)
            })
            .collect()
    }

    /// The pair as shipped in `configs/node-{a,b}`: see [`shipped::config`].
    pub fn shipped() -> Result<Self> {
        shipped::config()
    }

    /// "shipped configs (...)" for a scenario's description.
    pub fn shipped_desc(&self) -> String {
        format!(
            "shipped configs (unicast, {} cs, heartbeat_timeout_ms = {}, lbd not niced)",
            self.advert_cs, self.heartbeat_timeout_ms
        )
    }

    /// vrrpd alone, lbd always listening on 0.0.0.0:80 (with freebind not even needed).
    pub fn uncoupled(advert_cs: u16) -> Self {
        Self {
            coupled: false,
            ..Self::coupled(advert_cs)
        }
    }

    /// Master_Down_Interval of the backup (the low priority).
    pub fn mdi(&self) -> Duration {
        master_down_interval(self.prio_low, self.advert_cs)
    }

    /// Skew_Time of the backup.
    pub fn skew(&self) -> Duration {
        crate::vrrp::skew_time(self.prio_low, self.advert_cs)
    }

    pub fn advert(&self) -> Duration {
        Duration::from_millis(u64::from(self.advert_cs) * 10)
    }
}

/// One LB node's daemons.
pub struct NodeDaemons {
    pub vrrpd: Supervisor,
    pub lbd: Supervisor,
    pub vrrpd_config: PathBuf,
    pub socket: PathBuf,
}

/// A running load client.
pub struct Load {
    pub proc: ProcId,
    pub out: PathBuf,
    stop: PathBuf,
}

/// The pair topology of the module docs, converged: A master of VIP1 (and B of VIP2 when
/// active-active), each lbd serving, the client answered through the VIP.
pub struct PairTopology {
    // Declared before `lan`: dropped (daemons killed) before the namespaces are deleted.
    pub a: NodeDaemons,
    pub b: NodeDaemons,
    pub lan: Lan,
    pub cfg: PairConfig,
    pub backends: Vec<Ipv4Addr>,
    loads: usize,
    /// When the daemons were started (for vrrpd's `[lbd] startup_grace_ms`).
    started: Instant,
}

/// A binary of this workspace: `$<ENV>`, else next to the running test's directory
/// (`target/debug/deps/..`), else `target/debug/`. Fails with a build hint.
pub fn workspace_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(name));
            }
        }
    }
    candidates.push(target_dir().join("debug").join(name));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        anyhow!("{name} not built: run `cargo build -p vrrpd -p lbd -p netns-tests` (or set {env})")
    })
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        })
}

fn role(id: NodeId) -> &'static str {
    match id {
        NodeId::A => "a",
        NodeId::B => "b",
        NodeId::Client => "c",
    }
}

impl PairTopology {
    /// Builds the topology, starts backends and both nodes' daemons, and waits until the
    /// pair has converged and the client is served by A.
    pub fn new(tag: &str, cfg: PairConfig) -> Result<Self> {
        let vrrpd = vrrpd_bin()?;
        let lbd = workspace_bin("lbd", "LBD_BIN")?;
        let backend = workspace_bin("backend", "BACKEND_BIN")?;
        workspace_bin("loadclient", "LOADCLIENT_BIN")?;
        let mut lan = Lan::new(tag)?;
        let subnet = lan.vip(0).octets()[2];
        let br = lan.bridge_ns.clone();

        // Backends on the LAN; in sticky learn mode they hand out sessions to learn.
        let session_args: Vec<String> = match &cfg.softstate {
            Some(s) if s.backends_set_sessions() => {
                vec!["--session-cookie".into(), softstate::SESSION_COOKIE.into()]
            }
            _ => Vec::new(),
        };
        let mut backends = Vec::new();
        for n in 1..=3u8 {
            let ns = lan.topo.add_namespace(&format!("be{n}"))?;
            let mac = format!("02:77:{subnet:02x}:00:00:{:02x}", 0x20 + n);
            lan.topo
                .add_veth(&br, "br0", &format!("vk{n}"), &ns, LAN_IF, &mac)?;
            let addr = Ipv4Addr::new(10, 77, subnet, 20 + n);
            cmd::ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                LAN_IF,
            ])?;
            let listen = format!("{addr}:{BACKEND_PORT}");
            let name = format!("be{n}");
            let mut args = vec![name.as_str(), listen.as_str()];
            args.extend(session_args.iter().map(String::as_str));
            lan.topo
                .spawn(&ns, &format!("backend{n}"), &backend, &args)?;
            backends.push(addr);
        }

        // The peer link: a veth straight between A and B; lbd replicates soft state over it
        // when `cfg.softstate` sets `[peer]`.
        let ns_a = lan.node(NodeId::A).ns.clone();
        let ns_b = lan.node(NodeId::B).ns.clone();
        cmd::ip(&[
            "-n", &ns_a, "link", "add", "peer0", "type", "veth", "peer", "name", "peer0", "netns",
            &ns_b,
        ])?;
        for (ns, host) in [(&ns_a, 1), (&ns_b, 2)] {
            let addr = format!("10.78.{subnet}.{host}/30");
            cmd::ip(&["-n", ns, "addr", "add", &addr, "dev", "peer0"])?;
            cmd::ip(&["-n", ns, "link", "set", "peer0", "up"])?;
        }

        if let Some(delay) = cfg.softstate.as_ref().and_then(|s| s.peer_delay_ms) {
            let relay = workspace_bin("tcpdelay", "TCPDELAY_BIN")?;
            for (id, other) in [(NodeId::A, NodeId::B), (NodeId::B, NodeId::A)] {
                let listen = format!(
                    "{}:{}",
                    softstate::peer_addr(&lan, id),
                    softstate::PEER_DELAY_PORT
                );
                let to = format!(
                    "{}:{}",
                    softstate::peer_addr(&lan, other),
                    softstate::PEER_PORT
                );
                let ns = lan.node(id).ns.clone();
                lan.topo.spawn(
                    &ns,
                    &format!("tcpdelay-{}", role(id)),
                    &relay,
                    &[listen.as_str(), to.as_str(), &delay.to_string()],
                )?;
            }
        }
        if let Some(s) = &cfg.softstate {
            softstate::write_secrets(lan.topo.dir())?;
            if s.tls {
                tls::write_certificate(lan.topo.dir())?;
            }
        }
        let started = Instant::now();
        let (a, b) = if cfg.keepalived {
            (
                keepalived::start_node(&mut lan, &cfg, NodeId::A, &backends)?,
                keepalived::start_node(&mut lan, &cfg, NodeId::B, &backends)?,
            )
        } else {
            (
                start_node(&mut lan, &cfg, NodeId::A, &vrrpd, &lbd, &backends)?,
                start_node(&mut lan, &cfg, NodeId::B, &vrrpd, &lbd, &backends)?,
            )
        };
        let pair = Self {
            a,
            b,
            lan,
            cfg,
            backends,
            loads: 0,
            started,
        };
        pair.await_converged()
            .context("the pair didn't converge after startup")?;
        Ok(pair)
    }

    /// Waits out vrrpd's `[lbd] startup_grace_ms` since the daemons started: within it, a
    /// disconnect of lbd counts as "not connected yet" rather than "down", so a fault
    /// injected earlier would test the grace, not the failover.
    pub fn await_past_startup_grace(&self) {
        let end = self.started + Duration::from_millis(self.cfg.startup_grace_ms + 200);
        let now = Instant::now();
        if end > now {
            std::thread::sleep(end - now);
        }
    }

    /// VIP `n` (0: "web", 1: "web2").
    pub fn vip(&self, n: u8) -> Ipv4Addr {
        self.lan.vip(n)
    }

    pub fn node(&self, id: NodeId) -> &NodeDaemons {
        match id {
            NodeId::B => &self.b,
            _ => &self.a,
        }
    }

    /// The name lbd on `id` gives itself in responses.
    pub fn node_name(id: NodeId) -> &'static str {
        role(id)
    }

    /// A startup budget: two Master_Down_Intervals plus lbd's first health checks, plus
    /// the preemption delay (B may win the first election while A's lbd starts).
    pub fn startup_budget(&self) -> Duration {
        self.cfg.mdi() * 2
            + Duration::from_secs(5)
            + Duration::from_millis(self.cfg.preempt_delay_ms)
    }

    /// Waits until A alone holds VIP1 (and B alone VIP2 when active-active), the other
    /// side is backup, and a request to each VIP is answered by its master's lbd.
    pub fn await_converged(&self) -> Result<()> {
        let budget = self.startup_budget();
        self.lan.await_sole_holder(self.vip(0), NodeId::A, budget)?;
        if !self.cfg.keepalived {
            self.await_state(NodeId::B, &self.cfg.instance, "backup", budget)?;
        }
        self.await_answer(self.vip(0), NodeId::A, budget)?;
        if self.cfg.active_active {
            self.lan.await_sole_holder(self.vip(1), NodeId::B, budget)?;
            self.await_state(NodeId::A, "web2", "backup", budget)?;
            self.await_answer(self.vip(1), NodeId::B, budget)?;
        }
        Ok(())
    }

    /// `vrrpd status --json` of a node.
    pub fn status(&self, id: NodeId) -> Result<Value> {
        let mut command = Command::new(vrrpd_bin()?);
        command
            .args(["status", "--json", "--socket"])
            .arg(&self.node(id).socket);
        let out = cmd::output(&mut command)?;
        if !out.status.success() {
            bail!(
                "`{}`: {}",
                cmd::describe(&command),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).context("vrrpd status is not JSON")
    }

    /// Instance `inst` of node `id`'s `vrrpd status --json` (its state, counters, ...).
    pub fn instance_status(&self, id: NodeId, inst: &str) -> Result<Value> {
        let st = self.status(id)?;
        st.get("instances")
            .and_then(Value::as_array)
            .and_then(|l| {
                l.iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(inst))
            })
            .cloned()
            .ok_or_else(|| anyhow!("no instance {inst} in {st}"))
    }

    /// The state of instance `inst` on node `id`.
    pub fn state(&self, id: NodeId, inst: &str) -> Result<String> {
        let i = self.instance_status(id, inst)?;
        i.get("state")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| anyhow!("no state of {inst} in {i}"))
    }

    /// Waits (`timeout` × patience) for `state` of `inst` on `id`.
    pub fn await_state(
        &self,
        id: NodeId,
        inst: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<()> {
        let mut last = String::from("<no answer>");
        wait::eventually(timeout, Duration::from_millis(20), || {
            last = self.state(id, inst)?;
            Ok(last == state)
        })
        .map(|_| ())
        .map_err(|e| anyhow!("{id:?}: {inst} should be {state}, is {last}: {e:#}"))
    }

    /// One request from the client to `vip`: the node that answered (`None`: no 2xx).
    pub fn client_get(&mut self, vip: Ipv4Addr) -> Result<Option<String>> {
        let load = self.start_load_with(vip, false, Duration::from_millis(1), 1, 500)?;
        let run = self.finish_load(load, Duration::from_secs(3))?;
        Ok(run
            .records
            .iter()
            .find(|r| r.outcome.is_ok())
            .and_then(|r| r.node.clone()))
    }

    /// Waits (`timeout` × patience) until a request to `vip` is answered by `id`.
    pub fn await_answer(&self, vip: Ipv4Addr, id: NodeId, timeout: Duration) -> Result<()> {
        let want = role(id);
        let mut last = None;
        // `client_get` needs `&mut self` only to number its files; a one-off path here.
        wait::eventually(timeout, Duration::from_millis(50), || {
            last = self.probe_once(vip)?;
            Ok(last.as_deref() == Some(want))
        })
        .map(|_| ())
        .map_err(|e| anyhow!("{vip} should be answered by {want}, last answer {last:?}: {e:#}"))
    }

    fn probe_once(&self, vip: Ipv4Addr) -> Result<Option<String>> {
        let bin = workspace_bin("loadclient", "LOADCLIENT_BIN")?;
        let out = self.lan.topo.dir().join("probe.jsonl");
        let target = format!("{vip}:{VIP_PORT}");
        let out_arg = out.to_string_lossy().into_owned();
        cmd::run_in(
            &self.lan.node(NodeId::Client).ns,
            &bin.to_string_lossy(),
            &[
                "--target",
                &target,
                "--out",
                &out_arg,
                "--duration-ms",
                "1",
                "--interval-ms",
                "1",
                "--timeout-ms",
                "300",
                "--fresh",
            ],
        )?;
        let run = LoadRun::read(&out)?;
        Ok(run
            .records
            .iter()
            .find(|r| r.outcome.is_ok())
            .and_then(|r| r.node.clone()))
    }

    /// Starts the load client on `vip` for at most `max` (stop it earlier with
    /// [`Self::finish_load`]): a request every 5 ms, 200 ms timeout.
    pub fn start_load(&mut self, vip: Ipv4Addr, keepalive: bool, max: Duration) -> Result<Load> {
        self.start_load_with(vip, keepalive, max, 5, 200)
    }

    /// [`Self::start_load`] with the interval and timeout given.
    pub fn start_load_with(
        &mut self,
        vip: Ipv4Addr,
        keepalive: bool,
        max: Duration,
        interval_ms: u64,
        timeout_ms: u64,
    ) -> Result<Load> {
        self.start_load_path(vip, keepalive, max, interval_ms, timeout_ms, "/")
    }

    /// One request for `path` on a fresh connection, in the background, answered within
    /// `timeout`; [`Self::finish_load`] collects it (it ends once the request has).
    pub fn start_request(&mut self, vip: Ipv4Addr, path: &str, timeout: Duration) -> Result<Load> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.start_load_path(vip, false, Duration::from_millis(1), 1, ms, path)
    }

    /// [`Self::start_load_with`] for requests to `path`.
    fn start_load_path(
        &mut self,
        vip: Ipv4Addr,
        keepalive: bool,
        max: Duration,
        interval_ms: u64,
        timeout_ms: u64,
        path: &str,
    ) -> Result<Load> {
        let bin = workspace_bin("loadclient", "LOADCLIENT_BIN")?;
        self.loads += 1;
        let dir = self.lan.topo.dir().to_path_buf();
        let out = dir.join(format!("load{}.jsonl", self.loads));
        let stop = dir.join(format!("load{}.stop", self.loads));
        let _ = std::fs::remove_file(&stop);
        let target = format!("{vip}:{VIP_PORT}");
        let args: Vec<String> = vec![
            "--target".into(),
            target,
            "--out".into(),
            out.to_string_lossy().into_owned(),
            "--interval-ms".into(),
            interval_ms.to_string(),
            "--timeout-ms".into(),
            timeout_ms.to_string(),
            "--duration-ms".into(),
            max.as_millis().to_string(),
            if keepalive { "--keepalive" } else { "--fresh" }.into(),
            "--stop-file".into(),
            stop.to_string_lossy().into_owned(),
            "--path".into(),
            path.into(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let ns = self.lan.node(NodeId::Client).ns.clone();
        let mut full = vec![
            "-n",
            NICE,
            bin.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?,
        ];
        full.extend_from_slice(&argv);
        let proc = self.lan.topo.spawn(
            &ns,
            &format!("loadclient{}", self.loads),
            Path::new("nice"),
            &full,
        )?;
        // The header line appears once the client runs.
        wait::eventually(Duration::from_secs(3), Duration::from_millis(2), || {
            Ok(LoadRun::read(&out).is_ok())
        })
        .context("the load client didn't start")?;
        Ok(Load { proc, out, stop })
    }

    /// The load client's records so far.
    pub fn read_load(&self, load: &Load) -> Result<LoadRun> {
        LoadRun::read(&load.out)
    }

    /// Waits until `id` has answered a request sent after this call.
    pub fn await_load_answer(&self, load: &Load, id: NodeId, timeout: Duration) -> Result<()> {
        let from = self.read_load(load)?.header.at(SystemTime::now());
        wait::eventually(timeout, Duration::from_millis(10), || {
            Ok(self
                .read_load(load)?
                .first_answer_from(role(id), from)
                .is_some())
        })
        .map(|_| ())
        .with_context(|| format!("{id:?} should answer the load client"))
    }

    /// Stops the load client and reads its records.
    pub fn finish_load(&mut self, load: Load, timeout: Duration) -> Result<LoadRun> {
        write_file(&load.stop, "stop\n")?;
        let status = self.lan.topo.wait_exit(load.proc, timeout)?;
        if !status.success() {
            bail!("load client failed: {}", self.lan.topo.log(load.proc)?);
        }
        eprintln!("load client: {}", self.lan.topo.log(load.proc)?.trim());
        self.read_load(&load)
    }

    /// Power-off: both daemons SIGKILLed without restart, and the LAN link down.
    pub fn power_off(&self, id: NodeId) -> Result<()> {
        let n = self.node(id);
        n.vrrpd.power_off();
        n.lbd.power_off();
        self.lan.set_link(id, false)
    }

    /// Power-on: link up, both daemons started again (lbd first, as the units order it
    /// the other way round only for the socket; lbd reconnects either way).
    pub fn power_on(&self, id: NodeId) -> Result<()> {
        // A rebooted node comes back without the VIPs the dead vrrpd left behind.
        for n in 0..2u8 {
            let vip = self.vip(n);
            if self.lan.has_addr(id, vip)? {
                let ns = &self.lan.node(id).ns;
                cmd::ip(&["-n", ns, "addr", "del", &format!("{vip}/24"), "dev", LAN_IF])?;
            }
        }
        self.lan.set_link(id, true)?;
        let n = self.node(id);
        n.vrrpd.power_on()?;
        n.lbd.power_on()
    }

    /// `vrrpd switchover --socket S` on node `id`.
    pub fn switchover_cli(&self, id: NodeId) -> Result<String> {
        let bin = vrrpd_bin()?;
        let sock = self.node(id).socket.to_string_lossy().into_owned();
        cmd::run(&bin.to_string_lossy(), ["switchover", "--socket", &sock])
    }

    /// The switchover request the CLI sends, `{"cmd":"switchover"}`, written straight to
    /// the control socket; returns the daemon's answer line. (At the time of writing the
    /// CLI built its timeout outside its runtime and panicked, so the scenarios speak
    /// the protocol themselves; see [`Self::switchover_cli`].)
    pub fn switchover(&self, id: NodeId) -> Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let path = &self.node(id).socket;
        let mut s = std::os::unix::net::UnixStream::connect(path)
            .with_context(|| format!("connecting to {}", path.display()))?;
        // The daemon bounds the drain by `[lbd] drain_timeout_ms`; this guards a hang.
        s.set_read_timeout(Some(wait::scaled(Duration::from_secs(30))))?;
        s.write_all(b"{\"cmd\":\"switchover\"}\n")?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("switchover answer {line:?}"))?;
        if v.get("type").and_then(Value::as_str) != Some("done") {
            bail!("switchover refused: {line}");
        }
        Ok(line)
    }

    /// Partitions A from B (or heals): their bridge ports become *isolated* ports, which
    /// the bridge never forwards between, while both still reach the client and the
    /// backends (non-isolated ports). The simplest partition on one bridge: no second
    /// bridge, no moving veths, no ebtables.
    pub fn partition(&self, on: bool) -> Result<()> {
        cmd::require("bridge")?;
        let state = if on { "on" } else { "off" };
        for port in ["va", "vb"] {
            cmd::run(
                "bridge",
                [
                    "-n",
                    &self.lan.bridge_ns,
                    "link",
                    "set",
                    "dev",
                    port,
                    "isolated",
                    state,
                ],
            )?;
        }
        Ok(())
    }

    /// The VIP holders (from the kernel).
    pub fn holders(&self, vip: Ipv4Addr) -> Result<Vec<NodeId>> {
        self.lan.vip_holders(vip)
    }
}

fn start_node(
    lan: &mut Lan,
    cfg: &PairConfig,
    id: NodeId,
    vrrpd: &Path,
    lbd: &Path,
    backends: &[Ipv4Addr],
) -> Result<NodeDaemons> {
    let r = role(id);
    let dir = lan.topo.dir().to_path_buf();
    let socket = dir.join(format!("vrrpd-{r}.sock"));
    let vrrpd_config = dir.join(format!("vrrpd-{r}.toml"));
    let lbd_config = dir.join(format!("lbd-{r}.toml"));
    if cfg.shipped {
        write_file(
            &vrrpd_config,
            &shipped::vrrpd_toml(lan, id, &socket, cfg.advert_cs)?,
        )?;
        write_file(&lbd_config, &shipped::lbd_toml(lan, id, &socket, backends)?)?;
    } else {
        write_file(&vrrpd_config, &vrrpd_toml(lan, cfg, id, &socket))?;
        write_file(&lbd_config, &lbd_toml(lan, cfg, id, &socket, backends))?;
    }
    let ns = lan.node(id).ns.clone();
    let vconf = vrrpd_config.to_string_lossy().into_owned();
    let release = Some((
        vrrpd.to_owned(),
        vec![
            "release-vips".to_owned(),
            "--config".to_owned(),
            vconf.clone(),
        ],
    ));
    let vrrpd = Supervisor::start(
        &ns,
        &format!("vrrpd-{r}"),
        vrrpd,
        &["run".into(), "--config".into(), vconf],
        &dir.join(format!("vrrpd-{r}.log")),
        release,
    )?;
    // lbd under `nice -n -10` (nice execs it: same PID): on a 2-core machine shared with
    // other builds and benchmarks, a starved lbd misses heartbeats and vrrpd rightly
    // declares it down, which would measure the neighbours rather than the pair. vrrpd
    // gets the same protection from its own `realtime = true`, as the shipped config does.
    let lbd_args = vec![
        "run".to_owned(),
        "--config".into(),
        lbd_config.to_string_lossy().into_owned(),
    ];
    let (program, args) = if cfg.nice_lbd {
        let mut niced = vec![
            "-n".to_owned(),
            NICE.to_owned(),
            lbd.to_string_lossy().into(),
        ];
        niced.extend(lbd_args);
        (Path::new("nice"), niced)
    } else {
        (lbd, lbd_args)
    };
    let lbd = Supervisor::start(
        &ns,
        &format!("lbd-{r}"),
        program,
        &args,
        &dir.join(format!("lbd-{r}.log")),
        None,
    )?;
    Ok(NodeDaemons {
        vrrpd,
        lbd,
        vrrpd_config,
        socket,
    })
}

/// vrrpd's config for node `id`.
pub fn vrrpd_toml(lan: &Lan, cfg: &PairConfig, id: NodeId, socket: &Path) -> String {
    let mut t = format!(
        "[global]\ncontrol_socket = \"{}\"\nlog_format = \"plain\"\nlog_level = \"debug\"\n\
         realtime = true\n\n",
        socket.display()
    );
    if cfg.coupled {
        // The switchover drain outlasts the 2 s request of pair_planned's slow-request test.
        t.push_str(&format!(
            "[lbd]\nheartbeat_timeout_ms = {}\nack_timeout_ms = 500\nstartup_grace_ms = {STARTUP_GRACE_MS}\n\
             drain_timeout_ms = 4000\n",
            cfg.heartbeat_timeout_ms
        ));
        if let Some(ms) = cfg.handoff_ms {
            t.push_str(&format!("handoff_ms = {ms}\n"));
        }
        t.push('\n');
    }
    let count = if cfg.active_active { 2 } else { 1 };
    for (n, (name, vrid)) in INSTANCES.iter().take(count).enumerate() {
        // Instance n is mastered by A when n is even, by B when odd.
        let high = (n % 2 == 0) == (id == NodeId::A);
        let prio = if high { cfg.prio_high } else { cfg.prio_low };
        let vip = lan.vip(u8::try_from(n).unwrap_or(0));
        t.push_str(&format!(
            "[[instance]]\nname = \"{name}\"\ninterface = \"{LAN_IF}\"\nvrid = {vrid}\n\
             priority = {prio}\nadvert_interval_cs = {}\npreempt = true\n\
             preempt_delay_ms = {}\nvips = [\"{vip}/24\"]\n",
            cfg.advert_cs, cfg.preempt_delay_ms
        ));
        if cfg.coupled {
            t.push_str(&format!(
                "track_lbd = \"fault\"\nfast_takeover = {}\n",
                cfg.fast_takeover
            ));
        }
        t.push('\n');
    }
    t
}

/// lbd's config for node `id`.
pub fn lbd_toml(
    lan: &Lan,
    cfg: &PairConfig,
    id: NodeId,
    socket: &Path,
    backends: &[Ipv4Addr],
) -> String {
    let r = role(id);
    let mut t = format!(
        "default_pool = \"app\"\n\n[global]\nlog_format = \"plain\"\nlog_level = \"info\"\n\
         admin = \"127.0.0.1:9100\"\naccess_log = \"off\"\ndrain_timeout_ms = 2000\n\
         node_name = \"{r}\"\n{}\n[headers]\nvia_name = \"{r}\"\n\n",
        softstate::lbd_toml_global(lan, cfg, id)
    );
    if cfg.coupled {
        // As vrrpd's `[lbd] drain_timeout_ms` (see `vrrpd_toml`).
        t.push_str(&format!(
            "[vrrp]\nsocket = \"{}\"\nheartbeat_interval_ms = 50\nreconnect_interval_ms = 20\n\
             unable_when_no_healthy_backend = true\ndrain_timeout_ms = 4000\n\n",
            socket.display()
        ));
        let count = if cfg.active_active { 2 } else { 1 };
        for (n, (name, _)) in INSTANCES.iter().take(count).enumerate() {
            let vip = lan.vip(u8::try_from(n).unwrap_or(0));
            t.push_str(&format!(
                "[[listener]]\nname = \"{name}\"\naddress = \"{vip}:{VIP_PORT}\"\n\
                 freebind = true\nvrrp_instance = \"{name}\"\n\n"
            ));
        }
    } else {
        t.push_str(&format!(
            "[[listener]]\nname = \"any\"\naddress = \"0.0.0.0:{VIP_PORT}\"\n\n"
        ));
    }
    t.push_str(&softstate::lbd_toml_listeners(lan, cfg, id));
    t.push_str(
        "[[pool]]\nname = \"app\"\nalgorithm = \"round_robin\"\n\n[pool.health]\nkind = \"http\"\n\
         path = \"/\"\ninterval_ms = 300\ntimeout_ms = 250\nrise = 1\nfall = 3\n\n",
    );
    t.push_str(&softstate::lbd_toml_pool(cfg));
    for (n, b) in backends.iter().enumerate() {
        t.push_str(&format!(
            "[[pool.backend]]\nname = \"be{}\"\naddress = \"{b}:{BACKEND_PORT}\"\n\n",
            n + 1
        ));
    }
    t.push_str(&softstate::lbd_toml_insert_pool(cfg, backends));
    t.push_str(&softstate::lbd_toml_tail(lan, cfg, id));
    t
}

impl Drop for PairTopology {
    /// Prints the supervised daemons' logs (the `Topology` prints only its own processes'),
    /// before the supervisors and the namespaces go. cargo test shows them only for
    /// failing tests; `NETNS_QUIET=1` turns them off.
    fn drop(&mut self) {
        if std::env::var_os("NETNS_QUIET").is_some() && !std::thread::panicking() {
            return;
        }
        let dir = self.lan.topo.dir().to_path_buf();
        for name in ["vrrpd-a", "lbd-a", "vrrpd-b", "lbd-b"] {
            let path = dir.join(format!("{name}.log"));
            let text = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()));
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(150);
            eprintln!(
                "===== {name} (supervised; last {} lines) =====",
                lines.len() - skip
            );
            for l in &lines[skip..] {
                eprintln!("{l}");
            }
        }
    }
}
