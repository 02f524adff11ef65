//! Stable hashing for the affinity balancers (IP hash, Maglev).
//!
//! Why not `std::hash`: `RandomState` is seeded per process and `DefaultHasher`'s algorithm may
//! change between Rust releases. Both nodes of the pair (and a restarted lbd) must send a given
//! client to the same backend, so the hash must be a fixed function of the bytes: FNV-1a for the
//! bytes, then the MurmurHash3 64-bit finalizer so every input bit affects every output bit
//! (FNV alone leaves the low bits weak, and Maglev uses `hash % 65537`).

use std::net::IpAddr;

/// Seed for backend names.
pub const SEED_NAME: u64 = 0x6c62_6e61_6d65_0001;
/// Seed for request keys (client IP, header or cookie value).
pub const SEED_KEY: u64 = 0x6c62_6b65_7900_0002;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// MurmurHash3 `fmix64`: a bijective avalanche of a 64-bit value.
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A fixed, well-mixed 64-bit hash of `bytes`; `seed` separates uses of the same bytes.
pub fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = FNV_OFFSET ^ mix64(seed);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix64(h ^ bytes.len() as u64)
}

/// Hash of a client address. IPv4-mapped IPv6 addresses hash like the IPv4 address, so a client
/// seen on a dual-stack listener keeps its backend.
pub fn ip_hash(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => stable_hash(&v4.octets(), SEED_KEY),
        IpAddr::V6(v6) => stable_hash(&v6.octets(), SEED_KEY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_values_do_not_change() {
        // Pinned so a refactor cannot silently remap every client of a running pair.
        assert_eq!(stable_hash(b"", 0), 17280346270528514342);
        assert_eq!(stable_hash(b"backend-a", SEED_NAME), 14635971480954883693);
        assert_eq!(ip_hash("10.0.0.1".parse().unwrap()), 2624047823402445887);
        let a = stable_hash(b"backend-a", SEED_NAME);
        let b = stable_hash(b"backend-b", SEED_NAME);
        assert_ne!(a, b);
        assert_ne!(stable_hash(b"x", 1), stable_hash(b"x", 2));
        assert_eq!(
            ip_hash("::ffff:10.0.0.1".parse().unwrap()),
            ip_hash("10.0.0.1".parse().unwrap())
        );
    }
}
