//! Property tests of the config loader (`vrrpd::config::validate` over a
//! `shared::config::Source`), the code that reads an operator's file on start and on every
//! SIGHUP, where a panic would take the running daemon down with it.
//!
//! - Arbitrary text, and TOML-shaped text, never panics.
//! - Mutations of a shipped config (a line deleted, a number changed, a value replaced by a
//!   random string, a table duplicated; several at once) never panic, and every error they
//!   cause is usable: it names a key or a line (within the file), and renders with the
//!   file's name, so the operator can find it.
//! - The shipped example configs load, the same from text as from disk.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use shared::config::{ConfigError, Source};
use vrrpd::config::{validate, VrrpConfig};

/// A path that can't be mistaken for any text the mutations produce.
const FILE: &str = "/etc/lbpair/fuzz-vrrpd.toml";

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// The annotated node-A example: every key, comments, a multi-line array, an inline table.
fn seed() -> String {
    let path = configs_dir().join("vrrpd-node-a.toml");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading the seed config {}: {e}", path.display()))
}

/// The invariants every rejection must keep, whatever the input.
fn check_error(text: &str, e: &ConfigError) -> Result<(), TestCaseError> {
    let ConfigError::Invalid { path, errors } = e else {
        return Err(TestCaseError::fail(format!(
            "validating text gave a read error: {e}"
        )));
    };
    prop_assert_eq!(path.as_path(), Path::new(FILE));
    prop_assert!(!errors.is_empty(), "a rejection without errors");
    // A position one past the last line is where an unterminated construct is reported.
    let max_line = text.lines().count() + 1;
    for fe in errors {
        prop_assert!(
            !fe.key.is_empty() || fe.line.is_some(),
            "error with neither key nor line: {fe:?}\n--- text ---\n{text}"
        );
        // Not checked here: a non-empty message (see `syntax_errors_say_what_is_wrong`).
        if let Some(line) = fe.line {
            prop_assert!(
                (1..=max_line).contains(&line),
                "line {line} outside the file ({max_line} lines): {fe:?}"
            );
        }
        let one = fe.render(Path::new(FILE));
        prop_assert!(one.starts_with(FILE), "rendered without the file: {one}");
        if !fe.key.is_empty() {
            let key = format!("`{}`", fe.key);
            prop_assert!(one.contains(&key), "{key} missing from: {one}");
        }
    }
    // The whole error (what the log and `check-config` show) lists every one of them.
    let rendered = e.to_string();
    prop_assert!(
        rendered.starts_with(FILE),
        "rendered without the file name:\n{rendered}"
    );
    for fe in errors {
        let one = fe.render(Path::new(FILE));
        prop_assert!(rendered.contains(&one), "{one:?} missing from:\n{rendered}");
    }
    Ok(())
}

/// Loads `text` and checks the result: a config with at least one instance, or a usable
/// rejection.
fn load_and_check(text: &str) -> Result<Option<VrrpConfig>, TestCaseError> {
    match validate(&Source::from_text(FILE, text)) {
        Ok(cfg) => {
            prop_assert!(!cfg.instances.is_empty(), "a config without instances");
            Ok(Some(cfg))
        }
        Err(e) => {
            check_error(text, &e)?;
            Ok(None)
        }
    }
}

/// One edit of a config's text; each `usize` picks among the candidates at apply time
/// (modulo their number), so every edit applies to whatever text it is given.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    /// Replace a run of digits (a number, an octet, a prefix length) with this text.
    SetNumber(usize, String),
    /// Replace everything after ` = ` on a `key = value` line.
    ReplaceValue(usize, String),
    /// Copy a `[table]` or `[[table]]` section (header to the next header) after itself.
    DuplicateTable(usize),
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..5000).prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("256".to_string()),
        Just("4096".to_string()),
        Just("99999999999999999999999999".to_string()),
        "-?[0-9]{1,30}",
        any::<f64>().prop_map(|f| f.to_string()),
        Just(String::new()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,40}",
        "\"[^\"\\\\\n]{0,40}\"",
        "\\[[ -~]{0,30}\\]",
        "\\{[ -~]{0,30}\\}",
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"\"".to_string()),
        Just("[\"10.0.0.1/24\", \"10.0.0.1/24\"]".to_string()),
        Just("{ address = \"192.0.2.9/24\", label = \"eth0:a-much-too-long-label\" }".to_string()),
        number(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        (any::<usize>(), number()).prop_map(|(i, n)| Mutation::SetNumber(i, n)),
        (any::<usize>(), value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        any::<usize>().prop_map(Mutation::DuplicateTable),
    ]
}

