//! The general path: hyper's service for every request the plain path ([`super::plain`])
//! does not take (HTTP/2 and h2c, upgrades and WebSocket, TLS listeners, TLS or h2 pools,
//! odd framing), or every request when `global.http1_fast_path = false`: one client request
//! in, one backend exchange out.
//!
//! [`handle`] is the hyper service. For each request it:
//! 1. loads the snapshot once (kept until the response body ends, so a reload never
//!    changes the rules mid-request);
//! 2. enforces `limits` (414 / 431), normalises the path ([`super::path`]; the backend gets
//!    the normalised one), works out the real client ([`super::dispatch::client_of`]), routes,
//!    then checks the `[[rate_limit]]` tables that apply ([`super::ratelimit`]; a denial
//!    answers 429 with `Retry-After` before any backend is touched, and before the 404 of an
//!    unrouted request), then the route's body limit
//!    (413: a declared length over it at once; a streamed body as it passes it, see
//!    [`CappedBody`]);
//! 3. rewrites headers ([`super::headers`]): hop-by-hop out, forwarding headers in, origin-form
//!    URI, HTTP/1.1 upstream (an h2c client is forwarded as HTTP/1.1), or HTTP/2 to a pool
//!    with `protocol = "h2"` (`to_h2_request`: Host as `:authority`, `te: trailers` kept, see
//!    [`super::grpc`]); a gRPC request to an HTTP/1.1 pool is refused (502, `grpc-status: 14`);
//! 4. picks a backend: the sticky pin ([`super::sticky`]) when the pool has one and its backend
//!    passes the balancer's eligibility test, else `acquire`: fast 503 when none is available,
//!    else waits in the pool's bounded queue while every backend is at `max_conns`;
//! 5. sends on a pooled or new connection ([`crate::upstream::conns`]; for an h2 pool a stream
//!    on a shared connection, [`crate::upstream::h2`]) under
//!    `backend_response_ms`, retrying on another backend when that is safe:
//!    - connect failures: always (nothing reached the backend);
//!    - a pooled connection that died before the request was written: always, on a fresh
//!      connection, and not counted as a backend failure (keep-alive race);
//!    - reset before any response byte: only idempotent requests whose body is buffered;
//!    - a response timeout: never (the backend may still be acting on it).
//!
//!    Every retry also needs the [`super::retry::RetryBudget`].
//! 6. reports the outcome to passive health, re-pins a sticky pool's client on the response
//!    (insert: `Set-Cookie` unless the request's cookie already named this backend; learn:
//!    the session cookie into the soft-state table), and wraps the response body in [`ProxyBody`],
//!    which returns the connection to the pool, releases the backend and writes the access
//!    log line when the body ends.
//!
//! Upgrades (`Connection: upgrade`): only `websocket` and the route's `upgrades` protocols are
//! forwarded ([`headers::allowed_upgrade`]); any other offer (`h2c`, …) is stripped, counted
//! in `lbd_upgrades_stripped_total`, and the request proceeds as a plain one. On a 101 both
//! sides are upgraded and joined with `copy_bidirectional` in a tracked task.
//!
//! Pair coupling ([`crate::coupling`]): every response names the node that served it
//! (`headers.node_header`), and a request on a VIP listener holds that listener's gate until
//! its body ends; while the gate drains (switchover, or vrrpd left Master) HTTP/1 responses
//! carry `Connection: close`, so hyper closes the connection after them and keep-alive reuse
//! stops.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::{debug, Instrument};

