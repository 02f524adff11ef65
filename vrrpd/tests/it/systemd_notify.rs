//! `Type=notify` through the real binary: vrrpd tells systemd READY=1 once started,
//! pings WATCHDOG=1 from its main loop at half `WATCHDOG_USEC`, brackets a reload with
//! RELOADING=1 / READY=1, and says STOPPING=1 on SIGTERM.
//!
//! The test plays systemd: it binds a Unix datagram socket and passes its path in
//! `NOTIFY_SOCKET`. vrrpd runs in a network namespace of its own (`unshare -n`, loopback
//! only), so its instance's adverts and VIP stay there and vanish with it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// Watchdog timeout given to vrrpd: pings are due every 100 ms.
const WATCHDOG: Duration = Duration::from_millis(200);
const PATIENCE: Duration = Duration::from_secs(10);

/// Kills the daemon if the test ends early.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

/// Datagrams until one contains `wanted`; returns every message seen, in order.
fn until(sock: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg.lines().any(|l| l == wanted);
        seen.push(msg);
        if done {
            return seen;
        }
    }
    panic!("no {wanted} within {PATIENCE:?}; got {seen:?}");
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("vrrpd.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\ncontrol_socket = \"{}\"\n\n[[instance]]\nname = \"web\"\ninterface = \"lo\"\n\
             vrid = 51\npriority = 100\nvips = [\"192.0.2.200/32\"]\n",
            dir.join("vrrpd.sock").display()
        ),
    )
    .expect("write config");
    config
}

#[test]
fn vrrpd_notifies_ready_watchdog_reload_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let config = write_config(dir.path());
    let log = std::fs::File::create(dir.path().join("vrrpd.log")).expect("log");
    let started = Instant::now();
    let child = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" run --config \"$1\"",
        ])
        .arg(env!("CARGO_BIN_EXE_vrrpd"))
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn vrrpd in its own netns");
    let mut daemon = Daemon(child);
    let pid = daemon.0.id();
    let log_text = || std::fs::read_to_string(dir.path().join("vrrpd.log")).unwrap_or_default();

    let first = until(&sock, "READY=1");
    assert!(
        first.last().is_some_and(|m| m.contains("STATUS=")),
        "READY=1 comes with a status: {first:?}\n{}",
        log_text()
    );
    assert!(
        dir.path().join("vrrpd.sock").exists(),
        "READY=1 only once the control socket is up"
    );
    // Pings at half the watchdog timeout: at least 5 in the next second.
    let pings_from = Instant::now();
    let mut pings = 0;
    while pings < 5 {
        until(&sock, "WATCHDOG=1");
        pings += 1;
    }
    let took = pings_from.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "5 watchdog pings took {took:?} (every {:?} expected)",
        WATCHDOG / 2
    );

    signal(pid, "HUP");
    let reload = until(&sock, "RELOADING=1");
    assert!(
        reload.last().is_some_and(|m| m.contains("MONOTONIC_USEC=")),
        "{reload:?}"
    );
    until(&sock, "READY=1");

    signal(pid, "TERM");
    until(&sock, "STOPPING=1");
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            assert!(status.success(), "{status}\n{}", log_text());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "vrrpd did not stop\n{}",
            log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("whole run took {:?}", started.elapsed());
}
