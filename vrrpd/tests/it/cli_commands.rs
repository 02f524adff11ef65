//! The `vrrpd` binary: `check-config` and `status`, run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shared::control::{DaemonStatus, InstanceCounters, InstanceStatus, StateEvent};
use shared::shutdown::{Shutdown, ShutdownMode};
use tokio::sync::{broadcast, watch};
use vrrpd::control::{self, ControlHandle};

fn vrrpd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vrrpd"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("vrrpd runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../configs")
        .join(name)
}

#[test]
fn check_config_accepts_a_good_file() {
    let file = example("vrrpd-active-active-a.toml");
    let out = run(vrrpd().arg("check-config").arg(&file));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("{}: ok (2 instances)", file.display())
    );
}

#[test]
fn check_config_prints_every_error_with_position_and_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 300\npriority = 100\nchecksum_mode = \"both\"\nvips = [\"192.0.2.10/24\"]\n",
    )
    .expect("write");
    let out = run(vrrpd().arg("check-config").arg(&file));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let f = file.display();
    assert!(
        err.contains(&format!(
            "{f}:4:1: `instance[0].vrid`: 300 is out of range (valid: 1..=255)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:6:1: `instance[0].checksum_mode`")),
        "{err}"
    );
    assert!(
        err.contains("\"pseudo-header\" or \"no-pseudo-header\""),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn check_config_reports_unknown_keys_and_missing_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[global]\nlog_fromat = \"json\"\n").expect("write");
    let out = run(vrrpd().arg("check-config").arg(&file));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "{}:2:1: `global.log_fromat`: unknown field `log_fromat`",
            file.display()
        )),
        "{}",
        stderr(&out)
    );

    let out = run(vrrpd()
        .arg("check-config")
        .arg(dir.path().join("missing.toml")));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read config"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_without_a_daemon_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("none.sock");
    let out = run(vrrpd().args(["status", "--socket"]).arg(&socket));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot reach vrrpd") && err.contains("none.sock"),
        "{err}"
    );
}

fn fake_status(config: &Path) -> DaemonStatus {
    let mut counters = InstanceCounters {
        adverts_sent: 17,
        adverts_received: 3,
        transitions: 2,
        became_master: 1,
        ..Default::default()
    };
    counters.discards.insert("checksum".into(), 4);
    counters.checksum_modes.insert("pseudo_header".into(), 3);
    DaemonStatus {
        pid: 777,
        uptime_ms: 90_000,
        config_path: config.display().to_string(),
        control: Default::default(),
        log_lines_dropped: 0,
        instances: vec![InstanceStatus {
            name: "web".into(),
            interface: "eth0".into(),
            vrid: 51,
            state: "master".into(),
            priority: 150,
            configured_priority: 150,
            master_addr: Some("192.0.2.2".parse().expect("addr")),
            advert_interval_cs: 100,
            time_in_state_ms: 12_300,
            vips: vec!["192.0.2.10/24".into()],
            counters,
            lbd: None,
            resigning: false,
            switchover_hold: false,
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_talks_to_the_daemon_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    // vrrpd refuses a socket directory other users can enter.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod");
    let socket = dir.path().join("vrrpd.sock");
    let config = dir.path().join("vrrpd.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\ncontrol_socket = \"{}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 51\npriority = 150\nvips = [\"192.0.2.10/24\"]\n",
            socket.display()
        ),
    )
    .expect("write");
    let expected = fake_status(&config);
    let (_status_tx, status_rx) = watch::channel(expected.clone());
    let (events, _) = broadcast::channel::<StateEvent>(8);
    let shutdown = Shutdown::new();
    let listener = control::bind(&socket).expect("bind");
    let server = tokio::spawn(control::serve(
        listener,
        ControlHandle {
            status: status_rx,
            events: events.clone(),
            admin: None,
        },
        shutdown.clone(),
    ));

    let json = {
        let socket = socket.clone();
        tokio::task::spawn_blocking(move || {
            run(vrrpd().args(["status", "--json", "--socket"]).arg(&socket))
        })
        .await
        .expect("joined")
    };
    assert!(json.status.success(), "{}", stderr(&json));
    let mut parsed: DaemonStatus = serde_json::from_slice(&json.stdout).expect("JSON status");
    // The server adds its own counters: the asking connection is the one open now.
    assert_eq!(parsed.control.connections, 1, "{parsed:?}");
    parsed.control = Default::default();
    assert_eq!(parsed, expected);

    // The socket path taken from --config, human output.
    let human = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || run(vrrpd().args(["status", "--config"]).arg(&config)))
            .await
            .expect("joined")
    };
    assert!(human.status.success(), "{}", stderr(&human));
    let text = stdout(&human);
    for needle in [
        "pid 777",
        "web",
        "eth0",
        "51",
        "master",
        "150",
        "192.0.2.2",
        "1.00s",
        "12.3s",
        "sent 17",
        "received 3",
        "checksum=4",
        "pseudo_header=3",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }

    shutdown.trigger(ShutdownMode::Graceful);
    server.await.expect("serve ends");
}

/// `vrrpd run` with `extra` appended to a one-instance config whose socket is in `sock_dir`.
fn run_daemon_config(dir: &Path, sock_dir: &Path, extra: &str) -> Output {
    let config = dir.join("vrrpd.toml");
    std::fs::write(
        &config,
        format!(
            "[global]\ncontrol_socket = \"{}\"\n{extra}\n[[instance]]\nname = \"web\"\ninterface = \"lo\"\nvrid = 51\npriority = 150\nvips = [\"192.0.2.10/32\"]\n",
            sock_dir.join("vrrpd.sock").display()
        ),
    )
    .expect("write");
    // It must fail before it touches any interface: the socket comes first.
    run(vrrpd().args(["run", "--config"]).arg(&config))
}

#[test]
fn run_refuses_a_socket_directory_others_can_enter_or_unknown_names() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let open = dir.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = run_daemon_config(dir.path(), &open, "");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&open.display().to_string()) && err.contains("0755"),
        "names the directory and its mode: {err}"
    );
    assert!(!open.join("vrrpd.sock").exists());

    let closed = dir.path().join("closed");
    for (extra, key) in [
        ("[lbd]\nuser = \"no-such-user-xyz\"\n", "lbd.user"),
        (
            "[control]\nadmin_group = \"no-such-group-xyz\"\n",
            "control.admin_group",
        ),
    ] {
        let out = run_daemon_config(dir.path(), &closed, extra);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(key), "{key}: {}", stderr(&out));
    }
}
