//! The peer link: drives `shared::peer`'s sans-IO [`Replicator`] over an
//! authenticated TCP stream to the other lbd node, so sticky entries, rate-limit buckets and
//! operator drains ([`crate::softstate`]) survive a failover.
//!
//! Layout:
//! - this file: [`PeerHandle`] (what the rest of lbd sees: the status snapshot behind
//!   `/status` and `lbd status`, the `lbd_peer_*` metrics, the `peer_warm` readiness, and
//!   [`PeerHandle::kick`] to push a local change at once), and the schema hash.
//! - [`link`]: the task on the control runtime (never a worker runtime: the link must not
//!   compete with client connections, and its work is small): listener, dialer, tie-break,
//!   one connection at a time, the byte pump between socket and replicator, applying drains
//!   learned from the peer to the local backends.
//!
//! ## Connections and the tie-break
//! Both nodes listen on `peer.listen` and dial `peer.peer` every `reconnect_ms` while they
//! have no connection. The dialer speaks first; the acceptor sends no byte until the dialer's
//! HELLO has verified. An accepted connection is closed unanswered if its source is not in
//! `peer.allow_from` (default: the IP of `peer.peer`), if [`link::MAX_PENDING_HANDSHAKES`]
//! are already waiting, if it has not sent a complete first message within
//! [`link::FIRST_MESSAGE_TIMEOUT`], or if that message does not verify or replays one
//! already seen (see `shared::peer::auth`); each refusal is counted by reason.
//!
//! When both dial at the same moment, each node ends up with two connections to the same
//! peer; both apply the same rule — *keep the connection dialed by the node with the lower
//! node id (byte order), close the other* — so they agree on which one survives without
//! talking about it. An accepted connection takes part only once its first message verified,
//! so a stranger can neither displace nor block a real handshake; of two accepted
//! connections still in their handshake the newer wins (the peer only dials again once it
//! gave up the older one). An established
//! (authenticated) connection is never displaced by a newcomer: the newcomer is closed. A
//! stale connection (peer gone without a FIN) is dropped by the keepalive after
//! 3 × `ping_ms`, and the next dial replaces it.
//!
//! ## Encryption and bounds
//! Every frame after the HELLOs is encrypted with ChaCha20-Poly1305 under per-connection,
//! per-direction keys (`shared::peer::auth`), so sticky cookies and rate-limit keys never
//! cross the wire in cleartext. What a peer can make this node hold is bounded: one pending
//! PONG however many PINGs arrive, a bounded outbox, frames and records bounded by the codec,
//! and the soft-state tables by their entry and byte caps; a peer that exceeds a bound gets
//! its connection closed (and reconnects), counted as `limit`.
//!
//! ## Drains
//! Operator drains are the one piece of soft state that acts outside the soft-state tables:
//! a drain merged from the peer is applied to the local backend like `POST /backends/drain`,
//! and after a reload every drain the soft state holds is applied again, so a backend the
//! new config adds starts drained if an operator drained its address on either node.
//!
//! ## Lifecycle
//! The task starts with the server (`crate::app::start` spawns it on the control runtime) and keeps
//! replicating through a graceful drain, since requests still in flight may learn sticky
//! entries; it ends at a fast shutdown (sending CLOSE when it can) or with the process.
//! Each process start draws a random boot id, so a restarted node is always resynced
//! (RESUME is only for a reconnect of the same two processes). `[peer]` is read at startup;
//! a reload does not change it.
//!
//! ## Readiness
//! The replicator's phase is cold (nothing learned yet) → learning (full resync streaming)
//! → warm (SYNC_DONE received, or no peer reachable for `warm_timeout_ms` after start, which
//! is logged). Readiness (`peer_warm` in `crate::coupling::readiness`) holds only when warm, so a
//! restarted node's vrrpd does not preempt before the node has the sticky table.

pub mod link;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::peer::PeerConfig;
use crate::metrics::Exposition;
use crate::softstate::SoftState;

