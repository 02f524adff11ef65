//! netns-tests' scenarios, linked as one test binary (`--test it`): each module was once a
//! test binary of its own (`tests/<module>.rs`); one binary links once instead of twenty
//! times.
//!
//! CI runs them under nextest (`cargo nextest run -p netns-tests --test-threads 1`), one
//! process per test, one test at a time, in name order, so the modules run in the order the
//! binaries did. `.config/nextest.toml` picks out a module's tests with
//! `test(/^<module>::/)` where it once said `binary(<module>)`. Run one module with
//! `cargo nextest run -p netns-tests --test-threads 1 -E 'test(/^vrrp_failover::/)'`.

mod harness_keepalived;
mod pair_active_active;
mod pair_harness;
mod pair_keepalived;
mod pair_lbd_crash;
mod pair_node_loss;
mod pair_partition;
mod pair_peer_faults;
mod pair_planned;
mod pair_softstate;
mod pair_vrrpd_crash;
mod vrrp_auth;
mod vrrp_election;
mod vrrp_failover;
mod vrrp_hostile;
mod vrrp_keepalived_interop;
mod vrrp_link;
mod vrrp_preempt;
mod vrrp_reload;
mod vrrp_starvation;
