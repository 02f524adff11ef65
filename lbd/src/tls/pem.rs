//! Reading certificates and keys from PEM files, for listeners ([`crate::tls`]), for lbd's
//! TLS to backends ([`crate::upstream::tls`]) and for config validation, which checks a
//! `[pool.tls]`'s files so a bad one is a config error at its key. It sits with the config,
//! below both users, so validation does not import the TLS layers above it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::CertPairConfig;

/// Why a listener's TLS could not be set up. Always names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{}: cannot read the OCSP response: {source}", path.display())]
    Ocsp {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: certificate does not parse: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{}: key not usable: {source}", path.display())]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("{}: the key does not match the certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: certificate expired {} s ago", path.display(), ago.as_secs())]
    Expired { path: PathBuf, ago: Duration },
    #[error("{}: certificate not valid for another {} s", path.display(), wait.as_secs())]
    NotYetValid { path: PathBuf, wait: Duration },
    #[error("{}: client CA bundle: {reason}", path.display())]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS settings: {0}")]
    Settings(#[from] rustls::Error),
}

/// The names and validity of a leaf certificate.
pub struct Leaf {
    pub dns_names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// The crypto provider, for listeners and backends alike: aws-lc-rs (the default `aws-lc-rs`
/// feature: `scripts/bench-tls.sh --providers ring,aws-lc-rs` measured it cheaper for RSA
/// full handshakes and the same otherwise, and it has post-quantum hybrid key exchange,
/// X25519MLKEM768), or ring when lbd is built with `--no-default-features` (rustls
/// deprecates ring's default provider for lacking post-quantum key exchange).
#[cfg(not(feature = "aws-lc-rs"))]
#[allow(deprecated)]
pub fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(feature = "aws-lc-rs")]
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// Read, parse and check one chain and key (also lbd's client certificate to backends,
/// `crate::upstream::tls`).
pub fn load_pair(
    pair: &CertPairConfig,
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<(Arc<CertifiedKey>, Leaf), TlsError> {
    let chain = read_chain(&pair.cert)?;
    let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|source| TlsError::Read {
        path: pair.key.clone(),
        source,
    })?;
    let leaf = parse_leaf(&chain[0], &pair.cert)?;
    if let Ok(ago) = now.duration_since(leaf.not_after) {
        return Err(TlsError::Expired {
            path: pair.cert.clone(),
            ago,
        });
    }
    if let Ok(wait) = leaf.not_before.duration_since(now) {
        return Err(TlsError::NotYetValid {
            path: pair.cert.clone(),
            wait,
        });
    }
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::BadKey {
            path: pair.key.clone(),
            source,
        })?;
    let mut certified = CertifiedKey::new(chain, signing);
    if let Some(path) = &pair.ocsp {
        // Stapled as is: the CA's signed response, refreshed by whoever writes the file.
        let staple = std::fs::read(path).map_err(|source| TlsError::Ocsp {
            path: path.clone(),
            source,
        })?;
        certified.ocsp = Some(staple);
    }
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        cert: pair.cert.clone(),
        key: pair.key.clone(),
    })?;
    Ok((Arc::new(certified), leaf))
}

/// Every certificate of a PEM file (at least one).
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = CertificateDer::pem_file_iter(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let chain = read
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The leaf's DNS names (subjectAltName, else the subject's CN) and validity.
fn parse_leaf(der: &CertificateDer<'_>, path: &Path) -> Result<Leaf, TlsError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let bad = |reason: String| TlsError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut dns_names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(bad(format!("subjectAltName: {e}"))),
    };
    if dns_names.is_empty() {
        dns_names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    Ok(Leaf {
        dns_names,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
    })
}
