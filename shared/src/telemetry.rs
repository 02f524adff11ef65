//! tracing setup shared by both daemons: plain text for a terminal, JSON for log shippers.
//!
//! The filter comes from `LBPAIR_LOG` (tracing's env-filter syntax, e.g.
//! `info,vrrpd::rx=debug`), else from the config's level.

use std::io::IsTerminal;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

impl LogFormat {
    pub const VALID: &'static str = "\"plain\" or \"json\"";
}

/// The env var that overrides the configured log filter.
pub const LOG_ENV: &str = "LBPAIR_LOG";

const QUIET_NETLINK: &str = "netlink_packet_route=error";

/// Install the global subscriber. Safe to call more than once (later calls are ignored),
/// which keeps tests that start several daemons in one process simple.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // netlink-packet-route warns on every link dump when the kernel is newer than the
        // crate's attribute tables; harmless, and it would drown the daemon's own lines.
        .add_directive(QUIET_NETLINK.parse().expect("static directive"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
