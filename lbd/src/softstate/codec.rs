//! Byte-level helpers shared by the three tables' codecs, the clock conversion, and the
//! small node-id interner.
//!
//! Key layout (every table): `u16 BE len(a) | a | b`, where `a` is the pool or limiter name
//! and `b` the rest (cookie value, client key, backend address). Keys carry no version byte:
//! they are identities (hashed into the digest, coalesced in dirty sets), and a change of key
//! layout would be a schema change announced by the HELLO schema hash.
//!
//! Values start with [`VALUE_VERSION`]; each table documents the rest. Integers are big
//! endian; times are nanoseconds relative to the moment of encoding, never clock readings:
//! ages of writes as `i64` (see [`age`]), remaining times as `u64`.

use std::time::Duration;

use shared::peer::{MergeError, Table};

/// First byte of every encoded value.
pub(crate) const VALUE_VERSION: u8 = 1;
/// Longest key accepted from a peer (a pool name plus a cookie or client key).
pub(crate) const MAX_KEY_LEN: usize = 4096;
/// Most distinct node ids a table remembers: a pair plus room for a node that was replaced
/// under a new id. A peer presenting more is rejected rather than growing state unboundedly.
pub(crate) const MAX_NODES: usize = 16;

/// A point on this process's monotonic clock in nanoseconds. Signed, because a peer's record
/// may describe a write older than our own clock's epoch (`now - age < 0`).
pub(crate) type Stamp = i64;

pub(crate) fn stamp(now: Duration) -> Stamp {
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

pub(crate) fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A wire age/remaining value as a signed offset (saturating: a u64 above i64::MAX is a
/// nonsense time we clamp rather than reject, as it orders the same way).
pub(crate) fn offset(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The age of a write for the wire: `now - written`, signed, because a local write that
/// must outrank a same-instant entry is stamped 1 ns after it, possibly past `now`; clamping
/// that to 0 would lose the order it was bumped to keep.
pub(crate) fn age(now: Stamp, written: Stamp) -> [u8; 8] {
    now.saturating_sub(written).to_be_bytes()
}

/// `a - b` as a non-negative wire value.
pub(crate) fn non_negative_diff(a: Stamp, b: Stamp) -> u64 {
    u64::try_from(a.saturating_sub(b)).unwrap_or(0)
}

pub(crate) fn malformed(table: Table, reason: impl Into<String>) -> MergeError {
    MergeError::Malformed {
        table: table.as_str(),
        reason: reason.into(),
    }
}

/// Append a two-part key to `out` (cleared first, so a table can reuse a scratch buffer and
/// look keys up without allocating).
pub(crate) fn encode_key_into(out: &mut Vec<u8>, a: &[u8], b: &[u8]) {
    out.clear();
    // Names are config identifiers; one longer than u16::MAX is truncated rather than
    // corrupting the layout (it would still be a unique, stable key for that name).
    let a = &a[..a.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(a.len() as u16).to_be_bytes());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
}

pub(crate) fn encode_key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + a.len() + b.len());
    encode_key_into(&mut v, a, b);
    v
}

/// Split a key into its two parts, checking the form.
pub(crate) fn decode_key(table: Table, key: &[u8]) -> Result<(&[u8], &[u8]), MergeError> {
    if key.len() > MAX_KEY_LEN {
        return Err(malformed(table, format!("key of {} bytes", key.len())));
    }
    let mut r = Reader::new(table, key);
    let n = r.u16()? as usize;
    let a = r.bytes(n)?;
    Ok((a, r.rest()))
}

/// A bounds-checked cursor over untrusted bytes: every read fails with
/// [`MergeError::Malformed`] instead of panicking.
pub(crate) struct Reader<'a> {
    table: Table,
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(table: Table, buf: &'a [u8]) -> Reader<'a> {
        Reader { table, buf }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], MergeError> {
        if self.buf.len() < n {
            return Err(malformed(
                self.table,
                format!("truncated: need {n} bytes, have {}", self.buf.len()),
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, MergeError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, MergeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, MergeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A signed age (two's complement): see [`age`].
    pub(crate) fn age(&mut self) -> Result<i64, MergeError> {
        Ok(self.u64()? as i64)
    }

    /// A `u8`-length-prefixed, non-empty UTF-8 node id.
    pub(crate) fn node_id(&mut self) -> Result<&'a str, MergeError> {
        let n = self.u8()? as usize;
        if n == 0 {
            return Err(malformed(self.table, "empty node id"));
        }
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| malformed(self.table, "node id is not UTF-8"))
    }

    pub(crate) fn version(&mut self) -> Result<(), MergeError> {
        match self.u8()? {
            VALUE_VERSION => Ok(()),
            v => Err(malformed(self.table, format!("unknown value version {v}"))),
        }
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn finish(&self) -> Result<(), MergeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(
                self.table,
                format!("{} trailing bytes", self.buf.len()),
            ))
        }
    }
}

/// Write a `u8`-length-prefixed node id (ids longer than 255 bytes are cut: config
/// validation keeps them short, and a cut id is still stable).
pub(crate) fn put_node_id(out: &mut Vec<u8>, id: &str) {
    let b = &id.as_bytes()[..id.len().min(u8::MAX as usize)];
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}

/// Node ids seen by one table, so entries store a one-byte index instead of a string.
/// Index 0 is this node. Ordering decisions always compare the names, never the indexes,
/// because both nodes must pick the same winner.
pub(crate) struct NodeIds {
    names: Vec<Box<str>>,
}

impl NodeIds {
    pub(crate) fn new(local: &str) -> NodeIds {
        let local = &local[..floor_char_boundary(local, u8::MAX as usize)];
        NodeIds {
            names: vec![local.into()],
        }
    }

    pub(crate) const LOCAL: u8 = 0;

    pub(crate) fn name(&self, idx: u8) -> &str {
        self.names.get(idx as usize).map_or("", |n| n)
    }

    pub(crate) fn intern(&mut self, table: Table, name: &str) -> Result<u8, MergeError> {
        if let Some(i) = self.names.iter().position(|n| &**n == name) {
            return Ok(i as u8);
        }
        if self.names.len() >= MAX_NODES {
            return Err(malformed(
                table,
                format!("more than {MAX_NODES} distinct node ids"),
            ));
        }
        self.names.push(name.into());
        Ok((self.names.len() - 1) as u8)
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = s.len().min(max);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_rejects_truncation() {
        let k = encode_key(b"pool", b"cookie");
        assert_eq!(
            decode_key(Table::Sticky, &k).ok(),
            Some((&b"pool"[..], &b"cookie"[..]))
        );
        for n in 0..6 {
            assert!(decode_key(Table::Sticky, &k[..n]).is_err(), "prefix {n}");
        }
        assert!(decode_key(Table::Sticky, &vec![0; MAX_KEY_LEN + 1]).is_err());
    }

    #[test]
    fn interner_is_bounded() {
        let mut n = NodeIds::new("a");
        assert_eq!(n.intern(Table::Admin, "a").ok(), Some(0));
        for i in 1..MAX_NODES {
            assert_eq!(n.intern(Table::Admin, &format!("n{i}")).ok(), Some(i as u8));
        }
        assert!(n.intern(Table::Admin, "one-too-many").is_err());
        assert_eq!(n.name(3), "n3");
    }
}
