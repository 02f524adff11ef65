//! The VRRPv3 advertisement for IPv4 (RFC 5798 §5.1, as updated by RFC 9568).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)  (count × 4 bytes)     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The message travels in IPv4 protocol 112 to 224.0.0.18 with TTL 255.
//! Max Adver Int is in centiseconds (1 s = 100), 12 bits wide.
//!
//! # Checksum
//!
//! RFC 5798 defines the checksum over the VRRP message *and a pseudo-header*
//! but points at the IPv6 pseudo-header only, and implementations disagree
//! about IPv4: keepalived and FRR include the IPv4 pseudo-header (src, dst,
//! zero, protocol 112, VRRP length), while others sum the VRRP message alone.
//! RFC 9568 acknowledges both. We therefore send with
//! [`ChecksumMode::PseudoHeader`] by default, and on receive accept either,
//! reporting which one matched so that the daemon can count what its peers
//! use. If a message happens to verify in both modes we report
//! `PseudoHeader`, the deployed default.
//!
//! # Versions
//!
//! Only the VRRPv3 layout is understood. A VRRPv2 packet (RFC 3768) carries
//! authentication data after the addresses and an 8-bit interval in seconds,
//! so reading it with this layout gives [`Error::BadLength`]; a receiver that
//! wants to count v2 peers under "version" should look at the raw
//! [`Packet::version`] nibble before calling [`Repr::parse`].

use core::fmt;
use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Result};

/// IPv4 protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group VRRP advertisements are sent to.
pub const MULTICAST_ADDR: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Advertisements are sent, and must be received, with TTL 255 (RFC 5798 §5.1.1.3).
pub const TTL: u8 = 255;
/// Length of the fixed header, before the addresses.
pub const HEADER_LEN: usize = 8;
/// The largest Max Adver Int that fits in its 12-bit field, in centiseconds.
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// The largest message: the fixed header and 255 IPv4 addresses.
pub const MAX_LEN: usize = HEADER_LEN + 255 * field::ADDR_LEN;

/// Byte offsets of the fields (smoltcp style).
pub mod field {
    /// A byte range in the message.
    pub type Field = core::ops::Range<usize>;

    /// Version (high nibble) and type (low nibble).
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const ADDR_COUNT: usize = 3;
    /// 4 reserved bits followed by the 12-bit Max Adver Int.
    pub const MAX_ADVER_INT: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    /// Start of the addresses.
    pub const ADDRS: usize = 8;
    pub const ADDR_LEN: usize = 4;

    /// The range of the `i`th address. `i` is a `u8` like the count field,
    /// so this cannot overflow.
    pub const fn addr(i: u8) -> Field {
        let start = ADDRS + (i as usize) * ADDR_LEN;
        start..start + ADDR_LEN
    }
}

/// The VRRP version nibble. Unknown codes are kept, not rejected, so the
/// receiver can count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2,
    V3,
    Unknown(u8),
}

impl From<u8> for Version {
    fn from(v: u8) -> Self {
        match v {
            2 => Version::V2,
            3 => Version::V3,
            other => Version::Unknown(other),
        }
    }
}

impl From<Version> for u8 {
    fn from(v: Version) -> u8 {
        match v {
            Version::V2 => 2,
            Version::V3 => 3,
            Version::Unknown(other) => other,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V2 => f.write_str("VRRPv2"),
            Version::V3 => f.write_str("VRRPv3"),
            Version::Unknown(v) => write!(f, "unknown version {v}"),
        }
    }
}

/// The VRRP type nibble. RFC 5798 defines only Advertisement (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Advertisement,
    Unknown(u8),
}

impl From<u8> for MessageType {
    fn from(v: u8) -> Self {
        match v {
            1 => MessageType::Advertisement,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(v: MessageType) -> u8 {
        match v {
            MessageType::Advertisement => 1,
            MessageType::Unknown(other) => other,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageType::Advertisement => f.write_str("advertisement"),
            MessageType::Unknown(v) => write!(f, "unknown type {v}"),
        }
    }
}

/// What the checksum covers (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumMode {
    /// IPv4 pseudo-header + VRRP message: RFC 5798 as deployed by keepalived and FRR.
    #[default]
    PseudoHeader,
    /// The VRRP message alone (the other reading that RFC 9568 acknowledges).
    NoPseudoHeader,
}

impl ChecksumMode {
    /// A short stable label, e.g. for a per-mode receive counter.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChecksumMode::PseudoHeader => "pseudo_header",
            ChecksumMode::NoPseudoHeader => "no_pseudo_header",
        }
    }
}

