//! A loopback backend answering with exact bytes the test chooses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::wire::*;

// ---- the raw backend ----

/// What [`RawBackend`] does with one request.
pub(crate) enum Reply {
    /// Write these bytes and wait for the next request on the connection.
    KeepAlive(Vec<u8>),
    /// Write these bytes (in a few pieces, so the proxy sees a stream), then close.
    Close(Vec<u8>),
    /// Write these bytes one at a time (each its own segment), then keep the connection.
    Trickle(Vec<u8>),
    /// Close without answering: the request dies in flight.
    Drop,
    /// Write these bytes, then echo every byte the peer sends (an upgraded tunnel).
    Echo(Vec<u8>),
    /// Wait, then do the inner reply.
    After(Duration, Box<Reply>),
    /// Write `reply`, then bytes nobody asked for (`extra`): in the same write when `gap` is
    /// `None`, else in a write of its own `gap` later; count the extra write in `written`,
    /// then wait for the next request (a backend that misbehaves, not one that closes).
    WithExtra {
        reply: Vec<u8>,
        gap: Option<Duration>,
        extra: Vec<u8>,
        written: Arc<AtomicU64>,
    },
}

pub(crate) type Handler = Arc<dyn Fn(&Message, u64) -> Reply + Send + Sync>;

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// Which accepted connection (1-based) carried it.
    pub(crate) conn: u64,
    pub(crate) req: Message,
}

#[derive(Clone)]
pub(crate) struct RawBackend {
    pub(crate) addr: SocketAddr,
    pub(crate) accepted: Arc<AtomicU64>,
    /// Connections whose serving ended (closed by lbd, or by the reply).
    pub(crate) ended: Arc<AtomicU64>,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    /// Request-level errors the backend hit (bad heads from lbd and the like).
    pub(crate) errors: Arc<Mutex<Vec<String>>>,
}

impl RawBackend {
    /// `handler(request, requests already served on this connection)`.
    pub(crate) async fn start(
        handler: impl Fn(&Message, u64) -> Reply + Send + Sync + 'static,
    ) -> RawBackend {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw backend");
        let b = RawBackend {
            addr: listener.local_addr().expect("addr"),
            accepted: Arc::new(AtomicU64::new(0)),
            ended: Arc::new(AtomicU64::new(0)),
            seen: Arc::new(Mutex::new(Vec::new())),
            errors: Arc::new(Mutex::new(Vec::new())),
        };
        let me = b.clone();
        // The task ends with the runtime at the end of the test.
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                // Every write its own segment: lbd sees the pieces the test chose.
                let _ = s.set_nodelay(true);
                let conn = me.accepted.fetch_add(1, Ordering::SeqCst) + 1;
                let me = me.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    if let Err(e) = me.serve(conn, s, handler).await {
                        if let Ok(mut errors) = me.errors.lock() {
                            errors.push(e);
                        }
                    }
                    me.ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        b
    }

    pub(crate) async fn serve(
        &self,
        conn: u64,
        s: TcpStream,
        handler: Handler,
    ) -> Result<(), String> {
        let mut w = Wire { s, buf: Vec::new() };
        for served in 0u64.. {
            // Idle keep-alive connections may sit in lbd's pool for the whole test.
            let until = Instant::now() + Duration::from_secs(300);
            let Some(req) = w.read_request(until).await? else {
                return Ok(());
            };
            let reply = handler(&req, served);
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(Seen { conn, req });
            }
            if !act(&mut w, reply).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::SeqCst)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    pub(crate) fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.req.target).collect()
    }

    pub(crate) fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors").clone()
    }
}

/// Carry out one reply on the backend side; `Ok(false)` once the connection is done.
pub(crate) async fn act(w: &mut Wire, mut reply: Reply) -> Result<bool, String> {
    let io = |e: std::io::Error| e.to_string();
    loop {
        match reply {
            Reply::After(d, inner) => {
                tokio::time::sleep(d).await;
                reply = *inner;
            }
            Reply::KeepAlive(bytes) => {
                w.s.write_all(&bytes).await.map_err(io)?;
                return Ok(true);
            }
            Reply::Close(bytes) => {
                for piece in bytes.chunks(bytes.len().div_ceil(4).max(1)) {
                    w.s.write_all(piece).await.map_err(io)?;
                    w.s.flush().await.map_err(io)?;
                }
                return Ok(false);
            }
            Reply::Trickle(bytes) => {
                for b in bytes {
                    w.s.write_all(&[b]).await.map_err(io)?;
                    w.s.flush().await.map_err(io)?;
                }
                return Ok(true);
            }
            Reply::Drop => return Ok(false),
            Reply::WithExtra {
                mut reply,
                gap,
                extra,
                written,
            } => {
                match gap {
                    None => reply.extend_from_slice(&extra),
                    Some(gap) => {
                        w.s.write_all(&reply).await.map_err(io)?;
                        w.s.flush().await.map_err(io)?;
                        reply.clear();
                        tokio::time::sleep(gap).await;
                    }
                }
                w.s.write_all(&reply).await.map_err(io)?;
                if gap.is_some() {
                    w.s.write_all(&extra).await.map_err(io)?;
                }
                written.fetch_add(1, Ordering::SeqCst);
                return Ok(true);
            }
            Reply::Echo(bytes) => {
                w.s.write_all(&bytes).await.map_err(io)?;
                // Tunnel bytes that arrived with the request head.
                let early = std::mem::take(&mut w.buf);
                w.s.write_all(&early).await.map_err(io)?;
                let mut tmp = [0u8; 4096];
                loop {
                    let n = w.s.read(&mut tmp).await.map_err(io)?;
                    if n == 0 {
                        return Ok(false);
                    }
                    w.s.write_all(&tmp[..n]).await.map_err(io)?;
                }
            }
        }
    }
}
