//! lbd's side of the vrrpd↔lbd coupling, against a fake vrrpd: a real Unix socket speaking
//! the real `shared::control` protocol, and a real lbd process. (The real vrrpd needs
//! network namespaces; the netns suite covers the two together.)
//!
//! The VIP is emulated by 127.0.0.2 on loopback: the listener is bound only while the fake
//! says `master`, so "connection refused" means "not serving".

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use shared::control::{read_message, write_message, Heartbeat, Request, Response, StateEvent};
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::mpsc;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(5);

/// A fake vrrpd: accepts subscriptions and hands each to the test.
struct FakeVrrpd {
    path: PathBuf,
    conns: mpsc::Receiver<Conn>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeVrrpd {
    fn start(path: &Path) -> FakeVrrpd {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind fake vrrpd socket");
        let (tx, conns) = mpsc::channel(8);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                let client = match read_message::<_, Request>(&mut reader).await {
                    Ok(Some(Request::Subscribe { client })) => client,
                    other => panic!("expected subscribe, got {other:?}"),
                };
                write_message(&mut write, &Response::Subscribed { next_seq: 1 })
                    .await
                    .expect("write subscribed");
                let conn = Conn {
                    reader,
                    writer: write,
                    seq: 0,
                    client,
                    last_heartbeat: None,
                };
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
        FakeVrrpd {
            path: path.to_path_buf(),
            conns,
            accept,
        }
    }

    async fn next_conn(&mut self, within: Duration) -> Conn {
        tokio::time::timeout(within * patience(), self.conns.recv())
            .await
            .expect("lbd subscribes in time")
            .expect("acceptor alive")
    }

    /// Stop accepting and remove the socket: vrrpd is dead.
    fn kill(self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One subscribed lbd connection.
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    seq: u64,
    client: String,
    last_heartbeat: Option<Heartbeat>,
}

fn event(seq: u64, instance: &str, state: &str, draining: bool, master_down_ms: u64) -> StateEvent {
    StateEvent {
        seq,
        instance: instance.into(),
        vrid: 51,
        interface: "lo".into(),
        state: state.into(),
        priority: 100,
        vips: vec!["127.0.0.2/8".into()],
        reason: "test".into(),
        draining,
        master_down_ms,
        handoff_ms: 0,
    }
}

impl Conn {
    /// Send the next event in sequence; returns its seq.
    async fn send(&mut self, mut ev: StateEvent) -> u64 {
        self.seq += 1;
        ev.seq = self.seq;
        write_message(&mut self.writer, &ev)
            .await
            .expect("write event");
        self.seq
    }

    async fn state(&mut self, instance: &str, state: &str, master_down_ms: u64) -> u64 {
        self.send(event(0, instance, state, false, master_down_ms))
            .await
    }

    /// The next message from lbd.
    async fn recv(&mut self, within: Duration) -> Option<Request> {
        let msg = tokio::time::timeout(
            within * patience(),
            read_message::<_, Request>(&mut self.reader),
        )
        .await
        .expect("lbd talks in time")
        .expect("well-formed message");
        if let Some(Request::Heartbeat(hb)) = &msg {
            self.last_heartbeat = Some(hb.clone());
        }
        msg
    }

    /// Read until the ack of `seq` (heartbeats are remembered on the way).
    async fn wait_ack(&mut self, seq: u64, within: Duration) -> Instant {
        let deadline = Instant::now() + within * patience();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no ack of seq {seq} within {within:?}");
            match self.recv(left).await {
                Some(Request::Ack { seq: s }) if s >= seq => return Instant::now(),
                Some(_) => {}
                None => panic!("lbd closed the connection while we waited for ack {seq}"),
            }
        }
    }

    /// The next heartbeat satisfying `f`.
    async fn heartbeat_where(&mut self, what: &str, f: impl Fn(&Heartbeat) -> bool) -> Heartbeat {
        let deadline = Instant::now() + WAIT * patience();
        loop {
            assert!(
                Instant::now() < deadline,
                "no heartbeat with {what}; last: {:?}",
                self.last_heartbeat
            );
            if let Some(Request::Heartbeat(hb)) = self.recv(WAIT).await {
                if f(&hb) {
                    return hb;
                }
            }
        }
    }

    /// Until lbd closes this connection (after a seq gap).
    async fn wait_closed(&mut self, within: Duration) {
        let deadline = Instant::now() + within * patience();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "lbd kept the connection");
            match tokio::time::timeout(left, read_message::<_, Request>(&mut self.reader)).await {
                Ok(Ok(None)) | Ok(Err(_)) => return,
                Ok(Ok(Some(_))) => {}
                Err(_) => panic!("lbd kept the connection"),
            }
        }
    }
}

