//! The control socket server: `vrrpd status`, and the ordered state stream lbd follows.
//!
//! The protocol itself (line-delimited JSON, [`Request`], [`Response`], [`StateEvent`]) is
//! in `shared::control`; this module serves it. It knows nothing about the FSM: the daemon
//! hands it a [`ControlHandle`], i.e. a `watch` of the [`DaemonStatus`] snapshot and the
//! `broadcast` sender its instances publish transitions on.
//!
//! Lifecycle:
//! - [`bind`] creates the parent directory, removes a *stale* socket file (one nobody is
//!   listening on; a live one is an error, a non-socket file is never deleted), binds, and
//!   sets mode 0660. It is separate from [`serve`] so the daemon fails at startup, and tests
//!   know the socket is ready, before anything is spawned.
//! - [`serve`] accepts until shutdown is triggered, then stops accepting and removes the
//!   socket file (if it is still ours). At most [`DEFAULT_MAX_CONNECTIONS`] connections are
//!   served at once; one more gets an error line and is closed.
//! - Each connection runs in its own task. Plain request connections end at shutdown.
//!   Subscribed connections keep streaming through a graceful shutdown, so lbd sees the
//!   final "initialize / shutdown" events; they end on a fast shutdown, when the client
//!   closes, when the event channel closes (every sender dropped), or when they lag.
//!
//! The stream on one connection, after `{"cmd":"subscribe","client":"lbd"}`:
//! 1. `{"type":"subscribed","next_seq":1}`;
//! 2. a snapshot: one [`StateEvent`] per instance with `reason: "snapshot"`, so a
//!    subscriber that connects late (or reconnects) learns the present;
//! 3. live events as the daemon broadcasts them.
//!
//! Sequence numbers are per connection, start at 1 and grow by exactly 1 per event. The
//! daemon may put its own event id in the `seq` of the events it broadcasts (0 if unused);
//! the server renumbers them and remembers the mapping, so [`Subscribers`] can report, per
//! subscriber, the highest *daemon* event id acknowledged — what "lbd has acted on event N"
//! needs. Snapshot events count as the highest daemon id published before the snapshot.
//!
//! A state may be delivered twice (in the snapshot and again live) when a transition races
//! the subscription; states are idempotent, so clients need not care. The snapshot prefers
//! the last *broadcast* state of an instance over the (periodically refreshed) status, so a
//! transition is never missed between a status refresh and a subscription.
//!
//! Robustness (all input is untrusted): a line that is not JSON or not a request gets a
//! `{"type":"error",...}` line and the connection is kept; a line over
//! `shared::control::MAX_LINE` gets an error line and the connection is closed; a write
//! that does not complete within [`WRITE_TIMEOUT`] closes the connection; a subscriber that
//! falls more than the broadcast capacity behind is closed (it reconnects and gets a fresh
//! snapshot). On a subscribed connection the server only ever writes [`StateEvent`] lines,
//! plus [`Response`] lines (which carry `"type"`) answering a bad or out-of-place request;
//! an `ack` gets no answer.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shared::control::{
    read_message, write_message, ControlError, DaemonStatus, Heartbeat, Request, Response,
    StateEvent, MAX_LINE,
};
use shared::shutdown::Shutdown;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn, Instrument};

/// Connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A client that doesn't read for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// `reason` of the events sent as the initial snapshot.
pub const SNAPSHOT_REASON: &str = "snapshot";
/// Unacknowledged events remembered per subscriber for the seq -> event id mapping; older
/// ones are forgotten (their acks then count for the newest id remembered before them).
const MAX_PENDING: usize = 4096;
/// Socket file mode: the daemon's user and group (lbd) only.
const SOCKET_MODE: u32 = 0o660;

