//! The peer link's frame codec: versioned, length-checked, MAC'd binary frames.
//!
//! Layout of one frame (all integers big-endian):
//!
//! ```text
//!  0      2   3    4          8                 16             16+len       16+len+32
//!  +------+---+----+----------+-----------------+----------------+------------+
//!  |magic |ver|kind|length u32| frame counter u64| payload (len) | HMAC tag    |
//!  +------+---+----+----------+-----------------+----------------+------------+
//!  |<------------------- authenticated (header + payload) ------>|
//! ```
//!
//! - `magic` is `"LP"`; `ver` is [`VERSION`]. A frame with another version is refused rather
//!   than guessed at: both nodes of a pair run the same release.
//! - `length` is checked against [`MAX_FRAME_PAYLOAD`] as soon as the header's first eight
//!   bytes are in, before anything is allocated, so a hostile length cannot make us reserve
//!   memory or wait forever for bytes that will never come.
//! - the `frame counter` is 0 for HELLO and strictly increasing from 1 afterwards in each
//!   direction; [`super::auth`] enforces it (replay protection).
//! - the tag is HMAC-SHA256 over header and payload with the key [`super::auth`] picks (the
//!   HELLO key or the session key of the direction).
//!
//! Payloads (`str` = u8 length + UTF-8, ≤ [`MAX_STRING_LEN`]):
//!
//! | kind | payload |
//! |------|---------|
//! | HELLO (1) | str cluster_id, str node_id, u64 boot_id, u64 epoch, u64 schema_hash, 32-byte nonce, u8 has_resume, [u64 peer_boot_id, u64 last_seq_received] |
//! | UPDATE (2) | u32 n, n × (u64 seq, u8 table, u16 key_len, key, u32 value_len, value) |
//! | ACK (3) | u64 seq |
//! | SYNC_START (4) | (empty) |
//! | SYNC_DONE (5) | u64 count, u64 digest.count, u64 digest.hash |
//! | PING (6), PONG (7) | u64 token |
//! | CLOSE (8) | str reason |
//!
//! An UPDATE record with `seq == 0` belongs to a full resync, not to the sender's sequence
//! space, so it is never acknowledged ([`SEQ_RESYNC`]).
//!
//! Like [`crate::wire`], this module checks *form* only. Whether a HELLO's cluster id is ours
//! or a counter is fresh is [`super::auth`]'s call, and what a frame means is
//! [`super::replicator`]'s. Nothing here panics on any input.

use super::auth::MacKey;
use super::{Digest, Record, Table};

/// `"LP"`: lbpair peer.
pub const MAGIC: [u8; 2] = *b"LP";
/// The only frame format version this build speaks.
pub const VERSION: u8 = 1;
/// Fixed header: magic, version, kind, length, counter.
pub const HEADER_LEN: usize = 16;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// Largest payload accepted or produced (1 MiB): bounds the memory one frame can claim.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;
/// Largest whole frame on the wire.
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_FRAME_PAYLOAD + TAG_LEN;
/// Largest record key (the tables' keys are a pool name and a cookie or client key).
pub const MAX_KEY_LEN: usize = 1024;
/// Largest record value.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest string field (ids, CLOSE reason).
pub const MAX_STRING_LEN: usize = 255;
/// Length of a HELLO nonce.
pub const NONCE_LEN: usize = 32;
/// The `seq` of an UPDATE record sent by a full resync (outside the sequence space).
pub const SEQ_RESYNC: u64 = 0;
/// Fixed bytes of one UPDATE record besides its key and value.
pub const RECORD_OVERHEAD: usize = 8 + 1 + 2 + 4;
/// Fixed bytes of an UPDATE payload besides its records.
pub const UPDATE_OVERHEAD: usize = 4;

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
    #[error("unsupported frame version {0} (this build speaks {VERSION})")]
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
}

