//! The fast path's client connection loop: read a head, serve it, repeat.
//!
//! - Each head must arrive within `min(request_header, client_idle)` of the previous
//!   response (or of the accept), the same bound hyper's header timer gives a keep-alive
//!   connection: a slowloris client is closed, an idle one too.
//! - The driver in [`crate::listener`] asks for a graceful close (SIGTERM, idleness) by
//!   setting `closing`: a request in progress finishes; between requests the loop ends.
//! - A head the fast path does not take, or a request routed to a pool behind TLS or
//!   speaking HTTP/2 (the fast path speaks plain HTTP/1 upstream), ends the loop with
//!   [`Served::Fallback`]: the socket and every byte read so far (that request's head as it
//!   came included) go to hyper, which serves the rest of the connection.
//! - Closing after a response shuts the write side down and briefly drains what the client
//!   still sends, so a close with unread bytes does not reset the response away (the
//!   "lingering close" of nginx and Apache).

use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

use super::client_io::ClientIo;
use super::exchange::{self, Bufs, Next};
use super::head::{self, Parsed};
use super::MAX_BODY;
use crate::l7::client::ConnCtx;
use crate::l7::ctx::ProxyCtx;
use crate::l7::timer::LazyDeadline;

/// Bytes read from the client per read call while a head or body is incomplete.
const READ_BUF: usize = 4096;

/// How long a closing connection keeps reading (and discarding) what the client still sends.
const LINGER: Duration = Duration::from_millis(500);

/// How the connection ended.
pub enum Served<S> {
    Closed,
    /// Serve the rest with hyper: `buffered` are the bytes read but not consumed, starting
    /// with the head of the request the fast path did not take.
    Fallback {
        stream: S,
        buffered: Bytes,
    },
    /// Idle for `park_after` between requests, holding no buffer: the caller parks the
    /// socket until the client speaks again or `deadline` (its next head's) passes. Only a
    /// transport that parks ([`ClientIo::PARKS`]) ends so.
    Parked {
        stream: TcpStream,
        deadline: Instant,
    },
}

/// Limits the loop applies (from the snapshot at accept time, like hyper's builder).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// For each head, counted from the end of the previous response.
    pub head_timeout: Duration,
    /// Request line plus headers; a longer head goes to hyper, which answers 431.
    pub max_head: usize,
    /// For reading a request body.
    pub body_timeout: Duration,
    /// A connection that has waited this long for its next request is parked
    /// ([`Served::Parked`]; see `crate::park`), if its transport parks.
    pub park_after: Duration,
}

/// What one wait for client bytes gave.
enum Read {
    Bytes,
    Eof,
    Timeout,
    /// Idle long enough to be parked (only while waiting for a request, with no buffer).
    Park,
    Closing,
    Error(io::Error),
}

/// Serve HTTP/1.1 requests on `stream` until it closes, fails, is asked to close, or meets
/// a request for hyper.
pub async fn serve<S: ClientIo>(
    engine: &Arc<ProxyCtx>,
    ctx: &Arc<ConnCtx>,
    mut stream: S,
    closing: &AtomicBool,
    limits: ConnLimits,
    first_head_deadline: Option<Instant>,
) -> Served<S> {
    // No buffer until the first bytes arrive (`read_some`).
    let mut buf = BytesMut::new();
    // A connection back from the lot keeps the head deadline it had when it was parked.
    let first = first_head_deadline.unwrap_or_else(|| Instant::now() + limits.head_timeout);
    let mut bufs = Bufs::new(first);
    let mut resumed = first_head_deadline;
    loop {
        let head_deadline = resumed
            .take()
            .unwrap_or_else(|| Instant::now() + limits.head_timeout);
        let req = loop {
            if !buf.is_empty() {
                match head::parse_request(&mut buf, MAX_BODY) {
                    Parsed::Fast(r) if exchange::routes_to_hyper_pool(engine, &r) => {
                        // The fast path speaks plain HTTP/1 upstream only: hyper takes the
                        // connection, from this request's head on.
                        let mut all = BytesMut::with_capacity(r.raw.len() + buf.len());
                        all.extend_from_slice(&r.raw);
                        all.extend_from_slice(&buf);
                        return fallback(engine, stream, all, "routed to a TLS or HTTP/2 pool");
                    }
                    Parsed::Fast(r) => break r,
                    Parsed::Partial if buf.len() <= limits.max_head => {}
                    Parsed::Partial => return fallback(engine, stream, buf, "head over the limit"),
                    Parsed::Fallback(why) => return fallback(engine, stream, buf, why),
                    Parsed::Bad(why) => {
                        debug!(why, "malformed request");
                        bad_request(engine, &mut stream).await;
                        return Served::Closed;
                    }
                }
            }
            // A graceful close only ever interrupts the wait *between* requests.
            let between = buf.is_empty();
            let park_at = (between && S::PARKS).then(|| Instant::now() + limits.park_after);
            let read = read_some(
                &mut stream,
                &mut buf,
                &mut bufs.timer,
                head_deadline,
                Between::new(between, closing, park_at),
            );
            match read.await {
                Read::Bytes => {}
                Read::Park => {
                    return match stream.into_parkable() {
                        Some(stream) => Served::Parked {
                            stream,
                            deadline: head_deadline,
                        },
                        None => Served::Closed,
                    };
                }
                Read::Eof | Read::Closing => {
                    stream.close().await;
                    return Served::Closed;
                }
                Read::Timeout => {
                    debug!(
                        partial = !buf.is_empty(),
                        "no request head within the header timeout, closing"
                    );
                    stream.close().await;
                    return Served::Closed;
                }
                Read::Error(e) => {
                    debug!(error = %e, "client connection failed");
                    return Served::Closed;
                }
            }
        };
        // The body, buffered whole (it is at most MAX_BODY).
        let body = if req.content_length == 0 {
            Bytes::new()
        } else {
            let body_deadline = Instant::now() + limits.body_timeout;
            while buf.len() < req.content_length {
                let read = read_some(
                    &mut stream,
                    &mut buf,
                    &mut bufs.timer,
                    body_deadline,
                    Between::No,
                );
                match read.await {
                    Read::Bytes => {}
                    _ => {
                        debug!("client body incomplete, closing");
                        return Served::Closed;
                    }
                }
            }
            buf.split_to(req.content_length).freeze()
        };
        match exchange::serve(engine, ctx, &mut stream, req, body, &mut bufs).await {
            Next::KeepAlive => {
                // A pipelined next request keeps the buffers. A connection about to wait gives
                // them back first, as nginx does: a waiting client then holds no buffer, and
                // the allocator's thread cache hands them out again for the next request
                // (keeping them measured ~1.4 KiB more RSS per idle client, in memory the
                // allocator keeps after the connection is parked).
                if buf.is_empty() && !stream.input_waiting() {
                    buf = BytesMut::new();
                    bufs.release();
                }
            }
            Next::Close => {
                linger_close(stream).await;
                return Served::Closed;
            }
        }
    }
}

