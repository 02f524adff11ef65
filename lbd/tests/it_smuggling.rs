//! Request smuggling and slow clients, end to end over raw TCP.

mod common;

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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle_a_second_request() {
    let (web, lbd) = start().await;
    // A front end honouring Content-Length would see one request whose body hides
    // "GET /smuggled"; a back end honouring chunked would see two. lbd reads the body as
    // chunked (RFC 9112 §6.1), never forwards both headers, and closes the connection after
    // the response, so the trailing bytes are never parsed as a request.
    for order in [
        "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 44\r\n",
    ] {
        let req = format!(
            "POST /front HTTP/1.1\r\nHost: x\r\n{order}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let (text, closed) = raw(lbd.listen, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(closed, "connection must close after CL+TE: {text}");
        assert_eq!(
            text.matches("HTTP/1.1 ").count(),
            1,
            "exactly one response: {text}"
        );
        assert!(
            text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.1 400"),
            "{text}"
        );
        assert!(!text.contains("content-length: 44"), "{text}");
    }
    let paths = web.paths.lock().expect("paths").clone();
    assert!(
        !paths.iter().any(|p| p == "/smuggled"),
        "smuggled request reached the backend: {paths:?}"
    );
    for p in &paths {
        assert_eq!(p, "/front");
    }
    // The backend saw a chunked (or empty) body, never the conflicting Content-Length.
    assert!(web.hits() <= 2);
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
