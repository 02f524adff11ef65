//! vrrpd's view of lbd, driven over a real control socket by a client that speaks lbd's
//! side of the protocol: subscribe, heartbeat, go silent, disconnect.

use std::path::PathBuf;
use std::time::Duration;

use shared::control::{
    read_message, write_message, DaemonStatus, Heartbeat, Request, Response, StateEvent,
};
use shared::shutdown::Shutdown;
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};
use vrrpd::config::LbdConfig;
use vrrpd::control::{self, ControlHandle};
use vrrpd::lbd_link::{LbdHealth, LbdMonitor, LBD_CLIENT};

const PATIENCE: Duration = Duration::from_secs(5);

fn lbd_config(startup_grace: Duration) -> LbdConfig {
    LbdConfig {
        ack_timeout: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_millis(150),
        startup_grace,
        drain_timeout: Duration::from_secs(1),
        handoff: Duration::ZERO,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    health: watch::Receiver<LbdHealth>,
    _events: broadcast::Sender<StateEvent>,
    _status: watch::Sender<DaemonStatus>,
}

async fn start(startup_grace: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    // vrrpd refuses a socket directory other users can enter.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod");
    let path = dir.path().join("vrrpd.sock");
    let (status, status_rx) = watch::channel(DaemonStatus {
        pid: 1,
        uptime_ms: 0,
        config_path: "test".into(),
        control: Default::default(),
        log_lines_dropped: 0,
        instances: Vec::new(),
    });
    let (events, _) = broadcast::channel(16);
    let listener = control::bind(&path).expect("bind");
    let (monitor, health) = LbdMonitor::new(lbd_config(startup_grace), listener.subscribers());
    tokio::spawn(monitor.run());
    tokio::spawn(control::serve(
        listener,
        ControlHandle {
            status: status_rx,
            events: events.clone(),
            admin: None,
        },
        Shutdown::new(),
    ));
    Fixture {
        _dir: dir,
        path,
        health,
        _events: events,
        _status: status,
    }
}

struct FakeLbd {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl FakeLbd {
    async fn connect(f: &Fixture) -> FakeLbd {
        let (r, w) = UnixStream::connect(&f.path)
            .await
            .expect("connect")
            .into_split();
        let mut lbd = FakeLbd {
            reader: BufReader::new(r),
            writer: w,
        };
        write_message(
            &mut lbd.writer,
            &Request::Subscribe {
                client: LBD_CLIENT.into(),
            },
        )
        .await
        .expect("subscribe");
        let answer: Option<Response> = read_message(&mut lbd.reader).await.expect("answer");
        assert!(
            matches!(answer, Some(Response::Subscribed { .. })),
            "{answer:?}"
        );
        lbd
    }

    async fn heartbeat(&mut self, able: bool, ready: bool, serving: &[&str]) {
        let hb = Heartbeat {
            able,
            ready,
            serving: serving.iter().map(|s| s.to_string()).collect(),
            reasons: if able {
                vec![]
            } else {
                vec!["pool web: no healthy backend".into()]
            },
        };
        write_message(&mut self.writer, &Request::Heartbeat(hb))
            .await
            .expect("heartbeat");
    }
}

async fn wait_for(
    health: &mut watch::Receiver<LbdHealth>,
    what: &str,
    cond: impl FnMut(&LbdHealth) -> bool,
) -> LbdHealth {
    let reached = tokio::time::timeout(PATIENCE, async {
        health.wait_for(cond).await.map(|h| h.clone()).ok()
    })
    .await;
    match reached {
        Ok(Some(h)) => h,
        _ => panic!(
            "lbd health never became {what}; last: {:?}",
            *health.borrow()
        ),
    }
}

#[tokio::test]
async fn heartbeats_make_lbd_up_and_silence_or_inability_makes_it_down() {
    let mut f = start(Duration::ZERO).await;
    // No lbd and no grace: down.
    assert!(f.health.borrow().is_down(), "{:?}", *f.health.borrow());

    let mut lbd = FakeLbd::connect(&f).await;
    lbd.heartbeat(true, false, &["web"]).await;
    let h = wait_for(&mut f.health, "up", |h| h.up).await;
    assert!(h.connected && !h.ready && h.serving == ["web"], "{h:?}");

    lbd.heartbeat(true, true, &["web"]).await;
    wait_for(&mut f.health, "ready", |h| h.ready).await;

    // Able = false is down at once, with lbd's own reason.
    lbd.heartbeat(false, false, &[]).await;
    let h = wait_for(&mut f.health, "down (unable)", |h| h.is_down()).await;
    assert!(h.connected, "{h:?}");
    assert!(
        h.reasons.iter().any(|r| r.contains("no healthy backend")),
        "{h:?}"
    );

    // Silence: up again, then no heartbeat for longer than the timeout is down.
    lbd.heartbeat(true, true, &["web"]).await;
    wait_for(&mut f.health, "up again", |h| h.up).await;
    let h = wait_for(&mut f.health, "down (silent)", |h| h.is_down()).await;
    assert!(h.connected && h.serving.is_empty(), "{h:?}");
    assert!(
        h.reasons.iter().any(|r| r.contains("no heartbeat")),
        "{h:?}"
    );

    // Disconnect: down and not connected.
    lbd.heartbeat(true, true, &["web"]).await;
    wait_for(&mut f.health, "up before the disconnect", |h| h.up).await;
    drop(lbd);
    let h = wait_for(&mut f.health, "disconnected", |h| !h.connected).await;
    assert!(h.is_down(), "{h:?}");
}

#[tokio::test]
async fn startup_grace_is_not_down_until_it_runs_out() {
    let mut f = start(Duration::from_millis(300)).await;
    let h = f.health.borrow().clone();
    assert!(
        h.starting && !h.is_down(),
        "within the grace lbd is starting: {h:?}"
    );
    let h = wait_for(&mut f.health, "down after the grace", |h| h.is_down()).await;
    assert!(!h.starting && !h.connected, "{h:?}");
}

#[tokio::test]
async fn an_lbd_that_connects_and_dies_within_the_grace_is_down() {
    // A long grace: only having seen lbd connect may end it.
    let mut f = start(Duration::from_secs(60)).await;
    let mut lbd = FakeLbd::connect(&f).await;
    lbd.heartbeat(true, true, &["web"]).await;
    wait_for(&mut f.health, "up", |h| h.up).await;
    drop(lbd);
    let h = wait_for(&mut f.health, "down after dying", |h| !h.connected).await;
    assert!(
        h.is_down() && !h.starting,
        "a crash right after startup must count: {h:?}"
    );
}
