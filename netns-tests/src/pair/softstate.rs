//! Soft state in the pair: sticky sessions, rate limits, and the peer link that
//! replicates them between the two lbd nodes; the config the pair emits for them and what
//! the scenarios observe of them.
//!
//! ```text
//!   <pfx>-a peer0 10.78.S.1:PEER_PORT  <── one TCP stream, PSK-authenticated ──>  <pfx>-b peer0 10.78.S.2:PEER_PORT
//!   each lbd: admin 127.0.0.1:9100 (/status "peer": connected, phase, digest)
//!             VIP listener(s), and a `direct` listener on its own LAN address (DIRECT_PORT)
//! ```
//!
//! Layout:
//! - [`SoftStateOpts`] and friends: what [`super::PairConfig::softstate`] turns on; off by
//!   default, so the plain failover scenarios run unchanged.
//! - `lbd_toml_*`: the pieces [`super::lbd_toml`] splices into lbd's config.
//! - [`in_netns`] + [`http`]: a plain HTTP/1.1 client run on a thread that has entered a
//!   node's namespace. One thread per call, no process per request, so a scenario can pin
//!   hundreds of clients or poll `/status` every few ms without the `ip netns exec` cost.
//! - `impl PairTopology`: `/status` "peer" views, admin calls, netem and link faults on the
//!   peer link, pinning and replaying sticky clients.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;

use super::{role, PairConfig, PairTopology, VIP_PORT};
use crate::cmd;
use crate::lan::{Lan, NodeId};
use crate::topology::write_file;

/// The peer link's TCP port on both nodes.
pub const PEER_PORT: u16 = 7400;
/// Where a node's `tcpdelay` relay listens (its own peer address), with
/// [`SoftStateOpts::peer_delay_ms`].
pub const PEER_DELAY_PORT: u16 = 7401;
/// lbd's admin listener inside each node's namespace.
pub const ADMIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100);
/// The `direct` listener's port: each lbd serves it on its own LAN address whatever its
/// VRRP state, so a scenario can make the backup create state too (split brain).
pub const DIRECT_PORT: u16 = 8000;
/// The application's session cookie in learn mode (the backends' `--session-cookie`).
pub const SESSION_COOKIE: &str = "JSESSIONID";
/// The cookie lbd inserts in insert mode.
pub const INSERT_COOKIE: &str = "LBPAIR";
/// The path prefix routed to the insert-mode pool of [`SoftStateOpts::insert_pool`].
pub const INSERT_PREFIX: &str = "/ins";
/// Longest response the client reads: the scenarios' responses are tiny.
const MAX_RESPONSE: usize = 256 * 1024;
/// The nftables table [`PairTopology::impair_peer_link`] falls back to.
const NFT_TABLE: &str = "lbpair_impair";
/// The peer interface on both nodes (see the pair's module docs).
pub const PEER_IF: &str = "peer0";

/// `[pool.sticky] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMode {
    /// lbd sets an HMAC-signed cookie naming the backend: no table, so nothing to sync
    /// beyond the shared `cookie_secret_file`.
    Insert,
    /// lbd learns the application's session cookie -> backend, in a table the peer link
    /// replicates.
    Learn,
}

/// `[pool.sticky]` of the `app` pool.
#[derive(Debug, Clone)]
pub struct StickyOpts {
    pub mode: StickyMode,
    pub ttl_s: u64,
}

impl StickyOpts {
    /// The cookie the client carries: lbd's in insert mode, the application's in learn mode.
    pub fn cookie(&self) -> &'static str {
        match self.mode {
            StickyMode::Insert => INSERT_COOKIE,
            StickyMode::Learn => SESSION_COOKIE,
        }
    }
}

/// One `[[rate_limit]]`.
#[derive(Debug, Clone)]
pub struct RateLimitOpts {
    pub name: String,
    /// `client_ip`, `header:NAME` or `route`.
    pub key: String,
    pub rate: f64,
    pub burst: u32,
    /// Empty: every route (global).
    pub routes: Vec<String>,
}

