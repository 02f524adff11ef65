//! HTTP/1 framing end to end, over raw TCP: the behaviours lbd's own HTTP/1 fast path
//! (`l7::fast`) must get right, and that hyper already gets right.
//!
//! Everything here is plain HTTP/1.1 semantics (pipelining, chunked and close-delimited
//! bodies, bodiless responses, upstream keep-alive, stale pooled connections, upgrades,
//! hop-by-hop headers, 1xx, truncated and split messages), so each scenario runs twice
//! ([`on_both_paths!`]): `NAME::fast_path` with `[global] http1_fast_path = true` and
//! `NAME::hyper_path` with `false`, and must pass on both.
//!
//! - [`Wire`]: a byte-exact HTTP/1 reader over one TCP stream (heads through httparse,
//!   bodies by Content-Length, chunked or close), for the test client and the raw backend
//!   alike. It decodes rather than trusts: a stray or missing byte shows up as a bad head
//!   on the next message.
//! - [`RawBackend`]: a loopback backend answering each request with exact bytes chosen by
//!   the test ([`Reply`]), recording every request it read and the connections it accepted.
//!   The hyper-based `TestBackend` can't send chunk extensions, close-delimited bodies or
//!   malformed heads, nor drop a keep-alive connection on purpose.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Deadline for one exchange (scaled by `LBD_TEST_PATIENCE`).
const WAIT: Duration = Duration::from_secs(10);

fn deadline() -> Instant {
    Instant::now() + WAIT * patience()
}

const MIB: usize = 1 << 20;

// ---- the wire ----

/// How a message's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body by rule (HEAD, 1xx, 204, 304, a request without length).
    Empty,
    Length,
    Chunked,
    /// Read until the peer closed.
    Close,
}

/// One HTTP/1 request or response as read off the wire.
#[derive(Debug, Clone)]
struct Message {
    /// Requests only.
    method: String,
    /// Requests only: the request target as sent.
    target: String,
    /// Responses only.
    status: u16,
    /// Names lowercased, in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    trailers: Vec<(String, String)>,
    framing: Framing,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated field `name` lists `token` (any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The sender will close the connection after this message.
    fn closes(&self) -> bool {
        self.has_token("connection", "close") || self.framing == Framing::Close
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn collect_headers(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    hs.iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                lossy(h.value).trim().to_string(),
            )
        })
        .collect()
}

/// Body framing from the headers: chunked if Transfer-Encoding ends in chunked, else
/// Content-Length, else `otherwise` (none for requests, close for responses).
fn framing_of(
    headers: &[(String, String)],
    otherwise: Framing,
) -> Result<(Framing, usize), String> {
    let te: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    if let Some(last) = te.last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok((Framing::Chunked, 0))
        } else {
            Err(format!("transfer-encoding not ending in chunked: {te:?}"))
        };
    }
    let lengths: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "content-length")
        .map(|(_, v)| v.as_str())
        .collect();
    match lengths.as_slice() {
        [] => Ok((otherwise, 0)),
        [one] => one
            .parse::<usize>()
            .map(|n| (Framing::Length, n))
            .map_err(|_| format!("bad content-length {one:?}")),
        more => Err(format!("several content-length fields: {more:?}")),
    }
}

/// One side of a TCP connection, read with exact HTTP/1 framing.
struct Wire {
    s: TcpStream,
    /// Read but not yet consumed: after a complete message, anything here is the start of
    /// the next one (or a framing bug).
    buf: Vec<u8>,
}

