//! Scenarios about the client connection and the upstream pool: pipelining, request bodies
//! and the hand-off to hyper, upstream keep-alive and stale connections, upgrades, and lbd's
//! own answers.

use super::*;

// ---- 1. pipelining ----

pub(crate) async fn pipelined_requests_in_one_write_are_answered_in_order(global: &str) {
    let web = RawBackend::start(|req, _| {
        let reply = Reply::KeepAlive(echo(req));
        // The first answer is the slow one: order must come from the requests, not from
        // which backend answer happens to be ready first.
        if req.target.starts_with("/slow") {
            Reply::After(Duration::from_millis(150), Box::new(reply))
        } else {
            reply
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    c.send(&[get_req("/slow/first"), get_req("/second")].concat())
        .await;
    let first = c.response("first pipelined", "GET").await;
    let second = c.response("second pipelined", "GET").await;
    assert_eq!(
        (first.status, first.text()),
        (200, echo_text("GET", "/slow/first", 0))
    );
    assert_eq!(
        (second.status, second.text()),
        (200, echo_text("GET", "/second", 0))
    );
    // A body in the middle of a pipeline must not swallow (or leak into) its neighbours.
    let body = pattern(300, 7);
    c.send(&[post_req("/post", &body), get_req("/after-post")].concat())
        .await;
    let post = c.response("pipelined POST", "POST").await;
    let after = c.response("GET after pipelined POST", "GET").await;
    assert_eq!(post.text(), echo_text("POST", "/post", 300));
    assert_eq!(after.text(), echo_text("GET", "/after-post", 0));
    // A request the fast path hands to hyper (a chunked body), between two it keeps, all in
    // one write: the bytes already read past the first head must reach hyper intact.
    let mut mixed = get_req("/before-handoff");
    mixed.extend_from_slice(
        b"POST /chunked-post HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n\
3\r\nabc\r\n0\r\n\r\n",
    );
    mixed.extend(get_req("/after-handoff"));
    c.send(&mixed).await;
    let r = c.response("GET before hand-off", "GET").await;
    assert_eq!(r.text(), echo_text("GET", "/before-handoff", 0));
    let r = c.response("chunked POST pipelined", "POST").await;
    assert_eq!(r.text(), echo_text("POST", "/chunked-post", 3));
    let r = c.response("GET after hand-off", "GET").await;
    assert_eq!(r.text(), echo_text("GET", "/after-handoff", 0));
    let last = c
        .exchange("after the pipeline", "GET", &get_req("/third"))
        .await;
    assert_eq!(
        (last.status, last.text()),
        (200, echo_text("GET", "/third", 0))
    );
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_eq!(
        web.targets(),
        [
            "/slow/first",
            "/second",
            "/post",
            "/after-post",
            "/before-handoff",
            "/chunked-post",
            "/after-handoff",
            "/third"
        ]
    );
    assert_eq!(web.seen()[2].req.body, body);
    assert_eq!(web.seen()[5].req.body, b"abc");
    assert!(web.errors().is_empty(), "{:?}", web.errors());
}

// ---- 6. request bodies ----

pub(crate) async fn content_length_request_bodies_reach_the_backend_exactly(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let small = pattern(1000, 5);
    let big = pattern(MIB, 6);
    let r = c
        .exchange("POST 1000", "POST", &post_req("/small", &small))
        .await;
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("POST", "/small", 1000))
    );
    // `Connection: content-length` is a hop-by-hop option, but it must not unframe the body:
    // a body that looks like a request would reach the backend as a second request.
    let inner = b"GET /smuggled HTTP/1.1\r\nHost: test.local\r\n\r\n";
    let mut sneaky = format!(
        "POST /framed HTTP/1.1\r\nHost: test.local\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n",
        inner.len()
    )
    .into_bytes();
    sneaky.extend_from_slice(inner);
    let r = c
        .exchange("POST with Connection: content-length", "POST", &sneaky)
        .await;
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("POST", "/framed", inner.len()))
    );
    let r = c
        .exchange("POST 1 MiB", "POST", &post_req("/big", &big))
        .await;
    assert_eq!((r.status, r.text()), (200, echo_text("POST", "/big", MIB)));
    let r = c.exchange("GET after", "GET", &get_req("/after")).await;
    assert_eq!(r.text(), echo_text("GET", "/after", 0));
    let seen = web.seen();
    assert_eq!(
        web.targets(),
        ["/small", "/framed", "/big", "/after"],
        "the backend saw exactly the client's requests"
    );
    assert_eq!(sha(&seen[0].req.body), sha(&small));
    assert_eq!(seen[0].req.body.len(), 1000);
    assert_eq!(seen[1].req.body, inner);
    assert_eq!(sha(&seen[2].req.body), sha(&big));
    assert!(seen[3].req.body.is_empty());
    assert!(web.errors().is_empty(), "{:?}", web.errors());
}

