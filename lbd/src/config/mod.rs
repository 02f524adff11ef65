//! lbd's config: TOML file structs → [`validate`] → typed [`LbConfig`].
//!
//! Stage 1 ([`FileConfig`] and friends) is plain serde with `deny_unknown_fields`. Enumerated
//! values (algorithms, health kinds, log formats) are read as strings on purpose: serde would stop
//! at the first bad enum, while [`validate`] reports *every* problem in one run, each with its
//! file, line, key and the valid values (see [`shared::config`]).
//!
//! Stage 2 turns names into indices (routes point at pools by [`PoolId`]-style indices), strings
//! into `SocketAddr`/`Duration`/[`Algorithm`], and applies the documented `DEFAULT_*` constants.
//! Every later stage (router, balancers, proxy) can then trust the config without re-checking.
//!
//! Layout: `file` (stage 1 structs); stage 2 is `validate` (the entry point and shared helpers)
//! calling one function per section: `global` ([global], [timeouts], [limits]), `request_policy`
//! ([headers], [paths], [retries]), `listeners`, `pools` (pools, balancing, health), `routes` (routes,
//! `default_pool`), `vrrp`, `rate_limits` and `peer`; the typed runtime config is here.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use shared::config::{ConfigError, Source};
use shared::telemetry::LogFormat;

pub use crate::l7::path::{EncodedSlash, PathPolicy};
use crate::l7::router::RouteRule;
use crate::upstream::backend::{BackendSpec, PoolId};
use crate::upstream::balance::Algorithm;
use crate::upstream::health::{ActiveConfig, EjectionConfig};

