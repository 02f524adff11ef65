//! Scenarios about relaying backend responses: chunked, close-delimited, bodiless and large
//! bodies, malformed and ambiguous heads, hop-by-hop headers, 1xx, truncation, split bytes.

use super::*;
use tokio::time::Instant;

// ---- 2. chunked responses ----

/// Three chunks (one with an extension) and a trailer: decodes to `hello, world!`.
pub(crate) const CHUNKED_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
5;name=\"val\"\r\nhello\r\n1\r\n,\r\n7\r\n world!\r\n0\r\nX-Checksum: abc\r\n\r\n";

pub(crate) async fn chunked_response_with_extension_and_trailer_is_relayed(global: &str) {
    let web = RawBackend::start(|req, _| {
        if req.target == "/chunked" {
            Reply::KeepAlive(CHUNKED_RESPONSE.to_vec())
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for round in 0..2 {
        let r = c.exchange("chunked", "GET", &get_req("/chunked")).await;
        assert_eq!(r.status, 200, "round {round}");
        assert_eq!(r.text(), "hello, world!", "round {round}: {r:?}");
        // Trailers may be dropped on the way, but never altered.
        if let Some((_, v)) = r.trailers.iter().find(|(k, _)| k == "x-checksum") {
            assert_eq!(v, "abc");
        }
        let next = c.exchange("after chunked", "GET", &get_req("/next")).await;
        assert_eq!(
            (next.status, next.text()),
            (200, echo_text("GET", "/next", 0))
        );
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_eq!(web.targets(), ["/chunked", "/next", "/chunked", "/next"]);
    // Nothing about that response makes the backend connection unusable: the trailer is
    // the end of the body like any last chunk.
    assert_eq!(
        web.accepted(),
        1,
        "backend connection not reused after a chunked response with a trailer"
    );
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 3. close-delimited responses ----

pub(crate) async fn close_delimited_response_arrives_whole_and_is_ended(global: &str) {
    let body = pattern(200_000, 3);
    let sent = body.clone();
    let web = RawBackend::start(move |req, _| {
        if req.target == "/close" {
            let mut r = b"HTTP/1.1 200 OK\r\nX-Mode: close-delimited\r\n\r\n".to_vec();
            r.extend_from_slice(&sent);
            Reply::Close(r)
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for round in 0..2 {
        let r = c
            .exchange("close-delimited", "GET", &get_req("/close"))
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-mode"), Some("close-delimited"));
        assert_eq!(r.body.len(), body.len(), "round {round}: {:?}", r.framing);
        assert_eq!(sha(&r.body), sha(&body), "round {round}");
        if r.has_token("connection", "close") {
            // Relayed as is: the close is the end of the body, and lbd must deliver it.
            c.expect_closed("after a close-delimited response").await;
        }
        if r.closes() {
            c = Wire::connect(lbd.listen).await;
        }
        // On the same connection if lbd re-framed the body for the client, else a new one.
        let next = c
            .exchange("after close-delimited", "GET", &get_req("/next"))
            .await;
        assert_eq!(next.text(), echo_text("GET", "/next", 0));
    }
    // /close, /next, /close, /next: the first /close opens a connection its close ends, the
    // first /next opens the second, the second /close reuses it and ends it, the last /next
    // opens the third.
    assert_eq!(web.targets(), ["/close", "/next", "/close", "/next"]);
    assert_eq!(web.accepted(), 3);
    assert!(web.errors().is_empty(), "{:?}", web.errors());
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 4. bodiless responses ----

pub(crate) async fn head_204_and_304_answers_have_no_body_and_keep_the_connection(global: &str) {
    let web = RawBackend::start(|req, _| {
        Reply::KeepAlive(match (req.method.as_str(), req.target.as_str()) {
            // What a GET would carry: 5 bytes. None follow.
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Head: 1\r\n\r\n".to_vec(),
            (_, "/204") => b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n".to_vec(),
            (_, "/304") => b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec(),
            // A 304 may repeat the Content-Length of the 200 it stands for.
            (_, "/304cl") => {
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n".to_vec()
            }
            _ => echo(req),
        })
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let head_req = b"HEAD /h HTTP/1.1\r\nHost: test.local\r\n\r\n".to_vec();
    let r = c.exchange("HEAD", "HEAD", &head_req).await;
    assert_eq!((r.status, r.header("x-head")), (200, Some("1")));
    if let Some(cl) = r.header("content-length") {
        assert_eq!(cl, "5", "HEAD keeps the length a GET would have");
    }
    let after = |n: usize| get_req(&format!("/after{n}"));
    let r = c.exchange("GET after HEAD", "GET", &after(1)).await;
    assert_eq!(r.text(), echo_text("GET", "/after1", 0));
    let r = c.exchange("204", "GET", &get_req("/204")).await;
    assert_eq!((r.status, r.header("x-kind")), (204, Some("204")));
    let r = c.exchange("GET after 204", "GET", &after(2)).await;
    assert_eq!(r.text(), echo_text("GET", "/after2", 0));
    for target in ["/304", "/304cl"] {
        let req =
            format!("GET {target} HTTP/1.1\r\nHost: test.local\r\nIf-None-Match: \"v1\"\r\n\r\n");
        let r = c.exchange(target, "GET", req.as_bytes()).await;
        assert_eq!(
            (r.status, r.header("etag")),
            (304, Some("\"v1\"")),
            "{target}"
        );
        let r = c.exchange("GET after 304", "GET", &after(3)).await;
        assert_eq!(r.text(), echo_text("GET", "/after3", 0), "after {target}");
    }
    // The same, pipelined in one write: any body byte lbd invented or waited for would
    // break the next head.
    c.send(&[head_req, get_req("/204"), get_req("/304cl"), after(4)].concat())
        .await;
    assert_eq!(c.response("pipelined HEAD", "HEAD").await.status, 200);
    assert_eq!(c.response("pipelined 204", "GET").await.status, 204);
    assert_eq!(c.response("pipelined 304", "GET").await.status, 304);
    let r = c.response("pipelined GET", "GET").await;
    assert_eq!(r.text(), echo_text("GET", "/after4", 0));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_eq!(
        web.accepted(),
        1,
        "bodiless answers keep the backend connection"
    );
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 5. large responses ----

pub(crate) async fn one_mib_length_and_chunked_responses_arrive_intact(global: &str) {
    let big = pattern(MIB, 11);
    let sent = big.clone();
    let web = RawBackend::start(move |req, _| {
        Reply::KeepAlive(match req.target.as_str() {
            "/big-cl" => ok(&sent, ""),
            "/big-chunked" => {
                let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                r.extend(chunked_encoding(&sent));
                r
            }
            _ => echo(req),
        })
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for target in ["/big-cl", "/big-chunked", "/big-cl"] {
        let r = c.exchange(target, "GET", &get_req(target)).await;
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.body.len(), MIB, "{target}: framing {:?}", r.framing);
        assert_eq!(sha(&r.body), sha(&big), "{target}");
    }
    let r = c
        .exchange("after the big ones", "GET", &get_req("/small"))
        .await;
    assert_eq!(r.text(), echo_text("GET", "/small", 0));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 9. malformed response heads ----

pub(crate) async fn malformed_backend_response_gets_502_and_the_connection_recovers(global: &str) {
    let fixed = Arc::new(AtomicBool::new(false));
    let is_fixed = fixed.clone();
    let bad = RawBackend::start(move |req, _| {
        if is_fixed.load(Ordering::SeqCst) {
            return Reply::KeepAlive(echo(req));
        }
        // Each garbage answer leaves bytes behind and the connection open: a proxy that put
        // this connection back in its pool would read them as the next response.
        let garbage: &[u8] = match req.target.as_str() {
            "/bad/status" => b"HTTP/1.1 abc\r\n\r\nLEFTOVER",
            "/bad/garbage" => b"garbage garbage\r\n\r\nLEFTOVER",
            "/bad/header" => b"HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 2\r\n\r\nok",
            "/bad/length" => b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\nok",
            "/bad/lengths" => {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"
            }
            // No head at all before the close.
            _ => return Reply::Close(b"garbage".to_vec()),
        };
        Reply::KeepAlive(garbage.to_vec())
    })
    .await;
    let good = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = Lbd::start(&config(
        global,
        &format!(
            "{}{}[[route]]\nname = \"bad\"\npath_prefix = \"/bad\"\npool = \"bad\"\n",
            raw_pool("web", &[good.addr]),
            raw_pool("bad", &[bad.addr]),
        ),
    ))
    .await;
    let mut c = Wire::connect(lbd.listen).await;
    let cases = [
        "/bad/status",
        "/bad/garbage",
        "/bad/header",
        "/bad/length",
        "/bad/lengths",
        "/bad/close",
    ];
    for target in cases {
        let r = c.exchange(target, "GET", &get_req(target)).await;
        assert_eq!(r.status, 502, "{target}: {r:?}");
        if r.closes() {
            c.expect_closed(target).await;
            c = Wire::connect(lbd.listen).await;
        }
        let ok = c.exchange("good after bad", "GET", &get_req("/good")).await;
        assert_eq!(
            (ok.status, ok.text()),
            (200, echo_text("GET", "/good", 0)),
            "after {target}"
        );
    }
    // Fixed: the same backend answers again, on connections lbd did not keep from before.
    fixed.store(true, Ordering::SeqCst);
    for target in cases {
        let r = c.exchange(target, "GET", &get_req(target)).await;
        assert_eq!(
            (r.status, r.text()),
            (200, echo_text("GET", target, 0)),
            "fixed {target}"
        );
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 11. hop-by-hop response headers ----

pub(crate) async fn hop_by_hop_response_headers_do_not_reach_the_client(global: &str) {
    let web = RawBackend::start(|req, _| {
        if req.target == "/hop" {
            Reply::KeepAlive(ok(
                b"hop\n",
                "Connection: x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nX-Kept: 1\r\n",
            ))
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for round in 0..2 {
        let r = c.exchange("hop", "GET", &get_req("/hop")).await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "hop\n"),
            "round {round}"
        );
        for gone in ["x-secret", "keep-alive", "proxy-connection"] {
            assert!(
                r.header(gone).is_none(),
                "round {round}: {gone} leaked: {:?}",
                r.headers
            );
        }
        // lbd may send its own Connection header, never the backend's.
        assert!(
            !r.has_token("connection", "x-secret"),
            "round {round}: {:?}",
            r.headers
        );
        assert_eq!(r.header("x-kept"), Some("1"), "round {round}");
        let next = c.exchange("after hop", "GET", &get_req("/next")).await;
        assert_eq!(next.text(), echo_text("GET", "/next", 0));
    }
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

// ---- 13. more framing edges ----

pub(crate) async fn interim_1xx_before_the_final_response_is_handled(global: &str) {
    let web = RawBackend::start(|req, _| {
        let final_ = echo(req);
        let interim: &[u8] = match req.target.as_str() {
            "/103" => b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            // Unsolicited (the request had no Expect): still only an interim answer.
            "/100" => b"HTTP/1.1 100 Continue\r\n\r\n",
            _ => b"",
        };
        Reply::KeepAlive([interim, &final_[..]].concat())
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for target in ["/103", "/100", "/103"] {
        // `response` skips interim answers lbd chose to relay; the final one must follow.
        let r = c.exchange(target, "GET", &get_req(target)).await;
        assert_eq!((r.status, r.text()), (200, echo_text("GET", target, 0)));
        let r = c.exchange("after 1xx", "GET", &get_req("/next")).await;
        assert_eq!(r.text(), echo_text("GET", "/next", 0), "after {target}");
    }
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn truncated_backend_body_is_not_passed_off_as_complete(global: &str) {
    let web = RawBackend::start(|req, _| match req.target.as_str() {
        "/trunc-length" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'x'; 50]);
            Reply::Close(r)
        }
        "/trunc-chunked" => Reply::Close(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n".to_vec(),
        ),
        _ => Reply::KeepAlive(echo(req)),
    })
    .await;
    let lbd = start_with(global, &web).await;
    for target in ["/trunc-length", "/trunc-chunked"] {
        let mut c = Wire::connect(lbd.listen).await;
        c.send(&get_req(target)).await;
        // Either a 502 before any of it went out, or a response the client can tell is
        // cut short (the connection ends inside the body). Never a complete-looking 200.
        match c.read_response("GET", deadline()).await {
            Ok(r) => assert_eq!(r.status, 502, "{target} relayed as complete: {r:?}"),
            Err(e) => assert!(
                e.contains("closed") || e.starts_with("read error"),
                "{target}: the connection must end, got: {e}"
            ),
        }
        let mut c = Wire::connect(lbd.listen).await;
        let r = c.exchange("after truncation", "GET", &get_req("/ok")).await;
        assert_eq!(r.text(), echo_text("GET", "/ok", 0), "after {target}");
    }
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

/// A backend that goes silent in the middle of a body is cut off after
/// `backend_response_ms` of silence (nginx's `proxy_read_timeout`), for a Content-Length and
/// a chunked body: the client's connection ends instead of hanging with the backend's slot.
pub(crate) async fn a_backend_silent_mid_body_is_cut_off(global: &str) {
    let web = RawBackend::start(|req, _| match req.target.as_str() {
        "/stall-length" => {
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
            r.extend_from_slice(&[b'x'; 50]);
            // Sent, then the connection stays open and silent.
            Reply::KeepAlive(r)
        }
        "/stall-chunked" => Reply::KeepAlive(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n".to_vec(),
        ),
        _ => Reply::KeepAlive(echo(req)),
    })
    .await;
    let body = format!(
        "{}[timeouts]\nbackend_response_ms = 300\n",
        raw_pool("web", &[web.addr])
    );
    let lbd = Lbd::start(&config(global, &body)).await;
    for target in ["/stall-length", "/stall-chunked"] {
        let mut c = Wire::connect(lbd.listen).await;
        let started = Instant::now();
        c.send(&get_req(target)).await;
        match c.read_response("GET", deadline()).await {
            Ok(r) => panic!("{target}: relayed as complete: {r:?}"),
            Err(e) => assert!(
                e.contains("closed") || e.starts_with("read error"),
                "{target}: the connection must end, got: {e}"
            ),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{target}: cut before the backend was silent for backend_response_ms"
        );
        let mut c = Wire::connect(lbd.listen).await;
        let r = c.exchange("after the stall", "GET", &get_req("/ok")).await;
        assert_eq!(r.text(), echo_text("GET", "/ok", 0), "after {target}");
    }
    let log = lbd.log_with("sent nothing for").await;
    assert!(
        log.contains("sent nothing for"),
        "the cut is logged as the backend's failure: {log}"
    );
}

pub(crate) async fn heads_and_chunks_split_into_single_bytes_are_reassembled(global: &str) {
    let body = b"split across many segments\n";
    let web = RawBackend::start(move |req, _| match req.target.as_str() {
        "/trickle-length" => Reply::Trickle(ok(body, "X-Trickled: 1\r\n")),
        "/trickle-chunked" => {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend(chunked_encoding(body));
            Reply::Trickle(r)
        }
        _ => Reply::KeepAlive(echo(req)),
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    c.s.set_nodelay(true).expect("nodelay");
    for target in ["/trickle-length", "/trickle-chunked", "/client-trickle"] {
        let mut req =
            format!("GET {target} HTTP/1.1\r\nHost: test.local\r\nX-Pad: 1\r\n\r\n").into_bytes();
        if target == "/client-trickle" {
            req = post_req(target, b"0123456789");
        }
        for b in &req {
            c.send(&[*b]).await;
        }
        let method = if target == "/client-trickle" {
            "POST"
        } else {
            "GET"
        };
        let r = c.response(target, method).await;
        assert_eq!(r.status, 200, "{target}");
        if target == "/client-trickle" {
            assert_eq!(r.text(), echo_text("POST", target, 10));
        } else {
            assert_eq!(r.body, body, "{target}");
        }
    }
    let r = c.exchange("after trickles", "GET", &get_req("/next")).await;
    assert_eq!(r.text(), echo_text("GET", "/next", 0));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_eq!(web.seen()[2].req.body, b"0123456789");
    assert_stayed_on_the_fast_path(global, &lbd).await;
}

pub(crate) async fn backend_response_with_both_lengths_is_not_relayed_ambiguous(global: &str) {
    // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); a proxy that passed both on
    // would let the next hop pick the other one.
    let web = RawBackend::start(|req, _| {
        if req.target == "/both" {
            Reply::Close(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
d\r\nhello, world!\r\n0\r\n\r\n"
                    .to_vec(),
            )
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("CL+TE response", "GET", &get_req("/both")).await;
    match r.status {
        502 => {}
        200 => {
            assert_eq!(r.text(), "hello, world!", "{r:?}");
            assert!(
                r.header("content-length").is_none() || r.header("transfer-encoding").is_none(),
                "both framings relayed: {:?}",
                r.headers
            );
        }
        other => panic!("status {other}: {r:?}"),
    }
    if r.closes() {
        c = Wire::connect(lbd.listen).await;
    }
    let r = c.exchange("after CL+TE", "GET", &get_req("/next")).await;
    assert_eq!(r.text(), echo_text("GET", "/next", 0));
    assert!(c.buf.is_empty(), "stray bytes: {:?}", lossy(&c.buf));
    assert_stayed_on_the_fast_path(global, &lbd).await;
}
