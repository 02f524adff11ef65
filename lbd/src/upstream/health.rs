//! Backend health as pure state machines: no sockets, no clock, no tokio.
//!
//! Two independent signals decide whether a backend may receive traffic:
//!
//! - **Active checks** ([`ActiveHealth`]): the runtime probes the backend every interval and feeds
//!   each result to [`ActiveHealth::record_probe`]. The state flips only after `fall` consecutive
//!   failures (Healthy → Unhealthy) or `rise` consecutive successes (Unhealthy → Healthy), so one
//!   lost probe does not flap the backend (HAProxy's rise/fall, pingora's `flip_threshold`).
//! - **Passive ejection** ([`PassiveHealth`]): the proxy reports the outcome of every real request
//!   to [`PassiveHealth::record_result`]. `consecutive_failures` failures in a row (connect error,
//!   timeout or 5xx) eject the backend for `base_time * 2^(n-1)` where `n` counts recent
//!   ejections, capped at `max_time` (Envoy's outlier detection). A backend that keeps failing
//!   is thus retried less and less often; after `decay_after` without a new ejection, `n` drops
//!   by one per quiet period so an old incident stops penalising it.
//!
//! ```text
//!  active:   Healthy ──fall consecutive failed probes──▶ Unhealthy
//!              ▲                                          │
//!              └────rise consecutive good probes──────────┘
//!
//!  passive:  Serving ──N consecutive failures──▶ Ejected { until = now + base·2^(n-1) ≤ max }
//!              ▲                                   │
//!              └──────── poll(now ≥ until) ────────┘   (n decays by 1 per quiet `decay_after`)
//! ```
//!
//! [`HealthTracker`] combines both: a backend is usable when it is actively Healthy and not
//! ejected. Every input returns an optional [`Change`] so the caller logs transitions (at info)
//! and updates the lock-free flags in [`crate::upstream::backend::Backend`].
//!
//! Time is a [`Duration`] since an arbitrary epoch chosen by the caller (e.g. the runtime's
//! start `tokio::time::Instant`), which keeps these machines deterministic in tests.
//!
//! Initial state: active health starts **Healthy** by default ([`ActiveConfig::initial`]) so traffic
//! flows at boot, before the first probe round completes; a dead backend is then taken out after
//! `fall` probes. Start `Unhealthy` instead if sending a few requests to an unchecked backend
//! is worse than refusing traffic until `rise` probes pass.

use std::time::Duration;

/// Default consecutive successes to become Healthy again.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures to become Unhealthy.
pub const DEFAULT_FALL: u32 = 3;
/// Default consecutive request failures that eject a backend (0 disables passive ejection).
pub const DEFAULT_EJECT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default duration of the first ejection.
pub const DEFAULT_EJECT_BASE_TIME: Duration = Duration::from_secs(10);
/// Default cap on any single ejection.
pub const DEFAULT_EJECT_MAX_TIME: Duration = Duration::from_secs(300);
/// Default quiet period after which the ejection count decays by one.
pub const DEFAULT_EJECT_DECAY_AFTER: Duration = Duration::from_secs(60);

/// Active health state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Unhealthy,
}

/// Why a backend's usability changed; returned so the caller can log it and update flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Active checks: `rise` consecutive successful probes.
    BecameHealthy { probes: u32 },
    /// Active checks: `fall` consecutive failed probes.
    BecameUnhealthy { probes: u32 },
    /// Passive: ejected until `until` (the `ejections`-th recent ejection, lasting `duration`).
    Ejected {
        until: Duration,
        duration: Duration,
        ejections: u32,
    },
    /// Passive: the ejection period ended.
    Reinstated,
}

/// Rise/fall thresholds for active checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveConfig {
    /// Consecutive successes to go Unhealthy → Healthy (values below 1 act as 1).
    pub rise: u32,
    /// Consecutive failures to go Healthy → Unhealthy (values below 1 act as 1).
    pub fall: u32,
    /// State before the first probe (see the module docs for why Healthy is the default).
    pub initial: HealthState,
}

impl Default for ActiveConfig {
    fn default() -> Self {
        Self {
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            initial: HealthState::Healthy,
        }
    }
}

/// Active rise/fall state machine.
#[derive(Debug, Clone)]
pub struct ActiveHealth {
    cfg: ActiveConfig,
    state: HealthState,
    /// Consecutive probes that disagree with `state`; reaching the threshold flips it.
    streak: u32,
}