// ---- defaults and clamps (documented in doc/lbd.md) ----

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
/// Open client connections. Most of a balancer's connections are idle keep-alive ones, which
/// lbd parks for about 1.6 KiB each (`crate::park`): 50 000 of them fit in the shipped unit's
/// `LimitNOFILE=65536` with room for upstream connections (it was 10 000).
pub const DEFAULT_MAX_CLIENT_CONNS: u32 = 50_000;
pub const DEFAULT_CONNECT_MS: u64 = 2_000;
pub const DEFAULT_REQUEST_HEADER_MS: u64 = 10_000;
pub const DEFAULT_BACKEND_RESPONSE_MS: u64 = 30_000;
pub const DEFAULT_CLIENT_IDLE_MS: u64 = 60_000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Request body bound (`limits.max_request_body_bytes`): large enough for ordinary uploads
/// (nginx's 1 MiB default breaks them by surprise), small enough that one request cannot make
/// a backend read and store gigabytes (the same bound as Cloudflare's default plans).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 100 * 1024 * 1024;
/// Largest accepted body limit: there is no "unlimited", only a very large bound.
pub const MAX_REQUEST_BODY_BYTES_LIMIT: u64 = 1 << 40;
/// Open connections per client IP (`global.max_conns_per_client`): far above what one
/// browser or service opens, because NAT and carrier-grade NAT put many users behind one
/// address; low enough that one address cannot take all of `max_client_conns`.
pub const DEFAULT_MAX_CONNS_PER_CLIENT: u32 = 1_000;
pub const DEFAULT_QUEUE_SIZE: u32 = 0;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1_000;
/// Idle upstream connections kept per backend (per worker) when neither `idle_max` nor the
/// backend's `max_conns` bounds them. A small fixed default (it was 32) made 50 concurrent
/// keep-alive clients churn upstream connections: every request over the bound paid a
/// connect and the backend an accept. HAProxy bounds idle server connections by the
/// server's `maxconn`; lbd does the same, and uses this when `max_conns` is unlimited.
pub const DEFAULT_IDLE_MAX: u32 = 1024;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
pub const DEFAULT_RETRY_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_VIA_NAME: &str = "lbd";
/// `[[rate_limit]] ipv6_prefix_len`: an IPv6 client's /64 is one bucket (IPv4: /32).
pub const DEFAULT_RATE_LIMIT_IPV6_PREFIX_LEN: u8 = 64;
/// Response header naming the node that served (`headers.node_header`; "" turns it off).
pub const DEFAULT_NODE_HEADER: &str = "x-lbpair-node";
/// Node name when neither `global.node_name` nor the hostname is available.
pub const FALLBACK_NODE_NAME: &str = "lbd";
// [vrrp]: the coupling to vrrpd (doc/lbd.md "Pair with vrrpd").
pub const DEFAULT_VRRP_HEARTBEAT_INTERVAL_MS: u64 = 100;
pub const DEFAULT_VRRP_RECONNECT_INTERVAL_MS: u64 = 50;
/// Lost-vrrpd timeout when no event has carried `master_down_ms` yet.
pub const DEFAULT_VRRP_LOST_TIMEOUT_MS: u64 = 3_000;
pub const DEFAULT_VRRP_DRAIN_TIMEOUT_MS: u64 = 5_000;
// Sticky sessions and rate limits (doc/lbd.md "Sticky sessions", "Rate limits").
/// The cookie lbd sets in insert mode.
pub const DEFAULT_STICKY_COOKIE: &str = "LBSTICKY";
pub const DEFAULT_STICKY_TTL_S: u64 = 3_600;
pub const DEFAULT_STICKY_PATH: &str = "/";
/// Learn-mode table bound per pool (their sum bounds the shared table).
pub const DEFAULT_STICKY_MAX_ENTRIES: usize = 100_000;
/// Rate-limit buckets kept (LRU beyond it).
pub const DEFAULT_RATE_LIMIT_MAX_KEYS: usize = 100_000;
/// Learn-mode table byte bound per pool (estimated bytes; their sum bounds the shared table).
pub const DEFAULT_STICKY_MAX_BYTES: usize = crate::softstate::DEFAULT_STICKY_MAX_BYTES;
/// Longest session cookie value learned.
pub const DEFAULT_STICKY_MAX_KEY_BYTES: usize = crate::softstate::DEFAULT_STICKY_MAX_KEY_BYTES;
/// Rate-limit table byte bound (estimated bytes).
pub const DEFAULT_RATE_LIMIT_MAX_BYTES: usize = crate::softstate::DEFAULT_RATE_MAX_BYTES;
/// Longest rate-limit key used as is (longer ones are hashed).
pub const DEFAULT_RATE_LIMIT_MAX_KEY_BYTES: usize = crate::softstate::DEFAULT_RATE_MAX_KEY_BYTES;
/// `global.tls_ticket_rotate_s` when the config does not say: an hour, as nginx and HAProxy
/// advise rotating.
pub const DEFAULT_TLS_TICKET_ROTATE: Duration = Duration::from_secs(3600);
/// The longest `global.tls_ticket_rotate_s`: a day (a peer's keys are kept two at most).
pub const MAX_TLS_TICKET_ROTATE: Duration = Duration::from_secs(86_400);
/// Range of the soft-state byte bounds: below 64 KiB a table holds too few long keys to be
/// useful; 16 GiB is far beyond any sensible table.
pub const MIN_TABLE_BYTES: usize = 64 << 10;
pub const MAX_TABLE_BYTES: usize = 16 << 30;
/// Smallest key cap: no real session id or client key needs less.
pub const MIN_KEY_CAP_BYTES: usize = 64;
/// Shortest accepted `global.cookie_secret_file` content: an HMAC key below 128 bits is
/// guessable.
pub const MIN_COOKIE_SECRET_BYTES: usize = 16;
/// Shortest accepted `global.admin_token_file` content (after trimming whitespace).
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// `global.soft_state_flush_ms` when the config does not say.
pub const DEFAULT_SOFT_STATE_FLUSH_MS: u64 = 20;
/// The longest `global.soft_state_flush_ms`: a second of changes lost to a crash at most.
pub const MAX_SOFT_STATE_FLUSH_MS: u64 = 1000;

const MS_MAX: u64 = 3_600_000;
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
const ALGORITHMS: &str = "\"round_robin\", \"weighted_round_robin\" (alias \"swrr\"), \
     \"least_conn\", \"p2c\", \"ip_hash\" or \"maglev\"";
// ---- stage 2: the typed runtime config ----

