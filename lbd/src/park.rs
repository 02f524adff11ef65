//! Idle keep-alive client connections without a task: the parking lot.
//!
//! Why: most of a balancer's client connections are idle keep-alive connections (browsers and
//! mobile clients keep them open between clicks). As a task, an idle connection costs its
//! future's whole state, a task header, its timer and its tracing span: about 5 KiB here,
//! against under 1 KiB in nginx and HAProxy, whose idle connections are a socket in the
//! event loop and a small struct. So a connection that has waited a while for its next
//! request with no buffer (see `l7::plain::conn`) ends its task and leaves its socket and a few
//! handles here ([`Lot::park`]), on the worker thread that served it.
//!
//! How: each worker thread has one [`Lot`] and one task driving it. The lot has an epoll
//! instance of its own, and a parked socket leaves tokio's reactor for it: tokio keeps a
//! cache-line-aligned registration (about 256 bytes) per socket it watches, more than the
//! rest of a parked connection together, while the lot's epoll costs a few bytes of kernel
//! memory per socket and one registration in tokio for the whole lot. When the client sends
//! its next request (or closes), the lot's epoll becomes readable, the lot's task takes the
//! socket out, gives it back to tokio, and hands it to the lot's `resume` callback, which
//! spawns a fresh connection task. The lot also closes entries whose deadline passed (the
//! connection's keep-alive timeout), and on shutdown closes them all: they are between
//! requests, so nothing is cut off. Parking and resuming cost three `epoll_ctl` calls, paid
//! only by a connection that was idle for a while.
//!
//! The lot is generic over what a parked connection carries (`T`), so it knows nothing of
//! HTTP or of the listener: it is tested here with plain sockets.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::sync::lock;

/// Connections parked now, over every lot of the process (the `lbd_client_connections_parked`
/// gauge).
static PARKED: AtomicUsize = AtomicUsize::new(0);

/// Connections parked now, over every lot.
pub fn parked() -> usize {
    PARKED.load(Ordering::Relaxed)
}

/// The `lbd_client_connections_parked` gauge.
pub fn render_metrics(e: &mut crate::metrics::Exposition) {
    e.family(
        "lbd_client_connections_parked",
        "gauge",
        "Idle keep-alive client connections parked without a task (a subset of lbd_client_connections).",
    );
    e.sample("lbd_client_connections_parked", &[], parked());
}

/// What a lot does with a socket that became readable: serve it again.
pub type Resume<T> = Box<dyn Fn(TcpStream, T) + Send + Sync>;

/// Events taken from the lot's epoll per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 64;

/// One worker's parked connections.
pub struct Lot<T> {
    inner: Mutex<Inner<T>>,
    /// Watches the parked sockets; its own descriptor is the one thing tokio watches.
    epoll: AsyncFd<LotEpoll>,
    /// Wakes the lot's task when a park brought the next deadline forward.
    deadline_moved: Notify,
    resume: Resume<T>,
}

struct Inner<T> {
    entries: Slab<Entry<T>>,
    /// Deadlines, earliest first; an item whose entry has moved on is skipped (lazy deletion).
    expiry: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Tells a key's current entry from an earlier one that used the same slot.
    next_generation: u32,
    /// After shutdown nothing is parked any more: the socket is closed instead.
    closed: bool,
    /// When the lot's task will next look at deadlines (`None`: it waits for wake-ups only).
    next_wake: Option<Instant>,
}

impl<T> Inner<T> {
    /// A resumed entry leaves its deadline in the heap until it reaches the top. A client that
    /// pauses just past the park threshold between requests parks on every one, so the heap
    /// is rebuilt once stale items outnumber live entries.
    fn drop_stale_deadlines(&mut self) {
        if self.expiry.len() <= 2 * self.entries.len() + 64 {
            return;
        }
        let entries = &self.entries;
        self.expiry.retain(|Reverse((_, key, generation))| {
            entries
                .get(*key)
                .is_some_and(|e| e.generation == *generation)
        });
    }
}

