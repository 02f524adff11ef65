//! The async shell around one VRRP instance's pure state machine.
//!
//! One tokio task per instance owns its [`Fsm`], its raw socket and its GARP burst. It
//! turns the world into FSM inputs (received adverts, timer expiries, link events, commands)
//! and FSM actions into effects (adverts sent, VIPs added or removed over netlink, GARPs).
//! After each step it publishes a status snapshot and, on transitions, a state event for
//! the control socket's subscribers.
//!
//! Starvation: when a timer fires, the adverts already queued in the socket are handled
//! *before* the timer, so a backup that was not scheduled for a while sees the master's
//! adverts that arrived meanwhile instead of declaring it dead. A timer that fires more
//! than half an advert interval late is counted and logged.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{InstanceCounters, InstanceStatus, StateEvent};
use shared::wire::vrrp::{ChecksumMode, Repr};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::InstanceConfig;
use crate::fsm::{Action, Fsm, FsmConfig, StateKind};
use crate::net::garp::GarpSender;
use crate::net::link::{self, LinkEvent};
use crate::net::socket::{VrrpSocket, MAX_DATAGRAM};
use crate::net::vip::{Vip, VipManager};
use crate::rx;

/// What the daemon can ask of a running instance.
#[derive(Debug)]
pub enum Command {
    /// Stop: a master resigns with priority 0 and removes its VIPs. The reply is sent
    /// once the VIPs are gone.
    Stop { done: oneshot::Sender<()> },
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
        if tokio::time::timeout(Duration::from_millis(500), &mut { self.task })
            .await
            .is_err()
        {
            warn!(instance = %self.config.name, "instance task did not end; aborting it");
        }
    }
}

/// What every instance shares with the daemon.
#[derive(Clone)]
pub struct Shared {
    /// The daemon's time origin: FSM time is `Instant::now() - epoch`.
    pub epoch: Instant,
    pub vips: Arc<VipManager>,
    pub events: broadcast::Sender<StateEvent>,
    pub links: broadcast::Sender<LinkEvent>,
}

