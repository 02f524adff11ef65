//! Interface facts and link up/down events, from rtnetlink.
//!
//! [`interface_info`] answers the questions the daemon asks once at start (and on reload):
//! which index, which MAC (for gratuitous ARP), is the link usable, which address do adverts
//! come from.
//!
//! [`LinkWatcher`] listens on the RTMGRP_LINK multicast group. The kernel sends RTM_NEWLINK
//! for many reasons besides carrier (MTU, statistics flags, promiscuity, ...), so the watcher
//! remembers each interface's last state and reports only changes of "usable". If the
//! socket's buffer overflows (ENOBUFS) events were lost; the watcher then dumps all links
//! and reports whatever changed meanwhile, so a lost "down" is never silently missed.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use rtnetlink::constants::RTMGRP_LINK;
use rtnetlink::packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};

use super::vip::{list_v4, primary_v4};
use super::{netlink_errno, netlink_to_io, Rtnl};

/// Kernel receive buffer for the event socket: a flapping bond can emit bursts.
const EVENT_RCVBUF: usize = 1024 * 1024;

/// Largest netlink datagram we read in one go; notifications are far below this.
const EVENT_DATAGRAM: usize = 64 * 1024;

/// What the daemon needs to know about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    /// Hardware address, the sender of gratuitous ARPs.
    pub mac: [u8; 6],
    /// Administratively up *and* running (carrier present): able to carry adverts.
    pub up: bool,
    /// First non-secondary IPv4 address that isn't excluded (see
    /// [`interface_info_excluding`]); adverts are sent from it.
    pub primary_v4: Option<Ipv4Addr>,
}

/// A change of an interface's usability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    pub ifindex: u32,
    /// Up and running after the change; false also when the interface was deleted.
    pub up: bool,
}

/// Facts about interface `name` in the calling thread's network namespace.
pub async fn interface_info(name: &str) -> io::Result<InterfaceInfo> {
    interface_info_excluding(name, &[]).await
}

/// Like [`interface_info`], but the primary address is never one of `exclude` (pass the
/// VIPs: a /32 VIP is a non-secondary address and could otherwise be picked).
pub async fn interface_info_excluding(
    name: &str,
    exclude: &[Ipv4Addr],
) -> io::Result<InterfaceInfo> {
    let rtnl = Rtnl::open()?;
    let mut links = std::pin::pin!(rtnl
        .handle()
        .link()
        .get()
        .match_name(name.to_owned())
        .execute());
    let msg = match links.try_next().await {
        Ok(Some(msg)) => msg,
        Ok(None) => return Err(no_such_interface(name)),
        Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => return Err(no_such_interface(name)),
        Err(e) => return Err(netlink_to_io(e)),
    };
    let index = msg.header.index;
    let mac = link_mac(&msg).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface {name} has no Ethernet address"),
        )
    })?;
    let addrs = list_v4(&rtnl, index).await.map_err(netlink_to_io)?;
    Ok(InterfaceInfo {
        name: name.to_owned(),
        index,
        mac,
        up: link_usable(&msg),
        primary_v4: primary_v4(&addrs, exclude),
    })
}

fn no_such_interface(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("no interface named {name}"),
    )
}

fn link_mac(msg: &LinkMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })
}

/// IFF_UP says an administrator wants it up; IFF_RUNNING says the carrier is there (the
/// kernel's RFC 2863 operstate is up or unknown). Adverts need both.
fn link_usable(msg: &LinkMessage) -> bool {
    msg.header
        .flags
        .contains(LinkFlags::Up | LinkFlags::Running)
}

/// Link usability changes, from the RTMGRP_LINK netlink group. The socket is closed on drop.
pub struct LinkWatcher {
    sock: TokioSocket,
    tracker: LinkTracker,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LinkWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkWatcher")
            .field("tracker", &self.tracker)
            .finish_non_exhaustive()
    }
}

