//! The pair scenarios' load client: one HTTP/1.1 `GET /` every `--interval-ms` to the VIP,
//! each bounded by `--timeout-ms`, recording what every request saw.
//!
//! ```text
//! loadclient --target IP:PORT --out FILE [--interval-ms 5] [--timeout-ms 200]
//!            [--duration-ms 10000] [--fresh | --keepalive] [--stop-file PATH]
//!            [--node-header x-lbpair-node] [--path /]
//! ```
//!
//! A scheduler thread releases one request per tick to a pool of worker threads, so a
//! request stuck in its timeout doesn't delay the ones after it (a sequential client
//! would send nothing during an outage and undercount it). `--fresh` opens a connection
//! per request; `--keepalive` keeps one per worker and, like curl and browsers for an
//! idempotent request, retries ONCE on a fresh connection when a *reused* connection is
//! reset or closed before any response byte (the server may have closed it while idle,
//! or while draining). Output: a [`Header`] JSON line, then one [`Record`] per request,
//! flushed as they come, so a test can watch it live. The run ends after `--duration-ms`
//! or as soon as `--stop-file` exists, and prints a one-line summary.
#![allow(clippy::disallowed_types)]

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use netns_tests::pair::load::{summarize, Header, Outcome, Record};

/// Longest response head or body we read; more is an error, not an allocation.
const MAX_RESPONSE: usize = 1024 * 1024;
const MAX_WORKERS: u64 = 256;
/// Hard cap on the run, whatever `--duration-ms` says.
const MAX_DURATION: Duration = Duration::from_secs(600);

struct Options {
    target: SocketAddr,
    out: PathBuf,
    interval: Duration,
    timeout: Duration,
    duration: Duration,
    keepalive: bool,
    stop_file: Option<PathBuf>,
    node_header: String,
    /// The request target (`--path`, default `/`).
    path: String,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("loadclient: {e:#}");
        std::process::exit(1);
    }
}

fn parse_options() -> Result<Options> {
    let mut o = Options {
        target: SocketAddr::from(([127, 0, 0, 1], 80)),
        out: PathBuf::new(),
        interval: Duration::from_millis(5),
        timeout: Duration::from_millis(200),
        duration: Duration::from_secs(10),
        keepalive: false,
        stop_file: None,
        node_header: "x-lbpair-node".into(),
        path: "/".into(),
    };
    let mut target = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        let ms = |v: String| -> Result<Duration> {
            Ok(Duration::from_millis(
                v.parse().with_context(|| format!("{flag} {v}"))?,
            ))
        };
        match flag.as_str() {
            "--target" => target = Some(value()?.parse().context("--target IP:PORT")?),
            "--out" => o.out = PathBuf::from(value()?),
            "--interval-ms" => o.interval = ms(value()?)?,
            "--timeout-ms" => o.timeout = ms(value()?)?,
            "--duration-ms" => o.duration = ms(value()?)?,
            "--fresh" => o.keepalive = false,
            "--keepalive" => o.keepalive = true,
            "--stop-file" => o.stop_file = Some(PathBuf::from(value()?)),
            "--node-header" => o.node_header = value()?.to_ascii_lowercase(),
            "--path" => o.path = value()?,
            other => bail!("unknown option {other} (see the module docs for the usage)"),
        }
    }
    o.target = target.ok_or_else(|| anyhow!("--target IP:PORT is required"))?;
    if o.out.as_os_str().is_empty() {
        bail!("--out FILE is required");
    }
    if o.interval.is_zero() || o.timeout.is_zero() {
        bail!("--interval-ms and --timeout-ms must be > 0");
    }
    if !o.path.starts_with('/') || o.path.bytes().any(|b| b.is_ascii_whitespace()) {
        bail!(
            "--path must start with / and hold no whitespace: {:?}",
            o.path
        );
    }
    o.duration = o.duration.min(MAX_DURATION);
    Ok(o)
}

