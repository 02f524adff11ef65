//! Why a proxied request failed, which side is to blame, and whether it may be retried.
//!
//! Every failure the proxy answers itself goes through [`ProxyError`]: it picks the status
//! (400/404/413/414/431/501/502/503/504), the short body, and the `side` that the log line and the
//! `lbd_proxy_errors_total{kind,side}` counter name, so an operator can tell a bad client from a
//! dead backend from a bug in lbd at a glance.

use std::fmt;

use http::StatusCode;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream client (malformed request, limits).
    Client,
    /// The upstream backend (refused, reset, slow, unhealthy).
    Backend,
    /// lbd itself (config: no route, no capacity).
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
            Side::Internal => "internal",
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Request framing that invites smuggling (CL+TE, bad CL, `chunked` twice).
    BadRequest,
    /// A request path lbd will not normalise: a malformed `%` escape, or `%2F` with
    /// `paths.encoded_slash = "reject"`.
    BadPath,
    /// Request target longer than `limits.max_request_line`.
    UriTooLong,
    /// Headers larger than `limits.max_header_bytes`.
    HeadersTooLarge,
    /// No route matched and there is no default pool.
    NoRoute,
    /// Every backend of the pool is down or ejected.
    NoHealthyBackend,
    /// Every backend is at `max_conns` and the queue is full.
    QueueFull,
    /// Waited in the queue longer than `queue_timeout_ms`.
    QueueTimeout,
    /// TCP connect (or HTTP handshake) to the backend failed.
    Connect,
    /// TCP connect did not finish within `timeouts.connect_ms`.
    ConnectTimeout,
    /// The backend closed or reset the connection before answering, or sent garbage.
    BackendIo,
    /// No response head within `timeouts.backend_response_ms`.
    ResponseTimeout,
    /// Reading the client's request body failed (it ended early, timed out, or its chunked
    /// framing was malformed).
    ClientBody,
    /// The request uses a transfer coding lbd does not implement (`gzip, chunked`):
    /// RFC 9112 §6.1's 501.
    NotImplemented,
    /// The request body is larger than the route's `max_request_body_bytes`.
    BodyTooLarge,
    /// A gRPC request routed to a pool that speaks HTTP/1.1 (gRPC needs HTTP/2 to the
    /// backend: trailers, streams both ways). A config mismatch, so lbd's side.
    GrpcNeedsH2,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::BadRequest,
        ErrorKind::BadPath,
        ErrorKind::UriTooLong,
        ErrorKind::HeadersTooLarge,
        ErrorKind::NoRoute,
        ErrorKind::NoHealthyBackend,
        ErrorKind::QueueFull,
        ErrorKind::QueueTimeout,
        ErrorKind::Connect,
        ErrorKind::ConnectTimeout,
        ErrorKind::BackendIo,
        ErrorKind::ResponseTimeout,
        ErrorKind::ClientBody,
        ErrorKind::NotImplemented,
        ErrorKind::BodyTooLarge,
        ErrorKind::GrpcNeedsH2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BadPath => "bad_path",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::NoHealthyBackend => "no_healthy_backend",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::QueueTimeout => "queue_timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::BackendIo => "backend_io",
            ErrorKind::ResponseTimeout => "response_timeout",
            ErrorKind::ClientBody => "client_body",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::GrpcNeedsH2 => "grpc_needs_h2_pool",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn side(self) -> Side {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::BadPath
            | ErrorKind::UriTooLong
            | ErrorKind::HeadersTooLarge
            | ErrorKind::ClientBody
            | ErrorKind::NotImplemented
            | ErrorKind::BodyTooLarge => Side::Client,
            ErrorKind::NoRoute
            | ErrorKind::QueueFull
            | ErrorKind::QueueTimeout
            | ErrorKind::GrpcNeedsH2 => Side::Internal,
            ErrorKind::NoHealthyBackend
            | ErrorKind::Connect
            | ErrorKind::ConnectTimeout
            | ErrorKind::BackendIo
            | ErrorKind::ResponseTimeout => Side::Backend,
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest | ErrorKind::BadPath | ErrorKind::ClientBody => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::NoHealthyBackend | ErrorKind::QueueFull | ErrorKind::QueueTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Connect | ErrorKind::BackendIo | ErrorKind::GrpcNeedsH2 => {
                StatusCode::BAD_GATEWAY
            }
            ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short body sent to the client.
    pub fn body(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "400 bad request\n",
            ErrorKind::BadPath => "400 bad request path\n",
            ErrorKind::ClientBody => "400 bad request body\n",
            ErrorKind::NotImplemented => "501 transfer coding not implemented\n",
            ErrorKind::UriTooLong => "414 request-target too long\n",
            ErrorKind::BodyTooLarge => "413 request body too large\n",
            ErrorKind::HeadersTooLarge => "431 request header fields too large\n",
            ErrorKind::NoRoute => "404 no route\n",
            ErrorKind::NoHealthyBackend => "503 no healthy backend\n",
            ErrorKind::QueueFull => "503 backend queue full\n",
            ErrorKind::QueueTimeout => "503 backend queue timeout\n",
            ErrorKind::Connect | ErrorKind::BackendIo => "502 bad gateway\n",
            ErrorKind::ConnectTimeout | ErrorKind::ResponseTimeout => "504 gateway timeout\n",
            ErrorKind::GrpcNeedsH2 => "502 gRPC needs a pool with protocol = \"h2\"\n",
        }
    }
}

/// A failed request: kind, side and the underlying cause. Whether it may be sent again is
/// decided by the request's attempts (`l7::attempts`), from how it failed.
#[derive(Debug, thiserror::Error)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub side: Side,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} side)", self.kind.as_str(), self.side.as_str())?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl ProxyError {
    pub fn new(kind: ErrorKind) -> Self {
        ProxyError {
            kind,
            side: kind.side(),
            source: None,
        }
    }

    pub fn with_source(mut self, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(e.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_status_and_side() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "ALL is in declaration order");
            assert!(k.body().starts_with(k.status().as_str()), "{k:?}");
        }
        assert_eq!(
            ErrorKind::QueueFull.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorKind::Connect.side(), Side::Backend);
        let e = ProxyError::new(ErrorKind::Connect).with_source(std::io::Error::other("refused"));
        assert_eq!(e.to_string(), "connect (backend side): refused");
    }
}