/// Soft state in the pair. `None` in [`PairConfig::softstate`]: none of it.
#[derive(Debug, Clone)]
pub struct SoftStateOpts {
    pub sticky: Option<StickyOpts>,
    pub rate_limits: Vec<RateLimitOpts>,
    /// `[peer]` on the peer link. Off: each node keeps its soft state to itself.
    pub peer: bool,
    /// `[peer] resync_rate` (records per second a full resync streams), if set.
    pub resync_rate: Option<u64>,
    /// `[peer] warm_timeout_ms`: how long a cold node waits for the peer before it reports
    /// warm anyway. Long by default, so a scenario's "warm" is the peer's SYNC_DONE.
    pub warm_timeout_ms: u64,
    /// `[peer] ping_ms` (keepalive; a peer silent for 3x this is dropped), if set.
    pub ping_ms: Option<u64>,
    /// `[peer] reconnect_ms` (dial interval while not connected), if set.
    pub reconnect_ms: Option<u64>,
    /// Route the peer link through a `tcpdelay` relay in each node's namespace, adding this
    /// one-way delay in both directions (the stand-in for `tc netem delay`, which this
    /// kernel lacks): each lbd dials its own relay, which connects to the other lbd.
    pub peer_delay_ms: Option<u32>,
    /// A second pool, `ins`, with insert-mode stickiness, on the route `INSERT_PREFIX`
    /// (the same backends): one pair then holds sessions of both modes (for the soft-state
    /// failover benchmark). Its cookie is [`INSERT_COOKIE`].
    pub insert_pool: bool,
    /// An HTTPS listener on VIP 0 (`pair::tls`), the same certificate files on both nodes,
    /// for TLS session resumption across a failover.
    pub tls: bool,
}

impl Default for SoftStateOpts {
    fn default() -> Self {
        Self {
            sticky: None,
            rate_limits: Vec::new(),
            peer: true,
            resync_rate: None,
            warm_timeout_ms: 30_000,
            ping_ms: None,
            reconnect_ms: None,
            peer_delay_ms: None,
            insert_pool: false,
            tls: false,
        }
    }
}

impl SoftStateOpts {
    /// Sticky sessions in `mode` over the peer link.
    pub fn sticky(mode: StickyMode) -> Self {
        Self {
            sticky: Some(StickyOpts { mode, ttl_s: 3600 }),
            ..Self::default()
        }
    }

    /// Whether the backends should hand out application sessions.
    pub fn backends_set_sessions(&self) -> bool {
        self.sticky
            .as_ref()
            .is_some_and(|s| s.mode == StickyMode::Learn)
    }
}

/// The PSK both nodes share (`[peer] psk_file`).
pub fn psk_path(dir: &Path) -> PathBuf {
    dir.join("peer.psk")
}

/// The secret insert-mode cookies are signed with (`[global] cookie_secret_file`).
pub fn cookie_secret_path(dir: &Path) -> PathBuf {
    dir.join("cookie.secret")
}

/// Node `id`'s lbd state file (`global.soft_state_file`).
pub fn soft_state_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("lbd-{}.softstate", super::role(id)))
}

/// The bearer token of lbd's admin write endpoints (`[global] admin_token_file`).
pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join("admin.token")
}

/// Writes the shared secrets, 32 random bytes each as 64 hex digits, mode 0600 (lbd refuses
/// an admin token file others can read, and a key file like that is one it may rightly refuse).
pub fn write_secrets(dir: &Path) -> Result<()> {
    for path in [
        psk_path(dir),
        cookie_secret_path(dir),
        admin_token_path(dir),
    ] {
        let mut bytes = [0u8; 32];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
        let hex = bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        write_file(&path, &format!("{hex}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", path.display()))?;
    }
    Ok(())
}

/// The peer-link address of a node (10.78.S.1 for A, .2 for B).
pub fn peer_addr(lan: &Lan, id: NodeId) -> Ipv4Addr {
    let subnet = lan.vip(0).octets()[2];
    Ipv4Addr::new(10, 78, subnet, if id == NodeId::B { 2 } else { 1 })
}