impl Wire {
    async fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).await.expect("connect to lbd");
        Wire { s, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write to lbd");
    }

    /// Read more bytes into `buf`; `Ok(0)` at end of stream.
    async fn fill(&mut self, until: Instant) -> Result<usize, String> {
        let mut tmp = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(until, self.s.read(&mut tmp)).await {
            Err(_) => Err(format!(
                "timed out; unconsumed bytes: {:?}",
                lossy(&self.buf)
            )),
            Ok(Err(e)) => Err(format!("read error: {e}")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
        }
    }

    /// One head through its blank line; `None` if the peer closed before sending a byte.
    async fn head(&mut self, until: Instant) -> Result<Option<Vec<u8>>, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..i + 4).collect()));
            }
            if self.fill(until).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!("closed inside a head: {:?}", lossy(&self.buf)))
                };
            }
        }
    }

    async fn take(&mut self, n: usize, until: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.fill(until).await? == 0 {
                return Err(format!(
                    "closed after {} of {n} expected bytes",
                    self.buf.len()
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One line without its CRLF.
    async fn line(&mut self, until: Instant) -> Result<String, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = lossy(&self.buf[..i]);
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill(until).await? == 0 {
                return Err(format!("closed inside a line: {:?}", lossy(&self.buf)));
            }
        }
    }

    /// A chunked body: the decoded bytes and the trailer fields.
    async fn chunked(
        &mut self,
        until: Instant,
    ) -> Result<(Vec<u8>, Vec<(String, String)>), String> {
        let mut body = Vec::new();
        loop {
            let line = self.line(until).await?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk-size line {line:?}"))?;
            if size == 0 {
                break;
            }
            body.extend(self.take(size, until).await?);
            let end = self.take(2, until).await?;
            if end != b"\r\n" {
                return Err(format!("chunk not followed by CRLF: {:?}", lossy(&end)));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.line(until).await?;
            if line.is_empty() {
                return Ok((body, trailers));
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("bad trailer line {line:?}"))?;
            trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    async fn until_close(&mut self, until: Instant) -> Result<Vec<u8>, String> {
        while self.fill(until).await? != 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    async fn body(&mut self, m: &mut Message, n: usize, until: Instant) -> Result<(), String> {
        match m.framing {
            Framing::Empty => {}
            Framing::Length => m.body = self.take(n, until).await?,
            Framing::Chunked => (m.body, m.trailers) = self.chunked(until).await?,
            Framing::Close => m.body = self.until_close(until).await?,
        }
        Ok(())
    }

    /// A request (backend side); `None`: the peer closed cleanly between requests. Sends
    /// `100 Continue` first when the request expects it, like any origin server.
    async fn read_request(&mut self, until: Instant) -> Result<Option<Message>, String> {
        let Some(head) = self.head(until).await? else {
            return Ok(None);
        };
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut hs);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            other => return Err(format!("bad request head ({other:?}): {:?}", lossy(&head))),
        }
        let headers = collect_headers(req.headers);
        let (framing, n) = framing_of(&headers, Framing::Empty)?;
        let mut m = Message {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            status: 0,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            framing,
        };
        if m.has_token("expect", "100-continue") && framing != Framing::Empty {
            self.s
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|e| e.to_string())?;
        }
        self.body(&mut m, n, until).await?;
        Ok(Some(m))
    }

    /// A response to a `method` request (client side); a 1xx interim response is returned
    /// as it is, the caller reads on for the final one.
    async fn read_response(&mut self, method: &str, until: Instant) -> Result<Message, String> {
        let head = self
            .head(until)
            .await?
            .ok_or("connection closed before a response")?;
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut hs);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            other => return Err(format!("bad response head ({other:?}): {:?}", lossy(&head))),
        }
        let status = resp.code.unwrap_or(0);
        let headers = collect_headers(resp.headers);
        let (framing, n) =
            if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
                (Framing::Empty, 0)
            } else {
                framing_of(&headers, Framing::Close)?
            };
        let mut m = Message {
            method: String::new(),
            target: String::new(),
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
            framing,
        };
        self.body(&mut m, n, until).await?;
        Ok(m)
    }

    /// Send `req` and read the final response (skipping interim ones); panics on any
    /// framing error, naming `what`.
    async fn exchange(&mut self, what: &str, method: &str, req: &[u8]) -> Message {
        self.send(req).await;
        self.response(what, method).await
    }

    async fn response(&mut self, what: &str, method: &str) -> Message {
        let until = deadline();
        loop {
            match self.read_response(method, until).await {
                Ok(m) if (100..200).contains(&m.status) => continue,
                Ok(m) => return m,
                Err(e) => panic!("{what}: {e}"),
            }
        }
    }

    /// After a complete response: the peer closes within the deadline, sending nothing more.
    async fn expect_closed(&mut self, what: &str) {
        let rest = self.until_close(deadline()).await;
        match rest {
            Ok(rest) => assert!(
                rest.is_empty(),
                "{what}: bytes after the end: {:?}",
                lossy(&rest)
            ),
            // A reset after the last byte also ends the connection.
            Err(e) => assert!(e.starts_with("read error"), "{what}: not closed: {e}"),
        }
    }
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").into_bytes()
}

