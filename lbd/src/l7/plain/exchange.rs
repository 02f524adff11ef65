//! One fast-path request, from its parsed head to the last byte of the response.
//!
//! The order of checks and the retry rules are those of [`crate::l7::general`] (its module docs
//! list them), and the same functions do the work: the router, the rate limiters, sticky
//! pins, `acquire` and its queue, passive health `report`, the retry budget, header hygiene,
//! `pair_headers`, and `Finish` for metrics, the access log and releasing the backend and
//! the VIP gate. What differs is the transport: the request head is serialised once into a
//! buffer that a retry simply sends again, the upstream socket is a [`RawConn`] driven here,
//! and the response is relayed by [`super::relay`].
//!
//! Retries on a raw socket: a write that fails on a reused connection means the backend had
//! closed it (the keep-alive race), so the request goes again on a fresh connection to the
//! same backend, as hyper's "request not sent" does. A reused connection that closes before
//! any response byte is the same race for an idempotent request; otherwise (and on a fresh
//! connection) it is a backend failure, retried elsewhere only when idempotent.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Version};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::client_io::ClientIo;
use super::head::{self, RequestHead, ResponseEdits};
use super::relay::{self, HeadError};
use crate::clock;
use crate::config::UpstreamProtocol;
use crate::error::{ErrorKind, ProxyError, Side};
use crate::l7::attempts::{Attempts, SendFailed, Step};
use crate::l7::body::{Finish, LogInfo};
use crate::l7::client::ConnCtx;
use crate::l7::ctx::ProxyCtx;
use crate::l7::dispatch::{
    backend_conns, client_of, connect_failed, https_redirect, may_retry, normalized_path,
    note_error, note_rate_limited, pair_headers, pick, report, report_at, rewrite_request_headers,
    route_and_limit, send_failed, LocalAnswer,
};
use crate::l7::headers;
use crate::l7::ratelimit::retry_after_secs;
use crate::l7::retry::is_idempotent;
use crate::l7::router::RequestView;
use crate::l7::sticky::RequestPin;
use crate::l7::timer::LazyDeadline;
use crate::metrics::{inc, DiscardReason};
use crate::snapshot::Snapshot;
use crate::upstream::backend::BackendId;
use crate::upstream::balance::PickContext;
use crate::upstream::conns::{BackendConns, RawConn};
use crate::upstream::health::Outcome;

/// Largest response head accepted from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Buffers (and the timer) a client connection keeps between its requests.
pub(super) struct Bufs {
    /// Every deadline of the connection: request heads and bodies, backend answers.
    pub(super) timer: LazyDeadline,
    /// The upstream request (head and body), kept for a resend.
    request: Vec<u8>,
    /// Bytes from the backend.
    upstream: BytesMut,
    /// The client's response head (and the first body bytes).
    response: Vec<u8>,
}

/// Buffer capacity a connection keeps between requests; a large body grows a buffer past
/// it, and that memory goes back at once (an idle connection is parked, which drops them all).
pub(super) const KEEP_CAPACITY: usize = 16 * 1024;

/// First capacity of the request and response head buffers: most heads fit, so writing one
/// costs one allocation rather than a series of doublings.
const HEAD_CAPACITY: usize = 1024;

impl Bufs {
    pub(super) fn new(first_deadline: Instant) -> Self {
        Bufs {
            timer: LazyDeadline::new(first_deadline),
            request: Vec::new(),
            upstream: BytesMut::new(),
            response: Vec::new(),
        }
    }

    /// Give back every buffer (the connection is about to wait for its client).
    pub(super) fn release(&mut self) {
        self.request = Vec::new();
        self.response = Vec::new();
        self.upstream = BytesMut::new();
    }

    /// Give back what a large request or response grew.
    fn trim(&mut self) {
        if self.request.capacity() > KEEP_CAPACITY {
            self.request = Vec::new();
        }
        if self.response.capacity() > KEEP_CAPACITY {
            self.response = Vec::new();
        }
        if self.upstream.capacity() > KEEP_CAPACITY {
            self.upstream = BytesMut::new();
        }
    }
}

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    KeepAlive,
    Close,
}

