//! Per-instance state and what lbd does on each vrrpd event (see the module docs of
//! [`crate::coupling`]). Everything here is synchronous: starting and stopping listeners are
//! plain calls, and the one slow action (a switchover drain) is returned as a future for
//! the link to await while it keeps heartbeating.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{Heartbeat, StateEvent, HANDED_OVER_REASONS};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::Instant;
use tracing::{info, warn};

use super::gate::{Gate, Gates};
use super::readiness::{self, Condition, Readiness};
use super::{Coupling, Host, InstanceView};
use crate::config::{ListenerConfig, VrrpConfig, DEFAULT_VRRP_LOST_TIMEOUT_MS};

/// `reason` of the events vrrpd sends as the snapshot after a subscribe.
pub const SNAPSHOT_REASON: &str = "snapshot";
/// `reason` of the `backup` event that ends a planned switchover (vrrpd's
/// `TransitionReason::SwitchoverComplete`).
pub const SWITCHOVER_COMPLETE: &str = "switchover_complete";

/// How often a listener that isn't bound is test-bound for the `listeners` readiness.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait for stopped accept loops to close their sockets (they do at their next
/// poll, so this only bounds a wedged runtime).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A switchover drain in progress; resolves to whether every request finished in time.
pub type Drain = Pin<Box<dyn Future<Output = bool> + Send>>;

/// What the link does after handing over an event.
pub enum Next {
    /// Acted: ack now.
    Ack,
    /// Ack when this drain finishes.
    AckAfter(Drain),
}

#[derive(Debug, Default)]
struct Instance {
    state: String,
    serving: bool,
    /// Switchover drain mode and when it gives up waiting for the handover.
    draining_until: Option<Instant>,
    master_down: Option<Duration>,
    unconfirmed_since: Option<Instant>,
    reason: String,
    errors: Vec<String>,
}

/// The coupling's state machine, owned by the link task.
pub struct Controller {
    host: Arc<dyn Host>,
    cfg: VrrpConfig,
    instances: BTreeMap<String, Instance>,
    /// Test-bind results of listeners that aren't bound: (when, problem).
    probes: HashMap<String, (Instant, Option<String>)>,
    /// When vrrpd last proved it was alive (any line from a vrrpd that sends keepalives);
    /// `None` for a vrrpd that doesn't, or before it has. The lost timeout runs from here
    /// even while the socket stays open: a stopped vrrpd keeps it open.
    last_heard: Option<Instant>,
}

impl Controller {
    pub fn new(host: Arc<dyn Host>, cfg: VrrpConfig) -> Controller {
        Controller {
            host,
            cfg,
            instances: BTreeMap::new(),
            probes: HashMap::new(),
            last_heard: None,
        }
    }

    /// The link reports when vrrpd last proved alive (see `last_heard`).
    pub fn set_last_heard(&mut self, at: Option<Instant>) {
        self.last_heard = at;
    }

    pub fn config(&self) -> &VrrpConfig {
        &self.cfg
    }

    pub fn host(&self) -> &Arc<dyn Host> {
        &self.host
    }

    fn coupling(&self) -> &Coupling {
        self.host.coupling()
    }

    /// The listeners of `instance` in the current config.
    fn listeners_of(&self, instance: &str) -> Vec<ListenerConfig> {
        self.host
            .engine()
            .snapshot()
            .config
            .listeners
            .iter()
            .filter(|l| l.vrrp_instance.as_deref() == Some(instance))
            .cloned()
            .collect()
    }

    fn gates_of(&self, instance: &str) -> Vec<Arc<Gate>> {
        self.listeners_of(instance)
            .iter()
            .map(|l| self.host.engine().gates.get(&l.name))
            .collect()
    }

