//! Peer-link authentication: a mandatory pre-shared key, per-frame HMAC-SHA256 and replay
//! protection. There is no plaintext mode.
//!
//! Keys (all HMAC-SHA256, the PSK as the HMAC key):
//!
//! - `K_hello = HMAC(psk, "lbpair-peer hello v1" || cluster_id)` MACs the HELLO frames. A node
//!   of another cluster (or with another key) cannot produce a HELLO we accept.
//! - `K_dir = HMAC(psk, "lbpair-peer session v1" || nonce_dialer || nonce_acceptor || dir)`,
//!   with `dir` = 1 for frames the dialer sends and 2 for frames the acceptor sends, MACs every
//!   later frame. Fresh nonces on both sides make each connection's keys new, so a frame
//!   recorded from another session fails; distinct directions mean a frame reflected back at
//!   its sender fails too. The role is known at connect time (who called `connect`).
//! - Each direction's frame counter must strictly increase (HELLO is 0, then 1, 2, ...); a
//!   repeated or older counter is [`AuthError::Replay`].
//!
//! A HELLO can be replayed by someone who recorded one, but without the PSK they cannot
//! produce the first session-keyed frame that follows it, and the replicator applies nothing
//! from a HELLO until such a frame arrives (key confirmation).
//!
//! Errors say what was wrong (cluster id, node id, schema, MAC) and never print key material.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::{self, Frame, FrameError, Hello, Kind, RawFrame, NONCE_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The shortest PSK accepted: 128 bits.
pub const MIN_PSK_LEN: usize = 16;

const HELLO_LABEL: &[u8] = b"lbpair-peer hello v1";
const SESSION_LABEL: &[u8] = b"lbpair-peer session v1";

/// Which end of the TCP connection this node is. Decides which session key MACs what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Dialer,
    Acceptor,
}

impl Role {
    /// The direction byte of frames *sent* by this role.
    fn dir_byte(self) -> u8 {
        match self {
            Role::Dialer => 1,
            Role::Acceptor => 2,
        }
    }

    pub fn other(self) -> Role {
        match self {
            Role::Dialer => Role::Acceptor,
            Role::Acceptor => Role::Dialer,
        }
    }
}

/// Why a peer or its frame was refused. Display names the mismatch, never a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("pre-shared key is {len} bytes, at least {MIN_PSK_LEN} are required")]
    ShortKey { len: usize },
    #[error("MAC of {kind} frame does not verify (wrong pre-shared key, or the frame was altered, replayed from another session or reflected)")]
    BadMac { kind: &'static str },
    #[error("peer is in cluster {theirs:?}, we are in cluster {ours:?}")]
    WrongCluster { ours: String, theirs: String },
    #[error("peer says it is node {got:?}, expected node {expected:?}")]
    WrongPeerNode { expected: String, got: String },
    #[error("peer claims our own node id {0:?} (a loop, a reflected HELLO, or both nodes configured alike)")]
    OwnNodeId(String),
    #[error("peer's schema hash {theirs:#018x} differs from ours {ours:#018x} (different lbd versions?)")]
    SchemaMismatch { ours: u64, theirs: u64 },
    #[error("replayed or reordered frame: counter {counter} is not above {last}")]
    Replay { counter: u64, last: u64 },
    #[error("malformed {0}")]
    Malformed(#[from] FrameError),
}

impl AuthError {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthError::ShortKey { .. } => "short_key",
            AuthError::BadMac { .. } => "bad_mac",
            AuthError::WrongCluster { .. } => "wrong_cluster",
            AuthError::WrongPeerNode { .. } => "wrong_peer_node",
            AuthError::OwnNodeId(_) => "own_node_id",
            AuthError::SchemaMismatch { .. } => "schema_mismatch",
            AuthError::Replay { .. } => "replay",
            AuthError::Malformed(_) => "malformed",
        }
    }
}

/// The pre-shared key. Debug never prints it.
#[derive(Clone)]
pub struct Psk(Vec<u8>);

