//! Who is on the other end of a connection, what they may do, and how many connections
//! they may hold.
//!
//! Every connection is identified by the kernel (SO_PEERCRED: uid, gid, pid of the process
//! that connected), never by what it says. Roles:
//! - anyone who can open the socket: `status`;
//! - root and the lbd user: `subscribe`, and on the lbd subscription `heartbeat`/`ack`;
//! - root and members of the admin group: `switchover`, `resume`.
//!
//! Limits: each uid may hold [`AccessPolicy::max_per_uid`] connections; everybody except
//! root and the lbd user also shares the server-wide pool, so no crowd of other local users
//! can keep lbd from connecting. Refusals are counted per reason (shown by `vrrpd status`)
//! and logged at most once a second per reason.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use nix::unistd::{Gid, Group, Uid, User};
use tracing::warn;

use crate::config::{ControlConfig, LbdUser, DEFAULT_LBD_USER};

/// A connection that hasn't sent a valid request within this long is closed.
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(1);
/// How often each refusal reason may be logged.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The resolved access rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The non-root uid allowed to act as lbd; `None`: root only.
    pub lbd_uid: Option<u32>,
    /// Members of this group may run operator commands; `None`: root only.
    pub admin_gid: Option<u32>,
    pub identify_timeout: Duration,
    /// An operator (non-subscribed) connection idle this long is closed.
    pub idle_timeout: Duration,
    pub max_per_uid: usize,
}

impl Default for AccessPolicy {
    /// Root only, with the default timeouts and caps.
    fn default() -> Self {
        let c = ControlConfig::default();
        AccessPolicy {
            lbd_uid: None,
            admin_gid: None,
            identify_timeout: IDENTIFY_TIMEOUT,
            idle_timeout: c.idle_timeout,
            max_per_uid: c.max_connections_per_uid,
        }
    }
}

/// Names in the config that don't resolve.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("`lbd.user`: no user named {0:?} on this system")]
    UnknownUser(String),
    #[error("`control.admin_group`: no group named {0:?} on this system")]
    UnknownGroup(String),
    #[error("looking up {what} {name:?}: {source}")]
    Lookup {
        what: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
}

impl AccessPolicy {
    /// Resolve the configured names (a blocking NSS lookup: call at startup).
    pub fn resolve(cfg: &ControlConfig) -> Result<AccessPolicy, AccessError> {
        let lbd_uid = match &cfg.lbd_user {
            LbdUser::Default => lookup_user(DEFAULT_LBD_USER)?.map(|u| u.uid.as_raw()),
            LbdUser::Named(name) => Some(
                lookup_user(name)?
                    .ok_or_else(|| AccessError::UnknownUser(name.clone()))?
                    .uid
                    .as_raw(),
            ),
        };
        let admin_gid = match &cfg.admin_group {
            None => None,
            Some(name) => Some(
                lookup_group(name)?
                    .ok_or_else(|| AccessError::UnknownGroup(name.clone()))?
                    .gid
                    .as_raw(),
            ),
        };
        Ok(AccessPolicy {
            // uid 0 is root, which is always allowed anyway.
            lbd_uid: lbd_uid.filter(|&u| u != 0),
            admin_gid,
            identify_timeout: IDENTIFY_TIMEOUT,
            idle_timeout: cfg.idle_timeout,
            max_per_uid: cfg.max_connections_per_uid,
        })
    }

    /// May subscribe and heartbeat as lbd.
    pub fn may_act_as_lbd(&self, peer: &Peer) -> bool {
        peer.uid == 0 || Some(peer.uid) == self.lbd_uid
    }

    /// May run switchover and resume. The group check reads the user's groups from NSS
    /// (SO_PEERCRED carries only the primary gid), so call it off the hot path.
    pub fn may_administer(&self, peer: &Peer) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let Some(admin) = self.admin_gid else {
            return false;
        };
        peer.gid == admin || member_of(peer.uid, peer.gid, admin)
    }

    /// Exempt from the shared connection pool (but not from the per-uid cap).
    pub fn has_reserved_slots(&self, peer: &Peer) -> bool {
        self.may_act_as_lbd(peer)
    }
}

/// Numeric names are ids, as `chown` reads them.
fn lookup_user(name: &str) -> Result<Option<User>, AccessError> {
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    found.map_err(|source| AccessError::Lookup {
        what: "user",
        name: name.to_string(),
        source,
    })
}

fn lookup_group(name: &str) -> Result<Option<Group>, AccessError> {
    let found = match name.parse::<u32>() {
        Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
        Err(_) => Group::from_name(name),
    };
    found.map_err(|source| AccessError::Lookup {
        what: "group",
        name: name.to_string(),
        source,
    })
}

/// Whether `uid` has `group` among its supplementary groups. Lookup failures deny.
fn member_of(uid: u32, primary: u32, group: u32) -> bool {
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    let Ok(name) = CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, Gid::from_raw(primary))
        .map(|groups| groups.iter().any(|g| g.as_raw() == group))
        .unwrap_or(false)
}

/// The process at the other end, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl Peer {
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// Why a connection or a request was refused; the key in `vrrpd status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The server-wide pool is full.
    ConnectionLimit,
    /// This uid holds its maximum of connections.
    UidLimit,
    /// SO_PEERCRED could not be read.
    PeerCredentials,
    /// No valid request within [`IDENTIFY_TIMEOUT`].
    IdentifyTimeout,
    /// An operator connection idle for the idle timeout.
    IdleTimeout,
    /// `subscribe`/`heartbeat` from a uid that isn't root or the lbd user.
    NotLbd,
    /// `switchover`/`resume` from outside root and the admin group.
    NotAdmin,
    /// A second lbd subscription while one is live.
    SecondLbd,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::UidLimit => "uid_limit",
            Refusal::PeerCredentials => "peer_credentials",
            Refusal::IdentifyTimeout => "identify_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::NotLbd => "not_lbd",
            Refusal::NotAdmin => "not_admin",
            Refusal::SecondLbd => "second_lbd",
        }
    }
}

