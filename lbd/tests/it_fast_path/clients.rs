//! HTTP/2 through lbd with real clients: `curl --http2` / `--http2-prior-knowledge`, `h2load`
//! (nghttp2-client) and a headless Chromium, over TLS (ALPN h2) and h2c, each checking the
//! protocol that was negotiated and that every request succeeded.
//!
//! The tools come from Debian packages that `scripts/install-deps.sh` installs (CI runs it).
//! A missing tool fails the test rather than skipping it: a skipped test is a silent pass.

use std::path::Path;
use std::process::Output;

use super::tls::{lbd_with_tls, tls_table, Ca, Issued};
use super::*;

/// Deadline for one client run (a browser start included).
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// Run `program` with `args` in a process group of its own, all of it killed at the deadline
/// (a browser leaves helper processes); fails the test when it is not installed or outlives the
/// deadline.
async fn run_bounded(program: &str, args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "{program} is not installed: run scripts/install-deps.sh (these tests fail rather \
             than skip without it)"
        ),
        Err(e) => panic!("{program}: {e}"),
    };
    let group = child.id();
    match tokio::time::timeout(CLIENT_DEADLINE * patience(), child.wait_with_output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("{program}: {e}")),
        Err(_) => {
            if let Some(group) = group {
                let group = nix::unistd::Pid::from_raw(group as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            panic!("{program} {args:?} still running after {CLIENT_DEADLINE:?}")
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An HTTPS lbd for `h2.test` (certificate from a test CA whose PEM is written to `dir`).
async fn https_lbd(backend: &TestBackend, dir: &Path) -> (Lbd, Issued, std::path::PathBuf) {
    let ca = Ca::new();
    let pair = ca.issue(dir, "h2", &["h2.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.cert.pem()).expect("write ca");
    let lbd = lbd_with_tls(backend, &tls_table(&[&pair], "")).await;
    (lbd, pair, ca_pem)
}

/// h2c lbd: the plain listener (prior-knowledge HTTP/2 is sniffed on it).
async fn plain_lbd(backend: &TestBackend) -> Lbd {
    Lbd::start(&format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[[pool]]\nname = \"web\"\n\
         [[pool.backend]]\naddress = \"{}\"\n",
        backend.addr
    ))
    .await
}

/// `curl` with `flags` against `url`: "HTTP-VERSION STATUS" as curl reports them.
async fn curl(flags: &[&str], url: &str) -> String {
    let mut args = vec![
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
    ];
    args.extend_from_slice(flags);
    args.push(url);
    let out = run_bounded("curl", &args).await;
    assert!(out.status.success(), "curl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_negotiates_h2_over_tls_and_speaks_h2c_with_prior_knowledge() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let (lbd, _pair, ca_pem) = https_lbd(&backend, dir.path()).await;
    let port = lbd.listen.port();
    let resolve = format!("h2.test:{port}:127.0.0.1");
    let url = format!("https://h2.test:{port}/");
    let ca = ca_pem.to_str().expect("path");
    let tls = ["--cacert", ca, "--resolve", &resolve];
    // ALPN: h2 when offered (verified against the test CA), http/1.1 when not.
    let h2: Vec<&str> = tls.iter().copied().chain(["--http2"]).collect();
    assert_eq!(curl(&h2, &url).await, "2 200");
    let h1: Vec<&str> = tls.iter().copied().chain(["--http1.1"]).collect();
    assert_eq!(curl(&h1, &url).await, "1.1 200");

    let plain = plain_lbd(&backend).await;
    let url = format!("http://{}/", plain.listen);
    assert_eq!(curl(&["--http2-prior-knowledge"], &url).await, "2 200");
    // `--http2` on http:// asks for `Upgrade: h2c`, which lbd does not take: HTTP/1.1 it is.
    assert_eq!(curl(&["--http2"], &url).await, "1.1 200");
    assert_eq!(
        metric(lbd.admin, "lbd_tls_handshakes_total{result=\"ok\"}").await,
        Some(2.0)
    );
}

/// `h2load` output: the application protocol line and the request counts.
struct H2load {
    protocol: String,
    succeeded: u64,
    failed: u64,
    errored: u64,
    status_2xx: u64,
}

fn parse_h2load(out: &str) -> Option<H2load> {
    let after = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(str::trim)
    };
    // "requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout"
    let requests = after("requests:")?;
    let count = |what: &str| {
        requests
            .split(',')
            .find_map(|part| part.trim().strip_suffix(what)?.trim().parse().ok())
    };
    // "status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx"
    let status_2xx = after("status codes:")?
        .split(',')
        .find_map(|p| p.trim().strip_suffix("2xx")?.trim().parse().ok())?;
    Some(H2load {
        protocol: after("Application protocol:")?.to_string(),
        succeeded: count("succeeded")?,
        failed: count("failed")?,
        errored: count("errored")?,
        status_2xx,
    })
}

/// `h2load` with 400 requests over 4 connections, 10 streams each, against `url`.
async fn h2load(url: &str) -> H2load {
    let out = run_bounded("h2load", &["-n", "400", "-c", "4", "-m", "10", url]).await;
    assert!(out.status.success(), "h2load: {}", text(&out));
    parse_h2load(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("h2load output not understood: {}", text(&out)))
}

fn assert_all_served(r: &H2load, protocol: &str) {
    assert_eq!(r.protocol, protocol);
    assert_eq!(
        (r.succeeded, r.failed, r.errored, r.status_2xx),
        (400, 0, 0, 400)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_gets_every_response_over_tls_and_h2c() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let (lbd, _pair, _) = https_lbd(&backend, dir.path()).await;
    // h2load does not verify certificates; without SNI (an IP) lbd presents its default.
    let tls = h2load(&format!("https://{}/", lbd.listen)).await;
    assert_all_served(&tls, "h2");

    let plain = plain_lbd(&backend).await;
    let h2c = h2load(&format!("http://{}/", plain.listen)).await;
    assert_all_served(&h2c, "h2c");
    // Every request went through lbd to the backend.
    assert_eq!(backend.hits(), 800);
}

#[test]
fn h2load_summary_is_parsed() {
    let out = "finished in 20.1ms, 19900 req/s\n\
               requests: 400 total, 400 started, 400 done, 398 succeeded, 2 failed, 1 errored, 0 timeout\n\
               status codes: 398 2xx, 0 3xx, 0 4xx, 2 5xx\n\
               traffic: 1KB\nApplication protocol: h2\n";
    let r = parse_h2load(out).expect("parsed");
    assert_eq!(r.protocol, "h2");
    assert_eq!(
        (r.succeeded, r.failed, r.errored, r.status_2xx),
        (398, 2, 1, 398)
    );
}

// ---- a headless Chromium ----

/// A page whose script writes the protocol its own navigation used into the DOM.
const PAGE: &str = "<!doctype html><html><head><title>h2</title></head><body><p id=proto>none</p>\
<script>document.getElementById('proto').textContent = 'proto=' + \
performance.getEntriesByType('navigation')[0].nextHopProtocol;</script></body></html>";

fn page_response() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\r\n{PAGE}",
        PAGE.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_loads_a_page_over_https_h2() {
    let page = RawBackend::start(|_, _| Reply::KeepAlive(page_response())).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let pair = ca.issue(
        dir.path(),
        "h2",
        &["h2.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let lbd = Lbd::start_with_listener(
        &config("", &raw_pool("web", &[page.addr])),
        &tls_table(&[&pair], ""),
    )
    .await;
    // The browser's profile lives in the test's temp dir, removed with it.
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let resolve = "--host-resolver-rules=MAP h2.test 127.0.0.1";
    let url = format!("https://h2.test:{}/", lbd.listen.port());
    // The certificate is the test CA's, unknown to the browser: its errors are ignored here
    // (what is checked is the protocol, not the chain; tls.rs checks certificates).
    let out = run_bounded(
        "chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Containers often have a tiny /dev/shm.
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--ignore-certificate-errors",
            &profile_arg,
            resolve,
            "--virtual-time-budget=5000",
            "--dump-dom",
            &url,
        ],
    )
    .await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("proto=h2<"),
        "the page did not load over h2: {}",
        text(&out)
    );
    // Through lbd, really.
    assert!(page.accepted() >= 1, "the backend saw no request");
}
