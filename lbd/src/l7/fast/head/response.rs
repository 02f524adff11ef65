//! The response side: a backend head's framing (RFC 9112 §6.3), its rewrite for the client
//! (filtered line by line, never through a `HeaderMap`), and the responses lbd answers itself.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

#[cfg(test)]
use super::header_slots;
use super::{parse_length, tokens, write_field, HeaderSlots};

/// Hop-by-hop response headers (RFC 9110 §7.6.1); `transfer-encoding` is handled with the
/// framing instead, since the body is relayed in its original coding.
const HOP_BY_HOP: [&[u8]; 7] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authenticate",
];
/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 1xx, 204, 304.
    Empty,
    Length(u64),
    /// `Transfer-Encoding` ending in `chunked`: relayed as is, ended by the last chunk.
    Chunked,
    /// No length: the body ends when the backend closes.
    UntilClose,
}

/// Why a backend's response head is refused (the client gets 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadResponse {
    #[error("malformed response head")]
    Malformed,
    #[error("response head too large")]
    TooLarge,
    #[error("invalid or conflicting Content-Length in the response")]
    BadLength,
}

/// A parsed response head; header lines borrow the upstream buffer.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    pub status: u16,
    reason: &'b str,
    pub head_len: usize,
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub reusable: bool,
    headers: &'h [httparse::Header<'b>],
    has_te: bool,
    has_date: bool,
}

