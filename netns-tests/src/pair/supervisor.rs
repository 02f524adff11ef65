//! [`Supervisor`]: runs a daemon in a namespace the way the shipped systemd units do.
//!
//! `deploy/systemd/{vrrpd,lbd}.service` say `Restart=always`, `RestartSec=100ms`; vrrpd's
//! unit adds `OnFailure=lbpair-release-vips.service` (`vrrpd release-vips --config F`)
//! for when it has failed for good. A supervisor thread mirrors that: it polls its child,
//! and when the child exits it either starts it again after [`RESTART_SEC`] or, once the
//! test has declared it [`Supervisor::fail_for_good`], runs the failure handler in the
//! node's namespace and stops.
//!
//! Ownership: a supervisor kills only its own child, by PID, and only while that child is
//! unreaped (so the PID can't have been reused). The child is the leader of its own
//! process group; `ip netns exec` execs the daemon, so the PID is the daemon's.
//! Dropping the supervisor stops the thread and kills the child; keep supervisors in a
//! struct field declared before the [`crate::Topology`], so they die before the namespaces.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd;

/// systemd's `RestartSec=100ms`.
pub const RESTART_SEC: Duration = Duration::from_millis(100);
/// How often the thread looks at its child: well under `RESTART_SEC`.
const POLL: Duration = Duration::from_millis(5);

/// What the supervisor does when its child exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `Restart=always`.
    Restart,
    /// The unit has failed for good: run the failure handler, don't restart.
    FailForGood,
    /// Stopped by the test (power-off, or teardown): no restart, no handler.
    Stopped,
}

struct State {
    mode: Mode,
    child: Option<Child>,
    /// Starts so far (1 after the first).
    starts: u32,
    exits: Vec<ExitStatus>,
    /// The failure handler ran, with its success.
    handler_ran: Option<bool>,
    quit: bool,
}

struct Spec {
    ns: String,
    label: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    on_failure: Option<(PathBuf, Vec<String>)>,
}

/// A supervised daemon. See the module docs.
pub struct Supervisor {
    spec: Arc<Spec>,
    state: Arc<Mutex<State>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts `program args...` in `ns` under supervision; output is appended to `log`.
    /// `on_failure` is the `OnFailure=` command, run in `ns` when it fails for good.
    pub fn start(
        ns: &str,
        label: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        on_failure: Option<(PathBuf, Vec<String>)>,
    ) -> Result<Self> {
        let spec = Arc::new(Spec {
            ns: ns.to_owned(),
            label: label.to_owned(),
            program: program.to_owned(),
            args: args.to_vec(),
            log: log.to_owned(),
            on_failure,
        });
        let child = spawn(&spec)?;
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Restart,
            child: Some(child),
            starts: 1,
            exits: Vec::new(),
            handler_ran: None,
            quit: false,
        }));
        let thread = {
            let spec = Arc::clone(&spec);
            let state = Arc::clone(&state);
            thread::Builder::new()
                .name(format!("supervise-{label}"))
                .spawn(move || watch(&spec, &state))
                .context("spawning the supervisor thread")?
        };
        Ok(Self {
            spec,
            state,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn label(&self) -> &str {
        &self.spec.label
    }

    /// The file its output goes to (every start's, appended).
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// The running child's PID, if one runs (unreaped).
    pub fn pid(&self) -> Option<i32> {
        let mut st = self.lock();
        live_pid(&mut st)
    }

    /// How many times the daemon has been started.
    pub fn starts(&self) -> u32 {
        self.lock().starts
    }

    /// The exit statuses seen so far.
    pub fn exits(&self) -> Vec<ExitStatus> {
        self.lock().exits.clone()
    }

    /// Whether the failure handler has run (and succeeded).
    pub fn handler_ran(&self) -> Option<bool> {
        self.lock().handler_ran
    }

    /// Sends `sig` to the running child; fails if none runs.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let mut st = self.lock();
        let pid = live_pid(&mut st).ok_or_else(|| anyhow!("{} is not running", self.spec.label))?;
        kill(Pid::from_raw(pid), sig).with_context(|| format!("kill -{sig} {}", self.spec.label))
    }

    /// From now on an exit is final and runs the failure handler (the unit hit its start
    /// limit); then SIGKILLs the child.
    pub fn fail_for_good(&self) -> Result<()> {
        self.lock().mode = Mode::FailForGood;
        self.signal(Signal::SIGKILL)
    }

    /// Like `systemctl stop`: no restart, no handler, and `sig` (SIGTERM) to the child.
    pub fn stop_with(&self, sig: Signal) -> Result<()> {
        self.lock().mode = Mode::Stopped;
        self.signal(sig)
    }

    /// Stops supervising and SIGKILLs the child (no restart, no handler): power-off. Returns
    /// once the child is gone (reaped, bounded by 5 s): its sockets close while it exits, so a
    /// peer can see it gone before it is, and a `power_on` right then must not find it alive.
    pub fn power_off(&self) {
        let mut st = self.lock();
        st.mode = Mode::Stopped;
        if let Some(pid) = live_pid(&mut st) {
            kill_group(pid);
            let deadline = Instant::now() + Duration::from_secs(5);
            while live_pid(&mut st).is_some() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Starts the daemon again after [`Self::power_off`] or a final failure (the node
    /// comes back), and resumes `Restart=always`.
    pub fn power_on(&self) -> Result<()> {
        let mut st = self.lock();
        if live_pid(&mut st).is_some() {
            bail!("{} is still running", self.spec.label);
        }
        st.child = Some(spawn(&self.spec)?);
        st.starts += 1;
        st.mode = Mode::Restart;
        st.handler_ran = None;
        Ok(())
    }

    /// Waits (`timeout` × patience) until the daemon has been started `n` times and runs.
    pub fn await_starts(&self, n: u32, timeout: Duration) -> Result<Duration> {
        crate::wait::eventually(timeout, POLL, || {
            let mut st = self.lock();
            Ok(st.starts >= n && live_pid(&mut st).is_some())
        })
        .with_context(|| format!("{} should have started {n} times", self.spec.label))
    }

    /// Waits (`timeout` × patience) until the failure handler has run; its success.
    pub fn await_handler(&self, timeout: Duration) -> Result<bool> {
        let mut ran = None;
        crate::wait::eventually(timeout, POLL, || {
            ran = self.lock().handler_ran;
            Ok(ran.is_some())
        })
        .with_context(|| format!("the failure handler of {} should run", self.spec.label))?;
        ran.ok_or_else(|| anyhow!("no handler result"))
    }
}

/// The child's PID while it is unreaped; reaps (and records) it if it has exited.
/// SIGKILLs the child's whole process group (it leads its own, and is unreaped, so the
/// group can't be anyone else's): a daemon that forks workers (keepalived's VRRP child)
/// must lose them too on a power-off. For vrrpd and lbd the group is the daemon alone.
fn kill_group(pid: i32) {
    let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
}

fn live_pid(st: &mut State) -> Option<i32> {
    let child = st.child.as_mut()?;
    match child.try_wait() {
        Ok(None) => i32::try_from(child.id()).ok(),
        Ok(Some(status)) => {
            st.exits.push(status);
            st.child = None;
            None
        }
        Err(_) => None,
    }
}

fn spawn(spec: &Spec) -> Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("opening {}", spec.log.display()))?;
    let err = out.try_clone()?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &spec.ns])
        .arg(&spec.program)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    command
        .spawn()
        .with_context(|| format!("spawning `{}`", cmd::describe(&command)))
}

