//! lbd: the L7 HTTP(S) reverse proxy of the lbpair pair (L4 TCP/UDP is not built yet).
//!
//! Layout (a request flows top to bottom):
//! - [`app`]        the wiring: builds each layer's context and the [`server::Server`], spawns
//!   every long-lived task (admin listener, vrrpd link, peer link, health checkers, soft-state
//!   sweeper) and the worker threads; `main.rs` calls [`app::run`].
//! - [`listener`]   bound sockets (IP_FREEBIND for VIPs), accept loop with the client
//!   connection limit and the per-client cap ([`client_cap`]), a tracing span per connection,
//!   h2c sniffing, hyper HTTP/1.1 with header timeout and size limits, graceful close on drain
//!   and idleness. Its context is [`listener::ListenerCtx`] (the engine's, the limits, the
//!   workers).
//! - [`l7`]         the HTTP layer. Two paths, named for the requests they take:
//!   [`l7::plain`] (lbd's own HTTP/1 engine for plain keep-alive requests, the common case;
//!   operators know it as the *fast path*, `global.http1_fast_path`) and [`l7::general`]
//!   (hyper's service for everything else: h2/h2c, upgrades and WebSocket, TLS, TLS or h2
//!   pools, odd framing). Both drive the shared steps in [`l7::dispatch`], [`l7::attempts`]
//!   and [`l7::body`], and read [`l7::ctx::ProxyCtx`] (snapshot, stats, soft state, listener
//!   gates, shutdown, tracker). Around them: [`l7::router`] (host/path/header/method rules and
//!   splits), [`l7::headers`] (hop-by-hop stripping, X-Forwarded-*/Forwarded/Via),
//!   [`l7::retry`] (retry budget, idempotency).
//! - [`upstream`]   the backend side: [`upstream::backend`] (lock-free per-backend state and
//!   pools), [`upstream::balance`] (algorithms), [`upstream::health`] (pure rise/fall and
//!   ejection), [`upstream::checker`] (the async probe loop feeding it), [`upstream::conns`]
//!   (keep-alive connections on hyper's low-level http1 client).
//! - [`server`]     phase, SIGHUP reload with state carry-over, listener start/stop, SIGTERM
//!   drain; it holds the contexts `app` built. [`snapshot`] builds the
//!   [`Snapshot`](snapshot::Snapshot) a request runs on.
//! - [`config`]     TOML file structs → `validate()` (every error, with file:line:col) →
//!   [`config::LbConfig`].
//! - [`admin`]      `/metrics` (Prometheus text), `/healthz`, `/readyz` on the admin listener,
//!   and the drain endpoints behind the bearer token of `global.admin_token_file`;
//!   [`metrics`] holds the atomics and the exposition writer.
//! - [`coupling`]   the coupling to vrrpd: subscribe to its state stream, bind a VIP's
//!   listeners only while Master (ack after binding), drain on switchover, heartbeat
//!   able/ready/serving, stop serving when vrrpd is lost for its Master_Down_Interval. It
//!   reaches the server through [`coupling::Host`].
//! - [`softstate`]  sticky tables, rate-limit buckets and operator drains: the soft state a
//!   failover should not lose, with merge rules that make replication order-free.
//! - [`peer`]       the authenticated peer link that replicates [`softstate`] to the other node
//!   (protocol in `shared::peer`), and the cold/learning/warm readiness it reports.
//! - [`access_log`] one line per request, plain or JSON; [`error`] `ProxyError { kind, side,
//!   source }` and the status each kind maps to; [`log_limit`] one log line a second for
//!   events that come in floods; [`clock`] the monotonic clock the state machines and
//!   timestamps count in.
//!
//! # Layers
//!
//! Imports go one way: a module uses modules of its own layer and of the layers below it,
//! never above. A module's submodules are in its layer unless the table names them (some sit
//! lower than their parent, one higher). `tests/it/layers.rs` reads this table (this one
//! copy) and fails on an import upwards; its list of allowed exceptions is empty, and an
//! entry added there must say why it has to stay.
//!
//! | layer | name | modules | notes |
//! |------:|------|---------|-------|
//! | 1 | leaves: clock, errors, metrics atoms, soft state, parsers, router, health, backend, balance | `clock`, `error`, `metrics`, `sync`, `log_limit`, `softstate`, `l7`, `l7::path`, `l7::syntax`, `l7::request_body`, `l7::framing`, `l7::plain::head`, `l7::plain::chunked`, `l7::grpc`, `l7::timer`, `l7::router`, `upstream`, `upstream::backend`, `upstream::balance`, `upstream::health` | `l7` and `upstream` only declare their submodules; the HTTP/1 parsers `l7::plain::head` and `l7::plain::chunked` sit below the rest of `l7::plain` |
//! | 2 | config | `config`, `tls::pem`, `upstream::tls::setup` | reading certificate and key files (`tls::pem`) and a pool's TLS client setup (`upstream::tls::setup`) sit with the config, whose validation checks `[pool.tls]`'s files with them |
//! | 3 | components: access log, upstream pool and checker, headers, rate limit, sticky, TLS, the peer handle | `access_log`, `upstream::conns`, `upstream::h2`, `upstream::tls`, `upstream::grpc_health`, `upstream::checker`, `l7::headers`, `l7::ratelimit`, `l7::sticky`, `l7::retry`, `tls`, `park`, `client_cap`, `peer`, `coupling::gate` | `peer` is the handle (its `peer::link` is a control task); `coupling::gate` is the listener gates the request engine holds, below the rest of `coupling` |
//! | 4 | the config snapshot | `snapshot` | |
//! | 5 | the request engine | `l7::ctx`, `l7::client`, `l7::attempts`, `l7::dispatch`, `l7::body`, `l7::general`, `l7::plain` | `l7::ctx` is the engine's context; both HTTP paths: `l7::plain` (lbd's own HTTP/1 engine, plain keep-alive requests) and `l7::general` (hyper, every other request) |
//! | 6 | the listener | `listener`, `l7::h2guard` | `l7::h2guard` guards the listener's HTTP/2 connections |
//! | 7 | the vrrpd coupling | `coupling` | |
//! | 8 | the server: phase, reload, drain | `server` | holds the contexts `app` built; implements `coupling::Host` |
//! | 9 | control tasks: admin, vrrpd link, peer link | `admin`, `coupling::link`, `peer::link` | |
//! | 10 | wiring | `app` | builds every context and spawns every long-lived task; `main.rs` (the binary, a crate of its own) calls it |
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod client_cap;
pub mod clock;
pub mod config;
pub mod coupling;
pub mod error;
pub mod l7;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod park;
pub mod peer;
pub mod server;
pub mod snapshot;
pub mod softstate;
pub mod sync;
pub mod tls;
pub mod upstream;
