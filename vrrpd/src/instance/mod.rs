//! The async shell around one VRRP instance's pure state machine.
//!
//! One tokio task per instance owns its [`Fsm`], its raw socket and its GARP burst. It
//! turns the world into FSM inputs (received adverts, timer expiries, link events, commands)
//! and FSM actions into effects (adverts sent, VIPs added or removed over netlink, GARPs).
//! After each step it publishes a status snapshot and, on transitions, a state event for
//! the control socket's subscribers.
//!
//! The pair (see `pair.rs`): before claiming a VIP the instance waits, bounded, for lbd to
//! acknowledge the `master` event; lbd's health feeds tracking (FAULT or lower priority);
//! lbd's readiness gates preemption; a planned switchover drains lbd, then resigns
//! make-before-break; a restarted vrrpd that finds its VIP served by lbd resumes as master.
//!
//! Starvation: when a timer fires, the adverts already queued in the socket are handled
//! *before* the timer (at most [`DRAIN_BEFORE_TIMER`] of them), so a backup that was not
//! scheduled for a while sees the master's adverts that arrived meanwhile instead of
//! declaring it dead. A timer that fires more than half an advert interval late is counted
//! and logged.
//!
//! Floods: the loop polls the timer *before* the socket, and reads at most
//! [`RECV_BATCH`] datagrams per turn, stopping early when the deadline passes, so a flood of
//! protocol-112 packets can't hold back our own adverts. When datagrams wake the loop more
//! often than once per [`RX_COALESCE`], the socket is left alone for that long after each
//! batch: the kernel queues what arrives meanwhile and the next turn reads it in one go, so
//! a flood costs one wake-up per millisecond instead of one per packet (real adverts, at
//! most 100 a second, never trigger it). Discards are counted per reason and logged at most
//! once per reason every [`DISCARD_LOG_EVERY`] with the number suppressed.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{InstanceCounters, InstanceStatus, StateEvent};
use shared::wire::vrrp::{ChecksumMode, Repr};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

mod announce;
mod auth;
mod handoff;
mod pair;

use crate::config::InstanceConfig;
use crate::fsm::{Action, Fsm, StateKind};
use crate::lbd_link::LbdHealth;
use crate::net::garp::GarpSender;
use crate::net::link::{self, LinkEvent};
use crate::net::socket::{VrrpSocket, MAX_DATAGRAM};
use crate::net::vip::{Vip, VipManager};
use crate::notify::Notifier;
use crate::rx;

/// Datagrams already queued that are handled before an expired timer.
const DRAIN_BEFORE_TIMER: usize = 64;
/// Datagrams handled per wake-up of the socket branch (fewer when the timer falls due).
/// With [`RX_COALESCE`] this bounds what a flood can make us read: 128 per millisecond.
const RECV_BATCH: usize = 128;
/// Socket wake-ups closer together than this are a flood: hold the socket off this long.
const RX_COALESCE: Duration = Duration::from_millis(1);
/// At most one log line per discard reason per instance this often.
const DISCARD_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the daemon can ask of a running instance.
#[derive(Debug)]
pub enum Command {
    /// Stop: a master resigns with priority 0 and removes its VIPs. The reply is sent
    /// once the VIPs are gone.
    Stop { done: oneshot::Sender<()> },
    /// Planned switchover: drain lbd, then resign make-before-break. The reply comes when
    /// the peer has taken over (Ok) or nobody did (Err).
    Switchover {
        done: oneshot::Sender<Result<String, SwitchoverError>>,
    },
    /// Lift the hold a completed switchover leaves.
    Resume,
    /// Internal: lbd has drained (or the drain timed out); resign now.
    Drained { event_id: u64 },
    /// Internal: lbd has answered every request in flight on the VIPs this node just handed
    /// to the new master (or the wait timed out), or a fault's hand-off hold is over;
    /// remove them now.
    LbdIdle { event_id: u64 },
}

/// The daemon's handle on a running instance.
pub struct InstanceHandle {
    pub config: InstanceConfig,
    pub status: watch::Receiver<InstanceStatus>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl InstanceHandle {
    /// Stop the instance and wait until it has resigned and removed its VIPs, at most
    /// `timeout`.
    pub async fn stop(self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).await.is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
        // The task ends on its own after Stop; aborting covers a task stuck in netlink.
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_millis(500), &mut task)
            .await
            .is_err()
        {
            warn!(instance = %self.config.name, "instance task did not end; aborting it");
            task.abort();
        }
    }

    /// The instance's command queue, for work that must not hold a borrow of the handle.
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// The state in the last published status.
    pub fn state(&self) -> String {
        self.status.borrow().state.clone()
    }
}

