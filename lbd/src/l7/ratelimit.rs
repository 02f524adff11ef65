//! Rate limiting: which `[[rate_limit]]` tables apply to a request, its key for each, and the
//! 429 answer's `Retry-After`.
//!
//! The token buckets themselves live in the replicated soft state
//! ([`crate::softstate::SoftState::rate_check`], bounded with LRU and expiry, merged across the
//! pair without double counting); this module only decides what to ask. For each route the
//! applicable limiters (the global ones plus those naming the route, in config order) are
//! listed once per config snapshot ([`Limiters::new`]), so a request on a route without
//! limiters pays one empty-slice check and allocates nothing. A request is checked against
//! each applicable limiter in order and the first denial answers; limiters after it are not
//! charged.
//!
//! Keys: `client_ip` is the real client's address ([`crate::l7::headers::real_client`]: the
//! TCP peer, or behind `headers.trusted_proxies` the first untrusted X-Forwarded-For hop), an
//! IPv4-mapped IPv6 address counting as its IPv4 address, and an IPv6 address cut to the
//! limiter's `ipv6_prefix_len` (one host usually holds a whole /64); `header:NAME` the header's first value, and a request without the header is not
//! counted by that limiter (as nginx's `limit_req` skips an empty key: pair it with a
//! `client_ip` limiter to bound anonymous clients); `route` the matched route's name
//! (`"default"` for the default pool, `"-"` when nothing matched). A key longer than the
//! limiter's `max_key_bytes` is replaced by its SHA-256 ([`crate::softstate::bounded_key`];
//! counted in `lbd_rate_limit_keys_hashed_total`): the over-long value keeps a bucket of its
//! own, so padding a header neither dodges the limit nor stores kilobytes per request.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::config::{RateKey, RateLimitConfig};
use crate::metrics::inc;
use crate::softstate::{bounded_key, RateDecision, RateSpec, SoftState, HASHED_KEY_LEN};

/// One limiter in a snapshot.
#[derive(Debug)]
pub struct LimiterRt {
    pub name: String,
    key: RateKey,
    rate_per_s: f64,
    burst: u32,
    ipv6_prefix_len: u8,
    max_key_bytes: usize,
    /// Requests this limiter answered with 429 (carried over reloads by name).
    pub denied: Arc<AtomicU64>,
    /// Keys over `max_key_bytes`, hashed (carried over reloads by name).
    pub hashed: Arc<AtomicU64>,
}

/// Every limiter of a snapshot, indexed by route.
#[derive(Debug, Default)]
pub struct Limiters {
    pub all: Vec<LimiterRt>,
    /// Per route index: the limiters that apply, in config order.
    by_route: Vec<Vec<usize>>,
    /// For requests matched by no rule (default pool, or no route at all): the global ones.
    unrouted: Vec<usize>,
}

/// A denial: which limiter, and when the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub limiter: usize,
    pub retry_after: Duration,
}

impl Limiters {
    /// Build from the config, keeping the denial counters of same-named limiters of
    /// `previous`.
    pub fn new(cfgs: &[RateLimitConfig], routes: usize, previous: Option<&Limiters>) -> Limiters {
        let all = cfgs
            .iter()
            .map(|c| {
                let old = previous.and_then(|p| p.all.iter().find(|o| o.name == c.name));
                LimiterRt {
                    name: c.name.clone(),
                    key: c.key.clone(),
                    rate_per_s: c.rate,
                    burst: c.burst,
                    max_key_bytes: c.max_key_bytes,
                    ipv6_prefix_len: c.ipv6_prefix_len,
                    denied: old.map_or_else(Default::default, |o| Arc::clone(&o.denied)),
                    hashed: old.map_or_else(Default::default, |o| Arc::clone(&o.hashed)),
                }
            })
            .collect();
        let by_route = (0..routes)
            .map(|r| {
                cfgs.iter()
                    .enumerate()
                    .filter(|(_, c)| c.routes.is_empty() || c.routes.contains(&r))
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let unrouted = cfgs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.routes.is_empty())
            .map(|(i, _)| i)
            .collect();
        Limiters {
            all,
            by_route,
            unrouted,
        }
    }

    /// The limiters for a request matched by rule `route` (`None`: default pool or no match).
    pub fn applicable(&self, route: Option<usize>) -> &[usize] {
        match route {
            Some(r) => self.by_route.get(r).map_or(&[], Vec::as_slice),
            None => &self.unrouted,
        }
    }

    /// Charge the request to every applicable limiter until one denies.
    pub fn check(
        &self,
        soft: &SoftState,
        applicable: &[usize],
        req: &RequestKeys<'_>,
        now: Duration,
    ) -> Option<Denied> {
        for &i in applicable {
            let Some(l) = self.all.get(i) else { continue };
            let mut ip_buf = [0u8; 16];
            let key: &[u8] = match &l.key {
                RateKey::ClientIp => ip_key(req.client_ip, l.ipv6_prefix_len, &mut ip_buf),
                RateKey::Header(name) => match req.headers.get(name) {
                    Some(v) => v.as_bytes(),
                    None => continue,
                },
                RateKey::Route => req.route.as_bytes(),
            };
            let mut hashed = [0u8; HASHED_KEY_LEN];
            if key.len() > l.max_key_bytes {
                inc(&l.hashed);
            }
            let key = bounded_key(key, l.max_key_bytes, &mut hashed);
            let spec = RateSpec {
                rate_per_s: l.rate_per_s,
                burst: l.burst,
            };
            if let RateDecision::Deny { retry_after } = soft.rate_check(&l.name, key, spec, now) {
                return Some(Denied {
                    limiter: i,
                    retry_after,
                });
            }
        }
        None
    }
}

/// What a limiter key may be made of.
#[derive(Debug, Clone, Copy)]
pub struct RequestKeys<'a> {
    /// The real client (not necessarily the TCP peer).
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The matched route's name.
    pub route: &'a str,
}

