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
use vrrpd::control::{self, ControlHandle, SubscriberInfo, Subscribers, SNAPSHOT_REASON};

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
    let dir = tempfile::tempdir().expect("tempdir");
    // A parent that doesn't exist yet: bind creates it.
    let path = dir.path().join("run").join("vrrpd.sock");
    let (status_tx, status_rx) = watch::channel(status());
    let (events, _) = broadcast::channel(capacity);
    let listener = control::bind(&path)
        .expect("bind")
        .with_max_connections(max_connections);
    let subscribers = listener.subscribers();
    let shutdown = Shutdown::new();
    let handle = ControlHandle {
        status: status_rx,
        events: events.clone(),
        admin: None,
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
}

impl Client {
    async fn connect(path: &Path) -> Client {
        let stream = UnixStream::connect(path).await.expect("connect");
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
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

    /// The next line, or `None` at EOF.
    async fn line(&mut self) -> Option<String> {
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
    match request(&srv.path, &Request::Status).await.expect("status") {
        Response::Status(s) => assert_eq!(s, status()),
        other => panic!("unexpected {other:?}"),
    }
    let mut newer = status();
    newer.instances[0].state = "master".into();
    srv.status.send_replace(newer.clone());
    match request(&srv.path, &Request::Status).await.expect("status") {
        Response::Status(s) => assert_eq!(s, newer),
        other => panic!("unexpected {other:?}"),
    }
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
    c.send(&Request::Heartbeat(shared::control::Heartbeat {
        able: true,
        ready: true,
        serving: vec![],
        reasons: vec![],
    }))
    .await;
    let r: Response = c.recv().await;
    assert_eq!(r, Response::Alive);
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
async fn connections_over_the_limit_are_refused_with_a_message() {
    let srv = start_with(16, 1).await;
    let mut first = Client::connect(&srv.path).await;
    first.subscribe("lbd").await;
    let mut second = Client::connect(&srv.path).await;
    let r: Response = second.recv().await;
    assert!(
        matches!(r, Response::Error { ref message } if message.contains("too many")),
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
