//! The replicator wired back to back under simulated time: resync, live updates, RESUME,
//! peer restarts, the dirty-set bound, resync pacing and the phase.

use crate::peer_common;

use std::time::Duration;

use peer_common::*;
use shared::peer::auth::{Psk, Session};
use shared::peer::frame::{self, Frame};
use shared::peer::replicator::{Phase, ProtocolError, Replicator, MIN_PRUNE_AT};
use shared::peer::{Digest, Record, ReplicaStore, Role, Table};

const S: Duration = Duration::from_secs(1);

fn pair(a_keys: usize, b_keys: usize) -> Pair {
    Pair::new(
        Node::new(config("a", "b", 1), MemStore::with_keys("a", a_keys)),
        Node::new(config("b", "a", 2), MemStore::with_keys("b", b_keys)),
    )
}

fn both_warm(p: &Pair) -> bool {
    p.a.rep.phase() == Phase::Warm && p.b.rep.phase() == Phase::Warm
}

fn warm_pair(a_keys: usize, b_keys: usize) -> Pair {
    let mut p = pair(a_keys, b_keys);
    p.connect();
    assert!(p.run_until(10 * S, both_warm), "pair never got warm");
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0 && p.b.rep.dirty_len() == 0));
    p
}

#[test]
fn full_resync_both_ways_converges_to_equal_digests() {
    let mut p = pair(1000, 700);
    // Overlap with different values: the merge keeps the larger one on both sides.
    p.a.store
        .map
        .insert(rk(Table::Admin, "shared"), b"aaa".to_vec());
    p.b.store
        .map
        .insert(rk(Table::Admin, "shared"), b"zzz".to_vec());
    p.chunk = 1000; // frames split across reads
    p.connect();
    assert!(p.run_until(10 * S, both_warm));
    assert_eq!(p.a.store.digest(), p.b.store.digest());
    assert_eq!(p.a.store.map.len(), 1701);
    assert_eq!(p.a.store.get(Table::Admin, "shared"), Some(&b"zzz"[..]));
    let (sa, sb) = (p.a.rep.status(p.now), p.b.rep.status(p.now));
    assert_eq!((sa.resyncs, sa.resyncs_received, sa.resumes), (1, 1, 0));
    assert_eq!((sb.resyncs, sb.resyncs_received, sb.resumes), (1, 1, 0));
    assert!(sa.connected && sb.connected);
    // What the peer's SYNC_DONE announced is what it held then.
    // b's SYNC_DONE carries its digest when it finished, a's records merged by then included.
    assert!(sa.peer_sync_digest.unwrap().count >= 701);
    assert_eq!(sb.entries_received, 1001);
    assert!(sa.bytes_sent > 0 && sa.bytes_sent == sb.bytes_received);
}

#[test]
fn a_live_update_reaches_the_peer_quickly_and_is_acked() {
    let mut p = warm_pair(10, 10);
    let t0 = p.now;
    p.a.store.set(rk(Table::Sticky, "new"), b"backend-3");
    assert!(p.run_until(S, |p| p.b.store.get(Table::Sticky, "new")
        == Some(&b"backend-3"[..])));
    assert!(
        p.now - t0 < Duration::from_millis(100),
        "took {:?}",
        p.now - t0
    );
    assert_eq!(p.a.rep.dirty_len(), 1, "not acked yet at delivery");
    assert!(p.a.rep.status(p.now).lag.is_some());
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0));
    let s = p.a.rep.status(p.now);
    assert_eq!((s.seq_sent, s.seq_acked, s.lag), (1, 1, None));
}

