//! What the load client records, and the figures computed from it.
//!
//! The `loadclient` binary runs in the client namespace and writes one JSON line per
//! request (after a [`Header`] line) to a file the test reads, live or at the end. Times
//! are milliseconds since the client's start; the header carries that start as Unix time,
//! so a test can place its own events (a kill, a link down) on the same axis with
//! [`Header::at`] although the two run in different processes.
//!
//! An *outage window* runs from the send time of a failed request to the send time of the
//! first successful request after it: what a user probing at this rate would call "the
//! site was down from ... to ...". A window ends for good only once the client has seen
//! the site back: a success sent after every failure of the window had ended (its answer
//! or timeout). Requests overlap (one every 5 ms, answered in 1 to 200 ms), so a fault
//! fails the requests in flight at that instant, sent up to a timeout before it, while
//! faster ones sent among them succeeded before the fault: by send time alone one fault
//! would read as several windows. A failure after such a recovery is a second outage.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx response, read to the end.
    Ok,
    /// A complete response with another status (e.g. lbd's 502/503).
    Status,
    /// No complete response within the timeout (connect included).
    Timeout,
    /// Connection refused (RST to the SYN): a host holds the VIP but nothing listens.
    Refused,
    /// Connection reset or closed before a complete response.
    Reset,
    /// No route or no ARP answer reported by the kernel.
    Unreachable,
    /// Anything else (malformed response, ...).
    Error,
}

impl Outcome {
    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

/// First line of a load file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// The client's time zero, as microseconds since the Unix epoch.
    pub start_unix_us: u64,
    pub target: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// "fresh" or "keepalive".
    pub mode: String,
}

impl Header {
    /// Where `t` falls on this client's time axis, in ms (negative: before it started).
    pub fn at(&self, t: SystemTime) -> f64 {
        let us = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as f64)
            .unwrap_or(0.0);
        (us - self.start_unix_us as f64) / 1000.0
    }
}

/// One request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Scheduled send time, ms since the start.
    pub t_ms: f64,
    pub outcome: Outcome,
    /// Time from the actual send to the outcome.
    pub latency_ms: f64,
    #[serde(default)]
    pub status: Option<u16>,
    /// The balancer that answered (the node response header).
    #[serde(default)]
    pub node: Option<String>,
    /// The backend that answered (`x-backend`).
    #[serde(default)]
    pub backend: Option<String>,
    /// Failed on a reused keep-alive connection and was retried once on a fresh one.
    #[serde(default)]
    pub retried: bool,
    /// The failure's text, for the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A load file, read back.
#[derive(Debug, Clone)]
pub struct LoadRun {
    pub header: Header,
    /// Sorted by send time.
    pub records: Vec<Record>,
}

/// From a failure to the next success (`end_ms: None`: no success came after it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub start_ms: f64,
    pub end_ms: Option<f64>,
    pub failed: usize,
}

impl Window {
    /// Its length; an open window counts up to `last_ms`.
    pub fn len_ms(&self, last_ms: f64) -> f64 {
        self.end_ms.unwrap_or(last_ms) - self.start_ms
    }
}

/// The figures of a run (or of the part of it after some instant).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub total: usize,
    pub failed: usize,
    pub windows: Vec<Window>,
    /// Sum of the windows' lengths.
    pub outage_ms: f64,
    pub longest_ms: f64,
    pub by_node: BTreeMap<String, usize>,
    pub by_backend: BTreeMap<String, usize>,
    pub by_outcome: BTreeMap<String, usize>,
    pub retried: usize,
}

