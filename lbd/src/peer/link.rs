//! The link task: one TCP connection to the peer node at a time, pumping bytes between the
//! socket and the sans-IO [`Replicator`], which owns everything the protocol means (HELLO,
//! resync, ACK, RESUME, keepalive). This file owns only what touches the OS: sockets,
//! timers, the tie-break between two simultaneous connections (see the module docs of
//! [`super`]), and applying drains learned from the peer to the local backends.
//!
//! Loop invariants:
//! - at most one connection (`conn`) is fed to the replicator; any other is closed;
//! - an accepted connection gets no byte from us before its first message (the dialer's
//!   HELLO) has verified and is not a replay: a source outside `peer.allow_from` is closed at
//!   once, and up to [`MAX_PENDING_HANDSHAKES`] others each get [`FIRST_MESSAGE_TIMEOUT`] to
//!   send it, read by a task of their own, so a stranger can neither hold a slot nor block
//!   the real peer's handshake; only then does the tie-break see the connection;
//! - bytes the replicator produced are written in order from `conn.out`, and new ones are
//!   asked for only while `out` is below `OUT_HIGH`, so a full resync to a slow peer
//!   waits on the socket instead of piling up in memory;
//! - reads and writes are both driven by readiness in one `select!`, so two nodes streaming a
//!   resync at each other cannot deadlock on full socket buffers;
//! - our TLS ticket keys ([`crate::tls::tickets`]) go to the peer once per session as soon as
//!   it is authenticated, and again whenever they change (checked every tick); the peer's
//!   are merged into the ring as they arrive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::peer::auth::Role;
use shared::peer::frame;
use shared::peer::replicator::{Phase, ReplicatorConfig};
use shared::peer::ProtocolError;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{LinkView, PeerHandle, Replicator};
use crate::clock;
use crate::l7::ctx::ProxyCtx;

