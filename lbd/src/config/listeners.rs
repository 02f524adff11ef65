//! Stage 2 for `[[listener]]`: names and addresses unique, no clash with the admin address, and
//! the `vrrp_instance` coupling (needs `[vrrp]`, forces `freebind`).

use super::*;
use std::net::SocketAddr;

use shared::config::Validator;

use super::validate::{parse_addr, required};

/// `[[listener]]`. `admin` is the validated `global.admin`, which no listener may take.
/// Only fully valid listeners are returned; the rest are reported.
pub(super) fn validate_listeners(
    v: &mut Validator<'_>,
    file: &FileConfig,
    admin: SocketAddr,
) -> Vec<ListenerConfig> {
    let mut listeners = Vec::new();
    if file.listener.is_empty() {
        v.error("listener", "at least one [[listener]] is required");
    }
    for (i, l) in file.listener.iter().enumerate() {
        let key = format!("listener[{i}]");
        let name = required(v, &format!("{key}.name"), &l.name);
        let addr = required(v, &format!("{key}.address"), &l.address)
            .and_then(|a| parse_addr(v, &format!("{key}.address"), a));
        if let Some(name) = name {
            if file.listener[..i]
                .iter()
                .any(|o| o.name.as_deref() == Some(name))
            {
                v.error(
                    format!("{key}.name"),
                    format!("duplicate listener name {name:?}"),
                );
            }
        }
        if let Some(addr) = addr {
            if listeners.iter().any(|o: &ListenerConfig| o.address == addr) {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is already used by another listener"),
                );
            }
            if addr == admin {
                v.error(
                    format!("{key}.address"),
                    format!("{addr} is the admin address"),
                );
            }
        }
        let vrrp_instance = l.vrrp_instance.as_ref().map(|i| i.trim().to_string());
        if let Some(inst) = &vrrp_instance {
            if file.vrrp.is_none() {
                v.error(
                    format!("{key}.vrrp_instance"),
                    "needs a [vrrp] table (the coupling to vrrpd)",
                );
            } else if inst.is_empty() {
                v.error(format!("{key}.vrrp_instance"), "must not be empty");
            }
            if l.freebind == Some(false) {
                v.error(
                    format!("{key}.freebind"),
                    "must be true for a vrrp_instance listener: it is bound before vrrpd adds the VIP",
                );
            }
        }
        let tls = l
            .tls
            .as_ref()
            .and_then(|t| validate_tls(v, &format!("{key}.tls"), t));
        if let (Some(name), Some(address)) = (name, addr) {
            if l.tls.is_some() && tls.is_none() {
                continue;
            }
            listeners.push(ListenerConfig {
                name: name.to_string(),
                address,
                // A VIP listener binds before the VIP is on the interface.
                freebind: l.freebind.unwrap_or(vrrp_instance.is_some()),
                vrrp_instance,
                tls,
            });
        }
    }
    listeners
}

/// Default for `tls.watch_ms`.
const WATCH_MS: u64 = 5000;

/// Default for `tls.expiry_warning_days`.
const EXPIRY_WARNING_DAYS: u32 = 14;

/// `[listener.tls]`: the shape only; the files themselves are checked when a snapshot is
/// built (`crate::tls`), so a reload re-reads them.
fn validate_tls(v: &mut Validator<'_>, key: &str, t: &FileTls) -> Option<TlsConfig> {
    let errors_before = v.error_count();
    if t.certs.is_empty() {
        v.error(
            format!("{key}.certs"),
            "at least one { cert = \"chain.pem\", key = \"key.pem\" } pair is required",
        );
    }
    let mut certs = Vec::new();
    for (i, pair) in t.certs.iter().enumerate() {
        let cert = required(v, &format!("{key}.certs[{i}].cert"), &pair.cert);
        let pkey = required(v, &format!("{key}.certs[{i}].key"), &pair.key);
        if let (Some(cert), Some(pkey)) = (cert, pkey) {
            certs.push(CertPairConfig {
                cert: PathBuf::from(cert),
                key: PathBuf::from(pkey),
                ocsp: pair.ocsp.as_ref().map(PathBuf::from),
            });
        }
    }
    let unknown_sni = match t.unknown_sni.as_deref() {
        None | Some("default") => UnknownSni::Default,
        Some("refuse") => UnknownSni::Refuse,
        Some(other) => {
            v.error(
                format!("{key}.unknown_sni"),
                format!("{other:?} is not one of \"default\", \"refuse\""),
            );
            UnknownSni::Default
        }
    };
    let min_version = match t.min_version.as_deref() {
        None | Some("1.2") => TlsVersion::Tls12,
        Some("1.3") => TlsVersion::Tls13,
        Some(other) => {
            v.error(
                format!("{key}.min_version"),
                format!("{other:?} is not one of \"1.2\", \"1.3\""),
            );
            TlsVersion::Tls12
        }
    };
    let days = t.expiry_warning_days.unwrap_or(EXPIRY_WARNING_DAYS);
    v.check_range(format!("{key}.expiry_warning_days"), days, 0, 3650);
    let watch_ms = t.watch_ms.unwrap_or(WATCH_MS);
    if watch_ms != 0 {
        v.check_range(format!("{key}.watch_ms"), watch_ms, 100, 3_600_000);
    }
    let client = validate_client_auth(v, key, t);
    (v.error_count() == errors_before).then(|| TlsConfig {
        certs,
        unknown_sni,
        min_version,
        expiry_warning: Duration::from_secs(u64::from(days) * 86_400),
        watch: (watch_ms != 0).then(|| Duration::from_millis(watch_ms)),
        client,
    })
}

/// Default for `tls.client_subject_header`.
const CLIENT_SUBJECT_HEADER: &str = "x-client-cert-subject";

/// `client_ca`, `client_auth`, `client_subject_header`.
fn validate_client_auth(v: &mut Validator<'_>, key: &str, t: &FileTls) -> Option<ClientAuthConfig> {
    let Some(ca) = &t.client_ca else {
        for (set, k) in [
            (t.client_auth.is_some(), "client_auth"),
            (t.client_subject_header.is_some(), "client_subject_header"),
        ] {
            if set {
                v.error(
                    format!("{key}.{k}"),
                    "needs client_ca (the CA bundle client certificates chain to)",
                );
            }
        }
        return None;
    };
    let required = match t.client_auth.as_deref() {
        None | Some("required") => true,
        Some("optional") => false,
        Some(other) => {
            v.error(
                format!("{key}.client_auth"),
                format!("{other:?} is not one of \"required\", \"optional\""),
            );
            true
        }
    };
    let header = t
        .client_subject_header
        .as_deref()
        .unwrap_or(CLIENT_SUBJECT_HEADER);
    let subject_header = match http::HeaderName::from_bytes(header.as_bytes()) {
        Ok(h) => h,
        Err(_) => {
            v.error(
                format!("{key}.client_subject_header"),
                format!("{header:?} is not a valid header name"),
            );
            return None;
        }
    };
    Some(ClientAuthConfig {
        ca: PathBuf::from(ca),
        required,
        subject_header,
    })
}
