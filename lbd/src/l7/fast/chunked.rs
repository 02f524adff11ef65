//! Where a chunked message body ends (RFC 9112 §7.1), found without decoding it.
//!
//! The fast path relays a backend's chunked response to the client byte for byte: it never
//! re-encodes the chunks, so all it needs to know is *where the body ends*, so that the
//! bytes after it (the next pipelined response, or nothing) are not sent as part of this
//! one and the backend connection can be reused. [`ChunkedScanner`] is a sans-IO state
//! machine that is shown each read as it is relayed and answers [`Scan::More`] or
//! [`Scan::Done(n)`](Scan::Done).
//!
//! ```text
//!   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//!   last-chunk   = 1*("0") [ chunk-ext ] CRLF
//!   chunked-body = *chunk last-chunk trailer-section CRLF
//!
//!   SizeStart ─hex─▶ Size ─CR─▶ SizeLf ─LF, n>0─▶ Data(n) ─n bytes─▶ DataCr ─CR─▶ DataLf ─LF─▶ SizeStart
//!                     │ ▲                 └─LF, n=0─▶ TrailerStart ─CR─▶ FinalLf ─LF─▶ Done
//!                 SP/HT│ │';'                            │  ▲
//!                     ▼ │                        other ▼  │ LF
//!                     Bws ─';'─▶ Ext ─CR─▶ SizeLf   TrailerLine ─CR─▶ TrailerLf
//! ```
//!
//! Design choices and why:
//! - **Strict CRLF.** Every line must end in CRLF; a bare LF or a CR not followed by LF is
//!   [`ChunkedError::BadCrlf`]. RFC 9112 §2.2 lets a recipient accept a bare LF, but a proxy
//!   that relays bytes verbatim must not find a different end than the client will: if the
//!   two disagree on where the body stops, the bytes in between become a smuggled response.
//!   Refusing the ambiguous forms is the only choice that cannot desynchronise.
//! - **Whitespace only where the grammar has it.** Spaces and tabs are accepted between the
//!   size and a `;` (the BWS of `chunk-ext`), and inside extensions; `5 \r\n` (whitespace and
//!   no extension) is [`ChunkedError::BadSize`].
//! - **No buffering, bounded work.** The scanner keeps a few counters, never the input. Chunk
//!   data is skipped by count without being looked at; only size lines and trailers are read
//!   byte by byte, and both are bounded ([`MAX_SIZE_LINE`], [`MAX_TRAILERS`]) so a backend
//!   cannot make the proxy scan an endless "line".
//! - **Sizes fit in `u64`.** At most 16 hex digits (leading zeros included), which is also
//!   exactly what a `u64` holds.
//! - **Errors are sticky.** After an error every later [`ChunkedScanner::feed`] returns the
//!   same error; after the end every later call returns `Done(0)`.
//!
//! Extension and trailer contents are checked only for control characters (anything below
//! 0x20 except HTAB, and DEL), and trailer lines must look like `name:value`; their meaning is
//! the client's business, since they are forwarded untouched.

/// Longest chunk-size line accepted, size digits and extensions, not counting the CRLF.
pub const MAX_SIZE_LINE: usize = 4096;

/// Longest trailer section accepted: all trailer field lines with their CRLFs, not counting
/// the empty line that ends the body.
pub const MAX_TRAILERS: usize = 16 * 1024;

/// At most this many hex digits in a chunk size: 16 hex digits are 64 bits.
const MAX_SIZE_DIGITS: u8 = 16;

/// The outcome of one [`ChunkedScanner::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Consumed all of `data`; the body continues.
    More,
    /// The body (including the last-chunk, trailers and the final CRLF) ends after `n` bytes
    /// of `data`; bytes after it belong to the next message.
    Done(usize),
}

