//! L7 (HTTP) request handling.
//!
//! - [`framing`] follows HTTP/1 request framing on the client's bytes to catch what hyper
//!   hides (Content-Length with Transfer-Encoding, duplicate Content-Length) (sans-IO + wrapper).
//! - [`router`] ordered host/path/header/method rules mapping a request to a backend pool.
//! - [`proxy`]   the hyper service: route, pick, forward, retry, tunnel (runtime side).
//! - [`headers`] hop-by-hop stripping and forwarding headers (pure).
//! - [`retry`]   retry budget and idempotency rules (pure).

pub mod framing;
pub mod headers;
pub mod proxy;
pub mod retry;
pub mod router;