impl LoadRun {
    /// Reads a load file; a torn last line (the client is still writing) is ignored.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a load file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut lines = text.lines();
        let first = lines.next().ok_or_else(|| anyhow!("empty load file"))?;
        let header: Header = serde_json::from_str(first).context("header line")?;
        let mut records: Vec<Record> = lines
            .filter_map(|l| serde_json::from_str::<Record>(l).ok())
            .collect();
        records.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        Ok(Self { header, records })
    }

    /// The figures over every request sent at or after `from_ms`.
    pub fn summary_from(&self, from_ms: f64) -> Summary {
        summarize(self.records.iter().filter(|r| r.t_ms >= from_ms))
    }

    /// The figures over the whole run.
    pub fn summary(&self) -> Summary {
        summarize(self.records.iter())
    }

    /// The first request sent at or after `from_ms` answered by `node`.
    pub fn first_answer_from(&self, node: &str, from_ms: f64) -> Option<&Record> {
        self.records
            .iter()
            .find(|r| r.t_ms >= from_ms && r.outcome.is_ok() && r.node.as_deref() == Some(node))
    }

    /// The last request answered by `node`.
    pub fn last_answer_from(&self, node: &str) -> Option<&Record> {
        self.records
            .iter()
            .rev()
            .find(|r| r.outcome.is_ok() && r.node.as_deref() == Some(node))
    }

    /// The send time of the last record (0 when there is none).
    pub fn last_ms(&self) -> f64 {
        self.records.last().map_or(0.0, |r| r.t_ms)
    }
}

/// The window being built by [`summarize`].
struct Open {
    window: Window,
    /// When the last of its failures ended (send time + latency).
    failing_until: f64,
    /// A success was sent after that: the client saw the site back.
    recovered: bool,
}

/// Computes a [`Summary`] over records sorted by send time.
pub fn summarize<'r>(records: impl Iterator<Item = &'r Record>) -> Summary {
    let mut s = Summary {
        total: 0,
        failed: 0,
        windows: Vec::new(),
        outage_ms: 0.0,
        longest_ms: 0.0,
        by_node: BTreeMap::new(),
        by_backend: BTreeMap::new(),
        by_outcome: BTreeMap::new(),
        retried: 0,
    };
    let mut open: Option<Open> = None;
    let mut last_ms = 0.0f64;
    for r in records {
        s.total += 1;
        last_ms = last_ms.max(r.t_ms);
        *s.by_outcome
            .entry(format!("{:?}", r.outcome).to_ascii_lowercase())
            .or_default() += 1;
        if r.retried {
            s.retried += 1;
        }
        if r.outcome.is_ok() {
            if let Some(n) = &r.node {
                *s.by_node.entry(n.clone()).or_default() += 1;
            }
            if let Some(b) = &r.backend {
                *s.by_backend.entry(b.clone()).or_default() += 1;
            }
            if let Some(o) = &mut open {
                o.window.end_ms.get_or_insert(r.t_ms);
                o.recovered |= r.t_ms >= o.failing_until;
            }
        } else {
            s.failed += 1;
            let done = r.t_ms + r.latency_ms;
            match &mut open {
                Some(o) if !o.recovered => {
                    o.window.failed += 1;
                    o.window.end_ms = None;
                    o.failing_until = o.failing_until.max(done);
                }
                _ => {
                    if let Some(o) = open.take() {
                        s.windows.push(o.window);
                    }
                    open = Some(Open {
                        window: Window {
                            start_ms: r.t_ms,
                            end_ms: None,
                            failed: 1,
                        },
                        failing_until: done,
                        recovered: false,
                    });
                }
            }
        }
    }
    if let Some(o) = open {
        s.windows.push(o.window);
    }
    for w in &s.windows {
        let len = w.len_ms(last_ms);
        s.outage_ms += len;
        s.longest_ms = s.longest_ms.max(len);
    }
    s
}

impl Summary {
    /// No requests at all (an attempt that ended before its load ran).
    pub fn empty() -> Self {
        summarize(std::iter::empty())
    }

