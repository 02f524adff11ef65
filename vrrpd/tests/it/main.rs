//! vrrpd's integration tests, linked as one test binary (`cargo test -p vrrpd --test it`).
//!
//! Each module was once a test binary of its own (`tests/<module>.rs`); one binary links once
//! instead of twenty times. `cargo test` runs the tests of all modules as threads of one
//! process, so none may change process-wide state (environment, working directory, signal
//! handlers); `net_netns` enters namespaces only on threads it spawns for that.
//!
//! Run one module with its name as the filter: `cargo test -p vrrpd --test it fsm_pair::`.

// Shared by the state-machine tests (fsm_hostile, fsm_pair, fsm_switchover, fsm_transitions).
mod fsm_support;
// The discrete-event simulator of sim_election and sim_pair.
mod sim_support;

mod cli_commands;
mod config_auth;
mod config_errors;
mod config_examples;
mod config_fuzz;
mod control_server;
mod fsm_handoff;
mod fsm_hostile;
mod fsm_invariants;
mod fsm_pair;
mod fsm_rx;
mod fsm_switchover;
mod fsm_timers;
mod fsm_transitions;
mod lbd_link;
mod net_netns;
mod notify_hooks;
mod sim_election;
mod sim_pair;
mod systemd_notify;