/// Lines for lbd's `[global]` table: the admin token (the drain helper sends it) and, for
/// insert-mode stickiness, the cookie secret.
pub(super) fn lbd_toml_global(lan: &Lan, cfg: &PairConfig, id: NodeId) -> String {
    let Some(s) = &cfg.softstate else {
        return String::new();
    };
    let dir = lan.topo.dir();
    // Each node's soft state survives its lbd's restart (a kill -9 included): the file lives
    // in the test's own directory, so a restarted backup reloads it before its resync.
    let mut t = format!(
        "admin_token_file = \"{}\"\nsoft_state_file = \"{}\"\n",
        admin_token_path(dir).display(),
        soft_state_path(dir, id).display()
    );
    if s.insert_pool
        || s.sticky
            .as_ref()
            .is_some_and(|k| k.mode == StickyMode::Insert)
    {
        let _ = writeln!(
            t,
            "cookie_secret_file = \"{}\"",
            cookie_secret_path(dir).display()
        );
    }
    t
}

/// The `direct` listener (see [`DIRECT_PORT`]).
pub(super) fn lbd_toml_listeners(lan: &Lan, cfg: &PairConfig, id: NodeId) -> String {
    if cfg.softstate.is_none() || !cfg.coupled {
        // Uncoupled lbd already listens on every address.
        return String::new();
    }
    format!(
        "[[listener]]\nname = \"direct\"\naddress = \"{}:{DIRECT_PORT}\"\n\n{}",
        lan.node(id).addr,
        super::tls::lbd_toml_listener(lan, cfg)
    )
}

/// `[pool.sticky]` for the `app` pool (after its `[[pool]]` header).
pub(super) fn lbd_toml_pool(cfg: &PairConfig) -> String {
    let Some(sticky) = cfg.softstate.as_ref().and_then(|s| s.sticky.as_ref()) else {
        return String::new();
    };
    let mode = match sticky.mode {
        StickyMode::Insert => "insert",
        StickyMode::Learn => "learn",
    };
    format!(
        "[pool.sticky]\nmode = \"{mode}\"\ncookie = \"{}\"\nttl_s = {}\n\n",
        sticky.cookie(),
        sticky.ttl_s
    )
}

/// The insert-mode pool `ins` and its route, with [`SoftStateOpts::insert_pool`] (empty
/// otherwise): the `app` pool's health checks, the same backends.
pub(super) fn lbd_toml_insert_pool(cfg: &PairConfig, backends: &[Ipv4Addr]) -> String {
    if !cfg.softstate.as_ref().is_some_and(|s| s.insert_pool) {
        return String::new();
    }
    let mut t = format!(
        "[[route]]\nname = \"ins\"\npath_prefix = \"{INSERT_PREFIX}\"\npool = \"ins\"\n\n\
         [[pool]]\nname = \"ins\"\nalgorithm = \"round_robin\"\n\n[pool.health]\n\
         kind = \"http\"\npath = \"/\"\ninterval_ms = 300\ntimeout_ms = 250\nrise = 1\nfall = 3\n\n\
         [pool.sticky]\nmode = \"insert\"\ncookie = \"{INSERT_COOKIE}\"\n\n"
    );
    for (n, b) in backends.iter().enumerate() {
        let _ = write!(
            t,
            "[[pool.backend]]\nname = \"be{}\"\naddress = \"{b}:{}\"\n\n",
            n + 1,
            super::BACKEND_PORT
        );
    }
    t
}

