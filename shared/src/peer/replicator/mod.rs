//! The peer link's sans-IO protocol: one [`Replicator`] per node, kept across reconnects.
//!
//! It owns no socket and no clock. The driver (lbd's `peer` module) feeds it bytes and the
//! time, and writes out what it returns:
//!
//! ```text
//! connect(role, nonce, now)           a TCP connection is up; our HELLO is queued
//! handle_bytes(data, store, now)?     bytes read from the socket (Err: close the connection)
//! note_local_changes(store, now)      pull the store's changed keys into the dirty set
//! poll_transmit(store, now)           next frame to write, until None
//! poll_timeout() / handle_timeout(now)?   when to wake up, and what to do then
//! disconnected(now)                   the connection is gone
//! ```
//!
//! # Lifecycle of a connection
//!
//! 1. `Link::AwaitHello`: the dialer sends its HELLO at once (MAC'd with the cluster's HELLO
//!    key); the acceptor sends nothing until that HELLO verified (the driver screens it with
//!    [`Replicator::screen_first_message`], which also refuses replays, before it even hands
//!    the connection over), then answers with its own HELLO. Any other frame before the
//!    peer's HELLO is a protocol error. The HELLO is checked (cluster, node ids, schema) by
//!    [`super::auth::open_hello`] before anything changes.
//! 2. `Link::Up` unconfirmed: session keys are derived from both nonces; each side sends a
//!    PING as its first session frame (encrypted, like every frame from here on). Nothing from the peer's HELLO (its boot id, its RESUME
//!    claim) is applied until a frame MAC'd with the session key arrives, because a recorded
//!    HELLO can be replayed by anyone, but only the peer can follow it up.
//! 3. `Link::Up` confirmed: if the peer resumes (same peer boot as last time, and it holds
//!    our stream up to seq N of our current boot), dirty entries ≤ N are dropped and the rest
//!    resent. Otherwise a full resync: SYNC_START, every key of the store paced at
//!    `resync_rate_per_s` (values read at send time), live updates interleaved, SYNC_DONE.
//!
//! # The sequence space and the dirty set
//!
//! Each local change gets a per-boot sequence number (from 1). The dirty set (`dirty.rs`)
//! holds at most one entry per key (key → latest seq, and seq → key), so its size is bounded
//! by the store's distinct keys however long the peer is away (keys that left the store
//! are pruned from it in amortised passes). Entries are sent in seq order
//! with the value the store holds *at send time*, and dropped when a cumulative ACK covers
//! them. Since a TCP stream delivers in order, "the peer received seq s" implies it received
//! every earlier entry sent on that connection, which is what makes a cumulative ACK and the
//! RESUME claim sound despite the gaps coalescing leaves in the sequence.
//!
//! Full-resync records travel with seq 0 ([`frame::SEQ_RESYNC`]) and are never acked: the
//! receiver only claims RESUME once it has seen SYNC_DONE, so an interrupted resync is
//! simply restarted on the next connection.
//!
//! # TLS ticket keys
//!
//! Besides the soft state the link carries lbd's TLS session-ticket keys (TICKET_KEYS), so a
//! ticket one node issued resumes on the other after a failover. They are not soft-state
//! records: no sequence number, no ACK, no resync. The driver hands the whole set of its own
//! keys to [`Replicator::send_ticket_keys`] once a session is confirmed and again whenever
//! they change; the peer's latest set waits in [`Replicator::take_peer_ticket_keys`] (one
//! set, however many frames arrive: the codec bounds each to `MAX_TICKET_KEYS`).
//!
//! # Phase
//!
//! What this node reports about its own state: `Cold` from creation until the peer's
//! SYNC_DONE arrives, `Learning` while connected and receiving a resync, `Warm` after that
//! (or when the driver calls [`Replicator::mark_warm_without_peer`]). Warm never goes back:
//! a warm node that receives a resync from a restarted peer is still warm.

use std::collections::VecDeque;
use std::time::Duration;

use super::auth::{self, HelloPolicy, MacKey, Psk, ReplayGuard, Role, Session};
use super::dirty::DirtySet;
use super::frame::{
    self, Frame, Hello, Kind, Resume, TicketKey, MAX_FRAME_PAYLOAD, MAX_STRING_LEN, NONCE_LEN,
    SEQ_RESYNC, UPDATE_OVERHEAD,
};
use super::{Digest, RecordKey, ReplicaStore};

