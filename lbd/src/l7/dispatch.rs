//! The steps of a proxied request that both HTTP paths take, so the hyper service
//! ([`super::general`]) and lbd's own HTTP/1 engine ([`super::plain`]) route, limit, pick,
//! queue, retry, feed passive health and account for local answers the same way.
//!
//! - [`client_of`], [`normalized_path`]: the real client address and the normalised path,
//!   once per request, before anything reads them.
//! - [`route_and_limit`]: the router, then the `[[rate_limit]]` tables that apply; gives the
//!   route's request body limit (`max_request_body_bytes`) too.
//! - [`pick`] / [`acquire`]: the sticky pin or the balancer, and the `max_conns` queue; a
//!   [`Lease`] holds the backend until the response ends.
//! - [`may_retry`]: attempts and the retry budget; [`report`]: passive health.
//! - [`note_rate_limited`], [`note_error`], [`pair_headers`]: counters, log lines and the
//!   headers every answer carries.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Version};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::body::Finish;
use crate::clock;
use crate::config::PoolConfig;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::l7::attempts::Blame;
use crate::l7::client::ConnCtx;
use crate::l7::ctx::ProxyCtx;
use crate::l7::headers::{self, ForwardCtx};
use crate::l7::path::normalize_path_str;
use crate::l7::ratelimit::{Denied, RequestKeys};
use crate::l7::router::RequestView;
use crate::l7::sticky::RequestPin;
use crate::metrics::inc;
use crate::snapshot::{PoolState, Snapshot};
use crate::upstream::backend::{Backend, BackendId, InFlightGuard};
use crate::upstream::balance::{eligible, PickContext};
use crate::upstream::checker::log_health_change;
use crate::upstream::conns::BackendConns;
use crate::upstream::health::Outcome;

/// Count and log a 429 (both HTTP paths).
pub fn note_rate_limited(rt: &Snapshot, conn: &ConnCtx, denied: &Denied) {
    let limiter = rt.limiters.all.get(denied.limiter);
    if let Some(l) = limiter {
        inc(&l.denied);
    }
    debug!(
        limiter = limiter.map_or("-", |l| l.name.as_str()),
        peer = %conn.peer,
        retry_after_ms = denied.retry_after.as_millis() as u64,
        "rate limited"
    );
}

/// Count and log a request answered with an error, saying which side failed (both HTTP
/// paths).
pub fn note_error(
    engine: &ProxyCtx,
    rt: &Snapshot,
    e: &ProxyError,
    pool: Option<usize>,
    backend: Option<SocketAddr>,
) {
    let pool = pool.and_then(|i| rt.pools.get(i)).map_or("-", |p| p.name());
    let backend = backend.map(|b| b.to_string());
    let backend = backend.as_deref().unwrap_or("-");
    match e.side {
        Side::Client => {
            info!(side = e.side.as_str(), kind = e.kind.as_str(), pool, backend, error = %e, "request rejected")
        }
        _ => {
            warn!(side = e.side.as_str(), kind = e.kind.as_str(), pool, backend, error = %e, "request failed")
        }
    }
    engine.stats.error(e.kind);
}

/// The client address lbd believes for this request ([`headers::real_client`]): the peer, or
/// behind `headers.trusted_proxies` the first untrusted X-Forwarded-For hop. Read before the
/// headers are rewritten (lbd's own entry would be last).
pub fn client_of(rt: &Snapshot, conn: &ConnCtx, headers: &HeaderMap) -> IpAddr {
    headers::real_client(&rt.config.headers, conn.peer.ip(), headers)
}

/// The request target with its path normalised (`[paths]`, [`crate::l7::path`]) and the query
/// untouched; `None` when it already is (nearly always). Routing, rate limits and the backend
/// all see the result. A path lbd refuses is a 400 (`bad_path`).
pub fn normalized_path(
    rt: &Snapshot,
    target: &PathAndQuery,
) -> Result<Option<PathAndQuery>, ProxyError> {
    let bad = |e| ProxyError::new(ErrorKind::BadPath).with_source(e);
    let path = match normalize_path_str(target.path(), &rt.config.paths).map_err(bad)? {
        std::borrow::Cow::Borrowed(_) => return Ok(None),
        std::borrow::Cow::Owned(p) => p,
    };
    let mut rebuilt = path;
    if let Some(q) = target.query() {
        rebuilt.push('?');
        rebuilt.push_str(q);
    }
    PathAndQuery::try_from(rebuilt)
        .map(Some)
        .map_err(|e| ProxyError::new(ErrorKind::BadPath).with_source(e))
}

