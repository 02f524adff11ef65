//! HTTP/1 framing end to end, over raw TCP: the behaviours lbd's own HTTP/1 fast path
//! (`l7::plain`) must get right, and that hyper already gets right.
//!
//! Everything here is plain HTTP/1.1 semantics (pipelining, chunked and close-delimited
//! bodies, bodiless responses, upstream keep-alive, stale pooled connections, upgrades,
//! hop-by-hop headers, 1xx, truncated and split messages), so each scenario runs twice
//! ([`on_both_paths!`]): `NAME::fast_path` with `[global] http1_fast_path = true` and
//! `NAME::hyper_path` with `false`, and must pass on both.
//!
//! Layout: [`wire`] and [`backend`] are the harness below; the scenarios are in
//! [`connections`], [`responses`], [`hygiene`] (bytes no request asked for), [`forwarding`]
//! (forwarding headers, the real client, path normalisation), [`hostile`] (hostile framing
//! from either side), [`body_limit`], [`backend_tls`] (TLS to backends) and [`grpc`]
//! (HTTP/2 to backends, gRPC), which the fast path leaves to hyper; this file has the lbd
//! config helpers and runs every
//! scenario twice.
//!
//! - [`Wire`]: a byte-exact HTTP/1 reader over one TCP stream (heads through httparse,
//!   bodies by Content-Length, chunked or close), for the test client and the raw backend
//!   alike. It decodes rather than trusts: a stray or missing byte shows up as a bad head
//!   on the next message.
//! - [`RawBackend`]: a loopback backend answering each request with exact bytes chosen by
//!   the test ([`Reply`]), recording every request it read and the connections it accepted.
//!   The hyper-based `TestBackend` can't send chunk extensions, close-delimited bodies or
//!   malformed heads, nor drop a keep-alive connection on purpose.

mod backend;
mod backend_tls;
mod body_limit;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod connections;
mod forwarding;
mod grpc;
mod hostile;
mod http2;
mod hygiene;
mod idle;
mod responses;
mod resumption;
mod tls;
mod wire;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend::*;
use common::*;
use wire::*;

// ---- lbd config ----

/// A pool of raw backends with passive ejection off: tests that provoke errors on purpose
/// must not have the backend ejected under them.
fn raw_pool(name: &str, addrs: &[SocketAddr]) -> String {
    let mut s = format!("[[pool]]\nname = \"{name}\"\n[pool.passive]\nconsecutive_failures = 0\n");
    for a in addrs {
        s.push_str(&format!("[[pool.backend]]\naddress = \"{a}\"\n"));
    }
    s
}

/// `default_pool = "web"`, `[global]` with `global` lines, then `rest` (pools, routes).
fn config(global: &str, rest: &str) -> String {
    format!("default_pool = \"web\"\n[global]\n#GLOBAL\n{global}\n{rest}")
}

const FAST_PATH_ON: &str = "http1_fast_path = true";
const FAST_PATH_OFF: &str = "http1_fast_path = false";

/// Each scenario `fn NAME(global)` becomes two tests: `NAME::fast_path` and
/// `NAME::hyper_path`. A failure on one path only points at that path.
macro_rules! on_both_paths {
    ($($group:ident :: $scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn fast_path() {
                super::$group::$scenario(super::FAST_PATH_ON).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn hyper_path() {
                super::$group::$scenario(super::FAST_PATH_OFF).await;
            }
        }
    )*};
}

async fn start_with(global: &str, web: &RawBackend) -> Lbd {
    Lbd::start(&config(global, &raw_pool("web", &[web.addr]))).await
}

/// The debug line `l7::plain::conn` writes when it hands a connection to hyper.
const HANDOFF_LOG: &str = "handing the connection to hyper";

/// For scenarios of plain requests only: on the fast path, requests were served by it and no
/// connection was handed to hyper (by the log line and by the metrics), so the `fast_path`
/// variant really tested the fast path and not hyper twice; on the hyper path, none was.
async fn assert_stayed_on_the_fast_path(global: &str, lbd: &Lbd) {
    let served = metric(lbd.admin, "lbd_http1_fast_path_requests_total")
        .await
        .unwrap_or(0.0);
    let handoffs = metric(lbd.admin, "lbd_http1_fast_path_handoffs_total")
        .await
        .unwrap_or(0.0);
    if global == FAST_PATH_ON {
        let log = lbd.log_text();
        let handed: Vec<&str> = log.lines().filter(|l| l.contains(HANDOFF_LOG)).collect();
        assert!(
            handed.is_empty(),
            "plain requests handed to hyper: {handed:#?}"
        );
        assert_eq!(handoffs, 0.0, "lbd_http1_fast_path_handoffs_total");
        assert!(served > 0.0, "no request was served by the fast path");
    } else {
        assert_eq!(
            served, 0.0,
            "the fast path served requests while switched off"
        );
    }
}

