//! Stage 2 for `[http2]`: the limits every downstream HTTP/2 connection (h2c, and HTTP/2
//! over TLS) gets.

use serde::Deserialize;
use shared::config::Validator;

/// `[http2]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHttp2 {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_bytes: Option<u32>,
    pub initial_connection_window_bytes: Option<u32>,
    pub max_pending_reset_streams: Option<u32>,
    pub max_local_error_reset_streams: Option<u32>,
    pub max_resets_per_second: Option<u32>,
}

/// Downstream HTTP/2 limits (see doc/lbd.md, `[http2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Config {
    /// Streams a client may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Flow-control windows a client may fill before lbd reads on.
    pub initial_stream_window: u32,
    pub initial_connection_window: u32,
    /// Streams the client reset before lbd took them up, per connection, before the
    /// connection is closed with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
    pub max_pending_reset_streams: u32,
    /// Streams lbd had to reset for the client's protocol errors, per connection, before the
    /// connection is closed.
    pub max_local_error_reset_streams: u32,
    /// RST_STREAM frames a client may send per connection: a burst of this many, refilled at
    /// this many per second; one more ends the connection with GOAWAY ENHANCE_YOUR_CALM
    /// (lbd's own count, `l7::h2guard`).
    pub max_resets_per_second: u32,
}

/// The largest flow-control window HTTP/2 allows (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

pub(super) fn validate_http2(v: &mut Validator<'_>, f: &FileHttp2) -> Http2Config {
    let mut get = |key: &str, value: Option<u32>, default: u32, min: u32, max: u32| {
        let n = value.unwrap_or(default);
        if v.check_range(format!("http2.{key}"), n, min, max) {
            n
        } else {
            default
        }
    };
    Http2Config {
        max_concurrent_streams: get(
            "max_concurrent_streams",
            f.max_concurrent_streams,
            100,
            1,
            10_000,
        ),
        initial_stream_window: get(
            "initial_stream_window_bytes",
            f.initial_stream_window_bytes,
            1 << 20,
            65_535,
            MAX_WINDOW,
        ),
        initial_connection_window: get(
            "initial_connection_window_bytes",
            f.initial_connection_window_bytes,
            1 << 20,
            65_535,
            MAX_WINDOW,
        ),
        max_pending_reset_streams: get(
            "max_pending_reset_streams",
            f.max_pending_reset_streams,
            20,
            1,
            10_000,
        ),
        max_local_error_reset_streams: get(
            "max_local_error_reset_streams",
            f.max_local_error_reset_streams,
            1024,
            1,
            100_000,
        ),
        max_resets_per_second: get(
            "max_resets_per_second",
            f.max_resets_per_second,
            200,
            1,
            100_000,
        ),
    }
}
