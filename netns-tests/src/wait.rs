//! Waiting on conditions with deadlines, never with fixed sleeps.
//!
//! Every wait here is bounded twice: by time (the deadline) and by a count of polls, so a
//! clock that misbehaves can't turn a test into a hang. Timeouts that are *budgets* (how long
//! we let a daemon take to converge) are multiplied by the patience factor
//! (`NETNS_PATIENCE`, default 1.0) so a slow CI machine can be given more room without
//! editing tests. Bounds that are the *subject* of a test (a failover must finish within
//! Master_Down_Interval plus a margin) scale only their margin; see [`margin`].

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Upper bound on polls of one wait, whatever the clock says.
const MAX_POLLS: u64 = 100_000;

/// The patience factor from `NETNS_PATIENCE` (default 1.0, clamped to 0.1..=100).
pub fn patience() -> f64 {
    std::env::var("NETNS_PATIENCE")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|p| p.is_finite())
        .map(|p| p.clamp(0.1, 100.0))
        .unwrap_or(1.0)
}

/// A budget scaled by [`patience`].
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(patience())
}

/// A tolerance added to a protocol bound, scaled by [`patience`]; the bound itself is not.
pub fn margin(d: Duration) -> Duration {
    scaled(d)
}

/// Polls `cond` every `poll` until it returns `Ok(true)`, for at most `timeout` × patience.
///
/// Returns the time it took. An `Err` from `cond` is remembered and reported if the wait
/// times out (a transient failure, e.g. a daemon's socket not yet created, is not fatal).
pub fn eventually<F>(timeout: Duration, poll: Duration, cond: F) -> Result<Duration>
where
    F: FnMut() -> Result<bool>,
{
    let start = Instant::now();
    eventually_until(start, start + scaled(timeout), poll, cond).map(|t| t - start)
}

/// Like [`eventually`], with an absolute, unscaled deadline; returns the instant `cond`
/// first held. Use it to measure from an event: `eventually_until(t_kill, t_kill + bound, ..)`.
pub fn eventually_until<F>(
    start: Instant,
    deadline: Instant,
    poll: Duration,
    mut cond: F,
) -> Result<Instant>
where
    F: FnMut() -> Result<bool>,
{
    let mut last_err = None;
    for _ in 0..MAX_POLLS {
        match cond() {
            Ok(true) => return Ok(Instant::now()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        let now = Instant::now();
        if now >= deadline {
            let waited = now.saturating_duration_since(start);
            match last_err {
                Some(e) => bail!("condition not met after {waited:?}; last error: {e:#}"),
                None => bail!("condition not met after {waited:?}"),
            }
        }
        thread::sleep(poll.min(deadline - now));
    }
    bail!("condition not met after {MAX_POLLS} polls")
}

/// Checks that `cond` holds at every poll for `duration` (not scaled: it's how long we
/// watch, not how long we tolerate). Fails at the first poll where it doesn't, or errors.
pub fn always_for<F>(duration: Duration, poll: Duration, mut cond: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let start = Instant::now();
    let end = start + duration;
    for polls in 0..MAX_POLLS {
        if !cond()? {
            bail!(
                "condition stopped holding after {:?} (poll {polls})",
                start.elapsed()
            );
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        thread::sleep(poll.min(end - now));
    }
    bail!("always_for: more than {MAX_POLLS} polls")
}

/// `assert_eventually!(timeout, cond, "what {}", x)`: panics with the message (and the
/// last error of `cond`, if any) when `cond`, an expression of type `anyhow::Result<bool>`
/// re-evaluated at every poll, doesn't yield `Ok(true)` within `timeout` × patience.
/// Polls every 10 ms. Evaluates to the time it took.
#[macro_export]
macro_rules! assert_eventually {
    ($timeout:expr, $cond:expr, $($msg:tt)+) => {
        match $crate::wait::eventually($timeout, ::std::time::Duration::from_millis(10), || $cond) {
            Ok(took) => took,
            Err(e) => panic!("{}: {:#}", format!($($msg)+), e),
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventually_times_out_and_reports_the_last_error() {
        let r = eventually(Duration::from_millis(30), Duration::from_millis(5), || {
            bail!("socket missing")
        });
        let msg = format!("{:#}", r.expect_err("must time out"));
        assert!(msg.contains("socket missing"), "{msg}");
    }

    #[test]
    fn eventually_returns_once_true() {
        let mut n = 0;
        let took = eventually(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            Ok(n >= 3)
        })
        .expect("holds on the third poll");
        assert_eq!(n, 3);
        assert!(took < Duration::from_secs(5));
    }

    #[test]
    fn always_for_fails_at_the_first_false() {
        let mut n = 0;
        let r = always_for(Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            Ok(n < 4)
        });
        assert!(r.is_err());
        assert_eq!(n, 4);
    }
}
