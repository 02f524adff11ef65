//! Upstream connection hygiene: bytes a backend sends that no request asked for must never
//! reach any client. A backend that writes an extra response after the real one (in the same
//! segment, in the next one, or later while the connection sits idle in lbd's pool), a body
//! longer than its Content-Length, a body on a response that can't have one, or garbage after
//! an interim 1xx: the connection is discarded and counted, and every request — the next one
//! on the same client connection and one on a new client connection — gets its own answer,
//! recognised by a nonce in its target.

use std::sync::atomic::AtomicU64;

use super::*;

/// Rounds per scenario: each one a request on a kept client connection and one on a new one.
const ROUNDS: usize = 6;

/// The discard counter of `web` for `reason`, 0 when the series is absent.
async fn discarded(lbd: &Lbd, web: &RawBackend, reason: &str) -> f64 {
    let series = format!(
        "lbd_upstream_conn_discarded_total{{pool=\"web\",backend=\"{}\",reason=\"{reason}\"}}",
        web.addr
    );
    metric(lbd.admin, &series).await.unwrap_or(0.0)
}

/// The unasked-for response a misbehaving backend appends: it names the request it followed,
/// so a client that gets it shows which request's bytes leaked.
fn stray_response(target: &str) -> Vec<u8> {
    ok(format!("STRAY after {target}\n").as_bytes(), "")
}

