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

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::Deserialize;
use shared::config::{ConfigError, Source, Validator};
use shared::telemetry::LogFormat;

use crate::l7::router::{HeaderMatch, HostMatch, PathMatch, RouteRule, RouteTarget, Router};
use crate::upstream::backend::{BackendSpec, PoolId};
use crate::upstream::balance::{Algorithm, HashKey};
use crate::upstream::health::{
    ActiveConfig, EjectionConfig, HealthState, DEFAULT_EJECT_DECAY_AFTER,
};

// ---- defaults and clamps (documented in doc/lbd.md) ----

pub const DEFAULT_ADMIN: &str = "127.0.0.1:9100";
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_CLIENT_CONNS: u32 = 10_000;
pub const DEFAULT_CONNECT_MS: u64 = 2_000;
pub const DEFAULT_REQUEST_HEADER_MS: u64 = 10_000;
pub const DEFAULT_BACKEND_RESPONSE_MS: u64 = 30_000;
pub const DEFAULT_CLIENT_IDLE_MS: u64 = 60_000;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
pub const DEFAULT_QUEUE_SIZE: u32 = 0;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_IDLE_MAX: u32 = 32;
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_HEALTH_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
pub const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
pub const DEFAULT_RETRY_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_VIA_NAME: &str = "lbd";
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

const MS_MAX: u64 = 3_600_000;
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];
const ALGORITHMS: &str = "\"round_robin\", \"weighted_round_robin\" (alias \"swrr\"), \
     \"least_conn\", \"p2c\", \"ip_hash\" or \"maglev\"";

// ---- stage 1: file structs ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Pool used when no route matches; absent means 404.
    pub default_pool: Option<String>,
    #[serde(default)]
    pub global: FileGlobal,
    #[serde(default)]
    pub timeouts: FileTimeouts,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub headers: FileHeaders,
    #[serde(default)]
    pub retries: FileRetries,
    /// Absent: lbd runs standalone and serves every listener all the time.
    pub vrrp: Option<FileVrrp>,
    #[serde(default)]
    pub listener: Vec<FileListener>,
    #[serde(default)]
    pub pool: Vec<FilePool>,
    #[serde(default)]
    pub route: Vec<FileRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGlobal {
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub admin: Option<String>,
    pub drain_timeout_ms: Option<u64>,
    pub max_client_conns: Option<u32>,
    pub access_log: Option<String>,
    /// This balancer's name in the node header and `/status` (default: the hostname).
    pub node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect_ms: Option<u64>,
    pub request_header_ms: Option<u64>,
    pub backend_response_ms: Option<u64>,
    pub client_idle_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_header_bytes: Option<usize>,
    pub max_request_line: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaders {
    pub x_forwarded_for: Option<bool>,
    pub x_forwarded_proto: Option<bool>,
    pub x_forwarded_host: Option<bool>,
    pub forwarded: Option<bool>,
    pub via: Option<bool>,
    pub via_name: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Response header carrying `global.node_name`; "" disables it.
    pub node_header: Option<String>,
}

/// `[vrrp]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVrrp {
    pub socket: Option<String>,
    pub heartbeat_interval_ms: Option<u64>,
    pub reconnect_interval_ms: Option<u64>,
    pub lost_timeout_ms: Option<u64>,
    pub unable_when_no_healthy_backend: Option<BoolOrList>,
    pub drain_timeout_ms: Option<u64>,
}

