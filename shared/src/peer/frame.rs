//! The peer link's frame codec: versioned, length-checked binary frames, each either MAC'd
//! (HELLO) or encrypted and authenticated with an AEAD (every later frame).
//!
//! Layout of one frame (all integers big-endian):
//!
//! ```text
//!  0      2   3    4          8                 16             16+len       16+len+tag
//!  +------+---+----+----------+-----------------+----------------+------------+
//!  |magic |ver|kind|length u32| frame counter u64| payload (len) | tag         |
//!  +------+---+----+----------+-----------------+----------------+------------+
//! ```
//!
//! - `magic` is `"LP"`; `ver` is [`VERSION`]. A frame with another version is refused rather
//!   than guessed at ([`FrameError::UnsupportedVersion`] says to upgrade both nodes).
//!   Version 1 sent every frame in cleartext; version 2 encrypts every frame after HELLO;
//!   version 3 adds TICKET_KEYS.
//! - `length` is the payload length (plaintext and ciphertext are the same length). It is
//!   checked against [`MAX_FRAME_PAYLOAD`] as soon as the header's first eight bytes are in,
//!   before anything is allocated, so a hostile length cannot make us reserve memory or wait
//!   forever for bytes that will never come.
//! - the `frame counter` is 0 for HELLO and strictly increasing from 1 afterwards in each
//!   direction; [`super::auth`] enforces it (replay protection). For an encrypted frame it is
//!   also the AEAD nonce, so a nonce never repeats under one key.
//! - HELLO (the only frame before session keys exist) travels in cleartext with an
//!   HMAC-SHA256 tag ([`HELLO_TAG_LEN`]) over header and payload under the cluster's HELLO key.
//!   Every other frame's payload is ChaCha20-Poly1305 ciphertext with its 16-byte tag
//!   ([`AEAD_TAG_LEN`]); the header is the associated data, so kind, length and counter are
//!   authenticated too. The kind byte picks the tag length.
//!
//! Payloads (`str` = u8 length + UTF-8, ≤ [`MAX_STRING_LEN`]):
//!
//! | kind | payload |
//! |------|---------|
//! | HELLO (1) | str cluster_id, str node_id, u64 boot_id, u64 attempt, u64 epoch, u64 schema_hash, 32-byte nonce, u8 has_resume, [u64 peer_boot_id, u64 last_seq_received] |
//! | UPDATE (2) | u32 n, n × (u64 seq, u8 table, u16 key_len, key, u32 value_len, value) |
//! | ACK (3) | u64 seq |
//! | SYNC_START (4) | (empty) |
//! | SYNC_DONE (5) | u64 count, u64 digest.count, u64 digest.hash |
//! | PING (6), PONG (7) | u64 token |
//! | CLOSE (8) | str reason |
//! | TICKET_KEYS (9) | u8 n ≤ [`MAX_TICKET_KEYS`], n × (16-byte key id, 32-byte secret, u64 ms until the sender erases it) |
//!
//! An UPDATE record with `seq == 0` belongs to a full resync, not to the sender's sequence
//! space, so it is never acknowledged ([`SEQ_RESYNC`]).
//!
//! Like [`crate::wire`], this module checks *form* only. Whether a HELLO's cluster id is ours
//! or a counter is fresh is [`super::auth`]'s call, and what a frame means is
//! [`super::replicator`]'s. Nothing here panics on any input.

use super::auth::{AeadKey, MacKey};
use super::{Digest, Record, Table};