/// A free port on 127.0.0.2 (the emulated VIP).
fn vip_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.2:0").expect("bind 127.0.0.2:0");
    l.local_addr().expect("addr")
}

struct Pair {
    lbd: Lbd,
    fake: FakeVrrpd,
    vip: SocketAddr,
    backend: TestBackend,
    /// The config body (for a reload with `Lbd::write_config`).
    body: String,
    _sock_dir: tempfile::TempDir,
}

/// lbd with a `[vrrp]` table pointing at a fake vrrpd, one pool (with active health checks
/// when `health`), and a VIP listener of instance "web".
async fn pair(vrrp_extra: &str, health: bool) -> Pair {
    let backend = TestBackend::start("b1").await;
    let sock_dir = tempfile::tempdir().expect("tempdir");
    let sock = sock_dir.path().join("vrrpd.sock");
    let fake = FakeVrrpd::start(&sock);
    let vip = vip_addr();
    let health = if health {
        "[pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 2\n"
    } else {
        ""
    };
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\nnode_name = \"node-t\"\n\
         [vrrp]\nsocket = \"{}\"\nheartbeat_interval_ms = 50\ndrain_timeout_ms = 3000\n{vrrp_extra}\n\
         {}\n{health}\
         [[listener]]\nname = \"vip\"\naddress = \"{vip}\"\nvrrp_instance = \"web\"\n",
        sock.display(),
        pool("web", &[&backend], ""),
    );
    let lbd = Lbd::start(&body).await;
    Pair {
        lbd,
        fake,
        vip,
        backend,
        body,
        _sock_dir: sock_dir,
    }
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