/// Access log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Off,
    Plain,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalConfig {
    pub log_format: LogFormat,
    pub log_level: String,
    pub admin: SocketAddr,
    pub drain_timeout: Duration,
    pub max_client_conns: u32,
    pub access_log: AccessLogFormat,
    /// Names this balancer in the node header and `/status`.
    pub node_name: String,
    /// The insert-mode cookie key read from `cookie_secret_file`; `None`: a random key per
    /// process (cookies then don't survive a failover or restart).
    pub cookie_secret: Option<CookieSecret>,
    /// The bearer token of the admin write endpoints, from `admin_token_file`; `None`: the
    /// write endpoints are disabled.
    pub admin_token: Option<AdminToken>,
    /// Open connections allowed from one client IP (the TCP peer); 0: no cap.
    pub max_conns_per_client: u32,
    /// Worker threads (`--workers` overrides); `None`: one per CPU.
    pub workers: Option<usize>,
    /// Bound on rate-limit buckets (the soft-state table's LRU size).
    pub rate_limit_max_keys: usize,
    /// Bound on the rate-limit table's estimated bytes.
    pub rate_limit_max_bytes: usize,
    /// Serve plain HTTP/1.1 keep-alive requests on lbd's own HTTP/1 path ([`crate::l7::plain`])
    /// and hand anything else to hyper; `false`: hyper serves every HTTP/1 connection.
    pub http1_fast_path: bool,
    /// How often TLS session-ticket keys rotate; also the ticket lifetime announced to
    /// clients (a key is drawn one period ahead and erased two periods after it started
    /// sealing): `crate::tls::tickets`.
    pub tls_ticket_rotate: Duration,
    /// `soft_state_file`, resolved against the config file's directory: the soft state is
    /// loaded from it at start and journaled to it ([`crate::softstate::persist`]). Read at
    /// start only; a reload does not change it.
    pub soft_state_file: Option<PathBuf>,
    /// How often the state file's journal is flushed.
    pub soft_state_flush: Duration,
}

/// Key material for the sticky cookie MAC; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieSecret(pub Vec<u8>);

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieSecret({} bytes)", self.0.len())
    }
}

/// The admin write endpoints' bearer token; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub Vec<u8>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken({} bytes)", self.0.len())
    }
}

/// How a pool pins clients to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyMode {
    /// lbd sets its own signed cookie naming the backend.
    Insert,
    /// lbd learns the application's session cookie into the soft-state table.
    Learn,
}

/// The `SameSite` attribute of the insert-mode cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// `[pool.sticky]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyConfig {
    pub mode: StickyMode,
    /// Insert: the cookie lbd sets; learn: the application's cookie it learns.
    pub cookie: String,
    /// Insert: the cookie's Max-Age; learn: how long an unused table entry lives.
    pub ttl: Duration,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    pub path: String,
    /// Learn: this pool's share of the sticky table bound.
    pub max_entries: usize,
    /// Learn: this pool's share of the sticky table's byte bound (estimated bytes).
    pub max_bytes: usize,
    /// Learn: the longest cookie value learned; longer ones are served but not learned.
    pub max_key_bytes: usize,
}

/// What a rate limiter counts requests by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's IP address (the TCP peer).
    ClientIp,
    /// The value of this request header; requests without it are not counted by this limiter.
    Header(HeaderName),
    /// The matched route's name (one bucket per route).
    Route,
}

/// `[[rate_limit]]`: a token bucket per key.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub name: String,
    pub key: RateKey,
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size: requests allowed in a burst.
    pub burst: u32,
    /// The longest key used as is; a longer one is replaced by its SHA-256
    /// ([`crate::softstate::bounded_key`]).
    pub max_key_bytes: usize,
    /// Route names (indices into `LbConfig::routes`) this limiter applies to; empty: every
    /// request.
    pub routes: Vec<usize>,
    /// `client_ip` keys: an IPv6 client is keyed by its first this many bits (one host often
    /// holds a whole /64, so a per-address bucket would be no limit); IPv4 by its address.
    pub ipv6_prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub request_header: Duration,
    pub backend_response: Duration,
    pub client_idle: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sum of `name: value\r\n` sizes above which the request gets 431.
    pub max_header_bytes: usize,
    /// Request-target length above which the request gets 414.
    pub max_request_line: usize,
    /// Request body size above which the request gets 413 (routes may override it).
    pub max_request_body_bytes: u64,
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (dual-stack socket) is compared as IPv4.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP network (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: prefix must be 0..={max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

/// Which forwarding headers the proxy adds, and whose X-Forwarded-For it believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPolicy {
    pub x_forwarded_for: bool,
    pub x_forwarded_proto: bool,
    pub x_forwarded_host: bool,
    /// `X-Forwarded-Port`: the port the client connected to.
    pub x_forwarded_port: bool,
    /// `X-Real-IP`: the real client address ([`crate::l7::headers::real_client`]).
    pub x_real_ip: bool,
    pub forwarded: bool,
    pub via: bool,
    /// `Via: 1.1 NAME` (pre-built value).
    pub via_value: HeaderValue,
    /// Peers whose forwarding headers are believed and kept: their X-Forwarded-For names the
    /// real client, and their X-Real-IP, Forwarded and X-Forwarded-Proto/Host/Port pass
    /// through; from anyone else those are removed.
    pub trusted_proxies: Vec<Cidr>,
    /// Added to every response: which balancer answered (clients and the failover suite
    /// tell the nodes apart by it). `None` when `headers.node_header = ""`.
    pub node_header: Option<(HeaderName, HeaderValue)>,
}

impl HeaderPolicy {
    /// Is `peer` one of `trusted_proxies`?
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(peer))
    }
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
            x_forwarded_port: false,
            x_real_ip: false,
            forwarded: false,
            via: true,
            via_value: HeaderValue::from_static("1.1 lbd"),
            trusted_proxies: Vec::new(),
            node_header: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first (0 disables retries).
    pub attempts: u32,
    /// Retries allowed as a percentage of requests (the budget's deposit per request).
    pub budget_percent: u32,
    /// Retries always allowed per second regardless of traffic (the budget's floor).
    pub min_per_sec: u32,
    /// Request bodies up to this size are buffered so the request can be replayed.
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub freebind: bool,
    /// Bound only while vrrpd is Master for this instance (`None`: always bound).
    pub vrrp_instance: Option<String>,
    /// TLS termination (`None`: plain HTTP).
    pub tls: Option<TlsConfig>,
}

