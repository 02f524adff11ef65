//! Addresses in vrrpd's config: VIPs (`a.b.c.d/len`, optional label), unicast peers,
//! interface names and labels. The rules and why they hold are in the parent module's docs.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use shared::config::Validator;

use super::*;

pub(super) fn validate_vips(
    v: &mut Validator<'_>,
    i: usize,
    raw: Option<&[toml::Value]>,
    interface: &str,
) -> Vec<VipConfig> {
    let key = format!("instance[{i}].vips");
    let Some(raw) = raw else {
        v.error(
            key,
            format!("missing (required: 1..={MAX_VIPS} addresses such as \"192.0.2.10/24\")"),
        );
        return Vec::new();
    };
    if raw.is_empty() || raw.len() > MAX_VIPS {
        v.error(
            key.clone(),
            format!("{} VIPs given (valid: 1..={MAX_VIPS})", raw.len()),
        );
    }
    let mut out: Vec<VipConfig> = Vec::new();
    for (j, value) in raw.iter().enumerate() {
        let vkey = format!("{key}[{j}]");
        let Some(vip) = parse_vip_entry(v, &vkey, value, interface) else {
            continue;
        };
        if out.iter().any(|o| o.address == vip.address) {
            v.error(
                vkey,
                format!(
                    "{} is listed twice in this instance (each VIP once)",
                    vip.address
                ),
            );
            continue;
        }
        out.push(vip);
    }
    out
}

/// One `vips` entry: a string, or an inline table with `address` and optional `label`.
fn parse_vip_entry(
    v: &mut Validator<'_>,
    key: &str,
    value: &toml::Value,
    interface: &str,
) -> Option<VipConfig> {
    let (address, label) = match value {
        toml::Value::String(s) => (s.as_str(), None),
        toml::Value::Table(t) => {
            let mut bad = false;
            for unknown in t.keys().filter(|k| *k != "address" && *k != "label") {
                v.error(
                    format!("{key}.{unknown}"),
                    format!("unknown key `{unknown}` (valid: `address`, `label`)"),
                );
                bad = true;
            }
            let address = match t.get("address") {
                Some(toml::Value::String(s)) => Some(s.as_str()),
                Some(other) => {
                    v.error(
                        format!("{key}.address"),
                        format!(
                            "expected a string \"a.b.c.d/len\", found {}",
                            other.type_str()
                        ),
                    );
                    None
                }
                None => {
                    v.error(
                        key.to_string(),
                        "missing `address` (required: \"a.b.c.d/len\")",
                    );
                    None
                }
            };
            let label = match t.get("label") {
                None => None,
                Some(toml::Value::String(s)) => {
                    if let Err(why) = check_label(s, interface) {
                        v.error(format!("{key}.label"), format!("{s:?} {why}"));
                        bad = true;
                    }
                    Some(s.clone())
                }
                Some(other) => {
                    v.error(
                        format!("{key}.label"),
                        format!(
                            "expected a string such as \"eth0:web\", found {}",
                            other.type_str()
                        ),
                    );
                    bad = true;
                    None
                }
            };
            match address {
                Some(a) if !bad => (a, label),
                Some(a) => {
                    // Still check the address so its problems are reported too.
                    let _ = parse_vip_address(v, &format!("{key}.address"), a);
                    return None;
                }
                None => return None,
            }
        }
        other => {
            v.error(
                key.to_string(),
                format!(
                    "expected \"a.b.c.d/len\" or {{ address = \"a.b.c.d/len\", label = \"...\" }}, found {}",
                    other.type_str()
                ),
            );
            return None;
        }
    };
    let addr_key = if value.is_table() {
        format!("{key}.address")
    } else {
        key.to_string()
    };
    let (address, prefix_len) = parse_vip_address(v, &addr_key, address)?;
    Some(VipConfig {
        address,
        prefix_len,
        label,
    })
}

fn parse_vip_address(v: &mut Validator<'_>, key: &str, s: &str) -> Option<(Ipv4Addr, u8)> {
    match parse_cidr(s) {
        Ok(pair) => Some(pair),
        Err(why) => {
            v.error(key.to_string(), format!("{s:?} {why}"));
            None
        }
    }
}

/// The form of a VIP, for [`CidrError`]'s messages.
const CIDR_FORM: &str =
    "(valid: an IPv4 address with a prefix length 1..=32, e.g. \"192.0.2.10/24\")";

