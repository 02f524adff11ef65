//! Receive validation of RFC 5798 §7.1, as a pure function.
//!
//! [`validate`] takes what the socket layer read (IP TTL, IP source and destination, the VRRP
//! payload) and who this virtual router is ([`Expect`], plus an optional [`Policy`] in
//! [`validate_with`]), and returns either the [`Advert`] to feed to the FSM with the
//! [`ChecksumMode`] it verified in, or the one [`Discard`] reason, whose [`Discard::as_str`]
//! is the counter label. No IO, no clock, no logging: the caller logs discards at debug and
//! counts them ([`DiscardCounters`]).
//!
//! `shared::wire` checks *form* (lengths, checksum); this module checks *meaning*, in the
//! order of §7.1: TTL, version, type, completeness and checksum, then VRID, then the rest.
//!
//! Choices made here (the RFC leaves them open or says "MAY"):
//! - **Interval.** In VRRPv3 a Backup *learns* Master_Adver_Interval from the master
//!   (§6.4.2), so an interval different from ours is not a discard; the FSM counts it as
//!   `interval_mismatch` (keepalived logs it). Only an interval of 0 is discarded
//!   ([`Discard::Interval`]): no real master sends it, and learning it would shrink a
//!   Backup's Master_Down_Interval to a few centiseconds (the FSM clamps it to 1 cs).
//! - **Address list.** §7.1 says a receiver MAY check the list against its own and, if it
//!   differs, SHOULD log it and continue. That is the default ([`Policy::strict_addrs`]
//!   `None`; the FSM counts `addr_mismatch`). Discarding (keepalived's behaviour) can turn a
//!   typo in one node's VIP list into two masters, so it is opt-in. A count of 0 is always
//!   discarded: the RFC sets the minimum to 1.
//! - **Address owner.** §7.1 also says an owner (priority 255) discards adverts. We do not:
//!   the FSM's owner never yields to a lower priority anyway, and processing adverts lets two
//!   misconfigured owners settle on one master by address instead of both staying master.
//! - **Source.** An unspecified, multicast or broadcast source cannot be a router's primary
//!   address, and the FSM uses the source as the tie-breaker, so it is discarded.
//! - **Allowed sources** ([`Policy::accept_from`]). VRRP has no authentication:
//!   any host on the LAN can forge an advert. With a list of allowed sources (by default the
//!   unicast peers) an advert from any other address is [`Discard::SourceNotAllowed`].
//!   It does not stop a forger that spoofs an allowed address; the HMAC trailer does.
//! - **Interval window** ([`Policy::interval_window`], strict mode). By default the FSM
//!   clamps a learned interval into its adopt window; in strict mode (as RFC 3768 required
//!   of VRRPv2) an advert whose interval is outside the window is
//!   [`Discard::IntervalRange`].
//!
//! Cost per packet: the checks that need no parsing (TTL, version, type, length, VRID, our
//! own source, allowed sources) come before the checksum and the address list, which is the
//! only allocation, so a flood of packets that are not for us costs a few comparisons each.

use std::net::Ipv4Addr;
use std::time::Duration;

use shared::wire::vrrp::{self, ChecksumMode, MessageType, Packet, Repr};
use shared::wire::Error as WireError;

use crate::fsm::{Advert, FsmConfig};

/// Why a received packet was not handed to the FSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// IP TTL is not 255: the packet crossed a router (§5.1.1.3).
    Ttl,
    /// Version nibble is not 3 (VRRPv2 peers land here).
    Version,
    /// Type is not Advertisement.
    Type,
    /// Shorter than the header or the addresses it announces.
    Truncated,
    /// Longer than the header and the addresses it announces.
    Length,
    /// The checksum verifies in neither mode.
    Checksum,
    /// The checksum verifies, but in a mode this instance does not accept.
    ChecksumMode,
    /// Another virtual router's advert: not an error, just not ours.
    OtherVrid,
    /// Our own advert, looped back.
    Own,
    /// Source address is unspecified, multicast or broadcast.
    Source,
    /// The source is not in `accept_from`.
    SourceNotAllowed,
    /// Max Adver Int is 0.
    Interval,
    /// (Strict) Max Adver Int is outside the adopt window.
    IntervalRange,
    /// Address count is 0, or (strict) differs from ours.
    AddrCount,
    /// (Strict) the address list differs from ours.
    AddrMismatch,
    /// Any other malformation the wire layer reports.
    Malformed,
}

