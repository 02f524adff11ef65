//! TLS to backends (`[pool.tls]`): lbd as a TLS client, on rustls with the ring provider, as
//! downstream (whose PEM and key loading, [`crate::tls::pem`], this reuses).
//!
//! - [`UpstreamTls`] ([`setup`]): one pool's client setup. It is built from the pool's config when a
//!   snapshot is built, and the same way by `validate`, so a bad file is a config error and a
//!   reload with one keeps the old config. Backend certificates are verified by webpki
//!   against the `ca` bundle (chain, validity, and `server_name`, which is also the SNI);
//!   lbd's client certificate is presented to backends that ask for one; ALPN offers
//!   `http/1.1`. Sessions are resumed from rustls's in-memory cache.
//! - [`BackendTls`]: what a TLS pool's backend keeps across reloads, with its
//!   `BackendConns`: the current [`UpstreamTls`] (a reload swaps in the files read again) and
//!   the counters of `lbd_upstream_tls_errors_total`.
//! - [`UpstreamIo`]: the stream hyper speaks HTTP/1 on, plain or TLS. TLS failures after the
//!   handshake are counted too: under TLS 1.3 a backend checks lbd's client certificate only
//!   after lbd's side of the handshake is done, so a refusal ("certificate required") arrives
//!   as an alert on the first read.
//!
//! A failed handshake is a backend-side connect failure (a 502, or a retry under the pool's
//! policy, and a failure for passive health), counted by reason and logged at most once a
//! second per backend. The HTTP/1 fast path speaks plain TCP only: requests routed to a TLS
//! pool are handed to hyper (`crate::l7::plain::exchange`).

pub mod setup;

pub use setup::{UpstreamTls, UpstreamTlsError, UpstreamTlsErrors};

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use rustls::{AlertDescription, CertificateError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tracing::warn;

use crate::error::{ErrorKind, ProxyError};
use crate::log_limit::LogLimiter;

/// The protocol offered by ALPN: HTTP/1.1, or HTTP/2 for a pool with `protocol = "h2"`.
/// Why TLS with a backend failed: the `reason` label of `lbd_upstream_tls_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The backend's certificate does not chain to the `ca` bundle: an unknown issuer, or a
    /// signature the bundle's CA of that name did not make.
    UnknownCa,
    /// It does not name `server_name`.
    NameMismatch,
    /// It has expired or is not valid yet.
    Expired,
    /// Any other certificate problem (wrong purpose, unparseable, unsupported algorithm).
    BadCertificate,
    /// The backend wants a client certificate and lbd has none (or not one it accepts).
    ClientCertRequired,
    /// The backend ended the handshake with another alert.
    Alert,
    /// Any other TLS protocol error.
    Protocol,
    /// The connection closed or failed during the handshake.
    Io,
    /// No handshake within `timeouts.connect_ms` (counted from the TCP connect).
    Timeout,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 9] = [
        TlsFailure::UnknownCa,
        TlsFailure::NameMismatch,
        TlsFailure::Expired,
        TlsFailure::BadCertificate,
        TlsFailure::ClientCertRequired,
        TlsFailure::Alert,
        TlsFailure::Protocol,
        TlsFailure::Io,
        TlsFailure::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::UnknownCa => "unknown_ca",
            TlsFailure::NameMismatch => "name_mismatch",
            TlsFailure::Expired => "expired",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::ClientCertRequired => "client_cert_required",
            TlsFailure::Alert => "alert",
            TlsFailure::Protocol => "protocol",
            TlsFailure::Io => "io",
            TlsFailure::Timeout => "timeout",
        }
    }

    /// The reason of a failed handshake (tokio-rustls hands rustls's error inside the
    /// `io::Error`; anything else is the connection failing).
    fn of_handshake(e: &io::Error) -> TlsFailure {
        Self::of_tls(e).unwrap_or(TlsFailure::Io)
    }

    /// The reason of a TLS-level error, `None` for a plain I/O error.
    fn of_tls(e: &io::Error) -> Option<TlsFailure> {
        let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
        Some(match tls {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    TlsFailure::UnknownCa
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::NameMismatch,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::Expired,
                _ => TlsFailure::BadCertificate,
            },
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
                TlsFailure::ClientCertRequired
            }
            rustls::Error::AlertReceived(_) => TlsFailure::Alert,
            _ => TlsFailure::Protocol,
        })
    }
}

/// Why a handshake with a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake with the backend timed out")]
    Timeout,
    #[error("TLS handshake with the backend failed ({}): {source}", reason.as_str())]
    Failed {
        reason: TlsFailure,
        source: io::Error,
    },
}

