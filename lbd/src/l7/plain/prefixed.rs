//! An IO stream that first replays bytes already read off it.
//!
//! The fast path reads a client's bytes into its own buffer before it knows whether it can
//! serve the request. When it meets one it does not handle, it hands the connection to
//! hyper, and hyper must see the stream from the start of that request: the bytes the fast
//! path has already taken off the socket (the head, maybe more pipelined requests) cannot be
//! pushed back into the kernel. [`Prefixed`] wraps the socket and yields those bytes from
//! `poll_read` before reading the socket again.
//!
//! ```text
//!   poll_read:   [ prefix (Bytes, shrinking) ] ──empty──▶ inner.poll_read
//!   poll_write / poll_write_vectored / poll_flush / poll_shutdown ──▶ inner, unchanged
//! ```
//!
//! The prefix is a [`Bytes`], so handing over the buffer costs no copy; it is consumed with
//! [`Buf::advance`] and its memory is released once it is empty.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, with `prefix` read before anything from it.
#[derive(Debug)]
pub struct Prefixed<S> {
    inner: S,
    /// Bytes not yet returned by `poll_read`; empty once replayed.
    prefix: Bytes,
}

impl<S> Prefixed<S> {
    /// Wrap `inner` so that reads return `prefix` first, then `inner`'s own bytes.
    pub fn new(inner: S, prefix: Bytes) -> Self {
        Prefixed { inner, prefix }
    }

    /// The wrapped stream (for its addresses or socket options).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably. Reading from it directly skips any unread prefix.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped stream and the part of the prefix not read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        // Only prefix bytes this time, even if the buffer has room for more: a read never
        // needs to be full, and not touching the socket keeps this path from blocking.
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // Release the (possibly large) buffer the prefix was sliced from.
            this.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
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
        bufs: &[IoSlice<'_>],
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
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// Read from `r` with a `cap`-byte buffer until EOF; return everything and the read sizes.
    async fn read_all<R: AsyncRead + Unpin>(r: &mut R, cap: usize) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let mut buf = vec![0u8; cap];
        loop {
            let n = timeout(DEADLINE, r.read(&mut buf))
                .await
                .expect("read timed out")
                .expect("read failed");
            if n == 0 {
                return (out, sizes);
            }
            sizes.push(n);
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn reads_prefix_then_inner() {
        let (client, mut server) = duplex(64);
        let mut p = Prefixed::new(client, Bytes::from_static(b"GET / HTTP/1.1\r\n"));
        server.write_all(b"Host: x\r\n\r\n").await.unwrap();
        drop(server);
        let (all, _) = read_all(&mut p, 1024).await;
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn small_buffer_reads_prefix_in_parts() {
        let (client, mut server) = duplex(64);
        let mut p = Prefixed::new(client, Bytes::from_static(b"0123456789"));
        server.write_all(b"abc").await.unwrap();
        drop(server);
        let (all, sizes) = read_all(&mut p, 3).await;
        assert_eq!(all, b"0123456789abc");
        // The prefix comes out in buffer-sized pieces and never shares a read with the
        // inner stream's bytes.
        assert_eq!(&sizes[..4], &[3, 3, 3, 1]);
        assert_eq!(sizes[4..].iter().sum::<usize>(), 3);
        assert!(p.into_parts().1.is_empty());
    }

    #[tokio::test]
    async fn read_buf_with_partial_room() {
        let (client, server) = duplex(64);
        drop(server);
        let mut p = Prefixed::new(client, Bytes::from_static(b"hello world"));
        let mut storage = [0u8; 4];
        let mut rb = ReadBuf::new(&mut storage);
        rb.put_slice(b"X");
        std::future::poll_fn(|cx| Pin::new(&mut p).poll_read(cx, &mut rb))
            .await
            .unwrap();
        assert_eq!(rb.filled(), b"Xhel");
        let (_, rest) = p.into_parts();
        assert_eq!(&rest[..], b"lo world");
    }

    #[tokio::test]
    async fn empty_prefix_reads_inner() {
        let (client, mut server) = duplex(64);
        let mut p = Prefixed::new(client, Bytes::new());
        server.write_all(b"only inner").await.unwrap();
        drop(server);
        let (all, _) = read_all(&mut p, 1024).await;
        assert_eq!(all, b"only inner");
    }

    #[tokio::test]
    async fn writes_reach_inner() {
        let (client, mut server) = duplex(64);
        let mut p = Prefixed::new(client, Bytes::from_static(b"unread"));
        assert_eq!(p.is_write_vectored(), p.get_ref().is_write_vectored());
        timeout(DEADLINE, async {
            p.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
            let bufs = [IoSlice::new(b"a: b\r\n"), IoSlice::new(b"\r\n")];
            let n = p.write_vectored(&bufs).await.unwrap();
            assert!(n > 0);
            // A vectored write may take only part of the slices; send the rest plainly.
            p.write_all(&b"a: b\r\n\r\n"[n..]).await.unwrap();
            p.flush().await.unwrap();
            p.shutdown().await.unwrap();
        })
        .await
        .expect("write timed out");
        let (all, _) = read_all(&mut server, 1024).await;
        assert_eq!(all, b"HTTP/1.1 200 OK\r\na: b\r\n\r\n");
        // Writing did not consume the prefix.
        let (_, rest) = p.into_parts();
        assert_eq!(&rest[..], b"unread");
    }
}