/// The pool a request goes to, once the `[[rate_limit]]` tables that apply have let it
/// through: rate limits come before anything touches a backend, and before a 404 so the
/// global limiters also bound a flood of unroutable requests. Without limiters: one
/// empty-slice check. Returns the pool's index, the pool, the matched rule's index
/// (`None`: the default pool) and the route's request body limit.
pub fn route_and_limit<'r>(
    engine: &ProxyCtx,
    rt: &'r Snapshot,
    client: IpAddr,
    view: &RequestView<'_>,
) -> Result<(usize, &'r PoolState, Option<usize>, u64), LocalAnswer> {
    let matched = rt.router.route(view);
    let applicable = rt
        .limiters
        .applicable(matched.as_ref().and_then(|m| m.rule));
    if !applicable.is_empty() {
        let keys = RequestKeys {
            client_ip: client,
            headers: view.headers,
            route: matched.as_ref().map_or("-", |m| m.name),
        };
        if let Some(denied) = rt
            .limiters
            .check(&engine.soft, applicable, &keys, clock::now())
        {
            return Err(LocalAnswer::RateLimited(denied));
        }
    }
    let rule = matched.as_ref().and_then(|m| m.rule);
    let matched = matched.ok_or_else(|| ProxyError::new(ErrorKind::NoRoute))?;
    let index = matched.pool.0;
    let pool = rt
        .pools
        .get(index)
        .ok_or_else(|| ProxyError::new(ErrorKind::NoRoute))?;
    Ok((index, pool, rule, rt.config.body_limit(matched.rule)))
}

/// The picked backend's connections, with the request counted on them (and as a sticky one
/// when the pin chose the backend); `None` when the pool has no connections for it.
pub fn backend_conns<'p>(
    pool: &'p PoolState,
    backend: &Backend,
    pinned: bool,
) -> Option<&'p Arc<BackendConns>> {
    let conns = pool.conns.get(backend.id.0)?;
    inc(&conns.stats.requests);
    if pinned {
        inc(&conns.stats.sticky_requests);
    }
    Some(conns)
}

/// A connect to `backend` failed: count it and tell passive health (both HTTP paths; the
/// request's [`Attempts`](crate::l7::attempts::Attempts) keeps it off that backend).
pub fn connect_failed(pool: &PoolState, conns: &BackendConns, backend: &Backend, e: &ProxyError) {
    debug!(backend = %backend.addr, error = %e, "connect failed");
    inc(&conns.stats.failures);
    report(pool, backend, Outcome::ConnectFailure);
}

/// A send to `backend` failed after the connect, and [`Attempts`] said whose failure it was.
/// The backend's is counted and, unless the connection was a reused one (whose closing under
/// a request is usually the keep-alive race, not a sick backend), told to passive health
/// (both HTTP paths).
///
/// [`Attempts`]: crate::l7::attempts::Attempts
pub fn send_failed(
    pool: &PoolState,
    conns: &BackendConns,
    backend: &Backend,
    reused: bool,
    blame: Blame,
) {
    match blame {
        Blame::KeepAliveRace => {
            debug!(backend = %backend.addr, "stale pooled connection: resending on a fresh one");
        }
        Blame::Backend => {
            debug!(backend = %backend.addr, reused, "backend failed before responding");
            inc(&conns.stats.failures);
            if !reused {
                report(pool, backend, Outcome::ResetAfterSend);
            }
        }
    }
}