/// Serve one request and write its response to `client`.
pub(super) async fn serve<S: ClientIo>(
    engine: &Arc<ProxyCtx>,
    conn: &Arc<ConnCtx>,
    client: &mut S,
    mut req: Box<RequestHead>,
    body: Bytes,
    bufs: &mut Bufs,
) -> Next {
    let rt = engine.snapshot();
    inc(&engine.stats.requests_total);
    inc(&engine.stats.fast_path_requests_total);
    rt.retry_budget.deposit();
    let log = rt.access_log.enabled().then(|| LogInfo {
        started: Instant::now(),
        method: req.method.to_string(),
        path: req.target.as_str().to_string(),
        client: None,
    });
    let active = conn.begin();
    let gate = engine.gates.enter(&conn.listener);
    let mut fin = Finish::begin(engine, &rt, active, gate, log);
    let forwarded = forward(engine, &rt, conn, &mut req, body, bufs, &mut fin).await;
    let Forwarded {
        mut up,
        answered,
        pool_conns,
        framing,
        reusable,
        close,
    } = match forwarded {
        Ok(f) => f,
        Err(local) => {
            let asked = Asked {
                close: req.close,
                head: req.method == http::Method::HEAD,
            };
            return answer_locally(engine, &rt, conn, client, local, asked, bufs, fin).await;
        }
    };
    let stall = relay::Stall {
        upstream: rt.config.timeouts.backend_response,
        client: rt.config.timeouts.client_idle,
    };
    let relayed = relay::relay_body(
        &mut up.stream,
        client,
        &mut bufs.response,
        &mut bufs.upstream,
        framing,
        &mut bufs.timer,
        stall,
    )
    .await;
    bufs.trim();
    match relayed {
        Ok(r) => {
            fin.bytes = r.bytes;
            if r.surplus {
                pool_conns.stats.discarded(DiscardReason::UnexpectedBytes);
            } else if r.clean && reusable {
                pool_conns.checkin_raw(up, answered);
            }
            fin.run(true);
            if close {
                Next::Close
            } else {
                Next::KeepAlive
            }
        }
        Err(e) => {
            // The head is out: all that is left is to stop, and say which side failed.
            match &e {
                relay::RelayError::Client(_) | relay::RelayError::ClientIdle(_) => {
                    debug!(side = "client", error = %e, "client went away mid-response")
                }
                _ => warn!(side = "backend", error = %e, "response body relay failed"),
            }
            fin.run(false);
            Next::Close
        }
    }
}

/// Does this request go to a pool the fast path cannot speak to: backends behind TLS
/// (`[pool.tls]`) or speaking HTTP/2 (`protocol = "h2"`)? The fast path speaks plain
/// HTTP/1 upstream only, so such a request (and its connection from there on) is hyper's,
/// asked right after the head parses and before anything is counted, so hyper serves it as
/// if it had come first. Asked only when the config has such a pool, on the normalised
/// path, as [`forward`] routes; every pool the matched rule may choose counts, so asking
/// never takes a split's turn.
pub(super) fn routes_to_hyper_pool(engine: &ProxyCtx, req: &RequestHead) -> bool {
    // Asked of every request the fast path parses: a guard, not an `Arc` clone (`serve`
    // takes its own snapshot), so a config without such pools costs one atomic load here.
    let rt = engine.snapshot.load();
    if !rt.hyper_only_pools {
        return false;
    }
    // A path lbd refuses is answered by the fast path, like any other.
    let Ok(normalized) = normalized_path(&rt, &req.target) else {
        return false;
    };
    let target = normalized.as_ref().unwrap_or(&req.target);
    let view = RequestView {
        method: &req.method,
        host: req.headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        path: target.path(),
        headers: &req.headers,
    };
    rt.router.may_route_to(&view, |pool| {
        rt.config
            .pools
            .get(pool.0)
            .is_some_and(|p| p.tls.is_some() || p.protocol == UpstreamProtocol::H2)
    })
}

/// A backend's answer, its head already rewritten for the client.
struct Forwarded {
    up: RawConn,
    /// When the response head arrived (the upstream connection's idle clock starts there).
    answered: Instant,
    pool_conns: Arc<BackendConns>,
    framing: head::Framing,
    /// The backend keeps the connection open after this response.
    reusable: bool,
    /// The client connection closes after this response (the head says so).
    close: bool,
}

