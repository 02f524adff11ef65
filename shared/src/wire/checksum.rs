//! The Internet checksum (RFC 1071) and the IPv4 pseudo-header.
//!
//! Sums are kept *uncomplemented* (`ones_complement_sum`, `pseudo_header_v4`)
//! so that parts can be added with [`combine`] before the final complement:
//! the VRRP checksum is `!(pseudo-header sum ⊕ message sum)`, and a received
//! message is valid when that same sum, taken over the message *with* its
//! checksum field, folds to `0xffff`.
//!
//! Layout of the IPv4 pseudo-header (RFC 768/793), 12 bytes:
//!
//! ```text
//!  0      7 8     15 16    23 24    31
//! +--------+--------+--------+--------+
//! |          source address           |
//! +--------+--------+--------+--------+
//! |        destination address        |
//! +--------+--------+--------+--------+
//! |  zero  |protocol|     length      |
//! +--------+--------+--------+--------+
//! ```

use std::net::Ipv4Addr;

/// Adds 16-bit words with end-around carry; an odd trailing byte is padded
/// with a zero byte on the right (RFC 1071 §4.1). The result is folded to
/// 16 bits but not complemented.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    // A u64 accumulator cannot overflow for any buffer that fits in memory
    // (each word adds at most 0xffff), so folding once at the end suffices.
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(acc)
}

/// One's-complement addition of already folded partial sums.
///
/// Only valid for partial sums of even-length pieces (an odd piece would put
/// the next piece's bytes in the wrong half of the word). The pseudo-header
/// is 12 bytes, so pseudo-header ⊕ message is always correct.
pub fn combine(sums: &[u16]) -> u16 {
    fold(sums.iter().map(|&s| u64::from(s)).sum())
}

/// The Internet checksum of `data`: the complement of its one's-complement sum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// The uncomplemented sum of the IPv4 pseudo-header for an upper-layer
/// message of `length` bytes carried with `protocol` from `src` to `dst`.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, length: u16) -> u16 {
    let s = src.octets();
    let d = dst.octets();
    let [lh, ll] = length.to_be_bytes();
    ones_complement_sum(&[
        s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], 0, protocol, lh, ll,
    ])
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves acc <= 0xffff, so the conversion cannot fail; the
    // fallback only exists to keep this module free of panicking paths.
    u16::try_from(acc).unwrap_or(0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 1071 §3 worked example: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_right() {
        assert_eq!(ones_complement_sum(&[0x12]), 0x1200);
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn end_around_carry() {
        // 0xffff + 0x0001 = 0x1_0000 -> folds to 0x0001.
        assert_eq!(ones_complement_sum(&[0xff, 0xff, 0x00, 0x01]), 0x0001);
        assert_eq!(combine(&[0xffff, 0x0001]), 0x0001);
        assert_eq!(combine(&[0x8000, 0x8000]), 0x0001);
    }

    #[test]
    fn combine_matches_concatenation() {
        let a = [0xde, 0xad, 0xbe, 0xef];
        let b = [0x01, 0x02, 0x03];
        let mut ab = a.to_vec();
        ab.extend_from_slice(&b);
        assert_eq!(
            combine(&[ones_complement_sum(&a), ones_complement_sum(&b)]),
            ones_complement_sum(&ab)
        );
    }

    #[test]
    fn pseudo_header_layout() {
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let dst = Ipv4Addr::new(224, 0, 0, 18);
        let bytes = [192, 0, 2, 1, 224, 0, 0, 18, 0, 112, 0, 16];
        assert_eq!(
            pseudo_header_v4(src, dst, 112, 16),
            ones_complement_sum(&bytes)
        );
    }
}