async fn status(admin: SocketAddr) -> serde_json::Value {
    let r = get(admin, "/status").await.expect("/status");
    serde_json::from_str(&r.body).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_and_heartbeats_able_ready_serving() {
    let mut p = pair("unable_when_no_healthy_backend = true", true).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    assert_eq!(conn.client, "lbd");
    let hb = conn
        .heartbeat_where("able and ready", |h| h.able && h.ready)
        .await;
    assert!(hb.serving.is_empty(), "nothing is master yet: {hb:?}");
    assert!(hb.reasons.is_empty(), "{hb:?}");
    // Heartbeats keep coming at the configured interval.
    let t = Instant::now();
    for _ in 0..4 {
        conn.heartbeat_where("any", |_| true).await;
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "4 heartbeats at 50 ms took {:?}",
        t.elapsed()
    );

    // The only backend goes down: not ready, and (configured) not able.
    p.backend.set_healthy(false);
    let hb = conn
        .heartbeat_where("able=false ready=false", |h| !h.able && !h.ready)
        .await;
    assert!(
        hb.reasons
            .iter()
            .any(|r| r.contains("pool \"web\" has no healthy backend")),
        "{hb:?}"
    );
    p.backend.set_healthy(true);
    conn.heartbeat_where("able and ready again", |h| h.able && h.ready)
        .await;

    let s = status(p.lbd.admin).await;
    assert_eq!(s["node"], "node-t");
    assert_eq!(s["vrrp"]["connected"], true);
    assert!(
        s["vrrp"]["heartbeats_sent"].as_u64().unwrap_or(0) >= 5,
        "{s}"
    );

    // The CLI reads the same endpoint.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(["status", "--json", "--admin", &p.lbd.admin.to_string()])
        .output()
        .expect("run lbd status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(cli["vrrp"]["connected"], true);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(["status", "--admin", &p.lbd.admin.to_string()])
        .output()
        .expect("run lbd status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("node node-t") && text.contains("connected"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_binds_before_the_ack_and_backup_stops_accepting() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    conn.heartbeat_where("first heartbeat", |_| true).await;
    assert!(
        refused(p.vip).await,
        "VIP listener must not be bound before master"
    );

    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    // The ack means "bound": a request right after it succeeds, no retry.
    let r = get(p.vip, "/x")
        .await
        .expect("VIP answers right after the ack");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "b1");
    assert_eq!(
        r.headers.get("x-lbpair-node").map(|v| v.as_bytes()),
        Some(&b"node-t"[..])
    );
    // The heartbeat sent with the ack already names the instance.
    assert_eq!(
        conn.last_heartbeat.as_ref().map(|h| h.serving.clone()),
        Some(vec!["web".to_string()])
    );
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["instances"][0]["state"], "master", "{s}");
    assert_eq!(s["vrrp"]["instances"][0]["serving"], true, "{s}");
    // The same event again is idempotent.
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    assert_eq!(get(p.vip, "/x").await.map(|r| r.status), Ok(200));

    let seq = conn.state("web", "backup", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    assert!(
        refused(p.vip).await,
        "backup: the listener stopped accepting before the ack"
    );
    conn.heartbeat_where("serving nothing", |h| h.serving.is_empty())
        .await;

    // Fault and master again.
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    assert_eq!(get(p.vip, "/x").await.map(|r| r.status), Ok(200));
    let seq = conn.state("web", "fault", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    assert!(refused(p.vip).await);
}

/// A keep-alive client connection to `addr`.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx
}

fn req(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(path)
        .header("host", "test.local")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// The `backup` that ends a switchover; returns its seq once lbd has stopped accepting.
async fn hand_over(conn: &mut Conn, vip: SocketAddr) -> u64 {
    let mut handed_over = event(0, "web", "backup", false, 3000);
    handed_over.reason = "switchover_complete".into();
    let seq = conn.send(handed_over).await;
    eventually(
        "backup: no new connection is accepted",
        WAIT,
        || async move { refused(vip).await },
    )
    .await;
    seq
}

/// Sends `path` on `conn` in the background once the backend has seen it; resolves to
/// (whole body received, the response's `Connection` header).
async fn in_flight(
    p: &Pair,
    mut conn: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &'static str,
) -> tokio::task::JoinHandle<(bool, Option<http::HeaderValue>)> {
    conn.ready().await.expect("keep-alive connection reusable");
    let task = tokio::spawn(async move {
        let r = conn.send_request(req(path)).await.expect("slow response");
        let close = r.headers().get("connection").cloned();
        let body = r.into_body().collect().await.map(|b| b.to_bytes());
        (body.is_ok(), close)
    });
    eventually("slow request reached the backend", WAIT, || {
        let paths = p.backend.paths.clone();
        async move {
            paths
                .lock()
                .map(|p| p.iter().any(|x| x == path))
                .unwrap_or(false)
        }
    })
    .await;
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_drain_keeps_keepalive_and_backup_acks_once_idle() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;

    // Before the drain a connection is kept alive.
    let mut ka = client(p.vip).await;
    let r = ka.send_request(req("/before")).await.expect("response");
    assert!(r.headers().get("connection").is_none(), "{:?}", r.headers());
    let _ = r.into_body().collect().await;

    // A slow request is in flight on that connection when the drain starts.
    let slow_sent = Instant::now();
    let slow = in_flight(&p, ka, "/slow/700").await;
    let drain_seq = conn.send(event(0, "web", "master", true, 3000)).await;

    // Make-before-break: new connections are still accepted during the drain, and
    // keep-alive stays on (a client pushed onto a fresh handshake now could have it cut by
    // the MAC move).
    let r = get(p.vip, "/during")
        .await
        .expect("accepted during the drain");
    assert_eq!(r.status, 200);
    assert!(r.headers.get("connection").is_none(), "{:?}", r.headers);

    let acked = conn.wait_ack(drain_seq, WAIT).await;
    let (complete, close) = slow.await.expect("join");
    assert!(complete, "the in-flight response was delivered whole");
    assert!(
        close.is_none(),
        "keep-alive stays on while draining: {close:?}"
    );
    // The backend answers 700 ms after it got the request; the ack waits for that answer
    // (but not for the 3 s drain timeout).
    let waited = acked.duration_since(slow_sent);
    assert!(
        waited >= Duration::from_millis(700),
        "the drain ack came {waited:?} after the slow request, before it finished"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "the drain ack waited for the timeout ({waited:?}), not for the request"
    );
    // Heartbeats kept flowing during the drain (vrrpd would call a silent lbd dead).
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["instances"][0]["draining"], true, "{s}");

    // The peer has taken over: backup. A request accepted after the drain began is still
    // in flight; vrrpd keeps the VIP until lbd acks, so lbd acks only once it is answered.
    let late = in_flight(&p, client(p.vip).await, "/slow/600").await;
    let late_sent = Instant::now();
    let seq = hand_over(&mut conn, p.vip).await;
    let acked = conn.wait_ack(seq, WAIT).await;
    let (complete, close) = late.await.expect("join");
    assert!(complete, "the late request was answered whole");
    assert_eq!(
        close.as_ref().map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "backup: the connection closes after its last response"
    );
    let waited = acked.duration_since(late_sent);
    assert!(
        waited >= Duration::from_millis(500),
        "the backup ack came {waited:?} after the late request, before it was answered"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "the backup ack waited for the timeout ({waited:?}), not for the request"
    );

    // Master again: keep-alive as before.
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    let r = get(p.vip, "/after").await.expect("serving again");
    assert!(
        r.headers.get("connection").is_none(),
        "drain mode ended: {:?}",
        r.headers
    );
}

/// Preempted (or a healed partition): vrrpd yields to a better master with `backup` and
/// reason `higher_priority_advert` / `equal_priority_higher_address`, and keeps its copy of
/// the VIP until lbd acks, as at the end of a switchover. lbd stops accepting at once and
/// acks only once the request in flight is answered; a plain `backup` (a fault, say) is
/// acked at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_for_a_better_master_acks_once_idle() {
    for reason in ["higher_priority_advert", "equal_priority_higher_address"] {
        let mut p = pair("", false).await;
        let mut conn = p.fake.next_conn(WAIT).await;
        let seq = conn.state("web", "master", 3000).await;
        conn.wait_ack(seq, WAIT).await;
        let slow = in_flight(&p, client(p.vip).await, "/slow/600").await;
        let sent = Instant::now();
        let mut yielded = event(0, "web", "backup", false, 3000);
        yielded.reason = reason.into();
        let seq = conn.send(yielded).await;
        let vip = p.vip;
        eventually(
            "backup: no new connection is accepted",
            WAIT,
            || async move { refused(vip).await },
        )
        .await;
        let acked = conn.wait_ack(seq, WAIT).await;
        let (complete, _) = slow.await.expect("join");
        assert!(
            complete,
            "{reason}: the in-flight request was answered whole"
        );
        let waited = acked.duration_since(sent);
        assert!(
            waited >= Duration::from_millis(400),
            "{reason}: the backup ack came {waited:?} after the request, before it was answered"
        );
        assert!(
            waited < Duration::from_millis(2500),
            "{reason}: the backup ack waited for the timeout ({waited:?}), not for the request"
        );
    }
}

/// A handover with a hand-off window (`handoff_ms`): the new master forwards the packets
/// of our connections to us for that long, so lbd keeps accepting on the VIP for the
/// window (a handshake that straddled the MAC move completes here), answers with
/// `Connection: close`, acks only after the window and once idle, and stops accepting then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_with_a_handoff_window_keeps_accepting_for_the_window() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    let mut handed_over = event(0, "web", "backup", false, 3000);
    handed_over.reason = "higher_priority_advert".into();
    handed_over.handoff_ms = 800;
    let sent = Instant::now();
    let seq = conn.send(handed_over).await;
    // Inside the window: a new connection is still accepted and answered, and once the
    // event is handled its response closes the connection.
    let vip = p.vip;
    eventually(
        "backup in the window: accepted, then closed",
        WAIT,
        || async move {
            let r = get(vip, "/straddler")
                .await
                .expect("accepted during the hand-off window");
            r.status == 200
                && r.headers.get("connection").map(|v| v.as_bytes()) == Some(&b"close"[..])
        },
    )
    .await;
    assert!(
        sent.elapsed() < Duration::from_millis(800),
        "the check ran inside the window"
    );
    // A request accepted in the window and still in flight at its end holds the ack.
    let slow_sent = Instant::now();
    let slow = in_flight(&p, client(p.vip).await, "/slow/900").await;
    let acked = conn.wait_ack(seq, WAIT).await;
    let waited = acked.duration_since(sent);
    assert!(
        waited >= Duration::from_millis(800),
        "acked after {waited:?}, inside the hand-off window"
    );
    let (complete, _) = slow.await.expect("join");
    assert!(complete, "the request in flight was answered whole");
    assert!(
        acked.duration_since(slow_sent) >= Duration::from_millis(900),
        "acked before the request accepted in the window was answered"
    );
    eventually(
        "after the ack: no new connection is accepted",
        WAIT,
        || async move { refused(vip).await },
    )
    .await;
}