/// A route's HTTPS policy (`[[route]] redirect_to_https`, `hsts_*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteHttps {
    /// Redirect plain-HTTP requests to HTTPS; `Some(None)`: the default port.
    pub redirect: Option<Option<u16>>,
    /// The `Strict-Transport-Security` value for HTTPS responses.
    pub hsts: Option<http::HeaderValue>,
}

/// `[listener.tls]`: what to load. The files are read, parsed and checked when a runtime
/// snapshot is built (at start and on every reload, so a replaced file is picked up), see
/// `crate::tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The first pair is the default certificate.
    pub certs: Vec<CertPairConfig>,
    pub unknown_sni: UnknownSni,
    pub min_version: TlsVersion,
    pub expiry_warning: Duration,
    /// How often the files are checked for changes (`None`: only on reload).
    pub watch: Option<Duration>,
    /// Client certificates (`None`: not asked for).
    pub client: Option<ClientAuthConfig>,
}

/// `client_ca` and friends: who may present a client certificate, and where its subject goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthConfig {
    /// CA certificates (PEM) a client certificate must chain to.
    pub ca: PathBuf,
    /// Without a certificate the handshake fails; `false`: it goes on, unauthenticated.
    pub required: bool,
    /// Set upstream to the verified certificate's subject (and always removed from what the
    /// client sent, so it cannot be forged).
    pub subject_header: http::HeaderName,
}

/// One certificate chain file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPairConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// An OCSP response (DER) stapled to handshakes with this certificate.
    pub ocsp: Option<PathBuf>,
}

/// What a handshake without SNI, or with a name no certificate covers, gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSni {
    /// The first certificate pair.
    Default,
    /// The handshake is refused.
    Refuse,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// When lbd tells vrrpd it cannot serve because a pool has no healthy backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnableWhen {
    /// Never for backend reasons.
    Never,
    /// Any pool without a healthy backend.
    AnyPool,
    /// One of these pools (by name) without a healthy backend.
    Pools(Vec<String>),
}

/// `[vrrp]`: the coupling to the local vrrpd (see `crate::coupling`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    /// vrrpd's control socket.
    pub socket: PathBuf,
    pub heartbeat_interval: Duration,
    /// Pause between connection attempts while vrrpd is unreachable.
    pub reconnect_interval: Duration,
    /// Stop serving after losing vrrpd this long; `None`: the instance's `master_down_ms`
    /// from its last event (else [`DEFAULT_VRRP_LOST_TIMEOUT_MS`]).
    pub lost_timeout: Option<Duration>,
    pub unable_when_no_healthy_backend: UnableWhen,
    /// How long a switchover drain waits for in-flight requests (and a stopped listener's
    /// connections get to finish).
    pub drain_timeout: Duration,
}

/// The active probe of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// No active checks: backends stay Healthy; only passive ejection applies.
    None,
    /// TCP connect succeeds.
    Tcp,
    /// An HTTP request whose status lies in `expect`.
    Http {
        method: Method,
        path: String,
        host: Option<String>,
        expect: (u16, u16),
    },
    /// `grpc.health.v1.Health/Check` over HTTP/2 (h2c): up only when the answer is SERVING.
    Grpc {
        /// The service asked about (`""`: the server as a whole).
        service: String,
        /// The `:authority` sent (default: the backend's address).
        host: Option<String>,
    },
}

