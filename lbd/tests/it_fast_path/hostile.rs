//! Hostile framing from either side: malformed chunked request bodies, transfer
//! codings lbd does not implement, backend response heads with bare CR, bare LF, obsolete
//! line folding or NUL, and upgrades to protocols a route does not allow.
//!
//! Each case checks the exact status the client gets, that the right side is blamed in
//! `lbd_proxy_errors_total`, and that the backend's failure counters (and passive health)
//! are untouched by a client's fault.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use super::*;

/// `lbd_proxy_errors_total` for one kind (0 when absent).
async fn errors(lbd: &Lbd, kind: &str, side: &str) -> f64 {
    let series = format!("lbd_proxy_errors_total{{kind=\"{kind}\",side=\"{side}\"}}");
    metric(lbd.admin, &series).await.unwrap_or(0.0)
}

/// Every backend-side error kind summed, plus the backend's failure counter and ejection.
async fn backend_blame(lbd: &Lbd, b: SocketAddr) -> f64 {
    let text = metrics(lbd.admin).await;
    let mut sum = 0.0;
    for l in text.lines() {
        let counts = (l.starts_with("lbd_proxy_errors_total") && l.contains("side=\"backend\""))
            || (l.starts_with("lbd_backend_failures_total") && l.contains(&b.to_string()))
            || (l.starts_with("lbd_backend_ejected") && l.contains(&b.to_string()));
        if counts {
            sum += l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        }
    }
    sum
}

/// A pool whose backend is ejected after ONE failure: a client fault wrongly reported to
/// passive health shows up as `lbd_backend_ejected 1`.
fn touchy_pool(name: &str, addr: SocketAddr) -> String {
    format!(
        "[[pool]]\nname = \"{name}\"\n[pool.passive]\nconsecutive_failures = 1\n\
         [[pool.backend]]\naddress = \"{addr}\"\n"
    )
}

const CHUNKED_HEAD: &str =
    "POST /up HTTP/1.1\r\nHost: test.local\r\nTransfer-Encoding: chunked\r\n\r\n";

/// Malformed chunk lines (a `0x` prefix, a sign, over 64 bits, stray whitespace, bare LF, a
/// non-hex digit, an empty size line), after a good first chunk or as the first.
const BAD_CHUNK_LINES: [(&str, &str); 8] = [
    ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
    ("negative", "-1\r\nx\r\n0\r\n\r\n"),
    ("over 64 bits", "10000000000000000\r\nx\r\n0\r\n\r\n"),
    ("whitespace before the size", " 5\r\nhello\r\n0\r\n\r\n"),
    ("bare LF after the size", "5\nhello\r\n0\r\n\r\n"),
    ("bare LF after the data", "5\r\nhello\n0\r\n\r\n"),
    ("non-hex digit", "5g\r\nhello\r\n0\r\n\r\n"),
    ("empty size line", "\r\n"),
];

/// A bad chunk line that arrives with the head: 400 (client side) before anything reaches
/// the backend, and the connection closes.
pub(crate) async fn malformed_chunk_lines_with_the_head_get_400(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = Lbd::start(&config(global, &touchy_pool("web", web.addr))).await;
    for (i, (what, body)) in BAD_CHUNK_LINES.iter().enumerate() {
        for good_first in [false, true] {
            let mut c = Wire::connect(lbd.listen).await;
            let first = if good_first { "3\r\nabc\r\n" } else { "" };
            c.send(format!("{CHUNKED_HEAD}{first}{body}").as_bytes())
                .await;
            let r = c.response(what, "POST").await;
            assert_eq!(
                r.status, 400,
                "{what} (good first chunk {good_first}): {r:?}"
            );
            assert!(r.closes(), "{what}: {r:?}");
            c.expect_closed(what).await;
            let n = (2 * i + usize::from(good_first) + 1) as f64;
            assert_eq!(errors(&lbd, "client_body", "client").await, n, "{what}");
        }
    }
    // Not even a connection: the verdict came before the backend was picked.
    assert_eq!(web.accepted(), 0, "the backend got {:?}", web.errors());
    assert_eq!(backend_blame(&lbd, web.addr).await, 0.0);
    // The backend is still in service.
    let mut c = Wire::connect(lbd.listen).await;
    let r = c.exchange("after", "GET", &get_req("/after")).await;
    assert_eq!((r.status, r.text()), (200, echo_text("GET", "/after", 0)));
}

/// What a hand-made backend saw of a request whose body went bad mid-way.
#[derive(Default)]
struct Partial {
    /// The head and the first chunk arrived.
    started: AtomicBool,
    /// lbd closed the connection (EOF or reset).
    aborted: AtomicBool,
    bytes: Mutex<Vec<u8>>,
}

