//! HTTP/2 connections to one backend, for pools with `protocol = "h2"` (h2c: HTTP/2 with
//! prior knowledge), on hyper's `client::conn::http2`.
//!
//! An HTTP/2 connection carries many requests at once, so a backend needs only a few: each
//! request takes a stream slot on the first open connection that has one, and a new
//! connection is opened only when every open one is at the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` (one at a time per backend: a burst waits for it). hyper does not tell that limit (h2 would queue a
//! request over it inside the connection, where it waits instead of going to a connection
//! with room), so the connection's reads pass through a [`FrameScan`] that reads the frame
//! headers the backend sends: the SETTINGS it announces (and changes later) and a GOAWAY,
//! after which the connection takes no new request and ends once its streams are done. A
//! new connection is used only once the backend's first SETTINGS frame (its preface,
//! RFC 9113 §3.4) has arrived, so its limit is known before the first stream.
//!
//! A connection that ended (GOAWAY, error, close) is dropped from the list at the next
//! look, counted in `lbd_upstream_conn_discarded_total` (`h2_goaway`, `h2_error`); one with
//! no stream for `keepalive.idle_timeout_ms` is closed by the housekeeping pass. The set is
//! per backend, shared by the worker threads (a stream may cross threads to its
//! connection's task; one connection per worker would multiply connections for nothing).
//!
//! [`handshake`] takes any `AsyncRead + AsyncWrite` stream, so a TLS stream that negotiated
//! `h2` by ALPN can use the same path.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use std::{io, pin::Pin};

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::clock;
use crate::error::{ErrorKind, ProxyError};
use crate::metrics::{inc, BackendStats, DiscardReason};
use crate::sync::lock;
use crate::upstream::backend::Backend;
use crate::upstream::conns::{BackendConns, UpstreamBody};

/// A request sender on one HTTP/2 connection.
pub type H2Sender = http2::SendRequest<UpstreamBody>;

/// A backend's HTTP/2 connections.
#[derive(Debug, Default)]
pub struct H2Conns {
    conns: Mutex<Vec<Arc<H2Conn>>>,
    /// Held while a connection is being opened: requests that find every connection full
    /// wait for it and then look again, so a burst opens the connections it needs, not one
    /// per request (Envoy counts a connecting connection's streams the same way).
    connecting: tokio::sync::Mutex<()>,
    /// Connections open now (their driver tasks run), for `lbd_backend_h2_connections`.
    open: Arc<AtomicU64>,
}

/// What the backend said on one connection, as seen by its [`FrameScan`].
#[derive(Debug)]
struct PeerSettings {
    /// Its `SETTINGS_MAX_CONCURRENT_STREAMS` (unlimited until it names one).
    max_streams: AtomicU32,
    settings_seen: AtomicBool,
    goaway: AtomicBool,
    /// Woken at the first SETTINGS frame.
    seen: Notify,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            max_streams: AtomicU32::new(u32::MAX),
            settings_seen: AtomicBool::new(false),
            goaway: AtomicBool::new(false),
            seen: Notify::new(),
        }
    }
}

#[derive(Debug)]
struct H2Conn {
    tx: H2Sender,
    peer: Arc<PeerSettings>,
    in_flight: AtomicU32,
    /// `clock::now()` in ms when the last stream ended (or the connection opened).
    idle_since_ms: AtomicU64,
}

impl H2Conn {
    /// May it take a new stream (not closed, no GOAWAY)?
    fn open(&self) -> bool {
        !self.tx.is_closed() && !self.peer.goaway.load(Ordering::Acquire)
    }

    /// Take a stream slot when the connection is open and below the backend's limit.
    fn try_reserve(self: &Arc<Self>) -> Option<H2Stream> {
        if !self.open() {
            return None;
        }
        let max = self.peer.max_streams.load(Ordering::Acquire);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(H2Stream {
            tx: self.tx.clone(),
            slot: StreamSlot {
                conn: Arc::clone(self),
            },
        })
    }
}

