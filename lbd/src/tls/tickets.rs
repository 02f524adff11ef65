//! TLS session tickets: lbd's own [`ProducesTickets`] over a ring of keys that rotates on a
//! schedule and is shared with the peer node, so a client that resumes after a failover
//! gets a resumed handshake on the other node.
//!
//! ## The ring
//! One ring per process ([`ring`]), shared by every TLS listener and kept across reloads (a
//! reload or a certificate swap does not cost the clients their sessions). It holds:
//! - **local keys**, newest first: the *next* key, drawn one period before it is used; the
//!   *current* key, the only one that seals new tickets; the previous ones, still accepted.
//!   Every `global.tls_ticket_rotate_s` ([`run`], and [`TicketRing::encrypt`] itself if the
//!   task is late) the next key becomes current and a new next key is drawn. A key is erased
//!   `2 × rotate` after it became current: sealing for one period, then accepted for one
//!   more, so every ticket it sealed stays usable for at least the ticket lifetime rustls
//!   announces (`rotate`), and no longer than twice that. Lifetime is enforced by erasing
//!   keys, as rustls asks, not by a time inside the ticket. Drawing keys a period ahead is
//!   what lets the peer hold a key before the first ticket it seals exists: a node killed
//!   right after a rotation still had its current key on the peer.
//! - **peer keys**: the peer node's local keys, as it sent them over the peer link
//!   (`TICKET_KEYS` frames), each erased when the peer erases it (the frame says how long
//!   that is, a duration, since the clocks are not synchronised). They only ever decrypt.
//!
//! ## Who draws keys
//! Each node draws its own keys and seals only with them; each sends its local keys to the
//! other whenever a link session starts and whenever they change; both decrypt with the
//! union. So neither node waits for the other (a node without a peer, or cut off from it,
//! rotates on its own), there is no election to get wrong during a partition, and a node's
//! keys never come back to it. The cost is a ring up to twice as long to try on a
//! decryption, which is a lookup by key id, not a trial.
//!
//! What a peer can make us hold is bounded: at most [`MAX_PEER_KEYS`] (the soonest erased
//! go first), each for at most [`MAX_PEER_KEEP`].
//!
//! ## Ticket format
//! `key id (16) ‖ nonce (12) ‖ ChaCha20-Poly1305 ciphertext ‖ tag (16)`. The nonce is random
//! per ticket (a key seals at most one period of tickets, far below the 2^32 a random 96-bit
//! nonce allows). The associated data is the key id and the listener's [`context`], a
//! hash of its certificate files and client-certificate policy: a ticket issued by a
//! listener that asks no client certificate does not resume on one that requires it. Both
//! nodes of a pair must therefore configure the listener the same way (same file paths).
//!
//! Secrets are never logged (`Debug` redacts them) and cross the peer link only inside its
//! encrypted frames.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use arc_swap::ArcSwap;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use rand::RngCore;
use rustls::server::ProducesTickets;
use sha2::{Digest, Sha256};
use shared::peer::frame::{TicketKey, MAX_TICKET_KEYS, TICKET_KEY_ID_LEN, TICKET_KEY_LEN};
use tracing::info;

use crate::config::TlsConfig;

/// `global.tls_ticket_rotate_s` when the config does not say.
pub const DEFAULT_ROTATE: Duration = crate::config::DEFAULT_TLS_TICKET_ROTATE;
/// Local keys held at most: the next one, the current one, the previous one still accepted,
/// and room for a rotation period shortened by a reload.
pub const MAX_LOCAL_KEYS: usize = 4;
/// Peer keys held at most (what one TICKET_KEYS frame can carry).
pub const MAX_PEER_KEYS: usize = MAX_TICKET_KEYS;
/// The longest a peer key is kept, whatever the peer says: twice the longest rotation.
pub const MAX_PEER_KEEP: Duration =
    Duration::from_secs(2 * crate::config::MAX_TLS_TICKET_ROTATE.as_secs());
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = TICKET_KEY_ID_LEN + NONCE_LEN;
/// The longest the rotation task sleeps, so a reload's new period is seen soon.
const TASK_WAKE: Duration = Duration::from_secs(1);

