//! One line per request on stdout: `off`, `plain` or `json` (`global.access_log`).
//!
//! Kept apart from tracing on purpose: the access log is data for log shippers with a fixed
//! shape, while tracing is for operators and changes with the log level. Lines are produced
//! when the response body ends (or the client goes away), so `bytes` and `duration_ms` cover
//! the whole exchange.
//!
//! Lines are batched, as nginx's `access_log ... buffer=` and HAProxy's log rings do: each
//! thread formats its lines straight into a buffer of its own, and a dedicated writer thread
//! takes every thread's batch at least every `FLUSH_EVERY` (100 ms) (sooner once a batch passes
//! `WAKE_AT`) and writes it out. Request handlers never block on stdout (a slow pipe to a log
//! shipper must not stall the proxy), and no request pays a thread wake-up: handing each line
//! to the writer over a channel cost a futex wake and two context switches per request,
//! about a sixth of lbd's CPU under load. A thread's batch is bounded (`MAX_PENDING`);
//! beyond it lines are dropped and counted ([`dropped`]) rather than applying backpressure to
//! clients. Lines from one thread stay in order; lines of different threads are ordered by
//! batch. [`flush`] is called on exit.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::config::AccessLogFormat;
use crate::sync::lock;

/// What one access log line says. Borrowed, so a line costs no allocation before it is
/// written into the thread's batch.
#[derive(Debug, Clone, Serialize)]
pub struct Record<'a> {
    /// When the exchange ended, since the Unix epoch; written as RFC 3339 UTC with
    /// milliseconds.
    #[serde(serialize_with = "time_as_rfc3339")]
    pub time: Duration,
    /// The real client (`headers.trusted_proxies`: the first untrusted X-Forwarded-For hop).
    pub client: IpAddr,
    /// The TCP peer the request came from (the client itself, or a proxy in front).
    pub peer: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    /// The pool's name, or "-" when no route chose one.
    pub pool: &'a str,
    /// Backend address; "-" (`None`) when lbd answered itself.
    #[serde(serialize_with = "backend_or_dash")]
    pub backend: Option<SocketAddr>,
    pub duration_ms: f64,
    /// Error kind when lbd produced the response, else "-".
    pub error: &'static str,
}

impl Record<'_> {
    #[cfg(test)]
    fn plain(&self) -> String {
        let mut out = Vec::new();
        self.write_plain(&mut out);
        String::from_utf8(out).expect("utf-8")
    }

    /// Append the plain line (newline included) to `out`.
    fn write_plain(&self, out: &mut Vec<u8>) {
        write_rfc3339(out, self.time);
        // Writing to a Vec cannot fail.
        let _ = write!(
            out,
            " {} \"{} {}\" {} {} pool={} backend=",
            self.client, self.method, self.path, self.status, self.bytes, self.pool,
        );
        match self.backend {
            Some(b) => {
                let _ = write!(out, "{b}");
            }
            None => out.push(b'-'),
        }
        // Three decimals from whole microseconds: integer formatting, not a float's.
        let micros = (self.duration_ms * 1000.0).round().max(0.0) as u64;
        let _ = writeln!(
            out,
            " duration_ms={}.{:03} error={} peer={}",
            micros / 1000,
            micros % 1000,
            self.error,
            self.peer,
        );
    }

    /// Append the JSON line to `out`; nothing when the record cannot be serialised.
    fn write_json(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if serde_json::to_writer(&mut *out, self).is_ok() {
            out.push(b'\n');
        } else {
            out.truncate(start);
        }
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
        if !self.enabled() {
            return;
        }
        let batch = BATCH.with(Arc::clone);
        let mut batch = lock(&batch);
        if batch.len() >= MAX_PENDING {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = batch.len();
        match self.format {
            AccessLogFormat::Off => {}
            AccessLogFormat::Plain => rec.write_plain(&mut batch),
            AccessLogFormat::Json => rec.write_json(&mut batch),
        }
        if before < WAKE_AT && batch.len() >= WAKE_AT {
            drop(batch);
            writer().unpark();
        }
    }
}

/// The writer takes every thread's batch at least this often: how late a line can appear.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A batch this large wakes the writer before its next round.
const WAKE_AT: usize = 64 * 1024;

/// A thread's batch is never larger than this; past it lines are dropped (and counted) until
/// the writer has taken the batch.
const MAX_PENDING: usize = 4 * 1024 * 1024;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Access log lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// The `lbd_access_log_dropped_total` counter.
pub fn render_metrics(e: &mut crate::metrics::Exposition) {
    e.family(
        "lbd_access_log_dropped_total",
        "counter",
        "Access log lines dropped because the writer fell behind.",
    );
    e.sample("lbd_access_log_dropped_total", &[], dropped());
    e.family(
        "lbd_log_lines_dropped_total",
        "counter",
        "Daemon log lines (not access log) dropped because stderr was blocked and the queue full.",
    );
    e.sample(
        "lbd_log_lines_dropped_total",
        &[],
        shared::telemetry::dropped_lines(),
    );
}

type Batch = Arc<Mutex<Vec<u8>>>;

thread_local! {
    /// This thread's lines not written yet (registered with the writer on first use).
    static BATCH: Batch = register();
}

/// Every thread's batch, in the order the threads first logged.
fn batches() -> &'static Mutex<Vec<Batch>> {
    static BATCHES: OnceLock<Mutex<Vec<Batch>>> = OnceLock::new();
    BATCHES.get_or_init(Mutex::default)
}

fn register() -> Batch {
    writer();
    let batch = Batch::default();
    lock(batches()).push(Arc::clone(&batch));
    batch
}

