//! Downstream HTTP/2 abuse that hyper's h2 does not bound the way lbd wants, and the count of
//! connections cut for abuse (`lbd_http2_connections_cut_total{cause}`).
//!
//! **Resets per second (CVE-2023-44487).** h2's own cap (`max_pending_reset_streams`) counts
//! only streams reset *before hyper accepted them*, at once; hyper accepts each stream as soon
//! as its HEADERS is read, so a client that paces HEADERS and RST_STREAM a little apart is
//! never counted, while lbd starts (and drops) a backend request for every stream. So lbd
//! counts every RST_STREAM frame the client sends in a token bucket per connection
//! ([`ResetBucket`]: `max_resets_per_second` tokens, refilled at that rate); a reset that finds
//! the bucket empty cuts the connection with GOAWAY `ENHANCE_YOUR_CALM`.
//!
//! hyper has no way to send a GOAWAY with a reason of our choosing, so [`H2Guard`] sits
//! between hyper and the (decrypted) client stream, follows the frame boundaries both ways
//! (payloads are skipped by count, never copied), and when it trips it writes the GOAWAY
//! itself at a frame boundary of lbd's output, flushes it, and then fails hyper's reads and
//! writes so hyper ends the connection. If lbd's output is in the middle of a frame at that
//! moment (a frame partially written to a full socket) it closes without the GOAWAY rather
//! than corrupt the stream.
//!
//! **CONTINUATION floods.** h2 itself bounds a header block: at most
//! `max(5, 1.25 × header_list_size / 16384)` CONTINUATION frames, and a decoded size over the
//! header list size, each ending the connection with GOAWAY `ENHANCE_YOUR_CALM` (or
//! `COMPRESSION_ERROR`) instead of buffering. The guard only records whether a header block
//! was still open when the connection ended, which is how such a cut is told apart from the
//! other `ENHANCE_YOUR_CALM` causes (h2 drops its debug data before hyper sees the error).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Http2Cut;

/// The client connection preface (RFC 9113 §3.4), read before the first frame.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD_LEN: usize = 9;
const KIND_HEADERS: u8 = 0x1;
const KIND_RST_STREAM: u8 = 0x3;
const KIND_CONTINUATION: u8 = 0x9;
const FLAG_END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const GOAWAY_DEBUG: &[u8] = b"too_many_resets_per_second";

/// What a guarded connection tells its owner once hyper is done with it.
#[derive(Debug, Default)]
pub struct Watch {
    resets_tripped: AtomicBool,
    header_block_open: AtomicBool,
}

impl Watch {
    /// Why the connection that ended with `end` was cut, if it was cut for abuse.
    pub fn cut(&self, end: &hyper::Error) -> Option<Http2Cut> {
        if self.resets_tripped.load(Ordering::Relaxed) {
            return Some(Http2Cut::ResetsPerSecond);
        }
        let h2 = h2_error(end)?;
        if !(h2.is_go_away() && h2.is_library()) {
            return None;
        }
        let calm = h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        Some(if self.header_block_open.load(Ordering::Relaxed) {
            Http2Cut::HeaderBlock
        } else if calm {
            Http2Cut::EnhanceYourCalm
        } else {
            Http2Cut::ProtocolError
        })
    }
}

/// The h2 error under a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return Some(h2);
        }
        source = s.source();
    }
    None
}

/// The head of one HTTP/2 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FrameHead {
    kind: u8,
    flags: u8,
    stream: u32,
}

/// Follows frame boundaries in a byte stream: heads are decoded, payloads skipped by count.
#[derive(Debug, Default)]
struct FrameScanner {
    preface_left: usize,
    head: [u8; FRAME_HEAD_LEN],
    head_len: usize,
    payload_left: usize,
}

impl FrameScanner {
    fn after_preface() -> FrameScanner {
        FrameScanner {
            preface_left: PREFACE_LEN,
            ..FrameScanner::default()
        }
    }