/// One request's place on a connection; the place is given back when it drops (the
/// response body ended or was abandoned).
#[derive(Debug)]
pub struct StreamSlot {
    conn: Arc<H2Conn>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.conn.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.conn
                .idle_since_ms
                .store(clock::now().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

/// A stream slot and the sender to use it with.
#[derive(Debug)]
pub struct H2Stream {
    pub tx: H2Sender,
    pub slot: StreamSlot,
}

impl H2Conns {
    /// Open connections now.
    pub fn open_count(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot on an open connection (`reused = true`), else on a new connection. `fresh`
    /// skips the open ones (one just failed under a request).
    pub async fn get(
        &self,
        owner: &BackendConns,
        backend: &Arc<Backend>,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<(H2Stream, bool), ProxyError> {
        if !fresh {
            if let Some(s) = self.reserve() {
                return Ok((s, true));
            }
        }
        // Waited for at most a connect's time: behind a backend that times out, requests
        // then connect side by side instead of one after another.
        let _connecting = tokio::time::timeout(connect_timeout, self.connecting.lock())
            .await
            .ok();
        if !fresh {
            if let Some(s) = self.reserve() {
                return Ok((s, true));
            }
        }
        // The TLS handshake, if any, within the same connect timeout (as for HTTP/1).
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let tcp = owner.connect_tcp(connect_timeout).await?;
        let stream = crate::upstream::tls::secure(owner.tls.as_ref(), tcp, deadline).await?;
        if owner.tls.is_some() && stream.alpn() != Some(b"h2") {
            return Err(ProxyError::new(ErrorKind::Connect)
                .with_source("the backend did not agree to HTTP/2 by ALPN"));
        }
        let conn =
            Arc::new(handshake(stream, backend, &owner.stats, &self.open, connect_timeout).await?);
        inc(&owner.stats.conns_new);
        let slot = conn.try_reserve().ok_or_else(|| {
            ProxyError::new(ErrorKind::BackendIo)
                .with_source("the backend's HTTP/2 connection allows no stream")
        })?;
        lock(&self.conns).push(conn);
        Ok((slot, false))
    }

    /// A slot on the first open connection with room; ended connections are dropped on the
    /// way.
    fn reserve(&self) -> Option<H2Stream> {
        let mut conns = lock(&self.conns);
        conns.retain(|c| c.open());
        conns.iter().find_map(H2Conn::try_reserve)
    }

    /// Close connections that ended or had no stream for `idle_timeout`.
    pub fn reap(&self, idle_timeout: Duration) {
        let now = clock::now().as_millis() as u64;
        let timeout = idle_timeout.as_millis() as u64;
        lock(&self.conns).retain(|c| {
            c.open()
                && (c.in_flight.load(Ordering::Acquire) > 0
                    || now.saturating_sub(c.idle_since_ms.load(Ordering::Relaxed)) < timeout)
        });
    }

    /// Forget every connection: each closes once its last stream ends.
    pub fn clear(&self) {
        lock(&self.conns).clear();
    }
}

/// An HTTP/2 client handshake on `stream` (TCP, or TLS that negotiated `h2`), its driver task
/// spawned, ready once the backend's first SETTINGS frame arrived (within `timeout`).
async fn handshake<S>(
    stream: S,
    backend: &Arc<Backend>,
    stats: &Arc<BackendStats>,
    open: &Arc<AtomicU64>,
    timeout: Duration,
) -> Result<H2Conn, ProxyError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(PeerSettings::default());
    let watched = Watched {
        inner: stream,
        scan: FrameScan::default(),
        peer: Arc::clone(&peer),
    };
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(watched))
        .await
        .map_err(|e| ProxyError::new(ErrorKind::Connect).with_source(e))?;
    let guard = backend.conn_opened();
    open.fetch_add(1, Ordering::Relaxed);
    let (stats, open, ended) = (Arc::clone(stats), Arc::clone(open), Arc::clone(&peer));
    tokio::spawn(async move {
        // Runs until the connection ends: every SendRequest dropped and no stream left,
        // a GOAWAY's last stream done, or an error.
        let result = conn.await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            stats.discarded(DiscardReason::H2Error);
        } else if ended.goaway.load(Ordering::Acquire) {
            stats.discarded(DiscardReason::H2Goaway);
        }
        open.fetch_sub(1, Ordering::Relaxed);
        drop(guard);
    });
    if !settings_arrived(&peer, timeout).await {
        return Err(ProxyError::new(ErrorKind::ConnectTimeout)
            .with_source("no HTTP/2 SETTINGS from the backend within the connect timeout"));
    }
    Ok(H2Conn {
        tx,
        peer,
        in_flight: AtomicU32::new(0),
        idle_since_ms: AtomicU64::new(clock::now().as_millis() as u64),
    })
}

/// Wait up to `timeout` for the backend's first SETTINGS frame.
async fn settings_arrived(peer: &PeerSettings, timeout: Duration) -> bool {
    // Made before the flag is read: a notification between the two is not lost.
    let seen = peer.seen.notified();
    peer.settings_seen.load(Ordering::Acquire)
        || tokio::time::timeout(timeout, seen).await.is_ok()
        || peer.settings_seen.load(Ordering::Acquire)
}

/// The connection's stream with its reads scanned for the backend's SETTINGS and GOAWAY.
struct Watched<S> {
    inner: S,
    scan: FrameScan,
    peer: Arc<PeerSettings>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            let seen = this.scan.feed(&buf.filled()[before..]);
            if let Some(max) = seen.max_streams {
                this.peer.max_streams.store(max, Ordering::Release);
            }
            if seen.goaway {
                this.peer.goaway.store(true, Ordering::Release);
            }
            if seen.settings && !this.peer.settings_seen.swap(true, Ordering::AcqRel) {
                this.peer.seen.notify_waiters();
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// HTTP/2 frame types and the setting the scanner reads (RFC 9113 §6).
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const FRAME_HEADER_LEN: usize = 9;
const SETTING_LEN: usize = 6;

/// What one [`FrameScan::feed`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    /// A whole SETTINGS frame (not an ACK) was read.
    settings: bool,
    /// The last `SETTINGS_MAX_CONCURRENT_STREAMS` value in it.
    max_streams: Option<u32>,
    goaway: bool,
}

/// Reads the frame headers of the bytes a backend sends, in any split: SETTINGS payloads
/// entry by entry, other payloads skipped. It never judges the bytes (hyper does): a
/// malformed stream only makes it read nonsense limits until hyper ends the connection.
#[derive(Debug, Default)]
struct FrameScan {
    head: [u8; FRAME_HEADER_LEN],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The current frame is a SETTINGS frame whose entries are read.
    in_settings: bool,
    entry: [u8; SETTING_LEN],
    entry_len: usize,
}

impl FrameScan {
    fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            if self.left == 0 && self.head_len < FRAME_HEADER_LEN {
                let n = (FRAME_HEADER_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                bytes = &bytes[n..];
                if self.head_len == FRAME_HEADER_LEN {
                    self.start_frame(&mut seen);
                }
                continue;
            }
            let n = self.left.min(bytes.len());
            if self.in_settings {
                self.settings_bytes(&bytes[..n], &mut seen);
            }
            self.left -= n;
            bytes = &bytes[n..];
            if self.left == 0 {
                self.end_frame(&mut seen);
            }
        }
        seen
    }