#[test]
fn reconnect_with_the_same_boot_resumes_and_delivers_pending_updates() {
    let mut p = warm_pair(50, 50);
    // An update sent but lost with the connection (never reached b, never acked).
    p.a.store.set(rk(Table::Sticky, "lost"), b"L");
    let lost = collect(&mut p.a, p.now);
    assert_eq!(lost.len(), 1);
    p.disconnect();
    // More changes while apart, on both sides.
    for i in 0..5 {
        p.a.store.set(rk(Table::Sticky, &format!("away{i}")), b"A");
    }
    p.b.store.set(rk(Table::RateLimit, "b-away"), b"B");
    p.now += 3 * S;
    p.connect();
    assert!(p.run_until(5 * S, |p| p.a.rep.dirty_len() == 0
        && p.b.rep.dirty_len() == 0));
    assert_eq!(p.b.store.get(Table::Sticky, "lost"), Some(&b"L"[..]));
    assert_eq!(p.b.store.get(Table::Sticky, "away4"), Some(&b"A"[..]));
    assert_eq!(p.a.store.get(Table::RateLimit, "b-away"), Some(&b"B"[..]));
    let (sa, sb) = (p.a.rep.status(p.now), p.b.rep.status(p.now));
    assert_eq!(
        (sa.resumes, sa.resyncs),
        (1, 1),
        "a resumed instead of resyncing"
    );
    assert_eq!(
        (sb.resumes, sb.resyncs),
        (1, 1),
        "b resumed instead of resyncing"
    );
    assert_eq!(sb.resyncs_received, 1, "no second SYNC_START reached b");
    assert_eq!(sa.phase, Phase::Warm);
    assert_eq!(p.a.store.digest(), p.b.store.digest());
}

#[test]
fn a_restarted_peer_gets_a_full_resync() {
    let mut p = warm_pair(300, 0);
    assert_eq!(p.b.store.map.len(), 300);
    p.disconnect();
    // b restarts: new boot id, empty store, cold.
    p.b = Node::new(config("b", "a", 3), MemStore::default());
    p.a.store.set(rk(Table::Sticky, "while-down"), b"x");
    p.connect();
    assert_eq!(p.b.rep.phase(), Phase::Cold);
    assert!(p.run_until(10 * S, both_warm));
    let sa = p.a.rep.status(p.now);
    assert_eq!((sa.resyncs, sa.resumes), (2, 0));
    assert_eq!(sa.peer_boot_id, Some(3));
    assert_eq!(p.b.store.map.len(), 301);
    assert_eq!(p.a.store.digest(), p.b.store.digest());
}

#[test]
fn a_full_resync_sends_each_pending_key_once() {
    // Keys changed before the peer was ever reached are dirty; the full resync covers them,
    // so they must not travel a second time as live updates.
    let mut p = pair(0, 0);
    for i in 0..500 {
        p.a.store.set(rk(Table::Sticky, &format!("k{i}")), b"v");
    }
    p.a.rep.note_local_changes(&mut p.a.store, p.now);
    assert_eq!(p.a.rep.dirty_len(), 500);
    p.connect();
    assert!(p.run_until(10 * S, both_warm));
    let sa = p.a.rep.status(p.now);
    assert_eq!(sa.entries_sent, 500, "each key once: {sa:?}");
    assert_eq!(p.a.rep.dirty_len(), 0);
    assert_eq!(p.a.store.digest(), p.b.store.digest());
    // A change after the resync started is still delivered live.
    p.a.store.set(rk(Table::Sticky, "after"), b"w");
    assert!(p.run_until(S, |p| p.b.store.get(Table::Sticky, "after") == Some(b"w")));
}

#[test]
fn an_interrupted_resync_is_restarted_not_resumed() {
    let mut p = pair(2000, 0);
    let mut cfg = config("a", "b", 1);
    cfg.resync_rate_per_s = 1000;
    p.a = Node::new(cfg, MemStore::with_keys("a", 2000));
    p.connect();
    assert!(p.run_until(S / 2, |p| p.b.rep.phase() == Phase::Learning));
    p.disconnect();
    assert_eq!(p.b.rep.phase(), Phase::Cold, "learning needs a connection");
    p.connect();
    assert!(p.run_until(10 * S, both_warm));
    let sa = p.a.rep.status(p.now);
    assert_eq!((sa.resyncs, sa.resumes), (2, 0));
    assert_eq!(p.b.store.map.len(), 2000);
}