impl Discard {
    /// Every reason, in a fixed order (the index of [`DiscardCounters`]).
    pub const ALL: [Discard; 16] = [
        Self::Ttl,
        Self::Version,
        Self::Type,
        Self::Truncated,
        Self::Length,
        Self::Checksum,
        Self::ChecksumMode,
        Self::OtherVrid,
        Self::Own,
        Self::Source,
        Self::SourceNotAllowed,
        Self::Interval,
        Self::IntervalRange,
        Self::AddrCount,
        Self::AddrMismatch,
        Self::Malformed,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ttl => "ttl",
            Self::Version => "version",
            Self::Type => "type",
            Self::Truncated => "truncated",
            Self::Length => "length",
            Self::Checksum => "checksum",
            Self::ChecksumMode => "checksum_mode",
            Self::OtherVrid => "vrid",
            Self::Own => "own",
            Self::Source => "source",
            Self::SourceNotAllowed => "source_not_allowed",
            Self::Interval => "interval",
            Self::IntervalRange => "interval_range",
            Self::AddrCount => "addr_count",
            Self::AddrMismatch => "addr_mismatch",
            Self::Malformed => "malformed",
        }
    }

    /// Whether the discard points at a fault (bad packet or misconfiguration) rather than
    /// normal traffic (another VRID, our own loopback). Callers may log these louder.
    pub fn is_error(self) -> bool {
        !matches!(self, Self::OtherVrid | Self::Own)
    }

    fn index(self) -> usize {
        // ALL lists every variant once, so the position always exists.
        Self::ALL.iter().position(|&d| d == self).unwrap_or(0)
    }
}

impl std::fmt::Display for Discard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One counter per [`Discard`] reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscardCounters {
    counts: [u64; Discard::ALL.len()],
}

impl DiscardCounters {
    pub fn record(&mut self, d: Discard) {
        self.counts[d.index()] += 1;
    }

    pub fn get(&self, d: Discard) -> u64 {
        self.counts[d.index()]
    }

    /// `(label, count)` for every reason, in [`Discard::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Discard::ALL.iter().map(|&d| (d.as_str(), self.get(d)))
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Rate limit for discard log lines: at most one line per reason per `every`, each saying
/// how many discards of that reason went unlogged since the previous line. Time comes in
/// (`now`, any epoch), so the limit is a pure function of the calls.
#[derive(Debug, Clone)]
pub struct DiscardLog {
    every: Duration,
    last: [Option<Duration>; Discard::ALL.len()],
    suppressed: [u64; Discard::ALL.len()],
}

impl DiscardLog {
    pub fn new(every: Duration) -> DiscardLog {
        DiscardLog {
            every,
            last: [None; Discard::ALL.len()],
            suppressed: [0; Discard::ALL.len()],
        }
    }

    /// A discard of reason `d` at `now`: `Some(n)` if a line may be logged, `n` being the
    /// discards of that reason not logged since the last line; `None` to stay quiet.
    pub fn admit(&mut self, d: Discard, now: Duration) -> Option<u64> {
        let i = d.index();
        if self.last[i].is_some_and(|at| now < at + self.every) {
            self.suppressed[i] += 1;
            return None;
        }
        self.last[i] = Some(now);
        Some(std::mem::take(&mut self.suppressed[i]))
    }
}

/// Which checksum modes are accepted on receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumPolicy {
    /// Either (the default: peers disagree, see `shared::wire::vrrp`).
    #[default]
    Either,
    /// Only RFC 5798 as deployed: with the IPv4 pseudo-header.
    PseudoHeaderOnly,
    /// Only without the pseudo-header.
    NoPseudoHeaderOnly,
}

impl ChecksumPolicy {
    pub fn accepts(self, mode: ChecksumMode) -> bool {
        match self {
            Self::Either => true,
            Self::PseudoHeaderOnly => mode == ChecksumMode::PseudoHeader,
            Self::NoPseudoHeaderOnly => mode == ChecksumMode::NoPseudoHeader,
        }
    }
}

/// Who we are: the identity every advert is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    pub vrid: u8,
    /// Our primary address: adverts from it are our own.
    pub primary_addr: Ipv4Addr,
}