struct Entry<T> {
    /// Out of tokio's reactor while parked (see the module docs).
    stream: std::net::TcpStream,
    held: T,
    generation: u32,
}

/// What [`Lot::park`] did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Waiting for the client's next bytes.
    Waiting,
    /// Bytes (or a close) were already there: served again at once.
    Resumed,
    /// The lot is shut down, or the socket failed: the connection was closed.
    Closed,
}

/// Why a lot could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LotError {
    #[error("creating the parking lot's epoll instance: {0}")]
    Create(#[from] nix::Error),
    #[error("registering the parking lot's epoll instance with tokio: {0}")]
    Register(#[from] std::io::Error),
}

/// The lot's epoll instance, as tokio's `AsyncFd` wants it.
struct LotEpoll(Epoll);

impl AsRawFd for LotEpoll {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0 .0.as_raw_fd()
    }
}

/// Watch `epoll` with tokio's reactor. `AsyncFd::new` is deprecated because it is unsound
/// for a value whose descriptor may change or close while registered; its replacement is an
/// `unsafe fn` stating that contract, and lbd forbids `unsafe`. The contract holds here by
/// construction: the `AsyncFd` owns the `Epoll`, whose `OwnedFd` never changes and closes
/// only when the `AsyncFd` (after deregistering) drops it.
#[allow(deprecated)]
fn watch(epoll: Epoll) -> std::io::Result<AsyncFd<LotEpoll>> {
    AsyncFd::with_interest(LotEpoll(epoll), tokio::io::Interest::READABLE)
}

/// An entry's key and generation, as the epoll event's user data.
fn token(key: usize, generation: u32) -> u64 {
    ((key as u64) << 32) | u64::from(generation)
}

fn untoken(data: u64) -> (usize, u32) {
    ((data >> 32) as usize, data as u32)
}

