//! TLS session resumption through the real binary: a rustls client that reconnects gets a
//! resumed handshake, for TLS 1.3 and 1.2; a ticket sealed before a key rotation still
//! resumes while its key is in the ring, and one whose key was erased gets a full handshake
//! (not an error); a reload keeps the sessions; and across a pair of lbds with a peer link,
//! a ticket one node issued resumes on the other, also after the first is killed with
//! SIGKILL.
//!
//! TLS connections are always served by hyper (the HTTP/1 fast path works on plain sockets
//! only), so these run once, not on both paths.

use std::sync::Arc;

use rustls::{HandshakeKind, SupportedProtocolVersion};
use tokio_rustls::TlsConnector;

use super::tls::{get_http1, handshake, ring, tls_table, AnyCert, Ca, Issued};
use super::*;

/// A client clock stopped at its creation: the client then never drops a ticket as past
/// the lifetime lbd announced (one rotation period, seconds here), so what these tests see
/// is lbd's key ring deciding, not the client's clock racing a loaded machine.
#[derive(Debug)]
struct StoppedClock(rustls::pki_types::UnixTime);

impl rustls::time_provider::TimeProvider for StoppedClock {
    fn current_time(&self) -> Option<rustls::pki_types::UnixTime> {
        Some(self.0)
    }
}

