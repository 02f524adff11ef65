//! Stage 2 for `[[listener]]`: names and addresses unique, no clash with the admin address, and
//! the `vrrp_instance` coupling (needs `[vrrp]`, forces `freebind`).

use super::*;
use std::net::SocketAddr;

use shared::config::Validator;

use super::validate::{parse_addr, required};

/// `[[listener]]`. `admin` is the validated `global.admin`, which no listener may take.
/// Only fully valid listeners are returned; the rest are reported.
pub(super) fn validate_listeners(
    v: &mut Validator<'_>,
    file: &FileConfig,
    admin: SocketAddr,
) -> Vec<ListenerConfig> {
    let mut listeners = Vec::new();
    if file.listener.is_empty() {
        v.error("listener", "at least one [[listener]] is required");
    }
    for (i, l) in file.listener.iter().enumerate() {
        let key = format!("listener[{i}]");
        let name = required(v, &format!("{key}.name"), &l.name);
        let addr = required(v, &format!("{key}.address"), &l.address)
            .and_then(|a| parse_addr(v, &format!("{key}.address"), a));
        if let Some(name) = name {
            if file.listener[..i]
                .iter()
                .any(|o| o.name.as_deref() == Some(name))
            {
                v.error(
                    format!("{key}.name"),
                    format!("duplicate listener name {name:?}"),
                );
            }
        }
        if let Some(addr) = addr {
            if listeners.iter().any(|o: &ListenerConfig| o.address == addr) {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is already used by another listener"),
                );
            }
            if addr == admin {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is the admin address"),
                );
            }
        }
        let vrrp_instance = l.vrrp_instance.as_ref().map(|i| i.trim().to_string());
        if let Some(inst) = &vrrp_instance {
            if file.vrrp.is_none() {
                v.error(
                    format!("{key}.vrrp_instance"),
                    "needs a [vrrp] table (the coupling to vrrpd)",
                );
            } else if inst.is_empty() {
                v.error(format!("{key}.vrrp_instance"), "must not be empty");
            }
            if l.freebind == Some(false) {
                v.error(
                    format!("{key}.freebind"),
                    "must be true for a vrrp_instance listener: it is bound before vrrpd adds the VIP",
                );
            }
        }
        if let (Some(name), Some(address)) = (name, addr) {
            listeners.push(ListenerConfig {
                name: name.to_string(),
                address,
                // A VIP listener binds before the VIP is on the interface.
                freebind: l.freebind.unwrap_or(vrrp_instance.is_some()),
                vrrp_instance,
            });
        }
    }
    listeners
}
