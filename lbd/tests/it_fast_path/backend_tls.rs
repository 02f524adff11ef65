//! TLS to backends (`[pool.tls]`) through the real binary. The backend is a tokio-rustls
//! server made here ([`TlsBackend`]), with certificates by rcgen from test CAs, and may
//! require client certificates. Covered: verified end to end with keep-alive reuse; an
//! unknown CA and a wrong name refused (502, counted by reason); lbd's client certificate
//! presented to an mTLS backend, and refused when lbd has none; HTTPS health checks. On both
//! paths: the fast path speaks plain TCP upstream, so it hands a request for a TLS pool to
//! hyper (and keeps serving plain pools itself).

use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::tls::{ring, Ca, Issued};
use super::*;

/// The name the backend's certificate carries.
const BACKEND_NAME: &str = "backend.test";

/// A backend speaking HTTP/1.1 over TLS (or HTTP/2, when its config offers `h2` and the
/// client takes it); every answer is `200 tls-ok` (`tls-ok h2` over HTTP/2).
struct TlsBackend {
    addr: SocketAddr,
    /// TLS handshakes completed.
    handshakes: Arc<AtomicUsize>,
    /// Handshakes that failed (a refused client certificate, or plaintext).
    failed: Arc<AtomicUsize>,
    /// The client certificate (DER) each request came with; empty without one.
    clients: Arc<Mutex<Vec<Vec<u8>>>>,
    /// What new handshakes use.
    config: Arc<Mutex<Arc<ServerConfig>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The backend's TLS: `cert`, and client certificates from `client_ca` required.
fn server_config(cert: &Issued, client_ca: Option<&Ca>) -> Arc<ServerConfig> {
    server_config_offering(cert, client_ca, &[b"http/1.1"])
}

/// [`server_config`] offering `protocols` by ALPN.
fn server_config_offering(
    cert: &Issued,
    client_ca: Option<&Ca>,
    protocols: &[&[u8]],
) -> Arc<ServerConfig> {
    let provider = Arc::new(ring());
    let chain = vec![CertificateDer::from_pem_file(&cert.cert).expect("cert")];
    let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key");
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).expect("root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).expect("server cert");
    config.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

impl TlsBackend {
    async fn start(config: Arc<ServerConfig>) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let clients = Arc::new(Mutex::new(Vec::new()));
        let config = Arc::new(Mutex::new(config));
        let (h, f, c, cfg) = (
            Arc::clone(&handshakes),
            Arc::clone(&failed),
            Arc::clone(&clients),
            Arc::clone(&config),
        );
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = TlsAcceptor::from(Arc::clone(&cfg.lock().expect("lock")));
                let (h, f, c) = (Arc::clone(&h), Arc::clone(&f), Arc::clone(&c));
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        f.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    h.fetch_add(1, Ordering::SeqCst);
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|cert| cert.to_vec())
                        .unwrap_or_default();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        c.lock().expect("lock").push(client.clone());
                        let body: &'static [u8] = if req.version() == http::Version::HTTP_2 {
                            b"tls-ok h2\n"
                        } else {
                            b"tls-ok\n"
                        };
                        async move {
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(body))))
                        }
                    });
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let _ = hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                });
            }
        });
        TlsBackend {
            addr,
            handshakes,
            failed,
            clients,
            config,
            task,
        }
    }

    fn set_config(&self, config: Arc<ServerConfig>) {
        *self.config.lock().expect("lock") = config;
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    fn failed(&self) -> usize {
        self.failed.load(Ordering::SeqCst)
    }
}

/// Certificates for one test, in a directory that lives as long as it.
struct Pki {
    dir: tempfile::TempDir,
    /// Signed by the CA in `ca.pem`, which lbd trusts.
    backend: Issued,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("dir");
        let ca = Ca::new();
        let backend = ca.issue(
            dir.path(),
            "backend",
            &[BACKEND_NAME],
            &rcgen::PKCS_ECDSA_P256_SHA256,
        );
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("write");
        Pki { dir, backend }
    }

    fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }

    /// `[pool.tls]` trusting this CA and checking `name`, plus `extra` lines.
    fn tls_table(&self, name: &str, extra: &str) -> String {
        format!(
            "[pool.tls]\nca = \"{}\"\nserver_name = \"{name}\"\n{extra}\n",
            self.ca_file()
        )
    }
}