fn fallback<S>(engine: &ProxyCtx, stream: S, buf: BytesMut, why: &'static str) -> Served<S> {
    debug!(why, "handing the connection to hyper");
    crate::metrics::inc(&engine.stats.fast_path_handoffs_total);
    Served::Fallback {
        stream,
        buffered: buf.freeze(),
    }
}

/// Whether a read waits *between* requests, where a graceful close may end it and an idle
/// connection may be parked.
#[derive(Clone, Copy)]
enum Between<'a> {
    No,
    Yes {
        closing: &'a AtomicBool,
        /// `None`: the transport does not park.
        park_at: Option<Instant>,
    },
}

impl<'a> Between<'a> {
    fn new(between: bool, closing: &'a AtomicBool, park_at: Option<Instant>) -> Self {
        if between {
            Between::Yes { closing, park_at }
        } else {
            Between::No
        }
    }
}

/// Read what is there into `buf`, waiting until `deadline`. Between requests a graceful
/// close ends the wait too, and so does `park_at` (the connection is then parked).
async fn read_some<S: ClientIo>(
    stream: &mut S,
    buf: &mut BytesMut,
    timer: &mut LazyDeadline,
    deadline: Instant,
    between: Between<'_>,
) -> Read {
    let (is_between, park_at) = match between {
        Between::No => (false, None),
        Between::Yes { park_at, .. } => (true, park_at),
    };
    poll_fn(|cx| {
        if let Between::Yes { closing, .. } = between {
            if closing.load(Ordering::Acquire) {
                return Poll::Ready(Read::Closing);
            }
        }
        if is_between || buf.capacity() == 0 {
            // Between requests, or no buffer yet: wait until there are bytes (a readiness
            // check, no syscall) before reading or taking memory for them.
            match stream.poll_input(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Read::Error(e)),
                Poll::Pending => {
                    let wake = park_at.map_or(deadline, |p| p.min(deadline));
                    ready!(timer.poll_expired(cx, wake));
                    let parked = park_at.is_some_and(|p| p < deadline);
                    return Poll::Ready(if parked { Read::Park } else { Read::Timeout });
                }
            }
        }
        if buf.capacity() - buf.len() < READ_BUF {
            buf.reserve(READ_BUF);
        }
        // `poll_read` (not `try_read`): after a short read it clears the socket's readiness,
        // so the wait for the next request costs no extra EAGAIN read.
        match tokio_util::io::poll_read_buf(std::pin::Pin::new(&mut *stream), cx, buf) {
            Poll::Ready(Ok(0)) => Poll::Ready(Read::Eof),
            Poll::Ready(Ok(_)) => Poll::Ready(Read::Bytes),
            Poll::Ready(Err(e)) => Poll::Ready(Read::Error(e)),
            Poll::Pending => {
                ready!(timer.poll_expired(cx, deadline));
                Poll::Ready(Read::Timeout)
            }
        }
    })
    .await
}

/// Answer a head that cannot be a valid request (400) and close.
async fn bad_request<S: ClientIo>(engine: &Arc<ProxyCtx>, stream: &mut S) {
    let kind = crate::error::ErrorKind::BadRequest;
    engine.stats.error(kind);
    let mut out = Vec::new();
    let status: StatusCode = kind.status();
    head::write_local_response(
        &mut out,
        status,
        &HeaderMap::new(),
        kind.body().as_bytes(),
        true,
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Close after the last response without resetting it: FIN first, then read and drop
/// whatever the client still sends, for a bounded time.
async fn linger_close<S: ClientIo>(mut stream: S) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = BytesMut::with_capacity(4096);
    let until = Instant::now() + LINGER;
    let mut drained = 0usize;
    while drained < 1 << 20 {
        sink.clear();
        let read = tokio::time::timeout_at(
            until,
            tokio::io::AsyncReadExt::read_buf(&mut stream, &mut sink),
        )
        .await;
        match read {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => return,
        }
    }
}
