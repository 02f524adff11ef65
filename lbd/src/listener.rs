//! Accepting client connections and serving HTTP on them.
//!
//! A [`RunningListener`] is one bound socket with an accept loop on every worker runtime; it
//! can be started and stopped at runtime (reload, and vrrpd's Master/Backup transitions):
//! stopping ends every worker's loop. Sockets are made with socket2 so `freebind = true` can
//! bind an address that is not local yet (a VIP still held by the peer) through IP_FREEBIND.
//!
//! Each accepted connection:
//! 1. takes a permit of `global.max_client_conns` *before* `accept`, so over the limit the
//!    kernel backlog queues new clients instead of lbd accepting and dropping them; then,
//!    accepted, a slot of `global.max_conns_per_client` for its IP ([`crate::client_cap`]):
//!    an address already at its cap has the connection closed at once, before any byte is
//!    read (counted, and logged at most once a second);
//! 2. gets a tracing span carrying `client.addr` and the listener name;
//! 3. is sniffed for the HTTP/2 prior-knowledge preface (h2c), else served as HTTP/1.1: by
//!    lbd's own engine ([`crate::l7::plain`], unless `global.http1_fast_path = false`) until a
//!    request it does not take, and from then on (or from the start) by hyper with its header
//!    read timeout (slowloris), `max_header_size` (431) and upgrades, through [`FramingIo`],
//!    which records the request framing hyper hides (CL+TE) for the proxy;
//! 4. is shut down gracefully on SIGTERM (hyper finishes the request in progress) or when it
//!    has been idle for `timeouts.client_idle_ms`.
//!
//! Note: hyper's header read timer also runs while a keep-alive connection waits for its next
//! request, so the effective keep-alive idle limit is `min(client_idle, request_header)`.

use futures::FutureExt;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::client_cap::{AtCap, ClientConns, ClientSlot};
use crate::config::ListenerConfig;
use crate::l7::client::{ActiveGauge, ConnCtx, ConnHold};
use crate::l7::ctx::ProxyCtx;
use crate::l7::framing::FramingIo;
use crate::l7::plain::client_io::ClientIo;
use crate::l7::plain::conn::{ConnLimits, Served};
use crate::l7::plain::prefixed::Prefixed;
use crate::tls::ListenerTls;

