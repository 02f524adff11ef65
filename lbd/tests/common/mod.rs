//! Shared harness for lbd's integration tests.
//!
//! - [`TestBackend`]: a small hyper server on 127.0.0.1 that answers with its own name and
//!   echoes the request headers; `/healthz` follows [`TestBackend::set_healthy`],
//!   `/slow/MS` sleeps, `/status/NNN` answers that status, `/ws` upgrades and echoes bytes.
//!   [`TestBackend::stop`] closes the listener *and* every open connection, like a killed
//!   process.
//! - [`Lbd`]: the real `lbd` binary with a temp config; killed on drop, its log printed when
//!   a test fails.
//! - [`eventually`]: poll a condition until a deadline (scaled by `LBD_TEST_PATIENCE`), never
//!   a fixed sleep.
//! - HTTP helpers: [`request`] over a fresh connection, [`raw`] for hand-written bytes,
//!   [`metric`] to read one series from `/metrics`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Multiplier for every deadline (slow CI machines): `LBD_TEST_PATIENCE=3`.
pub fn patience() -> u32 {
    std::env::var("LBD_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

/// Poll `f` until it returns true; panic with `what` after `timeout` (× patience).
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout * patience();
    loop {
        if f().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free TCP port on 127.0.0.1 (bind port 0, read it, release it).
/// A free address on 127.0.0.1 that no other caller in this test process gets, with a port
/// below Linux's ephemeral range (32768 up by default).
///
/// Why not port 0: the kernel hands a released port 0 out again, to the next `bind(0)` or as
/// the local port of a test client's `connect()`, between the moment it is picked here and the
/// moment lbd binds it, and lbd then fails to start ("Address already in use", or the listener
/// and admin address coming out equal). Ports below the ephemeral range are never picked by
/// the kernel, and a process-wide counter never picks one twice.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::AtomicU16;
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    if NEXT.load(Ordering::Relaxed) == 0 {
        // A different start per process, so two test binaries run at once rarely meet.
        let seed = (std::process::id() as u16).wrapping_mul(7919) % SPAN;
        let _ = NEXT.compare_exchange(0, FIRST + seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (port.wrapping_sub(FIRST)) % SPAN;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// Two distinct free addresses.
pub fn two_free_addrs() -> (SocketAddr, SocketAddr) {
    (free_addr(), free_addr())
}

/// An in-process HTTP backend.
#[derive(Clone)]
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests served (not counting /healthz).
    pub hits: Arc<AtomicU64>,
    /// Every request path seen (not counting /healthz).
    pub paths: Arc<Mutex<Vec<String>>>,
    healthy: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        Self::start_on(name, "127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(name: &str, addr: SocketAddr) -> TestBackend {
        let listener = TcpListener::bind(addr).await.expect("bind backend");
        let b = TestBackend {
            name: name.to_string(),
            addr: listener.local_addr().expect("addr"),
            hits: Arc::new(AtomicU64::new(0)),
            paths: Arc::new(Mutex::new(Vec::new())),
            healthy: Arc::new(AtomicBool::new(true)),
            failing: Arc::new(AtomicBool::new(false)),
            stop: CancellationToken::new(),
        };
        let me = b.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = me.stop.cancelled() => return,
                };
                let me = me.clone();
                tokio::spawn(async move {
                    let me2 = me.clone();
                    let svc = service_fn(move |req| {
                        let me = me2.clone();
                        async move { Ok::<_, Infallible>(me.handle(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades();
                    tokio::select! {
                        _ = conn => {}
                        // Dropping the connection closes the socket: a killed process.
                        _ = me.stop.cancelled() => {}
                    }
                });
            }
        });
        b
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Answer 500 to every request but /healthz.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Close the listener and every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    async fn handle(&self, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        if path == "/healthz" {
            let status = if self.healthy.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return reply(status, &self.name, "health\n".into());
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut p) = self.paths.lock() {
            p.push(path.clone());
        }
        if self.failing.load(Ordering::SeqCst) {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &self.name,
                "failing\n".into(),
            );
        }
        if let Some(ms) = path.strip_prefix("/slow/") {
            let ms: u64 = ms.parse().unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if path == "/hop" {
            // Hop-by-hop headers a proxy must not pass on to its client.
            let mut r = reply(StatusCode::OK, &self.name, "hop\n".into());
            let h = r.headers_mut();
            h.insert(http::header::CONNECTION, "x-secret".parse().expect("value"));
            h.insert("x-secret", "1".parse().expect("value"));
            h.insert("keep-alive", "timeout=5".parse().expect("value"));
            h.insert("x-kept", "1".parse().expect("value"));
            return r;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            return reply(status, &self.name, format!("{}\n", self.name));
        }
        if path == "/ws" && req.headers().contains_key(http::header::UPGRADE) {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, &self.name, String::new());
            r.headers_mut()
                .insert(http::header::CONNECTION, "upgrade".parse().expect("value"));
            r.headers_mut()
                .insert(http::header::UPGRADE, "websocket".parse().expect("value"));
            return r;
        }
        let mut body = format!("{}\n", self.name);
        for (k, v) in req.headers() {
            body.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        // Read (and count) the request body so chunked uploads complete.
        if let Ok(collected) = req.into_body().collect().await {
            let n = collected.to_bytes().len();
            body.push_str(&format!("body-bytes: {n}\n"));
        }
        reply(StatusCode::OK, &self.name, body)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        // Clones share the token; only the last one standing matters, and stopping twice is fine.
        if Arc::strong_count(&self.hits) == 1 {
            self.stop.cancel();
        }
    }
}

fn reply(status: StatusCode, name: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("x-backend", name.parse().expect("header value"));
    r
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn backend(&self) -> &str {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    send_on(stream, method, path, headers).await
}

/// One request on `stream`: a `host` header is added unless `headers` has one.
async fn send_on(
    stream: TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = Request::builder().method(method).uri(path);
    let mut has_host = false;
    for (k, v) in headers {
        has_host |= k.eq_ignore_ascii_case("host");
        b = b.header(*k, *v);
    }
    if !has_host {
        b = b.header("host", "test.local");
    }
    let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(15), tx.send_request(req))
        .await
        .map_err(|_| "request timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Send `total` GETs of `path` over `conns` concurrent keep-alive connections, request `i`
/// with the headers `headers(i)`. Returns how many answers each status got (index: status).
/// For floods of thousands of requests without a connection each.
pub async fn flood_keepalive<F>(
    addr: SocketAddr,
    conns: usize,
    total: usize,
    path: &str,
    headers: F,
) -> Result<std::collections::BTreeMap<u16, usize>, String>
where
    F: Fn(usize) -> Vec<(String, String)> + Send + Sync + 'static,
{
    let headers = Arc::new(headers);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let headers = headers.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let mut statuses = std::collections::BTreeMap::new();
            for i in (c..total).step_by(conns) {
                let mut b = Request::get(path.as_str()).header("host", "test.local");
                for (k, v) in headers(i) {
                    b = b.header(k, v);
                }
                let req = b.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
                tx.ready().await.map_err(|e| format!("request {i}: {e}"))?;
                let resp = tokio::time::timeout(Duration::from_secs(15), tx.send_request(req))
                    .await
                    .map_err(|_| format!("request {i} timed out"))?
                    .map_err(|e| format!("request {i}: {e}"))?;
                *statuses.entry(resp.status().as_u16()).or_insert(0) += 1;
                resp.into_body()
                    .collect()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(statuses)
        }));
    }
    let mut all = std::collections::BTreeMap::new();
    for t in tasks {
        for (status, n) in t.await.map_err(|e| e.to_string())?? {
            *all.entry(status).or_insert(0) += n;
        }
    }
    Ok(all)
}

pub async fn get(addr: SocketAddr, path: &str) -> Result<Resp, String> {
    request(addr, "GET", path, &[]).await
}

/// Write raw bytes, then read until the peer closes or `wait` passes. Returns what was read
/// and whether the peer closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    read_until_close(&mut s, wait).await
}

pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    let closed = loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// `/metrics` text.
pub async fn metrics(admin: SocketAddr) -> String {
    get(admin, "/metrics")
        .await
        .map(|r| r.body)
        .unwrap_or_default()
}

/// The value of one series, e.g. `lbd_backend_up{pool="web",backend="127.0.0.1:1"}`.
pub async fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    metric_in(&metrics(admin).await, series)
}

/// The value of one series in a `/metrics` text (several reads of one scrape).
pub fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// A running `lbd` process.
pub struct Lbd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub admin: SocketAddr,
    pub listen: SocketAddr,
    log: PathBuf,
}

/// The admin token every [`Lbd`] is started with (its `admin.token`, mode 0600).
pub const ADMIN_TOKEN: &str = "lbd-test-admin-token-0123456789";
/// The `Authorization` header the admin write endpoints want, as a request header pair.
pub const ADMIN_AUTH: (&str, &str) = ("authorization", "Bearer lbd-test-admin-token-0123456789");
/// The token file [`Lbd::start`] writes next to the config.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A config with one listener and the admin address filled in, then `body`. `#GLOBAL` also
/// sets `admin_token_file` ([`ADMIN_TOKEN`]); `#GLOBAL_NO_TOKEN` leaves it out.
pub fn config_with(listen: SocketAddr, admin: SocketAddr, body: &str) -> String {
    let base = format!("admin = \"{admin}\"\ndrain_timeout_ms = 5000");
    format!("{body}\n[[listener]]\nname = \"http\"\naddress = \"{listen}\"\n",)
        .replacen("#GLOBAL_NO_TOKEN", &base, 1)
        .replacen(
            "#GLOBAL",
            &format!("{base}\nadmin_token_file = \"{ADMIN_TOKEN_FILE}\""),
            1,
        )
}

/// Write `content` to `path` with `mode` (e.g. a token file).
pub fn write_mode(path: &std::path::Path, content: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).expect("write file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// An admin write request (POST) with the test token.
pub async fn admin_post(admin: SocketAddr, path: &str) -> Result<Resp, String> {
    request(admin, "POST", path, &[ADMIN_AUTH]).await
}

impl Lbd {
    /// Start lbd with `body` (which must contain a `[global]` table with the `#GLOBAL`
    /// marker line; the listener and admin address are added) and wait until it is ready.
    pub async fn start(body: &str) -> Lbd {
        Lbd::start_env(body, &[]).await
    }

    /// [`Lbd::start`] with extra environment variables.
    pub async fn start_env(body: &str, env: &[(&str, &std::ffi::OsStr)]) -> Lbd {
        Lbd::start_full(body, "", env).await
    }

    /// [`Lbd::start`] with `listener_extra` appended to the test listener's table (e.g. a
    /// `[listener.tls]` table).
    pub async fn start_with_listener(body: &str, listener_extra: &str) -> Lbd {
        Lbd::start_full(body, listener_extra, &[]).await
    }

    async fn start_full(body: &str, listener_extra: &str, env: &[(&str, &std::ffi::OsStr)]) -> Lbd {
        let (listen, admin) = two_free_addrs();
        let text = config_with(listen, admin, body) + listener_extra;
        let dir = tempfile::tempdir().expect("tempdir");
        Lbd::start_text_in(dir, listen, admin, &text, env).await
    }

    /// [`Lbd::start`] in `dir` (prepared by the caller, e.g. with a state directory) on these
    /// addresses.
    pub async fn start_in(
        dir: tempfile::TempDir,
        listen: SocketAddr,
        admin: SocketAddr,
        body: &str,
    ) -> Lbd {
        let text = config_with(listen, admin, body);
        Lbd::start_text_in(dir, listen, admin, &text, &[]).await
    }

    async fn start_text_in(
        dir: tempfile::TempDir,
        listen: SocketAddr,
        admin: SocketAddr,
        text: &str,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Lbd {
        let config = dir.path().join("lbd.toml");
        std::fs::write(&config, text).expect("write config");
        write_mode(&dir.path().join(ADMIN_TOKEN_FILE), ADMIN_TOKEN, 0o600);
        let log = dir.path().join("lbd.log");
        let child = spawn_lbd(&config, &log, dir.path(), env);
        let mut lbd = Lbd {
            child,
            dir,
            config,
            admin,
            listen,
            log,
        };
        lbd.await_ready().await;
        lbd
    }

    /// Wait for `/readyz` (panics with the log if lbd exits or takes too long).
    async fn await_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10) * patience();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("lbd exited during startup ({status}):\n{}", self.log_text());
            }
            if get(self.admin, "/readyz")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if Instant::now() > deadline {
                panic!("lbd did not become ready:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL this lbd (no drain, no flush) and start it again with the same config and
    /// directory, so whatever it keeps in files (a state file) is there for the new process.
    pub async fn kill9_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn_lbd(&self.config, &self.log, self.dir.path(), &[]);
        self.await_ready().await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What lbd wrote to stdout (the access log).
    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// lbd's log as it is now. A line logged a moment ago may not be in it yet: lbd hands
    /// its lines to a writer thread (`shared::telemetry`); wait with [`Self::log_when`].
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// lbd's log once `done` holds of it (polled for up to 5 s; the log as it is then
    /// otherwise, for the caller's assertion to show).
    pub async fn log_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(5) * patience();
        loop {
            let log = self.log_text();
            if done(&log) || Instant::now() > deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// lbd's log once it contains `needle` (see [`Self::log_when`]).
    pub async fn log_with(&self, needle: &str) -> String {
        self.log_when(|log| log.contains(needle)).await
    }

    /// Send a signal by name (TERM, HUP, INT) to this process only.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// Rewrite the config file (same listener/admin) for a reload.
    pub fn write_config(&self, body: &str) {
        self.write_config_with_listener(body, "");
    }

    /// [`Lbd::write_config`] with `listener_extra` appended to the test listener's table.
    pub fn write_config_with_listener(&self, body: &str, listener_extra: &str) {
        let text = config_with(self.listen, self.admin, body) + listener_extra;
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Wait for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout * patience();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("lbd did not exit:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `lbd run --config CONFIG`, its log appended to `log`, its access log to `dir/access.log`.
fn spawn_lbd(
    config: &std::path::Path,
    log: &std::path::Path,
    dir: &std::path::Path,
    env: &[(&str, &std::ffi::OsStr)],
) -> Child {
    let open = |p: &std::path::Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .expect("log file")
    };
    Command::new(env!("CARGO_BIN_EXE_lbd"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("LBPAIR_LOG", "info,lbd=debug")
        .envs(env.iter().copied())
        .stdout(open(&dir.join("access.log")))
        .stderr(open(log))
        .spawn()
        .expect("spawn lbd")
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- lbd log ----\n{}", self.log_text());
        }
    }
}

/// A pool of `backends` with the given extra pool keys.
pub fn pool(name: &str, backends: &[&TestBackend], extra: &str) -> String {
    let mut s = format!("[[pool]]\nname = \"{name}\"\n{extra}\n");
    for b in backends {
        s.push_str(&format!("[[pool.backend]]\naddress = \"{}\"\n", b.addr));
    }
    s
}

/// Like [`request`], from a chosen local address (e.g. 127.0.0.2, to be another client IP).
pub async fn request_from(
    src: std::net::IpAddr,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Resp, String> {
    let socket = match src {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    send_on(stream, "GET", path, headers).await
}

/// Open a connection to `addr`, ask `/ws` for a WebSocket upgrade and read the response head
/// byte by byte (so no tunnel byte is consumed). Returns the stream and the head, lowercased.
pub async fn websocket_handshake(addr: SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read");
        assert_eq!(
            n,
            1,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).to_lowercase())
}

/// RSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