impl Expect {
    pub fn new(vrid: u8, primary_addr: Ipv4Addr) -> Expect {
        Expect { vrid, primary_addr }
    }

    pub fn from_config(cfg: &FsmConfig) -> Expect {
        Expect::new(cfg.vrid, cfg.primary_addr)
    }
}

/// How strict to be where the RFC leaves a choice. The default accepts either checksum mode
/// and any address list (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy<'a> {
    pub checksum: ChecksumPolicy,
    /// `Some(our VIPs)`: discard adverts whose address list differs from it.
    pub strict_addrs: Option<&'a [Ipv4Addr]>,
    /// Sources adverts are accepted from; empty = any (see the module docs).
    pub accept_from: &'a [Ipv4Addr],
    /// `Some([min, max])`: discard adverts whose Max Adver Int is outside it.
    pub interval_window: Option<(u16, u16)>,
}

/// Whether `src` may send us adverts: `allowed` is empty (any source) or lists it.
pub fn source_allowed(src: Ipv4Addr, allowed: &[Ipv4Addr]) -> bool {
    allowed.is_empty() || allowed.contains(&src)
}

/// RFC 5798 §7.1 receive checks with the default [`Policy`]. `ttl`, `src`, `dst` come from
/// the IPv4 header, `payload` is the VRRP message after it. Never panics, whatever the bytes.
pub fn validate(
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
    expect: &Expect,
) -> Result<(Advert, ChecksumMode), Discard> {
    validate_with(ttl, src, dst, payload, expect, &Policy::default())
}

/// [`validate`] with an explicit [`Policy`].
pub fn validate_with(
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
    expect: &Expect,
    policy: &Policy<'_>,
) -> Result<(Advert, ChecksumMode), Discard> {
    if ttl != vrrp::TTL {
        return Err(Discard::Ttl);
    }
    if payload.is_empty() {
        return Err(Discard::Truncated);
    }
    // Version and type come before the length check: a VRRPv2 packet has a different layout
    // (and fails the length check), but it should be counted as what it is.
    let packet = Packet::new_unchecked(payload);
    if packet.version() != 3 {
        return Err(Discard::Version);
    }
    if packet.msg_type() != MessageType::Advertisement {
        return Err(Discard::Type);
    }
    // Cheap checks on the unchecked header before the checksum and the address list.
    if packet.check_len().is_err() {
        return Err(Discard::Truncated);
    }
    if packet.vrid() != expect.vrid {
        return Err(Discard::OtherVrid);
    }
    if src == expect.primary_addr {
        return Err(Discard::Own);
    }
    if !source_allowed(src, policy.accept_from) {
        return Err(Discard::SourceNotAllowed);
    }
    let (repr, mode) = Repr::parse(&packet, src, dst).map_err(|e| match e {
        WireError::Truncated => Discard::Truncated,
        WireError::BadLength { .. } => Discard::Length,
        WireError::BadChecksum => Discard::Checksum,
        _ => Discard::Malformed,
    })?;
    if !policy.checksum.accepts(mode) {
        return Err(Discard::ChecksumMode);
    }
    if src.is_unspecified() || src.is_multicast() || src.is_broadcast() {
        return Err(Discard::Source);
    }
    if repr.max_adver_int_cs == 0 {
        return Err(Discard::Interval);
    }
    if let Some((min, max)) = policy.interval_window {
        if !(min..=max).contains(&repr.max_adver_int_cs) {
            return Err(Discard::IntervalRange);
        }
    }
    if repr.addrs.is_empty() {
        return Err(Discard::AddrCount);
    }
    if let Some(vips) = policy.strict_addrs {
        if repr.addrs.len() != vips.len() {
            return Err(Discard::AddrCount);
        }
        if !same_set(&repr.addrs, vips) {
            return Err(Discard::AddrMismatch);
        }
    }
    let advert = Advert {
        src,
        priority: repr.priority,
        max_adver_int_cs: repr.max_adver_int_cs,
        addrs: repr.addrs,
    };
    Ok((advert, mode))
}

/// Same addresses in any order, duplicates counted (lengths are already equal).
fn same_set(theirs: &[Ipv4Addr], ours: &[Ipv4Addr]) -> bool {
    let mut a = theirs.to_vec();
    let mut b = ours.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}
