//! Distribution and eligibility properties of every balancing algorithm.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use lbd::upstream::backend::{Backend, BackendId, BackendSpec, InFlightGuard, Pool};
use lbd::upstream::balance::{Algorithm, HashKey, PickContext};
use lbd::upstream::health::{ActiveConfig, EjectionConfig, Outcome};

fn spec(i: usize, weight: u32) -> BackendSpec {
    BackendSpec {
        name: format!("b{i}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 8000 + i as u16)),
        weight,
        max_conns: 0,
    }
}

fn pool(weights: &[u32], algorithm: Algorithm) -> Pool {
    let specs = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| spec(i, w))
        .collect();
    Pool::new(
        "test",
        specs,
        algorithm,
        ActiveConfig::default(),
        EjectionConfig {
            consecutive_failures: 2,
            ..EjectionConfig::default()
        },
    )
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn counts(pool: &Pool, picks: usize, ctx: &PickContext<'_>) -> Vec<usize> {
    let mut c = vec![0; pool.backends.len()];
    for _ in 0..picks {
        let b = pool.pick(ctx).expect("an eligible backend");
        c[b.id.0] += 1;
    }
    c
}

fn all_algorithms() -> Vec<Algorithm> {
    vec![
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::RandomTwoChoices,
        Algorithm::IpHash,
        Algorithm::Maglev {
            key: HashKey::ClientIp,
        },
        Algorithm::Maglev {
            key: HashKey::Header(http::HeaderName::from_static("x-user")),
        },
        Algorithm::Maglev {
            key: HashKey::Cookie("session".into()),
        },
    ]
}

/// Make backend 1 unhealthy (active), 2 ejected (passive) and 3 drained.
fn knock_out_1_2_3(pool: &Pool) {
    let now = Duration::from_secs(100);
    for _ in 0..3 {
        pool.backends[1].record_probe(false, now);
    }
    for _ in 0..2 {
        pool.backends[2].record_result(Outcome::ConnectFailure, now);
    }
    pool.backends[3].set_drained(true);
    assert!(!pool.backends[1].is_available());
    assert!(!pool.backends[2].is_available());
    assert!(!pool.backends[3].is_available());
    assert!(pool.backends[0].is_available() && pool.backends[4].is_available());
}

#[test]
fn round_robin_is_exactly_even_and_skips_down_backends_fairly() {
    let p = pool(&[1, 5, 1], Algorithm::RoundRobin);
    let ctx = PickContext::new(ip(1));
    assert_eq!(counts(&p, 300, &ctx), [100, 100, 100]);
    p.backends[0].set_drained(true);
    // The backend after a down one must not get a double share.
    assert_eq!(counts(&p, 300, &ctx), [0, 150, 150]);
}

#[test]
fn smooth_weighted_round_robin_is_exact_and_interleaved() {
    let p = pool(&[1, 2, 5], Algorithm::WeightedRoundRobin);
    let ctx = PickContext::new(ip(1));
    let seq: Vec<usize> = (0..8000)
        .map(|_| p.pick(&ctx).expect("eligible").id.0)
        .collect();
    let mut total = [0usize; 3];
    for window in seq.chunks(8) {
        let mut c = [0usize; 3];
        for &i in window {
            c[i] += 1;
            total[i] += 1;
        }
        // Every cycle of sum(weights) picks holds the exact ratio.
        assert_eq!(c, [1, 2, 5], "window {window:?}");
    }
    assert_eq!(total, [1000, 2000, 5000]);
    // Smooth: the heavy backend never runs more than 2 in a row for 1:2:5.
    let longest = seq
        .chunk_by(|a, b| a == b)
        .map(|run| run.len())
        .max()
        .unwrap_or(0);
    assert!(longest <= 2, "longest run {longest}");
}

#[test]
fn smooth_weighted_round_robin_rebalances_over_survivors() {
    let p = pool(&[1, 2, 5], Algorithm::WeightedRoundRobin);
    let ctx = PickContext::new(ip(1));
    p.backends[2].set_drained(true);
    assert_eq!(counts(&p, 3000, &ctx), [1000, 2000, 0]);
}

#[test]
fn least_connections_picks_least_in_flight_per_weight() {
    let p = pool(&[1, 1, 1], Algorithm::LeastConnections);
    let ctx = PickContext::new(ip(1));
    let mut held: Vec<InFlightGuard> = Vec::new();
    for (i, n) in [3, 1, 2].into_iter().enumerate() {
        for _ in 0..n {
            held.push(p.backends[i].begin_request());
        }
    }
    for _ in 0..10 {
        assert_eq!(p.pick(&ctx).expect("eligible").id, BackendId(1));
    }
    // Weighted: 3 in flight on weight 4 (0.75) beats 1 in flight on weight 1.
    let w = pool(&[4, 1], Algorithm::LeastConnections);
    let _g: Vec<InFlightGuard> = (0..3)
        .map(|_| w.backends[0].begin_request())
        .chain(std::iter::once(w.backends[1].begin_request()))
        .collect();
    assert_eq!(w.pick(&ctx).expect("eligible").id, BackendId(0));
    drop(held);
    assert_eq!(p.backends[0].in_flight(), 0, "guards release load");
}

#[test]
fn least_connections_breaks_ties_in_rotation() {
    let p = pool(&[1, 1, 1, 1], Algorithm::LeastConnections);
    let ctx = PickContext::new(ip(1));
    // All idle: everybody ties, so the rotation decides and shares are equal.
    assert_eq!(counts(&p, 400, &ctx), [100, 100, 100, 100]);
}

#[test]
fn least_connections_spreads_held_requests_by_weight() {
    let p = pool(&[1, 2, 5], Algorithm::LeastConnections);
    let ctx = PickContext::new(ip(1));
    // Requests that never finish: the in-flight counts converge to the weight ratio.
    let held: Vec<InFlightGuard> = (0..800)
        .map(|_| p.pick(&ctx).expect("eligible").begin_request())
        .collect();
    let loads: Vec<u32> = p.backends.iter().map(|b| b.in_flight()).collect();
    assert_eq!(held.len(), 800);
    for (load, want) in loads.iter().zip([100u32, 200, 500]) {
        assert!(load.abs_diff(want) <= 2, "loads {loads:?}");
    }
}

#[test]
fn two_choices_prefers_the_less_loaded() {
    let p = pool(&[1, 1, 1, 1], Algorithm::RandomTwoChoices);
    let ctx = PickContext::new(ip(1));
    let _held: Vec<InFlightGuard> = [0usize, 1, 2, 3]
        .iter()
        .flat_map(|&i| (0..i * 3).map(move |_| i))
        .map(|i| p.backends[i].begin_request())
        .collect();
    // Loads 0, 3, 6, 9: the most loaded loses every comparison; the idle one wins every pair it
    // is in (half of the 6 pairs); backend 2 only wins against 3 (1 pair in 6).
    let c = counts(&p, 6000, &ctx);
    assert_eq!(c[3], 0, "{c:?}");
    assert!((2700..=3300).contains(&c[0]), "{c:?}");
    assert!((1700..=2300).contains(&c[1]), "{c:?}");
    assert!((700..=1300).contains(&c[2]), "{c:?}");
    // With two backends, the choice is deterministic.
    let two = pool(&[1, 1], Algorithm::RandomTwoChoices);
    let _g = two.backends[0].begin_request();
    assert_eq!(counts(&two, 100, &ctx), [0, 100]);
}

#[test]
fn two_choices_spreads_equal_load() {
    let p = pool(&[1, 1, 1], Algorithm::RandomTwoChoices);
    let ctx = PickContext::new(ip(1));
    let c = counts(&p, 3000, &ctx);
    assert!(c.iter().all(|&n| (800..=1200).contains(&n)), "{c:?}");
}

#[test]
fn ip_hash_is_stable_and_weighted() {
    let a = pool(&[1, 1, 1], Algorithm::IpHash);
    let b = pool(&[1, 1, 1], Algorithm::IpHash);
    let mut share = [0usize; 3];
    for n in 0..3000 {
        let ctx = PickContext::new(ip(n));
        let first = a.pick(&ctx).expect("eligible").id;
        assert_eq!(a.pick(&ctx).expect("eligible").id, first);
        // A separate balancer (the other node of the pair, or after a restart) agrees.
        assert_eq!(b.pick(&ctx).expect("eligible").id, first);
        share[first.0] += 1;
    }
    assert!(
        share.iter().all(|&n| (850..=1150).contains(&n)),
        "{share:?}"
    );

    let w = pool(&[1, 3], Algorithm::IpHash);
    let heavy = (0..20_000)
        .filter(|&n| w.pick(&PickContext::new(ip(n))).expect("eligible").id == BackendId(1))
        .count();
    assert!(
        (14_400..=15_600).contains(&heavy),
        "heavy share {heavy}/20000"
    );
}

#[test]
fn ip_hash_removal_moves_only_the_removed_backends_clients() {
    let p = pool(&[1, 1, 1, 1], Algorithm::IpHash);
    let before: Vec<BackendId> = (0..4000)
        .map(|n| p.pick(&PickContext::new(ip(n))).expect("eligible").id)
        .collect();
    p.backends[2].set_drained(true);
    for (n, &was) in before.iter().enumerate() {
        let now = p
            .pick(&PickContext::new(ip(n as u32)))
            .expect("eligible")
            .id;
        if was == BackendId(2) {
            assert_ne!(now, BackendId(2));
        } else {
            assert_eq!(now, was, "client {n} moved although its backend is up");
        }
    }
}

#[test]
fn unavailable_backends_are_never_picked() {
    for algorithm in all_algorithms() {
        let p = pool(&[1, 1, 1, 1, 1], algorithm.clone());
        knock_out_1_2_3(&p);
        let mut seen = [0usize; 5];
        for n in 0..2000 {
            let ctx = PickContext::new(ip(n));
            seen[p.pick(&ctx).expect("eligible").id.0] += 1;
        }
        assert_eq!(&seen[1..4], [0, 0, 0], "{algorithm:?}: {seen:?}");
        assert!(seen[0] > 0 && seen[4] > 0, "{algorithm:?}: {seen:?}");
    }
}

#[test]
fn weight_zero_and_full_backends_are_never_picked() {
    for algorithm in all_algorithms() {
        let specs = vec![
            spec(0, 0),
            BackendSpec {
                max_conns: 1,
                ..spec(1, 1)
            },
            spec(2, 1),
        ];
        let p = Pool::new(
            "t",
            specs,
            algorithm.clone(),
            ActiveConfig::default(),
            EjectionConfig::default(),
        );
        let _full = p.backends[1].begin_request();
        for n in 0..500 {
            let id = p.pick(&PickContext::new(ip(n))).expect("eligible").id;
            assert_eq!(id, BackendId(2), "{algorithm:?}");
        }
    }
}

#[test]
fn round_robin_retries_do_not_take_a_turn() {
    // Backend 0 fails every request; each failure is retried on the other one. The next
    // request must still start on backend 1, so only every other request pays the failure.
    let p = pool(&[1, 1], Algorithm::RoundRobin);
    let ctx = PickContext::new(ip(1));
    let mut first_picks = vec![0; 2];
    for _ in 0..100 {
        let first = p.pick(&ctx).expect("eligible").id;
        first_picks[first.0] += 1;
        if first == BackendId(0) {
            let tried = [first];
            let retry = p.pick(&ctx.with_exclude(&tried)).expect("one left").id;
            assert_eq!(retry, BackendId(1));
        }
    }
    assert_eq!(first_picks, [50, 50]);
}

#[test]
fn exclude_list_is_honoured() {
    for algorithm in all_algorithms() {
        let p = pool(&[1, 1, 1], algorithm.clone());
        for n in 0..300 {
            let headers = http::HeaderMap::new();
            let base = PickContext::new(ip(n)).with_headers(&headers);
            let first = p.pick(&base).expect("eligible").id;
            let tried = [first];
            let second = p.pick(&base.with_exclude(&tried)).expect("two left").id;
            assert_ne!(second, first, "{algorithm:?}");
            let tried = [first, second];
            let third = p.pick(&base.with_exclude(&tried)).expect("one left").id;
            assert!(third != first && third != second, "{algorithm:?}");
            let all = [BackendId(0), BackendId(1), BackendId(2)];
            assert!(p.pick(&base.with_exclude(&all)).is_none(), "{algorithm:?}");
        }
    }
}

#[test]
fn all_down_gives_none_and_recovery_gives_some() {
    for algorithm in all_algorithms() {
        let p = pool(&[1, 1, 1], algorithm.clone());
        assert!(p.pick(&PickContext::new(ip(1))).is_some());
        for b in &p.backends {
            b.set_drained(true);
        }
        assert!(p.pick(&PickContext::new(ip(1))).is_none(), "{algorithm:?}");
        p.backends[1].set_drained(false);
        assert_eq!(
            p.pick(&PickContext::new(ip(1))).map(|b| b.id),
            Some(BackendId(1)),
            "{algorithm:?}"
        );
        let empty = pool(&[], algorithm.clone());
        assert!(
            empty.pick(&PickContext::new(ip(1))).is_none(),
            "{algorithm:?}"
        );
    }
}

#[test]
fn concurrent_picks_stay_consistent() {
    // Smoke test of the shared state under threads: every pick is valid and RR stays exact.
    let p = Arc::new(pool(&[1, 1, 1, 1], Algorithm::RoundRobin));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                let ctx = PickContext::new(ip(1));
                let mut c = [0usize; 4];
                for _ in 0..1000 {
                    c[p.pick(&ctx).expect("eligible").id.0] += 1;
                }
                c
            })
        })
        .collect();
    let mut total = [0usize; 4];
    for h in handles {
        let c = h.join().expect("picker thread");
        for i in 0..4 {
            total[i] += c[i];
        }
    }
    assert_eq!(total, [1000; 4]);
}

#[test]
fn pool_from_backends_checks_ids() {
    let good: Vec<Arc<Backend>> = (0..2)
        .map(|i| Arc::new(Backend::new(BackendId(i), spec(i, 1), Default::default())))
        .collect();
    assert!(Pool::from_backends("ok", good, Algorithm::RoundRobin).is_ok());
    let bad = vec![Arc::new(Backend::new(
        BackendId(3),
        spec(0, 1),
        Default::default(),
    ))];
    assert!(Pool::from_backends("bad", bad, Algorithm::RoundRobin).is_err());
}
