//! What the plain path needs of a client connection's transport: a plain TCP socket, or a
//! TLS stream once its handshake is done (HTTPS/1.1 is served by the same loop).
//!
//! Why a trait rather than a boxed stream: the loop is monomorphised per transport, so the
//! plain socket keeps its readiness shortcuts (wait for bytes without taking a buffer, park
//! an idle connection without a task) and a TLS stream pays no dynamic dispatch per read.
//!
//! What differs:
//! - **Waiting for input without reading.** A plain socket asks tokio's reactor. A TLS
//!   stream may hold decrypted bytes that no socket readiness announces (a record carries
//!   more than one read takes, or two pipelined requests), so it asks the session first and
//!   the reactor only when the session holds none.
//! - **Parking.** Only a plain socket leaves its task while idle (`crate::park` watches raw
//!   sockets); a TLS connection waits in its task.
//! - **Closing between requests.** A plain socket is just closed (FIN). A TLS stream sends
//!   its `close_notify` first, so the client can tell an idle close from a cut response; that
//!   write is bounded ([`CLOSE_NOTIFY_WAIT`]), since a client that stopped reading must not
//!   hold a drain.
//! - **Flushing.** A TLS write encrypts into the session and may leave records unsent when
//!   the socket is full, so every write the loop makes ends with a flush (a no-op on a
//!   plain socket).

use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client transport the plain path can serve.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Idle connections of this transport may be parked without a task.
    const PARKS: bool;

    /// Ready once the client has sent something (or the connection ended), without reading
    /// it, so no buffer is taken for a connection that is only waiting.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Input is known to be waiting now (no syscall): a pipelined request.
    fn input_waiting(&mut self) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        self.poll_input(&mut cx).is_ready()
    }

    /// The plain socket, for the parking lot. `None` for a transport that does not park.
    fn into_parkable(self) -> Option<TcpStream>;

    /// Close between requests (idle, timed out, the client closed, or a graceful close).
    fn close(self) -> impl std::future::Future<Output = ()> + Send;
}

/// How long a TLS connection closing between requests may take to send its `close_notify`.
pub const CLOSE_NOTIFY_WAIT: Duration = Duration::from_millis(500);

impl ClientIo for TcpStream {
    const PARKS: bool = true;

    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }

    fn into_parkable(self) -> Option<TcpStream> {
        Some(self)
    }

    async fn close(self) {
        // Dropped: the kernel sends the FIN.
    }
}

impl ClientIo for TlsStream<TcpStream> {
    const PARKS: bool = false;

    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if session_has_plaintext(self) {
            return Poll::Ready(Ok(()));
        }
        self.get_ref().0.poll_read_ready(cx)
    }

    fn into_parkable(self) -> Option<TcpStream> {
        None
    }

    async fn close(mut self) {
        // close_notify, flushed, then the FIN.
        let _ = tokio::time::timeout(CLOSE_NOTIFY_WAIT, self.shutdown()).await;
    }
}

/// Decrypted bytes wait in the session (or it failed: a read will say how). What it has
/// taken from the socket is processed already (the stream's reads do that), so this only
/// reports, it does not read.
fn session_has_plaintext(s: &mut TlsStream<TcpStream>) -> bool {
    match s.get_mut().1.process_new_packets() {
        Ok(state) => state.plaintext_bytes_to_read() > 0,
        Err(_) => true,
    }
}
