//! The order-independent, time-free digest of the soft state.
//!
//! Each live entry contributes `mix(FNV-1a(table, key, time-free value))`; contributions are
//! combined by wrapping addition, so the result does not depend on iteration order (two
//! nodes' `HashMap`s iterate differently). FNV-1a is fixed (no per-process random key), so two
//! processes agree; the final `mix` (the splitmix64 finaliser) spreads FNV's weak high bits so
//! that sums of similar keys don't cancel in structured ways. This is a convergence check,
//! not a security boundary: the peer link is authenticated separately.

use shared::peer::{Digest, Table};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a with length-prefixed fields, so ("ab","c") and ("a","bc") differ.
pub(crate) struct EntryHasher(u64);

impl EntryHasher {
    pub(crate) fn new(table: Table, key: &[u8]) -> EntryHasher {
        let mut h = EntryHasher(FNV_OFFSET);
        h.bytes(&[table as u8]);
        h.field(key);
        h
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub(crate) fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_be_bytes());
        self.bytes(b);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }

    pub(crate) fn finish(self) -> u64 {
        mix(self.0)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Accumulates entry hashes into a [`Digest`].
#[derive(Default)]
pub(crate) struct DigestSum(Digest);

impl DigestSum {
    pub(crate) fn add(&mut self, entry_hash: u64) {
        self.0.count += 1;
        self.0.hash = self.0.hash.wrapping_add(entry_hash);
    }

    pub(crate) fn finish(self) -> Digest {
        self.0
    }
}

/// Combine per-table digests.
pub(crate) fn combine(parts: impl IntoIterator<Item = Digest>) -> Digest {
    parts.into_iter().fold(Digest::default(), |acc, d| Digest {
        count: acc.count + d.count,
        hash: acc.hash.wrapping_add(d.hash),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_delimited_and_fixed() {
        let mut a = EntryHasher::new(Table::Sticky, b"k");
        a.field(b"ab");
        a.field(b"c");
        let mut b = EntryHasher::new(Table::Sticky, b"k");
        b.field(b"a");
        b.field(b"bc");
        let (a, b) = (a.finish(), b.finish());
        assert_ne!(a, b);
        // Fixed across processes: recomputing gives the same value.
        let mut c = EntryHasher::new(Table::Sticky, b"k");
        c.field(b"ab");
        c.field(b"c");
        assert_eq!(c.finish(), a);
        // Table is part of the identity.
        assert_ne!(
            EntryHasher::new(Table::Admin, b"k").finish(),
            EntryHasher::new(Table::Sticky, b"k").finish()
        );
    }

    #[test]
    fn order_independent() {
        let mut x = DigestSum::default();
        x.add(1);
        x.add(u64::MAX);
        let mut y = DigestSum::default();
        y.add(u64::MAX);
        y.add(1);
        assert_eq!(x.finish(), y.finish());
    }
}
