//! Request framing that hyper accepts but lbd must refuse (RFC 9112 §6.3).
//!
//! hyper's HTTP/1 server hides things the proxy needs to refuse: with both
//! `Content-Length` and `Transfer-Encoding` it silently drops `Content-Length` (either header
//! order) and reads the body as chunked; with several *identical* `Content-Length` lines it
//! keeps one; it reads `gzip, chunked` or `chunked, chunked` as plain chunked (so the other
//! codings would be dropped on the way upstream). The service only sees the cleaned-up head,
//! so the evidence has to be taken from the bytes themselves.
//!
//! A malformed chunk line (`0x5`, `-1`, a size over 64 bits, a bare LF, …) fails hyper's
//! body stream; the tracker records it too ([`Suspect::MalformedChunkedBody`]), so a request
//! whose bad chunk line arrived with its head is answered 400 before anything goes upstream.
//! One that arrives later surfaces as the body stream's error while the request is being
//! sent, which the proxy also answers 400 (client side).
//!
//! [`FramingIo`] wraps the accepted client stream (plain TCP now, TLS later: it is generic
//! over the inner stream) and shows every byte hyper reads to a [`FramingTracker`], a sans-IO
//! state machine that follows HTTP/1 message framing exactly as hyper does:
//!
//! ```text
//!   Head ──head complete──▶ Content-Length n > 0 ──n bytes──▶ Head
//!    │  ▲                 ▶ chunked ──size line, data, CRLF … last chunk, trailers, CRLF──▶ Head
//!    │  └─────────────────  neither (no body) ─────────────────────────────────────────────┘
//!    └──malformed / too large / CONNECT──▶ Stopped (pass-through)
//! ```
//!
//! Each complete head gets a sequence number; a head with suspicious framing is recorded in
//! the connection's [`FramingVerdicts`], which the service asks once per request, in order
//! ([`FramingVerdicts::next_request`]). A pipelining client can send several heads before the
//! service sees the first, hence sequence numbers rather than a single flag.
//!
//! Design constraints and why:
//! - **Observe, never copy the payload.** The tracker looks at the bytes in the caller's read
//!   buffer after the inner read; body bytes are skipped by count. Only a head split across
//!   reads is copied (into one per-connection buffer, bounded by hyper's head limit), so the
//!   common case (a head arriving in one read) allocates nothing.
//! - **Same parser as hyper.** Heads are parsed with `httparse` and the default
//!   `ParserConfig`, exactly what hyper uses, and the chunked machine mirrors hyper's decoder
//!   (CRLF required, `;` extensions, trailers). Staying in step with hyper is what makes the
//!   sequence numbers line up with the requests the service sees.
//! - **Fail open into hyper's own checks.** On anything the tracker does not understand
//!   (malformed head or chunk line, a head over the limit, a CONNECT tunnel, tunnel bytes after
//!   a WebSocket upgrade) it stops tracking and lets bytes pass (a malformed chunk line is
//!   flagged first). Malformed framing is rejected
//!   by hyper itself, which then closes the connection, so no later request can be
//!   mis-attributed.
//! - **HTTP/1 only.** HTTP/2 has no such framing; the listener sniffs the h2 preface and does
//!   not wrap those connections.
//!
//! An `Upgrade` request does not stop tracking: its body is followed as usual and the next
//! bytes must look like a request head. After a `101` they are tunnel bytes (a WebSocket
//! frame starts with a byte no method can start with) and tracking stops; after a refused
//! upgrade (curl's `Upgrade: h2c` answered with 200) the connection stays HTTP/1 and stays
//! checked.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::debug;

use crate::l7::syntax::hex_digit;

/// hyper's default limit on header lines; more is a 431 from hyper, and a stop here.
const MAX_HEADERS: usize = 100;

/// Flagged heads kept for the service. The first flagged request is answered with
/// `Connection: close`, so later entries never matter; the bound only caps memory when the
/// "heads" are really tunnel bytes nobody asks about.
const MAX_FLAGGED: usize = 8;