/// Why an instance could not start: each names the instance and what it needed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("instance {instance}: interface {interface}: {source}")]
    Interface {
        instance: String,
        interface: String,
        source: std::io::Error,
    },
    #[error("instance {instance}: interface {interface} has no IPv4 address to send adverts from")]
    NoIpv4 { instance: String, interface: String },
    #[error("instance {instance}: VRRP socket: {source}")]
    VrrpSocket {
        instance: String,
        source: std::io::Error,
    },
    #[error("instance {instance}: ARP socket: {source}")]
    ArpSocket {
        instance: String,
        source: std::io::Error,
    },
}

/// Why an instance did not hand over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverError {
    #[error("{instance}: not master (state {state}), nothing to hand over")]
    NotMaster { instance: String, state: String },
    #[error("{instance}: a switchover is already under way")]
    AlreadyUnderWay { instance: String },
    #[error("{instance}: no longer master, nothing to hand over")]
    NoLongerMaster { instance: String },
    #[error("{instance}: no peer took over; still master")]
    NoPeerTookOver { instance: String },
    #[error("instance is stopping")]
    Stopping,
    #[error("instance stopped during the switchover")]
    StoppedDuring,
}

/// Start a planned switchover through an instance's command queue; resolves when it has
/// completed or failed.
pub async fn switchover_via(commands: &mpsc::Sender<Command>) -> Result<String, SwitchoverError> {
    let (done, wait) = oneshot::channel();
    commands
        .send(Command::Switchover { done })
        .await
        .map_err(|_| SwitchoverError::Stopping)?;
    wait.await.unwrap_or(Err(SwitchoverError::StoppedDuring))
}

pub use pair::handover_patience;

/// What every instance shares with the daemon.
#[derive(Clone)]
pub struct Shared {
    /// The daemon's time origin: FSM time is `Instant::now() - epoch`.
    pub epoch: Instant,
    pub vips: Arc<VipManager>,
    pub events: broadcast::Sender<StateEvent>,
    pub links: broadcast::Sender<LinkEvent>,
    /// Daemon-wide event ids, put in `StateEvent::seq` so acks can be matched to events.
    pub next_event_id: Arc<std::sync::atomic::AtomicU64>,
    /// The coupling to lbd, if configured.
    pub lbd: Option<LbdShared>,
}

/// What instances need for the lbd coupling.
#[derive(Clone)]
pub struct LbdShared {
    pub config: crate::config::LbdConfig,
    pub health: watch::Receiver<LbdHealth>,
    pub subscribers: crate::control::Subscribers,
}

