//! [`Topology`]: namespaces, bridges, veths and daemons, all torn down on drop.
//!
//! Ownership rule: a `Topology` deletes only what it created and kills only the processes
//! it spawned, by PID (each daemon is started as the leader of its own process group, so
//! a daemon that forks, like keepalived, is killed as a group it alone lives in).
//! Namespace names carry the test process's PID (`nnt<pid>x<n>-<role>`), which is what
//! lets a later run recognise and remove namespaces left behind by a run that was itself
//! killed (`kill -9` of `cargo test` skips every `Drop`).
//!
//! Interface names live inside the test's own namespaces, so they can be short and fixed
//! (`br0`, `eth0`, `va`) without clashing with anything on the host, and nothing is ever
//! created in the root namespace.
//!
//! Topologies are serialised within a test binary by a global lock: the timing assertions
//! assume the two cores aren't shared with another failover test.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::cmd;

/// Prefix of every namespace this crate creates.
pub const NS_PREFIX: &str = "nnt";

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A process spawned inside a namespace, by index into its [`Topology`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId(usize);

struct Proc {
    label: String,
    ns: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

/// The namespaces and processes of one test. See the module docs.
pub struct Topology {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    dump_logs: bool,
    keep_dir: bool,
    // Declared last so it is released after `Drop::drop` has cleaned up.
    _serial: MutexGuard<'static, ()>,
}

impl Topology {
    /// Starts an empty topology. Fails loudly (never skips) when not root or `ip` is missing.
    pub fn new(tag: &str) -> Result<Self> {
        require_root()?;
        cmd::require("ip")?;
        let serial = SERIAL
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        remove_stale_namespaces();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{NS_PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("{prefix}-{tag}"));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // vrrpd's control socket lives here, and vrrpd refuses a directory others can enter.
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .with_context(|| format!("chmod 0750 {}", dir.display()))?;
        Ok(Self {
            prefix,
            dir,
            namespaces: Vec::new(),
            procs: Vec::new(),
            dump_logs: true,
            keep_dir: false,
            _serial: serial,
        })
    }

    /// The unique prefix of this topology's namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A directory for configs and logs, removed on drop unless [`Self::keep_dir`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether to print every daemon's log on drop (default true; cargo test shows it only
    /// for failing tests, since it's captured like any test output).
    pub fn set_dump_logs(&mut self, on: bool) {
        self.dump_logs = on;
    }

    /// Keep the config/log directory after drop.
    pub fn keep_dir(&mut self, keep: bool) {
        self.keep_dir = keep;
    }

    /// Creates namespace `<prefix>-<role>` with `lo` up; returns its name.
    pub fn add_namespace(&mut self, role: &str) -> Result<String> {
        let name = format!("{}-{role}", self.prefix);
        cmd::ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        cmd::ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// Creates an STP-less bridge in `ns`, up, forwarding at once.
    pub fn add_bridge(&mut self, ns: &str, bridge: &str) -> Result<()> {
        cmd::ip(&[
            "-n",
            ns,
            "link",
            "add",
            bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        cmd::ip(&["-n", ns, "link", "set", bridge, "up"])?;
        Ok(())
    }

    /// Plugs namespace `ns` into `bridge` (in `bridge_ns`): a veth whose bridge end is
    /// `port` and whose other end is `ifname` in `ns` with MAC `mac`, both up.
    pub fn add_veth(
        &mut self,
        bridge_ns: &str,
        bridge: &str,
        port: &str,
        ns: &str,
        ifname: &str,
        mac: &str,
    ) -> Result<()> {
        cmd::ip(&[
            "-n", bridge_ns, "link", "add", port, "type", "veth", "peer", "name", ifname,
            "address", mac, "netns", ns,
        ])?;
        cmd::ip(&["-n", bridge_ns, "link", "set", port, "master", bridge, "up"])?;
        cmd::ip(&["-n", ns, "link", "set", ifname, "up"])?;
        Ok(())
    }

    /// Spawns `ip netns exec NS program args...` as its own process group, stdout and
    /// stderr to `<dir>/<label>.log` (`<label>-2.log`, ... on restarts).
    pub fn spawn(
        &mut self,
        ns: &str,
        label: &str,
        program: &Path,
        args: &[&str],
    ) -> Result<ProcId> {
        let runs = self.procs.iter().filter(|p| p.label == label).count();
        let log = if runs == 0 {
            self.dir.join(format!("{label}.log"))
        } else {
            self.dir.join(format!("{label}-{}.log", runs + 1))
        };
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("spawning `{}`", cmd::describe(&command)))?;
        self.procs.push(Proc {
            label: label.to_owned(),
            ns: ns.to_owned(),
            child,
            log,
            status: None,
        });
        Ok(ProcId(self.procs.len() - 1))
    }

    fn proc(&self, id: ProcId) -> Result<&Proc> {
        self.procs
            .get(id.0)
            .ok_or_else(|| anyhow!("no process {id:?}"))
    }

    fn proc_mut(&mut self, id: ProcId) -> Result<&mut Proc> {
        self.procs
            .get_mut(id.0)
            .ok_or_else(|| anyhow!("no process {id:?}"))
    }

    /// The PID (`ip netns exec` execs the program, so it's the program's own PID).
    pub fn pid(&self, id: ProcId) -> Result<i32> {
        let raw = self.proc(id)?.child.id();
        i32::try_from(raw).map_err(|_| anyhow!("pid {raw} out of range"))
    }

    /// Sends `sig` to the process.
    pub fn signal(&mut self, id: ProcId, sig: Signal) -> Result<()> {
        if self.poll_exit(id)?.is_some() {
            bail!("{} already exited", self.proc(id)?.label);
        }
        kill(Pid::from_raw(self.pid(id)?), sig).with_context(|| format!("kill -{sig}"))?;
        Ok(())
    }

    /// Sends `sig` to the process's whole group (the daemon and anything it forked).
    pub fn signal_group(&mut self, id: ProcId, sig: Signal) -> Result<()> {
        // Checked first for the same reason as in `kill_all`: a reaped PID isn't ours.
        if self.poll_exit(id)?.is_some() {
            bail!("{} already exited", self.proc(id)?.label);
        }
        killpg(Pid::from_raw(self.pid(id)?), sig).with_context(|| format!("killpg -{sig}"))?;
        Ok(())
    }

    /// The exit status if the process has exited (reaping it).
    pub fn poll_exit(&mut self, id: ProcId) -> Result<Option<ExitStatus>> {
        let p = self.proc_mut(id)?;
        if p.status.is_none() {
            p.status = p.child.try_wait()?;
        }
        Ok(p.status)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self, id: ProcId) -> Result<bool> {
        Ok(self.poll_exit(id)?.is_none())
    }

    /// Waits (bounded by `timeout` × patience) for the process to exit.
    pub fn wait_exit(&mut self, id: ProcId, timeout: Duration) -> Result<ExitStatus> {
        let mut status = None;
        crate::wait::eventually(timeout, Duration::from_millis(10), || {
            status = self.poll_exit(id)?;
            Ok(status.is_some())
        })
        .with_context(|| format!("waiting for {} to exit", self.procs[id.0].label))?;
        status.ok_or_else(|| anyhow!("no exit status"))
    }

    /// The process's log so far.
    pub fn log(&self, id: ProcId) -> Result<String> {
        let p = self.proc(id)?;
        fs::read(&p.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .with_context(|| format!("reading {}", p.log.display()))
    }

    /// Prints every process's log to stderr.
    pub fn dump_logs(&self) {
        for p in &self.procs {
            let text = fs::read(&p.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<cannot read {}: {e}>", p.log.display()));
            eprintln!(
                "===== {} in {} (pid {}, {}) =====\n{}",
                p.label,
                p.ns,
                p.child.id(),
                match p.status {
                    Some(s) => format!("exited: {s}"),
                    None => "running at teardown".to_owned(),
                },
                tail(&text, 200)
            );
        }
    }

    fn kill_all(&mut self) {
        for p in &mut self.procs {
            // Only while the leader is unreaped (running or a zombie) is its PID, and so
            // its process-group ID, guaranteed to still be ours: a reaped one may have been
            // reused by an unrelated process.
            if p.status.is_some() {
                continue;
            }
            if let Ok(pid) = i32::try_from(p.child.id()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        // Reap, bounded: a SIGKILLed process can take a moment to be reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.procs {
            while p.status.is_none() && Instant::now() < deadline {
                match p.child.try_wait() {
                    Ok(Some(s)) => p.status = Some(s),
                    Ok(None) => thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.kill_all();
        if self.dump_logs || thread::panicking() {
            self.dump_logs();
        }
        for ns in self.namespaces.iter().rev() {
            delete_namespace(ns);
        }
        if !self.keep_dir && !thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("netns-tests: logs kept in {}", self.dir.display());
        }
    }
}

fn delete_namespace(ns: &str) {
    // Any process still inside would keep the namespace (and its veths) alive; by now
    // only ours could be there, and they're dead, so this is the whole cleanup.
    if let Err(e) = cmd::ip(&["netns", "del", ns]) {
        eprintln!("netns-tests: cannot delete namespace {ns}: {e:#}");
    }
}

/// Deletes namespaces left by a test process that no longer exists (it was killed before
/// its `Drop` ran), killing what still runs in them: only this harness creates `nnt<pid>x`
/// namespaces, so whatever is inside was started by a previous run of it.
fn remove_stale_namespaces() {
    let Ok(list) = cmd::ip(&["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(owner) = stale_owner(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        if let Ok(pids) = cmd::ip(&["netns", "pids", name]) {
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        eprintln!("netns-tests: removing stale namespace {name} (owner pid {owner} is gone)");
        delete_namespace(name);
    }
    // Their log directories too (same naming, under the temp dir).
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(owner) = stale_owner(&name) {
            if !Path::new(&format!("/proc/{owner}")).exists() && entry.path().is_dir() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The PID in `nnt<pid>x<n>-<role>`, if `name` is one of ours.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NS_PREFIX)?;
    let (pid, after) = rest.split_once('x')?;
    if !after.contains('-') {
        return None;
    }
    pid.parse().ok()
}

fn require_root() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or_else(|| anyhow!("no Uid line in /proc/self/status"))?;
    if euid != "0" {
        bail!(
            "netns tests need root (CAP_NET_ADMIN to create namespaces); effective uid is \
             {euid}. They fail rather than skip: run them as root, as CI does"
        );
    }
    Ok(())
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("... ({skip} earlier lines)\n"));
    }
    for l in &all[skip..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_recognised() {
        assert_eq!(stale_owner("nnt1234x0-a"), Some(1234));
        assert_eq!(stale_owner("nnt1234x0"), None);
        assert_eq!(stale_owner("nntfoo-a"), None);
        assert_eq!(stale_owner("other-a"), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("a\nb\nc", 2), "... (1 earlier lines)\nb\nc\n");
        assert_eq!(tail("a", 5), "a\n");
    }
}