/// A request whose target carries `nonce`, and the answer that names it.
fn nonce_target(who: &str, i: usize) -> String {
    format!("/nonce/{who}-{i}-{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// One request on `c`, answered with the echo of its own target, else panic naming `what`.
async fn own_answer(c: &mut Wire, method: &str, target: &str, what: &str) {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\n\r\n");
    let r = c.exchange(what, method, req.as_bytes()).await;
    let body = lossy(&r.body);
    assert!(
        !body.contains("STRAY"),
        "{what}: got another request's bytes: {body:?}"
    );
    assert_eq!(r.status, 200, "{what}: {r:?}");
    if method != "HEAD" {
        assert_eq!(body, echo_text(method, target, 0), "{what}");
    }
}

/// Drive `ROUNDS` rounds against a backend that misbehaves after every `/nonce/` answer;
/// `written` counts the stray writes done, and each round waits for its stray write to be out
/// before the next request, so the stray bytes are in lbd's socket by then (the test is about
/// what lbd does with them, not about a race against the backend's scheduler).
async fn rounds_with_stray_bytes(lbd: &Lbd, written: &AtomicU64, method: &str, what: &str) {
    let mut kept = Wire::connect(lbd.listen).await;
    for i in 0..ROUNDS {
        let target = nonce_target("kept", i);
        own_answer(&mut kept, method, &target, &format!("{what}: kept #{i}")).await;
        let want = i as u64 + 1;
        eventually("the stray bytes are written", WAIT, || async {
            written.load(std::sync::atomic::Ordering::SeqCst) >= want
        })
        .await;
        // A request on a new client connection: the pooled upstream connection it may be
        // offered is the one the stray bytes sit on.
        let mut fresh = Wire::connect(lbd.listen).await;
        let target = nonce_target("fresh", i);
        own_answer(&mut fresh, "GET", &target, &format!("{what}: fresh #{i}")).await;
    }
    let last = nonce_target("kept-last", ROUNDS);
    own_answer(&mut kept, "GET", &last, &format!("{what}: kept, last")).await;
    assert!(
        kept.buf.is_empty(),
        "{what}: stray bytes: {:?}",
        lossy(&kept.buf)
    );
    // (The backend may see resets: lbd closes a connection with its stray bytes unread.)
}

/// A backend that appends a stray response after each answer to a `/nonce/` request, with
/// `gap` (see [`Reply::WithExtra`]); other requests (none here) get a plain echo.
async fn stray_backend(gap: Option<Duration>, written: Arc<AtomicU64>) -> RawBackend {
    RawBackend::start(move |req, _| {
        let reply = echo(req);
        if req.method == "GET" && req.target.starts_with("/nonce/kept") {
            Reply::WithExtra {
                reply,
                gap,
                extra: stray_response(&req.target),
                written: Arc::clone(&written),
            }
        } else {
            Reply::KeepAlive(reply)
        }
    })
    .await
}

async fn stray_response_is_never_relayed(global: &str, gap: Option<Duration>, reason: &str) {
    let written = Arc::new(AtomicU64::new(0));
    let web = stray_backend(gap, Arc::clone(&written)).await;
    let lbd = start_with(global, &web).await;
    rounds_with_stray_bytes(&lbd, &written, "GET", "stray response").await;
    // Every misbehaving connection was thrown away, and said so.
    let n = discarded(&lbd, &web, reason).await;
    assert!(
        n >= ROUNDS as f64,
        "lbd_upstream_conn_discarded_total{{reason=\"{reason}\"}} = {n}, want >= {ROUNDS}\n{}",
        metrics(lbd.admin).await
    );
}

pub(crate) async fn a_stray_response_in_the_same_segment_is_never_relayed(global: &str) {
    stray_response_is_never_relayed(global, None, "unexpected_bytes").await;
}

pub(crate) async fn a_stray_response_in_the_next_segment_is_never_relayed(global: &str) {
    stray_response_is_never_relayed(global, Some(Duration::ZERO), "unexpected_bytes").await;
}

pub(crate) async fn a_stray_response_100ms_later_on_an_idle_connection_is_never_relayed(
    global: &str,
) {
    stray_response_is_never_relayed(global, Some(Duration::from_millis(100)), "unexpected_bytes")
        .await;
}

pub(crate) async fn an_idle_pooled_connection_that_receives_bytes_is_closed_at_once(global: &str) {
    // Nothing asks for the connection after the stray bytes: lbd must notice them on its
    // own (it watches idle connections, as HAProxy does), close the connection and count it.
    let written = Arc::new(AtomicU64::new(0));
    let web = stray_backend(Some(Duration::from_millis(100)), Arc::clone(&written)).await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    own_answer(&mut c, "GET", &nonce_target("kept", 0), "first").await;
    // The stray bytes come 100 ms after the answer. lbd's periodic housekeeping runs once a
    // second; closing well before that shows the close came from watching the socket.
    eventually(
        "the backend sees lbd close the connection",
        Duration::from_millis(800),
        || async { web.ended() >= 1 },
    )
    .await;
    eventually("the discard is counted", WAIT, || async {
        discarded(&lbd, &web, "unexpected_bytes").await >= 1.0
    })
    .await;
    assert_eq!(written.load(std::sync::atomic::Ordering::SeqCst), 1);
    let idle = format!(
        "lbd_backend_idle_connections{{pool=\"web\",backend=\"{}\"}}",
        web.addr
    );
    eventually("the connection leaves the pool", WAIT, || async {
        metric(lbd.admin, &idle).await == Some(0.0)
    })
    .await;
    // The next request gets its own answer on a new upstream connection.
    own_answer(&mut c, "GET", &nonce_target("after", 0), "after the close").await;
    assert_eq!(web.accepted(), 2);
}

pub(crate) async fn a_body_longer_than_its_content_length_is_cut_and_the_connection_dropped(
    global: &str,
) {
    // The surplus is not a whole response: bytes that would be parsed as the head of the
    // next request's answer.
    let written = Arc::new(AtomicU64::new(0));
    let w = Arc::clone(&written);
    let web = RawBackend::start(move |req, _| {
        let body = echo_text(&req.method, &req.target, 0);
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        if !req.target.starts_with("/nonce/kept") {
            return Reply::KeepAlive(reply);
        }
        Reply::WithExtra {
            reply,
            gap: None,
            extra: b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nSTRAY STRAY\n".to_vec(),
            written: Arc::clone(&w),
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    rounds_with_stray_bytes(&lbd, &written, "GET", "overlong body").await;
    assert!(discarded(&lbd, &web, "unexpected_bytes").await >= ROUNDS as f64);
}

/// HEAD, 204 and 304 answers can't have a body: bytes after their head were never part of
/// them, and the connection must not be pooled.
pub(crate) async fn bytes_after_a_bodiless_response_are_not_relayed(global: &str) {
    for (method, status) in [
        ("HEAD", "200 OK"),
        ("GET", "204 No Content"),
        ("GET", "304 Not Modified"),
    ] {
        let web = RawBackend::start(move |req, _| {
            let stray = req.target.starts_with("/nonce/kept");
            let reply = if req.method == "GET" && !stray {
                echo(req)
            } else {
                // The head claims a body length (allowed for HEAD and 304), then a body
                // follows anyway, or a 204 carries one.
                let len = if status.starts_with("204") { 0 } else { 12 };
                let mut r =
                    format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n\r\n").into_bytes();
                if stray {
                    r.extend_from_slice(&stray_response(&req.target));
                }
                r
            };
            Reply::KeepAlive(reply)
        })
        .await;
        let lbd = start_with(global, &web).await;
        let what = format!("{method} answered {status}");
        let mut kept = Wire::connect(lbd.listen).await;
        for i in 0..ROUNDS {
            let target = nonce_target("kept", i);
            let req = format!("{method} {target} HTTP/1.1\r\nHost: test.local\r\n\r\n");
            let r = kept.exchange(&what, method, req.as_bytes()).await;
            assert_eq!(&r.status.to_string(), &status[..3], "{what} #{i}");
            assert!(r.body.is_empty(), "{what} #{i}: {:?}", lossy(&r.body));
            let mut fresh = Wire::connect(lbd.listen).await;
            own_answer(&mut fresh, "GET", &nonce_target("fresh", i), &what).await;
            own_answer(&mut kept, "GET", &nonce_target("after", i), &what).await;
        }
        assert!(
            kept.buf.is_empty(),
            "{what}: stray bytes: {:?}",
            lossy(&kept.buf)
        );
        assert!(
            discarded(&lbd, &web, "unexpected_bytes").await >= ROUNDS as f64,
            "{what}: {}",
            metrics(lbd.admin).await
        );
    }
}

pub(crate) async fn garbage_after_an_interim_response_is_a_502_and_never_relayed(global: &str) {
    let web = RawBackend::start(|req, _| {
        if req.target.starts_with("/nonce/kept") {
            let mut r = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n".to_vec();
            r.extend_from_slice(b"GARBAGE STRAY \x01\x02 not http\r\n\r\n");
            r.extend_from_slice(&stray_response(&req.target));
            Reply::KeepAlive(r)
        } else {
            Reply::KeepAlive(echo(req))
        }
    })
    .await;
    let lbd = start_with(global, &web).await;
    for i in 0..ROUNDS {
        let mut c = Wire::connect(lbd.listen).await;
        let target = nonce_target("kept", i);
        let r = c
            .exchange("1xx then garbage", "GET", &get_req(&target))
            .await;
        assert_eq!(r.status, 502, "#{i}: {r:?}");
        assert!(!lossy(&r.body).contains("STRAY"), "#{i}: {r:?}");
        let mut fresh = Wire::connect(lbd.listen).await;
        own_answer(
            &mut fresh,
            "GET",
            &nonce_target("fresh", i),
            "after garbage",
        )
        .await;
    }
}

/// h2c clients share the upstream HTTP/1 pool with everyone: each stream gets its own answer
/// while the backend appends stray responses.
pub(crate) async fn h2c_streams_never_get_stray_bytes(global: &str) {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let written = Arc::new(AtomicU64::new(0));
    let web = stray_backend(Some(Duration::ZERO), Arc::clone(&written)).await;
    let lbd = start_with(global, &web).await;
    let stream = tokio::net::TcpStream::connect(lbd.listen)
        .await
        .expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    for i in 0..ROUNDS {
        let target = nonce_target("kept", i);
        let req = http::Request::builder()
            .uri(format!("http://test.local{target}"))
            .body(Empty::<bytes::Bytes>::new())
            .expect("request");
        let resp = tx.send_request(req).await.expect("h2 response");
        assert_eq!(resp.status(), 200, "h2 #{i}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(lossy(&body), echo_text("GET", &target, 0), "h2 #{i}");
        let want = i as u64 + 1;
        eventually("the stray bytes are written", WAIT, || async {
            written.load(std::sync::atomic::Ordering::SeqCst) >= want
        })
        .await;
        let mut fresh = Wire::connect(lbd.listen).await;
        own_answer(&mut fresh, "GET", &nonce_target("fresh", i), "h1 after h2").await;
    }
    assert!(discarded(&lbd, &web, "unexpected_bytes").await >= ROUNDS as f64);
}
