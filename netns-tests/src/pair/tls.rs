//! TLS in the pair: an HTTPS listener on VIP 0 with the same certificate files on
//! both nodes, and a client that keeps its TLS sessions across connections, to see whether a
//! session from one node resumes on the other after a failover (the ticket keys travel over
//! the peer link, see lbd's `tls::tickets`).
//!
//! ```text
//!   client ──HTTPS──> VIP0:TLS_PORT ──> lbd (A, then B after A dies) ──> backends
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, HandshakeKind, SignatureScheme, SupportedProtocolVersion};

use super::softstate::{in_netns, parse_response, HttpResponse};
use super::{PairConfig, PairTopology, INSTANCES};
use crate::lan::{Lan, NodeId};
use crate::topology::write_file;

/// The HTTPS listener's port on VIP 0.
pub const TLS_PORT: u16 = 443;
/// The name the certificate is for, and the client's SNI.
pub const SERVER_NAME: &str = "lbpair.test";

fn cert_path(dir: &Path) -> PathBuf {
    dir.join("tls.pem")
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join("tls.key")
}

/// A self-signed certificate for [`SERVER_NAME`], shared by both nodes (the same paths:
/// lbd binds tickets to the listener's certificate paths).
pub fn write_certificate(dir: &Path) -> Result<()> {
    let key = rcgen::KeyPair::generate().context("generating the TLS key")?;
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .and_then(|p| p.self_signed(&key))
        .context("self-signing the TLS certificate")?;
    write_file(&cert_path(dir), &cert.pem())?;
    write_file(&key_path(dir), &key.serialize_pem())
}

/// The HTTPS listener on VIP 0, bound while this node is master of instance 0, with
/// [`super::softstate::SoftStateOpts::tls`] (empty otherwise).
pub(super) fn lbd_toml_listener(lan: &Lan, cfg: &PairConfig) -> String {
    if !cfg.softstate.as_ref().is_some_and(|s| s.tls) {
        return String::new();
    }
    let dir = lan.topo.dir();
    format!(
        "[[listener]]\nname = \"web-tls\"\naddress = \"{}:{TLS_PORT}\"\nfreebind = true\n\
         vrrp_instance = \"{}\"\n[listener.tls]\ncerts = [{{ cert = \"{}\", key = \"{}\" }}]\n\n",
        lan.vip(0),
        INSTANCES[0].0,
        cert_path(dir).display(),
        key_path(dir).display()
    )
}

/// Accepts any server certificate: the test is about sessions, not trust.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
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

/// A client of one TLS version that keeps its sessions (rustls's in-memory store, by server
/// name) across connections, as a browser does.
pub fn resuming_client(
    version: &'static SupportedProtocolVersion,
) -> Result<Arc<rustls::ClientConfig>> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[version])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What one HTTPS request saw.
#[derive(Debug)]
pub struct TlsAnswer {
    pub kind: Option<HandshakeKind>,
    pub response: HttpResponse,
}

/// One `GET /` over a new TLS connection to `addr` with `config` (whose session store it
/// uses and feeds), reading to the end of the response, so TLS 1.3's tickets, sent after
/// the handshake, are in the store when this returns.
pub fn https_get(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<TlsAnswer> {
    let deadline = Instant::now() + timeout;
    let mut sock = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| anyhow!("{e}"))?;
    let mut conn = rustls::ClientConnection::new(Arc::clone(config), name)
        .map_err(|e| anyhow!("TLS client: {e}"))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let req = format!("GET / HTTP/1.1\r\nhost: {SERVER_NAME}\r\nconnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .with_context(|| format!("TLS handshake or request to {addr}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let response = loop {
        if let Some(resp) = parse_response(&buf)? {
            break resp;
        }
        if Instant::now() > deadline {
            bail!("{addr}: no complete HTTPS response within {timeout:?}");
        }
        match tls.read(&mut chunk) {
            Ok(0) => bail!("{addr} closed after {} bytes", buf.len()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e).with_context(|| format!("reading from {addr}")),
        }
    };
    Ok(TlsAnswer {
        kind: conn.handshake_kind(),
        response,
    })
}

impl PairTopology {
    /// VIP 0's HTTPS listener.
    pub fn tls_target(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.vip(0), TLS_PORT)
    }

    /// [`https_get`] from the client namespace.
    pub fn client_https_get(
        &self,
        config: &Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<TlsAnswer> {
        let target = SocketAddr::V4(self.tls_target());
        let config = Arc::clone(config);
        in_netns(&self.lan.node(NodeId::Client).ns, move || {
            https_get(target, &config, timeout)
        })
    }

    /// A series of node `id`'s lbd metrics (`name{labels}` exactly as exposed).
    pub fn lbd_metric(&self, id: NodeId, series: &str) -> Result<f64> {
        let r = self.admin(id, "GET", "/metrics")?;
        r.body
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow!("{id:?}: no metric {series}"))
    }
}