/// Why a string is not a VIP; the messages follow the quoted string in a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("has no prefix length {CIDR_FORM}")]
    NoPrefixLength,
    #[error("is not an IPv4 address {CIDR_FORM}")]
    NotIpv4,
    #[error("has a bad prefix length {0:?} {CIDR_FORM}")]
    BadPrefixLength(String),
    #[error("is {0} (valid: a unicast IPv4 address)")]
    NotUnicast(&'static str),
    #[error("is the network address of its /{0} subnet (valid: a host address in the subnet)")]
    NetworkAddress(u8),
    #[error("is the broadcast address of its /{0} subnet (valid: a host address in the subnet)")]
    BroadcastAddress(u8),
}

/// `a.b.c.d/len` with len 1..=32, a unicast address that is not its subnet's network or
/// broadcast address.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    let Some((addr, len)) = s.split_once('/') else {
        return Err(CidrError::NoPrefixLength);
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| CidrError::NotIpv4)?;
    let len: u8 = match len.parse() {
        Ok(l) if (1..=32).contains(&l) => l,
        _ => return Err(CidrError::BadPrefixLength(len.to_string())),
    };
    if let Some(why) = not_unicast(addr) {
        return Err(CidrError::NotUnicast(why));
    }
    if len <= 30 {
        let mask = u32::MAX << (32 - u32::from(len));
        let bits = u32::from(addr);
        if bits & !mask == 0 {
            return Err(CidrError::NetworkAddress(len));
        }
        if bits & !mask == !mask {
            return Err(CidrError::BroadcastAddress(len));
        }
    }
    Ok((addr, len))
}

/// Why `addr` can't be a VIP or a unicast peer, if it can't.
fn not_unicast(addr: Ipv4Addr) -> Option<&'static str> {
    if addr.is_unspecified() {
        Some("the unspecified address")
    } else if addr.is_loopback() {
        Some("a loopback address")
    } else if addr.is_multicast() {
        Some("a multicast address")
    } else if addr.is_broadcast() {
        Some("the broadcast address")
    } else if addr.octets()[0] >= 240 {
        Some("a reserved (class E) address")
    } else if addr.octets()[0] == 0 {
        Some("in 0.0.0.0/8 (\"this network\")")
    } else {
        None
    }
}

pub(super) fn validate_peers(
    v: &mut Validator<'_>,
    i: usize,
    raw: &[String],
    vips: &[VipConfig],
) -> Vec<Ipv4Addr> {
    let key = format!("instance[{i}].unicast_peers");
    if raw.len() > MAX_UNICAST_PEERS {
        v.error(
            key.clone(),
            format!(
                "{} peers given (valid: 0..={MAX_UNICAST_PEERS}; empty = multicast)",
                raw.len()
            ),
        );
    }
    unicast_list(v, &key, raw, vips)
}

/// `accept_from`: the same rules as `unicast_peers` (a peer's primary address).
pub(super) fn validate_accept_from(
    v: &mut Validator<'_>,
    i: usize,
    raw: &[String],
    vips: &[VipConfig],
) -> Vec<Ipv4Addr> {
    let key = format!("instance[{i}].accept_from");
    if raw.len() > MAX_ACCEPT_FROM {
        v.error(
            key.clone(),
            format!(
                "{} sources given (valid: 0..={MAX_ACCEPT_FROM}; empty = any source)",
                raw.len()
            ),
        );
    }
    unicast_list(v, &key, raw, vips)
}

/// A list of router primary addresses: unicast IPv4, no prefix, no duplicates, no VIP.
fn unicast_list(
    v: &mut Validator<'_>,
    key: &str,
    raw: &[String],
    vips: &[VipConfig],
) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for (j, s) in raw.iter().enumerate() {
        let pkey = format!("{key}[{j}]");
        let addr: Ipv4Addr = match s.parse() {
            Ok(a) => a,
            Err(_) => {
                v.error(
                    pkey,
                    format!("{s:?} is not an IPv4 address (valid: a peer's primary address such as \"192.0.2.2\", no prefix)"),
                );
                continue;
            }
        };
        if let Some(why) = not_unicast(addr) {
            v.error(
                pkey,
                format!("{s:?} is {why} (valid: a unicast IPv4 address)"),
            );
            continue;
        }
        if out.contains(&addr) {
            v.error(pkey, format!("{addr} is listed twice (each peer once)"));
            continue;
        }
        if vips.iter().any(|vip| vip.address == addr) {
            v.error(
                pkey,
                format!(
                    "{addr} is one of this instance's VIPs (valid: the peer's own primary address)"
                ),
            );
            continue;
        }
        out.push(addr);
    }
    out
}

