//! Header hygiene between client and backend (pure functions over `HeaderMap`).
//!
//! - Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message: they are
//!   removed in both directions, together with every header the `Connection` header names
//!   (except `Host` and `Content-Length`, which no `Connection` option may unframe).
//!   An upgrade re-adds `Connection: upgrade` + `Upgrade` after stripping, but only for the
//!   protocols [`allowed_upgrade`] lets through (`websocket`, and a route's `upgrades`); any
//!   other (`h2c`, …) is dropped and the request goes on as a plain one.
//! - Forwarding headers tell the backend who the client was ([`add_forwarding`]).
//!   `X-Forwarded-For` is always *appended to* (the peer's address goes on the end, as HAProxy's
//!   `option forwardfor` and nginx's `$proxy_add_x_forwarded_for` do): what the client wrote
//!   stays on the left, where a backend reading the list right to left past its trusted
//!   proxies never reaches it. `X-Real-IP`, `Forwarded` and `X-Forwarded-Proto/Host/Port` from
//!   a peer outside `headers.trusted_proxies` are removed, whatever lbd is configured to add
//!   (a plain-HTTP client must never make the backend believe `X-Forwarded-Proto: https`); a
//!   trusted proxy's are kept (`Forwarded` is appended to).
//! - [`real_client`]: the client address lbd itself believes (rate limits, access log,
//!   `ip_hash`, `X-Real-IP`): the peer, or behind trusted proxies the first untrusted
//!   `X-Forwarded-For` hop from the right.
//! - [`head_size`] measures the request head the way `limits.max_header_bytes` is documented.
//!
//! Request smuggling: hyper's parser already rejects (400) differing duplicate or invalid
//! `Content-Length`, a `Transfer-Encoding` whose final coding is not `chunked`, and
//! `Transfer-Encoding` on HTTP/1.0. For `Content-Length` + `Transfer-Encoding` it follows
//! RFC 9112 §6.1: the body is read as chunked, `Content-Length` is dropped and the connection
//! is closed after the response, so nothing after the chunked body can be read as a second
//! request. The proxy never forwards both headers either way (tests/it/smuggling.rs).

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderPolicy;
use crate::l7::syntax::is_token;

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
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Forwarding headers only a trusted proxy may send: from anyone else they are removed.
static TRUSTED_ONLY: [HeaderName; 5] = [
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
];

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
    /// The TCP peer's address (appended to X-Forwarded-For and `Forwarded`).
    pub client_ip: IpAddr,
    /// The real client ([`real_client`]), for X-Real-IP.
    pub real_client: IpAddr,
    /// "http" (or "https" once TLS termination exists).
    pub proto: &'static str,
    /// The Host the client asked for (Host header or the URI authority).
    pub host: Option<&'a HeaderValue>,
    /// The port the client connected to, for X-Forwarded-Port.
    pub port: u16,
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

/// The client address lbd believes: `peer` itself unless it is a trusted proxy; then the
/// X-Forwarded-For list is read right to left (the last header line first), skipping trusted
/// addresses, and the first untrusted one is the client. A list of trusted addresses only
/// gives its leftmost; an entry that is not an IP address ends the walk at the trusted hop
/// that passed it on (a client can write anything on the left, so nothing beyond it counts).
/// Without `trusted_proxies` this is one empty-slice check.
pub fn real_client(policy: &HeaderPolicy, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !policy.trusts(peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(list) = value.to_str() else {
            return client;
        };
        for hop in list.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !policy.trusts(ip) {
                return ip;
            }
        }
    }
    client
}

/// One X-Forwarded-For entry: an address, also in the `[v6]`, `[v6]:port` and `v4:port`
/// forms some proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (v6, _) = rest.split_once(']')?;
        return v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (v4, port) = hop.split_once(':')?;
    port.parse::<u16>().ok()?;
    v4.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// Remove the forwarding headers a peer outside `trusted_proxies` sent, then add
