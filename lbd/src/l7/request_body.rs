//! A client's streamed request body on its way to the backend ([`CappedBody`]), cut off once
//! it passes the route's `max_request_body_bytes`. Its [`RequestBodyState`] tells the proxy
//! why the exchange failed (413, the client's fault, not the backend's) and tells the
//! response's `Finish` whether the request went out whole: only then may the upstream
//! connection be pooled again.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// How far a streamed request body got: shared by its [`CappedBody`] and the request.
#[derive(Debug)]
pub struct RequestBodyState(AtomicU8);

impl RequestBodyState {
    const STREAMING: u8 = 0;
    const COMPLETE: u8 = 1;
    const TOO_LARGE: u8 = 2;

    fn new() -> Self {
        RequestBodyState(AtomicU8::new(Self::STREAMING))
    }

    /// The whole body went upstream.
    pub fn is_complete(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::COMPLETE
    }

    /// The body passed its limit and was cut off.
    pub fn is_too_large(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::TOO_LARGE
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }
}

/// The body error when a request body passes its limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than max_request_body_bytes ({0} bytes)")]
pub struct BodyTooLarge(pub u64);

/// A client's streamed request body with a size limit: past `limit` bytes it fails instead
/// of yielding more, which makes hyper abort the upstream request (and close that connection).
pub struct CappedBody {
    inner: Incoming,
    limit: u64,
    /// Bytes that may still come.
    remaining: u64,
    state: Arc<RequestBodyState>,
}

impl CappedBody {
    pub fn new(inner: Incoming, limit: u64) -> (Self, Arc<RequestBodyState>) {
        let state = Arc::new(RequestBodyState::new());
        let body = CappedBody {
            inner,
            limit,
            remaining: limit,
            state: Arc::clone(&state),
        };
        (body, state)
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.state.is_too_large() {
            return Poll::Ready(Some(Err(BodyTooLarge(this.limit).into())));
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                let len = f.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    this.state.set(RequestBodyState::TOO_LARGE);
                    return Poll::Ready(Some(Err(BodyTooLarge(this.limit).into())));
                }
                this.remaining -= len;
                if f.is_trailers() || this.inner.is_end_stream() {
                    this.state.set(RequestBodyState::COMPLETE);
                }
            }
            None => this.state.set(RequestBodyState::COMPLETE),
            Some(Err(_)) => {}
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
