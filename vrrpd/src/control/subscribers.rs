//! The subscriber table: who follows the state stream, how far each has acknowledged, and
//! the latest heartbeat (lbd's health report) of each.
//!
//! The connection tasks (`connection.rs`) write it; the daemon reads it through a
//! cloned [`Subscribers`], e.g. to wait until lbd has acted on a transition.

use std::collections::BTreeMap;
use std::sync::Arc;

use shared::control::Heartbeat;
use tokio::sync::watch;

/// One subscriber's progress, as seen by the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberInfo {
    /// The `client` name given in `subscribe` (e.g. "lbd").
    pub client: String,
    /// Highest per-connection seq sent (0 before the first event).
    pub sent_seq: u64,
    /// Highest per-connection seq acknowledged (cumulative).
    pub acked_seq: u64,
    /// Highest daemon event id covered by the acknowledgements.
    pub acked_event: u64,
    /// The latest heartbeat (lbd's health report) and when it arrived.
    pub heartbeat: Option<Heartbeat>,
    pub heartbeat_at: Option<tokio::time::Instant>,
}

/// The live subscribers, keyed by connection number. Cheap to clone; the daemon gets one
/// from [`ControlListener::subscribers`](super::ControlListener::subscribers) before handing
/// the listener to [`serve`](super::serve).
#[derive(Clone)]
pub struct Subscribers {
    pub(super) tx: Arc<watch::Sender<BTreeMap<u64, SubscriberInfo>>>,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            tx: Arc::new(watch::channel(BTreeMap::new()).0),
        }
    }
}

impl Subscribers {
    /// A receiver that changes whenever a subscriber connects, is sent an event, acks, or
    /// leaves. Use `wait_for` on it to wait for a condition.
    pub fn watch(&self) -> watch::Receiver<BTreeMap<u64, SubscriberInfo>> {
        self.tx.subscribe()
    }

    /// The current subscribers.
    pub fn list(&self) -> Vec<(u64, SubscriberInfo)> {
        self.tx
            .borrow()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    /// Wait until some subscriber named `client` has acknowledged daemon event `event_id`
    /// (or a later one). Never resolves if no such subscriber appears: wrap it in a timeout.
    pub async fn wait_acked(&self, client: &str, event_id: u64) {
        let mut rx = self.watch();
        // The sender lives in `self`, so `wait_for` can't fail while we wait.
        let _ = rx
            .wait_for(|subs| {
                subs.values()
                    .any(|s| s.client == client && s.acked_event >= event_id)
            })
            .await;
    }

    pub(super) fn update(&self, conn: u64, f: impl FnOnce(&mut SubscriberInfo)) {
        self.tx.send_modify(|subs| {
            if let Some(info) = subs.get_mut(&conn) {
                f(info);
            }
        });
    }
}
