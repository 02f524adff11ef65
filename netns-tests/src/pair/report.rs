//! The failover report: a Markdown table, scenario × advert interval, of the outage and
//! failed requests a client saw, beside keepalived+HAProxy's figures; and an SVG timeline.
//!
//! Each scenario test writes its rows to `target/netns-report/results/<scenario>.json`
//! ([`record`]) and then regenerates `target/netns-report/failover.md` from every results
//! file present ([`write_table`]), so the table grows as the tests run, whatever their
//! order, and a rerun of one test replaces only its rows.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::load::{LoadRun, Summary};
use super::target_dir;

/// One cell pair of the table: a scenario at one advert interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Sort key and file name, e.g. "01-kill9-vrrpd-restart".
    pub id: String,
    /// Human description, the table's first column.
    pub scenario: String,
    pub advert_cs: u16,
    pub outage_ms: f64,
    pub failed: usize,
    pub total: usize,
    /// The asserted bound, for the reader.
    pub bound_ms: Option<f64>,
    /// keepalived+HAProxy's figure for the comparable case, if there is one.
    pub reference: Option<String>,
    #[serde(default)]
    pub note: String,
}

impl Row {
    /// A row from a load run's summary.
    pub fn from_summary(id: &str, scenario: &str, advert_cs: u16, s: &Summary) -> Self {
        Self {
            id: id.to_owned(),
            scenario: scenario.to_owned(),
            advert_cs,
            outage_ms: s.outage_ms,
            failed: s.failed,
            total: s.total,
            bound_ms: None,
            reference: None,
            note: String::new(),
        }
    }
}

/// What keepalived with HAProxy measured earlier on this kind of machine (2-core VM, kernel 6.18).
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

/// Which reference figure a scenario compares with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    NodeLoss,
    Sigterm,
}

/// `target/netns-report/`.
pub fn report_dir() -> PathBuf {
    target_dir().join("netns-report")
}

/// Writes a scenario's rows (replacing its previous ones) and regenerates the table.
///
/// Every attempt is kept: under a nextest retry (`NEXTEST_ATTEMPT` > 1) the rows go in
/// beside the earlier attempts' as `<id>@<attempt>`, "(attempt N)" in the scenario, so a
/// pass on a retry never hides the failure before it. A first attempt clears the retries
/// an earlier run left.
pub fn record(id: &str, rows: &[Row]) -> Result<String> {
    let dir = report_dir().join("results");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let attempt = std::env::var("NEXTEST_ATTEMPT")
        .ok()
        .and_then(|a| a.parse::<u32>().ok())
        .unwrap_or(1);
    let (file, rows) = if attempt > 1 {
        let retried = rows.iter().cloned().map(|mut r| {
            r.id = format!("{}@{attempt}", r.id);
            r.scenario = format!("{} (attempt {attempt})", r.scenario);
            r
        });
        (format!("{id}@{attempt}"), retried.collect())
    } else {
        forget_retries(&dir, id);
        (id.to_owned(), rows.to_vec())
    };
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

/// The Markdown table of `rows`.
pub fn render(rows: &[Row]) -> String {
    // scenario id -> (description, interval -> row)
    let mut by: BTreeMap<&str, (&str, BTreeMap<u16, &Row>)> = BTreeMap::new();
    for r in rows {
        by.entry(&r.id)
            .or_insert_with(|| (&r.scenario, BTreeMap::new()))
            .1
            .insert(r.advert_cs, r);
    }
    let mut out = String::from(
        "# Failover as a client sees it\n\n\
         A client in its own namespace sends `GET /` to the VIP every 5 ms (200 ms timeout). \
         Outage: from the first failed request to the first success after it (summed over \
         windows); failed: requests without a 2xx answer. `(≤ N)`: the bound the test asserts, \
         in ms, on the figure the scenario is about (the takeover time for a lost master, \
         the outage otherwise; 0 means no failed request). keepalived+HAProxy: the reference \
         figures measured earlier on this kind of machine, where comparable. \
         The machine has 2 cores shared with other work: rerun before reading much into \
         one figure.\n\n\
         | scenario | 100 cs: outage ms | failed / total | keepalived+HAProxy | \
         10 cs: outage ms | failed / total | keepalived+HAProxy |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for (desc, per) in by.values() {
        out.push_str(&format!("| {desc} |"));
        for cs in [100u16, 10] {
            match per.get(&cs) {
                Some(r) => {
                    let bound = r
                        .bound_ms
                        .map(|b| format!(" (≤ {b:.0})"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        " {:.0}{bound} | {} / {} | {} |",
                        r.outage_ms,
                        r.failed,
                        r.total,
                        r.reference.as_deref().unwrap_or("–")
                    ));
                }
                None => out.push_str(" – | – | – |"),
            }
        }
        out.push('\n');
    }
    let notes: Vec<String> = rows
        .iter()
        .filter(|r| !r.note.is_empty())
        .map(|r| format!("- {} at {} cs: {}", r.scenario, r.advert_cs, r.note))
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
            failed: 3,
            total: 100,
            bound_ms: Some(500.0),
            reference: keepalived_reference(RefKind::NodeLoss, cs),
            note: String::new(),
        }
    }

    #[test]
    fn table_has_one_line_per_scenario_with_both_intervals() {
        let t = render(&[
            row("02-x", 10, 42.0),
            row("01-y", 100, 3100.0),
            row("02-x", 100, 7.0),
        ]);
        let lines: Vec<&str> = t
            .lines()
            .filter(|l| l.starts_with("| scenario 0"))
            .collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(
            lines[0].contains("3100 (≤ 500)") && lines[0].contains("3150"),
            "{t}"
        );
        assert!(
            lines[1].contains("| 7 (≤ 500)") && lines[1].contains("| 42 (≤ 500)"),
            "{t}"
        );
        assert!(lines[0].ends_with("– | – | – |"), "{t}");
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
