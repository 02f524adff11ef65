//! Stage 2 for `[[route]]` and `default_pool`: matchers parsed, pool names resolved to
//! [`PoolId`]s, and each rule compiled alone so the router's own checks are reported at the
//! route that fails them.

use super::*;

use http::{HeaderName, HeaderValue, Method};
use shared::config::Validator;

use super::validate::{required, PoolRefs};
use crate::l7::router::{
    HeaderMatch, HostMatch, PathMatch, RouteRule, RouteTarget, Router, RouterError,
};
use crate::upstream::backend::PoolId;

/// `[[route]]`, in match order. Only rules that compile are returned; the rest are reported.
pub(super) fn validate_routes(
    v: &mut Validator<'_>,
    file_routes: &[FileRoute],
    pools: &PoolRefs<'_>,
) -> Vec<RouteRule> {
    let mut routes: Vec<RouteRule> = Vec::new();
    for (i, r) in file_routes.iter().enumerate() {
        let key = format!("route[{i}]");
        let name = r.name.clone().unwrap_or_else(|| format!("route{i}"));
        if file_routes[..i]
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
        let header = r
            .header
            .as_ref()
            .and_then(|hm| validate_header_match(v, &key, hm));
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
        let Some(target) = validate_target(v, &key, r, pools) else {
            continue;
        };
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
                    RouterError::InvalidWildcard { .. } | RouterError::InvalidHost { .. } => "host",
                    RouterError::PathNotAbsolute { .. } => {
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
    routes
}

/// `route[i].max_request_body_bytes`, by route index (on a valid config, the indices of
/// `LbConfig::routes`).
pub(super) fn validate_route_body_limits(
    v: &mut Validator<'_>,
    file_routes: &[FileRoute],
) -> Vec<Option<u64>> {
    file_routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            r.max_request_body_bytes.map(|n| {
                super::global::check_body_limit(v, &format!("route[{i}].max_request_body_bytes"), n)
            })
        })
        .collect()
}

/// `route[i].redirect_to_https`, `https_port`, `hsts_max_age_s`, `hsts_include_subdomains`.
pub(super) fn validate_route_https(
    v: &mut Validator<'_>,
    file_routes: &[FileRoute],
) -> Vec<RouteHttps> {
    file_routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let key = format!("route[{i}]");
            let redirect = r.redirect_to_https.unwrap_or(false);
            if r.https_port.is_some() && !redirect {
                v.error(
                    format!("{key}.https_port"),
                    "only with redirect_to_https = true",
                );
            }
            if r.https_port == Some(0) {
                v.error(
                    format!("{key}.https_port"),
                    "0 is out of range (valid: 1..=65535)",
                );
            }
            if r.hsts_include_subdomains.is_some() && r.hsts_max_age_s.is_none() {
                v.error(
                    format!("{key}.hsts_include_subdomains"),
                    "only with hsts_max_age_s",
                );
            }
            let hsts = r.hsts_max_age_s.and_then(|age| {
                if !v.check_range(format!("{key}.hsts_max_age_s"), age, 0, 2 * 31_536_000) {
                    return None;
                }
                let sub = if r.hsts_include_subdomains == Some(true) {
                    "; includeSubDomains"
                } else {
                    ""
                };
                http::HeaderValue::from_str(&format!("max-age={age}{sub}")).ok()
            });
            RouteHttps {
                redirect: redirect.then_some(r.https_port),
                hsts,
            }
        })
        .collect()
}

/// `route[i].header`: a valid header name, and a value that could appear in a request.
fn validate_header_match(
    v: &mut Validator<'_>,
    key: &str,
    hm: &FileHeaderMatch,
) -> Option<HeaderMatch> {
    let hk = format!("{key}.header.name");
    let name = required(v, &hk, &hm.name).and_then(|n| {
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

/// `route[i].pool` or `route[i].split` (exactly one). A split is kept only if every part
/// resolved, so a typo in one pool name cannot silently shift its traffic to the others.
fn validate_target(
    v: &mut Validator<'_>,
    key: &str,
    r: &FileRoute,
    pools: &PoolRefs<'_>,
) -> Option<RouteTarget> {
    match (&r.pool, &r.split) {
        (Some(_), Some(_)) => {
            v.error(format!("{key}.split"), "set pool or split, not both");
            None
        }
        (None, None) => {
            v.error(key, "a route needs `pool` or `split`");
            None
        }
        (Some(p), None) => pools
            .find(v, &format!("{key}.pool"), p)
            .map(|i| RouteTarget::Pool(PoolId(i))),
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
                if let Some(p) = required(v, &format!("{sk}.pool"), &s.pool) {
                    if let Some(idx) = pools.find(v, &format!("{sk}.pool"), p) {
                        parts.push((PoolId(idx), weight));
                    }
                }
            }
            (parts.len() == split.len() && !parts.is_empty()).then_some(RouteTarget::Split(parts))
        }
    }
}

/// Protocols `upgrades` may not list: `h2c` needs its `HTTP2-Settings` header, which is
/// hop-by-hop (named in `Connection`) and never reaches the backend, and lbd serves HTTP/2
/// itself (prior knowledge) anyway.
const UNTUNNELLABLE: [&str; 1] = ["h2c"];

/// `route[i].upgrades`: protocol names (RFC 9110 tokens, matched without case against the
/// name part of each `Upgrade` offer), one list per `[[route]]`, in file order.
pub(super) fn validate_route_upgrades(
    v: &mut Validator<'_>,
    file_routes: &[FileRoute],
) -> Vec<Vec<String>> {
    file_routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut list = Vec::new();
            for (j, p) in r.upgrades.iter().flatten().enumerate() {
                let key = format!("route[{i}].upgrades[{j}]");
                let lower = p.to_ascii_lowercase();
                if !crate::l7::syntax::is_token(&lower) {
                    v.error(
                        key,
                        format!("{p:?} is not a protocol name (an RFC 9110 token)"),
                    );
                } else if UNTUNNELLABLE.contains(&lower.as_str()) {
                    v.error(
                        key,
                        format!("{p:?} cannot be tunnelled (valid: any other token)"),
                    );
                } else if !list.contains(&lower) {
                    list.push(lower);
                }
            }
            list
        })
        .collect()
}

/// `default_pool`: where requests go when no route matches (`None`: they get a 404).
pub(super) fn validate_default_pool(
    v: &mut Validator<'_>,
    default_pool: Option<&str>,
    pools: &PoolRefs<'_>,
) -> Option<PoolId> {
    default_pool
        .and_then(|name| pools.find(v, "default_pool", name))
        .map(PoolId)
}
