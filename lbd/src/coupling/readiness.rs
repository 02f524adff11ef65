//! What lbd tells vrrpd about itself: *able* to serve, and *ready* to take over.
//!
//! Both are lists of named conditions rather than two booleans, so a condition such as
//! "state synced with the peer" is one more entry, and `/status` can say which one fails.
//! - able: `shutdown` (not draining out of the process), `listeners_bound` (every listener
//!   of an instance that is master here is bound), and, per `[vrrp]
//!   unable_when_no_healthy_backend`, `backends` for the listed pools.
//! - ready: `listeners` (every configured listener is bound or could be bound now),
//!   `backends` (every pool has at least one available backend) and, with `[peer]`,
//!   `peer_warm` (the soft state has been learned from the peer node, see [`ready_peer`]).

use serde::Serialize;

use crate::config::UnableWhen;
use crate::peer::PeerHandle;
use crate::snapshot::Snapshot;

/// One named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub name: &'static str,
    pub ok: bool,
    /// Why it fails (empty when ok).
    pub reason: String,
}

impl Condition {
    pub fn ok(name: &'static str) -> Condition {
        Condition {
            name,
            ok: true,
            reason: String::new(),
        }
    }

    pub fn failing(name: &'static str, reason: impl Into<String>) -> Condition {
        Condition {
            name,
            ok: false,
            reason: reason.into(),
        }
    }

    /// `ok` unless `problems` is non-empty, whose entries become the reason.
    pub fn from_problems(name: &'static str, problems: &[String]) -> Condition {
        if problems.is_empty() {
            Condition::ok(name)
        } else {
            Condition::failing(name, problems.join("; "))
        }
    }
}

/// A set of conditions that all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Readiness {
    pub conditions: Vec<Condition>,
}

impl Readiness {
    pub fn holds(&self) -> bool {
        self.conditions.iter().all(|c| c.ok)
    }

    /// The reasons of the failing conditions, as "name: reason".
    pub fn reasons(&self) -> impl Iterator<Item = String> + '_ {
        self.conditions
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.reason))
    }
}

/// Pools (by name) that have no available backend right now.
pub fn pools_without_backend(rt: &Snapshot) -> Vec<String> {
    rt.pools
        .iter()
        .filter(|p| {
            !p.pool
                .backends
                .iter()
                .any(|b| b.weight > 0 && b.is_available())
        })
        .map(|p| p.name().to_string())
        .collect()
}

/// The `backends` condition of *able*, per `unable_when_no_healthy_backend`; `None` when
/// backend health doesn't affect ability.
pub fn able_backends(rt: &Snapshot, when: &UnableWhen) -> Option<Condition> {
    let empty = pools_without_backend(rt);
    let failing: Vec<String> = match when {
        UnableWhen::Never => return None,
        UnableWhen::AnyPool => empty,
        UnableWhen::Pools(names) => empty.into_iter().filter(|p| names.contains(p)).collect(),
    };
    let problems: Vec<String> = failing
        .iter()
        .map(|p| format!("pool {p:?} has no healthy backend"))
        .collect();
    Some(Condition::from_problems("backends", &problems))
}

/// The `backends` condition of *ready*: every pool has an available backend.
pub fn ready_backends(rt: &Snapshot) -> Condition {
    let problems: Vec<String> = pools_without_backend(rt)
        .iter()
        .map(|p| format!("pool {p:?} has no healthy backend"))
        .collect();
    Condition::from_problems("backends", &problems)
}

/// The `peer_warm` condition of *ready* (`None` without `[peer]`): a node that has not yet
/// learned the peer's sticky table and rate-limit buckets (cold, or learning during the
/// full resync) is not ready, so its vrrpd does not preempt and break every pinned session.
/// The reason is the phase. After `peer.warm_timeout_ms` with no reachable peer the link
/// reports warm anyway (logged), so a lone node is not kept out forever.
pub fn ready_peer(peer: Option<&PeerHandle>) -> Option<Condition> {
    let peer = peer?;
    Some(peer_condition(peer.view().phase))
}

fn peer_condition(phase: shared::peer::Phase) -> Condition {
    if phase == shared::peer::Phase::Warm {
        Condition::ok("peer_warm")
    } else {
        Condition::failing("peer_warm", phase.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_holds_only_when_every_condition_does() {
        let mut r = Readiness::default();
        assert!(r.holds(), "no conditions: ready");
        r.conditions.push(Condition::ok("listeners"));
        r.conditions.push(Condition::from_problems(
            "backends",
            &["pool \"a\" has no healthy backend".to_string()],
        ));
        assert!(!r.holds());
        assert_eq!(
            r.reasons().collect::<Vec<_>>(),
            vec!["backends: pool \"a\" has no healthy backend".to_string()]
        );
        r.conditions[1] = Condition::from_problems("backends", &[]);
        assert!(r.holds());
        assert_eq!(r.reasons().count(), 0);
    }

    #[test]
    fn peer_warm_fails_with_the_phase_as_reason() {
        use shared::peer::Phase;
        assert_eq!(peer_condition(Phase::Warm), Condition::ok("peer_warm"));
        for phase in [Phase::Cold, Phase::Learning] {
            let c = peer_condition(phase);
            assert!(!c.ok);
            assert_eq!(c.name, "peer_warm");
            assert_eq!(c.reason, phase.as_str());
        }
    }
}
