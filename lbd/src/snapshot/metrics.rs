//! The metric families a snapshot owns: its generation, its pools and backends, its
//! rate limiters, and the soft-state tables its pools use.

use std::sync::atomic::Ordering;

use super::Snapshot;
use crate::metrics::{get, DiscardReason, Exposition, STATUS_CLASSES};

impl Snapshot {
    /// Every family of this snapshot, with the soft-state tables' sizes from `soft`.
    pub fn render_metrics(&self, soft: &crate::softstate::SoftState, e: &mut Exposition) {
        e.family(
            "lbd_config_generation",
            "gauge",
            "Generation of the config in use.",
        );
        e.sample("lbd_config_generation", &[], self.generation);

        render_datapath(e, self, soft);
        self.render_tls(e);
        self.render_pools(e);
        self.render_backends(e);
        let backends = self
            .pools
            .iter()
            .flat_map(|p| p.conns.iter().map(move |c| (p.name(), &**c)));
        crate::upstream::tls::render_metrics(e, backends);
    }

    /// Seconds until each TLS certificate expires (negative once expired).
    fn render_tls(&self, e: &mut Exposition) {
        if self.tls.is_empty() {
            return;
        }
        e.family(
            "lbd_tls_cert_expiry_seconds",
            "gauge",
            "Seconds until the TLS certificate expires (negative once it has).",
        );
        let now = std::time::SystemTime::now();
        for (listener, slot) in &self.tls {
            for c in &slot.current().certs {
                let left = match c.not_after.duration_since(now) {
                    Ok(d) => d.as_secs() as i64,
                    Err(e) => -(e.duration().as_secs() as i64),
                };
                e.sample(
                    "lbd_tls_cert_expiry_seconds",
                    &[("listener", listener), ("name", &c.name)],
                    left,
                );
            }
        }
    }

    /// Queue and refusal families per pool.
    fn render_pools(&self, e: &mut Exposition) {
        e.family(
            "lbd_pool_queue_depth",
            "gauge",
            "Requests waiting for a backend below max_conns.",
        );
        for p in &self.pools {
            e.sample(
                "lbd_pool_queue_depth",
                &[("pool", p.name())],
                p.stats.queue_depth.load(Ordering::Relaxed),
            );
        }
        for (name, help, pick) in [
            (
                "lbd_pool_queue_full_total",
                "Requests refused because the queue was full.",
                0usize,
            ),
            (
                "lbd_pool_queue_timeouts_total",
                "Requests that waited in the queue too long.",
                1,
            ),
            ("lbd_pool_retries_total", "Retries within the pool.", 2),
            (
                "lbd_pool_no_healthy_backend_total",
                "Requests refused because no backend was available.",
                3,
            ),
        ] {
            e.family(name, "counter", help);
            for p in &self.pools {
                let v = match pick {
                    0 => get(&p.stats.queue_full),
                    1 => get(&p.stats.queue_timeouts),
                    2 => get(&p.stats.retries),
                    _ => get(&p.stats.no_healthy),
                };
                e.sample(name, &[("pool", p.name())], v);
            }
        }
    }