use super::attempts::{Attempts, SendFailed, Step};
pub use super::body::ProxyBody;
use super::body::{Finish, Inner, LogInfo, Stall};
use super::dispatch::{
    backend_conns, client_of, connect_failed, https_redirect, may_retry, normalized_path,
    note_error, note_rate_limited, pair_headers, pick, report, rewrite_request_headers,
    route_and_limit, send_failed, Lease, LocalAnswer,
};
use super::request_body::{CappedBody, RequestBodyState};
use crate::config::UpstreamProtocol;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::l7::client::ConnCtx;
use crate::l7::ctx::ProxyCtx;
use crate::l7::framing::Suspect;
use crate::l7::grpc;
use crate::l7::headers;
use crate::l7::ratelimit::{retry_after_secs, Denied};
use crate::l7::retry::is_idempotent;
use crate::l7::router::RequestView;
use crate::l7::sticky::RequestPin;
use crate::metrics::inc;
use crate::snapshot::Snapshot;
use crate::upstream::backend::{Backend, BackendId};
use crate::upstream::balance::PickContext;
use crate::upstream::conns::{BackendConns, Sender, UpstreamBody};
use crate::upstream::h2::{H2Stream, StreamSlot};
use crate::upstream::health::Outcome;

/// The hyper service: never fails; every error becomes a short response.
pub async fn handle(
    engine: Arc<ProxyCtx>,
    conn: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let rt = engine.snapshot();
    inc(&engine.stats.requests_total);
    rt.retry_budget.deposit();
    // Dropped with the future if the client abandons the request, so the connection's idle
    // accounting never leaks.
    let active = conn.begin();
    let gate = engine.gates.enter(&conn.listener);
    // Only the access log needs the request's start time, method and path.
    let log = rt.access_log.enabled().then(|| LogInfo {
        started: Instant::now(),
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().to_string(), |p| p.as_str().to_string()),
        client: None,
    });
    // The client's protocol version, not the backend's, goes on the response (hyper would
    // otherwise write an HTTP/1.0 backend's status line to an HTTP/1.1 client).
    let client_version = req.version();
    let mut meta = Meta::default();
    let result = forward(&engine, &rt, &conn, req, &mut meta).await;
    let log = log.map(|l| LogInfo {
        client: meta.client,
        ..l
    });
    let mut fin = Finish::begin(&engine, &rt, active, gate, log);
    fin.pool = meta.pool;
    fin.backend = meta.backend;
    fin.request_body = meta.request_body.take();
    match result {
        Ok(f) => {
            let (mut parts, body) = f.resp.into_parts();
            parts.version = client_version;
            let sticky_pool = meta.pool.and_then(|i| rt.pools.get(i));
            if let (Some(p), Some(served)) = (sticky_pool, meta.backend_index) {
                if let Some(st) = &p.sticky {
                    let pin = meta.pin.as_ref();
                    st.on_response(p.name(), pin, served, &mut parts.headers, &engine.soft);
                }
            }
            // hyper decoded a transfer coding, so the backend's length is not the body's
            // (RFC 9112 §6.3: with both, Transfer-Encoding wins and Content-Length must go).
            if parts.headers.contains_key(header::TRANSFER_ENCODING) {
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let upgrade = headers::strip_hop_by_hop(&mut parts.headers);
            let body = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(u) = upgrade {
                    headers::set_upgrade(&mut parts.headers, u);
                }
                Inner::Local(None)
            } else {
                Inner::Upstream(body)
            };
            let policy = &rt.config.headers;
            if policy.via {
                headers::add_via(&mut parts.headers, &policy.via_value);
            }
            // A 101 keeps its `Connection: upgrade`; the tunnel isn't a keep-alive.
            if parts.status != StatusCode::SWITCHING_PROTOCOLS {
                pair_headers(&mut parts.headers, &rt, &fin, client_version);
            }
            if conn.proto == "https" {
                if let Some(hsts) = rt
                    .config
                    .route_https(meta.rule)
                    .and_then(|h| h.hsts.as_ref())
                {
                    parts
                        .headers
                        .insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
                }
            }
            fin.status = parts.status.as_u16();
            fin.upstream = f.keep;
            fin.lease = f.lease;
            fin.h2_stream = f.h2_stream;
            Response::from_parts(
                parts,
                ProxyBody {
                    inner: body,
                    fin: Some(fin),
                    stall: Some(Stall::new(rt.config.timeouts.backend_response)),
                },
            )
        }
        Err(LocalAnswer::RateLimited(denied)) => {
            note_rate_limited(&rt, &conn, &denied);
            fin.status = StatusCode::TOO_MANY_REQUESTS.as_u16();
            fin.error = "rate_limited";
            let mut h = HeaderMap::new();
            pair_headers(&mut h, &rt, &fin, client_version);
            let mut resp = rate_limited_response(denied, fin);
            resp.headers_mut().extend(h);
            resp
        }
        Err(LocalAnswer::Redirect(r)) => {
            fin.status = r.status.as_u16();
            let mut h = HeaderMap::new();
            pair_headers(&mut h, &rt, &fin, client_version);
            let mut resp = Response::new(ProxyBody {
                inner: Inner::Local(Some(Bytes::new())),
                fin: Some(fin),
                stall: None,
            });
            *resp.status_mut() = r.status;
            resp.headers_mut().insert(header::LOCATION, r.location);
            resp.headers_mut().extend(h);
            resp
        }
        Err(LocalAnswer::Error(e)) => {
            note_error(&engine, &rt, &e, meta.pool, meta.backend);
            fin.status = e.kind.status().as_u16();
            fin.error = e.kind.as_str();
            let mut h = HeaderMap::new();
            pair_headers(&mut h, &rt, &fin, client_version);
            let mut resp = error_response(e.kind, fin);
            resp.headers_mut().extend(h);
            resp
        }
    }
}

