//! The snapshot a request runs on: [`Snapshot`] (router, pools with their balancers and
//! connection pools, limits, header policy, retry budget, rate limiters, sticky views),
//! built from a validated config, carrying state over from the previous snapshot on a reload
//! (see [`crate::server`] for when and why), plus the soft-state bounds a config asks for.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod metrics;

use crate::access_log::AccessLog;
use crate::clock;
use crate::config::LbConfig;
use crate::config::StickyMode;
use crate::l7::ratelimit::Limiters;
use crate::l7::retry::RetryBudget;
use crate::l7::router::Router;
use crate::l7::sticky::{CookieKey, StickyRt};
use crate::metrics::PoolStats;
use crate::tls::TlsSlot;
use crate::upstream::backend::{Backend, BackendId, Pool};
use crate::upstream::checker::log_health_change;
use crate::upstream::conns::BackendConns;
use crate::upstream::health::HealthTracker;
use crate::upstream::tls::{BackendTls, UpstreamTls};

/// One pool in a snapshot: the core [`Pool`] plus what the proxy adds per backend.
#[derive(Debug)]
pub struct PoolState {
    pub pool: Pool,
    /// Index into `Snapshot::config.pools`.
    pub index: usize,
    /// Parallel to `pool.backends`.
    pub conns: Vec<Arc<BackendConns>>,
    pub stats: Arc<PoolStats>,
    /// Woken whenever a request of this pool releases its backend (the max_conns queue).
    pub released: Arc<Notify>,
    /// `[pool.sticky]`, precomputed per backend; `None`: the balancer decides every request.
    pub sticky: Option<StickyRt>,
}

impl PoolState {
    pub fn name(&self) -> &str {
        &self.pool.name
    }
}

/// An immutable snapshot of everything a request needs.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<LbConfig>,
    pub router: Router,
    pub pools: Vec<PoolState>,
    pub retry_budget: RetryBudget,
    /// `[[rate_limit]]` tables, listed per route.
    pub limiters: Limiters,
    pub access_log: AccessLog,
    /// TLS of each TLS listener, by listener name: the certificate files as read when this
    /// snapshot was built (a reload re-reads them).
    pub tls: HashMap<String, Arc<TlsSlot>>,
    /// Some pool speaks TLS (`[pool.tls]`) or HTTP/2 (`protocol = "h2"`) to its backends:
    /// the fast path then checks where each request goes, since it speaks plain HTTP/1
    /// upstream only (`l7::plain::exchange::routes_to_hyper_pool`).
    pub hyper_only_pools: bool,
    pub generation: u64,
    /// Cancelled when this snapshot is replaced; stops its health-check tasks.
    pub retired: CancellationToken,
}

/// Why a snapshot could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("routes: {}", join(.0))]
    Router(Vec<crate::l7::router::RouterError>),
    #[error(transparent)]
    Pool(#[from] crate::upstream::backend::PoolError),
    #[error(transparent)]
    CookieKey(#[from] crate::l7::sticky::BadKey),
    #[error("listener {listener:?}: TLS: {source}")]
    Tls {
        listener: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("pool {pool:?}: tls: {source}")]
    UpstreamTls {
        pool: String,
        #[source]
        source: crate::upstream::tls::UpstreamTlsErrors,
    },
}

/// A pool's TLS client setup (`None`: plain), its files read now.
fn build_upstream_tls(
    pc: &crate::config::PoolConfig,
) -> Result<Option<Arc<UpstreamTls>>, BuildError> {
    let Some(cfg) = &pc.tls else {
        return Ok(None);
    };
    UpstreamTls::build(cfg, std::time::SystemTime::now())
        .map(|t| Some(Arc::new(t)))
        .map_err(|source| BuildError::UpstreamTls {
            pool: pc.name.clone(),
            source,
        })
}

/// Load every TLS listener's certificates.
fn build_tls(config: &LbConfig) -> Result<HashMap<String, Arc<TlsSlot>>, BuildError> {
    let now = std::time::SystemTime::now();
    let mut tls = HashMap::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            let built = TlsSlot::new(t.clone(), now).map_err(|source| BuildError::Tls {
                listener: l.name.clone(),
                source,
            })?;
            tls.insert(l.name.clone(), Arc::new(built));
        }
    }
    Ok(tls)
}

