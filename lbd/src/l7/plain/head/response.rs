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
    let (mut length, mut te_chunked, mut has_te, mut has_date) = (None::<u64>, false, false, false);
    let (mut said_close, mut said_keep_alive) = (false, false);
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
                said_close |= t.eq_ignore_ascii_case(b"close");
                said_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"date") {
            has_date = true;
        }
    }
    // RFC 9112 §9.3: `close` always wins; HTTP/1.0 persists only when asked to.
    let close = said_close || (!version_11 && !said_keep_alive);
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

/// Headers a `Connection` option cannot remove from a relayed response.
const END_TO_END: [&[u8]; 3] = [b"content-length", b"transfer-encoding", b"date"];

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
    /// The route's `Strict-Transport-Security` (HTTPS clients only): it replaces the
    /// backend's, as on the hyper path.
    pub hsts: Option<&'a HeaderValue>,
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
        // The message's framing and its Date are end to end whatever `Connection` says:
        // the body is relayed as framed, so dropping them would leave the client unable to
        // find its end.
        let named: Vec<&[u8]> = self
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| tokens(h.value))
            .filter(|t| !END_TO_END.iter().any(|e| t.eq_ignore_ascii_case(e)))
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
            if edits.hsts.is_some() && name.eq_ignore_ascii_case(b"strict-transport-security") {
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
        if let Some(hsts) = edits.hsts {
            write_field(out, b"strict-transport-security", hsts.as_bytes());
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
mod tests;
