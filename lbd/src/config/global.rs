//! Stage 2 for the process-wide tables: `[global]` (log, admin, drain, node name, the cookie
//! secret file, workers, rate-limit key bound), `[timeouts]` and `[limits]`.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;

use http::HeaderValue;
use shared::config::Validator;
use shared::private_file::read_private_file;
use shared::telemetry::LogFormat;

use super::pools::hostname;
use super::validate::{check_ms, parse_addr};

/// `[global]`. Always yields a config (with defaults in place of bad values) so the later
/// sections that depend on it (listeners vs. `admin`, the node header) can still be checked.
pub(super) fn validate_global(v: &mut Validator<'_>, g: &FileGlobal) -> GlobalConfig {
    let log_format = match g.log_format.as_deref() {
        None | Some("plain") => LogFormat::Plain,
        Some("json") => LogFormat::Json,
        Some(other) => {
            v.error(
                "global.log_format",
                format!(
                    "{other:?} is not a log format (valid: {})",
                    LogFormat::VALID
                ),
            );
            LogFormat::Plain
        }
    };
    let log_level = g.log_level.clone().unwrap_or_else(|| "info".into());
    if !LOG_LEVELS.contains(&log_level.as_str()) {
        v.error(
            "global.log_level",
            format!(
                "{log_level:?} is not a level (valid: {})",
                LOG_LEVELS.join(", ")
            ),
        );
    }
    let admin = parse_addr(
        v,
        "global.admin",
        g.admin.as_deref().unwrap_or(DEFAULT_ADMIN),
    )
    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9100)));
    let drain_timeout = check_ms(
        v,
        "global.drain_timeout_ms",
        g.drain_timeout_ms,
        DEFAULT_DRAIN_TIMEOUT_MS,
        0,
        MS_MAX,
    );
    let max_client_conns = g.max_client_conns.unwrap_or(DEFAULT_MAX_CLIENT_CONNS);
    v.check_range("global.max_client_conns", max_client_conns, 1, 1_000_000);
    let access_log = match g.access_log.as_deref() {
        None | Some("plain") => AccessLogFormat::Plain,
        Some("off") => AccessLogFormat::Off,
        Some("json") => AccessLogFormat::Json,
        Some(other) => {
            v.error(
                "global.access_log",
                format!(
                    "{other:?} is not an access log format (valid: \"off\", \"plain\", \"json\")"
                ),
            );
            AccessLogFormat::Off
        }
    };
    let node_name = match g.node_name.as_deref() {
        Some(n) => n.trim().to_string(),
        None => hostname(),
    };
    if node_name.is_empty() || HeaderValue::from_str(&node_name).is_err() {
        v.error(
            "global.node_name",
            format!("{node_name:?} must be non-empty visible ASCII (it goes in a header)"),
        );
    }
    let cookie_secret = g
        .cookie_secret_file
        .as_deref()
        .and_then(|f| read_cookie_secret(v, f));
    let admin_token = g
        .admin_token_file
        .as_deref()
        .and_then(|f| read_admin_token(v, f));
    let max_conns_per_client = g
        .max_conns_per_client
        .unwrap_or(DEFAULT_MAX_CONNS_PER_CLIENT);
    v.check_range(
        "global.max_conns_per_client",
        max_conns_per_client,
        0,
        1_000_000,
    );
    if let Some(w) = g.workers {
        v.check_range("global.workers", w, 1, 1024);
    }
    let rate_limit_max_keys = g.rate_limit_max_keys.unwrap_or(DEFAULT_RATE_LIMIT_MAX_KEYS);
    v.check_range(
        "global.rate_limit_max_keys",
        rate_limit_max_keys,
        1,
        10_000_000,
    );
    let rate_limit_max_bytes = g
        .rate_limit_max_bytes
        .unwrap_or(DEFAULT_RATE_LIMIT_MAX_BYTES);
    v.check_range(
        "global.rate_limit_max_bytes",
        rate_limit_max_bytes,
        MIN_TABLE_BYTES,
        MAX_TABLE_BYTES,
    );
    let tls_ticket_rotate_s = g.tls_ticket_rotate_s.unwrap_or(DEFAULT_TLS_TICKET_ROTATE_S);
    v.check_range(
        "global.tls_ticket_rotate_s",
        tls_ticket_rotate_s,
        1,
        MAX_TLS_TICKET_ROTATE_S,
    );
    let soft_state_file = g.soft_state_file.as_deref().and_then(|f| {
        if f.trim().is_empty() {
            v.error(
                "global.soft_state_file",
                "must not be empty (remove it to keep the soft state in memory only)",
            );
            return None;
        }
        Some(config_relative(v, f))
    });
    let soft_state_flush = check_ms(
        v,
        "global.soft_state_flush_ms",
        g.soft_state_flush_ms,
        DEFAULT_SOFT_STATE_FLUSH_MS,
        1,
        MAX_SOFT_STATE_FLUSH_MS,
    );
    GlobalConfig {
        log_format,
        log_level,
        admin,
        drain_timeout,
        max_client_conns,
        access_log,
        node_name,
        cookie_secret,
        admin_token,
        max_conns_per_client,
        workers: g.workers,
        rate_limit_max_keys,
        rate_limit_max_bytes,
        http1_fast_path: g.http1_fast_path.unwrap_or(true),
        tls_ticket_rotate: Duration::from_secs(tls_ticket_rotate_s),
        soft_state_file,
        soft_state_flush,
    }
}

