//! The IPv4 header in front of a VRRP message on a raw socket, via `etherparse`.
//!
//! A Linux `SOCK_RAW`/`IPPROTO_VRRP` socket hands each received datagram to
//! us *with* its IPv4 header (reassembled, in network byte order, its header
//! checksum already verified by the kernel), so [`parse`] only has to find
//! the addresses, the TTL (RFC 5798 §7.1 requires 255) and the payload.
//!
//! For sending, vrrpd uses `IP_HDRINCL` so that it controls the source
//! address and TTL exactly; [`build_header`] makes that 20-byte header.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! |         Identification        |Flags|     Fragment Offset     |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (IHL > 5)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::ops::Range;
use std::net::Ipv4Addr;

use etherparse::err::ipv4::{HeaderError, HeaderSliceError};
use etherparse::{IpDscp, IpNumber, Ipv4Header, Ipv4HeaderSlice};

use super::vrrp;
use super::{Error, Result};

/// Length of an IPv4 header without options, the one [`build_header`] makes.
pub const HEADER_LEN: usize = Ipv4Header::MIN_LEN;

/// The largest payload an IPv4 datagram with a 20-byte header can carry.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - HEADER_LEN;

/// A received IPv4 datagram, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    /// Header length in bytes, options included (IHL × 4).
    pub header_len: usize,
    /// The bytes between the header and the header's Total Length.
    pub payload: &'a [u8],
}

impl Datagram<'_> {
    /// Where [`payload`](Self::payload) sits in the buffer given to [`parse`].
    pub fn payload_range(&self) -> Range<usize> {
        self.header_len..self.header_len + self.payload.len()
    }
}

/// Parses a datagram as read from a raw IPv4 socket.
///
/// The payload is cut at the header's Total Length: bytes after it (e.g.
/// Ethernet padding when the buffer comes from a packet socket) are ignored.
/// A buffer shorter than the header or the Total Length is `Truncated`; a
/// fragment is `Fragmented`. The protocol is reported, not checked.
pub fn parse(buf: &[u8]) -> Result<Datagram<'_>> {
    let header = Ipv4HeaderSlice::from_slice(buf).map_err(|e| match e {
        HeaderSliceError::Len(_) => Error::Truncated,
        HeaderSliceError::Content(HeaderError::UnexpectedVersion { .. }) => {
            Error::BadIpHeader("version is not 4")
        }
        HeaderSliceError::Content(HeaderError::HeaderLengthSmallerThanHeader { .. }) => {
            Error::BadIpHeader("IHL is below 5")
        }
    })?;
    let header_len = header.slice().len();
    let total_len = usize::from(header.total_len());
    if total_len < header_len {
        return Err(Error::BadIpHeader(
            "total length is shorter than the header",
        ));
    }
    if header.more_fragments() || header.fragments_offset().value() != 0 {
        return Err(Error::Fragmented);
    }
    let payload = buf.get(header_len..total_len).ok_or(Error::Truncated)?;
    Ok(Datagram {
        src: header.source_addr(),
        dst: header.destination_addr(),
        ttl: header.ttl(),
        protocol: header.protocol().0,
        header_len,
        payload,
    })
}

/// Builds the 20-byte IPv4 header for sending a VRRP message of
/// `payload_len` bytes with `IP_HDRINCL`.
///
/// TTL 255 and protocol 112 as RFC 5798 requires; DSCP CS6 ("network
/// control", TOS 0xc0), as keepalived and FRR send, so that QoS policies
/// prioritise adverts; identification 0 and no DF (Linux fills in the ID
/// for an `IP_HDRINCL` datagram whose ID is 0, and a VRRP message is far
/// below any MTU). The header checksum is filled in even though Linux
/// rewrites it, so the bytes are also correct on a packet socket.
pub fn build_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize) -> Result<[u8; HEADER_LEN]> {
    let too_long = Error::BadLength {
        expected: MAX_PAYLOAD_LEN,
        actual: payload_len,
    };
    let len = u16::try_from(payload_len).map_err(|_| too_long)?;
    let mut header = Ipv4Header::new(len, vrrp::TTL, IpNumber::VRRP, src.octets(), dst.octets())
        .map_err(|_| too_long)?;
    header.dont_fragment = false;
    header.identification = 0;
    header.dscp = IpDscp::CS6;
    header.header_checksum = header.calc_header_checksum();
    let bytes = header.to_bytes();
    // No options were set, so to_bytes() is exactly HEADER_LEN long.
    <[u8; HEADER_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| Error::BadIpHeader("unexpected header length"))
}

/// A whole datagram: [`build_header`] followed by `payload`.
pub fn build_datagram(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Result<Vec<u8>> {
    let header = build_header(src, dst, payload.len())?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Ok(out)
}