fn error_response(kind: ErrorKind, fin: Finish) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody {
        inner: Inner::Local(Some(Bytes::from_static(kind.body().as_bytes()))),
        fin: Some(fin),
        stall: None,
    });
    *resp.status_mut() = kind.status();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if kind == ErrorKind::GrpcNeedsH2 {
        grpc::refusal_headers(h);
    }
    if kind.side() == Side::Client {
        // After a framing problem the rest of the byte stream cannot be trusted.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Facts about a request collected on the way, for logs and the response.
#[derive(Default)]
struct Meta {
    pool: Option<usize>,
    backend: Option<SocketAddr>,
    /// The backend's index in its pool.
    backend_index: Option<usize>,
    /// What the request said about stickiness (sticky pools only).
    pin: Option<RequestPin>,
    /// The real client ([`client_of`]), once known.
    client: Option<std::net::IpAddr>,
    /// A streamed request body's progress: was it cut off, did it go out whole.
    request_body: Option<Arc<RequestBodyState>>,
    /// The matched route rule (for its HSTS policy).
    rule: Option<usize>,
}

/// 429 with `Retry-After`; the client may not have sent anything wrong, so the connection
/// stays open.
fn rate_limited_response(denied: Denied, fin: Finish) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody {
        inner: Inner::Local(Some(Bytes::from_static(b"429 too many requests\n"))),
        fin: Some(fin),
        stall: None,
    });
    *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(denied.retry_after)),
    );
    resp
}

/// A backend's answer plus what must live as long as its body.
struct Forwarded {
    resp: Response<Incoming>,
    /// The connection, returned to the pool when the body ends cleanly.
    keep: Option<(Sender, Arc<BackendConns>)>,
    lease: Option<Lease>,
    /// The request's HTTP/2 stream (an h2 pool), held until the body ends.
    h2_stream: Option<StreamSlot>,
}

/// The connection a request goes out on: an HTTP/1.1 connection of its own, or a stream on
/// a shared HTTP/2 connection (a pool with `protocol = "h2"`).
enum Leg {
    H1(Sender),
    H2(H2Stream),
}

impl Leg {
    async fn get(
        conns: &BackendConns,
        backend: &Arc<Backend>,
        connect_timeout: std::time::Duration,
        fresh: bool,
        h2: bool,
    ) -> Result<(Leg, bool), ProxyError> {
        if h2 {
            let (s, reused) = conns.h2.get(conns, backend, connect_timeout, fresh).await?;
            Ok((Leg::H2(s), reused))
        } else {
            let (tx, reused) = conns.get(backend, connect_timeout, fresh).await?;
            Ok((Leg::H1(tx), reused))
        }
    }