/// Whose key it is, for `lbd_tls_ticket_keys{origin}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Peer,
}

/// One ticket key.
struct Key {
    id: [u8; TICKET_KEY_ID_LEN],
    secret: [u8; TICKET_KEY_LEN],
    aead: ChaCha20Poly1305,
    /// When it starts sealing (local keys; a peer key never seals).
    active_from: Instant,
    erase_at: Instant,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("secret", &"<redacted>")
            .field("erase_at", &self.erase_at)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn new(
        id: [u8; TICKET_KEY_ID_LEN],
        secret: [u8; TICKET_KEY_LEN],
        active_from: Instant,
        erase_at: Instant,
    ) -> Key {
        Key {
            id,
            aead: ChaCha20Poly1305::new(&secret.into()),
            secret,
            active_from,
            erase_at,
        }
    }

    /// A new local key that seals from `active_from` for one period, then opens for one more.
    fn random(active_from: Instant, rotate: Duration) -> Key {
        let mut id = [0u8; TICKET_KEY_ID_LEN];
        let mut secret = [0u8; TICKET_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Key::new(id, secret, active_from, active_from + rotate * 2)
    }

    fn live(&self, now: Instant) -> bool {
        now < self.erase_at
    }
}

/// The keys at one moment; replaced as a whole, so handshakes read it without a lock.
#[derive(Debug, Default)]
struct Keys {
    /// Newest first: `local[0]` seals.
    local: Vec<Arc<Key>>,
    peer: Vec<Arc<Key>>,
}

impl Keys {
    /// The key that seals at `now`: the newest local one already active.
    fn sealing(&self, now: Instant) -> Option<&Arc<Key>> {
        self.local
            .iter()
            .find(|k| k.active_from <= now && k.live(now))
    }

    /// A newest key still waiting to become current: none means a rotation is due.
    fn pending_next(&self, now: Instant) -> bool {
        self.local.first().is_some_and(|k| k.active_from > now)
    }

    fn find(&self, id: &[u8], now: Instant) -> Option<&Arc<Key>> {
        self.local
            .iter()
            .chain(&self.peer)
            .find(|k| k.id == id && k.live(now))
    }
}

/// What happened to tickets, for `lbd_tls_tickets_total{result}`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Issued,
    Accepted,
    /// No live key with its id: erased, or never ours. The client gets a full handshake.
    UnknownKey,
    /// Malformed or altered (or from another listener).
    Invalid,
}

const OUTCOMES: [&str; 4] = ["issued", "accepted", "unknown_key", "invalid"];

/// The process's ticket keys. See the module docs.
#[derive(Debug)]
pub struct TicketRing {
    keys: ArcSwap<Keys>,
    /// Serialises the writers (rotation, peer merge); readers never take it.
    write: Mutex<()>,
    rotate_ms: AtomicU64,
    /// Bumped whenever the local keys change: the peer link resends them.
    generation: AtomicU64,
    rotations: AtomicU64,
    outcomes: [AtomicU64; 4],
    resumptions: AtomicU64,
}

/// The process's ring.
pub fn ring() -> &'static Arc<TicketRing> {
    static RING: LazyLock<Arc<TicketRing>> =
        LazyLock::new(|| Arc::new(TicketRing::new(DEFAULT_ROTATE)));
    &RING
}

impl TicketRing {
    pub fn new(rotate: Duration) -> TicketRing {
        TicketRing {
            keys: ArcSwap::from_pointee(Keys::default()),
            write: Mutex::new(()),
            rotate_ms: AtomicU64::new(rotate.as_millis() as u64),
            generation: AtomicU64::new(0),
            rotations: AtomicU64::new(0),
            outcomes: Default::default(),
            resumptions: AtomicU64::new(0),
        }
    }

    /// The rotation period (`global.tls_ticket_rotate_s`), also the ticket lifetime announced.
    pub fn rotation(&self) -> Duration {
        Duration::from_millis(self.rotate_ms.load(Ordering::Relaxed))
    }

