//! Basic proxying against real lbd processes: routing, splits, header hygiene, limits, metrics.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_path_header_and_splits_95_5() {
    let web = TestBackend::start("web").await;
    let api = TestBackend::start("api").await;
    let canary = TestBackend::start("canary").await;
    let exact = TestBackend::start("exact").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}{}{}{}\
         [[route]]\nname = \"canary-header\"\nhost = \"api.example.com\"\nheader = {{ name = \"x-canary\", value = \"1\" }}\npool = \"canary\"\n\
         [[route]]\nname = \"exact\"\npath_exact = \"/exact\"\nmethods = [\"GET\"]\npool = \"exact\"\n\
         [[route]]\nname = \"api\"\nhost = \"api.example.com\"\npath_prefix = \"/v1\"\nsplit = [{{ pool = \"api\", weight = 95 }}, {{ pool = \"canary\", weight = 5 }}]\n",
        pool("web", &[&web], ""),
        pool("api", &[&api], ""),
        pool("canary", &[&canary], ""),
        pool("exact", &[&exact], ""),
    );
    let lbd = Lbd::start(&body).await;

    let r = get(lbd.listen, "/anything").await.expect("default");
    assert_eq!((r.status, r.backend()), (200, "web"));
    let r = get(lbd.listen, "/exact").await.expect("exact");
    assert_eq!(r.backend(), "exact");
    let r = request(lbd.listen, "POST", "/exact", &[])
        .await
        .expect("post");
    assert_eq!(r.backend(), "web", "methods = [GET] must not match POST");
    let r = request(
        lbd.listen,
        "GET",
        "/v1/x",
        &[("host", "api.example.com"), ("x-canary", "1")],
    )
    .await
    .expect("header");
    assert_eq!(r.backend(), "canary");
    let r = request(lbd.listen, "GET", "/v1x", &[("host", "api.example.com")])
        .await
        .expect("segment-aware prefix");
    assert_eq!(r.backend(), "web");

    let mut counts: HashMap<String, u32> = HashMap::new();
    for _ in 0..200 {
        let r = request(
            lbd.listen,
            "GET",
            "/v1/items",
            &[("host", "API.example.com:8080")],
        )
        .await
        .expect("split");
        assert_eq!(r.status, 200);
        *counts.entry(r.backend().to_string()).or_default() += 1;
    }
    assert_eq!(counts.get("api"), Some(&190), "{counts:?}");
    assert_eq!(counts.get("canary"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_and_no_default_is_404() {
    let api = TestBackend::start("api").await;
    let body = format!(
        "[global]\n#GLOBAL\n{}[[route]]\nhost = \"api.example.com\"\npool = \"api\"\n",
        pool("api", &[&api], "")
    );
    let lbd = Lbd::start(&body).await;
    let r = get(lbd.listen, "/").await.expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "404 no route\n");
    assert_eq!(api.hits(), 0);
    let series = "lbd_proxy_errors_total{kind=\"no_route\",side=\"internal\"}";
    assert_eq!(metric(lbd.admin, series).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[headers]\nforwarded = true\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let r = request(
        lbd.listen,
        "GET",
        "/echo",
        &[
            ("host", "site.example"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("x-forwarded-for", "203.0.113.9"),
            ("x-kept", "yes"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200);
    let echoed = r.body.to_lowercase();
    for gone in [
        "x-private",
        "keep-alive",
        "proxy-authorization",
        "te:",
        "connection: keep-alive",
    ] {
        assert!(
            !echoed.contains(gone),
            "{gone} leaked to the backend:\n{echoed}"
        );
    }
    assert!(echoed.contains("x-kept: yes"), "{echoed}");
    // 127.0.0.1 is not a trusted proxy: its XFF is appended to (a backend reading it right to
    // left stops at the first address it doesn't trust, before the client's claim).
    assert!(
        echoed.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{echoed}"
    );
    assert!(echoed.contains("x-forwarded-proto: http\n"), "{echoed}");
    assert!(
        echoed.contains("x-forwarded-host: site.example\n"),
        "{echoed}"
    );
    assert!(
        echoed.contains("forwarded: for=127.0.0.1;proto=http;host=\"site.example\"\n"),
        "{echoed}"
    );
    assert!(echoed.contains("via: 1.1 lbd\n"), "{echoed}");
    assert_eq!(
        r.headers.get("via").map(|v| v.as_bytes()),
        Some(&b"1.1 lbd"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xff_is_appended_for_trusted_proxies() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[headers]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let r = request(
        lbd.listen,
        "GET",
        "/",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await
    .expect("request");
    assert!(
        r.body.contains("x-forwarded-for: 203.0.113.9, 127.0.0.1\n"),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431_and_long_targets_414() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[limits]\nmax_header_bytes = 2048\nmax_request_line = 1024\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let big = "a".repeat(3000);
    let r = request(lbd.listen, "GET", "/", &[("x-big", &big)])
        .await
        .expect("431");
    assert_eq!(r.status, 431);
    let long = format!("/{}", "p".repeat(1500));
    let r = get(lbd.listen, &long).await.expect("414");
    assert_eq!(r.status, 414);
    // Just under both limits passes.
    let ok = format!("/{}", "p".repeat(900));
    let r = request(lbd.listen, "GET", &ok, &[("x-big", &"a".repeat(1500))])
        .await
        .expect("ok");
    assert_eq!(r.status, 200);
    // Far beyond hyper's own head limit (sum of both): hyper answers 431 itself.
    let (text, _) = raw(
        lbd.listen,
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: {}\r\n\r\n",
            "b".repeat(20_000)
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert_eq!(web.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_connection_reuse() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    for _ in 0..20 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").status, 200);
    }
    let labels = format!("pool=\"web\",backend=\"{}\"", web.addr);
    let text = metrics(lbd.admin).await;
    let value = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.trim().parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value(&format!(
            "lbd_backend_responses_total{{{labels},class=\"2xx\"}}"
        )),
        20.0
    );
    let opened = value(&format!("lbd_backend_connections_opened_total{{{labels}}}"));
    let reused = value(&format!("lbd_backend_connections_reused_total{{{labels}}}"));
    assert_eq!(opened + reused, 20.0);
    assert!(
        reused >= 15.0,
        "sequential requests should reuse: opened {opened}, reused {reused}"
    );
    assert_eq!(
        value(&format!("lbd_backend_response_seconds_count{{{labels}}}")),
        20.0
    );
    assert_eq!(value("lbd_responses_total{class=\"2xx\"}"), 20.0);
    assert!(
        text.contains("lbd_pool_queue_depth{pool=\"web\"} 0"),
        "{text}"
    );
    assert_eq!(
        get(lbd.admin, "/healthz").await.expect("healthz").status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_as_http1() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let stream = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for i in 0..3 {
        let req = http::Request::builder()
            .uri(format!("http://site.example/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = tx.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let text = resp.into_body().collect().await.expect("body").to_bytes();
        let text = String::from_utf8_lossy(&text);
        assert!(text.starts_with("web\n"), "{text}");
        assert!(text.contains("host: site.example\n"), "{text}");
    }
    assert_eq!(web.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_json_line_per_request() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\naccess_log = \"json\"\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    assert_eq!(get(lbd.listen, "/a?x=1").await.expect("a").status, 200);
    assert_eq!(
        get(lbd.listen, &format!("/{}", "p".repeat(10_000)))
            .await
            .expect("414")
            .status,
        414
    );
    eventually("two access log lines", Duration::from_secs(5), || async {
        lbd.access_log_text().lines().count() == 2
    })
    .await;
    let text = lbd.access_log_text();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    // Each worker thread writes its own batch of lines (lbd/src/access_log.rs), so two
    // requests served by different workers may be logged in either order.
    lines.sort_by_key(|l| l["status"].as_u64());
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["path"], "/a?x=1");
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["pool"], "web");
    assert_eq!(lines[0]["backend"], web.addr.to_string());
    assert!(lines[0]["bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(lines[0]["client"], "127.0.0.1");
    assert!(lines[0]["peer"]
        .as_str()
        .unwrap_or("")
        .starts_with("127.0.0.1:"));
    assert_eq!(lines[1]["status"], 414);
    assert_eq!(lines[1]["backend"], "-");
    assert_eq!(lines[1]["error"], "uri_too_long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_required_unique_and_taken_from_absolute_form() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let wait = Duration::from_secs(5);
    let (text, _) = raw(lbd.listen, b"GET / HTTP/1.1\r\n\r\n", wait).await;
    assert!(text.starts_with("HTTP/1.1 400"), "missing Host: {text}");
    let (text, _) = raw(
        lbd.listen,
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        wait,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 400"), "two Hosts: {text}");
    assert_eq!(web.hits(), 0);
    // Absolute form: the authority wins over Host, and the backend sees it as Host.
    let (text, _) = raw(
        lbd.listen,
        b"GET http://real.example/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("host: real.example\n"), "{text}");
    assert!(!text.contains("other.example"), "{text}");
    // HTTP/1.0 without Host is still fine.
    let (text, _) = raw(lbd.listen, b"GET / HTTP/1.0\r\n\r\n", wait).await;
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_backend_answers_the_client_in_its_own_version() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let body = format!(
        "default_pool = \"old\"\n[global]\n#GLOBAL\n[[pool]]\nname = \"old\"\n[[pool.backend]]\naddress = \"{addr}\"\n"
    );
    let lbd = Lbd::start(&body).await;
    for _ in 0..3 {
        let (text, _) = raw(
            lbd.listen,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("ok"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_from_responses() {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let r = get(lbd.listen, "/hop").await.expect("hop");
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-secret").is_none(), "{:?}", r.headers);
    assert!(r.headers.get("keep-alive").is_none(), "{:?}", r.headers);
    assert_eq!(
        r.headers.get("x-kept").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
}

/// Is `backend` drained, by the admin listener's `/backends` table?
async fn drained(admin: std::net::SocketAddr, backend: std::net::SocketAddr) -> bool {
    let table = get(admin, "/backends").await.expect("GET /backends").body;
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[1] == backend.to_string() && f[5] == "1"
    })
}

async fn admin_rejected(admin: std::net::SocketAddr, reason: &str) -> f64 {
    let series = format!("lbd_admin_requests_rejected_total{{reason=\"{reason}\"}}");
    metric(admin, &series)
        .await
        .expect("admin rejection series")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_need_the_bearer_token_and_reads_stay_open() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a, &b], "")
    );
    let lbd = Lbd::start(&body).await;
    let drain = format!("/backends/drain?pool=web&backend={}", b.addr);

    let r = request(lbd.admin, "POST", &drain, &[]).await.expect("post");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .is_ok_and(|v| v.starts_with("Bearer")),
        "{:?}",
        r.headers
    );
    let wrong = [("authorization", "Bearer lbd-test-admin-token-0123456780")];
    let r = request(lbd.admin, "POST", &drain, &wrong)
        .await
        .expect("post");
    assert_eq!(r.status, 401, "{}", r.body);
    let basic = [("authorization", "Basic YWRtaW46YWRtaW4=")];
    let r = request(lbd.admin, "POST", &drain, &basic)
        .await
        .expect("post");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        !drained(lbd.admin, b.addr).await,
        "a refused drain changed nothing"
    );
    assert_eq!(admin_rejected(lbd.admin, "missing_token").await, 2.0);
    assert_eq!(admin_rejected(lbd.admin, "bad_token").await, 1.0);
    assert_eq!(admin_rejected(lbd.admin, "disabled").await, 0.0);
    for _ in 0..4 {
        get(lbd.listen, "/").await.expect("get");
    }
    assert!(b.hits() > 0, "b still takes traffic");

    // Reads need no token.
    for path in ["/metrics", "/healthz", "/readyz", "/status", "/backends"] {
        assert_eq!(
            get(lbd.admin, path).await.expect(path).status,
            200,
            "{path}"
        );
    }

    let r = admin_post(lbd.admin, &drain).await.expect("drain");
    assert_eq!((r.status, r.body.as_str()), (200, "drained 1 backend(s)\n"));
    assert!(drained(lbd.admin, b.addr).await);

    // A reload re-reads the token file: the old token stops working, the new one works.
    let undrain = format!("/backends/undrain?pool=web&backend={}", b.addr);
    let new_token = "rotated-admin-token-abcdef0123456789";
    write_mode(&lbd.dir.path().join(ADMIN_TOKEN_FILE), new_token, 0o600);
    lbd.signal("HUP");
    eventually("the reload", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_reloads_total{result=\"ok\"}").await == Some(1.0)
    })
    .await;
    let r = admin_post(lbd.admin, &undrain).await.expect("undrain");
    assert_eq!(r.status, 401, "the old token is no longer accepted");
    let auth = format!("Bearer {new_token}");
    let r = request(lbd.admin, "POST", &undrain, &[("authorization", &auth)])
        .await
        .expect("undrain");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!drained(lbd.admin, b.addr).await);

    // A token file others can read fails the reload; the previous token stays in force.
    write_mode(
        &lbd.dir.path().join(ADMIN_TOKEN_FILE),
        "some-other-token-0123456789",
        0o644,
    );
    lbd.signal("HUP");
    eventually("the rejected reload", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_reloads_total{result=\"error\"}").await == Some(1.0)
    })
    .await;
    let log = lbd.log_with("has mode 0644").await;
    assert!(log.contains("has mode 0644"), "{log}");
    let r = request(lbd.admin, "POST", &drain, &[("authorization", &auth)])
        .await
        .expect("drain");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_are_disabled_without_a_token_file() {
    let a = TestBackend::start("a").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL_NO_TOKEN\n{}",
        pool("web", &[&a], "")
    );
    let lbd = Lbd::start(&body).await;
    let drain = format!("/backends/drain?pool=web&backend={}", a.addr);
    for headers in [&[][..], &[ADMIN_AUTH][..]] {
        let r = request(lbd.admin, "POST", &drain, headers)
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(r.body.contains("admin_token_file"), "{}", r.body);
    }
    assert!(!drained(lbd.admin, a.addr).await);
    assert_eq!(admin_rejected(lbd.admin, "disabled").await, 2.0);
    assert_eq!(
        get(lbd.admin, "/metrics").await.expect("metrics").status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join(ADMIN_TOKEN_FILE);
    write_mode(&token, ADMIN_TOKEN, 0o644);
    let config = dir.path().join("lbd.toml");
    let body = "[global]\n#GLOBAL\n[[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n";
    let (listen, admin) = two_free_addrs();
    std::fs::write(&config, config_with(listen, admin, body)).expect("config");
    let want = format!(
        "`global.admin_token_file`: {} has mode 0644; it must be 0600 or stricter",
        token.display()
    );
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
            .args(args)
            .arg(&config)
            .output()
            .expect("run lbd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} accepted an 0644 token file"
        );
        assert!(err.contains(&want), "{args:?}: {err}");
    }
    // chmod 600 is what the message asks for, and it is enough.
    write_mode(&token, ADMIN_TOKEN, 0o600);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("check-config")
        .arg(&config)
        .output()
        .expect("run lbd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_stops_new_traffic_to_a_backend() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a, &b], "")
    );
    let lbd = Lbd::start(&body).await;
    let drain = format!("/backends/drain?pool=web&backend={}", b.addr);
    let r = request(lbd.admin, "POST", &drain, &[ADMIN_AUTH])
        .await
        .expect("drain");
    assert_eq!((r.status, r.body.as_str()), (200, "drained 1 backend(s)\n"));
    for _ in 0..10 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").backend(), "a");
    }
    assert_eq!(b.hits(), 0);
    let table = get(lbd.admin, "/backends").await.expect("backends").body;
    assert!(
        table.contains(&format!("web {} 0 1 0 1 0", b.addr)),
        "{table}"
    );
    let undrain = format!("/backends/undrain?backend={}", b.addr);
    assert_eq!(
        request(lbd.admin, "POST", &undrain, &[ADMIN_AUTH])
            .await
            .expect("undrain")
            .status,
        200
    );
    for _ in 0..10 {
        get(lbd.listen, "/").await.expect("get");
    }
    assert!(b.hits() > 0);
    let missing = request(
        lbd.admin,
        "POST",
        "/backends/drain?backend=127.0.0.1:1",
        &[ADMIN_AUTH],
    )
    .await
    .expect("missing");
    assert_eq!(missing.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_cap_are_closed_at_accept() {
    use tokio::io::AsyncWriteExt;
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\nmax_conns_per_client = 5\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let open_conns = || async { metric(lbd.admin, "lbd_client_connections").await };
    let rejected = || async {
        metric(
            lbd.admin,
            "lbd_client_conns_rejected_total{reason=\"per_client_cap\"}",
        )
        .await
    };
    assert_eq!(rejected().await, Some(0.0));

    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            tokio::net::TcpStream::connect(lbd.listen)
                .await
                .expect("connect"),
        );
    }
    eventually("5 connections accepted", Duration::from_secs(5), || async {
        open_conns().await == Some(5.0)
    })
    .await;
    // Over the cap: closed at once, with no response (lbd reads nothing from them).
    for _ in 0..3 {
        let mut extra = tokio::net::TcpStream::connect(lbd.listen)
            .await
            .expect("connect");
        let (got, closed) = read_until_close(&mut extra, Duration::from_secs(5)).await;
        assert!(closed && got.is_empty(), "closed {closed}, read {got:?}");
    }
    assert_eq!(rejected().await, Some(3.0));
    assert_eq!(open_conns().await, Some(5.0));
    let refused = "client at max_conns_per_client";
    assert!(lbd.log_with(refused).await.contains(refused));
    // Another client address has its own count.
    let other = request_from("127.0.0.2".parse().expect("ip"), lbd.listen, "/", &[])
        .await
        .expect("another address");
    assert_eq!(other.status, 200);

    // The held connections work; closing two makes room for two more.
    for mut s in held.drain(..2) {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let (got, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed && got.starts_with("HTTP/1.1 200"), "{got:?}");
    }
    eventually(
        "the two closed connections are released",
        Duration::from_secs(5),
        || async { open_conns().await == Some(3.0) },
    )
    .await;
    for _ in 0..2 {
        held.push(
            tokio::net::TcpStream::connect(lbd.listen)
                .await
                .expect("connect"),
        );
    }
    eventually(
        "two new connections accepted",
        Duration::from_secs(5),
        || async { open_conns().await == Some(5.0) },
    )
    .await;
    let mut extra = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (got, closed) = read_until_close(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "at the cap again: {got:?}");
    assert_eq!(rejected().await, Some(4.0));
}

/// A WebSocket tunnel outlives the HTTP connection's task: it must keep counting against
/// `max_conns_per_client` (and `max_client_conns`) for as long as it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_tunnels_keep_counting_against_the_per_client_cap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\nmax_conns_per_client = 3\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    let mut tunnels = Vec::new();
    for i in 0..3 {
        let (mut s, head) = websocket_handshake(lbd.listen).await;
        assert!(head.starts_with("http/1.1 101"), "tunnel {i}: {head}");
        // The tunnel carries bytes both ways.
        s.write_all(b"ping").await.expect("write");
        let mut echo = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echo))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(&echo, b"ping");
        tunnels.push(s);
    }
    eventually(
        "three open connections while tunnelling",
        Duration::from_secs(5),
        || async { metric(lbd.admin, "lbd_client_connections").await == Some(3.0) },
    )
    .await;
    // A fourth connection from the same address is over the cap: the tunnels still count.
    let mut extra = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (got, closed) = read_until_close(&mut extra, Duration::from_secs(5)).await;
    assert!(closed && got.is_empty(), "over the cap: {got:?}");
    // Closing a tunnel gives its place back.
    drop(tunnels.pop());
    eventually(
        "the closed tunnel is released",
        Duration::from_secs(5),
        || async { metric(lbd.admin, "lbd_client_connections").await == Some(2.0) },
    )
    .await;
    let ok = get(lbd.listen, "/").await.expect("room again");
    assert_eq!(ok.status, 200);
}