    async fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>> {
        match self {
            Leg::H1(tx) => tx.try_send_request(req).await,
            Leg::H2(s) => s.tx.try_send_request(req).await,
        }
    }
}

/// Turn an HTTP/1-shaped upstream request into an HTTP/2 one: the Host header becomes the
/// `:authority` (RFC 9113 §8.3.1; the backend's address when the client sent none), the
/// target absolute (`:scheme` and `:path` are required), and a client's `te: trailers`
/// (stripped with the hop-by-hop headers) is put back: gRPC servers require it.
fn to_h2_request(parts: &mut http::request::Parts, te_trailers: bool, backend: SocketAddr) {
    parts.version = Version::HTTP_2;
    if te_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if parts.uri.scheme().is_some() {
        // Already done for an earlier attempt.
        return;
    }
    let authority = parts
        .headers
        .remove(header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .or_else(|| http::uri::Authority::try_from(backend.to_string()).ok());
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = authority;
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
}

/// Does the client ask for a protocol upgrade (WebSocket)?
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req.headers().get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// How a request the framing tracker flagged is answered: 501 for a transfer coding lbd does
/// not implement (RFC 9112 §6.1), 400 for the rest.
fn refusal_kind(why: Suspect) -> ErrorKind {
    match why {
        Suspect::UnsupportedTransferCoding => ErrorKind::NotImplemented,
        Suspect::MalformedChunkedBody => ErrorKind::ClientBody,
        Suspect::ContentLengthWithTransferEncoding
        | Suspect::DuplicateContentLength
        | Suspect::ChunkedTwice => ErrorKind::BadRequest,
    }
}

/// Did sending fail because the client's request body failed (malformed chunked framing,
/// the client gone or stalled mid-body)? hyper reports an error of the body it was given as
/// a user error whose cause is the server side's own `hyper::Error`. Nothing about the
/// backend is learnt from it: it is the client's fault, and hyper has already closed that
/// upstream connection, so it is never reused.
fn client_body_failed(e: &hyper::Error) -> bool {
    e.is_user()
        && std::error::Error::source(e).is_some_and(|c| c.downcast_ref::<hyper::Error>().is_some())
}

/// The part of the client's `Upgrade` offer this request's route tunnels (`websocket`, and
/// the route's `upgrades`); an offer with nothing allowed is counted and stripped, and the
/// request goes on as a plain one.
fn tunnelled_upgrade(
    engine: &ProxyCtx,
    rt: &Snapshot,
    rule: Option<usize>,
    offer: &HeaderValue,
) -> Option<HeaderValue> {
    let extra = rule
        .and_then(|r| rt.config.route_upgrades.get(r))
        .map_or(&[][..], Vec::as_slice);
    let allowed = headers::allowed_upgrade(offer, extra);
    if allowed.is_none() {
        debug!(offer = ?offer, "upgrade not allowed on this route, stripped");
        inc(&engine.stats.upgrades_stripped_total);
    }
    allowed
}

fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::builder()
            .path_and_query(pq.clone())
            .build()
            .unwrap_or_else(|_| Uri::from_static("/")),
        None => Uri::from_static("/"),
    }
}