/// Header hygiene for the request going upstream: hop-by-hop headers out, forwarding headers
/// in, and the Host the router matched: added when the request had none, and with
/// `replace_host` written over the client's (an absolute-form target). Returns the `Upgrade`
/// value when the client asked for one. `client` is [`client_of`]'s answer.
pub fn rewrite_request_headers(
    h: &mut HeaderMap,
    rt: &Snapshot,
    conn: &ConnCtx,
    client: IpAddr,
    host: Option<HeaderValue>,
    replace_host: bool,
) -> Option<HeaderValue> {
    let upgrade = headers::strip_hop_by_hop(h);
    headers::add_forwarding(
        h,
        &rt.config.headers,
        &ForwardCtx {
            client_ip: conn.peer.ip(),
            real_client: client,
            proto: conn.proto,
            host: host.as_ref(),
            port: conn.local_port,
            client_ip_value: Some(&conn.client_ip_value),
        },
    );
    if let Some(v) = host {
        if replace_host || !h.contains_key(header::HOST) {
            h.insert(header::HOST, v);
        }
    }
    if let Some(cert) = &conn.client_cert {
        // Only lbd says which certificate the client presented.
        h.remove(&cert.header);
        if let Some(subject) = &cert.subject {
            h.insert(cert.header.clone(), subject.clone());
        }
    }
    upgrade
}

/// The backend for one attempt: the sticky pin while its backend passes the balancer's own
/// eligibility test (otherwise the algorithm picks and the response re-pins), else
/// [`acquire`]. `true` with a followed pin.
pub async fn pick(
    pool: &PoolState,
    pcfg: &PoolConfig,
    pin: Option<&RequestPin>,
    ctx: &PickContext<'_>,
) -> Result<(Arc<Backend>, Lease, bool), ProxyError> {
    let pinned = pin
        .and_then(|p| p.target)
        .and_then(|i| pool.pool.backends.get(i))
        .filter(|b| eligible(b.id.0, b, ctx));
    match pinned {
        Some(b) => {
            let (b, l) = lease(pool, b);
            Ok((b, l, true))
        }
        None => acquire(pool, pcfg, ctx).await.map(|(b, l)| (b, l, false)),
    }
}

/// May a failed attempt go to another backend? Within `retries.attempts`, while one is
/// usable, and when the retry budget has one (counted either way).
pub fn may_retry(
    engine: &ProxyCtx,
    rt: &Snapshot,
    pool: &PoolState,
    retries: u32,
    exclude: &[BackendId],
) -> bool {
    if retries >= rt.config.retries.attempts || !any_usable(pool, exclude) {
        return false;
    }
    if rt
        .retry_budget
        .try_withdraw(clock::now().as_millis() as u64)
    {
        inc(&pool.stats.retries);
        inc(&engine.stats.retries_total);
        true
    } else {
        inc(&engine.stats.retry_budget_exhausted);
        false
    }
}