impl FrameError {
    /// A stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            FrameError::BadMagic(_) => "bad_magic",
            FrameError::UnsupportedVersion(_) => "unsupported_version",
            FrameError::Oversize { .. } => "oversize",
            FrameError::BadMac => "bad_mac",
            FrameError::UnknownKind(_) => "unknown_kind",
            FrameError::Truncated { .. } => "truncated",
            FrameError::TrailingBytes { .. } => "trailing_bytes",
            FrameError::FieldTooLong { .. } => "field_too_long",
            FrameError::UnknownTable(_) => "unknown_table",
            FrameError::InvalidUtf8(_) => "invalid_utf8",
            FrameError::BadFlag(_) => "bad_flag",
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
    pub epoch: u64,
    pub schema_hash: u64,
    pub nonce: [u8; NONCE_LEN],
    pub resume: Option<Resume>,
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
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub payload_len: usize,
    pub counter: u64,
}

/// One complete, not yet authenticated frame inside a buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub header: Header,
    /// Header and payload: the bytes the tag covers.
    pub authenticated: &'a [u8],
    pub payload: &'a [u8],
    pub tag: &'a [u8],
}

impl RawFrame<'_> {
    /// Whole frame length on the wire.
    pub fn len(&self) -> usize {
        self.authenticated.len() + TAG_LEN
    }

    /// Never true: a frame has at least a header and a tag (here for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Check the tag in constant time.
    pub fn verify(&self, key: &MacKey) -> Result<(), FrameError> {
        if key.verify(self.authenticated, self.tag) {
            Ok(())
        } else {
            Err(FrameError::BadMac)
        }
    }

    /// Parse the payload (call after [`RawFrame::verify`]).
    pub fn parse(&self) -> Result<Frame, FrameError> {
        Frame::parse_payload(self.header.kind, self.payload)
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
    let (Some(authenticated), Some(tag)) =
        (buf.get(..auth_len), buf.get(auth_len..auth_len + TAG_LEN))
    else {
        return Ok(None);
    };
    Ok(Some(RawFrame {
        header,
        authenticated,
        payload: &authenticated[HEADER_LEN..],
        tag,
    }))
}

/// A frame decoded from a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub frame: Frame,
    pub counter: u64,
    /// Bytes of the buffer this frame used.
    pub len: usize,
}

/// Split, verify with `key` and parse the first frame of `buf`. `Ok(None)`: need more bytes.
/// (The replicator uses [`split`] directly because it picks the key by kind and state.)
pub fn decode(buf: &[u8], key: &MacKey) -> Result<Option<Decoded>, FrameError> {
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

/// Encode `frame` with `counter` and the tag under `key`.
pub fn encode(frame: &Frame, counter: u64, key: &MacKey) -> Result<Vec<u8>, FrameError> {
    let payload_len = frame.payload_len()?;
    if payload_len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::Oversize {
            len: payload_len,
            max: MAX_FRAME_PAYLOAD,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload_len + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(frame.kind().as_u8());
    // Cannot truncate: checked against MAX_FRAME_PAYLOAD above.
    out.extend_from_slice(&(payload_len as u32).to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    frame.emit_payload(&mut out);
    debug_assert_eq!(out.len(), HEADER_LEN + payload_len);
    let tag = key.tag(&out);
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
                    + 24
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

    fn key() -> MacKey {
        MacKey::hello(b"0123456789abcdef0123", "c1")
    }

    #[test]
    fn header_fields_at_their_offsets() {
        let bytes = encode(&Frame::Ack { seq: 7 }, 0x0102_0304_0506_0708, &key()).unwrap();
        assert_eq!(&bytes[..2], b"LP");
        assert_eq!(bytes[2], VERSION);
        assert_eq!(bytes[3], 3);
        assert_eq!(&bytes[4..8], &[0, 0, 0, 8]);
        assert_eq!(&bytes[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&bytes[16..24], &7u64.to_be_bytes());
        assert_eq!(bytes.len(), HEADER_LEN + 8 + TAG_LEN);
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
            split(b"LP\x02"),
            Err(FrameError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn encode_refuses_overlong_fields() {
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let e = encode(&Frame::Close { reason: long }, 1, &key()).unwrap_err();
        assert!(matches!(e, FrameError::FieldTooLong { .. }));
    }
}
