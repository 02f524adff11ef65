//! Request routing: ordered rules mapping a request to a backend pool.
//!
//! A [`Router`] holds [`RouteRule`]s in configuration order; the **first** rule whose every
//! condition matches wins, and the request goes to the default pool when none does (or nowhere:
//! [`Router::route`] returns `None` and the proxy answers 404). A canary by header is just a
//! rule with a [`HeaderMatch`] placed before the general rule for the same host/path.
//!
//! Matching semantics (all decided here, once, so config authors can rely on them):
//!
//! - **Host** comes from the request URI's authority when present (HTTP/2 `:authority`, or an
//!   absolute-form HTTP/1.1 request line, which RFC 9112 §3.2.2 says overrides `Host`), else
//!   from the `Host` header. It is compared ASCII case-insensitively, with the port and one
//!   trailing dot removed (`Example.COM.:8080` is `example.com`). A request with no host only
//!   matches rules without a host condition.
//! - [`HostMatch::Exact`] compares the whole host. [`HostMatch::Wildcard`] `*.example.com` matches
//!   any host *ending in* `.example.com` with at least one more label: `a.example.com` and
//!   `a.b.example.com`, but not `example.com` itself (list that as its own Exact rule). This is
//!   nginx's `*.example.com`, not TLS's single-label wildcard.
//! - [`PathMatch::Exact`] compares the path (without query) byte for byte.
//!   [`PathMatch::Prefix`] is **segment-aware**: `/api` matches `/api`, `/api/` and `/api/x`
//!   but not `/apix`; a prefix ending in `/` (`/api/`) matches paths starting with it, and `/`
//!   matches everything. Paths are not percent-decoded or dot-segment-normalised here: both
//!   HTTP paths normalise them before routing ([`crate::l7::path`], `[paths]`).
//! - [`HeaderMatch`] with `value: None` requires the header to be present; with a value, one of
//!   the header's values must equal it exactly (case-sensitive bytes).
//! - `methods`: empty means any method.
//!
//! A [`RouteTarget::Split`] spreads the rule's requests over several pools with nginx's smooth
//! weighted round robin, precomputed into a sequence at construction and indexed by an atomic
//! counter: lock-free, and exact — 95/5 sends exactly 95 and 5 of every 100 requests.
//!
//! Everything is compiled in [`Router::new`] (lowercased hosts, wildcard suffixes, split
//! sequences), so [`Router::route`] does not allocate.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, HeaderName, Method};

use crate::upstream::backend::PoolId;

/// Largest split sequence (sum of weights after dividing by their gcd).
pub const MAX_SPLIT_TOTAL: u32 = 65_536;

/// Host condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// The whole host, e.g. `api.example.com`.
    Exact(String),
    /// `*.example.com`: one or more labels in front of `example.com`.
    Wildcard(String),
}

/// Path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Segment-aware prefix (see the module docs).
    Prefix(String),
}

/// Header condition: present (`value: None`) or equal to `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: Option<String>,
}

/// Where a matching request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Pool(PoolId),
    /// Weighted split; weights are relative, 0 means never.
    Split(Vec<(PoolId, u32)>),
}

/// One routing rule, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    pub header: Option<HeaderMatch>,
    /// Empty: any method.
    pub methods: Vec<Method>,
    pub target: RouteTarget,
}

/// A rule that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("route {rule:?}: host wildcard {pattern:?} must look like \"*.example.com\" (one leading \"*.\", no other \"*\")")]
    InvalidWildcard { rule: String, pattern: String },
    #[error(
        "route {rule:?}: host {host:?} must be a non-empty host name without \"*\", port or path"
    )]
    InvalidHost { rule: String, host: String },
    #[error("route {rule:?}: path {path:?} must start with \"/\"")]
    PathNotAbsolute { rule: String, path: String },
    #[error("route {rule:?}: split needs at least one pool with weight > 0")]
    EmptySplit { rule: String },
    #[error("route {rule:?}: split weights reduce to a total of {total}, more than {max}; use coarser weights")]
    SplitTooFine { rule: String, total: u64, max: u32 },
}

