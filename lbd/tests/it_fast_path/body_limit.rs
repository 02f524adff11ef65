//! `max_request_body_bytes` (global `[limits]` and per route): 413 before anything goes
//! upstream for a declared length over the limit, a chunked body cut off as it passes it, and
//! the upstream connection that carried a cut-off body never reused.

use super::*;

/// Global limit 1000; route `big` (under /big) allows 100000, route `small` (under /small)
/// only 10; everything else goes to the default pool with the global limit.
fn limits_config(global: &str, web: &RawBackend) -> String {
    let rest = format!(
        "[limits]\nmax_request_body_bytes = 1000\n\
         [[route]]\nname = \"big\"\npath_prefix = \"/big\"\npool = \"web\"\nmax_request_body_bytes = 100000\n\
         [[route]]\nname = \"small\"\npath_prefix = \"/small\"\npool = \"web\"\nmax_request_body_bytes = 10\n\
         {}",
        raw_pool("web", &[web.addr])
    );
    // One worker, so there is one idle upstream connection to reuse (or not).
    config(&format!("{global}\nworkers = 1"), &rest)
}

async fn too_large_count(lbd: &Lbd) -> f64 {
    metric(
        lbd.admin,
        "lbd_proxy_errors_total{kind=\"body_too_large\",side=\"client\"}",
    )
    .await
    .unwrap_or(-1.0)
}

/// One request on a fresh connection; the answer must be a 413 that closes the connection.
async fn expect_413(lbd: &Lbd, what: &str, req: &[u8]) {
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange(what, "POST", req).await;
    assert_eq!(r.status, 413, "{what}: {}", r.text());
    assert_eq!(r.text(), "413 request body too large\n", "{what}");
    c.expect_closed(what).await;
}

pub(crate) async fn content_length_over_the_route_limit_gets_413_before_going_upstream(
    global: &str,
) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = Lbd::start(&limits_config(global, &web)).await;

    expect_413(
        &lbd,
        "1001 bytes, global 1000",
        &post_req("/", &pattern(1001, 1)),
    )
    .await;
    expect_413(
        &lbd,
        "11 bytes, route 10",
        &post_req("/small/x", &pattern(11, 2)),
    )
    .await;
    // Only the head: a declared length far over the limit is refused without its body
    // (and on the fast path, which does not buffer bodies this large, by hyper).
    expect_413(
        &lbd,
        "10 MiB declared",
        b"POST /big/upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: 10485760\r\n\r\n",
    )
    .await;

    // A client that waits for `100 Continue` before sending its body gets the 413 instead.
    let mut c = Wire::connect(lbd.listen).await;
    c.send(b"POST /up HTTP/1.1\r\nHost: test.local\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n")
        .await;
    let first = c
        .read_response("POST", deadline())
        .await
        .expect("an answer to the head alone");
    assert_eq!(
        first.status,
        413,
        "the first answer, not a 100: {}",
        first.text()
    );

    // At the limits, and over the global one where the route allows more: through, whole.
    let mut c = Wire::connect(lbd.listen).await;
    for (path, n) in [("/", 1000), ("/small/ok", 10), ("/big/ok", 5000)] {
        let body = pattern(n, 3);
        let r = c.exchange(path, "POST", &post_req(path, &body)).await;
        assert_eq!((r.status, r.text()), (200, echo_text("POST", path, n)));
    }
    assert_eq!(
        web.targets(),
        ["/", "/small/ok", "/big/ok"],
        "no refused request reached the backend"
    );
    assert_eq!(too_large_count(&lbd).await, 4.0);
    // The refused requests opened no upstream connection, and a body sent whole (streamed,
    // on the hyper path) leaves its connection reusable.
    assert_eq!(web.accepted(), 1);
    let failures = backend_series("lbd_backend_failures_total", &web);
    assert_eq!(
        metric(lbd.admin, &failures).await,
        Some(0.0),
        "not the backend's fault"
    );
}

pub(crate) async fn chunked_body_passing_the_limit_is_cut_off_and_its_connection_dropped(
    global: &str,
) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = Lbd::start(&limits_config(global, &web)).await;
    let chunked = |path: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        r.extend(chunked_encoding(body));
        r
    };

    // A GET leaves one idle upstream connection (the only worker's).
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("GET first", "GET", &get_req("/first")).await;
    assert_eq!(r.text(), echo_text("GET", "/first", 0));
    assert_eq!(web.accepted(), 1);

    // 1200 chunked bytes against the global 1000: the backend (which answers only after the
    // whole body) has no response yet, so the client gets the 413.
    expect_413(
        &lbd,
        "chunked 1200, global 1000",
        &chunked("/upload", &pattern(1200, 4)),
    )
    .await;
    expect_413(
        &lbd,
        "chunked 20, route 10",
        &chunked("/small/up", &pattern(20, 5)),
    )
    .await;
    assert_eq!(too_large_count(&lbd).await, 2.0);
    let accepted_by_then = web.accepted();

    // Under the route's larger limit a chunked body goes through whole.
    let big = pattern(50_000, 6);
    let r = c
        .exchange(
            "chunked 50000, route 100000",
            "POST",
            &chunked("/big/up", &big),
        )
        .await;
    assert_eq!(r.text(), echo_text("POST", "/big/up", big.len()));
    let r = c.exchange("GET after", "GET", &get_req("/after")).await;
    assert_eq!(r.text(), echo_text("GET", "/after", 0));

    let seen = web.seen();
    assert_eq!(
        web.targets(),
        ["/first", "/big/up", "/after"],
        "the cut-off bodies never reached the backend whole"
    );
    assert_eq!(sha(&seen[1].req.body), sha(&big));
    assert_eq!(
        seen[2].conn, seen[1].conn,
        "a chunked body within the limit leaves its connection reusable"
    );
    // A connection that carried a cut-off body is never used again: the requests after the
    // 413s went on connections opened after them.
    for s in &seen[1..] {
        assert!(
            s.conn > accepted_by_then,
            "{} went on connection {}, opened before the 413s ({accepted_by_then} were)",
            s.req.target,
            s.conn
        );
    }
    let failures = backend_series("lbd_backend_failures_total", &web);
    assert_eq!(
        metric(lbd.admin, &failures).await,
        Some(0.0),
        "not the backend's fault"
    );
}
