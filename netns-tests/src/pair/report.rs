//! The failover report: a Markdown table, scenario × advert interval, of the outage and
//! failed requests a client saw, beside keepalived+HAProxy's figures; and an SVG timeline.
//!
//! Each scenario test writes its rows to `target/netns-report/results/<scenario>.json`
//! ([`record`]) and then regenerates `target/netns-report/failover.md` from every results
//! file present ([`write_table`]), so the table grows as the tests run, whatever their
//! order, and a rerun of one test replaces only its rows.

use std::fs;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::load::{LoadRun, Summary};
use super::target_dir;

/// One line of the table: a scenario at one advert interval, one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Sort key and file name, e.g. "01-kill9-vrrpd-restart".
    pub id: String,
    /// Human description, the table's first column.
    pub scenario: String,
    pub advert_cs: u16,
    pub outage_ms: f64,
    /// The outage windows the client saw (more than one fails the scenario, unless the
    /// extra ones are `cut_handshakes`).
    #[serde(default)]
    pub windows: usize,
    /// Windows that are one handshake cut by the MAC move of a preemption back to the
    /// first master (see [`super::MAX_CUT_HANDSHAKES`]): each is a single reset, after the
    /// fault's own window, in a scenario that ends with that return.
    #[serde(default)]
    pub cut_handshakes: usize,
    pub failed: usize,
    pub total: usize,
    /// The bound the test asserts on `outage_ms` (and so shows the reader).
    pub bound_ms: Option<f64>,
    /// Which stack ran: [`STACK_LBPAIR`] or [`STACK_KEEPALIVED`].
    #[serde(default = "lbpair_stack")]
    pub stack: String,
    /// The nextest attempt (1 without retries), set by [`record`].
    #[serde(default)]
    pub attempt: u32,
    /// "pass", or "FAIL: why", set by [`record`] or [`record_attempt`].
    #[serde(default)]
    pub result: String,
    #[serde(default)]
    pub note: String,
}

/// vrrpd + lbd.
pub const STACK_LBPAIR: &str = "lbpair";
/// keepalived + HAProxy on the same topology, measured by `pair_keepalived`.
pub const STACK_KEEPALIVED: &str = "keepalived+haproxy";

fn lbpair_stack() -> String {
    STACK_LBPAIR.to_owned()
}

impl Row {
    /// A row from a load run's summary.
    pub fn from_summary(id: &str, scenario: &str, advert_cs: u16, s: &Summary) -> Self {
        Self {
            id: id.to_owned(),
            scenario: scenario.to_owned(),
            advert_cs,
            outage_ms: s.outage_ms,
            windows: s.windows.len(),
            cut_handshakes: 0,
            failed: s.failed,
            total: s.total,
            bound_ms: None,
            stack: lbpair_stack(),
            attempt: 0,
            result: String::new(),
            note: String::new(),
        }
    }

    /// What every failover row must show, whatever the scenario: the client's failures
    /// form at most one contiguous window (a second one is a second outage, which no
    /// scenario may cause), and the outage stays within the asserted bound.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        // keepalived's rows are a comparison, not a claim of ours.
        if self.stack != STACK_LBPAIR {
            return v;
        }
        let what = format!(
            "{} at {} cs ({})",
            self.scenario, self.advert_cs, self.stack
        );
        if self.windows.saturating_sub(self.cut_handshakes) > 1 {
            v.push(format!(
                "{what}: {} outage windows, at most one allowed ({} failed of {}; {} of them \
                 a handshake cut by the return's preemption)",
                self.windows, self.failed, self.total, self.cut_handshakes
            ));
        }
        if self.cut_handshakes > super::MAX_CUT_HANDSHAKES {
            v.push(format!(
                "{what}: {} handshakes cut by the return's preemption, at most {} allowed",
                self.cut_handshakes,
                super::MAX_CUT_HANDSHAKES
            ));
        }
        if let Some(b) = self.bound_ms {
            if self.outage_ms > b {
                v.push(format!(
                    "{what}: outage {:.0} ms over the bound {b:.0} ms",
                    self.outage_ms
                ));
            }
        }
        v
    }
}

/// What earlier keepalived+HAProxy runs measured on this kind of machine (2-core VM,
/// kernel 6.18). Only the demo shows these; the report's keepalived column is measured by
/// the suite (`pair_keepalived`), or says "not measured".
pub fn keepalived_reference(kind: RefKind, advert_cs: u16) -> Option<String> {
    let v = match (kind, advert_cs) {
        (RefKind::NodeLoss, 100) => "3150",
        (RefKind::NodeLoss, 10) => "310",
        (RefKind::Sigterm, 100) => "610",
        (RefKind::Sigterm, 10) => "60",
        _ => return None,
    };
    Some(v.to_owned())
}

