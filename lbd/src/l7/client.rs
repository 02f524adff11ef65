//! A client connection as the request engine sees it: its [`ConnCtx`] (peer, listener,
//! forwarding header values, the requests in progress for the idle timeout) and what it holds
//! while open ([`ConnHold`]). The listener makes them; both HTTP paths read them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use crate::client_cap::ClientSlot;
use crate::clock;
use crate::l7::ctx::ProxyCtx;
use crate::l7::framing::FramingVerdicts;

/// Per-connection state the proxy updates (for the idle timeout and the access log).
#[derive(Debug)]
pub struct ConnCtx {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    /// "http" (later "https" behind TLS termination).
    pub proto: &'static str,
    /// Framing verdicts of this connection's requests (HTTP/1 on hyper only), asked once per
    /// request; made at the hand-off to hyper, so fast-path connections (most, and every
    /// parked one) don't carry it.
    framing: std::sync::OnceLock<Arc<FramingVerdicts>>,
    /// `peer`'s IP as a header value, rendered once for every request's X-Forwarded-For.
    pub client_ip_value: http::HeaderValue,
    /// The port the client connected to (X-Forwarded-Port).
    pub local_port: u16,
    /// On a TLS listener with client certificates: the subject header (boxed: plain
    /// connections, the many, carry one pointer).
    pub client_cert: Option<Box<crate::tls::ClientCert>>,
    active: AtomicU32,
    last_activity_ms: AtomicU64,
    /// The connection's places under the caps, released when the last holder of the context
    /// goes: the connection's task, a parked entry, or a WebSocket tunnel that outlives both.
    _hold: ConnHold,
}

/// A client connection's places under `max_client_conns` and `max_conns_per_client`, and in
/// the open-connections gauge.
pub struct ConnHold {
    _permit: OwnedSemaphorePermit,
    _slot: ClientSlot,
    _gauge: ActiveGauge,
}

impl ConnHold {
    pub fn new(permit: OwnedSemaphorePermit, slot: ClientSlot, gauge: ActiveGauge) -> Self {
        ConnHold {
            _permit: permit,
            _slot: slot,
            _gauge: gauge,
        }
    }
}

impl std::fmt::Debug for ConnHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnHold")
    }
}

impl ConnCtx {
    pub fn new(peer: SocketAddr, local_port: u16, listener: Arc<str>, hold: ConnHold) -> Self {
        ConnCtx {
            _hold: hold,
            peer,
            listener,
            proto: "http",
            framing: std::sync::OnceLock::new(),
            client_ip_value: crate::l7::headers::ip_value(peer.ip()),
            local_port,
            client_cert: None,
            active: AtomicU32::new(0),
            last_activity_ms: AtomicU64::new(clock::now().as_millis() as u64),
        }
    }

    /// The connection's framing verdicts (made on first use).
    pub fn framing(&self) -> &Arc<FramingVerdicts> {
        self.framing.get_or_init(Arc::default)
    }

    /// A request started on this connection; it counts as active until the guard drops
    /// (end of the response body, or the request being abandoned by the client).
    pub fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(self))
    }

    /// How long the connection has had no request in progress (`None` while busy).
    pub fn idle_for(&self) -> Option<Duration> {
        if self.active.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        Some(Duration::from_millis(
            (clock::now().as_millis() as u64).saturating_sub(last),
        ))
    }
}

/// One request in progress on a client connection (see [`ConnCtx::begin`]).
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnCtx>);

impl ActiveRequest {
    pub fn conn(&self) -> &ConnCtx {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let c = &self.0;
        c.last_activity_ms
            .store(clock::now().as_millis() as u64, Ordering::Relaxed);
        c.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements the active client connection gauge on drop.
pub struct ActiveGauge(Arc<ProxyCtx>);

impl ActiveGauge {
    /// The gauge for a connection already counted in `client_conns_active`.
    pub fn new(engine: Arc<ProxyCtx>) -> Self {
        ActiveGauge(engine)
    }
}

impl Drop for ActiveGauge {
    fn drop(&mut self) {
        self.0
            .stats
            .client_conns_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}