#[test]
fn the_dirty_set_stays_bounded_while_the_peer_is_away() {
    let mut p = warm_pair(0, 0);
    p.disconnect();
    for i in 0..10_000u32 {
        p.a.store.set(
            rk(Table::RateLimit, &format!("k{}", i % 10)),
            &i.to_be_bytes(),
        );
        if i % 7 == 0 {
            p.a.rep.note_local_changes(&mut p.a.store, p.now);
        }
        assert!(p.a.rep.dirty_len() <= 10);
    }
    p.a.rep.note_local_changes(&mut p.a.store, p.now);
    assert_eq!(p.a.rep.dirty_len(), 10);
    // Only the latest value of each key travels.
    p.connect();
    assert!(p.run_until(5 * S, |p| p.a.rep.dirty_len() == 0));
    assert_eq!(p.a.rep.status(p.now).entries_sent, 10);
    assert_eq!(
        p.b.store.get(Table::RateLimit, "k9"),
        Some(&9999u32.to_be_bytes()[..])
    );
}

#[test]
fn churning_keys_do_not_grow_the_dirty_set_past_the_store() {
    // The store holds at most 10 keys at a time (an LRU), but 20k distinct keys pass
    // through it while the peer is away.
    let mut p = warm_pair(0, 0);
    p.disconnect();
    let mut max_dirty = 0;
    for i in 0..20_000usize {
        p.a.store.set(rk(Table::RateLimit, &format!("ip{i}")), b"1");
        if i >= 10 {
            p.a.store
                .remove(&rk(Table::RateLimit, &format!("ip{}", i - 10)));
        }
        p.a.rep.note_local_changes(&mut p.a.store, p.now);
        max_dirty = max_dirty.max(p.a.rep.dirty_len());
    }
    assert!(
        max_dirty <= 2 * MIN_PRUNE_AT + 10,
        "dirty set grew to {max_dirty}"
    );
    p.connect();
    assert!(p.run_until(5 * S, |p| p.a.rep.dirty_len() == 0));
    assert_eq!(p.a.store.digest(), p.b.store.digest());
}

#[test]
fn deleted_keys_leave_the_dirty_set_without_being_sent() {
    let mut p = warm_pair(0, 0);
    p.disconnect();
    p.a.store.set(rk(Table::Sticky, "gone"), b"x");
    p.a.rep.note_local_changes(&mut p.a.store, p.now);
    p.a.store.remove(&rk(Table::Sticky, "gone"));
    p.connect();
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0));
    assert_eq!(p.b.store.get(Table::Sticky, "gone"), None);
}

#[test]
fn resync_pacing_respects_the_rate() {
    const RATE: u32 = 1000;
    const KEYS: usize = 5000;
    let mut cfg = config("a", "b", 1);
    cfg.resync_rate_per_s = RATE;
    cfg.max_batch = 64;
    let mut p = Pair::new(
        Node::new(cfg, MemStore::with_keys("a", KEYS)),
        Node::new(config("b", "a", 2), MemStore::default()),
    );
    p.connect();
    let t0 = p.now;
    assert!(p.run_until(20 * S, |p| p.b.rep.phase() == Phase::Warm));
    let took = p.now - t0;
    let merges = &p.b.store.merges;
    assert_eq!(merges.len(), KEYS);
    // Never more than RATE plus one burst (100 ms of records) in any one-second window.
    for (i, &t) in merges.iter().enumerate() {
        let in_window = merges[i..].iter().take_while(|&&u| u < t + S).count();
        assert!(
            in_window <= RATE as usize + RATE as usize / 10,
            "{in_window} records within 1 s from {:?}",
            t - t0
        );
    }
    // And not much slower than the rate either.
    assert!(took >= Duration::from_millis(4800), "too fast: {took:?}");
    assert!(took <= Duration::from_millis(5500), "too slow: {took:?}");
}

#[test]
fn live_updates_are_not_held_back_by_a_paced_resync() {
    let mut cfg = config("a", "b", 1);
    cfg.resync_rate_per_s = 100;
    let mut p = Pair::new(
        Node::new(cfg, MemStore::with_keys("a", 1000)),
        Node::new(config("b", "a", 2), MemStore::default()),
    );
    p.connect();
    assert!(p.run_until(S, |p| p.b.rep.phase() == Phase::Learning));
    p.a.store.set(rk(Table::Admin, "drain"), b"yes");
    let t0 = p.now;
    assert!(p.run_until(S, |p| p.b.store.get(Table::Admin, "drain").is_some()));
    assert!(p.now - t0 < Duration::from_millis(50));
    assert_eq!(p.b.rep.phase(), Phase::Learning, "resync still running");
}