/// A client of one TLS version, verifying nothing, keeping its sessions (rustls's default
/// in-memory store, keyed by server name) across connections, on a [`StoppedClock`].
fn resuming_client(version: &'static SupportedProtocolVersion) -> TlsConnector {
    let provider = Arc::new(ring());
    let clock = Arc::new(StoppedClock(rustls::pki_types::UnixTime::now()));
    let mut config = rustls::ClientConfig::builder_with_details(Arc::clone(&provider), clock)
        .with_protocol_versions(&[version])
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider, Arc::default())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Connect to `addr` as `a.test`, make one request (which also reads TLS 1.3's tickets, sent
/// after the handshake) and say how the handshake went.
async fn connect(addr: SocketAddr, client: &TlsConnector) -> HandshakeKind {
    let s = handshake(addr, Some("a.test"), client)
        .await
        .expect("handshake");
    let kind = s.get_ref().1.handshake_kind().expect("handshake done");
    assert!(get_http1(s, "/").await.starts_with("b1\n"));
    kind
}

async fn counter(admin: SocketAddr, series: &str) -> f64 {
    metric(admin, series).await.unwrap_or(0.0)
}

async fn rotations(admin: SocketAddr) -> f64 {
    counter(admin, "lbd_tls_ticket_rotations_total").await
}

/// Wait until the node behind `admin` has drawn `n` more keys than `since`.
async fn await_rotations(admin: SocketAddr, since: f64, n: f64) {
    eventually(
        &format!("{n} ticket key rotation(s)"),
        Duration::from_secs(20),
        || async move { rotations(admin).await >= since + n },
    )
    .await;
}

/// One certificate for `a.test` and its `[listener.tls]` table.
struct Cert {
    _dir: tempfile::TempDir,
    table: String,
}

fn cert() -> Cert {
    let dir = tempfile::tempdir().expect("dir");
    let issued: Issued =
        Ca::new().issue(dir.path(), "a", &["a.test"], &rcgen::PKCS_ECDSA_P256_SHA256);
    let table = tls_table(&[&issued], "");
    Cert { _dir: dir, table }
}

/// Within one node: resumed, still resumed after a rotation, full once the key is erased.
async fn resumes_within_a_node(version: &'static SupportedProtocolVersion) {
    const ROTATE_S: u64 = 3;
    let backend = TestBackend::start("b1").await;
    let cert = cert();
    let body = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\ntls_ticket_rotate_s = {ROTATE_S}\n\
         [[pool]]\nname = \"web\"\n[[pool.backend]]\naddress = \"{}\"\n",
        backend.addr
    );
    let lbd = Lbd::start_with_listener(&body, &cert.table).await;
    // The same listener in another process: its ring never had lbd's keys (as after a
    // restart, which draws new ones).
    let other = Lbd::start_with_listener(&body, &cert.table).await;
    let client = resuming_client(version);

    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Full);
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Resumed);
    assert_eq!(counter(lbd.admin, "lbd_tls_resumptions_total").await, 1.0);
    assert!(counter(lbd.admin, "lbd_tls_tickets_total{result=\"accepted\"}").await >= 1.0);

    // A live ticket whose key the ring does not hold: refused by the server, counted, and a
    // full handshake, not an error.
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Resumed);
    assert_eq!(connect(other.listen, &client).await, HandshakeKind::Full);
    assert_eq!(
        counter(other.admin, "lbd_tls_tickets_total{result=\"unknown_key\"}").await,
        1.0
    );
    assert_eq!(counter(other.admin, "lbd_tls_resumptions_total").await, 0.0);
    drop(other);
    // The client now holds other's ticket, which lbd does not know either.
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Full);

    // A rotation: the ticket just received was sealed by the previous key, still accepted.
    let before = rotations(lbd.admin).await;
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Resumed);
    await_rotations(lbd.admin, before, 1.0).await;
    assert_eq!(
        connect(lbd.listen, &client).await,
        HandshakeKind::Resumed,
        "a ticket sealed before the rotation resumes while its key is in the ring"
    );

    // Erased two periods after it became current: three rotations later the key of the ticket
    // just received is gone whichever key sealed it. The server refuses the ticket (counted)
    // and the client gets a full handshake, not an error.
    let before = rotations(lbd.admin).await;
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Resumed);
    let unknown = counter(lbd.admin, "lbd_tls_tickets_total{result=\"unknown_key\"}").await;
    await_rotations(lbd.admin, before, 3.0).await;
    assert_eq!(connect(lbd.listen, &client).await, HandshakeKind::Full);
    assert_eq!(
        counter(lbd.admin, "lbd_tls_tickets_total{result=\"unknown_key\"}").await,
        unknown + 1.0,
        "the erased key's ticket is refused by lbd"
    );
    assert_eq!(
        counter(lbd.admin, "lbd_tls_ticket_keys{origin=\"local\"}").await,
        3.0,
        "the next key, the current one and the previous one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_sessions_resume_across_a_rotation_and_not_past_the_key_erasure() {
    resumes_within_a_node(&rustls::version::TLS13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_sessions_resume_across_a_rotation_and_not_past_the_key_erasure() {
    resumes_within_a_node(&rustls::version::TLS12).await;
}

/// Both nodes of a pair with a peer link and the same TLS listener (same certificate paths).
async fn pair(backend: &TestBackend, cert: &Cert, psk: &std::path::Path) -> (Lbd, Lbd) {
    let (la, lb) = two_free_addrs();
    let node = |id: &str, peer_id: &str, listen: SocketAddr, peer: SocketAddr| {
        format!(
            "default_pool = \"web\"\n[global]\n#GLOBAL\naccess_log = \"off\"\n\n[peer]\n\
             node_id = \"{id}\"\npeer_node_id = \"{peer_id}\"\ncluster_id = \"pair-1\"\n\
             listen = \"{listen}\"\npeer = \"{peer}\"\npsk_file = {:?}\nwarm_timeout_ms = 60000\n\
             reconnect_ms = 50\nping_ms = 200\n\n[[pool]]\nname = \"web\"\n\
             [[pool.backend]]\naddress = \"{}\"\n",
            psk.display().to_string(),
            backend.addr
        )
    };
    let a = Lbd::start_with_listener(&node("lb-a", "lb-b", la, lb), &cert.table).await;
    let b = Lbd::start_with_listener(&node("lb-b", "lb-a", lb, la), &cert.table).await;
    (a, b)
}

/// How many of its peer's ticket keys the node behind `admin` holds.
async fn peer_keys(admin: SocketAddr) -> f64 {
    counter(admin, "lbd_tls_ticket_keys{origin=\"peer\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_issued_by_one_node_resumes_on_its_peer_after_a_kill_9() {
    let backend = TestBackend::start("b1").await;
    let cert = cert();
    let keys = tempfile::tempdir().expect("dir");
    let psk = keys.path().join("peer.key");
    common::write_mode(
        &psk,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        0o600,
    );
    let (mut a, b) = pair(&backend, &cert, &psk).await;
    eventually(
        "each node holds the other's ticket key",
        Duration::from_secs(10),
        || async { peer_keys(a.admin).await >= 1.0 && peer_keys(b.admin).await >= 1.0 },
    )
    .await;

    // Both ways while both run, for each version.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = resuming_client(version);
        assert_eq!(connect(b.listen, &client).await, HandshakeKind::Full);
        assert_eq!(
            connect(a.listen, &client).await,
            HandshakeKind::Resumed,
            "{version:?}: b's ticket on a"
        );
    }

    // A reload rebuilds the listener's TLS but keeps the ring: sessions survive it.
    let client = resuming_client(&rustls::version::TLS13);
    assert_eq!(connect(a.listen, &client).await, HandshakeKind::Full);
    a.signal("HUP");
    eventually("a reloaded", Duration::from_secs(10), || async {
        counter(a.admin, "lbd_config_reloads_total{result=\"ok\"}").await >= 1.0
    })
    .await;
    assert_eq!(
        connect(a.listen, &client).await,
        HandshakeKind::Resumed,
        "a session from before the reload"
    );

    // The failover: sessions from a, then a is killed; b resumes them.
    let clients = [
        resuming_client(&rustls::version::TLS13),
        resuming_client(&rustls::version::TLS12),
    ];
    for c in &clients {
        assert_eq!(connect(a.listen, c).await, HandshakeKind::Full);
    }
    let resumed = counter(b.admin, "lbd_tls_resumptions_total").await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5)).await;
    for c in &clients {
        assert_eq!(
            connect(b.listen, c).await,
            HandshakeKind::Resumed,
            "a's ticket resumes on b after a died"
        );
    }
    assert_eq!(
        counter(b.admin, "lbd_tls_resumptions_total").await,
        resumed + 2.0
    );
}