pub(crate) async fn chunked_request_body_after_a_get_reaches_the_backend_decoded(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("GET first", "GET", &get_req("/first")).await;
    assert_eq!(r.text(), echo_text("GET", "/first", 0));
    let upload = b"POST /upload HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n\
4;ext=x\r\nwiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: t\r\n\r\n";
    let decoded = b"wikipedia in\r\n\r\nchunks.";
    let r = c.exchange("chunked POST", "POST", upload).await;
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("POST", "/upload", decoded.len()))
    );
    // A bigger one, chunked in uneven pieces, then a GET: the decoder must end exactly.
    let big = pattern(200_000, 9);
    let mut req =
        b"POST /upload2 HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    req.extend(chunked_encoding(&big));
    let r = c.exchange("big chunked POST", "POST", &req).await;
    assert_eq!(r.text(), echo_text("POST", "/upload2", big.len()));
    let r = c.exchange("GET after", "GET", &get_req("/after")).await;
    assert_eq!(r.text(), echo_text("GET", "/after", 0));
    let seen = web.seen();
    assert_eq!(web.targets(), ["/first", "/upload", "/upload2", "/after"]);
    assert_eq!(seen[1].req.method, "POST");
    assert_eq!(seen[1].req.body, decoded);
    assert_eq!(sha(&seen[2].req.body), sha(&big));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    // The fast path served the first GET, then handed the connection over exactly once; hyper
    // served the rest of it.
    let served = metric(lbd.admin, "lbd_http1_fast_path_requests_total").await;
    let handoffs = metric(lbd.admin, "lbd_http1_fast_path_handoffs_total").await;
    if global == FAST_PATH_ON {
        assert_eq!((served, handoffs), (Some(1.0), Some(1.0)));
    } else {
        assert_eq!((served, handoffs), (Some(0.0), Some(0.0)));
    }
}

pub(crate) async fn expect_100_continue_gets_an_interim_answer_then_the_body_goes_through(
    global: &str,
) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("GET first", "GET", &get_req("/first")).await;
    assert_eq!(r.text(), echo_text("GET", "/first", 0));
    c.send(b"POST /expect HTTP/1.1\r\nHost: test.local\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
        .await;
    // The client holds the body back until told to go on (RFC 9110 §10.1.1).
    let interim = c
        .read_response("POST", deadline())
        .await
        .unwrap_or_else(|e| panic!("no interim response to Expect: {e}"));
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello world").await;
    let r = c.response("after 100 Continue", "POST").await;
    assert_eq!(
        (r.status, r.text()),
        (200, echo_text("POST", "/expect", 11))
    );
    let r = c.exchange("GET after", "GET", &get_req("/after")).await;
    assert_eq!(r.text(), echo_text("GET", "/after", 0));
    let seen = web.seen();
    assert_eq!(web.targets(), ["/first", "/expect", "/after"]);
    assert_eq!(seen[1].req.body, b"hello world");
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
}

// ---- 7. upstream keep-alive ----