impl HandshakeError {
    pub fn reason(&self) -> TlsFailure {
        match self {
            HandshakeError::Timeout => TlsFailure::Timeout,
            HandshakeError::Failed { reason, .. } => *reason,
        }
    }
}

impl From<HandshakeError> for ProxyError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Timeout => ProxyError::new(ErrorKind::ConnectTimeout).with_source(e),
            HandshakeError::Failed { .. } => ProxyError::new(ErrorKind::Connect).with_source(e),
        }
    }
}

/// TLS failures with one backend, by reason, and their rate-limited log.
pub struct TlsErrors {
    pool: String,
    backend: SocketAddr,
    counts: [AtomicU64; TlsFailure::ALL.len()],
    log: LogLimiter,
}

impl std::fmt::Debug for TlsErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsErrors")
            .field("pool", &self.pool)
            .field("backend", &self.backend)
            .finish()
    }
}

impl TlsErrors {
    fn note(&self, reason: TlsFailure, error: &dyn std::fmt::Display) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.log.note(|suppressed| {
            warn!(
                side = "backend",
                pool = %self.pool,
                backend = %self.backend,
                reason = reason.as_str(),
                suppressed,
                error = %error,
                "TLS with the backend failed"
            )
        });
    }

    pub fn get(&self, reason: TlsFailure) -> u64 {
        self.counts[reason as usize].load(Ordering::Relaxed)
    }
}

/// A TLS pool's backend: its current client setup and its failure counters.
#[derive(Debug)]
pub struct BackendTls {
    current: ArcSwap<UpstreamTls>,
    pub errors: Arc<TlsErrors>,
}

impl BackendTls {
    pub fn new(pool: &str, backend: SocketAddr, tls: Arc<UpstreamTls>) -> Self {
        BackendTls {
            current: ArcSwap::new(tls),
            errors: Arc::new(TlsErrors {
                pool: pool.to_string(),
                backend,
                counts: Default::default(),
                log: LogLimiter::new(),
            }),
        }
    }

    /// New handshakes use `tls` (a reload read the files again); open connections keep theirs.
    pub fn update(&self, tls: Arc<UpstreamTls>) {
        self.current.store(tls);
    }

    /// The name sent as SNI and checked.
    pub fn server_name(&self) -> String {
        self.current.load().server_name.to_str().into_owned()
    }

    /// The handshake on `tcp`, finished by `deadline`; a failure is counted and logged.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        deadline: Instant,
    ) -> Result<UpstreamIo, HandshakeError> {
        let tls = self.current.load_full();
        let connect = tls.connector.connect(tls.server_name.clone(), tcp);
        let failed = match tokio::time::timeout_at(deadline, connect).await {
            Ok(Ok(stream)) => {
                return Ok(UpstreamIo::Tls(Box::new(stream), Arc::clone(&self.errors)))
            }
            Ok(Err(source)) => HandshakeError::Failed {
                reason: TlsFailure::of_handshake(&source),
                source,
            },
            Err(_) => HandshakeError::Timeout,
        };
        self.errors.note(failed.reason(), &failed);
        Err(failed)
    }
}

/// `tcp` as is for a plain pool (`tls = None`), else after the handshake.
pub async fn secure(
    tls: Option<&BackendTls>,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<UpstreamIo, HandshakeError> {
    match tls {
        None => Ok(UpstreamIo::Plain(tcp)),
        Some(tls) => tls.handshake(tcp, deadline).await,
    }
}

/// An upstream connection's stream: plain TCP, or TLS (whose later TLS failures are counted
/// with the backend's).
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>, Arc<TlsErrors>),
}

