//! One line per request on stdout: `off`, `plain` or `json` (`global.access_log`).
//!
//! Kept apart from tracing on purpose: the access log is data for log shippers with a fixed
//! shape, while tracing is for operators and changes with the log level. Lines are produced
//! when the response body ends (or the client goes away), so `bytes` and `duration_ms` cover
//! the whole exchange.
//!
//! A dedicated thread does the writing through a `BufWriter`, flushing whenever its queue runs
//! empty: request handlers never block on stdout (a slow pipe to a log shipper must not stall
//! the proxy). When the bounded queue is full, lines are dropped and counted
//! ([`dropped`]) rather than applying backpressure to clients. [`flush`] is called on exit.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::AccessLogFormat;

/// What one access log line says.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub time: String,
    /// The real client (`headers.trusted_proxies`: the first untrusted X-Forwarded-For hop).
    pub client: IpAddr,
    /// The TCP peer the request came from (the client itself, or a proxy in front).
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub pool: String,
    /// Backend address, or "-" when lbd answered itself.
    pub backend: String,
    pub duration_ms: f64,
    /// Error kind when lbd produced the response, else "-".
    pub error: &'static str,
}

impl Record {
    pub fn plain(&self) -> String {
        format!(
            "{} {} \"{} {}\" {} {} pool={} backend={} duration_ms={:.3} error={} peer={}\n",
            self.time,
            self.client,
            self.method,
            self.path,
            self.status,
            self.bytes,
            self.pool,
            self.backend,
            self.duration_ms,
            self.error,
            self.peer,
        )
    }
}

/// Writes records in the configured format.
#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    pub format: AccessLogFormat,
}

impl AccessLog {
    pub fn enabled(&self) -> bool {
        self.format != AccessLogFormat::Off
    }

    pub fn write(&self, rec: &Record) {
        let line = match self.format {
            AccessLogFormat::Off => return,
            AccessLogFormat::Plain => rec.plain(),
            AccessLogFormat::Json => match serde_json::to_string(rec) {
                Ok(mut s) => {
                    s.push('\n');
                    s
                }
                Err(_) => return,
            },
        };
        match sink().try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Lines queued for the writer thread before new ones are dropped.
const QUEUE: usize = 64 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access log lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Msg {
    Line(String),
    Flush(mpsc::Sender<()>),
}

fn sink() -> &'static SyncSender<Msg> {
    static SINK: OnceLock<SyncSender<Msg>> = OnceLock::new();
    SINK.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx));
        if spawned.is_err() {
            tracing::error!("cannot start the access log thread; access log lines are dropped");
        }
        tx
    })
}

fn writer(rx: Receiver<Msg>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    while let Ok(msg) = rx.recv() {
        let mut next = Some(msg);
        // Write everything already queued, then flush once.
        while let Some(msg) = next {
            match msg {
                // A closed stdout must not take the proxy down.
                Msg::Line(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Msg::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
}

/// Write out every queued line (at exit), waiting at most `timeout`.
pub fn flush(timeout: Duration) {
    let (tx, rx) = mpsc::channel();
    if sink().send(Msg::Flush(tx)).is_ok() {
        let _ = rx.recv_timeout(timeout);
    }
}

/// Wall-clock time as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T08:16:04.123Z`.
pub fn now_rfc3339() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    rfc3339(since)
}

fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_time() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z
        assert_eq!(
            rfc3339(Duration::from_millis(1_709_210_096_789)),
            "2024-02-29T12:34:56.789Z"
        );
    }

    #[test]
    fn plain_and_json_lines() {
        let r = Record {
            time: "t".into(),
            client: "192.0.2.9".parse().expect("ip"),
            peer: "127.0.0.1:5000".parse().expect("addr"),
            method: "GET".into(),
            path: "/a?b".into(),
            status: 200,
            bytes: 12,
            pool: "web".into(),
            backend: "127.0.0.1:9001".into(),
            duration_ms: 1.5,
            error: "-",
        };
        assert_eq!(
            r.plain(),
            "t 192.0.2.9 \"GET /a?b\" 200 12 pool=web backend=127.0.0.1:9001 duration_ms=1.500 error=- peer=127.0.0.1:5000\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(j["status"], 200);
        assert_eq!(j["backend"], "127.0.0.1:9001");
        assert_eq!(j["client"], "192.0.2.9");
        assert_eq!(j["peer"], "127.0.0.1:5000");
    }
}