/// Route, limit, pick and send; on success the client's response head is in
/// `bufs.response` and the backend's body bytes that came with it in `bufs.upstream`.
async fn forward(
    engine: &Arc<ProxyCtx>,
    rt: &Arc<Snapshot>,
    conn: &ConnCtx,
    req: &mut RequestHead,
    body: Bytes,
    bufs: &mut Bufs,
    fin: &mut Finish,
) -> Result<Forwarded, LocalAnswer> {
    let cfg = &rt.config;
    if req.target.as_str().len() > cfg.limits.max_request_line {
        return Err(ProxyError::new(ErrorKind::UriTooLong).into());
    }
    if headers::head_size(&req.headers) > cfg.limits.max_header_bytes {
        return Err(ProxyError::new(ErrorKind::HeadersTooLarge).into());
    }
    // What the router, the limiters and the backend see.
    if let Some(target) = normalized_path(rt, &req.target)? {
        req.target = target;
    }
    let client = client_of(rt, conn, &req.headers);
    if let Some(log) = &mut fin.log {
        log.client = Some(client);
    }
    let host = req.headers.get(header::HOST).cloned();
    let view = RequestView {
        method: &req.method,
        host: host.as_ref().and_then(|h| h.to_str().ok()),
        path: req.target.path(),
        headers: &req.headers,
    };
    let (pool_index, pool, rule, max_body) = route_and_limit(engine, rt, client, &view)?;
    https_redirect(rt, conn, rule, &req.method, view.host, req.target.as_str())?;
    fin.pool = Some(pool_index);
    // The whole body is already read (it is at most MAX_BODY): over the route's limit, it
    // goes nowhere.
    if body.len() as u64 > max_body {
        return Err(ProxyError::new(ErrorKind::BodyTooLarge).into());
    }
    let pcfg = rt.pool_config(pool);
    let pin: Option<RequestPin> = pool
        .sticky
        .as_ref()
        .map(|st| st.request_pin(pool.name(), &req.headers, &engine.soft));

    // Header hygiene, then the upstream request, serialised once for every attempt.
    rewrite_request_headers(&mut req.headers, rt, conn, client, host, false);
    bufs.request.clear();
    bufs.request.reserve(HEAD_CAPACITY + body.len());
    head::write_request_head(
        &mut bufs.request,
        &req.method,
        req.target.as_str(),
        &req.headers,
    );
    bufs.request.extend_from_slice(&body);

    let replayable = is_idempotent(&req.method);
    let request_is_head = req.method == http::Method::HEAD;
    let mut attempts = Attempts::new();
    let may_retry =
        |retries: u32, exclude: &[BackendId]| may_retry(engine, rt, pool, retries, exclude);
    loop {
        let ctx = PickContext::new(client)
            .with_headers(&req.headers)
            .with_exclude(attempts.excluded());
        let (backend, lease, pinned) = match pick(pool, pcfg, pin.as_ref(), &ctx).await {
            Ok(p) => p,
            Err(e) => return Err(attempts.pick_failed(e).into()),
        };
        fin.backend = Some(backend.addr);
        let Some(conns) = backend_conns(pool, &backend, pinned) else {
            return Err(ProxyError::new(ErrorKind::NoHealthyBackend).into());
        };
        // One clock reading serves the pool's idle check and the latency's start.
        let mut sent_at = Instant::now();
        let fresh = attempts.needs_fresh_connection();
        let (mut up, reused) = match conns
            .get_raw(&backend, cfg.timeouts.connect, fresh, sent_at)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                connect_failed(pool, conns, &backend, &e);
                drop(lease);
                match attempts.on_connect_failed(backend.id, e, may_retry) {
                    Step::Again => continue,
                    Step::Fail(e) => return Err(e.into()),
                }
            }
        };
        if reused {
            inc(&conns.stats.conns_reused);
        } else {
            // Latency counts from the request, not from the connect.
            sent_at = Instant::now();
        }
        let deadline = sent_at + cfg.timeouts.backend_response;
        let sent = relay::send_and_read_head(
            &mut up.stream,
            &bufs.request,
            &mut bufs.upstream,
            &mut bufs.timer,
            deadline,
            MAX_RESPONSE_HEAD,
        )
        .await;
        let written = match &sent {
            Ok(()) => true,
            Err(HeadError::Timeout) => {
                inc(&conns.stats.failures);
                report(pool, &backend, Outcome::Timeout);
                match attempts.on_timeout() {
                    Step::Fail(e) => return Err(e.into()),
                    Step::Again => continue,
                }
            }
            Err(HeadError::Write(_)) => false,
            Err(_) => true,
        };
        if let Err(err) = sent {
            drop(lease);
            let how = SendFailed {
                reused,
                written,
                replayable,
            };
            let e = ProxyError::new(ErrorKind::BackendIo).with_source(err);
            let (blame, next) = attempts.on_send_failed(backend.id, how, e, may_retry);
            send_failed(pool, conns, &backend, reused, blame);
            match next {
                Step::Again => continue,
                Step::Fail(e) => return Err(e.into()),
            }
        }

        // A complete head is at the start of the buffer.
        let mut storage = head::header_slots();
        let resp = match head::parse_response(
            &bufs.upstream,
            &mut storage,
            request_is_head,
            MAX_RESPONSE_HEAD,
        ) {
            Ok(Some(r)) if r.status != 101 => r,
            Ok(Some(_)) => {
                // A 101 nobody asked for would leave the connection in an unknown protocol.
                inc(&conns.stats.failures);
                return Err(ProxyError::new(ErrorKind::BackendIo)
                    .with_source("unsolicited 101 Switching Protocols")
                    .into());
            }
            // (A head whose end was found but httparse calls incomplete is malformed.)
            bad @ (Ok(None) | Err(_)) => {
                let why = bad.err().unwrap_or(head::BadResponse::Malformed);
                inc(&conns.stats.failures);
                report(pool, &backend, Outcome::ServerError);
                return Err(ProxyError::new(ErrorKind::BackendIo)
                    .with_source(why)
                    .into());
            }
        };
        let answered = Instant::now();
        conns.stats.record_response(resp.status, answered - sent_at);
        let outcome = if resp.status >= 500 {
            Outcome::ServerError
        } else {
            Outcome::Success
        };
        report_at(pool, &backend, outcome, answered - clock::start());

        let mut cookies = HeaderMap::new();
        if let Some(st) = &pool.sticky {
            resp.set_cookies(&mut cookies);
            st.on_response(
                pool.name(),
                pin.as_ref(),
                backend.id.0,
                &mut cookies,
                &engine.soft,
            );
        }
        let policy = &cfg.headers;
        let draining = fin.gate.as_ref().is_some_and(|g| g.is_draining());
        let close = req.close
            || draining
            || engine.shutdown.is_triggered()
            || resp.framing == head::Framing::UntilClose;
        bufs.response.clear();
        bufs.response.reserve(HEAD_CAPACITY);
        resp.write_for_client(
            &mut bufs.response,
            &ResponseEdits {
                via: policy.via.then_some(&policy.via_value),
                node: policy.node_header.as_ref().map(|(n, v)| (n, v)),
                close,
                set_cookies: pool.sticky.is_some().then_some(&cookies),
                hsts: hsts(rt, conn, rule),
            },
        );
        fin.status = resp.status;
        let (framing, reusable, head_len) = (resp.framing, resp.reusable, resp.head_len);
        bytes::Buf::advance(&mut bufs.upstream, head_len);
        fin.lease = Some(lease);
        return Ok(Forwarded {
            up,
            answered,
            pool_conns: Arc::clone(conns),
            framing,
            reusable,
            close,
        });
    }
}