const BACKLOG: i32 = 1024;
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bind a listening socket (SO_REUSEADDR, optional IP_FREEBIND).
pub fn bind(cfg: &ListenerConfig) -> std::io::Result<TcpListener> {
    let addr = cfg.address;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if cfg.freebind {
        if addr.is_ipv4() {
            socket.set_freebind(true)?;
        } else {
            socket.set_freebind_ipv6(true)?;
        }
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// A listener accepting connections until [`RunningListener::stop`].
pub struct RunningListener {
    pub cfg: ListenerConfig,
    pub local_addr: SocketAddr,
    stop: CancellationToken,
    /// Its sender lives as long as the accept loop (and with it the socket).
    closed: tokio::sync::watch::Receiver<()>,
}

impl RunningListener {
    /// Stop accepting; the socket closes once the accept loop notices. Open connections
    /// are not affected.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Resolves once the accept loop has ended and the socket is closed: after it, a
    /// connection attempt is refused and the address can be bound again. The vrrp coupling
    /// acks "stopped serving" only then.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closed.clone();
        async move { while rx.changed().await.is_ok() {} }
    }
}

impl Drop for RunningListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What the listener reads besides its config: the request engine its connections run on, the
/// process-wide connection limits, and the worker runtimes it accepts on. `app` builds it.
pub struct ListenerCtx {
    pub engine: Arc<ProxyCtx>,
    /// `global.max_client_conns`, taken before each accept.
    pub conn_limit: Arc<Semaphore>,
    /// Open connections per client IP, for `global.max_conns_per_client`.
    pub client_conns: Arc<ClientConns>,
    /// The worker runtimes client connections run on; empty means the runtime that starts
    /// the listener (tests, embedding).
    pub workers: Vec<tokio::runtime::Handle>,
}

/// Bind and spawn the accept loops: one per worker runtime ([`ListenerCtx::workers`]), or one on
/// the current runtime when there are none.
///
/// All workers accept from the *same* socket (one `dup` each, registered in each worker's
/// own epoll) rather than from one SO_REUSEPORT socket each: the global
/// `max_client_conns` permit is taken before `accept`, and with per-worker sockets a worker
/// holding the last permit would sit on its own socket while clients the kernel hashed to
/// another worker's socket waited, unaccepted, for a permit. One shared accept queue has no
/// such corner, and binding once keeps address conflicts an error as before. Connections are
/// long-lived keep-alives, so the accept wake-ups it shares between workers are rare.
pub fn start(ctx: Arc<ListenerCtx>, cfg: ListenerConfig) -> std::io::Result<RunningListener> {
    let listener = bind(&cfg)?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let name: Arc<str> = Arc::from(cfg.name.as_str());
    let (closed_tx, closed) = tokio::sync::watch::channel(());
    // Every accept loop holds a clone; the channel closes once the last loop has returned.
    let closed_tx = Arc::new(closed_tx);
    if ctx.workers.is_empty() {
        let accepting = accept_loop(Arc::clone(&ctx), listener, name, stop.clone());
        tokio::spawn(async move {
            // accept_loop owns the socket: it is closed when the loop returns.
            accepting.await;
            drop(closed_tx);
        });
    } else {
        let std_listener = listener.into_std()?;
        let mut per_worker = Vec::with_capacity(ctx.workers.len());
        for handle in &ctx.workers {
            let dup = std_listener.try_clone()?;
            // Registers the socket with this worker's reactor.
            let _entered = handle.enter();
            per_worker.push((handle.clone(), TcpListener::from_std(dup)?));
        }
        drop(std_listener);
        for (handle, l) in per_worker {
            let accepting = accept_loop(Arc::clone(&ctx), l, Arc::clone(&name), stop.clone());
            let closed_tx = Arc::clone(&closed_tx);
            handle.spawn(async move {
                accepting.await;
                drop(closed_tx);
            });
        }
    }
    Ok(RunningListener {
        cfg,
        local_addr,
        stop,
        closed,
    })
}

async fn accept_loop(
    ctx: Arc<ListenerCtx>,
    listener: TcpListener,
    name: Arc<str>,
    stop: CancellationToken,
) {
    let shutdown = ctx.engine.shutdown.clone();
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&ctx.conn_limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stop.cancelled() => return drain_backlog(&ctx, &listener, &name),
            _ = shutdown.triggered() => return drain_backlog(&ctx, &listener, &name),
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return drain_backlog(&ctx, &listener, &name),
            _ = shutdown.triggered() => return drain_backlog(&ctx, &listener, &name),
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some(slot) = admit(&ctx, peer, &name) {
                    spawn_connection(&ctx, stream, peer, &name, permit, slot);
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning on a failing accept.
                warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection's slot under `global.max_conns_per_client`, or `None` when its address is
/// at the cap: the caller then drops (closes) the stream unread.
fn admit(ctx: &ListenerCtx, peer: SocketAddr, listener: &str) -> Option<ClientSlot> {
    let cap = ctx
        .engine
        .snapshot
        .load()
        .config
        .global
        .max_conns_per_client;
    match ctx.client_conns.try_acquire(peer.ip(), cap) {
        Ok(slot) => Some(slot),
        Err(AtCap) => {
            crate::metrics::inc(&ctx.engine.stats.client_conns_over_cap);
            OVER_CAP_LOG.note(|suppressed| {
                warn!(client = %peer.ip(), listener, cap, suppressed, "client at max_conns_per_client: connection closed")
            });
            None
        }
    }
}

/// Refused connections come in floods: one log line a second is enough to see one.
static OVER_CAP_LOG: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

/// The span every task serving a client connection runs in (a resumed one gets a new one).
fn conn_span(peer: SocketAddr, listener: &str) -> tracing::Span {
    info_span!("conn", client.addr = %peer, listener = %listener)
}

fn spawn_connection(
    ctx: &ListenerCtx,
    stream: TcpStream,
    peer: SocketAddr,
    name: &Arc<str>,
    permit: OwnedSemaphorePermit,
    slot: ClientSlot,
) {
    let span = conn_span(peer, name);
    // The slot lives as long as the connection (in its `Held`), whichever way it ends.
    ctx.engine.tracker.spawn(
        serve_connection(
            Arc::clone(&ctx.engine),
            stream,
            peer,
            Arc::clone(name),
            permit,
            slot,
        )
        .instrument(span),
    );
}

/// Most connections a stopping listener takes from its backlog.
const BACKLOG_DRAIN_MAX: usize = 1024;

/// A stopping listener first takes the connections the kernel has already completed: closing
/// it with them queued would reset them. (vrrpd removes the VIP before it tells lbd to stop,
/// so no new ones arrive meanwhile.) They are served like any other, and get
/// `Connection: close` from the drain.
fn drain_backlog(ctx: &ListenerCtx, listener: &TcpListener, name: &Arc<str>) {
    let mut taken = 0;
    while taken < BACKLOG_DRAIN_MAX {
        let Some(Ok((stream, peer))) = listener.accept().now_or_never() else {
            break;
        };
        // Over the global cap there is nothing better to do than let it go.
        let Ok(permit) = Arc::clone(&ctx.conn_limit).try_acquire_owned() else {
            break;
        };
        if let Some(slot) = admit(ctx, peer, name) {
            spawn_connection(ctx, stream, peer, name, permit, slot);
        }
        taken += 1;
    }
    if taken > 0 {
        debug!(listener = %name, taken, "took queued connections before closing the listener");
    }
}

/// Resolves once the connection has been idle for `limit`.
async fn idle_expired(ctx: &ConnCtx, limit: Duration) {
    loop {
        let wait = match ctx.idle_for() {
            Some(idle) if idle >= limit => return,
            Some(idle) => limit - idle,
            None => limit,
        };
        tokio::time::sleep(wait).await;
    }
}

/// Is this the HTTP/2 prior-knowledge preface? Peeks without consuming.
async fn sniff_h2(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: peek returns the same bytes at once, so wait for more.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Wakes a connection task on behalf of its control futures (shutdown, idleness, drain),
/// and records that one of them, not the connection, asked for the poll.
///
/// Why: a keep-alive connection's task is woken several times per request (client readable,
/// upstream response ready, writable...). Polling every control future on each of those
/// wake-ups (as `select!` does) costs a Notify lock per watch channel and a timer check each
/// time; with this flag they are polled only when one of them was actually woken.
#[derive(Default)]
struct ControlWake {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for ControlWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// What ended one poll of a driven connection.
enum Drive<T> {
    Done(T),
    /// Start a graceful close (SIGTERM, idleness). A draining VIP listener is not one: its
    /// connections, new ones included, are told `Connection: close` on their next response
    /// (make-before-break); a graceful close would drop a request still being read.
    Close(&'static str),
    /// SIGINT: drop the connection now.
    Fast,
}

/// Drive a connection future with graceful shutdown on SIGTERM and on idleness: `$graceful`
/// is called with the pinned future to ask it to close gracefully. Evaluates to the future's
/// output, or `None` after SIGINT dropped it.
macro_rules! drive {
    ($conn:expr, $engine:expr, $ctx:expr, $idle:expr, $graceful:expr) => {{
        let conn = $conn;
        let mut conn = pin!(conn);
        let shutdown = $engine.shutdown.clone();
        let mut triggered = pin!(shutdown.triggered());
        let mut fast = pin!(shutdown.fast());
        let mut idle = pin!(idle_expired(&$ctx, $idle));
        let control = Arc::new(ControlWake::default());
        // The first poll must register every control future.
        control.woken.store(true, Ordering::Relaxed);
        let control_waker = Waker::from(Arc::clone(&control));
        let mut closing = false;
        loop {
            let step = std::future::poll_fn(|cx| {
                if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Drive::Done(res));
                }
                control.task.register(cx.waker());
                if !control.woken.swap(false, Ordering::AcqRel) {
                    return Poll::Pending;
                }
                let mut ccx = Context::from_waker(&control_waker);
                if fast.as_mut().poll(&mut ccx).is_ready() {
                    return Poll::Ready(Drive::Fast);
                }
                // Each of these is polled until it completes once, then never again.
                if !closing {
                    if triggered.as_mut().poll(&mut ccx).is_ready() {
                        return Poll::Ready(Drive::Close("shutdown"));
                    }
                    if idle.as_mut().poll(&mut ccx).is_ready() {
                        return Poll::Ready(Drive::Close("idle"));
                    }
                }
                Poll::Pending
            })
            .await;
            match step {
                Drive::Done(res) => break Some(res),
                Drive::Close(why) => {
                    debug!(why, "closing the client connection gracefully");
                    closing = true;
                    ($graceful)(conn.as_mut());
                }
                Drive::Fast => break None,
            }
        }
    }};
}

/// Log how a hyper connection ended.
fn log_end<E: std::fmt::Display>(res: Option<Result<(), E>>) {
    if let Some(Err(e)) = res {
        debug!(error = %e, "client connection ended with an error");
    }
}

/// What a client connection's task (or its parked entry) carries: its context (which holds
/// its places under the caps, [`ConnHold`]) and the limits of the snapshot it was accepted
/// under.
pub struct Held {
    ctx: Arc<ConnCtx>,
    limits: ConnLimits,
    /// `timeouts.request_header` (hyper's header timer after a hand-off).
    request_header: Duration,
    /// `timeouts.client_idle` (graceful close of an idle connection).
    client_idle: Duration,
    /// While parked: the deadline the connection's next request head had.
    head_deadline: Option<tokio::time::Instant>,
}

/// Serve one client connection: the fast path first (when on), hyper for h2c and for
/// whatever the fast path hands over.
///
/// Memory: this future is the state a connection holds while it is served, and an async fn's
/// state is as large as its largest suspension point. So the hyper connections (h2c, or
/// HTTP/1 after a hand-off) are boxed, and a fast-path connection that stays idle leaves its
/// task altogether ([`crate::park`]).
async fn serve_connection(
    engine: Arc<ProxyCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    permit: OwnedSemaphorePermit,
    slot: ClientSlot,
) {
    engine
        .stats
        .client_conns_active
        .fetch_add(1, Ordering::Relaxed);
    crate::metrics::inc(&engine.stats.client_conns_total);
    let gauge = ActiveGauge::new(Arc::clone(&engine));
    let _ = stream.set_nodelay(true);
    let rt = engine.snapshot();
    let timeouts = rt.config.timeouts.clone();
    let limits = rt.config.limits.clone();
    let fast_path = rt.config.global.http1_fast_path;
    let tls = rt.tls.get(&*listener).map(|slot| slot.current());
    drop(rt);
    let local_port = stream.local_addr().map_or(0, |a| a.port());
    let hold = ConnHold::new(permit, slot, gauge);
    let held = |proto, client_cert| {
        let mut ctx = ConnCtx::new(peer, local_port, listener, hold);
        ctx.proto = proto;
        ctx.client_cert = client_cert;
        // The whole head (request line + headers); the proxy checks each part against
        // its own limit to answer 414 or 431.
        let max_head = limits.max_header_bytes + limits.max_request_line;
        Held {
            ctx: Arc::new(ctx),
            limits: ConnLimits {
                head_timeout: timeouts.request_header.min(timeouts.client_idle),
                max_head,
                body_timeout: timeouts.client_idle,
                park_after: PARK_AFTER,
            },
            request_header: timeouts.request_header,
            client_idle: timeouts.client_idle,
            head_deadline: None,
        }
    };
    if let Some(tls) = tls {
        let handshake_timeout = timeouts.request_header;
        let handshake = TlsHandshake {
            tls: &tls,
            timeout: handshake_timeout,
            fast_path,
        };
        return serve_tls(&engine, stream, handshake, |cert| held("https", cert)).await;
    }
    let is_h2 = match tokio::time::timeout(timeouts.request_header, sniff_h2(&stream)).await {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            debug!(error = %e, "client connection failed before a request");
            return;
        }
        Err(_) => {
            debug!("no request within the header timeout, closing");
            return;
        }
    };
    let held = held("http", None);
    if is_h2 {
        serve_h2(&engine, stream, &held).await;
    } else if fast_path {
        serve_fast(engine, stream, held).await;
    } else {
        serve_hyper_http1(&engine, stream, Bytes::new(), &held).await;
    }
}

/// How a TLS client connection starts.
struct TlsHandshake<'a> {
    tls: &'a ListenerTls,
    /// For the handshake (the header timeout).
    timeout: Duration,
    /// HTTP/1.1 goes to the fast path (`global.http1_fast_path`).
    fast_path: bool,
}

/// A TLS client connection: the handshake (within the header timeout), then HTTP/2 on hyper
/// or HTTP/1.1 on the fast path (or hyper with the fast path off) as ALPN chose. `held`
/// makes the connection's context once the client certificate, if any, is known.
async fn serve_tls(
    engine: &Arc<ProxyCtx>,
    stream: TcpStream,
    start: TlsHandshake<'_>,
    held: impl FnOnce(Option<Box<crate::tls::ClientCert>>) -> Held,
) {
    let TlsHandshake {
        tls,
        timeout,
        fast_path,
    } = start;
    let handshake = tls.acceptor.accept(stream);
    let stream = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            crate::metrics::inc(&engine.stats.tls_handshake_failures);
            debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            crate::metrics::inc(&engine.stats.tls_handshake_failures);
            debug!("no TLS handshake within the header timeout, closing");
            return;
        }
    };
    crate::metrics::inc(&engine.stats.tls_handshakes);
    crate::tls::tickets::ring().note_handshake(stream.get_ref().1);
    let client_cert = tls.subject_header.as_ref().map(|header| {
        Box::new(crate::tls::ClientCert {
            header: header.clone(),
            subject: crate::tls::client_subject(stream.get_ref().1),
        })
    });
    let held = held(client_cert);
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(engine, stream, &held).await;
    } else if fast_path {
        serve_fast(Arc::clone(engine), stream, held).await;
    } else {
        serve_hyper_http1(engine, stream, Bytes::new(), &held).await;
    }
}

