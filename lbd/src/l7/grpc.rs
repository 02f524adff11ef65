//! What the proxy needs to know about gRPC requests (gRPC over HTTP/2, PROTOCOL-HTTP2.md).
//!
//! lbd does not look inside gRPC messages: a gRPC call is an HTTP/2 POST whose body
//! streams in both directions and whose status comes in the response's trailers
//! (`grpc-status`, `grpc-message`). It passes through a pool with `protocol = "h2"` like any
//! request, bodies streamed and trailers kept. Two things are gRPC's own:
//! - `te: trailers` (required by gRPC servers) is a hop-by-hop header lbd strips; towards an
//!   HTTP/2 backend it is put back when the client sent it (RFC 9113 §8.2.2 allows exactly
//!   that value).
//! - A pool that speaks HTTP/1.1 cannot carry gRPC (no trailers towards it, one request at
//!   a time): such a request is refused with 502 and `grpc-status: 14` (UNAVAILABLE) in the
//!   headers, a "trailers-only" gRPC answer, so gRPC clients see UNAVAILABLE with lbd's
//!   reason, and anything else sees a gateway error (HTTP 502, which gRPC's HTTP-status
//!   mapping also turns into UNAVAILABLE).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `grpc-status` and `grpc-message`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC's UNAVAILABLE status code.
pub const UNAVAILABLE: &str = "14";

/// Is this a gRPC request (`content-type: application/grpc`, or `application/grpc+proto`
/// and the like)?
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.trim_start();
            ct.len() >= 16
                && ct[..16].eq_ignore_ascii_case("application/grpc")
                && matches!(ct.as_bytes().get(16), None | Some(b'+' | b';'))
        })
}

/// Does the request carry `te: trailers` (the only `TE` HTTP/2 allows)?
pub fn asks_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            })
        })
    })
}

/// The gRPC status headers of lbd's refusal of a gRPC request to an HTTP/1.1 pool.
pub fn refusal_headers(h: &mut HeaderMap) {
    h.insert(GRPC_STATUS, HeaderValue::from_static(UNAVAILABLE));
    h.insert(
        GRPC_MESSAGE,
        // Percent-encoded as gRPC requires (spaces and '"' are outside its unreserved set).
        HeaderValue::from_static(
            "lbd%3A%20the%20pool%20speaks%20HTTP%2F1.1%3B%20gRPC%20needs%20protocol%20%3D%20%22h2%22",
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        for ct in ["application/grpc-web", "application/json", "text/plain"] {
            assert!(!is_grpc(&headers(&[("content-type", ct)])), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        assert!(asks_trailers(&headers(&[("te", "trailers")])));
        assert!(asks_trailers(&headers(&[("te", "gzip, Trailers")])));
        assert!(!asks_trailers(&headers(&[("te", "gzip")])));
        assert!(!asks_trailers(&HeaderMap::new()));
    }
}
