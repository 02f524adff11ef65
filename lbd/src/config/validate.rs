//! Stage 2's entry point: [`validate`] runs every section's checks in file order, collecting
//! all errors, then builds [`LbConfig`]. The sections live in `global`, `request_policy`,
//! `listeners`, `pools`, `routes`, `vrrp`, `rate_limits` and `peer`; the small helpers they
//! share (millisecond values, required strings, addresses, pool lookup) are here.

use super::*;
use std::net::SocketAddr;
use std::time::Duration;

use shared::config::{ConfigError, Source, Validator};

use super::global::{validate_global, validate_limits, validate_timeouts};
use super::listeners::validate_listeners;
use super::pools::validate_pool;
use super::rate_limits::validate_rate_limits;
use super::request_policy::{validate_headers, validate_paths, validate_retries};
use super::routes::{
    validate_default_pool, validate_route_body_limits, validate_route_https,
    validate_route_upgrades, validate_routes,
};
use super::vrrp::validate_vrrp;

/// Validate the parsed file, reporting every problem, and build the runtime config.
///
/// The order of the calls is the order errors are reported in, and some sections take an
/// earlier one's result (listeners avoid the admin address, routes name pools).
pub fn validate(source: &Source, file: &FileConfig) -> Result<LbConfig, ConfigError> {
    let mut v = Validator::new(source);
    let global = validate_global(&mut v, &file.global);
    let timeouts = validate_timeouts(&mut v, &file.timeouts);
    let limits = validate_limits(&mut v, &file.limits);
    let headers = validate_headers(&mut v, &file.headers, &global.node_name);
    let paths = validate_paths(&mut v, &file.paths);
    let retries = validate_retries(&mut v, &file.retries);
    let http2 = super::http2::validate_http2(&mut v, &file.http2);
    let listeners = validate_listeners(&mut v, file, global.admin);
    let pools = validate_pools(&mut v, &file.pool);
    let pool_refs = PoolRefs::new(&file.pool, &pools);
    let routes = validate_routes(&mut v, &file.route, &pool_refs);
    let route_upgrades = validate_route_upgrades(&mut v, &file.route);
    let route_body_limits = validate_route_body_limits(&mut v, &file.route);
    let route_https = validate_route_https(&mut v, &file.route);
    let default_pool = validate_default_pool(&mut v, file.default_pool.as_deref(), &pool_refs);
    let vrrp = file
        .vrrp
        .as_ref()
        .map(|f| validate_vrrp(&mut v, f, &pool_refs));
    let rate_limits = validate_rate_limits(&mut v, &file.rate_limit, &file.route, &routes);
    let peer = file
        .peer
        .as_ref()
        .and_then(|f| super::peer::validate_peer(f, &mut v));

    v.finish()?;
    Ok(LbConfig {
        global,
        timeouts,
        limits,
        headers,
        paths,
        retries,
        http2,
        vrrp,
        peer,
        listeners,
        pools,
        routes,
        route_upgrades,
        route_body_limits,
        route_https,
        default_pool,
        rate_limits,
    })
}

/// `[[pool]]`, each checked by [`validate_pool`] against every pool's name, so a pool can be
/// referenced regardless of order. Only fully valid pools are returned.
fn validate_pools(v: &mut Validator<'_>, file_pools: &[FilePool]) -> Vec<PoolConfig> {
    let names = pool_names(file_pools);
    if file_pools.is_empty() {
        v.error("pool", "at least one [[pool]] is required");
    }
    file_pools
        .iter()
        .enumerate()
        .filter_map(|(i, p)| validate_pool(v, i, p, &names))
        .collect()
}

fn pool_names(file_pools: &[FilePool]) -> Vec<Option<&str>> {
    file_pools.iter().map(|p| p.name.as_deref()).collect()
}

/// Resolves the pool names other sections mention (routes, `default_pool`, `[vrrp]`) to
/// indices into the valid pools, i.e. [`PoolId`](crate::upstream::backend::PoolId)s.
pub(super) struct PoolRefs<'a> {
    /// Every `[[pool]]`'s name as written, valid or not.
    names: Vec<Option<&'a str>>,
    /// The pools that passed validation, in file order.
    pools: &'a [PoolConfig],
}

impl<'a> PoolRefs<'a> {
    pub(super) fn new(file_pools: &'a [FilePool], pools: &'a [PoolConfig]) -> Self {
        PoolRefs {
            names: pool_names(file_pools),
            pools,
        }
    }

    /// The index of the valid pool `name`. A name that no pool has is reported at `key`; a
    /// pool that exists but failed validation is not: its own errors already say why.
    pub(super) fn find(&self, v: &mut Validator<'_>, key: &str, name: &str) -> Option<usize> {
        let idx = self.pools.iter().position(|p| p.name == name);
        if idx.is_none() && !self.names.contains(&Some(name)) {
            let defined: Vec<String> = self
                .names
                .iter()
                .flatten()
                .map(|n| format!("{n:?}"))
                .collect();
            v.error(
                key,
                format!(
                    "unknown pool {name:?} (defined pools: {})",
                    defined.join(", ")
                ),
            );
        }
        idx
    }
}

pub(super) fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Check a millisecond value and turn it into a Duration (the default when absent).
pub(super) fn check_ms(
    v: &mut Validator<'_>,
    key: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Duration {
    let value = value.unwrap_or(default);
    v.check_range(key, value, min, max);
    ms(value)
}

pub(super) fn required<'a>(
    v: &mut Validator<'_>,
    key: &str,
    value: &'a Option<String>,
) -> Option<&'a str> {
    match value.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(s),
        Some(_) => {
            v.error(key, "must not be empty");
            None
        }
        None => {
            v.error(key, "is required");
            None
        }
    }
}

pub(super) fn parse_addr(v: &mut Validator<'_>, key: &str, s: &str) -> Option<SocketAddr> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            v.error(
                key,
                format!(
                    "{s:?} is not an IP:port address (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"
                ),
            );
            None
        }
    }
}