/// Why a request is refused although hyper would accept it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3 item 3): the classic
    /// CL.TE / TE.CL smuggling vector.
    ContentLengthWithTransferEncoding,
    /// More than one `Content-Length` line (hyper keeps one when they are equal).
    DuplicateContentLength,
    /// `chunked` more than once in `Transfer-Encoding` (RFC 9112 §6.1 forbids applying it
    /// twice; hyper decodes it once and would forward the rest as the content).
    ChunkedTwice,
    /// A transfer coding other than `chunked` before the final `chunked` (`gzip, chunked`):
    /// lbd implements no other transfer coding, and hyper would drop it on the way upstream,
    /// so it is refused (501, RFC 9112 §6.1) rather than forwarded with a coding missing.
    UnsupportedTransferCoding,
    /// The chunked body has a malformed chunk line (`0x1`, `-1`, a size over 64 bits,
    /// whitespace before the size, a bare LF, a non-hex digit). hyper fails the body stream
    /// on it; this verdict lets the service answer 400 before anything went upstream when the
    /// bad line arrived with the head.
    MalformedChunkedBody,
}

impl Suspect {
    pub fn as_str(self) -> &'static str {
        match self {
            Suspect::ContentLengthWithTransferEncoding => {
                "request has both Content-Length and Transfer-Encoding"
            }
            Suspect::DuplicateContentLength => "request has more than one Content-Length",
            Suspect::ChunkedTwice => "request Transfer-Encoding lists chunked more than once",
            Suspect::UnsupportedTransferCoding => {
                "request Transfer-Encoding has a coding other than chunked"
            }
            Suspect::MalformedChunkedBody => "request has a malformed chunked body",
        }
    }
}

/// One complete request head as the tracker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// 0 for the connection's first request, then 1, 2, …
    pub seq: u64,
    pub suspect: Option<Suspect>,
}

/// Per-connection verdicts: written by [`FramingIo`], read by the service.
///
/// The common case costs the service one uncontended `fetch_add` and one load; the mutex is
/// only taken when some head was flagged.
#[derive(Debug, Default)]
pub struct FramingVerdicts {
    /// Requests the service has asked about: the sequence number of the next one.
    taken: AtomicU64,
    /// `flagged.len()`, readable without the lock.
    pending: AtomicUsize,
    flagged: Mutex<VecDeque<(u64, Suspect)>>,
}

impl FramingVerdicts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call exactly once per request, in the order hyper hands requests to the service:
    /// `Some(reason)` when this request must be answered with 400.
    pub fn next_request(&self) -> Option<Suspect> {
        let seq = self.taken.fetch_add(1, Ordering::Relaxed);
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut q = self.flagged.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = None;
        while let Some(&(s, why)) = q.front() {
            if s > seq {
                break;
            }
            q.pop_front();
            if s == seq {
                found = Some(why);
                break;
            }
        }
        self.pending.store(q.len(), Ordering::Release);
        found
    }

    /// Record a flagged head (the tracker's side).
    pub fn flag(&self, seq: u64, why: Suspect) {
        let mut q = self.flagged.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() < MAX_FLAGGED {
            q.push_back((seq, why));
            self.pending.store(q.len(), Ordering::Release);
        }
    }
}

/// Why tracking stopped (for the debug log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A head httparse rejects, or bytes that cannot start a head (tunnel data).
    MalformedHead,
    /// No end of head within the head limit.
    HeadTooLarge,
    /// A framing hyper rejects (bad `Content-Length`, `Transfer-Encoding` not ending in
    /// chunked, `Transfer-Encoding` on HTTP/1.0).
    RejectedFraming,
    /// A malformed chunked body.
    MalformedChunk,
    /// CONNECT: whatever follows is a tunnel.
    Tunnel,
}

/// Position inside a chunked body; mirrors hyper's `ChunkedState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    Size(u64),
    /// Whitespace after the size.
    Lws(u64),
    /// In a `;` extension, until CR.
    Ext(u64),
    /// CR of the size line seen.
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk's size line: CR (end) or a trailer line.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(u64),
    Chunked(Chunk),
    Stopped(StopReason),
}

/// What a complete head says about the body that follows.
enum Body {
    None,
    Length(u64),
    Chunked,
}

enum Parsed {
    Complete(usize, Option<Suspect>, Body),
    Partial,
    Stop(StopReason),
}

/// The sans-IO framing follower of one HTTP/1 connection's incoming bytes.
#[derive(Debug)]
pub struct FramingTracker {
    state: State,
    /// Sequence number of the next head.
    seq: u64,
    /// hyper's head limit (request line + headers), the most that is ever buffered.
    max_head: usize,
    /// A head split across reads, from its first non-blank byte.
    head: Vec<u8>,
    /// End-of-head scan across reads: 1 after `\n`, 2 after `\n\r`, else 0.
    carry: u8,
    /// Leading empty lines (skipped like httparse does): a `\r` waiting for its `\n`.
    blank_cr: bool,
    /// Leading blank bytes of the current head, counted against `max_head` like hyper does.
    blank: usize,
}