/// A backend that reads one connection until it closes, never answering.
async fn silent_backend() -> (SocketAddr, Arc<Partial>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Partial::default());
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut tmp = [0u8; 4096];
        loop {
            match s.read(&mut tmp).await {
                Ok(n) if n > 0 => {
                    let mut b = s2.bytes.lock().expect("bytes");
                    b.extend_from_slice(&tmp[..n]);
                    if find(&b, b"hello").is_some() {
                        s2.started.store(true, Ordering::SeqCst);
                    }
                }
                _ => break,
            }
        }
        s2.aborted.store(true, Ordering::SeqCst);
    });
    (addr, seen)
}

/// A bad chunk line after the head and a first chunk were forwarded: the upstream request is
/// aborted (its connection closed, never reused) and the client still gets 400, blamed on
/// the client.
pub(crate) async fn malformed_chunk_line_after_the_head_went_upstream_gets_400(global: &str) {
    let (addr, seen) = silent_backend().await;
    let lbd = Lbd::start(&config(global, &touchy_pool("web", addr))).await;
    let mut c = Wire::connect(lbd.listen).await;
    c.send(format!("{CHUNKED_HEAD}5\r\nhello\r\n").as_bytes())
        .await;
    eventually("head and first chunk reach the backend", WAIT, || async {
        seen.started.load(Ordering::SeqCst)
    })
    .await;
    c.send(b"0x5\r\nworld\r\n0\r\n\r\n").await;
    let r = c.response("late bad chunk", "POST").await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.closes(), "{r:?}");
    c.expect_closed("late bad chunk").await;
    eventually("the upstream request is aborted", WAIT, || async {
        seen.aborted.load(Ordering::SeqCst)
    })
    .await;
    let got = lossy(&seen.bytes.lock().expect("bytes"));
    assert!(
        !got.contains("world"),
        "bytes after the bad line went upstream: {got:?}"
    );
    assert_eq!(errors(&lbd, "client_body", "client").await, 1.0);
    assert_eq!(backend_blame(&lbd, addr).await, 0.0);
}

/// `Transfer-Encoding` must be exactly `chunked` (RFC 9112 §6.1, §6.3): a coding lbd does not
/// implement before it is 501, `chunked` twice or not last is 400. Nothing reaches the
/// backend, so no coding is ever dropped on the way.
pub(crate) async fn transfer_codings_other_than_chunked_are_refused(global: &str) {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let lbd = start_with(global, &web).await;
    let cases: &[(&str, u16)] = &[
        ("Transfer-Encoding: gzip, chunked\r\n", 501),
        ("Transfer-Encoding: x-custom,chunked\r\n", 501),
        ("Transfer-Encoding: identity, chunked\r\n", 501),
        (
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            501,
        ),
        ("Transfer-Encoding: chunked, chunked\r\n", 400),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        ("Transfer-Encoding: chunked, identity\r\n", 400),
        ("Transfer-Encoding: identity\r\n", 400),
        ("Transfer-Encoding: gzip\r\n", 400),
        ("Transfer-Encoding: x-custom\r\n", 400),
    ];
    let (mut want_501, mut want_400) = (0.0, 0.0);
    for (te, status) in cases {
        let req =
            format!("POST /te HTTP/1.1\r\nHost: test.local\r\n{te}\r\n5\r\nhello\r\n0\r\n\r\n");
        let mut c = Wire::connect(lbd.listen).await;
        c.send(req.as_bytes()).await;
        let r = c.response(te, "POST").await;
        assert_eq!(r.status, *status, "{te:?}: {r:?}");
        c.expect_closed(te).await;
        if *status == 501 {
            want_501 += 1.0;
        } else {
            want_400 += 1.0;
        }
        // hyper's own refusals are counted when their connection has ended, which may be
        // just after the client saw the close.
        eventually(&format!("{te:?} counted"), WAIT, || async {
            errors(&lbd, "not_implemented", "client").await == want_501
                && errors(&lbd, "bad_request", "client").await == want_400
        })
        .await;
    }
    assert!(web.seen().is_empty(), "the backend got {:?}", web.targets());
    assert_eq!(web.accepted(), 0);
    assert_eq!(backend_blame(&lbd, web.addr).await, 0.0);
    // Plain chunked is fine, and arrives as plain chunked.
    let mut c = Wire::connect(lbd.listen).await;
    let req = format!("{CHUNKED_HEAD}5\r\nhello\r\n0\r\n\r\n");
    let r = c.exchange("plain chunked", "POST", req.as_bytes()).await;
    assert_eq!((r.status, r.text()), (200, echo_text("POST", "/up", 5)));
    let seen = web.seen();
    assert_eq!(seen.len(), 1);
    let te: Vec<&str> = seen[0]
        .req
        .headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(te.is_empty() || te == ["chunked"], "{te:?}");
}

