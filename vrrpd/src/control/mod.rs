//! The control socket server: `vrrpd status`, and the ordered state stream lbd follows.
//!
//! The protocol itself (line-delimited JSON, [`Request`](shared::control::Request),
//! [`Response`], [`StateEvent`]) is in `shared::control`; this module serves it. It knows
//! nothing about the FSM: the daemon hands it a [`ControlHandle`], i.e. a `watch` of the
//! [`DaemonStatus`] snapshot and the `broadcast` sender its instances publish transitions on.
//!
//! Lifecycle:
//! - [`bind`] creates the parent directory (0750) if missing and refuses one that other
//!   users can enter or that someone else owns, removes a *stale* socket file (one nobody is
//!   listening on; a live one is an error, a non-socket file is never deleted), binds, and
//!   sets mode 0660. It is separate from [`serve`] so the daemon fails at startup, and tests
//!   know the socket is ready, before anything is spawned.
//! - [`serve`] accepts until shutdown is triggered, then stops accepting and removes the
//!   socket file (if it is still ours). Each accepted connection is identified with
//!   SO_PEERCRED and admitted against its uid's cap and, unless it is root or the lbd user,
//!   the shared pool of [`DEFAULT_MAX_CONNECTIONS`] (`access.rs`); a refused one gets an
//!   error line and is closed.
//! - Requests are checked against the peer's role ([`AccessPolicy`]): `status` for anyone,
//!   `subscribe` for root and the lbd user, `heartbeat` on the `"lbd"` subscription only,
//!   `switchover`/`resume` for root and the admin group; one `"lbd"` subscription at a time.
//!   A connection that sends no valid request within [`IDENTIFY_TIMEOUT`] is closed, and an
//!   operator connection idle for the policy's idle timeout too. Every refusal is counted
//!   per [`Refusal`] reason and shown in `status.control`.
//! - Each connection runs in its own task. Plain request connections end at shutdown.
//!   Subscribed connections keep streaming through a graceful shutdown, so lbd sees the
//!   final "initialize / shutdown" events; they end on a fast shutdown, when the client
//!   closes, when the event channel closes (every sender dropped), or when they lag.
//!
//! The stream on one connection, after `{"cmd":"subscribe","client":"lbd"}`:
//! 1. `{"type":"subscribed","next_seq":1}`;
//! 2. a snapshot: one [`StateEvent`] per instance with `reason: "snapshot"`, so a
//!    subscriber that connects late (or reconnects) learns the present;
//! 3. live events as the daemon broadcasts them, and `{"type":"alive"}` every half of the
//!    shortest advert interval (10..100 ms) so lbd can tell a hung vrrpd from a quiet one.
//!
//! Sequence numbers are per connection, start at 1 and grow by exactly 1 per event. The
//! daemon may put its own event id in the `seq` of the events it broadcasts (0 if unused);
//! the server renumbers them and remembers the mapping, so [`Subscribers`] can report, per
//! subscriber, the highest *daemon* event id acknowledged — what "lbd has acted on event N"
//! needs. Snapshot events count as the highest daemon id published before the snapshot.
//!
//! Robustness (all input is untrusted): a line that is not JSON or not a request gets a
//! `{"type":"error",...}` line and the connection is kept; a line over
//! `shared::control::MAX_LINE` gets an error line and the connection is closed; a write
//! that does not complete within [`WRITE_TIMEOUT`] closes the connection; a subscriber that
//! falls more than the broadcast capacity behind is closed (it reconnects and gets a fresh
//! snapshot). On a subscribed connection the server only ever writes [`StateEvent`] lines,
//! plus [`Response`] lines (which carry `"type"`) answering a bad or out-of-place request;
//! an `ack` gets no answer.
//!
//! Layout:
//! - this file: the public API ([`ControlHandle`], the operator command types, the
//!   constants), [`bind`] / [`bind_and_serve`] / [`serve`], [`ControlListener`] and the
//!   accept loop with its connection limit and socket-file cleanup;
//! - `connection.rs`: one connection's task: the reader, the request loop, the
//!   subscription stream (per-connection seq numbers, acks), heartbeats and operator
//!   commands;
//! - `cache.rs`: the snapshot cache (the last broadcast event of every instance), kept
//!   fresh by a background task;
//! - `subscribers.rs`: [`SubscriberInfo`] and the [`Subscribers`] table the daemon reads;
//! - `access.rs`: peers, roles, per-uid slots and refusal counters.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use shared::control::{write_message, DaemonStatus, Response, StateEvent};
use shared::shutdown::Shutdown;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn, Instrument};

mod access;
mod cache;
mod connection;
mod subscribers;

pub use access::{AccessError, AccessPolicy, Peer, Refusal, Refusals, IDENTIFY_TIMEOUT};
pub use subscribers::{SubscriberInfo, Subscribers};

use access::UidSlot;

use cache::{keep_cache_fresh, StateCache};
use connection::{connection, ConnCtx};

/// Connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// A client that doesn't read for this long is disconnected.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// `reason` of the events sent as the initial snapshot.
pub const SNAPSHOT_REASON: &str = "snapshot";
/// Socket file mode: the daemon's user and group (lbd) only.
const SOCKET_MODE: u32 = 0o660;
/// Mode of a socket directory we create: the daemon's user and group only.
const DIR_MODE: u32 = 0o750;
/// The client name lbd subscribes with: the lbd role, one connection at a time.
pub const LBD_CLIENT: &str = "lbd";

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
    pub reply: oneshot::Sender<Result<String, AdminError>>,
}