/// How long a fast-path connection waits for its next request in its own task before it is
/// parked. Long enough that a client sending request after request never parks (parking and
/// resuming cost a task spawn), short enough that idle connections soon cost only their lot
/// entry.
const PARK_AFTER: Duration = Duration::from_millis(250);

/// The fast path, until the connection closes, hands over to hyper, or is parked (plain
/// connections only: an HTTPS one waits for its next request in its task).
async fn serve_fast<S: ClientIo>(engine: Arc<ProxyCtx>, stream: S, mut held: Held) {
    let closing = AtomicBool::new(false);
    let served = crate::l7::plain::conn::serve(
        &engine,
        &held.ctx,
        stream,
        &closing,
        held.limits,
        held.head_deadline.take(),
    );
    let graceful = |_: Pin<&mut _>| closing.store(true, Ordering::Release);
    match drive!(served, engine, held.ctx, held.client_idle, graceful) {
        Some(Served::Fallback { stream, buffered }) => {
            serve_hyper_http1(&engine, stream, buffered, &held).await
        }
        Some(Served::Parked { stream, deadline }) => {
            held.head_deadline = Some(deadline);
            park(&engine, stream, held, deadline);
        }
        Some(Served::Closed) | None => {}
    }
}

thread_local! {
    /// This worker thread's parking lot, made on its first park.
    static LOT: std::cell::RefCell<Option<Arc<crate::park::Lot<Held>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Leave an idle fast-path connection in this worker's lot until its client speaks again
/// (then it is served by a new task, under a new span) or its `deadline` passes.
fn park(engine: &Arc<ProxyCtx>, stream: TcpStream, held: Held, deadline: tokio::time::Instant) {
    let lot = LOT.with(|lot| {
        let mut lot = lot.borrow_mut();
        if lot.is_none() {
            *lot = new_lot(engine);
        }
        lot.clone()
    });
    match lot {
        Some(lot) => {
            lot.park(stream, held, deadline);
        }
        None => wait_unparked(engine, stream, held, deadline),
    }
}

/// Without a lot (its epoll instance could not be made: out of file descriptors), an idle
/// connection waits for its next request in a task of its own, as it did before parking.
fn wait_unparked(
    engine: &Arc<ProxyCtx>,
    stream: TcpStream,
    held: Held,
    deadline: tokio::time::Instant,
) {
    let engine = Arc::clone(engine);
    let span = conn_span(held.ctx.peer, &held.ctx.listener);
    let tracker = engine.tracker.clone();
    tracker.spawn(
        async move {
            if let Ok(Ok(())) = tokio::time::timeout_at(deadline, stream.readable()).await {
                serve_fast(engine, stream, held).await;
            }
        }
        .instrument(span),
    );
}

/// A lot for this worker, and its task (tracked, so a drain waits for it; it closes every
/// parked connection once shutdown begins: they are between requests).
fn new_lot(engine: &Arc<ProxyCtx>) -> Option<Arc<crate::park::Lot<Held>>> {
    let resume_engine = Arc::clone(engine);
    let made = crate::park::Lot::new(Box::new(move |stream, held: Held| {
        let span = conn_span(held.ctx.peer, &held.ctx.listener);
        let engine = Arc::clone(&resume_engine);
        resume_engine
            .tracker
            .spawn(serve_fast(engine, stream, held).instrument(span));
    }));
    let lot = match made {
        Ok(lot) => lot,
        Err(e) => {
            warn!(error = %e, "idle connections wait in their own tasks on this worker");
            return None;
        }
    };
    let driver = Arc::clone(&lot);
    let shutdown = engine.shutdown.clone();
    engine.tracker.spawn(async move {
        driver
            .run(async {
                shutdown.triggered().await;
            })
            .await;
    });
    Some(lot)
}

async fn serve_h2<S>(engine: &Arc<ProxyCtx>, stream: S, held: &Held)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &held.limits;
    let h2 = engine.snapshot().config.http2.clone();
    let watch = Arc::new(crate::l7::h2guard::Watch::default());
    let io = TokioIo::new(crate::l7::h2guard::H2Guard::new(
        stream,
        h2.max_resets_per_second,
        Arc::clone(&watch),
    ));
    // Boxed, like the HTTP/1 connection: see `serve_connection`'s docs.
    // hyper's h2 also bounds CONTINUATION frames by the header list size.
    let conn = Box::pin(
        http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_head as u32)
            .max_concurrent_streams(h2.max_concurrent_streams)
            .initial_stream_window_size(h2.initial_stream_window)
            .initial_connection_window_size(h2.initial_connection_window)
            .max_pending_accept_reset_streams(h2.max_pending_reset_streams as usize)
            .max_local_error_reset_streams(h2.max_local_error_reset_streams as usize)
            .serve_connection(io, service(engine, &held.ctx)),
    );
    let end = drive!(conn, engine, held.ctx, held.client_idle, |c: Pin<
        &mut Pin<Box<http2::Connection<_, _, _>>>,
    >| {
        c.get_mut().as_mut().graceful_shutdown()
    });
    if let Some(Err(e)) = &end {
        if let Some(cut) = watch.cut(e) {
            debug!(cause = cut.as_str(), "client HTTP/2 connection cut");
            engine.stats.http2_cuts.count(cut);
        }
    }
    log_end(end);
}

