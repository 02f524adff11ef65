//! The replicator's configuration, its errors, the phase it reports and its status
//! snapshot: the types its users (lbd's peer link, tests) build and read.

use std::time::Duration;

use crate::peer::auth::AuthError;
use crate::peer::frame::{FrameError, Kind, MAX_STRING_LEN};
use crate::peer::Digest;

/// Full resync pace when the config does not say (records per second): 1M entries in 4 s,
/// inside the 5 s target with room for the link.
pub const DEFAULT_RESYNC_RATE_PER_S: u32 = 250_000;
/// Records per UPDATE frame at most.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// How long an ACK may wait to be coalesced with later updates.
pub const DEFAULT_ACK_DELAY: Duration = Duration::from_millis(5);
/// A PING is sent after this long without sending anything.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(1);
pub use crate::peer::dirty::MIN_PRUNE_AT;
/// The connection is declared dead after this long without receiving anything.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Sealed frames the replicator holds for the driver at most (HELLO, PINGs, CLOSE): past
/// this the driver is not writing, and the connection is closed rather than grown.
pub const MAX_OUTBOX_FRAMES: usize = 1024;
/// Bytes of sealed frames held for the driver at most.
pub const MAX_OUTBOX_BYTES: usize = 1 << 20;
/// How long the HELLO exchange and key confirmation may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The replicator's configuration (lbd builds it from `[peer]`).
#[derive(Clone)]
pub struct ReplicatorConfig {
    pub cluster_id: String,
    pub node_id: String,
    /// The only node id accepted from the peer.
    pub peer_node_id: String,
    /// The pre-shared key (≥ [`crate::peer::auth::MIN_PSK_LEN`] bytes).
    pub psk: Vec<u8>,
    /// Random per process start: tells the peer we restarted (and lost our sequence space).
    pub boot_id: u64,
    /// Carried in HELLO for the operator (e.g. a config generation); not interpreted.
    pub epoch: u64,
    /// Hash of the tables' encodings: two nodes whose records differ in meaning refuse each
    /// other instead of merging garbage.
    pub schema_hash: u64,
    /// Full-resync records per second (0: unpaced).
    pub resync_rate_per_s: u32,
    /// Records per UPDATE at most (≥ 1).
    pub max_batch: usize,
    pub ack_delay: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
}

impl ReplicatorConfig {
    /// A config with the documented defaults for everything but identity and key.
    pub fn new(
        cluster_id: impl Into<String>,
        node_id: impl Into<String>,
        peer_node_id: impl Into<String>,
        psk: Vec<u8>,
        boot_id: u64,
    ) -> ReplicatorConfig {
        ReplicatorConfig {
            cluster_id: cluster_id.into(),
            node_id: node_id.into(),
            peer_node_id: peer_node_id.into(),
            psk,
            boot_id,
            epoch: 0,
            schema_hash: 0,
            resync_rate_per_s: DEFAULT_RESYNC_RATE_PER_S,
            max_batch: DEFAULT_MAX_BATCH,
            ack_delay: DEFAULT_ACK_DELAY,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for ReplicatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatorConfig")
            .field("cluster_id", &self.cluster_id)
            .field("node_id", &self.node_id)
            .field("peer_node_id", &self.peer_node_id)
            .field("psk", &"<redacted>")
            .field("boot_id", &self.boot_id)
            .field("epoch", &self.epoch)
            .field("schema_hash", &self.schema_hash)
            .field("resync_rate_per_s", &self.resync_rate_per_s)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// A config the replicator cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Psk(AuthError),
    #[error("{0} must not be empty")]
    EmptyId(&'static str),
    #[error("{field} is {len} bytes, at most {MAX_STRING_LEN} are allowed")]
    IdTooLong { field: &'static str, len: usize },
    #[error("node id and peer node id are both {0:?}")]
    SameNode(String),
    #[error("max_batch must be at least 1")]
    ZeroBatch,
}

/// Why the connection must be closed. Nothing of the offending frame was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("no connection")]
    NotConnected,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("peer rejected: {0}")]
    Auth(#[from] AuthError),
    #[error("{0} frame before the HELLO exchange")]
    BeforeHello(Kind),
    #[error("second HELLO on one connection")]
    DuplicateHello,
    #[error("peer acknowledged seq {ack}, but we only sent up to {sent}")]
    AckBeyondSent { ack: u64, sent: u64 },
    #[error("SYNC_DONE without SYNC_START")]
    UnexpectedSyncDone,
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("nothing received from the peer for {0:?}")]
    PeerTimeout(Duration),
    #[error("peer closed the connection: {0}")]
    PeerClosed(String),
    #[error("outbound queue full ({frames} frames, {bytes} bytes waiting): the connection is not being written")]
    OutboxFull { frames: usize, bytes: usize },
}

impl ProtocolError {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProtocolError::NotConnected => "not_connected",
            ProtocolError::Frame(e) => e.as_str(),
            ProtocolError::Auth(e) => e.as_str(),
            ProtocolError::BeforeHello(_) => "before_hello",
            ProtocolError::DuplicateHello => "duplicate_hello",
            ProtocolError::AckBeyondSent { .. } => "ack_beyond_sent",
            ProtocolError::UnexpectedSyncDone => "unexpected_sync_done",
            ProtocolError::HandshakeTimeout(_) => "handshake_timeout",
            ProtocolError::PeerTimeout(_) => "peer_timeout",
            ProtocolError::PeerClosed(_) => "peer_closed",
            ProtocolError::OutboxFull { .. } => "limit",
        }
    }
}

/// This node's own readiness, as reported to vrrpd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    #[default]
    Cold,
    Learning,
    Warm,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Cold => "cold",
            Phase::Learning => "learning",
            Phase::Warm => "warm",
        }
    }
}

/// A snapshot for `/status`, `lbd status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicatorStatus {
    pub phase: Phase,
    /// HELLOs exchanged and the peer proved the session key.
    pub connected: bool,
    pub peer_node_id: String,
    /// Boot id of the peer we last had a session with.
    pub peer_boot_id: Option<u64>,
    pub peer_epoch: Option<u64>,
    /// Highest seq of ours sent to the peer.
    pub seq_sent: u64,
    /// Highest seq of ours the peer acknowledged.
    pub seq_acked: u64,
    /// Keys with a change the peer has not acknowledged yet.
    pub dirty_len: usize,
    pub entries_sent: u64,
    pub entries_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Full resyncs we started towards the peer.
    pub resyncs: u64,
    /// Full resyncs we completed receiving from the peer.
    pub resyncs_received: u64,
    /// Reconnects where we resumed our stream instead of a full resync.
    pub resumes: u64,
    /// Peer records our store refused to merge (dropped).
    pub merge_errors: u64,
    /// What the peer's last SYNC_DONE said.
    pub peer_sync_digest: Option<Digest>,
    pub last_error: Option<String>,
    /// Age of the oldest dirty entry not yet acknowledged.
    pub lag: Option<Duration>,
}