/// The top-level tables: `[[rate_limit]]`s and `[peer]`.
pub(super) fn lbd_toml_tail(lan: &Lan, cfg: &PairConfig, id: NodeId) -> String {
    let Some(s) = &cfg.softstate else {
        return String::new();
    };
    let mut t = String::new();
    for rl in &s.rate_limits {
        let _ = write!(
            t,
            "[[rate_limit]]\nname = \"{}\"\nkey = \"{}\"\nrate = {:?}\nburst = {}\n",
            rl.name, rl.key, rl.rate, rl.burst
        );
        if !rl.routes.is_empty() {
            let routes: Vec<String> = rl.routes.iter().map(|r| format!("\"{r}\"")).collect();
            let _ = writeln!(t, "routes = [{}]", routes.join(", "));
        }
        t.push('\n');
    }
    if s.peer {
        let other_id = if id == NodeId::B {
            NodeId::A
        } else {
            NodeId::B
        };
        let _ = write!(
            t,
            "[peer]\nnode_id = \"{}\"\npeer_node_id = \"{}\"\ncluster_id = \"lbpair-netns\"\n\
             listen = \"{}:{PEER_PORT}\"\npeer = \"{}\"\npsk_file = \"{}\"\n\
             allow_from = [\"{}\"]\nwarm_timeout_ms = {}\n",
            role(id),
            role(other_id),
            peer_addr(lan, id),
            match s.peer_delay_ms {
                // Through this node's own relay, which connects to the other node.
                Some(_) => format!("{}:{PEER_DELAY_PORT}", peer_addr(lan, id)),
                None => format!("{}:{PEER_PORT}", peer_addr(lan, other_id)),
            },
            psk_path(lan.topo.dir()).display(),
            // The other node's address, also when `peer` is this node's own delay relay
            // (the default, the IP of `peer`, would then be our own).
            peer_addr(lan, other_id),
            s.warm_timeout_ms
        );
        for (key, value) in [
            ("resync_rate", s.resync_rate),
            ("ping_ms", s.ping_ms),
            ("reconnect_ms", s.reconnect_ms),
        ] {
            if let Some(v) = value {
                let _ = writeln!(t, "{key} = {v}");
            }
        }
        t.push('\n');
    }
    t
}

/// Runs `f` on a thread that has entered network namespace `ns` (`/run/netns/NS`, where
/// `ip netns add` puts it). Only that thread moves: the caller stays where it is.
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {path}"))?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the thread in {ns} panicked"))?
    })
}

/// An HTTP/1.1 response as the scenarios need it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Names lower-cased, in order, repeated ones kept (`set-cookie`).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name` set by this response.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k == "set-cookie")
            .filter_map(|(_, v)| v.split(';').next()?.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    }

    /// The backend that answered (the backends' `x-backend`).
    pub fn backend(&self) -> Option<&str> {
        self.header("x-backend")
    }
}

/// One request on a fresh connection (`Connection: close`), from the calling thread's
/// namespace. `headers` are extra request headers.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = s.set_nodelay(true);
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    if method == "POST" {
        req.push_str("content-length: 0\r\n");
    }
    req.push_str("\r\n");
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req.as_bytes())
        .with_context(|| format!("sending to {addr}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    // Read until the head is complete and the body (by content-length, else to EOF) is in.
    loop {
        if let Some(resp) = parse_response(&buf)? {
            return Ok(resp);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{addr}: no complete response within {timeout:?}");
        }
        s.set_read_timeout(Some(left))?;
        let n = s
            .read(&mut chunk)
            .with_context(|| format!("reading from {addr}"))?;
        if n == 0 {
            // EOF: a response without content-length ends here.
            return parse_response_eof(&buf)
                .with_context(|| format!("{addr} closed after {} bytes", buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            bail!("{addr}: response over {MAX_RESPONSE} bytes");
        }
    }
}

/// A response head: status, headers (lower-case names), where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

/// The head, once it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some((status, headers, end + 4)))
}

pub(super) fn parse_response(buf: &[u8]) -> Result<Option<HttpResponse>> {
    let Some((status, headers, body_at)) = parse_head(buf)? else {
        return Ok(None);
    };
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match len {
        Some(len) if buf.len() >= body_at + len => Ok(Some(HttpResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&buf[body_at..body_at + len]).into_owned(),
        })),
        _ => Ok(None),
    }
}

