//! Wire formats: zero-copy packet views and their high-level representations.
//!
//! Follows smoltcp's split between a *view* and a *representation*:
//!
//! - `Packet<T: AsRef<[u8]>>` wraps a byte buffer without copying. Its getters
//!   and setters read and write the fields in place. `new_checked` is the
//!   door for untrusted input: it verifies that every fixed field and every
//!   announced address is inside the buffer.
//! - `Repr` is the parsed, owned, meaning-level form. `Repr::parse` checks the
//!   *form* of a packet (lengths, checksum) and nothing else; whether a VRID,
//!   a version or a TTL is acceptable is the receiver's decision (vrrpd's
//!   `rx::validate`), so that each rejection can be counted under its own name.
//!   `Repr::emit` writes a packet into a buffer of `Repr::buffer_len()` bytes.
//!
//! Layout:
//! - [`vrrp`]     the VRRPv3 advertisement (RFC 5798 §5.1): `Packet`, `Repr`,
//!   `Version`/`MessageType` keeping unknown codes, `ChecksumMode`.
//! - [`checksum`] the Internet checksum (RFC 1071) and the IPv4 pseudo-header.
//! - [`ipv4`]     the IPv4 header in front of VRRP on a raw socket: parse what
//!   the kernel hands us, build the header for an `IP_HDRINCL` send.
//! - [`auth`]     lbpair's own HMAC-SHA256 trailer after the VRRP message
//!   (`auth_key_file`; not interoperable): `Trailer` view, `Repr`, `split`/`open`.
//!
//! Nothing here panics on any input: every access into a buffer is bounds
//! checked, and malformed input is an [`Error`].
//!
//! # Sending and receiving
//!
//! ```
//! use std::net::Ipv4Addr;
//! use shared::wire::{ipv4, vrrp};
//!
//! # fn main() -> Result<(), shared::wire::Error> {
//! let me = Ipv4Addr::new(192, 0, 2, 1);
//! let vip = Ipv4Addr::new(192, 0, 2, 100);
//!
//! // Send: the VRRP message, then an IPv4 header for IP_HDRINCL in front.
//! let advert = vrrp::Repr::advertisement(51, 150, 100, vec![vip]);
//! let payload = advert.to_bytes(me, vrrp::MULTICAST_ADDR, vrrp::ChecksumMode::default())?;
//! let datagram = ipv4::build_datagram(me, vrrp::MULTICAST_ADDR, &payload)?;
//!
//! // Receive: what a raw socket hands us is the whole datagram.
//! let rx = ipv4::parse(&datagram)?;
//! assert_eq!(rx.ttl, vrrp::TTL);
//! let packet = vrrp::Packet::new_checked(rx.payload)?;
//! let (repr, mode) = vrrp::Repr::parse(&packet, rx.src, rx.dst)?;
//! assert_eq!(repr, advert);
//! assert_eq!(mode, vrrp::ChecksumMode::PseudoHeader);
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod checksum;
pub mod ipv4;
pub mod vrrp;

/// Why a buffer could not be read as, or written into, a packet.
///
/// Each variant is a distinct reason so that the receiver can count
/// discards by cause ([`Error::as_str`] is a stable label for that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the fixed header, or before the addresses the
    /// header announces.
    #[error("truncated packet")]
    Truncated,
    /// The buffer is longer than the message its header describes.
    #[error("packet length {actual} does not match the {expected} bytes its header describes")]
    BadLength { expected: usize, actual: usize },
    /// The checksum matches neither the pseudo-header nor the plain form.
    #[error("bad checksum")]
    BadChecksum,
    /// The IPv4 header in front of the message is malformed.
    #[error("bad IPv4 header: {0}")]
    BadIpHeader(&'static str),
    /// An IPv4 fragment: VRRP messages are far below any MTU and are never
    /// fragmented, so a fragment is not something we can parse.
    #[error("IPv4 fragment")]
    Fragmented,
    /// Emit: more addresses than the 8-bit count field can announce.
    #[error("{0} addresses do not fit the 8-bit address count")]
    TooManyAddrs(usize),
    /// Emit: an advertisement interval that does not fit in 12 bits.
    #[error("advertisement interval {0} cs does not fit in 12 bits (max 4095)")]
    IntervalTooLarge(u16),
    /// Emit: a version or type code that does not fit in its 4-bit field.
    #[error("version or type code {0} does not fit in 4 bits")]
    CodeTooLarge(u8),
    /// Emit: the output buffer is smaller than `Repr::buffer_len()`.
    #[error("buffer of {actual} bytes is smaller than the {needed} bytes needed")]
    BufferTooSmall { needed: usize, actual: usize },
}

impl Error {
    /// A short stable label, suitable as a metrics counter label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadLength { .. } => "length",
            Error::BadChecksum => "checksum",
            Error::BadIpHeader(_) => "ip_header",
            Error::Fragmented => "fragment",
            Error::TooManyAddrs(_) => "too_many_addrs",
            Error::IntervalTooLarge(_) => "interval",
            Error::CodeTooLarge(_) => "code_too_large",
            Error::BufferTooSmall { .. } => "buffer_too_small",
        }
    }
}

/// Convenience alias for results of this module.
pub type Result<T> = core::result::Result<T, Error>;
