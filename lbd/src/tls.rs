//! TLS termination with rustls: certificates chosen by SNI, loaded from `[listener.tls]`.
//!
//! A listener's TLS setup ([`ListenerTls`]) is part of the snapshot, built with it at
//! start and on every reload. So `SIGHUP` re-reads the certificate and key files: new
//! handshakes use the new pairs, connections already open keep theirs, and a bad pair (a key
//! that does not match its certificate, an expired or not-yet-valid certificate, an
//! unreadable file, a chain that does not parse) rejects the reload with an error naming the
//! file, so the previous pairs keep serving.
//!
//! Certificate choice ([`SniResolver`]): the client's SNI name, lowercased, is looked up
//! among the DNS names of every pair's leaf certificate: an exact name first, then a
//! wildcard `*.example.com` for a name one label below `example.com` (a wildcard covers one
//! label only, as clients check it). Several pairs may cover the same name (an RSA and an
//! ECDSA certificate side by side): the first whose key can sign with a scheme the client
//! offers is used. A handshake without SNI, or with a name no pair covers, gets the first
//! pair (and the pairs with exactly its names), or is refused with `unknown_sni = "refuse"`.
//!
//! Files replaced on disk are picked up without a reload too: each TLS listener's
//! [`TlsSlot`] is watched ([`watch`], every `tls.watch_ms`) by the metadata of its files
//! (modification time, size, inode), and a change re-reads them; a bad set is refused and
//! logged, the current pairs keep serving, and the next change is tried again (a
//! certificate written before its key is refused once, then taken).
//!
//! ALPN offers `h2` and `http/1.1`. Session resumption uses stateless tickets sealed by the
//! process's rotating key ring, shared with the peer node ([`tickets`]), and rustls's
//! in-memory session cache.

pub mod pem;
pub mod tickets;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::config::{TlsConfig, TlsVersion, UnknownSni};
use pem::{load_pair, provider, read_chain};
pub use pem::{Leaf, TlsError};

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A listener's TLS: the acceptor for new handshakes and what its certificates say.
pub struct ListenerTls {
    pub acceptor: TlsAcceptor,
    pub certs: Vec<CertSummary>,
    /// With client certificates: the header that carries a verified one's subject upstream.
    pub subject_header: Option<http::HeaderName>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("certs", &self.certs)
            .finish()
    }
}

/// One loaded certificate, for the expiry metric.
#[derive(Debug, Clone)]
pub struct CertSummary {
    /// The first DNS name of the certificate, else the file name.
    pub name: String,
    pub not_after: SystemTime,
}

/// A listener's current TLS, swapped when its files change on disk.
pub struct TlsSlot {
    cfg: TlsConfig,
    current: ArcSwap<ListenerTls>,
    /// The files' metadata when they were last read (or last refused).
    seen: Mutex<Vec<Option<FileStamp>>>,
}

impl std::fmt::Debug for TlsSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSlot")
            .field("current", &self.current.load())
            .finish()
    }
}

/// What tells a replaced file from the one read before.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// What a look at the files did.
#[derive(Debug)]
pub enum Refresh {
    Unchanged,
    Swapped,
    Refused(TlsError),
}

/// Certificate sets taken, and refused, by the file watcher.
static WATCH_RELOADS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

impl TlsSlot {
    /// Read `cfg`'s files as of `now`.
    pub fn new(cfg: TlsConfig, now: SystemTime) -> Result<TlsSlot, TlsError> {
        let seen = stamps(&cfg);
        let current = build(&cfg, now)?;
        Ok(TlsSlot {
            cfg,
            current: ArcSwap::from_pointee(current),
            seen: Mutex::new(seen),
        })
    }

    /// What new handshakes use.
    pub fn current(&self) -> Arc<ListenerTls> {
        self.current.load_full()
    }

    /// Re-read the files if any changed since the last look.
    pub fn refresh_if_changed(&self, now: SystemTime) -> Refresh {
        let latest = stamps(&self.cfg);
        {
            let mut seen = crate::sync::lock(&self.seen);
            if *seen == latest {
                return Refresh::Unchanged;
            }
            *seen = latest;
        }
        match build(&self.cfg, now) {
            Ok(tls) => {
                self.current.store(Arc::new(tls));
                Refresh::Swapped
            }
            Err(e) => Refresh::Refused(e),
        }
    }
}

/// The metadata of every file of `cfg`, in order (`None`: unreadable now).
fn stamps(cfg: &TlsConfig) -> Vec<Option<FileStamp>> {
    use std::os::unix::fs::MetadataExt;
    cfg.certs
        .iter()
        .flat_map(|p| [Some(&p.cert), Some(&p.key), p.ocsp.as_ref()])
        .flatten()
        .map(|path| {
            std::fs::metadata(path).ok().map(|m| FileStamp {
                modified: m.modified().ok(),
                len: m.len(),
                inode: m.ino(),
            })
        })
        .collect()
}