#[test]
fn phase_goes_cold_learning_warm() {
    let mut cfg = config("b", "a", 2);
    cfg.resync_rate_per_s = 1000;
    let mut p = Pair::new(
        Node::new(config("a", "b", 1), MemStore::default()),
        Node::new(cfg, MemStore::with_keys("b", 3000)),
    );
    let mut phases = vec![p.a.rep.phase()];
    p.connect();
    // Record each phase change of a as it happens (the condition runs after every step).
    p.run_until(10 * S, |p| {
        let ph = p.a.rep.phase();
        if phases.last() != Some(&ph) {
            phases.push(ph);
        }
        ph == Phase::Warm
    });
    assert_eq!(phases, vec![Phase::Cold, Phase::Learning, Phase::Warm]);
    assert_eq!(p.a.store.map.len(), 3000);
    // Warm does not regress when the peer later restarts and resyncs us.
    p.disconnect();
    p.b = Node::new(config("b", "a", 9), MemStore::with_keys("b", 10));
    p.connect();
    assert!(p.run_until(S, |p| p.b.rep.status(p.now).resyncs_received == 1));
    assert!(p.run_until(S, |p| p.a.rep.status(p.now).resyncs_received == 2));
    assert_eq!(p.a.rep.phase(), Phase::Warm);
}

#[test]
fn mark_warm_without_peer_is_the_drivers_fallback() {
    let mut r = Replicator::new(config("a", "b", 1)).unwrap();
    assert_eq!(r.phase(), Phase::Cold);
    r.mark_warm_without_peer();
    assert_eq!(r.phase(), Phase::Warm);
}

#[test]
fn a_record_the_store_refuses_is_dropped_and_counted() {
    let mut p = warm_pair(0, 0);
    p.a.store.set(rk(Table::Sticky, "bad"), b""); // MemStore refuses empty values
    p.a.store.set(rk(Table::Sticky, "good"), b"ok");
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0));
    let sb = p.b.rep.status(p.now);
    assert_eq!(sb.merge_errors, 1);
    assert!(sb.last_error.unwrap().contains("empty value"));
    assert!(sb.connected, "a bad record does not end the session");
    assert_eq!(p.b.store.get(Table::Sticky, "good"), Some(&b"ok"[..]));
}

#[test]
fn byte_at_a_time_delivery_works() {
    let mut p = pair(20, 20);
    p.chunk = 1;
    p.connect();
    assert!(p.run_until(5 * S, both_warm));
    assert_eq!(p.a.store.digest(), p.b.store.digest());
}

#[test]
fn an_idle_peer_times_out_and_a_live_one_does_not() {
    let mut p = warm_pair(1, 1);
    // Pings keep a healthy link alive far beyond the idle timeout.
    assert!(!p.run_until(30 * S, |p| !p.a.rep.status(p.now).connected));
    // b goes silent: a declares the link dead after the idle timeout.
    let t = p.now + Duration::from_secs(6);
    let _ = collect(&mut p.a, t);
    let e = p.a.rep.handle_timeout(t).unwrap_err();
    assert!(matches!(e, ProtocolError::PeerTimeout(_)), "{e:?}");
    assert!(!p.a.rep.is_connected());
}

/// `a` with a confirmed session whose peer side the test drives by hand (it holds the PSK).
fn a_with_hand_driven_peer() -> (Node, Session) {
    let now = Duration::ZERO;
    let mut a = Node::new(config("a", "b", 1), MemStore::default());
    let mut b = Node::new(config("b", "a", 2), MemStore::default());
    a.rep.connect(Role::Dialer, [1; 32], now);
    // b answers only a valid HELLO from a: take one from a twin of a with the same nonce
    // (a's own stays in its outbox for the tests to see).
    let mut a_twin = Node::new(config("a", "b", 1), MemStore::default());
    a_twin.rep.connect(Role::Dialer, [1; 32], now);
    let hello_a = collect(&mut a_twin, now).remove(0);
    b.rep.connect(Role::Acceptor, [2; 32], now);
    b.rep.handle_bytes(&hello_a, &mut b.store, now).unwrap();
    let hello_b = collect(&mut b, now).remove(0);
    a.rep.handle_bytes(&hello_b, &mut a.store, now).unwrap();
    let psk = Psk::new(PSK.to_vec()).unwrap();
    let mut fake_b = Session::new(&psk, Role::Acceptor, &[1; 32], &[2; 32]);
    let ping = fake_b.seal(&Frame::Ping { token: 0 }).unwrap();
    a.rep.handle_bytes(&ping, &mut a.store, now).unwrap();
    assert!(a.rep.status(now).connected);
    (a, fake_b)
}

