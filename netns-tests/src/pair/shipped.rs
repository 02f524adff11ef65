//! The shipped node configs (`configs/node-a`, `configs/node-b`) in the pair topology.
//!
//! The main failover scenarios also run with what an operator installs, not only with the
//! suite's own configs (multicast, 800 ms heartbeat timeout, lbd niced).
//! The files are loaded as they are and only what the namespaces need is replaced:
//!
//! - vrrpd: the control socket path, the instance's interface, `unicast_peers` and
//!   `accept_from` (the peer's LAN address), and each VIP's address (its label stays);
//! - lbd: the vrrpd socket path, the VIP listener's address (the port stays), and each
//!   backend's address (the count stays, the suite's first backends are used); and the
//!   names lbd gives itself in responses (`node_name`, `via_name`), because the load client
//!   tells the nodes apart by them (`a`/`b`).
//!
//! Everything else (the advert interval unless a scenario sets its own, as the soak does;
//! priorities, preemption delay, `[lbd]` timeouts,
//! `fast_takeover`, `realtime`, `[control]`, lbd's pool, health checks and timeouts) is the
//! shipped value, and [`config`] reads the harness's [`PairConfig`] from the same files, so
//! the bounds follow whatever is shipped. lbd runs without `nice`, as the shipped unit does.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use toml_edit::{value, Array, DocumentMut, Item};

use super::{role, PairConfig, VIP_PORT};
use crate::lan::{Lan, NodeId, LAN_IF};

/// `configs/node-<a|b>/<file>` in the workspace.
fn path(id: NodeId, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("configs")
        .join(format!("node-{}", role(id)))
        .join(file)
}

fn load(id: NodeId, file: &str) -> Result<DocumentMut> {
    let p = path(id, file);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.parse::<DocumentMut>()
        .with_context(|| format!("parsing {}", p.display()))
}

fn int(doc: &DocumentMut, keys: &[&str], file: &Path) -> Result<i64> {
    get(doc.as_item(), keys)
        .and_then(Item::as_integer)
        .ok_or_else(|| anyhow!("{}: no integer {}", file.display(), keys.join(".")))
}

fn get<'d>(mut item: &'d Item, keys: &[&str]) -> Option<&'d Item> {
    for k in keys {
        item = item.get(k)?;
    }
    Some(item)
}

/// The first `[[instance]]` table of a vrrpd config.
fn instance(doc: &DocumentMut) -> Option<&toml_edit::Table> {
    doc.get("instance")?.as_array_of_tables()?.get(0)
}

fn instance_mut(doc: &mut DocumentMut) -> Result<&mut toml_edit::Table> {
    doc.get_mut("instance")
        .and_then(Item::as_array_of_tables_mut)
        .and_then(|a| a.get_mut(0))
        .ok_or_else(|| anyhow!("the shipped vrrpd config has no [[instance]]"))
}

fn instance_int(doc: &DocumentMut, key: &str, id: NodeId) -> Result<i64> {
    instance(doc)
        .and_then(|t| t.get(key))
        .and_then(Item::as_integer)
        .ok_or_else(|| {
            anyhow!(
                "{}: no integer instance.{key}",
                path(id, "vrrpd.toml").display()
            )
        })
}

/// The harness's view of the shipped pair: A is node-a, B node-b, one instance.
pub fn config() -> Result<PairConfig> {
    let a = load(NodeId::A, "vrrpd.toml")?;
    let b = load(NodeId::B, "vrrpd.toml")?;
    let file = path(NodeId::A, "vrrpd.toml");
    if a.get("instance")
        .and_then(Item::as_array_of_tables)
        .map_or(0, |t| t.len())
        != 1
    {
        bail!("{}: the pair harness runs one instance", file.display());
    }
    let inst = instance(&a).ok_or_else(|| anyhow!("{}: no [[instance]]", file.display()))?;
    let name = inst
        .get("name")
        .and_then(Item::as_str)
        .ok_or_else(|| anyhow!("{}: no instance.name", file.display()))?;
    let coupled = inst.get("track_lbd").and_then(Item::as_str).is_some();
    let fast_takeover = inst
        .get("fast_takeover")
        .and_then(Item::as_bool)
        .unwrap_or(false);
    let preempt = inst.get("preempt").and_then(Item::as_bool).unwrap_or(true);
    if !coupled || !preempt {
        bail!(
            "{}: the pair harness expects track_lbd and preempt",
            file.display()
        );
    }
    let cs = instance_int(&a, "advert_interval_cs", NodeId::A)?;
    let prio = |doc: &DocumentMut, id| -> Result<u8> {
        u8::try_from(instance_int(doc, "priority", id)?).context("priority")
    };
    let (prio_high, prio_low) = (prio(&a, NodeId::A)?, prio(&b, NodeId::B)?);
    if prio_high <= prio_low {
        bail!("node-a should outrank node-b ({prio_high} vs {prio_low})");
    }
    let ms = |v: i64| u64::try_from(v).context("a negative duration");
    Ok(PairConfig {
        advert_cs: u16::try_from(cs).context("advert_interval_cs")?,
        coupled,
        fast_takeover,
        active_active: false,
        prio_high,
        prio_low,
        preempt_delay_ms: ms(instance_int(&a, "preempt_delay_ms", NodeId::A).unwrap_or(0))?,
        heartbeat_timeout_ms: ms(int(&a, &["lbd", "heartbeat_timeout_ms"], &file)?)?,
        softstate: None,
        startup_grace_ms: ms(int(&a, &["lbd", "startup_grace_ms"], &file)?)?,
        instance: name.to_owned(),
        nice_lbd: false,
        shipped: true,
        keepalived: false,
        handoff_ms: None,
    })
}

