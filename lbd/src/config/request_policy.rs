//! Stage 2 for the per-request policies: `[headers]` (forwarding headers, `Via`, trusted
//! proxies, the node header), `[paths]` (path normalisation) and `[retries]` (attempts and the
//! retry budget).

use super::*;

use http::{HeaderName, HeaderValue};
use shared::config::Validator;

/// `[headers]`. `node_name` is the validated `global.node_name`: the node header carries it, and
/// a bad one was already reported under `[global]`, so it is not reported again here.
pub(super) fn validate_headers(
    v: &mut Validator<'_>,
    h: &FileHeaders,
    node_name: &str,
) -> HeaderPolicy {
    let mut headers = HeaderPolicy {
        x_forwarded_for: h.x_forwarded_for.unwrap_or(true),
        x_forwarded_proto: h.x_forwarded_proto.unwrap_or(true),
        x_forwarded_host: h.x_forwarded_host.unwrap_or(true),
        x_forwarded_port: h.x_forwarded_port.unwrap_or(false),
        x_real_ip: h.x_real_ip.unwrap_or(false),
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
            HeaderValue::from_str(node_name),
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
    headers
}

/// `[paths]`: `merge_slashes` is a bool (serde checks it); `encoded_slash` one of three words.
pub(super) fn validate_paths(v: &mut Validator<'_>, p: &FilePaths) -> PathPolicy {
    let encoded_slash = match p.encoded_slash.as_deref() {
        None => EncodedSlash::default(),
        Some(s) => EncodedSlash::parse(s).unwrap_or_else(|| {
            v.error(
                "paths.encoded_slash",
                format!("{s:?} is not a policy (valid: {})", EncodedSlash::VALID),
            );
            EncodedSlash::default()
        }),
    };
    PathPolicy {
        merge_slashes: p.merge_slashes.unwrap_or(false),
        encoded_slash,
    }
}

/// `[retries]`: bounded attempts, a budget as a share of traffic, and a body size cap (the body
/// is buffered to be replayed).
pub(super) fn validate_retries(v: &mut Validator<'_>, r: &FileRetries) -> RetryPolicy {
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
    retries
}