mod types;
pub use types::*;

/// A full resync in progress towards the peer.
#[derive(Debug)]
struct Resync {
    keys: Vec<RecordKey>,
    pos: usize,
    /// Records sent (those the store still had at send time).
    sent: u64,
    start_sent: bool,
    /// GCRA theoretical arrival time for pacing.
    tat: Duration,
}

#[derive(Debug)]
struct Conn {
    session: Session,
    peer: Hello,
    /// The peer sent a valid session-keyed frame: its HELLO is now trusted and applied.
    confirmed: bool,
    handshake_deadline: Duration,
    resync: Option<Resync>,
    ack_due: Option<Duration>,
    /// Last ACK value sent on this connection.
    ack_sent: u64,
    next_ping_at: Duration,
    last_rx_at: Duration,
    ping_token: u64,
    /// The newest PING's token, to answer: however many PINGs arrive, one PONG waits.
    pong_due: Option<u64>,
}

#[derive(Debug)]
enum Link {
    Down,
    AwaitHello {
        role: Role,
        nonce: [u8; NONCE_LEN],
        deadline: Duration,
    },
    Up(Box<Conn>),
}

/// One node's side of the peer link protocol. See the module docs.
#[derive(Debug)]
pub struct Replicator {
    cfg: ReplicatorConfig,
    psk: Psk,
    hello_key: MacKey,
    policy: HelloPolicy,
    link: Link,
    /// Frames already sealed (counters assigned), written before anything new. Bounded by
    /// [`MAX_OUTBOX_FRAMES`] and [`MAX_OUTBOX_BYTES`].
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    rxbuf: Vec<u8>,
    /// Our connection attempts as the dialer in this boot (HELLO's `attempt`).
    attempts: u64,
    /// As the acceptor: the highest HELLO attempt seen per dialer boot.
    replay_guard: ReplayGuard,

    // Our stream (sender side): sequence numbers, what the peer still lacks.
    dirty: DirtySet,

    // The peer's stream (receiver side).
    peer_boot: Option<u64>,
    peer_epoch: Option<u64>,
    /// Highest seq of the peer's current boot received.
    rx_seq: u64,
    /// We received a complete resync (SYNC_DONE) from `peer_boot`, so we may claim RESUME.
    synced_from_peer: bool,
    in_resync_from_peer: bool,

    /// The peer's latest TICKET_KEYS, until the driver takes them.
    peer_ticket_keys: Option<Vec<TicketKey>>,

    phase: Phase,
    stats: Stats,
    last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Stats {
    entries_sent: u64,
    entries_received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    resyncs: u64,
    resyncs_received: u64,
    resumes: u64,
    merge_errors: u64,
    peer_sync_digest: Option<Digest>,
}

impl Replicator {
    pub fn new(cfg: ReplicatorConfig) -> Result<Replicator, ConfigError> {
        let psk = Psk::new(cfg.psk.clone()).map_err(ConfigError::Psk)?;
        for (field, v) in [
            ("cluster id", &cfg.cluster_id),
            ("node id", &cfg.node_id),
            ("peer node id", &cfg.peer_node_id),
        ] {
            if v.is_empty() {
                return Err(ConfigError::EmptyId(field));
            }
            if v.len() > MAX_STRING_LEN {
                return Err(ConfigError::IdTooLong {
                    field,
                    len: v.len(),
                });
            }
        }
        if cfg.node_id == cfg.peer_node_id {
            return Err(ConfigError::SameNode(cfg.node_id.clone()));
        }
        if cfg.max_batch == 0 {
            return Err(ConfigError::ZeroBatch);
        }
        let hello_key = MacKey::hello(psk.as_bytes(), &cfg.cluster_id);
        let policy = HelloPolicy {
            cluster_id: cfg.cluster_id.clone(),
            node_id: cfg.node_id.clone(),
            peer_node_id: cfg.peer_node_id.clone(),
            schema_hash: cfg.schema_hash,
        };
        Ok(Replicator {
            cfg,
            psk,
            hello_key,
            policy,
            link: Link::Down,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            rxbuf: Vec::new(),
            attempts: 0,
            replay_guard: ReplayGuard::new(auth::REPLAY_GUARD_BOOTS),
            dirty: DirtySet::new(),
            peer_boot: None,
            peer_epoch: None,
            rx_seq: 0,
            synced_from_peer: false,
            in_resync_from_peer: false,
            peer_ticket_keys: None,
            phase: Phase::Cold,
            stats: Stats::default(),
            last_error: None,
        })
    }