fn set(doc: &mut DocumentMut, table: &str, key: &str, v: &str) -> Result<()> {
    let t = doc
        .get_mut(table)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| anyhow!("the shipped config has no [{table}]"))?;
    t.insert(key, value(v));
    Ok(())
}

fn addr_array(addrs: &[Ipv4Addr]) -> Item {
    let mut a = Array::new();
    for addr in addrs {
        a.push(addr.to_string());
    }
    value(a)
}

/// `configs/node-<id>/vrrpd.toml` with the namespaces' socket, interface and addresses, and
/// `advert_cs` as the advert interval (the shipped one unless a scenario changed
/// [`PairConfig::advert_cs`], as the soak does).
pub fn vrrpd_toml(lan: &Lan, id: NodeId, socket: &Path, advert_cs: u16) -> Result<String> {
    let mut doc = load(id, "vrrpd.toml")?;
    set(
        &mut doc,
        "global",
        "control_socket",
        &socket.to_string_lossy(),
    )?;
    let peer = match id {
        NodeId::A => lan.node(NodeId::B).addr,
        _ => lan.node(NodeId::A).addr,
    };
    let vip = lan.vip(0);
    let inst = instance_mut(&mut doc)?;
    inst.insert("interface", value(LAN_IF));
    inst.insert("advert_interval_cs", value(i64::from(advert_cs)));
    for key in ["unicast_peers", "accept_from"] {
        if inst.contains_key(key) {
            inst.insert(key, addr_array(&[peer]));
        }
    }
    let vips = inst
        .get_mut("vips")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| anyhow!("the shipped instance has no vips array"))?;
    if vips.len() != 1 {
        bail!(
            "the pair harness runs one VIP, the shipped config has {}",
            vips.len()
        );
    }
    let cidr = format!("{vip}/24");
    match vips.get_mut(0) {
        Some(toml_edit::Value::InlineTable(t)) => {
            t.insert("address", cidr.into());
        }
        Some(v) => *v = cidr.into(),
        None => {}
    }
    Ok(doc.to_string())
}

/// `configs/node-<id>/lbd.toml` with the namespaces' socket and addresses, and the node
/// names the load client knows.
pub fn lbd_toml(lan: &Lan, id: NodeId, socket: &Path, backends: &[Ipv4Addr]) -> Result<String> {
    let mut doc = load(id, "lbd.toml")?;
    set(&mut doc, "vrrp", "socket", &socket.to_string_lossy())?;
    set(&mut doc, "global", "node_name", role(id))?;
    set(&mut doc, "headers", "via_name", role(id))?;
    let vip = lan.vip(0);
    let listeners = doc
        .get_mut("listener")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| anyhow!("the shipped lbd config has no [[listener]]"))?;
    if listeners.len() != 1 {
        bail!("the pair harness runs one VIP listener");
    }
    for l in listeners.iter_mut() {
        let old = l.get("address").and_then(Item::as_str).unwrap_or_default();
        if !old.ends_with(&format!(":{VIP_PORT}")) {
            bail!("the shipped listener {old} is not on port {VIP_PORT}");
        }
        l.insert("address", value(format!("{vip}:{VIP_PORT}")));
    }
    let pools = doc
        .get_mut("pool")
        .and_then(Item::as_array_of_tables_mut)
        .ok_or_else(|| anyhow!("the shipped lbd config has no [[pool]]"))?;
    let mut next = backends.iter();
    for pool in pools.iter_mut() {
        let Some(list) = pool
            .get_mut("backend")
            .and_then(Item::as_array_of_tables_mut)
        else {
            continue;
        };
        for b in list.iter_mut() {
            let old = b.get("address").and_then(Item::as_str).unwrap_or_default();
            let port = old
                .rsplit_once(':')
                .map(|(_, p)| p.to_owned())
                .ok_or_else(|| anyhow!("backend address {old} has no port"))?;
            let addr = next
                .next()
                .ok_or_else(|| anyhow!("the shipped config has more backends than the suite"))?;
            b.insert("address", value(format!("{addr}:{port}")));
        }
    }
    Ok(doc.to_string())
}