impl ActiveHealth {
    pub fn new(cfg: ActiveConfig) -> Self {
        let cfg = ActiveConfig {
            rise: cfg.rise.max(1),
            fall: cfg.fall.max(1),
            initial: cfg.initial,
        };
        Self {
            state: cfg.initial,
            cfg,
            streak: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    pub fn is_healthy(&self) -> bool {
        self.state == HealthState::Healthy
    }

    /// Feed one probe result. `now` is accepted for symmetry with the passive machine and
    /// future use (e.g. probe-age checks); the rise/fall logic only counts.
    /// Apply new thresholds (a config reload) keeping the current state. A streak already at
    /// or past a lowered threshold is clamped so the *next* disagreeing probe flips the state,
    /// rather than flipping on the reload itself. `initial` only matters for a new machine.
    pub fn reconfigure(&mut self, cfg: ActiveConfig) {
        self.cfg = ActiveConfig {
            rise: cfg.rise.max(1),
            fall: cfg.fall.max(1),
            initial: cfg.initial,
        };
        let threshold = match self.state {
            HealthState::Healthy => self.cfg.fall,
            HealthState::Unhealthy => self.cfg.rise,
        };
        self.streak = self.streak.min(threshold - 1);
    }

    /// Back to the initial state (used when active checks are turned off: nothing could
    /// ever move a backend out of Unhealthy again).
    pub fn reset(&mut self) {
        self.state = self.cfg.initial;
        self.streak = 0;
    }

    pub fn record_probe(&mut self, ok: bool, _now: Duration) -> Option<Change> {
        // A probe agreeing with the current state clears any streak toward the other state:
        // rise/fall count *consecutive* results.
        let (agrees, threshold) = match self.state {
            HealthState::Healthy => (ok, self.cfg.fall),
            HealthState::Unhealthy => (!ok, self.cfg.rise),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        debug_assert!(self.streak <= threshold, "streak overran its threshold");
        if self.streak < threshold {
            return None;
        }
        let probes = self.streak;
        self.streak = 0;
        Some(match self.state {
            HealthState::Healthy => {
                self.state = HealthState::Unhealthy;
                Change::BecameUnhealthy { probes }
            }
            HealthState::Unhealthy => {
                self.state = HealthState::Healthy;
                Change::BecameHealthy { probes }
            }
        })
    }
}

/// What happened to one proxied request, for passive health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx (4xx is the client's problem, not the backend's).
    Success,
    /// TCP connect (or TLS handshake) to the backend failed.
    ConnectFailure,
    /// The connection failed after the request was sent and before any response byte (reset,
    /// EOF or a garbled head). Counted like a connect failure; the proxy reports it only for
    /// fresh connections, since a reused one closing under us is usually the keep-alive race.
    ResetAfterSend,
    /// The backend did not answer in time.
    Timeout,
    /// The backend answered with a 5xx status.
    ServerError,
}

impl Outcome {
    pub fn is_failure(self) -> bool {
        !matches!(self, Outcome::Success)
    }
}

/// Passive ejection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionConfig {
    /// Consecutive failures that eject; 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// Length of the first ejection; doubled for each further recent ejection.
    pub base_time: Duration,
    /// Upper bound on one ejection.
    pub max_time: Duration,
    /// Quiet time (no ejection) after which the ejection count decreases by one.
    pub decay_after: Duration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_EJECT_CONSECUTIVE_FAILURES,
            base_time: DEFAULT_EJECT_BASE_TIME,
            max_time: DEFAULT_EJECT_MAX_TIME,
            decay_after: DEFAULT_EJECT_DECAY_AFTER,
        }
    }
}

/// Passive ejection state machine.
#[derive(Debug, Clone)]
pub struct PassiveHealth {
    cfg: EjectionConfig,
    consecutive_failures: u32,
    /// Recent ejections, the exponent of the back-off.
    ejections: u32,
    /// `Some(t)` while ejected until `t`.
    ejected_until: Option<Duration>,
    /// Start of the current quiet period for decay: the end of the last ejection or last decay.
    quiet_since: Duration,
}

impl PassiveHealth {
    pub fn new(cfg: EjectionConfig) -> Self {
        Self {
            cfg,
            consecutive_failures: 0,
            ejections: 0,
            ejected_until: None,
            quiet_since: Duration::ZERO,
        }
    }

    /// Apply new settings (a config reload) keeping the failure streak and the ejection count.
    /// A streak at or past a lowered threshold is clamped so the next failure ejects. A
    /// running ejection keeps its end time unless passive ejection is now disabled, which
    /// ends it at once (the operator turned the mechanism off).
    pub fn reconfigure(&mut self, cfg: EjectionConfig) {
        self.cfg = cfg;
        if cfg.consecutive_failures == 0 {
            self.consecutive_failures = 0;
            self.ejected_until = None;
        } else {
            self.consecutive_failures = self.consecutive_failures.min(cfg.consecutive_failures - 1);
        }
    }