/// Which reference figure the demo compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    NodeLoss,
    Sigterm,
}

/// `target/netns-report/`.
pub fn report_dir() -> PathBuf {
    target_dir().join("netns-report")
}

/// The nextest attempt this process runs (`NEXTEST_ATTEMPT`; 1 under plain cargo test).
pub fn attempt() -> u32 {
    std::env::var("NEXTEST_ATTEMPT")
        .ok()
        .and_then(|a| a.parse::<u32>().ok())
        .unwrap_or(1)
}

/// Writes a scenario's rows for this attempt, each marked "pass" or "FAIL" by its own
/// [`Row::violations`] (the outage bound and the single outage window), regenerates the
/// table, and fails with every violation. Every pair scenario goes through here, so every
/// one asserts both. [`record_attempt`] is the same for rows whose result is already set.
pub fn record(id: &str, rows: &[Row]) -> Result<String> {
    let mut violations = Vec::new();
    let rows: Vec<Row> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            let v = r.violations();
            if r.result.is_empty() {
                r.result = if v.is_empty() {
                    "pass".to_owned()
                } else {
                    format!("FAIL: {}", v.join("; "))
                };
            }
            violations.extend(v);
            r
        })
        .collect();
    let table = record_attempt(id, &rows)?;
    if !violations.is_empty() {
        bail!(
            "{} violation(s):\n- {}",
            violations.len(),
            violations.join("\n- ")
        );
    }
    Ok(table)
}

/// Writes `rows` as this attempt's (replacing the same attempt's earlier ones) and
/// regenerates the table.
///
/// Every attempt is kept: under a nextest retry (`NEXTEST_ATTEMPT` > 1) the rows go in
/// beside the earlier attempts' (`<id>@<attempt>.json`), so a pass on a retry never hides
/// the failure before it. A first attempt clears the retries an earlier run left.
pub fn record_attempt(id: &str, rows: &[Row]) -> Result<String> {
    let dir = report_dir().join("results");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let attempt = attempt();
    let file = if attempt > 1 {
        format!("{id}@{attempt}")
    } else {
        forget_retries(&dir, id);
        id.to_owned()
    };
    let rows: Vec<Row> = rows
        .iter()
        .cloned()
        .map(|mut r| {
            r.attempt = attempt;
            r
        })
        .collect();
    let path = dir.join(format!("{file}.json"));
    fs::write(&path, serde_json::to_vec_pretty(&rows)?)
        .with_context(|| format!("writing {}", path.display()))?;
    write_table()
}

