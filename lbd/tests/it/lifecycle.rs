//! Reload, drain, fast exit and WebSocket tunnelling on a real lbd process.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match get(addr, "/load").await {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::SeqCst),
                            Ok(r) => {
                                eprintln!("load: status {} {}", r.status, r.body);
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                            Err(e) => {
                                eprintln!("load: {e}");
                                failed.fetch_add(1, Ordering::SeqCst)
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("load task");
        }
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_nothing_and_bad_reload_keeps_old_config() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let v1 = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    );
    let lbd = Lbd::start(&v1).await;
    let load = Load::start(lbd.listen, 4);
    eventually("load flowing", Duration::from_secs(5), || async {
        load.ok() > 50
    })
    .await;

    let v2 = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a, &b], "")
    );
    lbd.write_config(&v2);
    lbd.signal("HUP");
    eventually("generation 2", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_generation").await == Some(2.0)
    })
    .await;
    eventually("b receives traffic", Duration::from_secs(5), || async {
        b.hits() > 20
    })
    .await;

    // A broken file: unknown pool and a bad address. Rejected, old config keeps serving.
    let bad = "default_pool = \"nope\"\n[global]\n#GLOBAL\n[[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"bad\"\n";
    lbd.write_config(bad);
    lbd.signal("HUP");
    eventually("reload error counted", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_reloads_total{result=\"error\"}").await == Some(1.0)
    })
    .await;
    let ok_before = load.ok();
    eventually("still serving", Duration::from_secs(5), || async {
        load.ok() > ok_before + 50
    })
    .await;
    assert_eq!(metric(lbd.admin, "lbd_config_generation").await, Some(2.0));
    let (ok, failed) = load.finish().await;
    assert!(ok > 100);
    assert_eq!(failed, 0, "no request failed across reloads");
    let log = lbd
        .log_when(|l| {
            l.contains("config reload rejected")
                && l.contains("lbd.toml:1:1: `default_pool`: unknown pool \"nope\"")
                && l.contains("`pool[0].backend[0].address`: \"bad\"")
        })
        .await;
    assert!(log.contains("config reload rejected"), "{log}");
    assert!(
        log.contains("lbd.toml:1:1: `default_pool`: unknown pool \"nope\""),
        "{log}"
    );
    assert!(
        log.contains("`pool[0].backend[0].address`: \"bad\""),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_health_state_of_unchanged_backends() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    b.set_healthy(false);
    let cfg = |interval: u32, fall: u32, extra_route: &str| {
        format!(
            "default_pool = \"web\"\n[global]\n#GLOBAL\n{}{extra_route}",
            pool(
                "web",
                &[&a, &b],
                &format!("[pool.health]\npath = \"/healthz\"\ninterval_ms = {interval}\ntimeout_ms = 50\nfall = {fall}\nrise = 1"),
            )
        )
    };
    let lbd = Lbd::start(&cfg(50, 1, "")).await;
    let series = format!("lbd_backend_up{{pool=\"web\",backend=\"{}\"}}", b.addr);
    eventually("b down", Duration::from_secs(5), || async {
        metric(lbd.admin, &series).await == Some(0.0)
    })
    .await;
    // A fresh backend would start Healthy and need 3 failed probes 60 s apart to go down.
    lbd.write_config(&cfg(
        60_000,
        3,
        "[[route]]\npath_prefix = \"/other\"\npool = \"web\"\n",
    ));
    lbd.signal("HUP");
    eventually("generation 2", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_generation").await == Some(2.0)
    })
    .await;
    assert_eq!(metric(lbd.admin, &series).await, Some(0.0));
    let before = b.hits();
    for _ in 0..20 {
        assert_eq!(get(lbd.listen, "/").await.expect("get").backend(), "a");
    }
    assert_eq!(
        b.hits(),
        before,
        "the down backend stayed down across the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let a = TestBackend::start("a").await;
    let mut lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    let addr = lbd.listen;
    let slow = tokio::spawn(async move { get(addr, "/slow/1500").await });
    eventually(
        "slow request reached the backend",
        Duration::from_secs(5),
        || async { a.hits() == 1 },
    )
    .await;
    lbd.signal("TERM");
    eventually("listener closed", Duration::from_secs(5), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    let r = slow
        .await
        .expect("join")
        .expect("slow request completes during the drain");
    assert_eq!((r.status, r.backend()), (200, "a"));
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", lbd.log_text());
    assert!(lbd.log_text().contains("drained"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_fast() {
    let a = TestBackend::start("a").await;
    let mut lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    let addr = lbd.listen;
    let slow = tokio::spawn(async move { get(addr, "/slow/5000").await });
    eventually("slow request in flight", Duration::from_secs(5), || async {
        a.hits() == 1
    })
    .await;
    let started = tokio::time::Instant::now();
    lbd.signal("INT");
    let status = lbd.wait_exit(Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(130));
    assert!(
        slow.await.expect("join").is_err(),
        "the in-flight request was cut"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_tunnelled() {
    let a = TestBackend::start("a").await;
    let lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    let (mut s, head) = websocket_handshake(lbd.listen).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    for msg in [&b"hello"[..], b"second frame"] {
        s.write_all(msg).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(buf, msg);
    }
    assert_eq!(metric(lbd.admin, "lbd_upgrades_total").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed() {
    let a = TestBackend::start("a").await;
    let lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[timeouts]\nclient_idle_ms = 300\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    let mut s = TcpStream::connect(lbd.listen).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let (text, closed) = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "idle keep-alive connection must be closed");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_limit_holds_new_clients_back() {
    let a = TestBackend::start("a").await;
    let lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\nmax_client_conns = 1\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    // The readiness probe went to the admin listener, so the one slot is free.
    let mut holder = TcpStream::connect(lbd.listen).await.expect("connect");
    holder
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    let n = holder.read(&mut buf).await.expect("first response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let addr = lbd.listen;
    let waiting = tokio::spawn(async move { get(addr, "/second").await });
    // The second client is not served while the first connection is open...
    let held = tokio::time::timeout(Duration::from_millis(500), async {
        while a.hits() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(held.is_err(), "second client was served over the limit");
    // ...and is served as soon as it closes.
    drop(holder);
    let r = waiting.await.expect("join").expect("second");
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_starts_and_stops_listeners() {
    let a = TestBackend::start("a").await;
    let base = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    );
    let lbd = Lbd::start(&base).await;
    let extra = free_addr();
    lbd.write_config(&format!(
        "{base}[[listener]]\nname = \"extra\"\naddress = \"{extra}\"\n"
    ));
    lbd.signal("HUP");
    eventually("extra listener serves", Duration::from_secs(5), || async {
        get(extra, "/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    lbd.write_config(&base);
    lbd.signal("HUP");
    eventually("extra listener closed", Duration::from_secs(5), || async {
        TcpStream::connect(extra).await.is_err()
    })
    .await;
    assert_eq!(
        get(lbd.listen, "/").await.expect("main listener").status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_the_old_config_after_its_backend_is_removed() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let lbd = Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    ))
    .await;
    let addr = lbd.listen;
    let slow = tokio::spawn(async move { get(addr, "/slow/1000").await });
    eventually("slow request on a", Duration::from_secs(5), || async {
        a.hits() == 1
    })
    .await;
    lbd.write_config(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&b], "")
    ));
    lbd.signal("HUP");
    eventually("generation 2", Duration::from_secs(5), || async {
        metric(lbd.admin, "lbd_config_generation").await == Some(2.0)
    })
    .await;
    assert_eq!(get(lbd.listen, "/").await.expect("new").backend(), "b");
    let r = slow.await.expect("join").expect("old request");
    assert_eq!((r.status, r.backend()), (200, "a"));
    assert_eq!(a.hits(), 1, "no new request went to the removed backend");
}

/// `Type=notify` through the real binary: the test plays systemd with a datagram socket in
/// `NOTIFY_SOCKET`. READY=1 once serving, WATCHDOG=1 at half `WATCHDOG_USEC` (pinged only
/// after every worker runtime has run a task), RELOADING=1 then READY=1 around a reload —
/// also a rejected one — and STOPPING=1 on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_watchdog_reload_and_stopping() {
    let a = TestBackend::start("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}",
        pool("web", &[&a], "")
    );
    let mut lbd = Lbd::start_env(
        &body,
        &[
            ("NOTIFY_SOCKET", notify.as_os_str()),
            ("WATCHDOG_USEC", std::ffi::OsStr::new("200000")),
        ],
    )
    .await;
    let (sock, ready) = notify_until(sock, "READY=1").await;
    assert!(ready.iter().any(|m| m.contains("STATUS=")), "{ready:?}");
    let pings_from = tokio::time::Instant::now();
    let mut sock = sock;
    for _ in 0..5 {
        sock = notify_until(sock, "WATCHDOG=1").await.0;
    }
    assert!(
        pings_from.elapsed() < Duration::from_millis(900),
        "5 pings took {:?}, every 100 ms expected",
        pings_from.elapsed()
    );
    // A rejected reload still ends with READY=1 (systemd would otherwise wait on it).
    lbd.write_config("this is not toml [");
    lbd.signal("HUP");
    let (sock, _) = notify_until(sock, "RELOADING=1").await;
    let (sock, after) = notify_until(sock, "READY=1").await;
    assert!(
        after.iter().any(|m| m.contains("rejected")),
        "the status says the reload was rejected: {after:?}"
    );
    lbd.signal("TERM");
    notify_until(sock, "STOPPING=1").await;
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", lbd.log_text());
}

/// Datagrams until one has the line `wanted`; every message seen, in order.
async fn notify_until(
    sock: std::os::unix::net::UnixDatagram,
    wanted: &'static str,
) -> (std::os::unix::net::UnixDatagram, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while tokio::time::Instant::now() < deadline {
            let Ok(n) = sock.recv(&mut buf) else { continue };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == wanted);
            seen.push(msg);
            if done {
                return (sock, seen);
            }
        }
        panic!("no {wanted}; got {seen:?}");
    })
    .await
    .expect("joined")
}
