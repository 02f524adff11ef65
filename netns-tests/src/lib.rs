//! Failover tests of lbpair in Linux network namespaces. Needs root; fails (never skips)
//! without it, because CI runs as root and a skipped failover test is a silent pass.
//!
//! Layout:
//! - [`topology`] RAII namespaces, bridges, veths and spawned daemons; cleanup on drop,
//!   even on panic, and of namespaces left by a killed earlier run.
//! - [`lan`]      the VRRP LAN (nodes A and B, a client, one bridge) and what can be
//!   observed on it: who holds a VIP, the client's neighbour entries.
//! - [`vrrp`]     vrrpd and keepalived configs and launchers, the RFC 5798 timer oracle.
//! - [`capture`]  VRRP adverts as decoded by tshark.
//! - [`forge`]    a hostile host sending forged adverts (`forge-vrrp`).
//! - [`wait`]     deadlines and polling, scaled by `NETNS_PATIENCE`; `assert_eventually!`.
//! - [`cmd`]      running `ip` and friends with errors that name the command.
//! - [`pair`]     the vrrpd+lbd pair with backends, supervisors, load client and report
//!   (the failover suite, `tests/pair_*.rs`).
//!
//! The scenarios live in `tests/vrrp_*.rs`; `src/bin/measure-vrrp-failover.rs` measures the
//! failover gap a client sees. Topologies are serialised by a process-wide lock, so the
//! tests can run with the default test threads and still not share the CPU with each other.
//!
//! This crate measures real daemons in real time, so it uses `std::time::Instant`: the
//! workspace's ban (for code whose tests pause tokio's clock) doesn't apply here.
#![allow(clippy::disallowed_types)]

pub mod burners;
pub mod capture;
pub mod cmd;
pub mod forge;
pub mod lan;
pub mod pair;
pub mod stall;
pub mod topology;
pub mod vrrp;
pub mod wait;

pub use forge::Forgery;
pub use lan::{Lan, Node, NodeId, LAN_IF};
pub use nix::sys::signal::Signal;
pub use topology::{ProcId, Topology};
pub use vrrp::{master_down_interval, skew_time, vrrpd_bin, Keepalived, VrrpInstance, Vrrpd};
pub use wait::{always_for, eventually, eventually_until, margin, patience, scaled};
