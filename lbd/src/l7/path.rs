//! Request path normalisation (pure): one spelling per path before routing and rate limiting,
//! so `/x/../login`, `/%6Cogin` and `/./login` are all `/login` to the router, the
//! `[[rate_limit]]` tables and the backend alike (the proxy sends the normalised path upstream;
//! the query string is never touched).
//!
//! [`normalize_path`] does, in this order:
//! 1. percent-decoding of the unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`),
//!    and upper-case hex for every other escape (`%2f` → `%2F`, §6.2.2.1); a `%` not followed
//!    by two hex digits is an error. `%2F` (an encoded `/`) follows [`EncodedSlash`]: kept as
//!    `%2F` (a character of its segment, not a separator), decoded to `/`, or an error.
//!    Nothing else is decoded: `%25` stays `%25`, so decoding never chains.
//! 2. with `merge_slashes`, every run of `/` becomes one `/`;
//! 3. dot-segment removal (RFC 3986 §5.2.4). A `..` above the root is dropped, as the RFC's
//!    algorithm does: `/../x` is `/x` (clamped, not an error).
//!
//! The result is a fixed point (normalising it again changes nothing) and has no `.` or `..`
//! segment; a path that needs none of it (the common case) is returned borrowed, after one
//! scan. Property tests below check both on arbitrary bytes.

use std::borrow::Cow;

/// What `%2F` in a path means (`paths.encoded_slash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlash {
    /// Stays `%2F`: a character of its segment, never a separator (routing and the backend
    /// see the same segments).
    #[default]
    Keep,
    /// Becomes `/` before dot segments are removed (`/a%2F..%2Fb` is `/b`).
    Decode,
    /// The request is answered 400.
    Reject,
}

impl EncodedSlash {
    /// The config spellings, as listed in errors.
    pub const VALID: &'static str = "\"keep\", \"decode\", \"reject\"";

    pub fn parse(s: &str) -> Option<EncodedSlash> {
        match s {
            "keep" => Some(EncodedSlash::Keep),
            "decode" => Some(EncodedSlash::Decode),
            "reject" => Some(EncodedSlash::Reject),
            _ => None,
        }
    }
}

/// `[paths]`: how request paths are normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathPolicy {
    /// Collapse runs of `/` into one.
    pub merge_slashes: bool,
    pub encoded_slash: EncodedSlash,
}

/// Why a path was refused (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("malformed percent-encoding in the request path (a '%' needs two hex digits)")]
    BadEscape,
    #[error(
        "encoded slash (%2F) in the request path, refused by paths.encoded_slash = \"reject\""
    )]
    EncodedSlash,
    #[error(
        "ambiguous request path: a backslash, or a dot segment with parameters (`..;`), which some backends resolve as a separator or a dot segment"
    )]
    Ambiguous,
}

/// The normalised form of `path` (see the module docs); borrowed when it already is.
pub fn normalize_path<'a>(path: &'a [u8], policy: &PathPolicy) -> Result<Cow<'a, [u8]>, BadPath> {
    refuse_ambiguous(path)?;
    if is_normal(path, policy) {
        return Ok(Cow::Borrowed(path));
    }
    let mut p = decode_unreserved(path, policy.encoded_slash)?;
    // A decoded `%2F` can start a new segment (`%2F.;` is `/.;`): look again.
    refuse_ambiguous(&p)?;
    if policy.merge_slashes {
        p.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    Ok(Cow::Owned(remove_dot_segments(&p)))
}

/// [`normalize_path`] for a request path, which is ASCII (or UTF-8) text.
pub fn normalize_path_str<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, BadPath> {
    match normalize_path(path.as_bytes(), policy)? {
        Cow::Borrowed(_) => Ok(Cow::Borrowed(path)),
        // Only ASCII bytes are decoded, inserted or removed (whole segments, at `/`), so text
        // stays text; should that ever not hold, refusing the path is the safe answer.
        Cow::Owned(v) => String::from_utf8(v)
            .map(Cow::Owned)
            .map_err(|_| BadPath::BadEscape),
    }
}