    fn start_frame(&mut self, seen: &mut Seen) {
        let h = self.head;
        self.left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        self.in_settings = kind == FRAME_SETTINGS && flags & FLAG_ACK == 0;
        self.entry_len = 0;
        if kind == FRAME_GOAWAY {
            seen.goaway = true;
        }
        if self.left == 0 {
            self.end_frame(seen);
        }
    }

    fn settings_bytes(&mut self, mut bytes: &[u8], seen: &mut Seen) {
        while !bytes.is_empty() {
            let n = (SETTING_LEN - self.entry_len).min(bytes.len());
            self.entry[self.entry_len..self.entry_len + n].copy_from_slice(&bytes[..n]);
            self.entry_len += n;
            bytes = &bytes[n..];
            if self.entry_len == SETTING_LEN {
                self.entry_len = 0;
                let e = self.entry;
                if u16::from_be_bytes([e[0], e[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS {
                    seen.max_streams = Some(u32::from_be_bytes([e[2], e[3], e[4], e[5]]));
                }
            }
        }
    }

    fn end_frame(&mut self, seen: &mut Seen) {
        if self.in_settings {
            seen.settings = true;
        }
        self.in_settings = false;
        self.head_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::backend::{BackendId, BackendSpec};

    /// An h2c server on loopback allowing `max_streams` streams per connection, whose
    /// answers wait until `release` is notified; counts accepted connections.
    async fn held_h2_server(
        max_streams: u32,
    ) -> (std::net::SocketAddr, Arc<Notify>, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let release = Arc::new(Notify::new());
        let accepted = Arc::new(AtomicU32::new(0));
        let (r, a) = (Arc::clone(&release), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let r = Arc::clone(&r);
                        async move {
                            r.notified().await;
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Empty::<bytes::Bytes>::new(),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(max_streams)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (addr, release, accepted)
    }

    fn backend_at(addr: std::net::SocketAddr) -> Arc<Backend> {
        Arc::new(Backend::new(
            BackendId(0),
            BackendSpec {
                name: String::new(),
                addr,
                weight: 1,
                max_conns: 0,
            },
            Default::default(),
        ))
    }

    #[tokio::test]
    async fn streams_fill_a_connection_up_to_the_backends_limit_then_open_another() {
        let (addr, _release, accepted) = held_h2_server(2).await;
        let backend = backend_at(addr);
        let conns = BackendConns::new(addr, 4, Duration::from_secs(60));
        let t = Duration::from_secs(5);
        let mut held = Vec::new();
        for (i, want_reused) in [false, true, false, true, false].into_iter().enumerate() {
            let (s, reused) = conns.h2.get(&conns, &backend, t, false).await.expect("get");
            assert_eq!(reused, want_reused, "stream {i}");
            held.push(s);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3, "2 + 2 + 1 streams");
        assert_eq!(conns.h2.open_count(), 3);
        assert_eq!(conns.stats.conns_new.load(Ordering::Relaxed), 3);
        assert_eq!(backend.active_conns(), 3);
        // A stream given back makes room on its connection: no new one.
        held.remove(0);
        let (_s, reused) = conns.h2.get(&conns, &backend, t, false).await.expect("get");
        assert!(reused);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // `fresh` skips the open ones.
        let (_f, reused) = conns.h2.get(&conns, &backend, t, true).await.expect("get");
        assert!(!reused);
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn connections_without_streams_are_closed_after_the_idle_timeout() {
        let (addr, _release, _) = held_h2_server(10).await;
        let backend = backend_at(addr);
        let conns = BackendConns::new(addr, 4, Duration::from_millis(100));
        let t = Duration::from_secs(5);
        let (busy, _) = conns.h2.get(&conns, &backend, t, false).await.expect("get");
        let (idle, _) = conns.h2.get(&conns, &backend, t, true).await.expect("get");
        drop(idle);
        assert_eq!(conns.h2.open_count(), 2);
        // The housekeeping pass closes the idle one once its timeout passed (its driver task
        // ends); the one with a stream stays.
        let deadline = tokio::time::Instant::now() + t;
        while conns.h2.open_count() != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "idle connection closed"
            );
            conns.reap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(backend.active_conns(), 1);
        // lbd closed it: not a discard of the backend's doing.
        for reason in DiscardReason::ALL {
            assert_eq!(
                conns.stats.conns_discarded[reason as usize].load(Ordering::Relaxed),
                0,
                "{reason:?}"
            );
        }
        drop(busy);
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            0,
        ];
        f.extend_from_slice(payload);
        f
    }

    fn setting(id: u16, value: u32) -> Vec<u8> {
        let mut e = id.to_be_bytes().to_vec();
        e.extend_from_slice(&value.to_be_bytes());
        e
    }

    /// A backend's first bytes: SETTINGS (window, max streams 7), a WINDOW_UPDATE, a
    /// DATA frame whose payload looks like a SETTINGS header, an ACK of our SETTINGS.
    fn preface() -> Vec<u8> {
        let mut settings = setting(0x4, 65_535);
        settings.extend(setting(SETTINGS_MAX_CONCURRENT_STREAMS, 7));
        let mut bytes = frame(FRAME_SETTINGS, 0, &settings);
        bytes.extend(frame(0x8, 0, &[0, 0, 0x10, 0]));
        bytes.extend(frame(0x0, 0, &frame(FRAME_SETTINGS, 0, &setting(3, 1))));
        bytes.extend(frame(FRAME_SETTINGS, FLAG_ACK, &[]));
        bytes
    }

    #[test]
    fn reads_max_concurrent_streams_from_settings_in_any_split() {
        let bytes = preface();
        for chunk in 1..=bytes.len() {
            let mut scan = FrameScan::default();
            let mut all = Seen::default();
            for piece in bytes.chunks(chunk) {
                let s = scan.feed(piece);
                all.settings |= s.settings;
                all.max_streams = s.max_streams.or(all.max_streams);
                all.goaway |= s.goaway;
            }
            assert_eq!(
                all,
                Seen {
                    settings: true,
                    max_streams: Some(7),
                    goaway: false
                },
                "chunks of {chunk}"
            );
        }
    }

    #[test]
    fn an_empty_settings_frame_counts_and_an_ack_does_not() {
        let mut scan = FrameScan::default();
        assert!(!scan.feed(&frame(FRAME_SETTINGS, FLAG_ACK, &[])).settings);
        let seen = scan.feed(&frame(FRAME_SETTINGS, 0, &[]));
        assert!(seen.settings);
        assert_eq!(seen.max_streams, None, "no limit named: unlimited");
    }

    #[test]
    fn a_later_settings_frame_changes_the_limit_and_goaway_is_seen() {
        let mut scan = FrameScan::default();
        scan.feed(&preface());
        let mut later = frame(
            FRAME_SETTINGS,
            0,
            &setting(SETTINGS_MAX_CONCURRENT_STREAMS, 2),
        );
        later.extend(frame(FRAME_GOAWAY, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        let seen = scan.feed(&later);
        assert_eq!(seen.max_streams, Some(2));
        assert!(seen.goaway);
    }
}
