//! Keep-alive connections to one backend, on hyper's low-level `client::conn::http1`.
//!
//! hyper_util's legacy pooled `Client` costs about 2 µs per request more than driving
//! `http1::handshake` connections directly (measured on this project's benchmark), and it hides the events a proxy
//! needs (was this connection reused? did it die before the request went out?). So each
//! backend has a [`BackendConns`]: a LIFO stack of idle [`SendRequest`]s, bounded by `idle_max`,
//! each dropped once idle longer than `idle_timeout`.
//!
//! Per worker: the stack is split into one slot per worker thread
//! ([`crate::app::spawn_workers`]), and a worker only takes from and returns to its own
//! slot. A connection's driver task runs on the worker that opened it, so keeping it on that
//! worker keeps every hand-off between the request and the connection on one thread (no
//! cross-thread wake-up per request). `idle_max` bounds each slot. The slot mutexes are
//! therefore uncontended on the request path; the checker's reaping and a reload's clearing
//! take them from the control thread.
//!
//! The HTTP/1 fast path ([`crate::l7::plain`]) speaks HTTP/1 on the socket itself, so its idle
//! connections are plain [`RawConn`]s in a second set of per-worker stacks, under the same
//! `idle_max` / `idle_timeout` (each set is bounded on its own).
//!
//! Hygiene (doc/lbd.md, "Upstream connection hygiene"): a byte no request asked for must
//! never be read as the next request's answer. A raw connection is pooled only when nothing
//! followed its response; while idle it is watched (its socket wakes [`BackendConns::idle_activity`],
//! and the backend's housekeeping task closes it at once); before reuse its socket is peeked.
//! hyper's connection task does the same for hyper connections (it ends on any idle byte).
//! Each discard is counted by reason (`BackendStats::conns_discarded`).
//!
//! Rules that keep reuse safe:
//! - A connection goes back only after its response body was read to the end without error
//!   ([`BackendConns::checkin`] is called by the response body wrapper in `l7/body.rs`). A
//!   connection that saw any error, a cancelled request or an upgrade is dropped, which
//!   closes it.
//! - LIFO: the most recently used connection is the least likely to have been closed by the
//!   backend's own idle timer. A race is still possible; `try_send_request` hands the request
//!   back when the connection died before it was written, and the proxy then resends it on a
//!   fresh connection without treating it as a backend failure.

use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{ErrorKind, ProxyError};
use crate::metrics::{inc, BackendStats, DiscardReason};
use crate::sync::lock;
use crate::upstream::backend::{Backend, ConnGuard};

/// The request body lbd sends upstream: buffered (replayable) or streamed from the client
/// (under the route's body limit).
pub type UpstreamBody = Either<Full<Bytes>, crate::l7::request_body::CappedBody>;

/// How long a pooled connection may take to become ready before it is given up.
const READY_WAIT: Duration = Duration::from_millis(100);

/// A connection ready to carry one request.
pub type Sender = SendRequest<UpstreamBody>;

/// How many idle slots a new [`BackendConns`] has: the number of worker threads.
static WORKER_COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// This thread's slot; threads that are not workers (control, tests) use slot 0.
    static WORKER_SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Set before any pool is built: one idle slot per worker thread.
pub fn set_worker_count(n: usize) {
    WORKER_COUNT.store(n.max(1), Ordering::Relaxed);
}

/// Called once on each worker thread with its index.
pub fn set_worker_slot(i: usize) {
    WORKER_SLOT.with(|s| s.set(i));
}

struct Idle {
    tx: Sender,
    since: Instant,
}

/// A keep-alive TCP connection to a backend for the HTTP/1 fast path. It counts as one of
/// the backend's open connections until dropped (which closes it).
pub struct RawConn {
    pub stream: TcpStream,
    _open: ConnGuard,
}