/// X-Forwarded-*, X-Real-IP, Forwarded and Via according to `policy` (see the module docs).
pub fn add_forwarding(headers: &mut HeaderMap, policy: &HeaderPolicy, ctx: &ForwardCtx<'_>) {
    let trusted = policy.trusts(ctx.client_ip);
    // One scan over the present names instead of five removes (each hashes its name).
    if !trusted && headers.keys().any(|k| TRUSTED_ONLY.contains(k)) {
        for name in &TRUSTED_ONLY {
            headers.remove(name);
        }
    }
    if policy.x_forwarded_for {
        let ours = ctx
            .client_ip_value
            .cloned()
            .unwrap_or_else(|| ip_value(ctx.client_ip));
        match (joined(headers, &X_FORWARDED_FOR), ours.to_str()) {
            (Some(prev), Ok(ip)) => set(headers, &X_FORWARDED_FOR, &format!("{prev}, {ip}")),
            _ => {
                headers.insert(X_FORWARDED_FOR.clone(), ours);
            }
        }
    }
    if policy.x_real_ip {
        // lbd's own conclusion, so the backend and lbd's rate limits and logs agree.
        let value = match ctx.client_ip_value {
            Some(v) if ctx.real_client == ctx.client_ip => v.clone(),
            _ => ip_value(ctx.real_client),
        };
        headers.insert(X_REAL_IP.clone(), value);
    }
    // Untrusted peers' values are gone by now, so "present" means a trusted proxy set it.
    if policy.x_forwarded_proto && !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(ctx.proto),
        );
    }
    if policy.x_forwarded_host && !headers.contains_key(&X_FORWARDED_HOST) {
        if let Some(h) = ctx.host {
            headers.insert(X_FORWARDED_HOST.clone(), h.clone());
        }
    }
    if policy.x_forwarded_port && !headers.contains_key(&X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(ctx.port));
    }
    if policy.forwarded {
        let element = forwarded_element(ctx);
        let value = match joined(headers, &header::FORWARDED) {
            Some(prev) => format!("{prev}, {element}"),
            None => element,
        };
        set(headers, &header::FORWARDED, &value);
    }
    if policy.via {
        add_via(headers, &policy.via_value);
    }
}

