//! tracing setup shared by both daemons: plain text for a terminal, JSON for log shippers.
//!
//! The filter comes from `LBPAIR_LOG` (tracing's env-filter syntax, e.g.
//! `info,vrrpd::rx=debug`), else from the config's level.
//!
//! Lines go to stderr through a writer thread (tracing-appender's non-blocking writer, lossy):
//! a daemon thread only queues a line. Why: a write to stderr can block, for as long as the
//! reader lets it (journald under I/O pressure, a full pipe, a file throttled for dirty
//! pages), and vrrpd's advert timer or lbd's heartbeat to vrrpd must never wait on a log
//! sink. Past [`LINES_QUEUED`] waiting lines new ones are dropped and counted
//! ([`dropped_lines`]), as HAProxy's log rings do.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

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

/// Log lines that may wait for the writer thread before new ones are dropped.
pub const LINES_QUEUED: usize = 16_384;

/// The installed writer's count of dropped lines.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped because the writer thread was behind (stderr blocked).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
}

/// Keeps the log writer thread; dropping it flushes the lines still queued. Hold it until
/// the daemon exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Install the global subscriber. Safe to call more than once (later calls are ignored),
/// which keeps tests that start several daemons in one process simple.
pub fn init(format: LogFormat, default_filter: &str) -> LogGuard {
    let filter = EnvFilter::try_from_env(LOG_ENV)
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // netlink-packet-route warns on every link dump when the kernel is newer than the
        // crate's attribute tables; harmless, and it would drown the daemon's own lines.
        .add_directive(QUIET_NETLINK.parse().expect("static directive"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LINES_QUEUED)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let installed = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        // A subscriber was already installed: this writer would never see a line.
        return LogGuard { _writer: None };
    }
    let _ = DROPPED.set(dropped);
    LogGuard {
        _writer: Some(guard),
    }
}