    /// Per-backend state, traffic, connection and latency families.
    fn render_backends(&self, e: &mut Exposition) {
        let backends = || {
            self.pools.iter().flat_map(|p| {
                p.pool
                    .backends
                    .iter()
                    .zip(&p.conns)
                    .map(move |(b, c)| (p.name(), b, c))
            })
        };
        e.family(
            "lbd_backend_up",
            "gauge",
            "1 when the backend may receive traffic (healthy, not ejected, not drained).",
        );
        for (pool, b, _) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_up",
                &[("pool", pool), ("backend", &addr)],
                u8::from(b.is_available()),
            );
        }
        e.family(
            "lbd_backend_healthy",
            "gauge",
            "Active health check verdict.",
        );
        for (pool, b, _) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_healthy",
                &[("pool", pool), ("backend", &addr)],
                u8::from(b.is_healthy()),
            );
        }
        e.family("lbd_backend_ejected", "gauge", "1 while passively ejected.");
        for (pool, b, _) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_ejected",
                &[("pool", pool), ("backend", &addr)],
                u8::from(b.is_ejected()),
            );
        }
        e.family(
            "lbd_backend_in_flight",
            "gauge",
            "Requests in progress on the backend.",
        );
        for (pool, b, _) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_in_flight",
                &[("pool", pool), ("backend", &addr)],
                b.in_flight(),
            );
        }
        e.family(
            "lbd_backend_connections",
            "gauge",
            "Open upstream connections (busy or idle).",
        );
        for (pool, b, _) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_connections",
                &[("pool", pool), ("backend", &addr)],
                b.active_conns(),
            );
        }
        e.family(
            "lbd_backend_idle_connections",
            "gauge",
            "Idle pooled upstream connections.",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_idle_connections",
                &[("pool", pool), ("backend", &addr)],
                c.idle_count(),
            );
        }
        e.family(
            "lbd_backend_responses_total",
            "counter",
            "Backend responses by status class.",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            for (i, class) in STATUS_CLASSES.iter().enumerate() {
                e.sample(
                    "lbd_backend_responses_total",
                    &[("pool", pool), ("backend", &addr), ("class", class)],
                    get(&c.stats.responses[i]),
                );
            }
        }
        e.family(
            "lbd_backend_failures_total",
            "counter",
            "Attempts that got no response (connect error, reset, timeout).",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_failures_total",
                &[("pool", pool), ("backend", &addr)],
                get(&c.stats.failures),
            );
        }
        e.family(
            "lbd_backend_probe_failures_total",
            "counter",
            "Failed active health probes.",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_probe_failures_total",
                &[("pool", pool), ("backend", &addr)],
                get(&c.stats.probe_failures),
            );
        }
        e.family(
            "lbd_backend_connections_opened_total",
            "counter",
            "Upstream connections opened.",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_connections_opened_total",
                &[("pool", pool), ("backend", &addr)],
                get(&c.stats.conns_new),
            );
        }
        e.family(
        "lbd_backend_connections_reused_total",
        "counter",
        "Requests sent on a pooled keep-alive connection (reuse share = reused / (reused + opened)).",
    );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_connections_reused_total",
                &[("pool", pool), ("backend", &addr)],
                get(&c.stats.conns_reused),
            );
        }
        e.family(
        "lbd_upstream_conn_discarded_total",
        "counter",
        "Upstream connections closed instead of reused: unexpected_bytes (bytes no request asked for, never relayed), idle_closed (closed by the backend while pooled), h2_goaway (an HTTP/2 connection the backend ended with GOAWAY), h2_error (an HTTP/2 connection that failed).",
    );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            for reason in DiscardReason::ALL {
                e.sample(
                    "lbd_upstream_conn_discarded_total",
                    &[
                        ("pool", pool),
                        ("backend", &addr),
                        ("reason", reason.as_str()),
                    ],
                    get(&c.stats.conns_discarded[reason as usize]),
                );
            }
        }
        e.family(
            "lbd_backend_h2_connections",
            "gauge",
            "HTTP/2 connections open to the backend (pools with protocol = \"h2\").",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.sample(
                "lbd_backend_h2_connections",
                &[("pool", pool), ("backend", &addr)],
                c.h2.open_count(),
            );
        }
        e.family(
            "lbd_backend_response_seconds",
            "histogram",
            "Time from sending the request to the backend's response head.",
        );
        for (pool, b, c) in backends() {
            let addr = b.addr.to_string();
            e.histogram(
                "lbd_backend_response_seconds",
                &[("pool", pool), ("backend", &addr)],
                &c.stats.latency,
            );
        }
    }
}

/// The sticky-session and rate-limit families and their tables' sizes.
fn render_datapath(e: &mut Exposition, rt: &Snapshot, soft: &crate::softstate::SoftState) {
    for (name, help, sticky) in [
        (
            "lbd_backend_requests_total",
            "Requests sent to the backend (every attempt, retries included).",
            false,
        ),
        (
            "lbd_backend_sticky_requests_total",
            "Requests sent to the backend because a sticky cookie pinned them to it (sticky \
             share = this / lbd_backend_requests_total).",
            true,
        ),
    ] {
        e.family(name, "counter", help);
        for p in &rt.pools {
            for (b, c) in p.pool.backends.iter().zip(&p.conns) {
                let addr = b.addr.to_string();
                let v = if sticky {
                    get(&c.stats.sticky_requests)
                } else {
                    get(&c.stats.requests)
                };
                e.sample(name, &[("pool", p.name()), ("backend", &addr)], v);
            }
        }
    }
    if !rt.limiters.all.is_empty() {
        for (name, help, hashed) in [
            (
                "lbd_rate_limited_total",
                "Requests answered 429 by a rate limiter.",
                false,
            ),
            (
                "lbd_rate_limit_keys_hashed_total",
                "Keys longer than the limiter's max_key_bytes, replaced by their SHA-256.",
                true,
            ),
        ] {
            e.family(name, "counter", help);
            for l in &rt.limiters.all {
                let c = if hashed { &l.hashed } else { &l.denied };
                e.sample(name, &[("limiter", &l.name)], get(c));
            }
        }
    }
    render_soft_tables(e, rt, soft);
}