/// Start an instance: open its socket, clear VIPs left by a crash, enter Backup (or Fault
/// if the link is down), and run until stopped.
pub async fn spawn(config: InstanceConfig, shared: Shared) -> Result<InstanceHandle, StartError> {
    let vip_addrs: Vec<Ipv4Addr> = config.vips.iter().map(|v| v.address).collect();
    let instance = || config.name.clone();
    let iface = link::interface_info_excluding(&config.interface, &vip_addrs)
        .await
        .map_err(|source| StartError::Interface {
            instance: instance(),
            interface: config.interface.clone(),
            source,
        })?;
    let primary = iface.primary_v4.ok_or_else(|| StartError::NoIpv4 {
        instance: instance(),
        interface: config.interface.clone(),
    })?;
    let socket =
        VrrpSocket::open(&config.interface, primary, &config.unicast_peers).map_err(|source| {
            StartError::VrrpSocket {
                instance: instance(),
                source,
            }
        })?;
    let garp = GarpSender::open().map_err(|source| StartError::ArpSocket {
        instance: instance(),
        source,
    })?;

    if config.accept_from.is_empty() {
        warn!(instance = %config.name,
            "adverts are accepted from any source on {}: any host on the LAN can forge one \
             and move or withhold the VIP; set `accept_from` (or `unicast_peers`)",
            config.interface);
    }
    let fsm = Fsm::new(config.fsm_config(primary));
    let vips: Vec<Vip> = config.vips.iter().map(to_vip).collect();
    let (status_tx, status_rx) = watch::channel(InstanceStatus {
        name: config.name.clone(),
        interface: config.interface.clone(),
        vrid: config.vrid,
        state: StateKind::Initialize.as_str().to_string(),
        priority: config.priority,
        configured_priority: config.priority,
        master_addr: None,
        advert_interval_cs: config.advert_interval_cs,
        time_in_state_ms: 0,
        vips: config.vips.iter().map(|v| v.to_string()).collect(),
        counters: InstanceCounters::default(),
        lbd: None,
        resigning: false,
        switchover_hold: false,
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let links = shared.links.subscribe();
    let span =
        info_span!("vrrp", instance = %config.name, vrid = config.vrid, iface = %config.interface);
    let driver_lbd_config = shared.lbd.as_ref().map(|l| l.config.clone());
    let mut driver = Driver {
        config: config.clone(),
        ifindex: iface.index,
        mac: iface.mac,
        primary,
        fsm,
        socket,
        garp: Arc::new(garp),
        vips,
        shared,
        status: status_tx,
        counters: InstanceCounters::default(),
        garp_task: None,
        garp_after: None,
        last_published: None,
        last_event_id: 0,
        notifier: config.pair.notify.clone().map(Notifier::new),
        commands: cmd_tx.downgrade(),
        switchover: None,
        vip_release: None,
        lbd_effect: pair::LbdEffect::None,
        auth: config
            .auth
            .as_ref()
            .map(|a| crate::auth::Authenticator::new(a.key.clone())),
        discard_log: rx::DiscardLog::new(DISCARD_LOG_EVERY),
        handoff: handoff::Handoff::configured(
            driver_lbd_config.as_ref(),
            &config.interface,
            iface.index,
            config.vrid,
        ),
    };
    let task = tokio::spawn(
        async move {
            let resume = driver.should_resume().await;
            if !resume {
                driver.clear_stale_vips().await;
            }
            // A hand-off table a crash left behind would keep forwarding.
            driver.end_handoff().await;
            driver.start(iface.up, resume).await;
            driver.run(cmd_rx, links).await;
        }
        .instrument(span),
    );
    Ok(InstanceHandle {
        config,
        status: status_rx,
        commands: cmd_tx,
        task,
    })
}

fn to_vip(v: &crate::config::VipConfig) -> Vip {
    let vip = Vip::new(v.address, v.prefix_len);
    match &v.label {
        Some(label) => vip.with_label(label.clone()),
        None => vip,
    }
}

struct Driver {
    config: InstanceConfig,
    ifindex: u32,
    mac: [u8; 6],
    primary: Ipv4Addr,
    fsm: Fsm,
    socket: VrrpSocket,
    garp: Arc<GarpSender>,
    vips: Vec<Vip>,
    shared: Shared,
    status: watch::Sender<InstanceStatus>,
    /// Counters the shell owns (discards, GARPs, late timers); the FSM owns the rest.
    counters: InstanceCounters,
    garp_task: Option<JoinHandle<()>>,
    /// Set by `Action::HandOff`: the next GARP burst waits until this resolves.
    garp_after: Option<oneshot::Receiver<()>>,
    /// The state last published as an event, so only real changes are streamed.
    last_published: Option<StateKind>,
    /// The daemon-wide id of the last event published; lbd acks it before VIPs go up.
    last_event_id: u64,
    notifier: Option<Notifier>,
    /// Our own command queue, for the drain task to report back (weak: it must not keep
    /// the instance alive).
    commands: mpsc::WeakSender<Command>,
    /// A planned switchover under way, and the operator waiting for it.
    switchover: Option<pair::PendingSwitchover>,
    /// Handed over to a new master (a switchover, or yielding to a better master) and kept
    /// the VIPs until lbd is idle: the id of the `backup` event whose ack lets them go.
    vip_release: Option<u64>,
    /// What lbd tracking currently does to this instance.
    lbd_effect: pair::LbdEffect,
    /// Signs our adverts and checks the peer's, with `auth_key_file`.
    auth: Option<crate::auth::Authenticator>,
    /// Rate limit of the discard log lines.
    discard_log: rx::DiscardLog,
    /// The hand-off window after a takeover from a live master (`[lbd] handoff_ms`).
    handoff: Option<handoff::Handoff>,
}

impl Driver {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.shared.epoch)
    }

    fn deadline(&self) -> Option<Instant> {
        self.fsm.poll_timeout().map(|t| self.shared.epoch + t)
    }

    /// A crash leaves VIPs behind; a node that isn't master must not hold them.
    async fn clear_stale_vips(&mut self) {
        for vip in &self.vips {
            match self.shared.vips.present(self.ifindex, vip).await {
                Ok(true) => {
                    info!(vip = %vip.addr, "removing a VIP left on the interface by an earlier run");
                    if let Err(e) = self.shared.vips.remove(self.ifindex, vip).await {
                        warn!(vip = %vip.addr, error = %e, "could not remove stale VIP");
                    }
                }
                Ok(false) => {}
                Err(e) => warn!(vip = %vip.addr, error = %e, "could not check for a stale VIP"),
            }
        }
    }

    async fn start(&mut self, link_up: bool, resume: bool) {
        let now = self.now();
        // Apply lbd's health before the first election, so a node whose lbd is down
        // doesn't win it only to resign a moment later.
        self.on_lbd_health().await;
        if link_up && resume {
            info!("VIPs found on the interface and served by lbd: resuming as master");
            if !self.fsm.handle_startup_resume(now) {
                // A fault keeps us from resuming: the VIPs must not stay without a master.
                self.remove_vips().await;
            }
        } else if link_up {
            self.fsm.handle_startup(now);
        } else {
            info!("interface is down at startup");
            self.fsm.handle_link_down(now);
        }
        self.apply_actions().await;
    }

    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut links: broadcast::Receiver<LinkEvent>,
    ) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        // Refresh time-in-state in the published status even when nothing happens.
        let mut status_tick = tokio::time::interval(Duration::from_secs(1));
        let mut lbd_health = self.shared.lbd.as_ref().map(|l| l.health.clone());
        // One timer for the whole loop, moved only when the deadline changes: a flood wakes
        // this loop thousands of times a second, and a fresh timer per turn costs more than
        // the packet.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        // Flood coalescing (see the module docs): while `rx_held`, the socket waits for it.
        let rx_hold = tokio::time::sleep_until(Instant::now());
        tokio::pin!(rx_hold);
        let mut rx_held = false;
        let mut last_rx_wake: Option<Instant> = None;
        loop {
            let deadline = self.deadline();
            if let Some(d) = deadline {
                if timer.deadline() != d {
                    timer.as_mut().reset(d);
                }
            }
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    None | Some(Command::Stop { .. }) => {
                        self.stop().await;
                        if let Some(Command::Stop { done }) = cmd {
                            let _ = done.send(());
                        }
                        return;
                    }
                    Some(Command::Switchover { done }) => self.begin_switchover(done).await,
                    Some(Command::Drained { event_id }) => self.resign_after_drain(event_id).await,
                    Some(Command::LbdIdle { event_id }) => self.release_vips_now(event_id).await,
                    Some(Command::Resume) => {
                        let now = self.now();
                        self.fsm.clear_switchover_hold(now);
                        self.apply_actions().await;
                    }
                },
                changed = pair::wait_changed(&mut lbd_health) => {
                    if changed {
                        self.on_lbd_health().await;
                    } else {
                        lbd_health = None;
                    }
                }
                event = links.recv() => match event {
                    Ok(ev) if ev.ifindex == self.ifindex => self.on_link(ev.up).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync_link().await,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                // The timer before the socket: under a flood the socket is always ready,
                // and polled first it would delay our own adverts indefinitely.
                _ = &mut timer, if deadline.is_some() => self.on_timer(deadline, &mut buf).await,
                // Also before the socket, or a flood would freeze the published status.
                _ = status_tick.tick() => self.publish_status(),
                _ = &mut rx_hold, if rx_held => rx_held = false,
                received = self.socket.recv(&mut buf), if !rx_held => match received {
                    Ok(r) => {
                        let woke = Instant::now();
                        self.on_datagram(&buf, r).await;
                        // A flood is read in batches (one turn of this loop per datagram
                        // costs more than the datagram), stopping when the timer is due.
                        self.drain_socket(&mut buf, RECV_BATCH - 1, true).await;
                        if last_rx_wake.is_some_and(|t| woke - t < RX_COALESCE) {
                            rx_hold.as_mut().reset(Instant::now() + RX_COALESCE);
                            rx_held = true;
                        }
                        last_rx_wake = Some(woke);
                    }
                    Err(e) => {
                        warn!(error = %e, "VRRP socket receive failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    async fn on_timer(&mut self, deadline: Option<Instant>, buf: &mut [u8]) {
        let now_instant = Instant::now();
        if let Some(deadline) = deadline {
            let late = now_instant.saturating_duration_since(deadline);
            let half_interval =
                Duration::from_millis(u64::from(self.fsm.master_adver_interval_cs()) * 5);
            if late > half_interval {
                self.counters.late_timers += 1;
                warn!(
                    late_ms = late.as_millis() as u64,
                    "timer fired late (more than half an advert interval): the daemon was starved of CPU"
                );
            }
        }
        // Adverts that arrived while we were not scheduled go first: they may cancel
        // the expiry we are about to handle.
        self.drain_socket(buf, DRAIN_BEFORE_TIMER, false).await;
        let now = self.now();
        if self.fsm.poll_timeout().is_some_and(|t| t <= now) {
            self.fsm.handle_timeout(now);
            self.apply_actions().await;
        }
    }

    /// Handle up to `max` datagrams already queued in the socket, without waiting. With
    /// `until_due`, stop as soon as the FSM's deadline has passed, so the timer goes next.
    async fn drain_socket(&mut self, buf: &mut [u8], max: usize, until_due: bool) {
        for _ in 0..max {
            if until_due && self.fsm.poll_timeout().is_some_and(|t| t <= self.now()) {
                return;
            }
            match self.socket.try_recv(buf) {
                Ok(Some(r)) => self.on_datagram(buf, r).await,
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "reading queued datagrams failed");
                    return;
                }
            }
        }
    }

    async fn on_datagram(&mut self, buf: &[u8], r: crate::net::socket::Received) {
        let Some(payload) = buf.get(r.payload_range.clone()) else {
            return;
        };
        // With `auth_key_file` the HMAC trailer is split off before RFC 5798 validation and
        // checked right after it, before the FSM: nothing unauthenticated changes state.
        let (payload, trailer) = self.split_trailer(payload);
        match self.validate(&r, payload) {
            Ok((advert, mode)) => {
                if !self.authenticate(&r, payload, trailer) {
                    return;
                }
                count(&mut self.counters.checksum_modes, mode.as_str());
                debug!(src = %advert.src, priority = advert.priority, interval_cs = advert.max_adver_int_cs, "advert received");
                let now = self.now();
                let seen = (self.fsm.master_addr(), self.fsm.master_adver_interval_cs());
                self.fsm.handle_advert(&advert, now);
                // Most adverts change nothing visible: leave their counters to the next
                // status tick rather than republish the status for every packet of a flood.
                let changed = seen != (self.fsm.master_addr(), self.fsm.master_adver_interval_cs());
                if changed || self.fsm.has_actions() {
                    self.apply_actions().await;
                }
            }
            Err(discard) => self.discard(discard, r.src),
        }
    }

    /// RFC 5798 §7.1 plus this instance's policy: allowed sources, strict interval window.
    fn validate(
        &self,
        r: &crate::net::socket::Received,
        payload: &[u8],
    ) -> Result<(crate::fsm::Advert, ChecksumMode), rx::Discard> {
        let expect = rx::Expect {
            vrid: self.config.vrid,
            primary_addr: self.primary,
        };
        let policy = rx::Policy {
            accept_from: &self.config.accept_from,
            interval_window: self
                .config
                .strict_interval
                .then_some(self.config.adopt_interval_cs),
            ..rx::Policy::default()
        };
        rx::validate_with(r.ttl, r.src, r.dst, payload, &expect, &policy)
    }

    /// Count a discard and log it, rate-limited per reason.
    fn discard(&mut self, discard: rx::Discard, src: Ipv4Addr) {
        // Other VRIDs on a shared segment are normal traffic, not errors.
        if matches!(discard, rx::Discard::OtherVrid) {
            return;
        }
        count(&mut self.counters.discards, discard.as_str());
        let now = self.now();
        if let Some(suppressed) = self.discard_log.admit(discard, now) {
            if discard.is_error() {
                warn!(reason = %discard, %src, suppressed, "advert discarded");
            } else {
                debug!(reason = %discard, %src, suppressed, "advert discarded");
            }
        }
    }

    async fn on_link(&mut self, up: bool) {
        let now = self.now();
        if up && !self.fsm.link_up() {
            info!("link up");
            // The primary address may have changed while the link was down.
            self.refresh_primary().await;
            self.fsm.handle_link_up(now);
        } else if !up && self.fsm.link_up() {
            info!("link down");
            self.fsm.handle_link_down(now);
        }
        self.apply_actions().await;
    }

    /// After missing link events, ask the kernel directly.
    async fn resync_link(&mut self) {
        match link::interface_info(&self.config.interface).await {
            Ok(info) => self.on_link(info.up).await,
            Err(e) => warn!(error = %e, "could not re-read interface state"),
        }
    }

    async fn refresh_primary(&mut self) {
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        if let Ok(info) = link::interface_info_excluding(&self.config.interface, &vips).await {
            if let Some(p) = info.primary_v4 {
                if p != self.primary {
                    info!(old = %self.primary, new = %p, "primary address changed");
                    self.primary = p;
                    self.socket.set_source(p);
                    self.fsm.set_primary_addr(p);
                }
            }
        }
    }

    async fn stop(&mut self) {
        let now = self.now();
        self.fsm.handle_shutdown(now);
        self.apply_actions().await;
        self.await_lbd_idle_before_stop().await;
        // Whatever the state, no VIP (and no hand-off table) may outlive the instance.
        self.remove_vips().await;
        self.end_handoff().await;
        self.publish_status();
        // Let the final STOP hook run, but never hold up the exit for long.
        if let Some(notifier) = &self.notifier {
            let _ = tokio::time::timeout(Duration::from_secs(2), notifier.wait_idle()).await;
        }
    }

    /// Carry out every pending FSM action, in order.
    async fn apply_actions(&mut self) {
        // Why the state last changed: `RemoveVips` follows its `Transition`.
        let mut reason = None;
        while let Some(action) = self.fsm.poll_action() {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority).await,
                Action::AddVips => {
                    // Master again before lbd went idle: the VIPs are ours to keep.
                    self.vip_release = None;
                    // Master again within a fault's hold: the VIPs serve again.
                    self.drop_resets().await;
                    // Taking over from a live master: its connections go to it, not to
                    // resets, from before the VIPs are ours (loaded while lbd acks).
                    let handoff = self.prepare_handoff();
                    self.wait_lbd_ack().await;
                    if let Some(loaded) = handoff {
                        let _ = loaded.await;
                    }
                    self.add_vips().await;
                }
                Action::RemoveVips => {
                    self.stop_garp();
                    self.release_vips(reason).await;
                }
                Action::SendGarp => self.start_garp(),
                Action::HandOff { to } => {
                    // The GARP that follows waits for the table in its own task: the loop
                    // (and our adverts) never waits for `nft`.
                    self.garp_after = self.hand_off_once(to);
                }
                Action::Transition {
                    from,
                    to,
                    reason: why,
                } => {
                    reason = Some(why);
                    if to != StateKind::Master {
                        self.stop_garp();
                    }
                    debug!(%from, %to, reason = %why, "transition applied");
                    self.publish_event(to, why.as_str(), false);
                    if let Some(notifier) = &self.notifier {
                        notifier.notify(
                            &self.config.name,
                            crate::notify::state_name(to),
                            self.fsm.priority(),
                        );
                    }
                }
            }
        }
        self.check_switchover_outcome();
        self.publish_status();
    }

    async fn send_advert(&mut self, priority: u8) {
        let repr = Repr::advertisement(
            self.config.vrid,
            priority,
            self.config.advert_interval_cs,
            self.vips.iter().map(|v| v.addr).collect(),
        );
        let mode: ChecksumMode = self.config.checksum_mode;
        // Field access, not a method: the seal borrows the key while the socket sends.
        let seal = self
            .auth
            .as_mut()
            .map(|a| a.seal_next(crate::auth::wall_clock_ns()));
        if let Err(e) = self.socket.send_advert_sealed(&repr, mode, seal).await {
            self.counters.send_errors += 1;
            warn!(error = %e, priority, "sending advert failed");
        } else {
            debug!(priority, "advert sent");
        }
    }

    async fn add_vips(&mut self) {
        for vip in &self.vips {
            if let Err(e) = self.shared.vips.add(self.ifindex, vip).await {
                warn!(vip = %vip.addr, error = %e, "could not add VIP");
            }
        }
        info!(vips = ?self.vips.iter().map(|v| v.addr).collect::<Vec<_>>(), "VIPs added");
    }

    pub(super) async fn remove_vips(&mut self) {
        for vip in &self.vips {
            if let Err(e) = self.shared.vips.remove(self.ifindex, vip).await {
                warn!(vip = %vip.addr, error = %e, "could not remove VIP");
            }
        }
    }
}

/// Count one `key` in a counter map, allocating the key only the first time.
fn count(map: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}
