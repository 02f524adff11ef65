//! Stage 2 for `[[rate_limit]]`: names unique, keys known, rates, bursts and IPv6 prefixes
//! bounded, and the routes they apply to resolved to indices into the validated routes.

use super::*;

use http::HeaderName;
use shared::config::Validator;

use super::validate::required;
use crate::l7::router::RouteRule;

/// The valid `key` forms, as listed in errors.
const RATE_KEYS: &str = "\"client_ip\", \"header:NAME\", \"route\"";

/// `[[rate_limit]]`: names unique, keys known, rates positive, routes defined. `file_routes` are
/// the routes as written, `routes` the compiled ones (a limit's route indices point into them).
pub(super) fn validate_rate_limits(
    v: &mut Validator<'_>,
    limits: &[FileRateLimit],
    file_routes: &[FileRoute],
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
                None if file_routes.iter().enumerate().any(|(k, fr)| {
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
        let ipv6_prefix_len = r
            .ipv6_prefix_len
            .unwrap_or(DEFAULT_RATE_LIMIT_IPV6_PREFIX_LEN);
        let prefix_ok = v.check_range(format!("{key}.ipv6_prefix_len"), ipv6_prefix_len, 1, 128);
        if r.ipv6_prefix_len.is_some() && rkey.as_ref().is_some_and(|k| *k != RateKey::ClientIp) {
            v.error(
                format!("{key}.ipv6_prefix_len"),
                "only applies to key = \"client_ip\"",
            );
        }
        let max_key_bytes = r.max_key_bytes.unwrap_or(DEFAULT_RATE_LIMIT_MAX_KEY_BYTES);
        super::pools::check_key_cap(
            v,
            &format!("{key}.max_key_bytes"),
            max_key_bytes,
            name.unwrap_or_default(),
        );
        if let (Some(name), Some(key), Some(rate), Some(burst), true) =
            (name, rkey, rate, burst, prefix_ok)
        {
            out.push(RateLimitConfig {
                name: name.to_string(),
                key,
                rate,
                burst,
                max_key_bytes,
                routes: route_ids,
                ipv6_prefix_len,
            });
        }
    }
    out
}