/// Start an instance: open its socket, clear VIPs left by a crash, enter Backup (or Fault
/// if the link is down), and run until stopped.
pub async fn spawn(config: InstanceConfig, shared: Shared) -> anyhow::Result<InstanceHandle> {
    let vip_addrs: Vec<Ipv4Addr> = config.vips.iter().map(|v| v.address).collect();
    let iface = link::interface_info_excluding(&config.interface, &vip_addrs).await.map_err(|e| {
        anyhow::anyhow!("instance {}: interface {}: {e}", config.name, config.interface)
    })?;
    let primary = iface.primary_v4.ok_or_else(|| {
        anyhow::anyhow!(
            "instance {}: interface {} has no IPv4 address to send adverts from",
            config.name,
            config.interface
        )
    })?;
    let socket = VrrpSocket::open(&config.interface, primary, &config.unicast_peers)
        .map_err(|e| anyhow::anyhow!("instance {}: VRRP socket: {e}", config.name))?;
    let garp = GarpSender::open()
        .map_err(|e| anyhow::anyhow!("instance {}: ARP socket: {e}", config.name))?;

    let fsm = Fsm::new(FsmConfig {
        vrid: config.vrid,
        priority: config.priority,
        advert_interval_cs: config.advert_interval_cs,
        preempt: config.preempt,
        preempt_delay: config.preempt_delay,
        primary_addr: primary,
        vips: vip_addrs.clone(),
        fast_takeover_on_zero: false,
    });
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
    });
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let links = shared.links.subscribe();
    let span = info_span!("vrrp", instance = %config.name, vrid = config.vrid, iface = %config.interface);
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
        last_published: None,
    };
    let task = tokio::spawn(
        async move {
            driver.clear_stale_vips().await;
            driver.start(iface.up).await;
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
    /// The state last published as an event, so only real changes are streamed.
    last_published: Option<StateKind>,
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

    async fn start(&mut self, link_up: bool) {
        let now = self.now();
        if link_up {
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
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                cmd = commands.recv() => {
                    let done = cmd.map(|Command::Stop { done }| done);
                    self.stop().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
                event = links.recv() => match event {
                    Ok(ev) if ev.ifindex == self.ifindex => self.on_link(ev.up).await,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync_link().await,
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                received = self.socket.recv(&mut buf) => match received {
                    Ok(r) => self.on_datagram(&buf, r).await,
                    Err(e) => {
                        warn!(error = %e, "VRRP socket receive failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = sleep_until_opt(deadline) => self.on_timer(deadline).await,
                _ = status_tick.tick() => self.publish_status(),
            }
        }
    }

    async fn on_timer(&mut self, deadline: Option<Instant>) {
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
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for _ in 0..64 {
            match self.socket.try_recv(&mut buf) {
                Ok(Some(r)) => self.on_datagram(&buf, r).await,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "draining the socket before a timer failed");
                    break;
                }
            }
        }
        let now = self.now();
        if self.fsm.poll_timeout().is_some_and(|t| t <= now) {
            self.fsm.handle_timeout(now);
            self.apply_actions().await;
        }
    }

    async fn on_datagram(&mut self, buf: &[u8], r: crate::net::socket::Received) {
        let Some(payload) = buf.get(r.payload_range.clone()) else {
            return;
        };
        let expect = rx::Expect {
            vrid: self.config.vrid,
            primary_addr: self.primary,
        };
        match rx::validate(r.ttl, r.src, r.dst, payload, &expect) {
            Ok((advert, mode)) => {
                *self
                    .counters
                    .checksum_modes
                    .entry(mode.as_str().to_string())
                    .or_default() += 1;
                debug!(src = %advert.src, priority = advert.priority, interval_cs = advert.max_adver_int_cs, "advert received");
                let now = self.now();
                self.fsm.handle_advert(&advert, now);
                self.apply_actions().await;
            }
            Err(discard) => {
                // Other VRIDs on a shared segment are normal traffic, not errors.
                if !matches!(discard, rx::Discard::OtherVrid) {
                    *self
                        .counters
                        .discards
                        .entry(discard.as_str().to_string())
                        .or_default() += 1;
                    rate_limited_debug(&mut self.counters, discard.as_str(), r.src);
                }
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
                }
            }
        }
    }

    async fn stop(&mut self) {
        let now = self.now();
        self.fsm.handle_shutdown(now);
        self.apply_actions().await;
        // Whatever the state, no VIP may outlive the instance.
        self.remove_vips().await;
        self.publish_status();
    }

    /// Carry out every pending FSM action, in order.
    async fn apply_actions(&mut self) {
        while let Some(action) = self.fsm.poll_action() {
            match action {
                Action::SendAdvert { priority } => self.send_advert(priority).await,
                Action::AddVips => self.add_vips().await,
                Action::RemoveVips => {
                    self.stop_garp();
                    self.remove_vips().await;
                }
                Action::SendGarp => self.start_garp(),
                Action::Transition { from, to, reason } => {
                    if to != StateKind::Master {
                        self.stop_garp();
                    }
                    debug!(%from, %to, %reason, "transition applied");
                    self.publish_event(to, reason.as_str());
                }
            }
        }
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
        if let Err(e) = self.socket.send_advert(&repr, mode).await {
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

    async fn remove_vips(&mut self) {
        for vip in &self.vips {
            if let Err(e) = self.shared.vips.remove(self.ifindex, vip).await {
                warn!(vip = %vip.addr, error = %e, "could not remove VIP");
            }
        }
    }

    /// Send the GARP burst (and the optional periodic refresh) in a task of its own, so the
    /// spacing between GARPs never delays an advert.
    fn start_garp(&mut self) {
        self.stop_garp();
        let count = self.config.garp_count;
        let interval = self.config.garp_interval;
        let refresh = self.config.garp_refresh;
        let garp = Arc::clone(&self.garp);
        let (ifindex, mac) = (self.ifindex, self.mac);
        let vips: Vec<Ipv4Addr> = self.vips.iter().map(|v| v.addr).collect();
        self.counters.garps_sent += u64::from(count) * vips.len() as u64;
        self.garp_task = Some(tokio::spawn(
            async move {
                let send_all = |garp: &GarpSender| {
                    for vip in &vips {
                        if let Err(e) = garp.send(ifindex, mac, *vip) {
                            warn!(vip = %vip, error = %e, "gratuitous ARP failed");
                        }
                    }
                };
                for i in 0..count {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    send_all(&garp);
                }
                if let Some(every) = refresh {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        send_all(&garp);
                    }
                }
            }
            .in_current_span(),
        ));
    }

    fn stop_garp(&mut self) {
        if let Some(task) = self.garp_task.take() {
            task.abort();
        }
    }

    fn publish_event(&mut self, state: StateKind, reason: &str) {
        if self.last_published == Some(state) {
            return;
        }
        self.last_published = Some(state);
        // No subscriber is fine: the control server snapshots state for late joiners.
        let _ = self.shared.events.send(StateEvent {
            seq: 0,
            instance: self.config.name.clone(),
            vrid: self.config.vrid,
            interface: self.config.interface.clone(),
            state: state.as_str().to_string(),
            priority: self.fsm.priority(),
            vips: self.config.vips.iter().map(|v| v.to_string()).collect(),
            reason: reason.to_string(),
        });
    }

    fn publish_status(&self) {
        let now = self.now();
        let fc = self.fsm.counters();
        let mut counters = self.counters.clone();
        counters.adverts_sent = fc.adverts_sent;
        counters.adverts_received = fc.adverts_received;
        counters.transitions = fc.transitions;
        counters.became_master = fc.became_master;
        self.status.send_modify(|s| {
            s.state = self.fsm.state().as_str().to_string();
            s.priority = self.fsm.priority();
            s.master_addr = self.fsm.master_addr();
            s.advert_interval_cs = self.fsm.master_adver_interval_cs();
            s.time_in_state_ms = now.saturating_sub(self.fsm.state_since()).as_millis() as u64;
            s.counters = counters;
        });
    }
}

/// Debug-log a discard: the first few of each reason, then every 100th, so a flood of bad
/// packets can't flood the log. Counting-based, so it needs no clock and no extra state.
fn rate_limited_debug(counters: &mut InstanceCounters, reason: &str, src: Ipv4Addr) {
    let seen = counters.discards.get(reason).copied().unwrap_or(0);
    if seen <= 3 || seen % 100 == 0 {
        debug!(reason, %src, total = seen, "advert discarded");
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