fn parse_response_eof(buf: &[u8]) -> Result<HttpResponse> {
    let (status, headers, body_at) =
        parse_head(buf)?.ok_or_else(|| anyhow!("connection closed before a response head"))?;
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&buf[body_at..]).into_owned(),
    })
}

/// The "peer" section of one lbd's `/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub connected: bool,
    /// `cold`, `learning` or `warm`.
    pub phase: String,
    /// `digest.count`.
    pub count: u64,
    /// `digest.hash`, as lbd prints it (compared, never interpreted).
    pub hash: String,
    /// The whole section, for the logs.
    pub raw: Value,
}

impl PeerView {
    fn from_status(status: &Value) -> Result<Self> {
        let peer = status
            .get("peer")
            .ok_or_else(|| anyhow!("no \"peer\" section in /status: {status}"))?;
        let digest = peer
            .get("digest")
            .ok_or_else(|| anyhow!("no peer.digest in {peer}"))?;
        Ok(Self {
            connected: peer
                .get("connected")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            phase: peer
                .get("phase")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_ascii_lowercase(),
            count: digest
                .get("count")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("no peer.digest.count in {peer}"))?,
            hash: match digest.get("hash") {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => bail!("no peer.digest.hash in {peer}"),
            },
            raw: peer.clone(),
        })
    }

    pub fn is_warm(&self) -> bool {
        self.phase == "warm"
    }

    /// The digest as one comparable value.
    pub fn digest(&self) -> (u64, &str) {
        (self.count, &self.hash)
    }
}

/// A client pinned through the VIP: its cookie and the backend it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `NAME=VALUE`, as the client sends it back.
    pub cookie: String,
    pub backend: String,
    /// When the pinning response arrived.
    pub at: Instant,
}

/// Budget for one client request (connect + answer) in the pin/replay loops.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);

impl PairTopology {
    fn ns(&self, id: NodeId) -> String {
        self.lan.node(id).ns.clone()
    }

    /// A request to lbd's admin listener on node `id`.
    pub fn admin(&self, id: NodeId, method: &str, path: &str) -> Result<HttpResponse> {
        let (method, path) = (method.to_owned(), path.to_owned());
        in_netns(&self.ns(id), move || {
            http(
                SocketAddr::V4(ADMIN),
                &method,
                &path,
                &[],
                Duration::from_millis(500),
            )
        })
    }

    /// lbd's `/status` on node `id`.
    pub fn lbd_status(&self, id: NodeId) -> Result<Value> {
        let r = self.admin(id, "GET", "/status")?;
        if r.status != 200 {
            bail!("{id:?} /status: {} {}", r.status, r.body);
        }
        serde_json::from_str(&r.body).with_context(|| format!("{id:?} /status: {}", r.body))
    }

    /// The "peer" section of lbd's `/status` on node `id`.
    pub fn peer_view(&self, id: NodeId) -> Result<PeerView> {
        PeerView::from_status(&self.lbd_status(id)?)
    }

    /// `POST /backends/drain` (or `undrain`) of `backend` in pool `app` on node `id`, with
    /// the admin token the write endpoints require.
    pub fn drain(&self, id: NodeId, backend: SocketAddrV4, drained: bool) -> Result<()> {
        let verb = if drained { "drain" } else { "undrain" };
        let token_file = admin_token_path(self.lan.topo.dir());
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        let auth = format!("Bearer {}", token.trim());
        let path = format!("/backends/{verb}?pool=app&backend={backend}");
        let r = in_netns(&self.ns(id), move || {
            http(
                SocketAddr::V4(ADMIN),
                "POST",
                &path,
                &[("authorization", &auth)],
                Duration::from_millis(500),
            )
        })?;
        if r.status != 200 {
            bail!("{id:?} {verb} {backend}: {} {}", r.status, r.body.trim());
        }
        Ok(())
    }