fn backend_series(name: &str, b: &RawBackend) -> String {
    format!("{name}{{pool=\"web\",backend=\"{}\"}}", b.addr)
}

// ---- every scenario on both paths ----

on_both_paths!(
    tls::routes_redirect_plain_http_to_https,
    connections::local_answers_respect_head_and_connection_close,
    connections::pipelined_requests_in_one_write_are_answered_in_order,
    responses::chunked_response_with_extension_and_trailer_is_relayed,
    responses::close_delimited_response_arrives_whole_and_is_ended,
    responses::head_204_and_304_answers_have_no_body_and_keep_the_connection,
    responses::one_mib_length_and_chunked_responses_arrive_intact,
    connections::content_length_request_bodies_reach_the_backend_exactly,
    connections::chunked_request_body_after_a_get_reaches_the_backend_decoded,
    connections::expect_100_continue_gets_an_interim_answer_then_the_body_goes_through,
    connections::sequential_requests_share_one_backend_connection,
    connections::backend_connection_close_is_honoured_and_not_reused,
    connections::backend_closing_after_each_response_without_saying_so_is_survived,
    connections::pooled_connection_closed_under_a_get_is_retried_on_a_fresh_one,
    responses::malformed_backend_response_gets_502_and_the_connection_recovers,
    connections::websocket_upgrade_after_a_plain_get_tunnels_both_ways,
    responses::hop_by_hop_response_headers_do_not_reach_the_client,
    responses::interim_1xx_before_the_final_response_is_handled,
    responses::truncated_backend_body_is_not_passed_off_as_complete,
    responses::heads_and_chunks_split_into_single_bytes_are_reassembled,
    responses::a_backend_silent_mid_body_is_cut_off,
    responses::backend_response_with_both_lengths_is_not_relayed_ambiguous,
    hygiene::a_stray_response_in_the_same_segment_is_never_relayed,
    hygiene::a_stray_response_in_the_next_segment_is_never_relayed,
    hygiene::a_stray_response_100ms_later_on_an_idle_connection_is_never_relayed,
    hygiene::an_idle_pooled_connection_that_receives_bytes_is_closed_at_once,
    hygiene::a_body_longer_than_its_content_length_is_cut_and_the_connection_dropped,
    hygiene::bytes_after_a_bodiless_response_are_not_relayed,
    hygiene::garbage_after_an_interim_response_is_a_502_and_never_relayed,
    hygiene::h2c_streams_never_get_stray_bytes,
    forwarding::an_untrusted_peers_forwarding_headers_are_replaced,
    forwarding::a_trusted_proxys_forwarding_headers_are_kept_and_name_the_client,
    forwarding::rate_limits_key_on_the_real_client,
    forwarding::ip_hash_balances_by_the_real_client,
    forwarding::paths_are_normalised_before_routing_and_rate_limits,
    hostile::malformed_chunk_lines_with_the_head_get_400,
    hostile::malformed_chunk_line_after_the_head_went_upstream_gets_400,
    hostile::transfer_codings_other_than_chunked_are_refused,
    hostile::backend_fields_with_bare_cr_folding_or_nul_get_502,
    hostile::backend_bare_lf_line_ends_reach_the_client_as_crlf,
    hostile::upgrades_other_than_websocket_and_the_routes_are_stripped,
    body_limit::content_length_over_the_route_limit_gets_413_before_going_upstream,
    body_limit::chunked_body_passing_the_limit_is_cut_off_and_its_connection_dropped,
    backend_tls::verified_backend_serves_and_its_tls_connection_is_reused,
    backend_tls::a_backend_certificate_from_an_unknown_ca_is_refused_with_502,
    backend_tls::a_backend_certificate_for_another_name_is_refused_with_502,
    backend_tls::an_mtls_backend_gets_lbds_client_certificate,
    backend_tls::an_mtls_backend_refuses_lbd_without_a_client_certificate,
    grpc::http1_clients_reach_an_h2_pool,
    grpc::a_reload_switches_a_pools_protocol,
);