/// `"LP"`: lbpair peer.
pub const MAGIC: [u8; 2] = *b"LP";
/// The only frame format version this build speaks (2: frames after HELLO are encrypted;
/// 3: TICKET_KEYS).
pub const VERSION: u8 = 3;
/// Fixed header: magic, version, kind, length, counter.
pub const HEADER_LEN: usize = 16;
/// HELLO's tag: HMAC-SHA256.
pub const HELLO_TAG_LEN: usize = 32;
/// Every other frame's tag: Poly1305.
pub const AEAD_TAG_LEN: usize = 16;
/// Largest payload accepted or produced (1 MiB): bounds the memory one frame can claim.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Largest whole frame on the wire.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_FRAME_PAYLOAD + HELLO_TAG_LEN;
/// Largest record key (the tables' keys are a pool name and a cookie or client key).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest record value.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest string field (ids, CLOSE reason).
pub const MAX_STRING_LEN: usize = 255;
/// Length of a HELLO nonce.
pub const NONCE_LEN: usize = 32;
/// Largest HELLO payload: two maximal strings, four u64, the nonce, a RESUME claim.
pub const MAX_HELLO_PAYLOAD: usize = 2 * (1 + MAX_STRING_LEN) + 4 * 8 + NONCE_LEN + 1 + 16;
/// The `seq` of an UPDATE record sent by a full resync (outside the sequence space).
pub const SEQ_RESYNC: u64 = 0;
/// Fixed bytes of one UPDATE record besides its key and value.
pub const RECORD_OVERHEAD: usize = 8 + 1 + 2 + 4;
/// Fixed bytes of an UPDATE payload besides its records.
pub const UPDATE_OVERHEAD: usize = 4;
/// TLS ticket keys in one TICKET_KEYS frame at most: bounds what a peer can make us hold.
pub const MAX_TICKET_KEYS: usize = 8;
/// Length of a ticket key's id.
pub const TICKET_KEY_ID_LEN: usize = 16;
/// Length of a ticket key's secret.
pub const TICKET_KEY_LEN: usize = 32;
/// Wire size of one ticket key: id, secret, remaining lifetime.
const TICKET_KEY_WIRE_LEN: usize = TICKET_KEY_ID_LEN + TICKET_KEY_LEN + 8;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const KIND: usize = 3;
    pub const LENGTH: Range<usize> = 4..8;
    pub const COUNTER: Range<usize> = 8..16;
}

/// The frame kind byte. Unknown codes are kept so that the error can name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Hello,
    Update,
    Ack,
    SyncStart,
    SyncDone,
    Ping,
    Pong,
    Close,
    TicketKeys,
    Unknown(u8),
}

impl Kind {
    pub fn from_u8(b: u8) -> Kind {
        match b {
            1 => Kind::Hello,
            2 => Kind::Update,
            3 => Kind::Ack,
            4 => Kind::SyncStart,
            5 => Kind::SyncDone,
            6 => Kind::Ping,
            7 => Kind::Pong,
            8 => Kind::Close,
            9 => Kind::TicketKeys,
            other => Kind::Unknown(other),
        }
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Update => 2,
            Kind::Ack => 3,
            Kind::SyncStart => 4,
            Kind::SyncDone => 5,
            Kind::Ping => 6,
            Kind::Pong => 7,
            Kind::Close => 8,
            Kind::TicketKeys => 9,
            Kind::Unknown(b) => b,
        }
    }

    /// A stable label for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "HELLO",
            Kind::Update => "UPDATE",
            Kind::Ack => "ACK",
            Kind::SyncStart => "SYNC_START",
            Kind::SyncDone => "SYNC_DONE",
            Kind::Ping => "PING",
            Kind::Pong => "PONG",
            Kind::Close => "CLOSE",
            Kind::TicketKeys => "TICKET_KEYS",
            Kind::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Unknown(b) => write!(f, "unknown kind {b}"),
            k => f.write_str(k.as_str()),
        }
    }
}