impl FramingTracker {
    /// `max_head`: the head size hyper is configured with (`max_header_size`).
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head,
            seq: 0,
            max_head,
            head: Vec::new(),
            carry: 0,
            blank_cr: false,
            blank: 0,
        }
    }

    pub fn is_tracking(&self) -> bool {
        !matches!(self.state, State::Stopped(_))
    }

    pub fn stopped(&self) -> Option<StopReason> {
        match self.state {
            State::Stopped(r) => Some(r),
            _ => None,
        }
    }

    /// Heads completed so far.
    pub fn heads(&self) -> u64 {
        self.seq
    }

    /// The sequence number of the request whose chunked body had a malformed chunk line
    /// (tracking stops there, so there is at most one).
    pub fn malformed_body(&self) -> Option<u64> {
        match self.state {
            // A body always follows its head, so `seq` is at least 1 here.
            State::Stopped(StopReason::MalformedChunk) => self.seq.checked_sub(1),
            _ => None,
        }
    }

    /// Follow `data`, the next bytes read from the client; `on_head` is called for every
    /// complete head, in order.
    pub fn feed(&mut self, data: &[u8], on_head: &mut impl FnMut(Head)) {
        let mut rest = data;
        while !rest.is_empty() {
            let used = match &mut self.state {
                State::Stopped(_) => return,
                State::Head => self.feed_head(rest, on_head),
                State::Length(n) => {
                    let k = usize::try_from(*n).map_or(rest.len(), |n| n.min(rest.len()));
                    *n -= k as u64;
                    if *n == 0 {
                        self.state = State::Head;
                    }
                    k
                }
                State::Chunked(c) => {
                    let (used, end) = feed_chunked(c, rest);
                    match end {
                        ChunkEnd::More => {}
                        ChunkEnd::Done => self.state = State::Head,
                        // Stopped, so `malformed_body` names this body's request.
                        ChunkEnd::Bad => self.state = State::Stopped(StopReason::MalformedChunk),
                    }
                    used
                }
            };
            rest = rest.get(used..).unwrap_or_default();
        }
    }

    fn stop(&mut self, why: StopReason) {
        self.state = State::Stopped(why);
        // Give the memory back: a stopped tracker never buffers again.
        self.head = Vec::new();
    }

    /// Consume head bytes; returns how many of `data` were used.
    fn feed_head(&mut self, data: &[u8], on_head: &mut impl FnMut(Head)) -> usize {
        if !self.head.is_empty() {
            return self.feed_split_head(data, on_head);
        }
        // Leading empty lines: httparse skips them, CR must be followed by LF.
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            if self.blank_cr {
                if b != b'\n' {
                    self.stop(StopReason::MalformedHead);
                    return data.len();
                }
                self.blank_cr = false;
            } else if b == b'\r' {
                self.blank_cr = true;
            } else if b != b'\n' {
                break;
            }
            i += 1;
        }
        self.blank += i;
        if self.blank > self.max_head {
            self.stop(StopReason::HeadTooLarge);
            return data.len();
        }
        let Some(&first) = data.get(i) else {
            return data.len();
        };
        // No method starts with a control or non-ASCII byte: this catches tunnel bytes
        // (a WebSocket frame starts with 0x8X) before buffering anything.
        if !first.is_ascii_graphic() {
            self.stop(StopReason::MalformedHead);
            return data.len();
        }
        let avail = &data[i..];
        match parse_head(avail) {
            // hyper refuses a head over its limit (431) and closes.
            Parsed::Complete(n, ..) if self.blank + n > self.max_head => {
                self.stop(StopReason::HeadTooLarge);
                data.len()
            }
            Parsed::Complete(n, suspect, body) => {
                self.complete(suspect, body, on_head);
                i + n
            }
            Parsed::Partial => {
                if self.blank + avail.len() > self.max_head {
                    self.stop(StopReason::HeadTooLarge);
                } else {
                    // httparse found no error so far, hence no empty line: only the tail
                    // can start the end of the head.
                    self.carry = if avail.ends_with(b"\n") {
                        1
                    } else if avail.ends_with(b"\n\r") {
                        2
                    } else {
                        0
                    };
                    self.head.extend_from_slice(avail);
                }
                data.len()
            }
            Parsed::Stop(why) => {
                self.stop(why);
                data.len()
            }
        }
    }

    /// The rest of a head that started in an earlier read: scan for its end (linear, across
    /// reads), then parse the buffered head once.
    fn feed_split_head(&mut self, data: &[u8], on_head: &mut impl FnMut(Head)) -> usize {
        let end = find_head_end(&mut self.carry, data);
        let take = end.unwrap_or(data.len());
        if self.blank + self.head.len() + take > self.max_head {
            self.stop(StopReason::HeadTooLarge);
            return data.len();
        }
        self.head.extend_from_slice(&data[..take]);
        if end.is_none() {
            return take;
        }
        let parsed = parse_head(&self.head);
        let len = self.head.len();
        // Keep the allocation for the next split head.
        self.head.clear();
        self.carry = 0;
        match parsed {
            // The head starts with a non-blank byte, so its first empty line ends it.
            Parsed::Complete(n, suspect, body) if n == len => {
                self.complete(suspect, body, on_head);
                take
            }
            Parsed::Stop(why) => {
                self.stop(why);
                data.len()
            }
            Parsed::Complete(..) | Parsed::Partial => {
                self.stop(StopReason::MalformedHead);
                data.len()
            }
        }
    }

    fn complete(&mut self, suspect: Option<Suspect>, body: Body, on_head: &mut impl FnMut(Head)) {
        on_head(Head {
            seq: self.seq,
            suspect,
        });
        self.seq += 1;
        self.blank = 0;
        self.state = match body {
            Body::None | Body::Length(0) => State::Head,
            Body::Length(n) => State::Length(n),
            Body::Chunked => State::Chunked(Chunk::Start),
        };
    }
}