#[test]
fn protocol_violations_close_the_connection() {
    let cases = [
        (
            Frame::Ack { seq: 5 },
            ProtocolError::AckBeyondSent { ack: 5, sent: 0 },
        ),
        (
            Frame::SyncDone {
                count: 0,
                digest: Digest::default(),
            },
            ProtocolError::UnexpectedSyncDone,
        ),
        (
            Frame::Close {
                reason: "bye".into(),
            },
            ProtocolError::PeerClosed("bye".into()),
        ),
    ];
    for (frame, want) in cases {
        let (mut a, mut fake_b) = a_with_hand_driven_peer();
        let bytes = fake_b.seal(&frame).unwrap();
        let e = a.rep.handle_bytes(&bytes, &mut a.store, Duration::ZERO);
        assert_eq!(e, Err(want.clone()));
        assert!(!a.rep.is_connected());
        assert_eq!(
            a.rep.status(Duration::ZERO).last_error,
            Some(want.to_string())
        );
    }
}

#[test]
fn a_hand_driven_peer_can_ping_and_gets_a_pong() {
    let (mut a, mut fake_b) = a_with_hand_driven_peer();
    let out = collect(&mut a, Duration::ZERO);
    // a's HELLO and key-confirmation PING went out first, then the PONG to b's confirmation
    // PING, then a's full resync (empty store).
    let kinds: Vec<_> = out
        .iter()
        .map(|b| frame::split(b).unwrap().unwrap().header.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            frame::Kind::Hello,
            frame::Kind::Ping,
            frame::Kind::Pong,
            frame::Kind::SyncStart,
            frame::Kind::SyncDone
        ]
    );
    let ping = fake_b.seal(&Frame::Ping { token: 42 }).unwrap();
    a.rep
        .handle_bytes(&ping, &mut a.store, Duration::ZERO)
        .unwrap();
    let pong = a.rep.poll_transmit(&a.store, Duration::ZERO).unwrap();
    assert_eq!(
        fake_b.open(&frame::split(&pong).unwrap().unwrap()),
        Ok(Frame::Pong { token: 42 })
    );
}

#[test]
fn a_ping_flood_leaves_one_pong_pending() {
    let (mut a, mut fake_b) = a_with_hand_driven_peer();
    let _ = collect(&mut a, Duration::ZERO);
    // 100k PINGs that a never gets to answer (the driver is not writing): one PONG waits,
    // for the newest, not 100k.
    let mut flood = Vec::new();
    for token in 1..=100_000u64 {
        flood.extend(fake_b.seal(&Frame::Ping { token }).unwrap());
    }
    a.rep
        .handle_bytes(&flood, &mut a.store, Duration::ZERO)
        .unwrap();
    let out = collect(&mut a, Duration::ZERO);
    assert_eq!(out.len(), 1, "one PONG");
    assert_eq!(
        fake_b.open(&frame::split(&out[0]).unwrap().unwrap()),
        Ok(Frame::Pong { token: 100_000 })
    );
}

#[test]
fn the_outbox_of_sealed_frames_is_bounded() {
    use shared::peer::replicator::{MAX_OUTBOX_BYTES, MAX_OUTBOX_FRAMES};
    let (mut a, _) = a_with_hand_driven_peer();
    let _ = collect(&mut a, Duration::ZERO);
    // A driver that queues CLOSEs (the one frame it can make the replicator seal at will)
    // and never writes: the queue stops at its bound instead of growing.
    for _ in 0..(MAX_OUTBOX_FRAMES * 3) {
        a.rep.close(&"x".repeat(200));
    }
    let queued = collect(&mut a, Duration::ZERO);
    let bytes: usize = queued.iter().map(Vec::len).sum();
    assert!(queued.len() <= MAX_OUTBOX_FRAMES, "{} frames", queued.len());
    assert!(bytes <= MAX_OUTBOX_BYTES, "{bytes} bytes");
    assert!(
        queued.len() >= MAX_OUTBOX_FRAMES / 2,
        "the bound is not tiny"
    );
}

