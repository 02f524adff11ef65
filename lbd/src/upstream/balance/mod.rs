//! Load-balancing algorithms: which backend of a pool gets the next request.
//!
//! A [`Balancer`] is built from an [`Algorithm`] and asked to [`Balancer::pick`] among a pool's
//! backends. It returns the index ([`BackendId`]) of a backend that is *eligible*:
//!
//! - available ([`Backend::is_available`]: healthy, not ejected, not drained),
//! - weight above 0 (weight 0 is a soft drain for every algorithm),
//! - below its `max_conns` ([`Backend::has_capacity`]),
//! - not in [`PickContext::exclude`] (backends already tried by this request's retries).
//!
//! `None` means no backend is eligible; the proxy answers 503.
//!
//! | algorithm              | state                     | picks                                             |
//! |------------------------|---------------------------|---------------------------------------------------|
//! | `RoundRobin`           | atomic counter            | the `counter % k`-th of the `k` eligible backends |
//! | `WeightedRoundRobin`   | mutex over current weights| nginx's smooth weighted round robin               |
//! | `LeastConnections`     | atomic counter            | least `in_flight / weight`, ties in rotation      |
//! | `RandomTwoChoices`     | none (thread rng)         | the less loaded of two random eligible backends   |
//! | `IpHash`               | none                      | weighted rendezvous hash of the client IP         |
//! | `Maglev`               | cached lookup table       | Maglev table slot of the key, walking to eligible |
//!
//! Everything but smooth weighted round robin is lock-free on the pick path. SWRR must update
//! all current weights together; its mutex is held for one O(n) loop over integers.
//!
//! The hashing algorithms use [`hash::stable_hash`] so both nodes of the pair agree.

pub mod hash;
mod least;
mod maglev;
mod rendezvous;
mod round_robin;

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::upstream::backend::{Backend, BackendId};

pub use maglev::TABLE_SIZE as MAGLEV_TABLE_SIZE;

/// What the Maglev balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address.
    ClientIp,
    /// The first value of this request header; the client IP when the header is absent.
    Header(HeaderName),
    /// The value of this cookie; the client IP when the cookie is absent.
    Cookie(String),
}

/// A balancing algorithm, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Each eligible backend in turn; weights ignored.
    #[default]
    RoundRobin,
    /// nginx's smooth weighted round robin: exact weight ratios, evenly interleaved.
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight; ties broken in rotation.
    LeastConnections,
    /// Power of two choices: of two random eligible backends, the one with fewer in-flight
    /// requests relative to weight.
    RandomTwoChoices,
    /// Client-IP affinity by weighted rendezvous hashing: removing a backend only moves its own
    /// clients.
    IpHash,
    /// Consistent hashing with a Maglev lookup table.
    Maglev { key: HashKey },
}

/// What the balancer may look at for one pick.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    pub client_ip: IpAddr,
    /// Request headers, for header/cookie keyed hashing; `None` for L4 connections.
    pub headers: Option<&'a HeaderMap>,
    /// Backends this request already tried (retries).
    pub exclude: &'a [BackendId],
}

impl<'a> PickContext<'a> {
    pub fn new(client_ip: IpAddr) -> Self {
        Self {
            client_ip,
            headers: None,
            exclude: &[],
        }
    }

    pub fn with_headers(mut self, headers: &'a HeaderMap) -> Self {
        self.headers = Some(headers);
        self
    }

    pub fn with_exclude(mut self, exclude: &'a [BackendId]) -> Self {
        self.exclude = exclude;
        self
    }

    /// Hash of the request key for `key`, falling back to the client IP when the header or
    /// cookie is missing (clients without the key still get IP affinity).
    pub fn key_hash(&self, key: &HashKey) -> u64 {
        let value = match key {
            HashKey::ClientIp => None,
            HashKey::Header(name) => self.headers.and_then(|h| h.get(name)).map(|v| v.as_bytes()),
            HashKey::Cookie(name) => self.headers.and_then(|h| find_cookie(h, name)),
        };
        match value {
            Some(v) => hash::stable_hash(v, hash::SEED_KEY),
            None => hash::ip_hash(self.client_ip),
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s) (RFC 6265 §4.2.1:
/// `name=value; name2=value2`, the value optionally in double quotes). No allocation.
pub(crate) fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    let name = name.as_bytes();
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            if k.trim_ascii() != name {
                return None;
            }
            let v = v.trim_ascii();
            Some(match v {
                [b'"', inner @ .., b'"'] => inner,
                _ => v,
            })
        })
}