fn post_req(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A 200 with a Content-Length body and `extra` header lines (each ending in CRLF).
fn ok(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The answer that names the request: `METHOD TARGET len=N`.
fn echo(req: &Message) -> Vec<u8> {
    ok(
        format!("{} {} len={}\n", req.method, req.target, req.body.len()).as_bytes(),
        "",
    )
}

fn echo_text(method: &str, target: &str, len: usize) -> String {
    format!("{method} {target} len={len}\n")
}

/// `n` deterministic pseudo-random bytes (xorshift), so a dropped, duplicated or reordered
/// block changes the hash.
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `body` chunked in pieces of varying sizes, with a chunk extension on the first chunk.
fn chunked_encoding(body: &[u8]) -> Vec<u8> {
    let sizes = [1usize, 100, 4096, 16384, 65536, 7777, 3];
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        let ext = if i == 0 { ";ext=\"first\"" } else { "" };
        out.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---- the raw backend ----

/// What [`RawBackend`] does with one request.
enum Reply {
    /// Write these bytes and wait for the next request on the connection.
    KeepAlive(Vec<u8>),
    /// Write these bytes (in a few pieces, so the proxy sees a stream), then close.
    Close(Vec<u8>),
    /// Write these bytes one at a time (each its own segment), then keep the connection.
    Trickle(Vec<u8>),
    /// Close without answering: the request dies in flight.
    Drop,
    /// Write these bytes, then echo every byte the peer sends (an upgraded tunnel).
    Echo(Vec<u8>),
    /// Wait, then do the inner reply.
    After(Duration, Box<Reply>),
}

type Handler = Arc<dyn Fn(&Message, u64) -> Reply + Send + Sync>;

/// One request as the backend read it.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection (1-based) carried it.
    conn: u64,
    req: Message,
}

#[derive(Clone)]
struct RawBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Request-level errors the backend hit (bad heads from lbd and the like).
    errors: Arc<Mutex<Vec<String>>>,
}

impl RawBackend {
    /// `handler(request, requests already served on this connection)`.
    async fn start(handler: impl Fn(&Message, u64) -> Reply + Send + Sync + 'static) -> RawBackend {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw backend");
        let b = RawBackend {
            addr: listener.local_addr().expect("addr"),
            accepted: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            errors: Arc::new(Mutex::new(Vec::new())),
        };
        let me = b.clone();
        // The task ends with the runtime at the end of the test.
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                // Every write its own segment: lbd sees the pieces the test chose.
                let _ = s.set_nodelay(true);
                let conn = me.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let me = me.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.serve(conn, s, handler).await {
                        if let Ok(mut errors) = me.errors.lock() {
                            errors.push(e);
                        }
                    }
                });
            }
        });
        b
    }

    async fn serve(&self, conn: u64, s: TcpStream, handler: Handler) -> Result<(), String> {
        let mut w = Wire { s, buf: Vec::new() };
        for served in 0u64.. {
            // Idle keep-alive connections may sit in lbd's pool for the whole test.
            let until = Instant::now() + Duration::from_secs(300);
            let Some(req) = w.read_request(until).await? else {
                return Ok(());
            };
            let reply = handler(&req, served);
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(Seen { conn, req });
            }
            if !act(&mut w, reply).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.req.target).collect()
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }
}

