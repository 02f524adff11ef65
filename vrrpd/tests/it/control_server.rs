//! The control socket server over a real Unix socket, fed fake status and events.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shared::control::{
    request, DaemonStatus, InstanceCounters, InstanceStatus, Request, Response, StateEvent,
    MAX_LINE,
};
use shared::shutdown::{Shutdown, ShutdownMode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};
use vrrpd::control::{
    self, AccessPolicy, ControlHandle, SubscriberInfo, Subscribers, SNAPSHOT_REASON,
};

const PATIENCE: Duration = Duration::from_secs(5);

fn instance(name: &str, vrid: u8, state: &str) -> InstanceStatus {
    InstanceStatus {
        name: name.into(),
        interface: "eth0".into(),
        vrid,
        state: state.into(),
        priority: 100,
        configured_priority: 100,
        master_addr: None,
        advert_interval_cs: 100,
        time_in_state_ms: 0,
        vips: vec![format!("192.0.2.{vrid}/24")],
        counters: InstanceCounters::default(),
        lbd: None,
        resigning: false,
        switchover_hold: false,
    }
}

fn status() -> DaemonStatus {
    DaemonStatus {
        pid: 4242,
        uptime_ms: 1000,
        config_path: "/etc/lbpair/vrrpd.toml".into(),
        control: Default::default(),
        log_lines_dropped: 0,
        instances: vec![instance("web", 51, "backup"), instance("api", 52, "master")],
    }
}

fn event(id: u64, name: &str, vrid: u8, state: &str) -> StateEvent {
    StateEvent {
        seq: id,
        instance: name.into(),
        vrid,
        interface: "eth0".into(),
        state: state.into(),
        priority: 100,
        vips: vec![format!("192.0.2.{vrid}/24")],
        reason: "test".into(),
        draining: false,
        master_down_ms: 0,
        handoff_ms: 0,
    }
}

struct Server {
    _dir: tempfile::TempDir,
    path: PathBuf,
    status: watch::Sender<DaemonStatus>,
    events: broadcast::Sender<StateEvent>,
    subscribers: Subscribers,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

async fn start_with(capacity: usize, max_connections: usize) -> Server {
    start_policy(capacity, max_connections, AccessPolicy::default()).await
}

async fn start_policy(capacity: usize, max_connections: usize, policy: AccessPolicy) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    // A parent that doesn't exist yet: bind creates it.
    let path = dir.path().join("run").join("vrrpd.sock");
    let listener = control::bind(&path)
        .expect("bind")
        .with_max_connections(max_connections)
        .with_access(policy);
    serve_listener(dir, path, listener, capacity, None)
}

/// Serve `listener` with the fake status, an event channel of `capacity`, and `admin`.
fn serve_listener(
    dir: tempfile::TempDir,
    path: PathBuf,
    listener: control::ControlListener,
    capacity: usize,
    admin: Option<tokio::sync::mpsc::Sender<control::AdminRequest>>,
) -> Server {
    let (status_tx, status_rx) = watch::channel(status());
    let (events, _) = broadcast::channel(capacity);
    let subscribers = listener.subscribers();
    let shutdown = Shutdown::new();
    let handle = ControlHandle {
        status: status_rx,
        events: events.clone(),
        admin,
    };
    let task = tokio::spawn(control::serve(listener, handle, shutdown.clone()));
    Server {
        _dir: dir,
        path,
        status: status_tx,
        events,
        subscribers,
        shutdown,
        task,
    }
}

async fn start() -> Server {
    start_with(64, control::DEFAULT_MAX_CONNECTIONS).await
}

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Skip the subscription's periodic `alive` keepalives, as lbd does.
    skip_alive: bool,
}

const ALIVE_LINE: &str = "{\"type\":\"alive\"}\n";