/// Checks across instances: names, (interface, VRID) pairs and VIPs are unique.
pub(super) fn check_cross_instance(v: &mut Validator<'_>, instances: &[InstanceConfig]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut vrids: HashMap<(&str, u8), usize> = HashMap::new();
    let mut vips: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        if let Some(&first) = names.get(inst.name.as_str()) {
            v.error(
                format!("instance[{i}].name"),
                format!(
                    "{:?} is already the name of instance[{first}] (valid: a name not used by another instance)",
                    inst.name
                ),
            );
        } else {
            names.insert(&inst.name, i);
        }
        // An invalid interface was already reported and left empty.
        if !inst.interface.is_empty() {
            match vrids.get(&(inst.interface.as_str(), inst.vrid)) {
                Some(&first) => v.error(
                    format!("instance[{i}].vrid"),
                    format!(
                        "VRID {} is already used on {} by instance {:?} (valid: a VRID 1..=255 unique per interface)",
                        inst.vrid, inst.interface, instances[first].name
                    ),
                ),
                None => {
                    vrids.insert((&inst.interface, inst.vrid), i);
                }
            }
        }
        for (j, vip) in inst.vips.iter().enumerate() {
            match vips.get(&vip.address) {
                Some(&first) if first != i => v.error(
                    format!("instance[{i}].vips[{j}]"),
                    format!(
                        "{} is already a VIP of instance {:?} (valid: each address in one instance only)",
                        vip.address, instances[first].name
                    ),
                ),
                Some(_) => {}
                None => {
                    vips.insert(vip.address, i);
                }
            }
        }
    }
}

/// The kernel's `dev_valid_name`, which also bounds the name by IFNAMSIZ.
pub(super) fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("it is too long");
    }
    if name == "." || name == ".." {
        return Err("it is reserved");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("it contains a forbidden character");
    }
    Ok(())
}

/// Why a VIP's `label` is refused; the messages follow the quoted label in a config error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum LabelError {
    /// `example` is the interface name, or "eth0" if there is none.
    #[error("is {len} bytes long (valid: 1..={MAX_IFNAME_LEN} bytes, e.g. \"{example}:vip\")")]
    Length { len: usize, example: String },
    #[error("contains whitespace or non-ASCII characters (valid: printable ASCII)")]
    NotPrintable,
    #[error(
        "does not start with the interface name {interface:?} (valid: e.g. \"{interface}:vip\")"
    )]
    WrongPrefix { interface: String },
}

/// See the module docs for why the interface-name prefix is required.
fn check_label(label: &str, interface: &str) -> Result<(), LabelError> {
    if label.is_empty() || label.len() > MAX_IFNAME_LEN {
        let example = if interface.is_empty() {
            "eth0"
        } else {
            interface
        };
        return Err(LabelError::Length {
            len: label.len(),
            example: example.to_string(),
        });
    }
    if !label.chars().all(|c| c.is_ascii_graphic()) {
        return Err(LabelError::NotPrintable);
    }
    if !interface.is_empty() && !label.starts_with(interface) {
        return Err(LabelError::WrongPrefix {
            interface: interface.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_rules() {
        assert_eq!(
            parse_cidr("192.0.2.10/24"),
            Ok((Ipv4Addr::new(192, 0, 2, 10), 24))
        );
        assert_eq!(parse_cidr("192.0.2.0/31").map(|p| p.1), Ok(31));
        assert_eq!(parse_cidr("192.0.2.7/32").map(|p| p.1), Ok(32));
        for bad in [
            "192.0.2.10",
            "192.0.2.10/0",
            "192.0.2.10/33",
            "192.0.2.10/x",
            "192.0.2/24",
            "192.0.2.0/24",
            "192.0.2.255/24",
            "224.0.0.18/32",
            "127.0.0.1/8",
            "0.0.0.0/32",
            "255.255.255.255/32",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn log_filters() {
        assert!(check_log_filter("info").is_ok());
        assert!(check_log_filter("DEBUG").is_ok());
        assert!(check_log_filter("info,vrrpd::rx=debug").is_ok());
        assert!(check_log_filter("infoo").is_err());
        assert!(check_log_filter("").is_err());
        assert!(check_log_filter("vrrpd=loud").is_err());
    }

    #[test]
    fn labels_and_ifnames() {
        assert!(check_label("eth0:web", "eth0").is_ok());
        assert!(check_label("eth0", "eth0").is_ok());
        assert!(check_label("web", "eth0").is_err());
        assert!(check_label("eth0:abcdefghijk", "eth0").is_err());
        assert!(check_label("eth0: x", "eth0").is_err());
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("enp0s31f6.100").is_ok());
        for bad in ["", ".", "..", "eth0:1", "a/b", "a b", "abcdefghijklmnop"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }
}
