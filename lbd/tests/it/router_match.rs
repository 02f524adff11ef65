//! Router: host exact/wildcard, path exact/prefix, header, method, order, default, splits.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use lbd::l7::router::{
    HeaderMatch, HostMatch, PathMatch, RequestView, RouteRule, RouteTarget, Router, RouterError,
};
use lbd::upstream::backend::PoolId;

fn rule(name: &str, pool: usize) -> RouteRule {
    RouteRule {
        name: name.into(),
        host: None,
        path: None,
        header: None,
        methods: Vec::new(),
        target: RouteTarget::Pool(PoolId(pool)),
    }
}

fn router(rules: Vec<RouteRule>, default: Option<usize>) -> Router {
    Router::new(rules, default.map(PoolId)).expect("valid rules")
}

/// Route a request built like hyper hands it over: `uri` may be origin-form (`/x`, host from the
/// Host header) or absolute-form.
fn route(r: &Router, method: Method, uri: &str, headers: &[(&str, &str)]) -> Option<String> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (parts, ()) = req.body(()).expect("valid request").into_parts();
    r.route_parts(&parts)
        .map(|m| format!("{}->{}", m.name, m.pool.0))
}

fn get(r: &Router, host: &str, path: &str) -> Option<String> {
    route(r, Method::GET, path, &[("host", host)])
}

#[test]
fn exact_host_ignores_case_port_and_trailing_dot() {
    let r = router(
        vec![RouteRule {
            host: Some(HostMatch::Exact("API.example.com".into())),
            ..rule("api", 1)
        }],
        None,
    );
    for host in [
        "api.example.com",
        "API.EXAMPLE.COM",
        "api.example.com:8443",
        "api.example.com.",
    ] {
        assert_eq!(get(&r, host, "/").as_deref(), Some("api->1"), "{host}");
    }
    for host in [
        "www.example.com",
        "api.example.com.evil",
        "xapi.example.com",
        "",
    ] {
        assert_eq!(get(&r, host, "/"), None, "{host}");
    }
    // No Host at all only matches host-less rules.
    assert_eq!(route(&r, Method::GET, "/", &[]), None);
}

#[test]
fn uri_authority_wins_over_host_header() {
    let r = router(
        vec![RouteRule {
            host: Some(HostMatch::Exact("a.example".into())),
            ..rule("a", 1)
        }],
        Some(0),
    );
    assert_eq!(
        route(
            &r,
            Method::GET,
            "http://a.example:80/x",
            &[("host", "b.example")]
        )
        .as_deref(),
        Some("a->1")
    );
    assert_eq!(
        route(
            &r,
            Method::GET,
            "http://b.example/x",
            &[("host", "a.example")]
        )
        .as_deref(),
        Some("default->0")
    );
}

#[test]
fn wildcard_host_needs_at_least_one_label() {
    let r = router(
        vec![RouteRule {
            host: Some(HostMatch::Wildcard("*.Example.com".into())),
            ..rule("wild", 2)
        }],
        None,
    );
    for host in ["a.example.com", "a.b.example.com", "A.EXAMPLE.COM:80"] {
        assert_eq!(get(&r, host, "/").as_deref(), Some("wild->2"), "{host}");
    }
    for host in [
        "example.com",
        "aexample.com",
        "example.com.org",
        ".example.com",
    ] {
        assert_eq!(get(&r, host, "/"), None, "{host}");
    }
}

