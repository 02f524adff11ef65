//! Idle keep-alive connections on the fast path leave their task and wait in the worker's
//! parking lot (`lbd::park`): they must come back intact when the client speaks, close at
//! their keep-alive deadline, and close on shutdown. Fast path only (the hyper path does not
//! park).

use super::*;

async fn parked(lbd: &Lbd) -> f64 {
    metric(lbd.admin, "lbd_client_connections_parked")
        .await
        .unwrap_or(-1.0)
}

async fn open(lbd: &Lbd) -> f64 {
    metric(lbd.admin, "lbd_client_connections")
        .await
        .unwrap_or(-1.0)
}

async fn wait_parked(lbd: &Lbd, n: f64, what: &str) {
    eventually(what, WAIT, || async { parked(lbd).await == n }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_parked_and_served_again_when_its_client_speaks() {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(FAST_PATH_ON, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for i in 0..3 {
        let path = format!("/parked/{i}");
        let r = c.exchange(&path, "GET", &get_req(&path)).await;
        assert_eq!((r.status, r.text()), (200, echo_text("GET", &path, 0)));
        wait_parked(&lbd, 1.0, "the idle connection is parked").await;
        assert_eq!(open(&lbd).await, 1.0, "a parked connection is still open");
    }
    // A pipelined pair after parking: both answered, in order.
    c.send(&[get_req("/p/1"), get_req("/p/2")].concat()).await;
    assert_eq!(
        c.response("p1", "GET").await.text(),
        echo_text("GET", "/p/1", 0)
    );
    assert_eq!(
        c.response("p2", "GET").await.text(),
        echo_text("GET", "/p/2", 0)
    );
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    // A client that closes while parked is forgotten.
    drop(c);
    eventually("the closed connection leaves the lot", WAIT, || async {
        parked(&lbd).await == 0.0 && open(&lbd).await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_is_closed_at_its_keepalive_deadline() {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let global = format!("{FAST_PATH_ON}\n[timeouts]\nrequest_header_ms = 1500");
    let lbd = start_with(&global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("first", "GET", &get_req("/first")).await;
    assert_eq!(r.status, 200);
    wait_parked(&lbd, 1.0, "the idle connection is parked").await;
    // The lot closes it at the keep-alive deadline: the client reads EOF, nothing else.
    c.expect_closed("parked past its deadline").await;
    eventually("gauges back to zero", WAIT, || async {
        parked(&lbd).await == 0.0 && open(&lbd).await == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_parked_connections_and_lbd_exits() {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let mut lbd = start_with(FAST_PATH_ON, &web).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = Wire::connect(lbd.listen).await;
        let path = format!("/c/{i}");
        assert_eq!(c.exchange(&path, "GET", &get_req(&path)).await.status, 200);
        clients.push(c);
    }
    wait_parked(&lbd, 5.0, "five idle connections parked").await;
    lbd.signal("TERM");
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_closed(&format!("parked client {i} on SIGTERM"))
            .await;
    }
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", lbd.log_text());
}