impl Psk {
    pub fn new(bytes: Vec<u8>) -> Result<Psk, AuthError> {
        if bytes.len() < MIN_PSK_LEN {
            return Err(AuthError::ShortKey { len: bytes.len() });
        }
        Ok(Psk(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Psk(<{} bytes redacted>)", self.0.len())
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// A derived 32-byte MAC key, kept as a keyed HMAC state so each frame costs one clone
/// instead of re-deriving the pads. Debug never prints it.
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl MacKey {
    fn derive(psk: &[u8], parts: &[&[u8]]) -> MacKey {
        let mut m = hmac_with(psk);
        for p in parts {
            m.update(p);
        }
        let k = m.finalize().into_bytes();
        MacKey(hmac_with(&k))
    }

    /// `K_hello` for `cluster_id`.
    pub fn hello(psk: &[u8], cluster_id: &str) -> MacKey {
        MacKey::derive(psk, &[HELLO_LABEL, cluster_id.as_bytes()])
    }

    /// The session key for frames sent by `sender`.
    pub fn session(
        psk: &[u8],
        nonce_dialer: &[u8; NONCE_LEN],
        nonce_acceptor: &[u8; NONCE_LEN],
        sender: Role,
    ) -> MacKey {
        MacKey::derive(
            psk,
            &[
                SESSION_LABEL,
                nonce_dialer,
                nonce_acceptor,
                &[sender.dir_byte()],
            ],
        )
    }

    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        let mut m = self.0.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// Constant-time comparison (`verify_slice`).
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = self.0.clone();
        m.update(data);
        m.verify_slice(tag).is_ok()
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// What a HELLO must say to be accepted.
#[derive(Debug, Clone)]
pub struct HelloPolicy {
    pub cluster_id: String,
    pub node_id: String,
    pub peer_node_id: String,
    pub schema_hash: u64,
}

/// Authenticate and check a HELLO frame. Nothing is changed by this function; the caller
/// applies the HELLO only after it returns `Ok`.
pub fn open_hello(
    raw: &RawFrame<'_>,
    psk: &Psk,
    hello_key: &MacKey,
    policy: &HelloPolicy,
) -> Result<Hello, AuthError> {
    if raw.verify(hello_key).is_err() {
        // Tell "other cluster" apart from "wrong key" for the operator: if the payload names
        // another cluster and its MAC verifies under that cluster's HELLO key, the key is
        // right and the cluster id is what differs. Nothing is applied either way.
        if let Ok(Frame::Hello(h)) = raw.parse() {
            if h.cluster_id != policy.cluster_id
                && raw
                    .verify(&MacKey::hello(psk.as_bytes(), &h.cluster_id))
                    .is_ok()
            {
                return Err(AuthError::WrongCluster {
                    ours: policy.cluster_id.clone(),
                    theirs: h.cluster_id,
                });
            }
        }
        return Err(AuthError::BadMac { kind: "HELLO" });
    }
    let Frame::Hello(h) = raw.parse()? else {
        return Err(AuthError::Malformed(FrameError::UnknownKind(
            raw.header.kind.as_u8(),
        )));
    };
    check_hello(&h, policy)?;
    Ok(h)
}

/// The meaning checks of a HELLO whose MAC verified.
pub fn check_hello(h: &Hello, policy: &HelloPolicy) -> Result<(), AuthError> {
    if h.cluster_id != policy.cluster_id {
        // Only reachable if two clusters share a HELLO key, which the derivation prevents,
        // but the check is cheap and keeps this function complete on its own.
        return Err(AuthError::WrongCluster {
            ours: policy.cluster_id.clone(),
            theirs: h.cluster_id.clone(),
        });
    }
    if h.node_id == policy.node_id {
        return Err(AuthError::OwnNodeId(h.node_id.clone()));
    }
    if h.node_id != policy.peer_node_id {
        return Err(AuthError::WrongPeerNode {
            expected: policy.peer_node_id.clone(),
            got: h.node_id.clone(),
        });
    }
    if h.schema_hash != policy.schema_hash {
        return Err(AuthError::SchemaMismatch {
            ours: policy.schema_hash,
            theirs: h.schema_hash,
        });
    }
    Ok(())
}

/// Encode a HELLO (counter 0, `K_hello`).
pub fn seal_hello(hello: &Hello, hello_key: &MacKey) -> Result<Vec<u8>, FrameError> {
    frame::encode(&Frame::Hello(hello.clone()), 0, hello_key)
}

/// The keys and counters of one connection after both HELLOs.
#[derive(Debug, Clone)]
pub struct Session {
    tx_key: MacKey,
    rx_key: MacKey,
    /// Counter of the next frame we send.
    tx_next: u64,
    /// Counter of the last frame accepted from the peer (0: only the HELLO so far).
    rx_last: u64,
}

impl Session {
    /// Derive the session keys. `role` is ours; the nonces are in dialer, acceptor order
    /// regardless of which one is ours.
    pub fn new(
        psk: &Psk,
        role: Role,
        nonce_dialer: &[u8; NONCE_LEN],
        nonce_acceptor: &[u8; NONCE_LEN],
    ) -> Session {
        let k = |sender| MacKey::session(psk.as_bytes(), nonce_dialer, nonce_acceptor, sender);
        Session {
            tx_key: k(role),
            rx_key: k(role.other()),
            tx_next: 1,
            rx_last: 0,
        }
    }

    /// Encode and MAC a frame with the next counter.
    pub fn seal(&mut self, frame: &Frame) -> Result<Vec<u8>, FrameError> {
        let bytes = frame::encode(frame, self.tx_next, &self.tx_key)?;
        self.tx_next += 1;
        Ok(bytes)
    }

    /// Authenticate, check freshness, parse. The counter is only advanced once all three
    /// succeeded, so a rejected frame changes nothing.
    pub fn open(&mut self, raw: &RawFrame<'_>) -> Result<Frame, AuthError> {
        if raw.verify(&self.rx_key).is_err() {
            return Err(AuthError::BadMac {
                kind: kind_label(raw.header.kind),
            });
        }
        let counter = raw.header.counter;
        if counter <= self.rx_last {
            return Err(AuthError::Replay {
                counter,
                last: self.rx_last,
            });
        }
        let frame = raw.parse()?;
        self.rx_last = counter;
        Ok(frame)
    }

    /// Counter of the last frame accepted.
    pub fn rx_last(&self) -> u64 {
        self.rx_last
    }

    /// Counter the next sent frame will carry.
    pub fn tx_next(&self) -> u64 {
        self.tx_next
    }
}

fn kind_label(k: Kind) -> &'static str {
    k.as_str()
}