/// Parse a head the way hyper's server does and decide its body framing.
fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Stop(StopReason::MalformedHead),
    };
    if req.method == Some("CONNECT") {
        return Parsed::Stop(StopReason::Tunnel);
    }
    let http10 = req.version == Some(0);
    let mut cl_lines = 0u32;
    let mut cl: Option<u64> = None;
    let mut cl_bad = false;
    // hyper decides chunked by the *last* Transfer-Encoding line; lbd also looks at every
    // coding of every line.
    let mut te_chunked: Option<bool> = None;
    let mut codings = Codings::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if name.len() == 14 && name.eq_ignore_ascii_case(b"content-length") {
            cl_lines += 1;
            match (from_digits(h.value), cl) {
                (Some(v), None) => cl = Some(v),
                (Some(v), Some(prev)) if v == prev => {}
                _ => cl_bad = true,
            }
        } else if name.len() == 17 && name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_chunked = Some(is_chunked(h.value));
            codings.add(h.value);
        }
    }
    let (suspect, body) = match te_chunked {
        // hyper: 400 for Transfer-Encoding on HTTP/1.0 or not ending in chunked.
        Some(_) if http10 => return Parsed::Stop(StopReason::RejectedFraming),
        Some(false) => return Parsed::Stop(StopReason::RejectedFraming),
        Some(true) => {
            let suspect = if cl_lines > 0 {
                Some(Suspect::ContentLengthWithTransferEncoding)
            } else {
                codings.suspect()
            };
            (suspect, Body::Chunked)
        }
        None => {
            if cl_bad {
                return Parsed::Stop(StopReason::RejectedFraming);
            }
            match cl {
                // hyper's `DecodedLength::checked_new` limit.
                Some(n) if n > u64::MAX - 2 => return Parsed::Stop(StopReason::RejectedFraming),
                Some(n) => (
                    (cl_lines > 1).then_some(Suspect::DuplicateContentLength),
                    Body::Length(n),
                ),
                None => (None, Body::None),
            }
        }
    };
    Parsed::Complete(n, suspect, body)
}

/// hyper's `Content-Length` parser: digits only, no sign, no list, no overflow.
fn from_digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// hyper's `is_chunked_`: the value is visible ASCII and its last coding is `chunked`.
fn is_chunked(v: &[u8]) -> bool {
    // `HeaderValue::to_str` accepts tab and visible ASCII only.
    if !v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return false;
    }
    let last = v.rsplit(|&b| b == b',').next().unwrap_or_default();
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// The transfer codings of a request's `Transfer-Encoding` lines, all lines taken as one
/// list (RFC 9110 §5.3), for a request hyper reads as chunked.
#[derive(Default)]
struct Codings {
    chunked: u32,
    others: u32,
}

