//! L7 (HTTP) request handling.
//!
//! - [`framing`] follows HTTP/1 request framing on the client's bytes to catch what hyper
//!   hides (Content-Length with Transfer-Encoding, duplicate Content-Length) (sans-IO + wrapper).
//! - [`router`] ordered host/path/header/method rules mapping a request to a backend pool.
//! - [`plain`]   the plain path: lbd's own HTTP/1 engine for plain keep-alive requests, the
//!   common case (the "fast path" of `global.http1_fast_path`); hands anything else to hyper.
//! - [`dispatch`] the request steps both HTTP paths share: route and rate-limit, pick and
//!   queue, retry, passive health, local-answer accounting.
//! - [`general`] the general path: hyper's service for every other request (h2/h2c, upgrades
//!   and WebSocket, TLS, TLS or h2 pools, odd framing): route, pick, forward, retry, tunnel.
//! - [`ctx`]     [`ctx::ProxyCtx`], what both paths read besides the request.
//! - [`client`]  a client connection as both paths see it ([`client::ConnCtx`]) and what it
//!   holds while open.
//! - [`body`]    the response body handed to hyper, and what runs when it ends (pool the
//!   connection, release the backend and the gate, count, access log).
//! - [`request_body`] a client's streamed request body on its way to the backend, capped
//!   at the route's `max_request_body_bytes`.
//! - [`grpc`]    recognising gRPC requests, `te: trailers` towards HTTP/2 backends, the refusal
//!   of gRPC to an HTTP/1.1 pool (pure).
//! - [`headers`] hop-by-hop stripping, forwarding headers and the real client address (pure).
//! - [`path`]    request path normalisation before routing (pure).
//! - [`syntax`]  HTTP syntax rules config validation and the request path share (pure).
//! - [`attempts`] one request's attempts at a backend: what a failed connect or send means
//!   (resend after the keep-alive race, retry elsewhere, or fail), the one policy both HTTP
//!   paths drive (pure).
//! - [`retry`]   retry budget and idempotency rules (pure).
//! - [`sticky`]  sticky sessions: the signed insert-mode cookie, the learn-mode cookie and
//!   the per-pool precomputed state (pure; the learn table is [`crate::softstate`]).
//! - [`timer`]   one lazily re-armed timer for a series of deadlines (a connection's, a
//!   body's).
//! - [`ratelimit`] which `[[rate_limit]]` tables apply to a request and its key for each; the
//!   buckets are [`crate::softstate`].

pub mod attempts;
pub mod body;
pub mod client;
pub mod ctx;
pub mod dispatch;
pub mod framing;
pub mod general;
pub mod grpc;
pub mod h2guard;
pub mod headers;
pub mod path;
pub mod plain;
pub mod ratelimit;
pub mod request_body;
pub mod retry;
pub mod router;
pub mod sticky;
pub mod syntax;
pub mod timer;