#[test]
fn path_exact_and_segment_aware_prefix() {
    let r = router(
        vec![
            RouteRule {
                path: Some(PathMatch::Exact("/health".into())),
                ..rule("health", 1)
            },
            RouteRule {
                path: Some(PathMatch::Prefix("/api".into())),
                ..rule("api", 2)
            },
            RouteRule {
                path: Some(PathMatch::Prefix("/static/".into())),
                ..rule("static", 3)
            },
        ],
        Some(0),
    );
    let cases = [
        ("/health", "health->1"),
        ("/health/", "default->0"),
        ("/healthz", "default->0"),
        ("/api", "api->2"),
        ("/api/", "api->2"),
        ("/api/v1/users?x=1", "api->2"),
        ("/api?x=1", "api->2"),
        ("/apix", "default->0"),
        ("/ap", "default->0"),
        ("/static/", "static->3"),
        ("/static/app.js", "static->3"),
        ("/static", "default->0"),
        ("/", "default->0"),
    ];
    for (path, want) in cases {
        assert_eq!(get(&r, "h", path).as_deref(), Some(want), "{path}");
    }
    let root = router(
        vec![RouteRule {
            path: Some(PathMatch::Prefix("/".into())),
            ..rule("root", 4)
        }],
        None,
    );
    assert_eq!(
        get(&root, "h", "/anything/at/all").as_deref(),
        Some("root->4")
    );
}

#[test]
fn header_present_and_value() {
    let canary = HeaderName::from_static("x-canary");
    let r = router(
        vec![
            RouteRule {
                header: Some(HeaderMatch {
                    name: canary.clone(),
                    value: Some("always".into()),
                }),
                ..rule("canary-value", 1)
            },
            RouteRule {
                header: Some(HeaderMatch {
                    name: canary,
                    value: None,
                }),
                ..rule("canary-present", 2)
            },
        ],
        Some(0),
    );
    assert_eq!(
        route(
            &r,
            Method::GET,
            "/",
            &[("host", "h"), ("x-canary", "always")]
        )
        .as_deref(),
        Some("canary-value->1")
    );
    // Values are compared exactly.
    assert_eq!(
        route(
            &r,
            Method::GET,
            "/",
            &[("host", "h"), ("x-canary", "Always")]
        )
        .as_deref(),
        Some("canary-present->2")
    );
    assert_eq!(
        route(&r, Method::GET, "/", &[("host", "h"), ("x-canary", "")]).as_deref(),
        Some("canary-present->2")
    );
    // Any of several values may match.
    assert_eq!(
        route(
            &r,
            Method::GET,
            "/",
            &[("host", "h"), ("x-canary", "no"), ("x-canary", "always")]
        )
        .as_deref(),
        Some("canary-value->1")
    );
    assert_eq!(get(&r, "h", "/").as_deref(), Some("default->0"));
}

#[test]
fn methods_restrict_and_empty_means_any() {
    let r = router(
        vec![
            RouteRule {
                methods: vec![Method::POST, Method::PUT],
                ..rule("writes", 1)
            },
            rule("reads", 2),
        ],
        None,
    );
    assert_eq!(
        route(&r, Method::POST, "/", &[]).as_deref(),
        Some("writes->1")
    );
    assert_eq!(
        route(&r, Method::PUT, "/", &[]).as_deref(),
        Some("writes->1")
    );
    assert_eq!(
        route(&r, Method::GET, "/", &[]).as_deref(),
        Some("reads->2")
    );
    assert_eq!(
        route(&r, Method::DELETE, "/", &[]).as_deref(),
        Some("reads->2")
    );
}

#[test]
fn first_match_wins_and_all_conditions_must_hold() {
    let r = router(
        vec![
            RouteRule {
                host: Some(HostMatch::Exact("shop.example".into())),
                path: Some(PathMatch::Prefix("/api".into())),
                header: Some(HeaderMatch {
                    name: HeaderName::from_static("x-beta"),
                    value: None,
                }),
                ..rule("beta-api", 1)
            },
            RouteRule {
                host: Some(HostMatch::Exact("shop.example".into())),
                path: Some(PathMatch::Prefix("/api".into())),
                ..rule("api", 2)
            },
            RouteRule {
                host: Some(HostMatch::Wildcard("*.example".into())),
                ..rule("any-sub", 3)
            },
            RouteRule {
                host: Some(HostMatch::Exact("shop.example".into())),
                ..rule("shadowed", 4)
            },
        ],
        None,
    );
    let beta = [("host", "shop.example"), ("x-beta", "1")];
    assert_eq!(
        route(&r, Method::GET, "/api/x", &beta).as_deref(),
        Some("beta-api->1")
    );
    assert_eq!(get(&r, "shop.example", "/api/x").as_deref(), Some("api->2"));
    // beta header but wrong path: the later wildcard rule, not the shadowed exact one.
    assert_eq!(
        route(&r, Method::GET, "/web", &beta).as_deref(),
        Some("any-sub->3")
    );
    assert_eq!(
        get(&r, "shop.example", "/web").as_deref(),
        Some("any-sub->3")
    );
    assert_eq!(get(&r, "other.org", "/api"), None);
}