    /// Act on one event, in order. The caller acks it when told to.
    pub async fn handle(&mut self, ev: &StateEvent) -> Next {
        let now = Instant::now();
        let inst = self.instances.entry(ev.instance.clone()).or_default();
        if ev.master_down_ms > 0 {
            inst.master_down = Some(Duration::from_millis(ev.master_down_ms));
        }
        let previous = std::mem::replace(&mut inst.state, ev.state.clone());
        inst.reason = ev.reason.clone();
        let next = match ev.state.as_str() {
            "master" => {
                inst.unconfirmed_since = None;
                if !ev.draining {
                    // A plain master (again) ends any drain mode.
                    inst.draining_until = None;
                }
                self.start(&ev.instance);
                if ev.draining {
                    self.begin_drain(&ev.instance, now)
                } else {
                    Next::Ack
                }
            }
            // A restarted vrrpd reports "initialize" in its snapshot until it has decided;
            // it resumes as master only if lbd still serves the VIP, so keep serving, but
            // no longer than the lost timeout (counted from when vrrpd last vouched).
            "initialize" if ev.reason == SNAPSHOT_REASON => {
                if inst.serving {
                    inst.state = previous;
                    inst.unconfirmed_since.get_or_insert(now);
                    info!(instance = %ev.instance, "vrrpd has not decided yet; still serving");
                }
                Next::Ack
            }
            // Another router is master now (the end of a planned switchover, or a better
            // master took over): vrrpd keeps the VIP until the ack.
            "backup" if HANDED_OVER_REASONS.contains(&ev.reason.as_str()) => {
                inst.unconfirmed_since = None;
                if ev.handoff_ms > 0 {
                    self.hand_off(&ev.instance, Duration::from_millis(ev.handoff_ms))
                } else {
                    self.stop(&ev.instance, &ev.state).await;
                    self.ack_when_idle(&ev.instance)
                }
            }
            "backup" | "fault" | "initialize" => {
                inst.unconfirmed_since = None;
                self.stop(&ev.instance, &ev.state).await;
                Next::Ack
            }
            other => {
                warn!(instance = %ev.instance, state = other, "unknown state from vrrpd; not serving");
                inst.unconfirmed_since = None;
                self.stop(&ev.instance, other).await;
                Next::Ack
            }
        };
        self.publish();
        next
    }

    /// Bind every listener of `instance` (idempotent).
    fn start(&mut self, instance: &str) {
        if self.host.engine().shutdown.is_triggered() || self.coupling().is_leaving() {
            warn!(
                instance,
                "shutting down: not binding the instance's listeners"
            );
            return;
        }
        let listeners = self.listeners_of(instance);
        let mut errors = Vec::new();
        {
            let mut active = self.coupling().active();
            active.insert(instance.to_string());
            for l in &listeners {
                // Master: keep-alive on, even while a switchover waits for requests.
                self.host.engine().gates.get(&l.name).set_draining(false);
                if let Err(e) = self.host.start_listener(l) {
                    warn!(instance, listener = %l.name, address = %l.address, error = %e, "cannot bind VIP listener");
                    errors.push(format!(
                        "listener {:?}: cannot bind {}: {e}",
                        l.name, l.address
                    ));
                }
            }
        }
        let inst = self.instances.entry(instance.to_string()).or_default();
        if !inst.serving && errors.is_empty() {
            info!(
                instance,
                listeners = listeners.len(),
                "master: serving the instance's VIP listeners"
            );
        }
        inst.serving = errors.is_empty();
        inst.errors = errors;
    }

    /// Stop accepting on every listener of `instance` and wait until their sockets are
    /// closed (connection attempts are refused from then on); open connections finish,
    /// and their responses carry `Connection: close` (the node is no longer master).
    async fn stop(&mut self, instance: &str, why: &str) {
        let listeners = self.listeners_of(instance);
        let mut closing = Vec::new();
        {
            let mut active = self.coupling().active();
            active.remove(instance);
            for l in &listeners {
                self.host.engine().gates.get(&l.name).set_draining(true);
                closing.extend(self.host.stop_listener_closed(&l.name));
            }
        }
        let all = futures::future::join_all(closing);
        if tokio::time::timeout(CLOSE_TIMEOUT, all).await.is_err() {
            warn!(instance, "accept loops did not stop in time");
        }
        let inst = self.instances.entry(instance.to_string()).or_default();
        if inst.serving {
            info!(
                instance,
                state = why,
                "no longer master: stopped the instance's VIP listeners"
            );
        }
        inst.serving = false;
        inst.draining_until = None;
        inst.errors.clear();
    }