impl Client {
    async fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).await.expect("connect");
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
            skip_alive: true,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, req: &Request) {
        let mut line = serde_json::to_vec(req).expect("encode");
        line.push(b'\n');
        self.send_raw(&line).await;
    }

    /// The next line (keepalives skipped unless asked for), or `None` at EOF.
    async fn line(&mut self) -> Option<String> {
        loop {
            let line = self.raw_line().await?;
            if !(self.skip_alive && line == ALIVE_LINE) {
                return Some(line);
            }
        }
    }

    async fn raw_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line))
            .await
            .expect("a line within the deadline")
            .expect("read");
        (n > 0).then_some(line)
    }

    async fn recv<T: serde::de::DeserializeOwned>(&mut self) -> T {
        let line = self.line().await.expect("a line, not EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    async fn subscribe(&mut self, client: &str) {
        self.send(&Request::Subscribe {
            client: client.into(),
        })
        .await;
        let r: Response = self.recv().await;
        assert_eq!(r, Response::Subscribed { next_seq: 1 });
    }

    /// Reads until EOF, returning how many lines came first; panics if EOF doesn't come.
    async fn lines_until_eof(&mut self) -> usize {
        let mut n = 0;
        while self.line().await.is_some() {
            n += 1;
        }
        n
    }
}

