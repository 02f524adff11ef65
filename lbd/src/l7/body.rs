//! The response body lbd hands to hyper, and what runs when it ends.
//!
//! [`ProxyBody`] streams the backend's body through (or carries a local answer: an error, a
//! 429) and runs `Finish` exactly once: at the end of the stream, on an error, or when
//! hyper drops it. `Finish` is where a request's resources are given back: the upstream
//! connection goes back to the pool only after a complete body, the backend lease and the
//! VIP listener's gate are released, and the response is counted and logged.
//!
//! The other direction, a client's streamed request body on its way to the backend, is
//! [`crate::l7::request_body`].

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::dispatch::Lease;
use crate::access_log::{now_since_epoch, Record};
use crate::coupling::gate::GateGuard;
use crate::l7::client::ActiveRequest;
use crate::l7::ctx::ProxyCtx;
use crate::l7::request_body::RequestBodyState;
use crate::l7::timer::LazyDeadline;
use crate::metrics::{inc, status_class};
use crate::snapshot::Snapshot;
use crate::upstream::conns::{BackendConns, Sender};
use crate::upstream::h2::StreamSlot;

/// What the access log needs from the request (only when the log is on).
pub(super) struct LogInfo {
    pub(super) started: Instant,
    pub(super) method: String,
    /// The request target as the client sent it (before normalisation).
    pub(super) path: String,
    /// The real client, once known (`None`: the request was answered before, e.g. 414, and
    /// the peer is logged as the client).
    pub(super) client: Option<IpAddr>,
}

/// What to do when a response body ends: pool the connection, release the backend, count,
/// and log.
pub(super) struct Finish {
    pub(super) engine: Arc<ProxyCtx>,
    /// Keeps the request's snapshot alive until the body ends.
    pub(super) rt: Arc<Snapshot>,
    pub(super) active: ActiveRequest,
    pub(super) status: u16,
    pub(super) bytes: u64,
    pub(super) upstream: Option<(Sender, Arc<BackendConns>)>,
    pub(super) lease: Option<Lease>,
    pub(super) log: Option<LogInfo>,
    pub(super) pool: Option<usize>,
    pub(super) backend: Option<SocketAddr>,
    pub(super) error: &'static str,
    /// The VIP listener's gate: the request counts as in flight for a drain until the body
    /// ends.
    pub(super) gate: Option<GateGuard>,
    /// A streamed request body's progress (`None`: the body was sent whole at once).
    pub(super) request_body: Option<Arc<RequestBodyState>>,
    /// The request's stream on an HTTP/2 upstream connection, given back when this runs.
    pub(super) h2_stream: Option<StreamSlot>,
}

impl Finish {
    /// The one way both HTTP paths begin a request's `Finish`: nothing sent, no backend yet.
    /// `active` and `gate` are taken by the caller when the request starts, since a path may
    /// begin the `Finish` only once the request has been forwarded. Inlined: it runs on every
    /// request of the plain path, which built this in place before.
    #[inline]
    pub(super) fn begin(
        engine: &Arc<ProxyCtx>,
        rt: &Arc<Snapshot>,
        active: ActiveRequest,
        gate: Option<GateGuard>,
        log: Option<LogInfo>,
    ) -> Finish {
        Finish {
            engine: Arc::clone(engine),
            rt: Arc::clone(rt),
            active,
            status: 0,
            bytes: 0,
            upstream: None,
            lease: None,
            log,
            pool: None,
            backend: None,
            error: "-",
            gate,
            request_body: None,
            h2_stream: None,
        }
    }

    pub(super) fn run(self, complete: bool) {
        // A connection whose request body was cut off (or is still being written) is never
        // pooled: the backend may still be reading a request that will never end.
        let request_sent = self.request_body.as_ref().is_none_or(|b| b.is_complete());
        if complete && request_sent {
            if let Some((tx, pool)) = self.upstream {
                pool.checkin(tx);
            }
        }
        drop(self.lease);
        let conn_peer = self.active.conn().peer;
        drop(self.active);
        drop(self.gate);
        inc(&self.engine.stats.responses[status_class(self.status)]);
        if let Some(log) = self.log {
            self.rt.access_log.write(&Record {
                time: now_since_epoch(),
                client: log.client.unwrap_or(conn_peer.ip()),
                peer: conn_peer,
                method: &log.method,
                path: &log.path,
                status: self.status,
                bytes: self.bytes,
                pool: self
                    .pool
                    .and_then(|i| self.rt.pools.get(i))
                    .map_or("-", |p| p.name()),
                backend: self.backend,
                duration_ms: log.started.elapsed().as_secs_f64() * 1000.0,
                error: self.error,
            });
        }
    }
}

pub(super) enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// The response body sent to the client: the backend's body streamed through, or a local
/// one; runs `Finish` exactly once (end of stream, error, or drop).
pub struct ProxyBody {
    pub(super) inner: Inner,
    pub(super) fin: Option<Finish>,
    /// For a backend's body: how long it may go silent mid-body.
    pub(super) stall: Option<Stall>,
}

/// The backend's silence limit while its body streams (`timeouts.backend_response_ms`, like
/// nginx's `proxy_read_timeout`): a backend that stops sending mid-body is cut off instead of
/// holding the client connection and the backend's slot for ever.
pub(super) struct Stall {
    timer: LazyDeadline,
    limit: Duration,
    deadline: Instant,
}

impl Stall {
    pub(super) fn new(limit: Duration) -> Self {
        let deadline = Instant::now() + limit;
        Stall {
            timer: LazyDeadline::new(deadline),
            limit,
            deadline,
        }
    }
}

/// The body error when a backend went silent mid-body.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent nothing for {0:?} in the middle of the body")]
pub struct BackendStalled(Duration);

impl ProxyBody {
    fn finish(&mut self, complete: bool) {
        if let Some(fin) = self.fin.take() {
            fin.run(complete);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let res = match &mut this.inner {
            Inner::Upstream(b) => match Pin::new(b).poll_frame(cx) {
                Poll::Ready(r) => {
                    if let Some(s) = &mut this.stall {
                        s.deadline = Instant::now() + s.limit;
                    }
                    r.map(|r| r.map_err(Into::into))
                }
                Poll::Pending => {
                    let Some(s) = &mut this.stall else {
                        return Poll::Pending;
                    };
                    ready!(s.timer.poll_expired(cx, s.deadline));
                    let e = BackendStalled(s.limit);
                    tracing::warn!(side = "backend", error = %e, "response body relay failed");
                    this.finish(false);
                    return Poll::Ready(Some(Err(e.into())));
                }
            },
            Inner::Local(b) => b.take().map(|d| Ok(Frame::data(d))),
        };
        match &res {
            Some(Ok(frame)) => {
                if let (Some(d), Some(fin)) = (frame.data_ref(), this.fin.as_mut()) {
                    fin.bytes += d.len() as u64;
                }
                // Trailers end a chunked body, and hyper's server stops polling after them
                // (`is_end_stream` can't know it for a chunked `Incoming`).
                if frame.is_trailers() || this.is_end_stream() {
                    this.finish(true);
                }
            }
            Some(Err(_)) => this.finish(false),
            None => this.finish(true),
        }
        Poll::Ready(res)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper drops a body without polling it when `is_end_stream` says it is empty
        // (HEAD, 204, 304); otherwise a drop before the end means the client went away.
        let complete = self.is_end_stream();
        self.finish(complete);
    }
}
