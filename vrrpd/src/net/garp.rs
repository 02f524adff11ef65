//! Gratuitous ARP: telling the link that a VIP now lives at our MAC.
//!
//! Hosts and switches keep the old master's MAC for the VIP until their cache entry expires;
//! a gratuitous ARP request (sender IP = target IP = VIP) makes them update it at once. A
//! request rather than a reply because Linux and most stacks update an *existing*
//! neighbour entry from a request even with `arp_accept=0`, and switches learn the MAC from
//! the broadcast frame's source either way.
//!
//! This module builds and sends one frame. How many to send and how far apart is a policy
//! of the instance driver, described by [`GarpPlan`].

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::time::Duration;

use etherparse::{ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header};
use socket2::{Domain, Socket, Type};

use super::sys;

/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Shortest Ethernet frame without FCS; shorter frames are padded so that drivers that
/// don't pad on their own still put a valid frame on the wire.
const MIN_FRAME_LEN: usize = 60;

/// How many gratuitous ARPs to send after becoming Master, and how far apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GarpPlan {
    /// Frames per VIP; 0 disables gratuitous ARP.
    pub count: u32,
    /// Gap between two bursts.
    pub interval: Duration,
}

impl GarpPlan {
    /// keepalived sends 5 (`garp_master_repeat`); a repeat covers a frame lost while a
    /// switch port is still relearning.
    pub const DEFAULT_COUNT: u32 = 5;
    /// Spacing between repeats. Short enough that the last one is out within a second.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
}

impl Default for GarpPlan {
    fn default() -> Self {
        Self {
            count: Self::DEFAULT_COUNT,
            interval: Self::DEFAULT_INTERVAL,
        }
    }
}

/// Build the broadcast gratuitous ARP request frame for `vip` from `mac`, padded to 60 bytes.
pub fn garp_frame(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let eth = Ethernet2Header {
        source: mac,
        destination: BROADCAST_MAC,
        ether_type: EtherType::ARP,
    };
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: vip.octets(),
        target_mac: [0; 6],
        target_ipv4: vip.octets(),
    };
    let mut frame = Vec::with_capacity(MIN_FRAME_LEN);
    frame.extend_from_slice(&eth.to_bytes());
    frame.extend_from_slice(&arp.to_bytes());
    frame.resize(MIN_FRAME_LEN.max(frame.len()), 0);
    frame
}

/// An AF_PACKET socket for sending gratuitous ARPs on any interface. Keep one open rather
/// than opening a socket per frame; the fd is closed on drop.
#[derive(Debug)]
pub struct GarpSender {
    sock: Socket,
}

impl GarpSender {
    /// Open the socket. Protocol 0 means the socket receives nothing, so no queue of
    /// unread frames builds up behind it. Needs CAP_NET_RAW.
    pub fn open() -> io::Result<Self> {
        let sock = Socket::new(Domain::PACKET, Type::RAW, None)?;
        // A GARP that cannot go out immediately is dropped (the plan repeats it) rather
        // than blocking the runtime thread.
        sock.set_nonblocking(true)?;
        Ok(Self { sock })
    }

    /// Send one gratuitous ARP for `vip` with sender MAC `mac` out of interface `ifindex`.
    pub fn send(&self, ifindex: u32, mac: [u8; 6], vip: Ipv4Addr) -> io::Result<()> {
        let frame = garp_frame(mac, vip);
        let sent = sys::packet_send_to(
            self.sock.as_fd(),
            ifindex,
            BROADCAST_MAC,
            EtherType::ARP.0,
            &frame,
        )?;
        if sent != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short GARP send: {sent} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }
}

/// Send one gratuitous ARP through a socket opened for this frame only.
pub fn send_garp(ifindex: u32, mac: [u8; 6], vip: Ipv4Addr) -> io::Result<()> {
    GarpSender::open()?.send(ifindex, mac, vip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_is_a_broadcast_arp_request_for_the_vip() {
        let mac = [0x02, 0x00, 0x5e, 0x00, 0x01, 0x07];
        let vip = Ipv4Addr::new(192, 168, 1, 100);
        let f = garp_frame(mac, vip);
        assert_eq!(f.len(), 60);
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            // Ethernet: dst broadcast, src mac, type ARP
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x5e, 0x00, 0x01, 0x07,
            0x08, 0x06,
            // ARP: htype 1, ptype IPv4, hlen 6, plen 4, op request
            0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01,
            // sender MAC, sender IP = VIP
            0x02, 0x00, 0x5e, 0x00, 0x01, 0x07, 192, 168, 1, 100,
            // target MAC zero, target IP = VIP
            0, 0, 0, 0, 0, 0, 192, 168, 1, 100,
        ];
        assert_eq!(&f[..42], &expected[..]);
        assert!(f[42..].iter().all(|&b| b == 0), "padding is zero");
    }

    #[test]
    fn default_plan_is_a_burst_of_five() {
        let p = GarpPlan::default();
        assert_eq!(p.count, 5);
        assert_eq!(p.interval, Duration::from_millis(200));
    }
}
