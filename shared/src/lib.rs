//! shared: the library both lbpair daemons stand on.
//!
//! Layout:
//! - [`wire`]      VRRPv3 packet view and `Repr::parse/emit`, the Internet checksum.
//! - [`config`]    reading TOML with file:line:column errors, collecting every validation error.
//! - [`control`]   the local control protocol between vrrpd, lbd and the CLI (line-delimited JSON).
//! - [`peer`]      the peer link between two lbd nodes: records, frames, auth, the replicator.
//! - [`telemetry`] tracing setup, plain or JSON.
//! - [`shutdown`]  signals mapped to one shutdown path: SIGTERM drains, SIGINT is fast.
//! - [`systemd`]   `Type=notify` readiness, watchdog pings, reload and stop notices.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod peer;
pub mod private_file;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod wire;