/// Carry out one reply on the backend side; `Ok(false)` once the connection is done.
async fn act(w: &mut Wire, mut reply: Reply) -> Result<bool, String> {
    let io = |e: std::io::Error| e.to_string();
    loop {
        match reply {
            Reply::After(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::KeepAlive(bytes) => {
                w.s.write_all(&bytes).await.map_err(io)?;
                return Ok(true);
            }
            Reply::Close(bytes) => {
                for piece in bytes.chunks(bytes.len().div_ceil(4).max(1)) {
                    w.s.write_all(piece).await.map_err(io)?;
                    w.s.flush().await.map_err(io)?;
                }
                return Ok(false);
            }
            Reply::Trickle(bytes) => {
                for b in bytes {
                    w.s.write_all(&[b]).await.map_err(io)?;
                    w.s.flush().await.map_err(io)?;
                }
                return Ok(true);
            }
            Reply::Drop => return Ok(false),
            Reply::Echo(bytes) => {
                w.s.write_all(&bytes).await.map_err(io)?;
                // Tunnel bytes that arrived with the request head.
                let early = std::mem::take(&mut w.buf);
                w.s.write_all(&early).await.map_err(io)?;
                let mut tmp = [0u8; 4096];
                loop {
                    let n = w.s.read(&mut tmp).await.map_err(io)?;
                    if n == 0 {
                        return Ok(false);
                    }
                    w.s.write_all(&tmp[..n]).await.map_err(io)?;
                }
            }
        }
    }
}

// ---- lbd config ----

/// A pool of raw backends with passive ejection off: tests that provoke errors on purpose
/// must not have the backend ejected under them.
fn raw_pool(name: &str, addrs: &[SocketAddr]) -> String {
    let mut s = format!("[[pool]]\nname = \"{name}\"\n[pool.passive]\nconsecutive_failures = 0\n");
    for a in addrs {
        s.push_str(&format!("[[pool.backend]]\naddress = \"{a}\"\n"));
    }
    s
}

/// `default_pool = "web"`, `[global]` with `global` lines, then `rest` (pools, routes).
fn config(global: &str, rest: &str) -> String {
    format!("default_pool = \"web\"\n[global]\n#GLOBAL\n{global}\n{rest}")
}

const FAST_PATH_ON: &str = "http1_fast_path = true";
const FAST_PATH_OFF: &str = "http1_fast_path = false";

/// Each scenario `fn NAME(global)` becomes two tests: `NAME::fast_path` and
/// `NAME::hyper_path`. A failure on one path only points at that path.
macro_rules! on_both_paths {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fast_path() {
                super::$scenario(super::FAST_PATH_ON).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hyper_path() {
                super::$scenario(super::FAST_PATH_OFF).await;
            }
        }
    )*};
}

async fn start_with(global: &str, web: &RawBackend) -> Lbd {
    Lbd::start(&config(global, &raw_pool("web", &[web.addr]))).await
}

/// The debug line `l7::fast::conn` writes when it hands a connection to hyper.
const HANDOFF_LOG: &str = "handing the connection to hyper";

/// For scenarios of plain requests only: on the fast path, requests were served by it and no
/// connection was handed to hyper (by the log line and by the metrics), so the `fast_path`
/// variant really tested the fast path and not hyper twice; on the hyper path, none was.
async fn assert_stayed_on_the_fast_path(global: &str, lbd: &Lbd) {
    let served = metric(lbd.admin, "lbd_http1_fast_path_requests_total")
        .await
        .unwrap_or(0.0);
    let handoffs = metric(lbd.admin, "lbd_http1_fast_path_handoffs_total")
        .await
        .unwrap_or(0.0);
    if global == FAST_PATH_ON {
        let log = lbd.log_text();
        let handed: Vec<&str> = log.lines().filter(|l| l.contains(HANDOFF_LOG)).collect();
        assert!(
            handed.is_empty(),
            "plain requests handed to hyper: {handed:#?}"
        );
        assert_eq!(handoffs, 0.0, "lbd_http1_fast_path_handoffs_total");
        assert!(served > 0.0, "no request was served by the fast path");
    } else {
        assert_eq!(
            served, 0.0,
            "the fast path served requests while switched off"
        );
    }
}

fn backend_series(name: &str, b: &RawBackend) -> String {
    format!("{name}{{pool=\"web\",backend=\"{}\"}}", b.addr)
}

// ---- 1. pipelining ----

