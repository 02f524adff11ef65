//! One request's attempts at a backend: the one retry policy both HTTP paths drive.
//!
//! Both paths (`l7::general` on hyper, `l7::plain` on raw sockets) run the same loop: pick a
//! backend, get a connection, send, read the response head. This module decides what a
//! failure in that loop means, so the two paths cannot drift apart:
//!
//! - **connect failed**: the backend is excluded from this request's further picks, and the
//!   request goes to another backend when the retry policy allows (it never reached an
//!   application, so even a POST may go elsewhere);
//! - **send failed on a reused connection** before the request was written, or after it was
//!   written when the request may be replayed: the keep-alive race (the backend closed an idle
//!   pooled connection as the request went out). Not the backend's fault: the request is sent
//!   once more to the same backend on a fresh connection, at most [`MAX_STALE`] times;
//! - **any other send failure** is the backend's: it is excluded, and a replayable request
//!   goes to another backend when the retry policy allows. A request that is not replayable
//!   is never sent twice: even a write that failed part-way may have delivered enough of it;
//! - **a response timeout** ends the request (the backend may still be working on it).
//!
//! Pure: no I/O, no clock, no counters. Whether a retry is allowed (`retries.attempts`, a
//! usable backend left, the retry budget) is the caller's `may_retry(retries, excluded)`,
//! asked only when a retry is on the table, because asking withdraws from the budget. The
//! caller counts failures and tells passive health when [`Blame::Backend`] says so.

use crate::error::{ErrorKind, ProxyError};
use crate::upstream::backend::BackendId;

/// Resends on a fresh connection after the keep-alive race, per request.
pub const MAX_STALE: u32 = 2;

/// What the request does next.
#[derive(Debug)]
pub enum Step {
    /// Pick again (the excluded backends are skipped) and send once more.
    Again,
    /// Answer the client with this error.
    Fail(ProxyError),
}

/// Whose failure a failed send was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The keep-alive race on a pooled connection: nobody's.
    KeepAliveRace,
    /// The backend's: count it, and (on a fresh connection) tell passive health.
    Backend,
}

/// How a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendFailed {
    /// The connection came from the idle pool.
    pub reused: bool,
    /// All of the request was handed to the connection (so the backend may have acted on
    /// it). `false`: the connection failed while the request was being written, or before.
    pub written: bool,
    /// The request may be sent again: idempotent, and its body is still at hand.
    pub replayable: bool,
}

/// One request's attempts so far.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Retries on another backend so far.
    retries: u32,
    /// Resends after the keep-alive race so far.
    stale: u32,
    /// Backends this request must not be sent to again.
    excluded: Vec<BackendId>,
    /// The failure that caused the last retry: what the client hears if no backend is left.
    last_err: Option<ProxyError>,
}