    /// Backup after a switchover or for a better master (preemption): the peer holds the VIP
    /// now and new requests go there, but vrrpd keeps our copy of the address until this
    /// ack, so the responses to the requests still in flight here (including those accepted
    /// after a switchover's drain began) can leave the host. Ack once none is left, at most
    /// `drain_timeout` from now.
    fn ack_when_idle(&self, instance: &str) -> Next {
        let gates = self.gates_of(instance);
        let in_flight: u64 = gates.iter().map(|g| g.in_flight()).sum();
        if in_flight == 0 {
            return Next::Ack;
        }
        let limit = self.cfg.drain_timeout;
        info!(
            instance,
            in_flight, "backup: answering the requests in flight before vrrpd removes the VIP"
        );
        let instance = instance.to_string();
        Next::AckAfter(Box::pin(async move {
            let idle = Gates::wait_idle(&gates, limit).await;
            if idle {
                info!(instance = %instance, "backup: no request left in flight");
            } else {
                warn!(instance = %instance, timeout_ms = limit.as_millis() as u64,
                    "backup: requests still in flight at the drain timeout; acking anyway");
            }
            idle
        }))
    }

    /// Backup for a new master, with a hand-off window: the new master sends us, for
    /// `window`, the packets of connections it doesn't know (a handshake whose SYN reached
    /// us just before clients moved, a request on one of our keep-alive connections). So
    /// the listeners keep accepting for the window (responses say `Connection: close`),
    /// then lbd waits until no request is in flight (at most `drain_timeout`), closes the
    /// listeners and acks; vrrpd removes the VIP on that ack.
    fn hand_off(&mut self, instance: &str, window: Duration) -> Next {
        let names: Vec<String> = self
            .listeners_of(instance)
            .into_iter()
            .map(|l| l.name)
            .collect();
        let gates = self.gates_of(instance);
        {
            let mut active = self.coupling().active();
            active.remove(instance);
            for g in &gates {
                g.set_draining(true);
            }
        }
        let inst = self.instances.entry(instance.to_string()).or_default();
        inst.serving = false;
        inst.draining_until = None;
        inst.errors.clear();
        info!(
            instance,
            window_ms = window.as_millis() as u64,
            "backup: the new master hands our connections back for the hand-off window"
        );
        let host = Arc::clone(&self.host);
        let limit = self.cfg.drain_timeout;
        let instance = instance.to_string();
        Next::AckAfter(Box::pin(async move {
            tokio::time::sleep(window).await;
            let idle = Gates::wait_idle(&gates, limit).await;
            let closing: Vec<_> = names
                .iter()
                .filter_map(|n| host.stop_listener_closed(n))
                .collect();
            if tokio::time::timeout(CLOSE_TIMEOUT, futures::future::join_all(closing))
                .await
                .is_err()
            {
                warn!(instance = %instance, "accept loops did not stop in time");
            }
            if idle {
                info!(instance = %instance, "backup: hand-off over, no request in flight; stopped the VIP listeners");
            } else {
                warn!(instance = %instance, timeout_ms = limit.as_millis() as u64,
                    "backup: requests still in flight at the drain timeout; stopped the VIP listeners anyway");
            }
            idle
        }))
    }