    /// A new period applies from the next rotation; keys already drawn keep their erase time.
    pub fn set_rotation(&self, rotate: Duration) {
        self.rotate_ms
            .store(rotate.as_millis() as u64, Ordering::Relaxed);
    }

    /// Changes whenever the local keys change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Rotate if due (the next key became current, or there are no keys yet): draw a new
    /// next key, and a current one too if none is active; erase the keys past their time.
    /// Returns whether it rotated.
    pub fn rotate_if_due(&self, now: Instant) -> bool {
        let rotate = self.rotation();
        let due = |keys: &Keys| !keys.pending_next(now);
        let expired = |keys: &Keys| keys.local.iter().chain(&keys.peer).any(|k| !k.live(now));
        let keys = self.keys.load();
        if !due(&keys) && !expired(&keys) {
            return false;
        }
        let _w = crate::sync::lock(&self.write);
        let keys = self.keys.load();
        let rotated = due(&keys);
        let mut local: Vec<Arc<Key>> = Vec::with_capacity(MAX_LOCAL_KEYS);
        if rotated {
            local.push(Arc::new(Key::random(now + rotate, rotate)));
            if keys.sealing(now).is_none() {
                // The first keys of the process (or all erased while the task was stopped).
                local.push(Arc::new(Key::random(now, rotate)));
            }
        }
        local.extend(keys.local.iter().filter(|k| k.live(now)).cloned());
        local.truncate(MAX_LOCAL_KEYS);
        let local_changed = rotated || local.len() != keys.local.len();
        let peer = keys.peer.iter().filter(|k| k.live(now)).cloned().collect();
        self.keys.store(Arc::new(Keys { local, peer }));
        if rotated {
            self.rotations.fetch_add(1, Ordering::Relaxed);
        }
        if local_changed {
            self.generation.fetch_add(1, Ordering::Release);
        }
        rotated
    }

    /// When [`TicketRing::rotate_if_due`] next has something to do.
    pub fn next_due(&self, now: Instant) -> Instant {
        let keys = self.keys.load();
        let rotate_at = keys.local.first().map_or(now, |k| k.active_from);
        keys.local
            .iter()
            .chain(&keys.peer)
            .map(|k| k.erase_at)
            .fold(rotate_at, Instant::min)
    }

    /// Our local keys as they travel to the peer (with how long we keep each).
    pub fn local_for_peer(&self, now: Instant) -> Vec<TicketKey> {
        self.keys
            .load()
            .local
            .iter()
            .filter(|k| k.live(now))
            .map(|k| TicketKey {
                id: k.id,
                secret: k.secret,
                remaining_ms: k.erase_at.saturating_duration_since(now).as_millis() as u64,
            })
            .collect()
    }

    /// Take the peer's local keys: added to (or refreshed in) the peer keys, at most
    /// [`MAX_PEER_KEYS`] kept (those erased soonest go first), none for longer than
    /// [`MAX_PEER_KEEP`]. A key with one of our own ids is ignored.
    pub fn merge_peer(&self, received: &[TicketKey], now: Instant) {
        let _w = crate::sync::lock(&self.write);
        let keys = self.keys.load();
        let mut peer: Vec<Arc<Key>> = keys.peer.iter().filter(|k| k.live(now)).cloned().collect();
        for t in received {
            let keep = Duration::from_millis(t.remaining_ms).min(MAX_PEER_KEEP);
            if keep.is_zero() || keys.local.iter().any(|k| k.id == t.id) {
                continue;
            }
            peer.retain(|k| k.id != t.id);
            peer.push(Arc::new(Key::new(t.id, t.secret, now, now + keep)));
        }
        peer.sort_by_key(|k| std::cmp::Reverse(k.erase_at));
        peer.truncate(MAX_PEER_KEYS);
        self.keys.store(Arc::new(Keys {
            local: keys.local.clone(),
            peer,
        }));
    }

    /// How many keys of each origin are held.
    pub fn counts(&self) -> (usize, usize) {
        let keys = self.keys.load();
        (keys.local.len(), keys.peer.len())
    }