impl Codings {
    fn add(&mut self, v: &[u8]) {
        for coding in v.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if coding.is_empty() {
                continue;
            }
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked += 1;
            } else {
                self.others += 1;
            }
        }
    }

    /// hyper already made sure the final coding is `chunked`: anything more is refused.
    fn suspect(&self) -> Option<Suspect> {
        if self.chunked > 1 {
            Some(Suspect::ChunkedTwice)
        } else if self.others > 0 {
            Some(Suspect::UnsupportedTransferCoding)
        } else {
            None
        }
    }
}

/// Index just past the empty line that ends a head, given the scan state of earlier bytes.
fn find_head_end(carry: &mut u8, data: &[u8]) -> Option<usize> {
    let mut i = 0;
    loop {
        if *carry == 1 {
            match data.get(i) {
                None => return None,
                Some(b'\n') => return Some(i + 1),
                Some(b'\r') => {
                    *carry = 2;
                    i += 1;
                    continue;
                }
                Some(_) => *carry = 0,
            }
        } else if *carry == 2 {
            match data.get(i) {
                None => return None,
                Some(b'\n') => return Some(i + 1),
                Some(_) => *carry = 0,
            }
        }
        let k = memchr::memchr(b'\n', data.get(i..)?)?;
        i += k + 1;
        *carry = 1;
    }
}

enum ChunkEnd {
    More,
    Done,
    Bad,
}

/// Follow a chunked body through `data`; returns the bytes used and whether it ended.
fn feed_chunked(c: &mut Chunk, data: &[u8]) -> (usize, ChunkEnd) {
    use Chunk::*;
    let mut i = 0;
    while let Some(&b) = data.get(i) {
        if let Data(rem) = *c {
            // Skip chunk data by count: the payload is never looked at.
            let k = usize::try_from(rem).map_or(data.len() - i, |r| r.min(data.len() - i));
            i += k;
            let rem = rem - k as u64;
            *c = if rem == 0 { DataCr } else { Data(rem) };
            continue;
        }
        i += 1;
        *c = match (*c, b) {
            (Start, b) => match hex_digit(b) {
                Some(v) => Size(v),
                None => return (i, ChunkEnd::Bad),
            },
            (Size(n), b) => match hex_digit(b) {
                Some(v) => match n.checked_mul(16).and_then(|n| n.checked_add(v)) {
                    Some(n) => Size(n),
                    None => return (i, ChunkEnd::Bad),
                },
                None => match b {
                    b' ' | b'\t' => Lws(n),
                    b';' => Ext(n),
                    b'\r' => SizeLf(n),
                    _ => return (i, ChunkEnd::Bad),
                },
            },
            (Lws(n), b' ' | b'\t') => Lws(n),
            (Lws(n), b';') => Ext(n),
            (Lws(n), b'\r') => SizeLf(n),
            (Ext(n), b'\r') => SizeLf(n),
            // hyper refuses a bare LF in an extension.
            (Ext(_), b'\n') => return (i, ChunkEnd::Bad),
            (Ext(n), _) => Ext(n),
            (SizeLf(0), b'\n') => EndCr,
            (SizeLf(n), b'\n') => Data(n),
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (EndLf, b'\n') => return (i, ChunkEnd::Done),
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            _ => return (i, ChunkEnd::Bad),
        };
    }
    (i, ChunkEnd::More)
}

/// The client stream as hyper sees it, with a [`FramingTracker`] watching what is read.
#[derive(Debug)]
pub struct FramingIo<S> {
    inner: S,
    tracker: FramingTracker,
    verdicts: Arc<FramingVerdicts>,
}

impl<S> FramingIo<S> {
    /// `max_head`: the `max_header_size` hyper is given for this connection.
    pub fn new(inner: S, verdicts: Arc<FramingVerdicts>, max_head: usize) -> Self {
        Self {
            inner,
            tracker: FramingTracker::new(max_head),
            verdicts,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.tracker.is_tracking() {
            let verdicts = &this.verdicts;
            let new = buf.filled().get(before..).unwrap_or_default();
            this.tracker.feed(new, &mut |h: Head| {
                if let Some(why) = h.suspect {
                    verdicts.flag(h.seq, why);
                }
            });
            if let Some(why) = this.tracker.stopped() {
                debug!(reason = ?why, heads = this.tracker.heads(), "request framing no longer tracked");
                if let Some(seq) = this.tracker.malformed_body() {
                    verdicts.flag(seq, Suspect::MalformedChunkedBody);
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