/// Why bytes could not be read as, or written into, a frame. Each cause is its own variant so
/// the driver can count them; none of them carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad frame magic {0:02x?} (not an lbpair peer link?)")]
    BadMagic([u8; 2]),
    #[error("peer speaks frame version {0}, this node speaks {VERSION}; upgrade both nodes")]
    UnsupportedVersion(u8),
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    Oversize { len: usize, max: usize },
    #[error("frame MAC does not verify (wrong key, or the frame was altered)")]
    BadMac,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{kind} payload truncated")]
    Truncated { kind: &'static str },
    #[error("{kind} payload has {extra} trailing bytes")]
    TrailingBytes { kind: &'static str, extra: usize },
    #[error("{field} is {len} bytes, longer than the maximum of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown table {0}")]
    UnknownTable(u8),
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("invalid resume flag {0}")]
    BadFlag(u8),
    #[error(
        "{0} frames are not sealed with this kind of key (HELLO is MAC'd, the rest encrypted)"
    )]
    KeyMismatch(&'static str),
    #[error("the first frame of a connection is {0}, not HELLO")]
    FirstNotHello(&'static str),
}

impl FrameError {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            FrameError::BadMagic(_) => "bad_magic",
            FrameError::UnsupportedVersion(_) => "old_version",
            FrameError::Oversize { .. } => "oversize",
            FrameError::BadMac => "bad_mac",
            FrameError::UnknownKind(_) => "unknown_kind",
            FrameError::Truncated { .. } => "truncated",
            FrameError::TrailingBytes { .. } => "trailing_bytes",
            FrameError::FieldTooLong { .. } => "field_too_long",
            FrameError::UnknownTable(_) => "unknown_table",
            FrameError::InvalidUtf8(_) => "invalid_utf8",
            FrameError::BadFlag(_) => "bad_flag",
            FrameError::KeyMismatch(_) => "key_mismatch",
            FrameError::FirstNotHello(_) => "not_hello",
        }
    }
}

/// HELLO's RESUME claim: "I hold your stream from boot `peer_boot_id` up to `last_seq_received`".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub peer_boot_id: u64,
    pub last_seq_received: u64,
}

/// The first frame in each direction: who we are and what we already hold of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: String,
    pub boot_id: u64,
    /// The dialer's connection attempts of this boot, strictly increasing: the acceptor
    /// refuses a HELLO whose (boot id, attempt) is not above the last it accepted (replay).
    pub attempt: u64,
    pub epoch: u64,
    pub schema_hash: u64,
    pub nonce: [u8; NONCE_LEN],
    pub resume: Option<Resume>,
}

/// One TLS session-ticket key as it travels to the peer (lbd's `tls::tickets`): the
/// secret is only ever sent inside an encrypted frame, and `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    pub id: [u8; TICKET_KEY_ID_LEN],
    pub secret: [u8; TICKET_KEY_LEN],
    /// How long the sender still accepts tickets sealed with it (a duration, not a time:
    /// the nodes' clocks are not synchronised).
    pub remaining_ms: u64,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("remaining_ms", &self.remaining_ms)
            .finish()
    }
}

/// One parsed frame (the meaning-level representation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello(Hello),
    /// A batch of records, each with the sender's per-boot sequence number
    /// ([`SEQ_RESYNC`] for full-resync records).
    Update {
        records: Vec<(u64, Record)>,
    },
    /// Cumulative: every update of the receiver's current boot with `seq` ≤ this arrived.
    Ack {
        seq: u64,
    },
    SyncStart,
    SyncDone {
        count: u64,
        digest: Digest,
    },
    Ping {
        token: u64,
    },
    Pong {
        token: u64,
    },
    Close {
        reason: String,
    },
    /// The sender's own TLS ticket keys, all of them (at most [`MAX_TICKET_KEYS`]).
    TicketKeys {
        keys: Vec<TicketKey>,
    },
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub payload_len: usize,
    pub counter: u64,
}

/// The tag length a frame of `kind` carries: HELLO is MAC'd, everything else encrypted.
pub fn tag_len(kind: Kind) -> usize {
    if kind == Kind::Hello {
        HELLO_TAG_LEN
    } else {
        AEAD_TAG_LEN
    }
}

/// One complete, not yet authenticated frame inside a buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub header: Header,
    /// The header's bytes: the AEAD's associated data.
    pub header_bytes: &'a [u8],
    /// Header and body: the bytes a HELLO's MAC covers.
    pub authenticated: &'a [u8],
    /// The payload as sent: cleartext for HELLO, ciphertext otherwise.
    pub body: &'a [u8],
    pub tag: &'a [u8],
}