pub(crate) async fn sequential_requests_share_one_backend_connection(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for i in 0..20 {
        let path = format!("/ka/{i}");
        let r = c.exchange(&path, "GET", &get_req(&path)).await;
        assert_eq!((r.status, r.text()), (200, echo_text("GET", &path, 0)));
    }
    let reused = backend_series("lbd_backend_connections_reused_total", &web);
    eventually(
        "19 reused backend connections",
        Duration::from_secs(5),
        || async { metric(lbd.admin, &reused).await.unwrap_or(0.0) >= 19.0 },
    )
    .await;
    let opened = backend_series("lbd_backend_connections_opened_total", &web);
    assert_eq!(metric(lbd.admin, &opened).await, Some(1.0), "{opened}");
    assert_eq!(web.accepted(), 1);
    assert!(web.seen().iter().all(|s| s.conn == 1));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn backend_connection_close_is_honoured_and_not_reused(global: &str) {
    let web = RawBackend::start(|req, _| {
        let body = format!("{} {} len=0\n", req.method, req.target);
        Reply::Close(ok(body.as_bytes(), "Connection: close\r\n"))
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for i in 0..10 {
        let path = format!("/close/{i}");
        let r = c.exchange(&path, "GET", &get_req(&path)).await;
        assert_eq!((r.status, r.text()), (200, echo_text("GET", &path, 0)));
        // Connection is hop-by-hop: lbd may keep the client connection, or close it too.
        if r.closes() {
            c.expect_closed("lbd said Connection: close").await;
            c = Wire::connect(lbd.listen).await;
        }
    }
    assert_eq!(web.accepted(), 10, "one backend connection per request");
    let opened = backend_series("lbd_backend_connections_opened_total", &web);
    eventually(
        "10 opened backend connections",
        Duration::from_secs(5),
        || async { metric(lbd.admin, &opened).await == Some(10.0) },
    )
    .await;
    let reused = backend_series("lbd_backend_connections_reused_total", &web);
    assert_eq!(metric(lbd.admin, &reused).await.unwrap_or(0.0), 0.0);
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 8. stale pooled connections ----

pub(crate) async fn backend_closing_after_each_response_without_saying_so_is_survived(
    global: &str,
) {
    // Keep-alive by the headers, closed by the backend the moment the response is out.
    let web = RawBackend::start(|req, _| Reply::Close(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for i in 0..10 {
        let path = format!("/idle-close/{i}");
        let r = c.exchange(&path, "GET", &get_req(&path)).await;
        assert_eq!(
            (r.status, r.text()),
            (200, echo_text("GET", &path, 0)),
            "request {i}"
        );
    }
    assert_eq!(web.accepted(), 10, "{:?}", web.targets());
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn pooled_connection_closed_under_a_get_is_retried_on_a_fresh_one(global: &str) {
    // Each connection answers its first request and silently closes on the second: the close
    // crosses lbd's request in flight, the keep-alive race made deterministic.
    let web = RawBackend::start(|req, served| {
        if served == 0 {
            Reply::KeepAlive(echo(req))
        } else {
            Reply::Drop
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for i in 0..10 {
        let path = format!("/race/{i}");
        let r = c.exchange(&path, "GET", &get_req(&path)).await;
        assert_eq!(
            (r.status, r.text()),
            (200, echo_text("GET", &path, 0)),
            "request {i}"
        );
    }
    let seen = web.seen();
    let dropped = seen.len().saturating_sub(10);
    assert!(
        dropped >= 1,
        "lbd never reused a pooled connection, so the race was not exercised: {:?}",
        web.targets()
    );
    // Every request was answered exactly once.
    let mut answered: Vec<String> = Vec::new();
    let mut per_conn = std::collections::HashMap::<u64, usize>::new();
    for s in &seen {
        let n = per_conn.entry(s.conn).or_default();
        if *n == 0 {
            answered.push(s.req.target.clone());
        }
        *n += 1;
    }
    let want: Vec<String> = (0..10).map(|i| format!("/race/{i}")).collect();
    assert_eq!(answered, want);
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 10. upgrades ----

pub(crate) async fn websocket_upgrade_after_a_plain_get_tunnels_both_ways(global: &str) {
    let web = RawBackend::start(|req, _| {
        if req.has_token("connection", "upgrade") && req.has_token("upgrade", "websocket") {
            Reply::Echo(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let upgrade: &[u8] = b"GET /ws HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\n\
Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    for pipelined in [false, true] {
        let mut c = Wire::connect(lbd.listen).await;
        if pipelined {
            // The upgrade request already sits behind the GET in lbd's read buffer.
            c.send(&[&get_req("/plain")[..], upgrade].concat()).await;
        } else {
            c.send(&get_req("/plain")).await;
        }
        let r = c.response("plain GET", "GET").await;
        assert_eq!(
            r.text(),
            echo_text("GET", "/plain", 0),
            "pipelined {pipelined}"
        );
        if !pipelined {
            c.send(upgrade).await;
        }
        let r = c
            .read_response("GET", deadline())
            .await
            .unwrap_or_else(|e| panic!("upgrade (pipelined {pipelined}): {e}"));
        assert_eq!(r.status, 101, "pipelined {pipelined}: {r:?}");
        assert!(r.has_token("upgrade", "websocket"), "{r:?}");
        assert!(r.has_token("connection", "upgrade"), "{r:?}");
        // Bytes that look like HTTP must go through the tunnel untouched too.
        for msg in [
            &b"ping-1"[..],
            b"\x00\xffbinary\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"last",
        ] {
            c.send(msg).await;
            let echoed = c
                .take(msg.len(), deadline())
                .await
                .unwrap_or_else(|e| panic!("echo (pipelined {pipelined}): {e}"));
            assert_eq!(echoed, msg, "pipelined {pipelined}");
        }
        assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    }
    let seen = web.seen();
    assert_eq!(web.targets(), ["/plain", "/ws", "/plain", "/ws"]);
    assert!(
        seen[1].req.has_token("upgrade", "websocket"),
        "{:?}",
        seen[1].req
    );
}

// ---- lbd's own answers ----

/// A 404 from lbd itself: a HEAD gets the head only (the next response on the connection
/// must parse), and `Connection: close` from the client is honoured.
pub(crate) async fn local_answers_respect_head_and_connection_close(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = Lbd::start(&format!(
        "[global]\n#GLOBAL\n{global}\n{}[[route]]\npath_prefix = \"/app\"\npool = \"web\"\n",
        raw_pool("web", &[web.addr])
    ))
    .await;
    let mut c = Wire::connect(lbd.listen).await;
    let head = b"HEAD /nowhere HTTP/1.1\r\nHost: test.local\r\n\r\n";
    // Pipelined with a routed GET: a body after the 404's head would be read as the next
    // response's start.
    let mut both = head.to_vec();
    both.extend(get_req("/app/x"));
    c.send(&both).await;
    let r = c.response("HEAD to no route", "HEAD").await;
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    let r = c.response("GET after the HEAD", "GET").await;
    assert_eq!(r.text(), echo_text("GET", "/app/x", 0));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    let r = c
        .exchange(
            "GET with Connection: close to no route",
            "GET",
            b"GET /nowhere HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("close"));
    c.expect_closed("after Connection: close").await;
}