/// A backend head with a bare CR, obsolete line folding or NUL in a field is refused with
/// 502 (backend side); the connection it came on is not reused.
pub(crate) async fn backend_fields_with_bare_cr_folding_or_nul_get_502(global: &str) {
    let web = RawBackend::start(|req, _| {
        let head: &[u8] = match req.target.as_str() {
            "/cr-in-value" => {
                b"HTTP/1.1 200 OK\r\nX-A: a\rInjected: 1\r\nContent-Length: 2\r\n\r\nok"
            }
            "/cr-line-end" => b"HTTP/1.1 200 OK\r\nX-A: a\r\rContent-Length: 2\r\n\r\nok",
            "/cr-in-reason" => b"HTTP/1.1 200 O\rK\r\nContent-Length: 2\r\n\r\nok",
            "/obs-fold" => {
                b"HTTP/1.1 200 OK\r\nX-A: a\r\n Injected: 1\r\nContent-Length: 2\r\n\r\nok"
            }
            "/obs-fold-tab" => {
                b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tInjected: 1\r\nContent-Length: 2\r\n\r\nok"
            }
            "/obs-fold-lf" => b"HTTP/1.1 200 OK\nX-A: a\n Injected: 1\nContent-Length: 2\n\nok",
            "/nul" => b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
            "/nul-name" => b"HTTP/1.1 200 OK\r\nX\0A: a\r\nContent-Length: 2\r\n\r\nok",
            _ => return Reply::KeepAlive(echo(req)),
        };
        Reply::KeepAlive(head.to_vec())
    })
    .await;
    let lbd = start_with(global, &web).await;
    let cases = [
        "/cr-in-value",
        "/cr-line-end",
        "/cr-in-reason",
        "/obs-fold",
        "/obs-fold-tab",
        "/obs-fold-lf",
        "/nul",
        "/nul-name",
    ];
    let mut c = Wire::connect(lbd.listen).await;
    for (i, target) in cases.iter().enumerate() {
        let r = c.exchange(target, "GET", &get_req(target)).await;
        assert_eq!(r.status, 502, "{target}: {r:?}");
        assert!(r.header("injected").is_none(), "{target}: {r:?}");
        let blamed = errors(&lbd, "backend_io", "backend").await;
        assert_eq!(blamed, (i + 1) as f64, "{target}");
        if r.closes() {
            c.expect_closed(target).await;
            c = Wire::connect(lbd.listen).await;
        }
    }
    // Each bad head's connection was dropped: the good answer comes on a fresh one.
    let before = web.accepted();
    let r = c.exchange("good", "GET", &get_req("/good")).await;
    assert_eq!((r.status, r.text()), (200, echo_text("GET", "/good", 0)));
    assert_eq!(
        web.accepted(),
        before + 1,
        "a bad head's connection was reused"
    );
}

/// Bare LF line endings in a backend head are read as line ends (RFC 9112 §2.2 allows it)
/// and the head goes to the client re-written with CRLF: no bare LF, no extra field, the
/// fields exactly as the backend meant them.
pub(crate) async fn backend_bare_lf_line_ends_reach_the_client_as_crlf(global: &str) {
    let web = RawBackend::start(|req, _| {
        let head: &[u8] = match req.target.as_str() {
            "/lf" => b"HTTP/1.1 200 OK\nX-A: a\nContent-Length: 2\n\nok",
            "/mixed" => b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\n\r\nok",
            _ => return Reply::KeepAlive(echo(req)),
        };
        Reply::KeepAlive(head.to_vec())
    })
    .await;
    let lbd = start_with(global, &web).await;
    let mut c = Wire::connect(lbd.listen).await;
    for (target, want) in [
        ("/lf", &[("x-a", "a")][..]),
        ("/mixed", &[("x-a", "a"), ("x-b", "b")][..]),
    ] {
        c.send(&get_req(target)).await;
        let head = c
            .head(deadline())
            .await
            .unwrap_or_else(|e| panic!("{target}: {e}"))
            .unwrap_or_else(|| panic!("{target}: closed"));
        // Every LF of the head is the end of a CRLF, and no CR stands alone.
        for (i, &b) in head.iter().enumerate() {
            match b {
                b'\n' => assert!(
                    i > 0 && head[i - 1] == b'\r',
                    "{target}: bare LF in {:?}",
                    lossy(&head)
                ),
                b'\r' => assert_eq!(
                    head.get(i + 1),
                    Some(&b'\n'),
                    "{target}: bare CR in {:?}",
                    lossy(&head)
                ),
                _ => {}
            }
        }
        let text = lossy(&head);
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n"),
            "{target}: {text:?}"
        );
        let fields: Vec<(String, String)> = text
            .trim_end()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        // Exactly the backend's fields, in order, plus the ones lbd adds.
        let lbds = ["via", "x-lbpair-node", "date"];
        let backend_fields: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .filter(|(n, _)| !lbds.contains(n))
            .collect();
        let mut expected = want.to_vec();
        expected.push(("content-length", "2"));
        assert_eq!(backend_fields, expected, "{target}: {text:?}");
        let body = c.take(2, deadline()).await.expect("body");
        assert_eq!(body, b"ok", "{target}");
    }
    assert_eq!(errors(&lbd, "backend_io", "backend").await, 0.0);
}