/// The writer thread, started on first use.
fn writer() -> &'static std::thread::Thread {
    static WRITER: OnceLock<std::thread::Thread> = OnceLock::new();
    WRITER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(|| loop {
                std::thread::park_timeout(FLUSH_EVERY);
                write_out();
            });
        match spawned {
            Ok(handle) => handle.thread().clone(),
            Err(e) => {
                // Batches then fill up to MAX_PENDING and further lines are counted as dropped.
                tracing::error!(error = %e, "cannot start the access log thread; access log lines are dropped");
                std::thread::current()
            }
        }
    })
}

/// Take every thread's batch and write it to stdout. Serialised by the stdout lock, so a
/// [`flush`] and the writer thread never interleave batches. Each thread starts a new batch
/// (the old one's capacity goes with it: a burst's buffer is not kept for good).
fn write_out() {
    static OUT: OnceLock<Mutex<std::io::BufWriter<std::io::Stdout>>> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        Mutex::new(std::io::BufWriter::with_capacity(
            WAKE_AT,
            std::io::stdout(),
        ))
    });
    let mut out = lock(out);
    // Take the batches under the registry's lock and write them after releasing it: a thread
    // logging its first line registers under that lock, and must not wait on a slow stdout.
    let taken: Vec<Vec<u8>> = {
        let mut batches = lock(batches());
        let mut taken = Vec::with_capacity(batches.len());
        // A thread that has ended leaves its batch behind: take it, then forget the thread.
        batches.retain(|batch| {
            taken.push(std::mem::take(&mut *lock(batch)));
            Arc::strong_count(batch) > 1
        });
        taken
    };
    for batch in taken.iter().filter(|b| !b.is_empty()) {
        // A closed stdout must not take the proxy down.
        let _ = out.write_all(batch);
    }
    let _ = out.flush();
}

/// Write out every pending line (at exit), waiting at most `timeout`: a stdout pipe nobody
/// reads must not hold the exit up.
pub fn flush(timeout: Duration) {
    let (done, finished) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("access-log-flush".into())
        .spawn(move || {
            write_out();
            let _ = done.send(());
        });
    if spawned.is_ok() {
        let _ = finished.recv_timeout(timeout);
    }
}

/// Wall-clock time since the Unix epoch (the access log's `time`).
pub fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
fn rfc3339(since_epoch: Duration) -> String {
    let mut out = Vec::new();
    write_rfc3339(&mut out, since_epoch);
    String::from_utf8(out).expect("ascii")
}

thread_local! {
    /// The last second formatted on this thread and its `YYYY-MM-DDTHH:MM:SS`: under load
    /// every line of a second shares it, so a line formats only its milliseconds (nginx
    /// caches its log time the same way).
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// Append `since_epoch` as RFC 3339 UTC with milliseconds, e.g. `2026-11-27T08:16:04.123Z`.
fn write_rfc3339(out: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        prefix = second_prefix(secs);
        SECOND.set((secs, prefix));
    }
    out.extend_from_slice(&prefix);
    let ms = since_epoch.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS` for `secs` since the epoch.
fn second_prefix(secs: u64) -> [u8; 19] {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let text = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
    );
    let mut prefix = [b'?'; 19];
    // A year past 9999 would not fit: its line shows `?`s rather than a wrong date.
    if text.len() == prefix.len() {
        prefix.copy_from_slice(text.as_bytes());
    }
    prefix
}

fn time_as_rfc3339<S: serde::Serializer>(t: &Duration, s: S) -> Result<S::Ok, S::Error> {
    let mut out = Vec::with_capacity(24);
    write_rfc3339(&mut out, *t);
    s.serialize_str(std::str::from_utf8(&out).unwrap_or("?"))
}

fn backend_or_dash<S: serde::Serializer>(b: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match b {
        Some(b) => s.collect_str(b),
        None => s.serialize_str("-"),
    }
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
        // The cached second is reused within it and replaced by the next one.
        assert_eq!(
            rfc3339(Duration::from_millis(1_709_210_096_005)),
            "2024-02-29T12:34:56.005Z"
        );
        assert_eq!(
            rfc3339(Duration::from_millis(1_709_210_097_000)),
            "2024-02-29T12:34:57.000Z"
        );
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn plain_and_json_lines() {
        let mut r = Record {
            time: Duration::from_millis(1_709_210_096_789),
            client: "192.0.2.9".parse().expect("ip"),
            peer: "127.0.0.1:5000".parse().expect("addr"),
            method: "GET",
            path: "/a?b",
            status: 200,
            bytes: 12,
            pool: "web",
            backend: Some("127.0.0.1:9001".parse().expect("addr")),
            duration_ms: 1.5,
            error: "-",
        };
        assert_eq!(
            r.plain(),
            "2024-02-29T12:34:56.789Z 192.0.2.9 \"GET /a?b\" 200 12 pool=web backend=127.0.0.1:9001 duration_ms=1.500 error=- peer=127.0.0.1:5000\n"
        );
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(j["time"], "2024-02-29T12:34:56.789Z");
        r.backend = None;
        assert!(r.plain().contains(" backend=- "), "{}", r.plain());
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(j["backend"], "-");
        r.backend = Some("127.0.0.1:9001".parse().expect("addr"));
        for (ms, text) in [
            (0.0, "0.000"),
            (0.0004, "0.000"),
            (0.0006, "0.001"),
            (12.3456, "12.346"),
            (1000.0, "1000.000"),
        ] {
            r.duration_ms = ms;
            assert!(
                r.plain().contains(&format!(" duration_ms={text} ")),
                "{ms}: {}",
                r.plain()
            );
        }
        r.duration_ms = 1.5;
        let j: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(j["status"], 200);
        assert_eq!(j["backend"], "127.0.0.1:9001");
        assert_eq!(j["client"], "192.0.2.9");
        assert_eq!(j["peer"], "127.0.0.1:5000");
    }
}
