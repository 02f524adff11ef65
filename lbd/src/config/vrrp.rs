//! Stage 2 for `[vrrp]`: the coupling to vrrpd (control socket, heartbeat and reconnect
//! intervals, the lost-vrrpd timeout, when to report "unable", the switchover drain).

use super::*;
use std::path::PathBuf;

use shared::config::Validator;

use super::validate::{check_ms, ms, PoolRefs};

/// `[vrrp]`. Pools named in `unable_when_no_healthy_backend` must exist.
pub(super) fn validate_vrrp(
    v: &mut Validator<'_>,
    f: &FileVrrp,
    pools: &PoolRefs<'_>,
) -> VrrpConfig {
    let unable = match &f.unable_when_no_healthy_backend {
        None | Some(BoolOrList::Bool(false)) => UnableWhen::Never,
        Some(BoolOrList::Bool(true)) => UnableWhen::AnyPool,
        Some(BoolOrList::List(names)) => {
            for (i, n) in names.iter().enumerate() {
                pools.find(v, &format!("vrrp.unable_when_no_healthy_backend[{i}]"), n);
            }
            UnableWhen::Pools(names.clone())
        }
    };
    let socket = f
        .socket
        .clone()
        .unwrap_or_else(|| shared::control::DEFAULT_VRRPD_SOCKET.to_string());
    if socket.trim().is_empty() {
        v.error("vrrp.socket", "must not be empty");
    }
    VrrpConfig {
        socket: PathBuf::from(socket),
        heartbeat_interval: check_ms(
            v,
            "vrrp.heartbeat_interval_ms",
            f.heartbeat_interval_ms,
            DEFAULT_VRRP_HEARTBEAT_INTERVAL_MS,
            10,
            10_000,
        ),
        reconnect_interval: check_ms(
            v,
            "vrrp.reconnect_interval_ms",
            f.reconnect_interval_ms,
            DEFAULT_VRRP_RECONNECT_INTERVAL_MS,
            10,
            60_000,
        ),
        lost_timeout: f.lost_timeout_ms.map(|t| {
            v.check_range("vrrp.lost_timeout_ms", t, 10, MS_MAX);
            ms(t)
        }),
        unable_when_no_healthy_backend: unable,
        drain_timeout: check_ms(
            v,
            "vrrp.drain_timeout_ms",
            f.drain_timeout_ms,
            DEFAULT_VRRP_DRAIN_TIMEOUT_MS,
            0,
            MS_MAX,
        ),
    }
}