impl Attempts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Backends the next pick must skip.
    pub fn excluded(&self) -> &[BackendId] {
        &self.excluded
    }

    /// After the keep-alive race, the next attempt needs a fresh connection, not the pool's.
    pub fn needs_fresh_connection(&self) -> bool {
        self.stale > 0
    }

    /// A resend on the same backend is still possible (the hyper path keeps a copy of the
    /// request only when some resend is).
    pub fn may_resend(&self) -> bool {
        self.stale < MAX_STALE
    }

    /// Retries on another backend so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// No backend could be picked: after a retry that is the failure that caused it.
    pub fn pick_failed(&mut self, e: ProxyError) -> ProxyError {
        self.last_err.take().unwrap_or(e)
    }

    /// The connect to `backend` failed with `e`.
    pub fn on_connect_failed(
        &mut self,
        backend: BackendId,
        e: ProxyError,
        may_retry: impl FnOnce(u32, &[BackendId]) -> bool,
    ) -> Step {
        self.excluded.push(backend);
        self.retry_or_fail(e, may_retry)
    }

    /// Sending to `backend` (or reading its response head) failed with `e`.
    pub fn on_send_failed(
        &mut self,
        backend: BackendId,
        how: SendFailed,
        e: ProxyError,
        may_retry: impl FnOnce(u32, &[BackendId]) -> bool,
    ) -> (Blame, Step) {
        let race = how.reused && (!how.written || how.replayable);
        if race && self.may_resend() {
            self.stale += 1;
            return (Blame::KeepAliveRace, Step::Again);
        }
        self.excluded.push(backend);
        let next = if how.replayable {
            self.retry_or_fail(e, may_retry)
        } else {
            Step::Fail(e)
        };
        (Blame::Backend, next)
    }

    /// The backend did not answer within `timeouts.backend_response`: the request ends
    /// there, since the backend may still be working on it.
    pub fn on_timeout(&mut self) -> Step {
        Step::Fail(ProxyError::new(ErrorKind::ResponseTimeout))
    }

    fn retry_or_fail(
        &mut self,
        e: ProxyError,
        may_retry: impl FnOnce(u32, &[BackendId]) -> bool,
    ) -> Step {
        if may_retry(self.retries, &self.excluded) {
            self.retries += 1;
            self.last_err = Some(e);
            Step::Again
        } else {
            Step::Fail(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_err() -> ProxyError {
        ProxyError::new(ErrorKind::BackendIo)
    }

    fn always(_: u32, _: &[BackendId]) -> bool {
        true
    }

    fn never(_: u32, _: &[BackendId]) -> bool {
        false
    }

    fn again(n: &Step) -> bool {
        matches!(n, Step::Again)
    }

    /// Every combination of how a send can fail, with and without a retry allowed, from a
    /// fresh request: the outcome the policy in the module docs says.
    #[test]
    fn every_send_failure_from_a_fresh_request() {
        for reused in [false, true] {
            for written in [false, true] {
                for replayable in [false, true] {
                    for allowed in [false, true] {
                        let mut a = Attempts::new();
                        let how = SendFailed {
                            reused,
                            written,
                            replayable,
                        };
                        let asked = std::cell::Cell::new(false);
                        let (blame, next) =
                            a.on_send_failed(BackendId(3), how, io_err(), |_, _| {
                                asked.set(true);
                                allowed
                            });
                        let race = reused && (!written || replayable);
                        if race {
                            assert_eq!(blame, Blame::KeepAliveRace, "{how:?}");
                            assert!(again(&next), "{how:?}: resent");
                            assert!(a.needs_fresh_connection());
                            assert!(a.excluded().is_empty(), "same backend again");
                            assert!(!asked.get(), "a resend takes nothing from the budget");
                            continue;
                        }
                        assert_eq!(blame, Blame::Backend, "{how:?}");
                        assert_eq!(a.excluded(), &[BackendId(3)]);
                        let retry_on_table = replayable;
                        assert_eq!(asked.get(), retry_on_table, "{how:?}");
                        assert_eq!(
                            again(&next),
                            retry_on_table && allowed,
                            "{how:?} allowed={allowed}"
                        );
                        assert_eq!(a.retries(), u32::from(retry_on_table && allowed));
                    }
                }
            }
        }
    }

    #[test]
    fn the_keep_alive_race_is_resent_at_most_max_stale_times_then_blamed() {
        let mut a = Attempts::new();
        let how = SendFailed {
            reused: true,
            written: true,
            replayable: true,
        };
        for _ in 0..MAX_STALE {
            let (blame, next) = a.on_send_failed(BackendId(1), how, io_err(), never);
            assert_eq!(blame, Blame::KeepAliveRace);
            assert!(again(&next));
        }
        assert!(!a.may_resend());
        let (blame, next) = a.on_send_failed(BackendId(1), how, io_err(), always);
        assert_eq!(blame, Blame::Backend);
        assert!(
            again(&next),
            "then another backend, like any backend failure"
        );
        assert_eq!(a.excluded(), &[BackendId(1)]);
    }

    #[test]
    fn a_written_non_replayable_request_is_never_sent_again() {
        for reused in [false, true] {
            let mut a = Attempts::new();
            let how = SendFailed {
                reused,
                written: true,
                replayable: false,
            };
            let (blame, next) = a.on_send_failed(BackendId(0), how, io_err(), always);
            assert_eq!(blame, Blame::Backend);
            assert!(matches!(next, Step::Fail(_)));
        }
    }

    #[test]
    fn connect_failures_exclude_the_backend_and_retry_while_allowed() {
        let mut a = Attempts::new();
        let mut seen = Vec::new();
        for b in 0..3 {
            let next = a.on_connect_failed(BackendId(b), io_err(), |retries, excluded| {
                seen.push((retries, excluded.len()));
                retries < 2
            });
            assert_eq!(again(&next), b < 2);
        }
        assert_eq!(seen, vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(a.excluded(), &[BackendId(0), BackendId(1), BackendId(2)]);
        assert!(!a.needs_fresh_connection());
    }

    #[test]
    fn with_no_backend_left_the_client_hears_the_failure_that_caused_the_retry() {
        let mut a = Attempts::new();
        let e = ProxyError::new(ErrorKind::ConnectTimeout);
        assert!(again(&a.on_connect_failed(BackendId(0), e, always)));
        let told = a.pick_failed(ProxyError::new(ErrorKind::NoHealthyBackend));
        assert_eq!(told.kind, ErrorKind::ConnectTimeout);
        // Without a retry, the pick's own error.
        let mut fresh = Attempts::new();
        let told = fresh.pick_failed(ProxyError::new(ErrorKind::NoHealthyBackend));
        assert_eq!(told.kind, ErrorKind::NoHealthyBackend);
    }

    #[test]
    fn a_timeout_ends_the_request() {
        let mut a = Attempts::new();
        match a.on_timeout() {
            Step::Fail(e) => assert_eq!(e.kind, ErrorKind::ResponseTimeout),
            Step::Again => panic!("a timed-out request is not sent again"),
        }
    }
}