pub use shared::peer::replicator::Replicator;
use shared::peer::{Phase, ProtocolError};

/// Reasons a connection is refused or dropped, as exported on
/// `lbd_peer_rejected_total{reason}` (every label always present, so a dashboard can rate
/// it from zero). A reason not in the list counts as `other`.
pub const REJECT_REASONS: &[&str] = &[
    // Refused before the handshake, answering nothing: a source outside `peer.allow_from`,
    // no complete first message within FIRST_MESSAGE_TIMEOUT, more pending handshakes than
    // MAX_PENDING_HANDSHAKES, a first message that is not a HELLO or from an older release.
    "wrong_source",
    "first_message_timeout",
    "over_cap",
    "old_version",
    "bad_mac",
    "wrong_cluster",
    "wrong_peer_node",
    "own_node_id",
    "schema_mismatch",
    "replay",
    "malformed",
    "protocol",
    "handshake_timeout",
    "peer_timeout",
    // The peer exceeded a bound (queued answers, buffered bytes).
    "limit",
    "other",
];

/// The `lbd_peer_rejected_total` label of a replicator error; `None` for an ordinary end
/// of a connection (the peer closed it) that is no refusal.
pub fn reject_label(e: &ProtocolError) -> Option<&'static str> {
    use shared::peer::frame::FrameError;
    Some(match e {
        ProtocolError::NotConnected | ProtocolError::PeerClosed(_) => return None,
        ProtocolError::Frame(FrameError::BadMac) => "bad_mac",
        ProtocolError::Frame(FrameError::UnsupportedVersion(_)) => "old_version",
        ProtocolError::Frame(_) => "malformed",
        ProtocolError::Auth(a) => match a.as_str() {
            "short_key" => "other",
            label => label,
        },
        ProtocolError::BeforeHello(_)
        | ProtocolError::DuplicateHello
        | ProtocolError::AckBeyondSent { .. }
        | ProtocolError::UnexpectedSyncDone => "protocol",
        ProtocolError::HandshakeTimeout(_) => "handshake_timeout",
        ProtocolError::PeerTimeout(_) => "peer_timeout",
        ProtocolError::OutboxFull { .. } => "limit",
    })
}

/// The record formats' version, hashed into HELLO: two builds whose soft-state encodings
/// differ refuse each other rather than misread entries. Bump the string when a table's
/// key or value encoding changes.
pub const SCHEMA: &str = "lbd-softstate/sticky:2/rate_limit:1/admin:2";

/// FNV-1a of [`SCHEMA`]: a constant, so both nodes of one release agree.
pub const fn schema_hash() -> u64 {
    let bytes = SCHEMA.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

fn phase_name<S: serde::Serializer>(phase: &Phase, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(phase.as_str())
}

/// The link as `/status` shows it, published by the link task after every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkView {
    /// An authenticated connection is up.
    pub connected: bool,
    /// Cold, learning or warm (`"cold"`… in `/status`).
    #[serde(serialize_with = "phase_name")]
    pub phase: Phase,
    /// Warm because the peer stayed unreachable for `warm_timeout_ms` (not because it synced).
    pub warm_by_timeout: bool,
    /// "dialer" or "acceptor" for the current connection.
    pub role: Option<&'static str>,
    pub remote: Option<String>,
    /// Age of the oldest update the peer hasn't acknowledged (0 when all are acked).
    pub lag_ms: Option<u64>,
    pub seq_sent: u64,
    pub seq_acked: u64,
    pub dirty_len: u64,
    pub entries_sent: u64,
    pub entries_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Full resyncs this node streamed to the peer.
    pub resyncs: u64,
    /// Full resyncs this node received from the peer.
    pub resyncs_received: u64,
    /// Peer records the soft state refused to merge (dropped).
    pub merge_errors: u64,
    pub resumes: u64,
    /// Authenticated connections since start.
    pub connects: u64,
    pub last_error: Option<String>,
}