impl RawConn {
    /// Ask the reactor to wake `watch` when the backend sends or closes anything while the
    /// connection sits in the pool, so it is closed at once rather than at its next use.
    /// Done at check-in and again at each housekeeping pass (a wake-up uses the registration
    /// up). An error when something is already there: the connection must not be pooled.
    /// Costs no syscall unless the readiness says something arrived. Before reuse it runs with
    /// a no-op waker: a pooled connection was armed at check-in, so its readiness is exact up
    /// to the reactor's last poll. Bytes that arrive after that are not seen, nor would a
    /// syscall see bytes that arrive just after it: no proxy can tell those from the next
    /// request's answer.
    fn arm(&self, watch: &Waker) -> Result<(), DiscardReason> {
        let mut cx = Context::from_waker(watch);
        for _ in 0..2 {
            match self.stream.poll_read_ready(&mut cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(_)) => return Err(DiscardReason::IdleClosed),
                // Readiness can be stale (the last read filled its buffer, so tokio did not
                // clear it): look at the socket, which clears it when nothing is there, and
                // then the next poll registers the waker.
                Poll::Ready(Ok(())) => {
                    let peeked = self.stream.try_io(Interest::READABLE, || {
                        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                        socket2::SockRef::from(&self.stream).peek(&mut byte)
                    });
                    match peeked {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Ok(n) if n > 0 => return Err(DiscardReason::UnexpectedBytes),
                        _ => return Err(DiscardReason::IdleClosed),
                    }
                }
            }
        }
        // Readiness keeps saying yes with nothing there: don't trust the connection.
        Err(DiscardReason::IdleClosed)
    }
}

/// Wakes the backend's housekeeping task when an idle pooled connection becomes readable
/// (the reactor calls it; see [`RawConn::arm`]).
#[derive(Debug, Default)]
struct IdleWatch {
    readable: Notify,
}

impl Wake for IdleWatch {
    fn wake(self: Arc<Self>) {
        self.readable.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.readable.notify_one();
    }
}

struct RawIdle {
    conn: RawConn,
    since: Instant,
}

/// Idle keep-alive connections to one backend address.
pub struct BackendConns {
    pub addr: SocketAddr,
    /// One LIFO stack per worker thread (see the module docs).
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    /// The fast path's idle connections, per worker like `idle`.
    raw_idle: Box<[Mutex<VecDeque<RawIdle>>]>,
    /// Settings are atomics so a reload can change them on a pool that is carried over.
    idle_max: AtomicU32,
    idle_timeout_ms: AtomicU64,
    /// Shared with the hyper connections' driver tasks, which count their own discards.
    pub stats: Arc<BackendStats>,
    /// Woken when an idle fast-path connection becomes readable.
    watch: Arc<IdleWatch>,
    /// `watch` as a waker, made once: arming a connection then clones an `Arc`, no more.
    watch_waker: Waker,
    /// `[pool.tls]`: connections are TLS (`None`: plain TCP). Fixed for the life of this
    /// pool, so no plain connection is ever reused for a TLS pool.
    pub tls: Option<crate::upstream::tls::BackendTls>,
    /// HTTP/2 connections, for a pool with `protocol = "h2"` (empty otherwise).
    pub h2: crate::upstream::h2::H2Conns,
}