impl RawFrame<'_> {
    /// Whole frame length on the wire.
    pub fn len(&self) -> usize {
        self.authenticated.len() + self.tag.len()
    }

    /// Never true: a frame has at least a header and a tag (here for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Check a HELLO's MAC in constant time (any other kind fails: it is not MAC'd).
    pub fn verify(&self, key: &MacKey) -> Result<(), FrameError> {
        if self.header.kind == Kind::Hello && key.verify(self.authenticated, self.tag) {
            Ok(())
        } else {
            Err(FrameError::BadMac)
        }
    }

    /// Parse a HELLO's cleartext payload (call after [`RawFrame::verify`]).
    pub fn parse(&self) -> Result<Frame, FrameError> {
        if self.header.kind != Kind::Hello {
            return Err(FrameError::KeyMismatch(self.header.kind.as_str()));
        }
        Frame::parse_payload(self.header.kind, self.body)
    }

    /// Decrypt and authenticate an encrypted frame under `key` (nonce: its counter), then
    /// parse it. A HELLO, a wrong key, or any altered byte is [`FrameError::BadMac`].
    pub fn open(&self, key: &AeadKey) -> Result<Frame, FrameError> {
        if self.header.kind == Kind::Hello {
            return Err(FrameError::BadMac);
        }
        let mut plain = self.body.to_vec();
        key.open_in_place(self.header.counter, self.header_bytes, &mut plain, self.tag)
            .map_err(|_| FrameError::BadMac)?;
        Frame::parse_payload(self.header.kind, &plain)
    }
}

/// Read as much of the header as `buf` holds. `Ok(None)` means more bytes are needed; every
/// field present is already checked, so garbage is refused early and an oversize length is an
/// error as soon as its four bytes are in.
pub fn peek_header(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if let Some(m) = buf.get(field::MAGIC) {
        if m != MAGIC {
            return Err(FrameError::BadMagic([m[0], m[1]]));
        }
    } else if let Some(&b0) = buf.first() {
        if b0 != MAGIC[0] {
            return Err(FrameError::BadMagic([b0, 0]));
        }
    }
    if let Some(&v) = buf.get(field::VERSION) {
        if v != VERSION {
            return Err(FrameError::UnsupportedVersion(v));
        }
    }
    let Some(len) = buf.get(field::LENGTH) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::Oversize {
            len,
            max: MAX_FRAME_PAYLOAD,
        });
    }
    let (Some(&kind), Some(counter)) = (buf.get(field::KIND), buf.get(field::COUNTER)) else {
        return Ok(None);
    };
    let mut c = [0u8; 8];
    c.copy_from_slice(counter);
    Ok(Some(Header {
        kind: Kind::from_u8(kind),
        payload_len: len,
        counter: u64::from_be_bytes(c),
    }))
}

/// Find the first complete frame at the start of `buf` without checking its MAC or payload.
/// `Ok(None)`: incomplete, read more (every prefix of a valid frame gives this).
pub fn split(buf: &[u8]) -> Result<Option<RawFrame<'_>>, FrameError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    let auth_len = HEADER_LEN + header.payload_len;
    let (Some(authenticated), Some(tag)) = (
        buf.get(..auth_len),
        buf.get(auth_len..auth_len + tag_len(header.kind)),
    ) else {
        return Ok(None);
    };
    Ok(Some(RawFrame {
        header,
        header_bytes: &authenticated[..HEADER_LEN],
        authenticated,
        body: &authenticated[HEADER_LEN..],
        tag,
    }))
}

/// For the first message of an accepted connection, which must be a HELLO: its length once
/// `buf` holds all of it (`Ok(None)`: read more). Another kind, or a length no HELLO can
/// have, is refused from the header alone, so a stranger gets at most one HELLO's worth of
/// buffer. Checks form only; the MAC is [`super::auth`]'s.
pub fn first_message_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(header) = peek_header(buf)? else {
        return Ok(None);
    };
    if header.kind != Kind::Hello {
        return Err(FrameError::FirstNotHello(header.kind.as_str()));
    }
    if header.payload_len > MAX_HELLO_PAYLOAD {
        return Err(FrameError::Oversize {
            len: header.payload_len,
            max: MAX_HELLO_PAYLOAD,
        });
    }
    let len = HEADER_LEN + header.payload_len + HELLO_TAG_LEN;
    Ok((buf.len() >= len).then_some(len))
}

