//! The layer check: lbd's modules import one way, down the layer table in `lbd/src/lib.rs`'s
//! crate docs (the one copy of the table: it is parsed from there).
//!
//! Every path into the crate a source file names is an import: `crate::…`, `super::…`,
//! `self::…` and a bare path through one of the file's own child modules, in `use` lines (brace
//! groups expanded) and inline. Comments, string literals and `#[cfg(test)]` modules and `use`
//! lines are skipped: tests may reach anywhere. A path from a module to a module of a higher
//! layer fails the test with file:line, both modules and both layers, unless it is in
//! [`KNOWN_UPWARD`], the imports upward that lbd still has; an entry there that no longer
//! matches anything fails too, so the list only shrinks.
//!
//! Not seen: paths made by macros from pieces, and re-exports (a path names the module it goes
//! through, which is what couples the two files).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

/// Imports from a lower layer to a higher one that lbd still has, as (from module, to module,
/// why it is still there). The check fails on any other, and on an entry that no longer
/// matches an import: remove it when its import goes.
const KNOWN_UPWARD: &[(&str, &str, &str)] = &[];

/// The layer table: every module named in it, with its layer. A module not named is in the
/// layer of its closest named ancestor.
#[derive(Debug)]
struct Table {
    of: BTreeMap<String, usize>,
}

impl Table {
    /// The table in `lib_rs`'s crate docs: the `//! | rank | name | modules |` rows, modules
    /// in backticks.
    fn parse(lib_rs: &str) -> Result<Table, String> {
        let mut ranks = Vec::new();
        let mut of = BTreeMap::new();
        for line in lib_rs.lines() {
            let Some(doc) = line.trim().strip_prefix("//!") else {
                continue;
            };
            let cells: Vec<&str> = doc.trim().split('|').map(str::trim).collect();
            if cells.len() < 4 || !cells[0].is_empty() {
                continue;
            }
            let Ok(rank) = cells[1].parse::<usize>() else {
                continue;
            };
            for m in backticked(cells[3]) {
                if of.insert(m.clone(), rank).is_some() {
                    return Err(format!("module `{m}` is in the layer table twice"));
                }
            }
            ranks.push(rank);
        }
        if ranks.is_empty() || ranks != (1..=ranks.len()).collect::<Vec<_>>() {
            return Err(format!(
                "the layer table's rows must be numbered 1, 2, 3… from the bottom; found {ranks:?}"
            ));
        }
        Ok(Table { of })
    }

    /// The named module `path` is in (itself or its closest named ancestor).
    fn entry<'a>(&'a self, path: &[String]) -> Option<&'a str> {
        (1..=path.len()).rev().find_map(|n| {
            self.of
                .get_key_value(&path[..n].join("::"))
                .map(|(k, _)| k.as_str())
        })
    }

    fn rank(&self, entry: &str) -> usize {
        self.of[entry]
    }
}

/// The `code spans` of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// An import from a lower layer to a higher one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Upward {
    file: String,
    line: usize,
    /// The importing file's module.
    from: String,
    from_rank: usize,
    /// The table entry the path lands in, and the path as written (resolved).
    to: String,
    to_rank: usize,
    path: String,
}

