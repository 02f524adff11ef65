//! Stage 2 for pools: backends, balancing algorithm, active and passive health.

use super::*;

use http::{HeaderName, HeaderValue, Method};
use shared::config::Validator;

use super::validate::{check_ms, ms, parse_addr, required};
use crate::upstream::backend::BackendSpec;
use crate::upstream::balance::{Algorithm, HashKey};
use crate::upstream::health::{
    ActiveConfig, EjectionConfig, HealthState, DEFAULT_EJECT_DECAY_AFTER,
};

/// The kernel's hostname, the default `global.node_name`.
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| FALLBACK_NODE_NAME.to_string())
}

pub(super) fn parse_algorithm(
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

pub(super) fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let x = s.trim().parse().ok()?;
            (x, x)
        }
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo, hi))
}

pub(super) fn validate_pool(
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
    let idle_max = p.keepalive.idle_max;
    if let Some(n) = idle_max {
        v.check_range(format!("{key}.keepalive.idle_max"), n, 0, 10_000);
    }
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
                "grpc" => ProbeKind::Grpc {
                    service: h.grpc_service.clone().unwrap_or_default(),
                    host: h.host.clone(),
                },
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
                        format!("{other:?} is not a health check kind (valid: \"http\", \"grpc\", \"tcp\", \"none\")"),
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
            if h.grpc_service.is_some() && !matches!(kind, ProbeKind::Grpc { .. }) {
                v.error(
                    format!("{hk}.grpc_service"),
                    "only applies to kind = \"grpc\"",
                );
            }
            if let Some(host) = h
                .host
                .as_deref()
                .filter(|_| matches!(kind, ProbeKind::Grpc { .. }))
            {
                if host.parse::<http::uri::Authority>().is_err() {
                    v.error(
                        format!("{hk}.host"),
                        format!("{host:?} is not a valid authority (host or host:port)"),
                    );
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

    let protocol = match p.protocol.as_deref() {
        None | Some("http1") => UpstreamProtocol::Http1,
        Some("h2") => UpstreamProtocol::H2,
        Some(other) => {
            v.error(
                format!("{key}.protocol"),
                format!("{other:?} is not an upstream protocol (valid: \"http1\", \"h2\")"),
            );
            UpstreamProtocol::Http1
        }
    };

    let sticky = p
        .sticky
        .as_ref()
        .and_then(|st| validate_sticky(v, &key, name.unwrap_or_default(), st));

    let h2 = protocol == UpstreamProtocol::H2;
    let tls = p
        .tls
        .as_ref()
        .and_then(|t| super::upstream_tls::validate_upstream_tls(v, &format!("{key}.tls"), t, h2));

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
        sticky,
        tls,
        protocol,
    })
}

/// RFC 6265 §4.1.1: a cookie name is an RFC 7230 token.
pub(super) fn is_cookie_name(s: &str) -> bool {
    crate::l7::syntax::is_token(s)
}

