//! The raw IP-protocol-112 socket VRRP adverts travel on.
//!
//! One [`VrrpSocket`] per interface:
//! - `SO_BINDTODEVICE` to the interface, so only adverts that arrived on it are seen (the
//!   kernel filters by ingress device; adverts from other links never reach this socket);
//! - joined to 224.0.0.18 by interface index (`ip_mreqn`), unless unicast peers are
//!   configured, in which case adverts arrive as ordinary unicast to our primary address;
//! - `IP_MULTICAST_LOOP` off, so the sender never hears itself (the receive path would
//!   otherwise have to recognise and discard its own adverts on every interval);
//! - `IP_HDRINCL` on: we write the IPv4 header ourselves so the source is always the
//!   interface's primary address (never a VIP the routing code might prefer) and the TTL is
//!   255 for unicast too (`IP_MULTICAST_TTL` only covers multicast);
//! - non-blocking, driven by tokio's [`AsyncFd`].
//!
//! Receiving: a raw IPv4 socket hands us the whole datagram, IPv4 header included, which is
//! where the TTL and the destination come from. [`VrrpSocket::recv`] reports those and the
//! range of the VRRP payload (parsing via `shared::wire::ipv4`); checking its meaning is the
//! caller's job (`rx::validate`).
//!
//! Sending: [`VrrpSocket::send_advert`] emits the advert once per destination, because the
//! checksum covers the IPv4 pseudo-header and so differs between unicast peers. With
//! `auth_key_file`, each copy gets the authentication trailer after the VRRP message (its
//! tag covers the destination too).

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::Range;

use shared::wire::vrrp::{ChecksumMode, Repr};
use shared::wire::{self, ipv4};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::{VRRP_GROUP, VRRP_PROTOCOL, VRRP_TTL};
use crate::auth::Seal;

/// A receive buffer this big holds any IPv4 datagram, so nothing is ever truncated.
/// A VRRP advert is at most 20 + 40 + 8 + 255 * 4 = 1088 bytes; most callers can use less.
pub const MAX_DATAGRAM: usize = 65_535;

/// Kernel receive buffer asked for: a burst of adverts from many routers while the daemon
/// is descheduled must not be dropped, since a lost advert can trigger a needless takeover.
const RECV_BUFFER_BYTES: usize = 256 * 1024;

/// One received datagram, described. The bytes stay in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// IPv4 source address (the sender's primary address).
    pub src: Ipv4Addr,
    /// IPv4 destination: 224.0.0.18, or our own address for unicast adverts.
    pub dst: Ipv4Addr,
    /// TTL as it arrived; RFC 5798 §7.1 requires 255.
    pub ttl: u8,
    /// Where the VRRP payload lies in the buffer passed to [`VrrpSocket::recv`].
    pub payload_range: Range<usize>,
}

/// The raw VRRP socket of one interface. The fd is closed when this is dropped.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifname: String,
    ifindex: u32,
    source: Ipv4Addr,
    peers: Vec<Ipv4Addr>,
}