async fn pipelined_requests_in_one_write_are_answered_in_order(global: &str) {
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

// ---- 2. chunked responses ----

/// Three chunks (one with an extension) and a trailer: decodes to `hello, world!`.
const CHUNKED_RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
5;name=\"val\"\r\nhello\r\n1\r\n,\r\n7\r\n world!\r\n0\r\nX-Checksum: abc\r\n\r\n";

async fn chunked_response_with_extension_and_trailer_is_relayed(global: &str) {
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

async fn close_delimited_response_arrives_whole_and_is_ended(global: &str) {
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

async fn head_204_and_304_answers_have_no_body_and_keep_the_connection(global: &str) {
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

async fn one_mib_length_and_chunked_responses_arrive_intact(global: &str) {
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

// ---- 6. request bodies ----

async fn content_length_request_bodies_reach_the_backend_exactly(global: &str) {
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
    let r = c
        .exchange("POST 1 MiB", "POST", &post_req("/big", &big))
        .await;
    assert_eq!((r.status, r.text()), (200, echo_text("POST", "/big", MIB)));
    let r = c.exchange("GET after", "GET", &get_req("/after")).await;
    assert_eq!(r.text(), echo_text("GET", "/after", 0));
    let seen = web.seen();
    assert_eq!(seen.len(), 3, "{:?}", web.targets());
    assert_eq!(sha(&seen[0].req.body), sha(&small));
    assert_eq!(seen[0].req.body.len(), 1000);
    assert_eq!(sha(&seen[1].req.body), sha(&big));
    assert!(seen[2].req.body.is_empty());
    assert!(web.errors().is_empty(), "{:?}", web.errors());
}

async fn chunked_request_body_after_a_get_reaches_the_backend_decoded(global: &str) {
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

async fn expect_100_continue_gets_an_interim_answer_then_the_body_goes_through(global: &str) {
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

async fn sequential_requests_share_one_backend_connection(global: &str) {
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

async fn backend_connection_close_is_honoured_and_not_reused(global: &str) {
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

async fn backend_closing_after_each_response_without_saying_so_is_survived(global: &str) {
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

async fn pooled_connection_closed_under_a_get_is_retried_on_a_fresh_one(global: &str) {
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

// ---- 9. malformed response heads ----

async fn malformed_backend_response_gets_502_and_the_connection_recovers(global: &str) {
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

// ---- 10. upgrades ----

async fn websocket_upgrade_after_a_plain_get_tunnels_both_ways(global: &str) {
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

// ---- 11. hop-by-hop response headers ----

async fn hop_by_hop_response_headers_do_not_reach_the_client(global: &str) {
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

async fn interim_1xx_before_the_final_response_is_handled(global: &str) {
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

async fn truncated_backend_body_is_not_passed_off_as_complete(global: &str) {
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

async fn heads_and_chunks_split_into_single_bytes_are_reassembled(global: &str) {
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

async fn backend_response_with_both_lengths_is_not_relayed_ambiguous(global: &str) {
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

// ---- every scenario on both paths ----

// ---- lbd's own answers ----

/// A 404 from lbd itself: a HEAD gets the head only (the next response on the connection
/// must parse), and `Connection: close` from the client is honoured.
async fn local_answers_respect_head_and_connection_close(global: &str) {
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

on_both_paths!(
    local_answers_respect_head_and_connection_close,
    pipelined_requests_in_one_write_are_answered_in_order,
    chunked_response_with_extension_and_trailer_is_relayed,
    close_delimited_response_arrives_whole_and_is_ended,
    head_204_and_304_answers_have_no_body_and_keep_the_connection,
    one_mib_length_and_chunked_responses_arrive_intact,
    content_length_request_bodies_reach_the_backend_exactly,
    chunked_request_body_after_a_get_reaches_the_backend_decoded,
    expect_100_continue_gets_an_interim_answer_then_the_body_goes_through,
    sequential_requests_share_one_backend_connection,
    backend_connection_close_is_honoured_and_not_reused,
    backend_closing_after_each_response_without_saying_so_is_survived,
    pooled_connection_closed_under_a_get_is_retried_on_a_fresh_one,
    malformed_backend_response_gets_502_and_the_connection_recovers,
    websocket_upgrade_after_a_plain_get_tunnels_both_ways,
    hop_by_hop_response_headers_do_not_reach_the_client,
    interim_1xx_before_the_final_response_is_handled,
    truncated_backend_body_is_not_passed_off_as_complete,
    heads_and_chunks_split_into_single_bytes_are_reassembled,
    backend_response_with_both_lengths_is_not_relayed_ambiguous,
);
