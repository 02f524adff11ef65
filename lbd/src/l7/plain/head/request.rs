//! The request side: which heads the fast path takes, and the upstream request head.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::Method;

use super::{header_slots, parse_length, tokens, write_field, MAX_HEADERS};

/// Request headers the fast path leaves to hyper: each changes the request's framing or the
/// connection's protocol.
const FALLBACK_HEADERS: [&[u8]; 3] = [b"transfer-encoding", b"expect", b"upgrade"];
/// A request the fast path serves.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    /// The request-target in origin form (path and query), validated as a URI.
    pub target: PathAndQuery,
    pub headers: HeaderMap,
    /// The body's length (0 without `Content-Length`).
    pub content_length: usize,
    /// `Connection: close`: answer, then close.
    pub close: bool,
    /// Bytes of the head (request line and headers).
    pub head_len: usize,
    /// The head as the client sent it (shared with `headers`' values: no copy), for a
    /// hand-off to hyper after the head was taken.
    pub raw: Bytes,
}

/// The outcome of looking at the start of the client's buffer.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request the fast path serves; its head has been taken off the buffer.
    Fast(Box<RequestHead>),
    /// A request for hyper; the buffer is untouched. The reason is for the debug log.
    Fallback(&'static str),
    /// The head was taken off the buffer but is not a valid request (answer 400 and close).
    Bad(&'static str),
}

/// Parse the head at the start of `buf`. Only a [`Parsed::Fast`] or [`Parsed::Bad`] consumes
/// bytes (the head; the body stays in `buf`).
pub fn parse_request(buf: &mut BytesMut, max_body: usize) -> Parsed {
    // (name start, name len, value start, value len) of each header line.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let mut count = 0;
    let (method, target_span, head_len, content_length, close) = {
        let mut storage = header_slots();
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Fallback("head httparse rejects"),
        };
        if req.version != Some(1) {
            return Parsed::Fallback("not HTTP/1.1");
        }
        let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
            Some(Ok(m)) if m != Method::CONNECT => m,
            _ => return Parsed::Fallback("CONNECT or an odd method"),
        };
        let path = req.path.unwrap_or("");
        if !path.starts_with('/') {
            return Parsed::Fallback("target not in origin form");
        }
        let base = buf.as_ptr() as usize;
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        let (mut hosts, mut lengths, mut content_length, mut close) = (0, 0, 0usize, false);
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case(b"content-length") {
                lengths += 1;
                match parse_length(h.value) {
                    Some(n) if n <= max_body as u64 => content_length = n as usize,
                    _ => return Parsed::Fallback("Content-Length too large or not a number"),
                }
            } else if FALLBACK_HEADERS
                .iter()
                .any(|f| name.eq_ignore_ascii_case(f))
            {
                return Parsed::Fallback("framing or protocol header");
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Fallback("upgrade");
                    }
                }
            }
            spans[count] = (
                offset(name),
                name.len() as u32,
                offset(h.value),
                h.value.len() as u32,
            );
            count += 1;
        }
        // hyper answers both of these (400), and the framing tracker a duplicate length.
        if hosts != 1 || lengths > 1 {
            return Parsed::Fallback("not exactly one Host, or several Content-Length");
        }
        let target_span = (offset(path.as_bytes()) as usize, path.len());
        (method, target_span, head_len, content_length, close)
    };
    let head = buf.split_to(head_len).freeze();
    let target = head.slice(target_span.0..target_span.0 + target_span.1);
    let Ok(target) = PathAndQuery::from_maybe_shared(target) else {
        return Parsed::Bad("invalid request-target");
    };
    let mut headers = HeaderMap::with_capacity(count + 4);
    for &(ns, nl, vs, vl) in &spans[..count] {
        let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
        let Ok(name) = HeaderName::from_bytes(&head[ns..ns + nl]) else {
            return Parsed::Bad("invalid header name");
        };
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl)) else {
            return Parsed::Bad("invalid header value");
        };
        headers.append(name, value);
    }
    Parsed::Fast(Box::new(RequestHead {
        method,
        target,
        headers,
        content_length,
        close,
        head_len,
        raw: head,
    }))
}
/// Write the upstream request head: the request line in origin form, then every header.
pub fn write_request_head(out: &mut Vec<u8>, method: &Method, target: &str, headers: &HeaderMap) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