/// The route's HSTS header, for a client on HTTPS (RFC 6797 §7.2: never over plain HTTP).
fn hsts<'a>(rt: &'a Snapshot, conn: &ConnCtx, rule: Option<usize>) -> Option<&'a HeaderValue> {
    if conn.proto != "https" {
        return None;
    }
    rt.config.route_https(rule).and_then(|h| h.hsts.as_ref())
}

/// What the request asked of the response's form.
struct Asked {
    /// `Connection: close`.
    close: bool,
    /// A HEAD request: the answer has no body (RFC 9110 §9.3.2).
    head: bool,
}

/// Answer an error or a 429 from lbd itself.
#[allow(clippy::too_many_arguments)]
async fn answer_locally<S: ClientIo>(
    engine: &Arc<ProxyCtx>,
    rt: &Snapshot,
    conn: &ConnCtx,
    client: &mut S,
    local: LocalAnswer,
    asked: Asked,
    bufs: &mut Bufs,
    mut fin: Finish,
) -> Next {
    let mut h = HeaderMap::new();
    let (status, body, client_fault): (StatusCode, &'static [u8], bool) = match local {
        LocalAnswer::RateLimited(denied) => {
            note_rate_limited(rt, conn, &denied);
            fin.error = "rate_limited";
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(denied.retry_after)),
            );
            (
                StatusCode::TOO_MANY_REQUESTS,
                b"429 too many requests\n",
                false,
            )
        }
        LocalAnswer::Error(e) => {
            note_error(engine, rt, &e, fin.pool, fin.backend);
            fin.error = e.kind.as_str();
            (
                e.kind.status(),
                e.kind.body().as_bytes(),
                e.kind.side() == Side::Client,
            )
        }
        LocalAnswer::Redirect(r) => {
            h.insert(header::LOCATION, r.location);
            (r.status, b"", false)
        }
    };
    fin.status = status.as_u16();
    pair_headers(&mut h, rt, &fin, Version::HTTP_11);
    // After a framing problem the rest of the byte stream cannot be trusted.
    let close = client_fault
        || asked.close
        || h.contains_key(header::CONNECTION)
        || engine.shutdown.is_triggered();
    h.remove(header::CONNECTION);
    bufs.response.clear();
    head::write_local_response(&mut bufs.response, status, &h, body, close);
    if asked.head {
        // The head says how long the body would be; the body itself is not sent.
        bufs.response.truncate(bufs.response.len() - body.len());
    }
    fin.bytes = if asked.head { 0 } else { body.len() as u64 };
    let written = write_all_flushed(client, &bufs.response).await;
    bufs.trim();
    fin.run(written.is_ok());
    if close || written.is_err() {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Write `data` to the client and flush it (a TLS stream may hold records back).
async fn write_all_flushed<S: ClientIo>(client: &mut S, data: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    client.write_all(data).await?;
    client.flush().await
}
