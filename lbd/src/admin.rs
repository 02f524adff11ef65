//! The admin listener (default 127.0.0.1:9100): `/metrics`, `/healthz`, `/readyz`,
//! `/status` (JSON: node, phase, the vrrpd coupling, the peer link; what `lbd status` reads),
//! `/backends` (state table) and `POST /backends/drain|undrain?pool=P&backend=ADDR` (also
//! recorded in the soft state, so the drain replicates to the peer node).
//!
//! Separate from the proxy listeners so scraping never competes with client limits, and bound
//! to loopback by default because the metrics name every backend.
//!
//! ## Authorisation
//! Reads (`GET`/`HEAD`) are open to whoever reaches the admin address. Every other method
//! changes state (or may, in a later endpoint) and needs `Authorization: Bearer TOKEN`, the
//! token read from `global.admin_token_file` (re-read on reload). Without that file the write
//! endpoints are disabled (403), never open. A refusal (403, or 401 with
//! `WWW-Authenticate: Bearer`) changes nothing, here or on the peer, and is counted in
//! `lbd_admin_requests_rejected_total{reason}`. The token is compared in constant time.
//!
//! `/metrics` renders the *current* snapshot: a backend removed by a reload disappears
//! from the output; a kept one keeps its counters (see `server.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::AdminToken;
use crate::metrics::{get, AdminRejection, Exposition};
use crate::server::{Phase, Server};

/// Bind the admin listener and serve it in the background; returns the bound address.
pub async fn start(server: Arc<Server>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let server = Arc::clone(&server);
                    async move { Ok::<_, Infallible>(route(&server, &req, peer)) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(error = %e, "admin connection error");
                }
            });
        }
    });
    Ok(local)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The answer to a refused admin write request.
fn refusal(why: AdminRejection) -> Response<Full<Bytes>> {
    match why {
        AdminRejection::Disabled => text(
            StatusCode::FORBIDDEN,
            "admin write endpoints are disabled: set [global] admin_token_file to a file \
             (mode 0600, at least 16 bytes) and send `Authorization: Bearer TOKEN`\n",
        ),
        AdminRejection::MissingToken | AdminRejection::BadToken => {
            let body = if why == AdminRejection::MissingToken {
                "401 this endpoint needs `Authorization: Bearer TOKEN` (global.admin_token_file)\n"
            } else {
                "401 wrong admin token\n"
            };
            let mut r = text(StatusCode::UNAUTHORIZED, body);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"lbd-admin\""),
            );
            r
        }
    }
}

/// May this request change state? `Ok` when `token` is configured and the request carries it.
pub fn authorize(token: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), AdminRejection> {
    let Some(token) = token else {
        return Err(AdminRejection::Disabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .ok_or(AdminRejection::MissingToken)?;
    if tokens_equal(&token.0, presented) {
        Ok(())
    } else {
        Err(AdminRejection::BadToken)
    }
}

/// The credentials of an `Authorization: Bearer TOKEN` value (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Constant-time comparison that also hides the expected token's length: both sides go
/// through HMAC-SHA256 under a fixed key, and the tags are compared with `verify_slice`.
fn tokens_equal(expected: &[u8], presented: &[u8]) -> bool {
    let tag = |t: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"lbd admin token")
            .expect("HMAC takes a key of any length");
        m.update(t);
        m
    };
    let want = tag(expected).finalize().into_bytes();
    tag(presented).verify_slice(&want).is_ok()
}

/// Someone guessing tokens would otherwise write a log line per guess.
static REFUSED_LOG: crate::log_limit::LogLimiter = crate::log_limit::LogLimiter::new();

/// Reads are open; any other method must pass [`authorize`] first.
fn route(server: &Server, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let rt = server.snapshot();
        if let Err(why) = authorize(rt.config.global.admin_token.as_ref(), req.headers()) {
            crate::metrics::inc(&server.engine().stats.admin_rejected[why.index()]);
            REFUSED_LOG.note(|suppressed| {
                warn!(client = %peer, method = %req.method(), path = req.uri().path(), reason = why.as_str(), suppressed, "admin write request refused")
            });
            return refusal(why);
        }
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/backends/drain") => set_drained(server, req.uri().query(), true),
        (&Method::POST, "/backends/undrain") => set_drained(server, req.uri().query(), false),
        (_, "/backends") => text(StatusCode::OK, backends(server)),
        (_, path) => route_get(server, path),
    }
}