/// Entries, estimated bytes and evictions of the sticky (per learn-mode pool) and rate-limit
/// tables.
fn render_soft_tables(e: &mut Exposition, rt: &Snapshot, soft: &crate::softstate::SoftState) {
    let learn_pools: Vec<&str> = rt
        .pools
        .iter()
        .filter(|p| {
            p.sticky
                .as_ref()
                .is_some_and(|s| s.mode == crate::config::StickyMode::Learn)
        })
        .map(|p| p.name())
        .collect();
    let usage: Vec<_> = learn_pools.iter().map(|p| soft.sticky_usage(p)).collect();
    for (name, help, bytes) in [
        (
            "lbd_sticky_table_entries",
            "Learn-mode sticky entries held for the pool (one table serves all learn pools).",
            false,
        ),
        (
            "lbd_sticky_table_bytes",
            "Estimated bytes of the pool's learn-mode sticky entries (2 x key + overhead each).",
            true,
        ),
    ] {
        e.family(name, "gauge", help);
        for (pool, u) in learn_pools.iter().zip(&usage) {
            e.sample(
                name,
                &[("pool", pool)],
                if bytes { u.bytes } else { u.entries },
            );
        }
    }
    let (_, sticky) = soft.sticky_table();
    let (rate, rate_counters) = soft.rate_table();
    let families: [(&str, &str, &str, u64); 5] = [
        (
            "lbd_sticky_evictions_total",
            "counter",
            "Sticky entries evicted to keep the table within max_entries / max_bytes.",
            sticky.evictions,
        ),
        (
            "lbd_sticky_keys_too_long_total",
            "counter",
            "Session cookie values not learned: longer than the pool's max_key_bytes.",
            sticky.keys_too_long,
        ),
        (
            "lbd_rate_limit_table_entries",
            "gauge",
            "Rate-limit buckets held.",
            rate.entries as u64,
        ),
        (
            "lbd_rate_limit_table_bytes",
            "gauge",
            "Estimated bytes of the rate-limit buckets (2 x key + overhead each).",
            rate.bytes as u64,
        ),
        (
            "lbd_rate_limit_evictions_total",
            "counter",
            "Rate-limit buckets evicted to keep the table within its bounds.",
            rate_counters.evictions,
        ),
    ];
    for (name, kind, help, value) in families {
        e.family(name, kind, help);
        e.sample(name, &[], value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_families_show_sticky_share_and_denials() {
        let text = "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:8080\"\n\
            [[pool]]\nname = \"web\"\n[pool.sticky]\nmode = \"insert\"\n\
            [[pool.backend]]\naddress = \"127.0.0.1:9001\"\n\
            [[rate_limit]]\nname = \"per-ip\"\nkey = \"client_ip\"\nrate = 1\nburst = 1\n";
        let cfg = crate::config::LbConfig::from_source(&shared::config::Source::from_text(
            "t.toml", text,
        ))
        .expect("valid");
        let rt = Snapshot::build(cfg, None, 1).expect("snapshot");
        let stats = &rt.pools[0].conns[0].stats;
        for _ in 0..4 {
            crate::metrics::inc(&stats.requests);
        }
        crate::metrics::inc(&stats.sticky_requests);
        rt.limiters.all[0]
            .denied
            .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        let mut e = Exposition::new();
        let soft = crate::softstate::SoftState::new("a", crate::snapshot::soft_limits(&rt.config));
        rt.render_metrics(&soft, &mut e);
        let out = e.finish();
        for line in [
            "lbd_backend_requests_total{pool=\"web\",backend=\"127.0.0.1:9001\"} 4\n",
            "lbd_backend_sticky_requests_total{pool=\"web\",backend=\"127.0.0.1:9001\"} 1\n",
            "lbd_rate_limited_total{limiter=\"per-ip\"} 3\n",
            "# TYPE lbd_rate_limited_total counter\n",
            "lbd_rate_limit_keys_hashed_total{limiter=\"per-ip\"} 0\n",
            "# TYPE lbd_rate_limit_table_bytes gauge\n",
            "lbd_rate_limit_table_bytes 0\n",
            "lbd_sticky_evictions_total 0\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
    }
}