fn run() -> Result<()> {
    let o = Arc::new(parse_options()?);
    let file = File::create(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let mut out = BufWriter::new(file);
    let start_wall = SystemTime::now();
    let start = Instant::now();
    let header = Header {
        start_unix_us: start_wall
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        target: o.target.to_string(),
        interval_ms: u64::try_from(o.interval.as_millis()).unwrap_or(u64::MAX),
        timeout_ms: u64::try_from(o.timeout.as_millis()).unwrap_or(u64::MAX),
        mode: if o.keepalive { "keepalive" } else { "fresh" }.into(),
    };
    writeln!(out, "{}", serde_json::to_string(&header)?)?;
    out.flush()?;

    // Enough workers that every request in flight during a full timeout has one.
    let workers = (header.timeout_ms / header.interval_ms.max(1) + 8).min(MAX_WORKERS);
    let (job_tx, job_rx) = mpsc::channel::<(Instant, f64)>();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (rec_tx, rec_rx) = mpsc::channel::<Record>();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let rx = Arc::clone(&job_rx);
        let tx = rec_tx.clone();
        let o = Arc::clone(&o);
        handles.push(thread::spawn(move || worker(&o, &rx, &tx)));
    }
    drop(rec_tx);

    let sched = {
        let o = Arc::clone(&o);
        thread::spawn(move || {
            let mut n: u32 = 0;
            loop {
                let due = start + o.interval * n;
                if due.duration_since(start) >= o.duration {
                    break;
                }
                if let Some(stop) = &o.stop_file {
                    if stop.exists() {
                        break;
                    }
                }
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let t_ms = due.duration_since(start).as_secs_f64() * 1000.0;
                if job_tx.send((due, t_ms)).is_err() {
                    break;
                }
                n = n.saturating_add(1);
            }
            // Dropping the sender ends the workers once the queue is empty.
        })
    };

    let mut records = Vec::new();
    for r in rec_rx {
        writeln!(out, "{}", serde_json::to_string(&r)?)?;
        out.flush()?;
        records.push(r);
    }
    let _ = sched.join();
    for h in handles {
        let _ = h.join();
    }
    records.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    println!("{}", summarize(records.iter()).one_line());
    Ok(())
}

fn worker(o: &Options, jobs: &Mutex<mpsc::Receiver<(Instant, f64)>>, out: &mpsc::Sender<Record>) {
    // A keep-alive connection and whether it has already carried a response.
    let mut conn: Option<TcpStream> = None;
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((_due, t_ms)) = job else {
            return;
        };
        let sent = Instant::now();
        let deadline = sent + o.timeout;
        let mut retried = false;
        let reused = o.keepalive && conn.is_some();
        let mut result = exchange(o, &mut conn, deadline);
        if let Err(f) = &result {
            if reused && f.retryable() {
                retried = true;
                conn = None;
                result = exchange(o, &mut conn, deadline);
            }
        }
        let latency_ms = sent.elapsed().as_secs_f64() * 1000.0;
        let record = match result {
            Ok(resp) => {
                if !o.keepalive || resp.close {
                    conn = None;
                }
                Record {
                    t_ms,
                    outcome: if (200..300).contains(&resp.status) {
                        Outcome::Ok
                    } else {
                        Outcome::Status
                    },
                    latency_ms,
                    status: Some(resp.status),
                    node: resp.node,
                    backend: resp.backend,
                    retried,
                    detail: None,
                }
            }
            Err(f) => {
                conn = None;
                Record {
                    t_ms,
                    outcome: f.outcome,
                    latency_ms,
                    status: None,
                    node: None,
                    backend: None,
                    retried,
                    detail: Some(f.detail),
                }
            }
        };
        if out.send(record).is_err() {
            return;
        }
    }
}

struct Response {
    status: u16,
    node: Option<String>,
    backend: Option<String>,
    close: bool,
}

struct Failure {
    outcome: Outcome,
    /// Some response byte had arrived (never retried then: the server acted on it).
    got_bytes: bool,
    detail: String,
}

impl Failure {
    fn retryable(&self) -> bool {
        !self.got_bytes && self.outcome == Outcome::Reset
    }