/// Watch `slot`'s files every `every` until `stop` (the snapshot was replaced).
pub async fn watch(listener: String, slot: Arc<TlsSlot>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match slot.refresh_if_changed(SystemTime::now()) {
            Refresh::Unchanged => {}
            Refresh::Swapped => {
                WATCH_RELOADS[0].fetch_add(1, Ordering::Relaxed);
                info!(
                    listener,
                    "TLS files changed on disk: new handshakes use them"
                );
            }
            Refresh::Refused(e) => {
                WATCH_RELOADS[1].fetch_add(1, Ordering::Relaxed);
                error!(listener, error = %e, "TLS files changed on disk but are refused; the previous ones keep serving");
            }
        }
    }
}

/// `lbd_tls_file_reloads_total{result}`.
pub fn render_metrics(e: &mut crate::metrics::Exposition) {
    e.family(
        "lbd_tls_file_reloads_total",
        "counter",
        "Certificate files re-read after a change on disk, by result (error: refused, the previous pairs kept).",
    );
    for (i, result) in ["ok", "error"].iter().enumerate() {
        e.sample(
            "lbd_tls_file_reloads_total",
            &[("result", result)],
            WATCH_RELOADS[i].load(Ordering::Relaxed),
        );
    }
}

/// Load every pair of `cfg` and build the listener's acceptor, as of `now`.
pub fn build(cfg: &TlsConfig, now: SystemTime) -> Result<ListenerTls, TlsError> {
    let provider = Arc::new(provider());
    let mut resolver = SniResolver::default();
    let mut certs = Vec::new();
    for (i, pair) in cfg.certs.iter().enumerate() {
        let (key, leaf) = load_pair(pair, &provider, now)?;
        if leaf.not_after.duration_since(now).unwrap_or_default() < cfg.expiry_warning {
            warn!(cert = %pair.cert.display(), "TLS certificate expires within expiry_warning_days");
        }
        certs.push(CertSummary {
            name: leaf
                .dns_names
                .first()
                .cloned()
                .unwrap_or_else(|| pair.cert.display().to_string()),
            not_after: leaf.not_after,
        });
        resolver.add(&leaf.dns_names, key, i == 0);
    }
    if cfg.unknown_sni == UnknownSni::Refuse {
        resolver.default.clear();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)?;
    let mut config = match &cfg.client {
        Some(client) => builder
            .with_client_cert_verifier(client_verifier(client, provider)?)
            .with_cert_resolver(Arc::new(resolver)),
        None => builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver)),
    };
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.ticketer = Arc::new(tickets::Ticketer::new(Arc::clone(tickets::ring()), cfg));
    Ok(ListenerTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certs,
        subject_header: cfg.client.as_ref().map(|c| c.subject_header.clone()),
    })
}

/// Verifies client certificates against `client.ca` (webpki: chain, validity, key usage).
fn client_verifier(
    client: &crate::config::ClientAuthConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: client.ca.clone(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(&client.ca)? {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if client.required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| bad(e.to_string()))
}

/// What a TLS connection tells the backend about its client certificate: `header` is always
/// removed from the client's requests, and set to `subject` when a certificate was verified.
#[derive(Debug, Clone)]
pub struct ClientCert {
    pub header: http::HeaderName,
    pub subject: Option<http::HeaderValue>,
}

/// The subject of a client's verified certificate (RFC 4514 form), as a header value.
pub fn client_subject(conn: &rustls::ServerConnection) -> Option<http::HeaderValue> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
    http::HeaderValue::from_str(&cert.subject().to_string()).ok()
}

/// Chooses a certificate by SNI name and by the signature schemes the client offers.
#[derive(Debug, Default)]
struct SniResolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// `*.example.com` is kept under `example.com`.
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    /// For no SNI or an unknown name; empty: refuse.
    default: Vec<Arc<CertifiedKey>>,
    /// The names of the first pair, whose alternatives join `default`.
    default_names: Vec<String>,
}

impl SniResolver {
    fn add(&mut self, names: &[String], key: Arc<CertifiedKey>, first: bool) {
        for name in names {
            let table = match name.strip_prefix("*.") {
                Some(parent) => self.wildcard.entry(parent.to_string()),
                None => self.exact.entry(name.clone()),
            };
            table.or_default().push(Arc::clone(&key));
        }
        if first {
            self.default_names = names.to_vec();
        }
        if first || (!names.is_empty() && names == self.default_names.as_slice()) {
            self.default.push(key);
        }
    }

