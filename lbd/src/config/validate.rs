//! Stage 2: every check, collecting all errors; global, listeners, headers, vrrp, routes.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use shared::config::{ConfigError, Source, Validator};
use shared::telemetry::LogFormat;

use super::pools::{hostname, validate_pool};
use crate::l7::router::{HeaderMatch, HostMatch, PathMatch, RouteRule, RouteTarget, Router};
use crate::upstream::backend::PoolId;

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Check a millisecond value and turn it into a Duration (the default when absent).
pub(super) fn check_ms(
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

pub(super) fn required<'a>(
    v: &mut Validator<'_>,
    key: &str,
    value: &'a Option<String>,
) -> Option<&'a str> {
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

pub(super) fn parse_addr(v: &mut Validator<'_>, key: &str, s: &str) -> Option<SocketAddr> {
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
    let cookie_secret = g
        .cookie_secret_file
        .as_deref()
        .and_then(|f| read_cookie_secret(&mut v, f));
    if let Some(w) = g.workers {
        v.check_range("global.workers", w, 1, 1024);
    }
    let rate_limit_max_keys = g.rate_limit_max_keys.unwrap_or(DEFAULT_RATE_LIMIT_MAX_KEYS);
    v.check_range(
        "global.rate_limit_max_keys",
        rate_limit_max_keys,
        1,
        10_000_000,
    );
    let global = GlobalConfig {
        log_format,
        log_level,
        admin,
        drain_timeout,
        max_client_conns,
        access_log,
        node_name,
        cookie_secret,
        workers: g.workers,
        rate_limit_max_keys,
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

    let rate_limits = validate_rate_limits(&mut v, &file.rate_limit, file, &routes);

    // [peer]
    let peer = file
        .peer
        .as_ref()
        .and_then(|f| super::peer::validate_peer(f, &mut v));

    v.finish()?;
    Ok(LbConfig {
        global,
        timeouts,
        limits,
        headers,
        retries,
        vrrp,
        peer,
        listeners,
        pools,
        routes,
        default_pool,
        rate_limits,
    })
}

/// `global.cookie_secret_file`, relative to the config file's directory. Trailing whitespace
/// (an editor's final newline) is not part of the key, so `echo`/`openssl rand -hex` output
/// works as is.
fn read_cookie_secret(v: &mut Validator<'_>, file: &str) -> Option<CookieSecret> {
    const KEY: &str = "global.cookie_secret_file";
    if file.trim().is_empty() {
        v.error(
            KEY,
            "must not be empty (remove it for a random key per process)",
        );
        return None;
    }
    let path = match v.source().path.parent() {
        Some(dir) => dir.join(file),
        None => PathBuf::from(file),
    };
    match std::fs::read(&path) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            if bytes.len() < MIN_COOKIE_SECRET_BYTES {
                v.error(
                    KEY,
                    format!(
                        "{} holds {} byte(s); the key needs at least {MIN_COOKIE_SECRET_BYTES} \
                         (e.g. `openssl rand -hex 32 > FILE`)",
                        path.display(),
                        bytes.len()
                    ),
                );
                return None;
            }
            Some(CookieSecret(bytes))
        }
        Err(e) => {
            v.error(KEY, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

const RATE_KEYS: &str = "\"client_ip\", \"header:NAME\", \"route\"";

/// `[[rate_limit]]`: names unique, keys known, rates positive, routes defined.
fn validate_rate_limits(
    v: &mut Validator<'_>,
    limits: &[FileRateLimit],
    file: &FileConfig,
    routes: &[RouteRule],
) -> Vec<RateLimitConfig> {
    let mut out = Vec::new();
    for (i, r) in limits.iter().enumerate() {
        let key = format!("rate_limit[{i}]");
        let name = required(v, &format!("{key}.name"), &r.name);
        if let Some(n) = name {
            if limits[..i].iter().any(|o| o.name.as_deref() == Some(n)) {
                v.error(
                    format!("{key}.name"),
                    format!("duplicate rate_limit name {n:?}"),
                );
            }
        }
        let rkey = match r.key.as_deref() {
            None => {
                v.error(
                    format!("{key}.key"),
                    format!("is required (valid: {RATE_KEYS})"),
                );
                None
            }
            Some("client_ip") => Some(RateKey::ClientIp),
            Some("route") => Some(RateKey::Route),
            Some(k) => match k.strip_prefix("header:") {
                Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => Some(RateKey::Header(n)),
                    Err(_) => {
                        v.error(
                            format!("{key}.key"),
                            format!("{h:?} is not a valid header name"),
                        );
                        None
                    }
                },
                None => {
                    v.error(
                        format!("{key}.key"),
                        format!("{k:?} is not a rate-limit key (valid: {RATE_KEYS})"),
                    );
                    None
                }
            },
        };
        let rate = match r.rate {
            None => {
                v.error(
                    format!("{key}.rate"),
                    "is required (tokens per second, > 0)",
                );
                None
            }
            Some(x) if x.is_finite() && x > 0.0 && x <= 1e9 => Some(x),
            Some(x) => {
                v.error(
                    format!("{key}.rate"),
                    format!("{x} is out of range (valid: tokens per second, > 0 and <= 1e9)"),
                );
                None
            }
        };
        let burst = match r.burst {
            None => {
                v.error(format!("{key}.burst"), "is required (requests, >= 1)");
                None
            }
            Some(b) => v
                .check_range(format!("{key}.burst"), b, 1, 1_000_000_000)
                .then_some(b),
        };
        let mut route_ids = Vec::new();
        for (j, rn) in r.routes.iter().flatten().enumerate() {
            match routes.iter().position(|rr| rr.name == *rn) {
                Some(idx) => route_ids.push(idx),
                // An invalid route is reported where it is defined.
                None if file.route.iter().enumerate().any(|(k, fr)| {
                    fr.name.clone().unwrap_or_else(|| format!("route{k}")) == *rn
                }) => {}
                None => {
                    let defined = if routes.is_empty() {
                        "no [[route]] is defined".to_string()
                    } else {
                        let names: Vec<String> =
                            routes.iter().map(|rr| format!("{:?}", rr.name)).collect();
                        format!("defined routes: {}", names.join(", "))
                    };
                    v.error(
                        format!("{key}.routes[{j}]"),
                        format!("unknown route {rn:?} ({defined})"),
                    );
                }
            }
        }
        if let (Some(name), Some(key), Some(rate), Some(burst)) = (name, rkey, rate, burst) {
            out.push(RateLimitConfig {
                name: name.to_string(),
                key,
                rate,
                burst,
                routes: route_ids,
            });
        }
    }
    out
}