async fn forward(
    engine: &Arc<ProxyCtx>,
    rt: &Arc<Snapshot>,
    conn: &Arc<ConnCtx>,
    req: Request<Incoming>,
    meta: &mut Meta,
) -> Result<Forwarded, LocalAnswer> {
    let cfg = &rt.config;
    // Framing hyper accepted but hid (CL+TE, duplicate CL, extra codings, a bad chunk line
    // that came with the head): asked once per request, in order.
    if let Some(why) = conn.framing().next_request() {
        return Err(LocalAnswer::from(
            ProxyError::new(refusal_kind(why)).with_source(why.as_str()),
        ));
    }
    if req.method() == Method::CONNECT {
        return Err(LocalAnswer::from(ProxyError::new(ErrorKind::BadRequest)));
    }
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len())
        + req.uri().authority().map_or(0, |a| a.as_str().len());
    if target_len > cfg.limits.max_request_line {
        return Err(LocalAnswer::from(ProxyError::new(ErrorKind::UriTooLong)));
    }
    if headers::head_size(req.headers()) > cfg.limits.max_header_bytes {
        return Err(LocalAnswer::from(ProxyError::new(
            ErrorKind::HeadersTooLarge,
        )));
    }
    let asks_upgrade = wants_upgrade(&req);
    let (mut parts, body) = req.into_parts();
    // RFC 9112 §3.2: an HTTP/1.1 request needs exactly one Host; several is an attack on
    // whoever picks a different one than we route by.
    let host_headers = parts.headers.get_all(header::HOST).iter().count();
    if host_headers > 1
        || (host_headers == 0
            && parts.version == Version::HTTP_11
            && parts.uri.authority().is_none())
    {
        return Err(LocalAnswer::from(ProxyError::new(ErrorKind::BadRequest)));
    }

    // What the router, the limiters and the backend see.
    if let Some(target) = parts.uri.path_and_query().map(|t| normalized_path(rt, t)) {
        if let Some(t) = target? {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.path_and_query = Some(t);
            parts.uri = Uri::from_parts(uri)
                .map_err(|e| ProxyError::new(ErrorKind::BadPath).with_source(e))?;
        }
    }
    let client = client_of(rt, conn, &parts.headers);
    meta.client = Some(client);
    let view = RequestView::from_parts(&parts);
    let (pool_index, pool, rule, max_body) = route_and_limit(engine, rt, client, &view)?;
    meta.pool = Some(pool_index);
    meta.rule = rule;
    let target = parts.uri.path_and_query().map_or("/", |t| t.as_str());
    https_redirect(rt, conn, rule, &parts.method, view.host, target)?;
    // A declared length over the limit is refused before anything goes upstream (and before
    // hyper sends a `100 Continue` for it); a chunked body is cut off as it passes the limit.
    if body.size_hint().lower() > max_body {
        return Err(LocalAnswer::from(ProxyError::new(ErrorKind::BodyTooLarge)));
    }
    let pcfg = rt.pool_config(pool);
    let h2 = pcfg.protocol == UpstreamProtocol::H2;
    // gRPC is HTTP/2 only (an HTTP/1.1 request with that content type is forwarded like any
    // other, as the fast path does).
    if !h2 && parts.version == Version::HTTP_2 && grpc::is_grpc(&parts.headers) {
        return Err(LocalAnswer::from(ProxyError::new(ErrorKind::GrpcNeedsH2)));
    }
    // Read before the hop-by-hop headers go.
    let te_trailers = h2 && grpc::asks_trailers(&parts.headers);
    // Read the pin before the headers are rewritten; a pool without stickiness skips it.
    if let Some(st) = &pool.sticky {
        meta.pin = Some(st.request_pin(pool.name(), &parts.headers, &engine.soft));
    }

    // The router matched the URI authority when there is one (absolute-form, HTTP/2), so
    // that is the host the backend must see too (RFC 9112 §3.2.2), never a different Host.
    // `host_from_uri`: the Host header must be (re)written from the authority; otherwise the
    // client's own Host header stays where it is (re-inserting it costs a hash and a move).
    let (host, host_from_uri) = match parts.uri.authority() {
        Some(a) => {
            let a = a.as_str();
            let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
            (HeaderValue::from_str(a).ok(), true)
        }
        None => (parts.headers.get(header::HOST).cloned(), false),
    };
    let upgrade =
        rewrite_request_headers(&mut parts.headers, rt, conn, client, host, host_from_uri);
    let client_upgrade = match upgrade.filter(|_| asks_upgrade) {
        Some(offer) => {
            // What `hyper::upgrade::on` takes from a request; a stripped upgrade drops it,
            // so the client's connection stays HTTP/1.
            let on_upgrade = parts.extensions.remove::<OnUpgrade>();
            tunnelled_upgrade(engine, rt, rule, &offer).and_then(|allowed| {
                headers::set_upgrade(&mut parts.headers, allowed);
                on_upgrade
            })
        }
        None => None,
    };
    // Most requests already arrive in origin form (HTTP/1.1 without a proxy in front).
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = origin_form(&parts.uri);
    }
    parts.version = Version::HTTP_11;

    // The body: buffered when small and the request could be replayed, else streamed.
    let idempotent = is_idempotent(&parts.method);
    let max_retries = cfg.retries.attempts;
    let (body, replay_bytes): (UpstreamBody, Option<Bytes>) = if body.is_end_stream() {
        (Either::Left(Full::new(Bytes::new())), Some(Bytes::new()))
    } else if max_retries > 0
        && idempotent
        && body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= cfg.retries.max_body_bytes as u64)
    {
        let collect = Limited::new(body, cfg.retries.max_body_bytes).collect();
        let bytes = match tokio::time::timeout(cfg.timeouts.client_idle, collect).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => {
                return Err(LocalAnswer::from(
                    ProxyError::new(ErrorKind::ClientBody).with_source(e),
                ));
            }
            Err(_) => return Err(LocalAnswer::from(ProxyError::new(ErrorKind::ClientBody))),
        };
        (Either::Left(Full::new(bytes.clone())), Some(bytes))
    } else {
        let (capped, state) = CappedBody::new(body, max_body);
        meta.request_body = Some(state);
        (Either::Right(capped), None)
    };
    let replayable = idempotent && replay_bytes.is_some();

    let mut pending = Some((parts, body));
    let mut attempts = Attempts::new();
    let may_retry =
        |retries: u32, exclude: &[BackendId]| may_retry(engine, rt, pool, retries, exclude);
    loop {
        let Some((parts, body)) = pending.take() else {
            return Err(LocalAnswer::from(ProxyError::new(ErrorKind::BackendIo)));
        };
        let ctx = PickContext::new(client)
            .with_headers(&parts.headers)
            .with_exclude(attempts.excluded());
        let (backend, lease, pinned) = match pick(pool, pcfg, meta.pin.as_ref(), &ctx).await {
            Ok(p) => p,
            Err(e) => return Err(LocalAnswer::from(attempts.pick_failed(e))),
        };
        meta.backend = Some(backend.addr);
        meta.backend_index = Some(backend.id.0);
        let Some(conns) = backend_conns(pool, &backend, pinned) else {
            return Err(LocalAnswer::from(ProxyError::new(
                ErrorKind::NoHealthyBackend,
            )));
        };
        let fresh = attempts.needs_fresh_connection();
        let (mut leg, reused) =
            match Leg::get(conns, &backend, cfg.timeouts.connect, fresh, h2).await {
                Ok(c) => c,
                Err(e) => {
                    connect_failed(pool, conns, &backend, &e);
                    drop(lease);
                    match attempts.on_connect_failed(backend.id, e, may_retry) {
                        Step::Again => {
                            pending = Some((parts, body));
                            continue;
                        }
                        Step::Fail(e) => return Err(LocalAnswer::from(e)),
                    }
                }
            };
        if reused {
            inc(&conns.stats.conns_reused);
        }
        // A copy to resend after a failure, made only when a resend could happen: on a
        // reused connection (the keep-alive race, resent to the same backend), or as a retry
        // on another backend (so a fresh connection in a single-backend pool never needs
        // one; cloning the head on every request is measurable).
        let other_backends = pool.pool.backends.len() > 1;
        let resend_possible =
            reused && attempts.may_resend() || attempts.retries() < max_retries && other_backends;
        let replay = (replayable && resend_possible).then(|| {
            let bytes = replay_bytes.clone().unwrap_or_default();
            (parts.clone(), Either::Left(Full::new(bytes)))
        });
        let mut parts = parts;
        if h2 {
            to_h2_request(&mut parts, te_trailers, backend.addr);
        }
        let sent_at = Instant::now();
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(cfg.timeouts.backend_response, leg.send(request)).await {
            Ok(Ok(mut resp)) => {
                let status = resp.status();
                conns
                    .stats
                    .record_response(status.as_u16(), sent_at.elapsed());
                let outcome = if status.is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                report(pool, &backend, outcome);
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    // A 101 nobody asked for would leave the connection in an unknown protocol.
                    let Some(client) = client_upgrade else {
                        return Err(LocalAnswer::from(
                            ProxyError::new(ErrorKind::BackendIo)
                                .with_source("unsolicited 101 Switching Protocols"),
                        ));
                    };
                    let upstream = hyper::upgrade::on(&mut resp);
                    inc(&engine.stats.upgrades_total);
                    // The tunnel outlives the HTTP connection's task: it keeps the client
                    // connection's context, and with it the connection's places under
                    // `max_client_conns` and `max_conns_per_client` (`ConnHold`).
                    let client_conn = Arc::clone(conn);
                    engine.tracker.spawn(
                        async move {
                            let _lease = lease;
                            let _client_conn = client_conn;
                            match tokio::try_join!(client, upstream) {
                                Ok((c, u)) => {
                                    let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
                                    match tokio::io::copy_bidirectional(&mut c, &mut u).await {
                                        Ok((up, down)) => debug!(up, down, "tunnel closed"),
                                        Err(e) => debug!(error = %e, "tunnel ended"),
                                    }
                                }
                                Err(e) => debug!(error = %e, "upgrade failed"),
                            }
                        }
                        .in_current_span(),
                    );
                    return Ok(Forwarded {
                        resp,
                        keep: None,
                        lease: None,
                        h2_stream: None,
                    });
                }
                let (keep, h2_stream) = match leg {
                    Leg::H1(tx) => (Some((tx, Arc::clone(conns))), None),
                    Leg::H2(s) => (None, Some(s.slot)),
                };
                return Ok(Forwarded {
                    resp,
                    keep,
                    lease: Some(lease),
                    h2_stream,
                });
            }
            Ok(Err(mut e)) => {
                drop(lease);
                if meta.request_body.as_ref().is_some_and(|b| b.is_too_large()) {
                    // The client's body passed the limit: hyper aborted the request and closes
                    // that connection. Not the backend's failure.
                    return Err(LocalAnswer::from(
                        ProxyError::new(ErrorKind::BodyTooLarge).with_source(e.into_error()),
                    ));
                }
                // Not written at all: hyper hands the request back.
                let unsent = e.take_message().map(|r| r.into_parts());
                let err = e.into_error();
                if unsent.is_none() && client_body_failed(&err) {
                    return Err(LocalAnswer::from(
                        ProxyError::new(ErrorKind::ClientBody).with_source(err),
                    ));
                }
                let how = SendFailed {
                    reused,
                    written: unsent.is_none(),
                    replayable: unsent.is_some() || replay.is_some(),
                };
                let e = ProxyError::new(ErrorKind::BackendIo).with_source(err);
                let (blame, next) = attempts.on_send_failed(backend.id, how, e, may_retry);
                send_failed(pool, conns, &backend, reused, blame);
                match next {
                    Step::Again => {
                        pending = unsent.or(replay);
                        continue;
                    }
                    Step::Fail(e) => return Err(LocalAnswer::from(e)),
                }
            }
            Err(_) => {
                inc(&conns.stats.failures);
                report(pool, &backend, Outcome::Timeout);
                match attempts.on_timeout() {
                    Step::Fail(e) => return Err(LocalAnswer::from(e)),
                    Step::Again => continue,
                }
            }
        }
    }
}
