//! Config loading in three stages, shared by vrrpd and lbd.
//!
//! 1. [`Source::read`] reads the file; [`Source::parse`] deserializes the daemon's `File*`
//!    structs (serde, `deny_unknown_fields`). A syntax or type error becomes one
//!    [`FieldError`] with file, line and column, and (for a wrong type or an unknown key)
//!    the key path found at that position ([`Source::key_at`]).
//! 2. The daemon's `validate()` walks the parsed structs with a [`Validator`] and reports
//!    *every* problem, each keyed by a path such as `instance[1].priority`. The validator
//!    finds that key's line and column in the original text, so the file structs stay plain
//!    serde types instead of being wrapped in spans.
//! 3. `validate()` returns the typed runtime config, or a [`ConfigError`] listing all errors.
//!
//! Errors render one per line as `FILE:LINE:COL: KEY: MESSAGE`, the format editors and
//! grep understand.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file's path and text, kept together so every later error can point into it.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The key path, e.g. `instance[0].vrid`; empty for a whole-file syntax error.
    pub key: String,
    /// What is wrong and what would be valid.
    pub message: String,
    /// 1-based line and column, when the key could be found in the text.
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_errors(path, errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<FieldError>,
    },
}

impl ConfigError {
    /// The individual problems (empty for a read error).
    pub fn errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { errors, .. } => errors,
        }
    }
}

fn render_errors(path: &Path, errors: &[FieldError]) -> String {
    let mut out = format!("{}: {} error(s) in config", path.display(), errors.len());
    for e in errors {
        out.push('\n');
        out.push_str(&e.render(path));
    }
    out
}

impl FieldError {
    /// `FILE:LINE:COL: KEY: MESSAGE` (line and column omitted when unknown).
    pub fn render(&self, path: &Path) -> String {
        let mut s = path.display().to_string();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
            if let Some(col) = self.column {
                s.push_str(&format!(":{col}"));
            }
        }
        if !self.key.is_empty() {
            s.push_str(&format!(": `{}`", self.key));
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

impl Source {
    pub fn read(path: impl AsRef<Path>) -> Result<Source, ConfigError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text }),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// A source that did not come from disk (tests, fuzzing).
    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            path: path.into(),
            text: text.into(),
        }
    }

    /// Deserialize the file structs. Unknown keys and wrong types come back with their
    /// position; serde's message already names the expected values for enums and fields.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(&self.text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            // A wrong type or an unknown key is named too, not only placed.
            let key = e
                .span()
                .and_then(|span| self.key_at(span.start))
                .unwrap_or_default();
            ConfigError::Invalid {
                path: self.path.clone(),
                errors: vec![FieldError {
                    key,
                    message: describe_toml_error(&e),
                    line,
                    column,
                }],
            }
        })
    }

    /// Find where a key path such as `instance[1].vips[0]` is written, as 1-based
    /// (line, column). Returns the deepest part of the path that exists, so an error about
    /// a missing key still points at its table.
    pub fn locate(&self, key_path: &str) -> Option<(usize, usize)> {
        let doc = toml_edit::ImDocument::parse(self.text.as_str()).ok()?;
        let mut best: Option<usize> = None;
        let mut node = Node::Table(doc.as_table());
        for segment in split_key_path(key_path) {
            let next = match (segment, node) {
                (Segment::Key(k), Node::Table(table)) => {
                    table.get_key_value(k).map(|(key, item)| {
                        best = key.span().map(|s| s.start).or(best);
                        Node::from_item(item)
                    })
                }
                (Segment::Index(i), Node::TableArray(array)) => array.get(i).map(|t| {
                    best = t.span().map(|s| s.start).or(best);
                    Node::Table(t)
                }),
                (Segment::Index(i), Node::Array(array)) => array.get(i).map(|v| {
                    best = v.span().map(|s| s.start).or(best);
                    Node::from_value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        best.map(|offset| line_col(&self.text, offset))
    }
}

impl Source {
    /// The key path (`pool[1].keepalive.idle_max`) whose key or value covers byte `offset`:
    /// the deepest one, so an array element names its index. `None` when the text does not
    /// parse as TOML or nothing is there.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let doc = toml_edit::ImDocument::parse(self.text.as_str()).ok()?;
        let mut found = None;
        walk_table(doc.as_table(), "", offset, &mut found);
        found
    }
}

fn covers(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.contains(&offset))
}

fn walk_table(
    table: &dyn toml_edit::TableLike,
    path: &str,
    offset: usize,
    found: &mut Option<String>,
) {
    for (name, item) in table.iter() {
        let here = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        if table
            .get_key_value(name)
            .is_some_and(|(key, _)| covers(key.span(), offset))
        {
            *found = Some(here.clone());
        }
        match item {
            toml_edit::Item::Value(v) => walk_value(v, &here, offset, found),
            toml_edit::Item::Table(t) => walk_table(t, &here, offset, found),
            toml_edit::Item::ArrayOfTables(a) => {
                for (i, t) in a.iter().enumerate() {
                    walk_table(t, &format!("{here}[{i}]"), offset, found);
                }
            }
            toml_edit::Item::None => {}
        }
    }
}

fn walk_value(value: &toml_edit::Value, path: &str, offset: usize, found: &mut Option<String>) {
    if covers(value.span(), offset) {
        *found = Some(path.to_string());
    }
    match value {
        toml_edit::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk_value(v, &format!("{path}[{i}]"), offset, found);
            }
        }
        toml_edit::Value::InlineTable(t) => walk_table(t, path, offset, found),
        _ => {}
    }
}