    fn count(&self, o: Outcome) {
        self.outcomes[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Seal `plain` with the current key (drawn first if due), bound to `context`.
    pub fn encrypt(&self, context: &[u8], plain: &[u8], now: Instant) -> Option<Vec<u8>> {
        self.rotate_if_due(now);
        let keys = self.keys.load();
        let key = keys.sealing(now)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let aad = associated_data(&key.id, context);
        let tag = key
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), &aad, &mut out[HEADER_LEN..])
            .ok()?;
        out.extend_from_slice(&tag);
        self.count(Outcome::Issued);
        Some(out)
    }

    /// Open a ticket sealed by a live key of either origin for `context`. `None` (the
    /// client gets a full handshake) for anything else; never panics on any input.
    pub fn decrypt(&self, context: &[u8], ticket: &[u8], now: Instant) -> Option<Vec<u8>> {
        if ticket.len() < HEADER_LEN + TAG_LEN {
            self.count(Outcome::Invalid);
            return None;
        }
        let (id, rest) = ticket.split_at(TICKET_KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let keys = self.keys.load();
        let Some(key) = keys.find(id, now) else {
            self.count(Outcome::UnknownKey);
            return None;
        };
        let mut plain = body.to_vec();
        let aad = associated_data(&key.id, context);
        match key.aead.decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            &aad,
            &mut plain,
            Tag::from_slice(tag),
        ) {
            Ok(()) => {
                self.count(Outcome::Accepted);
                Some(plain)
            }
            Err(_) => {
                self.count(Outcome::Invalid);
                None
            }
        }
    }

    /// Count a completed handshake that resumed a session.
    pub fn note_handshake(&self, conn: &rustls::ServerConnection) {
        if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
            self.resumptions.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn associated_data(id: &[u8; TICKET_KEY_ID_LEN], context: &[u8]) -> Vec<u8> {
    [&id[..], context].concat()
}

/// What binds a listener's tickets: its certificate and key files and its client-certificate
/// policy. Paths, not contents, so a renewed certificate keeps the sessions.
pub fn context(cfg: &TlsConfig) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"lbd tls ticket context v1\0");
    for pair in &cfg.certs {
        for path in [&pair.cert, &pair.key] {
            h.update(path.as_os_str().as_encoded_bytes());
            h.update([0]);
        }
    }
    match &cfg.client {
        None => h.update([0]),
        Some(c) => {
            h.update([1, u8::from(c.required)]);
            h.update(c.ca.as_os_str().as_encoded_bytes());
        }
    }
    h.finalize().into()
}

/// A listener's view of the ring: rustls's ticketer.
#[derive(Debug)]
pub struct Ticketer {
    ring: Arc<TicketRing>,
    context: [u8; 32],
}

impl Ticketer {
    pub fn new(ring: Arc<TicketRing>, cfg: &TlsConfig) -> Ticketer {
        Ticketer {
            ring,
            context: context(cfg),
        }
    }
}

impl ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.ring.rotation().as_secs().min(u64::from(u32::MAX)) as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.ring.encrypt(&self.context, plain, Instant::now())
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.ring.decrypt(&self.context, cipher, Instant::now())
    }
}

/// Rotate on schedule (and erase expired keys), so keys turn over, are erased on time and
/// reach the peer even while no handshake happens. Runs for the life of the runtime.
pub async fn run(ring: Arc<TicketRing>) {
    loop {
        let now = Instant::now();
        if ring.rotate_if_due(now) {
            let (local, peer) = ring.counts();
            info!(local, peer, "TLS ticket key rotated");
        }
        let wait = ring
            .next_due(now)
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(10), TASK_WAKE);
        tokio::time::sleep(wait).await;
    }
}