/// What the rest of lbd holds of the peer link.
#[derive(Clone)]
pub struct PeerHandle {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PeerConfig,
    view: Mutex<LinkView>,
    /// Parallel to [`REJECT_REASONS`].
    rejected: Vec<AtomicU64>,
    /// A local change to push now rather than at the next tick.
    kick: Notify,
}

impl std::fmt::Debug for PeerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerHandle")
            .field("node_id", &self.inner.cfg.node_id)
            .field("peer", &self.inner.cfg.peer)
            .finish_non_exhaustive()
    }
}

impl PeerHandle {
    pub fn new(cfg: PeerConfig) -> PeerHandle {
        PeerHandle {
            inner: Arc::new(Inner {
                cfg,
                view: Mutex::new(LinkView {
                    phase: Phase::Cold,
                    ..LinkView::default()
                }),
                rejected: REJECT_REASONS.iter().map(|_| AtomicU64::new(0)).collect(),
                kick: Notify::new(),
            }),
        }
    }

    /// The handle for a config with `[peer]`, else `None` (no link).
    pub fn from_config(cfg: Option<&PeerConfig>) -> Option<PeerHandle> {
        cfg.cloned().map(PeerHandle::new)
    }

    pub fn config(&self) -> &PeerConfig {
        &self.inner.cfg
    }

    /// Push local changes to the peer now (an operator drain) instead of at the next tick.
    pub fn kick(&self) {
        self.inner.kick.notify_one();
    }

    pub(crate) async fn kicked(&self) {
        self.inner.kick.notified().await;
    }

    fn view_lock(&self) -> MutexGuard<'_, LinkView> {
        self.inner
            .view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the link's current state.
    pub fn view(&self) -> LinkView {
        self.view_lock().clone()
    }

    pub(crate) fn publish(&self, view: LinkView) {
        *self.view_lock() = view;
    }

    pub fn is_warm(&self) -> bool {
        self.view_lock().phase == Phase::Warm
    }

