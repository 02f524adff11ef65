//! Notify hooks: an optional command run on every state change, like keepalived's `notify`.
//!
//! The command gets keepalived's arguments after any configured prefix:
//! `command [prefix..] INSTANCE <name> <STATE> <priority>`, with the state upper-case
//! (`MASTER`, `BACKUP`, `FAULT`, `STOP`; see [`state_name`]).
//!
//! Hooks must never slow the state machine down, and must not run out of order (a script
//! that sees `BACKUP` after `MASTER` for a node that is now master would do the wrong thing).
//! So [`Notifier::notify`] only queues the hook and returns; one tokio task per instance runs
//! that instance's queue in order, one hook at a time. The queue is bounded: when a hook is
//! stuck and states keep changing, the oldest *pending* hook is dropped (and logged), since
//! the newest state is the one that matters. A hook that outlives its timeout is killed with
//! its whole process group (we put it in a group of its own, so a script's children go too),
//! and the next hook runs. Output goes to /dev/null: a hook logs itself if it wants to.
//!
//! Layout: [`NotifyConfig`] (runtime config), [`Notifier`] (cheap to clone, shared by the
//! instances), [`state_name`], and the private per-instance queue and worker.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::fsm::StateKind;

/// Default hook timeout (keepalived has none by default; a stuck hook must not queue forever).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of hooks that may wait per instance while one runs.
pub const DEFAULT_QUEUE_CAPACITY: usize = 16;

/// The hook to run, as the config layer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The program (an absolute path; it is not looked up in `PATH` by us).
    pub command: PathBuf,
    /// Arguments placed before keepalived's four.
    pub args_prefix: Vec<String>,
    /// The hook is killed when it runs longer than this.
    pub timeout: Duration,
}

/// The keepalived name of a state, as passed in `$3`: `Initialize` is `STOP` (an instance
/// enters Initialize only when it stops, or for an instant on its way out of Fault).
pub fn state_name(state: StateKind) -> &'static str {
    match state {
        StateKind::Master => "MASTER",
        StateKind::Backup => "BACKUP",
        StateKind::Fault => "FAULT",
        StateKind::Initialize => "STOP",
    }
}

/// One queued run.
#[derive(Debug, Clone)]
struct Job {
    instance: String,
    state: String,
    priority: u8,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Job>,
    /// A worker task is running this queue (it exits when it finds the queue empty).
    running: bool,
}

#[derive(Debug)]
struct Inner {
    cfg: NotifyConfig,
    capacity: usize,
    queues: Mutex<HashMap<String, Queue>>,
    /// Hooks queued or running, over all instances: `wait_idle` waits for 0.
    outstanding: watch::Sender<usize>,
}

impl Inner {
    fn queues(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding this lock cannot leave the map half-updated in a way that
        // matters more than losing hooks would; keep going.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self, n: usize) {
        self.outstanding
            .send_modify(|count| *count = count.saturating_sub(n));
    }
}

