//! Header hygiene between client and backend (pure functions over `HeaderMap`).
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: they are
//!   removed in both directions, together with every header the `Connection` header names
//!   (except `Host` and `Content-Length`, which no `Connection` option may unframe).
//!   An upgrade re-adds `Connection: upgrade` + `Upgrade` after stripping, but only for the
//!   protocols [`allowed_upgrade`] lets through (`websocket`, and a route's `upgrades`); any
//!   other (`h2c`, …) is dropped and the request goes on as a plain one.
//! - Forwarding headers tell the backend who the client was. `X-Forwarded-For` and `Forwarded`
//!   are only *appended to* when the peer is a trusted proxy (`headers.trusted_proxies`);
//!   from anyone else they are replaced, because a client can write anything there.
//! - [`head_size`] measures the request head the way `limits.max_header_bytes` is documented.
//!
//! Request smuggling: hyper's parser already rejects (400) differing duplicate or invalid
//! `Content-Length`, a `Transfer-Encoding` whose final coding is not `chunked`, and
//! `Transfer-Encoding` on HTTP/1.0. For `Content-Length` + `Transfer-Encoding` it follows
//! RFC 9112 §6.1: the body is read as chunked, `Content-Length` is dropped and the connection
//! is closed after the response, so nothing after the chunked body can be read as a second
//! request. The proxy never forwards both headers either way (tests/it_smuggling.rs).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderPolicy;

/// Headers that only make sense on one connection.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Fields a `Connection` option cannot remove: the host the request was routed by, and the
/// length of the body that follows the head (without it, the body's bytes would be read as
/// the next message).
static NOT_CONNECTION_OPTIONS: [HeaderName; 2] = [header::HOST, header::CONTENT_LENGTH];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Remove hop-by-hop headers and the ones `Connection` lists. Returns whether the message
/// asked for a protocol upgrade (`Connection: upgrade` with an `Upgrade` header), and the
/// `Upgrade` value so the caller can re-add it for a tunnel.
///
/// Runs twice per proxied request, so it looks at the few headers present instead of
/// removing all nine names blindly (each `remove` hashes its name), and matches `Connection`
/// tokens against the present names instead of parsing each token into a `HeaderName` (an
/// allocation for a non-standard name). A message without hop-by-hop headers costs one scan.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> Option<HeaderValue> {
    let mut doomed: Vec<HeaderName> = Vec::new();
    let mut upgrade_requested = false;
    for value in headers.get_all(header::CONNECTION) {
        let Ok(s) = value.to_str() else { continue };
        for token in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if token.eq_ignore_ascii_case("upgrade") {
                upgrade_requested = true;
            }
            // Names in the map are lowercase; tokens may be in any case.
            for name in headers.keys() {
                if name.as_str().eq_ignore_ascii_case(token)
                    && !doomed.contains(name)
                    && !NOT_CONNECTION_OPTIONS.contains(name)
                {
                    doomed.push(name.clone());
                }
            }
        }
    }
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) && !doomed.contains(name) {
            doomed.push(name.clone());
        }
    }
    let upgrade = if upgrade_requested {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in &doomed {
        headers.remove(name);
    }
    upgrade
}

/// Put back the two headers an upgrade needs on the next hop.
pub fn set_upgrade(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, upgrade);
}

/// The protocol every route tunnels.
const WEBSOCKET: &str = "websocket";

/// RFC 9110 §5.6.2: a token (a header or protocol name, a cookie name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The part of a client's `Upgrade` offer lbd tunnels: the offered protocols (RFC 9110 §7.8:
/// `name[/version]`, comma separated) whose name is `websocket` or in `extra` (a route's
/// `upgrades`, lowercase), in the client's order. `None`: nothing allowed, the upgrade is
/// stripped.
pub fn allowed_upgrade(offer: &HeaderValue, extra: &[String]) -> Option<HeaderValue> {
    let offer = offer.to_str().ok()?;
    let allowed: Vec<&str> = offer
        .split(',')
        .map(str::trim)
        .filter(|p| {
            let name = p.split_once('/').map_or(*p, |(n, _)| n);
            is_token(name)
                && (name.eq_ignore_ascii_case(WEBSOCKET)
                    || extra.iter().any(|e| name.eq_ignore_ascii_case(e)))
        })
        .collect();
    if allowed.is_empty() {
        return None;
    }
    HeaderValue::from_str(&allowed.join(", ")).ok()
}