/// Ask the replicator for more frames only while fewer bytes than this wait for the socket.
const OUT_HIGH: usize = 256 * 1024;
/// How often local changes are collected while connected. A change made by a worker (a sticky
/// entry learned) reaches the peer within this plus one round trip; an operator drain
/// [`PeerHandle::kick`]s the link and goes at once.
const TICK_CONNECTED: Duration = Duration::from_millis(5);
/// While disconnected, changes only feed the replicator's coalescing dirty set.
const TICK_IDLE: Duration = Duration::from_millis(100);
/// While the socket is backed up, how often the replicator's timers are checked anyway.
const BACKPRESSURE_WAKE: Duration = Duration::from_millis(50);
/// Read buffer size.
const READ_CHUNK: usize = 64 * 1024;
/// An accepted connection that has not sent a complete first message by then is closed.
pub const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(1);
/// Accepted connections waiting for their first message at most; more are closed at once.
/// Well above the one the real peer needs, so a handful of strangers cannot crowd it out.
pub const MAX_PENDING_HANDSHAKES: usize = 16;
/// Refusals before the handshake are logged at warn at most this often (each is counted).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What the task reading an accepted connection's first message reports.
enum FirstMessage {
    /// The connection sent a complete first frame (form checked, MAC not yet).
    Complete {
        stream: TcpStream,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    /// It did not: `reason` is a label of [`super::REJECT_REASONS`].
    Refused {
        remote: SocketAddr,
        reason: &'static str,
        error: String,
    },
}

/// One TCP connection being fed to the replicator.
struct Conn {
    stream: TcpStream,
    role: Role,
    remote: SocketAddr,
    /// Bytes produced by the replicator, not yet written.
    out: Vec<u8>,
    /// HELLOs exchanged and the session key confirmed (the replicator says connected).
    established: bool,
}

/// Bind the peer listener, before lbd reports ready (so `/readyz` means it is up). A
/// failure is logged and returned as `None`: the link task then retries every second.
pub async fn bind_listener(peer: &PeerHandle) -> Option<TcpListener> {
    let listen = peer.config().listen;
    match TcpListener::bind(listen).await {
        Ok(l) => Some(l),
        Err(e) => {
            warn!(%listen, error = %e, "peer link: cannot listen yet; retrying every second");
            None
        }
    }
}

fn log_listening(cfg: &crate::config::peer::PeerConfig) {
    info!(
        node_id = %cfg.node_id,
        peer_node_id = %cfg.peer_node_id,
        listen = %cfg.listen,
        peer = %cfg.peer,
        "peer link listening"
    );
}

/// The link task: runs until a fast shutdown or the end of the process. `bound` is the
/// listener [`bind_listener`] got, if any.
pub async fn run(engine: Arc<ProxyCtx>, peer: PeerHandle, bound: Option<TcpListener>) {
    let cfg = peer.config().clone();
    let boot_id: u64 = rand::random();
    let mut rc = ReplicatorConfig::new(
        cfg.cluster_id.clone(),
        cfg.node_id.clone(),
        cfg.peer_node_id.clone(),
        cfg.psk.0.clone(),
        boot_id,
    );
    // Not persisted: the boot id already tells the peer we restarted (so it resyncs us).
    rc.epoch = 0;
    rc.schema_hash = super::schema_hash();
    rc.resync_rate_per_s = cfg.resync_rate;
    rc.ping_interval = cfg.ping;
    // "A peer silent for 3 × ping_ms is dropped"; the handshake gets the same allowance.
    rc.idle_timeout = cfg.ping * 3;
    rc.handshake_timeout = (cfg.ping * 3).max(Duration::from_secs(1));
    let mut repl = match Replicator::new(rc) {
        Ok(r) => r,
        Err(e) => {
            // The config validation rules out every cause; say so loudly if one slips by.
            warn!(error = %e, "peer link: cannot start the replicator; link disabled");
            peer.publish(LinkView {
                phase: Phase::Cold,
                last_error: Some(format!("replicator: {e}")),
                ..LinkView::default()
            });
            return;
        }
    };
    let mut link = Link {
        engine,
        peer,
        lower: cfg.node_id.as_bytes() < cfg.peer_node_id.as_bytes(),
        last_phase: Phase::Cold,
        conn: None,
        stats: Counters::default(),
        warm_deadline: Some(Instant::now() + cfg.warm_timeout),
        warm_by_timeout: false,
        last_error: None,
        generation: 0,
        pending: 0,
        last_refusal_log: None,
        tickets_sent: None,
    };
    let (dial_tx, mut dial_rx) = mpsc::channel::<std::io::Result<TcpStream>>(1);
    // Never full: at most MAX_PENDING_HANDSHAKES readers exist, each sends once.
    let (first_tx, mut first_rx) = mpsc::channel::<FirstMessage>(MAX_PENDING_HANDSHAKES);
    let mut dialing = false;
    let mut dial_failures = 0u32;
    let mut next_dial = Instant::now();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tick = tokio::time::interval(TICK_CONNECTED);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_ticks = 0u32;
    // Not listening (the port is taken) only stops the peer from dialing us; we still dial
    // it, and the warm timeout still runs. The bind is retried every second.
    let mut listener: Option<TcpListener> = bound;
    if listener.is_some() {
        log_listening(&cfg);
    }
    let mut next_bind = Instant::now();
    let mut bind_failures = 0u32;
    let mut accept_pause_until = Instant::now();
    loop {
        link.pump(&mut repl);
        link.publish(&repl);
        let want_write = link.conn.as_ref().is_some_and(|c| !c.out.is_empty());
        let backpressured = link.conn.as_ref().is_some_and(|c| c.out.len() >= OUT_HIGH);
        let mut wake = repl
            .poll_timeout()
            .map(|at| Instant::now() + at.saturating_sub(clock::now()));
        if backpressured {
            // The replicator has frames ready but we won't take them until the socket drains
            // (the writable branch); its deadlines (idle, handshake) can wait a little.
            wake = wake.map(|w| w.max(Instant::now() + BACKPRESSURE_WAKE));
        }
        let can_dial = link.conn.is_none() && !dialing;
        tokio::select! {
            _ = link.engine.shutdown.fast() => break,
            _ = tokio::time::sleep_until(next_bind), if listener.is_none() => {
                match TcpListener::bind(cfg.listen).await {
                    Ok(l) => {
                        log_listening(&cfg);
                        listener = Some(l);
                    }
                    Err(e) => {
                        if bind_failures.is_multiple_of(60) {
                            warn!(listen = %cfg.listen, error = %e, "peer link: cannot listen; retrying every second");
                        }
                        bind_failures = bind_failures.wrapping_add(1);
                        link.last_error = Some(format!("cannot listen on {}: {e}", cfg.listen));
                        next_bind = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
            accepted = accept(&listener), if Instant::now() >= accept_pause_until => match accepted {
                Ok((stream, remote)) => link.accepted(stream, remote, &first_tx),
                Err(e) => {
                    // E.g. out of file descriptors: don't spin on it (the tick wakes us).
                    warn!(error = %e, "peer link: accept failed");
                    accept_pause_until = Instant::now() + Duration::from_millis(50);
                }
            },
            _ = tokio::time::sleep_until(next_dial), if can_dial => {
                dialing = true;
                let tx = dial_tx.clone();
                let to = cfg.peer;
                let limit = cfg.reconnect.max(Duration::from_secs(1));
                tokio::spawn(async move {
                    let r = match tokio::time::timeout(limit, TcpStream::connect(to)).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        )),
                    };
                    let _ = tx.send(r).await;
                });
            }
            Some(first) = first_rx.recv() => link.first_message(&mut repl, first),
            dialed = dial_rx.recv() => {
                dialing = false;
                next_dial = Instant::now() + cfg.reconnect;
                match dialed {
                    Some(Ok(stream)) => {
                        let remote = stream.peer_addr().unwrap_or(cfg.peer);
                        dial_failures = 0;
                        link.offer(&mut repl, stream, remote, Role::Dialer, &[]);
                    }
                    Some(Err(e)) => {
                        // Once per outage (and every 100th try), not every reconnect_ms.
                        if dial_failures.is_multiple_of(100) {
                            debug!(peer = %cfg.peer, error = %e, failures = dial_failures + 1, "peer link: dial failed");
                        }
                        dial_failures = dial_failures.wrapping_add(1);
                        link.last_error = Some(format!("dial {}: {e}", cfg.peer));
                    }
                    None => {}
                }
            }
            readable = readable(&link.conn) => {
                match readable {
                    Ok(()) => link.read(&mut repl, &mut buf),
                    Err(e) => link.close(&mut repl, &format!("read: {e}"), None),
                }
                if link.conn.is_none() {
                    next_dial = Instant::now() + cfg.reconnect;
                }
            }
            writable = writable(&link.conn), if want_write => {
                match writable {
                    Ok(()) => link.write(&mut repl),
                    Err(e) => link.close(&mut repl, &format!("write: {e}"), None),
                }
                if link.conn.is_none() {
                    next_dial = Instant::now() + cfg.reconnect;
                }
            }
            _ = sleep_until_opt(wake) => {
                if let Err(e) = repl.handle_timeout(clock::now()) {
                    link.fail(&mut repl, &e);
                    next_dial = Instant::now() + cfg.reconnect;
                }
            }
            _ = sleep_until_opt(link.warm_deadline) => {
                link.warm_deadline = None;
                if repl.phase() == Phase::Warm {
                    // Synced in time: nothing to do.
                } else if link.established() {
                    // A resync is under way: give it another period rather than report warm
                    // with half a table. If the link drops, the next deadline finds it down.
                    link.warm_deadline = Some(Instant::now() + cfg.warm_timeout);
                } else {
                    warn!(
                        warm_timeout_ms = cfg.warm_timeout.as_millis() as u64,
                        peer = %cfg.peer,
                        "peer unreachable since start: reporting warm without its state"
                    );
                    repl.mark_warm_without_peer();
                    link.warm_by_timeout = true;
                }
            }
            _ = tick.tick() => {
                // Off-link, collect changes ten times less often: they only coalesce.
                idle_ticks = idle_ticks.wrapping_add(1);
                let every = (TICK_IDLE.as_millis() / TICK_CONNECTED.as_millis()) as u32;
                if link.established() || idle_ticks.is_multiple_of(every) {
                    link.note_local_changes(&mut repl);
                    link.reapply_drains_after_reload();
                    link.send_ticket_keys(&mut repl);
                }
            }
            _ = link.peer.kicked() => link.note_local_changes(&mut repl),
        }
    }
    if link.conn.is_some() {
        // Tell the peer why (best effort: one non-blocking write), so it logs a close
        // rather than waiting for its idle timeout.
        repl.close("shutting down");
        link.pump(&mut repl);
        link.close(&mut repl, "shutting down", None);
    }
    info!("peer link stopped");
}

/// Counters kept at the socket, cumulative over connections.
#[derive(Default)]
struct Counters {
    bytes_sent: u64,
    bytes_received: u64,
    connects: u64,
}

struct Link {
    engine: Arc<ProxyCtx>,
    peer: PeerHandle,
    /// Our node id sorts below the peer's: connections we dial win the tie-break.
    lower: bool,
    /// The phase last published, to log each change once.
    last_phase: Phase,
    conn: Option<Conn>,
    stats: Counters,
    warm_deadline: Option<Instant>,
    warm_by_timeout: bool,
    last_error: Option<String>,
    /// The config generation whose backends have the soft state's drains applied.
    generation: u64,
    /// Accepted connections whose first message is being read.
    pending: usize,
    /// When a refusal before the handshake was last logged at warn.
    last_refusal_log: Option<Instant>,
    /// The generation of our ticket keys sent on the current session (`None`: not yet).
    tickets_sent: Option<u64>,
}

impl Link {
    fn established(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.established)
    }

