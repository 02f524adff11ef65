//! Peer-link authentication and encryption: a mandatory pre-shared key, a MAC'd HELLO, and
//! every later frame encrypted with ChaCha20-Poly1305. There is no plaintext mode.
//!
//! Keys (each derived as HMAC-SHA256 with the PSK as the HMAC key, every use with its own
//! label, so no key serves two primitives):
//!
//! - `K_hello = HMAC(psk, "lbpair-peer hello v2" || cluster_id)` MACs the HELLO frames. A node
//!   of another cluster (or with another key) cannot produce a HELLO we accept.
//! - `K_dir = HMAC(psk, "lbpair-peer aead v2" || nonce_dialer || nonce_acceptor || dir)`,
//!   with `dir` = 1 for frames the dialer sends and 2 for frames the acceptor sends, is the
//!   ChaCha20-Poly1305 key of every later frame. Fresh nonces on both sides make each
//!   connection's keys new, so a frame recorded from another session fails; distinct
//!   directions mean a frame reflected back at its sender fails too.
//! - The AEAD nonce is the frame counter (4 zero bytes, then the u64), which strictly
//!   increases in each direction (HELLO is 0, then 1, 2, ...): under one key a nonce is never
//!   used twice, and a repeated or older counter is [`AuthError::Replay`]. The header is the
//!   associated data.
//!
//! The dialer speaks first; the acceptor answers nothing until the dialer's HELLO verifies.
//! A recorded HELLO replayed at the acceptor is refused by the [`ReplayGuard`]: each HELLO
//! carries the dialer's random boot id and a per-boot attempt counter, and the acceptor
//! remembers the highest attempt per boot id. A HELLO it has not seen (e.g. of a boot the
//! bounded guard has forgotten) still cannot go further: without the PSK the sender cannot
//! produce the first encrypted frame that follows it, and the replicator applies nothing from
//! a HELLO until such a frame arrives (key confirmation).
//!
//! Errors say what was wrong (cluster id, node id, schema, MAC) and never print key material.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::frame::{self, Frame, FrameError, Hello, Kind, RawFrame, AEAD_TAG_LEN, NONCE_LEN};

type HmacSha256 = Hmac<Sha256>;

/// The shortest PSK accepted: 128 bits.
pub const MIN_PSK_LEN: usize = 16;

const HELLO_LABEL: &[u8] = b"lbpair-peer hello v2";
const AEAD_LABEL: &[u8] = b"lbpair-peer aead v2";

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
    #[error("replayed HELLO: attempt {attempt} of peer boot {boot_id:#x} is not above {last}")]
    HelloReplay {
        boot_id: u64,
        attempt: u64,
        last: u64,
    },
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
            AuthError::Replay { .. } | AuthError::HelloReplay { .. } => "replay",
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

/// The AEAD failed: wrong key, or an altered byte (no detail, by design of the AEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// One direction's ChaCha20-Poly1305 key. Debug never prints it.
#[derive(Clone)]
pub struct AeadKey(ChaCha20Poly1305);

impl AeadKey {
    /// The key for frames sent by `sender` on the connection with these nonces.
    pub fn session(
        psk: &[u8],
        nonce_dialer: &[u8; NONCE_LEN],
        nonce_acceptor: &[u8; NONCE_LEN],
        sender: Role,
    ) -> AeadKey {
        let mut m = hmac_with(psk);
        for p in [
            AEAD_LABEL,
            nonce_dialer,
            nonce_acceptor,
            &[sender.dir_byte()],
        ] {
            m.update(p);
        }
        let k = m.finalize().into_bytes();
        AeadKey(ChaCha20Poly1305::new(&k))
    }

    /// The 96-bit nonce of frame `counter`: unique per key as long as counters are.
    fn nonce(counter: u64) -> chacha20poly1305::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n.into()
    }

    /// Encrypt `payload` in place; returns the tag.
    pub fn seal_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        payload: &mut [u8],
    ) -> Result<[u8; AEAD_TAG_LEN], FrameError> {
        let tag = self
            .0
            .encrypt_in_place_detached(&Self::nonce(counter), aad, payload)
            // Only for payloads of hundreds of GiB; ours are ≤ MAX_FRAME_PAYLOAD.
            .map_err(|_| FrameError::Oversize {
                len: payload.len(),
                max: frame::MAX_FRAME_PAYLOAD,
            })?;
        Ok(tag.into())
    }

    /// Decrypt `ciphertext` in place if `tag` verifies (constant time); on failure the buffer
    /// holds garbage and must be dropped.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        ciphertext: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        if tag.len() != AEAD_TAG_LEN {
            return Err(OpenError);
        }
        let tag = chacha20poly1305::Tag::from_slice(tag);
        self.0
            .decrypt_in_place_detached(&Self::nonce(counter), aad, ciphertext, tag)
            .map_err(|_| OpenError)
    }
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(<redacted>)")
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
    frame::encode_hello(hello, hello_key)
}