/// Byte ranges of the runs of ASCII digits in `s`.
fn digit_runs(s: &str) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in s.bytes().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(st)) => {
                runs.push((st, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(st) = start {
        runs.push((st, s.len()));
    }
    runs
}

impl Mutation {
    /// Applies the edit to `text`; an edit with no candidate (no digits left, no table)
    /// leaves it as is.
    fn apply(&self, text: &str) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        match self {
            Mutation::DeleteLine(i) => {
                if !lines.is_empty() {
                    lines.remove(i % lines.len());
                }
            }
            Mutation::SetNumber(i, n) => {
                let runs = digit_runs(text);
                if runs.is_empty() {
                    return text.to_string();
                }
                let (start, end) = runs[i % runs.len()];
                return format!("{}{n}{}", &text[..start], &text[end..]);
            }
            Mutation::ReplaceValue(i, v) => {
                let candidates: Vec<usize> = (0..lines.len())
                    .filter(|&l| {
                        !lines[l].trim_start().starts_with('#') && lines[l].contains(" = ")
                    })
                    .collect();
                if let Some(&l) = candidates.get(i % candidates.len().max(1)) {
                    if let Some((key, _)) = lines[l].split_once(" = ") {
                        lines[l] = format!("{key} = {v}");
                    }
                }
            }
            Mutation::DuplicateTable(i) => {
                let headers: Vec<usize> = (0..lines.len())
                    .filter(|&l| lines[l].trim_start().starts_with('['))
                    .collect();
                if let Some(&start) = headers.get(i % headers.len().max(1)) {
                    let end = headers
                        .iter()
                        .copied()
                        .find(|&h| h > start)
                        .unwrap_or(lines.len());
                    let section: Vec<String> = lines[start..end].to_vec();
                    lines.splice(end..end, section);
                }
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any text at all: a config or a usable rejection, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        load_and_check(&text)?;
    }

}

proptest! {
    // Fewer cases: these often reach `log_level`, whose filter parsing compiles regexes
    // and is the slowest step of validation by far.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Text shaped like TOML (headers, `key = value` lines with the real keys), which gets
    /// past the parser far more often than random text.
    #[test]
    fn toml_shaped_text_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[global]".to_string()),
                Just("[[instance]]".to_string()),
                "\\[\\[?[a-z_.]{0,12}\\]?\\]?",
                (
                    prop_oneof![
                        Just("name"), Just("interface"), Just("vrid"), Just("priority"),
                        Just("advert_interval_cs"), Just("preempt"), Just("preempt_delay_ms"),
                        Just("checksum_mode"), Just("unicast_peers"), Just("garp_count"),
                        Just("garp_interval_ms"), Just("garp_refresh_s"), Just("vips"),
                        Just("control_socket"), Just("log_format"), Just("log_level"),
                        Just("realtime"), Just("realtime_priority"), Just("bogus"),
                        Just("accept_from"), Just("adopt_interval_cs"), Just("strict_interval"),
                    ],
                    value(),
                ).prop_map(|(k, v)| format!("{k} = {v}")),
                "\\PC{0,20}",
            ],
            0..30,
        )
    ) {
        load_and_check(&lines.join("\n"))?;
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Up to four edits of the shipped node-A config.
    #[test]
    fn mutated_example_never_panics_and_errors_are_located(
        mutations in proptest::collection::vec(mutation(), 1..=4)
    ) {
        let mut text = seed();
        for m in &mutations {
            text = m.apply(&text);
        }
        load_and_check(&text)?;
    }
}

/// The mutations reach the cases they are meant to: each kind alone, on the seed, is
/// rejected at least sometimes (a generator that silently did nothing would make the
/// property above vacuous).
#[test]
fn each_mutation_kind_can_break_the_seed() {
    let seed = seed();
    type Make = fn(usize) -> Mutation;
    let kinds: [(&str, Make); 4] = [
        ("delete line", Mutation::DeleteLine),
        ("set number", |i| Mutation::SetNumber(i, "70000".into())),
        ("replace value", |i| Mutation::ReplaceValue(i, "@@".into())),
        ("duplicate table", Mutation::DuplicateTable),
    ];
    for (what, make) in kinds {
        let mut rejected = 0;
        // Every candidate of every kind: the seed has fewer than 200 lines and numbers.
        for i in 0..200 {
            let text = make(i).apply(&seed);
            if let Err(e) = validate(&Source::from_text(FILE, text.as_str())) {
                rejected += 1;
                if let Err(fail) = check_error(&text, &e) {
                    panic!("{what} #{i}: {fail}");
                }
            }
        }
        eprintln!("{what}: {rejected}/200 edits rejected");
        assert!(rejected > 0, "{what}: no edit ever broke the seed");
    }
}

/// The shipped examples load, and loading from text gives what loading from disk gives.
#[test]
fn example_configs_round_trip() {
    for name in [
        "vrrpd-node-a.toml",
        "vrrpd-node-b.toml",
        "vrrpd-active-active-a.toml",
        "vrrpd-active-active-b.toml",
        "node-a/vrrpd.toml",
        "node-b/vrrpd.toml",
    ] {
        let path = configs_dir().join(name);
        let from_disk = VrrpConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        let from_text =
            validate(&Source::from_text(&path, text.as_str())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_disk, from_text, "{name}");
        assert!(!from_text.instances.is_empty(), "{name}");
    }
}

/// Regression, found by `arbitrary_text_never_panics`: a value missing after `=` (`a=`,
/// `""=`) was reported as `FILE:1:3: ` with an empty message, because toml's `message()`
/// is empty for this error.
#[test]
fn syntax_errors_say_what_is_wrong() {
    for text in ["a=", "\"\"=", "[[instance]]\nvrid =\n"] {
        let e = validate(&Source::from_text(FILE, text)).expect_err("not a valid config");
        for fe in e.errors() {
            assert!(
                !fe.message.trim().is_empty(),
                "{text:?}: error without a message: {fe:?}, rendered {:?}",
                fe.render(Path::new(FILE))
            );
        }
    }
}