    /// A connection to our listener: refused at once unless its source is allowed and a
    /// pending slot is free; else a task reads its first message (we send nothing).
    fn accepted(&mut self, stream: TcpStream, remote: SocketAddr, tx: &mpsc::Sender<FirstMessage>) {
        let ip = remote.ip().to_canonical();
        if !self
            .peer
            .config()
            .allow_from
            .iter()
            .any(|n| n.contains(&ip))
        {
            drop(stream);
            self.refuse(
                remote,
                "wrong_source",
                "source address not in peer.allow_from",
            );
            return;
        }
        if self.pending >= MAX_PENDING_HANDSHAKES {
            drop(stream);
            self.refuse(
                remote,
                "over_cap",
                &format!("{MAX_PENDING_HANDSHAKES} handshakes already pending"),
            );
            return;
        }
        self.pending += 1;
        tokio::spawn(read_first_message(stream, remote, tx.clone()));
    }

    /// A pending connection's first message is in (or it failed): screen it (MAC, identity,
    /// replay) and hand it to the tie-break, or refuse it.
    fn first_message(&mut self, repl: &mut Replicator, first: FirstMessage) {
        self.pending = self.pending.saturating_sub(1);
        match first {
            FirstMessage::Refused {
                remote,
                reason,
                error,
            } => self.refuse(remote, reason, &error),
            FirstMessage::Complete {
                stream,
                remote,
                bytes,
            } => match repl.screen_first_message(&bytes) {
                Ok(Some(_)) => self.offer(repl, stream, remote, Role::Acceptor, &bytes),
                Ok(None) => self.refuse(remote, "malformed", "incomplete first message"),
                Err(e) => {
                    let label = super::reject_label(&e).unwrap_or("other");
                    self.refuse(remote, label, &e.to_string());
                }
            },
        }
    }