/// A zero-copy view of a VRRPv3 message in a buffer.
///
/// Getters never panic: on a buffer too short for a field (possible only
/// through [`Packet::new_unchecked`]) they read the missing bytes as zero,
/// and `addr` returns `None`. Use [`Packet::new_checked`] for input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds the fixed header and the
    /// `addr_count` addresses it announces. Trailing bytes are allowed here
    /// (the view is also used over larger output buffers); [`Repr::parse`]
    /// rejects them.
    pub fn new_checked(buffer: T) -> Result<Packet<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the fixed header and every announced address.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.total_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The length of the message the header describes: 8 + 4 × count.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.addr_count()) * field::ADDR_LEN
    }

    fn byte(&self, i: usize) -> u8 {
        self.buffer.as_ref().get(i).copied().unwrap_or(0)
    }

    fn be16(&self, f: field::Field) -> u16 {
        u16::from_be_bytes([self.byte(f.start), self.byte(f.start + 1)])
    }

    /// The raw version nibble (3 for VRRPv3).
    pub fn version(&self) -> u8 {
        self.byte(field::VER_TYPE) >> 4
    }

    /// The type nibble.
    pub fn msg_type(&self) -> MessageType {
        MessageType::from(self.byte(field::VER_TYPE) & 0x0f)
    }

    pub fn vrid(&self) -> u8 {
        self.byte(field::VRID)
    }

    pub fn priority(&self) -> u8 {
        self.byte(field::PRIORITY)
    }

    pub fn addr_count(&self) -> u8 {
        self.byte(field::ADDR_COUNT)
    }

    /// The 4 reserved bits before Max Adver Int (zero on send, ignored on receive).
    pub fn reserved(&self) -> u8 {
        self.byte(field::MAX_ADVER_INT.start) >> 4
    }

    /// Max Adver Int in centiseconds (12 bits).
    pub fn max_adver_int(&self) -> u16 {
        self.be16(field::MAX_ADVER_INT) & MAX_ADVER_INT_CS
    }

    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }

    /// The `i`th address, or `None` if `i` is not below the count or the
    /// buffer does not hold it.
    pub fn addr(&self, i: u8) -> Option<Ipv4Addr> {
        if i >= self.addr_count() {
            return None;
        }
        let b = self.buffer.as_ref().get(field::addr(i))?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }

    /// The announced addresses that are present in the buffer, in order.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..self.addr_count()).map_while(move |i| self.addr(i))
    }

    /// The message bytes the checksum covers: the first
    /// [`total_len`](Self::total_len) bytes, or the whole buffer if shorter.
    pub fn message(&self) -> &[u8] {
        let buf = self.buffer.as_ref();
        buf.get(..self.total_len()).unwrap_or(buf)
    }

    /// The uncomplemented one's-complement sum over what `mode` covers,
    /// including the checksum field as it is in the buffer.
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> u16 {
        let msg = self.message();
        let body = checksum::ones_complement_sum(msg);
        match mode {
            ChecksumMode::NoPseudoHeader => body,
            ChecksumMode::PseudoHeader => {
                // A message is at most MAX_LEN (1028) bytes; saturating keeps
                // this total even for a nonsensical over-long buffer, whose
                // checksum then simply fails.
                let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
                let pseudo = checksum::pseudo_header_v4(src, dst, PROTOCOL, len);
                checksum::combine(&[pseudo, body])
            }
        }
    }

    /// Whether the checksum is correct for `mode`. `src`/`dst` are the IPv4
    /// addresses of the datagram (only used by `PseudoHeader`).
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> bool {
        // A correct message sums, checksum included, to negative zero.
        self.sum(src, dst, mode) == 0xffff
    }

    /// Which checksum mode the message verifies in, preferring `PseudoHeader`.
    pub fn checksum_mode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<ChecksumMode> {
        [ChecksumMode::PseudoHeader, ChecksumMode::NoPseudoHeader]
            .into_iter()
            .find(|&mode| self.verify_checksum(src, dst, mode))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn set_byte(&mut self, i: usize, v: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(i) {
            *b = v;
        }
    }

    fn set_be16(&mut self, f: field::Field, v: u16) {
        let [hi, lo] = v.to_be_bytes();
        self.set_byte(f.start, hi);
        self.set_byte(f.start + 1, lo);
    }

    // Setters write nothing past the end of the buffer; emit checks the
    // length first so that this never silently drops a field there.

    /// Sets the version nibble (only the low 4 bits of `v` are used).
    pub fn set_version(&mut self, v: u8) {
        let b = self.byte(field::VER_TYPE);
        self.set_byte(field::VER_TYPE, (b & 0x0f) | (v << 4));
    }

    /// Sets the type nibble (only the low 4 bits of the code are used).
    pub fn set_msg_type(&mut self, t: MessageType) {
        let b = self.byte(field::VER_TYPE);
        self.set_byte(field::VER_TYPE, (b & 0xf0) | (u8::from(t) & 0x0f));
    }

    pub fn set_vrid(&mut self, v: u8) {
        self.set_byte(field::VRID, v);
    }

    pub fn set_priority(&mut self, v: u8) {
        self.set_byte(field::PRIORITY, v);
    }

    pub fn set_addr_count(&mut self, v: u8) {
        self.set_byte(field::ADDR_COUNT, v);
    }

    /// Sets the 4 reserved bits (only the low 4 bits of `v` are used).
    pub fn set_reserved(&mut self, v: u8) {
        let cur = self.be16(field::MAX_ADVER_INT);
        self.set_be16(
            field::MAX_ADVER_INT,
            (cur & MAX_ADVER_INT_CS) | (u16::from(v & 0x0f) << 12),
        );
    }

    /// Sets Max Adver Int (only the low 12 bits are used; reserved bits kept).
    pub fn set_max_adver_int(&mut self, cs: u16) {
        let cur = self.be16(field::MAX_ADVER_INT);
        self.set_be16(
            field::MAX_ADVER_INT,
            (cur & !MAX_ADVER_INT_CS) | (cs & MAX_ADVER_INT_CS),
        );
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.set_be16(field::CHECKSUM, v);
    }

    /// Writes the `i`th address; `Truncated` if the buffer does not hold it.
    pub fn set_addr(&mut self, i: u8, addr: Ipv4Addr) -> Result<()> {
        let slot = self
            .buffer
            .as_mut()
            .get_mut(field::addr(i))
            .ok_or(Error::Truncated)?;
        slot.copy_from_slice(&addr.octets());
        Ok(())
    }

    /// Computes and writes the checksum for `mode` over the message that the
    /// header (count field included) describes.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) {
        self.set_checksum(0);
        let sum = self.sum(src, dst, mode);
        self.set_checksum(!sum);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for Packet<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A parsed VRRPv3 advertisement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repr {
    pub version: Version,
    pub msg_type: MessageType,
    pub vrid: u8,
    pub priority: u8,
    /// Max Adver Int in centiseconds, 0..=4095.
    pub max_adver_int_cs: u16,
    pub addrs: Vec<Ipv4Addr>,
}

impl Repr {
    /// A VRRPv3 advertisement, the only message this daemon sends.
    pub fn advertisement(
        vrid: u8,
        priority: u8,
        max_adver_int_cs: u16,
        addrs: Vec<Ipv4Addr>,
    ) -> Repr {
        Repr {
            version: Version::V3,
            msg_type: MessageType::Advertisement,
            vrid,
            priority,
            max_adver_int_cs,
            addrs,
        }
    }

    /// Parses a received message. `src`/`dst` are the addresses of the IPv4
    /// datagram that carried it (needed for the pseudo-header).
    ///
    /// Checks form only: the buffer must hold exactly the header and the
    /// announced addresses (`Truncated` / `BadLength`) and the checksum must
    /// verify in one of the two modes (`BadChecksum`); the matching mode is
    /// returned. Version, type, VRID, priority and interval values are the
    /// receiver's to judge.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        packet: &Packet<&T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) -> Result<(Repr, ChecksumMode)> {
        packet.check_len()?;
        let actual = packet.buffer.as_ref().len();
        let expected = packet.total_len();
        if actual != expected {
            return Err(Error::BadLength { expected, actual });
        }
        let mode = packet.checksum_mode(src, dst).ok_or(Error::BadChecksum)?;
        let repr = Repr {
            version: Version::from(packet.version()),
            msg_type: packet.msg_type(),
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_adver_int_cs: packet.max_adver_int(),
            addrs: packet.addrs().collect(),
        };
        Ok((repr, mode))
    }

    /// The length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.addrs.len() * field::ADDR_LEN
    }

    /// Writes the message into the first [`buffer_len`](Self::buffer_len)
    /// bytes of `packet` and fills the checksum for `mode`. Bytes past
    /// `buffer_len` are left alone: send only the first `buffer_len` bytes.
    ///
    /// Fails, writing nothing, if the repr cannot be encoded (more than 255
    /// addresses, an interval above 4095 cs, a version or type above 15) or
    /// the buffer is too small.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        mode: ChecksumMode,
    ) -> Result<()> {
        let count =
            u8::try_from(self.addrs.len()).map_err(|_| Error::TooManyAddrs(self.addrs.len()))?;
        if self.max_adver_int_cs > MAX_ADVER_INT_CS {
            return Err(Error::IntervalTooLarge(self.max_adver_int_cs));
        }
        for code in [u8::from(self.version), u8::from(self.msg_type)] {
            if code > 0x0f {
                return Err(Error::CodeTooLarge(code));
            }
        }
        let needed = self.buffer_len();
        let actual = packet.buffer.as_ref().len();
        if actual < needed {
            return Err(Error::BufferTooSmall { needed, actual });
        }
        packet.set_version(u8::from(self.version));
        packet.set_msg_type(self.msg_type);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(count);
        // RFC 5798 §5.2.6: reserved MUST be zero on transmission.
        packet.set_reserved(0);
        packet.set_max_adver_int(self.max_adver_int_cs);
        for (i, addr) in (0..=u8::MAX).zip(&self.addrs) {
            packet.set_addr(i, *addr)?;
        }
        packet.fill_checksum(src, dst, mode);
        Ok(())
    }

    /// Emits into a fresh vector of exactly `buffer_len` bytes.
    pub fn to_bytes(&self, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst, mode)?;
        Ok(buf)
    }
}