    /// The backends of pool `app` that node `id`'s lbd reports drained (`/backends`).
    pub fn drained(&self, id: NodeId) -> Result<Vec<String>> {
        let r = self.admin(id, "GET", "/backends")?;
        if r.status != 200 {
            bail!("{id:?} /backends: {} {}", r.status, r.body.trim());
        }
        // "pool backend up healthy ejected drained in_flight", one line per backend.
        let mut out: Vec<String> = r
            .body
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&"app") && f.get(5) == Some(&"1"))
                    .then(|| f.get(1).map(|s| (*s).to_owned()))
                    .flatten()
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Waits until both nodes' peer links are connected and warm with equal digests (the
    /// pair's steady state); returns the views.
    pub fn await_peer_steady(&self, timeout: Duration) -> Result<(PeerView, PeerView)> {
        let mut last = None;
        crate::wait::eventually(timeout, Duration::from_millis(20), || {
            let (a, b) = (self.peer_view(NodeId::A)?, self.peer_view(NodeId::B)?);
            let ok = a.connected
                && b.connected
                && a.is_warm()
                && b.is_warm()
                && a.digest() == b.digest();
            last = Some((a, b));
            Ok(ok)
        })
        .map_err(|e| anyhow!("the peer link never settled: last {last:?}: {e:#}"))?;
        last.ok_or_else(|| anyhow!("no peer views"))
    }

    /// Waits, from `t0`, until both nodes' digests are equal and count at least `min`;
    /// polls every 10 ms until `deadline`. Returns the time from `t0` and the digest count.
    pub fn await_equal_digests(
        &self,
        t0: Instant,
        deadline: Instant,
        min: u64,
    ) -> Result<(Duration, u64)> {
        let mut last = None;
        let at = crate::wait::eventually_until(t0, deadline, Duration::from_millis(10), || {
            let (a, b) = (self.peer_view(NodeId::A)?, self.peer_view(NodeId::B)?);
            let ok = a.digest() == b.digest() && a.count >= min;
            last = Some((a.raw, b.raw));
            Ok(ok)
        })
        .map_err(|e| anyhow!("digests not equal (>= {min} records): last A, B {last:?}: {e:#}"))?;
        let count = self.peer_view(NodeId::A)?.count;
        Ok((at.saturating_duration_since(t0), count))
    }

    /// Impairs what node `id` sends on its peer interface: `tc netem loss L% delay Dms`.
    /// Returns what was applied.
    ///
    /// Some kernels (the Firecracker guests CI runs in) are built without `sch_netem`.
    /// There the loss is an nftables rule (`numgen random mod 100 < L drop` on egress), and
    /// the delay a `tbf` shaper (1 mbit/s, up to D ms of queue): queueing delay under load
    /// rather than a fixed delay, which is said in the returned text so the figures don't
    /// claim more than was done.
    pub fn impair_peer_link(&self, id: NodeId, loss_pct: u8, delay_ms: u32) -> Result<String> {
        cmd::require("tc")?;
        let ns = self.ns(id);
        let (loss, delay) = (format!("{loss_pct}%"), format!("{delay_ms}ms"));
        let netem = cmd::run(
            "tc",
            [
                "-n", &ns, "qdisc", "replace", "dev", PEER_IF, "root", "netem", "loss", &loss,
                "delay", &delay,
            ],
        );
        match netem {
            Ok(_) => return Ok(format!("netem loss {loss} delay {delay}")),
            Err(e) if format!("{e:#}").contains("qdisc kind is unknown") => {}
            Err(e) => return Err(e),
        }
        cmd::require("nft")?;
        let rules = format!(
            "table inet {NFT_TABLE} {{\n  chain out {{\n    type filter hook output priority 0; \
             policy accept;\n    oifname \"{PEER_IF}\" numgen random mod 100 < {loss_pct} counter drop\n  \
             }}\n}}\n"
        );
        let file = self.lan.topo.dir().join(format!("impair-{}.nft", role(id)));
        write_file(&file, &rules)?;
        cmd::run_in(&ns, "nft", &["-f", &file.to_string_lossy()])?;
        let latency = format!("{delay_ms}ms");
        cmd::run(
            "tc",
            [
                "-n", &ns, "qdisc", "replace", "dev", PEER_IF, "root", "tbf", "rate", "1mbit",
                "burst", "16kb", "latency", &latency,
            ],
        )?;
        Ok(format!(
            "no netem in this kernel: nft random drop {loss} + tbf 1mbit/s with {delay} of queue"
        ))
    }

    /// Packets [`Self::impair_peer_link`] has dropped on node `id` so far (netem's or the
    /// nft rule's counter): proof the impairment bit, so a run that converged did so
    /// despite losses rather than without any.
    pub fn impaired_drops(&self, id: NodeId) -> Result<u64> {
        let ns = self.ns(id);
        let mut drops = 0;
        let qdisc = cmd::run("tc", ["-n", &ns, "-s", "qdisc", "show", "dev", PEER_IF])?;
        if qdisc.contains("netem") {
            drops += number_after(&qdisc, "dropped ").unwrap_or(0);
        }
        if cmd::have("nft") {
            let tables = cmd::run_in(&ns, "nft", &["list", "tables"])?;
            if tables.contains(NFT_TABLE) {
                let t = cmd::run_in(&ns, "nft", &["list", "table", "inet", NFT_TABLE])?;
                drops += number_after(&t, "packets ").unwrap_or(0);
            }
        }
        Ok(drops)
    }

    /// Removes [`Self::impair_peer_link`]'s impairments from node `id`.
    pub fn unimpair_peer_link(&self, id: NodeId) -> Result<()> {
        let ns = self.ns(id);
        let qdiscs = cmd::run("tc", ["-n", &ns, "qdisc", "show", "dev", PEER_IF])?;
        if qdiscs.contains("netem") || qdiscs.contains("tbf") {
            cmd::run("tc", ["-n", &ns, "qdisc", "del", "dev", PEER_IF, "root"])?;
        }
        if cmd::have("nft") {
            let tables = cmd::run_in(&ns, "nft", &["list", "tables"])?;
            if tables.contains(NFT_TABLE) {
                cmd::run_in(&ns, "nft", &["delete", "table", "inet", NFT_TABLE])?;
            }
        }
        Ok(())
    }

    /// Sets node `id`'s peer interface up or down (the other end loses its carrier too).
    pub fn set_peer_link(&self, id: NodeId, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        cmd::ip(&["-n", &self.ns(id), "link", "set", PEER_IF, state])?;
        Ok(())
    }

    /// One request from the client to `target` with `headers`, on a fresh connection.
    pub fn client_request(
        &self,
        target: SocketAddrV4,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        in_netns(&self.ns(NodeId::Client), move || {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            http(SocketAddr::V4(target), "GET", "/", &h, CLIENT_TIMEOUT)
        })
    }

    /// The VIP listener of instance 0 ("web").
    pub fn vip_target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.vip(0), VIP_PORT)
    }

    /// Node `id`'s `direct` listener.
    pub fn direct_target(&self, id: NodeId) -> SocketAddrV4 {
        SocketAddrV4::new(self.lan.node(id).addr, DIRECT_PORT)
    }

    /// Pins `n` new clients through `target`: each sends one request without cookies and
    /// keeps the sticky cookie (`cookie`) the response sets and the backend that answered.
    /// A failed attempt is retried (a fresh connection) until `budget` runs out.
    pub fn pin_clients(
        &self,
        target: SocketAddrV4,
        cookie: &str,
        n: usize,
        budget: Duration,
    ) -> Result<Vec<Pinned>> {
        let cookie = cookie.to_owned();
        in_netns(&self.ns(NodeId::Client), move || {
            let deadline = Instant::now() + budget;
            let mut out = Vec::with_capacity(n);
            let mut last_err = None;
            while out.len() < n {
                if Instant::now() >= deadline {
                    bail!(
                        "pinned only {} of {n} clients within {budget:?}; last: {last_err:?}",
                        out.len()
                    );
                }
                match http(SocketAddr::V4(target), "GET", "/", &[], CLIENT_TIMEOUT) {
                    Ok(r) if r.status == 200 => {
                        let (Some(value), Some(backend)) = (r.set_cookie(&cookie), r.backend())
                        else {
                            bail!("no {cookie} cookie or x-backend in {r:?}");
                        };
                        out.push(Pinned {
                            cookie: format!("{cookie}={value}"),
                            backend: backend.to_owned(),
                            at: Instant::now(),
                        });
                    }
                    Ok(r) => last_err = Some(format!("status {} {}", r.status, r.body.trim())),
                    Err(e) => last_err = Some(format!("{e:#}")),
                }
            }
            Ok(out)
        })
    }

    /// Sends each pinned client's cookie to `target` once more: the backend each reached
    /// (`None`: no 200 within `budget` of retries, which counts as lost).
    pub fn replay_clients(
        &self,
        target: SocketAddrV4,
        pinned: &[Pinned],
        budget: Duration,
    ) -> Result<Vec<Option<String>>> {
        let cookies: Vec<String> = pinned.iter().map(|p| p.cookie.clone()).collect();
        in_netns(&self.ns(NodeId::Client), move || {
            let deadline = Instant::now() + budget;
            let mut out = Vec::with_capacity(cookies.len());
            for c in &cookies {
                let mut got = None;
                while got.is_none() && Instant::now() < deadline {
                    let r = http(
                        SocketAddr::V4(target),
                        "GET",
                        "/",
                        &[("cookie", c)],
                        CLIENT_TIMEOUT,
                    );
                    if let Ok(r) = r {
                        if r.status == 200 {
                            got = r.backend().map(str::to_owned);
                        }
                    }
                }
                out.push(got);
            }
            Ok(out)
        })
    }
}

