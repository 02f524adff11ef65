//! Upstream side: the backends lbd forwards to.
//!
//! - [`backend`] per-backend runtime state shared by the proxy and the balancers (atomics, no locks
//!   on the pick path) and the [`backend::Pool`] that groups backends with a balancer.
//! - [`balance`] the balancing algorithms (round robin, smooth weighted, least connections,
//!   power of two choices, IP hash, Maglev).
//! - [`health`]  the pure (sans-IO, no clock) active rise/fall and passive ejection state machines.
//! - [`conns`]   a backend's upstream connections: the keep-alive idle pool on hyper's low-level http1 client.
//! - [`h2`]      a backend's HTTP/2 connections (pools with `protocol = "h2"`): multiplexed, bounded by
//!   the backend's max concurrent streams.
//! - [`grpc_health`] the gRPC health check (`grpc.health.v1.Health/Check`), its two messages
//!   encoded by hand.
//! - [`checker`] the async probe loop that feeds [`health`] through [`backend::Backend`].
//! - [`tls`]     TLS to backends (`[pool.tls]`): the client setup, the handshake, its failures.

pub mod backend;
pub mod balance;
pub mod checker;
pub mod conns;
pub mod grpc_health;
pub mod h2;
pub mod health;
pub mod tls;
