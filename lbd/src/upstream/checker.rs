//! The async half of health checking: probes backends and feeds the pure machines.
//!
//! One task per backend per snapshot. Every `interval` it probes (TCP connect, an HTTP
//! request whose status must fall in `expect_status`, over TLS for a `[pool.tls]` pool,
//! verified like the proxied requests, or a gRPC health check over h2c, [`grpc_health`])
//! under `timeout`, and feeds the
//! result to [`Backend::record_probe`] (rise/fall in `health.rs`). The same loop also wakes at
//! [`Backend::health_deadline`] to end passive ejections on time, and reaps expired idle
//! connections, and wakes whenever an idle pooled connection becomes readable to close it
//! at once. Transitions are logged at info/warn by [`log_health_change`].
//!
//! The task ends when its snapshot is retired by a reload; the next snapshot's task carries on
//! with the same `Arc<Backend>` when the backend was kept, so rise/fall streaks survive.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::clock;
use crate::config::{HealthCheckConfig, ProbeKind};
use crate::metrics::inc;
use crate::upstream::backend::Backend;
use crate::upstream::conns::BackendConns;
use crate::upstream::grpc_health::{self, GrpcProbeError};
use crate::upstream::health::Change;
use crate::upstream::tls::{secure, BackendTls, HandshakeError};

/// How often the loop wakes at least (idle connection reaping).
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Spawn the checker of one backend of pool `pool`, probing per `hc` until `retired` (its
/// snapshot's) is cancelled. Takes the pieces rather than the snapshot, so the checker sits
/// below it ([`crate::snapshot::Snapshot::spawn_health_checks`] walks the pools).
pub fn spawn(
    pool: &str,
    backend: Arc<Backend>,
    conns: Arc<BackendConns>,
    hc: HealthCheckConfig,
    retired: CancellationToken,
) {
    let span = tracing::info_span!("health", pool = %pool, backend = %backend.addr);
    tokio::spawn(run(pool.to_string(), backend, conns, hc, retired).instrument(span));
}

async fn run(
    pool: String,
    backend: Arc<Backend>,
    conns: Arc<BackendConns>,
    hc: HealthCheckConfig,
    retired: CancellationToken,
) {
    let mut next_probe = Instant::now();
    loop {
        let mut wake = Instant::now() + HOUSEKEEPING;
        if hc.kind != ProbeKind::None {
            wake = wake.min(next_probe);
        }
        if let Some(d) = backend.health_deadline() {
            wake = wake.min(clock::start() + d);
        }
        tokio::select! {
            _ = retired.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
            // An idle pooled connection got bytes or a close: drop it now, not at its next
            // use (HAProxy watches its idle connections the same way).
            _ = conns.idle_activity() => {}
        }
        conns.reap();
        if let Some(change) = backend.poll_health(clock::now()) {
            log_health_change(&pool, &backend, change);
        }
        if hc.kind == ProbeKind::None || Instant::now() < next_probe {
            continue;
        }
        next_probe = Instant::now() + hc.interval;
        let ok = tokio::select! {
            _ = retired.cancelled() => return,
            ok = probe(&backend, &hc, conns.tls.as_ref()) => ok,
        };
        if !ok {
            inc(&conns.stats.probe_failures);
        }
        for change in backend.record_probe(ok, clock::now()) {
            log_health_change(&pool, &backend, change);
        }
    }
}

/// One probe under the configured timeout; an HTTP probe of a TLS pool goes over `tls`.
pub async fn probe(backend: &Backend, hc: &HealthCheckConfig, tls: Option<&BackendTls>) -> bool {
    let deadline = Instant::now() + hc.timeout;
    match tokio::time::timeout_at(deadline, probe_inner(backend, &hc.kind, tls, deadline)).await {
        Ok(Ok(())) => true,
        Ok(Err(reason)) => {
            debug!(%reason, "probe failed");
            false
        }
        Err(_) => {
            debug!("probe timed out");
            false
        }
    }
}

/// Why a health probe failed (the backend side, always).
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Tls(#[from] HandshakeError),
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("building the probe request: {0}")]
    Request(#[from] http::Error),
    #[error("request: {0}")]
    Send(hyper::Error),
    #[error("status {status} outside {low}-{high}")]
    Status { status: u16, low: u16, high: u16 },
    #[error("gRPC health check: {0}")]
    Grpc(#[from] GrpcProbeError),
}

async fn probe_inner(
    backend: &Backend,
    kind: &ProbeKind,
    tls: Option<&BackendTls>,
    deadline: Instant,
) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(backend.addr)
        .await
        .map_err(ProbeError::Connect)?;
    if let ProbeKind::Grpc { service, host } = kind {
        let authority = host.clone().unwrap_or_else(|| backend.addr.to_string());
        return Ok(grpc_health::check(stream, &authority, service).await?);
    }
    let ProbeKind::Http {
        method,
        path,
        host,
        expect,
    } = kind
    else {
        return Ok(());
    };
    let _ = stream.set_nodelay(true);
    let stream = secure(tls, stream, deadline).await?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ProbeError::Handshake)?;
    let driver = tokio::spawn(conn);
    // Over TLS the backend expects the name it was reached by.
    let host = host
        .clone()
        .or_else(|| tls.map(|t| t.server_name()))
        .unwrap_or_else(|| backend.addr.to_string());
    let req = Request::builder()
        .method(method.clone())
        .uri(path.as_str())
        .header(
            header::HOST,
            HeaderValue::from_str(&host).map_err(http::Error::from)?,
        )
        .header(header::USER_AGENT, "lbd-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    let result = tx.send_request(req).await;
    driver.abort();
    let resp = result.map_err(ProbeError::Send)?;
    let status = resp.status().as_u16();
    if (expect.0..=expect.1).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status {
            status,
            low: expect.0,
            high: expect.1,
        })
    }
}

/// Log a backend's health change at info (transitions are operator-relevant events).
pub fn log_health_change(pool: &str, backend: &Backend, change: Change) {
    match change {
        Change::BecameHealthy { probes } => {
            info!(pool, backend = %backend.addr, probes, "backend is healthy")
        }
        Change::BecameUnhealthy { probes } => {
            warn!(pool, backend = %backend.addr, probes, "backend is unhealthy")
        }
        Change::Ejected {
            duration,
            ejections,
            ..
        } => warn!(
            pool,
            backend = %backend.addr,
            eject_ms = duration.as_millis() as u64,
            ejections,
            "backend ejected after consecutive failures"
        ),
        Change::Reinstated => info!(pool, backend = %backend.addr, "backend ejection ended"),
    }
}
