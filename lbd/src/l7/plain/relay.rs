//! The upstream half of a fast-path exchange: write the request, read the response head
//! (skipping interim 1xx answers), relay the body to the client as it arrives.
//!
//! The body is never decoded: a `Content-Length` body is counted, a chunked one is followed
//! by [`ChunkedScanner`] only to find its end, and a close-delimited one runs to EOF. The
//! first write to the client carries the head and whatever body bytes came with it, so a
//! small response costs one read and one write.

use std::io;

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::chunked::{ChunkedScanner, Scan};
use super::head::Framing;
use crate::l7::timer::LazyDeadline;

/// Bytes read from the backend per read call while relaying a body.
const READ_CHUNK: usize = 64 * 1024;

/// Why no response head arrived.
#[derive(Debug, thiserror::Error)]
pub(super) enum HeadError {
    /// Writing the request failed: the connection was dead before the request went out.
    #[error("writing the request: {0}")]
    Write(io::Error),
    /// The backend closed or reset the connection before a complete head.
    #[error("connection closed before a response: {0}")]
    NoResponse(io::Error),
    #[error("no response head within the backend response timeout")]
    Timeout,
    #[error("response head over {0} bytes")]
    TooLarge(usize),
}

/// Write `request` and read until `buf` (emptied first) starts with a complete final
/// response head. Interim 1xx heads (not 101) are dropped.
pub(super) async fn send_and_read_head(
    up: &mut TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
    timer: &mut LazyDeadline,
    deadline: Instant,
    max_head: usize,
) -> Result<(), HeadError> {
    buf.clear();
    // A backend that stops reading must not hold the request past its deadline either.
    write_by(up, request, timer, || deadline)
        .await
        .map_err(|e| match e {
            Stopped::Io(e) => HeadError::Write(e),
            Stopped::Expired => HeadError::Timeout,
        })?;
    loop {
        if let Some(end) = head_end(buf) {
            match interim_len(&buf[..end]) {
                Some(n) => buf.advance(n),
                None => return Ok(()),
            }
            continue;
        }
        if buf.len() > max_head {
            return Err(HeadError::TooLarge(max_head));
        }
        buf.reserve(8 * 1024);
        let n = read_by(up, buf, timer, deadline)
            .await
            .map_err(|e| match e {
                Stopped::Io(e) => HeadError::NoResponse(e),
                Stopped::Expired => HeadError::Timeout,
            })?;
        if n == 0 {
            return Err(HeadError::NoResponse(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Where the first head in `buf` ends, if it is complete: the empty line after the header
/// lines (CRLF, or the bare LF httparse also accepts).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(buf, b"\n\r\n").map(|i| i + 3);
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The length of an interim (1xx other than 101) head, which a proxy that did not ask for it
/// drops; `None` for anything else.
fn interim_len(head: &[u8]) -> Option<usize> {
    let code = head.get(9..12)?;
    if head.starts_with(b"HTTP/1.") && code[0] == b'1' && code != b"101" {
        let mut storage = super::head::header_slots();
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            head,
            &mut storage,
        );
        if let Ok(httparse::Status::Complete(n)) = parsed {
            return Some(n);
        }
    }
    None
}

/// Which side failed while relaying a body.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    #[error("client write failed: {0}")]
    Client(io::Error),
    #[error("backend read failed: {0}")]
    Upstream(io::Error),
    #[error("bad chunked framing from the backend: {0}")]
    Chunked(super::chunked::ChunkedError),
    #[error("the backend sent nothing for {0:?} in the middle of the body")]
    UpstreamIdle(Duration),
    #[error("the client read nothing for {0:?} in the middle of the body")]
    ClientIdle(Duration),
}

/// How long a body may stall on either side: like nginx's `proxy_read_timeout` and
/// `send_timeout`, or HAProxy's `timeout server` / `timeout client`, these bound the
/// silence between two reads or writes, not the whole transfer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stall {
    /// Between two reads from the backend (`timeouts.backend_response_ms`).
    pub upstream: Duration,
    /// For the client to take more bytes (`timeouts.client_idle_ms`).
    pub client: Duration,
}

/// A relayed body.
pub(super) struct Relayed {
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// The body ended exactly where its framing said, with nothing after it: the upstream
    /// connection is in a clean state.
    pub clean: bool,
    /// Bytes followed the body's end: the backend sent more than the response. They are never
    /// relayed, and the connection is closed with them.
    pub surplus: bool,
}

/// Send `head` (the client's response head, already written) and the body that follows the
/// backend's head in `buf`, reading the rest from `up`.
pub(super) async fn relay_body<C: AsyncWrite + Unpin>(
    up: &mut TcpStream,
    client: &mut C,
    head: &mut Vec<u8>,
    buf: &mut BytesMut,
    framing: Framing,
    timer: &mut LazyDeadline,
    stall: Stall,
) -> Result<Relayed, RelayError> {
    let mut sent = 0u64;
    let mut chunked = ChunkedScanner::new();
    // How much of `buf` belongs to this body, and whether the body is complete with it.
    let mut take = |buf: &BytesMut, sent: u64| -> Result<(usize, bool), RelayError> {
        Ok(match framing {
            Framing::Empty => (0, true),
            Framing::Length(n) => {
                let left = n - sent;
                let t = left.min(buf.len() as u64) as usize;
                (t, t as u64 == left)
            }
            Framing::Chunked => match chunked.feed(buf).map_err(RelayError::Chunked)? {
                Scan::Done(n) => (n, true),
                Scan::More => (buf.len(), false),
            },
            Framing::UntilClose => (buf.len(), false),
        })
    };
    // The first piece goes out with the head, in one write.
    let (n, mut done) = take(buf, 0)?;
    head.extend_from_slice(&buf[..n]);
    buf.advance(n);
    sent += n as u64;
    write_within(client, head, timer, stall.client).await?;
    while !done {
        buf.clear();
        buf.reserve(READ_CHUNK);
        let read = read_within(up, buf, timer, stall.upstream).await?;
        if read == 0 {
            if framing == Framing::UntilClose {
                return Ok(Relayed {
                    bytes: sent,
                    clean: false,
                    surplus: false,
                });
            }
            return Err(RelayError::Upstream(io::ErrorKind::UnexpectedEof.into()));
        }
        let (n, complete) = take(buf, sent)?;
        done = complete;
        write_within(client, &buf[..n], timer, stall.client).await?;
        buf.advance(n);
        sent += n as u64;
    }
    // Bytes past the body's end were never asked for: the connection can't be trusted.
    Ok(Relayed {
        bytes: sent,
        clean: buf.is_empty(),
        surplus: !buf.is_empty(),
    })
}

/// Write all of `data` to the client; once it stops taking bytes, wait at most `limit` for
/// it to take more.
async fn write_within<C: AsyncWrite + Unpin>(
    client: &mut C,
    data: &[u8],
    timer: &mut LazyDeadline,
    limit: Duration,
) -> Result<(), RelayError> {
    write_by(client, data, timer, || Instant::now() + limit)
        .await
        .map_err(|e| match e {
            Stopped::Io(e) => RelayError::Client(e),
            Stopped::Expired => RelayError::ClientIdle(limit),
        })
}

/// Read what the backend sends next, waiting at most `limit` for it.
async fn read_within(
    up: &mut TcpStream,
    buf: &mut BytesMut,
    timer: &mut LazyDeadline,
    limit: Duration,
) -> Result<usize, RelayError> {
    read_by(up, buf, timer, Instant::now() + limit)
        .await
        .map_err(|e| match e {
            Stopped::Io(e) => RelayError::Upstream(e),
            Stopped::Expired => RelayError::UpstreamIdle(limit),
        })
}

/// Why a timed read or write stopped.
enum Stopped {
    Io(io::Error),
    Expired,
}

/// Write all of `data` and flush it (a TLS stream may hold records back); whenever the
/// stream stops taking bytes, wait for it until `deadline()`. The common case (the socket
/// takes it all) reads no clock.
async fn write_by<W: AsyncWrite + Unpin>(
    stream: &mut W,
    mut data: &[u8],
    timer: &mut LazyDeadline,
    deadline: impl Fn() -> Instant,
) -> Result<(), Stopped> {
    // Set when the stream first stops taking bytes, cleared by progress: the limit bounds
    // each stall, not the whole write.
    let mut stalled_until: Option<Instant> = None;
    poll_fn(|cx| loop {
        let progress = if data.is_empty() {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Stopped::Io(e))),
                Poll::Pending => false,
            }
        } else {
            match Pin::new(&mut *stream).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Stopped::Io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    data = &data[n..];
                    true
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Stopped::Io(e))),
                Poll::Pending => false,
            }
        };
        if progress {
            stalled_until = None;
            continue;
        }
        let until = *stalled_until.get_or_insert_with(&deadline);
        ready!(timer.poll_expired(cx, until));
        return Poll::Ready(Err(Stopped::Expired));
    })
    .await
}

/// Read what is there into `buf`, waiting for it until `deadline`. `poll_read` (not
/// `try_read`): after a short read it clears the socket's readiness, so the next wait costs
/// no extra EAGAIN read.
async fn read_by(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    timer: &mut LazyDeadline,
    deadline: Instant,
) -> Result<usize, Stopped> {
    poll_fn(
        |cx| match tokio_util::io::poll_read_buf(Pin::new(&mut *stream), cx, &mut *buf) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(Stopped::Io(e))),
            Poll::Pending => {
                ready!(timer.poll_expired(cx, deadline));
                Poll::Ready(Err(Stopped::Expired))
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_end_finds_the_empty_line() {
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), Some(25));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\nA: b\n\nbody"), Some(22));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
    }

    #[test]
    fn interim_heads_are_recognised() {
        assert_eq!(interim_len(b"HTTP/1.1 100 Continue\r\n\r\n"), Some(25));
        assert_eq!(
            interim_len(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"),
            Some(40)
        );
        assert_eq!(
            interim_len(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            None
        );
        assert_eq!(interim_len(b"HTTP/1.1 200 OK\r\n\r\n"), None);
        assert_eq!(interim_len(b"HT"), None);
    }
}