fn log_line(spec: &Spec, line: &str) {
    if let Ok(mut f) = OpenOptions::new().append(true).open(&spec.log) {
        use std::io::Write;
        let _ = writeln!(f, "----- supervisor: {line}");
    }
}

/// The supervisor thread: restart on exit, or run the handler, until told to quit.
fn watch(spec: &Spec, state: &Mutex<State>) {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let mut restart_at: Option<Instant> = None;
    loop {
        thread::sleep(POLL);
        let mut st = lock();
        if st.quit {
            return;
        }
        let had_child = st.child.is_some();
        let running = live_pid(&mut st).is_some();
        if running {
            restart_at = None;
            continue;
        }
        if had_child {
            let status = st.exits.last().copied();
            log_line(
                spec,
                &format!("{} exited: {status:?} (mode {:?})", spec.label, st.mode),
            );
            match st.mode {
                Mode::Restart => restart_at = Some(Instant::now() + RESTART_SEC),
                Mode::FailForGood => {
                    // Like OnFailure=: the handler runs once, in the node's namespace.
                    let ok = run_handler(spec);
                    st.handler_ran = Some(ok);
                }
                Mode::Stopped => {}
            }
        }
        if st.mode == Mode::Restart {
            if let Some(at) = restart_at {
                if Instant::now() >= at {
                    restart_at = None;
                    match spawn(spec) {
                        Ok(c) => {
                            st.child = Some(c);
                            st.starts += 1;
                            log_line(spec, &format!("restarted (start {})", st.starts));
                        }
                        Err(e) => {
                            log_line(spec, &format!("restart failed: {e:#}"));
                            restart_at = Some(Instant::now() + RESTART_SEC);
                        }
                    }
                }
            }
        } else {
            restart_at = None;
        }
    }
}

fn run_handler(spec: &Spec) -> bool {
    let Some((program, args)) = &spec.on_failure else {
        return true;
    };
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &spec.ns])
        .arg(program)
        .args(args);
    match cmd::output(&mut command) {
        Ok(out) => {
            log_line(
                spec,
                &format!(
                    "failure handler `{}`: {} {}{}",
                    cmd::describe(&command),
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            out.status.success()
        }
        Err(e) => {
            log_line(spec, &format!("failure handler: {e:#}"));
            false
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        {
            let mut st = self.lock();
            st.quit = true;
            st.mode = Mode::Stopped;
            if let Some(pid) = live_pid(&mut st) {
                kill_group(pid);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Reap, bounded: a SIGKILLed process can take a moment to be reaped.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let running = live_pid(&mut self.lock()).is_some();
            if !running || Instant::now() >= deadline {
                break;
            }
            thread::sleep(POLL);
        }
    }
}