/// Forms lbd cannot normalise the way every backend would resolve them, so routing and rate
/// limits could see another path than the backend acts on: `\` (a separator to IIS and
/// some frameworks: `/x\..\login`) and dot segments with `;` parameters (`/x/..;/login` is
/// `/login` to Tomcat, Jetty and Spring). No valid client sends them (browsers turn `\` into
/// `/`), so they are refused rather than guessed at.
fn refuse_ambiguous(path: &[u8]) -> Result<(), BadPath> {
    if memchr::memchr(b'\\', path).is_some() {
        return Err(BadPath::Ambiguous);
    }
    if memchr::memchr(b';', path).is_none() {
        return Ok(());
    }
    let dot_with_params = |seg: &[u8]| {
        let name = seg.split(|&b| b == b';').next().unwrap_or(seg);
        seg.contains(&b';') && (is_dots(name) || is_dots(&decode_dots(name)))
    };
    if path.split(|&b| b == b'/').any(dot_with_params) {
        return Err(BadPath::Ambiguous);
    }
    Ok(())
}

fn is_dots(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

/// `%2e` / `%2E` as `.` (a dot segment can be written with escapes).
fn decode_dots(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%'
            && name
                .get(i + 1..i + 3)
                .is_some_and(|h| h.eq_ignore_ascii_case(b"2e"))
        {
            out.push(b'.');
            i += 3;
        } else {
            out.push(name[i]);
            i += 1;
        }
    }
    out
}

/// Nothing to do: every escape already canonical, no `//` to merge, no dot segment.
fn is_normal(path: &[u8], policy: &PathPolicy) -> bool {
    let mut escapes = path.iter().enumerate().filter(|(_, &b)| b == b'%');
    if !escapes.all(|(i, _)| is_canonical_escape(path.get(i + 1..i + 3), policy.encoded_slash)) {
        return false;
    }
    if policy.merge_slashes && path.windows(2).any(|w| w == b"//") {
        return false;
    }
    !path
        .split(|&b| b == b'/')
        .any(|seg| seg == b"." || seg == b"..")
}

/// The two bytes after a `%` are upper-case hex of a byte that stays encoded.
fn is_canonical_escape(hex: Option<&[u8]>, slash: EncodedSlash) -> bool {
    let Some(&[hi, lo]) = hex else { return false };
    let upper = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    if !(upper(hi) && upper(lo)) {
        return false;
    }
    let byte = hex_value(hi).unwrap_or(0) << 4 | hex_value(lo).unwrap_or(0);
    !is_unreserved(byte) && (byte != b'/' || slash == EncodedSlash::Keep)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Step 1 of the module docs.
fn decode_unreserved(path: &[u8], slash: EncodedSlash) -> Result<Vec<u8>, BadPath> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b != b'%' {
            out.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex_value),
            path.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(BadPath::BadEscape);
        };
        let byte = hi << 4 | lo;
        match byte {
            b'/' if slash == EncodedSlash::Reject => return Err(BadPath::EncodedSlash),
            b'/' if slash == EncodedSlash::Decode => out.push(b'/'),
            b if is_unreserved(b) => out.push(b),
            _ => out.extend_from_slice(&[b'%', HEX[usize::from(hi)], HEX[usize::from(lo)]]),
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4, step by step (the letters are the RFC's rules).
fn remove_dot_segments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while !rest.is_empty() {
        if let Some(r) = rest
            .strip_prefix(b"../")
            .or_else(|| rest.strip_prefix(b"./"))
        {
            rest = r; // A
        } else if rest.starts_with(b"/./") {
            rest = &rest[2..]; // B: "/./" -> "/"
        } else if rest == b"/." {
            rest = b"/"; // B
        } else if rest.starts_with(b"/../") {
            rest = &rest[3..]; // C: "/../" -> "/", and drop the last output segment
            pop_segment(&mut out);
        } else if rest == b"/.." {
            rest = b"/"; // C
            pop_segment(&mut out);
        } else if rest == b"." || rest == b".." {
            rest = b""; // D
        } else {
            // E: move the first segment (its leading '/', up to the next '/') to the output.
            let from = usize::from(rest[0] == b'/');
            let end = rest[from..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(rest.len(), |p| p + from);
            out.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// Remove the output's last segment and the `/` before it (if any).
fn pop_segment(out: &mut Vec<u8>) {
    let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
    out.truncate(cut);
}

#[cfg(test)]
mod tests;