/// `true`/`false` or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum BoolOrList {
    Bool(bool),
    List(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    pub attempts: Option<u32>,
    pub budget_percent: Option<u32>,
    pub min_per_sec: Option<u32>,
    pub max_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Option<String>,
    pub address: Option<String>,
    /// Bind even if the address is not (yet) local: a VIP held by the peer (IP_FREEBIND).
    pub freebind: Option<bool>,
    /// Bind only while vrrpd is Master for this instance (needs `[vrrp]`).
    pub vrrp_instance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePool {
    pub name: Option<String>,
    pub algorithm: Option<String>,
    pub hash_key: Option<String>,
    pub queue_size: Option<u32>,
    pub queue_timeout_ms: Option<u64>,
    #[serde(default)]
    pub keepalive: FileKeepalive,
    #[serde(default)]
    pub backend: Vec<FileBackend>,
    pub health: Option<FileHealth>,
    #[serde(default)]
    pub passive: FilePassive,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeepalive {
    pub idle_max: Option<u32>,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub name: Option<String>,
    pub address: Option<String>,
    pub weight: Option<u32>,
    pub max_conns: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealth {
    pub kind: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expect_status: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    /// Start backends Unhealthy until `rise` probes pass (default: start Healthy).
    pub start_unhealthy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePassive {
    pub consecutive_failures: Option<u32>,
    pub base_eject_ms: Option<u64>,
    pub max_eject_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<String>,
    pub host: Option<String>,
    pub path_exact: Option<String>,
    pub path_prefix: Option<String>,
    pub header: Option<FileHeaderMatch>,
    pub methods: Option<Vec<String>>,
    pub pool: Option<String>,
    pub split: Option<Vec<FileSplit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHeaderMatch {
    pub name: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSplit {
    pub pool: Option<String>,
    pub weight: Option<u32>,
}

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
    pub forwarded: bool,
    pub via: bool,
    /// `Via: 1.1 NAME` (pre-built value).
    pub via_value: HeaderValue,
    /// Peers allowed to send us X-Forwarded-For; from anyone else it is replaced.
    pub trusted_proxies: Vec<Cidr>,
    /// Added to every response: which balancer answered (clients and the failover suite
    /// tell the nodes apart by it). `None` when `headers.node_header = ""`.
    pub node_header: Option<(HeaderName, HeaderValue)>,
}

impl Default for HeaderPolicy {
    fn default() -> Self {
        HeaderPolicy {
            x_forwarded_for: true,
            x_forwarded_proto: true,
            x_forwarded_host: true,
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

/// `[vrrp]`: the coupling to the local vrrpd (see `crate::vrrp`).
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
    /// Idle upstream connections kept per backend.
    pub idle_max: u32,
    pub idle_timeout: Duration,
}

/// The validated config lbd runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct LbConfig {
    pub global: GlobalConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub headers: HeaderPolicy,
    pub retries: RetryPolicy,
    /// `None`: standalone, every listener always bound.
    pub vrrp: Option<VrrpConfig>,
    pub listeners: Vec<ListenerConfig>,
    pub pools: Vec<PoolConfig>,
    /// Routing rules in match order, pools as indices into `pools`.
    pub routes: Vec<RouteRule>,
    pub default_pool: Option<PoolId>,
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
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Check a millisecond value and turn it into a Duration (the default when absent).
fn check_ms(
    v: &mut Validator<'_>,
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Duration {
    let value = value.unwrap_or(default);
    v.check_range(key, value, min, max);
    ms(value)
}

fn required<'a>(v: &mut Validator<'_>, key: &str, value: &'a Option<String>) -> Option<&'a str> {
    match value.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(s),
        Some(_) => {
            v.error(key, "must not be empty");
            None
        }
        None => {
            v.error(key, "is required");
            None
        }
    }
}

fn parse_addr(v: &mut Validator<'_>, key: &str, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            v.error(
                key,
                format!(
                    "{s:?} is not an IP:port address (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"
                ),
            );
            None
        }
    }
}

/// Validate the parsed file, reporting every problem, and build the runtime config.
pub fn validate(source: &Source, file: &FileConfig) -> Result<LbConfig, ConfigError> {
    let mut v = Validator::new(source);

    // [global]
    let g = &file.global;
    let log_format = match g.log_format.as_deref() {
        None | Some("plain") => LogFormat::Plain,
        Some("json") => LogFormat::Json,
        Some(other) => {
            v.error(
                "global.log_format",
                format!(
                    "{other:?} is not a log format (valid: {})",
                    LogFormat::VALID
                ),
            );
            LogFormat::Plain
        }
    };
    let log_level = g.log_level.clone().unwrap_or_else(|| "info".into());
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        v.error(
            "global.log_level",
            format!(
                "{log_level:?} is not a level (valid: {})",
                LOG_LEVELS.join(", ")
            ),
        );
    }
    let admin = parse_addr(
        &mut v,
        "global.admin",
        g.admin.as_deref().unwrap_or(DEFAULT_ADMIN),
    )
    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9100)));
    let drain_timeout = check_ms(
        &mut v,
        "global.drain_timeout_ms",
        g.drain_timeout_ms,
        DEFAULT_DRAIN_TIMEOUT_MS,
        0,
        MS_MAX,
    );
    let max_client_conns = g.max_client_conns.unwrap_or(DEFAULT_MAX_CLIENT_CONNS);
    v.check_range("global.max_client_conns", max_client_conns, 1, 1_000_000);
    let access_log = match g.access_log.as_deref() {
        None | Some("plain") => AccessLogFormat::Plain,
        Some("off") => AccessLogFormat::Off,
        Some("json") => AccessLogFormat::Json,
        Some(other) => {
            v.error(
                "global.access_log",
                format!(
                    "{other:?} is not an access log format (valid: \"off\", \"plain\", \"json\")"
                ),
            );
            AccessLogFormat::Off
        }
    };
    let node_name = match g.node_name.as_deref() {
        Some(n) => n.trim().to_string(),
        None => hostname(),
    };
    if node_name.is_empty() || HeaderValue::from_str(&node_name).is_err() {
        v.error(
            "global.node_name",
            format!("{node_name:?} must be non-empty visible ASCII (it goes in a header)"),
        );
    }
    let global = GlobalConfig {
        log_format,
        log_level,
        admin,
        drain_timeout,
        max_client_conns,
        access_log,
        node_name,
    };

    // [timeouts]
    let t = &file.timeouts;
    let timeouts = Timeouts {
        connect: check_ms(
            &mut v,
            "timeouts.connect_ms",
            t.connect_ms,
            DEFAULT_CONNECT_MS,
            1,
            MS_MAX,
        ),
        request_header: check_ms(
            &mut v,
            "timeouts.request_header_ms",
            t.request_header_ms,
            DEFAULT_REQUEST_HEADER_MS,
            1,
            MS_MAX,
        ),
        backend_response: check_ms(
            &mut v,
            "timeouts.backend_response_ms",
            t.backend_response_ms,
            DEFAULT_BACKEND_RESPONSE_MS,
            1,
            MS_MAX,
        ),
        client_idle: check_ms(
            &mut v,
            "timeouts.client_idle_ms",
            t.client_idle_ms,
            DEFAULT_CLIENT_IDLE_MS,
            1,
            MS_MAX,
        ),
    };

    // [limits]
    let limits = Limits {
        max_header_bytes: file
            .limits
            .max_header_bytes
            .unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_request_line: file
            .limits
            .max_request_line
            .unwrap_or(DEFAULT_MAX_REQUEST_LINE),
    };
    v.check_range(
        "limits.max_header_bytes",
        limits.max_header_bytes,
        1024,
        256 * 1024,
    );
    v.check_range(
        "limits.max_request_line",
        limits.max_request_line,
        256,
        64 * 1024,
    );

    // [headers]
    let h = &file.headers;
    let mut headers = HeaderPolicy {
        x_forwarded_for: h.x_forwarded_for.unwrap_or(true),
        x_forwarded_proto: h.x_forwarded_proto.unwrap_or(true),
        x_forwarded_host: h.x_forwarded_host.unwrap_or(true),
        forwarded: h.forwarded.unwrap_or(false),
        via: h.via.unwrap_or(true),
        ..HeaderPolicy::default()
    };
    let via_name = h.via_name.as_deref().unwrap_or(DEFAULT_VIA_NAME);
    let via_ok = !via_name.is_empty()
        && via_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    match HeaderValue::from_str(&format!("1.1 {via_name}")) {
        Ok(val) if via_ok => headers.via_value = val,
        _ => v.error(
            "headers.via_name",
            format!("{via_name:?} must be a non-empty token of letters, digits, '-', '.', '_'"),
        ),
    }
    for (i, c) in h.trusted_proxies.iter().enumerate() {
        match c.parse::<Cidr>() {
            Ok(c) => headers.trusted_proxies.push(c),
            Err(e) => v.error(format!("headers.trusted_proxies[{i}]"), e),
        }
    }
    let node_header = h.node_header.as_deref().unwrap_or(DEFAULT_NODE_HEADER);
    if !node_header.is_empty() {
        match (
            HeaderName::from_bytes(node_header.as_bytes()),
            HeaderValue::from_str(&global.node_name),
        ) {
            (Ok(name), Ok(value)) => headers.node_header = Some((name, value)),
            (Err(_), _) => v.error(
                "headers.node_header",
                format!("{node_header:?} is not a valid header name (\"\" turns it off)"),
            ),
            // Reported at global.node_name.
            (_, Err(_)) => {}
        }
    }

    // [retries]
    let r = &file.retries;
    let retries = RetryPolicy {
        attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        budget_percent: r.budget_percent.unwrap_or(DEFAULT_RETRY_BUDGET_PERCENT),
        min_per_sec: r.min_per_sec.unwrap_or(DEFAULT_RETRY_MIN_PER_SEC),
        max_body_bytes: r.max_body_bytes.unwrap_or(DEFAULT_RETRY_MAX_BODY_BYTES),
    };
    v.check_range("retries.attempts", retries.attempts, 0, 5);
    v.check_range("retries.budget_percent", retries.budget_percent, 0, 100);
    v.check_range("retries.min_per_sec", retries.min_per_sec, 0, 10_000);
    v.check_range(
        "retries.max_body_bytes",
        retries.max_body_bytes,
        0,
        1024 * 1024,
    );

    // [[listener]]
    let mut listeners = Vec::new();
    if file.listener.is_empty() {
        v.error("listener", "at least one [[listener]] is required");
    }
    for (i, l) in file.listener.iter().enumerate() {
        let key = format!("listener[{i}]");
        let name = required(&mut v, &format!("{key}.name"), &l.name);
        let addr = required(&mut v, &format!("{key}.address"), &l.address)
            .and_then(|a| parse_addr(&mut v, &format!("{key}.address"), a));
        if let Some(name) = name {
            if file.listener[..i]
                .iter()
                .any(|o| o.name.as_deref() == Some(name))
            {
                v.error(
                    format!("{key}.name"),
                    format!("duplicate listener name {name:?}"),
                );
            }
        }
        if let Some(addr) = addr {
            if listeners.iter().any(|o: &ListenerConfig| o.address == addr) {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is already used by another listener"),
                );
            }
            if addr == admin {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is the admin address"),
                );
            }
        }
        let vrrp_instance = l.vrrp_instance.as_ref().map(|i| i.trim().to_string());
        if let Some(inst) = &vrrp_instance {
            if file.vrrp.is_none() {
                v.error(
                    format!("{key}.vrrp_instance"),
                    "needs a [vrrp] table (the coupling to vrrpd)",
                );
            } else if inst.is_empty() {
                v.error(format!("{key}.vrrp_instance"), "must not be empty");
            }
            if l.freebind == Some(false) {
                v.error(
                    format!("{key}.freebind"),
                    "must be true for a vrrp_instance listener: it is bound before vrrpd adds the VIP",
                );
            }
        }
        if let (Some(name), Some(address)) = (name, addr) {
            listeners.push(ListenerConfig {
                name: name.to_string(),
                address,
                // A VIP listener binds before the VIP is on the interface.
                freebind: l.freebind.unwrap_or(vrrp_instance.is_some()),
                vrrp_instance,
            });
        }
    }

    // [[pool]]: names first, so routes can reference any pool regardless of order.
    let pool_names: Vec<Option<&str>> = file.pool.iter().map(|p| p.name.as_deref()).collect();
    if file.pool.is_empty() {
        v.error("pool", "at least one [[pool]] is required");
    }
    let mut pools = Vec::new();
    for (i, p) in file.pool.iter().enumerate() {
        if let Some(pool) = validate_pool(&mut v, i, p, &pool_names) {
            pools.push(pool);
        }
    }
    let valid_pools = || {
        pool_names
            .iter()
            .flatten()
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let find_pool = |v: &mut Validator<'_>, key: &str, name: &str| -> Option<usize> {
        let idx = pools.iter().position(|p: &PoolConfig| p.name == name);
        if idx.is_none() && !pool_names.contains(&Some(name)) {
            v.error(
                key,
                format!("unknown pool {name:?} (defined pools: {})", valid_pools()),
            );
        }
        idx
    };

    // [[route]]
    let mut routes: Vec<RouteRule> = Vec::new();
    for (i, r) in file.route.iter().enumerate() {
        let key = format!("route[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
        if file.route[..i]
            .iter()
            .any(|o| o.name.as_deref() == Some(name.as_str()))
        {
            v.error(
                format!("{key}.name"),
                format!("duplicate route name {name:?}"),
            );
        }
        let host = r.host.as_deref().map(|h| {
            if h.trim_start().starts_with('*') {
                HostMatch::Wildcard(h.to_string())
            } else {
                HostMatch::Exact(h.to_string())
            }
        });
        let path = match (&r.path_exact, &r.path_prefix) {
            (Some(_), Some(_)) => {
                v.error(
                    format!("{key}.path_prefix"),
                    "set path_exact or path_prefix, not both",
                );
                None
            }
            (Some(p), None) => Some(PathMatch::Exact(p.clone())),
            (None, Some(p)) => Some(PathMatch::Prefix(p.clone())),
            (None, None) => None,
        };
        let header = match &r.header {
            None => None,
            Some(hm) => {
                let hk = format!("{key}.header.name");
                let name = required(&mut v, &hk, &hm.name).and_then(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| v.error(&hk, format!("{n:?} is not a valid header name")))
                        .ok()
                });
                if let Some(val) = &hm.value {
                    if HeaderValue::from_str(val).is_err() {
                        v.error(
                            format!("{key}.header.value"),
                            format!("{val:?} is not a valid header value"),
                        );
                    }
                }
                name.map(|name| HeaderMatch {
                    name,
                    value: hm.value.clone(),
                })
            }
        };
        let mut methods = Vec::new();
        for (j, m) in r.methods.iter().flatten().enumerate() {
            match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => v.error(
                    format!("{key}.methods[{j}]"),
                    format!("{m:?} is not an HTTP method"),
                ),
            }
        }
        let target = match (&r.pool, &r.split) {
            (Some(_), Some(_)) => {
                v.error(format!("{key}.split"), "set pool or split, not both");
                None
            }
            (None, None) => {
                v.error(&key, "a route needs `pool` or `split`");
                None
            }
            (Some(p), None) => {
                find_pool(&mut v, &format!("{key}.pool"), p).map(|i| RouteTarget::Pool(PoolId(i)))
            }
            (None, Some(split)) => {
                let mut parts = Vec::new();
                if split.is_empty() {
                    v.error(
                        format!("{key}.split"),
                        "must list at least one {pool, weight}",
                    );
                }
                for (j, s) in split.iter().enumerate() {
                    let sk = format!("{key}.split[{j}]");
                    let weight = s.weight.unwrap_or(1);
                    v.check_range(format!("{sk}.weight"), weight, 1, 10_000);
                    if let Some(p) = required(&mut v, &format!("{sk}.pool"), &s.pool) {
                        if let Some(idx) = find_pool(&mut v, &format!("{sk}.pool"), p) {
                            parts.push((PoolId(idx), weight));
                        }
                    }
                }
                (parts.len() == split.len() && !parts.is_empty())
                    .then_some(RouteTarget::Split(parts))
            }
        };
        let Some(target) = target else { continue };
        let rule = RouteRule {
            name,
            host,
            path,
            header,
            methods,
            target,
        };
        // Compile each rule alone so the router's own checks (host syntax, absolute paths,
        // split granularity) are reported at this route's position.
        if let Err(errors) = Router::new(vec![rule.clone()], None) {
            for e in errors {
                let field = match e {
                    crate::l7::router::RouterError::InvalidWildcard { .. }
                    | crate::l7::router::RouterError::InvalidHost { .. } => "host",
                    crate::l7::router::RouterError::PathNotAbsolute { .. } => {
                        if r.path_exact.is_some() {
                            "path_exact"
                        } else {
                            "path_prefix"
                        }
                    }
                    _ => "split",
                };
                v.error(format!("{key}.{field}"), e);
            }
            continue;
        }
        routes.push(rule);
    }

    let default_pool = file
        .default_pool
        .as_deref()
        .and_then(|name| find_pool(&mut v, "default_pool", name))
        .map(PoolId);

    // [vrrp]
    let vrrp = file.vrrp.as_ref().map(|f| {
        let unable = match &f.unable_when_no_healthy_backend {
            None | Some(BoolOrList::Bool(false)) => UnableWhen::Never,
            Some(BoolOrList::Bool(true)) => UnableWhen::AnyPool,
            Some(BoolOrList::List(names)) => {
                for (i, n) in names.iter().enumerate() {
                    find_pool(
                        &mut v,
                        &format!("vrrp.unable_when_no_healthy_backend[{i}]"),
                        n,
                    );
                }
                UnableWhen::Pools(names.clone())
            }
        };
        let socket = f
            .socket
            .clone()
            .unwrap_or_else(|| shared::control::DEFAULT_VRRPD_SOCKET.to_string());
        if socket.trim().is_empty() {
            v.error("vrrp.socket", "must not be empty");
        }
        VrrpConfig {
            socket: PathBuf::from(socket),
            heartbeat_interval: check_ms(
                &mut v,
                "vrrp.heartbeat_interval_ms",
                f.heartbeat_interval_ms,
                DEFAULT_VRRP_HEARTBEAT_INTERVAL_MS,
                10,
                10_000,
            ),
            reconnect_interval: check_ms(
                &mut v,
                "vrrp.reconnect_interval_ms",
                f.reconnect_interval_ms,
                DEFAULT_VRRP_RECONNECT_INTERVAL_MS,
                10,
                60_000,
            ),
            lost_timeout: f.lost_timeout_ms.map(|t| {
                v.check_range("vrrp.lost_timeout_ms", t, 10, MS_MAX);
                ms(t)
            }),
            unable_when_no_healthy_backend: unable,
            drain_timeout: check_ms(
                &mut v,
                "vrrp.drain_timeout_ms",
                f.drain_timeout_ms,
                DEFAULT_VRRP_DRAIN_TIMEOUT_MS,
                0,
                MS_MAX,
            ),
        }
    });

    v.finish()?;
    Ok(LbConfig {
        global,
        timeouts,
        limits,
        headers,
        retries,
        vrrp,
        listeners,
        pools,
        routes,
        default_pool,
    })
}