    /// Count a refused or dropped connection.
    pub(crate) fn reject(&self, reason: &str) {
        let i = REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REJECT_REASONS.len() - 1);
        self.inner.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) -> Vec<(&'static str, u64)> {
        REJECT_REASONS
            .iter()
            .zip(&self.inner.rejected)
            .map(|(r, c)| (*r, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// The `"peer"` section of `/status`: `peer` (`None` without `[peer]`), the soft state it
/// replicates, and its readiness condition (`ready_condition`, by the caller, which knows the
/// readiness rules).
pub fn status_value(
    peer: Option<&PeerHandle>,
    soft: &SoftState,
    ready: Option<impl Serialize>,
) -> serde_json::Value {
    let Some(peer) = peer else {
        return serde_json::json!({ "configured": false });
    };
    let cfg = peer.config();
    let view = peer.view();
    let digest = soft.digest();
    let tables: serde_json::Map<String, serde_json::Value> = soft
        .len_by_table()
        .into_iter()
        .map(|(t, n)| (t.as_str().to_string(), serde_json::json!(n)))
        .collect();
    let rejected: serde_json::Map<String, serde_json::Value> = peer
        .rejected()
        .into_iter()
        .map(|(r, n)| (r.to_string(), serde_json::json!(n)))
        .collect();
    serde_json::json!({
        "configured": true,
        "node_id": cfg.node_id,
        "peer_node_id": cfg.peer_node_id,
        "cluster_id": cfg.cluster_id,
        "listen": cfg.listen.to_string(),
        "peer": cfg.peer.to_string(),
        "connected": view.connected,
        "phase": view.phase.as_str(),
        "warm_by_timeout": view.warm_by_timeout,
        "role": view.role,
        "remote": view.remote,
        "lag_ms": view.lag_ms,
        "seq_sent": view.seq_sent,
        "seq_acked": view.seq_acked,
        "dirty_len": view.dirty_len,
        "entries_sent": view.entries_sent,
        "entries_received": view.entries_received,
        "bytes_sent": view.bytes_sent,
        "bytes_received": view.bytes_received,
        "resyncs": view.resyncs,
        "resyncs_received": view.resyncs_received,
        "merge_errors": view.merge_errors,
        "resumes": view.resumes,
        "connects": view.connects,
        "last_error": view.last_error,
        "rejected": rejected,
        "digest": { "count": digest.count, "hash": format!("{:016x}", digest.hash) },
        "entries": tables,
        "ready_condition": ready,
    })
}

/// The `lbd_peer_*` families (nothing when no `[peer]` is configured).
pub fn render_metrics(peer: Option<&PeerHandle>, e: &mut Exposition) {
    let Some(peer) = peer else {
        return;
    };
    let v = peer.view();
    let gauges: [(&str, &str, String); 3] = [
        (
            "lbd_peer_connected",
            "1 while an authenticated connection to the peer node is up.",
            u8::from(v.connected).to_string(),
        ),
        (
            "lbd_peer_warm",
            "1 once this node holds the peer's soft state (or gave up waiting for it).",
            u8::from(v.phase == Phase::Warm).to_string(),
        ),
        (
            "lbd_peer_lag_seconds",
            "Age of the oldest update the peer has not acknowledged.",
            (v.lag_ms.unwrap_or(0) as f64 / 1000.0).to_string(),
        ),
    ];
    for (name, help, value) in gauges {
        e.family(name, "gauge", help);
        e.sample(name, &[], value);
    }
    for (name, help, value) in [
        (
            "lbd_peer_entries_sent_total",
            "Soft-state entries sent to the peer.",
            v.entries_sent,
        ),
        (
            "lbd_peer_entries_received_total",
            "Soft-state entries received from the peer.",
            v.entries_received,
        ),
        (
            "lbd_peer_bytes_sent_total",
            "Bytes written on the peer link.",
            v.bytes_sent,
        ),
        (
            "lbd_peer_bytes_received_total",
            "Bytes read from the peer link.",
            v.bytes_received,
        ),
        (
            "lbd_peer_resyncs_total",
            "Full resyncs this node took part in (streamed to the peer or received from it).",
            v.resyncs + v.resyncs_received,
        ),
        (
            "lbd_peer_resyncs_received_total",
            "Full resyncs received from the peer (each one ends in SYNC_DONE).",
            v.resyncs_received,
        ),
        (
            "lbd_peer_resumes_total",
            "Reconnects that resumed from the peer's last ack instead of a full resync.",
            v.resumes,
        ),
        (
            "lbd_peer_connects_total",
            "Authenticated connections to the peer.",
            v.connects,
        ),
        (
            "lbd_peer_merge_errors_total",
            "Peer records refused by the soft state (malformed, or a key over the table's \
             key cap); each is dropped, the link stays up.",
            v.merge_errors,
        ),
    ] {
        e.family(name, "counter", help);
        e.sample(name, &[], value);
    }
    e.family(
        "lbd_peer_rejected_total",
        "counter",
        "Peer connections refused or dropped, by reason (nothing they sent was applied).",
    );
    for (reason, n) in peer.rejected() {
        e.sample("lbd_peer_rejected_total", &[("reason", reason)], n);
    }
}

/// `lbd status`: the peer section of `/status` for people (`--json` has everything).
pub fn print_status(status: &serde_json::Value) {
    print!("{}", format_status(status));
}

/// The lines [`print_status`] prints.
pub fn format_status(status: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let p = &status["peer"];
    if p["configured"].as_bool() != Some(true) {
        out.push_str("peer: not configured (soft state stays on this node)\n");
        return out;
    }
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "peer: {} -> {} ({})  {}  {}{}",
        s(&p["node_id"]),
        s(&p["peer_node_id"]),
        s(&p["peer"]),
        if p["connected"].as_bool() == Some(true) {
            format!("connected as {}", s(&p["role"]))
        } else {
            "DISCONNECTED".to_string()
        },
        s(&p["phase"]).to_uppercase(),
        if p["warm_by_timeout"].as_bool() == Some(true) {
            " (peer unreachable: warm by timeout)"
        } else {
            ""
        },
    );
    let _ = writeln!(
        out,
        "  lag {} ms  sent {} entries / {} bytes  received {} entries / {} bytes  resyncs {}  resumes {}",
        s(&p["lag_ms"]),
        s(&p["entries_sent"]),
        s(&p["bytes_sent"]),
        s(&p["entries_received"]),
        s(&p["bytes_received"]),
        s(&p["resyncs"]),
        s(&p["resumes"]),
    );
    let tables: Vec<String> = p["entries"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(t, n)| format!("{t} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  digest {} entries, hash {}  ({})",
        s(&p["digest"]["count"]),
        s(&p["digest"]["hash"]),
        tables.join(", ")
    );
    let rejected: Vec<String> = p["rejected"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    if !rejected.is_empty() {
        let _ = writeln!(out, "  rejected: {}", rejected.join(", "));
    }
    if !p["last_error"].is_null() {
        let _ = writeln!(out, "  last error: {}", s(&p["last_error"]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_hash_is_a_stable_constant() {
        const H: u64 = schema_hash();
        assert_eq!(H, schema_hash());
        assert_ne!(H, 0);
    }

    #[test]
    fn unknown_reject_reasons_count_as_other() {
        let cfg = PeerConfig {
            node_id: "a".into(),
            peer_node_id: "b".into(),
            cluster_id: "c".into(),
            listen: "127.0.0.1:1".parse().expect("addr"),
            peer: "127.0.0.1:2".parse().expect("addr"),
            psk_file: "k".into(),
            psk: crate::config::peer::Psk(vec![0; 16]),
            allow_from: vec!["127.0.0.2/32".parse().expect("net")],
            resync_rate: 1,
            warm_timeout: std::time::Duration::ZERO,
            reconnect: std::time::Duration::from_millis(10),
            ping: std::time::Duration::from_millis(10),
        };
        let h = PeerHandle::new(cfg);
        h.reject("bad_mac");
        h.reject("something new");
        let r = h.rejected();
        assert_eq!(
            r.iter().find(|(n, _)| *n == "bad_mac").map(|x| x.1),
            Some(1)
        );
        assert_eq!(r.iter().find(|(n, _)| *n == "other").map(|x| x.1), Some(1));
        assert!(!h.is_warm());
    }

    #[test]
    fn lbd_status_lines() {
        let off = serde_json::json!({"peer": {"configured": false}});
        assert!(format_status(&off).starts_with("peer: not configured"));
        let on = serde_json::json!({"peer": {
            "configured": true, "node_id": "lb-a", "peer_node_id": "lb-b",
            "peer": "10.0.0.2:7946", "connected": true, "role": "dialer", "phase": "warm",
            "warm_by_timeout": false, "lag_ms": 0, "entries_sent": 5, "bytes_sent": 900,
            "entries_received": 7, "bytes_received": 1000, "resyncs": 1, "resumes": 2,
            "digest": {"count": 12, "hash": "00000000000000ab"},
            "entries": {"sticky": 10, "rate_limit": 1, "admin": 1},
            "rejected": {"bad_mac": 3, "replay": 0}, "last_error": null
        }});
        let text = format_status(&on);
        assert!(
            text.contains("peer: lb-a -> lb-b (10.0.0.2:7946)  connected as dialer  WARM"),
            "{text}"
        );
        assert!(text.contains("resyncs 1  resumes 2"), "{text}");
        assert!(
            text.contains("digest 12 entries, hash 00000000000000ab"),
            "{text}"
        );
        assert!(text.contains("rejected: bad_mac 3\n"), "{text}");
        assert!(!text.contains("last error"), "{text}");
    }
}
