//! Upstream timeouts against real lbd processes: connect timeout and response timeout.
//!
//! Already covered elsewhere, so not repeated here: a slow single backend answering 504 at
//! `backend_response_ms` (`health.rs`) and an idle keep-alive client closed at
//! `client_idle_ms` (`lifecycle.rs`).
//!
//! - [`Blackhole`]: a loopback address whose SYNs go unanswered, so a connect to it neither
//!   succeeds nor is refused: the only way to exercise `timeouts.connect_ms` on loopback.
//! - [`Silent`]: a backend that accepts and reads the request but never answers.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a connect to the blackhole is given before we call it unanswered. Loopback
/// connects that are answered finish in microseconds.
const UNANSWERED: Duration = Duration::from_millis(300);

/// A listener that never accepts, with its accept queue already full.
///
/// Linux drops an incoming SYN while the listener's accept queue is full (with
/// `net.ipv4.tcp_abort_on_overflow = 0`, the default, it drops rather than resets), and the
/// queue of a `listen(0)` socket holds one connection. Once a filler connection sits in it,
/// every later connect hangs in SYN-SENT until the connector gives up.
struct Blackhole {
    addr: SocketAddr,
    /// Keeps the queue full (and the listener open) for as long as the test runs.
    _listener: socket2::Socket,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    async fn start() -> Blackhole {
        let listener = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("socket");
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        listener.bind(&bind.into()).expect("bind blackhole");
        listener.listen(0).expect("listen(0)");
        let addr = listener
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet address");
        // Connect until one attempt goes unanswered: the queue is then full. The kernel's
        // exact queue length for backlog 0 is an implementation detail, so don't assume it.
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(UNANSWERED, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!(
                    "connect to the blackhole failed instead of hanging ({e}); \
                     net.ipv4.tcp_abort_on_overflow = {}",
                    abort_on_overflow()
                ),
                Err(_) => break,
            }
        }
        assert!(!fillers.is_empty(), "the blackhole accepted no connection");
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }

    /// The precondition every connect-timeout test rests on: a plain connect hangs.
    async fn assert_unanswered(&self) {
        let r = tokio::time::timeout(UNANSWERED, TcpStream::connect(self.addr)).await;
        assert!(
            r.is_err(),
            "a connect to the blackhole {} must hang, got {r:?}; \
             net.ipv4.tcp_abort_on_overflow = {}",
            self.addr,
            abort_on_overflow()
        );
    }
}

fn abort_on_overflow() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_abort_on_overflow")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unreadable ({e})"))
}

