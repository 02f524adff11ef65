//! Rate limiting against the real lbd: burst then 429 with Retry-After, refill, keys by client
//! IP, header and route, route-scoped limiters, and the denial metric.

use crate::common;

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

/// Header keys far over `max_key_bytes`: an 8 KiB key is limited like any other
/// (hashed, not dodged by padding), and a flood of distinct long keys keeps the table within
/// its byte bound without resetting a returning client's debt.
async fn long_header_keys_are_hashed_and_the_table_stays_bounded(fast_path: bool) {
    let backend = TestBackend::start("a").await;
    let cfg = config(
        &backend,
        "[[rate_limit]]\nname = \"api-key\"\nkey = \"header:x-api-key\"\nrate = 0.01\nburst = 2\n\
         max_key_bytes = 256\n",
    )
    .replacen(
        "#GLOBAL",
        &format!(
            "#GLOBAL\nhttp1_fast_path = {fast_path}\nrate_limit_max_keys = 1000\n\
             rate_limit_max_bytes = 65536"
        ),
        1,
    );
    let lbd = Lbd::start(&cfg).await;
    let long = "K".repeat(8 * 1024);
    let padded = format!("{long}P");
    let status = |k: String| {
        let addr = lbd.listen;
        async move {
            request(addr, "GET", "/page", &[("x-api-key", &k)])
                .await
                .expect("request")
                .status
        }
    };
    assert_eq!(status(long.clone()).await, 200);
    assert_eq!(status(long.clone()).await, 200);
    assert_eq!(
        status(long.clone()).await,
        429,
        "the long key used its burst"
    );
    // Padding makes a new key, with a (small) bucket of its own: no way around the first.
    assert_eq!(status(padded.clone()).await, 200);
    assert_eq!(status(long.clone()).await, 429);
    let hashed = "lbd_rate_limit_keys_hashed_total{limiter=\"api-key\"}";
    assert_eq!(metric(lbd.admin, hashed).await, Some(5.0));
    let entry_bytes = metric(lbd.admin, "lbd_rate_limit_table_bytes").await;
    assert!(
        entry_bytes.is_some_and(|b| b < 2.0 * 1024.0),
        "two hashed keys, not 16 KiB of raw ones: {entry_bytes:?}"
    );

    // 1,000 distinct 8 KiB keys, each used once: all allowed (new buckets), none stored raw,
    // and ~300 of them fill the 64 KiB bound (kept light: this binary's other tests are timed).
    let statuses = flood_keepalive(lbd.listen, 4, 1_000, "/page", |i| {
        vec![(
            "x-api-key".into(),
            format!("{i:08}{}", "F".repeat(8 * 1024)),
        )]
    })
    .await
    .expect("flood");
    assert_eq!(statuses.get(&200), Some(&1_000), "{statuses:?}");
    let text = metrics(lbd.admin).await;
    let value = |series: &str| {
        metric_in(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert!(value("lbd_rate_limit_table_bytes") <= 65536.0);
    assert!(value("lbd_rate_limit_table_entries") <= 1000.0);
    assert!(value("lbd_rate_limit_evictions_total") > 0.0);
    assert_eq!(value(hashed), 1_005.0);
    // The long key's client came back (a protected bucket): still limited after the flood.
    assert_eq!(status(long).await, 429, "the flood did not reset its limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_header_keys_on_the_fast_path() {
    long_header_keys_are_hashed_and_the_table_stays_bounded(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_header_keys_on_the_hyper_path() {
    long_header_keys_are_hashed_and_the_table_stays_bounded(false).await;
}