/// The keys and counters of one connection after both HELLOs.
#[derive(Debug, Clone)]
pub struct Session {
    tx_key: AeadKey,
    rx_key: AeadKey,
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
        let k = |sender| AeadKey::session(psk.as_bytes(), nonce_dialer, nonce_acceptor, sender);
        Session {
            tx_key: k(role),
            rx_key: k(role.other()),
            tx_next: 1,
            rx_last: 0,
        }
    }

    /// Encode and encrypt a frame with the next counter (its nonce).
    pub fn seal(&mut self, frame: &Frame) -> Result<Vec<u8>, FrameError> {
        let bytes = frame::encode(frame, self.tx_next, &self.tx_key)?;
        self.tx_next += 1;
        Ok(bytes)
    }

    /// Decrypt and authenticate, check freshness, parse. The counter is only advanced once
    /// all three succeeded, so a rejected frame changes nothing.
    pub fn open(&mut self, raw: &RawFrame<'_>) -> Result<Frame, AuthError> {
        let frame = match raw.open(&self.rx_key) {
            Ok(f) => f,
            Err(FrameError::BadMac) => {
                return Err(AuthError::BadMac {
                    kind: kind_label(raw.header.kind),
                })
            }
            Err(e) => return Err(AuthError::Malformed(e)),
        };
        let counter = raw.header.counter;
        if counter <= self.rx_last {
            return Err(AuthError::Replay {
                counter,
                last: self.rx_last,
            });
        }
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

/// Remembers, per dialer boot id, the highest HELLO attempt accepted, so a recorded HELLO
/// replayed at the acceptor is refused before it gets an answer. Bounded: past `cap` boot
/// ids the one updated longest ago is forgotten (a peer that restarted that many times
/// since will not resend its old boot's HELLOs; an attacker replaying one gets no further
/// than the key confirmation it cannot produce).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    /// (boot id, highest attempt, last update stamp).
    seen: Vec<(u64, u64, u64)>,
    cap: usize,
    stamp: u64,
}

/// Boot ids the acceptor remembers by default.
pub const REPLAY_GUARD_BOOTS: usize = 64;

impl ReplayGuard {
    pub fn new(cap: usize) -> ReplayGuard {
        ReplayGuard {
            seen: Vec::new(),
            cap: cap.max(1),
            stamp: 0,
        }
    }

    /// Accept (and remember) `attempt` of `boot_id` only if it is above the last one seen.
    /// Attempt 0 is never accepted: it marks an acceptor's HELLO, which is no first message
    /// (so a recorded answer cannot be replayed as a dialer's opening).
    pub fn check_and_record(&mut self, boot_id: u64, attempt: u64) -> Result<(), AuthError> {
        if attempt == 0 {
            return Err(AuthError::HelloReplay {
                boot_id,
                attempt,
                last: 0,
            });
        }
        self.stamp += 1;
        if let Some(e) = self.seen.iter_mut().find(|e| e.0 == boot_id) {
            if attempt <= e.1 {
                return Err(AuthError::HelloReplay {
                    boot_id,
                    attempt,
                    last: e.1,
                });
            }
            e.1 = attempt;
            e.2 = self.stamp;
            return Ok(());
        }
        if self.seen.len() >= self.cap {
            if let Some(oldest) = (0..self.seen.len()).min_by_key(|&i| self.seen[i].2) {
                self.seen.swap_remove(oldest);
            }
        }
        self.seen.push((boot_id, attempt, self.stamp));
        Ok(())
    }

    /// Boot ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_guard_accepts_only_increasing_attempts_per_boot() {
        let mut g = ReplayGuard::new(4);
        assert!(g.check_and_record(7, 0).is_err(), "an acceptor's HELLO");
        assert_eq!(g.check_and_record(7, 1), Ok(()));
        assert_eq!(g.check_and_record(7, 2), Ok(()));
        assert!(matches!(
            g.check_and_record(7, 2),
            Err(AuthError::HelloReplay { last: 2, .. })
        ));
        assert!(g.check_and_record(7, 1).is_err());
        // Another boot has its own counter.
        assert_eq!(g.check_and_record(8, 1), Ok(()));
        assert_eq!(g.check_and_record(7, 5), Ok(()));
    }

    #[test]
    fn replay_guard_is_bounded_and_forgets_the_stalest_boot() {
        let mut g = ReplayGuard::new(3);
        for boot in 1..=3 {
            g.check_and_record(boot, 1).unwrap();
        }
        // Boot 1 is refreshed, so boot 2 is the stalest when boot 4 arrives.
        g.check_and_record(1, 2).unwrap();
        g.check_and_record(4, 1).unwrap();
        assert_eq!(g.len(), 3);
        assert!(g.check_and_record(1, 2).is_err(), "boot 1 still remembered");
        assert!(g.check_and_record(3, 1).is_err(), "boot 3 still remembered");
        assert_eq!(g.check_and_record(2, 1), Ok(()), "boot 2 was forgotten");
        for boot in 100..10_000 {
            g.check_and_record(boot, 1).unwrap();
        }
        assert_eq!(g.len(), 3);
    }
}
