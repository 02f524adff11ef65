//! vrrpd: a VRRPv3 daemon (RFC 5798, with RFC 9568's changes).
//!
//! Layout:
//! - [`config`]   TOML file structs -> `validate()` -> typed [`config::VrrpConfig`].
//! - [`timers`]   RFC 5798 timer formulas (Skew_Time, Master_Down_Interval) in centiseconds.
//! - [`fsm`]      the pure, sans-IO state machine: time in, actions out. No sockets, no clock.
//! - [`rx`]       RFC 5798 §7.1 receive validation; each discard reason is a counter label.
//! - [`auth`]     authenticated adverts: sequence numbers out, the replay window in.
//! - [`net`]      everything that touches the kernel: the raw protocol-112 socket, VIPs over
//!   netlink, gratuitous ARP, link events. `net::sys` is the only `unsafe` code.
//! - [`instance`] the async shell that drives one FSM with tokio time and the socket.
//! - [`control`]  the Unix control socket: status, and the ordered state stream for lbd.
//! - [`lbd_link`] vrrpd's view of the local lbd (connected, heartbeats, able, ready).
//! - [`notify`]   keepalived-style notify hooks: one ordered, bounded queue per instance.
//! - [`daemon`]   starts instances, handles signals, reload and shutdown.
#![deny(unsafe_code)]

pub mod auth;
pub mod config;
pub mod control;
pub mod daemon;
pub mod fsm;
pub mod instance;
pub mod lbd_link;
pub mod net;
pub mod notify;
pub mod rx;
pub mod timers;