/// Every rule error, on one line.
fn join(errs: &[crate::l7::router::RouterError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Snapshot {
    /// Build a snapshot, carrying state over from `previous` (see the module docs).
    pub fn build(
        config: LbConfig,
        previous: Option<&Snapshot>,
        generation: u64,
    ) -> Result<Snapshot, BuildError> {
        let router =
            Router::new(config.routes.clone(), config.default_pool).map_err(BuildError::Router)?;
        let mut pools = Vec::with_capacity(config.pools.len());
        let now = clock::now();
        let cookie_key = match &config.global.cookie_secret {
            Some(secret) => CookieKey::new(&secret.0)?,
            None => CookieKey::process_random()?,
        };
        for (index, pc) in config.pools.iter().enumerate() {
            let old = previous.and_then(|p| {
                p.pools
                    .iter()
                    .find(|o| o.name() == pc.name)
                    .map(|o| (o, p.pool_config(o)))
            });
            let probed = pc.health.kind != crate::config::ProbeKind::None;
            let same_health = old.is_some_and(|(_, oc)| {
                oc.health.active == pc.health.active
                    && (oc.health.kind != crate::config::ProbeKind::None) == probed
                    && oc.ejection == pc.ejection
            });
            // Connections are kept only while the pool speaks the same protocol to the
            // same names: a pool that turns TLS on must never reuse a plain connection.
            let same_tls = old.is_some_and(|(_, oc)| oc.tls == pc.tls);
            let tls = build_upstream_tls(pc)?;
            let old = old.map(|(o, _)| o);
            let mut backends = Vec::with_capacity(pc.backends.len());
            let mut conns = Vec::with_capacity(pc.backends.len());
            for (i, spec) in pc.backends.iter().enumerate() {
                let old_at = old.and_then(|o| {
                    o.pool
                        .backends
                        .iter()
                        .position(|b| b.addr == spec.addr)
                        .map(|j| (o, j))
                });
                // Health is kept per (pool, address) whatever else changed.
                let backend = match old_at {
                    Some((o, j)) => {
                        let b = &o.pool.backends[j];
                        let same_name = b.name == spec.name
                            || (spec.name.is_empty() && b.name == spec.addr.to_string());
                        // The balancers return indices and the static fields are immutable,
                        // so only a backend at the same index with the same fields and health
                        // settings is shared as-is (the old snapshot keeps serving until the
                        // swap, and may be kept if the reload fails later).
                        if j == i
                            && same_name
                            && same_health
                            && b.weight == spec.weight
                            && b.max_conns == spec.max_conns
                        {
                            Arc::clone(b)
                        } else {
                            let nb = Backend::with_health_of(BackendId(i), spec.clone(), b);
                            for change in
                                nb.reconfigure_health(pc.health.active, pc.ejection, probed, now)
                            {
                                log_health_change(&pc.name, &nb, change);
                            }
                            Arc::new(nb)
                        }
                    }
                    None => Arc::new(Backend::new(
                        BackendId(i),
                        spec.clone(),
                        HealthTracker::new(pc.health.active, pc.ejection),
                    )),
                };
                let conn = match old_at {
                    Some((o, j)) if same_tls => {
                        let c = Arc::clone(&o.conns[j]);
                        c.configure(pc.idle_max_for(spec), pc.idle_timeout);
                        if let (Some(bt), Some(t)) = (&c.tls, &tls) {
                            bt.update(Arc::clone(t));
                        }
                        c
                    }
                    _ => {
                        let mut c =
                            BackendConns::new(spec.addr, pc.idle_max_for(spec), pc.idle_timeout);
                        c.tls = tls
                            .as_ref()
                            .map(|t| BackendTls::new(&pc.name, spec.addr, Arc::clone(t)));
                        Arc::new(c)
                    }
                };
                backends.push(backend);
                conns.push(conn);
            }
            let pool = Pool::from_backends(pc.name.clone(), backends, pc.algorithm.clone())?;
            pool.balancer.warm(&pool.backends);
            let sticky = pc
                .sticky
                .as_ref()
                .map(|st| StickyRt::new(st, &pc.name, &pool.backends, cookie_key.clone()));
            pools.push(PoolState {
                pool,
                index,
                conns,
                stats: old.map_or_else(Default::default, |o| Arc::clone(&o.stats)),
                released: old.map_or_else(Default::default, |o| Arc::clone(&o.released)),
                sticky,
            });
        }
        let now_ms = clock::now().as_millis() as u64;
        let limiters = Limiters::new(
            &config.rate_limits,
            config.routes.len(),
            previous.map(|p| &p.limiters),
        );
        let tls = build_tls(&config)?;
        Ok(Snapshot {
            limiters,
            tls,
            hyper_only_pools: config
                .pools
                .iter()
                .any(|p| p.tls.is_some() || p.protocol == crate::config::UpstreamProtocol::H2),
            retry_budget: RetryBudget::new(
                config.retries.budget_percent,
                config.retries.min_per_sec,
                now_ms,
            ),
            access_log: AccessLog {
                format: config.global.access_log,
            },
            config: Arc::new(config),
            router,
            pools,
            generation,
            retired: CancellationToken::new(),
        })
    }

    /// Start a health checker for every backend of every pool, each until this snapshot is
    /// retired.
    pub fn spawn_health_checks(&self) {
        for pool in &self.pools {
            let hc = &self.pool_config(pool).health;
            for (backend, conns) in pool.pool.backends.iter().zip(&pool.conns) {
                crate::upstream::checker::spawn(
                    pool.name(),
                    Arc::clone(backend),
                    Arc::clone(conns),
                    hc.clone(),
                    self.retired.clone(),
                );
            }
        }
    }

    /// Watch each TLS listener's files (on the current runtime) until this snapshot is
    /// replaced; the next snapshot watches its own.
    pub fn spawn_tls_watchers(&self) {
        for l in &self.config.listeners {
            let (Some(slot), Some(every)) =
                (self.tls.get(&l.name), l.tls.as_ref().and_then(|t| t.watch))
            else {
                continue;
            };
            tokio::spawn(crate::tls::watch(
                l.name.clone(),
                Arc::clone(slot),
                every,
                self.retired.clone(),
            ));
        }
    }

    /// Set backends drained or not, as `POST /backends/drain|undrain` would, from the soft
    /// state's (pool, backend address, drained) entries: the peer's drains, or the ones the
    /// state file restored at start. Entries naming no backend of this config are ignored.
    pub fn apply_drains(&self, drains: &[(String, String, bool)]) {
        for (pool, backend, drained) in drains {
            for p in self.pools.iter().filter(|p| p.name() == pool) {
                for b in p
                    .pool
                    .backends
                    .iter()
                    .filter(|b| b.addr.to_string() == *backend)
                {
                    if b.is_drained() != *drained {
                        b.set_drained(*drained);
                        info!(pool = %pool, backend = %backend, drained, "drain state from the soft state applied");
                    }
                }
            }
        }
    }

    pub fn pool_config(&self, pool: &PoolState) -> &crate::config::PoolConfig {
        &self.config.pools[pool.index]
    }
}

/// The soft-state table bounds a config asks for: the learn-mode pools' `max_entries` and
/// `max_bytes` summed (one table serves them all) and their largest `max_key_bytes` (the
/// per-pool cap is applied before the table is asked); `global.rate_limit_max_keys` and
/// `rate_limit_max_bytes`, the limiters' largest `max_key_bytes`. Without learn pools or
/// limiters the key caps are the defaults (they then only bound what the peer may send).
/// Fixed at startup.
pub fn soft_limits(config: &LbConfig) -> crate::softstate::Limits {
    use crate::softstate::{DEFAULT_RATE_MAX_KEY_BYTES, DEFAULT_STICKY_MAX_KEY_BYTES};
    let learn: Vec<&crate::config::StickyConfig> = config
        .pools
        .iter()
        .filter_map(|p| p.sticky.as_ref())
        .filter(|s| s.mode == StickyMode::Learn)
        .collect();
    let sticky_max_entries = learn.iter().map(|s| s.max_entries).sum::<usize>();
    let sticky_max_bytes = learn.iter().map(|s| s.max_bytes).sum::<usize>();
    let sticky_max_key_bytes = learn.iter().map(|s| s.max_key_bytes).max();
    let rate_max_key_bytes = config.rate_limits.iter().map(|r| r.max_key_bytes).max();
    crate::softstate::Limits {
        sticky_max_entries: sticky_max_entries.max(1),
        sticky_max_bytes: sticky_max_bytes.max(crate::config::MIN_TABLE_BYTES),
        sticky_max_key_bytes: sticky_max_key_bytes.unwrap_or(DEFAULT_STICKY_MAX_KEY_BYTES),
        rate_max_keys: config.global.rate_limit_max_keys,
        rate_max_bytes: config.global.rate_limit_max_bytes,
        rate_max_key_bytes: rate_max_key_bytes.unwrap_or(DEFAULT_RATE_MAX_KEY_BYTES),
        admin_max_entries: crate::softstate::DEFAULT_ADMIN_MAX_ENTRIES,
    }
}

/// Which key signs insert-mode cookies, said once at startup (and when a reload changes it),
/// with the consequence of a per-process key spelled out.
pub(crate) fn warn_cookie_key(config: &LbConfig) {
    let insert_pools: Vec<&str> = config
        .pools
        .iter()
        .filter(|p| {
            p.sticky
                .as_ref()
                .is_some_and(|s| s.mode == StickyMode::Insert)
        })
        .map(|p| p.name.as_str())
        .collect();
    if insert_pools.is_empty() {
        return;
    }
    if config.global.cookie_secret.is_some() {
        info!(pools = ?insert_pools, "sticky cookies signed with global.cookie_secret_file");
    } else {
        warn!(
            pools = ?insert_pools,
            "no global.cookie_secret_file: sticky cookies are signed with a random key of this \
             process, so they won't survive a restart or a failover to the peer node; give both \
             nodes the same key file"
        );
    }
}