impl LinkWatcher {
    /// Subscribe, then take a snapshot of every link's state, so that the first event
    /// reported for an interface is a real change. Subscribing first means nothing can
    /// happen unseen between the snapshot and the first event. Needs a tokio runtime.
    pub async fn new() -> io::Result<Self> {
        let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
        sock.socket_mut().bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        if let Err(e) = sock.socket_ref().set_rx_buf_sz(EVENT_RCVBUF) {
            tracing::debug!(error = %e, "could not enlarge the link event buffer");
        }
        let tracker = LinkTracker::new(dump_links().await?);
        Ok(Self {
            sock,
            tracker,
            buf: Vec::with_capacity(EVENT_DATAGRAM),
        })
    }

    /// The last known usability of interface `ifindex`, if the watcher has seen it.
    pub fn is_up(&self, ifindex: u32) -> Option<bool> {
        self.tracker.is_up(ifindex)
    }

    /// Wait for the next change. Cancel-safe: a change already decoded stays queued.
    pub async fn recv(&mut self) -> io::Result<LinkEvent> {
        loop {
            if let Some(ev) = self.tracker.next_event() {
                return Ok(ev);
            }
            self.buf.clear();
            match self.sock.recv_from(&mut self.buf).await {
                Ok(_from) => self.tracker.decode(&self.buf),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::warn!("link events were lost (ENOBUFS); re-reading all links");
                    let now = dump_links().await?;
                    self.tracker.resync(now);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The sans-IO half of [`LinkWatcher`]: netlink bytes and snapshots in, changes out.
#[derive(Debug, Default)]
pub struct LinkTracker {
    known: HashMap<u32, bool>,
    pending: VecDeque<LinkEvent>,
}

impl LinkTracker {
    /// Start from a snapshot of link usability by index.
    pub fn new(snapshot: HashMap<u32, bool>) -> Self {
        Self {
            known: snapshot,
            pending: VecDeque::new(),
        }
    }

    /// The last known usability of interface `ifindex`.
    pub fn is_up(&self, ifindex: u32) -> Option<bool> {
        self.known.get(&ifindex).copied()
    }

    /// The oldest change not yet taken.
    pub fn next_event(&mut self) -> Option<LinkEvent> {
        self.pending.pop_front()
    }

    /// Feed one datagram read from the RTMGRP_LINK socket. Malformed parts are skipped.
    pub fn decode(&mut self, mut datagram: &[u8]) {
        // A datagram may hold several netlink messages, each padded to 4 bytes.
        while !datagram.is_empty() {
            let Ok(len) = NetlinkBuffer::new_checked(datagram).map(|b| b.length() as usize) else {
                tracing::debug!("skipping a malformed netlink datagram");
                return;
            };
            // new_checked guarantees len fits the buffer and covers the netlink header.
            let this = &datagram[..len.min(datagram.len())];
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(this) {
                Ok(msg) => self.handle(msg),
                Err(e) => tracing::debug!(error = %e, "skipping an undecodable netlink message"),
            }
            let advance = (len + 3) & !3;
            if advance == 0 || advance >= datagram.len() {
                return;
            }
            datagram = &datagram[advance..];
        }
    }

    fn handle(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                self.observe(link.header.index, link_usable(&link));
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                self.forget(link.header.index);
            }
            _ => {}
        }
    }

    fn observe(&mut self, ifindex: u32, up: bool) {
        if self.known.insert(ifindex, up) != Some(up) {
            self.pending.push_back(LinkEvent { ifindex, up });
        }
    }

    fn forget(&mut self, ifindex: u32) {
        if self.known.remove(&ifindex) == Some(true) {
            self.pending.push_back(LinkEvent { ifindex, up: false });
        }
    }

    /// Compare with a fresh snapshot after lost events and queue whatever changed.
    pub fn resync(&mut self, now: HashMap<u32, bool>) {
        let mut gone: Vec<u32> = self
            .known
            .keys()
            .filter(|i| !now.contains_key(i))
            .copied()
            .collect();
        gone.sort_unstable();
        for ifindex in gone {
            self.forget(ifindex);
        }
        let mut now: Vec<(u32, bool)> = now.into_iter().collect();
        now.sort_unstable();
        for (ifindex, up) in now {
            self.observe(ifindex, up);
        }
    }
}

/// The usability of every link, by index.
async fn dump_links() -> io::Result<HashMap<u32, bool>> {
    let rtnl = Rtnl::open()?;
    let mut links = std::pin::pin!(rtnl.handle().link().get().execute());
    let mut out = HashMap::new();
    while let Some(msg) = links.try_next().await.map_err(netlink_to_io)? {
        out.insert(msg.header.index, link_usable(&msg));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_core::NetlinkHeader;

    fn link_msg(index: u32, flags: LinkFlags, new: bool) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        link.header.flags = flags;
        link.attributes
            .push(LinkAttribute::IfName(format!("eth{index}")));
        let inner = if new {
            RouteNetlinkMessage::NewLink(link)
        } else {
            RouteNetlinkMessage::DelLink(link)
        };
        let mut msg = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
        msg.finalize();
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    const USABLE: LinkFlags = LinkFlags::Up.union(LinkFlags::Running);

    #[test]
    fn reports_only_changes_of_usability() {
        let mut t = LinkTracker::new(HashMap::from([(2, true)]));
        // An MTU change or similar: same state, no event.
        t.decode(&link_msg(2, USABLE, true));
        assert_eq!(t.next_event(), None);
        // Carrier lost: still IFF_UP, no IFF_RUNNING.
        t.decode(&link_msg(2, LinkFlags::Up, true));
        assert_eq!(
            t.next_event(),
            Some(LinkEvent {
                ifindex: 2,
                up: false
            })
        );
        assert_eq!(t.is_up(2), Some(false));
        // A new interface appears up: reported once.
        t.decode(&link_msg(7, USABLE, true));
        assert_eq!(
            t.next_event(),
            Some(LinkEvent {
                ifindex: 7,
                up: true
            })
        );
        assert_eq!(t.next_event(), None);
    }

    #[test]
    fn several_messages_in_one_datagram_are_all_seen() {
        let mut t = LinkTracker::new(HashMap::from([(2, true), (3, true)]));
        let mut datagram = link_msg(2, LinkFlags::empty(), true);
        datagram.extend(link_msg(3, USABLE, false));
        t.decode(&datagram);
        assert_eq!(
            t.next_event(),
            Some(LinkEvent {
                ifindex: 2,
                up: false
            })
        );
        assert_eq!(
            t.next_event(),
            Some(LinkEvent {
                ifindex: 3,
                up: false
            })
        );
        assert_eq!(t.is_up(3), None, "deleted links are forgotten");
        assert_eq!(t.next_event(), None);
    }

    #[test]
    fn garbage_and_truncation_never_panic() {
        let mut t = LinkTracker::new(HashMap::from([(2, true)]));
        let good = link_msg(2, LinkFlags::empty(), true);
        for cut in 0..good.len() {
            t.decode(&good[..cut]);
        }
        t.decode(&[0xa5; 64]);
        t.decode(&[]);
        // Nothing above was a complete message, so nothing changed.
        assert_eq!(t.next_event(), None);
        assert_eq!(t.is_up(2), Some(true));
    }

    #[test]
    fn resync_reports_what_changed_while_events_were_lost() {
        let mut t = LinkTracker::new(HashMap::from([(2, true), (3, true), (4, false)]));
        t.resync(HashMap::from([(2, true), (4, true), (5, false)]));
        let mut got = Vec::new();
        while let Some(ev) = t.next_event() {
            got.push(ev);
        }
        assert_eq!(
            got,
            vec![
                LinkEvent {
                    ifindex: 3,
                    up: false
                },
                LinkEvent {
                    ifindex: 4,
                    up: true
                },
                LinkEvent {
                    ifindex: 5,
                    up: false
                },
            ]
        );
    }
}