/// What the daemon provides to the server.
pub struct ControlHandle {
    /// The latest status snapshot, answered to `status` and used for the subscribe snapshot.
    pub status: watch::Receiver<DaemonStatus>,
    /// Where instances broadcast transitions. `seq` is the daemon's event id (0 if unused);
    /// the server renumbers per connection. The server keeps only a weak reference, so the
    /// channel closes (and subscribers are told by EOF) once the daemon drops its senders.
    pub events: broadcast::Sender<StateEvent>,
    /// Where operator commands (switchover, resume) go; `None` answers them with an error.
    pub admin: Option<mpsc::Sender<AdminRequest>>,
}

/// An operator command for the daemon, with the channel its answer goes back on.
#[derive(Debug)]
pub struct AdminRequest {
    pub command: AdminCommand,
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Operator commands that change the daemon's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Switchover { instance: Option<String> },
    Resume { instance: Option<String> },
}

/// How long a CLI command may take: a switchover drains lbd first.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// One subscriber's progress, as seen by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// The `client` name given in `subscribe` (e.g. "lbd").
    pub client: String,
    /// Highest per-connection seq sent (0 before the first event).
    pub sent_seq: u64,
    /// Highest per-connection seq acknowledged (cumulative).
    pub acked_seq: u64,
    /// Highest daemon event id covered by the acknowledgements.
    pub acked_event: u64,
    /// The latest heartbeat (lbd's health report) and when it arrived.
    pub heartbeat: Option<Heartbeat>,
    pub heartbeat_at: Option<tokio::time::Instant>,
}

/// The live subscribers, keyed by connection number. Cheap to clone; the daemon gets one
/// from [`ControlListener::subscribers`] before handing the listener to [`serve`].
#[derive(Clone)]
pub struct Subscribers {
    tx: Arc<watch::Sender<BTreeMap<u64, SubscriberInfo>>>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            tx: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }
}

impl Subscribers {
    /// A receiver that changes whenever a subscriber connects, is sent an event, acks, or
    /// leaves. Use `wait_for` on it to wait for a condition.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<u64, SubscriberInfo>> {
        self.tx.subscribe()
    }

    /// The current subscribers.
    pub fn list(&self) -> Vec<(u64, SubscriberInfo)> {
        self.tx
            .borrow()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Wait until some subscriber named `client` has acknowledged daemon event `event_id`
    /// (or a later one). Never resolves if no such subscriber appears: wrap it in a timeout.
    pub async fn wait_acked(&self, client: &str, event_id: u64) {
        let mut rx = self.watch();
        // The sender lives in `self`, so `wait_for` can't fail while we wait.
        let _ = rx
            .wait_for(|subs| {
                subs.values()
                    .any(|s| s.client == client && s.acked_event >= event_id)
            })
            .await;
    }

    fn update(&self, conn: u64, f: impl FnOnce(&mut SubscriberInfo)) {
        self.tx.send_modify(|subs| {
            if let Some(info) = subs.get_mut(&conn) {
                f(info);
            }
        });
    }
}

/// A bound control socket, not yet serving.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
    /// (dev, ino) of the socket file we created, so we only ever remove our own.
    identity: Option<(u64, u64)>,
    subscribers: Subscribers,
    max_connections: usize,
}

impl ControlListener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subscriber table the server will maintain.
    pub fn subscribers(&self) -> Subscribers {
        self.subscribers.clone()
    }

    /// Change the connection limit (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
}