    /// Whether the bytes so far end inside a frame (or the preface).
    fn mid_frame(&self) -> bool {
        self.preface_left > 0 || self.head_len > 0 || self.payload_left > 0
    }

    /// How many more bytes the current part (head or payload) of the current frame has.
    fn part_left(&self) -> usize {
        if self.head_len > 0 {
            FRAME_HEAD_LEN - self.head_len
        } else {
            self.payload_left
        }
    }

    fn feed(&mut self, mut bytes: &[u8], on_head: &mut impl FnMut(FrameHead)) {
        while !bytes.is_empty() {
            let skip = if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                n
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                n
            } else {
                let n = (FRAME_HEAD_LEN - self.head_len).min(bytes.len());
                self.head[self.head_len..self.head_len + n].copy_from_slice(&bytes[..n]);
                self.head_len += n;
                if self.head_len == FRAME_HEAD_LEN {
                    self.head_len = 0;
                    let h = &self.head;
                    self.payload_left =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    on_head(FrameHead {
                        kind: h[3],
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                    });
                }
                n
            };
            bytes = &bytes[skip..];
        }
    }
}

/// RST_STREAM frames a connection may send: a bucket of `rate` tokens refilled at `rate` per
/// second. A client resetting at most `rate` streams a second on average, in bursts of at most
/// `rate`, never empties it.
#[derive(Debug)]
pub struct ResetBucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl ResetBucket {
    pub fn new(rate: u32, now: Instant) -> ResetBucket {
        ResetBucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: now,
        }
    }

    /// Take a token for one reset; false when there is none left.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The GOAWAY `ENHANCE_YOUR_CALM` lbd sends when the reset bucket is empty.
fn goaway(last_stream: u32) -> Vec<u8> {
    let len = 8 + GOAWAY_DEBUG.len();
    let mut f = Vec::with_capacity(FRAME_HEAD_LEN + len);
    f.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    f.extend_from_slice(&[0x7, 0]);
    f.extend_from_slice(&0u32.to_be_bytes());
    f.extend_from_slice(&(last_stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
    f.extend_from_slice(GOAWAY_DEBUG);
    f
}

/// The GOAWAY being written once the guard tripped.
#[derive(Debug)]
struct Goaway {
    bytes: Vec<u8>,
    sent: usize,
    started: bool,
}

/// A client HTTP/2 stream as hyper sees it, with the resets-per-second cap enforced (see the
/// module docs).
pub struct H2Guard<S> {
    inner: S,
    reads: FrameScanner,
    writes: FrameScanner,
    resets: ResetBucket,
    last_stream: u32,
    watch: Arc<Watch>,
    tripped: Option<Goaway>,
}

impl<S> H2Guard<S> {
    /// `inner` starts with the client's connection preface (nothing read from it yet).
    pub fn new(inner: S, max_resets_per_second: u32, watch: Arc<Watch>) -> H2Guard<S> {
        H2Guard {
            inner,
            reads: FrameScanner::after_preface(),
            writes: FrameScanner::default(),
            resets: ResetBucket::new(max_resets_per_second, Instant::now()),
            last_stream: 0,
            watch,
            tripped: None,
        }
    }

    /// Follow the client's frames in `bytes`; true when they emptied the reset bucket.
    fn scan_client(&mut self, bytes: &[u8]) -> bool {
        let mut tripped = false;
        let (resets, last_stream, watch) = (&mut self.resets, &mut self.last_stream, &self.watch);
        self.reads.feed(bytes, &mut |h| match h.kind {
            KIND_RST_STREAM if !tripped => tripped = !resets.take(Instant::now()),
            KIND_HEADERS => {
                *last_stream = (*last_stream).max(h.stream);
                let open = h.flags & FLAG_END_HEADERS == 0;
                watch.header_block_open.store(open, Ordering::Relaxed);
            }
            KIND_CONTINUATION if h.flags & FLAG_END_HEADERS != 0 => {
                watch.header_block_open.store(false, Ordering::Relaxed);
            }
            _ => {}
        });
        tripped
    }
}

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "client reset too many streams per second (http2.max_resets_per_second)",
    )
}