fn route_get(server: &Server, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => text(StatusCode::OK, render(server)),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/status" => {
            let mut r = text(StatusCode::OK, status_json(server));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        "/readyz" => match *server.phase.borrow() {
            Phase::Serving => text(StatusCode::OK, "serving\n"),
            p => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{p:?}\n").to_lowercase(),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/status`: the node, the lifecycle phase and the vrrpd coupling, as one JSON object.
pub fn status_json(server: &Server) -> String {
    let rt = server.snapshot();
    let phase = format!("{:?}", *server.phase.borrow()).to_lowercase();
    let body = serde_json::json!({
        "node": rt.config.global.node_name,
        "phase": phase,
        "generation": rt.generation,
        "vrrp": server.vrrp.status(),
        "peer": crate::peer::status_value(
            server.peer.as_ref(),
            &server.engine().soft,
            crate::coupling::readiness::ready_peer(server.peer.as_ref()),
        ),
    });
    let mut out = serde_json::to_string_pretty(&body).unwrap_or_else(|_| "{}".into());
    out.push('\n');
    out
}

/// One line per backend: pool, address and its state flags.
fn backends(server: &Server) -> String {
    let rt = server.snapshot();
    let mut out = String::from("pool backend up healthy ejected drained in_flight\n");
    for p in &rt.pools {
        for b in &p.pool.backends {
            out.push_str(&format!(
                "{} {} {} {} {} {} {}\n",
                p.name(),
                b.addr,
                u8::from(b.is_available()),
                u8::from(b.is_healthy()),
                u8::from(b.is_ejected()),
                u8::from(b.is_drained()),
                b.in_flight()
            ));
        }
    }
    out
}

/// `POST /backends/drain?pool=P&backend=ADDR`: stop sending new requests to a backend (in-flight
/// ones finish); `/backends/undrain` reverses it. `pool` may be omitted to act on every pool.
fn set_drained(server: &Server, query: Option<&str>, drained: bool) -> Response<Full<Bytes>> {
    let mut pool = None;
    let mut backend = None;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("pool", v)) => pool = Some(v),
            Some(("backend", v)) => backend = Some(v),
            _ => {}
        }
    }
    let Some(backend) = backend.and_then(|b| b.parse::<SocketAddr>().ok()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "usage: POST /backends/drain?pool=NAME&backend=IP:PORT\n",
        );
    };
    let rt = server.snapshot();
    let mut changed = 0;
    for p in rt
        .pools
        .iter()
        .filter(|p| pool.is_none_or(|n| n == p.name()))
    {
        for b in p.pool.backends.iter().filter(|b| b.addr == backend) {
            b.set_drained(drained);
            // Recorded in the soft state too, so the peer node (and this node's next
            // incarnation, through the peer) drains the same backend.
            server.engine().soft.set_drained(
                p.name(),
                &b.addr.to_string(),
                drained,
                crate::clock::now(),
            );
            tracing::info!(pool = p.name(), backend = %b.addr, drained, "admin changed backend drain state");
            changed += 1;
        }
    }
    if changed == 0 {
        return text(StatusCode::NOT_FOUND, "no such backend\n");
    }
    if let Some(peer) = &server.peer {
        peer.kick();
    }
    let verb = if drained { "drained" } else { "undrained" };
    text(StatusCode::OK, format!("{verb} {changed} backend(s)\n"))
}

/// The Prometheus text exposition of every metric: each owner renders its own families.
pub fn render(server: &Server) -> String {
    let mut e = Exposition::new();
    server.engine().stats.render(&mut e);
    crate::park::render_metrics(&mut e);
    crate::access_log::render_metrics(&mut e);
    crate::tls::render_metrics(&mut e);
    crate::tls::tickets::render_metrics(crate::tls::tickets::ring(), &mut e);
    server.engine().stats.http2_cuts.render(&mut e);
    render_rejections(&server.engine().stats, &mut e);
    server.vrrp.status().render_metrics(&mut e);
    crate::peer::render_metrics(server.peer.as_ref(), &mut e);
    server
        .snapshot()
        .render_metrics(&server.engine().soft, &mut e);
    crate::softstate::persist::render_metrics(&server.engine().soft, &mut e);
    e.finish()
}

/// Admin write requests refused, by reason.
fn render_rejections(s: &crate::metrics::GlobalStats, e: &mut Exposition) {
    e.family(
        "lbd_admin_requests_rejected_total",
        "counter",
        "Admin write requests refused (disabled: no admin_token_file; missing_token; bad_token).",
    );
    for r in AdminRejection::ALL {
        e.sample(
            "lbd_admin_requests_rejected_total",
            &[("reason", r.as_str())],
            get(&s.admin_rejected[r.index()]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().expect("value"));
        }
        h
    }

    #[test]
    fn writes_need_the_configured_bearer_token() {
        let token = AdminToken(b"0123456789abcdef-secret".to_vec());
        let t = Some(&token);
        assert_eq!(
            authorize(t, &headers(Some("Bearer 0123456789abcdef-secret"))),
            Ok(())
        );
        assert_eq!(
            authorize(t, &headers(Some("bearer  0123456789abcdef-secret "))),
            Ok(())
        );
        assert_eq!(
            authorize(t, &headers(None)),
            Err(AdminRejection::MissingToken)
        );
        for missing in [
            "Basic 0123456789abcdef-secret",
            "Bearer",
            "Bearer   ",
            "0123456789abcdef-secret",
        ] {
            assert_eq!(
                authorize(t, &headers(Some(missing))),
                Err(AdminRejection::MissingToken),
                "{missing:?}"
            );
        }
        for bad in [
            "Bearer 0123456789abcdef-secreT",
            "Bearer 0123456789abcdef-secret2",
            "Bearer 0123456789abcdef",
        ] {
            assert_eq!(
                authorize(t, &headers(Some(bad))),
                Err(AdminRejection::BadToken),
                "{bad:?}"
            );
        }
        // No token configured: disabled, whatever the request carries.
        assert_eq!(
            authorize(None, &headers(Some("Bearer 0123456789abcdef-secret"))),
            Err(AdminRejection::Disabled)
        );
    }

    #[test]
    fn rejections_answer_403_or_401_with_a_challenge() {
        assert_eq!(
            refusal(AdminRejection::Disabled).status(),
            StatusCode::FORBIDDEN
        );
        for r in [AdminRejection::MissingToken, AdminRejection::BadToken] {
            let resp = refusal(r);
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert!(resp.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .is_ok_and(|v| v.starts_with("Bearer")));
        }
        for (i, r) in AdminRejection::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "ALL is in declaration order");
        }
    }
}