#[test]
fn default_pool_and_none() {
    let with_default = router(vec![], Some(7));
    let m = {
        let (parts, ()) = Request::builder()
            .uri("/x")
            .body(())
            .expect("request")
            .into_parts();
        with_default.route_parts(&parts).map(|m| (m.rule, m.pool))
    };
    assert_eq!(m, Some((None, PoolId(7))));
    let without = router(vec![], None);
    assert_eq!(get(&without, "h", "/"), None);
    assert!(without.is_empty());
}

#[test]
fn route_matches_report_the_rule_index() {
    let r = router(vec![rule("zero", 0), rule("one", 1)], None);
    assert_eq!(r.rule_names().collect::<Vec<_>>(), ["zero", "one"]);
    assert_eq!(r.len(), 2);
    let headers = HeaderMap::new();
    let view = RequestView {
        method: &Method::GET,
        host: Some("h"),
        path: "/",
        headers: &headers,
    };
    let m = r.route(&view).expect("match");
    assert_eq!((m.rule, m.name, m.pool), (Some(0), "zero", PoolId(0)));
}

fn split_counts(r: &Router, requests: usize) -> [usize; 2] {
    let mut c = [0usize; 2];
    for _ in 0..requests {
        let pool = get(r, "h", "/").expect("routed");
        match pool.as_str() {
            "split->0" => c[0] += 1,
            "split->1" => c[1] += 1,
            other => panic!("unexpected route {other}"),
        }
    }
    c
}

#[test]
fn split_95_5_is_exact() {
    let r = router(
        vec![RouteRule {
            target: RouteTarget::Split(vec![(PoolId(0), 95), (PoolId(1), 5)]),
            ..rule("split", 0)
        }],
        None,
    );
    assert_eq!(split_counts(&r, 100), [95, 5]);
    assert_eq!(split_counts(&r, 1000), [950, 50]);
    // Smooth: canary requests are spread out, one per 20, never bunched.
    let canary_at: Vec<usize> = (0..200)
        .filter(|_| get(&r, "h", "/").as_deref() == Some("split->1"))
        .collect();
    assert_eq!(canary_at.len(), 10, "{canary_at:?}");
    assert!(
        canary_at.windows(2).all(|w| w[1] - w[0] == 20),
        "{canary_at:?}"
    );
}

#[test]
fn split_with_uneven_weights_is_exact_per_cycle() {
    let r = router(
        vec![RouteRule {
            target: RouteTarget::Split(vec![(PoolId(0), 667), (PoolId(1), 333)]),
            ..rule("split", 0)
        }],
        None,
    );
    assert_eq!(split_counts(&r, 1000), [667, 333]);
}

#[test]
fn canary_by_header_before_a_split() {
    let r = router(
        vec![
            RouteRule {
                header: Some(HeaderMatch {
                    name: HeaderName::from_static("x-canary"),
                    value: Some("1".into()),
                }),
                ..rule("canary", 1)
            },
            RouteRule {
                target: RouteTarget::Split(vec![(PoolId(0), 1), (PoolId(1), 0)]),
                ..rule("stable", 0)
            },
        ],
        None,
    );
    for _ in 0..10 {
        assert_eq!(get(&r, "h", "/").as_deref(), Some("stable->0"));
        assert_eq!(
            route(&r, Method::GET, "/", &[("host", "h"), ("x-canary", "1")]).as_deref(),
            Some("canary->1")
        );
    }
}