/// Create the socket's directory, clear a stale socket, bind, and chmod 0660.
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<ControlListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| with_path(path, e))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "control socket {}: the path exists and is not a socket; not removing it",
                    path.display()
                ),
            ));
        }
        Ok(_) => {
            // A socket file: live if someone accepts on it, stale (left by a crash) if not.
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "control socket {}: another daemon is listening on it",
                        path.display()
                    ),
                ));
            }
            debug!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path).map_err(|e| with_path(path, e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(with_path(path, e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| with_path(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .map_err(|e| with_path(path, e))?;
    let identity = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    Ok(ControlListener {
        listener,
        path: path.to_path_buf(),
        identity,
        subscribers: Subscribers::default(),
        max_connections: DEFAULT_MAX_CONNECTIONS,
    })
}

/// Bind and serve in one call (for callers that don't need the [`Subscribers`] table).
pub async fn bind_and_serve(
    path: &Path,
    handle: ControlHandle,
    shutdown: Shutdown,
) -> io::Result<()> {
    let listener = bind(path)?;
    serve(listener, handle, shutdown).await;
    Ok(())
}

/// Serve the control socket until `shutdown` is triggered, then stop accepting and remove
/// the socket file. Subscribed connections outlive this (see the module docs).
///
/// Not an `async fn` on purpose: the event receivers are created when `serve` is *called*,
/// not when the returned future is first polled, so a transition broadcast between
/// `tokio::spawn(serve(..))` and the task's first run still reaches the snapshot cache.
pub fn serve(
    listener: ControlListener,
    handle: ControlHandle,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let ControlHandle {
        status,
        events,
        admin,
    } = handle;
    let cache = Arc::new(StateCache::new(events.subscribe()));
    let wake = events.subscribe();
    let ctx = Arc::new(ConnCtx {
        status,
        events: events.downgrade(),
        cache: Arc::clone(&cache),
        subscribers: listener.subscribers.clone(),
        admin,
    });
    // Only the weak reference stays: the daemon's senders decide when the stream ends.
    drop(events);
    accept_loop(listener, ctx, cache, wake, shutdown)
}

async fn accept_loop(
    listener: ControlListener,
    ctx: Arc<ConnCtx>,
    cache: Arc<StateCache>,
    wake: broadcast::Receiver<StateEvent>,
    shutdown: Shutdown,
) {
    let waker = tokio::spawn(keep_cache_fresh(cache, wake));
    let limit = Arc::new(Semaphore::new(listener.max_connections));
    let mut next_conn: u64 = 0;
    info!(path = %listener.path.display(), "control socket listening");
    loop {
        tokio::select! {
            _ = shutdown.triggered() => break,
            accepted = listener.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    next_conn += 1;
                    match Arc::clone(&limit).try_acquire_owned() {
                        Ok(permit) => {
                            let span = tracing::debug_span!("control", conn = next_conn);
                            tokio::spawn(
                                connection(stream, Arc::clone(&ctx), next_conn, shutdown.clone(), permit)
                                    .instrument(span),
                            );
                        }
                        Err(_) => {
                            warn!(limit = listener.max_connections, "control connection refused: too many connections");
                            tokio::spawn(refuse(stream));
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    waker.abort();
    remove_if_ours(&listener.path, listener.identity);
    debug!("control socket closed");
}

fn remove_if_ours(path: &Path, identity: Option<(u64, u64)>) {
    let current = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if current.is_some() && current == identity {
        let _ = std::fs::remove_file(path);
    }
}

async fn refuse(stream: UnixStream) {
    let (_, mut write) = stream.into_split();
    let msg = Response::Error {
        message: "too many control connections; try again later".into(),
    };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut write, &msg)).await;
}

/// What every connection task shares.
struct ConnCtx {
    status: watch::Receiver<DaemonStatus>,
    events: broadcast::WeakSender<StateEvent>,
    cache: Arc<StateCache>,
    subscribers: Subscribers,
    admin: Option<mpsc::Sender<AdminRequest>>,
}

/// The last broadcast event of every instance, for the subscribe snapshot.
///
/// It holds its own receiver, drained synchronously when a snapshot is taken. A connection
/// subscribes its live receiver *first* and drains the cache *second*, so every event is
/// either in the snapshot or on the live receiver (or both), never in neither. A
/// background task drains it after each broadcast too, so it doesn't lag when nobody
/// subscribes for a long time.
struct StateCache {
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    rx: broadcast::Receiver<StateEvent>,
    latest: BTreeMap<String, StateEvent>,
    max_id: u64,
}

impl StateCache {
    fn new(rx: broadcast::Receiver<StateEvent>) -> Self {
        StateCache {
            inner: Mutex::new(CacheInner {
                rx,
                latest: BTreeMap::new(),
                max_id: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // A panic while holding this lock can't leave the map inconsistent (each update is
        // one insert), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(inner: &mut CacheInner) {
        loop {
            match inner.rx.try_recv() {
                Ok(ev) => {
                    inner.max_id = inner.max_id.max(ev.seq);
                    inner.latest.insert(ev.instance.clone(), ev);
                }
                Err(TryRecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "control state cache lagged; the status snapshot fills the gap"
                    );
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    fn refresh(&self) {
        Self::drain(&mut self.lock());
    }

    /// One event per instance describing its present state, and the highest daemon event
    /// id they cover.
    fn snapshot(&self, status: &DaemonStatus) -> (Vec<StateEvent>, u64) {
        let mut inner = self.lock();
        Self::drain(&mut inner);
        let mut out = Vec::new();
        for inst in &status.instances {
            let cached = inner
                .latest
                .get(&inst.name)
                .filter(|e| e.vrid == inst.vrid && e.interface == inst.interface);
            let ev = match cached {
                Some(e) => StateEvent {
                    seq: 0,
                    instance: e.instance.clone(),
                    vrid: e.vrid,
                    interface: e.interface.clone(),
                    // The broadcast state is never older than the status refresh.
                    priority: if e.state == inst.state {
                        inst.priority
                    } else {
                        e.priority
                    },
                    state: e.state.clone(),
                    vips: e.vips.clone(),
                    reason: SNAPSHOT_REASON.into(),
                    draining: e.draining,
                    master_down_ms: e.master_down_ms,
                },
                None => StateEvent {
                    seq: 0,
                    instance: inst.name.clone(),
                    vrid: inst.vrid,
                    interface: inst.interface.clone(),
                    state: inst.state.clone(),
                    priority: inst.priority,
                    vips: inst.vips.clone(),
                    reason: SNAPSHOT_REASON.into(),
                    draining: false,
                    master_down_ms: 0,
                },
            };
            out.push(ev);
        }
        // Instances that broadcast but aren't in the status yet (started by a reload since
        // the last refresh), or any more (their last event says where they ended).
        for (name, e) in &inner.latest {
            if !status.instances.iter().any(|i| &i.name == name) {
                let mut e = e.clone();
                e.seq = 0;
                e.reason = SNAPSHOT_REASON.into();
                out.push(e);
            }
        }
        (out, inner.max_id)
    }
}

async fn keep_cache_fresh(cache: Arc<StateCache>, mut wake: broadcast::Receiver<StateEvent>) {
    loop {
        match wake.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => cache.refresh(),
            Err(RecvError::Closed) => return,
        }
    }
}

/// What the reader task passes to the connection loop.
enum Inbound {
    Request(Request),
    Malformed(String),
    TooLong,
}

/// Reads requests on its own, because `read_message` is not cancel-safe: inside a
/// `select!` with the event stream, a partly read line would be lost.
async fn read_loop(read: OwnedReadHalf, tx: mpsc::Sender<Inbound>) {
    let mut reader = BufReader::new(read);
    loop {
        let item = match read_message::<_, Request>(&mut reader).await {
            Ok(Some(req)) => Inbound::Request(req),
            Ok(None) => return,
            Err(ControlError::Malformed(e)) => Inbound::Malformed(e.to_string()),
            Err(ControlError::LineTooLong) => {
                let _ = tx.send(Inbound::TooLong).await;
                return;
            }
            Err(e) => {
                debug!(error = %e, "control connection read failed");
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// A subscribed connection's state.
struct Subscription {
    rx: broadcast::Receiver<StateEvent>,
    /// Last per-connection seq sent.
    sent: u64,
    acked: u64,
    /// (per-connection seq, daemon event id) of sent, unacknowledged events.
    pending: VecDeque<(u64, u64)>,
}

/// Aborts the reader task and forgets the subscriber when the connection ends, however it
/// ends.
struct ConnGuard {
    reader: tokio::task::JoinHandle<()>,
    subscribers: Subscribers,
    conn: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.reader.abort();
        let conn = self.conn;
        self.subscribers
            .tx
            .send_if_modified(|subs| subs.remove(&conn).is_some());
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Result<StateEvent, RecvError> {
    match sub {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send<T: serde::Serialize>(write: &mut OwnedWriteHalf, msg: &T) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, write_message(write, msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "control connection write failed");
            false
        }
        Err(_) => {
            warn!("control client not reading; closing its connection");
            false
        }
    }
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

async fn connection(
    stream: UnixStream,
    ctx: Arc<ConnCtx>,
    conn: u64,
    shutdown: Shutdown,
    _permit: OwnedSemaphorePermit,
) {
    let (read, mut write) = stream.into_split();
    let (in_tx, mut in_rx) = mpsc::channel(8);
    let _guard = ConnGuard {
        reader: tokio::spawn(read_loop(read, in_tx).in_current_span()),
        subscribers: ctx.subscribers.clone(),
        conn,
    };
    let mut sub: Option<Subscription> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.fast() => break,
            _ = shutdown.triggered(), if sub.is_none() => break,
            inbound = in_rx.recv() => {
                let keep = match inbound {
                    None => false,
                    Some(Inbound::TooLong) => {
                        let _ = send(&mut write, &error(format!(
                            "request longer than {MAX_LINE} bytes; closing the connection"
                        ))).await;
                        false
                    }
                    Some(Inbound::Malformed(why)) => {
                        debug!(error = %why, "malformed control request");
                        send(&mut write, &error(format!(
                            "malformed request: {why} (valid: {{\"cmd\":\"status\"}}, {{\"cmd\":\"subscribe\",\"client\":NAME}}, {{\"cmd\":\"ack\",\"seq\":N}}, {{\"cmd\":\"heartbeat\",...}}, {{\"cmd\":\"switchover\"}}, {{\"cmd\":\"resume\"}})"
                        ))).await
                    }
                    Some(Inbound::Request(req)) => {
                        handle_request(req, &ctx, conn, &mut sub, &mut write).await
                    }
                };
                if !keep {
                    break;
                }
            }
            event = next_event(&mut sub) => {
                let Some(s) = sub.as_mut() else { break };
                match event {
                    Ok(ev) => {
                        if !send_event(s, ev, &ctx.subscribers, conn, &mut write).await {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "control subscriber fell behind; closing it so it resubscribes");
                        break;
                    }
                    Err(RecvError::Closed) => {
                        debug!("event stream ended; closing subscriber");
                        break;
                    }
                }
            }
        }
    }
    if sub.is_some() {
        info!("control subscriber disconnected");
    }
}

/// Handle one request; `false` closes the connection.
async fn handle_request(
    req: Request,
    ctx: &ConnCtx,
    conn: u64,
    sub: &mut Option<Subscription>,
    write: &mut OwnedWriteHalf,
) -> bool {
    match req {
        Request::Status => {
            let status = ctx.status.borrow().clone();
            send(write, &Response::Status(status)).await
        }
        Request::Subscribe { client } => {
            if sub.is_some() {
                return send(write, &error("already subscribed on this connection")).await;
            }
            let Some(events) = ctx.events.upgrade() else {
                return send(write, &error("vrrpd is shutting down")).await;
            };
            // Order matters: live receiver first, snapshot second (see StateCache).
            let rx = events.subscribe();
            drop(events);
            let status = ctx.status.borrow().clone();
            let (snapshot, snapshot_id) = ctx.cache.snapshot(&status);
            info!(client = %client, instances = snapshot.len(), "control subscriber connected");
            ctx.subscribers.tx.send_modify(|subs| {
                subs.insert(
                    conn,
                    SubscriberInfo {
                        client,
                        sent_seq: 0,
                        acked_seq: 0,
                        // Nothing to acknowledge yet means caught up.
                        acked_event: if snapshot.is_empty() { snapshot_id } else { 0 },
                        heartbeat: None,
                        heartbeat_at: None,
                    },
                );
            });
            let s = sub.insert(Subscription {
                rx,
                sent: 0,
                acked: 0,
                pending: VecDeque::new(),
            });
            if !send(write, &Response::Subscribed { next_seq: 1 }).await {
                return false;
            }
            for mut ev in snapshot {
                ev.seq = snapshot_id;
                if !send_event(s, ev, &ctx.subscribers, conn, write).await {
                    return false;
                }
            }
            true
        }
        Request::Ack { seq } => {
            let Some(s) = sub.as_mut() else {
                return send(write, &error("ack without subscribe")).await;
            };
            if seq > s.sent {
                return send(
                    write,
                    &error(format!(
                        "ack of seq {seq}, but the last seq sent is {}",
                        s.sent
                    )),
                )
                .await;
            }
            if seq <= s.acked {
                // Cumulative: an old or repeated ack changes nothing.
                return true;
            }
            s.acked = seq;
            let mut acked_event = None;
            while let Some(&(pseq, id)) = s.pending.front() {
                if pseq > seq {
                    break;
                }
                acked_event = Some(acked_event.map_or(id, |a: u64| a.max(id)));
                s.pending.pop_front();
            }
            ctx.subscribers.update(conn, |info| {
                info.acked_seq = seq;
                if let Some(id) = acked_event {
                    info.acked_event = info.acked_event.max(id);
                }
            });
            true
        }
        Request::Heartbeat(hb) => {
            if sub.is_none() {
                return send(write, &error("heartbeat without subscribe")).await;
            }
            let now = tokio::time::Instant::now();
            ctx.subscribers.update(conn, |info| {
                info.heartbeat = Some(hb);
                info.heartbeat_at = Some(now);
            });
            // Proof of life for lbd, which cannot otherwise tell a hung vrrpd from a quiet one.
            send(write, &Response::Alive).await
        }
        Request::Switchover { instance } => {
            admin(ctx, write, AdminCommand::Switchover { instance }).await
        }
        Request::Resume { instance } => admin(ctx, write, AdminCommand::Resume { instance }).await,
    }
}

/// Pass an operator command to the daemon and answer with its outcome.
async fn admin(ctx: &ConnCtx, write: &mut OwnedWriteHalf, command: AdminCommand) -> bool {
    let Some(tx) = ctx.admin.as_ref() else {
        return send(write, &error("this daemon does not take commands")).await;
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(AdminRequest { command, reply }).await.is_err() {
        return send(write, &error("vrrpd is shutting down")).await;
    }
    let response = match tokio::time::timeout(ADMIN_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => Response::Done { message },
        Ok(Ok(Err(message))) => Response::Error { message },
        Ok(Err(_)) => error("the daemon dropped the command"),
        Err(_) => error("the command did not finish in time"),
    };
    send(write, &response).await
}

/// Number an event for this connection, remember its daemon id, and write it.
async fn send_event(
    s: &mut Subscription,
    mut ev: StateEvent,
    subscribers: &Subscribers,
    conn: u64,
    write: &mut OwnedWriteHalf,
) -> bool {
    s.sent += 1;
    let daemon_id = ev.seq;
    ev.seq = s.sent;
    if s.pending.len() >= MAX_PENDING {
        s.pending.pop_front();
    }
    s.pending.push_back((s.sent, daemon_id));
    let sent = s.sent;
    subscribers.update(conn, |info| info.sent_seq = sent);
    send(write, &ev).await
}