/// The plain pool "web" (the default) and the TLS pool "tls" for `/tls/`, with passive
/// ejection off (the tests provoke failures) and `health` lines.
fn pools(web: &TestBackend, backend: &TlsBackend, tls: &str, health: &str) -> String {
    format!(
        "{}\n[[pool]]\nname = \"tls\"\n[pool.passive]\nconsecutive_failures = 0\n{health}\n{tls}\n\
         [[pool.backend]]\naddress = \"{}\"\n\
         [[route]]\nname = \"to-tls\"\npath_prefix = \"/tls/\"\npool = \"tls\"\n",
        pool("web", &[web], "[pool.passive]\nconsecutive_failures = 0\n"),
        backend.addr,
    )
}

/// lbd with [`pools`].
async fn lbd_with(
    global: &str,
    web: &TestBackend,
    backend: &TlsBackend,
    tls: &str,
    health: &str,
) -> Lbd {
    Lbd::start(&config(global, &pools(web, backend, tls, health))).await
}

fn tls_series(name: &str, backend: &TlsBackend) -> String {
    format!("{name}{{pool=\"tls\",backend=\"{}\"}}", backend.addr)
}

fn tls_error_series(backend: &TlsBackend, reason: &str) -> String {
    format!(
        "lbd_upstream_tls_errors_total{{pool=\"tls\",backend=\"{}\",reason=\"{reason}\"}}",
        backend.addr
    )
}

/// GET `path` twice on one client connection (one lbd worker, so one upstream pool).
async fn two_gets_on_one_connection(addr: SocketAddr, path: &str) -> Vec<(u16, String)> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for _ in 0..2 {
        tx.ready().await.expect("ready");
        let req = Request::get(path)
            .header("host", "test.local")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = tokio::time::timeout(Duration::from_secs(15), tx.send_request(req))
            .await
            .expect("in time")
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    answers
}

/// On the fast path a request for the TLS pool was handed to hyper; on the hyper path the
/// fast path served nothing.
async fn assert_tls_requests_went_to_hyper(global: &str, lbd: &Lbd) {
    let handoffs = metric(lbd.admin, "lbd_http1_fast_path_handoffs_total")
        .await
        .unwrap_or(0.0);
    if global == FAST_PATH_ON {
        assert!(handoffs >= 1.0, "no request was handed to hyper");
    } else {
        assert_eq!(handoffs, 0.0);
    }
}

pub(super) async fn verified_backend_serves_and_its_tls_connection_is_reused(global: &str) {
    let pki = Pki::new();
    let backend = TlsBackend::start(server_config(&pki.backend, None)).await;
    let web = TestBackend::start("web").await;
    let lbd = lbd_with(global, &web, &backend, &pki.tls_table(BACKEND_NAME, ""), "").await;

    let answers = two_gets_on_one_connection(lbd.listen, "/tls/a").await;
    assert_eq!(
        answers,
        vec![(200, "tls-ok\n".to_string()), (200, "tls-ok\n".to_string())]
    );
    assert_eq!(
        backend.handshakes(),
        1,
        "the second request reused the TLS connection"
    );
    assert_eq!(
        backend.failed(),
        0,
        "no plaintext or refused handshake reached the backend"
    );
    let reused = metric(
        lbd.admin,
        &tls_series("lbd_backend_connections_reused_total", &backend),
    )
    .await;
    assert_eq!(reused, Some(1.0));
    let m = metrics(lbd.admin).await;
    for reason in [
        "unknown_ca",
        "name_mismatch",
        "client_cert_required",
        "io",
        "timeout",
    ] {
        assert_eq!(
            metric_in(&m, &tls_error_series(&backend, reason)),
            Some(0.0),
            "{reason}"
        );
    }
    assert_tls_requests_went_to_hyper(global, &lbd).await;

    // A plain pool next to it is still served by the fast path (on a new connection).
    let before = metric(lbd.admin, "lbd_http1_fast_path_requests_total")
        .await
        .unwrap_or(0.0);
    let r = request(lbd.listen, "GET", "/plain", &[])
        .await
        .expect("plain");
    assert_eq!((r.status, r.backend()), (200, "web"));
    let after = metric(lbd.admin, "lbd_http1_fast_path_requests_total")
        .await
        .unwrap_or(0.0);
    if global == FAST_PATH_ON {
        assert_eq!(
            after,
            before + 1.0,
            "the plain request stayed on the fast path"
        );
    } else {
        assert_eq!(after, 0.0);
    }
}