/// `status` as the daemon gave it, without the server's own counters (checked apart).
async fn daemon_status(path: &Path) -> DaemonStatus {
    match request(path, &Request::Status).await.expect("status") {
        Response::Status(mut s) => {
            assert!(s.control.connections >= 1, "the asking connection counts");
            s.control = Default::default();
            s
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Wait until the subscriber table satisfies `pred`.
async fn wait_subs(subs: &Subscribers, pred: impl Fn(&BTreeMap<u64, SubscriberInfo>) -> bool) {
    let mut rx = subs.watch();
    tokio::time::timeout(PATIENCE, rx.wait_for(|m| pred(m)))
        .await
        .expect("subscriber condition within the deadline")
        .expect("table alive");
}

#[tokio::test]
async fn status_request_answers_the_current_snapshot() {
    let srv = start().await;
    let mode = std::fs::metadata(&srv.path)
        .expect("socket exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    assert_eq!(daemon_status(&srv.path).await, status());
    let mut newer = status();
    newer.instances[0].state = "master".into();
    srv.status.send_replace(newer.clone());
    assert_eq!(daemon_status(&srv.path).await, newer);
}

#[tokio::test]
async fn subscribe_sends_a_snapshot_then_live_events_in_sequence() {
    let srv = start().await;
    let mut c = Client::connect(&srv.path).await;
    c.subscribe("lbd").await;
    let first: StateEvent = c.recv().await;
    let second: StateEvent = c.recv().await;
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(
        (first.instance.as_str(), first.state.as_str()),
        ("web", "backup")
    );
    assert_eq!(
        (second.instance.as_str(), second.state.as_str()),
        ("api", "master")
    );
    assert!(first.reason == SNAPSHOT_REASON && second.reason == SNAPSHOT_REASON);

    srv.events
        .send(event(101, "web", 51, "master"))
        .expect("subscribed");
    srv.events
        .send(event(102, "api", 52, "backup"))
        .expect("subscribed");
    srv.events
        .send(event(103, "web", 51, "backup"))
        .expect("subscribed");
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev: StateEvent = c.recv().await;
        got.push((ev.seq, ev.instance, ev.state, ev.reason));
    }
    assert_eq!(
        got,
        vec![
            (
                3,
                "web".to_string(),
                "master".to_string(),
                "test".to_string()
            ),
            (
                4,
                "api".to_string(),
                "backup".to_string(),
                "test".to_string()
            ),
            (
                5,
                "web".to_string(),
                "backup".to_string(),
                "test".to_string()
            ),
        ]
    );
    wait_subs(&srv.subscribers, |m| m.values().any(|s| s.sent_seq == 5)).await;
}

#[tokio::test]
async fn acks_are_recorded_cumulatively_with_the_daemon_event_id() {
    let srv = start().await;
    let mut c = Client::connect(&srv.path).await;
    c.subscribe("lbd").await;
    for _ in 0..2 {
        let _: StateEvent = c.recv().await;
    }
    for id in [101, 102, 103] {
        srv.events
            .send(event(id, "web", 51, "master"))
            .expect("subscribed");
        let _: StateEvent = c.recv().await;
    }
    c.send(&Request::Ack { seq: 4 }).await;
    wait_subs(&srv.subscribers, |m| m.values().any(|s| s.acked_seq == 4)).await;
    let subs = srv.subscribers.list();
    assert_eq!(subs.len(), 1);
    let info = &subs[0].1;
    assert_eq!(info.client, "lbd");
    assert_eq!(info.sent_seq, 5);
    assert_eq!(info.acked_event, 102, "seq 4 carried daemon event 102");

    // An older ack changes nothing; `wait_acked` resolves once event 103 is acked.
    c.send(&Request::Ack { seq: 2 }).await;
    let waiter = {
        let subs = srv.subscribers.clone();
        tokio::spawn(async move { subs.wait_acked("lbd", 103).await })
    };
    c.send(&Request::Ack { seq: 5 }).await;
    tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("wait_acked resolves")
        .expect("no panic");
    assert_eq!(srv.subscribers.list()[0].1.acked_seq, 5);

    // Acks are not answered: the next line is the next event.
    srv.events
        .send(event(104, "web", 51, "backup"))
        .expect("subscribed");
    let ev: StateEvent = c.recv().await;
    assert_eq!(ev.seq, 6);

    drop(c);
    wait_subs(&srv.subscribers, |m| m.is_empty()).await;
}

#[tokio::test]
async fn snapshot_acks_cover_events_published_before_the_subscription() {
    let srv = start().await;
    // Broadcast before anyone subscribes; the status refresh hasn't caught up yet.
    let _ = srv.events.send(event(7, "web", 51, "master"));
    let mut c = Client::connect(&srv.path).await;
    c.subscribe("lbd").await;
    let web: StateEvent = c.recv().await;
    let api: StateEvent = c.recv().await;
    assert_eq!(
        web.state, "master",
        "the broadcast state wins over the stale status"
    );
    assert_eq!(api.state, "master");
    c.send(&Request::Ack { seq: 2 }).await;
    tokio::time::timeout(PATIENCE, srv.subscribers.wait_acked("lbd", 7))
        .await
        .expect("acking the snapshot acknowledges event 7");
}

#[tokio::test]
async fn bad_requests_get_an_error_and_the_connection_stays() {
    let srv = start().await;
    let mut c = Client::connect(&srv.path).await;
    c.send_raw(b"{not json}\n").await;
    let r: Response = c.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("malformed")),
        "{r:?}"
    );
    c.send_raw(b"{\"cmd\":\"reboot\"}\n").await;
    let r: Response = c.recv().await;
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    c.send(&Request::Ack { seq: 1 }).await;
    let r: Response = c.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("subscribe")),
        "{r:?}"
    );
    c.send(&Request::Status).await;
    let r: Response = c.recv().await;
    assert!(matches!(r, Response::Status(_)), "{r:?}");

    // On a subscribed connection too, and acks beyond what was sent are refused.
    c.subscribe("lbd").await;
    let _: StateEvent = c.recv().await;
    let _: StateEvent = c.recv().await;
    c.send(&Request::Ack { seq: 99 }).await;
    let r: Response = c.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("99")),
        "{r:?}"
    );
    c.send(&Request::Subscribe {
        client: "again".into(),
    })
    .await;
    let r: Response = c.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("already")),
        "{r:?}"
    );
    c.send_raw(b"\xff\xfe\n").await;
    let r: Response = c.recv().await;
    assert!(matches!(r, Response::Error { .. }), "{r:?}");
    // A heartbeat on a subscribed connection is answered with proof of life.
    c.skip_alive = false;
    c.send(&Request::Heartbeat(shared::control::Heartbeat {
        able: true,
        ready: true,
        serving: vec![],
        reasons: vec![],
    }))
    .await;
    let r: Response = c.recv().await;
    assert_eq!(r, Response::Alive);
    c.skip_alive = true;
    srv.events
        .send(event(1, "web", 51, "master"))
        .expect("subscribed");
    let ev: StateEvent = c.recv().await;
    assert_eq!(ev.seq, 3);
}

#[tokio::test]
async fn an_over_long_line_closes_the_connection() {
    let srv = start().await;
    let mut c = Client::connect(&srv.path).await;
    let junk = vec![b'x'; MAX_LINE + 100];
    // The server may close before reading it all; a write error is fine.
    let _ = c.writer.write_all(&junk).await;
    let r: Response = c.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("longer")),
        "{r:?}"
    );
    assert_eq!(c.line().await, None, "closed after the error");
    // The server is still fine.
    assert!(request(&srv.path, &Request::Status).await.is_ok());
}