/// Master again while lbd still waits for the requests of a handover to finish: the new
/// event is handled at once (vrrpd adds the VIP on its ack), not after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_again_during_the_handover_wait_is_handled_at_once() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    let slow = in_flight(&p, client(p.vip).await, "/slow/1500").await;
    let backup_seq = hand_over(&mut conn, p.vip).await;
    let sent = Instant::now();
    let master_seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(master_seq, WAIT).await;
    let waited = sent.elapsed();
    assert!(
        waited < Duration::from_millis(1000),
        "the master event waited {waited:?} for the handover's requests"
    );
    assert!(backup_seq < master_seq);
    let r = get(p.vip, "/again").await.expect("serving again");
    assert_eq!(r.status, 200);
    let (complete, _) = slow.await.expect("join");
    assert!(complete, "the request in flight was answered whole");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_vrrpd_restart_keeps_serving_a_dead_vrrpd_stops_it() {
    let mut p = pair("reconnect_interval_ms = 20", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 600).await;
    conn.wait_ack(seq, WAIT).await;
    assert_eq!(get(p.vip, "/").await.map(|r| r.status), Ok(200));

    // vrrpd restarts: the connection drops, lbd keeps serving while it reconnects.
    drop(conn);
    let lost_at = Instant::now();
    let mut conn = p.fake.next_conn(WAIT).await;
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "serving while vrrpd restarts"
    );
    // Its snapshot: undecided at first (it waits for lbd to report serving), then master.
    let mut init = event(0, "web", "initialize", false, 0);
    init.reason = "snapshot".into();
    let seq = conn.send(init).await;
    conn.wait_ack(seq, WAIT).await;
    let hb = conn
        .heartbeat_where("a heartbeat after the snapshot", |_| true)
        .await;
    assert_eq!(
        hb.serving,
        vec!["web".to_string()],
        "still serving: vrrpd resumes on this"
    );
    let seq = conn.state("web", "master", 600).await;
    conn.wait_ack(seq, WAIT).await;
    // Past the old master_down_ms: still serving, vrrpd vouched again.
    tokio::time::sleep_until(lost_at + Duration::from_millis(1000)).await;
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "a quick restart must not stop serving"
    );
    assert_eq!(status(p.lbd.admin).await["vrrp"]["connects"], 2);

    // vrrpd dies for good: serving stops after master_down_ms (600), not before.
    drop(conn);
    let fake = std::mem::replace(
        &mut p.fake,
        FakeVrrpd::start(&p._sock_dir.path().join("unused.sock")),
    );
    fake.kill();
    let died = Instant::now();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "not before the lost timeout"
    );
    eventually(
        "VIP listener stopped after the lost timeout",
        WAIT,
        || async { refused(p.vip).await },
    )
    .await;
    let after = died.elapsed();
    assert!(
        after >= Duration::from_millis(550),
        "stopped after {after:?}, before master_down_ms"
    );
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["connected"], false, "{s}");
    assert_eq!(s["vrrp"]["instances"][0]["state"], "lost", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seq_gap_makes_lbd_resubscribe() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    // Skip seq 2.
    conn.seq += 1;
    let gap = conn.state("web", "backup", 3000).await;
    assert_eq!(gap, 3);
    conn.wait_closed(WAIT).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    // The lost event was never acted on; the fresh snapshot is.
    assert_eq!(get(p.vip, "/").await.map(|r| r.status), Ok(200));
    let mut snap = event(0, "web", "backup", false, 3000);
    snap.reason = "snapshot".into();
    let seq = conn.send(snap).await;
    assert_eq!(seq, 1, "a new subscription starts at seq 1");
    conn.wait_ack(seq, WAIT).await;
    assert!(refused(p.vip).await);
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["seq_gaps"], 1, "{s}");
    assert_eq!(s["vrrp"]["connects"], 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reports_unable_and_serves_until_vrrpd_moves_the_vip() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    p.lbd.signal("TERM");
    let hb = conn
        .heartbeat_where("able=false after SIGTERM", |h| !h.able)
        .await;
    assert!(
        hb.reasons.iter().any(|r| r.contains("shutting down")),
        "{hb:?}"
    );
    assert_eq!(hb.serving, vec!["web".to_string()], "still serving the VIP");
    // vrrpd hasn't moved the VIP yet: lbd must still answer on it.
    assert_eq!(get(p.vip, "/").await.map(|r| r.status), Ok(200));
    // vrrpd faults (VIP removed), lbd stops the listener, acks, and exits.
    let seq = conn.state("web", "fault", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    let status = p.lbd.wait_exit(WAIT).await;
    assert!(status.success(), "{status}");
    assert!(refused(p.vip).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_vip_listeners_bound_only_while_master() {
    let mut p = pair("", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    let reloads = |admin| async move {
        metric(admin, "lbd_config_reloads_total{result=\"ok\"}")
            .await
            .unwrap_or(0.0)
    };
    p.lbd.write_config(&p.body);
    p.lbd.signal("HUP");
    eventually("reload 1 done", WAIT, || async {
        reloads(p.lbd.admin).await >= 1.0
    })
    .await;
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "master: a reload keeps the VIP listener"
    );
    let seq = conn.state("web", "backup", 3000).await;
    conn.wait_ack(seq, WAIT).await;
    p.lbd.signal("HUP");
    eventually("reload 2 done", WAIT, || async {
        reloads(p.lbd.admin).await >= 2.0
    })
    .await;
    assert!(
        refused(p.vip).await,
        "backup: a reload must not bind the VIP listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_vrrpd_with_its_socket_open_is_lost() {
    let mut p = pair("reconnect_interval_ms = 20", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn.state("web", "master", 600).await;
    conn.wait_ack(seq, WAIT).await;
    // A live vrrpd answers every heartbeat.
    let mut answered = 0;
    for _ in 0..200 {
        if answered >= 5 {
            break;
        }
        if let Some(Request::Heartbeat(_)) = conn.recv(WAIT).await {
            write_message(&mut conn.writer, &Response::Alive)
                .await
                .expect("write alive");
            answered += 1;
        }
    }
    assert_eq!(answered, 5, "lbd heartbeats");
    assert_eq!(get(p.vip, "/").await.map(|r| r.status), Ok(200));

    // vrrpd hangs: its socket stays open (we keep `conn`), it answers nothing and accepts
    // no new connection.
    let fake = std::mem::replace(
        &mut p.fake,
        FakeVrrpd::start(&p._sock_dir.path().join("unused.sock")),
    );
    fake.kill();
    let hung = Instant::now();
    eventually("lbd notices the silent vrrpd", WAIT, || async {
        status(p.lbd.admin).await["vrrp"]["connected"] == false
    })
    .await;
    let noticed = hung.elapsed();
    // Dropped at the first of: the silence limit, and the lost timeout (master_down_ms 600)
    // after which lbd gives the instance up and resubscribes.
    let limit = lbd::coupling::link::silence_limit(Duration::from_millis(50))
        .min(Duration::from_millis(600));
    assert!(
        noticed + Duration::from_millis(100) >= limit,
        "dropped after {noticed:?}, before {limit:?}"
    );
    // Then, as for a dead vrrpd, serving stops after master_down_ms.
    eventually("VIP listener stopped", WAIT, || async {
        refused(p.vip).await
    })
    .await;
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["instances"][0]["state"], "lost", "{s}");
    drop(conn);
}

/// With `[peer]`, lbd is not ready (so vrrpd doesn't preempt to it) while its soft state is
/// cold; here no peer answers, so it turns warm at `warm_timeout_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_peer_state_keeps_lbd_unready_until_warm() {
    let keys = tempfile::tempdir().expect("tempdir");
    let psk = keys.path().join("peer.key");
    write_mode(
        &psk,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
        0o600,
    );
    let extra = format!(
        "reconnect_interval_ms = 20\n\n[peer]\nnode_id = \"a\"\npeer_node_id = \"b\"\n\
         cluster_id = \"t\"\nlisten = \"{}\"\npeer = \"{}\"\npsk_file = \"{}\"\n\
         warm_timeout_ms = 1500\n",
        free_addr(),
        free_addr(),
        psk.display()
    );
    let started = Instant::now();
    let mut p = pair(&extra, false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let cold = conn.heartbeat_where("a heartbeat", |_| true).await;
    assert!(!cold.ready, "ready while cold: {cold:?}");
    assert!(
        cold.reasons.iter().any(|r| r.starts_with("peer_warm")),
        "{cold:?}"
    );
    assert!(cold.able, "cold state must not make lbd unable: {cold:?}");
    conn.heartbeat_where("ready once warm", |hb| hb.ready).await;
    let warm_after = started.elapsed();
    assert!(
        warm_after >= Duration::from_millis(1400),
        "ready after {warm_after:?}, before warm_timeout_ms"
    );
    let s = status(p.lbd.admin).await;
    assert_eq!(s["peer"]["phase"], "warm", "{s}");
}

/// vrrpd stopped (SIGSTOP) keeps its socket open and says nothing. lbd must stop serving
/// once vrrpd has been silent for the lost timeout (the instance's `master_down_ms`: by then
/// the peer holds the VIP), measured from vrrpd's last keepalive, not from a disconnect
/// that never comes; and serve again once a resumed vrrpd says it is still master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_vrrpd_is_lost_after_the_lost_timeout_with_its_socket_open() {
    const MASTER_DOWN: Duration = Duration::from_millis(400);
    let mut p = pair("reconnect_interval_ms = 20", false).await;
    let mut conn = p.fake.next_conn(WAIT).await;
    let seq = conn
        .state("web", "master", MASTER_DOWN.as_millis() as u64)
        .await;
    conn.wait_ack(seq, WAIT).await;
    assert_eq!(get(p.vip, "/").await.map(|r| r.status), Ok(200));
    // A live vrrpd's keepalives, for longer than the lost timeout: serving goes on.
    let keepalives_until = Instant::now() + MASTER_DOWN * 2;
    while Instant::now() < keepalives_until {
        write_message(&mut conn.writer, &Response::Alive)
            .await
            .expect("write alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "keepalives keep lbd serving"
    );
    write_message(&mut conn.writer, &Response::Alive)
        .await
        .expect("write alive");
    let stopped = Instant::now();
    // From here the fake is "stopped": its socket stays open (we hold `conn`), silent.
    let deadline = stopped + WAIT * patience();
    while !refused(p.vip).await {
        assert!(Instant::now() < deadline, "lbd never stopped serving");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = stopped.elapsed();
    eprintln!("lbd stopped serving {took:?} after vrrpd's last keepalive");
    assert!(
        took + Duration::from_millis(5) >= MASTER_DOWN,
        "stopped after {took:?}, before the lost timeout {MASTER_DOWN:?}"
    );
    assert!(
        took <= MASTER_DOWN + Duration::from_millis(100),
        "stopped after {took:?}: more than 100 ms beyond the lost timeout {MASTER_DOWN:?}"
    );
    let s = status(p.lbd.admin).await;
    assert_eq!(s["vrrp"]["instances"][0]["state"], "lost", "{s}");
    // vrrpd resumes (SIGCONT) still master: it won't repeat "master" on the old stream, so
    // lbd has resubscribed to get the snapshot, and serves again once it has it.
    let mut again = p.fake.next_conn(WAIT).await;
    let seq = again
        .state("web", "master", MASTER_DOWN.as_millis() as u64)
        .await;
    again.wait_ack(seq, WAIT).await;
    assert_eq!(
        get(p.vip, "/").await.map(|r| r.status),
        Ok(200),
        "serving again after the resumed vrrpd's snapshot"
    );
    drop(conn);
}