/// Refusal counts, and when each reason was last logged.
#[derive(Debug, Default)]
pub struct Refusals {
    inner: Mutex<RefusalsInner>,
}

#[derive(Debug, Default)]
struct RefusalsInner {
    counts: BTreeMap<&'static str, u64>,
    /// When each reason was last logged, and how many went unlogged since.
    logged: HashMap<Refusal, (Option<Instant>, u64)>,
}

impl Refusals {
    fn lock(&self) -> MutexGuard<'_, RefusalsInner> {
        // Counters only: a panic mid-update can't leave them inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count a refusal and log it, unless this reason was logged less than a second ago
    /// (a local flood must not flood the journal); the next log line says how many were
    /// suppressed.
    pub fn record(&self, why: Refusal, peer: Option<&Peer>, detail: &str) {
        let mut inner = self.lock();
        *inner.counts.entry(why.as_str()).or_default() += 1;
        let now = Instant::now();
        let entry = inner.logged.entry(why).or_insert((None, 0));
        if entry.0.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            entry.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut entry.1);
        entry.0 = Some(now);
        drop(inner);
        warn!(
            reason = why.as_str(),
            uid = peer.map(|p| p.uid),
            pid = peer.and_then(|p| p.pid),
            suppressed,
            "control socket: refused: {detail}"
        );
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.lock()
            .counts
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }
}

/// Open connections per uid.
#[derive(Debug, Default)]
pub struct UidSlots {
    open: Mutex<HashMap<u32, usize>>,
}

/// One connection's place in [`UidSlots`], given back on drop.
#[derive(Debug)]
pub struct UidSlot {
    slots: Arc<UidSlots>,
    uid: u32,
}

impl UidSlots {
    fn lock(&self) -> MutexGuard<'_, HashMap<u32, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Take a slot for `uid` unless it already holds `max`.
    pub fn take(self: &Arc<Self>, uid: u32, max: usize) -> Option<UidSlot> {
        let mut open = self.lock();
        let n = open.entry(uid).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UidSlot {
            slots: Arc::clone(self),
            uid,
        })
    }

    /// Connections open now, over all uids.
    pub fn total(&self) -> usize {
        self.lock().values().sum()
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Peer {
        Peer {
            uid,
            gid,
            pid: None,
        }
    }

    #[test]
    fn roles() {
        let p = AccessPolicy {
            lbd_uid: Some(1000),
            admin_gid: Some(2000),
            ..AccessPolicy::default()
        };
        assert!(p.may_act_as_lbd(&peer(0, 0)));
        assert!(p.may_act_as_lbd(&peer(1000, 1000)));
        assert!(!p.may_act_as_lbd(&peer(1001, 1000)));
        assert!(p.may_administer(&peer(0, 0)));
        assert!(p.may_administer(&peer(4242, 2000)), "primary group");
        assert!(!p.may_administer(&peer(1000, 1000)), "lbd is no admin");
        let root_only = AccessPolicy::default();
        assert!(!root_only.may_act_as_lbd(&peer(65534, 65534)));
        assert!(!root_only.may_administer(&peer(65534, 65534)));
        assert!(root_only.has_reserved_slots(&peer(0, 0)));
        assert!(!root_only.has_reserved_slots(&peer(65534, 65534)));
    }

    #[test]
    fn uid_slots_cap_and_release() {
        let slots = Arc::new(UidSlots::default());
        let a: Vec<_> = (0..3).filter_map(|_| slots.take(7, 3)).collect();
        assert_eq!(a.len(), 3);
        assert!(slots.take(7, 3).is_none(), "capped");
        let other = slots.take(8, 3).expect("other uids unaffected");
        assert_eq!(slots.total(), 4);
        drop(a);
        drop(other);
        assert_eq!(slots.total(), 0);
        assert!(slots.take(7, 3).is_some(), "released on drop");
    }

    #[test]
    fn refusals_are_counted_per_reason() {
        let r = Refusals::default();
        for _ in 0..5 {
            r.record(Refusal::NotLbd, None, "test");
        }
        r.record(Refusal::SecondLbd, None, "test");
        let s = r.snapshot();
        assert_eq!(s.get("not_lbd"), Some(&5));
        assert_eq!(s.get("second_lbd"), Some(&1));
    }

    #[test]
    fn resolve_defaults_to_root_only_without_the_lbpair_user() {
        let p = AccessPolicy::resolve(&ControlConfig::default()).expect("resolves");
        let lbpair = User::from_name(DEFAULT_LBD_USER).ok().flatten();
        assert_eq!(p.lbd_uid, lbpair.map(|u| u.uid.as_raw()));
        let cfg = ControlConfig {
            lbd_user: LbdUser::Named("no-such-user-xyz".into()),
            ..ControlConfig::default()
        };
        assert!(matches!(
            AccessPolicy::resolve(&cfg),
            Err(AccessError::UnknownUser(_))
        ));
        let cfg = ControlConfig {
            lbd_user: LbdUser::Named("nobody".into()),
            admin_group: Some("no-such-group-xyz".into()),
            ..ControlConfig::default()
        };
        assert!(matches!(
            AccessPolicy::resolve(&cfg),
            Err(AccessError::UnknownGroup(_))
        ));
    }
}
