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

use crate::l7::syntax::hex_digit;

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
                let v = hex_digit(b).ok_or(BadSize)?;
                self.line_len = 0;
                self.size_line_byte()?;
                State::Size { size: v, digits: 1 }
            }
            State::Size { size, digits } => {
                if let Some(v) = hex_digit(b) {
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
mod tests;