/// Only `websocket` and a route's `upgrades` are tunnelled. Any other offer (`h2c`, an
/// unlisted token) is stripped with the headers `Connection` names, the request is served
/// as a plain one on a connection that stays usable, and the strip is counted.
pub(crate) async fn upgrades_other_than_websocket_and_the_routes_are_stripped(global: &str) {
    let web = RawBackend::start(|req, _| match req.header("upgrade") {
        Some(p) => Reply::Echo(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {p}\r\n\r\n"
            )
            .into_bytes(),
        ),
        None => Reply::KeepAlive(echo(req)),
    })
    .await;
    let lbd = Lbd::start(&config(
        global,
        &format!(
            "{}[[route]]\nname = \"tunnel\"\npath_prefix = \"/tunnel\"\npool = \"web\"\n\
             upgrades = [\"X-Tunnel\"]\n",
            raw_pool("web", &[web.addr])
        ),
    ))
    .await;
    let upgrade_req = |path: &str, offer: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade{extra}\r\n\
             Upgrade: {offer}\r\n{}\r\n",
            if extra.is_empty() {
                String::new()
            } else {
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n".to_string()
            }
        )
        .into_bytes()
    };
    let stripped = [
        ("/plain", "h2c", ", HTTP2-Settings"),
        ("/tunnel/h2c", "h2c", ", HTTP2-Settings"),
        ("/plain", "x-tunnel", ""),
        ("/plain", "websocket2, irc/6.9", ""),
    ];
    let mut c = Wire::connect(lbd.listen).await;
    for (i, (path, offer, extra)) in stripped.iter().enumerate() {
        let r = c
            .exchange(offer, "GET", &upgrade_req(path, offer, extra))
            .await;
        assert_eq!(
            (r.status, r.text()),
            (200, echo_text("GET", path, 0)),
            "{offer}"
        );
        assert!(!r.closes(), "{offer}: the connection stays usable");
        let seen = web.seen();
        let req = &seen.last().expect("a request").req;
        for h in ["upgrade", "http2-settings"] {
            assert!(req.header(h).is_none(), "{offer}: backend saw {h}: {req:?}");
        }
        assert!(!req.has_token("connection", "upgrade"), "{offer}: {req:?}");
        let n = metric(lbd.admin, "lbd_upgrades_stripped_total").await;
        assert_eq!(n, Some((i + 1) as f64), "{offer}");
    }
    // Allowed: websocket anywhere, the route's own protocol on that route; a mixed offer
    // reaches the backend with only the allowed part.
    let tunnelled = [
        ("/tunnel/x", "x-tunnel", "x-tunnel"),
        ("/tunnel/y", "h2c, X-Tunnel/2", "X-Tunnel/2"),
        ("/plain", "h2c, websocket", "websocket"),
    ];
    for (path, offer, forwarded) in tunnelled {
        let mut c = Wire::connect(lbd.listen).await;
        c.send(&upgrade_req(path, offer, "")).await;
        let r = c
            .read_response("GET", deadline())
            .await
            .unwrap_or_else(|e| panic!("{offer}: {e}"));
        assert_eq!(r.status, 101, "{offer}: {r:?}");
        c.send(b"ping").await;
        let echoed = c.take(4, deadline()).await.expect("tunnel echo");
        assert_eq!(echoed, b"ping", "{offer}");
        let seen = web.seen();
        let req = &seen.last().expect("a request").req;
        assert_eq!(req.target, path);
        assert_eq!(req.header("upgrade"), Some(forwarded), "{offer}: {req:?}");
    }
    let n = metric(lbd.admin, "lbd_upgrades_stripped_total").await;
    assert_eq!(n, Some(stripped.len() as f64));
    assert_eq!(
        metric(lbd.admin, "lbd_upgrades_total").await,
        Some(tunnelled.len() as f64)
    );
}