/// `lbd_tls_ticket_keys`, `lbd_tls_ticket_rotations_total`, `lbd_tls_tickets_total`,
/// `lbd_tls_resumptions_total`.
pub fn render_metrics(ring: &TicketRing, e: &mut crate::metrics::Exposition) {
    let (local, peer) = ring.counts();
    e.family(
        "lbd_tls_ticket_keys",
        "gauge",
        "TLS session-ticket keys held, by origin (local: drawn here; peer: from the peer node).",
    );
    e.sample("lbd_tls_ticket_keys", &[("origin", "local")], local);
    e.sample("lbd_tls_ticket_keys", &[("origin", "peer")], peer);
    e.family(
        "lbd_tls_ticket_rotations_total",
        "counter",
        "TLS ticket key rotations on this node (the next key became current, a new one was drawn).",
    );
    e.sample(
        "lbd_tls_ticket_rotations_total",
        &[],
        ring.rotations.load(Ordering::Relaxed),
    );
    e.family(
        "lbd_tls_tickets_total",
        "counter",
        "TLS session tickets issued, and presented by clients by result (accepted; \
         unknown_key: its key was erased or never known, a full handshake follows; invalid).",
    );
    for (i, result) in OUTCOMES.iter().enumerate() {
        e.sample(
            "lbd_tls_tickets_total",
            &[("result", result)],
            ring.outcomes[i].load(Ordering::Relaxed),
        );
    }
    e.family(
        "lbd_tls_resumptions_total",
        "counter",
        "TLS handshakes that resumed a session (from a ticket or the session cache).",
    );
    e.sample(
        "lbd_tls_resumptions_total",
        &[],
        ring.resumptions.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: &[u8] = b"listener";
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_ticket_opens_while_its_key_is_in_the_ring_and_not_after() {
        let ring = TicketRing::new(HOUR);
        let t0 = Instant::now();
        let ticket = ring.encrypt(CTX, b"session", t0).expect("sealed");
        assert_eq!(
            ring.decrypt(CTX, &ticket, t0).as_deref(),
            Some(&b"session"[..])
        );
        // One rotation later the key is previous, still accepted.
        assert!(ring.rotate_if_due(t0 + HOUR));
        assert_eq!(ring.counts(), (3, 0), "next, current, previous");
        let t1 = t0 + HOUR + Duration::from_secs(1);
        assert!(ring.decrypt(CTX, &ticket, t1).is_some());
        let newer = ring.encrypt(CTX, b"newer", t1).expect("sealed");
        assert_ne!(newer[..16], ticket[..16], "sealed by the new key");
        // Two periods after it became current the key is erased: unknown, not an error.
        let t2 = t0 + HOUR * 2;
        assert!(ring.decrypt(CTX, &ticket, t2).is_none());
        ring.rotate_if_due(t2);
        assert_eq!(ring.counts().0, 3, "the erased key is gone");
        assert_eq!(
            ring.outcomes[Outcome::UnknownKey as usize].load(Ordering::Relaxed),
            1
        );
        assert!(ring.decrypt(CTX, &newer, t2).is_some());
    }

    #[test]
    fn the_context_binds_a_ticket_to_its_listener() {
        let ring = TicketRing::new(HOUR);
        let now = Instant::now();
        let ticket = ring.encrypt(CTX, b"s", now).expect("sealed");
        assert!(ring.decrypt(b"other listener", &ticket, now).is_none());
        assert_eq!(
            ring.outcomes[Outcome::Invalid as usize].load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn garbage_and_altered_tickets_are_refused_without_panic() {
        let ring = TicketRing::new(HOUR);
        let now = Instant::now();
        let ticket = ring.encrypt(CTX, b"session", now).expect("sealed");
        for len in 0..ticket.len() {
            assert!(ring.decrypt(CTX, &ticket[..len], now).is_none(), "{len}");
        }
        for i in 0..ticket.len() {
            let mut t = ticket.clone();
            t[i] ^= 1;
            assert!(ring.decrypt(CTX, &t, now).is_none(), "byte {i}");
        }
    }

    #[test]
    fn peer_keys_decrypt_but_never_seal_and_are_bounded() {
        let (a, b) = (TicketRing::new(HOUR), TicketRing::new(HOUR));
        let now = Instant::now();
        let from_a = a.encrypt(CTX, b"s", now).expect("sealed");
        assert!(b.decrypt(CTX, &from_a, now).is_none());
        b.merge_peer(&a.local_for_peer(now), now);
        assert_eq!(b.decrypt(CTX, &from_a, now).as_deref(), Some(&b"s"[..]));
        let from_b = b.encrypt(CTX, b"t", now).expect("sealed");
        assert_ne!(from_b[..16], from_a[..16], "b seals with its own key");
        // Erased on b when a erases it (a's 2 × rotate).
        assert!(b.decrypt(CTX, &from_a, now + HOUR * 2).is_none());

        // A flood of keys keeps the ones erased last, at most MAX_PEER_KEYS, none for long.
        let flood: Vec<TicketKey> = (0..=255u8)
            .map(|i| TicketKey {
                id: [i; TICKET_KEY_ID_LEN],
                secret: [i; TICKET_KEY_LEN],
                remaining_ms: u64::MAX - u64::from(i),
            })
            .collect();
        for chunk in flood.chunks(MAX_TICKET_KEYS) {
            b.merge_peer(chunk, now);
        }
        assert_eq!(b.counts(), (2, MAX_PEER_KEYS));
        assert!(b
            .keys
            .load()
            .peer
            .iter()
            .all(|k| k.erase_at <= now + MAX_PEER_KEEP));
        // Our own ids coming back are ignored.
        b.merge_peer(&b.local_for_peer(now), now);
        assert!(b.keys.load().peer.iter().all(|k| b
            .keys
            .load()
            .local
            .iter()
            .all(|l| l.id != k.id)));
    }

    #[test]
    fn the_peer_holds_the_next_key_before_it_seals_anything() {
        let (a, b) = (TicketRing::new(HOUR), TicketRing::new(HOUR));
        let t0 = Instant::now();
        a.rotate_if_due(t0);
        b.merge_peer(&a.local_for_peer(t0), t0);
        // a rotates (and dies) before the link could send anything new.
        let t1 = t0 + HOUR;
        let after = a.encrypt(CTX, b"s", t1).expect("sealed");
        assert!(a.rotations.load(Ordering::Relaxed) >= 2);
        assert_eq!(b.decrypt(CTX, &after, t1).as_deref(), Some(&b"s"[..]));
    }

    #[test]
    fn the_local_generation_moves_on_rotation_only() {
        let ring = TicketRing::new(HOUR);
        let now = Instant::now();
        ring.rotate_if_due(now);
        let g = ring.generation();
        assert!(!ring.rotate_if_due(now + Duration::from_secs(1)));
        ring.merge_peer(&TicketRing::new(HOUR).local_for_peer(now), now);
        assert_eq!(ring.generation(), g);
        assert!(ring.rotate_if_due(now + HOUR));
        assert_ne!(ring.generation(), g);
        assert_eq!(ring.next_due(now + HOUR), now + HOUR * 2);
    }

    #[test]
    fn the_binding_follows_the_certificate_paths_and_the_client_policy() {
        let pair = |cert: &str| crate::config::CertPairConfig {
            cert: cert.into(),
            key: "k.pem".into(),
            ocsp: None,
        };
        let cfg = |cert: &str, client: Option<bool>| TlsConfig {
            certs: vec![pair(cert)],
            unknown_sni: crate::config::UnknownSni::Default,
            min_version: crate::config::TlsVersion::Tls12,
            expiry_warning: Duration::ZERO,
            watch: None,
            client: client.map(|required| crate::config::ClientAuthConfig {
                ca: "ca.pem".into(),
                required,
                subject_header: http::HeaderName::from_static("x-client"),
            }),
        };
        let plain = context(&cfg("a.pem", None));
        assert_eq!(
            plain,
            context(&cfg("a.pem", None)),
            "same paths, same binding"
        );
        assert_ne!(plain, context(&cfg("b.pem", None)));
        assert_ne!(plain, context(&cfg("a.pem", Some(true))));
        assert_ne!(
            context(&cfg("a.pem", Some(false))),
            context(&cfg("a.pem", Some(true)))
        );
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let ring = TicketRing::new(HOUR);
        let now = Instant::now();
        ring.rotate_if_due(now);
        let secret = ring.local_for_peer(now)[0].secret;
        let shown = format!("{ring:?}");
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex) && !shown.contains(&format!("{:?}", secret)));
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