    /// Count (and log, at warn once per [`REFUSAL_LOG_INTERVAL`]) a connection refused
    /// before its handshake.
    fn refuse(&mut self, remote: SocketAddr, reason: &'static str, error: &str) {
        self.peer.reject(reason);
        let now = Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now >= t + REFUSAL_LOG_INTERVAL)
        {
            self.last_refusal_log = Some(now);
            warn!(%remote, reason, error, "peer link: connection refused before the handshake (further ones for 10 s at debug; all counted in lbd_peer_rejected_total)");
        } else {
            debug!(%remote, reason, error, "peer link: connection refused before the handshake");
        }
    }

    /// A new TCP connection (dialed, or accepted with a verified first message `initial`):
    /// keep it, or the current one, by the tie-break rule; the loser is closed.
    fn offer(
        &mut self,
        repl: &mut Replicator,
        stream: TcpStream,
        remote: SocketAddr,
        role: Role,
        initial: &[u8],
    ) {
        if let Some(cur) = &self.conn {
            if !keep_newcomer(self.lower, cur.role, cur.established, role) {
                debug!(%remote, ?role, kept = ?cur.role, "peer link: second connection closed (tie-break)");
                drop(stream);
                return;
            }
            debug!(%remote, ?role, "peer link: replacing the connection being set up (tie-break)");
            self.close(repl, "replaced by the tie-break", None);
        }
        let _ = stream.set_nodelay(true);
        debug!(%remote, ?role, "peer link: connection up, sending HELLO");
        let nonce: [u8; 32] = rand::random();
        repl.connect(role, nonce, clock::now());
        self.conn = Some(Conn {
            stream,
            role,
            remote,
            out: Vec::new(),
            established: false,
        });
        if !initial.is_empty() {
            self.feed(repl, initial);
        }
    }

    /// The replicator refused the connection (or timed it out): close and count it.
    fn fail(&mut self, repl: &mut Replicator, e: &ProtocolError) {
        let label = super::reject_label(e);
        self.close(repl, &e.to_string(), label);
    }

    /// Drop the connection; `reason` is logged and shown in `/status`, `reject` (a label of
    /// [`super::REJECT_REASONS`]) counts it as a refusal.
    fn close(&mut self, repl: &mut Replicator, reason: &str, reject: Option<&str>) {
        let Some(conn) = self.conn.take() else { return };
        let was = conn.established;
        self.tickets_sent = None;
        repl.disconnected(clock::now());
        if let Some(r) = reject {
            self.peer.reject(r);
            warn!(remote = %conn.remote, reason = r, error = reason, "peer link: connection refused");
        } else if was {
            info!(remote = %conn.remote, reason, "peer link: disconnected");
        } else {
            debug!(remote = %conn.remote, reason, "peer link: connection closed");
        }
        self.last_error = Some(reason.to_string());
    }

    fn read(&mut self, repl: &mut Replicator, buf: &mut [u8]) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let n = match conn.stream.try_read(buf) {
            Ok(0) => {
                self.close(repl, "peer closed the connection", None);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.close(repl, &format!("read: {e}"), None);
                return;
            }
        };
        self.feed(repl, &buf[..n]);
    }

    /// Hand bytes read from the connection to the replicator; apply drains it merged; close
    /// the connection if it refused them.
    fn feed(&mut self, repl: &mut Replicator, bytes: &[u8]) {
        self.stats.bytes_received += bytes.len() as u64;
        let now = clock::now();
        let before = repl.status(now).entries_received;
        let result = {
            let mut store = self.engine.soft.lock();
            repl.handle_bytes(bytes, &mut store, now)
        };
        // Records merged before a failing frame stay merged (each was authenticated).
        let merged = repl.status(now).entries_received != before;
        if merged {
            self.apply_drains();
        }
        // Like records, keys from frames before a failing one were authenticated.
        if let Some(keys) = repl.take_peer_ticket_keys() {
            debug!(count = keys.len(), "peer link: TLS ticket keys received");
            crate::tls::tickets::ring().merge_peer(&keys, Instant::now());
        }
        if let Err(e) = result {
            self.fail(repl, &e);
            return;
        }
        self.check_established(repl);
        self.send_ticket_keys(repl);
    }

    /// Send our TLS ticket keys if this session has not had the current ones yet.
    fn send_ticket_keys(&mut self, repl: &mut Replicator) {
        let ring = crate::tls::tickets::ring();
        let generation = ring.generation();
        if !self.established() || self.tickets_sent == Some(generation) {
            return;
        }
        let keys = ring.local_for_peer(Instant::now());
        match repl.send_ticket_keys(&keys) {
            Ok(true) => self.tickets_sent = Some(generation),
            Ok(false) => {}
            Err(e) => self.fail(repl, &e),
        }
    }

    fn check_established(&mut self, repl: &Replicator) {
        let connected = repl.status(clock::now()).connected;
        if let Some(conn) = self.conn.as_mut() {
            if connected && !conn.established {
                conn.established = true;
                self.stats.connects += 1;
                self.last_error = None;
                info!(remote = %conn.remote, role = ?conn.role, "peer link: connected and authenticated");
            }
        }
    }

    fn write(&mut self, repl: &mut Replicator) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.stream.try_write(&conn.out) {
            Ok(n) => {
                conn.out.drain(..n);
                self.stats.bytes_sent += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => self.close(repl, &format!("write: {e}"), None),
        }
    }

    /// Collect what the replicator wants to send, up to [`OUT_HIGH`] pending bytes.
    fn pump(&mut self, repl: &mut Replicator) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while conn.out.len() < OUT_HIGH {
            let bytes = {
                let store = self.engine.soft.lock();
                repl.poll_transmit(&store, clock::now())
            };
            match bytes {
                Some(b) => conn.out.extend_from_slice(&b),
                None => break,
            }
        }
        // Write what we can right away: the common case (a small update) then needs no
        // second trip through the select.
        if !conn.out.is_empty() {
            self.write(repl);
        }
    }

    fn note_local_changes(&mut self, repl: &mut Replicator) {
        let mut store = self.engine.soft.lock();
        repl.note_local_changes(&mut store, clock::now());
    }

    /// Apply operator drains the peer told us about to the local backends, exactly as
    /// `POST /backends/drain|undrain` would. The soft state hands out only the drains a merge
    /// *changed*, so a local operator action is never undone by a stale copy.
    fn apply_drains(&mut self) {
        let changes = self.engine.soft.take_remote_admin_changes();
        self.set_backends_drained(&changes);
    }

    /// After a reload: a backend the new config added starts undrained even if an operator
    /// (here or on the peer) drained its address; the soft state knows, so apply all of it.
    /// Backends the reload kept already carry their drain flag over.
    fn reapply_drains_after_reload(&mut self) {
        let generation = self.engine.snapshot().generation;
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let all = self.engine.soft.drained();
        self.set_backends_drained(&all);
    }

    fn set_backends_drained(&self, drains: &[(String, String, bool)]) {
        if !drains.is_empty() {
            self.engine.snapshot().apply_drains(drains);
        }
    }

    fn publish(&mut self, repl: &Replicator) {
        let s = repl.status(clock::now());
        if s.phase != self.last_phase {
            info!(
                "peer link: phase {} -> {}",
                self.last_phase.as_str(),
                s.phase.as_str()
            );
            self.last_phase = s.phase;
            if s.phase == Phase::Warm {
                self.engine.soft.set_cold(false);
            }
        }
        self.peer.publish(LinkView {
            connected: self.established(),
            phase: s.phase,
            warm_by_timeout: self.warm_by_timeout,
            role: self.conn.as_ref().map(|c| match c.role {
                Role::Dialer => "dialer",
                Role::Acceptor => "acceptor",
            }),
            remote: self.conn.as_ref().map(|c| c.remote.to_string()),
            // Nothing pending on a live link is no lag; while down, the oldest pending
            // change's age (or unknown).
            lag_ms: s
                .lag
                .map(|d| d.as_millis() as u64)
                .or(self.established().then_some(0)),
            seq_sent: s.seq_sent,
            seq_acked: s.seq_acked,
            dirty_len: s.dirty_len as u64,
            entries_sent: s.entries_sent,
            entries_received: s.entries_received,
            bytes_sent: self.stats.bytes_sent,
            bytes_received: self.stats.bytes_received,
            resyncs: s.resyncs,
            resyncs_received: s.resyncs_received,
            merge_errors: s.merge_errors,
            resumes: s.resumes,
            connects: self.stats.connects,
            last_error: s.last_error.clone().or_else(|| self.last_error.clone()),
        });
    }
}