impl<T: Send + 'static> Lot<T> {
    /// Must be called on the runtime that drives the lot.
    pub fn new(resume: Resume<T>) -> Result<Arc<Self>, LotError> {
        let epoll = watch(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?)?;
        Ok(Arc::new(Lot {
            inner: Mutex::new(Inner {
                entries: Slab::new(),
                expiry: BinaryHeap::new(),
                next_generation: 0,
                closed: false,
                next_wake: None,
            }),
            epoll,
            deadline_moved: Notify::new(),
            resume,
        }))
    }

    /// Park `stream` until the client sends something, or until `deadline` (then it is
    /// closed). Must be called on the runtime that drives the lot.
    pub fn park(&self, stream: TcpStream, held: T, deadline: Instant) -> Parked {
        let mut inner = lock(&self.inner);
        if inner.closed {
            return Parked::Closed;
        }
        match has_input(&stream) {
            Ok(false) => {}
            Ok(true) => {
                drop(inner);
                (self.resume)(stream, held);
                return Parked::Resumed;
            }
            Err(_) => return Parked::Closed,
        }
        let Ok(stream) = stream.into_std() else {
            return Parked::Closed;
        };
        let generation = inner.next_generation;
        inner.next_generation = generation.wrapping_add(1);
        let key = inner.entries.vacant_key();
        // One-shot: the first readiness takes the socket out, and nothing fires again until
        // it is parked anew. Level-triggered, so bytes that came after the peek above fire
        // at once.
        let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT;
        if self
            .epoll
            .get_ref()
            .0
            .add(&stream, EpollEvent::new(interest, token(key, generation)))
            .is_err()
        {
            return Parked::Closed;
        }
        let inserted = inner.entries.insert(Entry {
            stream,
            held,
            generation,
        });
        debug_assert_eq!(inserted, key, "the lock is held since vacant_key");
        PARKED.fetch_add(1, Ordering::Relaxed);
        inner.expiry.push(Reverse((deadline, key, generation)));
        inner.drop_stale_deadlines();
        if inner.next_wake.is_none_or(|at| deadline < at) {
            // The lot's task sleeps past this deadline: have it look again.
            inner.next_wake = Some(deadline);
            drop(inner);
            self.deadline_moved.notify_one();
        }
        Parked::Waiting
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        lock(&self.inner).entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drive the lot until `stop` resolves; then close every parked connection and refuse
    /// new ones.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            self.resume_ready();
            let next = self.expire(Instant::now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut stop => break,
                guard = self.epoll.readable() => {
                    if let Ok(mut guard) = guard {
                        // Take everything that is ready now; readiness that arrives after
                        // this survives `clear_ready` (tokio compares ticks).
                        self.resume_ready();
                        guard.clear_ready();
                    }
                }
                _ = self.deadline_moved.notified() => {}
                _ = sleep => {}
            }
        }
        let mut inner = lock(&self.inner);
        inner.closed = true;
        PARKED.fetch_sub(inner.entries.len(), Ordering::Relaxed);
        inner.entries.clear();
        inner.expiry.clear();
    }

    /// Hand every readable entry back to `resume`.
    fn resume_ready(&self) {
        let mut events = [EpollEvent::empty(); EVENTS_PER_WAIT];
        loop {
            let n = self
                .epoll
                .get_ref()
                .0
                .wait(&mut events, EpollTimeout::ZERO)
                .unwrap_or(0);
            for event in &events[..n] {
                let (key, generation) = untoken(event.data());
                if let Some((stream, held)) = self.take(key, generation) {
                    (self.resume)(stream, held);
                }
            }
            if n < EVENTS_PER_WAIT {
                return;
            }
        }
    }

    /// Take an entry out of the lot and give its socket back to tokio; `None` for a late
    /// event (the entry already expired or was resumed) or a socket tokio refuses (closed).
    fn take(&self, key: usize, generation: u32) -> Option<(TcpStream, T)> {
        let entry = {
            let mut inner = lock(&self.inner);
            match inner.entries.get(key) {
                Some(e) if e.generation == generation => {}
                _ => return None,
            }
            PARKED.fetch_sub(1, Ordering::Relaxed);
            inner.entries.remove(key)
        };
        // Out of the lot's epoll, so the socket can be parked again later.
        let _ = self.epoll.get_ref().0.delete(&entry.stream);
        let stream = TcpStream::from_std(entry.stream).ok()?;
        Some((stream, entry.held))
    }

    /// Close entries whose deadline is at or before `now`; the next deadline, if any.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut inner = lock(&self.inner);
        while let Some(&Reverse((at, key, generation))) = inner.expiry.peek() {
            let current = inner
                .entries
                .get(key)
                .is_some_and(|e| e.generation == generation);
            if current && at > now {
                inner.next_wake = Some(at);
                return Some(at);
            }
            inner.expiry.pop();
            if current {
                // Dropping the socket closes the idle connection (a FIN, as a keep-alive
                // timeout should) and takes it out of the epoll.
                inner.entries.remove(key);
                PARKED.fetch_sub(1, Ordering::Relaxed);
            }
        }
        inner.next_wake = None;
        None
    }
}