/// What lbd speaks to a pool's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 keep-alive connections, one request at a time each.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c): a few multiplexed connections per backend. gRPC
    /// needs it.
    H2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub active: ActiveConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    pub algorithm: Algorithm,
    pub backends: Vec<BackendSpec>,
    pub health: HealthCheckConfig,
    pub ejection: EjectionConfig,
    /// Requests that may wait for a backend below `max_conns` (0: answer 503 at once).
    pub queue_size: u32,
    pub queue_timeout: Duration,
    /// Idle upstream connections kept per backend (per worker); `None`: the backend's
    /// `max_conns`, or [`DEFAULT_IDLE_MAX`] when that is unlimited ([`PoolConfig::idle_max_for`]).
    pub idle_max: Option<u32>,
    pub idle_timeout: Duration,
    /// `None`: no stickiness (the balancer decides every request).
    pub sticky: Option<StickyConfig>,
    pub protocol: UpstreamProtocol,
    /// `None`: plain HTTP to the backends.
    pub tls: Option<UpstreamTlsConfig>,
}

/// `[pool.tls]`: TLS to a pool's backends. The files were read and checked by [`validate`]
/// and are read again when a snapshot is built (`crate::upstream::tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// CA certificates (PEM) the backends' certificates must chain to.
    pub ca: PathBuf,
    /// Sent as SNI and checked against the backends' certificates: a DNS name or an IP address.
    pub server_name: String,
    /// lbd's client certificate and key, for backends that ask for one (`ocsp` is unused).
    pub client_cert: Option<CertPairConfig>,
    /// Offer `h2` by ALPN instead of `http/1.1` (the pool's `protocol = "h2"`).
    pub h2: bool,
}

impl PoolConfig {
    /// The idle bound of one backend's connection pool: `idle_max` when set, else the
    /// backend's `max_conns` (more idle connections than it may have busy ones are never
    /// needed), else [`DEFAULT_IDLE_MAX`].
    pub fn idle_max_for(&self, backend: &BackendSpec) -> u32 {
        match (self.idle_max, backend.max_conns) {
            (Some(n), _) => n,
            (None, 0) => DEFAULT_IDLE_MAX,
            (None, max_conns) => max_conns,
        }
    }
}

/// The validated config lbd runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    pub global: GlobalConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub headers: HeaderPolicy,
    /// How request paths are normalised before routing.
    pub paths: PathPolicy,
    pub retries: RetryPolicy,
    /// Downstream HTTP/2 limits.
    pub http2: http2::Http2Config,
    /// `None`: standalone, every listener always bound.
    pub vrrp: Option<VrrpConfig>,
    /// `None`: no peer link.
    pub peer: Option<peer::PeerConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    /// Routing rules in match order, pools as indices into `pools`.
    pub routes: Vec<RouteRule>,
    /// Per route (same index as `routes`): the `Upgrade` protocols tunnelled besides
    /// `websocket`, lowercase (`[[route]] upgrades`). Every other upgrade is stripped.
    pub route_upgrades: Vec<Vec<String>>,
    /// `route[i].max_request_body_bytes`, by index into `routes` (`None`: the global limit).
    pub route_body_limits: Vec<Option<u64>>,
    /// Per route (same index as `routes`): HTTPS redirect and HSTS.
    pub route_https: Vec<RouteHttps>,
    pub default_pool: Option<PoolId>,
    /// Checked in order; the first denial answers 429.
    pub rate_limits: Vec<RateLimitConfig>,
}

impl LbConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<LbConfig, ConfigError> {
        let source = Source::read(path)?;
        Self::from_source(&source)
    }

    pub fn from_source(source: &Source) -> Result<LbConfig, ConfigError> {
        let file: FileConfig = source.parse()?;
        validate(source, &file)
    }

    pub fn pool_index(&self, name: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.name == name)
    }

    /// The request body limit of a request that matched route `rule` (`None`: no route, the
    /// default pool).
    /// The matched route's HTTPS policy (`None`: no route, or nothing set).
    pub fn route_https(&self, rule: Option<usize>) -> Option<&RouteHttps> {
        rule.and_then(|i| self.route_https.get(i))
    }

    pub fn body_limit(&self, rule: Option<usize>) -> u64 {
        rule.and_then(|i| self.route_body_limits.get(i).copied().flatten())
            .unwrap_or(self.limits.max_request_body_bytes)
    }
}

mod file;
mod global;
pub mod http2;
mod listeners;
pub mod peer;
mod pools;
mod rate_limits;
mod request_policy;
mod routes;
mod upstream_tls;
mod validate;
mod vrrp;

pub use file::*;
pub use validate::validate;

#[cfg(test)]
mod tests;