/// Runs the notify hook for state changes, in order per instance, without ever blocking the
/// caller. Clones share the queues.
#[derive(Debug, Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    pub fn new(cfg: NotifyConfig) -> Notifier {
        Notifier::with_capacity(cfg, DEFAULT_QUEUE_CAPACITY)
    }

    /// Like [`Notifier::new`] with `capacity` pending hooks per instance (at least 1).
    pub fn with_capacity(cfg: NotifyConfig, capacity: usize) -> Notifier {
        Notifier {
            inner: Arc::new(Inner {
                cfg,
                capacity: capacity.max(1),
                queues: Mutex::new(HashMap::new()),
                outstanding: watch::Sender::new(0),
            }),
        }
    }

    pub fn config(&self) -> &NotifyConfig {
        &self.inner.cfg
    }

    /// Queues the hook `command [prefix..] INSTANCE instance state priority` and returns at
    /// once. Must be called inside a tokio runtime; outside one the hook is dropped (and
    /// logged), never a panic.
    pub fn notify(&self, instance: &str, state: &str, priority: u8) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            warn!(
                instance,
                state, "notify hook dropped: called outside the tokio runtime"
            );
            return;
        };
        let job = Job {
            instance: instance.to_string(),
            state: state.to_string(),
            priority,
        };
        let mut dropped = 0;
        let spawn = {
            let mut queues = self.inner.queues();
            let queue = queues.entry(instance.to_string()).or_default();
            while queue.pending.len() >= self.inner.capacity {
                if let Some(old) = queue.pending.pop_front() {
                    dropped += 1;
                    warn!(
                        instance,
                        dropped_state = %old.state,
                        dropped_priority = old.priority,
                        "notify queue full: dropped the oldest pending hook"
                    );
                }
            }
            queue.pending.push_back(job);
            self.inner.outstanding.send_modify(|count| *count += 1);
            !std::mem::replace(&mut queue.running, true)
        };
        self.inner.finished(dropped);
        if spawn {
            runtime.spawn(worker(self.inner.clone(), instance.to_string()));
        }
    }

    /// Hooks queued or running, over all instances.
    pub fn outstanding(&self) -> usize {
        *self.inner.outstanding.borrow()
    }

    /// Waits until no hook is queued or running (for a clean shutdown after the last `STOP`
    /// hook; bound it with a timeout).
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.outstanding.subscribe();
        // `wait_for` only fails if the sender is gone, and `self` holds it.
        let _ = rx.wait_for(|&count| count == 0).await;
    }
}

/// Runs one instance's queue until it is empty, then marks it idle. Taking the next job and
/// clearing `running` happen under the same lock as `notify` pushing, so a job is never left
/// queued without a worker.
async fn worker(inner: Arc<Inner>, instance: String) {
    loop {
        let job = {
            let mut queues = inner.queues();
            let Some(queue) = queues.get_mut(&instance) else {
                return;
            };
            match queue.pending.pop_front() {
                Some(job) => job,
                None => {
                    queue.running = false;
                    return;
                }
            }
        };
        run(&inner.cfg, &job).await;
        inner.finished(1);
    }
}

/// Runs one hook to completion or to its timeout, and logs how it ended.
async fn run(cfg: &NotifyConfig, job: &Job) {
    let mut command = Command::new(&cfg.command);
    command
        .args(&cfg.args_prefix)
        .arg("INSTANCE")
        .arg(&job.instance)
        .arg(&job.state)
        .arg(job.priority.to_string())
        // A hook must not speak to systemd in vrrpd's name (READY, WATCHDOG).
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so a timeout kills the script's children too.
        .process_group(0)
        // If our task is dropped (runtime shutdown), the child does not outlive it unnoticed.
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            warn!(instance = %job.instance, state = %job.state, command = %cfg.command.display(),
                error = %e, "notify hook could not start");
            return;
        }
    };
    let pid = child.id();
    match tokio::time::timeout(cfg.timeout, child.wait()).await {
        Ok(Ok(status)) => log_exit(cfg, job, status),
        Ok(Err(e)) => {
            warn!(instance = %job.instance, state = %job.state, error = %e,
                "notify hook: waiting for it failed");
        }
        Err(_) => {
            warn!(instance = %job.instance, state = %job.state, pid,
                timeout_ms = cfg.timeout.as_millis() as u64, "notify hook timed out: killing it");
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // Our child leads its own group (process_group(0)), and it is not reaped yet,
                // so this group id cannot have been reused by anyone else.
                if let Err(e) = killpg(Pid::from_raw(pid), Signal::SIGKILL) {
                    debug!(pid, error = %e, "killpg on the notify hook failed");
                }
            }
            // Belt and braces (and the only way without a pid): kill the child itself.
            let _ = child.start_kill();
            if let Err(e) = child.wait().await {
                warn!(instance = %job.instance, error = %e, "notify hook: reaping failed");
            }
        }
    }
}

fn log_exit(cfg: &NotifyConfig, job: &Job, status: ExitStatus) {
    if status.success() {
        debug!(instance = %job.instance, state = %job.state, "notify hook done");
    } else {
        warn!(instance = %job.instance, state = %job.state, command = %cfg.command.display(),
            %status, "notify hook failed");
    }
}
