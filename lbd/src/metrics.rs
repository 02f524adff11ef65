//! Counters, gauges and histograms, and their Prometheus text exposition.
//!
//! Everything is a relaxed atomic: metrics are read rarely (a scrape) and written on every
//! request, so the write path must not take a lock. The exposition is hand-written
//! ([`Exposition`]) rather than pulling in a metrics crate. Each owner of counters renders
//! its own families (linkerd's `FmtMetrics` pattern): [`GlobalStats::render`] here, the
//! snapshot its pools, backends and limiters (`runtime/metrics.rs`), the vrrpd
//! coupling, the peer link, the parking lot and the access log theirs; `admin::render` only
//! calls them in turn.
//!
//! Per-backend stats ([`BackendStats`]) live next to the backend's connection pool and are
//! carried over a reload for an unchanged address, so counters keep increasing across
//! reloads as Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ErrorKind;

/// Latency bucket upper bounds in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            d.as_micros().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Status classes counted per backend: index 0..=4 for 1xx..5xx.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub fn status_class(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Per-backend counters.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Responses received from this backend, by status class.
    pub responses: [AtomicU64; 5],
    /// Attempts that failed without a response (connect, reset, timeout).
    pub failures: AtomicU64,
    /// Time to the response head.
    pub latency: Histogram,
    /// Upstream connections opened.
    pub conns_new: AtomicU64,
    /// Requests sent on a pooled (reused) connection.
    pub conns_reused: AtomicU64,
    /// Active health probes that failed.
    pub probe_failures: AtomicU64,
    /// Requests sent to this backend (each attempt, retries included).
    pub requests: AtomicU64,
    /// Of those, requests routed by a sticky pin rather than the balancer: the sticky share
    /// (`sticky_requests / requests`) shows how much stickiness overrides balancing.
    pub sticky_requests: AtomicU64,
    /// Upstream connections thrown away instead of reused, by [`DiscardReason`].
    pub conns_discarded: [AtomicU64; DiscardReason::ALL.len()],
}

/// Why an upstream keep-alive connection was closed instead of being reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// The backend sent bytes no request asked for: past the end of a response as framed
    /// (a body longer than its Content-Length, a body on a HEAD/204/304 answer, a second
    /// response), or while the connection sat idle in the pool. Relaying them would hand one
    /// client's request another answer, so the connection is closed with them unread.
    UnexpectedBytes,
    /// The backend closed (or reset) the connection while it was idle in the pool.
    IdleClosed,
    /// An HTTP/2 connection the backend ended with GOAWAY: it takes no new stream.
    H2Goaway,
    /// An HTTP/2 connection that failed (protocol error, reset, I/O error).
    H2Error,
}

impl DiscardReason {
    pub const ALL: [DiscardReason; 4] = [
        DiscardReason::UnexpectedBytes,
        DiscardReason::IdleClosed,
        DiscardReason::H2Goaway,
        DiscardReason::H2Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DiscardReason::UnexpectedBytes => "unexpected_bytes",
            DiscardReason::IdleClosed => "idle_closed",
            DiscardReason::H2Goaway => "h2_goaway",
            DiscardReason::H2Error => "h2_error",
        }
    }
}

/// Why an admin write request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRejection {
    /// No `global.admin_token_file`: the write endpoints are off.
    Disabled,
    /// No `Authorization: Bearer` header.
    MissingToken,
    /// A token that is not the configured one.
    BadToken,
}