/// Read an accepted connection's first message (a HELLO, at most one HELLO's worth of bytes)
/// within [`FIRST_MESSAGE_TIMEOUT`], writing nothing, and report it to the link task.
async fn read_first_message(
    mut stream: TcpStream,
    remote: SocketAddr,
    tx: mpsc::Sender<FirstMessage>,
) {
    let read = async {
        let mut bytes = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            match frame::first_message_len(&bytes) {
                Ok(Some(_)) => return Ok(bytes),
                Ok(None) => {}
                Err(e) => return Err(ProtocolError::Frame(e)),
            }
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    return Err(ProtocolError::PeerClosed(
                        "closed before its first message".into(),
                    ))
                }
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(ProtocolError::PeerClosed(format!("read: {e}"))),
            }
        }
    };
    let report = match tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, read).await {
        Ok(Ok(bytes)) => FirstMessage::Complete {
            stream,
            remote,
            bytes,
        },
        Ok(Err(e)) => FirstMessage::Refused {
            remote,
            reason: super::reject_label(&e).unwrap_or("malformed"),
            error: e.to_string(),
        },
        Err(_) => FirstMessage::Refused {
            remote,
            reason: "first_message_timeout",
            error: format!("no complete first message within {FIRST_MESSAGE_TIMEOUT:?}"),
        },
    };
    let _ = tx.send(report).await;
}

