//! shared's integration tests, linked as one test binary (`cargo test -p shared --test it`).
//!
//! Each module was once a test binary of its own (`tests/<module>.rs`); one binary links once
//! instead of seven times. Run one module with its name as the filter:
//! `cargo test -p shared --test it peer_frame::`.

// The in-memory store and back-to-back harness of peer_auth and peer_replicator.
mod peer_common;

mod peer_auth;
mod peer_frame;
mod peer_replicator;
mod wire_captured;
mod wire_ipv4;
mod wire_proptest;
mod wire_vrrp;