/// The kernel's hostname, the default `global.node_name`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| FALLBACK_NODE_NAME.to_string())
}

fn parse_algorithm(
    v: &mut Validator<'_>,
    key: &str,
    algorithm: Option<&str>,
    hash_key: Option<&str>,
) -> Algorithm {
    let hash = match hash_key {
        None | Some("client_ip") => HashKey::ClientIp,
        Some(k) => {
            if let Some(h) = k.strip_prefix("header:") {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => HashKey::Header(n),
                    Err(_) => {
                        v.error(
                            format!("{key}.hash_key"),
                            format!("{h:?} is not a valid header name"),
                        );
                        HashKey::ClientIp
                    }
                }
            } else if let Some(c) = k.strip_prefix("cookie:").filter(|c| !c.is_empty()) {
                HashKey::Cookie(c.to_string())
            } else {
                v.error(
                    format!("{key}.hash_key"),
                    format!("{k:?} is not a hash key (valid: \"client_ip\", \"header:NAME\", \"cookie:NAME\")"),
                );
                HashKey::ClientIp
            }
        }
    };
    match algorithm.unwrap_or("round_robin") {
        "round_robin" => Algorithm::RoundRobin,
        "weighted_round_robin" | "swrr" => Algorithm::WeightedRoundRobin,
        "least_conn" => Algorithm::LeastConnections,
        "p2c" => Algorithm::RandomTwoChoices,
        "ip_hash" => Algorithm::IpHash,
        "maglev" => Algorithm::Maglev { key: hash },
        other => {
            v.error(
                format!("{key}.algorithm"),
                format!("{other:?} is not an algorithm (valid: {ALGORITHMS})"),
            );
            Algorithm::RoundRobin
        }
    }
}

fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let x = s.trim().parse().ok()?;
            (x, x)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

fn validate_pool(
    v: &mut Validator<'_>,
    i: usize,
    p: &FilePool,
    names: &[Option<&str>],
) -> Option<PoolConfig> {
    let key = format!("pool[{i}]");
    let name = required(v, &format!("{key}.name"), &p.name);
    if let Some(n) = name {
        if names[..i].contains(&Some(n)) {
            v.error(format!("{key}.name"), format!("duplicate pool name {n:?}"));
        }
    }
    let algorithm = parse_algorithm(v, &key, p.algorithm.as_deref(), p.hash_key.as_deref());
    if p.hash_key.is_some() && !matches!(algorithm, Algorithm::Maglev { .. }) {
        v.error(
            format!("{key}.hash_key"),
            "hash_key only applies to algorithm = \"maglev\"",
        );
    }
    let queue_size = p.queue_size.unwrap_or(DEFAULT_QUEUE_SIZE);
    v.check_range(format!("{key}.queue_size"), queue_size, 0, 100_000);
    let queue_timeout = check_ms(
        v,
        &format!("{key}.queue_timeout_ms"),
        p.queue_timeout_ms,
        DEFAULT_QUEUE_TIMEOUT_MS,
        1,
        600_000,
    );
    let idle_max = p.keepalive.idle_max.unwrap_or(DEFAULT_IDLE_MAX);
    v.check_range(format!("{key}.keepalive.idle_max"), idle_max, 0, 10_000);
    let idle_timeout = check_ms(
        v,
        &format!("{key}.keepalive.idle_timeout_ms"),
        p.keepalive.idle_timeout_ms,
        DEFAULT_IDLE_TIMEOUT_MS,
        100,
        MS_MAX,
    );

    let mut backends: Vec<BackendSpec> = Vec::new();
    if p.backend.is_empty() {
        v.error(
            format!("{key}.backend"),
            "a pool needs at least one [[pool.backend]]",
        );
    }
    for (j, b) in p.backend.iter().enumerate() {
        let bk = format!("{key}.backend[{j}]");
        let addr = required(v, &format!("{bk}.address"), &b.address)
            .and_then(|a| parse_addr(v, &format!("{bk}.address"), a));
        let weight = b.weight.unwrap_or(1);
        v.check_range(format!("{bk}.weight"), weight, 0, 10_000);
        let max_conns = b.max_conns.unwrap_or(0);
        v.check_range(format!("{bk}.max_conns"), max_conns, 0, 1_000_000);
        if let Some(addr) = addr {
            if backends.iter().any(|o| o.addr == addr) {
                v.error(
                    format!("{bk}.address"),
                    format!("{addr} is listed twice in this pool"),
                );
                continue;
            }
            backends.push(BackendSpec {
                name: b.name.clone().unwrap_or_default(),
                addr,
                weight,
                max_conns,
            });
        }
    }

    let health = match &p.health {
        None => HealthCheckConfig {
            kind: ProbeKind::None,
            interval: ms(DEFAULT_HEALTH_INTERVAL_MS),
            timeout: ms(DEFAULT_HEALTH_TIMEOUT_MS),
            active: ActiveConfig::default(),
        },
        Some(h) => {
            let hk = format!("{key}.health");
            let interval = check_ms(
                v,
                &format!("{hk}.interval_ms"),
                h.interval_ms,
                DEFAULT_HEALTH_INTERVAL_MS,
                50,
                MS_MAX,
            );
            let timeout = check_ms(
                v,
                &format!("{hk}.timeout_ms"),
                h.timeout_ms,
                DEFAULT_HEALTH_TIMEOUT_MS.min(interval.as_millis() as u64),
                10,
                interval.as_millis() as u64,
            );
            let rise = h.rise.unwrap_or(crate::upstream::health::DEFAULT_RISE);
            let fall = h.fall.unwrap_or(crate::upstream::health::DEFAULT_FALL);
            v.check_range(format!("{hk}.rise"), rise, 1, 100);
            v.check_range(format!("{hk}.fall"), fall, 1, 100);
            let kind = match h.kind.as_deref().unwrap_or("http") {
                "none" => ProbeKind::None,
                "tcp" => ProbeKind::Tcp,
                "http" => {
                    let method = h.method.as_deref().unwrap_or("GET");
                    let method = Method::from_bytes(method.as_bytes()).unwrap_or_else(|_| {
                        v.error(
                            format!("{hk}.method"),
                            format!("{method:?} is not an HTTP method"),
                        );
                        Method::GET
                    });
                    let path = h.path.clone().unwrap_or_else(|| "/".into());
                    if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
                        v.error(
                            format!("{hk}.path"),
                            format!("{path:?} must be an absolute path like \"/healthz\""),
                        );
                    }
                    let expect_s = h.expect_status.as_deref().unwrap_or("200-399");
                    let expect = parse_status_range(expect_s).unwrap_or_else(|| {
                        v.error(
                            format!("{hk}.expect_status"),
                            format!("{expect_s:?} is not a status or range (e.g. \"200\" or \"200-399\", within 100-599)"),
                        );
                        (200, 399)
                    });
                    if let Some(host) = &h.host {
                        if HeaderValue::from_str(host).is_err() {
                            v.error(
                                format!("{hk}.host"),
                                format!("{host:?} is not a valid Host value"),
                            );
                        }
                    }
                    ProbeKind::Http {
                        method,
                        path,
                        host: h.host.clone(),
                        expect,
                    }
                }
                other => {
                    v.error(
                        format!("{hk}.kind"),
                        format!("{other:?} is not a health check kind (valid: \"http\", \"tcp\", \"none\")"),
                    );
                    ProbeKind::None
                }
            };
            if !matches!(kind, ProbeKind::Http { .. }) {
                for (set, field) in [
                    (h.method.is_some(), "method"),
                    (h.path.is_some(), "path"),
                    (h.expect_status.is_some(), "expect_status"),
                ] {
                    if set {
                        v.error(format!("{hk}.{field}"), "only applies to kind = \"http\"");
                    }
                }
            }
            HealthCheckConfig {
                kind,
                interval,
                timeout,
                active: ActiveConfig {
                    rise,
                    fall,
                    initial: if h.start_unhealthy.unwrap_or(false) {
                        HealthState::Unhealthy
                    } else {
                        HealthState::Healthy
                    },
                },
            }
        }
    };

    let pk = format!("{key}.passive");
    let consecutive_failures = p
        .passive
        .consecutive_failures
        .unwrap_or(crate::upstream::health::DEFAULT_EJECT_CONSECUTIVE_FAILURES);
    v.check_range(
        format!("{pk}.consecutive_failures"),
        consecutive_failures,
        0,
        1000,
    );
    let base = check_ms(
        v,
        &format!("{pk}.base_eject_ms"),
        p.passive.base_eject_ms,
        crate::upstream::health::DEFAULT_EJECT_BASE_TIME.as_millis() as u64,
        10,
        MS_MAX,
    );
    let max = check_ms(
        v,
        &format!("{pk}.max_eject_ms"),
        p.passive.max_eject_ms,
        crate::upstream::health::DEFAULT_EJECT_MAX_TIME.as_millis() as u64,
        10,
        MS_MAX,
    );
    if max < base {
        v.error(
            format!("{pk}.max_eject_ms"),
            format!(
                "{} is below base_eject_ms ({})",
                max.as_millis(),
                base.as_millis()
            ),
        );
    }
    let ejection = EjectionConfig {
        consecutive_failures,
        base_time: base,
        max_time: max,
        decay_after: DEFAULT_EJECT_DECAY_AFTER,
    };

    Some(PoolConfig {
        name: name?.to_string(),
        algorithm,
        backends,
        health,
        ejection,
        queue_size,
        queue_timeout,
        idle_max,
        idle_timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
default_pool = "web"

[global]
access_log = "json"

[[listener]]
name = "http"
address = "127.0.0.1:8080"

[[pool]]
name = "web"
algorithm = "least_conn"
[[pool.backend]]
address = "127.0.0.1:9001"
[[pool.backend]]
address = "127.0.0.1:9002"
weight = 3
[pool.health]
kind = "http"
path = "/healthz"
expect_status = "200-299"

[[pool]]
name = "canary"
[[pool.backend]]
address = "127.0.0.1:9003"

[[route]]
name = "api"
host = "api.example.com"
path_prefix = "/v1/"
split = [{ pool = "web", weight = 95 }, { pool = "canary", weight = 5 }]
"#;

    fn load(text: &str) -> Result<LbConfig, ConfigError> {
        LbConfig::from_source(&Source::from_text("t.toml", text))
    }

    fn errors(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("config was accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn good_config_is_typed() {
        let c = load(GOOD).expect("valid");
        assert_eq!(c.global.access_log, AccessLogFormat::Json);
        assert_eq!(c.pools.len(), 2);
        assert_eq!(c.pools[0].algorithm, Algorithm::LeastConnections);
        assert_eq!(c.pools[0].backends[1].weight, 3);
        assert_eq!(
            c.pools[0].health.kind,
            ProbeKind::Http {
                method: Method::GET,
                path: "/healthz".into(),
                host: None,
                expect: (200, 299)
            }
        );
        assert_eq!(
            c.routes[0].target,
            RouteTarget::Split(vec![(PoolId(0), 95), (PoolId(1), 5)])
        );
        assert_eq!(c.default_pool, Some(PoolId(0)));
        assert_eq!(c.timeouts.connect, ms(DEFAULT_CONNECT_MS));
    }

    #[test]
    fn every_error_is_reported_with_position_and_valid_values() {
        let text = r#"
default_pool = "nope"

[global]
access_log = "xml"
max_client_conns = 0

[[listener]]
name = "http"
address = "not-an-addr"

[[listener]]
name = "http"
address = "127.0.0.1:1"

[[pool]]
name = "web"
algorithm = "fastest"
[[pool.backend]]
address = "127.0.0.1:99999"
weight = 20000
[pool.health]
interval_ms = 1000
timeout_ms = 5000
expect_status = "600"

[[pool]]
name = "web"

[[route]]
pool = "missing"
methods = ["G E T"]
"#;
        let e = errors(text);
        for needle in [
            "t.toml:2:1: `default_pool`: unknown pool \"nope\" (defined pools: \"web\", \"web\")",
            "t.toml:5:1: `global.access_log`: \"xml\" is not an access log format (valid: \"off\", \"plain\", \"json\")",
            "`global.max_client_conns`: 0 is out of range (valid: 1..=1000000)",
            "`listener[0].address`: \"not-an-addr\" is not an IP:port address",
            "`listener[1].name`: duplicate listener name \"http\"",
            "`pool[0].algorithm`: \"fastest\" is not an algorithm (valid: \"round_robin\"",
            "`pool[0].backend[0].address`: \"127.0.0.1:99999\"",
            "`pool[0].backend[0].weight`: 20000 is out of range",
            "`pool[0].health.timeout_ms`: 5000 is out of range (valid: 10..=1000)",
            "`pool[0].health.expect_status`: \"600\"",
            "`pool[1].name`: duplicate pool name \"web\"",
            "`pool[1].backend`: a pool needs at least one",
            "`route[0].pool`: unknown pool \"missing\"",
            "`route[0].methods[0]`: \"G E T\" is not an HTTP method",
        ] {
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn bad_configs_are_rejected() {
        let base = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n";
        let cases: &[(&str, &str)] = &[
            ("", "at least one [[listener]]"),
            (
                "[[listener]]\nname=\"l\"\naddress=\"127.0.0.1:1\"\n",
                "at least one [[pool]]",
            ),
            ("[global]\ncolour = 1\n", "unknown field `colour`"),
            ("[global]\nlog_format = \"xml\"\n", "`global.log_format`"),
            ("[global]\nlog_level = \"loud\"\n", "`global.log_level`"),
            (
                "[global]\nadmin = \"127.0.0.1:8080\"\n",
                "is the admin address",
            ),
            (
                "[timeouts]\nconnect_ms = 0\n",
                "`timeouts.connect_ms`: 0 is out of range",
            ),
            (
                "[limits]\nmax_header_bytes = 10\n",
                "`limits.max_header_bytes`",
            ),
            (
                "[limits]\nmax_request_line = 1000000\n",
                "`limits.max_request_line`",
            ),
            (
                "[headers]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
                "prefix must be 0..=32",
            ),
            ("[headers]\nvia_name = \"a b\"\n", "`headers.via_name`"),
            ("[retries]\nattempts = 9\n", "`retries.attempts`"),
            (
                "[[route]]\npool = \"p\"\nsplit = [{pool = \"p\"}]\n",
                "set pool or split, not both",
            ),
            (
                "[[route]]\nname = \"r\"\n",
                "a route needs `pool` or `split`",
            ),
            (
                "[[route]]\npool = \"p\"\npath_exact = \"a\"\n",
                "`route[0].path_exact`: route \"route0\": path \"a\" must start with \"/\"",
            ),
            (
                "[[route]]\npool = \"p\"\nhost = \"*a.com\"\n",
                "`route[0].host`: route \"route0\": host wildcard",
            ),
            (
                "[[route]]\npool = \"p\"\nheader = { name = \"a b\" }\n",
                "is not a valid header name",
            ),
            (
                "[[route]]\nsplit = [{pool = \"p\", weight = 0}]\n",
                "`route[0].split[0].weight`: 0 is out of range",
            ),
            ("[[route]]\nsplit = []\n", "must list at least one"),
            (
                "[[route]]\nname = \"a\"\npool = \"p\"\n[[route]]\nname = \"a\"\npool = \"p\"\n",
                "duplicate route name",
            ),
        ];
        for (extra, needle) in cases {
            // Cases about missing sections stand alone; the others extend a valid base.
            let text = if extra.starts_with("[[listener]]") || extra.is_empty() {
                extra.to_string()
            } else {
                format!("{base}{extra}")
            };
            let e = errors(&text);
            assert!(
                e.contains(needle),
                "missing {needle:?} for {extra:?} in:\n{e}"
            );
        }
        let pool_cases: &[(&str, &str)] = &[
            (
                "hash_key = \"header:x-user\"\n",
                "only applies to algorithm = \"maglev\"",
            ),
            (
                "algorithm = \"maglev\"\nhash_key = \"ear:x\"\n",
                "is not a hash key",
            ),
            ("queue_size = 1000000\n", "`pool[0].queue_size`"),
            (
                "[pool.keepalive]\nidle_timeout_ms = 1\n",
                "`pool[0].keepalive.idle_timeout_ms`",
            ),
            (
                "[pool.health]\nkind = \"udp\"\n",
                "is not a health check kind",
            ),
            (
                "[pool.health]\nkind = \"tcp\"\npath = \"/x\"\n",
                "only applies to kind = \"http\"",
            ),
            ("[pool.health]\nrise = 0\n", "`pool[0].health.rise`"),
            (
                "[pool.passive]\nbase_eject_ms = 5000\nmax_eject_ms = 1000\n",
                "is below base_eject_ms",
            ),
            (
                "[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n",
                "is listed twice",
            ),
            (
                "[[pool.backend]]\nweight = 1\n",
                "`pool[0].backend[1].address`: is required",
            ),
        ];
        for (extra, needle) in pool_cases {
            // Keys of the pool table must come before its sub-tables.
            let text = if extra.starts_with('[') {
                format!("{base}{extra}")
            } else {
                format!("[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n[[pool]]\nname = \"p\"\n{extra}[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n")
            };
            let e = errors(&text);
            assert!(
                e.contains(needle),
                "missing {needle:?} for {extra:?} in:\n{e}"
            );
        }
    }

    proptest::proptest! {
        /// The loader must turn any text into a config or errors, never a panic.
        #[test]
        fn loader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = load(&text);
        }

        /// Same for near-valid files: the good config with one byte replaced.
        #[test]
        fn loader_never_panics_on_mutated_configs(pos in 0usize..GOOD.len(), byte in 0u8..128) {
            let mut bytes = GOOD.as_bytes().to_vec();
            bytes[pos] = byte;
            let _ = load(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn vrrp_table_and_vip_listeners() {
        let base = "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n";
        // Standalone: no [vrrp], every listener always bound; the node header is on.
        let c = load(&format!(
            "[global]\nnode_name = \"lb-a\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n{base}"
        ))
        .expect("valid");
        assert_eq!(c.vrrp, None);
        assert_eq!(c.global.node_name, "lb-a");
        let (name, value) = c
            .headers
            .node_header
            .clone()
            .expect("node header on by default");
        assert_eq!(
            (name.as_str(), value.to_str().ok()),
            ("x-lbpair-node", Some("lb-a"))
        );

        let c = load(&format!(
            "[headers]\nnode_header = \"\"\n[vrrp]\nunable_when_no_healthy_backend = [\"p\"]\n\
             [[listener]]\nname = \"vip\"\naddress = \"192.0.2.1:80\"\nvrrp_instance = \"web\"\n{base}"
        ))
        .expect("valid");
        assert_eq!(c.headers.node_header, None);
        let v = c.vrrp.expect("vrrp");
        assert_eq!(
            v.socket,
            PathBuf::from(shared::control::DEFAULT_VRRPD_SOCKET)
        );
        assert_eq!(v.heartbeat_interval, ms(DEFAULT_VRRP_HEARTBEAT_INTERVAL_MS));
        assert_eq!(v.reconnect_interval, ms(DEFAULT_VRRP_RECONNECT_INTERVAL_MS));
        assert_eq!(v.drain_timeout, ms(DEFAULT_VRRP_DRAIN_TIMEOUT_MS));
        assert_eq!(v.lost_timeout, None);
        assert_eq!(
            v.unable_when_no_healthy_backend,
            UnableWhen::Pools(vec!["p".into()])
        );
        assert_eq!(c.listeners[0].vrrp_instance.as_deref(), Some("web"));
        assert!(
            c.listeners[0].freebind,
            "a VIP listener binds with IP_FREEBIND by default"
        );

        let c = load(&format!(
            "[vrrp]\nunable_when_no_healthy_backend = true\nlost_timeout_ms = 700\n\
             [[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n{base}"
        ))
        .expect("valid");
        let v = c.vrrp.expect("vrrp");
        assert_eq!(v.unable_when_no_healthy_backend, UnableWhen::AnyPool);
        assert_eq!(v.lost_timeout, Some(ms(700)));

        for (text, needle) in [
            (
                "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\nvrrp_instance = \"web\"\n",
                "`listener[0].vrrp_instance`: needs a [vrrp] table",
            ),
            (
                "[vrrp]\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\nvrrp_instance = \"web\"\nfreebind = false\n",
                "`listener[0].freebind`: must be true for a vrrp_instance listener",
            ),
            (
                "[vrrp]\nunable_when_no_healthy_backend = [\"nope\"]\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n",
                "`vrrp.unable_when_no_healthy_backend[0]`: unknown pool \"nope\"",
            ),
            (
                "[vrrp]\nheartbeat_interval_ms = 1\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n",
                "`vrrp.heartbeat_interval_ms`: 1 is out of range",
            ),
            (
                "[vrrp]\nbeat = 1\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n",
                "unknown field `beat`",
            ),
            (
                "[global]\nnode_name = \"\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n",
                "`global.node_name`",
            ),
            (
                "[headers]\nnode_header = \"a b\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n",
                "`headers.node_header`: \"a b\" is not a valid header name",
            ),
        ] {
            let e = errors(&format!("{text}{base}"));
            assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
        }
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("10.2.0.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.0.9".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let one: Cidr = "::1".parse().expect("cidr");
        assert!(one.contains("::1".parse().expect("ip")));
        assert!("10.0.0.0/x".parse::<Cidr>().is_err());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range("204"), Some((204, 204)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("abc"), None);
    }
}