/// The hyper service every hyper connection of this client uses.
fn service(
    engine: &Arc<ProxyCtx>,
    ctx: &Arc<ConnCtx>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::l7::body::ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::l7::body::ProxyBody>, Infallible>>
                 + Send,
> + Clone {
    let engine = Arc::clone(engine);
    let ctx = Arc::clone(ctx);
    service_fn(move |req| {
        let engine = Arc::clone(&engine);
        let ctx = Arc::clone(&ctx);
        async move { Ok::<_, Infallible>(crate::l7::general::handle(engine, ctx, req).await) }
    })
}

/// hyper's HTTP/1 for the rest of the connection, starting with `buffered` (what the fast
/// path read but did not take).
async fn serve_hyper_http1<S>(engine: &Arc<ProxyCtx>, stream: S, buffered: Bytes, held: &Held)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let max_head = held.limits.max_head;
    // Watches the request framing hyper hides from the service (CL+TE, duplicate CL).
    let io = TokioIo::new(FramingIo::new(
        Prefixed::new(stream, buffered),
        Arc::clone(held.ctx.framing()),
        max_head,
    ));
    let conn = Box::pin(
        http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(held.request_header)
            .max_header_size(max_head)
            .keep_alive(true)
            .serve_connection(io, service(engine, &held.ctx))
            .with_upgrades(),
    );
    let end = drive!(conn, engine, held.ctx, held.client_idle, |c: Pin<
        &mut Pin<Box<hyper::server::conn::http1::UpgradeableConnection<_, _>>>,
    >| c
        .get_mut()
        .as_mut()
        .graceful_shutdown());
    if let Some(Err(e)) = &end {
        count_hyper_rejection(engine, e);
    }
    log_end(end);
}