/// Our RFC 7239 `Forwarded` element: `for=PEER;proto=P;host="HOST"`.
fn forwarded_element(ctx: &ForwardCtx<'_>) -> String {
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
    element
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

    fn ctx<'a>(peer: &str, host: Option<&'a HeaderValue>) -> ForwardCtx<'a> {
        let ip = peer.parse().expect("ip");
        ForwardCtx {
            client_ip: ip,
            real_client: ip,
            proto: "http",
            host,
            port: 8080,
            client_ip_value: None,
        }
    }

    /// Every forwarding header a client can try to spoof.
    const SPOOFED: [(&str, &str); 8] = [
        ("x-forwarded-for", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2"),
        ("forwarded", "for=1.1.1.1;proto=https"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "1.1.1.1"),
        ("via", "1.0 fred"),
    ];

    #[test]
    fn xff_is_appended_and_an_untrusted_peers_other_forwarding_headers_are_replaced() {
        let host = HeaderValue::from_static("example.com");
        let mut h = map(&SPOOFED);
        add_forwarding(
            &mut h,
            &policy(&["10.0.0.0/8"]),
            &ctx("192.0.2.7", Some(&host)),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 192.0.2.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"example.com\""
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["via"], "1.0 fred, 1.1 lbd");
        // Not configured: removed, not passed on.
        assert!(!h.contains_key("x-forwarded-port"), "{h:?}");
        assert!(!h.contains_key("x-real-ip"), "{h:?}");
    }

    #[test]
    fn a_trusted_peers_forwarding_headers_are_kept_and_extended() {
        let host = HeaderValue::from_static("example.com");
        let mut h = map(&SPOOFED);
        add_forwarding(
            &mut h,
            &policy(&["10.0.0.0/8"]),
            &ctx("10.1.2.3", Some(&host)),
        );
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(
            h["forwarded"],
            "for=1.1.1.1;proto=https, for=10.1.2.3;proto=http;host=\"example.com\""
        );
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        assert_eq!(h["x-forwarded-port"], "443");
        assert_eq!(h["x-real-ip"], "1.1.1.1");

        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &policy(&[]), &ctx("::1", Some(&host)));
        assert_eq!(
            h["forwarded"],
            "for=\"[::1]\";proto=http;host=\"example.com\""
        );
    }

    #[test]
    fn x_real_ip_and_x_forwarded_port_when_configured() {
        let p = HeaderPolicy {
            x_real_ip: true,
            x_forwarded_port: true,
            ..policy(&["10.0.0.0/8"])
        };
        let mut h = map(&SPOOFED);
        add_forwarding(&mut h, &p, &ctx("192.0.2.7", None));
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-port"], "8080");
        assert!(
            !h.contains_key("x-forwarded-host"),
            "no host, and the client's is gone"
        );
        // Behind a trusted proxy X-Real-IP is lbd's own conclusion, not the proxy's claim.
        let mut h = map(&SPOOFED);
        let c = ForwardCtx {
            real_client: "198.51.100.9".parse().expect("ip"),
            ..ctx("10.0.0.1", None)
        };
        add_forwarding(&mut h, &p, &c);
        assert_eq!(h["x-real-ip"], "198.51.100.9");
        assert_eq!(
            h["x-forwarded-port"], "443",
            "a trusted proxy's port is kept"
        );
    }

    #[test]
    fn a_pre_rendered_client_ip_is_used_as_is() {
        let ours = ip_value("2001:db8::7".parse().expect("ip"));
        assert_eq!(ours, "2001:db8::7");
        let ctx = ForwardCtx {
            client_ip_value: Some(&ours),
            ..ctx("2001:db8::7", None)
        };
        let mut h = map(&[("x-forwarded-for", "spoofed")]);
        add_forwarding(&mut h, &policy(&[]), &ctx);
        assert_eq!(h["x-forwarded-for"], "spoofed, 2001:db8::7");
        let mut h = HeaderMap::new();
        add_forwarding(&mut h, &policy(&["2001:db8::/32"]), &ctx);
        assert_eq!(h["x-forwarded-for"], "2001:db8::7");
    }

    #[test]
    fn the_real_client_is_the_first_untrusted_hop_from_the_right() {
        let p = policy(&["10.0.0.0/8", "192.168.0.0/16"]);
        let real = |peer: &str, xff: &[&str]| -> String {
            let h = map(&xff
                .iter()
                .map(|v| ("x-forwarded-for", *v))
                .collect::<Vec<_>>());
            real_client(&p, peer.parse().expect("ip"), &h).to_string()
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(real("203.0.113.5", &["1.1.1.1"]), "203.0.113.5");
        // Trusted peer: right to left past trusted hops, across header lines.
        assert_eq!(
            real("10.0.0.1", &["1.1.1.1, 2.2.2.2, 192.168.1.1"]),
            "2.2.2.2"
        );
        assert_eq!(
            real("10.0.0.1", &["1.1.1.1", "2.2.2.2", "10.9.9.9"]),
            "2.2.2.2"
        );
        assert_eq!(real("10.0.0.1", &["2001:db8::1"]), "2001:db8::1");
        // Forms some proxies write.
        assert_eq!(real("10.0.0.1", &["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(real("10.0.0.1", &["198.51.100.1:5555"]), "198.51.100.1");
        assert_eq!(real("10.0.0.1", &[" 198.51.100.1 ,, "]), "198.51.100.1");
        // No list: the peer. Only trusted hops: the leftmost.
        assert_eq!(real("10.0.0.1", &[]), "10.0.0.1");
        assert_eq!(real("10.0.0.1", &["192.168.0.9, 10.0.0.7"]), "192.168.0.9");
        // Garbage ends the walk at the trusted hop that passed it on.
        assert_eq!(real("10.0.0.1", &["1.1.1.1, junk, 10.0.0.7"]), "10.0.0.7");
        assert_eq!(real("10.0.0.1", &["unknown"]), "10.0.0.1");
        // A mapped IPv4 peer is trusted by its IPv4 network.
        assert_eq!(real("::ffff:10.0.0.1", &["1.1.1.1"]), "1.1.1.1");
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
    fn disabled_headers_are_not_added_and_spoofs_are_still_removed() {
        let p = HeaderPolicy {
            x_forwarded_for: false,
            x_forwarded_proto: false,
            x_forwarded_host: false,
            forwarded: false,
            via: false,
            ..HeaderPolicy::default()
        };
        let mut h = map(&[
            ("x-forwarded-for", "spoofed"),
            ("x-forwarded-proto", "https"),
        ]);
        add_forwarding(&mut h, &p, &ctx("192.0.2.1", None));
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-forwarded-for"], "spoofed");
    }

    #[test]
    fn head_size_counts_lines() {
        let h = map(&[("ab", "cd"), ("x", "")]);
        assert_eq!(head_size(&h), (2 + 2 + 4) + (1 + 4));
    }
}