/// The client address as 4 or 16 bytes, an IPv4-mapped IPv6 address as its IPv4 form (the
/// same client on a dual-stack listener shares its bucket), an IPv6 address with the bits
/// after `v6_prefix` zeroed (its network's bucket).
fn ip_key(ip: IpAddr, v6_prefix: u8, buf: &mut [u8; 16]) -> &[u8] {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            buf[..4].copy_from_slice(&v4.octets());
            &buf[..4]
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            *buf = (u128::from(v6) & mask).to_be_bytes();
            &buf[..]
        }
    }
}

/// `Retry-After` in whole seconds: rounded up (retrying earlier would be denied again), at
/// least 1 (0 would invite an immediate retry loop).
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(name: &str, key: RateKey, routes: Vec<usize>) -> RateLimitConfig {
        RateLimitConfig {
            name: name.into(),
            key,
            rate: 1.0,
            burst: 1,
            routes,
            ipv6_prefix_len: 64,
            max_key_bytes: 64,
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(7)), 7);
    }

    #[test]
    fn applicable_limiters_per_route_in_config_order() {
        let cfgs = vec![
            lim("api", RateKey::ClientIp, vec![1]),
            lim("all", RateKey::ClientIp, vec![]),
            lim("both", RateKey::Route, vec![0, 1]),
        ];
        let l = Limiters::new(&cfgs, 3, None);
        assert_eq!(l.applicable(Some(0)), &[1, 2]);
        assert_eq!(l.applicable(Some(1)), &[0, 1, 2]);
        assert_eq!(l.applicable(Some(2)), &[1]);
        assert_eq!(l.applicable(None), &[1]);
        // An index beyond the routes (can't happen with a consistent snapshot) applies none.
        assert!(l.applicable(Some(9)).is_empty());
        assert!(Limiters::new(&[], 3, None).applicable(Some(0)).is_empty());
    }

    #[test]
    fn denial_counters_survive_a_rebuild_by_name() {
        let cfgs = vec![lim("a", RateKey::ClientIp, vec![])];
        let old = Limiters::new(&cfgs, 0, None);
        old.all[0]
            .denied
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        let new = Limiters::new(&cfgs, 0, Some(&old));
        assert!(Arc::ptr_eq(&old.all[0].denied, &new.all[0].denied));
        let renamed = Limiters::new(&[lim("b", RateKey::ClientIp, vec![])], 0, Some(&old));
        assert!(!Arc::ptr_eq(&old.all[0].denied, &renamed.all[0].denied));
    }

    #[test]
    fn ip_keys_fold_mapped_v4() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        let v4: IpAddr = "10.1.2.3".parse().expect("ip");
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(ip_key(v4, 64, &mut a), &[10, 1, 2, 3]);
        assert_eq!(ip_key(mapped, 64, &mut b), &[10, 1, 2, 3]);
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(ip_key(v6, 128, &mut a).len(), 16);
    }

    #[test]
    fn ipv6_keys_are_cut_to_the_prefix_and_ipv4_keys_are_not() {
        let key = |ip: &str, prefix: u8| {
            let mut buf = [0u8; 16];
            ip_key(ip.parse().expect("ip"), prefix, &mut buf).to_vec()
        };
        // One /64: one bucket; the next /64: another.
        assert_eq!(key("2001:db8:0:1::1", 64), key("2001:db8:0:1:ffff::9", 64));
        assert_ne!(key("2001:db8:0:1::1", 64), key("2001:db8:0:2::1", 64));
        assert_eq!(key("2001:db8:0:1::1", 64)[8..], [0u8; 8]);
        // /128: every address apart; /1: half the address space together.
        assert_ne!(key("2001:db8::1", 128), key("2001:db8::2", 128));
        assert_eq!(key("2001:db8::1", 1), key("7fff::", 1));
        assert_ne!(key("2001:db8::1", 1), key("8000::", 1));
        // IPv4 stays a /32 whatever the IPv6 prefix.
        assert_ne!(key("10.0.0.1", 1), key("10.0.0.2", 1));
    }
}
