//! Notify hooks with real scripts in a temporary directory: keepalived's argument order,
//! order per instance, the timeout kills the hook (and its children) and the next one still
//! runs, `notify` never blocks, and a full queue drops the oldest pending hook.
//!
//! Scripts run as `/bin/sh SCRIPT ...` (the script is the first prefix argument): executing a
//! file this process just wrote can fail with ETXTBSY when another test thread forks at the
//! same moment, and `/bin/sh` is never written to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::{timeout, Instant};
use vrrpd::fsm::StateKind;
use vrrpd::notify::{state_name, Notifier, NotifyConfig};

/// Writes `body` as a shell script in `dir`, returns its path.
fn script(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("hook.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    path
}

fn config(script: &Path, extra: &[&str], timeout: Duration) -> NotifyConfig {
    let mut args_prefix = vec![script.display().to_string()];
    args_prefix.extend(extra.iter().map(|s| s.to_string()));
    NotifyConfig {
        command: PathBuf::from("/bin/sh"),
        args_prefix,
        timeout,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

async fn idle(n: &Notifier) {
    timeout(Duration::from_secs(10), n.wait_idle())
        .await
        .expect("hooks finish");
}

#[test]
fn keepalived_state_names() {
    assert_eq!(state_name(StateKind::Master), "MASTER");
    assert_eq!(state_name(StateKind::Backup), "BACKUP");
    assert_eq!(state_name(StateKind::Fault), "FAULT");
    assert_eq!(state_name(StateKind::Initialize), "STOP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_follow_keepalived_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let s = script(
        dir.path(),
        &format!("echo \"1=$1 2=$2 3=$3 4=$4 n=$#\" >> {}", out.display()),
    );
    let n = Notifier::new(config(&s, &[], Duration::from_secs(5)));
    n.notify("web", "MASTER", 150);
    idle(&n).await;
    assert_eq!(lines(&out), vec!["1=INSTANCE 2=web 3=MASTER 4=150 n=4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_of_one_instance_run_in_order_after_the_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    // MASTER is slow: run concurrently, the later hooks would overtake it.
    let s = script(
        dir.path(),
        &format!(
            "[ \"$4\" = MASTER ] && sleep 0.3\necho \"$*\" >> {}",
            out.display()
        ),
    );
    let n = Notifier::new(config(&s, &["pre"], Duration::from_secs(5)));
    n.notify("web", "MASTER", 150);
    n.notify("web", "BACKUP", 100);
    n.notify("web", "FAULT", 0);
    n.notify("web", "STOP", 100);
    idle(&n).await;
    assert_eq!(
        lines(&out),
        vec![
            "pre INSTANCE web MASTER 150",
            "pre INSTANCE web BACKUP 100",
            "pre INSTANCE web FAULT 0",
            "pre INSTANCE web STOP 100",
        ]
    );
    assert_eq!(n.outstanding(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_do_not_wait_for_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let s = script(
        dir.path(),
        &format!(
            "[ \"$2\" = slow ] && sleep 2\necho \"$2 $3\" >> {}",
            out.display()
        ),
    );
    let n = Notifier::new(config(&s, &[], Duration::from_secs(5)));
    n.notify("slow", "MASTER", 1);
    n.notify("fast", "MASTER", 1);
    let out2 = out.clone();
    assert!(
        eventually(Duration::from_millis(1500), || lines(&out2)
            == vec!["fast MASTER"])
        .await,
        "the fast instance's hook waited for the slow one: {:?}",
        lines(&out)
    );
    idle(&n).await;
    assert_eq!(lines(&out), vec!["fast MASTER", "slow MASTER"]);
}

/// `/proc/PID` is gone, or a zombie (a container's PID 1 may not reap orphans).
fn dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_past_its_timeout_is_killed_with_its_children_and_the_next_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let s = script(
        dir.path(),
        &format!(
            "if [ \"$3\" = SLOW ]; then\n  echo $$ > {d}/shell.pid\n  sleep 30 &\n  echo $! > {d}/child.pid\n  wait\nfi\necho \"$3\" >> {d}/out"
        ),
    );
    let n = Notifier::new(config(&s, &[], Duration::from_millis(300)));
    let start = Instant::now();
    n.notify("web", "SLOW", 1);
    n.notify("web", "NEXT", 2);
    idle(&n).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(took >= Duration::from_millis(300), "took {took:?}");
    assert_eq!(lines(&dir.path().join("out")), vec!["NEXT"]);
    let shell = std::fs::read_to_string(dir.path().join("shell.pid")).expect("shell pid");
    let child = std::fs::read_to_string(dir.path().join("child.pid")).expect("child pid");
    let (shell, child) = (shell.trim().to_string(), child.trim().to_string());
    assert!(
        eventually(Duration::from_secs(5), || dead(&shell) && dead(&child)).await,
        "hook {shell} or its child {child} still alive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_returns_at_once_while_the_hook_is_slow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = script(dir.path(), "sleep 1");
    let n = Notifier::new(config(&s, &[], Duration::from_secs(5)));
    for state in ["MASTER", "BACKUP", "MASTER"] {
        let t = Instant::now();
        n.notify("web", state, 100);
        let took = t.elapsed();
        assert!(took < Duration::from_millis(50), "notify took {took:?}");
    }
    assert_eq!(n.outstanding(), 3);
    idle(&n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_oldest_pending_hook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let s = script(
        dir.path(),
        &format!("[ \"$3\" = A ] && touch {d}/started && sleep 0.5\necho \"$3\" >> {d}/out"),
    );
    let n = Notifier::with_capacity(config(&s, &[], Duration::from_secs(5)), 2);
    n.notify("web", "A", 1);
    let started = dir.path().join("started");
    assert!(
        eventually(Duration::from_secs(5), || started.exists()).await,
        "first hook did not start"
    );
    // A runs; B and C wait; D then E push out B then C.
    for state in ["B", "C", "D", "E"] {
        n.notify("web", state, 1);
    }
    assert_eq!(n.outstanding(), 3, "A running, D and E pending");
    idle(&n).await;
    assert_eq!(lines(&dir.path().join("out")), vec!["A", "D", "E"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_logged_and_the_queue_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = Notifier::new(NotifyConfig {
        command: dir.path().join("does-not-exist"),
        args_prefix: vec![],
        timeout: Duration::from_secs(1),
    });
    n.notify("web", "MASTER", 1);
    n.notify("web", "BACKUP", 1);
    idle(&n).await;
    assert_eq!(n.outstanding(), 0);
}

#[test]
fn notify_outside_a_runtime_does_not_panic() {
    let n = Notifier::new(NotifyConfig {
        command: PathBuf::from("/bin/true"),
        args_prefix: vec![],
        timeout: Duration::from_secs(1),
    });
    n.notify("web", "MASTER", 1);
    assert_eq!(n.outstanding(), 0);
}
