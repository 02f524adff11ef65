//! TLS listeners through the real binary: certificates chosen by SNI (exact, wildcard, the
//! default, or refused), ALPN h2 and http/1.1, a key chosen by the schemes the client offers,
//! and certificates replaced by a reload while open connections keep theirs (and ten times
//! over under a loop of new handshakes, none of which may fail). Every
//! certificate is generated here (rcgen), signed by a CA made for the test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::*;

/// A certificate and key written to `dir` as `NAME.pem` and `NAME.key`.
pub(super) struct Issued {
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) der: CertificateDer<'static>,
}

/// The test CA and the certificates it issues.
pub(super) struct Ca {
    pub(super) cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    pub(super) fn new() -> Ca {
        Ca::named(None)
    }

    /// A CA whose subject's common name is `cn` (`None`: "lbd test CA", the same for every
    /// CA made so). A name of its own: with rcgen's default for both, a leaf's issuer equals
    /// its subject and OpenSSL clients (curl) take the leaf for self-signed.
    pub(super) fn named(cn: Option<&str>) -> Ca {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn.unwrap_or("lbd test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { cert, key }
    }

    /// A leaf for `names` with a key of `alg`, written to `dir/file.{pem,key}`.
    pub(super) fn issue(
        &self,
        dir: &Path,
        file: &str,
        names: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Issued {
        let key = rcgen::KeyPair::generate_for(alg).expect("leaf key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("leaf cert");
        let issued = Issued {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write cert");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }
}

/// `[listener.tls]` with these pairs (the first is the default).
pub(super) fn tls_table(pairs: &[&Issued], extra: &str) -> String {
    let certs: Vec<String> = pairs
        .iter()
        .map(|p| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                p.cert.display(),
                p.key.display()
            )
        })
        .collect();
    format!("[listener.tls]\ncerts = [{}]\n{extra}\n", certs.join(", "))
}

/// Accepts any server certificate: the tests look at which one was presented. Keeps the
/// last stapled OCSP response.
#[derive(Debug)]
pub(super) struct AnyCert(
    pub(super) Arc<CryptoProvider>,
    pub(super) Arc<std::sync::Mutex<Vec<u8>>>,
);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.1.lock().expect("lock") = ocsp.to_vec();
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[allow(deprecated)]
pub(super) fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A client offering `alpn`, verifying nothing, with `provider`'s signature schemes.
pub(super) fn connector(alpn: &[&[u8]], provider: CryptoProvider) -> TlsConnector {
    connector_seeing_ocsp(alpn, provider, Arc::default())
}

/// [`connector`], keeping each stapled OCSP response in `ocsp`.
fn connector_seeing_ocsp(
    alpn: &[&[u8]],
    provider: CryptoProvider,
    ocsp: Arc<std::sync::Mutex<Vec<u8>>>,
) -> TlsConnector {
    let provider = Arc::new(provider);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider, ocsp)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: these tests look at the certificate served, and a resumed
    // handshake presents none (lbd's ticket keys outlive reloads and certificate swaps, so
    // a cached session would show the old one). Resumption has its own tests.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Handshake with `sni` (`None`: no SNI, the address is used).
pub(super) async fn handshake(
    addr: SocketAddr,
    sni: Option<&str>,
    connector: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).expect("name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    connector.connect(name, tcp).await
}

pub(super) fn presented(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("certificates")[0].clone()
}

/// One HTTP/1.1 GET on an established TLS stream; the body.
pub(super) async fn get_http1(s: TlsStream<TcpStream>, path: &str) -> String {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// lbd with a TLS listener in front of one backend.
pub(super) async fn lbd_with_tls(backend: &TestBackend, tls: &str) -> Lbd {
    lbd_with_tls_and_routes(backend, "", tls).await
}

/// [`lbd_with_tls`] with `routes` (`[[route]]` tables to pool "web") too.
async fn lbd_with_tls_and_routes(backend: &TestBackend, routes: &str, tls: &str) -> Lbd {
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[[pool]]\nname = \"web\"\n\
         [[pool.backend]]\naddress = \"{}\"\n{routes}",
        backend.addr
    );
    Lbd::start_with_listener(&body, tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_exact_name_then_the_wildcard_then_the_default() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let default = ca.issue(dir.path(), "default", &["default.test"], alg);
    let exact = ca.issue(dir.path(), "exact", &["a.test"], alg);
    let wild = ca.issue(dir.path(), "wild", &["*.wild.test"], alg);
    let lbd = lbd_with_tls(&backend, &tls_table(&[&default, &exact, &wild], "")).await;
    let c = connector(&[b"http/1.1"], ring());
    for (sni, want, what) in [
        (Some("a.test"), &exact, "exact name"),
        (Some("A.TEST"), &exact, "names compare without case"),
        (Some("x.wild.test"), &wild, "wildcard, one label"),
        (
            Some("y.x.wild.test"),
            &default,
            "a wildcard covers one label only",
        ),
        (Some("unknown.test"), &default, "unknown name"),
        (None, &default, "no SNI"),
    ] {
        let s = handshake(lbd.listen, sni, &c).await.expect(what);
        assert!(
            presented(&s) == want.der,
            "{what}: wrong certificate for {sni:?}"
        );
    }
    // Requests over TLS reach the backend, which is told the client came over HTTPS.
    let s = handshake(lbd.listen, Some("a.test"), &c)
        .await
        .expect("handshake");
    let body = get_http1(s, "/").await;
    assert!(body.starts_with("b1\n"), "{body}");
    assert!(body.contains("x-forwarded-proto: https"), "{body}");
    assert!(metric(lbd.admin, "lbd_tls_handshakes_total{result=\"ok\"}").await >= Some(7.0));
    let expiry = metric(
        lbd.admin,
        "lbd_tls_cert_expiry_seconds{listener=\"http\",name=\"a.test\"}",
    )
    .await
    .expect("expiry gauge");
    assert!(
        expiry > 86_400.0,
        "rcgen certificates are valid for years: {expiry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_can_be_refused() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let known = ca.issue(dir.path(), "known", &["known.test"], alg);
    let tls = tls_table(&[&known], "unknown_sni = \"refuse\"");
    let lbd = lbd_with_tls(&backend, &tls).await;
    let c = connector(&[b"http/1.1"], ring());
    assert!(handshake(lbd.listen, Some("known.test"), &c).await.is_ok());
    assert!(handshake(lbd.listen, Some("other.test"), &c).await.is_err());
    assert!(handshake(lbd.listen, None, &c).await.is_err());
    eventually(
        "failed handshakes counted",
        Duration::from_secs(5),
        || async {
            metric(lbd.admin, "lbd_tls_handshakes_total{result=\"failed\"}").await >= Some(2.0)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_h2_serves_http2_and_http1_clients_get_http1() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let pair = ca.issue(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let lbd = lbd_with_tls(&backend, &tls_table(&[&pair], "")).await;

    let h2 = connector(&[b"h2", b"http/1.1"], ring());
    let s = handshake(lbd.listen, Some("a.test"), &h2)
        .await
        .expect("handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = http::Request::get("https://a.test/")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    let h1 = connector(&[b"http/1.1"], ring());
    let s = handshake(lbd.listen, Some("a.test"), &h1)
        .await
        .expect("handshake");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(get_http1(s, "/").await.starts_with("b1\n"));
}

/// A provider whose clients offer only ECDSA signature schemes.
fn ecdsa_only() -> CryptoProvider {
    let mut p = ring();
    let algs = p.signature_verification_algorithms;
    let mapping: Vec<_> = algs
        .mapping
        .iter()
        .filter(|(scheme, _)| {
            matches!(
                scheme,
                SignatureScheme::ECDSA_NISTP256_SHA256 | SignatureScheme::ECDSA_NISTP384_SHA384
            )
        })
        .copied()
        .collect();
    p.signature_verification_algorithms = rustls::crypto::WebPkiSupportedAlgorithms {
        all: algs.all,
        mapping: Box::leak(mapping.into_boxed_slice()),
    };
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_for_one_name_are_chosen_by_what_the_client_supports() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let ed = ca.issue(dir.path(), "ed", &["dual.test"], &rcgen::PKCS_ED25519);
    let ec = ca.issue(
        dir.path(),
        "ec",
        &["dual.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let lbd = lbd_with_tls(&backend, &tls_table(&[&ed, &ec], "")).await;
    let any = handshake(lbd.listen, Some("dual.test"), &connector(&[], ring()))
        .await
        .expect("handshake");
    assert!(
        presented(&any) == ed.der,
        "a client taking both gets the first pair"
    );
    let ecdsa = handshake(lbd.listen, Some("dual.test"), &connector(&[], ecdsa_only()))
        .await
        .expect("handshake");
    assert!(
        presented(&ecdsa) == ec.der,
        "an ECDSA-only client gets the ECDSA pair"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_serves_new_certificates_keeps_open_connections_and_refuses_a_bad_pair() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let old = ca.issue(dir.path(), "site", &["site.test"], alg);
    let lbd = lbd_with_tls(&backend, &tls_table(&[&old], "")).await;
    let c = connector(&[b"http/1.1"], ring());
    // A connection opened before the reload, with a request in it already.
    let s = handshake(lbd.listen, Some("site.test"), &c)
        .await
        .expect("handshake");
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let get = || {
        http::Request::get("/")
            .header("host", "site.test")
            .body(Empty::<Bytes>::new())
            .expect("request")
    };
    assert_eq!(
        open.send_request(get()).await.expect("before").status(),
        200
    );

    // The files are replaced in place (same paths, same config) and lbd reloads.
    let new = ca.issue(dir.path(), "site", &["site.test"], alg);
    assert!(new.der != old.der);
    lbd.signal("HUP");
    eventually(
        "new handshakes get the new certificate",
        Duration::from_secs(5),
        || async {
            let s = handshake(lbd.listen, Some("site.test"), &c).await;
            s.is_ok_and(|s| presented(&s) == new.der)
        },
    )
    .await;
    assert_eq!(
        open.send_request(get()).await.expect("after").status(),
        200,
        "the open connection keeps working"
    );

    // A key that does not belong to the certificate: the reload is refused, naming the
    // file, and the current pair keeps serving.
    let stray = ca.issue(dir.path(), "stray", &["stray.test"], alg);
    std::fs::copy(&stray.key, &new.key).expect("swap key");
    let rejected = metric(lbd.admin, "lbd_config_reloads_total{result=\"error\"}")
        .await
        .unwrap_or(0.0);
    lbd.signal("HUP");
    eventually(
        "the bad pair is refused",
        Duration::from_secs(5),
        || async {
            metric(lbd.admin, "lbd_config_reloads_total{result=\"error\"}").await > Some(rejected)
        },
    )
    .await;
    let log = lbd
        .log_when(|l| l.contains("does not match the certificate") && l.contains("site.key"))
        .await;
    assert!(
        log.contains("does not match the certificate") && log.contains("site.key"),
        "{log}"
    );
    let s = handshake(lbd.listen, Some("site.test"), &c)
        .await
        .expect("still serving");
    assert!(presented(&s) == new.der);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_reads_the_certificate_files() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let good = ca.issue(dir.path(), "good", &["a.test"], alg);
    let other = ca.issue(dir.path(), "other", &["b.test"], alg);
    let config = dir.path().join("lbd.toml");
    let write = |cert: &Path, key: &Path| {
        let text = format!(
            "default_pool = \"web\"\n[[pool]]\nname = \"web\"\n[[pool.backend]]\n\
             address = \"127.0.0.1:9\"\n[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\n\
             [listener.tls]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n",
            cert.display(),
            key.display()
        );
        std::fs::write(&config, text).expect("write");
    };
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lbd"))
            .arg("check-config")
            .arg(&config)
            .output()
            .expect("run check-config")
    };
    write(&good.cert, &good.key);
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(&good.cert, &other.key);
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a mismatched key passes check-config"
    );
    assert!(
        err.contains("other.key") && err.contains("does not match"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ocsp_staple_is_sent_and_re_read_on_reload() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let pair = ca.issue(dir.path(), "s", &["s.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let staple = dir.path().join("s.ocsp");
    std::fs::write(&staple, b"staple-one").expect("write");
    let tls = format!(
        "[listener.tls]\ncerts = [{{ cert = \"{}\", key = \"{}\", ocsp = \"{}\" }}]\n",
        pair.cert.display(),
        pair.key.display(),
        staple.display()
    );
    let lbd = lbd_with_tls(&backend, &tls).await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = connector_seeing_ocsp(&[b"http/1.1"], ring(), Arc::clone(&seen));
    handshake(lbd.listen, Some("s.test"), &c)
        .await
        .expect("handshake");
    assert_eq!(seen.lock().expect("lock").as_slice(), b"staple-one");
    std::fs::write(&staple, b"staple-two").expect("write");
    lbd.signal("HUP");
    eventually("the new staple", Duration::from_secs(5), || async {
        handshake(lbd.listen, Some("s.test"), &c).await.is_ok()
            && seen.lock().expect("lock").as_slice() == b"staple-two"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_replaced_on_disk_are_picked_up_without_a_reload_and_a_bad_set_is_refused() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let old = ca.issue(dir.path(), "site", &["site.test"], alg);
    let lbd = lbd_with_tls(&backend, &tls_table(&[&old], "watch_ms = 100")).await;
    let c = connector(&[b"http/1.1"], ring());
    let served = || async {
        presented(
            &handshake(lbd.listen, Some("site.test"), &c)
                .await
                .expect("handshake"),
        )
    };
    assert!(served().await == old.der);
    let ok = |r: &str| format!("lbd_tls_file_reloads_total{{result=\"{r}\"}}");

    // Replaced as a deploy tool would, certificate and key in turn; no SIGHUP.
    let new = ca.issue(dir.path(), "site", &["site.test"], alg);
    eventually("the new pair is served", Duration::from_secs(5), || async {
        served().await == new.der
    })
    .await;
    assert!(metric(lbd.admin, &ok("ok")).await >= Some(1.0));

    // A key that does not match: refused, the current pair serves on.
    let stray = ca.issue(dir.path(), "stray", &["stray.test"], alg);
    let errors = metric(lbd.admin, &ok("error")).await.unwrap_or(0.0);
    std::fs::copy(&stray.key, &new.key).expect("swap key");
    eventually("the bad set is refused", Duration::from_secs(5), || async {
        metric(lbd.admin, &ok("error")).await > Some(errors)
    })
    .await;
    assert!(served().await == new.der);
    let log = lbd.log_with("refused").await;
    assert!(log.contains("refused"), "{log}");
}

/// Handshakes made by [`handshake_loop`]s, and the failures with their errors.
#[derive(Default)]
struct LoopCounts {
    ok: std::sync::atomic::AtomicU64,
    failed: std::sync::Mutex<Vec<String>>,
}

/// New TLS connections to `site.test`, one after the other, each used for one request, until
/// `stop`.
async fn handshake_loop(
    addr: SocketAddr,
    c: TlsConnector,
    counts: Arc<LoopCounts>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let served = match handshake(addr, Some("site.test"), &c).await {
            Ok(s) => get_http1_checked(s).await,
            Err(e) => Err(format!("handshake: {e}")),
        };
        match served {
            Ok(()) => {
                counts.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => counts.failed.lock().expect("lock").push(e),
        }
    }
}

/// One HTTP/1.1 GET on `s` answered 200, as a result rather than a panic.
async fn get_http1_checked(s: TlsStream<TcpStream>) -> Result<(), String> {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| format!("http1: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "site.test")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    match resp.status() {
        http::StatusCode::OK => Ok(()),
        other => Err(format!("status {other}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_rotations_under_a_handshake_loop_fail_no_handshake() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let first = ca.issue(dir.path(), "site", &["site.test"], alg);
    // Both ways of noticing new files are live: the watcher and SIGHUP.
    let lbd = lbd_with_tls(&backend, &tls_table(&[&first], "watch_ms = 100")).await;
    let c = connector(&[b"http/1.1"], ring());
    let counts = Arc::new(LoopCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(handshake_loop(
                lbd.listen,
                c.clone(),
                Arc::clone(&counts),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let mut served = first.der.clone();
    for round in 0..10 {
        let before = counts.ok.load(Ordering::Relaxed);
        // Rewritten in place (certificate, then key, as a deploy tool would); every other
        // round also a SIGHUP, the others left to the watcher.
        let new = ca.issue(dir.path(), "site", &["site.test"], alg);
        assert!(new.der != served);
        if round % 2 == 0 {
            lbd.signal("HUP");
        }
        eventually(
            &format!("rotation {round}: the new certificate is served"),
            Duration::from_secs(10),
            || async {
                let s = handshake(lbd.listen, Some("site.test"), &c).await;
                s.is_ok_and(|s| presented(&s) == new.der)
            },
        )
        .await;
        // The loops kept handshaking across the rotation.
        eventually(
            &format!("rotation {round}: handshakes go on"),
            Duration::from_secs(10),
            || async { counts.ok.load(Ordering::Relaxed) > before + 5 },
        )
        .await;
        served = new.der;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        tokio::time::timeout(WAIT, l)
            .await
            .expect("loop ended")
            .expect("loop");
    }
    let failed = counts.failed.lock().expect("lock").clone();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        counts.ok.load(Ordering::Relaxed)
    );
    assert_eq!(
        metric(lbd.admin, "lbd_tls_handshakes_total{result=\"failed\"}").await,
        Some(0.0)
    );
}

/// A client certificate with subject CN=`cn`, issued by `ca`.
fn client_cert(
    ca: &Ca,
    cn: &str,
) -> (
    Vec<CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("cert");
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
    (vec![cert.der().clone()], der.into())
}

/// A client presenting `cert`, verifying nothing.
fn connector_with_cert(
    cert: (
        Vec<CertificateDer<'static>>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
) -> TlsConnector {
    let provider = Arc::new(ring());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider, Arc::default())))
        .with_client_auth_cert(cert.0, cert.1)
        .expect("client cert");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// One GET with a forged subject header; the backend's echo, or why it failed.
async fn get_forging(lbd: &Lbd, c: &TlsConnector) -> Result<String, String> {
    let s = handshake(lbd.listen, Some("m.test"), c)
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "m.test")
        .header("x-client-cert-subject", "CN=forged")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_verified_and_their_subject_goes_upstream() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    let stranger_ca = Ca::new();
    let pair = server_ca.issue(dir.path(), "m", &["m.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let bundle = dir.path().join("clients.pem");
    std::fs::write(&bundle, client_ca.cert.pem()).expect("write");
    let start = |auth: &'static str| {
        let tls = tls_table(
            &[&pair],
            &format!(
                "client_ca = \"{}\"\nclient_auth = \"{auth}\"",
                bundle.display()
            ),
        );
        let backend = &backend;
        async move { lbd_with_tls(backend, &tls).await }
    };

    let lbd = start("required").await;
    let alice = connector_with_cert(client_cert(&client_ca, "alice"));
    let body = get_forging(&lbd, &alice).await.expect("alice is let in");
    assert!(body.contains("x-client-cert-subject: CN=alice\n"), "{body}");
    assert!(
        !body.contains("forged"),
        "the client's own header is dropped: {body}"
    );
    let anonymous = connector(&[b"http/1.1"], ring());
    assert!(
        get_forging(&lbd, &anonymous).await.is_err(),
        "no certificate, no entry"
    );
    let mallory = connector_with_cert(client_cert(&stranger_ca, "mallory"));
    assert!(
        get_forging(&lbd, &mallory).await.is_err(),
        "another CA's certificate"
    );
    drop(lbd);

    let lbd = start("optional").await;
    let body = get_forging(&lbd, &anonymous)
        .await
        .expect("optional lets it in");
    assert!(
        !body.contains("x-client-cert-subject"),
        "nothing verified, nothing said: {body}"
    );
    let body = get_forging(&lbd, &alice).await.expect("alice");
    assert!(body.contains("x-client-cert-subject: CN=alice\n"), "{body}");
}

/// A route with `redirect_to_https` (one with `https_port`, one without) next to one
/// without: 301 for GET and HEAD, 308 for the rest, the Host's port dropped; other routes
/// are served as usual.
pub async fn routes_redirect_plain_http_to_https(global: &str) {
    let backend = TestBackend::start("b1").await;
    let body = format!(
        "{}[[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"{}\"\n\
         [[route]]\nname = \"secure\"\nhost = \"r.test\"\npool = \"web\"\nredirect_to_https = true\n\
         [[route]]\nname = \"alt\"\nhost = \"alt.test\"\npool = \"web\"\nredirect_to_https = true\nhttps_port = 8443\n\
         [[route]]\nname = \"plain\"\nhost = \"p.test\"\npool = \"web\"\n",
        config(global, ""),
        backend.addr
    );
    let lbd = Lbd::start(&body).await;
    let location = |r: &Resp| {
        r.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let r = request(lbd.listen, "GET", "/a/b?c=d", &[("host", "r.test:8080")])
        .await
        .expect("get");
    assert_eq!(
        (r.status, location(&r).as_str()),
        (301, "https://r.test/a/b?c=d")
    );
    let r = request(lbd.listen, "POST", "/form", &[("host", "r.test")])
        .await
        .expect("post");
    assert_eq!(
        (r.status, location(&r).as_str()),
        (308, "https://r.test/form")
    );
    let r = request(lbd.listen, "GET", "/", &[("host", "alt.test")])
        .await
        .expect("alt");
    assert_eq!(
        (r.status, location(&r).as_str()),
        (301, "https://alt.test:8443/")
    );
    let r = request(lbd.listen, "GET", "/", &[("host", "p.test")])
        .await
        .expect("plain");
    assert_eq!(r.status, 200);
    assert_eq!(
        backend.hits(),
        1,
        "only the plain route reached the backend"
    );
    assert!(
        metric(lbd.admin, "lbd_responses_total{class=\"3xx\"}").await >= Some(3.0),
        "redirects are counted as 3xx responses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_goes_on_https_responses_and_https_is_not_redirected() {
    let backend = TestBackend::start("b1").await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let pair = ca.issue(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let route = "[[route]]\nname = \"secure\"\nhost = \"a.test\"\npool = \"web\"\n\
                 redirect_to_https = true\nhsts_max_age_s = 31536000\nhsts_include_subdomains = true\n";
    let lbd = lbd_with_tls_and_routes(&backend, route, &tls_table(&[&pair], "")).await;
    let c = connector(&[b"http/1.1"], ring());
    let s = handshake(lbd.listen, Some("a.test"), &c)
        .await
        .expect("handshake");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "a.test")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.expect("response");
    assert_eq!(
        resp.status(),
        200,
        "an HTTPS request is served, not redirected"
    );
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000; includeSubDomains")
    );
}

/// HTTPS/1.1 is served by the fast path, the same engine as plain HTTP/1.1, over the TLS
/// stream: pipelined requests (both in one TLS record, so the second waits decrypted in the
/// session, where no socket readiness announces it), a 1 MiB response (many flushed writes
/// under backpressure), the route's HSTS in place of the backend's, and a request the fast
/// path does not take (a chunked upload) handed to hyper with the bytes already read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_http1_is_served_by_the_fast_path_and_hands_over_to_hyper() {
    let big = pattern(MIB, 13);
    let big_reply = big.clone();
    let web = RawBackend::start(move |req, _| match req.target.as_str() {
        "/big" => Reply::KeepAlive(ok(&big_reply, "")),
        "/hsts" => Reply::KeepAlive(ok(b"x", "Strict-Transport-Security: max-age=1\r\n")),
        _ => Reply::KeepAlive(echo(req)),
    })
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let pair = Ca::new().issue(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}\n[[route]]\nname = \"secure\"\n\
         host = \"a.test\"\npool = \"web\"\nhsts_max_age_s = 600\n",
        raw_pool("web", &[web.addr])
    );
    let lbd = Lbd::start_with_listener(&body, &tls_table(&[&pair], "")).await;
    let c = connector(&[b"http/1.1"], ring());
    let s = handshake(lbd.listen, Some("a.test"), &c)
        .await
        .expect("handshake");
    let mut w = Wire { s, buf: Vec::new() };
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").into_bytes();

    let mut two = get("/one");
    two.extend_from_slice(&get("/two"));
    w.send(&two).await;
    for path in ["/one", "/two"] {
        let r = w.response(path, "GET").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.text(), echo_text("GET", path, 0), "{path}");
    }
    let r = w.exchange("/big", "GET", &get("/big")).await;
    assert_eq!(sha(&r.body), sha(&big), "the 1 MiB body arrived whole");
    let r = w.exchange("/hsts", "GET", &get("/hsts")).await;
    let hsts: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "strict-transport-security")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        hsts,
        ["max-age=600"],
        "the route's HSTS replaces the backend's"
    );

    let fast = metric(lbd.admin, "lbd_http1_fast_path_requests_total").await;
    assert_eq!(
        fast,
        Some(4.0),
        "every HTTPS/1.1 request so far took the fast path"
    );
    assert_eq!(
        metric(lbd.admin, "lbd_http1_fast_path_handoffs_total")
            .await
            .unwrap_or(0.0),
        0.0
    );

    let upload = b"POST /up HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5\r\nhello\r\n0\r\n\r\n";
    let r = w.exchange("chunked upload", "POST", upload).await;
    assert_eq!(
        r.text(),
        echo_text("POST", "/up", 5),
        "hyper served the upload"
    );
    let r = w
        .exchange("after the hand-off", "GET", &get("/three"))
        .await;
    assert_eq!(r.text(), echo_text("GET", "/three", 0));
    assert_eq!(
        metric(lbd.admin, "lbd_http1_fast_path_handoffs_total").await,
        Some(1.0),
        "the chunked upload handed the connection to hyper"
    );
    assert!(web.errors.lock().expect("errors").is_empty());
}

/// An HTTPS/1.1 connection on the fast path keeps the bounds of a plain one, and ends like a
/// TLS connection should: a malformed head gets 400 and the close; a head that stalls is
/// closed at the header timeout; an idle keep-alive connection waits in its task (never
/// parked) and is closed at its deadline with a `close_notify`, so the client reads a clean
/// end of stream rather than a truncation; SIGTERM closes idle HTTPS connections the same
/// way and lbd exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_on_the_fast_path_keeps_its_bounds_and_closes_with_close_notify() {
    let web = RawBackend::start(|req, _| Reply::KeepAlive(echo(req))).await;
    let dir = tempfile::tempdir().expect("dir");
    let pair = Ca::new().issue(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n{}\n[timeouts]\nrequest_header_ms = 1500\n",
        raw_pool("web", &[web.addr])
    );
    let mut lbd = Lbd::start_with_listener(&body, &tls_table(&[&pair], "")).await;
    let c = connector(&[b"http/1.1"], ring());
    let connect = || async {
        let s = handshake(lbd.listen, Some("a.test"), &c)
            .await
            .expect("handshake");
        Wire { s, buf: Vec::new() }
    };
    let get = b"GET /x HTTP/1.1\r\nHost: a.test\r\n\r\n";

    let mut bad = connect().await;
    let r = bad
        .exchange(
            "malformed",
            "GET",
            b"GET /x HTTP/1.1\r\nHost a.test\r\n\r\n",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    bad.expect_closed("after the 400").await;

    let mut stalled = connect().await;
    stalled.send(b"GET /x HTTP/1.1\r\nHost: a.").await;
    let t0 = tokio::time::Instant::now();
    let rest = stalled.until_close(deadline()).await;
    assert_eq!(
        rest.as_deref(),
        Ok(&b""[..]),
        "a clean close of the stalled head"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "closed at the header timeout"
    );

    let mut idle = connect().await;
    assert_eq!(idle.exchange("first", "GET", get).await.status, 200);
    // An absence: past the 250 ms after which a plain connection would have been parked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        metric(lbd.admin, "lbd_client_connections_parked").await,
        Some(0.0),
        "an HTTPS connection is not parked"
    );
    let rest = idle.until_close(deadline()).await;
    assert_eq!(
        rest.as_deref(),
        Ok(&b""[..]),
        "close_notify at the keep-alive deadline"
    );

    let mut draining = connect().await;
    assert_eq!(draining.exchange("before", "GET", get).await.status, 200);
    lbd.signal("TERM");
    let rest = draining.until_close(deadline()).await;
    assert_eq!(rest.as_deref(), Ok(&b""[..]), "close_notify on SIGTERM");
    let status = lbd.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", lbd.log_text());
}
