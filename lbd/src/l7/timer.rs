//! One lazily re-armed timer for a series of deadlines (a client connection's, a body's).
//!
//! Every request has two deadlines (its head must arrive, the backend must answer). Arming a
//! fresh tokio timer for each costs a timer-wheel insert and removal per request, about 1% of
//! the fast path's CPU. Deadlines here only ever move later while traffic flows, so one
//! timer is kept armed at an earlier deadline: when it fires, the current wait compares the
//! deadline it was armed for with its own and re-arms once if it fired early. Under steady
//! traffic that is one re-arm per timeout period instead of two timers per request.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Instant, Sleep};

pub struct LazyDeadline {
    sleep: Pin<Box<Sleep>>,
}

impl LazyDeadline {
    /// A timer first armed for `deadline`.
    pub fn new(deadline: Instant) -> Self {
        LazyDeadline {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Ready once `deadline` has passed. A timer armed for later than `deadline` is pulled in
    /// (it would fire too late); one armed earlier is left alone until it fires.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if self.sleep.deadline() > deadline {
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if self.sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an older, earlier deadline: wait for this one.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_deadline_asked_for_whether_armed_earlier_or_later() {
        let start = Instant::now();
        let mut t = LazyDeadline::new(start + Duration::from_secs(1));
        // Armed earlier (1 s) than asked (3 s): fires early internally, re-arms, ends at 3 s.
        poll_fn(|cx| t.poll_expired(cx, start + Duration::from_secs(3))).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // Armed later than asked: pulled in.
        let mut t = LazyDeadline::new(start + Duration::from_secs(60));
        poll_fn(|cx| t.poll_expired(cx, start + Duration::from_secs(5))).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        // A deadline already past is ready at once.
        poll_fn(|cx| t.poll_expired(cx, start + Duration::from_secs(4))).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
    }
}