/// The node header, and `Connection: close` while the request's listener drains. HTTP/2
/// has no `Connection` header (its connection drains with GOAWAY on shutdown instead).
pub(super) fn pair_headers(h: &mut HeaderMap, rt: &Snapshot, fin: &Finish, version: Version) {
    if let Some((name, value)) = &rt.config.headers.node_header {
        h.insert(name.clone(), value.clone());
    }
    let draining = fin.gate.as_ref().is_some_and(|g| g.is_draining());
    if draining && version <= Version::HTTP_11 {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Why lbd answers a request itself, without a backend response: the one type both HTTP
/// paths return from the request steps; each writes it in its own way (a hyper `Response`,
/// or bytes straight into the client's buffer).
pub enum LocalAnswer {
    Error(ProxyError),
    RateLimited(Denied),
    /// The route sends plain-HTTP clients to HTTPS.
    Redirect(Redirect),
}

/// A redirect lbd answers itself.
#[derive(Debug)]
pub struct Redirect {
    pub status: http::StatusCode,
    pub location: HeaderValue,
}

/// A route with `redirect_to_https` answers a plain-HTTP request with the same URL over
/// HTTPS: 301 for GET and HEAD, 308 otherwise (the method and body must be kept). `host` is
/// the request's Host or authority (normalised as the router does: no port, no userinfo),
/// `target` the origin-form path and query. A request without a host goes on as usual:
/// there is no URL to send it to.
pub fn https_redirect(
    rt: &Snapshot,
    conn: &ConnCtx,
    rule: Option<usize>,
    method: &http::Method,
    host: Option<&str>,
    target: &str,
) -> Result<(), LocalAnswer> {
    let Some(port) = rt.config.route_https(rule).and_then(|h| h.redirect) else {
        return Ok(());
    };
    if conn.proto != "http" {
        return Ok(());
    }
    let Some(host) = host
        .map(crate::l7::router::normalize_host)
        .filter(|h| !h.is_empty())
    else {
        return Ok(());
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let Ok(location) = HeaderValue::from_str(&format!("https://{host}{port}{target}")) else {
        return Ok(());
    };
    let status = if method == http::Method::GET || method == http::Method::HEAD {
        http::StatusCode::MOVED_PERMANENTLY
    } else {
        http::StatusCode::PERMANENT_REDIRECT
    };
    Err(LocalAnswer::Redirect(Redirect { status, location }))
}

impl From<ProxyError> for LocalAnswer {
    fn from(e: ProxyError) -> LocalAnswer {
        LocalAnswer::Error(e)
    }
}

/// A backend reserved for one request: counts as in-flight load, and wakes the pool's queue
/// when released.
pub struct Lease {
    guard: Option<InFlightGuard>,
    released: Arc<Notify>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Decrement in-flight first, so the woken waiter sees the free slot.
        drop(self.guard.take());
        self.released.notify_one();
    }
}

pub fn lease(pool: &PoolState, backend: &Arc<Backend>) -> (Arc<Backend>, Lease) {
    let guard = backend.begin_request();
    (
        Arc::clone(backend),
        Lease {
            guard: Some(guard),
            released: Arc::clone(&pool.released),
        },
    )
}

/// Could any backend take this request if it had capacity?
pub fn any_usable(pool: &PoolState, exclude: &[BackendId]) -> bool {
    pool.pool
        .backends
        .iter()
        .any(|b| b.weight > 0 && b.is_available() && !exclude.contains(&b.id))
}

/// Decrements the queue depth gauge on drop.
struct QueueSlot<'a>(&'a PoolState);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pick a backend, waiting in the pool's queue while all usable backends are full.
pub async fn acquire(
    pool: &PoolState,
    pcfg: &PoolConfig,
    ctx: &PickContext<'_>,
) -> Result<(Arc<Backend>, Lease), ProxyError> {
    if let Some(b) = pool.pool.pick(ctx) {
        return Ok(lease(pool, b));
    }
    if !any_usable(pool, ctx.exclude) {
        inc(&pool.stats.no_healthy);
        return Err(ProxyError::new(ErrorKind::NoHealthyBackend));
    }
    let depth = pool.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
    let _slot = QueueSlot(pool);
    if depth >= i64::from(pcfg.queue_size) {
        inc(&pool.stats.queue_full);
        return Err(ProxyError::new(ErrorKind::QueueFull));
    }
    let wait = async {
        loop {
            // Register before checking, so a release between the check and the await
            // is not lost.
            let notified = pool.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(b) = pool.pool.pick(ctx) {
                return Ok(lease(pool, b));
            }
            if !any_usable(pool, ctx.exclude) {
                return Err(ProxyError::new(ErrorKind::NoHealthyBackend));
            }
            notified.await;
        }
    };
    match tokio::time::timeout(pcfg.queue_timeout, wait).await {
        Ok(r) => r,
        Err(_) => {
            inc(&pool.stats.queue_timeouts);
            Err(ProxyError::new(ErrorKind::QueueTimeout))
        }
    }
}

/// Feed passive health and log a resulting change.
pub fn report(pool: &PoolState, backend: &Backend, outcome: Outcome) {
    report_at(pool, backend, outcome, clock::now());
}

/// [`report`] with the caller's reading of [`clock::now`].
pub fn report_at(pool: &PoolState, backend: &Backend, outcome: Outcome, now: Duration) {
    if let Some(change) = backend.record_result(outcome, now) {
        log_health_change(pool.name(), backend, change);
    }
}