/// `[pool.sticky]`: every problem reported; `None` when unusable.
fn validate_sticky(
    v: &mut Validator<'_>,
    pool_key: &str,
    pool: &str,
    st: &FileSticky,
) -> Option<StickyConfig> {
    let key = format!("{pool_key}.sticky");
    let mode = match st.mode.as_deref() {
        Some("insert") => Some(StickyMode::Insert),
        Some("learn") => Some(StickyMode::Learn),
        Some(other) => {
            v.error(
                format!("{key}.mode"),
                format!("{other:?} is not a sticky mode (valid: \"insert\", \"learn\")"),
            );
            None
        }
        None => {
            v.error(
                format!("{key}.mode"),
                "is required (valid: \"insert\", \"learn\")",
            );
            None
        }
    };
    let cookie = match (mode, st.cookie.as_deref()) {
        (_, Some(c)) => Some(c.to_string()),
        (Some(StickyMode::Insert), None) => Some(DEFAULT_STICKY_COOKIE.to_string()),
        (Some(StickyMode::Learn), None) => {
            v.error(
                format!("{key}.cookie"),
                "is required in learn mode: the application's session cookie, e.g. \"JSESSIONID\"",
            );
            None
        }
        (None, None) => None,
    };
    if let Some(c) = &cookie {
        if !is_cookie_name(c) {
            v.error(
                format!("{key}.cookie"),
                format!("{c:?} is not a cookie name (letters, digits and !#$%&'*+-.^_`|~)"),
            );
        }
    }
    let ttl_s = st.ttl_s.unwrap_or(DEFAULT_STICKY_TTL_S);
    v.check_range(format!("{key}.ttl_s"), ttl_s, 1, 366 * 86_400);
    let secure = st.secure.unwrap_or(false);
    let same_site = match st.same_site.as_deref() {
        None | Some("lax") => SameSite::Lax,
        Some("strict") => SameSite::Strict,
        Some("none") => {
            if !secure {
                v.error(
                    format!("{key}.same_site"),
                    "\"none\" needs secure = true (browsers drop SameSite=None cookies without Secure)",
                );
            }
            SameSite::None
        }
        Some(other) => {
            v.error(
                format!("{key}.same_site"),
                format!("{other:?} is not a SameSite value (valid: \"strict\", \"lax\", \"none\")"),
            );
            SameSite::Lax
        }
    };
    let path = st
        .path
        .clone()
        .unwrap_or_else(|| DEFAULT_STICKY_PATH.into());
    // RFC 6265 §4.1.1 path-value: no CTLs and no ';' (it would end the attribute).
    if !path.starts_with('/') || !path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';') {
        v.error(
            format!("{key}.path"),
            format!("{path:?} must be an absolute path like \"/\" without spaces or ';'"),
        );
    }
    let max_entries = st.max_entries.unwrap_or(DEFAULT_STICKY_MAX_ENTRIES);
    v.check_range(format!("{key}.max_entries"), max_entries, 1, 10_000_000);
    let max_bytes = st.max_bytes.unwrap_or(DEFAULT_STICKY_MAX_BYTES);
    v.check_range(
        format!("{key}.max_bytes"),
        max_bytes,
        MIN_TABLE_BYTES,
        MAX_TABLE_BYTES,
    );
    let max_key_bytes = st.max_key_bytes.unwrap_or(DEFAULT_STICKY_MAX_KEY_BYTES);
    check_key_cap(v, &format!("{key}.max_key_bytes"), max_key_bytes, pool);
    match mode {
        Some(StickyMode::Insert) => {
            for (set, field) in [
                (st.max_entries.is_some(), "max_entries"),
                (st.max_bytes.is_some(), "max_bytes"),
                (st.max_key_bytes.is_some(), "max_key_bytes"),
            ] {
                if set {
                    v.error(
                        format!("{key}.{field}"),
                        "only applies to mode = \"learn\" (insert mode keeps no table)",
                    );
                }
            }
        }
        Some(StickyMode::Learn) => {
            for (set, field) in [
                (st.secure.is_some(), "secure"),
                (st.http_only.is_some(), "http_only"),
                (st.same_site.is_some(), "same_site"),
                (st.path.is_some(), "path"),
            ] {
                if set {
                    v.error(
                        format!("{key}.{field}"),
                        "only applies to mode = \"insert\" (learn mode sets no cookie)",
                    );
                }
            }
        }
        _ => {}
    }
    Some(StickyConfig {
        mode: mode?,
        cookie: cookie?,
        ttl: Duration::from_secs(ttl_s),
        secure,
        http_only: st.http_only.unwrap_or(true),
        same_site,
        path,
        max_entries,
        max_bytes,
        max_key_bytes,
    })
}

/// A soft-state key cap: at least [`MIN_KEY_CAP_BYTES`], and small enough that the table key
/// (`2 + len(name) + key`) fits the peer link's record key limit (an entry with a longer key
/// could be stored but never replicated).
pub(super) fn check_key_cap(v: &mut Validator<'_>, key: &str, cap: usize, name: &str) {
    let max = shared::peer::frame::MAX_KEY_LEN.saturating_sub(2 + name.len());
    if cap < MIN_KEY_CAP_BYTES || cap > max {
        v.error(
            key,
            format!(
                "{cap} is out of range (valid: {MIN_KEY_CAP_BYTES}..={max}: with the name \
                 {name:?}, the peer link carries keys up to that length)"
            ),
        );
    }
}