/// A frame decoded from a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub frame: Frame,
    pub counter: u64,
    /// Bytes of the buffer this frame used.
    pub len: usize,
}

/// Split, decrypt with `key` and parse the first (encrypted) frame of `buf`.
/// `Ok(None)`: need more bytes. (The replicator uses [`split`] directly because it picks the
/// key by kind and state.)
pub fn decode(buf: &[u8], key: &AeadKey) -> Result<Option<Decoded>, FrameError> {
    let Some(raw) = split(buf)? else {
        return Ok(None);
    };
    Ok(Some(Decoded {
        frame: raw.open(key)?,
        counter: raw.header.counter,
        len: raw.len(),
    }))
}

/// Split, verify with `key` and parse a HELLO at the start of `buf`.
pub fn decode_hello(buf: &[u8], key: &MacKey) -> Result<Option<Decoded>, FrameError> {
    let Some(raw) = split(buf)? else {
        return Ok(None);
    };
    raw.verify(key)?;
    Ok(Some(Decoded {
        frame: raw.parse()?,
        counter: raw.header.counter,
        len: raw.len(),
    }))
}

/// Header and cleartext payload of `frame`, every bound checked.
fn encode_clear(frame: &Frame, counter: u64, tag_len: usize) -> Result<Vec<u8>, FrameError> {
    let payload_len = frame.payload_len()?;
    if payload_len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::Oversize {
            len: payload_len,
            max: MAX_FRAME_PAYLOAD,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload_len + tag_len);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(frame.kind().as_u8());
    // Cannot truncate: checked against MAX_FRAME_PAYLOAD above.
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    frame.emit_payload(&mut out);
    debug_assert_eq!(out.len(), HEADER_LEN + payload_len);
    Ok(out)
}