    /// Switchover: wait for the requests in flight (keep-alive stays on), then ack so
    /// vrrpd resigns.
    fn begin_drain(&mut self, instance: &str, now: Instant) -> Next {
        let gates = self.gates_of(instance);
        let limit = self.cfg.drain_timeout;
        // Drain mode lasts through the handover (vrrpd keeps the VIP until the peer is
        // master, then sends "backup"); if no peer takes over, it ends on its own.
        let handover = self
            .instances
            .get(instance)
            .and_then(|i| i.master_down)
            .unwrap_or(Duration::from_millis(DEFAULT_VRRP_LOST_TIMEOUT_MS));
        if let Some(inst) = self.instances.get_mut(instance) {
            inst.draining_until = Some(now + limit + handover * 2);
        }
        info!(
            instance,
            listeners = gates.len(),
            timeout_ms = limit.as_millis() as u64,
            "switchover: draining"
        );
        let instance = instance.to_string();
        Next::AckAfter(Box::pin(async move {
            let clean = Gates::wait_in_flight(&gates, limit).await;
            if clean {
                info!(instance = %instance, "switchover: in-flight requests finished");
            } else {
                warn!(instance = %instance, timeout_ms = limit.as_millis() as u64, "switchover: drain timeout, acking anyway");
            }
            clean
        }))
    }

    /// vrrpd is gone: from now on nobody vouches for the instances we serve.
    pub fn on_disconnect(&mut self, now: Instant) {
        for inst in self.instances.values_mut() {
            if inst.serving {
                inst.unconfirmed_since.get_or_insert(now);
            }
        }
        self.publish();
    }

    /// The lost timeout of an instance.
    fn lost_limit(&self, inst: &Instance) -> Duration {
        self.cfg
            .lost_timeout
            .or(inst.master_down)
            .unwrap_or(Duration::from_millis(DEFAULT_VRRP_LOST_TIMEOUT_MS))
    }

