//! Who may do what on the control socket: the lbd user, the operators' admin group, and
//! the connection limits that keep one local user from starving the others.
//!
//! ```toml
//! [lbd]
//! user = "lbpair"             # the only non-root uid that may subscribe as lbd
//!
//! [control]
//! admin_group = "lbpair-admin"     # may run switchover/resume (root always may)
//! idle_timeout_ms = 30000          # an operator connection silent this long is closed
//! max_connections_per_uid = 16     # connections one uid may hold open at once
//! ```
//!
//! Names are only checked for shape here (`check-config` runs offline); the daemon
//! resolves them to ids when it starts and refuses to start if one doesn't exist.

use std::time::Duration;

use serde::Deserialize;
use shared::config::Validator;

use super::int_or_default;

/// The user lbd runs as in the shipped units; the default lbd user when it exists.
pub const DEFAULT_LBD_USER: &str = "lbpair";
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 30_000;
pub const MIN_IDLE_TIMEOUT_MS: u64 = 1_000;
pub const MAX_IDLE_TIMEOUT_MS: u64 = 3_600_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: usize = 16;
pub const MAX_CONNECTIONS_PER_UID: usize = 1024;
/// Longest user or group name accepted (Linux's `LOGIN_NAME_MAX` is 256 with the NUL).
const MAX_NAME_LEN: usize = 255;

/// `[control]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileControl {
    pub admin_group: Option<String>,
    pub idle_timeout_ms: Option<i64>,
    pub max_connections_per_uid: Option<i64>,
}

/// Who is lbd: a user name, or `None` for the default ([`DEFAULT_LBD_USER`] if it exists,
/// else root only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LbdUser {
    #[default]
    Default,
    Named(String),
}

/// The control socket's access rules, before names are resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// From `[lbd] user`.
    pub lbd_user: LbdUser,
    /// Members (primary or supplementary) may run switchover and resume.
    pub admin_group: Option<String>,
    pub idle_timeout: Duration,
    pub max_connections_per_uid: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            lbd_user: LbdUser::Default,
            admin_group: None,
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
        }
    }
}

/// A POSIX-ish account name: what `useradd` accepts, or a numeric id.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'$'))
}

fn check_name(v: &mut Validator<'_>, key: &str, name: &str, what: &str) -> bool {
    if valid_name(name) {
        return true;
    }
    v.error(
        key,
        format!("{name:?} is not a {what} name (valid: e.g. \"lbpair\", letters, digits, _ - . $, not starting with -)"),
    );
    false
}

pub(super) fn validate_control(
    v: &mut Validator<'_>,
    f: Option<&FileControl>,
    lbd_user: Option<&str>,
) -> ControlConfig {
    let mut out = ControlConfig::default();
    if let Some(user) = lbd_user {
        if check_name(v, "lbd.user", user, "user") {
            out.lbd_user = LbdUser::Named(user.to_string());
        }
    }
    let Some(f) = f else { return out };
    if let Some(group) = &f.admin_group {
        if check_name(v, "control.admin_group", group, "group") {
            out.admin_group = Some(group.clone());
        }
    }
    out.idle_timeout = Duration::from_millis(int_or_default(
        v,
        "control.idle_timeout_ms",
        f.idle_timeout_ms,
        DEFAULT_IDLE_TIMEOUT_MS,
        MIN_IDLE_TIMEOUT_MS,
        MAX_IDLE_TIMEOUT_MS,
    ));
    out.max_connections_per_uid = int_or_default(
        v,
        "control.max_connections_per_uid",
        f.max_connections_per_uid,
        DEFAULT_MAX_CONNECTIONS_PER_UID,
        1,
        MAX_CONNECTIONS_PER_UID,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn account_names() {
        for ok in ["lbpair", "lb_pair-2", "admin.ops", "machine$", "0"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(256)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
