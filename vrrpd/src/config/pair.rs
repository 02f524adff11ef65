//! The pair settings: how vrrpd couples to its local lbd, per-instance tracking of lbd,
//! two-node fast takeover, and notify hooks.
//!
//! ```toml
//! [lbd]                       # omit the table to run vrrpd without lbd
//! ack_timeout_ms = 500        # claim a VIP anyway if lbd hasn't acked "master" by then
//! heartbeat_timeout_ms = 300  # lbd silent this long counts as down
//! startup_grace_ms = 3000     # at startup, lbd may take this long to connect
//! drain_timeout_ms = 5000     # a switchover waits this long for lbd to drain
//! handoff_ms = 200            # after a handover: the new master forwards strays to the
//!                             # old one this long, and the old one keeps serving them
//! user = "lbpair"             # who may subscribe as lbd (see control.rs)
//!
//! [[instance]]
//! track_lbd = "fault"         # "fault" | "priority" | "off"
//! track_lbd_weight = 50       # with "priority": subtract this while lbd is down
//! fast_takeover = false       # two-node pair mode: take over at once on priority 0, and a
//!                             # master yielding to a better one says so with priority 0
//! notify = ["/usr/local/sbin/lbpair-notify"]   # command and leading arguments
//! notify_timeout_ms = 5000
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use shared::config::Validator;

use super::{int_or_default, MAX_PRIORITY};
use crate::notify::NotifyConfig;

pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 500;
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 300;
pub const DEFAULT_STARTUP_GRACE_MS: u64 = 3000;
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_HANDOFF_MS: u64 = 200;
pub const MAX_HANDOFF_MS: u64 = 10_000;
pub const MIN_TIMEOUT_MS: u64 = 10;
pub const MAX_TIMEOUT_MS: u64 = 600_000;
pub const DEFAULT_TRACK_WEIGHT: u8 = 50;
pub const DEFAULT_NOTIFY_TIMEOUT_MS: u64 = 5000;
const TRACK_MODES: &str = "\"fault\", \"priority\" or \"off\"";

/// `[lbd]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLbd {
    pub ack_timeout_ms: Option<i64>,
    pub heartbeat_timeout_ms: Option<i64>,
    pub startup_grace_ms: Option<i64>,
    pub drain_timeout_ms: Option<i64>,
    pub handoff_ms: Option<i64>,
    /// The user lbd runs as (see `control.rs`); kept out of [`LbdConfig`] because it is an
    /// access rule of the control socket, not a coupling setting.
    pub user: Option<String>,
}

/// The coupling to the local lbd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbdConfig {
    pub ack_timeout: Duration,
    pub heartbeat_timeout: Duration,
    pub startup_grace: Duration,
    pub drain_timeout: Duration,
    /// The hand-off window of a handover between two lbpair nodes (0: none). The new
    /// master forwards the packets of connections it doesn't know to the old master for
    /// this long (`net::handoff`), and the old master's lbd keeps accepting and answering
    /// on the VIP at least this long before vrrpd removes its copy (doc/vrrpd-LIFECYCLE.md,
    /// "The hand-off window").
    pub handoff: Duration,
}

/// What an instance does while its lbd is down (disconnected, silent, or unable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackLbd {
    /// Go to FAULT: a master resigns with priority 0 and removes its VIPs.
    Fault,
    /// Lower the priority by this much; a master advertises the new priority at once.
    Priority(u8),
    /// Ignore lbd's health (the ack before claiming a VIP still applies).
    Off,
}

/// The instance keys of the pair, as written in the instance table (copied out of
/// `FileInstance`: serde's `flatten` doesn't combine with `deny_unknown_fields`).
#[derive(Debug, Default)]
pub struct FileInstancePair {
    pub track_lbd: Option<String>,
    pub track_lbd_weight: Option<i64>,
    pub fast_takeover: Option<bool>,
    pub notify: Option<Vec<String>>,
    pub notify_timeout_ms: Option<i64>,
}

/// The instance's pair settings, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePair {
    pub track_lbd: TrackLbd,
    pub fast_takeover: bool,
    /// Run on transitions: `command args.. INSTANCE NAME STATE PRIORITY`.
    pub notify: Option<NotifyConfig>,
}

