//! Everything in vrrpd that talks to the kernel.
//!
//! Layout:
//! - [`socket`]: the raw IP-protocol-112 socket: bound to one interface, joined to
//!   224.0.0.18, TTL 255, no multicast loop, IPv4 header built by us (IP_HDRINCL).
//! - [`vip`]: virtual addresses added and removed over rtnetlink (never by running `ip`).
//! - [`garp`]: gratuitous ARP frames sent over an AF_PACKET socket.
//! - [`handoff`]: the nftables table that forwards an old master's connections to it for
//!   a moment after a takeover.
//! - [`link`]: interface facts (index, MAC, up, primary address) and link up/down events
//!   from the rtnetlink multicast groups.
//! - [`realtime`]: SCHED_FIFO and mlockall, so advert timing survives a loaded machine.
//! - `sys`: the only `unsafe` code in vrrpd: `sendto` with a `sockaddr_ll`,
//!   `sched_setscheduler`, and registering a socket with tokio's reactor.
//!
//! Nothing here knows about VRRP states: the instance driver decides *when* to send,
//! add or announce; this layer only knows *how*.

use std::net::Ipv4Addr;

pub mod garp;
pub mod handoff;
pub mod link;
pub mod realtime;
pub mod socket;
#[allow(unsafe_code)]
mod sys;
pub mod vip;

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4); `shared::wire` is the source of truth.
pub const VRRP_PROTOCOL: u8 = shared::wire::vrrp::PROTOCOL;

/// The IPv4 multicast group VRRP adverts go to (RFC 5798 §5.1.1.2).
pub const VRRP_GROUP: Ipv4Addr = shared::wire::vrrp::MULTICAST_ADDR;

/// Adverts are sent with TTL 255 and receivers drop anything else (RFC 5798 §5.1.1.3), which
/// proves the sender is on the link.
pub const VRRP_TTL: u8 = shared::wire::vrrp::TTL;

/// An rtnetlink request connection whose background task lives exactly as long as it does.
///
/// rtnetlink splits a connection into a future that drives the socket and a cloneable
/// [`rtnetlink::Handle`]; the future is spawned on the current tokio runtime and aborted on
/// drop, so the netlink fd never outlives its user.
#[derive(Debug)]
pub(crate) struct Rtnl {
    handle: rtnetlink::Handle,
    task: tokio::task::JoinHandle<()>,
}

impl Rtnl {
    /// Open a connection in the calling thread's network namespace. Needs a tokio runtime.
    pub(crate) fn open() -> std::io::Result<Self> {
        // Checked rather than letting tokio::spawn panic: a caller outside a runtime gets
        // an error it can report.
        let rt = tokio::runtime::Handle::try_current().map_err(std::io::Error::other)?;
        let (conn, handle, _unsolicited) = rtnetlink::new_connection()?;
        let task = rt.spawn(conn);
        Ok(Self { handle, task })
    }

    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }
}

impl Drop for Rtnl {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The errno inside a netlink NACK, if that is what `e` is.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// An rtnetlink failure as an `io::Error`, keeping the errno when the kernel sent one.
pub(crate) fn netlink_to_io(e: rtnetlink::Error) -> std::io::Error {
    match netlink_errno(&e) {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::other(e),
    }
}
