//! Stage 2 for `[pool.tls]`: TLS to a pool's backends. Unlike a listener's certificates, the
//! files are read and checked here (and again when the snapshot is built), so a bad CA bundle
//! or client pair is a config error at its key, reported with every other one.

use super::*;

use shared::config::Validator;

use super::validate::required;
use crate::upstream::tls::setup::UpstreamTls;

/// `[pool.tls]` at `key` (`pool[i].tls`); `None` when unusable (the errors are reported).
pub(super) fn validate_upstream_tls(
    v: &mut Validator<'_>,
    key: &str,
    t: &FileUpstreamTls,
    h2: bool,
) -> Option<UpstreamTlsConfig> {
    let ca = required(v, &format!("{key}.ca"), &t.ca);
    let server_name = match &t.server_name {
        // Backends are addressed by IP, so there is no host name to default to.
        None => {
            v.error(
                format!("{key}.server_name"),
                "is required: the name the backends' certificates are checked against (and \
                 sent as SNI), e.g. \"api.internal\", or an IP address their certificates name",
            );
            None
        }
        Some(_) => required(v, &format!("{key}.server_name"), &t.server_name),
    };
    let client_cert = match (&t.client_cert, &t.client_key) {
        (Some(cert), Some(k)) => Some(CertPairConfig {
            cert: PathBuf::from(cert),
            key: PathBuf::from(k),
            ocsp: None,
        }),
        (None, None) => None,
        (Some(_), None) => {
            v.error(format!("{key}.client_key"), "is required with client_cert");
            None
        }
        (None, Some(_)) => {
            v.error(format!("{key}.client_cert"), "is required with client_key");
            None
        }
    };
    let cfg = UpstreamTlsConfig {
        ca: PathBuf::from(ca?),
        server_name: server_name?.to_string(),
        client_cert,
        h2,
    };
    if let Err(errors) = UpstreamTls::build(&cfg, std::time::SystemTime::now()) {
        for e in errors.0 {
            let at = e
                .field()
                .map_or_else(|| key.to_string(), |f| format!("{key}.{f}"));
            v.error(at, e.to_string());
        }
        return None;
    }
    Some(cfg)
}