/// Per-request facts the forwarding headers describe.
#[derive(Debug, Clone, Copy)]
pub struct ForwardCtx<'a> {
    pub client_ip: IpAddr,
    /// "http" (or "https" once TLS termination exists).
    pub proto: &'static str,
    /// The Host the client asked for (Host header or the URI authority).
    pub host: Option<&'a HeaderValue>,
    /// `client_ip` already rendered as a header value ([`ip_value`]); the proxy renders it
    /// once per client connection instead of once per request.
    pub client_ip_value: Option<&'a HeaderValue>,
}

/// An IP address as a header value (`192.0.2.7`, `2001:db8::1`).
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    let mut buf = String::with_capacity(40);
    let _ = write!(buf, "{ip}");
    // An IP address is always a valid header value.
    HeaderValue::from_str(&buf).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Add X-Forwarded-*, Forwarded and Via according to `policy`.
pub fn add_forwarding(headers: &mut HeaderMap, policy: &HeaderPolicy, ctx: &ForwardCtx<'_>) {
    let trusted = policy
        .trusted_proxies
        .iter()
        .any(|c| c.contains(ctx.client_ip));
    if policy.x_forwarded_for {
        let ours = ctx
            .client_ip_value
            .cloned()
            .unwrap_or_else(|| ip_value(ctx.client_ip));
        // Only a trusted peer's list is kept, so only then is it read.
        let prev = if trusted {
            joined(headers, &X_FORWARDED_FOR)
        } else {
            None
        };
        match (prev, ours.to_str()) {
            (Some(prev), Ok(ip)) => set(headers, &X_FORWARDED_FOR, &format!("{prev}, {ip}")),
            _ => {
                headers.insert(X_FORWARDED_FOR.clone(), ours);
            }
        }
    }
    if policy.x_forwarded_proto && !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(ctx.proto),
        );
    }
    if policy.x_forwarded_host && !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match ctx.host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if policy.forwarded {
        let mut element = String::with_capacity(64);
        match ctx.client_ip {
            IpAddr::V4(ip) => {
                let _ = write!(element, "for={ip}");
            }
            // RFC 7239 §6: IPv6 addresses are quoted and bracketed.
            IpAddr::V6(ip) => {
                let _ = write!(element, "for=\"[{ip}]\"");
            }
        }
        let _ = write!(element, ";proto={}", ctx.proto);
        if let Some(host) = ctx.host.and_then(|h| h.to_str().ok()) {
            if host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
            {
                let _ = write!(element, ";host=\"{host}\"");
            }
        }
        let value = match joined(headers, &header::FORWARDED) {
            Some(prev) if trusted => format!("{prev}, {element}"),
            _ => element,
        };
        set(headers, &header::FORWARDED, &value);
    }
    if policy.via {
        add_via(headers, &policy.via_value);
    }
}

/// Append our `Via` entry (requests and responses).
pub fn add_via(headers: &mut HeaderMap, via: &HeaderValue) {
    match joined(headers, &header::VIA) {
        Some(prev) => {
            let Ok(ours) = via.to_str() else { return };
            set(headers, &header::VIA, &format!("{prev}, {ours}"));
        }
        None => {
            headers.insert(header::VIA, via.clone());
        }
    }
}

/// All values of `name` joined with ", " (the list form), if any are present and readable.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let Ok(s) = v.to_str() else { continue };
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_string()),
        }
    }
    out
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    // Values built here come from IPs, tokens and already-valid header values.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    }
}