#[test]
fn handle_bytes_without_a_connection_is_an_error() {
    let mut n = Node::new(config("a", "b", 1), MemStore::default());
    assert_eq!(
        n.rep.handle_bytes(b"LP", &mut n.store, Duration::ZERO),
        Err(ProtocolError::NotConnected)
    );
    n.rep.connect(Role::Dialer, [0; 32], Duration::ZERO);
    let e = n
        .rep
        .handle_bytes(b"HTTP/1.1 200 OK\r\n", &mut n.store, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(e, ProtocolError::Frame(_)), "{e:?}");
    let _: Option<Record> = n.store.record(&rk(Table::Sticky, "none"), Duration::ZERO);
}

/// Throughput check for BENCHMARKS.md: `cargo test -p shared --release --test it
/// -- peer_replicator::bench_ --ignored --nocapture`. Protocol cost only (in-memory store, no
/// sockets).
#[test]
#[ignore = "timing; run in release by hand"]
fn bench_full_resync_of_a_million_entries() {
    let mut cfg = config("a", "b", 1);
    cfg.resync_rate_per_s = 0;
    let mut p = Pair::new(
        Node::new(
            cfg,
            MemStore::with_keys("sticky-pool\0cookie-value-", 1_000_000),
        ),
        Node::new(config("b", "a", 2), MemStore::default()),
    );
    let t = tokio::time::Instant::now();
    p.connect();
    assert!(p.run_until(60 * S, |p| p.b.rep.phase() == Phase::Warm));
    let took = t.elapsed();
    let s = p.a.rep.status(p.now);
    println!(
        "full resync: {} entries, {} bytes in {:?} ({:.0} entries/s)",
        s.entries_sent,
        s.bytes_sent,
        took,
        s.entries_sent as f64 / took.as_secs_f64()
    );
    assert_eq!(p.b.store.map.len(), 1_000_000);
}

#[test]
#[ignore = "timing; run in release by hand"]
fn bench_live_updates() {
    let mut p = warm_pair(0, 0);
    let t = tokio::time::Instant::now();
    let n = 100_000u32;
    for i in 0..n {
        p.a.store.set(
            rk(Table::RateLimit, &format!("10.0.{}.{}", i % 256, i % 1000)),
            &i.to_be_bytes(),
        );
        if i % 10 == 0 {
            // The driver would poll every ~1 ms at 10k updates/s: ~10 changes per round.
            p.pump();
            p.now += Duration::from_millis(1);
        }
    }
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0));
    let took = t.elapsed();
    println!(
        "live: {n} updates in {took:?} ({:.0}/s, {:.2}% of a core at 10k/s)",
        f64::from(n) / took.as_secs_f64(),
        took.as_secs_f64() / (f64::from(n) / 10_000.0) * 100.0
    );
}

#[test]
fn ticket_keys_travel_only_on_a_confirmed_session_and_the_latest_set_waits() {
    let key = |i: u8| frame::TicketKey {
        id: [i; 16],
        secret: [i; 32],
        remaining_ms: 1000,
    };
    let mut p = pair(0, 0);
    assert_eq!(p.a.rep.send_ticket_keys(&[key(1)]), Ok(false), "no link");
    p.connect();
    assert_eq!(
        p.a.rep.send_ticket_keys(&[key(1)]),
        Ok(false),
        "HELLO sent, session not confirmed yet"
    );
    assert!(p.run_until(10 * S, both_warm));
    assert_eq!(p.b.rep.take_peer_ticket_keys(), None);
    assert_eq!(p.a.rep.send_ticket_keys(&[key(1)]), Ok(true));
    assert_eq!(p.a.rep.send_ticket_keys(&[key(1), key(2)]), Ok(true));
    assert!(p.run_until(S, |p| p.a.rep.dirty_len() == 0
        && p.b.rep.status(p.now).bytes_received >= p.a.rep.status(p.now).bytes_sent));
    assert_eq!(p.b.rep.take_peer_ticket_keys(), Some(vec![key(1), key(2)]));
    assert_eq!(p.b.rep.take_peer_ticket_keys(), None, "taken once");
}