/// Removes the `<id>@<attempt>.json` files of an earlier run's retries.
fn forget_retries(dir: &std::path::Path, id: &str) {
    let prefix = format!("{id}@");
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Merges every results file into `failover.md`; returns (and prints) the table.
pub fn write_table() -> Result<String> {
    let dir = report_dir();
    let mut rows: Vec<Row> = Vec::new();
    if let Ok(entries) = fs::read_dir(dir.join("results")) {
        for e in entries.flatten() {
            if let Ok(text) = fs::read(e.path()) {
                // A file from an older format is skipped, not fatal.
                if let Ok(mut r) = serde_json::from_slice::<Vec<Row>>(&text) {
                    rows.append(&mut r);
                }
            }
        }
    }
    let table = render(&rows);
    fs::create_dir_all(&dir)?;
    let path = dir.join("failover.md");
    fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("{table}\n(written to {})", path.display());
    Ok(table)
}

/// keepalived+HAProxy's cell for an lbpair row: the latest attempt measured by the suite
/// for the same scenario and interval, or "not measured".
fn keepalived_cell(rows: &[Row], of: &Row) -> String {
    let id = keepalived_id(&of.id);
    rows.iter()
        .filter(|k| k.stack == STACK_KEEPALIVED && k.id == id && k.advert_cs == of.advert_cs)
        .max_by_key(|k| k.attempt)
        .map_or_else(
            || "not measured".to_owned(),
            |k| {
                if k.total == 0 {
                    return "not measured (the run failed)".to_owned();
                }
                format!(
                    "{:.0} ({} window{}, {} / {})",
                    k.outage_ms,
                    k.windows,
                    if k.windows == 1 { "" } else { "s" },
                    k.failed,
                    k.total
                )
            },
        )
}

/// The scenario id of keepalived+HAProxy's run of lbpair scenario `id`.
pub fn keepalived_id(id: &str) -> String {
    format!("{id}+keepalived")
}

/// The Markdown table of `rows`: one line per scenario, advert interval and attempt.
pub fn render(rows: &[Row]) -> String {
    let mut ours: Vec<&Row> = rows.iter().filter(|r| r.stack == STACK_LBPAIR).collect();
    ours.sort_by(|a, b| {
        (&a.id, std::cmp::Reverse(a.advert_cs), a.attempt).cmp(&(
            &b.id,
            std::cmp::Reverse(b.advert_cs),
            b.attempt,
        ))
    });
    let mut out = String::from(
        "# Failover as a client sees it\n\n\
         A client in its own namespace sends `GET /` to the VIP every 5 ms (200 ms timeout). \
         Outage: from the first failed request to the first success after it (summed over \
         windows); windows: how many separate outages the client saw (every scenario asserts \
         at most one; a window ends once a success is sent after its failed requests \
         ended, see `load.rs`); failed: requests without a 2xx answer. `(≤ N)`: the bound the test \
         asserts on the outage, in ms (0: no failed request). Attempt: the nextest attempt \
         and its result; a retried test shows every attempt. keepalived+HAProxy: the same \
         fault on the same topology with keepalived and HAProxy instead of vrrpd and lbd, \
         measured by `pair_keepalived` in this suite (\"not measured\" where it has no such \
         run). The machine has 2 cores shared with other work: rerun before reading much \
         into one figure.\n\n\
         | scenario | adverts | attempt | outage ms (bound) | windows | failed / total | \
         keepalived+HAProxy outage ms |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in &ours {
        let bound = r
            .bound_ms
            .map(|b| format!(" (≤ {b:.0})"))
            .unwrap_or_default();
        let result = r.result.split(':').next().unwrap_or("");
        let figures = if r.total == 0 {
            format!("–{bound} | – | – / –")
        } else {
            format!(
                "{:.0}{bound} | {} | {} / {}",
                r.outage_ms, r.windows, r.failed, r.total
            )
        };
        out.push_str(&format!(
            "| {} | {} cs | {} {result} | {figures} | {} |\n",
            r.scenario,
            r.advert_cs,
            r.attempt.max(1),
            keepalived_cell(rows, r)
        ));
    }
    let notes: Vec<String> = ours
        .iter()
        .filter(|r| !r.note.is_empty() || r.result.starts_with("FAIL"))
        .map(|r| {
            let mut text = r.note.clone();
            if r.result.starts_with("FAIL") {
                if !text.is_empty() {
                    text.push_str("; ");
                }
                text.push_str(&r.result);
            }
            format!(
                "- {} at {} cs (attempt {}): {text}",
                r.scenario,
                r.advert_cs,
                r.attempt.max(1)
            )
        })
        .collect();
    if !notes.is_empty() {
        out.push_str("\nNotes:\n");
        out.push_str(&notes.join("\n"));
        out.push('\n');
    }
    out
}

/// Colour of a node's requests in the timeline.
fn colour(node: Option<&str>) -> &'static str {
    match node {
        Some("a") => "#1f77b4",
        Some("b") => "#2ca02c",
        _ => "#7f7f7f",
    }
}