    /// A connection is up; `role` says which end we are, `nonce` must be fresh random bytes.
    /// As the dialer, queues our HELLO (the dialer speaks first); as the acceptor, queues
    /// nothing until the peer's HELLO arrives and verifies. A previous connection, if any,
    /// is dropped first.
    pub fn connect(&mut self, role: Role, nonce: [u8; NONCE_LEN], now: Duration) {
        self.disconnected(now);
        if role == Role::Dialer {
            self.attempts += 1;
            if let Err(e) = self.queue_hello(nonce) {
                // Unreachable: `new` checked the ids against the codec's bounds. Stay down.
                self.last_error = Some(format!("cannot encode HELLO: {e}"));
                return;
            }
        }
        self.link = Link::AwaitHello {
            role,
            nonce,
            deadline: now + self.cfg.handshake_timeout,
        };
    }

    fn queue_hello(&mut self, nonce: [u8; NONCE_LEN]) -> Result<(), ProtocolError> {
        let resume = match (self.synced_from_peer, self.peer_boot) {
            (true, Some(peer_boot_id)) => Some(Resume {
                peer_boot_id,
                last_seq_received: self.rx_seq,
            }),
            _ => None,
        };
        let attempt = match &self.link {
            // Answering as the acceptor: attempt 0, which no acceptor takes as a first
            // message, so this HELLO cannot be replayed as one.
            Link::AwaitHello {
                role: Role::Acceptor,
                ..
            } => 0,
            _ => self.attempts,
        };
        let hello = Hello {
            cluster_id: self.cfg.cluster_id.clone(),
            node_id: self.cfg.node_id.clone(),
            boot_id: self.cfg.boot_id,
            attempt,
            epoch: self.cfg.epoch,
            schema_hash: self.cfg.schema_hash,
            nonce,
            resume,
        };
        let bytes = auth::seal_hello(&hello, &self.hello_key)?;
        // The first frame of a connection: the outbox is empty, the bound cannot trip.
        self.push_outbox(bytes)
    }

    /// Queue a sealed frame, refusing to hold more than the outbox bounds.
    fn push_outbox(&mut self, bytes: Vec<u8>) -> Result<(), ProtocolError> {
        if self.outbox.len() >= MAX_OUTBOX_FRAMES
            || self.outbox_bytes + bytes.len() > MAX_OUTBOX_BYTES
        {
            return Err(ProtocolError::OutboxFull {
                frames: self.outbox.len(),
                bytes: self.outbox_bytes,
            });
        }
        self.outbox_bytes += bytes.len();
        self.outbox.push_back(bytes);
        Ok(())
    }

    /// For the driver, on an accepted connection before it hands it to [`Replicator::connect`]:
    /// does `buf` (what the connection sent so far) start with a valid HELLO that is not a
    /// replay? `Ok(None)`: not complete yet, read more. `Ok(Some(len))`: the HELLO's length,
    /// verified (and its attempt remembered, so the same bytes are refused next time). An
    /// `Err` is the refusal (close the connection, answering nothing). Changes nothing else.
    pub fn screen_first_message(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let Some(raw) = frame::split(buf)? else {
            return Ok(None);
        };
        if raw.header.kind != Kind::Hello {
            return Err(ProtocolError::BeforeHello(raw.header.kind));
        }
        let hello = auth::open_hello(&raw, &self.psk, &self.hello_key, &self.policy)?;
        self.replay_guard
            .check_and_record(hello.boot_id, hello.attempt)?;
        Ok(Some(raw.len()))
    }

    /// The connection is gone (closed by either side or failed). Keeps the dirty set, the
    /// sequence state and what we know of the peer, for RESUME.
    pub fn disconnected(&mut self, _now: Duration) {
        if matches!(self.link, Link::Down) {
            return;
        }
        self.link = Link::Down;
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.rxbuf.clear();
        self.in_resync_from_peer = false;
        if self.phase == Phase::Learning {
            self.phase = Phase::Cold;
        }
    }

