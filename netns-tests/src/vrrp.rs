//! Starting VRRP daemons on the [`Lan`]: vrrpd, and keepalived as the reference peer.
//!
//! Both are described by one [`VrrpInstance`], so an interop test can swap the daemon on a
//! node without restating the instance. The timer formulas here are an independent oracle
//! of RFC 5798 §6.1, written from the RFC rather than imported from vrrpd, so a wrong
//! formula in vrrpd can't make its own test agree with it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::cmd;
use crate::lan::{Lan, NodeId, LAN_IF};
use crate::topology::{write_file, ProcId};

/// One VRRP instance as both daemons are configured.
#[derive(Debug, Clone)]
pub struct VrrpInstance {
    pub name: String,
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub vips: Vec<Ipv4Addr>,
    /// vrrpd only: `auth_key_file` (keepalived has no equivalent).
    pub auth_key_file: Option<PathBuf>,
    /// More `key = value` lines for vrrpd's `[[instance]]` (e.g. `unicast_peers`).
    pub vrrpd_extra: String,
}

impl VrrpInstance {
    /// An instance with preemption on.
    pub fn new(
        name: &str,
        vrid: u8,
        priority: u8,
        advert_interval_cs: u16,
        vips: &[Ipv4Addr],
    ) -> Self {
        Self {
            name: name.to_owned(),
            vrid,
            priority,
            advert_interval_cs,
            preempt: true,
            vips: vips.to_vec(),
            auth_key_file: None,
            vrrpd_extra: String::new(),
        }
    }

    /// The same instance with preemption set to `preempt`.
    pub fn preempt(mut self, preempt: bool) -> Self {
        self.preempt = preempt;
        self
    }

    /// The same instance with authenticated adverts, signed with the key in `file`.
    pub fn with_auth_key(mut self, file: &std::path::Path) -> Self {
        self.auth_key_file = Some(file.to_path_buf());
        self
    }

    /// The same instance with another priority (the peer's side of a pair).
    pub fn with_priority(&self, priority: u8) -> Self {
        let mut other = self.clone();
        other.priority = priority;
        other
    }

    /// The same instance with more lines in vrrpd's `[[instance]]` table.
    pub fn with_vrrpd_lines(&self, lines: &str) -> Self {
        let mut other = self.clone();
        other.vrrpd_extra.push_str(lines);
        other.vrrpd_extra.push('\n');
        other
    }

    /// This instance as a vrrpd `[[instance]]` table.
    pub fn vrrpd_toml(&self) -> String {
        let vips: Vec<String> = self.vips.iter().map(|v| format!("\"{v}/24\"")).collect();
        let auth = self
            .auth_key_file
            .as_ref()
            .map(|f| format!("auth_key_file = \"{}\"\n", f.display()))
            .unwrap_or_default();
        format!(
            "[[instance]]\nname = \"{}\"\ninterface = \"{LAN_IF}\"\nvrid = {}\npriority = {}\n\
             advert_interval_cs = {}\npreempt = {}\nvips = [{}]\n{auth}{}",
            self.name,
            self.vrid,
            self.priority,
            self.advert_interval_cs,
            self.preempt,
            vips.join(", "),
            self.vrrpd_extra
        )
    }

    /// This instance as a keepalived `vrrp_instance` block (VRRPv3).
    pub fn keepalived_conf(&self) -> String {
        let vips: String = self
            .vips
            .iter()
            .map(|v| format!("        {v}/24 dev {LAN_IF}\n"))
            .collect();
        format!(
            "vrrp_instance {} {{\n    state BACKUP\n    interface {LAN_IF}\n    \
             virtual_router_id {}\n    priority {}\n    advert_int {}.{:02}\n{}    \
             virtual_ipaddress {{\n{}    }}\n}}\n",
            self.name,
            self.vrid,
            self.priority,
            self.advert_interval_cs / 100,
            self.advert_interval_cs % 100,
            if self.preempt { "" } else { "    nopreempt\n" },
            vips
        )
    }
}

/// Skew_Time = ((256 - priority) × interval) / 256, per RFC 5798 §6.1.
pub fn skew_time(priority: u8, advert_interval_cs: u16) -> Duration {
    let cs = (256 - u64::from(priority)) * u64::from(advert_interval_cs) / 256;
    Duration::from_millis(cs * 10)
}

/// Master_Down_Interval = 3 × interval + Skew_Time, per RFC 5798 §6.1.
pub fn master_down_interval(priority: u8, advert_interval_cs: u16) -> Duration {
    Duration::from_millis(u64::from(advert_interval_cs) * 30)
        + skew_time(priority, advert_interval_cs)
}