/// An SVG timeline of a run: one mark per request, x = send time, one lane per node that
/// answered and one (red) for failures, latency as the mark's height; `events` are
/// labelled vertical lines (ms on the run's axis).
pub fn timeline_svg(run: &LoadRun, events: &[(f64, String)], title: &str) -> String {
    const W: f64 = 1000.0;
    const LEFT: f64 = 70.0;
    const LANE: f64 = 60.0;
    let t_max = run.last_ms().max(1.0);
    let x = |t: f64| LEFT + t / t_max * W;
    let lanes = ["a", "b", "failed"];
    let lane_y = |i: usize| 50.0 + LANE * i as f64;
    let height = lane_y(lanes.len()) + 40.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">{}</text>\n",
        W + LEFT + 20.0,
        xml_escape(title)
    );
    for (i, name) in lanes.iter().enumerate() {
        let y = lane_y(i);
        s.push_str(&format!(
            "<text x=\"5\" y=\"{:.1}\">{}</text>\n<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" \
             y2=\"{y:.1}\" stroke=\"#ddd\"/>\n",
            y + 4.0,
            if *name == "failed" {
                "failed".to_owned()
            } else {
                format!("node {name}")
            },
            LEFT + W
        ));
    }
    for r in &run.records {
        let (lane, fill) = if r.outcome.is_ok() {
            let lane = match r.node.as_deref() {
                Some("b") => 1,
                _ => 0,
            };
            (lane, colour(r.node.as_deref()))
        } else {
            (2, "#d62728")
        };
        // Latency as the mark's height (capped at the lane), so a slow answer shows.
        let h = (4.0 + r.latency_ms / 5.0).min(LANE - 10.0);
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"1.2\" height=\"{h:.1}\" fill=\"{fill}\"/>\n",
            x(r.t_ms),
            lane_y(lane) - h / 2.0
        ));
    }
    for (t, label) in events {
        let xx = x(*t);
        s.push_str(&format!(
            "<line x1=\"{xx:.1}\" y1=\"30\" x2=\"{xx:.1}\" y2=\"{:.1}\" stroke=\"black\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"40\">{}</text>\n",
            lane_y(lanes.len()) - 20.0,
            xx + 3.0,
            xml_escape(label)
        ));
    }
    // Time axis: a tick per second (or per 100 ms for short runs).
    let step = if t_max > 3000.0 { 1000.0 } else { 100.0 };
    let axis_y = lane_y(lanes.len()) - 10.0;
    let mut t = 0.0;
    while t <= t_max {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{:.0} ms</text>\n",
            x(t),
            axis_y + 20.0,
            t
        ));
        t += step;
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `target/netns-report/<name>` (e.g. `timeline.svg`).
pub fn write_file(name: &str, text: &str) -> Result<PathBuf> {
    let dir = report_dir();
    fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, cs: u16, outage: f64) -> Row {
        Row {
            id: id.into(),
            scenario: format!("scenario {id}"),
            advert_cs: cs,
            outage_ms: outage,
            windows: 1,
            cut_handshakes: 0,
            failed: 3,
            total: 100,
            bound_ms: Some(500.0),
            stack: STACK_LBPAIR.into(),
            attempt: 1,
            result: "pass".into(),
            note: String::new(),
        }
    }

    #[test]
    fn a_second_window_fails_even_as_a_cut_handshake() {
        let mut r = row("03-x", 10, 70.0);
        assert!(r.violations().is_empty());
        r.windows = 2;
        assert_eq!(r.violations().len(), 1, "a second outage window");
        // A single reset at the return's preemption is named for what it is, and fails: the
        // hand-off window removed it (MAX_CUT_HANDSHAKES is 0).
        r.cut_handshakes = 1;
        let v = r.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("handshakes cut"), "{v:?}");
        r.windows = 3;
        assert_eq!(r.violations().len(), 2, "a third window is an outage too");
        r.outage_ms = 501.0;
        assert_eq!(r.violations().len(), 3, "and the bound still holds");
    }

    #[test]
    fn table_has_one_line_per_scenario_interval_and_attempt() {
        let mut retry = row("02-x", 10, 42.0);
        retry.attempt = 2;
        let mut first = row("02-x", 10, 900.0);
        first.result = "FAIL: outage 900 ms over the bound 500 ms".into();
        let mut k = row(&keepalived_id("01-y"), 100, 3150.0);
        k.stack = STACK_KEEPALIVED.into();
        let t = render(&[
            retry,
            row("01-y", 100, 3100.0),
            first,
            row("02-x", 100, 7.0),
            k,
        ]);
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("| scenario 0"))
            .collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(
            lines[0].contains("| 100 cs | 1 pass | 3100 (≤ 500) |")
                && lines[0].ends_with("| 3150 (1 window, 3 / 100) |"),
            "{t}"
        );
        assert!(lines[1].contains("| 100 cs | 1 pass | 7 (≤ 500) |"), "{t}");
        assert!(lines[2].contains("| 10 cs | 1 FAIL | 900 (≤ 500) |"), "{t}");
        assert!(
            lines[3].contains("| 10 cs | 2 pass | 42 (≤ 500) |")
                && lines[3].ends_with("| not measured |"),
            "{t}"
        );
        assert!(t.contains("(attempt 1): FAIL: outage 900 ms"), "{t}");
    }

    #[test]
    fn a_second_outage_window_or_an_outage_over_the_bound_is_a_violation() {
        let ok = row("01-y", 100, 400.0);
        assert!(ok.violations().is_empty());
        let mut two = ok.clone();
        two.windows = 2;
        assert_eq!(two.violations().len(), 1, "{:?}", two.violations());
        let mut long = ok.clone();
        long.outage_ms = 501.0;
        assert_eq!(long.violations().len(), 1);
        let mut theirs = long.clone();
        theirs.stack = STACK_KEEPALIVED.into();
        theirs.windows = 3;
        assert!(theirs.violations().is_empty());
    }

    #[test]
    fn svg_marks_every_request() {
        let text = "{\"start_unix_us\":0,\"target\":\"x\",\"interval_ms\":5,\"timeout_ms\":200,\"mode\":\"fresh\"}\n\
                    {\"t_ms\":0.0,\"outcome\":\"ok\",\"latency_ms\":1,\"node\":\"a\"}\n\
                    {\"t_ms\":5.0,\"outcome\":\"timeout\",\"latency_ms\":200}\n\
                    {\"t_ms\":10.0,\"outcome\":\"ok\",\"latency_ms\":1,\"node\":\"b\"}\n";
        let run = LoadRun::parse(text).expect("parses");
        let svg = timeline_svg(&run, &[(4.0, "kill <A>".into())], "t");
        assert_eq!(svg.matches("<rect x=").count(), 3, "{svg}");
        assert!(svg.contains("#d62728") && svg.contains("kill &lt;A&gt;"));
    }
}