/// Eligible for this pick (see the module docs).
#[inline]
pub(crate) fn eligible(index: usize, b: &Backend, ctx: &PickContext<'_>) -> bool {
    b.weight > 0 && b.is_available() && b.has_capacity() && !ctx.exclude.contains(&BackendId(index))
}

/// Number of eligible backends.
fn count_eligible(backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> usize {
    backends
        .iter()
        .enumerate()
        .filter(|(i, b)| eligible(*i, b, ctx))
        .count()
}

/// Index of the `n`-th eligible backend. `None` if fewer are eligible, which can happen when
/// availability changed since they were counted; callers then fall back to the first one.
fn nth_eligible(backends: &[Arc<Backend>], ctx: &PickContext<'_>, n: usize) -> Option<usize> {
    backends
        .iter()
        .enumerate()
        .filter(|(i, b)| eligible(*i, b, ctx))
        .nth(n)
        .map(|(i, _)| i)
        .or_else(|| first_eligible(backends, ctx))
}

fn first_eligible(backends: &[Arc<Backend>], ctx: &PickContext<'_>) -> Option<usize> {
    backends
        .iter()
        .enumerate()
        .position(|(i, b)| eligible(i, b, ctx))
}

/// `a` carries strictly less load per unit of weight than `b` (cross-multiplied, no division).
#[inline]
fn less_loaded(a: &Backend, b: &Backend) -> bool {
    u64::from(a.in_flight()) * u64::from(b.weight) < u64::from(b.in_flight()) * u64::from(a.weight)
}

#[derive(Debug)]
enum State {
    RoundRobin(round_robin::RoundRobin),
    Weighted(round_robin::SmoothWeighted),
    Least(least::LeastConnections),
    TwoChoices,
    IpHash,
    Maglev(maglev::Maglev),
}

/// A configured algorithm plus its per-pool state. One per pool; shared by all workers.
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    state: State,
}

impl Balancer {
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match &algorithm {
            Algorithm::RoundRobin => State::RoundRobin(round_robin::RoundRobin::default()),
            Algorithm::WeightedRoundRobin => {
                State::Weighted(round_robin::SmoothWeighted::default())
            }
            Algorithm::LeastConnections => State::Least(least::LeastConnections::default()),
            Algorithm::RandomTwoChoices => State::TwoChoices,
            Algorithm::IpHash => State::IpHash,
            Algorithm::Maglev { key } => State::Maglev(maglev::Maglev::new(key.clone())),
        };
        Self { algorithm, state }
    }

    pub fn algorithm(&self) -> &Algorithm {
        &self.algorithm
    }

    /// Choose an eligible backend, or `None` when there is none.
    pub fn pick(&self, ctx: &PickContext<'_>, backends: &[Arc<Backend>]) -> Option<BackendId> {
        let index = match &self.state {
            State::RoundRobin(rr) => rr.pick(ctx, backends),
            State::Weighted(swrr) => swrr.pick(ctx, backends),
            State::Least(lc) => lc.pick(ctx, backends),
            State::TwoChoices => least::two_choices(ctx, backends),
            State::IpHash => rendezvous::pick(hash::ip_hash(ctx.client_ip), ctx, backends),
            State::Maglev(m) => m.pick(ctx, backends),
        }?;
        // Not asserting eligibility: another thread may flip a flag between pick and here.
        debug_assert!(index < backends.len());
        Some(BackendId(index))
    }

    /// How many lookup tables this balancer has built (Maglev only, else 0). Grows by one per
    /// membership change, not per request; export it as a metric.
    pub fn table_builds(&self) -> u64 {
        match &self.state {
            State::Maglev(m) => m.builds(),
            _ => 0,
        }
    }

    /// Build any cached state now (the Maglev table) so the first request doesn't pay for it.
    /// Also worth calling after a health change, from the health task rather than a request.
    pub fn warm(&self, backends: &[Arc<Backend>]) {
        if let State::Maglev(m) = &self.state {
            m.refresh(backends);
        }
    }
}