/// Why a chunked body is refused. Every variant means the stream can no longer be framed:
/// the connection must be closed, never reused.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// A chunk-size line that does not start with a hex digit, or junk after the size.
    #[error("malformed chunk size")]
    BadSize,
    /// A chunk size of more than 16 hex digits.
    #[error("chunk size has more than 16 hex digits")]
    SizeOverflow,
    /// A chunk-size line (with extensions) longer than [`MAX_SIZE_LINE`] bytes.
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    /// A control character in a chunk extension.
    #[error("control character in a chunk extension")]
    BadExtension,
    /// A line not ended by CRLF (bare LF, or CR followed by something else), or chunk data
    /// not followed by CRLF.
    #[error("expected CRLF")]
    BadCrlf,
    /// A trailer line that is not `name:value` (no colon, empty name, obs-fold) or holds a
    /// control character.
    #[error("malformed trailer field line")]
    BadTrailer,
    /// A trailer section longer than [`MAX_TRAILERS`] bytes.
    #[error("trailer section longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// Position inside the chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk size.
    SizeStart,
    /// Inside the hex digits.
    Size {
        size: u64,
        digits: u8,
    },
    /// Spaces or tabs after the size: only more of them or `;` may follow.
    Bws {
        size: u64,
    },
    /// In a chunk extension, until CR.
    Ext {
        size: u64,
    },
    /// CR of the size line seen; LF must follow.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to skip (never 0).
    Data {
        remaining: u64,
    },
    /// Chunk data done; CR must follow.
    DataCr,
    /// CR after chunk data seen; LF must follow.
    DataLf,
    /// At the start of a line after the last chunk: CR (the end) or a trailer field line.
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine {
        colon: bool,
    },
    /// CR of a trailer line seen; LF must follow.
    TrailerLf,
    /// CR of the final empty line seen; LF must follow.
    FinalLf,
    Done,
    Failed(ChunkedError),
}

/// Finds the end of one chunked body in a byte stream split at arbitrary points.
///
/// Create one per message body, [`feed`](Self::feed) it every read in order, and stop at
/// [`Scan::Done`].
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// Bytes of the current size line so far (digits, BWS, extensions).
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