    /// The candidates for `name`: exact, then one-label wildcard, then the default.
    fn candidates(&self, name: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        if let Some(c) = self.exact.get(&name) {
            return c;
        }
        if let Some(c) = name
            .split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
        {
            return c;
        }
        &self.default
    }
}

/// The first candidate whose key can sign with a scheme the client offers.
fn choose(
    candidates: &[Arc<CertifiedKey>],
    offered: &[SignatureScheme],
) -> Option<Arc<CertifiedKey>> {
    candidates
        .iter()
        .find(|c| c.key.choose_scheme(offered).is_some())
        .cloned()
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        choose(
            self.candidates(hello.server_name()),
            hello.signature_schemes(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CertPairConfig;
    use std::path::Path;

    /// A self-signed pair for `names`, valid between the two dates, written to `dir`.
    fn pair(
        dir: &Path,
        file: &str,
        names: &[&str],
        valid: (time::OffsetDateTime, time::OffsetDateTime),
    ) -> CertPairConfig {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        (params.not_before, params.not_after) = valid;
        let cert = params.self_signed(&key).expect("cert");
        let p = CertPairConfig {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
            ocsp: None,
        };
        std::fs::write(&p.cert, cert.pem()).expect("write");
        std::fs::write(&p.key, key.serialize_pem()).expect("write");
        p
    }

    fn years(n: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::now_utc() + time::Duration::days(365 * n)
    }

    fn config(certs: Vec<CertPairConfig>) -> TlsConfig {
        TlsConfig {
            certs,
            unknown_sni: UnknownSni::Default,
            min_version: TlsVersion::Tls12,
            expiry_warning: Duration::from_secs(14 * 86_400),
            watch: None,
            client: None,
        }
    }

    #[test]
    fn bad_pairs_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let now = SystemTime::now();
        let good = pair(d, "good", &["a.test"], (years(-1), years(1)));
        assert!(build(&config(vec![good.clone()]), now).is_ok());

        let expired = pair(d, "expired", &["a.test"], (years(-2), years(-1)));
        let e = build(&config(vec![expired]), now).expect_err("expired");
        assert!(matches!(e, TlsError::Expired { .. }), "{e}");
        assert!(e.to_string().contains("expired.pem"), "{e}");

        let early = pair(d, "early", &["a.test"], (years(1), years(2)));
        let e = build(&config(vec![early]), now).expect_err("not yet valid");
        assert!(matches!(e, TlsError::NotYetValid { .. }), "{e}");

        let other = pair(d, "other", &["b.test"], (years(-1), years(1)));
        let mismatched = CertPairConfig {
            cert: good.cert.clone(),
            key: other.key.clone(),
            ocsp: None,
        };
        let e = build(&config(vec![mismatched]), now).expect_err("mismatch");
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(e.to_string().contains("other.key"), "{e}");

        let missing = CertPairConfig {
            cert: d.join("missing.pem"),
            key: good.key.clone(),
            ocsp: None,
        };
        let e = build(&config(vec![missing]), now).expect_err("missing");
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        std::fs::write(d.join("empty.pem"), "not a certificate\n").expect("write");
        let empty = CertPairConfig {
            cert: d.join("empty.pem"),
            key: good.key.clone(),
            ocsp: None,
        };
        let e = build(&config(vec![empty]), now).expect_err("empty");
        assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");

        let no_staple = CertPairConfig {
            ocsp: Some(d.join("missing.ocsp")),
            ..good
        };
        let e = build(&config(vec![no_staple]), now).expect_err("staple");
        assert!(matches!(e, TlsError::Ocsp { .. }), "{e}");
        assert!(e.to_string().contains("missing.ocsp"), "{e}");
    }

    #[test]
    fn the_resolver_prefers_exact_then_one_label_wildcards_then_the_default() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let valid = (years(-1), years(1));
        let provider = provider();
        let now = SystemTime::now();
        let mut r = SniResolver::default();
        let mut keys = Vec::new();
        for (i, names) in [vec!["d.test"], vec!["a.test"], vec!["*.w.test"]]
            .iter()
            .enumerate()
        {
            let p = pair(d, &format!("p{i}"), names, valid);
            let (key, leaf) = load_pair(&p, &provider, now).expect("pair");
            keys.push(Arc::clone(&key));
            r.add(&leaf.dns_names, key, i == 0);
        }
        let is = |got: &[Arc<CertifiedKey>], want: usize| Arc::ptr_eq(&got[0], &keys[want]);
        assert!(is(r.candidates(Some("a.test")), 1));
        assert!(is(r.candidates(Some("x.w.test")), 2));
        assert!(
            is(r.candidates(Some("w.test")), 0),
            "the wildcard's own parent is not covered"
        );
        assert!(is(r.candidates(Some("y.x.w.test")), 0));
        assert!(is(r.candidates(None), 0));
    }
}