/// Why an operator command was not carried out (sent to the operator as the error message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("no instance named {0:?}")]
    UnknownInstance(String),
    #[error("no instance is master here")]
    NoMaster,
    /// Each failed instance's own reason.
    #[error("{}", .0.join("; "))]
    Switchover(Vec<String>),
}

/// Operator commands that change the daemon's behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    Switchover { instance: Option<String> },
    Resume { instance: Option<String> },
}

impl AdminCommand {
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Switchover { .. } => "switchover",
            AdminCommand::Resume { .. } => "resume",
        }
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
    policy: AccessPolicy,
    refusals: Arc<Refusals>,
}

impl ControlListener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subscriber table the server will maintain.
    pub fn subscribers(&self) -> Subscribers {
        self.subscribers.clone()
    }

    /// Change the limit of the shared pool (at least 1): connections of everybody but root
    /// and the lbd user.
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Set who may do what (default: root only, [`AccessPolicy::default`]).
    pub fn with_access(mut self, policy: AccessPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The refusal counters the server will maintain.
    pub fn refusals(&self) -> Arc<Refusals> {
        Arc::clone(&self.refusals)
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("control socket {}: {e}", path.display()))
}

/// Create the socket's directory, clear a stale socket, bind, and chmod 0660.
/// Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> io::Result<ControlListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(parent)
            .map_err(|e| with_path(path, e))?;
        check_directory(parent)?;
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
        policy: AccessPolicy::default(),
        refusals: Arc::default(),
    })
}

/// The socket's directory guards it: the socket's own mode is applied only after `bind`
/// created it, and a directory others can enter or write lets them reach (or replace) the
/// socket. So it must be owned by root or us, give others no access at all, and give group
/// access only to root's group or ours (`lbpair` under the shipped unit).
fn check_directory(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| with_path(dir, e))?;
    let mode = meta.mode() & 0o7777;
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let refuse = |why: String| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "control socket directory {} (mode {mode:04o}, owner uid {}): {why}; \
                 fix it with `chmod 0750 {}` (owner root or the daemon's user, group lbpair)",
                dir.display(),
                meta.uid(),
                dir.display()
            ),
        ))
    };
    if mode & 0o007 != 0 {
        return refuse("other users can access it (valid: no permission bits for others)".into());
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return refuse(format!(
            "owned by another user (valid: root or uid {euid}, the daemon)"
        ));
    }
    if mode & 0o070 != 0 && meta.gid() != 0 && meta.gid() != egid {
        return refuse(format!(
            "group {} can access it (valid: group root or gid {egid}, the daemon's, or no group bits)",
            meta.gid()
        ));
    }
    Ok(())
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
        policy: listener.policy.clone(),
        refusals: Arc::clone(&listener.refusals),
        slots: Arc::default(),
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
                    match admit(&stream, &ctx, &limit) {
                        Ok(admission) => {
                            let span = tracing::debug_span!("control", conn = next_conn, uid = admission.peer.uid);
                            tokio::spawn(
                                connection(stream, Arc::clone(&ctx), next_conn, shutdown.clone(), admission)
                                    .instrument(span),
                            );
                        }
                        Err(why) => {
                            tokio::spawn(refuse(stream, why.to_string()));
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

/// A connection's right to exist: who it is and the slots it holds (given back on drop).
pub(crate) struct Admission {
    pub(crate) peer: Peer,
    _uid_slot: UidSlot,
    _pool: Option<OwnedSemaphorePermit>,
}

/// Why a connection was refused at accept; the message is sent to the client.
#[derive(Debug, thiserror::Error)]
enum AdmitError {
    #[error("cannot identify the peer (SO_PEERCRED): {0}")]
    PeerCredentials(std::io::Error),
    #[error("uid {uid} already holds {max} control connections; try again later")]
    UidLimit { uid: u32, max: usize },
    #[error("too many control connections; try again later")]
    ConnectionLimit,
}

impl AdmitError {
    /// The reason counted in `vrrpd status`.
    fn refusal(&self) -> Refusal {
        match self {
            AdmitError::PeerCredentials(_) => Refusal::PeerCredentials,
            AdmitError::UidLimit { .. } => Refusal::UidLimit,
            AdmitError::ConnectionLimit => Refusal::ConnectionLimit,
        }
    }
}

/// Identify the peer and take its slots, or say why not (counted and logged).
fn admit(
    stream: &UnixStream,
    ctx: &ConnCtx,
    pool: &Arc<Semaphore>,
) -> Result<Admission, AdmitError> {
    let refused = |why: AdmitError, peer: Option<&Peer>| {
        ctx.refusals.record(why.refusal(), peer, &why.to_string());
        why
    };
    let peer = Peer::of(stream).map_err(|e| refused(AdmitError::PeerCredentials(e), None))?;
    let max = ctx.policy.max_per_uid;
    let Some(uid_slot) = ctx.slots.take(peer.uid, max) else {
        let uid = peer.uid;
        return Err(refused(AdmitError::UidLimit { uid, max }, Some(&peer)));
    };
    // Root and lbd have reserved room: other users can't crowd them out.
    let pool = if ctx.policy.has_reserved_slots(&peer) {
        None
    } else {
        let permit = Arc::clone(pool)
            .try_acquire_owned()
            .map_err(|_| refused(AdmitError::ConnectionLimit, Some(&peer)))?;
        Some(permit)
    };
    Ok(Admission {
        peer,
        _uid_slot: uid_slot,
        _pool: pool,
    })
}

async fn refuse(stream: UnixStream, message: String) {
    let (_, mut write) = stream.into_split();
    let msg = Response::Error { message };
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut write, &msg)).await;
}