/// Encode a HELLO (counter 0) with its MAC under `key`.
pub fn encode_hello(hello: &Hello, key: &MacKey) -> Result<Vec<u8>, FrameError> {
    let mut out = encode_clear(&Frame::Hello(hello.clone()), 0, HELLO_TAG_LEN)?;
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Encode `frame` with `counter`, its payload encrypted under `key` with the counter as the
/// nonce and the header as associated data. The caller never reuses a counter under one key
/// ([`super::auth::Session`] counts). A HELLO is refused: it is MAC'd ([`encode_hello`]).
pub fn encode(frame: &Frame, counter: u64, key: &AeadKey) -> Result<Vec<u8>, FrameError> {
    if let Frame::Hello(_) = frame {
        return Err(FrameError::KeyMismatch("HELLO"));
    }
    let mut out = encode_clear(frame, counter, AEAD_TAG_LEN)?;
    let (header, payload) = out.split_at_mut(HEADER_LEN);
    let tag = key.seal_in_place(counter, header, payload)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Wire size of one UPDATE record (for batching under [`MAX_FRAME_PAYLOAD`]).
pub fn record_wire_len(record: &Record) -> usize {
    RECORD_OVERHEAD + record.key.len() + record.value.len()
}

/// Whether a record fits the codec's field bounds.
pub fn check_record(record: &Record) -> Result<(), FrameError> {
    check_len("record key", record.key.len(), MAX_KEY_LEN)?;
    check_len("record value", record.value.len(), MAX_VALUE_LEN)
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), FrameError> {
    if len > max {
        Err(FrameError::FieldTooLong { field, len, max })
    } else {
        Ok(())
    }
}

impl Frame {
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Hello(_) => Kind::Hello,
            Frame::Update { .. } => Kind::Update,
            Frame::Ack { .. } => Kind::Ack,
            Frame::SyncStart => Kind::SyncStart,
            Frame::SyncDone { .. } => Kind::SyncDone,
            Frame::Ping { .. } => Kind::Ping,
            Frame::Pong { .. } => Kind::Pong,
            Frame::Close { .. } => Kind::Close,
            Frame::TicketKeys { .. } => Kind::TicketKeys,
        }
    }

    /// Payload length, checking every field bound on the way (so `emit_payload` cannot
    /// produce something `parse_payload` refuses).
    pub fn payload_len(&self) -> Result<usize, FrameError> {
        Ok(match self {
            Frame::Hello(h) => {
                check_len("cluster id", h.cluster_id.len(), MAX_STRING_LEN)?;
                check_len("node id", h.node_id.len(), MAX_STRING_LEN)?;
                1 + h.cluster_id.len()
                    + 1
                    + h.node_id.len()
                    + 32
                    + NONCE_LEN
                    + 1
                    + if h.resume.is_some() { 16 } else { 0 }
            }
            Frame::Update { records } => {
                let mut len = UPDATE_OVERHEAD;
                for (_, r) in records {
                    check_record(r)?;
                    len += record_wire_len(r);
                }
                len
            }
            Frame::Ack { .. } | Frame::Ping { .. } | Frame::Pong { .. } => 8,
            Frame::SyncStart => 0,
            Frame::SyncDone { .. } => 24,
            Frame::Close { reason } => {
                check_len("close reason", reason.len(), MAX_STRING_LEN)?;
                1 + reason.len()
            }
            Frame::TicketKeys { keys } => {
                check_len("ticket keys", keys.len(), MAX_TICKET_KEYS)?;
                1 + keys.len() * TICKET_KEY_WIRE_LEN
            }
        })
    }

    /// Append the payload to `out` (after `payload_len` succeeded).
    fn emit_payload(&self, out: &mut Vec<u8>) {
        // Lengths fit their prefixes: payload_len checked them against the MAX_* bounds.
        let put_str = |out: &mut Vec<u8>, s: &str| {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        };
        match self {
            Frame::Hello(h) => {
                put_str(out, &h.cluster_id);
                put_str(out, &h.node_id);
                out.extend_from_slice(&h.boot_id.to_be_bytes());
                out.extend_from_slice(&h.attempt.to_be_bytes());
                out.extend_from_slice(&h.epoch.to_be_bytes());
                out.extend_from_slice(&h.schema_hash.to_be_bytes());
                out.extend_from_slice(&h.nonce);
                match h.resume {
                    None => out.push(0),
                    Some(r) => {
                        out.push(1);
                        out.extend_from_slice(&r.peer_boot_id.to_be_bytes());
                        out.extend_from_slice(&r.last_seq_received.to_be_bytes());
                    }
                }
            }
            Frame::Update { records } => {
                out.extend_from_slice(&(records.len() as u32).to_be_bytes());
                for (seq, r) in records {
                    out.extend_from_slice(&seq.to_be_bytes());
                    out.push(r.table as u8);
                    out.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
                    out.extend_from_slice(&r.key);
                    out.extend_from_slice(&(r.value.len() as u32).to_be_bytes());
                    out.extend_from_slice(&r.value);
                }
            }
            Frame::Ack { seq } => out.extend_from_slice(&seq.to_be_bytes()),
            Frame::Ping { token } | Frame::Pong { token } => {
                out.extend_from_slice(&token.to_be_bytes())
            }
            Frame::SyncStart => {}
            Frame::SyncDone { count, digest } => {
                out.extend_from_slice(&count.to_be_bytes());
                out.extend_from_slice(&digest.count.to_be_bytes());
                out.extend_from_slice(&digest.hash.to_be_bytes());
            }
            Frame::Close { reason } => put_str(out, reason),
            Frame::TicketKeys { keys } => {
                out.push(keys.len() as u8);
                for k in keys {
                    out.extend_from_slice(&k.id);
                    out.extend_from_slice(&k.secret);
                    out.extend_from_slice(&k.remaining_ms.to_be_bytes());
                }
            }
        }
    }

    /// Parse a payload of the given kind. Checks form only (bounds, UTF-8, table codes, no
    /// trailing bytes).
    pub fn parse_payload(kind: Kind, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader {
            buf: payload,
            kind: kind.as_str(),
        };
        let frame = match kind {
            Kind::Hello => {
                let cluster_id = r.string("cluster id")?;
                let node_id = r.string("node id")?;
                let boot_id = r.u64()?;
                let attempt = r.u64()?;
                let epoch = r.u64()?;
                let schema_hash = r.u64()?;
                let mut nonce = [0u8; NONCE_LEN];
                nonce.copy_from_slice(r.take(NONCE_LEN)?);
                let resume = match r.u8()? {
                    0 => None,
                    1 => Some(Resume {
                        peer_boot_id: r.u64()?,
                        last_seq_received: r.u64()?,
                    }),
                    other => return Err(FrameError::BadFlag(other)),
                };
                Frame::Hello(Hello {
                    cluster_id,
                    node_id,
                    boot_id,
                    attempt,
                    epoch,
                    schema_hash,
                    nonce,
                    resume,
                })
            }
            Kind::Update => {
                let n = r.u32()? as usize;
                // Never trust `n` for the allocation: cap it by what the payload can hold.
                let mut records = Vec::with_capacity(n.min(r.buf.len() / RECORD_OVERHEAD));
                for _ in 0..n {
                    let seq = r.u64()?;
                    let t = r.u8()?;
                    let table = Table::from_u8(t).ok_or(FrameError::UnknownTable(t))?;
                    let klen = r.u16()? as usize;
                    check_len("record key", klen, MAX_KEY_LEN)?;
                    let key = r.take(klen)?.to_vec();
                    let vlen = r.u32()? as usize;
                    check_len("record value", vlen, MAX_VALUE_LEN)?;
                    let value = r.take(vlen)?.to_vec();
                    records.push((seq, Record { table, key, value }));
                }
                Frame::Update { records }
            }
            Kind::Ack => Frame::Ack { seq: r.u64()? },
            Kind::SyncStart => Frame::SyncStart,
            Kind::SyncDone => Frame::SyncDone {
                count: r.u64()?,
                digest: Digest {
                    count: r.u64()?,
                    hash: r.u64()?,
                },
            },
            Kind::Ping => Frame::Ping { token: r.u64()? },
            Kind::Pong => Frame::Pong { token: r.u64()? },
            Kind::Close => Frame::Close {
                reason: r.string("close reason")?,
            },
            Kind::TicketKeys => {
                let n = r.u8()? as usize;
                check_len("ticket keys", n, MAX_TICKET_KEYS)?;
                let mut keys = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut key = TicketKey {
                        id: [0; TICKET_KEY_ID_LEN],
                        secret: [0; TICKET_KEY_LEN],
                        remaining_ms: 0,
                    };
                    key.id.copy_from_slice(r.take(TICKET_KEY_ID_LEN)?);
                    key.secret.copy_from_slice(r.take(TICKET_KEY_LEN)?);
                    key.remaining_ms = r.u64()?;
                    keys.push(key);
                }
                Frame::TicketKeys { keys }
            }
            Kind::Unknown(b) => return Err(FrameError::UnknownKind(b)),
        };
        if !r.buf.is_empty() {
            return Err(FrameError::TrailingBytes {
                kind: kind.as_str(),
                extra: r.buf.len(),
            });
        }
        Ok(frame)
    }
}