/// A position in a parsed document while walking a key path.
#[derive(Clone, Copy)]
enum Node<'a> {
    Table(&'a dyn toml_edit::TableLike),
    TableArray(&'a toml_edit::ArrayOfTables),
    Array(&'a toml_edit::Array),
    Scalar,
}

impl<'a> Node<'a> {
    fn from_item(item: &'a toml_edit::Item) -> Node<'a> {
        match item {
            toml_edit::Item::Table(t) => Node::Table(t),
            toml_edit::Item::ArrayOfTables(a) => Node::TableArray(a),
            toml_edit::Item::Value(v) => Node::from_value(v),
            toml_edit::Item::None => Node::Scalar,
        }
    }

    fn from_value(value: &'a toml_edit::Value) -> Node<'a> {
        match value {
            toml_edit::Value::InlineTable(t) => Node::Table(t),
            toml_edit::Value::Array(a) => Node::Array(a),
            _ => Node::Scalar,
        }
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_key_path(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// toml's short message, or (when it has none, as for `key =` with no value) the last
/// line of its long form, which says what was expected.
fn describe_toml_error(e: &toml::de::Error) -> String {
    let short = e.message().trim();
    if !short.is_empty() {
        return short.to_string();
    }
    let long = e.to_string();
    long.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
        .map_or_else(|| "invalid TOML".to_string(), str::to_string)
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// Collects validation errors so the operator sees all of them in one run.
pub struct Validator<'a> {
    source: &'a Source,
    errors: Vec<FieldError>,
}

impl<'a> Validator<'a> {
    pub fn new(source: &'a Source) -> Self {
        Validator {
            source,
            errors: Vec::new(),
        }
    }

    pub fn source(&self) -> &Source {
        self.source
    }

    /// Record a problem at `key` (e.g. `instance[0].priority`); the message should say
    /// what was found and what is valid.
    pub fn error(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        let key = key.into();
        let (line, column) = match self.source.locate(&key) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        self.errors.push(FieldError {
            key,
            message: message.to_string(),
            line,
            column,
        });
    }

    /// Check an integer range, recording `key: VALUE is out of range (valid: MIN..=MAX)`.
    pub fn check_range<T>(&mut self, key: impl Into<String>, value: T, min: T, max: T) -> bool
    where
        T: PartialOrd + fmt::Display + Copy,
    {
        if value < min || value > max {
            self.error(
                key,
                format!("{value} is out of range (valid: {min}..={max})"),
            );
            false
        } else {
            true
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Errors recorded so far (to tell whether one section added any).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// `Ok(())` when nothing was recorded, else every error at once.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.source.path.clone(),
                errors: self.errors,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[global]\nlog = \"x\"\n\n[[instance]]\nname = \"a\"\nvrid = 1\n\n[[instance]]\nname = \"b\"\nvrid = 300\nvips = [\"10.0.0.1/24\", \"bad\"]\n";

    #[test]
    fn locate_finds_keys_in_tables_arrays_of_tables_and_arrays() {
        let src = Source::from_text("t.toml", TEXT);
        assert_eq!(src.locate("global.log"), Some((2, 1)));
        assert_eq!(src.locate("instance[1].vrid"), Some((10, 1)));
        assert_eq!(src.locate("instance[1].vips[1]"), Some((11, 24)));
        // A missing key points at the deepest part that exists.
        assert_eq!(src.locate("instance[0].priority"), Some((4, 1)));
        assert_eq!(src.locate("nowhere"), None);
    }

    #[test]
    fn validator_collects_every_error_with_positions() {
        let src = Source::from_text("t.toml", TEXT);
        let mut v = Validator::new(&src);
        assert!(v.check_range("instance[0].vrid", 1u32, 1, 255));
        assert!(!v.check_range("instance[1].vrid", 300u32, 1, 255));
        v.error(
            "instance[1].vips[1]",
            "\"bad\" is not an IPv4 address with a prefix",
        );
        let err = v.finish().unwrap_err();
        assert_eq!(err.errors().len(), 2);
        let text = err.to_string();
        assert!(
            text.contains("t.toml:10:1: `instance[1].vrid`: 300 is out of range (valid: 1..=255)"),
            "{text}"
        );
        assert!(
            text.contains("t.toml:11:24: `instance[1].vips[1]`"),
            "{text}"
        );
    }

    #[test]
    fn syntax_and_unknown_keys_report_line_and_column() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct F {
            name: String,
        }
        let src = Source::from_text("f.toml", "name = \"a\"\ncolour = 1\n");
        let err = src.parse::<F>().unwrap_err().to_string();
        assert!(err.contains("f.toml:2:1"), "{err}");
        assert!(
            err.contains("unknown field `colour`, expected `name`"),
            "{err}"
        );
        // A wrong type names its key, also inside arrays of tables and arrays.
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct G {
            pool: Vec<P>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            ports: Vec<u16>,
            keep: bool,
        }
        let src = Source::from_text(
            "g.toml",
            "[[pool]]\nports = [1]\nkeep = true\n[[pool]]\nports = [2, \"x\"]\nkeep = true\n",
        );
        let err = src.parse::<G>().unwrap_err().to_string();
        assert!(
            err.contains("g.toml:5:13: `pool[1].ports[1]`: invalid type"),
            "{err}"
        );
        let src = Source::from_text("g.toml", "[[pool]]\nports = []\nkeep = \"yes\"\n");
        let err = src.parse::<G>().unwrap_err().to_string();
        assert!(
            err.contains(
                "g.toml:3:8: `pool[0].keep`: invalid type: string \"yes\", expected a boolean"
            ),
            "{err}"
        );
        let src = Source::from_text("f.toml", "name = \n");
        let err = src.parse::<F>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("f.toml:1:"), "{text}");
        assert!(
            err.errors().iter().all(|e| !e.message.is_empty()),
            "a syntax error must say what is wrong: {text}"
        );
    }
}