impl<S: AsyncWrite + Unpin> H2Guard<S> {
    /// Once tripped: write and flush the GOAWAY (when lbd's output is between frames), then
    /// fail, so hyper ends the connection.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(g) = self.tripped.as_mut() else {
            return Poll::Ready(cut_error());
        };
        if !g.started && self.writes.mid_frame() {
            return Poll::Ready(cut_error());
        }
        g.started = true;
        while g.sent < g.bytes.len() {
            match ready!(Pin::new(&mut self.inner).poll_write(cx, &g.bytes[g.sent..])) {
                Ok(0) | Err(_) => return Poll::Ready(cut_error()),
                Ok(n) => g.sent += n,
            }
        }
        let _ = ready!(Pin::new(&mut self.inner).poll_flush(cx));
        Poll::Ready(cut_error())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped.is_none() {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if !this.scan_client(&buf.filled()[before..]) {
                return Poll::Ready(Ok(()));
            }
            // What was just read is dropped: the connection is over.
            buf.set_filled(before);
            this.watch.resets_tripped.store(true, Ordering::Relaxed);
            this.tripped = Some(Goaway {
                bytes: goaway(this.last_stream),
                sent: 0,
                started: false,
            });
        }
        Poll::Ready(Err(ready!(this.poll_cut(cx))))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for H2Guard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let buf = match &this.tripped {
            None => buf,
            // Finish the frame hyper is in the middle of, so the GOAWAY starts on a boundary.
            Some(g) if !g.started && this.writes.mid_frame() => {
                &buf[..buf.len().min(this.writes.part_left())]
            }
            Some(_) => return Poll::Ready(Err(ready!(this.poll_cut(cx)))),
        };
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.writes.feed(&buf[..n], &mut |_| {});
        Poll::Ready(Ok(n))
    }

    /// Vectored while nothing tripped (hyper's h2 writes a frame head and its payload as
    /// separate slices); after, one slice at a time through `poll_write`.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tripped.is_some() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            let take = left.min(b.len());
            this.writes.feed(&b[..take], &mut |_| {});
            left -= take;
            if left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(n))
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
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = (payload as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xaa, payload));
        f
    }

    #[test]
    fn frame_heads_are_found_however_the_bytes_are_split() {
        let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        bytes.extend(frame(0x4, 0, 0, 6));
        bytes.extend(frame(KIND_HEADERS, 0, 1, 20));
        bytes.extend(frame(KIND_CONTINUATION, FLAG_END_HEADERS, 1, 3));
        bytes.extend(frame(KIND_RST_STREAM, 0, 1, 4));
        for chunk in [1, 2, 7, 9, 10, 1000] {
            let mut s = FrameScanner::after_preface();
            let mut seen = Vec::new();
            for part in bytes.chunks(chunk) {
                s.feed(part, &mut |h| seen.push((h.kind, h.flags, h.stream)));
            }
            assert_eq!(
                seen,
                [
                    (0x4, 0, 0),
                    (KIND_HEADERS, 0, 1),
                    (KIND_CONTINUATION, FLAG_END_HEADERS, 1),
                    (KIND_RST_STREAM, 0, 1)
                ],
                "chunks of {chunk}"
            );
            assert!(!s.mid_frame());
        }
    }

    #[test]
    fn the_bucket_allows_a_burst_of_rate_then_rate_per_second() {
        let t0 = Instant::now();
        let mut b = ResetBucket::new(10, t0);
        assert!((0..10).all(|_| b.take(t0)));
        assert!(!b.take(t0), "the eleventh reset at once");
        // Half a second refills five.
        let t1 = t0 + Duration::from_millis(500);
        assert!((0..5).all(|_| b.take(t1)));
        assert!(!b.take(t1));
        // Steady at the rate: never empty.
        let mut t = t1 + Duration::from_secs(5);
        for _ in 0..100 {
            t += Duration::from_millis(100);
            assert!(b.take(t));
        }
    }

    /// The client's bytes: the preface, then `resets` RST_STREAM frames.
    fn client_resets(resets: u32) -> Vec<u8> {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        b.extend(frame(KIND_HEADERS, FLAG_END_HEADERS, 9, 1));
        for _ in 0..resets {
            b.extend(frame(KIND_RST_STREAM, 0, 9, 4));
        }
        b
    }

    #[tokio::test]
    async fn one_reset_over_the_bucket_sends_goaway_and_fails_the_reads() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let watch = Arc::new(Watch::default());
        let mut guard = H2Guard::new(server, 3, Arc::clone(&watch));
        // lbd's own frame first (what hyper writes), whole.
        guard
            .write_all(&frame(0x4, 0, 0, 6))
            .await
            .expect("settings");
        client.write_all(&client_resets(4)).await.expect("client");
        let mut buf = vec![0u8; 4096];
        let err = guard.read(&mut buf).await.expect_err("cut");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(watch.resets_tripped.load(Ordering::Relaxed));
        // The client gets lbd's SETTINGS, then the GOAWAY naming stream 9.
        let mut got = vec![0u8; 15 + goaway(9).len()];
        client.read_exact(&mut got).await.expect("frames");
        assert_eq!(&got[15..], &goaway(9)[..]);
        // hyper's writes after the cut fail rather than follow the GOAWAY.
        assert!(guard.write_all(&frame(0x4, 0, 0, 0)).await.is_err());
    }

    #[tokio::test]
    async fn a_cut_while_lbd_is_mid_frame_lets_the_frame_finish_then_sends_goaway() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // 12-byte pipes: lbd's 15-byte frame goes out in two writes.
        let (client, server) = tokio::io::duplex(12);
        let mut guard = H2Guard::new(server, 1, Arc::new(Watch::default()));
        let settings = frame(0x4, 0, 0, 6);
        assert_eq!(guard.write(&settings).await.expect("first part"), 12);
        let (mut client_rx, mut client_tx) = tokio::io::split(client);
        let writer = tokio::spawn(async move { client_tx.write_all(&client_resets(2)).await });
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = client_rx.read_to_end(&mut all).await;
            all
        });
        let mut buf = [0u8; 64];
        while guard.read(&mut buf).await.is_ok() {}
        // The rest of the frame, and not a byte more.
        let mut rest = settings[12..].to_vec();
        rest.extend_from_slice(&[0; 9]);
        assert_eq!(guard.write(&rest).await.expect("rest of the frame"), 3);
        // At the boundary: the GOAWAY goes out, and hyper's write fails.
        assert!(guard.write(&[0; 9]).await.is_err());
        drop(guard);
        let mut expected = settings.clone();
        expected.extend(goaway(9));
        assert_eq!(reader.await.expect("reader"), expected);
        let _ = writer.await;
    }

    #[tokio::test]
    async fn resets_within_the_bucket_pass_through_untouched() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let watch = Arc::new(Watch::default());
        let mut guard = H2Guard::new(server, 3, Arc::clone(&watch));
        let sent = client_resets(3);
        client.write_all(&sent).await.expect("client");
        let mut got = vec![0u8; sent.len()];
        guard.read_exact(&mut got).await.expect("read");
        assert_eq!(got, sent);
        assert!(!watch.resets_tripped.load(Ordering::Relaxed));
    }

    #[test]
    fn goaway_is_a_well_formed_frame() {
        let f = goaway(7);
        let mut s = FrameScanner::default();
        let mut heads = Vec::new();
        s.feed(&f, &mut |h| heads.push(h));
        assert_eq!(
            heads,
            [FrameHead {
                kind: 0x7,
                flags: 0,
                stream: 0
            }]
        );
        assert!(!s.mid_frame());
        assert_eq!(&f[9..13], &7u32.to_be_bytes());
        assert_eq!(&f[13..17], &ENHANCE_YOUR_CALM.to_be_bytes());
    }
}