/// A bounds-checked cursor over a payload.
struct Reader<'a> {
    buf: &'a [u8],
    kind: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated { kind: self.kind });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }

    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        // A u8 length cannot exceed MAX_STRING_LEN (255), so no further bound is needed.
        let len = self.u8()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| FrameError::InvalidUtf8(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AeadKey {
        AeadKey::session(
            b"0123456789abcdef0123",
            &[1; 32],
            &[2; 32],
            super::super::Role::Dialer,
        )
    }

    #[test]
    fn header_fields_at_their_offsets() {
        let bytes = encode(&Frame::Ack { seq: 7 }, 0x0102_0304_0506_0708, &key()).unwrap();
        assert_eq!(&bytes[..2], b"LP");
        assert_eq!(bytes[2], VERSION);
        assert_eq!(bytes[3], 3);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 8]);
        assert_eq!(&bytes[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        // Encrypted: the payload is not the cleartext seq.
        assert_ne!(&bytes[16..24], &7u64.to_be_bytes());
        assert_eq!(bytes.len(), HEADER_LEN + 8 + AEAD_TAG_LEN);
    }

    #[test]
    fn oversize_length_is_refused_from_eight_bytes() {
        let mut h = Vec::from(&b"LP"[..]);
        h.push(VERSION);
        h.push(2);
        h.extend_from_slice(&((MAX_FRAME_PAYLOAD as u32) + 1).to_be_bytes());
        assert!(matches!(peek_header(&h), Err(FrameError::Oversize { .. })));
        assert!(matches!(peek_header(&h[..7]), Ok(None)));
    }

    #[test]
    fn garbage_first_byte_is_refused_at_once() {
        assert!(matches!(split(b"G"), Err(FrameError::BadMagic(_))));
        assert!(matches!(
            split(b"LP\x01"),
            Err(FrameError::UnsupportedVersion(1))
        ));
    }

    #[test]
    fn an_old_version_is_named_with_both_versions() {
        let e = split(b"LP\x01").unwrap_err();
        assert_eq!(
            e.to_string(),
            "peer speaks frame version 1, this node speaks 3; upgrade both nodes"
        );
        assert_eq!(e.as_str(), "old_version");
    }

    #[test]
    fn a_first_message_must_be_a_bounded_hello() {
        let ping = encode(&Frame::Ping { token: 1 }, 1, &key()).unwrap();
        assert_eq!(
            first_message_len(&ping),
            Err(FrameError::FirstNotHello("PING"))
        );
        let mut h = Vec::from(&b"LP"[..]);
        h.extend_from_slice(&[VERSION, 1]);
        h.extend_from_slice(&((MAX_HELLO_PAYLOAD as u32) + 1).to_be_bytes());
        h.extend_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            first_message_len(&h),
            Err(FrameError::Oversize { .. })
        ));
        let hello = Hello {
            cluster_id: "c".repeat(MAX_STRING_LEN),
            node_id: "n".repeat(MAX_STRING_LEN),
            boot_id: 1,
            attempt: 1,
            epoch: 0,
            schema_hash: 0,
            nonce: [0; NONCE_LEN],
            resume: Some(Resume {
                peer_boot_id: 1,
                last_seq_received: 2,
            }),
        };
        let bytes = encode_hello(&hello, &MacKey::hello(b"k", "c")).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + MAX_HELLO_PAYLOAD + HELLO_TAG_LEN);
        assert_eq!(first_message_len(&bytes), Ok(Some(bytes.len())));
        assert_eq!(first_message_len(&bytes[..bytes.len() - 1]), Ok(None));
    }

    #[test]
    fn encode_refuses_overlong_fields() {
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let e = encode(&Frame::Close { reason: long }, 1, &key()).unwrap_err();
        assert!(matches!(e, FrameError::FieldTooLong { .. }));
    }

    #[test]
    fn ticket_keys_round_trip_bounded_and_their_secrets_are_never_shown() {
        let key_n = |i: u8| TicketKey {
            id: [i; TICKET_KEY_ID_LEN],
            secret: [0xA5; TICKET_KEY_LEN],
            remaining_ms: 7_200_000 + u64::from(i),
        };
        let keys: Vec<TicketKey> = (0..MAX_TICKET_KEYS as u8).map(key_n).collect();
        let f = Frame::TicketKeys { keys: keys.clone() };
        let bytes = encode(&f, 3, &key()).unwrap();
        assert_eq!(decode(&bytes, &key()).unwrap().unwrap().frame, f);
        assert!(
            !bytes
                .windows(TICKET_KEY_LEN)
                .any(|w| w == [0xA5; TICKET_KEY_LEN]),
            "the secret travels encrypted"
        );
        assert!(!format!("{f:?}").contains("165"), "{f:?}");

        let mut over = keys;
        over.push(key_n(99));
        let e = encode(&Frame::TicketKeys { keys: over }, 4, &key()).unwrap_err();
        assert!(matches!(e, FrameError::FieldTooLong { .. }), "{e}");
        // A count over the bound is refused before any key is read.
        let e = Frame::parse_payload(Kind::TicketKeys, &[MAX_TICKET_KEYS as u8 + 1]).unwrap_err();
        assert!(matches!(e, FrameError::FieldTooLong { .. }), "{e}");
        let e = Frame::parse_payload(Kind::TicketKeys, &[1, 0, 0]).unwrap_err();
        assert!(matches!(e, FrameError::Truncated { .. }), "{e}");
    }
}