/// The tie-break: with a connection `cur` already in hand, does a new one replace it?
/// Only while `cur` is still being set up, and only if the newcomer is the one dialed by the
/// node with the lower id (ours when `lower`) and `cur` is not. Both nodes apply the same
/// rule to the same two TCP connections, so they keep the same one.
///
/// Two accepted connections (both past the first-message screen): the newer wins. The peer
/// dials again only once it gave its previous connection up, so the newer one is the live
/// one; and a HELLO replayed at a node that just restarted (its replay guard is empty, so
/// the screen cannot tell it from a fresh one) then holds the slot only until the real
/// peer's next dial, instead of shutting it out until the handshake timeout.
fn keep_newcomer(lower: bool, cur_role: Role, cur_established: bool, new_role: Role) -> bool {
    let preferred = if lower { Role::Dialer } else { Role::Acceptor };
    let newer_accepted = cur_role == Role::Acceptor && new_role == Role::Acceptor;
    !cur_established && (newer_accepted || (cur_role != preferred && new_role == preferred))
}

async fn accept(listener: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn readable(conn: &Option<Conn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.readable().await,
        None => std::future::pending().await,
    }
}

async fn writable(conn: &Option<Conn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.writable().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection each node keeps when both dial at once, in both arrival orders. A
    /// connection is named by its dialer; node "a" sorts lower.
    #[test]
    fn both_nodes_keep_the_connection_dialed_by_the_lower_id() {
        // (role on this node, dialed by) for each of the two connections, per node.
        let keep = |lower: bool, first: Role, second: Role| {
            if keep_newcomer(lower, first, false, second) {
                second
            } else {
                first
            }
        };
        // On a: its own dial is Dialer (a->b); b's dial arrives as Acceptor (b->a).
        // On b: its own dial is Dialer (b->a); a's dial arrives as Acceptor (a->b).
        let dialed_by = |node_is_a: bool, role: Role| match (node_is_a, role) {
            (true, Role::Dialer) | (false, Role::Acceptor) => "a",
            _ => "b",
        };
        for (a_first, b_first) in [
            (Role::Dialer, Role::Dialer),
            (Role::Dialer, Role::Acceptor),
            (Role::Acceptor, Role::Dialer),
            (Role::Acceptor, Role::Acceptor),
        ] {
            let a_kept = keep(true, a_first, a_first.other());
            let b_kept = keep(false, b_first, b_first.other());
            assert_eq!(dialed_by(true, a_kept), "a", "a, first {a_first:?}");
            assert_eq!(dialed_by(false, b_kept), "a", "b, first {b_first:?}");
        }
    }

    #[test]
    fn a_newer_accepted_connection_replaces_one_still_in_its_handshake() {
        for lower in [true, false] {
            assert!(keep_newcomer(lower, Role::Acceptor, false, Role::Acceptor));
            assert!(!keep_newcomer(lower, Role::Acceptor, true, Role::Acceptor));
        }
    }

    #[test]
    fn an_established_connection_is_never_displaced() {
        for lower in [true, false] {
            for cur in [Role::Dialer, Role::Acceptor] {
                for new in [Role::Dialer, Role::Acceptor] {
                    assert!(!keep_newcomer(lower, cur, true, new));
                }
            }
        }
    }
}
