//! A byte-exact HTTP/1 reader and writer over one TCP stream, and request and body builders.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::common::patience;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Deadline for one exchange (scaled by `LBD_TEST_PATIENCE`).
pub(crate) fn deadline() -> Instant {
    Instant::now() + WAIT * patience()
}

pub(crate) const MIB: usize = 1 << 20;

// ---- the wire ----

/// How a message's body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body by rule (HEAD, 1xx, 204, 304, a request without length).
    Empty,
    Length,
    Chunked,
    /// Read until the peer closed.
    Close,
}

/// One HTTP/1 request or response as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Requests only.
    pub(crate) method: String,
    /// Requests only: the request target as sent.
    pub(crate) target: String,
    /// Responses only.
    pub(crate) status: u16,
    /// Names lowercased, in wire order.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Vec<(String, String)>,
    pub(crate) framing: Framing,
}

impl Message {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the comma-separated field `name` lists `token` (any case).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The sender will close the connection after this message.
    pub(crate) fn closes(&self) -> bool {
        self.has_token("connection", "close") || self.framing == Framing::Close
    }
}

pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn collect_headers(hs: &[httparse::Header<'_>]) -> Vec<(String, String)> {
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
pub(crate) fn framing_of(
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

/// One side of a connection (TCP, or TLS over it), read with exact HTTP/1 framing.
pub(crate) struct Wire<S = TcpStream> {
    pub(crate) s: S,
    /// Read but not yet consumed: after a complete message, anything here is the start of
    /// the next one (or a framing bug).
    pub(crate) buf: Vec<u8>,
}

impl Wire {
    pub(crate) async fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).await.expect("connect to lbd");
        Wire { s, buf: Vec::new() }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub(crate) async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write to lbd");
        // A TLS stream may hold the records back until flushed.
        self.s.flush().await.expect("flush to lbd");
    }

    /// Read more bytes into `buf`; `Ok(0)` at end of stream.
    pub(crate) async fn fill(&mut self, until: Instant) -> Result<usize, String> {
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
    pub(crate) async fn head(&mut self, until: Instant) -> Result<Option<Vec<u8>>, String> {
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

    pub(crate) async fn take(&mut self, n: usize, until: Instant) -> Result<Vec<u8>, String> {
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
    pub(crate) async fn line(&mut self, until: Instant) -> Result<String, String> {
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
    pub(crate) async fn chunked(
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

    pub(crate) async fn until_close(&mut self, until: Instant) -> Result<Vec<u8>, String> {
        while self.fill(until).await? != 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    pub(crate) async fn body(
        &mut self,
        m: &mut Message,
        n: usize,
        until: Instant,
    ) -> Result<(), String> {
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
    pub(crate) async fn read_request(&mut self, until: Instant) -> Result<Option<Message>, String> {
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
    pub(crate) async fn read_response(
        &mut self,
        method: &str,
        until: Instant,
    ) -> Result<Message, String> {
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
    pub(crate) async fn exchange(&mut self, what: &str, method: &str, req: &[u8]) -> Message {
        self.send(req).await;
        self.response(what, method).await
    }

    pub(crate) async fn response(&mut self, what: &str, method: &str) -> Message {
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
    pub(crate) async fn expect_closed(&mut self, what: &str) {
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

pub(crate) fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").into_bytes()
}

pub(crate) fn post_req(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// A 200 with a Content-Length body and `extra` header lines (each ending in CRLF).
pub(crate) fn ok(body: &[u8], extra: &str) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The answer that names the request: `METHOD TARGET len=N`.
pub(crate) fn echo(req: &Message) -> Vec<u8> {
    ok(
        format!("{} {} len={}\n", req.method, req.target, req.body.len()).as_bytes(),
        "",
    )
}

pub(crate) fn echo_text(method: &str, target: &str, len: usize) -> String {
    format!("{method} {target} len={len}\n")
}

/// `n` deterministic pseudo-random bytes (xorshift), so a dropped, duplicated or reordered
/// block changes the hash.
pub(crate) fn pattern(n: usize, seed: u64) -> Vec<u8> {
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

pub(crate) fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `body` chunked in pieces of varying sizes, with a chunk extension on the first chunk.
pub(crate) fn chunked_encoding(body: &[u8]) -> Vec<u8> {
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
