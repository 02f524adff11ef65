//! Virtual IPv4 addresses, added and removed over rtnetlink.
//!
//! The daemon never runs `ip`: forking a process at the moment of a takeover costs
//! milliseconds and can fail under memory pressure, exactly when the VIP must move.
//!
//! Every operation is idempotent because the FSM's `AddVips`/`RemoveVips` may repeat
//! (restart as Master, a manual `ip addr` by an operator, a flapping link): adding an
//! address that is already there and removing one that is gone both succeed.
//!
//! The kernel also tells us which address is the interface's *primary*: the first IPv4
//! address without the secondary flag. A VIP in the same subnet becomes secondary, but a
//! /32 VIP is primary of its own subnet, so [`primary_v4`] also skips the VIPs themselves.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::AddressFamily;

use super::{netlink_errno, Rtnl};

/// Longest address label the kernel stores (IFNAMSIZ - 1).
pub const MAX_LABEL_LEN: usize = 15;

/// One virtual address as it is put on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vip {
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32; /32 keeps the VIP out of the connected-route table.
    pub prefix_len: u8,
    /// Optional label (`eth0:vip`), shown by `ip addr` and `ifconfig` as an alias name.
    pub label: Option<String>,
}

impl Vip {
    /// A VIP without a label.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        Self {
            addr,
            prefix_len,
            label: None,
        }
    }

    /// The same VIP with a label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    fn check(&self) -> Result<(), VipError> {
        if self.prefix_len > 32 {
            return Err(VipError::Invalid(format!(
                "{}/{}: prefix length must be 0..=32",
                self.addr, self.prefix_len
            )));
        }
        if let Some(label) = &self.label {
            if label.is_empty() || label.len() > MAX_LABEL_LEN || label.contains('\0') {
                return Err(VipError::Invalid(format!(
                    "label {label:?}: must be 1..={MAX_LABEL_LEN} bytes without NUL"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// One IPv4 address found on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// The kernel's IFA_F_SECONDARY: another address of the same subnet came first.
    pub secondary: bool,
    pub label: Option<String>,
}

/// Failures of the VIP layer.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    #[error("netlink {op} on ifindex {ifindex} failed")]
    Netlink {
        op: String,
        ifindex: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("invalid VIP: {0}")]
    Invalid(String),
}

/// Adds and removes VIPs through one rtnetlink connection.
#[derive(Debug)]
pub struct VipManager {
    rtnl: Rtnl,
}

impl VipManager {
    /// Open the netlink connection in the calling thread's network namespace. Needs a tokio
    /// runtime (the connection's driver task is spawned on it).
    pub fn new() -> Result<Self, VipError> {
        Ok(Self {
            rtnl: Rtnl::open().map_err(VipError::Connect)?,
        })
    }

    /// Put `vip` on interface `ifindex`. Ok if it is already there.
    pub async fn add(&self, ifindex: u32, vip: &Vip) -> Result<(), VipError> {
        vip.check()?;
        let mut req =
            self.rtnl
                .handle()
                .address()
                .add(ifindex, IpAddr::V4(vip.addr), vip.prefix_len);
        if let Some(label) = &vip.label {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Label(label.clone()));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(()),
            Err(source) => Err(VipError::Netlink {
                op: format!("add {vip}"),
                ifindex,
                source,
            }),
        }
    }

    /// Take `vip` off interface `ifindex`. Ok if it is not there.
    pub async fn remove(&self, ifindex: u32, vip: &Vip) -> Result<(), VipError> {
        vip.check()?;
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = vip.prefix_len;
        msg.header.index = ifindex;
        msg.header.scope = AddressScope::Universe;
        // The kernel matches on IFA_LOCAL and the prefix length; the label is left out so a
        // VIP whose label an operator changed is still removed.
        msg.attributes
            .push(AddressAttribute::Local(IpAddr::V4(vip.addr)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(vip.addr)));
        match self.rtnl.handle().address().del(msg).execute().await {
            Ok(()) => Ok(()),
            // EADDRNOTAVAIL: no such address; ENODEV: the interface itself is gone, which
            // takes its addresses with it.
            Err(e)
                if matches!(
                    netlink_errno(&e),
                    Some(libc::EADDRNOTAVAIL) | Some(libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(source) => Err(VipError::Netlink {
                op: format!("remove {vip}"),
                ifindex,
                source,
            }),
        }
    }

    /// Is `vip.addr` on interface `ifindex` (whatever its prefix length)?
    pub async fn present(&self, ifindex: u32, vip: &Vip) -> Result<bool, VipError> {
        Ok(self
            .addresses(ifindex)
            .await?
            .iter()
            .any(|a| a.addr == vip.addr))
    }

    /// The IPv4 addresses of interface `ifindex`, in kernel order (primary first per subnet).
    pub async fn addresses(&self, ifindex: u32) -> Result<Vec<IfAddr>, VipError> {
        list_v4(&self.rtnl, ifindex)
            .await
            .map_err(|source| VipError::Netlink {
                op: "address dump".to_owned(),
                ifindex,
                source,
            })
    }
}

/// Dump the IPv4 addresses of one interface.
pub(crate) async fn list_v4(rtnl: &Rtnl, ifindex: u32) -> Result<Vec<IfAddr>, rtnetlink::Error> {
    let mut req = rtnl.handle().address().get().set_link_index_filter(ifindex);
    // Ask the kernel for IPv4 only; the index is filtered on our side (rtnetlink's filter).
    req.message_mut().header.family = AddressFamily::Inet;
    let mut stream = std::pin::pin!(req.execute());
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await? {
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        let mut local = None;
        let mut address = None;
        let mut label = None;
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                AddressAttribute::Label(l) => label = Some(l.clone()),
                _ => {}
            }
        }
        // IFA_LOCAL is our own address; IFA_ADDRESS differs from it only on point-to-point
        // links, where it is the peer's.
        if let Some(addr) = local.or(address) {
            out.push(IfAddr {
                addr,
                prefix_len: msg.header.prefix_len,
                secondary: msg.header.flags.contains(AddressHeaderFlags::Secondary),
                label,
            });
        }
    }
    Ok(out)
}

/// The interface's primary IPv4 address: the first non-secondary address that is not one of
/// `vips`. This is what adverts are sent from.
pub fn primary_v4(addrs: &[IfAddr], vips: &[Ipv4Addr]) -> Option<Ipv4Addr> {
    addrs
        .iter()
        .find(|a| !a.secondary && !vips.contains(&a.addr))
        .map(|a| a.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(addr: [u8; 4], secondary: bool) -> IfAddr {
        IfAddr {
            addr: Ipv4Addr::from(addr),
            prefix_len: 24,
            secondary,
            label: None,
        }
    }

    #[test]
    fn primary_skips_secondaries_and_vips() {
        let vip = Ipv4Addr::new(10, 0, 9, 100);
        let addrs = [a([10, 0, 9, 100], false), a([10, 0, 0, 1], false)];
        assert_eq!(primary_v4(&addrs, &[vip]), Some(Ipv4Addr::new(10, 0, 0, 1)));
        let addrs = [a([10, 0, 0, 7], true), a([10, 0, 0, 1], false)];
        assert_eq!(primary_v4(&addrs, &[]), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(primary_v4(&[a([10, 0, 9, 100], false)], &[vip]), None);
    }

    #[test]
    fn vip_checks_prefix_and_label() {
        let addr = Ipv4Addr::new(10, 0, 0, 100);
        assert!(Vip::new(addr, 32).check().is_ok());
        assert!(Vip::new(addr, 33).check().is_err());
        assert!(Vip::new(addr, 24).with_label("eth0:vip").check().is_ok());
        assert!(Vip::new(addr, 24)
            .with_label("a-label-that-is-too-long")
            .check()
            .is_err());
        assert!(Vip::new(addr, 24).with_label("").check().is_err());
    }
}
