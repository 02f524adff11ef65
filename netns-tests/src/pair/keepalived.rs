//! keepalived + HAProxy in the pair topology, in place of vrrpd + lbd, so the report's
//! keepalived column is measured by the suite on the same topology, load client and fault
//! as the lbpair row beside it (`tests/it/pair_keepalived.rs`), rather than copied from notes.
//!
//! Each LB node runs keepalived's VRRP subsystem (VRRPv3, the suite's priorities and advert
//! interval, multicast, preempt, HAProxy tracked by a one-second `track_script`) and HAProxy (listening on
//! `*:80`, so whichever node holds the VIP serves it, with the same three backends, round
//! robin, health-checked every 300 ms). HAProxy names the node in the same response header
//! lbd uses, so the load client tells the nodes apart the same way. Both run under a
//! [`Supervisor`], as vrrpd and lbd do.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::time::Duration;

use anyhow::{Context, Result};

use super::supervisor::Supervisor;
use super::{role, NodeDaemons, PairConfig, BACKEND_PORT, INSTANCES, VIP_PORT};
use crate::cmd;
use crate::lan::{Lan, NodeId};
use crate::topology::write_file;
use crate::vrrp::VrrpInstance;
use crate::wait;

/// keepalived's config for node `id`: the instance tracks HAProxy with `check` (see
/// [`write_check`]) the usual way, a script every second; failing once puts it in FAULT.
fn keepalived_conf(lan: &Lan, cfg: &PairConfig, id: NodeId, check: &Path) -> String {
    let (name, vrid) = INSTANCES[0];
    let prio = if id == NodeId::A {
        cfg.prio_high
    } else {
        cfg.prio_low
    };
    let inst = VrrpInstance::new(name, vrid, prio, cfg.advert_cs, &[lan.vip(0)]);
    let block = inst.keepalived_conf();
    // The instance block ends with its closing brace: the tracking goes inside it.
    let body = block.strip_suffix("}\n").unwrap_or(&block);
    format!(
        "global_defs {{\n    router_id pair-{}\n    vrrp_version 3\n    \
         vrrp_garp_master_delay 0\n}}\n\nvrrp_script chk_proxy {{\n    script \"{}\"\n    \
         interval 1\n    fall 1\n    rise 1\n}}\n\n{body}    track_script {{\n        \
         chk_proxy\n    }}\n}}\n",
        role(id),
        check.display()
    )
}

/// A script that succeeds while HAProxy accepts connections on the node (keepalived runs
/// it in the node's namespace; `pidof` would see other namespaces' HAProxies, as the tests
/// share one PID namespace, and `haproxy -db` writes no PID file).
fn write_check(path: &Path) -> Result<()> {
    write_file(
        path,
        &format!("#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/{VIP_PORT}\n"),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// HAProxy's config for node `id`.
fn haproxy_conf(id: NodeId, backends: &[Ipv4Addr]) -> String {
    let mut t = format!(
        "global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 1s\n    \
         timeout client 60s\n    timeout server 30s\n\nfrontend vip\n    bind :{VIP_PORT}\n    \
         http-response set-header x-lbpair-node {}\n    default_backend app\n\n\
         backend app\n    balance roundrobin\n    option httpchk GET /\n",
        role(id)
    );
    for (n, b) in backends.iter().enumerate() {
        t.push_str(&format!(
            "    server be{} {b}:{BACKEND_PORT} check inter 300 rise 1 fall 3\n",
            n + 1
        ));
    }
    t
}

/// Starts keepalived (in the `vrrpd` slot) and HAProxy (in the `lbd` slot) on node `id`.
pub fn start_node(
    lan: &mut Lan,
    cfg: &PairConfig,
    id: NodeId,
    backends: &[Ipv4Addr],
) -> Result<NodeDaemons> {
    cmd::require("keepalived")?;
    cmd::require("haproxy")?;
    let r = role(id);
    let dir = lan.topo.dir().to_path_buf();
    let kconf = dir.join(format!("keepalived-{r}.conf"));
    let hconf = dir.join(format!("haproxy-{r}.cfg"));
    let check = dir.join(format!("chk-proxy-{r}.sh"));
    write_check(&check)?;
    write_file(&kconf, &keepalived_conf(lan, cfg, id, &check))?;
    write_file(&hconf, &haproxy_conf(id, backends))?;
    let ns = lan.node(id).ns.clone();
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let haproxy = Supervisor::start(
        &ns,
        &format!("haproxy-{r}"),
        Path::new("haproxy"),
        &["-db".into(), "-f".into(), path(&hconf)],
        &dir.join(format!("lbd-{r}.log")),
        None,
    )?;
    // HAProxy listening before keepalived starts: otherwise the first track_script run
    // fails, the instance starts in FAULT and leaves it a second later, and a fault
    // injected then would land on a pair that is still settling.
    let check_cmd = path(&check);
    wait::eventually(Duration::from_secs(5), Duration::from_millis(20), || {
        Ok(cmd::run_in(&ns, &check_cmd, &[]).is_ok())
    })
    .context("HAProxy should accept connections on the node")?;
    let keepalived = Supervisor::start(
        &ns,
        &format!("keepalived-{r}"),
        Path::new("keepalived"),
        &[
            "--dont-fork".into(),
            "--log-console".into(),
            "--no-syslog".into(),
            "--vrrp".into(),
            "--use-file".into(),
            path(&kconf),
            "--pid".into(),
            path(&dir.join(format!("keepalived-{r}.pid"))),
            "--vrrp_pid".into(),
            path(&dir.join(format!("keepalived-{r}-vrrp.pid"))),
        ],
        &dir.join(format!("vrrpd-{r}.log")),
        None,
    )?;
    Ok(NodeDaemons {
        vrrpd: keepalived,
        lbd: haproxy,
        vrrpd_config: kconf,
        socket: dir.join("no-control-socket"),
    })
}