impl std::fmt::Debug for BackendConns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConns")
            .field("addr", &self.addr)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl BackendConns {
    /// A pool with one idle slot per worker thread ([`set_worker_count`]).
    pub fn new(addr: SocketAddr, idle_max: u32, idle_timeout: Duration) -> Self {
        Self::with_slots(
            addr,
            idle_max,
            idle_timeout,
            WORKER_COUNT.load(Ordering::Relaxed),
        )
    }

    /// A pool with `slots` idle slots (tests: without touching the process-wide count).
    pub fn with_slots(
        addr: SocketAddr,
        idle_max: u32,
        idle_timeout: Duration,
        slots: usize,
    ) -> Self {
        let watch = Arc::new(IdleWatch::default());
        BackendConns {
            watch_waker: Waker::from(Arc::clone(&watch)),
            watch,
            addr,
            idle: (0..slots.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            raw_idle: (0..slots.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
            idle_max: AtomicU32::new(idle_max),
            idle_timeout_ms: AtomicU64::new(idle_timeout.as_millis() as u64),
            stats: Arc::default(),
            tls: None,
            h2: Default::default(),
        }
    }

    pub fn configure(&self, idle_max: u32, idle_timeout: Duration) {
        self.idle_max.store(idle_max, Ordering::Relaxed);
        self.idle_timeout_ms
            .store(idle_timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms.load(Ordering::Relaxed))
    }

    /// The calling worker's slot.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        let i = WORKER_SLOT.with(Cell::get) % self.idle.len();
        lock(&self.idle[i])
    }

    fn lock_raw(&self) -> std::sync::MutexGuard<'_, VecDeque<RawIdle>> {
        let i = WORKER_SLOT.with(Cell::get) % self.raw_idle.len();
        lock(&self.raw_idle[i])
    }

    /// Idle connections over every worker's slot (both kinds).
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|m| lock(m).len()).sum::<usize>()
            + self.raw_idle.iter().map(|m| lock(m).len()).sum::<usize>()
    }

    /// The most recently used idle fast-path connection that is still open, clean and not
    /// expired at `now` (the caller's clock reading: the fast path reads the clock once per
    /// step).
    pub fn checkout_raw(&self, now: Instant) -> Option<RawConn> {
        let timeout = self.idle_timeout();
        let mut idle = self.lock_raw();
        while let Some(c) = idle.pop_back() {
            if now.duration_since(c.since) >= timeout {
                idle.clear();
                return None;
            }
            match c.conn.arm(futures::task::noop_waker_ref()) {
                Ok(()) => return Some(c.conn),
                Err(reason) => self.stats.discarded(reason),
            }
        }
        None
    }

    /// Return a fast-path connection whose response was read completely, with nothing after
    /// it, and which the backend did not ask to close; idle from `now`. It is watched while
    /// idle ([`RawConn::arm`]).
    pub fn checkin_raw(&self, conn: RawConn, now: Instant) {
        let max = self.idle_max.load(Ordering::Relaxed) as usize;
        if max == 0 {
            return;
        }
        if let Err(reason) = conn.arm(&self.watch_waker) {
            self.stats.discarded(reason);
            return;
        }
        let mut idle = self.lock_raw();
        if idle.len() >= max {
            idle.pop_front();
        }
        idle.push_back(RawIdle { conn, since: now });
    }

    /// Resolves when an idle fast-path connection became readable: call [`BackendConns::reap`].
    pub async fn idle_activity(&self) {
        self.watch.readable.notified().await;
    }

    /// A pooled fast-path connection (`reused = true`), else a new one. `fresh` skips the
    /// pool.
    pub async fn get_raw(
        &self,
        backend: &Arc<Backend>,
        connect_timeout: Duration,
        fresh: bool,
        now: Instant,
    ) -> Result<(RawConn, bool), ProxyError> {
        if self.tls.is_some() {
            // Never plaintext to a TLS backend: such requests are handed to hyper.
            return Err(ProxyError::new(ErrorKind::Connect)
                .with_source("the HTTP/1 fast path does not speak TLS to backends"));
        }
        if !fresh {
            if let Some(c) = self.checkout_raw(now) {
                return Ok((c, true));
            }
        }
        let stream = self.connect_tcp(connect_timeout).await?;
        inc(&self.stats.conns_new);
        Ok((
            RawConn {
                stream,
                _open: backend.conn_opened(),
            },
            false,
        ))
    }

    /// The most recently used idle connection that is still open and not expired.
    pub fn checkout(&self) -> Option<Sender> {
        let timeout = self.idle_timeout();
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(c) = idle.pop_back() {
            if now.duration_since(c.since) >= timeout {
                // Entries are pushed in time order: everything below is older still.
                idle.clear();
                return None;
            }
            if !c.tx.is_closed() {
                return Some(c.tx);
            }
        }
        None
    }

    /// Return a connection whose response was read completely.
    pub fn checkin(&self, tx: Sender) {
        if tx.is_closed() {
            return;
        }
        let max = self.idle_max.load(Ordering::Relaxed) as usize;
        let mut idle = self.lock();
        if idle.len() >= max {
            // Keep the newest: drop the oldest idle connection to make room.
            if max == 0 {
                return;
            }
            idle.pop_front();
        }
        idle.push_back(Idle {
            tx,
            since: Instant::now(),
        });
    }

    /// Drop expired and closed idle connections (called periodically by the checker task).
    pub fn reap(&self) {
        let timeout = self.idle_timeout();
        self.h2.reap(timeout);
        let now = Instant::now();
        for slot in self.idle.iter() {
            lock(slot).retain(|c| !c.tx.is_closed() && now.duration_since(c.since) < timeout);
        }
        for slot in self.raw_idle.iter() {
            lock(slot).retain(|c| {
                if now.duration_since(c.since) >= timeout {
                    return false;
                }
                // Re-armed on the way (the wake-up that brought us here used it up); a
                // syscall only for a connection whose readiness says something arrived.
                match c.conn.arm(&self.watch_waker) {
                    Ok(()) => true,
                    Err(reason) => {
                        self.stats.discarded(reason);
                        false
                    }
                }
            });
        }
    }

    /// Drop every idle connection (backend removed by a reload).
    pub fn clear(&self) {
        self.h2.clear();
        for slot in self.idle.iter() {
            lock(slot).clear();
        }
        for slot in self.raw_idle.iter() {
            lock(slot).clear();
        }
    }

    /// A ready pooled connection (`reused = true`), else a new one. `fresh` skips the pool
    /// (after a pooled connection turned out dead, don't try the next stale one).
    pub async fn get(
        &self,
        backend: &Arc<Backend>,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<(Sender, bool), ProxyError> {
        if !fresh {
            while let Some(mut tx) = self.checkout() {
                if tx.is_ready() {
                    return Ok((tx, true));
                }
                // Just checked in: the connection task may not have marked it idle yet.
                if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                    return Ok((tx, true));
                }
            }
        }
        Ok((self.connect(backend, connect_timeout).await?, false))
    }

    /// Open a new connection to `backend` within `timeout`.
    pub async fn connect(
        &self,
        backend: &Arc<Backend>,
        timeout: Duration,
    ) -> Result<Sender, ProxyError> {
        // The TLS handshake, if any, within the same connect timeout.
        let deadline = Instant::now() + timeout;
        let stream = self.connect_tcp(timeout).await?;
        let stream = crate::upstream::tls::secure(self.tls.as_ref(), stream, deadline).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::new(ErrorKind::Connect).with_source(e))?;
        let guard = backend.conn_opened();
        inc(&self.stats.conns_new);
        let stats = Arc::clone(&self.stats);
        let watch = Arc::clone(&self.watch);
        tokio::spawn(async move {
            // Runs until the connection closes: both halves of a keep-alive connection live
            // here, and `with_upgrades` lets a 101 response hand the socket to a tunnel.
            // hyper watches an idle connection itself: bytes that arrive while it waits for
            // the next request, or that are left over after a response, end it here with
            // an error (and `SendRequest::is_closed` keeps it out of the pool).
            if let Err(e) = conn.with_upgrades().await {
                if is_unexpected_message(&e) {
                    stats.discarded(DiscardReason::UnexpectedBytes);
                }
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
            drop(guard);
            // If it sat in the pool, the housekeeping task takes it out now.
            watch.wake_by_ref();
        });
        Ok(tx)
    }
}

