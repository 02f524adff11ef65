//! Config validation over good and bad configs.

use super::pools::parse_status_range;
use super::validate::ms;
use super::*;
use crate::l7::router::RouteTarget;

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
fn route_upgrades_are_lowercase_per_route() {
    let text = format!(
        "{GOOD}[[route]]\nname = \"t\"\npath_prefix = \"/t\"\npool = \"web\"\n\
         upgrades = [\"X-Tunnel\", \"x-tunnel\", \"websocket\"]\n"
    );
    let c = load(&text).expect("valid");
    assert_eq!(c.routes.len(), 2);
    assert_eq!(
        c.route_upgrades,
        vec![
            vec![],
            vec!["x-tunnel".to_string(), "websocket".to_string()]
        ]
    );
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
        ("[headers]\nx_real_ip = \"yes\"\n", "invalid type"),
        ("[paths]\nmerge = true\n", "unknown field `merge`"),
        ("[paths]\nmerge_slashes = 1\n", "invalid type"),
        (
            "[paths]\nencoded_slash = \"drop\"\n",
            "`paths.encoded_slash`: \"drop\" is not a policy (valid: \"keep\", \"decode\", \"reject\")",
        ),
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
        (
            "[[route]]\npool = \"p\"\nupgrades = [\"ok\", \"web socket\"]\n",
            "`route[0].upgrades[1]`: \"web socket\" is not a protocol name (an RFC 9110 token)",
        ),
        (
            "[[route]]\npool = \"p\"\nupgrades = [\"\"]\n",
            "`route[0].upgrades[0]`: \"\" is not a protocol name",
        ),
        (
            "[[route]]\npool = \"p\"\nupgrades = [\"websocket/13\"]\n",
            "`route[0].upgrades[0]`: \"websocket/13\" is not a protocol name",
        ),
        (
            "[[route]]\npool = \"p\"\nupgrades = [\"H2C\"]\n",
            "`route[0].upgrades[0]`: \"H2C\" cannot be tunnelled",
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

/// A valid base with one pool and two named routes, for sticky and rate-limit cases.
const SOFT_BASE: &str = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n\
    [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\npool = \"p\"\n\
    [[route]]\nname = \"static\"\npath_prefix = \"/s/\"\npool = \"p\"\n\
    [[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n";

#[test]
fn sticky_defaults_and_modes() {
    let c = load(&format!("{SOFT_BASE}[pool.sticky]\nmode = \"insert\"\n")).expect("valid");
    let st = c.pools[0].sticky.clone().expect("sticky");
    assert_eq!(
        st,
        StickyConfig {
            mode: StickyMode::Insert,
            cookie: DEFAULT_STICKY_COOKIE.into(),
            ttl: Duration::from_secs(DEFAULT_STICKY_TTL_S),
            secure: false,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            max_entries: DEFAULT_STICKY_MAX_ENTRIES,
            max_bytes: DEFAULT_STICKY_MAX_BYTES,
            max_key_bytes: DEFAULT_STICKY_MAX_KEY_BYTES,
        }
    );
    let c = load(&format!(
        "{SOFT_BASE}[pool.sticky]\nmode = \"learn\"\ncookie = \"JSESSIONID\"\nttl_s = 60\nmax_entries = 5\n\
         max_bytes = 65536\nmax_key_bytes = 100\n"
    ))
    .expect("valid");
    let st = c.pools[0].sticky.clone().expect("sticky");
    assert_eq!(st.mode, StickyMode::Learn);
    assert_eq!(st.cookie, "JSESSIONID");
    assert_eq!(st.ttl, Duration::from_secs(60));
    assert_eq!(st.max_entries, 5);
    assert_eq!((st.max_bytes, st.max_key_bytes), (65536, 100));
    let limits = crate::snapshot::soft_limits(&c);
    assert_eq!(
        (
            limits.sticky_max_entries,
            limits.sticky_max_bytes,
            limits.sticky_max_key_bytes
        ),
        (5, 65536, 100)
    );
    let c = load(&format!(
        "{SOFT_BASE}[pool.sticky]\nmode = \"insert\"\ncookie = \"SRV\"\nsecure = true\nsame_site = \"none\"\nhttp_only = false\npath = \"/app\"\n"
    ))
    .expect("valid");
    let st = c.pools[0].sticky.clone().expect("sticky");
    assert_eq!(
        (
            st.cookie.as_str(),
            st.secure,
            st.http_only,
            st.same_site,
            st.path.as_str()
        ),
        ("SRV", true, false, SameSite::None, "/app")
    );
    assert_eq!(load(SOFT_BASE).expect("valid").pools[0].sticky, None);
}

#[test]
fn bad_sticky_values_are_rejected() {
    let cases: &[(&str, &str)] = &[
        ("", "`pool[0].sticky.mode`: is required (valid: \"insert\", \"learn\")"),
        (
            "mode = \"sticky\"\n",
            "`pool[0].sticky.mode`: \"sticky\" is not a sticky mode (valid: \"insert\", \"learn\")",
        ),
        (
            "mode = \"learn\"\n",
            "`pool[0].sticky.cookie`: is required in learn mode",
        ),
        (
            "mode = \"insert\"\ncookie = \"a b\"\n",
            "`pool[0].sticky.cookie`: \"a b\" is not a cookie name",
        ),
        (
            "mode = \"insert\"\ncookie = \"\"\n",
            "`pool[0].sticky.cookie`: \"\" is not a cookie name",
        ),
        (
            "mode = \"insert\"\nttl_s = 0\n",
            "`pool[0].sticky.ttl_s`: 0 is out of range (valid: 1..=31622400)",
        ),
        (
            "mode = \"insert\"\nsame_site = \"loose\"\n",
            "`pool[0].sticky.same_site`: \"loose\" is not a SameSite value (valid: \"strict\", \"lax\", \"none\")",
        ),
        (
            "mode = \"insert\"\nsame_site = \"none\"\n",
            "`pool[0].sticky.same_site`: \"none\" needs secure = true",
        ),
        (
            "mode = \"insert\"\npath = \"app\"\n",
            "`pool[0].sticky.path`: \"app\" must be an absolute path",
        ),
        (
            "mode = \"insert\"\npath = \"/a;b\"\n",
            "`pool[0].sticky.path`: \"/a;b\" must be an absolute path",
        ),
        (
            "mode = \"insert\"\nmax_entries = 10\n",
            "`pool[0].sticky.max_entries`: only applies to mode = \"learn\"",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\nmax_entries = 0\n",
            "`pool[0].sticky.max_entries`: 0 is out of range",
        ),
        (
            "mode = \"insert\"\nmax_bytes = 100000\n",
            "`pool[0].sticky.max_bytes`: only applies to mode = \"learn\"",
        ),
        (
            "mode = \"insert\"\nmax_key_bytes = 100\n",
            "`pool[0].sticky.max_key_bytes`: only applies to mode = \"learn\"",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\nmax_bytes = 1000\n",
            "`pool[0].sticky.max_bytes`: 1000 is out of range (valid: 65536..=17179869184)",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\nmax_key_bytes = 10\n",
            "`pool[0].sticky.max_key_bytes`: 10 is out of range (valid: 64..=1021: with the name \"p\"",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\nmax_key_bytes = 1022\n",
            "`pool[0].sticky.max_key_bytes`: 1022 is out of range (valid: 64..=1021",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\nsecure = true\n",
            "`pool[0].sticky.secure`: only applies to mode = \"insert\"",
        ),
        (
            "mode = \"learn\"\ncookie = \"S\"\npath = \"/\"\n",
            "`pool[0].sticky.path`: only applies to mode = \"insert\"",
        ),
        ("mode = \"insert\"\ncolour = 1\n", "unknown field `colour`"),
    ];
    for (extra, needle) in cases {
        let e = errors(&format!("{SOFT_BASE}[pool.sticky]\n{extra}"));
        assert!(
            e.contains(needle),
            "missing {needle:?} for {extra:?} in:\n{e}"
        );
    }
    // Every problem at once, each with its line.
    let e = errors(&format!(
        "{SOFT_BASE}[pool.sticky]\nmode = \"insert\"\nttl_s = 0\nsame_site = \"x\"\n"
    ));
    assert!(e.contains("2 error(s)"), "{e}");
    assert!(e.contains("t.toml:18:1: `pool[0].sticky.ttl_s`"), "{e}");
    assert!(e.contains("t.toml:19:1: `pool[0].sticky.same_site`"), "{e}");
}

#[test]
fn rate_limits_are_typed() {
    let c = load(&format!(
        "{SOFT_BASE}[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = 10\nburst = 20\n\
         [[rate_limit]]\nname = \"api-key\"\nkey = \"header:X-Api-Key\"\nrate = 0.5\nburst = 1\nroutes = [\"static\"]\n\
         [[rate_limit]]\nname = \"per-route\"\nkey = \"route\"\nrate = 100\nburst = 100\nroutes = [\"api\", \"static\"]\n\
         [[rate_limit]]\nname = \"per-host\"\nkey = \"client_ip\"\nrate = 1\nburst = 1\nipv6_prefix_len = 128\n"
    ))
    .expect("valid");
    assert_eq!(
        c.rate_limits,
        vec![
            RateLimitConfig {
                name: "per-ip".into(),
                key: RateKey::ClientIp,
                rate: 10.0,
                burst: 20,
                routes: vec![],
                ipv6_prefix_len: DEFAULT_RATE_LIMIT_IPV6_PREFIX_LEN,
                max_key_bytes: DEFAULT_RATE_LIMIT_MAX_KEY_BYTES,
            },
            RateLimitConfig {
                name: "api-key".into(),
                key: RateKey::Header(HeaderName::from_static("x-api-key")),
                rate: 0.5,
                burst: 1,
                routes: vec![1],
                ipv6_prefix_len: DEFAULT_RATE_LIMIT_IPV6_PREFIX_LEN,
                max_key_bytes: DEFAULT_RATE_LIMIT_MAX_KEY_BYTES,
            },
            RateLimitConfig {
                name: "per-route".into(),
                key: RateKey::Route,
                rate: 100.0,
                burst: 100,
                routes: vec![0, 1],
                ipv6_prefix_len: DEFAULT_RATE_LIMIT_IPV6_PREFIX_LEN,
                max_key_bytes: DEFAULT_RATE_LIMIT_MAX_KEY_BYTES,
            },
            RateLimitConfig {
                name: "per-host".into(),
                key: RateKey::ClientIp,
                rate: 1.0,
                burst: 1,
                routes: vec![],
                ipv6_prefix_len: 128,
                max_key_bytes: DEFAULT_RATE_LIMIT_MAX_KEY_BYTES,
            },
        ]
    );
    assert_eq!(c.global.rate_limit_max_keys, DEFAULT_RATE_LIMIT_MAX_KEYS);
    assert_eq!(c.global.rate_limit_max_bytes, DEFAULT_RATE_LIMIT_MAX_BYTES);
    let limits = crate::snapshot::soft_limits(&c);
    assert_eq!(
        (limits.rate_max_bytes, limits.rate_max_key_bytes),
        (
            DEFAULT_RATE_LIMIT_MAX_BYTES,
            DEFAULT_RATE_LIMIT_MAX_KEY_BYTES
        )
    );
    assert_eq!(c.global.workers, None);
    assert_eq!(c.global.cookie_secret, None);
    assert!(c.global.http1_fast_path, "the fast path is on by default");
}

#[test]
fn bad_rate_limits_and_globals_are_rejected() {
    let ok = "name = \"r\"\nkey = \"client_ip\"\nrate = 1\nburst = 1\n";
    let cases: &[(&str, &str)] = &[
        (
            "key = \"client_ip\"\nrate = 1\nburst = 1\n",
            "`rate_limit[0].name`: is required",
        ),
        (
            "name = \"r\"\nrate = 1\nburst = 1\n",
            "`rate_limit[0].key`: is required (valid: \"client_ip\", \"header:NAME\", \"route\")",
        ),
        (
            "name = \"r\"\nkey = \"cookie:x\"\nrate = 1\nburst = 1\n",
            "`rate_limit[0].key`: \"cookie:x\" is not a rate-limit key (valid: \"client_ip\", \"header:NAME\", \"route\")",
        ),
        (
            "name = \"r\"\nkey = \"header:a b\"\nrate = 1\nburst = 1\n",
            "`rate_limit[0].key`: \"a b\" is not a valid header name",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 0\nburst = 1\n",
            "`rate_limit[0].rate`: 0 is out of range (valid: tokens per second, > 0",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = -2.5\nburst = 1\n",
            "`rate_limit[0].rate`: -2.5 is out of range",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nburst = 1\n",
            "`rate_limit[0].rate`: is required",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\nburst = 0\n",
            "`rate_limit[0].burst`: 0 is out of range (valid: 1..=",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\n",
            "`rate_limit[0].burst`: is required",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\nburst = 1\nroutes = [\"api\", \"nope\"]\n",
            "`rate_limit[0].routes[1]`: unknown route \"nope\" (defined routes: \"api\", \"static\")",
        ),
        ("name = \"r\"\nkey = \"route\"\nrate = \"fast\"\nburst = 1\n", "invalid type"),
        ("name = \"r\"\nlimit = 3\n", "unknown field `limit`"),
        (
            "name = \"r\"\nkey = \"client_ip\"\nrate = 1\nburst = 1\nipv6_prefix_len = 0\n",
            "`rate_limit[0].ipv6_prefix_len`: 0 is out of range (valid: 1..=128)",
        ),
        (
            "name = \"r\"\nkey = \"client_ip\"\nrate = 1\nburst = 1\nipv6_prefix_len = 129\n",
            "`rate_limit[0].ipv6_prefix_len`: 129 is out of range (valid: 1..=128)",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\nburst = 1\nipv6_prefix_len = 48\n",
            "`rate_limit[0].ipv6_prefix_len`: only applies to key = \"client_ip\"",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\nburst = 1\nmax_key_bytes = 63\n",
            "`rate_limit[0].max_key_bytes`: 63 is out of range (valid: 64..=1021: with the name \"r\"",
        ),
        (
            "name = \"r\"\nkey = \"route\"\nrate = 1\nburst = 1\nmax_key_bytes = 1022\n",
            "`rate_limit[0].max_key_bytes`: 1022 is out of range",
        ),
    ];
    for (table, needle) in cases {
        let e = errors(&format!("{SOFT_BASE}[[rate_limit]]\n{table}"));
        assert!(
            e.contains(needle),
            "missing {needle:?} for {table:?} in:\n{e}"
        );
    }
    let e = errors(&format!(
        "{SOFT_BASE}[[rate_limit]]\n{ok}[[rate_limit]]\n{ok}"
    ));
    assert!(
        e.contains("`rate_limit[1].name`: duplicate rate_limit name \"r\""),
        "{e}"
    );
    for (global, needle) in [
        (
            "workers = 0\n",
            "`global.workers`: 0 is out of range (valid: 1..=1024)",
        ),
        (
            "rate_limit_max_keys = 0\n",
            "`global.rate_limit_max_keys`: 0 is out of range",
        ),
        (
            "rate_limit_max_bytes = 65535\n",
            "`global.rate_limit_max_bytes`: 65535 is out of range (valid: 65536..=17179869184)",
        ),
        (
            "cookie_secret_file = \"/nonexistent/lbd-secret\"\n",
            "`global.cookie_secret_file`: cannot read /nonexistent/lbd-secret",
        ),
        (
            "cookie_secret_file = \"\"\n",
            "`global.cookie_secret_file`: must not be empty",
        ),
    ] {
        let e = errors(&format!("[global]\n{global}{SOFT_BASE}"));
        assert!(
            e.contains(needle),
            "missing {needle:?} for {global:?} in:\n{e}"
        );
    }
}

#[test]
fn forwarding_and_path_policies_are_typed() {
    let c = load(SOFT_BASE).expect("valid");
    assert!(c.headers.x_forwarded_for && c.headers.x_forwarded_proto && c.headers.x_forwarded_host);
    assert!(!c.headers.x_real_ip && !c.headers.x_forwarded_port && !c.headers.forwarded);
    assert_eq!(c.paths, PathPolicy::default());
    assert!(!c.paths.merge_slashes);
    assert_eq!(c.paths.encoded_slash, EncodedSlash::Keep);
    let c = load(&format!(
        "[headers]\nx_real_ip = true\nx_forwarded_port = true\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
         [paths]\nmerge_slashes = true\nencoded_slash = \"reject\"\n{SOFT_BASE}"
    ))
    .expect("valid");
    assert!(c.headers.x_real_ip && c.headers.x_forwarded_port);
    assert!(c.headers.trusts("10.9.8.7".parse().expect("ip")));
    assert!(c.headers.trusts("::1".parse().expect("ip")));
    assert!(!c.headers.trusts("192.0.2.1".parse().expect("ip")));
    assert_eq!(
        c.paths,
        PathPolicy {
            merge_slashes: true,
            encoded_slash: EncodedSlash::Reject,
        }
    );
    // Every problem at once.
    let e = errors(&format!(
        "[headers]\ntrusted_proxies = [\"nope\"]\n[paths]\nencoded_slash = \"x\"\n{SOFT_BASE}\
         [[rate_limit]]\nname = \"r\"\nkey = \"route\"\nrate = 1\nburst = 1\nipv6_prefix_len = 200\n"
    ));
    assert!(e.contains("`headers.trusted_proxies[0]`"), "{e}");
    assert!(e.contains("`paths.encoded_slash`"), "{e}");
    assert!(
        e.contains("`rate_limit[0].ipv6_prefix_len`: 200 is out of range"),
        "{e}"
    );
    assert!(
        e.contains("`rate_limit[0].ipv6_prefix_len`: only applies"),
        "{e}"
    );
}

#[test]
fn cookie_secret_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load_in =
        |text: &str| LbConfig::from_source(&Source::from_text(dir.path().join("lbd.toml"), text));
    std::fs::write(dir.path().join("short"), "tooshort\n").expect("write");
    std::fs::write(
        dir.path().join("good"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("write");
    let e = load_in(&format!(
        "[global]\ncookie_secret_file = \"short\"\nworkers = 2\n{SOFT_BASE}"
    ))
    .expect_err("short key")
    .to_string();
    assert!(
        e.contains("holds 8 byte(s); the key needs at least 16"),
        "{e}"
    );
    let c = load_in(&format!(
        "[global]\ncookie_secret_file = \"good\"\nworkers = 2\nrate_limit_max_keys = 7\n{SOFT_BASE}"
    ))
    .expect("valid");
    assert_eq!(
        c.global.cookie_secret,
        Some(CookieSecret(b"0123456789abcdef0123456789abcdef".to_vec())),
        "trailing newline is not part of the key"
    );
    assert_eq!(c.global.workers, Some(2));
    assert_eq!(c.global.rate_limit_max_keys, 7);
    let c = load_in(&format!("[global]\nhttp1_fast_path = false\n{SOFT_BASE}")).expect("valid");
    assert!(!c.global.http1_fast_path);
    let e = load_in(&format!("[global]\nhttp1_fast_path = \"yes\"\n{SOFT_BASE}"))
        .expect_err("not a boolean")
        .to_string();
    assert!(
        e.contains(
            ":2:19: `global.http1_fast_path`: invalid type: string \"yes\", expected a boolean"
        ),
        "{e}"
    );
    // The secret never shows in Debug output (logs of the config).
    assert!(!format!("{:?}", c.global).contains("0123456789abcdef"));
}

#[test]
fn tls_ticket_rotation_defaults_to_an_hour_and_is_bounded() {
    let c = load(SOFT_BASE).expect("valid");
    assert_eq!(c.global.tls_ticket_rotate, Duration::from_secs(3600));
    let c = load(&format!("[global]\ntls_ticket_rotate_s = 60\n{SOFT_BASE}")).expect("valid");
    assert_eq!(c.global.tls_ticket_rotate, Duration::from_secs(60));
    for (bad, want) in [
        (
            "0",
            "`global.tls_ticket_rotate_s`: 0 is out of range (valid: 1..=86400)",
        ),
        (
            "86401",
            "`global.tls_ticket_rotate_s`: 86401 is out of range (valid: 1..=86400)",
        ),
    ] {
        let e = load(&format!(
            "[global]\ntls_ticket_rotate_s = {bad}\n{SOFT_BASE}"
        ))
        .expect_err("out of range")
        .to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn soft_state_file_is_optional_relative_to_the_config_and_its_flush_bounded() {
    let c = load(SOFT_BASE).expect("valid");
    assert_eq!(c.global.soft_state_file, None, "no file by default");
    assert_eq!(c.global.soft_state_flush, Duration::from_millis(20));
    let c = load(&format!(
        "[global]\nsoft_state_file = \"/var/lib/lbd/softstate\"\nsoft_state_flush_ms = 5\n\
         {SOFT_BASE}"
    ))
    .expect("valid");
    assert_eq!(
        c.global.soft_state_file.as_deref(),
        Some(Path::new("/var/lib/lbd/softstate"))
    );
    assert_eq!(c.global.soft_state_flush, Duration::from_millis(5));
    // Relative to the config file's directory, like the other files; not checked here (the
    // directory may not exist yet where the config is checked): lbd checks it at start.
    let src = Source::from_text(
        "/etc/lbpair/lbd.toml",
        format!("[global]\nsoft_state_file = \"state/soft\"\n{SOFT_BASE}"),
    );
    let c = LbConfig::from_source(&src).expect("valid");
    assert_eq!(
        c.global.soft_state_file.as_deref(),
        Some(Path::new("/etc/lbpair/state/soft"))
    );
    let e = errors(&format!("[global]\nsoft_state_file = \" \"\n{SOFT_BASE}"));
    assert!(
        e.contains("`global.soft_state_file`: must not be empty"),
        "{e}"
    );
    for (bad, want) in [
        (
            "0",
            "`global.soft_state_flush_ms`: 0 is out of range (valid: 1..=1000)",
        ),
        (
            "1001",
            "`global.soft_state_flush_ms`: 1001 is out of range (valid: 1..=1000)",
        ),
    ] {
        let e = errors(&format!(
            "[global]\nsoft_state_flush_ms = {bad}\n{SOFT_BASE}"
        ));
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn idle_connections_are_bounded_by_max_conns_unless_set() {
    let text = "default_pool = \"web\"\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n\
[[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"127.0.0.1:9001\"\nmax_conns = 300\n\
[[pool.backend]]\naddress = \"127.0.0.1:9002\"\n\
[[pool]]\nname = \"set\"\n[pool.keepalive]\nidle_max = 7\n\
[[pool.backend]]\naddress = \"127.0.0.1:9003\"\nmax_conns = 300\n";
    let c = load(text).expect("valid");
    let web = &c.pools[0];
    assert_eq!(web.idle_max, None);
    assert_eq!(
        web.idle_max_for(&web.backends[0]),
        300,
        "the backend's max_conns"
    );
    assert_eq!(
        web.idle_max_for(&web.backends[1]),
        DEFAULT_IDLE_MAX,
        "unlimited max_conns"
    );
    let set = &c.pools[1];
    assert_eq!(set.idle_max_for(&set.backends[0]), 7, "idle_max wins");
    let bad = errors(&text.replace("idle_max = 7", "idle_max = 10001"));
    assert!(bad.contains("`pool[1].keepalive.idle_max`"), "{bad}");
}

#[test]
fn admin_token_file_must_be_private_and_long_enough() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let load_in =
        |text: &str| LbConfig::from_source(&Source::from_text(dir.path().join("lbd.toml"), text));
    let write = |name: &str, content: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    };
    let token = "  0123456789abcdef-admin\n";
    let good = write("good", token, 0o600);
    write("readonly", token, 0o400);
    let open = write("open", token, 0o644);
    write("group", token, 0o640);
    let short = write("short", "tooshort\n", 0o600);
    let with = |file: &str| format!("[global]\nadmin_token_file = \"{file}\"\n{SOFT_BASE}");

    let c = load_in(&with("good")).expect("valid");
    assert_eq!(
        c.global.admin_token,
        Some(AdminToken(b"0123456789abcdef-admin".to_vec())),
        "surrounding whitespace is not part of the token"
    );
    assert!(!format!("{:?}", c.global).contains("0123456789abcdef"));
    assert!(
        load_in(&with("readonly")).is_ok(),
        "0400 is stricter than 0600"
    );
    let absolute = load_in(&with(&good.display().to_string())).expect("absolute path");
    assert_eq!(absolute.global.admin_token, c.global.admin_token);
    assert_eq!(
        load_in(&format!("[global]\n{SOFT_BASE}"))
            .expect("valid")
            .global
            .admin_token,
        None
    );

    // Owned by another user: refused even at 0600 (only root can make such a file here).
    if nix::unistd::geteuid().is_root() {
        let theirs = write("theirs", token, 0o600);
        std::os::unix::fs::chown(&theirs, Some(65534), None).expect("chown");
        let e = load_in(&with("theirs"))
            .expect_err("foreign owner")
            .to_string();
        assert!(
            e.contains(&format!(
                "{} is owned by uid 65534; it must be owned by uid 0, the user lbd runs as",
                theirs.display()
            )),
            "{e}"
        );
    }
    for (file, needle) in [
        (
            "open".to_string(),
            format!(
                "`global.admin_token_file`: {} has mode 0644; it must be 0600 or stricter",
                open.display()
            ),
        ),
        (
            "group".to_string(),
            "has mode 0640; it must be 0600".to_string(),
        ),
        (
            "short".to_string(),
            format!(
                "{} holds a 8-byte token; it needs at least 16",
                short.display()
            ),
        ),
        (
            "missing".to_string(),
            "`global.admin_token_file`: cannot read".to_string(),
        ),
        (
            String::new(),
            "`global.admin_token_file`: must not be empty".to_string(),
        ),
    ] {
        let e = load_in(&with(&file)).expect_err(&file).to_string();
        assert!(
            e.contains(&needle),
            "missing {needle:?} for {file:?} in:\n{e}"
        );
    }
}

#[test]
fn body_limits_and_the_per_client_cap() {
    let c = load(&format!("[global]\n{SOFT_BASE}")).expect("valid");
    assert_eq!(
        c.limits.max_request_body_bytes,
        DEFAULT_MAX_REQUEST_BODY_BYTES
    );
    assert_eq!(c.global.max_conns_per_client, DEFAULT_MAX_CONNS_PER_CLIENT);
    assert_eq!(c.body_limit(Some(0)), DEFAULT_MAX_REQUEST_BODY_BYTES);

    let text = format!(
        "[global]\nmax_conns_per_client = 0\n[limits]\nmax_request_body_bytes = 1000\n{}",
        SOFT_BASE.replace(
            "pool = \"p\"\n[[route]]",
            "pool = \"p\"\nmax_request_body_bytes = 5000\n[[route]]"
        )
    );
    let c = load(&text).expect("valid");
    assert_eq!(c.global.max_conns_per_client, 0, "0 turns the cap off");
    assert_eq!(c.body_limit(Some(0)), 5000, "route api overrides");
    assert_eq!(
        c.body_limit(Some(1)),
        1000,
        "route static has the global limit"
    );
    assert_eq!(
        c.body_limit(None),
        1000,
        "the default pool has the global limit"
    );

    for (text, needle) in [
        (
            format!("[limits]\nmax_request_body_bytes = 0\n{SOFT_BASE}"),
            "`limits.max_request_body_bytes`: 0 is out of range (valid: 1..=1099511627776)",
        ),
        (
            format!("[global]\nmax_conns_per_client = 2000000\n{SOFT_BASE}"),
            "`global.max_conns_per_client`: 2000000 is out of range (valid: 0..=1000000)",
        ),
        (
            SOFT_BASE.replace(
                "pool = \"p\"\n[[route]]",
                "pool = \"p\"\nmax_request_body_bytes = 0\n[[route]]",
            ),
            "`route[0].max_request_body_bytes`: 0 is out of range",
        ),
    ] {
        let e = errors(&text);
        assert!(e.contains(needle), "missing {needle:?} in:\n{e}");
    }
}

#[test]
fn admin_token_file_is_checked_as_opened_not_by_path() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let load_in =
        |text: &str| LbConfig::from_source(&Source::from_text(dir.path().join("lbd.toml"), text));
    let good = dir.path().join("good");
    std::fs::write(&good, "0123456789abcdef-admin\n").expect("write");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(&good, dir.path().join("link")).expect("symlink");
    std::fs::create_dir(dir.path().join("adir")).expect("mkdir");
    std::fs::set_permissions(
        dir.path().join("adir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .expect("chmod");
    let with = |file: &str| format!("[global]\nadmin_token_file = \"{file}\"\n{SOFT_BASE}");
    let e = load_in(&with("link"))
        .expect_err("a symlink is refused")
        .to_string();
    assert!(e.contains("a symlink is not followed"), "{e}");
    let e = load_in(&with("adir"))
        .expect_err("a directory is refused")
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    assert!(load_in(&with("good")).is_ok());
}

#[test]
fn listener_tls_is_typed_and_every_bad_key_is_reported() {
    let with_tls = |tls: &str| {
        GOOD.replace(
            "address = \"127.0.0.1:8080\"\n",
            &format!("address = \"127.0.0.1:8080\"\n[listener.tls]\n{tls}\n"),
        )
    };
    let c = load(&with_tls(
        "certs = [{ cert = \"/c.pem\", key = \"/c.key\" }]\nunknown_sni = \"refuse\"\nmin_version = \"1.3\"",
    ))
    .expect("valid");
    let tls = c.listeners[0].tls.as_ref().expect("tls");
    assert_eq!(tls.certs[0].cert, PathBuf::from("/c.pem"));
    assert_eq!(tls.unknown_sni, UnknownSni::Refuse);
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.expiry_warning, Duration::from_secs(14 * 86_400));
    assert_eq!(tls.watch, Some(Duration::from_secs(5)));

    let e = errors(&with_tls(
        "certs = [{ cert = \"/c.pem\" }]\nunknown_sni = \"maybe\"\nmin_version = \"1.1\"\nexpiry_warning_days = 5000\nwatch_ms = 5",
    ));
    for want in [
        "listener[0].tls.certs[0].key",
        "listener[0].tls.unknown_sni",
        "\"default\", \"refuse\"",
        "listener[0].tls.min_version",
        "\"1.2\", \"1.3\"",
        "listener[0].tls.expiry_warning_days",
        "listener[0].tls.watch_ms",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let e = errors(&with_tls("certs = []"));
    assert!(e.contains("listener[0].tls.certs"), "{e}");
    let e = errors(&with_tls("cert = \"/c.pem\""));
    assert!(e.contains("cert"), "unknown keys are refused: {e}");
}

#[test]
fn client_certificate_settings_are_checked() {
    let with_tls = |tls: &str| {
        GOOD.replace(
            "address = \"127.0.0.1:8080\"\n",
            &format!(
                "address = \"127.0.0.1:8080\"\n[listener.tls]\ncerts = [{{ cert = \"/c.pem\", key = \"/c.key\" }}]\n{tls}\n"
            ),
        )
    };
    let c = load(&with_tls("client_ca = \"/ca.pem\"")).expect("valid");
    let client = c.listeners[0]
        .tls
        .as_ref()
        .and_then(|t| t.client.clone())
        .expect("client");
    assert!(client.required);
    assert_eq!(client.subject_header.as_str(), "x-client-cert-subject");
    let e = errors(&with_tls(
        "client_auth = \"optional\"\nclient_subject_header = \"x-s\"",
    ));
    assert!(
        e.contains("listener[0].tls.client_auth") && e.contains("needs client_ca"),
        "{e}"
    );
    assert!(e.contains("listener[0].tls.client_subject_header"), "{e}");
    let e = errors(&with_tls(
        "client_ca = \"/ca.pem\"\nclient_auth = \"sometimes\"\nclient_subject_header = \"bad header\"",
    ));
    assert!(e.contains("\"required\", \"optional\""), "{e}");
    assert!(e.contains("not a valid header name"), "{e}");
}

#[test]
fn route_https_settings_are_typed_and_checked() {
    let with = |extra: &str| {
        GOOD.replace(
            "path_prefix = \"/v1/\"\n",
            &format!("path_prefix = \"/v1/\"\n{extra}\n"),
        )
    };
    let c = load(&with("redirect_to_https = true\nhttps_port = 8443\nhsts_max_age_s = 600\nhsts_include_subdomains = true")).expect("valid");
    let h = c.route_https(Some(0)).expect("policy");
    assert_eq!(h.redirect, Some(Some(8443)));
    assert_eq!(
        h.hsts.as_ref().map(|v| v.to_str().expect("ascii")),
        Some("max-age=600; includeSubDomains")
    );
    let e = errors(&with("https_port = 0\nhsts_include_subdomains = true\n"));
    assert!(
        e.contains("route[0].https_port") && e.contains("only with redirect_to_https"),
        "{e}"
    );
    assert!(e.contains("route[0].hsts_include_subdomains"), "{e}");
    let e = errors(&with("hsts_max_age_s = 99999999999"));
    assert!(e.contains("route[0].hsts_max_age_s"), "{e}");
}

#[test]
fn http2_limits_have_defaults_and_ranges() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.http2.max_concurrent_streams, 100);
    assert_eq!(c.http2.max_pending_reset_streams, 20);
    assert_eq!(c.http2.max_resets_per_second, 200);
    let c = load(&format!(
        "{GOOD}\n[http2]\nmax_resets_per_second = 100000\n"
    ))
    .expect("valid");
    assert_eq!(c.http2.max_resets_per_second, 100_000);
    let e = errors(&format!(
        "{GOOD}\n[http2]\nmax_concurrent_streams = 0\ninitial_stream_window_bytes = 10\nmax_pending_reset_streams = 0\nmax_resets_per_second = 0\n"
    ));
    for key in [
        "http2.max_concurrent_streams",
        "http2.initial_stream_window_bytes",
        "http2.max_pending_reset_streams",
        "http2.max_resets_per_second",
    ] {
        assert!(e.contains(key), "missing {key} in {e}");
    }
}

/// Writes PEM files for the `[pool.tls]` tests: a CA certificate, and self-signed client
/// pairs valid now or expired.
struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn new() -> Self {
        TlsFiles {
            dir: tempfile::tempdir().expect("dir"),
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// `{name}.pem` and `{name}.key`, valid from `from` to `to` years from now.
    fn pair(&self, name: &str, from: i32, to: i32) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec![format!("{name}.test")]).expect("p");
        let year = time::Duration::days(365);
        params.not_before = time::OffsetDateTime::now_utc() + year * from;
        params.not_after = time::OffsetDateTime::now_utc() + year * to;
        let cert = params.self_signed(&key).expect("cert");
        let (c, k) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        (c, k)
    }
}

/// GOOD with `tls` as the "canary" pool's (`pool[1]`) `[pool.tls]`.
fn with_pool_tls(tls: &str) -> String {
    GOOD.replace(
        "address = \"127.0.0.1:9003\"\n",
        &format!("address = \"127.0.0.1:9003\"\n[pool.tls]\n{tls}\n"),
    )
}

#[test]
fn pool_tls_is_typed_and_its_files_are_read() {
    let f = TlsFiles::new();
    let (ca, _) = f.pair("ca", -1, 1);
    let (cert, key) = f.pair("client", -1, 1);
    let c = load(&with_pool_tls(&format!(
        "ca = {ca:?}\nserver_name = \"api.internal\"\nclient_cert = {cert:?}\nclient_key = {key:?}"
    )))
    .expect("valid");
    assert_eq!(c.pools[0].tls, None, "plain unless asked");
    let tls = c.pools[1].tls.as_ref().expect("tls");
    assert_eq!(tls.ca, PathBuf::from(&ca));
    assert_eq!(tls.server_name, "api.internal");
    let client = tls.client_cert.as_ref().expect("client pair");
    assert_eq!(
        (client.cert.clone(), client.key.clone()),
        (PathBuf::from(&cert), PathBuf::from(&key))
    );
    // An IP address is a name certificates can carry too.
    let c = load(&with_pool_tls(&format!(
        "ca = {ca:?}\nserver_name = \"10.0.0.1\""
    )))
    .expect("valid");
    assert_eq!(c.pools[1].tls.as_ref().expect("tls").client_cert, None);
}

#[test]
fn pool_tls_reports_every_missing_or_bad_key() {
    let e = errors(&with_pool_tls("client_cert = \"/c.pem\""));
    for want in [
        "pool[1].tls.ca`: is required",
        "pool[1].tls.server_name`: is required",
        "pool[1].tls.client_key`: is required with client_cert",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let e = errors(&with_pool_tls(
        "ca = \"/ca.pem\"\nserver_name = \"not a name\"\nclient_key = \"/c.key\"",
    ));
    assert!(
        e.contains("pool[1].tls.client_cert`: is required with client_key"),
        "{e}"
    );
    assert!(
        e.contains("pool[1].tls.server_name`: \"not a name\" is not a DNS name"),
        "{e}"
    );
    let e = errors(&with_pool_tls(
        "ca = \"/ca.pem\"\nserver_name = \"a\"\nverify = false",
    ));
    assert!(e.contains("verify"), "unknown keys are refused: {e}");
}

#[test]
fn pool_tls_files_that_cannot_be_used_are_config_errors_naming_key_and_file() {
    let f = TlsFiles::new();
    let (ca, _) = f.pair("ca", -1, 1);
    let (cert, key) = f.pair("client", -1, 1);
    let (_, other_key) = f.pair("other", -1, 1);
    let (expired, expired_key) = f.pair("expired", -2, -1);
    std::fs::write(f.path("junk.pem"), "not PEM at all\n").expect("write");
    let junk = f.path("junk.pem");
    let missing = f.path("missing.pem");
    let tls = |ca: &str, cert: &str, key: &str| {
        with_pool_tls(&format!(
            "ca = {ca:?}\nserver_name = \"api.internal\"\nclient_cert = {cert:?}\nclient_key = {key:?}"
        ))
    };
    // Every bad file of one table is reported in the same run.
    let e = errors(&tls(&missing, &cert, &other_key));
    assert!(
        e.contains("pool[1].tls.ca`: ") && e.contains("missing.pem"),
        "{e}"
    );
    assert!(
        e.contains("pool[1].tls.client_key`: ") && e.contains("does not match the certificate"),
        "{e}"
    );
    let e = errors(&tls(&junk, &expired, &expired_key));
    assert!(
        e.contains("pool[1].tls.ca`: ") && e.contains("junk.pem: no certificate"),
        "{e}"
    );
    assert!(
        e.contains("pool[1].tls.client_cert`: ") && e.contains("expired.pem: certificate expired"),
        "{e}"
    );
    let e = errors(&tls(&ca, &cert, &missing));
    assert!(
        e.contains("pool[1].tls.client_key`: ") && e.contains("missing.pem"),
        "{e}"
    );
    let e = errors(&tls(&ca, &junk, &key));
    assert!(
        e.contains("pool[1].tls.client_cert`: ") && e.contains("junk.pem"),
        "{e}"
    );
    assert!(load(&tls(&ca, &cert, &key)).is_ok());
}

#[test]
fn pool_protocol_and_grpc_health_checks_are_typed() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.pools[0].protocol, UpstreamProtocol::Http1, "the default");
    let text = r#"
[[listener]]
name = "l"
address = "127.0.0.1:8080"
[[pool]]
name = "grpc"
protocol = "h2"
[[pool.backend]]
address = "127.0.0.1:50051"
[pool.health]
kind = "grpc"
grpc_service = "app.Greeter"
host = "greeter.internal:50051"
[[pool]]
name = "whole-server"
protocol = "http1"
[[pool.backend]]
address = "127.0.0.1:50052"
[pool.health]
kind = "grpc"
"#;
    let c = load(text).expect("valid");
    assert_eq!(c.pools[0].protocol, UpstreamProtocol::H2);
    assert_eq!(
        c.pools[0].health.kind,
        ProbeKind::Grpc {
            service: "app.Greeter".into(),
            host: Some("greeter.internal:50051".into()),
        }
    );
    assert_eq!(c.pools[1].protocol, UpstreamProtocol::Http1);
    assert_eq!(
        c.pools[1].health.kind,
        ProbeKind::Grpc {
            service: String::new(),
            host: None,
        },
        "no service: the server as a whole"
    );
}

#[test]
fn bad_protocols_and_grpc_health_keys_are_rejected() {
    let pool = |extra: &str, health: &str| {
        format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n[[pool]]\nname = \"p\"\n{extra}[[pool.backend]]\naddress = \"127.0.0.1:9000\"\n{health}"
        )
    };
    let e = errors(&pool("protocol = \"h3\"\n", ""));
    assert!(
        e.contains("`pool[0].protocol`") && e.contains("(valid: \"http1\", \"h2\")"),
        "{e}"
    );
    let e = errors(&pool(
        "",
        "[pool.health]\nkind = \"http\"\ngrpc_service = \"x\"\n",
    ));
    assert!(
        e.contains("`pool[0].health.grpc_service`: only applies to kind = \"grpc\""),
        "{e}"
    );
    let e = errors(&pool("", "[pool.health]\nkind = \"grpc\"\npath = \"/x\"\n"));
    assert!(
        e.contains("`pool[0].health.path`: only applies to kind = \"http\""),
        "{e}"
    );
    let e = errors(&pool(
        "",
        "[pool.health]\nkind = \"grpc\"\nhost = \"a b\"\n",
    ));
    assert!(e.contains("`pool[0].health.host`"), "{e}");
    let e = errors(&pool("", "[pool.health]\nkind = \"grpcc\"\n"));
    assert!(e.contains("\"grpc\""), "valid kinds listed: {e}");
}