    /// Whether a connection is open (in any handshake state).
    pub fn is_connected(&self) -> bool {
        !matches!(self.link, Link::Down)
    }

    /// Lbd's fallback when the peer stayed unreachable for its warm timeout.
    pub fn mark_warm_without_peer(&mut self) {
        self.phase = Phase::Warm;
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Queue a CLOSE with `reason` (truncated to the codec's bound) if a session is up.
    pub fn close(&mut self, reason: &str) {
        let mut end = reason.len().min(MAX_STRING_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        if let Link::Up(conn) = &mut self.link {
            let f = Frame::Close {
                reason: reason[..end].to_string(),
            };
            if let Ok(bytes) = conn.session.seal(&f) {
                // Best effort: a full outbox is about to be dropped anyway.
                let _ = self.push_outbox(bytes);
            }
        }
    }

    /// Queue our TLS ticket keys for the peer (all of them, at most
    /// [`frame::MAX_TICKET_KEYS`]). `Ok(false)`: no confirmed session, nothing queued (send
    /// them again once [`ReplicatorStatus::connected`]). An `Err` means: close the connection.
    pub fn send_ticket_keys(&mut self, keys: &[TicketKey]) -> Result<bool, ProtocolError> {
        let Link::Up(conn) = &mut self.link else {
            return Ok(false);
        };
        if !conn.confirmed {
            return Ok(false);
        }
        let bytes = conn.session.seal(&Frame::TicketKeys {
            keys: keys.to_vec(),
        })?;
        self.push_outbox(bytes)?;
        Ok(true)
    }

    /// The peer's TLS ticket keys, once per TICKET_KEYS frame (only the latest is kept).
    pub fn take_peer_ticket_keys(&mut self) -> Option<Vec<TicketKey>> {
        self.peer_ticket_keys.take()
    }

    /// Pull the store's locally changed keys into the dirty set, each with a new sequence
    /// number (an older pending entry of the same key is replaced, not added to).
    pub fn note_local_changes(&mut self, store: &mut impl ReplicaStore, now: Duration) {
        for key in store.take_changes() {
            self.dirty.note(key, now);
        }
        self.dirty.maybe_prune(store, now);
    }

    /// Keys with an unacknowledged change.
    pub fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    /// Feed bytes read from the connection. Complete frames are processed in order; an `Err`
    /// means the connection must be closed (the replicator already considers it gone) and
    /// nothing of the failing frame was applied.
    pub fn handle_bytes(
        &mut self,
        data: &[u8],
        store: &mut impl ReplicaStore,
        now: Duration,
    ) -> Result<(), ProtocolError> {
        if matches!(self.link, Link::Down) {
            return Err(ProtocolError::NotConnected);
        }
        self.stats.bytes_received += data.len() as u64;
        let mut buf = std::mem::take(&mut self.rxbuf);
        buf.extend_from_slice(data);
        let mut off = 0;
        let result = loop {
            let raw = match frame::split(&buf[off..]) {
                Ok(Some(raw)) => raw,
                Ok(None) => break Ok(()),
                Err(e) => break Err(ProtocolError::Frame(e)),
            };
            let len = raw.len();
            if let Err(e) = self.handle_raw(&raw, store, now) {
                break Err(e);
            }
            off += len;
            if matches!(self.link, Link::Down) {
                break Ok(());
            }
        };
        match result {
            Ok(()) => {
                buf.drain(..off);
                self.rxbuf = buf;
                Ok(())
            }
            Err(e) => Err(self.fail(e, now)),
        }
    }

    fn fail(&mut self, e: ProtocolError, now: Duration) -> ProtocolError {
        self.last_error = Some(e.to_string());
        self.disconnected(now);
        e
    }

    fn handle_raw(
        &mut self,
        raw: &frame::RawFrame<'_>,
        store: &mut impl ReplicaStore,
        now: Duration,
    ) -> Result<(), ProtocolError> {
        match &mut self.link {
            Link::Down => Err(ProtocolError::NotConnected),
            Link::AwaitHello { role, nonce, .. } => {
                if raw.header.kind != Kind::Hello {
                    return Err(ProtocolError::BeforeHello(raw.header.kind));
                }
                let hello = auth::open_hello(raw, &self.psk, &self.hello_key, &self.policy)?;
                let (role, ours) = (*role, *nonce);
                let (nd, na) = match role {
                    Role::Dialer => (ours, hello.nonce),
                    Role::Acceptor => (hello.nonce, ours),
                };
                if role == Role::Acceptor {
                    // The dialer's HELLO verified: only now does the acceptor say anything.
                    self.queue_hello(ours)?;
                }
                let mut session = Session::new(&self.psk, role, &nd, &na);
                // Key confirmation: our first session frame proves we hold the PSK and saw
                // this connection's nonces; the peer's proves the same to us.
                let ping = session.seal(&Frame::Ping { token: 0 })?;
                self.push_outbox(ping)?;
                self.link = Link::Up(Box::new(Conn {
                    session,
                    peer: hello,
                    confirmed: false,
                    handshake_deadline: now + self.cfg.handshake_timeout,
                    resync: None,
                    ack_due: None,
                    ack_sent: 0,
                    next_ping_at: now + self.cfg.ping_interval,
                    last_rx_at: now,
                    ping_token: 1,
                    pong_due: None,
                }));
                Ok(())
            }
            Link::Up(conn) => {
                if raw.header.kind == Kind::Hello {
                    return Err(ProtocolError::DuplicateHello);
                }
                let frame = conn.session.open(raw)?;
                conn.last_rx_at = now;
                if !conn.confirmed {
                    self.commit_hello(store);
                }
                self.handle_frame(frame, store, now)
            }
        }
    }

    /// The peer proved the session key: apply its HELLO (peer boot, RESUME or full resync).
    fn commit_hello(&mut self, store: &impl ReplicaStore) {
        let Link::Up(conn) = &mut self.link else {
            return;
        };
        conn.confirmed = true;
        let peer = &conn.peer;
        let same_peer_boot = self.peer_boot == Some(peer.boot_id);
        if !same_peer_boot {
            // A new incarnation of the peer (or the first): its sequence space starts over
            // and whatever we had received from its previous boot cannot be resumed.
            self.rx_seq = 0;
            self.synced_from_peer = false;
        }
        self.peer_boot = Some(peer.boot_id);
        self.peer_epoch = Some(peer.epoch);
        let resume = peer.resume.filter(|r| {
            same_peer_boot
                && r.peer_boot_id == self.cfg.boot_id
                && r.last_seq_received >= self.dirty.acked()
                && r.last_seq_received <= self.dirty.max_seq_sent()
        });
        match resume {
            Some(r) => {
                self.stats.resumes += 1;
                // Everything up to N arrived; what remains dirty above it is resent.
                self.dirty.resume_from(r.last_seq_received);
            }
            None => {
                self.stats.resyncs += 1;
                // The resync reads every key the store holds now, at send time: pending
                // changes are covered by it, and sending them as live updates too would
                // double the work on both sides (a million keys learned while the peer was
                // away). Changes from here on are dirty again.
                self.dirty.clear_for_resync();
                conn.resync = Some(Resync {
                    keys: store.keys(),
                    pos: 0,
                    sent: 0,
                    start_sent: false,
                    tat: Duration::ZERO,
                });
            }
        }
    }

    fn handle_frame(
        &mut self,
        frame: Frame,
        store: &mut impl ReplicaStore,
        now: Duration,
    ) -> Result<(), ProtocolError> {
        let Link::Up(conn) = &mut self.link else {
            return Err(ProtocolError::NotConnected);
        };
        match frame {
            Frame::Hello(_) => return Err(ProtocolError::DuplicateHello),
            Frame::Update { records } => {
                let mut max_seq = self.rx_seq;
                for (seq, record) in &records {
                    match store.merge(record, now) {
                        Ok(_) => self.stats.entries_received += 1,
                        // One bad record must not cost the whole session; the store's
                        // merge changed nothing.
                        Err(e) => {
                            self.stats.merge_errors += 1;
                            self.last_error = Some(format!("dropped peer record: {e}"));
                        }
                    }
                    if *seq != SEQ_RESYNC {
                        max_seq = max_seq.max(*seq);
                    }
                }
                if max_seq > self.rx_seq {
                    self.rx_seq = max_seq;
                    conn.ack_due.get_or_insert(now + self.cfg.ack_delay);
                }
            }
            Frame::Ack { seq } => {
                if seq > self.dirty.max_seq_sent() {
                    return Err(ProtocolError::AckBeyondSent {
                        ack: seq,
                        sent: self.dirty.max_seq_sent(),
                    });
                }
                self.dirty.ack(seq);
            }
            Frame::SyncStart => {
                self.in_resync_from_peer = true;
                // Until SYNC_DONE we do not hold the peer's full state, so a reconnect must
                // not claim RESUME.
                self.synced_from_peer = false;
                if self.phase == Phase::Cold {
                    self.phase = Phase::Learning;
                }
            }
            Frame::SyncDone { digest, .. } => {
                if !self.in_resync_from_peer {
                    return Err(ProtocolError::UnexpectedSyncDone);
                }
                self.in_resync_from_peer = false;
                self.synced_from_peer = true;
                self.stats.resyncs_received += 1;
                self.stats.peer_sync_digest = Some(digest);
                self.phase = Phase::Warm;
            }
            Frame::Ping { token } => {
                // Answered from poll_transmit: a flood of PINGs costs one pending PONG.
                conn.pong_due = Some(token);
            }
            Frame::Pong { .. } => {}
            Frame::Close { reason } => return Err(ProtocolError::PeerClosed(reason)),
            Frame::TicketKeys { keys } => self.peer_ticket_keys = Some(keys),
        }
        Ok(())
    }

    /// Check the handshake and idle deadlines (call when [`Replicator::poll_timeout`] is due).
    /// An `Err` means: close the connection.
    pub fn handle_timeout(&mut self, now: Duration) -> Result<(), ProtocolError> {
        let err = match &self.link {
            Link::Down => None,
            Link::AwaitHello { deadline, .. } => (now >= *deadline)
                .then_some(ProtocolError::HandshakeTimeout(self.cfg.handshake_timeout)),
            Link::Up(conn) => {
                if !conn.confirmed && now >= conn.handshake_deadline {
                    Some(ProtocolError::HandshakeTimeout(self.cfg.handshake_timeout))
                } else if now >= conn.last_rx_at + self.cfg.idle_timeout {
                    Some(ProtocolError::PeerTimeout(self.cfg.idle_timeout))
                } else {
                    None
                }
            }
        };
        match err {
            Some(e) => Err(self.fail(e, now)),
            None => Ok(()),
        }
    }

    /// The earliest time at which `poll_transmit` or `handle_timeout` has something to do.
    /// A time ≤ now (e.g. `Duration::ZERO`) means "now". `None`: nothing until more input.
    pub fn poll_timeout(&self) -> Option<Duration> {
        if !self.outbox.is_empty() {
            return Some(Duration::ZERO);
        }
        if matches!(&self.link, Link::Up(c) if c.confirmed && c.pong_due.is_some()) {
            return Some(Duration::ZERO);
        }
        match &self.link {
            Link::Down => None,
            Link::AwaitHello { deadline, .. } => Some(*deadline),
            Link::Up(conn) => {
                let idle = conn.last_rx_at + self.cfg.idle_timeout;
                if !conn.confirmed {
                    return Some(conn.handshake_deadline.min(idle));
                }
                let mut t = idle.min(conn.next_ping_at);
                if let Some(a) = conn.ack_due {
                    t = t.min(a);
                }
                if self.has_unsent_dirty() {
                    return Some(Duration::ZERO);
                }
                if let Some(r) = &conn.resync {
                    t = t.min(self.resync_ready_at(r));
                }
                Some(t)
            }
        }
    }

    fn has_unsent_dirty(&self) -> bool {
        self.dirty.has_unsent()
    }

    /// Pacing: records per burst, and the interval one record costs.
    fn pacing(&self) -> Option<(u64, Duration)> {
        let rate = self.cfg.resync_rate_per_s;
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_nanos(1_000_000_000 / u64::from(rate));
        if interval.is_zero() {
            return None;
        }
        // Bursts of at most 50 ms worth of records, sent as several batches back to back,
        // so the rate holds within 5% over any one-second window. Not one batch: at high
        // rates a batch is less than a millisecond of records, and the driver's timers
        // (millisecond resolution) would then cap the rate well below the configured one.
        let burst = (u64::from(rate) / 20).max(1);
        Some((burst, interval))
    }

    /// Records worth waking up for: one batch (or what is left). Not the whole burst:
    /// waiting until the bucket is full again after each burst would add the time spent
    /// sending it to every period, halving the rate when sending is slow.
    fn resync_want(&self, burst: u64, remaining: usize) -> u64 {
        burst.min(self.cfg.max_batch as u64).min(remaining as u64)
    }

    fn resync_ready_at(&self, r: &Resync) -> Duration {
        if !r.start_sent || r.pos >= r.keys.len() {
            return Duration::ZERO;
        }
        let Some((burst, interval)) = self.pacing() else {
            return Duration::ZERO;
        };
        let want = self.resync_want(burst, r.keys.len() - r.pos);
        // GCRA: `want` records may go once now ≥ tat - (burst - want) × interval.
        r.tat.saturating_sub(interval * (burst - want) as u32)
    }

    /// How many resync records may be sent at `now` (0: not yet).
    fn resync_allowance(&self, r: &Resync, now: Duration) -> usize {
        let remaining = r.keys.len() - r.pos;
        let cap = remaining.min(self.cfg.max_batch);
        let Some((burst, interval)) = self.pacing() else {
            return cap;
        };
        let want = self.resync_want(burst, remaining);
        if now < self.resync_ready_at(r) {
            return 0;
        }
        // Credit available: burst - backlog (in records), backlog = (tat - now) / interval.
        // Rounded up, so the credit never exceeds the exact one and the rate holds.
        let backlog = r
            .tat
            .saturating_sub(now)
            .as_nanos()
            .div_ceil(interval.as_nanos());
        let credit = u128::from(burst).saturating_sub(backlog);
        debug_assert!(credit >= u128::from(want));
        (credit as usize).min(cap)
    }

    /// The next frame to write, already MAC'd; call until `None`, then wait for
    /// [`Replicator::poll_timeout`] or more input. Values are read from `store` now, so the
    /// peer always gets the latest value of a key.
    pub fn poll_transmit(&mut self, store: &impl ReplicaStore, now: Duration) -> Option<Vec<u8>> {
        let bytes = self.next_frame(store, now)?;
        self.stats.bytes_sent += bytes.len() as u64;
        if let Link::Up(conn) = &mut self.link {
            conn.next_ping_at = now + self.cfg.ping_interval;
        }
        Some(bytes)
    }

    fn next_frame(&mut self, store: &impl ReplicaStore, now: Duration) -> Option<Vec<u8>> {
        if let Some(b) = self.outbox.pop_front() {
            self.outbox_bytes -= b.len();
            return Some(b);
        }
        let rx_seq = self.rx_seq;
        let Link::Up(conn) = &mut self.link else {
            return None;
        };
        if !conn.confirmed {
            return None;
        }
        // 0. The PONG the peer waits for (its keepalive).
        if let Some(token) = conn.pong_due.take() {
            return self.seal(&Frame::Pong { token });
        }
        // 1. ACKs first: they let the peer shrink its dirty set.
        if conn.ack_due.is_some_and(|t| now >= t) {
            conn.ack_due = None;
            if rx_seq > conn.ack_sent {
                conn.ack_sent = rx_seq;
                return self.seal(&Frame::Ack { seq: rx_seq });
            }
        }
        // 2. SYNC_START before any resync record.
        if let Some(r) = &mut conn.resync {
            if !r.start_sent {
                r.start_sent = true;
                r.tat = now;
                return self.seal(&Frame::SyncStart);
            }
        }
        // 3. Live updates, unpaced: they are what keeps the peer current.
        if let Some(f) = self.dirty_batch(store, now) {
            return self.seal(&f);
        }
        // 4. Paced resync records, then SYNC_DONE.
        if let Some(f) = self.resync_step(store, now) {
            return self.seal(&f);
        }
        // 5. Keepalive.
        let Link::Up(conn) = &mut self.link else {
            return None;
        };
        if now >= conn.next_ping_at {
            let token = conn.ping_token;
            conn.ping_token += 1;
            return self.seal(&Frame::Ping { token });
        }
        None
    }

    fn seal(&mut self, f: &Frame) -> Option<Vec<u8>> {
        let Link::Up(conn) = &mut self.link else {
            return None;
        };
        match conn.session.seal(f) {
            Ok(b) => Some(b),
            // Unreachable: batches are built under the codec's bounds.
            Err(e) => {
                self.last_error = Some(format!("cannot encode {}: {e}", f.kind()));
                None
            }
        }
    }

    /// Up to `max_batch` unsent dirty entries with their current values.
    fn dirty_batch(&mut self, store: &impl ReplicaStore, now: Duration) -> Option<Frame> {
        let mut records = Vec::new();
        let mut size = UPDATE_OVERHEAD;
        let mut gone = Vec::new();
        let mut last = 0;
        for (seq, entry) in self.dirty.unsent() {
            if records.len() >= self.cfg.max_batch {
                break;
            }
            match store.record(&entry.key, now) {
                Some(rec) if frame::check_record(&rec).is_ok() => {
                    let l = frame::record_wire_len(&rec);
                    if size + l > MAX_FRAME_PAYLOAD && !records.is_empty() {
                        break;
                    }
                    size += l;
                    records.push((seq, rec));
                }
                // Gone from the store (expired, evicted) or too large to travel: nothing to
                // send, and the peer's copy, if any, ages out on its own.
                _ => gone.push(seq),
            }
            last = seq;
        }
        self.dirty.mark_sent(last);
        self.dirty.remove(&gone);
        if records.is_empty() {
            return None;
        }
        self.dirty.record_sent(last);
        self.stats.entries_sent += records.len() as u64;
        Some(Frame::Update { records })
    }

    fn resync_step(&mut self, store: &impl ReplicaStore, now: Duration) -> Option<Frame> {
        let Link::Up(conn) = &self.link else {
            return None;
        };
        let r = conn.resync.as_ref()?;
        if r.pos >= r.keys.len() {
            let done = Frame::SyncDone {
                count: r.sent,
                digest: store.digest(),
            };
            if let Link::Up(conn) = &mut self.link {
                conn.resync = None;
            }
            return Some(done);
        }
        let allowance = self.resync_allowance(r, now);
        if allowance == 0 {
            return None;
        }
        let pacing = self.pacing();
        let Link::Up(conn) = &mut self.link else {
            return None;
        };
        let r = conn.resync.as_mut()?;
        let mut records = Vec::new();
        let mut size = UPDATE_OVERHEAD;
        let mut examined = 0usize;
        while examined < allowance && r.pos < r.keys.len() {
            let Some(rec) = store.record(&r.keys[r.pos], now) else {
                r.pos += 1;
                examined += 1;
                continue;
            };
            if frame::check_record(&rec).is_err() {
                r.pos += 1;
                examined += 1;
                continue;
            }
            let l = frame::record_wire_len(&rec);
            if size + l > MAX_FRAME_PAYLOAD && !records.is_empty() {
                break;
            }
            size += l;
            records.push((SEQ_RESYNC, rec));
            r.pos += 1;
            examined += 1;
        }
        if let Some((_, interval)) = pacing {
            r.tat = r.tat.max(now) + interval * examined as u32;
        }
        r.sent += records.len() as u64;
        self.stats.entries_sent += records.len() as u64;
        if records.is_empty() {
            // Every examined key had vanished; the next call continues (or sends SYNC_DONE).
            return None;
        }
        Some(Frame::Update { records })
    }

    pub fn status(&self, now: Duration) -> ReplicatorStatus {
        ReplicatorStatus {
            phase: self.phase,
            connected: matches!(&self.link, Link::Up(c) if c.confirmed),
            peer_node_id: self.cfg.peer_node_id.clone(),
            peer_boot_id: self.peer_boot,
            peer_epoch: self.peer_epoch,
            seq_sent: self.dirty.max_seq_sent(),
            seq_acked: self.dirty.acked(),
            dirty_len: self.dirty.len(),
            entries_sent: self.stats.entries_sent,
            entries_received: self.stats.entries_received,
            bytes_sent: self.stats.bytes_sent,
            bytes_received: self.stats.bytes_received,
            resyncs: self.stats.resyncs,
            resyncs_received: self.stats.resyncs_received,
            resumes: self.stats.resumes,
            merge_errors: self.stats.merge_errors,
            peer_sync_digest: self.stats.peer_sync_digest,
            last_error: self.last_error.clone(),
            lag: self.dirty.lag(now),
        }
    }
}