/// Parse a response head at the start of `buf` (`Ok(None)`: not complete yet). `max_head`
/// bounds a head still incomplete.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    storage: &'h mut HeaderSlots<'b>,
    request_is_head: bool,
    max_head: usize,
) -> Result<Option<ResponseHead<'h, 'b>>, BadResponse> {
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, storage);
    let head_len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Err(BadResponse::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooLarge),
        Err(_) => return Err(BadResponse::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    if !(100..=999).contains(&status) {
        return Err(BadResponse::Malformed);
    }
    let reason = resp.reason.unwrap_or("");
    let version_11 = resp.version == Some(1);
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    let (mut length, mut te_chunked, mut has_te, mut close, mut has_date) =
        (None::<u64>, false, false, !version_11, false);
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            // Identical repeats (also as a list) are allowed; anything else is an attack.
            for t in tokens(h.value) {
                let n = parse_length(t).ok_or(BadResponse::BadLength)?;
                if length.is_some_and(|l| l != n) {
                    return Err(BadResponse::BadLength);
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_te = true;
            // Only the final coding decides; a later line overrides an earlier one.
            te_chunked = tokens(h.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(h.value) {
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if !version_11 && t.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    let no_body = request_is_head || status < 200 || status == 204 || status == 304;
    let framing = if no_body {
        Framing::Empty
    } else if has_te && te_chunked {
        Framing::Chunked
    } else if has_te {
        Framing::UntilClose
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(ResponseHead {
        status,
        reason,
        head_len,
        framing,
        reusable: !close && framing != Framing::UntilClose,
        headers,
        has_te,
        has_date,
    }))
}

/// What lbd adds to or replaces in a relayed response head.
#[derive(Debug, Default)]
pub struct ResponseEdits<'a> {
    /// Append this `Via` entry to the backend's.
    pub via: Option<&'a HeaderValue>,
    /// The node header.
    pub node: Option<(&'a HeaderName, &'a HeaderValue)>,
    /// Tell the client this connection closes after the response.
    pub close: bool,
    /// Sticky pools: the response's `Set-Cookie` lines as lbd decided them (the backend's,
    /// plus an insert-mode cookie); the backend's own lines are then not copied.
    pub set_cookies: Option<&'a HeaderMap>,
}

impl ResponseHead<'_, '_> {
    /// `Set-Cookie` lines of the response, for a sticky pool's learn mode.
    pub fn set_cookies(&self, into: &mut HeaderMap) {
        for h in self.headers {
            if h.name.eq_ignore_ascii_case("set-cookie") {
                if let Ok(v) = HeaderValue::from_bytes(h.value) {
                    into.append(header::SET_COOKIE, v);
                }
            }
        }
    }

    /// Write the head for the client: the status line, the backend's headers without the
    /// hop-by-hop ones (and those its `Connection` names), then lbd's edits.
    pub fn write_for_client(&self, out: &mut Vec<u8>, edits: &ResponseEdits<'_>) {
        write_status_line(out, self.status, self.reason);
        let named: Vec<&[u8]> = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| tokens(h.value))
            .collect();
        let mut via_prev: Vec<&[u8]> = Vec::new();
        for h in self.headers {
            let name = h.name.as_bytes();
            if HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
                || named.iter().any(|n| name.eq_ignore_ascii_case(n))
            {
                continue;
            }
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The body goes out in the backend's coding, so its coding is named as is.
                if self.framing != Framing::Empty {
                    write_field(out, b"transfer-encoding", h.value);
                }
                continue;
            }
            // With a transfer coding the length is not the message's (RFC 9112 §6.3).
            if self.has_te && name.eq_ignore_ascii_case(b"content-length") {
                continue;
            }
            if edits.via.is_some() && name.eq_ignore_ascii_case(b"via") {
                via_prev.push(h.value);
                continue;
            }
            if edits.set_cookies.is_some() && name.eq_ignore_ascii_case(b"set-cookie") {
                continue;
            }
            write_field(out, name, h.value);
        }
        if let Some(cookies) = edits.set_cookies {
            for v in cookies.get_all(header::SET_COOKIE) {
                write_field(out, b"set-cookie", v.as_bytes());
            }
        }
        if let Some(ours) = edits.via {
            out.extend_from_slice(b"via: ");
            for prev in via_prev {
                out.extend_from_slice(prev);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(ours.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some((name, value)) = edits.node {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        // RFC 9110 §6.6.1: a proxy with a clock adds the Date an origin left out.
        if !self.has_date {
            write_date(out);
        }
        if edits.close || self.framing == Framing::UntilClose {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// `HTTP/1.1 <code> <reason>`: the standard reason when there is one (as hyper writes it),
/// else the backend's.
fn write_status_line(out: &mut Vec<u8>, status: u16, backend_reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut digits = [b'0'; 3];
    let mut n = status;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b' ');
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or(backend_reason);
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A response lbd answers itself (errors, 429): status, `headers`, a text body.
pub fn write_local_response(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    close: bool,
) {
    write_status_line(out, status.as_u16(), "");
    for (name, value) in headers {
        write_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    write_date(out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

thread_local! {
    /// The `date:` line of the current second (formatting it per response is measurable).
    static DATE_LINE: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

fn write_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    DATE_LINE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            cached.1.extend_from_slice(b"date: ");
            cached
                .1
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
            cached.1.extend_from_slice(b"\r\n");
            cached.0 = secs;
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<'h, 'b>(
        s: &'b [u8],
        storage: &'h mut HeaderSlots<'b>,
        head_req: bool,
    ) -> Result<Option<ResponseHead<'h, 'b>>, BadResponse> {
        parse_response(s, storage, head_req, 64 * 1024)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let cases: &[(&str, bool, Framing, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
                false,
                Framing::Length(5),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                false,
                Framing::UntilClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                false,
                Framing::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                false,
                Framing::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                false,
                Framing::Length(0),
                true,
            ),
        ];
        for &(s, head_req, framing, reusable) in cases {
            let mut st = header_slots();
            let r = parse(s.as_bytes(), &mut st, head_req)
                .expect("valid")
                .expect("complete");
            assert_eq!((r.framing, r.reusable), (framing, reusable), "{s:?}");
            assert_eq!(r.head_len, s.len());
        }
    }

    #[test]
    fn bad_responses_are_refused() {
        for (s, want) in [
            ("HTTP/1.1 abc\r\n\r\n", BadResponse::Malformed),
            ("garbage\r\n\r\n", BadResponse::Malformed),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                BadResponse::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                BadResponse::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                BadResponse::BadLength,
            ),
        ] {
            let mut st = header_slots();
            assert_eq!(
                parse(s.as_bytes(), &mut st, false).err(),
                Some(want),
                "{s:?}"
            );
        }
        let mut st = header_slots();
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(100));
        assert_eq!(
            parse_response(long.as_bytes(), &mut st, false, 64).err(),
            Some(BadResponse::TooLarge)
        );
        let mut st = header_slots();
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nX: 1\r\n", &mut st, false),
            Ok(None)
        ));
    }

    #[test]
    fn the_client_head_drops_hop_by_hop_and_adds_lbds_edits() {
        let s = b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nVia: 1.0 a\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\nSet-Cookie: s=1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Keep: yes\r\n\r\n";
        let mut st = header_slots();
        let r = parse(s, &mut st, false).expect("valid").expect("complete");
        let via = HeaderValue::from_static("1.1 lbd");
        let node = (
            HeaderName::from_static("x-node"),
            HeaderValue::from_static("a"),
        );
        let mut out = Vec::new();
        r.write_for_client(
            &mut out,
            &ResponseEdits {
                via: Some(&via),
                node: Some((&node.0, &node.1)),
                close: true,
                set_cookies: None,
            },
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nSet-Cookie: s=1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nX-Keep: yes\r\nvia: 1.0 a, 1.1 lbd\r\nx-node: a\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn sticky_set_cookies_replace_the_backends_and_a_missing_date_is_added() {
        let s = b"HTTP/1.1 404 Whatever\r\nSet-Cookie: a=1\r\nContent-Length: 0\r\n\r\n";
        let mut st = header_slots();
        let r = parse(s, &mut st, false).expect("valid").expect("complete");
        let mut cookies = HeaderMap::new();
        r.set_cookies(&mut cookies);
        cookies.append(header::SET_COOKIE, HeaderValue::from_static("lbd=x"));
        let mut out = Vec::new();
        r.write_for_client(
            &mut out,
            &ResponseEdits {
                set_cookies: Some(&cookies),
                ..Default::default()
            },
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nset-cookie: a=1\r\nset-cookie: lbd=x\r\ndate: "), "{text}");
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    }

    #[test]
    fn local_responses_are_complete_messages() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_local_response(
            &mut out,
            StatusCode::TOO_MANY_REQUESTS,
            &h,
            b"slow down\n",
            true,
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\ncontent-type: text/plain\r\ncontent-length: 10\r\ndate: "), "{text}");
        assert!(
            text.ends_with("connection: close\r\n\r\nslow down\n"),
            "{text}"
        );
    }
}