#[test]
fn invalid_rules_are_all_reported() {
    let errors = Router::new(
        vec![
            RouteRule {
                host: Some(HostMatch::Wildcard("example.*".into())),
                ..rule("bad-wild", 0)
            },
            RouteRule {
                host: Some(HostMatch::Exact("example.com:80".into())),
                ..rule("bad-host", 0)
            },
            RouteRule {
                path: Some(PathMatch::Prefix("api".into())),
                ..rule("bad-path", 0)
            },
            RouteRule {
                target: RouteTarget::Split(vec![(PoolId(0), 0)]),
                ..rule("bad-split", 0)
            },
            RouteRule {
                target: RouteTarget::Split(vec![(PoolId(0), 100_000), (PoolId(1), 1)]),
                ..rule("fine-split", 0)
            },
            rule("good", 0),
        ],
        None,
    )
    .expect_err("invalid rules");
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(matches!(&errors[0], RouterError::InvalidWildcard { rule, .. } if rule == "bad-wild"));
    assert!(matches!(&errors[1], RouterError::InvalidHost { rule, .. } if rule == "bad-host"));
    assert!(matches!(&errors[2], RouterError::PathNotAbsolute { rule, .. } if rule == "bad-path"));
    assert!(matches!(&errors[3], RouterError::EmptySplit { rule } if rule == "bad-split"));
    assert!(matches!(&errors[4], RouterError::SplitTooFine { rule, .. } if rule == "fine-split"));
    // Messages name the rule and the bad value.
    let msg = errors[0].to_string();
    assert!(
        msg.contains("bad-wild") && msg.contains("example.*"),
        "{msg}"
    );
}

#[test]
fn plain_request_view_with_ipv6_host() {
    // RequestView can be built without http::request::Parts (e.g. from an h2 pseudo-header).
    let r = router(
        vec![RouteRule {
            host: Some(HostMatch::Exact("[::1]".into())),
            ..rule("v6", 1)
        }],
        None,
    );
    let mut headers = HeaderMap::new();
    headers.insert("x", HeaderValue::from_static("y"));
    let view = RequestView {
        method: &Method::GET,
        host: Some("[::1]:8080"),
        path: "/",
        headers: &headers,
    };
    assert_eq!(r.route(&view).map(|m| m.pool), Some(PoolId(1)));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn api_router() -> Router {
        router(
            vec![
                RouteRule {
                    host: Some(HostMatch::Wildcard("*.example.com".into())),
                    path: Some(PathMatch::Prefix("/api".into())),
                    ..rule("api", 1)
                },
                RouteRule {
                    header: Some(HeaderMatch {
                        name: HeaderName::from_static("x-k"),
                        value: Some("v".into()),
                    }),
                    ..rule("hdr", 2)
                },
            ],
            Some(0),
        )
    }

    proptest! {
        /// Arbitrary hosts and paths never panic and always fall through to some answer.
        #[test]
        fn arbitrary_requests_route_without_panicking(host in ".{0,40}", path in ".{0,40}") {
            let r = api_router();
            let headers = HeaderMap::new();
            let view = RequestView { method: &Method::GET, host: Some(&host), path: &path, headers: &headers };
            prop_assert!(r.route(&view).is_some());
        }

        /// Segment-aware prefix: `/api` matches exactly `/api` and `/api/...`.
        #[test]
        fn prefix_is_segment_aware(path in "/[a-z/]{0,12}") {
            let r = api_router();
            let headers = HeaderMap::new();
            let view = RequestView { method: &Method::GET, host: Some("x.example.com"), path: &path, headers: &headers };
            let want = path == "/api" || path.starts_with("/api/");
            prop_assert_eq!(r.route(&view).map(|m| m.pool) == Some(PoolId(1)), want);
        }
    }
}