impl fmt::Display for Upward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` (layer {}) imports `crate::{}` from `{}` (layer {})",
            self.file, self.line, self.from, self.from_rank, self.path, self.to, self.to_rank
        )
    }
}

/// What the check found in a source tree.
#[derive(Debug, Default)]
struct Report {
    upward: Vec<Upward>,
    /// Files whose module the table does not place, and paths into nothing it names.
    unplaced: Vec<String>,
}

/// A source file: its path under `src/` (with `/`) and its text.
type File = (String, String);

/// The module a file under `src/` defines (`None`: the crate roots, `lib.rs` and `main.rs`).
fn module_of(file: &str) -> Option<Vec<String>> {
    let stem = file.strip_suffix(".rs")?;
    if stem == "lib" || stem == "main" {
        return None;
    }
    let mut path: Vec<String> = stem.split('/').map(str::to_string).collect();
    if path.last().is_some_and(|s| s == "mod") {
        path.pop();
    }
    Some(path)
}

/// Check every file of `files` against the table in `lib.rs` (one of them).
fn check(files: &[File]) -> Result<Report, String> {
    let lib = files
        .iter()
        .find(|(f, _)| f == "lib.rs")
        .ok_or("no lib.rs")?;
    let table = Table::parse(&lib.1)?;
    let modules: Vec<(usize, Vec<String>)> = files
        .iter()
        .enumerate()
        .filter_map(|(i, (f, _))| module_of(f).map(|m| (i, m)))
        .collect();
    let cleaned: BTreeMap<usize, Cleaned> = modules
        .iter()
        .map(|(i, _)| (*i, clean(&files[*i].1)))
        .collect();
    // Files of `#[cfg(test)] mod x;` declarations, and everything under them.
    let tests: Vec<Vec<String>> = modules
        .iter()
        .flat_map(|(i, m)| {
            cleaned[i].test_children.iter().map(move |c| {
                let mut p = m.clone();
                p.push(c.clone());
                p
            })
        })
        .collect();
    let mut report = Report::default();
    for (i, module) in &modules {
        if tests.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        let file = &files[*i].0;
        let Some(from) = table.entry(module) else {
            report.unplaced.push(format!(
                "{file}: module `{}` is not in lib.rs's layer table",
                module.join("::")
            ));
            continue;
        };
        let children: BTreeSet<String> = modules
            .iter()
            .filter(|(_, m)| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|(_, m)| m[module.len()].clone())
            .collect();
        for (line, path) in crate_paths(&cleaned[i].code, module, &children) {
            let Some(to) = table.entry(&path) else {
                report.unplaced.push(format!(
                    "{file}:{line}: `crate::{}` is in no module of the layer table",
                    path.join("::")
                ));
                continue;
            };
            let (from_rank, to_rank) = (table.rank(from), table.rank(to));
            if to_rank > from_rank {
                report.upward.push(Upward {
                    file: file.clone(),
                    line,
                    from: module.join("::"),
                    from_rank,
                    to: to.to_string(),
                    to_rank,
                    path: path.join("::"),
                });
            }
        }
    }
    report.upward.sort();
    Ok(report)
}

/// A source file with comments, literals and test-only code blanked (lines kept).
struct Cleaned {
    code: Vec<char>,
    /// `x` of each `#[cfg(test)] mod x;`.
    test_children: Vec<String>,
}

fn clean(src: &str) -> Cleaned {
    let mut code = blank_comments_and_literals(src);
    let test_children = blank_test_code(&mut code);
    Cleaned {
        code,
        test_children,
    }
}

