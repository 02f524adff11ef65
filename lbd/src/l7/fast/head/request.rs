//! The request side: which heads the fast path takes, and the upstream request head.

use bytes::BytesMut;
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
mod tests {
    use super::*;

    fn bytes_of(s: &str) -> BytesMut {
        BytesMut::from(s.as_bytes())
    }

    fn fast(s: &str) -> (Box<RequestHead>, BytesMut) {
        let mut b = bytes_of(s);
        match parse_request(&mut b, 1024) {
            Parsed::Fast(r) => (r, b),
            other => panic!("expected the fast path for {s:?}, got {other:?}"),
        }
    }

    fn fallback(s: &str) -> &'static str {
        let mut b = bytes_of(s);
        let before = b.len();
        match parse_request(&mut b, 1024) {
            Parsed::Fallback(why) => {
                assert_eq!(b.len(), before, "a fallback must not consume bytes");
                why
            }
            other => panic!("expected a fallback for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn a_plain_request_is_parsed_and_its_head_taken_off_the_buffer() {
        let (r, rest) = fast(
            "POST /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabcGET",
        );
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.target.as_str(), "/a/b?x=1");
        assert_eq!(r.target.path(), "/a/b");
        assert_eq!(r.content_length, 3);
        assert!(!r.close);
        assert_eq!(
            r.headers.get("host").map(|v| v.as_bytes()),
            Some(&b"example.com"[..])
        );
        assert_eq!(r.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(&rest[..], b"abcGET", "the body and what follows stay");
    }

    #[test]
    fn connection_close_is_noticed() {
        let (r, _) = fast("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(r.close);
    }

    #[test]
    fn a_partial_head_waits() {
        let mut b = bytes_of("GET / HTTP/1.1\r\nHost: a\r\n");
        assert!(matches!(parse_request(&mut b, 1024), Parsed::Partial));
    }

    #[test]
    fn everything_unusual_goes_to_hyper_untouched() {
        for s in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2048\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            "\x01\x02garbage\r\n\r\n",
        ] {
            fallback(s);
        }
    }

    #[test]
    fn upstream_head_is_origin_form_with_every_header() {
        let (r, _) = fast("GET /p?q HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n");
        let mut out = Vec::new();
        write_request_head(&mut out, &r.method, r.target.as_str(), &r.headers);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "GET /p?q HTTP/1.1\r\nhost: a\r\naccept: */*\r\n\r\n"
        );
    }
}