/// Whether the client already sent something (or closed): a non-blocking `MSG_PEEK`.
fn has_input(stream: &TcpStream) -> std::io::Result<bool> {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A lot whose `resume` sends the socket (and its tag) to a channel.
    fn lot() -> (
        Arc<Lot<u32>>,
        tokio::sync::mpsc::UnboundedReceiver<(TcpStream, u32)>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let lot = Lot::new(Box::new(move |s, tag| {
            let _ = tx.send((s, tag));
        }))
        .expect("epoll");
        (lot, rx)
    }

    async fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn a_parked_socket_comes_back_when_its_client_writes_and_not_before() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (lot, mut resumed) = lot();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let driver = tokio::spawn({
            let lot = Arc::clone(&lot);
            async move {
                lot.run(async {
                    let _ = stop_rx.await;
                })
                .await
            }
        });
        let mut clients = Vec::new();
        for tag in 0..50u32 {
            let (client, server) = pair(&listener).await;
            let far = Instant::now() + Duration::from_secs(60);
            assert_eq!(lot.park(server, tag, far), Parked::Waiting);
            clients.push(client);
        }
        assert_eq!(lot.len(), 50);
        // Client 7 speaks: exactly its socket comes back, with its bytes.
        clients[7]
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let (mut s, tag) = tokio::time::timeout(Duration::from_secs(5), resumed.recv())
            .await
            .expect("resumed in time")
            .expect("resumed");
        assert_eq!(tag, 7);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(lot.len(), 49);
        assert!(resumed.try_recv().is_err(), "nothing else came back");
        // Shutdown closes every parked connection: each client reads EOF.
        let _ = stop_tx.send(());
        driver.await.expect("driver");
        assert!(lot.is_empty());
        for (i, c) in clients.iter_mut().enumerate() {
            if i == 7 {
                continue;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("closed in time")
                .expect("read");
            assert_eq!(n, 0, "client {i} sees the close");
        }
        // After shutdown nothing is parked.
        let (_c, server) = pair(&listener).await;
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(lot.park(server, 99, far), Parked::Closed);
    }

    #[tokio::test]
    async fn a_socket_with_bytes_waiting_is_resumed_at_once_and_deadlines_close_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (lot, mut resumed) = lot();
        let (mut eager, server) = pair(&listener).await;
        eager.write_all(b"x").await.expect("write");
        // Let the byte arrive and the reactor see it.
        let server = server;
        tokio::time::timeout(Duration::from_secs(5), server.readable())
            .await
            .expect("readable")
            .expect("readable");
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(lot.park(server, 1, far), Parked::Resumed);
        assert_eq!(resumed.try_recv().expect("resumed").1, 1);

        let driver = tokio::spawn({
            let lot = Arc::clone(&lot);
            async move { lot.run(std::future::pending()).await }
        });
        let closes = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for (tag, ms) in [(2u32, 50u64), (3, 100), (4, 60_000)] {
            let (mut client, server) = pair(&listener).await;
            assert_eq!(
                lot.park(server, tag, Instant::now() + Duration::from_millis(ms)),
                Parked::Waiting
            );
            let closes = Arc::clone(&closes);
            readers.push(tokio::spawn(async move {
                let mut b = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_secs(3), client.read(&mut b)).await
                {
                    closes.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for r in readers {
            r.await.expect("reader");
        }
        assert_eq!(
            closes.load(Ordering::SeqCst),
            2,
            "the two expired ones closed"
        );
        assert_eq!(lot.len(), 1, "the one with a far deadline stays");
        assert!(resumed.try_recv().is_err());
        driver.abort();
    }

    #[tokio::test]
    async fn a_connection_parked_again_and_again_leaves_no_pile_of_deadlines() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let (lot, mut resumed) = lot();
        let driver = tokio::spawn({
            let lot = Arc::clone(&lot);
            async move { lot.run(std::future::pending()).await }
        });
        let (mut client, mut server) = pair(&listener).await;
        let far = Instant::now() + Duration::from_secs(60);
        for round in 0..300u32 {
            assert_eq!(lot.park(server, round, far), Parked::Waiting);
            client.write_all(b"x").await.expect("write");
            let (mut s, tag) = tokio::time::timeout(Duration::from_secs(5), resumed.recv())
                .await
                .expect("resumed in time")
                .expect("resumed");
            assert_eq!(tag, round);
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.expect("read"), 1);
            server = s;
        }
        let stale = lock(&lot.inner).expiry.len();
        assert!(stale <= 2 * lot.len() + 65, "{stale} deadlines kept");
        driver.abort();
    }
}