    /// Timers: the lost timeout, the end of drain mode, re-binding after a bind failure.
    /// Returns whether an instance was just given up as lost: vrrpd won't repeat a state
    /// it already sent, so a session that outlives this must be renewed for a snapshot.
    pub async fn check_deadlines(&mut self, now: Instant) -> bool {
        let mut lost = Vec::new();
        let mut undrain = Vec::new();
        let mut rebind = Vec::new();
        for (name, inst) in &self.instances {
            // Unvouched since the earlier of: vrrpd going away (or not having decided yet)
            // and the last sign of life from it.
            let since = match (inst.unconfirmed_since, self.last_heard) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(since) = since {
                let limit = self.lost_limit(inst);
                if inst.serving && now.saturating_duration_since(since) >= limit {
                    lost.push((name.clone(), limit));
                }
            }
            if inst.draining_until.is_some_and(|t| now >= t) {
                undrain.push(name.clone());
            }
            if inst.state == "master" && !inst.errors.is_empty() {
                rebind.push(name.clone());
            }
        }
        let changed = !lost.is_empty() || !undrain.is_empty() || !rebind.is_empty();
        let gave_up = !lost.is_empty();
        for (name, limit) in lost {
            warn!(instance = %name, lost_timeout_ms = limit.as_millis() as u64,
                "vrrpd unreachable for the lost timeout (the peer holds the VIP by now): stop serving");
            self.stop(&name, "lost").await;
            if let Some(inst) = self.instances.get_mut(&name) {
                inst.state = "lost".into();
                inst.unconfirmed_since = None;
            }
        }
        for name in undrain {
            info!(instance = %name, "switchover did not complete: leaving drain mode");
            if let Some(inst) = self.instances.get_mut(&name) {
                inst.draining_until = None;
            }
        }
        for name in rebind {
            let due = self
                .probes
                .get(&format!("instance:{name}"))
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= PROBE_INTERVAL);
            if due {
                self.probes.insert(format!("instance:{name}"), (now, None));
                self.start(&name);
            }
        }
        if changed {
            self.publish();
        }
        gave_up
    }

    /// Is the instance's every listener bound (as reported in heartbeats)?
    fn serving(&self) -> Vec<String> {
        if self.host.engine().shutdown.is_triggered() {
            return Vec::new();
        }
        self.instances
            .iter()
            .filter(|(_, i)| i.serving)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Can `l` be bound now? Bound listeners can; others are test-bound, at most every
    /// [`PROBE_INTERVAL`].
    fn probe(&mut self, l: &ListenerConfig, now: Instant) -> Option<String> {
        if self.host.listener_running(&l.name) {
            return None;
        }
        if let Some((at, result)) = self.probes.get(&l.name) {
            if now.saturating_duration_since(*at) < PROBE_INTERVAL {
                return result.clone();
            }
        }
        let result = test_bind(l)
            .err()
            .map(|e| format!("listener {:?} cannot bind {}: {e}", l.name, l.address));
        self.probes.insert(l.name.clone(), (now, result.clone()));
        result
    }

    /// Evaluate the conditions and build the next heartbeat.
    pub fn heartbeat(&mut self) -> Heartbeat {
        let now = Instant::now();
        let rt = self.host.engine().snapshot();
        let mut able = Readiness::default();
        able.conditions.push(
            if self.host.engine().shutdown.is_triggered() || self.coupling().is_leaving() {
                Condition::failing("shutdown", "lbd is shutting down")
            } else {
                Condition::ok("shutdown")
            },
        );
        let bind_errors: Vec<String> = self
            .instances
            .values()
            .filter(|i| i.state == "master")
            .flat_map(|i| i.errors.iter().cloned())
            .collect();
        able.conditions
            .push(Condition::from_problems("listeners_bound", &bind_errors));
        if let Some(c) = readiness::able_backends(&rt, &self.cfg.unable_when_no_healthy_backend) {
            able.conditions.push(c);
        }

        let mut ready = Readiness::default();
        let listeners = rt.config.listeners.clone();
        let problems: Vec<String> = listeners
            .iter()
            .filter_map(|l| self.probe(l, now))
            .collect();
        ready
            .conditions
            .push(Condition::from_problems("listeners", &problems));
        ready.conditions.push(readiness::ready_backends(&rt));
        ready
            .conditions
            .extend(readiness::ready_peer(self.host.peer()));

        let reasons: Vec<String> = able.reasons().chain(ready.reasons()).collect();
        let hb = Heartbeat {
            able: able.holds(),
            ready: ready.holds(),
            serving: self.serving(),
            reasons,
        };
        self.coupling().update(|s| {
            s.able = hb.able;
            s.ready = hb.ready;
            s.reasons = hb.reasons.clone();
            s.able_conditions = able.conditions;
            s.ready_conditions = ready.conditions;
        });
        hb
    }

    /// Publish the per-instance view to `/status`.
    pub fn publish(&self) {
        let now = Instant::now();
        let views: Vec<InstanceView> = self
            .instances
            .iter()
            .map(|(name, i)| InstanceView {
                name: name.clone(),
                state: i.state.clone(),
                serving: i.serving,
                draining: i.draining_until.is_some(),
                listeners: self
                    .listeners_of(name)
                    .into_iter()
                    .map(|l| l.name)
                    .collect(),
                master_down_ms: i.master_down.map(|d| d.as_millis() as u64),
                unconfirmed_ms: i
                    .unconfirmed_since
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                reason: i.reason.clone(),
                errors: i.errors.clone(),
            })
            .collect();
        self.coupling().update(|s| s.instances = views);
    }

    pub(super) fn update_status(&self, f: impl FnOnce(&mut super::CouplingStatus)) {
        self.coupling().update(f);
    }
}

/// Bind (without listening) the way the listener would, then close: can it bind now?
fn test_bind(l: &ListenerConfig) -> std::io::Result<()> {
    let addr = l.address;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if l.freebind {
        if addr.is_ipv4() {
            socket.set_freebind(true)?;
        } else {
            socket.set_freebind_ipv6(true)?;
        }
    }
    socket.bind(&addr.into())
}