    /// Ejected at `now`? Pure query; call [`Self::poll`] to observe the reinstatement.
    pub fn is_ejected(&self, now: Duration) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Number of recent ejections (after decay as of the last input).
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When the caller should next call [`Self::poll`]: the end of the current ejection.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.ejected_until
    }

    /// Advance time: ends an expired ejection (returning [`Change::Reinstated`]) and decays the
    /// ejection count.
    pub fn poll(&mut self, now: Duration) -> Option<Change> {
        let change = match self.ejected_until {
            Some(until) if now >= until => {
                self.ejected_until = None;
                self.consecutive_failures = 0;
                self.quiet_since = until;
                Some(Change::Reinstated)
            }
            _ => None,
        };
        self.decay(now);
        change
    }

    /// Feed the outcome of one proxied request.
    pub fn record_result(&mut self, outcome: Outcome, now: Duration) -> Option<Change> {
        let reinstated = self.poll(now);
        if self.ejected_until.is_some() {
            // Late results of requests sent before the ejection: they neither extend the
            // ejection nor count toward the next one.
            return reinstated;
        }
        if !outcome.is_failure() {
            self.consecutive_failures = 0;
            return reinstated;
        }
        if self.cfg.consecutive_failures == 0 {
            return reinstated;
        }
        self.consecutive_failures += 1;
        debug_assert!(
            self.consecutive_failures <= self.cfg.consecutive_failures,
            "failure streak overran the ejection threshold"
        );
        if self.consecutive_failures < self.cfg.consecutive_failures {
            return reinstated;
        }
        self.consecutive_failures = 0;
        self.ejections = self.ejections.saturating_add(1);
        let duration = self.ejection_duration(self.ejections);
        let until = now.saturating_add(duration);
        self.ejected_until = Some(until);
        Some(Change::Ejected {
            until,
            duration,
            ejections: self.ejections,
        })
    }

    /// `base_time * 2^(n-1)`, capped at `max_time`, without overflow for any `n`.
    fn ejection_duration(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(31);
        self.cfg
            .base_time
            .checked_mul(1u32 << shift)
            .unwrap_or(Duration::MAX)
            .min(self.cfg.max_time)
    }

    fn decay(&mut self, now: Duration) {
        if self.ejected_until.is_some() || self.ejections == 0 || self.cfg.decay_after.is_zero() {
            return;
        }
        let quiet = now.saturating_sub(self.quiet_since);
        let periods = quiet.as_nanos() / self.cfg.decay_after.as_nanos();
        if periods == 0 {
            return;
        }
        let periods = u32::try_from(periods).unwrap_or(u32::MAX);
        self.ejections = self.ejections.saturating_sub(periods);
        // Keep the remainder of the current period so decay is independent of call frequency.
        self.quiet_since = self
            .quiet_since
            .saturating_add(self.cfg.decay_after.saturating_mul(periods));
    }
}

/// Active and passive health of one backend.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    pub active: ActiveHealth,
    pub passive: PassiveHealth,
}

impl HealthTracker {
    pub fn new(active: ActiveConfig, passive: EjectionConfig) -> Self {
        Self {
            active: ActiveHealth::new(active),
            passive: PassiveHealth::new(passive),
        }
    }

    /// Apply new settings (a config reload) keeping the current health and ejection state,
    /// so a backend that was down stays down and one that was up stays up.
    pub fn reconfigure(&mut self, active: ActiveConfig, ejection: EjectionConfig) {
        self.active.reconfigure(active);
        self.passive.reconfigure(ejection);
    }

    /// Usable at `now`: actively Healthy and not ejected.
    pub fn is_available(&self, now: Duration) -> bool {
        self.active.is_healthy() && !self.passive.is_ejected(now)
    }

    pub fn record_probe(&mut self, ok: bool, now: Duration) -> Option<Change> {
        self.active.record_probe(ok, now)
    }

    pub fn record_result(&mut self, outcome: Outcome, now: Duration) -> Option<Change> {
        self.passive.record_result(outcome, now)
    }

    pub fn poll(&mut self, now: Duration) -> Option<Change> {
        self.passive.poll(now)
    }

    pub fn poll_timeout(&self) -> Option<Duration> {
        self.passive.poll_timeout()
    }
}

impl Default for HealthTracker {
    fn default() -> Self {
        Self::new(ActiveConfig::default(), EjectionConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn rise_and_fall_count_consecutive_probes() {
        let mut h = ActiveHealth::new(ActiveConfig {
            rise: 2,
            fall: 3,
            initial: HealthState::Healthy,
        });
        assert_eq!(h.record_probe(false, s(1)), None);
        assert_eq!(h.record_probe(false, s(2)), None);
        // A success in between resets the fall streak.
        assert_eq!(h.record_probe(true, s(3)), None);
        assert_eq!(h.record_probe(false, s(4)), None);
        assert_eq!(h.record_probe(false, s(5)), None);
        assert_eq!(
            h.record_probe(false, s(6)),
            Some(Change::BecameUnhealthy { probes: 3 })
        );
        assert!(!h.is_healthy());
        assert_eq!(h.record_probe(true, s(7)), None);
        assert_eq!(
            h.record_probe(true, s(8)),
            Some(Change::BecameHealthy { probes: 2 })
        );
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut h = ActiveHealth::new(ActiveConfig {
            rise: 0,
            fall: 0,
            initial: HealthState::Unhealthy,
        });
        assert_eq!(
            h.record_probe(true, s(1)),
            Some(Change::BecameHealthy { probes: 1 })
        );
    }

    #[test]
    fn ejection_duration_saturates() {
        let p = PassiveHealth::new(EjectionConfig {
            consecutive_failures: 1,
            base_time: s(10),
            max_time: Duration::MAX,
            decay_after: s(60),
        });
        assert_eq!(p.ejection_duration(1), s(10));
        assert_eq!(p.ejection_duration(3), s(40));
        assert_eq!(p.ejection_duration(u32::MAX), s(10) * (1 << 31));
    }
}
