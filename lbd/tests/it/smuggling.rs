//! Request smuggling and slow clients, end to end over raw TCP.
//!
//! hyper rejects most ambiguous framing itself; Content-Length together with
//! Transfer-Encoding and identical duplicate Content-Length lines are caught by lbd's framing
//! tracker (`l7::framing`) and answered by the proxy.

use crate::common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

async fn start() -> (TestBackend, Lbd) {
    let web = TestBackend::start("web").await;
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[timeouts]\nrequest_header_ms = 500\n{}",
        pool("web", &[&web], "")
    );
    let lbd = Lbd::start(&body).await;
    (web, lbd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_rejected_with_400() {
    let (web, lbd) = start().await;
    let cases: &[(&str, &str)] = &[
        (
            "differing duplicate Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
        ),
        (
            "negative Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        ),
        (
            "signed Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        ),
        (
            "garbage Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4x\r\n\r\nabcd",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "unknown Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding on HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "whitespace before the colon",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obsolete line folding",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "Content-Length then Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding then Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        (
            "Transfer-Encoding then an invalid Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n0\r\n\r\n",
        ),
        (
            "identical duplicate Content-Length",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "Content-Length list",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\nabcd",
        ),
    ];
    for (what, bytes) in cases {
        let (text, closed) = raw(lbd.listen, bytes.as_bytes(), Duration::from_secs(5)).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{what}: got {text:?}");
        assert!(
            closed,
            "{what}: connection must be closed after a framing error"
        );
    }
    assert_eq!(web.hits(), 0, "nothing reached the backend");
    // Whether hyper's parser or lbd answered, each is counted as the client's fault (a
    // refusal by hyper's parser when its connection has ended, which may be just after the
    // client saw the close).
    let series = "lbd_proxy_errors_total{kind=\"bad_request\",side=\"client\"}";
    let want = Some(cases.len() as f64);
    eventually("every refusal counted", Duration::from_secs(5), || async {
        metric(lbd.admin, series).await == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let (web, lbd) = start().await;
    // A front end honouring Content-Length would see one request whose body hides
    // "GET /smuggled"; a back end honouring chunked would see two. lbd answers 400 before
    // routing (RFC 9112 §6.3), closes the connection, and forwards neither.
    for order in [
        "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 44\r\n",
    ] {
        let req = format!(
            "POST /front HTTP/1.1\r\nHost: x\r\n{order}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let (text, closed) = raw(lbd.listen, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{order:?}: {text}");
        assert!(closed, "connection must close after CL+TE: {text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "exactly one response: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
    assert_eq!(web.hits(), 0, "the backend never sees a CL+TE request");
    let log = lbd
        .log_when(|l| {
            l.contains("request rejected")
                && l.contains("client side")
                && l.contains("both Content-Length and Transfer-Encoding")
        })
        .await;
    assert!(
        log.contains("request rejected")
            && log.contains("client side")
            && log.contains("both Content-Length and Transfer-Encoding"),
        "log line naming the client side:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_keep_their_own_verdicts() {
    let (web, lbd) = start().await;
    // Clean requests with every body framing, pipelined in one write, then a CL+TE one: the
    // tracker must stay in step with hyper so only the last is refused.
    let stream = concat!(
        "POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        "POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
        "GET /get HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "GET /after HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let (text, closed) = raw(lbd.listen, stream.as_bytes(), Duration::from_secs(5)).await;
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "200", "400"], "{text}");
    assert!(closed, "closed after the 400: {text}");
    assert!(
        text.contains("body-bytes: 26"),
        "CL body forwarded whole: {text}"
    );
    assert!(
        text.contains("body-bytes: 5"),
        "chunked body forwarded: {text}"
    );
    let paths = web.paths.lock().expect("paths").clone();
    assert_eq!(paths, ["/cl", "/chunked", "/get"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_closed_at_the_header_timeout() {
    let (web, lbd) = start().await;
    let mut s = TcpStream::connect(lbd.listen).await.expect("connect");
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // Trickle one header byte every 100 ms: never completes the head.
    let closed_at = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.write_all(b"X").await.is_err() {
            break started.elapsed();
        }
        let (_, closed) = read_until_close(&mut s, Duration::from_millis(1)).await;
        if closed {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5) * patience(),
            "slow client still connected after 5 s"
        );
    };
    assert!(
        closed_at >= Duration::from_millis(400),
        "closed too early: {closed_at:?}"
    );
    // A client that connects and sends nothing is closed too.
    let mut idle = TcpStream::connect(lbd.listen).await.expect("connect");
    let (_, closed) = read_until_close(&mut idle, Duration::from_secs(3)).await;
    assert!(
        closed,
        "silent connection must be closed at the header timeout"
    );
    assert_eq!(web.hits(), 0);
}