impl Default for InstancePair {
    fn default() -> Self {
        InstancePair {
            track_lbd: TrackLbd::Off,
            fast_takeover: false,
            notify: None,
        }
    }
}

fn ms(v: &mut Validator<'_>, key: &str, value: Option<i64>, default: u64) -> Duration {
    Duration::from_millis(int_or_default(
        v,
        key,
        value,
        default,
        MIN_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
    ))
}

pub(super) fn validate_lbd(v: &mut Validator<'_>, f: &FileLbd) -> LbdConfig {
    LbdConfig {
        ack_timeout: ms(
            v,
            "lbd.ack_timeout_ms",
            f.ack_timeout_ms,
            DEFAULT_ACK_TIMEOUT_MS,
        ),
        heartbeat_timeout: ms(
            v,
            "lbd.heartbeat_timeout_ms",
            f.heartbeat_timeout_ms,
            DEFAULT_HEARTBEAT_TIMEOUT_MS,
        ),
        startup_grace: ms(
            v,
            "lbd.startup_grace_ms",
            f.startup_grace_ms,
            DEFAULT_STARTUP_GRACE_MS,
        ),
        drain_timeout: ms(
            v,
            "lbd.drain_timeout_ms",
            f.drain_timeout_ms,
            DEFAULT_DRAIN_TIMEOUT_MS,
        ),
        handoff: Duration::from_millis(int_or_default(
            v,
            "lbd.handoff_ms",
            f.handoff_ms,
            DEFAULT_HANDOFF_MS,
            0,
            MAX_HANDOFF_MS,
        )),
    }
}

/// `lbd_coupled`: whether `[lbd]` exists, which makes `track_lbd = "fault"` the default.
pub(super) fn validate_instance_pair(
    v: &mut Validator<'_>,
    i: usize,
    f: &FileInstancePair,
    lbd_coupled: bool,
    priority: u8,
) -> InstancePair {
    let k = |field: &str| format!("instance[{i}].{field}");
    let weight = int_or_default(
        v,
        &k("track_lbd_weight"),
        f.track_lbd_weight,
        DEFAULT_TRACK_WEIGHT,
        1,
        MAX_PRIORITY - 1,
    );
    let track_lbd = match f.track_lbd.as_deref() {
        None if lbd_coupled => TrackLbd::Fault,
        None | Some("off") => TrackLbd::Off,
        Some("fault") => TrackLbd::Fault,
        Some("priority") => TrackLbd::Priority(weight),
        Some(other) => {
            v.error(
                k("track_lbd"),
                format!("{other:?} is not a tracking mode (valid: {TRACK_MODES})"),
            );
            TrackLbd::Off
        }
    };
    if track_lbd != TrackLbd::Off && !lbd_coupled {
        v.error(
            k("track_lbd"),
            "tracks lbd, but there is no [lbd] table (add [lbd], or use track_lbd = \"off\")",
        );
    }
    if priority == MAX_PRIORITY && matches!(track_lbd, TrackLbd::Priority(_)) {
        v.error(
            k("track_lbd"),
            "the address owner (priority 255) can't change priority (valid here: \"fault\" or \"off\")",
        );
    }
    let timeout = Duration::from_millis(int_or_default(
        v,
        &k("notify_timeout_ms"),
        f.notify_timeout_ms,
        DEFAULT_NOTIFY_TIMEOUT_MS,
        MIN_TIMEOUT_MS,
        MAX_TIMEOUT_MS,
    ));
    let notify = match f.notify.as_deref() {
        None => None,
        Some([]) => {
            v.error(
                k("notify"),
                "is empty (valid: [\"/absolute/path/to/command\", optional arguments...])",
            );
            None
        }
        Some([command, args @ ..]) => {
            if !command.starts_with('/') {
                v.error(
                    k("notify"),
                    format!("{command:?} is not an absolute path (valid: [\"/absolute/path/to/command\", ...])"),
                );
            }
            Some(NotifyConfig {
                command: PathBuf::from(command),
                args_prefix: args.to_vec(),
                timeout,
            })
        }
    };
    InstancePair {
        track_lbd,
        fast_takeover: f.fast_takeover.unwrap_or(false),
        notify,
    }
}