impl AdminRejection {
    pub const ALL: [AdminRejection; 3] = [
        AdminRejection::Disabled,
        AdminRejection::MissingToken,
        AdminRejection::BadToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminRejection::Disabled => "disabled",
            AdminRejection::MissingToken => "missing_token",
            AdminRejection::BadToken => "bad_token",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why lbd cut a client's HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2Cut {
    /// More RST_STREAM frames than `http2.max_resets_per_second` allows (lbd's own check).
    ResetsPerSecond,
    /// h2 ended the connection while a header block was open: a CONTINUATION flood or a
    /// header block over the header list size.
    HeaderBlock,
    /// Any other GOAWAY `ENHANCE_YOUR_CALM` from h2: streams reset before they were taken up
    /// (`max_pending_reset_streams`), too many streams lbd reset for the client's errors
    /// (`max_local_error_reset_streams`), floods of tiny DATA frames.
    EnhanceYourCalm,
    /// Any other connection error h2 found in what the client sent (GOAWAY `PROTOCOL_ERROR`,
    /// `FRAME_SIZE_ERROR`, `COMPRESSION_ERROR`, …).
    ProtocolError,
}

impl Http2Cut {
    pub const ALL: [Http2Cut; 4] = [
        Http2Cut::ResetsPerSecond,
        Http2Cut::HeaderBlock,
        Http2Cut::EnhanceYourCalm,
        Http2Cut::ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Http2Cut::ResetsPerSecond => "resets_per_second",
            Http2Cut::HeaderBlock => "header_block",
            Http2Cut::EnhanceYourCalm => "enhance_your_calm",
            Http2Cut::ProtocolError => "protocol_error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Client HTTP/2 connections cut, by [`Http2Cut`].
#[derive(Debug, Default)]
pub struct Http2Cuts([AtomicU64; Http2Cut::ALL.len()]);

impl Http2Cuts {
    pub fn count(&self, cut: Http2Cut) {
        inc(&self.0[cut.index()]);
    }

    pub fn render(&self, e: &mut Exposition) {
        e.family(
            "lbd_http2_connections_cut_total",
            "counter",
            "Client HTTP/2 connections ended for abuse (resets_per_second, header_block: \
             CONTINUATION flood or oversized header block, enhance_your_calm, protocol_error).",
        );
        for c in Http2Cut::ALL {
            e.sample(
                "lbd_http2_connections_cut_total",
                &[("cause", c.as_str())],
                get(&self.0[c.index()]),
            );
        }
    }
}

impl BackendStats {
    pub fn discarded(&self, reason: DiscardReason) {
        self.conns_discarded[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

impl BackendStats {
    pub fn record_response(&self, status: u16, latency: Duration) {
        self.responses[status_class(status)].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(latency);
    }
}

/// Per-pool counters and gauges.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Requests waiting for a backend below `max_conns`.
    pub queue_depth: AtomicI64,
    pub queue_full: AtomicU64,
    pub queue_timeouts: AtomicU64,
    pub retries: AtomicU64,
    pub no_healthy: AtomicU64,
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct GlobalStats {
    pub client_conns_active: AtomicI64,
    pub client_conns_total: AtomicU64,
    pub requests_total: AtomicU64,
    /// Responses sent to clients, by status class.
    pub responses: [AtomicU64; 5],
    pub errors: [AtomicU64; ErrorKind::ALL.len()],
    pub retries_total: AtomicU64,
    pub retry_budget_exhausted: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub upgrades_total: AtomicU64,
    /// Upgrade requests whose protocols no route allows (`h2c`, …): forwarded as plain
    /// requests without `Upgrade`.
    pub upgrades_stripped_total: AtomicU64,
    /// Requests served by the HTTP/1 fast path (`l7::plain`).
    pub fast_path_requests_total: AtomicU64,
    /// Connections the fast path handed to hyper (a request it does not take).
    pub fast_path_handoffs_total: AtomicU64,
    /// Admin write requests refused, by [`AdminRejection`].
    pub admin_rejected: [AtomicU64; AdminRejection::ALL.len()],
    /// Client connections closed at accept because their IP was at
    /// `global.max_conns_per_client`.
    pub client_conns_over_cap: AtomicU64,
    /// TLS handshakes completed, and failed or timed out.
    pub tls_handshakes: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
    /// Client HTTP/2 connections cut for abuse (rendered by their owner).
    pub http2_cuts: Http2Cuts,
}

impl GlobalStats {
    /// The process-wide request, connection, error, retry and reload families.
    pub fn render(&self, e: &mut Exposition) {
        e.family(
            "lbd_tls_handshakes_total",
            "counter",
            "TLS handshakes on TLS listeners by result (failed: refused, broken or timed out).",
        );
        e.sample(
            "lbd_tls_handshakes_total",
            &[("result", "ok")],
            get(&self.tls_handshakes),
        );
        e.sample(
            "lbd_tls_handshakes_total",
            &[("result", "failed")],
            get(&self.tls_handshake_failures),
        );
        e.family(
            "lbd_client_connections",
            "gauge",
            "Open client connections.",
        );
        e.sample(
            "lbd_client_connections",
            &[],
            self.client_conns_active.load(Ordering::Relaxed),
        );
        e.family(
            "lbd_client_connections_total",
            "counter",
            "Accepted client connections.",
        );
        e.sample(
            "lbd_client_connections_total",
            &[],
            get(&self.client_conns_total),
        );
        e.family("lbd_requests_total", "counter", "Client requests received.");
        e.sample("lbd_requests_total", &[], get(&self.requests_total));
        e.family(
            "lbd_responses_total",
            "counter",
            "Responses sent to clients by status class.",
        );
        for (i, class) in STATUS_CLASSES.iter().enumerate() {
            e.sample(
                "lbd_responses_total",
                &[("class", class)],
                get(&self.responses[i]),
            );
        }
        e.family(
            "lbd_proxy_errors_total",
            "counter",
            "Requests lbd answered itself, by error kind and blamed side.",
        );
        for k in ErrorKind::ALL {
            e.sample(
                "lbd_proxy_errors_total",
                &[("kind", k.as_str()), ("side", k.side().as_str())],
                get(&self.errors[k.index()]),
            );
        }
        e.family(
            "lbd_retries_total",
            "counter",
            "Requests retried on another backend.",
        );
        e.sample("lbd_retries_total", &[], get(&self.retries_total));
        e.family(
            "lbd_retry_budget_exhausted_total",
            "counter",
            "Retries refused by the retry budget.",
        );
        e.sample(
            "lbd_retry_budget_exhausted_total",
            &[],
            get(&self.retry_budget_exhausted),
        );
        e.family(
            "lbd_upgrades_total",
            "counter",
            "Upgraded (WebSocket) tunnels opened.",
        );
        e.sample("lbd_upgrades_total", &[], get(&self.upgrades_total));
        e.family(
            "lbd_upgrades_stripped_total",
            "counter",
            "Upgrade requests for a protocol the route does not tunnel, forwarded without Upgrade.",
        );
        e.sample(
            "lbd_upgrades_stripped_total",
            &[],
            get(&self.upgrades_stripped_total),
        );
        e.family(
            "lbd_http1_fast_path_requests_total",
            "counter",
            "Requests served by lbd's own HTTP/1 engine (the rest are served by hyper).",
        );
        e.sample(
            "lbd_http1_fast_path_requests_total",
            &[],
            get(&self.fast_path_requests_total),
        );
        e.family(
        "lbd_http1_fast_path_handoffs_total",
        "counter",
        "Client connections the HTTP/1 fast path handed to hyper on a request it does not take.",
    );
        e.sample(
            "lbd_http1_fast_path_handoffs_total",
            &[],
            get(&self.fast_path_handoffs_total),
        );
        e.family(
        "lbd_client_conns_rejected_total",
        "counter",
        "Client connections closed at accept (per_client_cap: the IP had max_conns_per_client open).",
    );
        e.sample(
            "lbd_client_conns_rejected_total",
            &[("reason", "per_client_cap")],
            get(&self.client_conns_over_cap),
        );
        e.family(
            "lbd_config_reloads_total",
            "counter",
            "Config reloads by result.",
        );
        e.sample(
            "lbd_config_reloads_total",
            &[("result", "ok")],
            get(&self.reloads_ok),
        );
        e.sample(
            "lbd_config_reloads_total",
            &[("result", "error")],
            get(&self.reloads_failed),
        );
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Builds a Prometheus text exposition, one metric family at a time.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// `# HELP` and `# TYPE` lines; call once per family before its samples.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample; `labels` as `(name, value)` pairs, values escaped here.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket`, `_sum` and `_count` samples of a histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let mut cumulative = 0u64;
        let bucket = format!("{name}_bucket");
        for (i, slot) in h.buckets.iter().enumerate() {
            cumulative += slot.load(Ordering::Relaxed);
            let le = LATENCY_BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, cumulative);
        }
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Read a counter.
pub fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Add one to a counter.
pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_labels_are_escaped() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(60));
        let mut e = Exposition::new();
        e.family("x_seconds", "histogram", "test");
        e.histogram("x_seconds", &[("b", "a\"b")], &h);
        let text = e.finish();
        assert!(
            text.contains("x_seconds_bucket{b=\"a\\\"b\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("le=\"0.01\"} 2\n"), "{text}");
        assert!(text.contains("le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("x_seconds_count{b=\"a\\\"b\"} 3\n"), "{text}");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), 0);
        assert_eq!(status_class(204), 1);
        assert_eq!(status_class(503), 4);
        assert_eq!(status_class(999), 4);
    }
}