    fn io(e: &std::io::Error, got_bytes: bool) -> Self {
        let outcome = match e.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
            ErrorKind::ConnectionRefused => Outcome::Refused,
            ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof => Outcome::Reset,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Outcome::Unreachable,
            _ => Outcome::Error,
        };
        Self {
            outcome,
            got_bytes,
            detail: e.to_string(),
        }
    }

    fn other(outcome: Outcome, detail: &str) -> Self {
        Self {
            outcome,
            got_bytes: true,
            detail: detail.to_owned(),
        }
    }
}

fn remaining(deadline: Instant) -> Result<Duration, Failure> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_micros(100) {
        Err(Failure {
            outcome: Outcome::Timeout,
            got_bytes: false,
            detail: "deadline passed".into(),
        })
    } else {
        Ok(left)
    }
}

/// One request on the kept connection (opening one if there is none).
fn exchange(
    o: &Options,
    conn: &mut Option<TcpStream>,
    deadline: Instant,
) -> Result<Response, Failure> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&o.target, remaining(deadline)?)
            .map_err(|e| Failure::io(&e, false))?;
        let _ = s.set_nodelay(true);
        *conn = Some(s);
    }
    let Some(s) = conn.as_mut() else {
        return Err(Failure::other(Outcome::Error, "no connection"));
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nhost: {}\r\nuser-agent: lbpair-loadclient\r\n{}\r\n",
        o.path,
        o.target,
        if o.keepalive {
            ""
        } else {
            "connection: close\r\n"
        }
    );
    s.set_write_timeout(Some(remaining(deadline)?))
        .map_err(|e| Failure::io(&e, false))?;
    s.write_all(req.as_bytes())
        .map_err(|e| Failure::io(&e, false))?;
    read_response(s, deadline, &o.node_header)
}

fn read_response(
    s: &mut TcpStream,
    deadline: Instant,
    node_header: &str,
) -> Result<Response, Failure> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    // The head.
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_RESPONSE {
            return Err(Failure::other(Outcome::Error, "response head too long"));
        }
        read_some(s, &mut buf, &mut chunk, deadline)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            Failure::other(Outcome::Error, &format!("bad status line {status_line:?}"))
        })?;
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    let mut node = None;
    let mut via = None;
    let mut backend = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
            "connection" => close = v.eq_ignore_ascii_case("close"),
            "x-backend" => backend = Some(v.to_owned()),
            "via" => via = v.split_whitespace().last().map(str::to_owned),
            _ if k == node_header => node = Some(v.to_owned()),
            _ => {}
        }
    }
    // The body: by length, chunked (to the last-chunk marker), or to EOF.
    if let Some(len) = length {
        if len > MAX_RESPONSE {
            return Err(Failure::other(Outcome::Error, "response body too long"));
        }
        while buf.len() < head_end + len {
            read_some(s, &mut buf, &mut chunk, deadline)?;
        }
    } else if chunked {
        while !buf[head_end..].ends_with(b"0\r\n\r\n") {
            if buf.len() > MAX_RESPONSE {
                return Err(Failure::other(Outcome::Error, "chunked body too long"));
            }
            read_some(s, &mut buf, &mut chunk, deadline)?;
        }
    } else {
        close = true;
        loop {
            match read_some(s, &mut buf, &mut chunk, deadline) {
                Ok(()) if buf.len() <= MAX_RESPONSE => {}
                Ok(()) => return Err(Failure::other(Outcome::Error, "body too long")),
                Err(f) if f.outcome == Outcome::Reset => break,
                Err(f) => return Err(f),
            }
        }
    }
    Ok(Response {
        status,
        // Before lbd names itself in a header, its Via name (`via_name`) does the job.
        node: node.or(via),
        backend,
        close,
    })
}

/// Reads once; EOF is a `Reset` failure.
fn read_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    chunk: &mut [u8],
    deadline: Instant,
) -> Result<(), Failure> {
    let got = !buf.is_empty();
    s.set_read_timeout(Some(remaining(deadline)?))
        .map_err(|e| Failure::io(&e, got))?;
    match s.read(chunk) {
        Ok(0) => Err(Failure {
            outcome: Outcome::Reset,
            got_bytes: got,
            detail: "closed by peer".into(),
        }),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e) => Err(Failure::io(&e, got)),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