/// Where the vrrpd binary is: `$VRRPD_BIN`, else `$CARGO_TARGET_DIR/debug/vrrpd`, else the
/// workspace's `target/debug/vrrpd`. Fails with a hint when it isn't built.
pub fn vrrpd_bin() -> Result<PathBuf> {
    let path = if let Some(p) = std::env::var_os("VRRPD_BIN") {
        PathBuf::from(p)
    } else if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        PathBuf::from(dir).join("debug").join("vrrpd")
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("debug")
            .join("vrrpd")
    };
    if !path.is_file() {
        bail!(
            "vrrpd binary not found at {}: run `cargo build -p vrrpd` first (or set VRRPD_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// A running vrrpd.
#[derive(Debug, Clone)]
pub struct Vrrpd {
    pub proc: ProcId,
    pub node: NodeId,
    pub socket: PathBuf,
    pub config: PathBuf,
}

/// A running keepalived (VRRP subsystem only).
#[derive(Debug, Clone)]
pub struct Keepalived {
    pub proc: ProcId,
    pub node: NodeId,
}

impl Lan {
    /// Writes a config for `instances` and starts vrrpd in the node's namespace.
    pub fn start_vrrpd<'i>(
        &mut self,
        node: NodeId,
        instances: impl IntoIterator<Item = &'i VrrpInstance>,
    ) -> Result<Vrrpd> {
        let bin = vrrpd_bin()?;
        let label = format!("vrrpd-{node:?}").to_ascii_lowercase();
        let dir = self.topo.dir().to_path_buf();
        let socket = dir.join(format!("{label}.sock"));
        let config = dir.join(format!("{label}.toml"));
        // A socket file left by a previous (killed) run on this node must not be mistaken
        // for the new daemon's.
        let _ = std::fs::remove_file(&socket);
        let mut text = format!(
            "[global]\ncontrol_socket = \"{}\"\nlog_format = \"plain\"\nlog_level = \"{}\"\n\n",
            socket.display(),
            self.vrrpd_log_level
        );
        for inst in instances {
            text.push_str(&inst.vrrpd_toml());
            text.push('\n');
        }
        write_file(&config, &text)?;
        let ns = self.node(node).ns.clone();
        let config_arg = config.to_string_lossy().into_owned();
        let proc = self
            .topo
            .spawn(&ns, &label, &bin, &["run", "--config", &config_arg])?;
        Ok(Vrrpd {
            proc,
            node,
            socket,
            config,
        })
    }

    /// `vrrpd status --json --socket S`, parsed.
    pub fn vrrpd_status(&self, d: &Vrrpd) -> Result<Value> {
        let bin = vrrpd_bin()?;
        let mut command = Command::new(&bin);
        command
            .arg("status")
            .arg("--json")
            .arg("--socket")
            .arg(&d.socket);
        let out = cmd::output(&mut command)?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                cmd::describe(&command),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "vrrpd status output is not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// The status object of instance `name`.
    pub fn vrrpd_instance(&self, d: &Vrrpd, name: &str) -> Result<Value> {
        let status = self.vrrpd_status(d)?;
        status
            .get("instances")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
            })
            .cloned()
            .ok_or_else(|| anyhow!("no instance {name:?} in status: {status}"))
    }

    /// The state ("initialize", "backup", "master", "fault") of instance `name`.
    pub fn vrrpd_state(&self, d: &Vrrpd, name: &str) -> Result<String> {
        let inst = self.vrrpd_instance(d, name)?;
        inst.get("state")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| anyhow!("no state in {inst}"))
    }

    /// Waits (`timeout` × patience) until vrrpd reports `state` for instance `name`.
    pub fn await_state(
        &self,
        d: &Vrrpd,
        name: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let mut last = String::from("<no answer>");
        crate::wait::eventually(timeout, Duration::from_millis(20), || {
            last = self.vrrpd_state(d, name)?;
            Ok(last == state)
        })
        .map_err(|e| {
            anyhow!(
                "vrrpd on {:?}: {name} should be {state}, is {last}: {e:#}",
                d.node
            )
        })
    }

    /// Writes a keepalived config for `instances` and starts keepalived's VRRP subsystem
    /// in the node's namespace, in the foreground, in its own process group.
    pub fn start_keepalived<'i>(
        &mut self,
        node: NodeId,
        instances: impl IntoIterator<Item = &'i VrrpInstance>,
    ) -> Result<Keepalived> {
        cmd::require("keepalived")?;
        let label = format!("keepalived-{node:?}").to_ascii_lowercase();
        let dir = self.topo.dir().to_path_buf();
        let conf = dir.join(format!("{label}.conf"));
        let mut text = format!(
            "global_defs {{\n    router_id {label}\n    vrrp_version 3\n    \
             vrrp_garp_master_delay 0\n}}\n\n"
        );
        for inst in instances {
            text.push_str(&inst.keepalived_conf());
        }
        write_file(&conf, &text)?;
        let ns = self.node(node).ns.clone();
        let conf_arg = conf.to_string_lossy().into_owned();
        let pid = dir
            .join(format!("{label}.pid"))
            .to_string_lossy()
            .into_owned();
        let vrrp_pid = dir
            .join(format!("{label}-vrrp.pid"))
            .to_string_lossy()
            .into_owned();
        let proc = self.topo.spawn(
            &ns,
            &label,
            &PathBuf::from("keepalived"),
            &[
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--use-file",
                &conf_arg,
                "--pid",
                &pid,
                "--vrrp_pid",
                &vrrp_pid,
            ],
        )?;
        Ok(Keepalived { proc, node })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_oracle_matches_rfc_examples() {
        // Priority 100 at 1 s: skew = 156/256 s → 60 cs (floored); MDI = 3.6 s.
        assert_eq!(skew_time(100, 100), Duration::from_millis(600));
        assert_eq!(master_down_interval(100, 100), Duration::from_millis(3600));
        assert_eq!(master_down_interval(200, 10), Duration::from_millis(320));
    }

    #[test]
    fn configs_render() {
        let vip = Ipv4Addr::new(10, 77, 1, 100);
        let i = VrrpInstance::new("web", 51, 150, 10, &[vip]).preempt(false);
        let t = i.vrrpd_toml();
        assert!(
            t.contains("vrid = 51") && t.contains("preempt = false"),
            "{t}"
        );
        assert!(t.contains("vips = [\"10.77.1.100/24\"]"), "{t}");
        let k = i.keepalived_conf();
        assert!(
            k.contains("advert_int 0.10") && k.contains("nopreempt"),
            "{k}"
        );
    }
}