fn hex(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// A control character other than HTAB (CR and LF are handled before this is asked).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

impl ChunkedScanner {
    /// A scanner positioned at the start of a chunked body (the first chunk-size line).
    pub fn new() -> Self {
        ChunkedScanner {
            state: State::SizeStart,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Scan the next bytes of the stream.
    ///
    /// Returns [`Scan::More`] when all of `data` belongs to the body and more is needed,
    /// [`Scan::Done(n)`](Scan::Done) when the body ends after `data[..n]`. Once done, every
    /// call returns `Done(0)`; once failed, every call returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<Scan, ChunkedError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Done => return Ok(Scan::Done(i)),
                State::Failed(e) => return Err(e),
                // Skip chunk data by count: the payload is never looked at.
                State::Data { remaining } => {
                    let avail = data.len() - i;
                    let k = usize::try_from(remaining).map_or(avail, |r| r.min(avail));
                    i += k;
                    // k <= remaining, so this never underflows.
                    let remaining = remaining - k as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                }
                state => {
                    let b = data[i];
                    i += 1;
                    self.state = match self.step(state, b) {
                        Ok(s) => s,
                        Err(e) => State::Failed(e),
                    };
                }
            }
        }
        match self.state {
            State::Done => Ok(Scan::Done(i)),
            State::Failed(e) => Err(e),
            _ => Ok(Scan::More),
        }
    }

    /// Count one byte of the size line against [`MAX_SIZE_LINE`].
    fn size_line_byte(&mut self) -> Result<(), ChunkedError> {
        self.line_len += 1;
        if self.line_len > MAX_SIZE_LINE {
            return Err(ChunkedError::SizeLineTooLong);
        }
        Ok(())
    }

    /// Count one byte of the trailer section against [`MAX_TRAILERS`].
    fn trailer_byte(&mut self) -> Result<(), ChunkedError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkedError::TrailersTooLong);
        }
        Ok(())
    }

    /// The state after byte `b` in `state` (any state but `Data`, `Done` and `Failed`).
    fn step(&mut self, state: State, b: u8) -> Result<State, ChunkedError> {
        use ChunkedError::*;
        Ok(match state {
            State::SizeStart => {
                let v = hex(b).ok_or(BadSize)?;
                self.line_len = 0;
                self.size_line_byte()?;
                State::Size { size: v, digits: 1 }
            }
            State::Size { size, digits } => {
                if let Some(v) = hex(b) {
                    if digits >= MAX_SIZE_DIGITS {
                        return Err(SizeOverflow);
                    }
                    self.size_line_byte()?;
                    // Cannot overflow with at most 16 digits, but stay total anyway.
                    let size = size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(v))
                        .ok_or(SizeOverflow)?;
                    State::Size {
                        size,
                        digits: digits + 1,
                    }
                } else {
                    match b {
                        b'\r' => State::SizeLf { size },
                        b'\n' => return Err(BadCrlf),
                        b' ' | b'\t' => {
                            self.size_line_byte()?;
                            State::Bws { size }
                        }
                        b';' => {
                            self.size_line_byte()?;
                            State::Ext { size }
                        }
                        _ => return Err(BadSize),
                    }
                }
            }
            State::Bws { size } => match b {
                b' ' | b'\t' => {
                    self.size_line_byte()?;
                    State::Bws { size }
                }
                b';' => {
                    self.size_line_byte()?;
                    State::Ext { size }
                }
                _ => return Err(BadSize),
            },
            State::Ext { size } => match b {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(BadCrlf),
                b if is_ctl(b) => return Err(BadExtension),
                _ => {
                    self.size_line_byte()?;
                    State::Ext { size }
                }
            },
            State::SizeLf { size } => match (b, size) {
                (b'\n', 0) => {
                    self.trailer_len = 0;
                    State::TrailerStart
                }
                (b'\n', remaining) => State::Data { remaining },
                _ => return Err(BadCrlf),
            },
            State::DataCr => match b {
                b'\r' => State::DataLf,
                _ => return Err(BadCrlf),
            },
            State::DataLf => match b {
                b'\n' => State::SizeStart,
                _ => return Err(BadCrlf),
            },
            State::TrailerStart => match b {
                b'\r' => State::FinalLf,
                b'\n' => return Err(BadCrlf),
                // A leading space would be obs-fold (RFC 9112 §5.2), an empty name a colon.
                b' ' | b'\t' | b':' => return Err(BadTrailer),
                b if is_ctl(b) => return Err(BadTrailer),
                _ => {
                    self.trailer_byte()?;
                    State::TrailerLine { colon: false }
                }
            },
            State::TrailerLine { colon } => match b {
                b'\r' if colon => {
                    self.trailer_byte()?;
                    State::TrailerLf
                }
                b'\r' => return Err(BadTrailer),
                b'\n' => return Err(BadCrlf),
                b if is_ctl(b) => return Err(BadTrailer),
                _ => {
                    self.trailer_byte()?;
                    State::TrailerLine {
                        colon: colon || b == b':',
                    }
                }
            },
            State::TrailerLf => match b {
                b'\n' => {
                    self.trailer_byte()?;
                    State::TrailerStart
                }
                _ => return Err(BadCrlf),
            },
            State::FinalLf => match b {
                b'\n' => State::Done,
                _ => return Err(BadCrlf),
            },
            // Handled by `feed` before a byte is taken.
            State::Data { .. } | State::Done | State::Failed(_) => state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feed `data` in one piece.
    fn scan(data: &[u8]) -> Result<Scan, ChunkedError> {
        ChunkedScanner::new().feed(data)
    }

    /// Feed `data` in pieces split at `cuts` (ascending); return the end offset in `data`
    /// (None if the body did not end) or the first error.
    fn scan_split(data: &[u8], cuts: &[usize]) -> Result<Option<usize>, ChunkedError> {
        let mut s = ChunkedScanner::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([data.len()]) {
            let end = end.clamp(start, data.len());
            match s.feed(&data[start..end])? {
                Scan::More => {}
                Scan::Done(n) => {
                    assert!(s.is_done());
                    assert!(n <= end - start);
                    return Ok(Some(start + n));
                }
            }
            start = end;
        }
        assert!(!s.is_done());
        Ok(None)
    }

    /// Feed `data` one byte at a time.
    fn scan_bytewise(data: &[u8]) -> Result<Option<usize>, ChunkedError> {
        let cuts: Vec<usize> = (1..data.len()).collect();
        scan_split(data, &cuts)
    }

    const SAMPLE: &[u8] = b"5\r\nhello\r\n1A;name=\"v;al\" ; x\r\nabcdefghijklmnopqrstuvwxyz\r\n\
                            0;last\r\nExpires: never\r\nX-Sum:\t1\r\n\r\n";

    #[test]
    fn simple_bodies() {
        assert_eq!(scan(b"0\r\n\r\n"), Ok(Scan::Done(5)));
        assert_eq!(scan(b"000\r\n\r\n"), Ok(Scan::Done(7)));
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(scan(body), Ok(Scan::Done(body.len())));
        let body = b"a\r\n0123456789\r\nF\r\n0123456789abcde\r\n0\r\n\r\n";
        assert_eq!(scan(body), Ok(Scan::Done(body.len())));
    }

    #[test]
    fn chunk_data_is_not_interpreted() {
        // Data that looks like framing is skipped by count.
        let body = b"7\r\n0\r\n\r\n\n\r\r\n0\r\n\r\n";
        assert_eq!(scan(body), Ok(Scan::Done(body.len())));
    }

    #[test]
    fn incomplete_body_wants_more() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b""), Ok(Scan::More));
        assert_eq!(s.feed(b"5\r\nhel"), Ok(Scan::More));
        assert!(!s.is_done());
        assert_eq!(s.feed(b"lo\r\n0\r\n\r"), Ok(Scan::More));
        assert!(!s.is_done());
        assert_eq!(s.feed(b"\n"), Ok(Scan::Done(1)));
        assert!(s.is_done());
    }

    #[test]
    fn extensions() {
        for body in [
            &b"5;a\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b;c=\"d;e\"\r\nhello\r\n0\r\n\r\n",
            b"5 ;a\r\nhello\r\n0\r\n\r\n",
            b"5\t \t; a = b\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0;end=1\r\n\r\n",
            b"0 ; x\r\n\r\n",
            b"5;\xc3\xa9\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(scan(body), Ok(Scan::Done(body.len())), "{body:?}");
        }
    }

    #[test]
    fn trailers() {
        for body in [
            &b"0\r\nExpires: never\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\nA: 1\r\nB:2\r\nC:\r\n\r\n",
            b"0\r\nX-Checksum: abc\tdef \xff\r\n\r\n",
        ] {
            assert_eq!(scan(body), Ok(Scan::Done(body.len())), "{body:?}");
        }
    }

    #[test]
    fn sample_at_every_split_point() {
        let end = Some(SAMPLE.len());
        assert_eq!(scan(SAMPLE), Ok(Scan::Done(SAMPLE.len())));
        assert_eq!(scan_bytewise(SAMPLE), Ok(end));
        for cut in 0..=SAMPLE.len() {
            assert_eq!(scan_split(SAMPLE, &[cut]), Ok(end), "cut at {cut}");
        }
    }

    #[test]
    fn done_leaves_following_message() {
        let mut stream = SAMPLE.to_vec();
        stream.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(scan(&stream), Ok(Scan::Done(SAMPLE.len())));
        for cut in 0..=stream.len() {
            assert_eq!(scan_split(&stream, &[cut]), Ok(Some(SAMPLE.len())));
        }
        assert_eq!(scan_bytewise(&stream), Ok(Some(SAMPLE.len())));
        // Another chunked body right after: only the first is claimed.
        assert_eq!(scan(b"0\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), Ok(Scan::Done(5)));
    }

    #[test]
    fn after_done_returns_done_zero() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b"0\r\n\r\nrest"), Ok(Scan::Done(5)));
        assert_eq!(s.feed(b"more bytes"), Ok(Scan::Done(0)));
        assert_eq!(s.feed(b""), Ok(Scan::Done(0)));
        assert!(s.is_done());
    }

    #[test]
    fn errors_are_sticky() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b"x"), Err(ChunkedError::BadSize));
        assert_eq!(s.feed(b"0\r\n\r\n"), Err(ChunkedError::BadSize));
        assert_eq!(s.feed(b""), Err(ChunkedError::BadSize));
        assert!(!s.is_done());
    }

    #[test]
    fn bad_size() {
        for body in [
            &b"\r\n"[..],
            b"g\r\n",
            b";a\r\n",
            b" 5\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b"0x5\r\n",
            b"5 \r\n",
            b"5\t\r\n",
            b"5 a\r\n",
            b"5z\r\nhello\r\n",
            b"5\r\nhello\r\nzz\r\n",
        ] {
            assert_eq!(scan(body), Err(ChunkedError::BadSize), "{body:?}");
            assert_eq!(scan_bytewise(body), Err(ChunkedError::BadSize), "{body:?}");
        }
    }

    #[test]
    fn size_overflow() {
        // 16 digits is the limit, whatever their value.
        let max = b"FFFFFFFFFFFFFFFF\r\n";
        assert_eq!(scan(max), Ok(Scan::More));
        let zeros = b"0000000000000005\r\nhello\r\n0\r\n\r\n";
        assert_eq!(scan(zeros), Ok(Scan::Done(zeros.len())));
        for body in [
            &b"10000000000000000\r\n"[..],
            b"00000000000000005\r\n",
            b"FFFFFFFFFFFFFFFFF",
        ] {
            assert_eq!(scan(body), Err(ChunkedError::SizeOverflow), "{body:?}");
            assert_eq!(scan_bytewise(body), Err(ChunkedError::SizeOverflow));
        }
    }

    #[test]
    fn size_line_too_long() {
        // Exactly at the limit is fine.
        let mut ok = b"5;".to_vec();
        ok.resize(MAX_SIZE_LINE, b'x');
        ok.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        assert_eq!(scan(&ok), Ok(Scan::Done(ok.len())));
        // One more byte is not, and the error comes before any CR is seen.
        let mut long = b"5;".to_vec();
        long.resize(MAX_SIZE_LINE + 1, b'x');
        assert_eq!(scan(&long), Err(ChunkedError::SizeLineTooLong));
        assert_eq!(scan_bytewise(&long), Err(ChunkedError::SizeLineTooLong));
        // Whitespace counts too.
        let mut ws = b"5".to_vec();
        ws.resize(MAX_SIZE_LINE + 1, b' ');
        assert_eq!(scan(&ws), Err(ChunkedError::SizeLineTooLong));
        // The limit is per line: many long lines in a row are fine.
        let mut many = Vec::new();
        for _ in 0..3 {
            many.extend_from_slice(b"1;");
            many.resize(many.len() + MAX_SIZE_LINE - 2, b'y');
            many.extend_from_slice(b"\r\nA\r\n");
        }
        many.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(scan(&many), Ok(Scan::Done(many.len())));
    }

    #[test]
    fn bad_extension() {
        for body in [
            &b"5;a\x00\r\n"[..],
            b"5;\x7f\r\n",
            b"5;a=\x1b\r\n",
            b"0;\x0b\r\n",
        ] {
            assert_eq!(scan(body), Err(ChunkedError::BadExtension), "{body:?}");
        }
    }

    #[test]
    fn bad_crlf() {
        for body in [
            // Bare LF after the size, in an extension, after data, ending trailers, at the end.
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\nA: 1\n\r\n",
            b"0\r\n\n",
            // CR followed by something other than LF.
            b"5\rhello",
            b"5;a\r\r\n",
            b"5\r\nhello\rx",
            b"0\r\nA: 1\rx",
            b"0\r\n\rx",
            // Data longer than its size.
            b"5\r\nhello!\r\n0\r\n\r\n",
            // Data shorter than its size (its CR is taken as data, then LF is not CR).
            b"5\r\nhell\r\n0\r\n\r\n",
        ] {
            assert_eq!(scan(body), Err(ChunkedError::BadCrlf), "{body:?}");
            assert_eq!(scan_bytewise(body), Err(ChunkedError::BadCrlf), "{body:?}");
        }
    }

    #[test]
    fn bad_trailer() {
        for body in [
            &b"0\r\nno-colon\r\n\r\n"[..],
            b"0\r\n: empty-name\r\n\r\n",
            b"0\r\nA: 1\r\n folded\r\n\r\n",
            b"0\r\n\tA: 1\r\n\r\n",
            b"0\r\nA: \x00\r\n\r\n",
            b"0\r\n\x01A: 1\r\n\r\n",
        ] {
            assert_eq!(scan(body), Err(ChunkedError::BadTrailer), "{body:?}");
            assert_eq!(scan_bytewise(body), Err(ChunkedError::BadTrailer));
        }
    }

    #[test]
    fn trailers_too_long() {
        // A section of exactly MAX_TRAILERS bytes (lines with their CRLFs) is accepted.
        let mut ok = b"0\r\n".to_vec();
        let line_len = 1024;
        for i in 0..MAX_TRAILERS / line_len {
            let mut line = format!("T{i}:").into_bytes();
            line.resize(line_len - 2, b'v');
            ok.extend_from_slice(&line);
            ok.extend_from_slice(b"\r\n");
        }
        assert_eq!(ok.len() - 3, MAX_TRAILERS);
        ok.extend_from_slice(b"\r\n");
        assert_eq!(scan(&ok), Ok(Scan::Done(ok.len())));
        // One more byte in the section is not.
        let mut long = b"0\r\nBig:".to_vec();
        long.resize(3 + MAX_TRAILERS + 1, b'v');
        assert_eq!(scan(&long), Err(ChunkedError::TrailersTooLong));
        // Many short lines count in total.
        let mut many = b"0\r\n".to_vec();
        while many.len() < MAX_TRAILERS + 100 {
            many.extend_from_slice(b"A:1\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(scan(&many), Err(ChunkedError::TrailersTooLong));
        assert_eq!(scan_bytewise(&many), Err(ChunkedError::TrailersTooLong));
    }

    #[test]
    fn huge_chunk_is_skipped_by_count() {
        let mut s = ChunkedScanner::new();
        assert_eq!(s.feed(b"FFFFFFFFFFFFFFFF\r\n"), Ok(Scan::More));
        let block = vec![b'\n'; 64 * 1024];
        for _ in 0..16 {
            assert_eq!(s.feed(&block), Ok(Scan::More));
        }
        assert!(!s.is_done());
    }

    /// One chunk of a generated body: its data, how its size is spelled, its extension.
    #[derive(Debug, Clone)]
    struct GenChunk {
        data: Vec<u8>,
        upper: bool,
        zeros: usize,
        ext: Option<String>,
    }

    fn gen_chunk() -> impl Strategy<Value = GenChunk> {
        (
            proptest::collection::vec(any::<u8>(), 1..300),
            any::<bool>(),
            0usize..4,
            proptest::option::of("[ \t]{0,2};[a-z]{1,5}(=[a-z0-9\"; ]{0,8})?"),
        )
            .prop_map(|(data, upper, zeros, ext)| GenChunk {
                data,
                upper,
                zeros,
                ext,
            })
    }

    fn size_line(size: usize, upper: bool, zeros: usize, ext: Option<&str>) -> Vec<u8> {
        let hex = if upper {
            format!("{size:X}")
        } else {
            format!("{size:x}")
        };
        let mut line = "0".repeat(zeros).into_bytes();
        line.extend_from_slice(hex.as_bytes());
        line.extend_from_slice(ext.unwrap_or("").as_bytes());
        line.extend_from_slice(b"\r\n");
        line
    }

    fn encode(chunks: &[GenChunk], last_ext: Option<&str>, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            out.extend(size_line(c.data.len(), c.upper, c.zeros, c.ext.as_deref()));
            out.extend_from_slice(&c.data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend(size_line(0, false, 0, last_ext));
        for t in trailers {
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn prop_end_offset_is_encoded_length(
            chunks in proptest::collection::vec(gen_chunk(), 0..8),
            last_ext in proptest::option::of(";[a-z]{1,5}"),
            trailers in proptest::collection::vec("[A-Za-z-]{1,10}:[ -~]{0,20}", 0..4),
            next in proptest::collection::vec(any::<u8>(), 0..40),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let body = encode(&chunks, last_ext.as_deref(), &trailers);
            let mut stream = body.clone();
            stream.extend_from_slice(&next);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(scan_split(&stream, &cuts), Ok(Some(body.len())));
            // A strict prefix of the body never ends it.
            let short = &body[..body.len() - 1];
            prop_assert_eq!(scan_split(short, &cuts), Ok(None));
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<prop::sample::Index>(),
        ) {
            let cut = cut.index(data.len() + 1);
            let mut s = ChunkedScanner::new();
            if let Ok(Scan::Done(n)) = s.feed(&data[..cut]) {
                prop_assert!(n <= cut);
            }
            if let Ok(Scan::Done(n)) = s.feed(&data[cut..]) {
                prop_assert!(n <= data.len() - cut);
            }
        }

        #[test]
        fn prop_framing_like_bytes_never_panic(
            data in proptest::collection::vec(
                prop::sample::select(&b"0123456789aAfF;=\" \t\r\n:xZ\x00"[..]), 0..256),
        ) {
            // One piece and byte by byte must agree.
            let whole = match ChunkedScanner::new().feed(&data) {
                Ok(Scan::Done(n)) => Ok(Some(n)),
                Ok(Scan::More) => Ok(None),
                Err(e) => Err(e),
            };
            prop_assert_eq!(scan_bytewise(&data), whole);
        }
    }
}