/// The number right after the first `key` in `text` ("dropped 12," -> 12).
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// How many of `pinned` reached their own backend in `replayed`.
pub fn same_backend(pinned: &[Pinned], replayed: &[Option<String>]) -> usize {
    pinned
        .iter()
        .zip(replayed)
        .filter(|(p, r)| r.as_deref() == Some(p.backend.as_str()))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_with_cookies_and_a_body() {
        let raw = b"HTTP/1.1 200 OK\r\nX-Backend: be2\r\nSet-Cookie: a=1; Path=/\r\n\
                    set-cookie: JSESSIONID=be2.7.1; Path=/; HttpOnly\r\ncontent-length: 4\r\n\r\nbe2\n";
        let r = parse_response(raw).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), Some("be2"));
        assert_eq!(r.set_cookie("JSESSIONID").as_deref(), Some("be2.7.1"));
        assert_eq!(r.set_cookie("a").as_deref(), Some("1"));
        assert_eq!(r.set_cookie("b"), None);
        assert_eq!(r.body, "be2\n");
    }

    #[test]
    fn waits_for_the_whole_body() {
        let raw = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 10\r\n\r\nslow";
        assert!(parse_response(raw).unwrap().is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        let r = parse_response_eof(raw).unwrap();
        assert_eq!(r.status, 429);
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn counters_are_read_from_tc_and_nft_output() {
        let tc = "qdisc netem 8001: root refcnt 2 limit 1000 delay 50ms loss 20%\n \
                  Sent 1234 bytes 20 pkt (dropped 7, overlimits 0 requeues 0)";
        assert_eq!(number_after(tc, "dropped "), Some(7));
        let nft = "oifname \"peer0\" numgen random mod 100 < 20 counter packets 31 bytes 2000 drop";
        assert_eq!(number_after(nft, "packets "), Some(31));
        assert_eq!(number_after("nothing", "packets "), None);
    }

    #[test]
    fn peer_view_reads_status() {
        let st: Value = serde_json::from_str(
            r#"{"node":"a","peer":{"connected":true,"phase":"Warm",
                "digest":{"count":3,"hash":"0badf00d"}}}"#,
        )
        .unwrap();
        let v = PeerView::from_status(&st).unwrap();
        assert!(v.connected && v.is_warm());
        assert_eq!(v.digest(), (3, "0badf00d"));
        assert!(PeerView::from_status(&serde_json::json!({"node": "a"})).is_err());
    }
}