/// Size of the header block as `limits.max_header_bytes` counts it: `name: value\r\n` per line.
pub fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-secret", "1"),
            ("x-kept", "2"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "2");
    }

    #[test]
    fn upgrade_is_reported() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let up = strip_hop_by_hop(&mut h).expect("upgrade");
        assert_eq!(up, "websocket");
        assert!(h.is_empty());
        set_upgrade(&mut h, up);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn only_websocket_and_a_routes_protocols_are_upgraded() {
        let extra = vec!["x-tunnel".to_string()];
        let cases: &[(&str, &[String], Option<&str>)] = &[
            ("websocket", &[], Some("websocket")),
            ("WebSocket", &[], Some("WebSocket")),
            ("h2c", &[], None),
            ("h2c", &extra, None),
            ("x-tunnel", &[], None),
            ("x-tunnel", &extra, Some("x-tunnel")),
            ("X-Tunnel/2", &extra, Some("X-Tunnel/2")),
            ("h2c, websocket", &[], Some("websocket")),
            (
                "h2c, x-tunnel, websocket/13",
                &extra,
                Some("x-tunnel, websocket/13"),
            ),
            ("TLS/1.2, IRC/6.9", &extra, None),
            ("web socket", &[], None),
            ("", &[], None),
        ];
        for (offer, extra, want) in cases {
            let got = allowed_upgrade(&HeaderValue::from_static(offer), extra);
            assert_eq!(
                got.as_ref().map(|v| v.to_str().expect("ascii")),
                *want,
                "{offer:?} with {extra:?}"
            );
        }
        assert!(is_token("x-a.b~c"));
        assert!(!is_token("a/b") && !is_token("") && !is_token("a b"));
    }

    fn policy(trusted: &[&str]) -> HeaderPolicy {
        HeaderPolicy {
            forwarded: true,
            trusted_proxies: trusted
                .iter()
                .map(|c| c.parse::<Cidr>().expect("cidr"))
                .collect(),
            ..HeaderPolicy::default()
        }
    }

    #[test]
    fn xff_is_replaced_from_untrusted_and_appended_from_trusted_peers() {
        let host = HeaderValue::from_static("example.com");
        let ctx = |ip: &str| ForwardCtx {
            client_ip: ip.parse().expect("ip"),
            proto: "http",
            host: Some(&host),
            client_ip_value: None,
        };
        let incoming = [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("forwarded", "for=1.1.1.1"),
            ("via", "1.0 fred"),
        ];
        let mut h = map(&incoming);
        add_forwarding(&mut h, &policy(&["10.0.0.0/8"]), &ctx("192.0.2.7"));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"example.com\""
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["via"], "1.0 fred, 1.1 lbd");

        let mut h = map(&incoming);
        add_forwarding(&mut h, &policy(&["10.0.0.0/8"]), &ctx("10.1.2.3"));
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=1.1.1.1, for=10.1.2.3;proto=http;host=\"example.com\""
        );

        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &policy(&[]), &ctx("::1"));
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.com\""
        );
    }

    #[test]
    fn a_pre_rendered_client_ip_is_used_as_is() {
        let ours = ip_value("2001:db8::7".parse().expect("ip"));
        assert_eq!(ours, "2001:db8::7");
        let ctx = ForwardCtx {
            client_ip: "2001:db8::7".parse().expect("ip"),
            proto: "http",
            host: None,
            client_ip_value: Some(&ours),
        };
        let mut h = map(&[("x-forwarded-for", "spoofed")]);
        add_forwarding(&mut h, &policy(&[]), &ctx);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
        let mut h = map(&[("x-forwarded-for", "198.51.100.1")]);
        add_forwarding(&mut h, &policy(&["2001:db8::/32"]), &ctx);
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 2001:db8::7");
    }

    #[test]
    fn connection_tokens_remove_the_named_headers_in_any_case() {
        let mut h = map(&[
            ("connection", "Keep-Alive, X-Secret , close"),
            ("connection", "X-OTHER"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("te", "trailers"),
        ]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "3");
        // Host and Content-Length stay whatever `Connection` names.
        let mut h = map(&[
            ("connection", "host, Content-Length"),
            ("host", "a"),
            ("content-length", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(
            (h["host"].as_bytes(), h["content-length"].as_bytes()),
            (&b"a"[..], &b"3"[..])
        );
        assert_eq!(h.len(), 2, "{h:?}");
        // Nothing hop-by-hop: left untouched.
        let mut h = map(&[("host", "a"), ("accept", "*/*")]);
        assert_eq!(strip_hop_by_hop(&mut h), None);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn disabled_headers_are_left_alone() {
        let p = HeaderPolicy {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            forwarded: false,
            via: false,
            ..HeaderPolicy::default()
        };
        let mut h = map(&[("x-forwarded-for", "spoofed")]);
        let ctx = ForwardCtx {
            client_ip: "192.0.2.1".parse().expect("ip"),
            proto: "http",
            host: None,
            client_ip_value: None,
        };
        add_forwarding(&mut h, &p, &ctx);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-forwarded-for"], "spoofed");
    }

    #[test]
    fn head_size_counts_lines() {
        let h = map(&[("ab", "cd"), ("x", "")]);
        assert_eq!(head_size(&h), (2 + 2 + 4) + (1 + 4));
    }
}
