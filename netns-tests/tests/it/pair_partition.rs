//! A partition between the two nodes (each still reaches the client and the backends):
//! both become master. When it heals, exactly one master remains within one advert
//! interval, and the winner re-announces the VIP with gratuitous ARP, so the client's
//! neighbour entry points at it again, handing the loser its own connections for the
//! hand-off window: no request fails from the heal on.
//!
//! The partition is made with bridge *port isolation* (`bridge link set dev vX isolated
//! on` on A's and B's ports): the bridge never forwards between two isolated ports, but
//! does between an isolated and a non-isolated one, so A and B lose each other's adverts
//! while the client and the backends still reach both. See `PairTopology::partition`.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant, SystemTime};

use netns_tests::pair::report::{self, Row};
use netns_tests::pair::scenario::Verdict;
use netns_tests::pair::{PairConfig, PairTopology, HANDOFF_HOLD, INTERVALS};
use netns_tests::{eventually_until, margin, NodeId};

#[test]
fn partition_then_heal_leaves_one_master_that_reannounces() -> anyhow::Result<()> {
    let id = "10-partition-heal";
    let mut rows = Vec::new();
    let mut verdict = Verdict::default();
    for cs in INTERVALS {
        // The pair mode, as shipped in configs/node-*: a master that yields after the heal
        // tells the winner (priority 0), which re-announces the VIP with GARP.
        let cfg = PairConfig {
            fast_takeover: true,
            ..PairConfig::coupled(cs)
        };
        let mut pair = PairTopology::new(id, cfg.clone())?;
        let vip = pair.vip(0);
        pair.await_past_startup_grace();
        let max = cfg.mdi() * 4 + Duration::from_secs(20);
        let load = pair.start_load(vip, false, max)?;
        pair.await_load_answer(&load, NodeId::A, Duration::from_secs(3))?;

        pair.partition(true)?;
        let t_part = SystemTime::now();
        // B stops hearing A and becomes master too.
        let both = netns_tests::eventually(
            cfg.mdi() * 2 + Duration::from_secs(2),
            Duration::from_millis(10),
            || Ok(pair.holders(vip)?.len() == 2),
        )?;
        pair.await_state(NodeId::B, "web", "master", Duration::from_secs(1))?;
        pair.await_state(NodeId::A, "web", "master", Duration::from_secs(1))?;
        // B's GARP took the client over; let it show in the load.
        pair.await_load_answer(&load, NodeId::B, Duration::from_secs(2))?;
        eprintln!("partition at {cs} cs: both masters after {both:?}");

        let t_heal = SystemTime::now();
        let i_heal = Instant::now();
        pair.partition(false)?;
        // B yields at A's next advert and keeps its copy for the hand-off hold.
        let bound = cfg.advert() + HANDOFF_HOLD + margin(Duration::from_millis(200));
        let one = eventually_until(i_heal, i_heal + bound, Duration::from_millis(5), || {
            Ok(pair.holders(vip)? == [NodeId::A])
        })
        .map(|t| t - i_heal);
        verdict.check(one.is_ok(), || {
            format!(
                "at {cs} cs: A should be the only holder within {bound:?} of the heal;                  holders now {:?}",
                pair.holders(vip)
            )
        });
        pair.await_state(NodeId::B, "web", "backup", Duration::from_secs(2))?;
        // The winner's GARP moves the client's entry back to A.
        let garp_bound = cfg.advert() + margin(Duration::from_millis(500));
        let garp = eventually_until(
            i_heal,
            i_heal + garp_bound,
            Duration::from_millis(5),
            || Ok(pair.lan.client_neigh_node(vip)? == Some(NodeId::A)),
        )
        .map(|t| t - i_heal);
        verdict.check(garp.is_ok(), || {
            format!(
                "at {cs} cs: the client's entry for {vip} should point at A (the winner                  re-announces with GARP) within {garp_bound:?} of the heal; it is {:?} (A is {})",
                pair.lan.client_neigh_mac(vip),
                pair.lan.node(NodeId::A).mac
            )
        });
        if garp.is_ok() {
            pair.await_load_answer(&load, NodeId::A, Duration::from_secs(2))?;
        } else {
            // Without the GARP the client keeps sending to B until its entry goes stale:
            // show a little of that in the figures, then move on.
            std::thread::sleep(cfg.advert() * 2);
        }
        let run = pair.finish_load(load, Duration::from_secs(5))?;
        let s = run.summary_from(run.header.at(t_part));
        // The heal moves the client back to a master that never stopped: A hands B the
        // connections B had for the hand-off window, so the heal itself fails nothing. (The
        // partition can cut a handshake: B takes over from an A it cannot hear.)
        let healed = run.summary_from(run.header.at(t_heal));
        verdict.check(healed.failed == 0, || {
            format!(
                "at {cs} cs: the heal should fail no request; from the heal on: {}",
                healed.one_line()
            )
        });
        let ms = |r: &Result<Duration, anyhow::Error>| match r {
            Ok(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
            Err(_) => "never (within the bound)".to_owned(),
        };
        eprintln!(
            "heal at {cs} cs: one master after {} (bound {bound:?}), client's entry on A \
             after {}; from the partition on: {}",
            ms(&one),
            ms(&garp),
            s.one_line()
        );
        let mut row = Row::from_summary(id, "partition (both master), then heal", cs, &s);
        row.bound_ms = Some(bound.as_secs_f64() * 1000.0);
        row.note = format!(
            "one master {} after the heal, client's ARP entry on the winner after {}; \
             outage counted from the partition (heal at {:.0} ms)",
            ms(&one),
            ms(&garp),
            run.header.at(t_heal) - run.header.at(t_part)
        );
        // The outage column is what the client saw over the whole episode.
        row.outage_ms = s.outage_ms;
        rows.push(row);
    }
    report::record(id, &rows)?;
    verdict.finish()
}

/// Counter `key` of instance "web" on node `id`.
fn web_counter(pair: &PairTopology, id: NodeId, key: &str) -> anyhow::Result<u64> {
    let web = pair.instance_status(id, "web")?;
    Ok(web["counters"][key].as_u64().unwrap_or(0))
}

/// What the split-heal hand-off must not become: a host on the LAN floods the coupled master
/// with forged worse adverts (10k/s for 3 s). Each reply the master allows itself (one per
/// advert interval) is a re-announce over "another master", so it asks for a hand-off
/// table; it loads at most one per window and linger, the `nft` runs never hold up its
/// adverts (the VIP never moves), and the client loses nothing.
#[test]
fn a_flood_of_worse_adverts_loads_few_hand_off_tables_and_moves_nothing() -> anyhow::Result<()> {
    let cs = 10;
    let cfg = PairConfig {
        fast_takeover: true,
        ..PairConfig::coupled(cs)
    };
    let mut pair = PairTopology::new("10-flood-handoff", cfg.clone())?;
    let vip = pair.vip(0);
    pair.await_past_startup_grace();
    let load = pair.start_load(vip, false, Duration::from_secs(20))?;
    pair.await_load_answer(&load, NodeId::A, Duration::from_secs(3))?;
    let tables0 = web_counter(&pair, NodeId::A, "handoff_tables")?;
    let t0 = Instant::now();
    let flood = netns_tests::Forgery {
        src: pair.lan.node(NodeId::Client).addr,
        dsts: vec![std::net::Ipv4Addr::new(224, 0, 0, 18)],
        vrid: 51,
        priority: 50,
        interval_cs: cs,
        vips: vec![vip],
        count: 30_000,
        rate: 10_000,
    };
    let forger = pair.lan.start_forger(&flood)?;
    pair.lan
        .assert_stays_sole_holder(vip, NodeId::A, flood.duration())?;
    let report = pair.lan.await_forger(forger, &flood)?;
    let elapsed = t0.elapsed();
    let tables = web_counter(&pair, NodeId::A, "handoff_tables")? - tables0;
    let suppressed = web_counter(&pair, NodeId::A, "replies_suppressed")?;
    let run = pair.finish_load(load, Duration::from_secs(5))?;
    let s = run.summary_from(run.header.at(SystemTime::now() - elapsed));
    // Window (200 ms) and linger (1 s) per table: at most one per 1.2 s, and one to start.
    let most = (elapsed.as_secs_f64() / 1.2).ceil() as u64 + 1;
    eprintln!(
        "flood ({report}) over {elapsed:?}: {tables} hand-off tables loaded (at most {most}), \
         {suppressed} replies suppressed; client: {}",
        s.one_line()
    );
    anyhow::ensure!(
        (1..=most).contains(&tables),
        "{tables} hand-off tables in {elapsed:?}"
    );
    anyhow::ensure!(s.failed == 0, "the client lost requests: {}", s.one_line());
    anyhow::ensure!(
        pair.state(NodeId::B, "web")? == "backup",
        "B took over during the flood"
    );
    Ok(())
}
