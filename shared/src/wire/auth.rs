//! The authentication trailer lbpair appends to its VRRPv3 adverts (`auth_key_file`).
//!
//! VRRPv3 dropped VRRPv2's authentication field, and RFC 5798 has no place for a MAC. Two
//! lbpair nodes that share a key therefore append this trailer after the VRRP message,
//! inside the same IP payload:
//!
//! ```text
//!  IPv4 header | VRRP message (8 + 4 × count bytes) | trailer (44 bytes)
//!
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Version (1)  |    Key id     |         Reserved (0)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                  Sequence number (64 bits)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |            Tag: HMAC-SHA256, full 32 bytes (8 words)          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! - **Where the VRRP message ends** is told by its own header (8 + 4 × count), so
//!   [`split`] needs no length field. The VRRP checksum covers the VRRP message alone, with
//!   the VRRP length in the pseudo-header, exactly as without a trailer.
//! - **Not interoperable.** A receiver that doesn't know the trailer sees an IP payload
//!   longer than the message: lbpair without a key discards it (`length`), and other
//!   implementations either discard it or ignore the extra bytes. Either way nobody but a
//!   key holder gives the trailer any meaning. Use it only between two lbpair nodes.
//! - **Tag** = HMAC-SHA256 under a key derived from the file's key material
//!   ([`Key::new`]), over the IPv4 source and destination, the VRRP message and the first
//!   12 bytes of the trailer (version, key id, reserved, sequence). The full 32 bytes are
//!   sent: 32 bytes more per advert cost nothing, and a truncated tag would only need an
//!   argument for why it is enough. Covering the addresses means an advert captured on its
//!   way to one unicast peer cannot be sent to another, or re-sourced.
//! - **Key id**: one byte derived from the key, so a receiver can tell "the two nodes have
//!   different keys" (a configuration error) from "this tag is forged" in its logs. It is
//!   not secret and is checked before the tag, but is no substitute for it.
//! - **Sequence**: chosen by the sender, strictly increasing; replay protection (the
//!   receiver keeps the highest sequence seen per source) is the receiver's business, not
//!   this codec's.
//!
//! Tags are compared in constant time (`hmac`'s `verify_slice`). Nothing here panics on any
//! input.

use std::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The trailer format this code reads and writes.
pub const VERSION: u8 = 1;
/// Length of the trailer.
pub const TRAILER_LEN: usize = 44;
/// Length of the tag (a full HMAC-SHA256).
pub const TAG_LEN: usize = 32;
/// The least key material accepted: 256 bits, the size of the HMAC-SHA256 output.
pub const MIN_KEY_LEN: usize = 32;

/// Derivation labels: the file's key is never used directly, so one key file pointed at by
/// another protocol by mistake can't make tags that verify here.
const MAC_KEY_LABEL: &[u8] = b"lbpair-vrrp advert tag v1";
const KEY_ID_LABEL: &[u8] = b"lbpair-vrrp key id v1";

/// Byte offsets of the trailer's fields.
pub mod field {
    /// A byte range in the trailer.
    pub type Field = core::ops::Range<usize>;

    pub const VERSION: usize = 0;
    pub const KEY_ID: usize = 1;
    pub const RESERVED: Field = 2..4;
    pub const SEQ: Field = 4..12;
    pub const TAG: Field = 12..44;
    /// What the tag covers of the trailer itself: everything before it.
    pub const SIGNED: Field = 0..12;
}

/// Why a trailer was refused, or a key could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No trailer after the VRRP message (an unauthenticated advert).
    #[error("no authentication trailer")]
    Missing,
    /// A trailer of the wrong length, an unknown version or non-zero reserved bits.
    #[error("malformed authentication trailer: {0}")]
    Malformed(&'static str),
    /// The sender's key id is not ours: the two nodes have different keys (or a forger
    /// guessed the wrong byte). Counted with [`Error::BadTag`].
    #[error("key id {theirs:#04x} is not ours ({ours:#04x}): the sender has another key")]
    WrongKey { ours: u8, theirs: u8 },
    /// The tag does not verify: forged, altered, or re-addressed.
    #[error("authentication tag does not verify")]
    BadTag,
    /// [`Key::new`]: too little key material.
    #[error("key has {len} bytes, at least {MIN_KEY_LEN} are required")]
    ShortKey { len: usize },
}

impl Error {
    /// A stable counter label. A wrong key id counts as a bad tag: both mean "not signed
    /// with our key", and a forger chooses which one it gets.
    pub fn as_str(&self) -> &'static str {
        match self {
            Error::Missing => "auth_missing",
            Error::Malformed(_) => "auth_malformed",
            Error::WrongKey { .. } | Error::BadTag => "auth_bad_tag",
            Error::ShortKey { .. } => "auth_short_key",
        }
    }
}

/// A key for tagging adverts, derived from a key file's material. `Debug` never prints it.
///
/// `PartialEq` (so a reload can tell a changed key from an unchanged one) is not constant
/// time; it compares configurations, never anything from the network.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    mac_key: [u8; 32],
    id: u8,
}