/// A backend that accepts connections and reads requests but never writes a byte.
struct Silent {
    addr: SocketAddr,
    /// Connections that delivered at least one request byte.
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    async fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind silent");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    // Read until the peer closes; holding the socket open is the point.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if !counted {
                            counted = true;
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        Silent {
            addr,
            requests,
            task,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_connect_gets_504_at_the_connect_timeout() {
    let hole = Blackhole::start().await;
    hole.assert_unanswered().await;
    // One backend and no retries: the connect timeout is the whole story. Passive ejection is
    // off so the second request meets the same blackhole rather than a fast 503.
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n\
         [timeouts]\nconnect_ms = 300\nbackend_response_ms = 5000\n\
         [retries]\nattempts = 0\n\
         [[pool]]\nname = \"web\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{}\"\n",
        hole.addr
    );
    let lbd = Lbd::start(&body).await;
    for _ in 0..2 {
        let started = Instant::now();
        let r = get(lbd.listen, "/").await.expect("request");
        let took = started.elapsed();
        assert_eq!(r.status, 504, "{r:?}");
        assert_eq!(r.body, "504 gateway timeout\n");
        // At the connect timeout: not before it, and nowhere near the 5 s response timeout
        // (nor the kernel's ~1 s SYN retransmit, which would mean we waited for the kernel).
        assert!(
            took >= Duration::from_millis(280) && took < Duration::from_millis(1500) * patience(),
            "{took:?}"
        );
    }
    let series = "lbd_proxy_errors_total{kind=\"connect_timeout\",side=\"backend\"}";
    assert_eq!(metric(lbd.admin, series).await, Some(2.0));
    let backend = hole.addr.to_string();
    eventually("the failure is logged", Duration::from_secs(5), || {
        let log = lbd.log_text();
        let found = log.lines().any(|l| {
            l.contains("request failed")
                && l.contains("connect_timeout")
                && l.contains("backend side")
                && l.contains(&backend)
        });
        async move { found }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_retried_on_another_backend() {
    let hole = Blackhole::start().await;
    hole.assert_unanswered().await;
    let live = TestBackend::start("live").await;
    // Round robin over both, the blackhole never ejected: at least every other request picks it
    // and must move on to `live` after the connect timeout.
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n\
         [timeouts]\nconnect_ms = 300\nbackend_response_ms = 5000\n\
         [retries]\nattempts = 1\nmin_per_sec = 1000\n\
         [[pool]]\nname = \"web\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{}\"\n[[pool.backend]]\naddress = \"{}\"\n",
        hole.addr, live.addr
    );
    let lbd = Lbd::start(&body).await;
    let mut slow = 0u32;
    for i in 0..4 {
        let started = Instant::now();
        let r = get(lbd.listen, "/").await.expect("request");
        let took = started.elapsed();
        assert_eq!((r.status, r.backend()), (200, "live"), "request {i}: {r:?}");
        assert!(
            took < Duration::from_millis(1500) * patience(),
            "request {i}: {took:?}"
        );
        if took >= Duration::from_millis(280) {
            slow += 1;
        }
    }
    assert_eq!(live.hits(), 4);
    // Round robin sends at least every other request to the blackhole first, and each of
    // those pays exactly one connect timeout and one retry. (Not "exactly two of four": the
    // retry's own pick advances the rotation, so today every request starts at the
    // blackhole.)
    assert!(
        slow >= 2,
        "requests that waited out a connect timeout: {slow}"
    );
    assert_eq!(
        metric(lbd.admin, "lbd_retries_total").await,
        Some(f64::from(slow))
    );
    let series = "lbd_proxy_errors_total{kind=\"connect_timeout\",side=\"backend\"}";
    assert_eq!(
        metric(lbd.admin, series).await,
        Some(0.0),
        "a retried failure is not a client-visible error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_is_not_retried_even_with_another_backend() {
    let silent = Silent::start().await;
    let live = TestBackend::start("live").await;
    // Retries allowed and a second backend available, yet a request the silent backend has
    // already read must not be sent again: the backend may still be acting on it.
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n\
         [timeouts]\nbackend_response_ms = 300\n\
         [retries]\nattempts = 2\nmin_per_sec = 1000\n\
         [[pool]]\nname = \"web\"\n[pool.passive]\nconsecutive_failures = 0\n\
         [[pool.backend]]\naddress = \"{}\"\n[[pool.backend]]\naddress = \"{}\"\n",
        silent.addr, live.addr
    );
    let lbd = Lbd::start(&body).await;
    let mut timed_out = Vec::new();
    let mut ok = 0;
    for _ in 0..2 {
        let started = Instant::now();
        let r = get(lbd.listen, "/").await.expect("request");
        let took = started.elapsed();
        match r.status {
            200 => ok += 1,
            504 => {
                assert_eq!(r.body, "504 gateway timeout\n");
                timed_out.push(took);
            }
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    // Round robin: one request each.
    assert_eq!((ok, timed_out.len()), (1, 1), "{timed_out:?}");
    let took = timed_out[0];
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(2) * patience(),
        "{took:?}"
    );
    assert_eq!(silent.requests(), 1, "the silent backend saw the request");
    assert_eq!(live.hits(), 1, "the timed-out request was not replayed");
    assert_eq!(metric(lbd.admin, "lbd_retries_total").await, Some(0.0));
    let series = "lbd_proxy_errors_total{kind=\"response_timeout\",side=\"backend\"}";
    assert_eq!(metric(lbd.admin, series).await, Some(1.0));
    let backend = silent.addr.to_string();
    eventually("the failure is logged", Duration::from_secs(5), || {
        let found = lbd.log_text().lines().any(|l| {
            l.contains("request failed")
                && l.contains("response_timeout")
                && l.contains("backend side")
                && l.contains(&backend)
        });
        async move { found }
    })
    .await;
}
