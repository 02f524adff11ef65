//! Rate limiting against the real lbd: burst then 429 with Retry-After, refill, keys by client
//! IP, header and route, route-scoped limiters, and the denial metric.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;

const LOCAL_A: &str = "127.0.0.1";
const LOCAL_B: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// Two routes (`api` under /api/, `web` for the rest) on one pool, plus `limits`.
fn config(backend: &TestBackend, limits: &str) -> String {
    format!(
        "[global]\n#GLOBAL\n{}\
         [[route]]\nname = \"api\"\npath_prefix = \"/api/\"\npool = \"web\"\n\
         [[route]]\nname = \"web\"\npath_prefix = \"/\"\npool = \"web\"\n{limits}",
        pool("web", &[backend], "")
    )
}

fn retry_after(r: &Resp) -> Option<u64> {
    r.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_passes_then_429_with_retry_after_then_refills() {
    let backend = TestBackend::start("a").await;
    let lbd = Lbd::start(&config(
        &backend,
        "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = 2\nburst = 4\n",
    ))
    .await;
    for i in 0..4 {
        let r = get(lbd.listen, "/x").await.expect("request");
        assert_eq!(r.status, 200, "request {i} is within the burst");
    }
    let denied = get(lbd.listen, "/x").await.expect("request");
    assert_eq!(denied.status, 429, "{denied:?}");
    assert_eq!(
        retry_after(&denied),
        Some(1),
        "0.5 s to the next token rounds up to 1"
    );
    assert!(denied.body.contains("429"), "{denied:?}");
    assert_eq!(
        backend.hits(),
        4,
        "a denied request never reaches the backend"
    );

    // One token comes back after ~0.5 s.
    eventually("the bucket refills", Duration::from_secs(3), || async {
        get(lbd.listen, "/x").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    // The denials are in the access log like every other local answer.
    eventually("access log line", Duration::from_secs(3), || async {
        lbd.access_log_text().contains(" 429 ")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ips_have_independent_buckets() {
    let backend = TestBackend::start("a").await;
    // A rate so slow nothing refills during the test.
    let lbd = Lbd::start(&config(
        &backend,
        "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = 0.01\nburst = 3\n",
    ))
    .await;
    for _ in 0..3 {
        let r = request_from(ip(LOCAL_A), lbd.listen, "/", &[])
            .await
            .expect("request");
        assert_eq!(r.status, 200);
    }
    let r = request_from(ip(LOCAL_A), lbd.listen, "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 429);
    assert!(
        retry_after(&r).is_some_and(|s| s >= 90),
        "a token every 100 s: {r:?}"
    );
    for i in 0..3 {
        let r = request_from(ip(LOCAL_B), lbd.listen, "/", &[])
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{LOCAL_B} request {i} has its own bucket");
    }
    let r = request_from(ip(LOCAL_B), lbd.listen, "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 429);
    let r = request_from(ip(LOCAL_A), lbd.listen, "/", &[])
        .await
        .expect("request");
    assert_eq!(r.status, 429, "{LOCAL_A} is still limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_keys_and_route_scopes() {
    let backend = TestBackend::start("a").await;
    let lbd = Lbd::start(&config(
        &backend,
        "[[rate_limit]]\nname = \"api-key\"\nkey = \"header:x-api-key\"\nrate = 0.01\nburst = 2\n\
         [[rate_limit]]\nname = \"api-route\"\nkey = \"route\"\nrate = 0.01\nburst = 5\nroutes = [\"api\"]\n",
    ))
    .await;
    let with_key = |k: &'static str, path: &'static str| {
        let addr = lbd.listen;
        async move {
            request(addr, "GET", path, &[("x-api-key", k)])
                .await
                .expect("request")
                .status
        }
    };
    assert_eq!(with_key("k1", "/page").await, 200);
    assert_eq!(with_key("k1", "/page").await, 200);
    assert_eq!(with_key("k1", "/page").await, 429, "k1 used its burst");
    assert_eq!(with_key("k2", "/page").await, 200, "k2 has its own bucket");
    for _ in 0..10 {
        // Without the header the header-keyed limiter doesn't count the request.
        assert_eq!(get(lbd.listen, "/page").await.expect("get").status, 200);
    }

    // The route limiter: 5 requests on `api` in all, whoever sends them; `web` unaffected.
    for i in 0..5 {
        let r = get(lbd.listen, &format!("/api/{i}")).await.expect("get");
        assert_eq!(r.status, 200, "api request {i}");
    }
    let r = get(lbd.listen, "/api/6").await.expect("get");
    assert_eq!(r.status, 429);
    let r = request_from(ip(LOCAL_B), lbd.listen, "/api/7", &[])
        .await
        .expect("get");
    assert_eq!(r.status, 429, "the route bucket is shared by every client");
    for _ in 0..10 {
        assert_eq!(get(lbd.listen, "/web").await.expect("get").status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_are_counted_per_limiter() {
    let backend = TestBackend::start("a").await;
    let lbd = Lbd::start(&config(
        &backend,
        "[[rate_limit]]\nname = \"tight\"\nkey = \"client_ip\"\nrate = 0.01\nburst = 1\n\
         [[rate_limit]]\nname = \"loose\"\nkey = \"client_ip\"\nrate = 100\nburst = 100\n",
    ))
    .await;
    let mut denied = 0;
    for _ in 0..8 {
        if get(lbd.listen, "/").await.expect("get").status == 429 {
            denied += 1;
        }
    }
    assert_eq!(denied, 7);
    let tight = metric(lbd.admin, "lbd_rate_limited_total{limiter=\"tight\"}").await;
    let loose = metric(lbd.admin, "lbd_rate_limited_total{limiter=\"loose\"}").await;
    assert_eq!(tight, Some(7.0), "{}", metrics(lbd.admin).await);
    assert_eq!(loose, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limiters_follow_a_reload() {
    let backend = TestBackend::start("a").await;
    let lbd = Lbd::start(&config(&backend, "")).await;
    for _ in 0..5 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").status, 200);
    }
    lbd.write_config(&config(
        &backend,
        "[[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = 0.01\nburst = 2\n",
    ));
    lbd.signal("HUP");
    eventually("the new limiter denies", Duration::from_secs(5), || async {
        get(lbd.listen, "/").await.is_ok_and(|r| r.status == 429)
    })
    .await;
    // Removing it again lifts the limit.
    lbd.write_config(&config(&backend, ""));
    lbd.signal("HUP");
    eventually("the limiter is gone", Duration::from_secs(5), || async {
        get(lbd.listen, "/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
}