impl BackendConns {
    pub(crate) async fn connect_tcp(&self, timeout: Duration) -> Result<TcpStream, ProxyError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ProxyError::new(ErrorKind::Connect).with_source(e)),
            Err(_) => return Err(ProxyError::new(ErrorKind::ConnectTimeout)),
        };
        // Requests and responses are small and latency-bound; Nagle only adds delay.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// hyper's error for bytes a client connection received that no request asked for. hyper
/// has no predicate for it (`Kind::UnexpectedMessage` is private), so its fixed description is
/// compared; the hygiene tests on the hyper path fail if hyper ever words it differently.
fn is_unexpected_message(e: &hyper::Error) -> bool {
    e.to_string() == "received unexpected message from connection"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend record for `addr` (id 0, weight 1, no connection cap).
    fn backend_at(addr: SocketAddr) -> Arc<Backend> {
        Arc::new(Backend::new(
            crate::upstream::backend::BackendId(0),
            crate::upstream::backend::BackendSpec {
                name: String::new(),
                addr,
                weight: 1,
                max_conns: 0,
            },
            Default::default(),
        ))
    }

    /// A backend on loopback that accepts and holds connections open without answering.
    async fn silent_backend() -> (SocketAddr, Arc<Backend>, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let backend = backend_at(addr);
        (addr, backend, accept)
    }

    #[tokio::test]
    async fn idle_connections_are_reused_lifo_bounded_and_expire() {
        let (addr, backend, accept) = silent_backend().await;
        let pool = BackendConns::new(addr, 2, Duration::from_millis(200));
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(
                pool.connect(&backend, Duration::from_secs(1))
                    .await
                    .expect("connect"),
            );
        }
        assert_eq!(backend.active_conns(), 3);
        for c in conns {
            pool.checkin(c);
        }
        assert_eq!(pool.idle_count(), 2, "bounded by idle_max");
        assert!(pool.checkout().is_some());
        assert_eq!(pool.idle_count(), 1);
        tokio::time::pause();
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(pool.checkout().is_none(), "expired");
        assert_eq!(pool.idle_count(), 0);
        accept.abort();
    }

    #[tokio::test]
    async fn each_worker_reuses_only_its_own_idle_connections() {
        let (addr, backend, accept) = silent_backend().await;
        let pool = Arc::new(BackendConns::with_slots(
            addr,
            4,
            Duration::from_secs(60),
            2,
        ));
        let tx = pool
            .connect(&backend, Duration::from_secs(1))
            .await
            .expect("connect");
        // This test's thread is not a worker: slot 0.
        pool.checkin(tx);
        assert_eq!(pool.idle_count(), 1);
        let other = Arc::clone(&pool);
        let seen_by_worker_1 = std::thread::spawn(move || {
            set_worker_slot(1);
            other.checkout().is_some()
        })
        .join()
        .expect("join");
        assert!(
            !seen_by_worker_1,
            "worker 1 must not take worker 0's connection"
        );
        assert_eq!(pool.idle_count(), 1);
        assert!(pool.checkout().is_some(), "worker 0 reuses its own");
        accept.abort();
    }

    /// A backend whose accepted sockets the test holds (to write to them).
    async fn held_backend() -> (
        Arc<Backend>,
        tokio::sync::mpsc::UnboundedReceiver<TcpStream>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let accept = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = tx.send(s);
            }
        });
        let backend = backend_at(addr);
        (backend, rx, accept)
    }

    fn discarded(pool: &BackendConns, reason: DiscardReason) -> u64 {
        pool.stats.conns_discarded[reason as usize].load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn an_idle_raw_connection_that_receives_bytes_is_dropped_at_once_and_counted() {
        let (backend, mut accepted, accept) = held_backend().await;
        let pool = BackendConns::new(backend.addr, 4, Duration::from_secs(60));
        let (conn, reused) = pool
            .get_raw(&backend, Duration::from_secs(1), false, Instant::now())
            .await
            .expect("connect");
        assert!(!reused);
        let mut far = accepted.recv().await.expect("accepted");
        pool.checkin_raw(conn, Instant::now());
        assert_eq!(pool.idle_count(), 1);
        // The backend speaks while nobody asked: the watcher wakes, a reap drops it.
        tokio::io::AsyncWriteExt::write_all(&mut far, b"HTTP/1.1 200 OK\r\n\r\n")
            .await
            .expect("write");
        tokio::time::timeout(Duration::from_secs(5), pool.idle_activity())
            .await
            .expect("the idle watcher is woken");
        pool.reap();
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(discarded(&pool, DiscardReason::UnexpectedBytes), 1);
        assert!(pool.checkout_raw(Instant::now()).is_none());

        // A backend close while idle: the same, counted as idle_closed.
        let (conn, _) = pool
            .get_raw(&backend, Duration::from_secs(1), false, Instant::now())
            .await
            .expect("connect");
        let far = accepted.recv().await.expect("accepted");
        pool.checkin_raw(conn, Instant::now());
        drop(far);
        tokio::time::timeout(Duration::from_secs(5), pool.idle_activity())
            .await
            .expect("the idle watcher is woken");
        pool.reap();
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(discarded(&pool, DiscardReason::IdleClosed), 1);
        accept.abort();
    }

    #[tokio::test]
    async fn bytes_already_there_keep_a_raw_connection_out_of_the_pool() {
        let (backend, mut accepted, accept) = held_backend().await;
        let pool = BackendConns::new(backend.addr, 4, Duration::from_secs(60));
        let (conn, _) = pool
            .get_raw(&backend, Duration::from_secs(1), false, Instant::now())
            .await
            .expect("connect");
        let mut far = accepted.recv().await.expect("accepted");
        tokio::io::AsyncWriteExt::write_all(&mut far, b"stray")
            .await
            .expect("write");
        // Wait until the bytes are there (the socket says so), then check in.
        tokio::time::timeout(Duration::from_secs(5), conn.stream.readable())
            .await
            .expect("readable")
            .expect("readable");
        pool.checkin_raw(conn, Instant::now());
        assert_eq!(pool.idle_count(), 0, "not pooled");
        assert_eq!(discarded(&pool, DiscardReason::UnexpectedBytes), 1);
        accept.abort();
    }
}