/// The result of routing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch<'r> {
    /// Index of the matching rule; `None` for the default pool.
    pub rule: Option<usize>,
    /// Name of the matching rule, or `"default"`.
    pub name: &'r str,
    pub pool: PoolId,
}

/// The parts of a request the router looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Raw host (port and case are normalised by the router); `None` when the request has none.
    pub host: Option<&'a str>,
    /// Path without the query string.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    /// Host from the URI authority, else the `Host` header (see the module docs).
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
        });
        Self {
            method: &parts.method,
            host,
            path: parts.uri.path(),
            headers: &parts.headers,
        }
    }
}

/// `Example.COM.:8080` → `Example.COM` (case is handled by the comparisons). Also drops any
/// `userinfo@` of an authority and keeps IPv6 literals in their brackets.
pub fn normalize_host(raw: &str) -> &str {
    let raw = raw.trim();
    let raw = raw.rsplit_once('@').map_or(raw, |(_, h)| h);
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[derive(Debug)]
enum CompiledHost {
    /// Lowercase host.
    Exact(String),
    /// Lowercase `.example.com` suffix (the `*` removed).
    Suffix(String),
}

impl CompiledHost {
    fn matches(&self, host: &str) -> bool {
        let host = host.as_bytes();
        match self {
            CompiledHost::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
            CompiledHost::Suffix(s) => {
                let s = s.as_bytes();
                host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            }
        }
    }
}

#[derive(Debug)]
enum CompiledPath {
    Exact(String),
    /// Prefix ending in `/`: plain `starts_with`.
    Dir(String),
    /// Prefix not ending in `/`: equal, or followed by `/`.
    Segment(String),
}

impl CompiledPath {
    fn matches(&self, path: &str) -> bool {
        match self {
            CompiledPath::Exact(p) => path == p,
            CompiledPath::Dir(p) => path.starts_with(p.as_str()),
            CompiledPath::Segment(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
        }
    }
}

#[derive(Debug)]
enum CompiledTarget {
    Pool(PoolId),
    Split {
        sequence: Box<[PoolId]>,
        counter: AtomicUsize,
    },
}

impl CompiledTarget {
    fn pool(&self) -> PoolId {
        match self {
            CompiledTarget::Pool(p) => *p,
            CompiledTarget::Split { sequence, counter } => {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                sequence[n % sequence.len()]
            }
        }
    }
}

#[derive(Debug)]
struct CompiledRule {
    name: String,
    host: Option<CompiledHost>,
    path: Option<CompiledPath>,
    header: Option<HeaderMatch>,
    methods: Vec<Method>,
    target: CompiledTarget,
}

impl CompiledRule {
    fn compile(rule: RouteRule) -> Result<Self, Vec<RouterError>> {
        let mut errors = Vec::new();
        let host = match rule.host {
            None => None,
            Some(HostMatch::Exact(h)) => {
                let n = normalize_host(&h);
                if n.is_empty() || n != h.trim().trim_end_matches('.') || n.contains(['*', '/']) {
                    errors.push(RouterError::InvalidHost {
                        rule: rule.name.clone(),
                        host: h,
                    });
                    None
                } else {
                    Some(CompiledHost::Exact(n.to_ascii_lowercase()))
                }
            }
            Some(HostMatch::Wildcard(w)) => {
                let w = w.trim();
                let suffix = w.strip_prefix('*').unwrap_or("");
                let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
                if suffix.len() < 2
                    || !suffix.starts_with('.')
                    || suffix.starts_with("..")
                    || suffix.contains(['*', ':', '/'])
                {
                    errors.push(RouterError::InvalidWildcard {
                        rule: rule.name.clone(),
                        pattern: w.to_owned(),
                    });
                    None
                } else {
                    Some(CompiledHost::Suffix(suffix.to_ascii_lowercase()))
                }
            }
        };
        let path = match rule.path {
            None => None,
            Some(PathMatch::Exact(p) | PathMatch::Prefix(p)) if !p.starts_with('/') => {
                errors.push(RouterError::PathNotAbsolute {
                    rule: rule.name.clone(),
                    path: p,
                });
                None
            }
            Some(PathMatch::Exact(p)) => Some(CompiledPath::Exact(p)),
            Some(PathMatch::Prefix(p)) if p.ends_with('/') => Some(CompiledPath::Dir(p)),
            Some(PathMatch::Prefix(p)) => Some(CompiledPath::Segment(p)),
        };
        let target = match rule.target {
            RouteTarget::Pool(p) => Some(CompiledTarget::Pool(p)),
            RouteTarget::Split(targets) => match split_sequence(&targets) {
                Ok(sequence) => Some(CompiledTarget::Split {
                    sequence,
                    counter: AtomicUsize::new(0),
                }),
                Err(SplitProblem::Empty) => {
                    errors.push(RouterError::EmptySplit {
                        rule: rule.name.clone(),
                    });
                    None
                }
                Err(SplitProblem::TooFine(total)) => {
                    errors.push(RouterError::SplitTooFine {
                        rule: rule.name.clone(),
                        total,
                        max: MAX_SPLIT_TOTAL,
                    });
                    None
                }
            },
        };
        match target {
            Some(target) if errors.is_empty() => Ok(Self {
                name: rule.name,
                host,
                path,
                header: rule.header,
                methods: rule.methods,
                target,
            }),
            _ => Err(errors),
        }
    }

    fn matches(&self, req: &RequestView<'_>, host: Option<&str>) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        if let Some(h) = &self.host {
            if !host.is_some_and(|host| h.matches(host)) {
                return false;
            }
        }
        if let Some(p) = &self.path {
            if !p.matches(req.path) {
                return false;
            }
        }
        if let Some(hm) = &self.header {
            let mut values = req.headers.get_all(&hm.name).iter().peekable();
            let ok = match &hm.value {
                None => values.peek().is_some(),
                Some(want) => values.any(|v| v.as_bytes() == want.as_bytes()),
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

enum SplitProblem {
    Empty,
    TooFine(u64),
}

/// The smooth-WRR order of one full cycle over the split's pools (weights reduced by their
/// gcd), so `sequence[n % len]` reproduces SWRR exactly without a lock.
fn split_sequence(targets: &[(PoolId, u32)]) -> Result<Box<[PoolId]>, SplitProblem> {
    let g = targets.iter().fold(0u32, |g, &(_, w)| gcd(g, w));
    if g == 0 {
        return Err(SplitProblem::Empty);
    }
    let weights: Vec<i64> = targets.iter().map(|&(_, w)| i64::from(w / g)).collect();
    let total: i64 = weights.iter().sum();
    if total > i64::from(MAX_SPLIT_TOTAL) {
        return Err(SplitProblem::TooFine(total.unsigned_abs()));
    }
    let mut current = vec![0i64; targets.len()];
    let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for i in 0..targets.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        sequence.push(targets[best].0);
    }
    Ok(sequence.into_boxed_slice())
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Compiled, ordered routing rules plus an optional default pool. Shared by all workers; swap a
/// new one in (e.g. through `ArcSwap`) on reload.
#[derive(Debug)]
pub struct Router {
    rules: Vec<CompiledRule>,
    default: Option<PoolId>,
}

impl Router {
    /// Compile `rules` (in match order). Returns every problem found, not just the first.
    pub fn new(rules: Vec<RouteRule>, default: Option<PoolId>) -> Result<Self, Vec<RouterError>> {
        let mut compiled = Vec::with_capacity(rules.len());
        let mut errors = Vec::new();
        for rule in rules {
            match CompiledRule::compile(rule) {
                Ok(r) => compiled.push(r),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                rules: compiled,
                default,
            })
        } else {
            Err(errors)
        }
    }

    /// Rule names in match order (e.g. to pre-register per-route metrics).
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    pub fn default_pool(&self) -> Option<PoolId> {
        self.default
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// First matching rule's pool, else the default pool, else `None`.
    pub fn route(&self, req: &RequestView<'_>) -> Option<RouteMatch<'_>> {
        let host = req.host.map(normalize_host);
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(req, host) {
                return Some(RouteMatch {
                    rule: Some(i),
                    name: &rule.name,
                    pool: rule.target.pool(),
                });
            }
        }
        self.default.map(|pool| RouteMatch {
            rule: None,
            name: "default",
            pool,
        })
    }

    /// Could `req` go to a pool for which `wanted` holds? Looks at the rule [`Self::route`]
    /// would match (or the default pool), and at every pool of a split, without choosing
    /// one (a split's turn is taken only by the routing that sends the request).
    pub fn may_route_to(&self, req: &RequestView<'_>, wanted: impl Fn(PoolId) -> bool) -> bool {
        let host = req.host.map(normalize_host);
        match self.rules.iter().find(|rule| rule.matches(req, host)) {
            Some(rule) => match &rule.target {
                CompiledTarget::Pool(p) => wanted(*p),
                CompiledTarget::Split { sequence, .. } => sequence.iter().any(|p| wanted(*p)),
            },
            None => self.default.is_some_and(wanted),
        }
    }

    /// [`Self::route`] for a hyper/http request head.
    pub fn route_parts(&self, parts: &http::request::Parts) -> Option<RouteMatch<'_>> {
        self.route(&RequestView::from_parts(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_normalisation() {
        assert_eq!(normalize_host("Example.COM.:8080"), "Example.COM");
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
        assert_eq!(normalize_host("user@host:1"), "host");
        assert_eq!(normalize_host("a.b"), "a.b");
        assert_eq!(normalize_host(""), "");
    }

    #[test]
    fn may_route_to_sees_every_pool_of_a_split_without_taking_its_turn() {
        let rule = |name: &str, path: &str, target| RouteRule {
            name: name.into(),
            host: None,
            path: Some(PathMatch::Prefix(path.into())),
            header: None,
            methods: Vec::new(),
            target,
        };
        let r = Router::new(
            vec![
                rule("one", "/one/", RouteTarget::Pool(PoolId(1))),
                rule(
                    "split",
                    "/split/",
                    RouteTarget::Split(vec![(PoolId(0), 9), (PoolId(2), 1)]),
                ),
            ],
            Some(PoolId(0)),
        )
        .unwrap_or_else(|e| panic!("valid rules: {e:?}"));
        let headers = HeaderMap::new();
        let view = |path| RequestView {
            method: &Method::GET,
            host: Some("a.test"),
            path,
            headers: &headers,
        };
        let is = |want: usize| move |p: PoolId| p.0 == want;
        assert!(r.may_route_to(&view("/one/x"), is(1)));
        assert!(!r.may_route_to(&view("/one/x"), is(2)));
        assert!(r.may_route_to(&view("/other"), is(0)), "the default pool");
        assert!(!r.may_route_to(&view("/other"), is(2)));
        // The split's pool 2 comes up once in ten: asking must not use its turns.
        let first = r.route(&view("/split/")).map(|m| m.pool);
        for _ in 0..20 {
            assert!(r.may_route_to(&view("/split/"), is(2)));
        }
        let second = r.route(&view("/split/")).map(|m| m.pool);
        let sequence: Vec<PoolId> = match &r.rules[1].target {
            CompiledTarget::Split { sequence, .. } => sequence.to_vec(),
            CompiledTarget::Pool(_) => panic!("a split"),
        };
        assert_eq!((first, second), (Some(sequence[0]), Some(sequence[1])));
    }

    #[test]
    fn split_sequence_is_smooth() {
        let seq = split_sequence(&[(PoolId(0), 5), (PoolId(1), 1), (PoolId(2), 1)])
            .unwrap_or_else(|_| panic!("valid split"));
        let ids: Vec<usize> = seq.iter().map(|p| p.0).collect();
        assert_eq!(ids, [0, 0, 1, 0, 2, 0, 0]);
    }
}