pub(super) async fn a_backend_certificate_from_an_unknown_ca_is_refused_with_502(global: &str) {
    let pki = Pki::new();
    let stranger = Ca::named(Some("stranger CA"));
    let cert = stranger.issue(
        pki.dir.path(),
        "stranger",
        &[BACKEND_NAME],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let backend = TlsBackend::start(server_config(&cert, None)).await;
    let web = TestBackend::start("web").await;
    let lbd = lbd_with(global, &web, &backend, &pki.tls_table(BACKEND_NAME, ""), "").await;

    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    let m = metrics(lbd.admin).await;
    let refused = metric_in(&m, &tls_error_series(&backend, "unknown_ca")).unwrap_or(0.0);
    assert!(refused >= 1.0, "unknown_ca not counted:\n{m}");
    assert_eq!(backend.handshakes(), 0);
    assert!(
        metric_in(
            &m,
            "lbd_proxy_errors_total{kind=\"connect\",side=\"backend\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "a refused handshake is a backend connect failure:\n{m}"
    );
    assert!(
        lbd.log_with("TLS with the backend failed")
            .await
            .contains("TLS with the backend failed"),
        "logged with its reason"
    );
    assert_tls_requests_went_to_hyper(global, &lbd).await;
}

pub(super) async fn a_backend_certificate_for_another_name_is_refused_with_502(global: &str) {
    let pki = Pki::new();
    let backend = TlsBackend::start(server_config(&pki.backend, None)).await;
    let web = TestBackend::start("web").await;
    let lbd = lbd_with(global, &web, &backend, &pki.tls_table("other.test", ""), "").await;

    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    let mismatched = metric(lbd.admin, &tls_error_series(&backend, "name_mismatch")).await;
    assert!(mismatched.unwrap_or(0.0) >= 1.0, "{mismatched:?}");
    assert_eq!(backend.handshakes(), 0);
}

pub(super) async fn an_mtls_backend_gets_lbds_client_certificate(global: &str) {
    let pki = Pki::new();
    let clients = Ca::new();
    let ours = clients.issue(
        pki.dir.path(),
        "lbd-client",
        &["lbd.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let backend = TlsBackend::start(server_config(&pki.backend, Some(&clients))).await;
    let web = TestBackend::start("web").await;
    let client = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        ours.cert.display(),
        ours.key.display()
    );
    let lbd = lbd_with(
        global,
        &web,
        &backend,
        &pki.tls_table(BACKEND_NAME, &client),
        "",
    )
    .await;

    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!((r.status, r.body.as_str()), (200, "tls-ok\n"));
    let seen = backend.clients.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![ours.der.to_vec()],
        "the backend saw lbd's certificate"
    );
    assert_tls_requests_went_to_hyper(global, &lbd).await;
}

pub(super) async fn an_mtls_backend_refuses_lbd_without_a_client_certificate(global: &str) {
    let pki = Pki::new();
    let clients = Ca::new();
    let backend = TlsBackend::start(server_config(&pki.backend, Some(&clients))).await;
    let web = TestBackend::start("web").await;
    let lbd = lbd_with(global, &web, &backend, &pki.tls_table(BACKEND_NAME, ""), "").await;

    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(backend.failed() >= 1, "the backend refused the handshake");
    assert!(
        backend.clients.lock().expect("lock").is_empty(),
        "no request got through"
    );
    // TLS 1.3: the refusal is an alert after lbd's side of the handshake.
    let refused = metric(
        lbd.admin,
        &tls_error_series(&backend, "client_cert_required"),
    )
    .await;
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_health_checks_mark_a_backend_down_with_a_bad_certificate_and_up_with_a_good_one() {
    let pki = Pki::new();
    // Named like lbd's CA, another key: the signature does not verify.
    let stranger = Ca::new();
    let bad = stranger.issue(
        pki.dir.path(),
        "stranger",
        &[BACKEND_NAME],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let backend = TlsBackend::start(server_config(&bad, None)).await;
    let web = TestBackend::start("web").await;
    let health = "[pool.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 200\n\
                  timeout_ms = 200\nrise = 1\nfall = 1\n";
    let tls = pki.tls_table(BACKEND_NAME, "");
    let lbd = lbd_with(FAST_PATH_ON, &web, &backend, &tls, health).await;
    let healthy = tls_series("lbd_backend_healthy", &backend);

    eventually(
        "the backend with a bad certificate is down",
        Duration::from_secs(10),
        || async { metric(lbd.admin, &healthy).await == Some(0.0) },
    )
    .await;
    let refused = metric(lbd.admin, &tls_error_series(&backend, "unknown_ca")).await;
    assert!(
        refused.unwrap_or(0.0) >= 1.0,
        "the probe's refusal is counted: {refused:?}"
    );
    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 503, "no healthy backend");

    backend.set_config(server_config(&pki.backend, None));
    eventually(
        "the backend with a good certificate is up",
        Duration::from_secs(10),
        || async { metric(lbd.admin, &healthy).await == Some(1.0) },
    )
    .await;
    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!((r.status, r.body.as_str()), (200, "tls-ok\n"));
}

/// SIGHUP and wait until the reload counter of `result` moved past `before`.
async fn reload(lbd: &Lbd, result: &str, before: f64) {
    lbd.signal("HUP");
    let series = format!("lbd_config_reloads_total{{result=\"{result}\"}}");
    eventually(
        &format!("a reload with result {result}"),
        Duration::from_secs(10),
        || async { metric(lbd.admin, &series).await.unwrap_or(0.0) > before },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_bad_tls_file_keeps_the_old_config_and_a_good_one_takes_a_new_ca() {
    let pki = Pki::new();
    let backend = TlsBackend::start(server_config(&pki.backend, None)).await;
    let web = TestBackend::start("web").await;
    let tls = pki.tls_table(BACKEND_NAME, "");
    let lbd = lbd_with(FAST_PATH_ON, &web, &backend, &tls, "").await;
    let ok = |r: Resp| (r.status, r.body);
    let tls_ok = (200, "tls-ok\n".to_string());
    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(ok(r), tls_ok);

    // A CA file that is not there: the reload is refused, the old config keeps serving.
    let missing = pki.dir.path().join("missing.pem").display().to_string();
    let bad = format!("[pool.tls]\nca = \"{missing}\"\nserver_name = \"{BACKEND_NAME}\"\n");
    lbd.write_config(&config(FAST_PATH_ON, &pools(&web, &backend, &bad, "")));
    reload(&lbd, "error", 0.0).await;
    let names = |log: &str| log.contains("pool[1].tls.ca") && log.contains("missing.pem");
    assert!(
        names(&lbd.log_when(names).await),
        "the error names the key and the file"
    );
    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(ok(r), tls_ok);

    // The backend moves to a certificate of a new CA: lbd, reloaded with that CA, follows.
    let ca2 = Ca::named(Some("second CA"));
    let cert2 = ca2.issue(
        pki.dir.path(),
        "backend2",
        &[BACKEND_NAME],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let ca2_file = pki.dir.path().join("ca2.pem");
    std::fs::write(&ca2_file, ca2.cert.pem()).expect("write");
    backend.set_config(server_config(&cert2, None));
    let handshakes = backend.handshakes();
    let good = format!(
        "[pool.tls]\nca = \"{}\"\nserver_name = \"{BACKEND_NAME}\"\n",
        ca2_file.display()
    );
    lbd.write_config(&config(FAST_PATH_ON, &pools(&web, &backend, &good, "")));
    reload(&lbd, "ok", 0.0).await;
    let r = request(lbd.listen, "GET", "/tls/a", &[])
        .await
        .expect("answer");
    assert_eq!(ok(r), tls_ok);
    assert!(
        backend.handshakes() > handshakes,
        "a new TLS config opens new connections"
    );
}

/// A pool with `protocol = "h2"` and `[pool.tls]` offers `h2` by ALPN and speaks HTTP/2 to a
/// backend that takes it; a backend that only offers `http/1.1` is refused (502), never
/// spoken to in a protocol it did not agree to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_pool_over_tls_negotiates_h2_by_alpn_or_refuses_the_backend() {
    let pki = Pki::new();
    let web = TestBackend::start("web").await;
    for (offers, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], (200, "tls-ok h2\n")),
        (&[&b"http/1.1"[..]][..], (502, "")),
    ] {
        let backend = TlsBackend::start(server_config_offering(&pki.backend, None, offers)).await;
        let h2_pool = pools(&web, &backend, &pki.tls_table(BACKEND_NAME, ""), "")
            .replace("name = \"tls\"\n", "name = \"tls\"\nprotocol = \"h2\"\n");
        let lbd = Lbd::start(&config(FAST_PATH_ON, &h2_pool)).await;
        let r = request(lbd.listen, "GET", "/tls/a", &[])
            .await
            .expect("answer");
        if want.0 == 200 {
            assert_eq!((r.status, r.body.as_str()), want, "offered {offers:?}");
        } else {
            assert_eq!(r.status, 502, "offered {offers:?}: {}", r.body);
        }
    }
}