    /// One line for logs and the client's stdout.
    pub fn one_line(&self) -> String {
        format!(
            "{} requests, {} failed, outage {:.0} ms (longest window {:.0} ms, {} windows), \
             retried {}, by node {:?}, by outcome {:?}",
            self.total,
            self.failed,
            self.outage_ms,
            self.longest_ms,
            self.windows.len(),
            self.retried,
            self.by_node,
            self.by_outcome
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: f64, ok: bool, node: &str) -> Record {
        Record {
            t_ms: t,
            outcome: if ok { Outcome::Ok } else { Outcome::Timeout },
            latency_ms: 1.0,
            status: ok.then_some(200),
            node: ok.then(|| node.to_owned()),
            backend: None,
            retried: false,
            detail: None,
        }
    }

    #[test]
    fn windows_run_from_first_failure_to_next_success() {
        let r = [
            rec(0.0, true, "a"),
            rec(5.0, false, ""),
            rec(10.0, false, ""),
            rec(15.0, true, "b"),
            rec(20.0, false, ""),
            rec(25.0, true, "b"),
            rec(30.0, false, ""),
            rec(40.0, false, ""),
        ];
        let s = summarize(r.iter());
        assert_eq!(s.total, 8);
        assert_eq!(s.failed, 5);
        assert_eq!(s.windows.len(), 3);
        assert_eq!(s.windows[0].end_ms, Some(15.0));
        assert_eq!(s.windows[0].failed, 2);
        assert_eq!(s.windows[2].end_ms, None);
        // 10 + 5 + (40 - 30)
        assert!((s.outage_ms - 25.0).abs() < 1e-9, "{}", s.outage_ms);
        assert!((s.longest_ms - 10.0).abs() < 1e-9);
        assert_eq!(s.by_node.get("b"), Some(&2));
    }

    fn failed(t: f64, latency: f64) -> Record {
        Record {
            latency_ms: latency,
            ..rec(t, false, "")
        }
    }

    #[test]
    fn requests_in_flight_at_the_fault_and_faster_ones_among_them_are_one_window() {
        // A kill at 30: the requests sent at 0 and 15 were still in flight (reset at 30),
        // the one sent at 10 was answered at 12. One outage, not three windows.
        let r = [
            failed(0.0, 30.0),
            rec(10.0, true, "a"),
            failed(15.0, 15.0),
            failed(30.0, 1.0),
            rec(40.0, true, "b"),
            rec(45.0, true, "b"),
        ];
        let s = summarize(r.iter());
        assert_eq!(s.windows.len(), 1, "{:?}", s.windows);
        assert_eq!(s.windows[0].end_ms, Some(40.0));
        assert_eq!(s.windows[0].failed, 3);
        assert!((s.outage_ms - 40.0).abs() < 1e-9);
    }

    #[test]
    fn a_failure_after_the_client_saw_the_site_back_is_a_second_window() {
        // The timeouts end at 205 and 210; the success sent at 220 is a recovery the client
        // saw, so the failure at 300 is a second outage.
        let r = [
            failed(5.0, 200.0),
            failed(10.0, 200.0),
            rec(15.0, true, "b"),
            rec(220.0, true, "b"),
            failed(300.0, 2.0),
            rec(305.0, true, "a"),
        ];
        let s = summarize(r.iter());
        assert_eq!(s.windows.len(), 2, "{:?}", s.windows);
        assert_eq!(s.windows[0].end_ms, Some(15.0));
        assert_eq!(s.windows[1].start_ms, 300.0);
    }

    #[test]
    fn no_failures_no_outage() {
        let r = [rec(0.0, true, "a"), rec(5.0, true, "a")];
        let s = summarize(r.iter());
        assert_eq!((s.failed, s.windows.len()), (0, 0));
        assert_eq!(s.outage_ms, 0.0);
    }

    #[test]
    fn parses_a_file_with_a_torn_last_line() {
        let text = "{\"start_unix_us\":1000000,\"target\":\"x:80\",\"interval_ms\":5,\
                    \"timeout_ms\":200,\"mode\":\"fresh\"}\n\
                    {\"t_ms\":5.0,\"outcome\":\"ok\",\"latency_ms\":0.5,\"node\":\"a\"}\n\
                    {\"t_ms\":0.0,\"outcome\":\"reset\",\"latency_ms\":0.5}\n{\"t_ms\":1";
        let run = LoadRun::parse(text).expect("parses");
        assert_eq!(run.records.len(), 2);
        assert_eq!(run.records[0].outcome, Outcome::Reset);
        assert_eq!(run.first_answer_from("a", 0.0).map(|r| r.t_ms), Some(5.0));
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1500);
        assert!((run.header.at(t) - 500.0).abs() < 1e-6);
    }
}
