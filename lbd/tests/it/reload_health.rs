//! Health state survives a reload for backends whose address did not change, even when
//! they moved in the list, changed weight or the pool's health settings changed.

use crate::common;

use std::time::Duration;

use common::*;

fn up_series(b: &TestBackend) -> String {
    format!("lbd_backend_up{{pool=\"web\",backend=\"{}\"}}", b.addr)
}

const HTTP: &str = "kind = \"http\"\npath = \"/healthz\"\n";

/// A pool whose backends are listed in `order` with the given weights; `health` is the
/// body of `[pool.health]`.
fn config(order: &[(&TestBackend, u32)], health: &str) -> String {
    let mut s = format!(
        "default_pool = \"web\"\n[global]\n#GLOBAL\n[retries]\nattempts = 0\n\
         [[pool]]\nname = \"web\"\nalgorithm = \"weighted_round_robin\"\n\
         [pool.health]\n{health}\n"
    );
    for (b, w) in order {
        s.push_str(&format!(
            "[[pool.backend]]\naddress = \"{}\"\nweight = {w}\n",
            b.addr
        ));
    }
    s
}

async fn reload(lbd: &Lbd, body: &str, generation: f64) {
    lbd.write_config(body);
    lbd.signal("HUP");
    eventually(
        &format!("config generation {generation}"),
        Duration::from_secs(5),
        || async { metric(lbd.admin, "lbd_config_generation").await == Some(generation) },
    )
    .await;
}

/// Right after a reload, every request must be served by `up` (never by `down`): slow probes
/// mean a backend that lost its state could not have been corrected yet.
async fn only_up_serves(lbd: &Lbd, up: &TestBackend, down: &TestBackend, when: &str) {
    let down_before = down.hits();
    for i in 0..20 {
        let r = get(lbd.listen, &format!("/{when}/{i}"))
            .await
            .expect("request");
        assert_eq!(
            (r.status, r.backend()),
            (200, up.name.as_str()),
            "{when}: request {i} ({})",
            r.body
        );
    }
    assert_eq!(
        down.hits(),
        down_before,
        "{when}: traffic reached the down backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_reorders_and_reweights_keeps_health() {
    let sick = TestBackend::start("sick").await;
    let fine = TestBackend::start("fine").await;
    sick.set_healthy(false);
    // Fast checks at first, so `sick` goes down quickly.
    let fast = format!("{HTTP}interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1");
    let lbd = Lbd::start(&config(&[(&sick, 1), (&fine, 1)], &fast)).await;
    eventually("sick down, fine up", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series(&sick)).await == Some(0.0)
            && metric(lbd.admin, &up_series(&fine)).await == Some(1.0)
    })
    .await;

    // Reordered, reweighted, and slow checks that start every *new* backend unhealthy: a
    // `fine` that lost its state would answer 503 for seconds (three probes 2 s apart).
    let slow_unhealthy = format!(
        "{HTTP}interval_ms = 2000\ntimeout_ms = 1000\nrise = 3\nfall = 3\nstart_unhealthy = true"
    );
    reload(
        &lbd,
        &config(&[(&fine, 3), (&sick, 5)], &slow_unhealthy),
        2.0,
    )
    .await;
    only_up_serves(&lbd, &fine, &sick, "after-reload-2").await;

    // Reordered again and new backends would start healthy: a `sick` that lost its state
    // would get traffic until three probes (4 s) fail.
    let slow_healthy = format!("{HTTP}interval_ms = 2000\ntimeout_ms = 1000\nrise = 3\nfall = 3");
    reload(&lbd, &config(&[(&sick, 7), (&fine, 2)], &slow_healthy), 3.0).await;
    only_up_serves(&lbd, &fine, &sick, "after-reload-3").await;
    assert_eq!(metric(lbd.admin, &up_series(&sick)).await, Some(0.0));
    assert_eq!(metric(lbd.admin, &up_series(&fine)).await, Some(1.0));

    // The kept state still moves: `sick` recovers under the new rise = 3.
    sick.set_healthy(true);
    eventually("sick comes back", Duration::from_secs(10), || async {
        metric(lbd.admin, &up_series(&sick)).await == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_active_checks_off_brings_a_down_backend_back() {
    let sick = TestBackend::start("sick").await;
    let fine = TestBackend::start("fine").await;
    sick.set_healthy(false);
    let fast = format!("{HTTP}interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1");
    let lbd = Lbd::start(&config(&[(&sick, 1), (&fine, 1)], &fast)).await;
    eventually("sick down", Duration::from_secs(5), || async {
        metric(lbd.admin, &up_series(&sick)).await == Some(0.0)
    })
    .await;
    // kind = "none": no probe could ever raise it again, so it must not stay down.
    reload(
        &lbd,
        &config(&[(&fine, 1), (&sick, 1)], "kind = \"none\""),
        2.0,
    )
    .await;
    assert_eq!(metric(lbd.admin, &up_series(&sick)).await, Some(1.0));
    let before = sick.hits();
    for i in 0..10 {
        let r = get(lbd.listen, &format!("/{i}")).await.expect("request");
        assert_eq!(r.status, 200);
    }
    assert!(
        sick.hits() > before,
        "the formerly down backend serves again"
    );
}