#[tokio::test]
async fn a_lagging_subscriber_is_closed() {
    let srv = start_with(4, 8).await;
    let mut c = Client::connect(&srv.path).await;
    c.subscribe("slow").await;
    wait_subs(&srv.subscribers, |m| m.len() == 1).await;
    // Far more than the channel holds, without yielding to the connection task.
    for id in 0..50 {
        srv.events
            .send(event(id, "web", 51, "master"))
            .expect("subscribed");
    }
    let n = c.lines_until_eof().await;
    assert!(
        n < 50,
        "the connection closed instead of delivering everything ({n} lines)"
    );
    wait_subs(&srv.subscribers, |m| m.is_empty()).await;
}

#[tokio::test]
async fn connections_over_the_uid_limit_are_refused_with_a_message() {
    let srv = start_policy(
        16,
        control::DEFAULT_MAX_CONNECTIONS,
        AccessPolicy {
            max_per_uid: 1,
            ..AccessPolicy::default()
        },
    )
    .await;
    let mut first = Client::connect(&srv.path).await;
    first.subscribe("lbd").await;
    let mut second = Client::connect(&srv.path).await;
    let r: Response = second.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("already holds 1")),
        "{r:?}"
    );
    drop(first);
    wait_subs(&srv.subscribers, |m| m.is_empty()).await;
    // The slot is free again once the first connection's task has ended.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match request(&srv.path, &Request::Status).await {
            Ok(Response::Status(_)) => break,
            other => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "slot never freed: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_removes_the_socket_and_ends_subscribers() {
    let srv = start().await;
    let mut sub = Client::connect(&srv.path).await;
    sub.subscribe("lbd").await;
    let _: StateEvent = sub.recv().await;
    let _: StateEvent = sub.recv().await;
    let mut idle = Client::connect(&srv.path).await;
    // Make sure it has been accepted, not just queued in the backlog.
    idle.send(&Request::Status).await;
    let _: Response = idle.recv().await;

    srv.shutdown.trigger(ShutdownMode::Graceful);
    tokio::time::timeout(PATIENCE, srv.task)
        .await
        .expect("serve returns")
        .expect("no panic");
    assert!(!srv.path.exists(), "socket file removed");
    assert_eq!(
        idle.line().await,
        None,
        "a plain connection ends at shutdown"
    );

    // A subscriber still gets the final events of a graceful stop...
    srv.events
        .send(event(9, "web", 51, "initialize"))
        .expect("still subscribed");
    let ev: StateEvent = sub.recv().await;
    assert_eq!(ev.state, "initialize");
    // ...and is closed when the daemon drops its senders.
    drop(srv.events);
    assert_eq!(sub.line().await, None);
}

#[tokio::test]
async fn fast_shutdown_closes_subscribers() {
    let srv = start().await;
    let mut sub = Client::connect(&srv.path).await;
    sub.subscribe("lbd").await;
    srv.shutdown.trigger(ShutdownMode::Fast);
    assert_eq!(
        sub.lines_until_eof().await,
        2,
        "only the snapshot came before the close"
    );
}

#[tokio::test]
async fn bind_clears_stale_sockets_but_not_live_ones_or_other_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    // vrrpd refuses a socket directory other users can enter.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .expect("chmod");
    let path = dir.path().join("vrrpd.sock");

    // Stale: a socket file nobody listens on (left by a crash).
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    assert!(path.exists());
    let live = control::bind(&path).expect("stale socket replaced");

    // Live: refused, and the live socket stays.
    let err = control::bind(&path).err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("vrrpd.sock"), "{err}");
    drop(live);

    // Not a socket: never deleted.
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "keep me").expect("write");
    assert!(control::bind(&file).is_err());
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        "keep me"
    );
}

// ===== authorisation: SO_PEERCRED roles, one lbd, limits and timeouts =====

/// The uid and gid of `nobody`: a local user with no role on the socket.
const NOBODY: u32 = 65534;

/// A server whose socket a foreign uid can reach: the directory and the socket belong to
/// `nobody`'s group, as an operator in the `lbpair` group would reach the real one.
async fn start_reachable(policy: AccessPolicy) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o750)).expect("chmod");
    let path = run.join("vrrpd.sock");
    let listener = control::bind(&path).expect("bind").with_access(policy);
    // After bind: vrrpd accepts only its own group (or root's) on the directory.
    std::os::unix::fs::chown(&run, Some(0), Some(NOBODY)).expect("chown dir");
    std::os::unix::fs::chown(&path, Some(0), Some(NOBODY)).expect("chown socket");
    let (admin_tx, mut admin_rx) = tokio::sync::mpsc::channel::<control::AdminRequest>(8);
    // An admin side that carries out every command it is handed.
    tokio::spawn(async move {
        while let Some(req) = admin_rx.recv().await {
            let _ = req.reply.send(Ok(format!("did {}", req.command.name())));
        }
    });
    serve_listener(dir, path, listener, 64, Some(admin_tx))
}

