//! lbd's integration tests, one test binary (each costs link time and disk in CI): one
//! module per area, all through the real `lbd` binary and the harness in `common`, except
//! the pure property tests (`router_match`, `softstate_props`, `balance_*`).
//! `it_fast_path` (HTTP/1 framing on both paths, TLS, HTTP/2) is the other binary.

#[path = "../common/mod.rs"]
mod common;

mod balance_algorithms;
mod balance_health;
mod balance_maglev;
mod configs;
mod health;
mod layers;
mod lifecycle;
mod peer;
mod proxy;
mod ratelimit;
mod reload_health;
mod router_match;
mod smuggling;
mod softstate_props;
mod sticky;
mod timeouts;
mod vrrp_pair;
