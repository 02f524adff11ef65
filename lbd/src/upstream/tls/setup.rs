//! One pool's TLS client setup, [`UpstreamTls`], read and checked from its `[pool.tls]` files.
//! Config validation builds it too (so a bad file is a config error at its key), which is why
//! it sits apart from the connection code of [`super`], at the config's layer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio_rustls::TlsConnector;

use crate::config::{CertPairConfig, UpstreamTlsConfig};
use crate::tls::pem::{load_pair, provider, read_chain, TlsError};

const ALPN_HTTP1: &[u8] = b"http/1.1";
const ALPN_H2: &[u8] = b"h2";

/// A pool's TLS client setup.
pub struct UpstreamTls {
    pub(super) connector: TlsConnector,
    pub(super) server_name: ServerName<'static>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why a `[pool.tls]` cannot be used. Names the file, and [`UpstreamTlsError::field`] the key.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{0}")]
    Ca(TlsError),
    #[error("{}: not a usable CA certificate: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("{source}")]
    ClientCert {
        field: &'static str,
        source: TlsError,
    },
    #[error("{name:?} is not a DNS name or an IP address")]
    ServerName { name: String },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

impl UpstreamTlsError {
    /// The `[pool.tls]` key it is about (`None`: the table as a whole).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            UpstreamTlsError::Ca(_) | UpstreamTlsError::BadCa { .. } => Some("ca"),
            UpstreamTlsError::ClientCert { field, .. } => Some(field),
            UpstreamTlsError::ServerName { .. } => Some("server_name"),
            UpstreamTlsError::Settings(_) => None,
        }
    }
}

/// Every problem of one `[pool.tls]`.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(|e| match e.field() {
    Some(f) => format!("{f}: {e}"),
    None => e.to_string(),
}).collect::<Vec<_>>().join("; "))]
pub struct UpstreamTlsErrors(pub Vec<UpstreamTlsError>);

impl UpstreamTls {
    /// Read and check `cfg`'s files as of `now`, reporting every problem.
    pub fn build(cfg: &UpstreamTlsConfig, now: SystemTime) -> Result<Self, UpstreamTlsErrors> {
        let provider = Arc::new(provider());
        let server_name = ServerName::try_from(cfg.server_name.clone()).map_err(|_| {
            UpstreamTlsError::ServerName {
                name: cfg.server_name.clone(),
            }
        });
        let roots = roots(&cfg.ca);
        let client = cfg
            .client_cert
            .as_ref()
            .map(|pair| client_cert(pair, &provider, now))
            .transpose();
        let (server_name, roots, client) = match (server_name, roots, client) {
            (Ok(n), Ok(r), Ok(c)) => (n, r, c),
            (n, r, c) => {
                let errors = [n.err(), r.err(), c.err()].into_iter().flatten();
                return Err(UpstreamTlsErrors(errors.collect()));
            }
        };
        let settings = |e: rustls::Error| UpstreamTlsErrors(vec![e.into()]);
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(settings)?
            .with_root_certificates(roots);
        let mut config = match client {
            Some(key) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![if cfg.h2 { ALPN_H2 } else { ALPN_HTTP1 }.to_vec()];
        Ok(UpstreamTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }
}

/// The trust anchors of the `ca` bundle.
fn roots(ca: &Path) -> Result<rustls::RootCertStore, UpstreamTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(ca).map_err(UpstreamTlsError::Ca)? {
        roots.add(cert).map_err(|e| UpstreamTlsError::BadCa {
            path: ca.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// lbd's client certificate, checked like a listener's pair (parses, valid now, key matches).
fn client_cert(
    pair: &CertPairConfig,
    provider: &rustls::crypto::CryptoProvider,
    now: SystemTime,
) -> Result<Arc<CertifiedKey>, UpstreamTlsError> {
    load_pair(pair, provider, now)
        .map(|(key, _)| key)
        .map_err(|source| {
            let field = match &source {
                TlsError::BadKey { .. } | TlsError::KeyMismatch { .. } => "client_key",
                TlsError::Read { path, .. } if *path == pair.key => "client_key",
                _ => "client_cert",
            };
            UpstreamTlsError::ClientCert { field, source }
        })
}

/// Presents the one client certificate to every backend that asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}