/// Runs this test binary's `foreign_client_helper` as `nobody`: it sends `lines` on one
/// connection and prints each answer, or (`hold`) opens that many connections and keeps
/// them idle until its stdin closes.
fn foreign_client(socket: &Path, lines: &[&str], hold: usize) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "control_server::foreign_client_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CONTROL_HELPER_SOCKET", socket)
        .env("CONTROL_HELPER_LINES", lines.join("\n"))
        .env("CONTROL_HELPER_HOLD", hold.to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn the helper as nobody")
}

/// The answers a foreign client got, one per request line.
async fn foreign_answers(socket: &Path, lines: &[&str]) -> Vec<Response> {
    let child = foreign_client(socket, lines, 0);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("helper ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // libtest prints "test NAME ... " before the helper's first line, on the same line.
        .filter_map(|l| l.split_once("ANSWER ").map(|(_, answer)| answer))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Not a test: the client side of the foreign-uid tests, run by `foreign_client` in a
/// child process whose uid is `nobody`.
#[test]
#[ignore = "helper process for the foreign-uid tests"]
fn foreign_client_helper() {
    use std::io::{BufRead, Read, Write};
    let Some(socket) = std::env::var_os("CONTROL_HELPER_SOCKET") else {
        return;
    };
    let hold: usize = std::env::var("CONTROL_HELPER_HOLD")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(0);
    if hold > 0 {
        let conns: Vec<_> = (0..hold)
            .filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok())
            .collect();
        println!("OPEN {}", conns.len());
        std::io::stdout().flush().expect("flush");
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        return;
    }
    let stream = std::os::unix::net::UnixStream::connect(&socket).expect("connect as nobody");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let lines = std::env::var("CONTROL_HELPER_LINES").unwrap_or_default();
    for line in lines.lines() {
        writer.write_all(line.as_bytes()).expect("write");
        writer.write_all(b"\n").expect("write");
        let mut answer = String::new();
        if reader.read_line(&mut answer).unwrap_or(0) == 0 {
            println!("EOF");
            return;
        }
        println!("ANSWER {}", answer.trim_end());
    }
}

fn refused(r: &Response, needle: &str) -> bool {
    matches!(r, Response::Error { message } if message.contains(needle))
}

async fn refusals(path: &Path) -> BTreeMap<String, u64> {
    match request(path, &Request::Status).await.expect("status") {
        Response::Status(s) => s.control.refused,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_uid_gets_status_but_cannot_subscribe_as_lbd_or_switch_over() {
    let srv = start_reachable(AccessPolicy::default()).await;
    let answers = foreign_answers(
        &srv.path,
        &[
            r#"{"cmd":"status"}"#,
            r#"{"cmd":"subscribe","client":"lbd"}"#,
            r#"{"cmd":"heartbeat","able":true,"ready":true}"#,
            r#"{"cmd":"switchover"}"#,
            r#"{"cmd":"resume"}"#,
        ],
    )
    .await;
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert!(matches!(answers[0], Response::Status(_)), "{answers:?}");
    assert!(refused(&answers[1], "may not subscribe"), "{answers:?}");
    assert!(refused(&answers[2], "without subscribe"), "{answers:?}");
    assert!(
        refused(&answers[3], "may not run switchover"),
        "{answers:?}"
    );
    assert!(refused(&answers[4], "may not run resume"), "{answers:?}");
    assert!(
        srv.subscribers.list().is_empty(),
        "no subscriber was registered"
    );
    let r = refusals(&srv.path).await;
    assert_eq!(r.get("not_lbd"), Some(&1), "{r:?}");
    assert_eq!(r.get("not_admin"), Some(&2), "{r:?}");

    // Root may do both (the admin stub answers).
    let done = request(&srv.path, &Request::Switchover { instance: None })
        .await
        .expect("root may switch over");
    assert_eq!(
        done,
        Response::Done {
            message: "did switchover".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_lbd_uid_and_admin_group_get_their_roles() {
    let srv = start_reachable(AccessPolicy {
        lbd_uid: Some(NOBODY),
        admin_gid: Some(NOBODY),
        ..AccessPolicy::default()
    })
    .await;
    let answers = foreign_answers(
        &srv.path,
        &[
            r#"{"cmd":"switchover"}"#,
            r#"{"cmd":"subscribe","client":"lbd"}"#,
        ],
    )
    .await;
    assert_eq!(
        answers.first(),
        Some(&Response::Done {
            message: "did switchover".into()
        }),
        "{answers:?}"
    );
    assert_eq!(
        answers.get(1),
        Some(&Response::Subscribed { next_seq: 1 }),
        "{answers:?}"
    );
}

#[tokio::test]
async fn a_second_lbd_is_refused_while_the_first_is_subscribed() {
    let srv = start().await;
    let mut first = Client::connect(&srv.path).await;
    first.subscribe("lbd").await;
    let mut second = Client::connect(&srv.path).await;
    second
        .send(&Request::Subscribe {
            client: "lbd".into(),
        })
        .await;
    let r: Response = second.recv().await;
    assert!(refused(&r, "another lbd is already subscribed"), "{r:?}");
    assert_eq!(
        srv.subscribers
            .list()
            .iter()
            .filter(|(_, s)| s.client == "lbd")
            .count(),
        1
    );
    // The refused connection is no subscriber: it can't heartbeat.
    second
        .send(&Request::Heartbeat(shared::control::Heartbeat::default()))
        .await;
    let r: Response = second.recv().await;
    assert!(refused(&r, "without subscribe"), "{r:?}");
    assert_eq!(refusals(&srv.path).await.get("second_lbd"), Some(&1));

    // Once the first has gone, the next lbd gets in.
    drop(first);
    wait_subs(&srv.subscribers, |m| m.is_empty()).await;
    second.subscribe("lbd").await;
}

#[tokio::test]
async fn heartbeats_only_count_from_the_lbd_subscription() {
    let srv = start().await;
    let mut watcher = Client::connect(&srv.path).await;
    watcher.subscribe("watcher").await;
    watcher
        .send(&Request::Heartbeat(shared::control::Heartbeat::default()))
        .await;
    let _: StateEvent = watcher.recv().await;
    let _: StateEvent = watcher.recv().await;
    let r: Response = watcher.recv().await;
    assert!(refused(&r, "heartbeats come from"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_idle_foreign_connections_do_not_keep_lbd_out() {
    let srv = start_reachable(AccessPolicy::default()).await;
    let mut crowd = foreign_client(&srv.path, &[], 100);
    let mut out = std::io::BufReader::new(crowd.stdout.take().expect("stdout"));
    let (opened, _out) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        while !line.contains("OPEN") {
            line.clear();
            if std::io::BufRead::read_line(&mut out, &mut line).expect("read") == 0 {
                break;
            }
        }
        // Keep the pipe open: the helper's test harness still prints after it.
        (line, out)
    })
    .await
    .expect("joined");
    assert!(
        opened.contains("OPEN 100"),
        "the kernel accepted all 100: {opened:?}"
    );
    // lbd (root) subscribes at once, while the crowd still holds its connections.
    let started = tokio::time::Instant::now();
    let mut lbd = Client::connect(&srv.path).await;
    lbd.subscribe("lbd").await;
    let took = started.elapsed();
    // Below the identification timeout: lbd didn't wait for the crowd's slots to expire.
    assert!(
        took < control::IDENTIFY_TIMEOUT * 3 / 4,
        "lbd waited {took:?} behind the idle crowd"
    );
    // Everything past the per-uid cap was refused at once, and the rest is closed for
    // not identifying itself.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = refusals(&srv.path).await;
        let capped = r.get("uid_limit").copied().unwrap_or(0);
        let silent = r.get("identify_timeout").copied().unwrap_or(0);
        if capped == 100 - vrrpd::config::DEFAULT_MAX_CONNECTIONS_PER_UID as u64
            && silent == vrrpd::config::DEFAULT_MAX_CONNECTIONS_PER_UID as u64
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "refusals {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(crowd.stdin.take());
    let _ = tokio::task::spawn_blocking(move || crowd.wait()).await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_identification_timeout() {
    let srv = start().await;
    let started = tokio::time::Instant::now();
    let mut silent = Client::connect(&srv.path).await;
    let r: Response = silent.recv().await;
    assert!(refused(&r, "identification timeout"), "{r:?}");
    assert_eq!(silent.line().await, None, "then closed");
    let took = started.elapsed();
    assert!(
        took >= control::IDENTIFY_TIMEOUT && took < control::IDENTIFY_TIMEOUT * 2,
        "closed after {took:?}"
    );
    assert_eq!(refusals(&srv.path).await.get("identify_timeout"), Some(&1));
}

#[tokio::test]
async fn an_idle_operator_connection_is_closed_but_a_subscriber_is_not() {
    let idle = Duration::from_millis(300);
    let srv = start_policy(
        64,
        control::DEFAULT_MAX_CONNECTIONS,
        AccessPolicy {
            idle_timeout: idle,
            ..AccessPolicy::default()
        },
    )
    .await;
    let mut operator = Client::connect(&srv.path).await;
    operator.send(&Request::Status).await;
    let _: Response = operator.recv().await;
    let asked = tokio::time::Instant::now();
    let mut lbd = Client::connect(&srv.path).await;
    lbd.subscribe("lbd").await;
    let r: Response = operator.recv().await;
    assert!(refused(&r, "idle"), "{r:?}");
    assert!(
        asked.elapsed() >= idle,
        "closed early: {:?}",
        asked.elapsed()
    );
    assert_eq!(operator.line().await, None);
    // The subscriber outlives several idle timeouts (it only reads).
    tokio::time::sleep(idle * 3).await;
    srv.events
        .send(event(1, "web", 51, "master"))
        .expect("subscribed");
    let _: StateEvent = lbd.recv().await;
    let _: StateEvent = lbd.recv().await;
    let ev: StateEvent = lbd.recv().await;
    assert_eq!(ev.state, "master");
}

#[tokio::test]
async fn a_subscriber_hears_keepalives_while_nothing_happens() {
    let srv = start().await;
    let mut lbd = Client::connect(&srv.path).await;
    lbd.subscribe("lbd").await;
    lbd.skip_alive = false;
    let _: StateEvent = lbd.recv().await;
    let _: StateEvent = lbd.recv().await;
    // Adverts every 100 cs: a keepalive every 100 ms (the upper bound).
    let started = tokio::time::Instant::now();
    for _ in 0..3 {
        let r: Response = lbd.recv().await;
        assert_eq!(r, Response::Alive);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(900),
        "three keepalives took {took:?}"
    );
}

#[tokio::test]
async fn a_socket_directory_others_can_enter_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("vrrpd.sock");
    let err = control::bind(&path).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("0755"),
        "names the directory and its mode: {text}"
    );
    assert!(!path.exists(), "nothing was bound");
    // A foreign group with access is refused too; none or ours is fine.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::chown(dir.path(), Some(0), Some(NOBODY)).expect("chgrp");
    let err = control::bind(&path).err().expect("refused");
    assert!(err.to_string().contains("group 65534"), "{err}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    drop(control::bind(&path).expect("0700 is fine whatever the group"));
    std::os::unix::fs::chown(dir.path(), Some(0), Some(0)).expect("chgrp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).expect("chmod");
    control::bind(&path).expect("0750 root:root is fine");
}

#[tokio::test]
async fn garbage_does_not_count_as_identification() {
    let srv = start().await;
    let started = tokio::time::Instant::now();
    let mut c = Client::connect(&srv.path).await;
    // Malformed lines more often than the timeout: each gets its error, none identifies.
    for _ in 0..3 {
        c.send_raw(b"{not json}\n").await;
        let r: Response = c.recv().await;
        assert!(refused(&r, "malformed"), "{r:?}");
        tokio::time::sleep(control::IDENTIFY_TIMEOUT / 3).await;
    }
    let r: Response = c.recv().await;
    assert!(refused(&r, "identification timeout"), "{r:?}");
    // Counted from the connect, not from the last malformed line (which would be ~1.67 s).
    let took = started.elapsed();
    assert!(
        took < control::IDENTIFY_TIMEOUT + Duration::from_millis(300),
        "closed after {took:?}"
    );
}
