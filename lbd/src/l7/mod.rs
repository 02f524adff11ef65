//! L7 (HTTP) request handling.
//!
//! - [`router`] ordered host/path/header/method rules mapping a request to a backend pool.
//! - [`proxy`]   the hyper service: route, pick, forward, retry, tunnel (runtime side).
//! - [`headers`] hop-by-hop stripping and forwarding headers (pure).
//! - [`retry`]   retry budget and idempotency rules (pure).

pub mod headers;
pub mod proxy;
pub mod retry;
pub mod router;