const DEFAULT_TLS_TICKET_ROTATE_S: u64 = DEFAULT_TLS_TICKET_ROTATE.as_secs();
const MAX_TLS_TICKET_ROTATE_S: u64 = MAX_TLS_TICKET_ROTATE.as_secs();

/// `global.cookie_secret_file`, relative to the config file's directory. Trailing whitespace
/// (an editor's final newline) is not part of the key, so `echo`/`openssl rand -hex` output
/// works as is.
fn read_cookie_secret(v: &mut Validator<'_>, file: &str) -> Option<CookieSecret> {
    const KEY: &str = "global.cookie_secret_file";
    if file.trim().is_empty() {
        v.error(
            KEY,
            "must not be empty (remove it for a random key per process)",
        );
        return None;
    }
    let path = config_relative(v, file);
    match std::fs::read(&path) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            if bytes.len() < MIN_COOKIE_SECRET_BYTES {
                v.error(
                    KEY,
                    format!(
                        "{} holds {} byte(s); the key needs at least {MIN_COOKIE_SECRET_BYTES} \
                         (e.g. `openssl rand -hex 32 > FILE`)",
                        path.display(),
                        bytes.len()
                    ),
                );
                return None;
            }
            Some(CookieSecret(bytes))
        }
        Err(e) => {
            v.error(KEY, format!("cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// `file` relative to the config file's directory (an absolute path stays as it is).
fn config_relative(v: &Validator<'_>, file: &str) -> PathBuf {
    match v.source().path.parent() {
        Some(dir) => dir.join(file),
        None => PathBuf::from(file),
    }
}

/// Largest admin token file read: a token is a line, not a document.
const ADMIN_TOKEN_MAX_FILE_BYTES: u64 = 4096;

/// `global.admin_token_file`, relative to the config file's directory. The file must belong
/// to the user lbd runs as and be readable by nobody else (mode 0600 or stricter): whoever can
/// read it can drain every backend on both nodes. Surrounding whitespace is not part of the
/// token.
fn read_admin_token(v: &mut Validator<'_>, file: &str) -> Option<AdminToken> {
    const KEY: &str = "global.admin_token_file";
    if file.trim().is_empty() {
        v.error(
            KEY,
            "must not be empty (remove it to disable the admin write endpoints)",
        );
        return None;
    }
    let path = config_relative(v, file);
    match read_private_file(&path, ADMIN_TOKEN_MAX_FILE_BYTES, "lbd") {
        Ok(bytes) => {
            let token = bytes.trim_ascii();
            if token.len() < MIN_ADMIN_TOKEN_BYTES {
                v.error(
                    KEY,
                    format!(
                        "{} holds a {}-byte token; it needs at least {MIN_ADMIN_TOKEN_BYTES} \
                         (e.g. `openssl rand -hex 32 > FILE`)",
                        path.display(),
                        token.len()
                    ),
                );
                return None;
            }
            Some(AdminToken(token.to_vec()))
        }
        Err(e) => {
            v.error(KEY, e);
            None
        }
    }
}

/// `[timeouts]`: every phase must be at least 1 ms (0 would fail every request).
pub(super) fn validate_timeouts(v: &mut Validator<'_>, t: &FileTimeouts) -> Timeouts {
    Timeouts {
        connect: check_ms(
            v,
            "timeouts.connect_ms",
            t.connect_ms,
            DEFAULT_CONNECT_MS,
            1,
            MS_MAX,
        ),
        request_header: check_ms(
            v,
            "timeouts.request_header_ms",
            t.request_header_ms,
            DEFAULT_REQUEST_HEADER_MS,
            1,
            MS_MAX,
        ),
        backend_response: check_ms(
            v,
            "timeouts.backend_response_ms",
            t.backend_response_ms,
            DEFAULT_BACKEND_RESPONSE_MS,
            1,
            MS_MAX,
        ),
        client_idle: check_ms(
            v,
            "timeouts.client_idle_ms",
            t.client_idle_ms,
            DEFAULT_CLIENT_IDLE_MS,
            1,
            MS_MAX,
        ),
    }
}

/// A request body limit (global or per route): 1 byte up to [`MAX_REQUEST_BODY_BYTES_LIMIT`].
pub(super) fn check_body_limit(v: &mut Validator<'_>, key: &str, value: u64) -> u64 {
    v.check_range(key, value, 1, MAX_REQUEST_BODY_BYTES_LIMIT);
    value
}

/// `[limits]`: request-head and body size bounds.
pub(super) fn validate_limits(v: &mut Validator<'_>, l: &FileLimits) -> Limits {
    let limits = Limits {
        max_header_bytes: l.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES),
        max_request_line: l.max_request_line.unwrap_or(DEFAULT_MAX_REQUEST_LINE),
        max_request_body_bytes: check_body_limit(
            v,
            "limits.max_request_body_bytes",
            l.max_request_body_bytes
                .unwrap_or(DEFAULT_MAX_REQUEST_BODY_BYTES),
        ),
    };
    v.check_range(
        "limits.max_header_bytes",
        limits.max_header_bytes,
        1024,
        256 * 1024,
    );
    v.check_range(
        "limits.max_request_line",
        limits.max_request_line,
        256,
        64 * 1024,
    );
    limits
}
