//! Health checks, passive ejection, retries and the max_conns queue.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

fn up_series(pool: &str, b: &TestBackend) -> String {
    format!("lbd_backend_up{{pool=\"{pool}\",backend=\"{}\"}}", b.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_ejected_and_gets_no_more_traffic() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool(
            "web",
            &[&a, &b],
            "[pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 100\nfall = 2\nrise = 2\n[pool.passive]\nconsecutive_failures = 2\nbase_eject_ms = 10000",
        )
    );
    let lbd = Lbd::start(&body).await;

    // Steady load from 4 clients.
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, errors, addr) = (Arc::clone(&stop), Arc::clone(&errors), lbd.listen);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match get(addr, "/load").await {
                    Ok(r) if r.status < 500 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }));
    }
    eventually("both backends serve", Duration::from_secs(5), || async {
        a.hits() > 10 && b.hits() > 10
    })
    .await;
    b.stop();
    eventually("b is marked down", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series("web", &b)).await == Some(0.0)
    })
    .await;
    let during = errors.load(Ordering::SeqCst);
    let a_before = a.hits();
    eventually("load continues on a", Duration::from_secs(5), || async {
        a.hits() > a_before + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("load task");
    }
    assert_eq!(
        errors.load(Ordering::SeqCst),
        during,
        "5xx after b was taken out"
    );
    // Retries on connect failure hide the kill from idempotent clients entirely.
    assert_eq!(during, 0, "GETs are retried on the healthy backend");
    for _ in 0..50 {
        let r = get(lbd.listen, "/after").await.expect("after");
        assert_eq!((r.status, r.backend()), (200, "a"));
    }
    assert!(
        lbd.log_with("backend").await.contains("backend"),
        "health change logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_backend_out_and_bring_it_back() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool(
            "web",
            &[&a, &b],
            "[pool.health]\nkind = \"http\"\npath = \"/healthz\"\nexpect_status = \"200\"\ninterval_ms = 50\ntimeout_ms = 50\nfall = 2\nrise = 3",
        )
    );
    let lbd = Lbd::start(&body).await;
    b.set_healthy(false);
    eventually("b unhealthy", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series("web", &b)).await == Some(0.0)
    })
    .await;
    let before = b.hits();
    for _ in 0..20 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").backend(), "a");
    }
    assert_eq!(b.hits(), before);
    b.set_healthy(true);
    eventually("b healthy again", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series("web", &b)).await == Some(1.0)
    })
    .await;
    let mut saw_b = false;
    for _ in 0..10 {
        saw_b |= get(lbd.listen, "/").await.expect("get").backend() == "b";
    }
    assert!(saw_b);
    let log = lbd
        .log_when(|l| l.contains("backend is unhealthy") && l.contains("backend is healthy"))
        .await;
    assert!(
        log.contains("backend is unhealthy") && log.contains("backend is healthy"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_answering_5xx_is_ejected_passively() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    b.set_failing(true);
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool(
            "web",
            &[&a, &b],
            "[pool.passive]\nconsecutive_failures = 3\nbase_eject_ms = 60000",
        )
    );
    let lbd = Lbd::start(&body).await;
    let mut fives = 0;
    for _ in 0..40 {
        let r = get(lbd.listen, "/").await.expect("get");
        if r.status == 500 {
            fives += 1;
        }
    }
    assert_eq!(
        fives, 3,
        "exactly consecutive_failures 5xx reach the client before ejection"
    );
    assert_eq!(b.hits(), 3);
    let ejected = format!("lbd_backend_ejected{{pool=\"web\",backend=\"{}\"}}", b.addr);
    assert_eq!(metric(lbd.admin, &ejected).await, Some(1.0));
    let ejected = "backend ejected after consecutive failures";
    assert!(lbd.log_with(ejected).await.contains(ejected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_answers_503_fast() {
    let a = TestBackend::start("a").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool(
            "web",
            &[&a],
            "[pool.health]\nkind = \"tcp\"\ninterval_ms = 50\ntimeout_ms = 50\nfall = 1",
        )
    );
    let lbd = Lbd::start(&body).await;
    a.stop();
    eventually("a down", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series("web", &a)).await == Some(0.0)
    })
    .await;
    let started = Instant::now();
    let r = get(lbd.listen, "/").await.expect("request");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "503 no healthy backend\n");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// A backend that reads a request and closes the connection without answering.