impl UpstreamIo {
    /// The protocol the backend agreed to by ALPN (`None`: plain TCP, or no agreement).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            UpstreamIo::Plain(_) => None,
            UpstreamIo::Tls(s, _) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s, errors) => {
                let read = Pin::new(s.as_mut()).poll_read(cx, buf);
                if let Poll::Ready(Err(e)) = &read {
                    if let Some(reason) = TlsFailure::of_tls(e) {
                        errors.note(reason, e);
                    }
                }
                read
            }
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `lbd_upstream_tls_errors_total{pool,backend,reason}` for every backend of a TLS pool, of
/// `backends` as (pool name, its connections).
pub fn render_metrics<'a>(
    e: &mut crate::metrics::Exposition,
    backends: impl Iterator<Item = (&'a str, &'a crate::upstream::conns::BackendConns)>,
) {
    let mut tls_backends =
        backends.filter_map(|(pool, c)| c.tls.as_ref().map(|t| (pool, c.addr, t)));
    let Some(first) = tls_backends.next() else {
        return;
    };
    const NAME: &str = "lbd_upstream_tls_errors_total";
    e.family(
        NAME,
        "counter",
        "TLS failures with backends ([pool.tls]), by reason: handshakes refused or timed out, \
         and TLS errors on open connections.",
    );
    for (pool, addr, tls) in std::iter::once(first).chain(tls_backends) {
        let addr = addr.to_string();
        for reason in TlsFailure::ALL {
            e.sample(
                NAME,
                &[
                    ("pool", pool),
                    ("backend", &addr),
                    ("reason", reason.as_str()),
                ],
                tls.errors.get(reason),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamTlsConfig;
    use crate::tls::pem::provider;
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    fn tls_error(e: rustls::Error) -> io::Error {
        // How tokio-rustls hands rustls's errors over.
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn failures_are_classified_by_reason() {
        let cert = |c| tls_error(rustls::Error::InvalidCertificate(c));
        let alert = |a| tls_error(rustls::Error::AlertReceived(a));
        for (e, want) in [
            (cert(CertificateError::UnknownIssuer), TlsFailure::UnknownCa),
            (cert(CertificateError::BadSignature), TlsFailure::UnknownCa),
            (
                cert(CertificateError::NotValidForName),
                TlsFailure::NameMismatch,
            ),
            (cert(CertificateError::Expired), TlsFailure::Expired),
            (cert(CertificateError::NotValidYet), TlsFailure::Expired),
            (
                cert(CertificateError::InvalidPurpose),
                TlsFailure::BadCertificate,
            ),
            (
                alert(AlertDescription::CertificateRequired),
                TlsFailure::ClientCertRequired,
            ),
            (alert(AlertDescription::BadCertificate), TlsFailure::Alert),
            (tls_error(rustls::Error::DecryptError), TlsFailure::Protocol),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                TlsFailure::Io,
            ),
        ] {
            assert_eq!(TlsFailure::of_handshake(&e), want, "{e}");
        }
        // After the handshake only TLS errors count: a reset is not one.
        assert_eq!(
            TlsFailure::of_tls(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            None
        );
        let names: std::collections::HashSet<&str> =
            TlsFailure::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), TlsFailure::ALL.len(), "labels are distinct");
    }

    /// A TLS server on loopback presenting a self-signed certificate for `name` (written to
    /// `dir/backend.pem`), accepting handshakes until the test ends.
    async fn self_signed_backend(dir: &Path, name: &str) -> (SocketAddr, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let pem = dir.join("backend.pem");
        std::fs::write(&pem, cert.pem()).expect("write");
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key.into())
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _held = acceptor.accept(tcp).await;
                    std::future::pending::<()>().await;
                });
            }
        });
        (addr, pem)
    }

    #[tokio::test]
    async fn a_self_signed_backend_certificate_can_be_its_own_bundle() {
        let dir = tempfile::tempdir().expect("dir");
        let (addr, pem) = self_signed_backend(dir.path(), "backend.test").await;
        let handshake = |name: &str| {
            let cfg = UpstreamTlsConfig {
                ca: pem.clone(),
                server_name: name.to_string(),
                client_cert: None,
                h2: false,
            };
            let tls = UpstreamTls::build(&cfg, SystemTime::now()).expect("build");
            let backend = BackendTls::new("p", addr, Arc::new(tls));
            async move {
                let tcp = TcpStream::connect(addr).await.expect("connect");
                let done = backend
                    .handshake(tcp, Instant::now() + std::time::Duration::from_secs(5))
                    .await;
                (done.map(|_| ()), backend.errors)
            }
        };
        let (done, errors) = handshake("backend.test").await;
        assert!(done.is_ok(), "{done:?}");
        assert!(TlsFailure::ALL.iter().all(|r| errors.get(*r) == 0));
        let (done, errors) = handshake("other.test").await;
        assert!(matches!(
            done,
            Err(HandshakeError::Failed {
                reason: TlsFailure::NameMismatch,
                ..
            })
        ));
        assert_eq!(errors.get(TlsFailure::NameMismatch), 1);
    }

    #[test]
    fn a_refused_handshake_is_a_backend_connect_failure() {
        let failed = HandshakeError::Failed {
            reason: TlsFailure::UnknownCa,
            source: tls_error(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            )),
        };
        let e = ProxyError::from(failed);
        assert_eq!(
            (e.kind, e.side),
            (ErrorKind::Connect, crate::error::Side::Backend)
        );
        assert_eq!(e.kind.status(), http::StatusCode::BAD_GATEWAY);
        assert!(e.to_string().contains("(unknown_ca)"), "{e}");
        let e = ProxyError::from(HandshakeError::Timeout);
        assert_eq!(e.kind, ErrorKind::ConnectTimeout);
    }
}