/// hyper answers a head it cannot parse itself (400, or 431 over `max_header_size`: a
/// malformed request line or header, a `Transfer-Encoding` whose final coding is not
/// `chunked`, a bad `Content-Length`) and ends the connection with that error; the service
/// never sees the request, so it is counted here as the client error it is.
fn count_hyper_rejection(engine: &ProxyCtx, e: &hyper::Error) {
    if !e.is_parse() {
        return;
    }
    let kind = if e.is_parse_too_large() {
        crate::error::ErrorKind::HeadersTooLarge
    } else {
        crate::error::ErrorKind::BadRequest
    };
    debug!(error = %e, "request refused by hyper's parser");
    engine.stats.error(kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(address: &str, freebind: bool) -> ListenerConfig {
        ListenerConfig {
            name: "t".into(),
            address: address.parse().expect("addr"),
            freebind,
            vrrp_instance: None,
            tls: None,
        }
    }

    #[tokio::test]
    async fn freebind_binds_an_address_that_is_not_local() {
        // TEST-NET-1: never configured on this machine. Binding sends no traffic.
        let listener = bind(&cfg("192.0.2.123:0", true)).expect("IP_FREEBIND bind");
        assert_eq!(
            listener.local_addr().expect("addr").ip().to_string(),
            "192.0.2.123"
        );
        let nonlocal_allowed = std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .is_ok_and(|v| v.trim() == "1");
        if !nonlocal_allowed {
            assert!(bind(&cfg("192.0.2.123:0", false)).is_err());
        }
    }

    #[tokio::test]
    async fn h2_preface_is_sniffed_without_consuming() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        for (payload, want) in [
            (&H2_PREFACE[..], true),
            (&b"GET / HTTP/1.1\r\n\r\n"[..], false),
        ] {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            let (mut s, _) = l.accept().await.expect("accept");
            // Send the preface in two pieces to exercise the partial-preface wait.
            c.write_all(&payload[..3]).await.expect("write");
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                c.write_all(&payload[3..]).await.expect("write");
                c
            });
            assert_eq!(sniff_h2(&s).await.expect("sniff"), want);
            let _c = writer.await.expect("join");
            let mut first = [0u8; 3];
            s.read_exact(&mut first).await.expect("read");
            assert_eq!(&first, &payload[..3], "peek must not consume");
        }
    }
}