/// Blank `s[from..to]`, keeping newlines (so line numbers stay).
fn blank(s: &mut [char], from: usize, to: usize) {
    let to = to.min(s.len());
    for c in &mut s[from..to] {
        if *c != '\n' {
            *c = ' ';
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Comments (line, block, nested) and the contents of string, raw string and char literals
/// become spaces.
fn blank_comments_and_literals(src: &str) -> Vec<char> {
    let mut s: Vec<char> = src.chars().collect();
    let at = |s: &[char], i: usize, p: &str| {
        p.chars().enumerate().all(|(k, c)| s.get(i + k) == Some(&c))
    };
    let mut i = 0;
    while i < s.len() {
        let prev_ident = i > 0 && is_ident(s[i - 1]);
        if at(&s, i, "//") {
            let end = (i..s.len()).find(|&j| s[j] == '\n').unwrap_or(s.len());
            blank(&mut s, i, end);
            i = end;
        } else if at(&s, i, "/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < s.len() {
                if at(&s, j, "/*") {
                    depth += 1;
                    j += 2;
                } else if at(&s, j, "*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut s, i, j);
            i = j;
        } else if !prev_ident && (at(&s, i, "r#") || at(&s, i, "r\"") || at(&s, i, "br")) {
            // A raw string: r"…", r#"…"#, br"…".
            let start = i;
            let mut j = i + if s[i] == 'b' { 2 } else { 1 };
            let hashes = (j..s.len()).take_while(|&k| s[k] == '#').count();
            j += hashes;
            if s.get(j) != Some(&'"') {
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let end = (j + 1..s.len())
                .find(|&k| at(&s, k, &close))
                .map_or(s.len(), |k| k + close.len());
            blank(&mut s, start, end);
            i = end;
        } else if s[i] == '"' {
            let mut j = i + 1;
            while j < s.len() && s[j] != '"' {
                j += if s[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut s, i, j + 1);
            i = j + 1;
        } else if s[i] == '\'' {
            // A char literal ('x', '\n', '\u{1F600}'), else a lifetime ('a).
            if s.get(i + 1) == Some(&'\\') {
                let end = (i + 3..s.len())
                    .find(|&k| s[k] == '\'')
                    .map_or(s.len(), |k| k + 1);
                blank(&mut s, i, end);
                i = end;
            } else if s.get(i + 2) == Some(&'\'') {
                blank(&mut s, i, i + 3);
                i += 3;
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    s
}

/// Blank every `#[cfg(test)]` module and `use` line; returns the names of the test modules
/// that are files of their own (`#[cfg(test)] mod x;`).
fn blank_test_code(s: &mut [char]) -> Vec<String> {
    const ATTR: &str = "#[cfg(test)]";
    let mut children = Vec::new();
    let mut i = 0;
    while let Some(start) = find(s, i, ATTR) {
        let mut j = skip_ws(s, start + ATTR.len());
        // Other attributes between `#[cfg(test)]` and the item.
        while s.get(j) == Some(&'#') {
            j = skip_ws(s, matching(s, j + 1, '[', ']'));
        }
        let (word, after) = ident_at(s, j);
        let (word, after) = if word == "pub" {
            ident_at(s, skip_ws(s, after))
        } else {
            (word, after)
        };
        let end = match word.as_str() {
            "mod" => {
                let (name, after) = ident_at(s, skip_ws(s, after));
                let k = skip_ws(s, after);
                match s.get(k) {
                    Some(';') => {
                        children.push(name);
                        k + 1
                    }
                    Some('{') => matching(s, k, '{', '}'),
                    _ => start + ATTR.len(),
                }
            }
            "use" => (after..s.len())
                .find(|&k| s[k] == ';')
                .map_or(s.len(), |k| k + 1),
            _ => start + ATTR.len(),
        };
        if end > start + ATTR.len() {
            blank(s, start, end);
        }
        i = end;
    }
    children
}

fn find(s: &[char], from: usize, pat: &str) -> Option<usize> {
    let p: Vec<char> = pat.chars().collect();
    (from..s.len().saturating_sub(p.len() - 1)).find(|&i| s[i..i + p.len()] == p[..])
}

fn skip_ws(s: &[char], mut i: usize) -> usize {
    while s.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    i
}

/// The index just past the bracket closing the one at `open_at`.
fn matching(s: &[char], open_at: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    for (k, &c) in s.iter().enumerate().skip(open_at) {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return k + 1;
            }
        }
    }
    s.len()
}

/// The identifier starting at `i` (empty if none) and the index past it.
fn ident_at(s: &[char], i: usize) -> (String, usize) {
    let end = (i..s.len()).find(|&k| !is_ident(s[k])).unwrap_or(s.len());
    (s[i..end].iter().collect(), end)
}

/// Every path into the crate in `code` (of module `module`, whose child modules are
/// `children`), as (line, absolute module path without `crate`).
fn crate_paths(
    code: &[char],
    module: &[String],
    children: &BTreeSet<String>,
) -> Vec<(usize, Vec<String>)> {
    let newlines: Vec<usize> = (0..code.len()).filter(|&k| code[k] == '\n').collect();
    let line_at = |k: usize| newlines.partition_point(|&n| n < k) + 1;
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let starts_path =
            is_ident(code[i]) && (i == 0 || !(is_ident(code[i - 1]) || code[i - 1] == ':'));
        if !starts_path {
            i += 1;
            continue;
        }
        let (word, after) = ident_at(code, i);
        let through = code[after..].starts_with(&[':', ':']);
        let base = match word.as_str() {
            _ if !through => None,
            "crate" => Some((Vec::new(), after + 2)),
            "self" => Some((module.to_vec(), after + 2)),
            "super" => {
                let mut base = module.to_vec();
                base.pop();
                let mut k = after;
                // super::super::…
                while code[k..].starts_with(&[':', ':', 's', 'u', 'p', 'e', 'r', ':', ':']) {
                    base.pop();
                    k += 7;
                }
                Some((base, k + 2))
            }
            w if children.contains(w) => Some((module.to_vec(), i)),
            _ => None,
        };
        match base {
            Some((base, from)) => {
                let mut k = from;
                let mut paths = Vec::new();
                use_tree(code, &mut k, base, &mut paths);
                out.extend(paths.into_iter().map(|(at, p)| (line_at(at), p)));
                i = k.max(i + 1);
            }
            None => i = after,
        }
    }
    out
}

/// Expand the path or `use` tree at `*i` (after `crate::` or its like) into module paths, each
/// with the index where it ends.
fn use_tree(
    s: &[char],
    i: &mut usize,
    mut prefix: Vec<String>,
    out: &mut Vec<(usize, Vec<String>)>,
) {
    loop {
        *i = skip_ws(s, *i);
        if s.get(*i) == Some(&'{') {
            *i += 1;
            loop {
                *i = skip_ws(s, *i);
                match s.get(*i) {
                    None => return,
                    Some('}') => {
                        *i += 1;
                        return;
                    }
                    Some(',') => *i += 1,
                    _ => {
                        let before = *i;
                        use_tree(s, i, prefix.clone(), out);
                        if *i == before {
                            // Not a path (a stray token): step over it.
                            *i += 1;
                        }
                    }
                }
            }
        }
        let (word, after) = ident_at(s, *i);
        if word.is_empty() {
            out.push((*i, prefix));
            return;
        }
        *i = after;
        if word != "self" {
            prefix.push(word);
        }
        if s[*i..].starts_with(&[':', ':']) {
            *i += 2;
        } else {
            // `as alias`, `,`, `;`, `(`…: the path ends here.
            out.push((*i, prefix));
            return;
        }
    }
}

/// Every `.rs` file under `dir`, as paths relative to it.
fn read_tree(dir: &Path) -> Vec<File> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read lbd/src") {
            let path = entry.expect("read lbd/src").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                files.push((rel, std::fs::read_to_string(&path).expect("read source")));
            }
        }
    }
    files.sort();
    files
}

fn lbd_src() -> Vec<File> {
    read_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Distinct (from module, to module) pairs of `upward`.
fn edges(upward: &[Upward]) -> BTreeSet<(String, String)> {
    upward
        .iter()
        .map(|u| (u.from.clone(), u.to.clone()))
        .collect()
}

#[test]
fn lbd_imports_only_go_down_the_layer_table() {
    let report = check(&lbd_src()).expect("lib.rs has a layer table");
    eprintln!(
        "{} upward imports, {} (from, to) module pairs",
        report.upward.len(),
        edges(&report.upward).len()
    );
    assert!(
        report.unplaced.is_empty(),
        "place these in lbd/src/lib.rs's layer table:\n{}",
        report.unplaced.join("\n")
    );
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD
        .iter()
        .map(|(f, t, _)| (f.to_string(), t.to_string()))
        .collect();
    assert_eq!(
        known.len(),
        KNOWN_UPWARD.len(),
        "KNOWN_UPWARD lists an edge twice"
    );
    let new: Vec<String> = report
        .upward
        .iter()
        .filter(|u| !known.contains(&(u.from.clone(), u.to.clone())))
        .map(Upward::to_string)
        .collect();
    assert!(
        new.is_empty(),
        "imports from a lower layer to a higher one (lbd/src/lib.rs's layer table); move what is \
         imported down, or the importer up:\n{}",
        new.join("\n")
    );
    let found = edges(&report.upward);
    let gone: Vec<String> = known
        .difference(&found)
        .map(|(f, t)| format!("{f} -> {t}"))
        .collect();
    assert!(
        gone.is_empty(),
        "KNOWN_UPWARD lists imports lbd no longer has: remove them (the list only shrinks):\n{}",
        gone.join("\n")
    );
}

#[test]
fn the_layer_table_names_only_modules_that_exist() {
    let files = lbd_src();
    let lib = &files.iter().find(|(f, _)| f == "lib.rs").unwrap().1;
    let table = Table::parse(lib).unwrap();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(f, _)| module_of(f))
        .map(|m| m.join("::"))
        .collect();
    let missing: Vec<&String> = table.of.keys().filter(|m| !modules.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "the layer table names modules lbd does not have: {missing:?}"
    );
}

fn tree(files: &[(&str, &str)]) -> Vec<File> {
    files
        .iter()
        .map(|(f, s)| (f.to_string(), s.to_string()))
        .collect()
}

const TWO_LAYERS: &str = "//! | layer | name | modules |\n\
                          //! |---|---|---|\n\
                          //! | 1 | low | `low`, `top::leaf` |\n\
                          //! | 2 | high | `top` |\n\
                          pub mod low;\npub mod top;\n";

#[test]
fn an_upward_import_is_reported_with_file_line_modules_and_layers() {
    let files = tree(&[
        ("lib.rs", TWO_LAYERS),
        (
            "low.rs",
            "//! Mentions crate::top::Thing in a comment.\n\
             use crate::low::Own;\n\
             const S: &str = \"crate::top::x\";\n\
             fn f() -> crate::top::Thing { todo!() }\n\
             #[cfg(test)]\n\
             mod tests {\n    use crate::top::Anything;\n}\n",
        ),
        (
            "top/mod.rs",
            "pub mod leaf;\nuse crate::low::X;\nfn g() { leaf::h() }\n",
        ),
        ("top/leaf.rs", "pub fn h() {}\n"),
    ]);
    let report = check(&files).unwrap();
    assert!(report.unplaced.is_empty(), "{:?}", report.unplaced);
    let found: Vec<String> = report.upward.iter().map(Upward::to_string).collect();
    assert_eq!(
        found,
        ["low.rs:4: `low` (layer 1) imports `crate::top::Thing` from `top` (layer 2)"]
    );
}

#[test]
fn brace_groups_super_paths_and_child_modules_are_followed_upward() {
    let files = tree(&[
        ("lib.rs", TWO_LAYERS),
        (
            "low.rs",
            "use crate::{\n    low::A,\n    top::{B, C},\n};\n",
        ),
        ("top/mod.rs", "pub mod leaf;\n"),
        ("top/leaf.rs", "use super::Up;\nuse self::inner::X;\n"),
    ]);
    let report = check(&files).unwrap();
    let found: Vec<(String, usize, String)> = report
        .upward
        .iter()
        .map(|u| (u.file.clone(), u.line, u.path.clone()))
        .collect();
    assert_eq!(
        found,
        [
            ("low.rs".to_string(), 3, "top::B".to_string()),
            ("low.rs".to_string(), 3, "top::C".to_string()),
            ("top/leaf.rs".to_string(), 1, "top::Up".to_string()),
        ]
    );
}

#[test]
fn a_module_missing_from_the_table_is_reported() {
    let files = tree(&[("lib.rs", TWO_LAYERS), ("elsewhere.rs", "")]);
    let report = check(&files).unwrap();
    assert_eq!(
        report.unplaced,
        ["elsewhere.rs: module `elsewhere` is not in lib.rs's layer table"]
    );
}