impl Key {
    /// Derive the tagging key and key id from at least [`MIN_KEY_LEN`] bytes of material.
    pub fn new(material: &[u8]) -> Result<Key, Error> {
        if material.len() < MIN_KEY_LEN {
            return Err(Error::ShortKey {
                len: material.len(),
            });
        }
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut m = hmac_with(material);
            m.update(label);
            m.finalize().into_bytes().into()
        };
        Ok(Key {
            mac_key: derive(MAC_KEY_LABEL),
            id: derive(KEY_ID_LABEL)[0],
        })
    }

    /// The non-secret one-byte key id carried in the trailer.
    pub fn id(&self) -> u8 {
        self.id
    }

    fn mac(&self, src: Ipv4Addr, dst: Ipv4Addr, vrrp: &[u8], signed: &[u8]) -> HmacSha256 {
        let mut m = hmac_with(&self.mac_key);
        m.update(&src.octets());
        m.update(&dst.octets());
        m.update(vrrp);
        m.update(signed);
        m
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(id {:#04x}, <redacted>)", self.id)
    }
}

fn hmac_with(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed first), so this cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// A zero-copy view of a trailer. Getters read missing bytes as zero (possible only through
/// [`Trailer::new_unchecked`]); use [`Trailer::new_checked`] for input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Trailer<T> {
    pub const fn new_unchecked(buffer: T) -> Trailer<T> {
        Trailer { buffer }
    }

    /// Wraps exactly [`TRAILER_LEN`] bytes: anything else is `Malformed`.
    pub fn new_checked(buffer: T) -> Result<Trailer<T>, Error> {
        if buffer.as_ref().len() != TRAILER_LEN {
            return Err(Error::Malformed("length"));
        }
        Ok(Trailer { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes<const N: usize>(&self, f: field::Field) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buffer.as_ref().get(f) {
            for (o, s) in out.iter_mut().zip(src) {
                *o = *s;
            }
        }
        out
    }

    pub fn version(&self) -> u8 {
        self.bytes::<1>(field::VERSION..field::VERSION + 1)[0]
    }

    pub fn key_id(&self) -> u8 {
        self.bytes::<1>(field::KEY_ID..field::KEY_ID + 1)[0]
    }

    pub fn reserved(&self) -> u16 {
        u16::from_be_bytes(self.bytes(field::RESERVED))
    }

    pub fn seq(&self) -> u64 {
        u64::from_be_bytes(self.bytes(field::SEQ))
    }

    pub fn tag(&self) -> [u8; TAG_LEN] {
        self.bytes(field::TAG)
    }

    /// The trailer bytes the tag covers.
    fn signed(&self) -> [u8; 12] {
        self.bytes(field::SIGNED)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Trailer<T> {
    fn set(&mut self, f: field::Field, v: &[u8]) {
        if let Some(dst) = self.buffer.as_mut().get_mut(f) {
            dst.copy_from_slice(v);
        }
    }

    pub fn set_version(&mut self, v: u8) {
        self.set(field::VERSION..field::VERSION + 1, &[v]);
    }

    pub fn set_key_id(&mut self, v: u8) {
        self.set(field::KEY_ID..field::KEY_ID + 1, &[v]);
    }

    pub fn set_reserved(&mut self, v: u16) {
        self.set(field::RESERVED, &v.to_be_bytes());
    }

    pub fn set_seq(&mut self, v: u64) {
        self.set(field::SEQ, &v.to_be_bytes());
    }

    pub fn set_tag(&mut self, v: &[u8; TAG_LEN]) {
        self.set(field::TAG, v);
    }
}

/// A parsed, verified trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub key_id: u8,
    pub seq: u64,
}

impl Repr {
    /// The trailer `key` sends with sequence `seq`.
    pub fn new(key: &Key, seq: u64) -> Repr {
        Repr {
            key_id: key.id(),
            seq,
        }
    }

    /// Checks form (length, version, reserved), then the key id, then the tag over `src`,
    /// `dst` and `vrrp` (the VRRP message the trailer followed). Nothing is judged about
    /// the sequence: replay is the receiver's decision.
    pub fn parse<T: AsRef<[u8]>>(
        trailer: &Trailer<T>,
        key: &Key,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        vrrp: &[u8],
    ) -> Result<Repr, Error> {
        if trailer.buffer.as_ref().len() != TRAILER_LEN {
            return Err(Error::Malformed("length"));
        }
        if trailer.version() != VERSION {
            return Err(Error::Malformed("version"));
        }
        if trailer.reserved() != 0 {
            return Err(Error::Malformed("reserved bits"));
        }
        if trailer.key_id() != key.id() {
            return Err(Error::WrongKey {
                ours: key.id(),
                theirs: trailer.key_id(),
            });
        }
        key.mac(src, dst, vrrp, &trailer.signed())
            .verify_slice(&trailer.tag())
            .map_err(|_| Error::BadTag)?;
        Ok(Repr {
            key_id: trailer.key_id(),
            seq: trailer.seq(),
        })
    }

    /// Writes the trailer, tag included, into the first [`TRAILER_LEN`] bytes of `trailer`.
    /// `vrrp` must be the VRRP message exactly as sent (checksum filled in).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        trailer: &mut Trailer<T>,
        key: &Key,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        vrrp: &[u8],
    ) -> Result<(), super::Error> {
        let actual = trailer.buffer.as_ref().len();
        if actual < TRAILER_LEN {
            return Err(super::Error::BufferTooSmall {
                needed: TRAILER_LEN,
                actual,
            });
        }
        trailer.set_version(VERSION);
        trailer.set_key_id(self.key_id);
        trailer.set_reserved(0);
        trailer.set_seq(self.seq);
        let tag = key.mac(src, dst, vrrp, &trailer.signed()).finalize();
        trailer.set_tag(&tag.into_bytes().into());
        Ok(())
    }

    /// Appends the trailer for `vrrp` (already in `payload`, where it must be all there
    /// is) to `payload`.
    pub fn append(&self, payload: &mut Vec<u8>, key: &Key, src: Ipv4Addr, dst: Ipv4Addr) {
        let start = payload.len();
        payload.resize(start + TRAILER_LEN, 0);
        let (vrrp, rest) = payload.split_at_mut(start);
        // `rest` is exactly TRAILER_LEN bytes, so emit cannot fail.
        let _ = self.emit(&mut Trailer::new_unchecked(rest), key, src, dst, vrrp);
    }
}

/// Splits an IP payload into the VRRP message its header describes and whatever follows
/// (the trailer, or nothing). A payload too short for the header, or for the addresses it
/// announces, is returned whole with an empty rest, so the VRRP parser reports it.
pub fn split(payload: &[u8]) -> (&[u8], &[u8]) {
    let packet = super::vrrp::Packet::new_unchecked(payload);
    if packet.check_len().is_err() {
        return (payload, &[]);
    }
    payload.split_at(packet.total_len())
}

/// Verifies the trailer (`rest` from [`split`]) of `vrrp`, received from `src` to `dst`:
/// `Missing` if there is none, else what [`Repr::parse`] says.
pub fn open(
    key: &Key,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    vrrp: &[u8],
    rest: &[u8],
) -> Result<Repr, Error> {
    if rest.is_empty() {
        return Err(Error::Missing);
    }
    Repr::parse(&Trailer::new_unchecked(rest), key, src, dst, vrrp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

    fn key(b: u8) -> Key {
        Key::new(&[b; 32]).expect("32 bytes")
    }

    fn sealed(key: &Key, seq: u64) -> Vec<u8> {
        let vrrp = super::super::vrrp::Repr::advertisement(51, 150, 100, vec![SRC]);
        let mut payload = vrrp
            .to_bytes(SRC, DST, Default::default())
            .expect("encodable");
        Repr::new(key, seq).append(&mut payload, key, SRC, DST);
        payload
    }

    #[test]
    fn short_keys_are_refused_and_debug_redacts() {
        assert_eq!(Key::new(&[1; 31]), Err(Error::ShortKey { len: 31 }));
        let k = key(7);
        assert!(!format!("{k:?}").contains("07, 07"));
    }

    #[test]
    fn a_sealed_advert_opens_with_its_sequence() {
        let k = key(1);
        let payload = sealed(&k, 42);
        assert_eq!(payload.len(), 12 + TRAILER_LEN);
        let (vrrp, rest) = split(&payload);
        assert_eq!(vrrp.len(), 12);
        let repr = open(&k, SRC, DST, vrrp, rest).expect("verifies");
        assert_eq!(repr, Repr::new(&k, 42));
    }

    #[test]
    fn each_refusal_has_its_reason() {
        let k = key(1);
        let payload = sealed(&k, 1);
        let (vrrp, rest) = split(&payload);
        assert_eq!(open(&k, SRC, DST, vrrp, &[]), Err(Error::Missing));
        assert_eq!(
            open(&k, SRC, DST, vrrp, &rest[..TRAILER_LEN - 1]),
            Err(Error::Malformed("length"))
        );
        let other = key(2);
        assert_eq!(
            open(&other, SRC, DST, vrrp, rest).map_err(|e| e.as_str()),
            Err("auth_bad_tag")
        );
        // Another destination: a copy meant for one peer doesn't verify at another.
        let elsewhere = Ipv4Addr::new(192, 0, 2, 9);
        assert_eq!(open(&k, SRC, elsewhere, vrrp, rest), Err(Error::BadTag));
        let mut bad_version = rest.to_vec();
        bad_version[field::VERSION] = 2;
        assert_eq!(
            open(&k, SRC, DST, vrrp, &bad_version),
            Err(Error::Malformed("version"))
        );
    }

    #[test]
    fn split_leaves_short_payloads_whole() {
        assert_eq!(split(&[0x31, 51, 1]), (&[0x31, 51, 1][..], &[][..]));
        // Count 2 announces 16 bytes; 12 are there.
        let p = [0x31, 51, 1, 2, 0, 100, 0, 0, 1, 2, 3, 4];
        assert_eq!(split(&p), (&p[..], &[][..]));
    }
}