impl VrrpSocket {
    /// Open the socket on `ifname`, sending from `primary` to the VRRP group, or to each of
    /// `unicast_peers` if that is not empty. Must be called inside a tokio runtime.
    pub fn open(ifname: &str, primary: Ipv4Addr, unicast_peers: &[Ipv4Addr]) -> io::Result<Self> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        let sock = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(VRRP_PROTOCOL))),
        )?;
        sock.bind_device(Some(ifname.as_bytes()))?;
        sock.set_header_included_v4(true)?;
        sock.set_multicast_loop_v4(false)?;
        sock.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        sock.set_ttl(u32::from(VRRP_TTL))?;
        sock.set_multicast_if_v4(&primary)?;
        if unicast_peers.is_empty() {
            sock.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        // A smaller buffer than asked for still works; the kernel caps it at rmem_max.
        if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER_BYTES) {
            tracing::debug!(error = %e, iface = ifname, "could not enlarge the receive buffer");
        }
        sock.set_nonblocking(true)?;
        Ok(Self {
            fd: super::sys::register_socket(sock)?,
            ifname: ifname.to_owned(),
            ifindex,
            source: primary,
            peers: unicast_peers.to_vec(),
        })
    }

    /// The interface this socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The index of the interface this socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The source address written into every advert.
    pub fn source(&self) -> Ipv4Addr {
        self.source
    }

    /// Send from `src` from now on (the interface's primary address changed).
    pub fn set_source(&mut self, src: Ipv4Addr) {
        // SO_BINDTODEVICE already pins the egress interface; IP_MULTICAST_IF only names
        // the address, so failing to update it changes nothing on the wire.
        if let Err(e) = self.fd.get_ref().set_multicast_if_v4(&src) {
            tracing::debug!(error = %e, %src, "could not update IP_MULTICAST_IF");
        }
        self.source = src;
    }

    /// Wait for the next datagram and describe it.
    ///
    /// `buf` should be [`MAX_DATAGRAM`] bytes long; a datagram that doesn't fit, or (never
    /// seen from a real kernel) one whose IPv4 header is malformed, is skipped with a debug
    /// log rather than returned, so errors from here are real socket errors.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let n = self
                .fd
                .async_io(Interest::READABLE, |sock| {
                    let mut reader: &Socket = sock;
                    reader.read(buf)
                })
                .await?;
            if let Some(received) = self.describe(&buf[..n]) {
                return Ok(received);
            }
        }
    }

    /// Take a datagram that is already queued, without waiting: `Ok(None)` when the queue
    /// is empty. Used to drain adverts that arrived while the daemon wasn't scheduled
    /// before acting on an expired timer.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            // A direct read, not AsyncFd::try_io: the reactor may not have noticed the
            // readiness yet, and the point here is what the kernel already holds.
            let mut reader: &Socket = self.fd.get_ref();
            let n = match reader.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Some(received) = self.describe(&buf[..n]) {
                return Ok(Some(received));
            }
        }
    }

    fn describe(&self, datagram: &[u8]) -> Option<Received> {
        match ipv4::parse(datagram) {
            Ok(d) => Some(Received {
                src: d.src,
                dst: d.dst,
                ttl: d.ttl,
                payload_range: d.payload_range(),
            }),
            Err(e) => {
                tracing::debug!(
                    iface = %self.ifname,
                    len = datagram.len(),
                    error = %e,
                    "skipping a datagram whose IPv4 header cannot be read"
                );
                None
            }
        }
    }

    /// Emit `repr` with checksum `mode` and send it to the group, or to every unicast peer
    /// (one emit per peer: the pseudo-header checksum depends on the destination).
    ///
    /// With several peers, each gets its copy even if an earlier send failed; the first
    /// error is returned afterwards.
    pub async fn send_advert(&self, repr: &Repr, mode: ChecksumMode) -> io::Result<()> {
        self.send_advert_sealed(repr, mode, None).await
    }

    /// [`send_advert`](Self::send_advert), with the authentication trailer of `seal`
    /// appended to each copy when it is `Some`.
    pub async fn send_advert_sealed(
        &self,
        repr: &Repr,
        mode: ChecksumMode,
        seal: Option<Seal<'_>>,
    ) -> io::Result<()> {
        self.for_each_destination(|dst| {
            let mut payload = repr.to_bytes(self.source, dst, mode).map_err(wire_to_io)?;
            if let Some(seal) = &seal {
                seal.append(&mut payload, self.source, dst);
            }
            Ok(payload)
        })
        .await
    }

    /// Send an already-built VRRP message as is to the group or every unicast peer. Its
    /// checksum is the caller's business (and is only right for one destination when it
    /// covers the pseudo-header); [`send_advert`](Self::send_advert) is the usual way.
    pub async fn send_raw(&self, payload: &[u8]) -> io::Result<()> {
        self.for_each_destination(|_| Ok(payload.to_vec())).await
    }

    async fn for_each_destination(
        &self,
        payload_for: impl Fn(Ipv4Addr) -> io::Result<Vec<u8>>,
    ) -> io::Result<()> {
        if self.peers.is_empty() {
            return self.send_to(VRRP_GROUP, &payload_for(VRRP_GROUP)?).await;
        }
        let mut first_err = None;
        for &peer in &self.peers {
            let sent = match payload_for(peer) {
                Ok(payload) => self.send_to(peer, &payload).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, %peer, "advert to unicast peer failed");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn send_to(&self, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let datagram = ipv4::build_datagram(self.source, dst, payload).map_err(wire_to_io)?;
        // For IP_HDRINCL the kernel routes on this address; the port is meaningless.
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let sent = self
            .fd
            .async_io(Interest::WRITABLE, |sock| sock.send_to(&datagram, &to))
            .await?;
        if sent != datagram.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short raw send: {sent} of {} bytes", datagram.len()),
            ));
        }
        Ok(())
    }
}

fn wire_to_io(e: wire::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}