async fn resetter() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                // Dropping closes before any response byte.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_land_on_a_healthy_backend() {
    let live = TestBackend::start("live").await;
    let dead = free_addr(); // nothing listens here: connection refused
    let reset = resetter().await;
    // Passive ejection off, no active checks: the broken backends stay in rotation, so every
    // request that picks one must be retried.
    let body = format!(
        "[global]\n#GLOBAL\n[retries]\nattempts = 2\nmin_per_sec = 1000\n\
         [[pool]]\nname = \"refused\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{dead}\"\n[[pool.backend]]\naddress = \"{}\"\n\
         [[pool]]\nname = \"reset\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{reset}\"\n[[pool.backend]]\naddress = \"{}\"\n\
         [[route]]\nhost = \"refused\"\npool = \"refused\"\n[[route]]\nhost = \"reset\"\npool = \"reset\"\n",
        live.addr, live.addr
    );
    let lbd = Lbd::start(&body).await;
    for method in ["GET", "POST"] {
        for _ in 0..10 {
            let r = request(lbd.listen, method, "/", &[("host", "refused")])
                .await
                .expect("request");
            assert_eq!(
                (r.status, r.backend()),
                (200, "live"),
                "{method} after connect refused"
            );
        }
    }
    for _ in 0..10 {
        let r = request(lbd.listen, "GET", "/", &[("host", "reset")])
            .await
            .expect("request");
        assert_eq!(
            (r.status, r.backend()),
            (200, "live"),
            "idempotent GET after a reset"
        );
    }
    // A POST that reached the backend is never replayed: some get 502.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = request(lbd.listen, "POST", "/", &[("host", "reset")])
            .await
            .expect("request");
        statuses.push(r.status);
    }
    assert!(statuses.contains(&502), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(metric(lbd.admin, "lbd_retries_total").await.unwrap_or(0.0) >= 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_and_queue_timeout_too() {
    let slow = TestBackend::start("slow").await;
    let body = format!(
        "[global]\n#GLOBAL\n\
         [[pool]]\nname = \"q\"\nqueue_size = 1\nqueue_timeout_ms = 10000\n[[pool.backend]]\naddress = \"{a}\"\nmax_conns = 1\n\
         [[pool]]\nname = \"t\"\nqueue_size = 5\nqueue_timeout_ms = 200\n[[pool.backend]]\naddress = \"{a}\"\nmax_conns = 1\n\
         [[route]]\nhost = \"q\"\npool = \"q\"\n[[route]]\nhost = \"t\"\npool = \"t\"\n",
        a = slow.addr
    );
    let lbd = Lbd::start(&body).await;
    let addr = lbd.listen;
    let first =
        tokio::spawn(async move { request(addr, "GET", "/slow/1500", &[("host", "q")]).await });
    eventually(
        "first request in flight",
        Duration::from_secs(5),
        || async { slow.hits() == 1 },
    )
    .await;
    let second =
        tokio::spawn(async move { request(addr, "GET", "/slow/10", &[("host", "q")]).await });
    eventually("second request queued", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_pool_queue_depth{pool=\"q\"}").await == Some(1.0)
    })
    .await;
    let started = Instant::now();
    let third = request(addr, "GET", "/", &[("host", "q")])
        .await
        .expect("third");
    assert_eq!(third.status, 503);
    assert_eq!(third.body, "503 backend queue full\n");
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(first.await.expect("join").expect("first").status, 200);
    let second = second.await.expect("join").expect("second");
    assert_eq!(
        second.status, 200,
        "queued request is served once the slot frees"
    );

    let t1 =
        tokio::spawn(async move { request(addr, "GET", "/slow/1500", &[("host", "t")]).await });
    eventually("t slot taken", Duration::from_secs(5), || async {
        slow.hits() == 3
    })
    .await;
    let r = request(addr, "GET", "/", &[("host", "t")])
        .await
        .expect("timeout");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "503 backend queue timeout\n");
    assert_eq!(t1.await.expect("join").expect("t1").status, 200);
    assert_eq!(
        metric(lbd.admin, "lbd_pool_queue_full_total{pool=\"q\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(lbd.admin, "lbd_pool_queue_timeouts_total{pool=\"t\"}").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gets_504_at_the_response_timeout() {
    let slow = TestBackend::start("slow").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[timeouts]\nbackend_response_ms = 300\n{}",
        pool("web", &[&slow], "[pool.passive]\nconsecutive_failures = 0")
    );
    let lbd = Lbd::start(&body).await;
    let started = Instant::now();
    let r = get(lbd.listen, "/slow/3000").await.expect("request");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, "504 gateway timeout\n");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(slow.hits(), 1, "a timed-out request is not retried");
    // The timed-out connection is not reused: the next request still works.
    assert_eq!(get(lbd.listen, "/fast").await.expect("next").status, 200);
    let series = "lbd_proxy_errors_total{kind=\"response_timeout\",side=\"backend\"}";
    assert_eq!(metric(lbd.admin, series).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retry_budget_stops_retries() {
    let live = TestBackend::start("live").await;
    let dead = free_addr();
    // No deposits and no floor: the budget never allows a retry.
    let body = format!(
        "default_pool = \"p\"\n[global]\n#GLOBAL\n[retries]\nbudget_percent = 0\nmin_per_sec = 0\n\
         [[pool]]\nname = \"p\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{dead}\"\n[[pool.backend]]\naddress = \"{}\"\n",
        live.addr
    );
    let lbd = Lbd::start(&body).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(lbd.listen, "/").await.expect("get").status);
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 502).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(metric(lbd.admin, "lbd_retries_total").await, Some(0.0));
    assert_eq!(
        metric(lbd.admin, "lbd_retry_budget_exhausted_total").await,
        Some(3.0)
    );
}
