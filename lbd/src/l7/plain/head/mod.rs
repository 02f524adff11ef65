//! Pure HTTP/1 head handling for the fast path: which requests it takes, the request as the
//! proxy's shared code wants it (`Method`, `HeaderMap`), the response head's framing
//! (RFC 9112 §6.3), and writers for the heads that go out.
//!
//! The request side builds a `HeaderMap` (zero-copy: names and values are slices of the head
//! buffer) because the router, rate limiter, sticky pins, balancer and header hygiene all
//! take one. The response side never does: its head is filtered line by line straight into
//! the client's write buffer, which is where hyper spent most of its per-response time.
//!
//! - [`request`]: which requests the fast path takes, parsed into what the shared code wants;
//!   the upstream request head.
//! - [`response`]: a backend response head's framing and its rewrite for the client; local
//!   answers.

use std::mem::MaybeUninit;

mod request;
mod response;

pub use request::{parse_request, write_request_head, Parsed, RequestHead};
pub use response::{
    parse_response, write_local_response, BadResponse, Framing, ResponseEdits, ResponseHead,
};

/// Header lines per head, as hyper's default; more goes to hyper (request: 431) or is a bad
/// response.
pub const MAX_HEADERS: usize = 100;

/// Header slots for httparse, left uninitialised: httparse writes only the ones it fills, so
/// the 3.2 KB of 100 empty headers is not zeroed for every head.
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A `Content-Length` value: digits only (RFC 9110 §8.6), no overflow.
pub(super) fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The comma-separated tokens of a list header, trimmed, empty ones skipped.
pub(super) fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}
pub(super) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
