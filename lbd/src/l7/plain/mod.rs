//! The plain path: lbd's own engine for plain keep-alive HTTP/1.1 requests, the common case.
//! Operators know it as the *fast path* (`global.http1_fast_path`, the
//! `lbd_http1_fast_path_*` metrics), names that stay; the module is named for the requests it
//! takes, next to [`super::general`], which takes every other one.
//!
//! Why: behind hyper, a proxied request crossed two dispatchers (hyper's server and client
//! connections), a channel and a task hop to the upstream connection's task, and two
//! `HeaderMap` encodings; that cost lbd ~6 µs of user CPU per request, more than HAProxy and
//! nginx spend in all (BENCHMARKS.md). Here one task per client connection reads the head
//! with httparse, writes the rewritten head straight into the upstream buffer, drives a
//! pooled upstream socket itself and relays the response bytes as they are.
//!
//! What it takes, from plain and TLS (HTTPS/1.1) clients alike: HTTP/1.1 requests in
//! origin form with one `Host`, no `Transfer-Encoding`, no `Expect`, no upgrade, at most one
//! `Content-Length` up to [`MAX_BODY`] (the body is buffered, so a retry can replay it),
//! routed to a pool without `[pool.tls]` (the fast path speaks plain TCP upstream). The
//! first request that is anything else hands the connection, with the bytes already read,
//! to hyper for the rest of its life ([`conn::Served::Fallback`]); hyper and the framing
//! tracker then answer it exactly as they answer every request when
//! `global.http1_fast_path = false`.
//!
//! Everything the hyper path does per request happens here too, through the same code:
//! routing, limits (414/431, and 413 for a body over the route's `max_request_body_bytes`,
//! checked once the buffered body is routed), rate limits, sticky pins, balancing and the `max_conns` queue,
//! retries and the retry budget, passive health, forwarding headers and hop-by-hop
//! stripping, the node header, `Connection: close` while a VIP listener drains, metrics and
//! the access log (the [`super::body`] `Finish`).
//!
//! Layout:
//! - [`conn`]     the client connection loop: head reads under the header/idle deadline,
//!   graceful close, the hand-off to hyper.
//! - [`client_io`] the client transports the loop serves: a plain socket, or a TLS stream
//!   after its handshake (what differs: waiting for input, parking, flushing).
//! - [`exchange`] one request: route, limit, pick, send, retry, answer.
//! - [`relay`]    the upstream side: write the request, read the response head, relay the
//!   body (Content-Length, chunked or close-delimited) to the client.
//! - [`head`]     pure: request eligibility and parsing, response head parsing and framing,
//!   head writers.
//! - [`chunked`]  pure: where a chunked body ends, without decoding it.
//! - [`prefixed`] an IO wrapper that replays buffered bytes to hyper after a hand-off.

pub mod chunked;
pub mod client_io;
pub mod conn;
mod exchange;
pub mod head;
pub mod prefixed;
mod relay;

/// Largest request body the fast path buffers; a larger one goes to hyper, which streams it.
pub const MAX_BODY: usize = 64 * 1024;
