//! The daemon: starts every configured instance, serves the control socket, and handles
//! signals.
//!
//! - SIGTERM is a planned handover: each master first drains lbd and resigns
//!   make-before-break (like `vrrpd switchover`), bounded by Master_Down_Interval; then every
//!   instance stops, a master sending priority 0 and removing its VIPs. Exit code 0.
//! - SIGINT skips the handover: priority 0 and VIP removal at once.
//! - `vrrpd switchover` / `vrrpd resume` arrive from the control socket as admin commands.
//! - SIGHUP reloads: the new file is validated first and a bad one is rejected with the old
//!   config still running. Instances whose config is unchanged keep running untouched (no
//!   re-election, no VIP flap); changed ones are stopped and started again; removed ones
//!   are stopped; new ones are started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{DaemonStatus, StateEvent};
use shared::shutdown::{Shutdown, ShutdownMode, Signal, Signals};
use shared::systemd;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{InstanceConfig, VrrpConfig};
use crate::control::{self, AdminCommand, AdminError, AdminRequest};
use crate::instance::{self, InstanceHandle, LbdShared, Shared};
use crate::lbd_link::LbdMonitor;
use crate::net::link::{LinkEvent, LinkWatcher};
use crate::net::vip::VipManager;

/// How long a stopping instance may take to resign and remove its VIPs.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// A fast stop (SIGINT) still removes VIPs, but waits less for netlink.
const FAST_STOP_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the status snapshot served on the control socket is refreshed.
const STATUS_REFRESH: Duration = Duration::from_millis(100);

/// Run the daemon until a signal stops it. Returns the process exit code.
pub async fn run(config_path: PathBuf) -> ExitCode {
    let config = match VrrpConfig::load(&config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let _log = shared::telemetry::init(config.global.log_format, &config.global.log_level);
    match Daemon::start(config_path, config).await {
        Ok(daemon) => daemon.serve().await,
        Err(e) => {
            error!(error = %e, "vrrpd could not start");
            ExitCode::FAILURE
        }
    }
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonStartError {
    #[error("signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("control socket access: {0}")]
    Access(#[from] control::AccessError),
    #[error("control socket {path}: {source}")]
    ControlSocket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("VIP manager: {0}")]
    Vips(#[from] crate::net::vip::VipError),
    #[error("link watcher: {0}")]
    LinkWatcher(#[source] std::io::Error),
    #[error(transparent)]
    Instance(#[from] instance::StartError),
}

struct Daemon {
    config_path: PathBuf,
    config: VrrpConfig,
    shared: Shared,
    instances: BTreeMap<String, InstanceHandle>,
    status: watch::Sender<DaemonStatus>,
    shutdown: Shutdown,
    signals: Signals,
    admin: mpsc::Receiver<AdminRequest>,
}

impl Daemon {
    async fn start(config_path: PathBuf, config: VrrpConfig) -> Result<Daemon, DaemonStartError> {
        let signals = Signals::install().map_err(DaemonStartError::Signals)?;
        if config.global.realtime {
            let outcome = crate::net::realtime::enable_realtime(config.global.realtime_priority);
            if outcome.is_complete() {
                info!(
                    priority = config.global.realtime_priority,
                    "running with SCHED_FIFO and locked memory"
                );
            } else {
                warn!(?outcome, "could not fully enable realtime scheduling");
            }
        }
        let (events, _) = broadcast::channel::<StateEvent>(1024);
        let (links, _) = broadcast::channel::<LinkEvent>(256);
        let (status, status_rx) = watch::channel(empty_status(&config_path));
        let shutdown = Shutdown::new();
        let (admin_tx, admin) = mpsc::channel(8);

        // The control socket comes first: lbd may reconnect the moment it exists, and a
        // restarted vrrpd needs lbd's report before it decides to resume as master.
        let policy = control::AccessPolicy::resolve(&config.control)?;
        info!(
            lbd_uid = ?policy.lbd_uid,
            admin_gid = ?policy.admin_gid,
            "control socket access: lbd role for root and lbd_uid, commands for root and admin_gid"
        );
        let listener = control::bind(&config.global.control_socket)
            .map_err(|source| DaemonStartError::ControlSocket {
                path: config.global.control_socket.clone(),
                source,
            })?
            .with_access(policy);
        let subscribers = listener.subscribers();
        tokio::spawn(control::serve(
            listener,
            control::ControlHandle {
                status: status_rx,
                events: events.clone(),
                admin: Some(admin_tx),
            },
            shutdown.clone(),
        ));
        let lbd = config.lbd.clone().map(|lbd_config| {
            let (monitor, health) = LbdMonitor::new(lbd_config.clone(), subscribers.clone());
            tokio::spawn(monitor.run());
            LbdShared {
                config: lbd_config,
                health,
                subscribers,
            }
        });
        let shared = Shared {
            epoch: Instant::now(),
            vips: Arc::new(VipManager::new()?),
            events,
            links: links.clone(),
            next_event_id: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            lbd,
        };
        let mut watcher = LinkWatcher::new()
            .await
            .map_err(DaemonStartError::LinkWatcher)?;
        tokio::spawn(async move {
            loop {
                match watcher.recv().await {
                    Ok(ev) => {
                        let _ = links.send(ev);
                    }
                    Err(e) => {
                        warn!(error = %e, "link event stream failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });

        // Instances start concurrently: a restarted vrrpd's resume check waits for lbd,
        // and instances must not queue behind each other for that.
        let started = futures::future::join_all(
            config
                .instances
                .iter()
                .map(|ic| instance::spawn(ic.clone(), shared.clone())),
        )
        .await;
        let mut instances = BTreeMap::new();
        for handle in started {
            let handle = handle?;
            instances.insert(handle.config.name.clone(), handle);
        }
        let daemon = Daemon {
            config_path,
            config,
            shared,
            instances,
            status,
            shutdown,
            signals,
            admin,
        };
        daemon.refresh_status();
        info!(instances = daemon.instances.len(), "vrrpd started");
        Ok(daemon)
    }

    async fn serve(mut self) -> ExitCode {
        let mut refresh = tokio::time::interval(STATUS_REFRESH);
        // Pinged from this loop, the one that handles signals and commands: if it stops
        // turning, systemd stops hearing from us, kills and restarts vrrpd.
        let mut watchdog = systemd::Watchdog::ticker(systemd::Watchdog::from_env());
        systemd::ready(&format!("{} instance(s) running", self.instances.len()));
        loop {
            tokio::select! {
                _ = watchdog.tick() => systemd::watchdog_ping(),
                signal = self.signals.recv() => match signal {
                    Signal::Reload => self.reload().await,
                    Signal::Terminate => return self.stop(ShutdownMode::Graceful).await,
                    Signal::Interrupt => return self.stop(ShutdownMode::Fast).await,
                },
                _ = refresh.tick() => self.refresh_status(),
                Some(req) = self.admin.recv() => self.admin(req),
            }
        }
    }

    fn refresh_status(&self) {
        let mut status = empty_status(&self.config_path);
        status.uptime_ms = self.shared.epoch.elapsed().as_millis() as u64;
        status.instances = self
            .instances
            .values()
            .map(|h| h.status.borrow().clone())
            .collect();
        self.status.send_replace(status);
    }

    /// Carry out an operator command without blocking the signal loop: a switchover takes
    /// as long as lbd's drain plus the peer's Skew_Time.
    fn admin(&self, req: AdminRequest) {
        let (targets, unknown) = match &req.command {
            AdminCommand::Switchover { instance } | AdminCommand::Resume { instance } => {
                self.targets(instance.as_deref())
            }
        };
        if let Some(name) = unknown {
            let _ = req.reply.send(Err(AdminError::UnknownInstance(name)));
            return;
        }
        match req.command {
            AdminCommand::Resume { .. } => {
                let handles: Vec<_> = targets.iter().map(|h| h.commands()).collect();
                tokio::spawn(async move {
                    for tx in &handles {
                        let _ = tx.send(instance::Command::Resume).await;
                    }
                    let _ = req
                        .reply
                        .send(Ok(format!("resumed {} instance(s)", handles.len())));
                });
            }
            AdminCommand::Switchover { instance } => {
                // Without a name, every instance that is master here hands over.
                let masters: Vec<_> = targets
                    .into_iter()
                    .filter(|h| instance.is_some() || h.state() == "master")
                    .map(|h| h.commands())
                    .collect();
                if masters.is_empty() {
                    let _ = req.reply.send(Err(AdminError::NoMaster));
                    return;
                }
                tokio::spawn(async move {
                    let results =
                        futures::future::join_all(masters.iter().map(instance::switchover_via))
                            .await;
                    let failed: Vec<String> = results
                        .iter()
                        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
                        .collect();
                    let done: Vec<String> = results.into_iter().filter_map(Result::ok).collect();
                    let _ = req.reply.send(if failed.is_empty() {
                        Ok(done.join("; "))
                    } else {
                        Err(AdminError::Switchover(failed))
                    });
                });
            }
        }
    }

    /// The instances a command names (all of them for `None`), or the unknown name.
    fn targets(&self, name: Option<&str>) -> (Vec<&InstanceHandle>, Option<String>) {
        match name {
            None => (self.instances.values().collect(), None),
            Some(n) => match self.instances.get(n) {
                Some(h) => (vec![h], None),
                None => (Vec::new(), Some(n.to_string())),
            },
        }
    }

    async fn stop(mut self, mode: ShutdownMode) -> ExitCode {
        systemd::stopping("masters hand over and resign");
        if mode == ShutdownMode::Graceful {
            self.hand_over_before_stop().await;
        }
        info!(
            ?mode,
            "stopping: masters resign with priority 0 and remove their VIPs"
        );
        self.shutdown.trigger(mode);
        let timeout = match mode {
            ShutdownMode::Graceful => STOP_TIMEOUT,
            ShutdownMode::Fast => FAST_STOP_TIMEOUT,
        };
        let instances = std::mem::take(&mut self.instances);
        futures::future::join_all(instances.into_values().map(|h| h.stop(timeout))).await;
        let _ = std::fs::remove_file(&self.config.global.control_socket);
        info!("vrrpd stopped");
        ExitCode::SUCCESS
    }

    /// SIGTERM on a master: drain lbd and hand over make-before-break, bounded by the
    /// time a peer needs to notice (a lone node gives up and stops anyway).
    async fn hand_over_before_stop(&mut self) {
        let masters: Vec<_> = self
            .instances
            .values()
            .filter(|h| h.state() == "master")
            .map(|h| {
                let patience =
                    instance::handover_patience(h.config.priority, h.config.advert_interval_cs)
                        + self
                            .config
                            .lbd
                            .as_ref()
                            .map_or(Duration::ZERO, |l| l.drain_timeout + l.ack_timeout);
                (h.config.name.clone(), h.commands(), patience)
            })
            .collect();
        if masters.is_empty() {
            return;
        }
        info!(
            instances = masters.len(),
            "SIGTERM on a master: handing over before stopping"
        );
        let outcomes =
            futures::future::join_all(masters.iter().map(|(name, tx, patience)| async move {
                match tokio::time::timeout(*patience, instance::switchover_via(tx)).await {
                    Ok(Ok(msg)) => info!(instance = %name, "{msg}"),
                    Ok(Err(msg)) => warn!(instance = %name, "handover before stop failed: {msg}"),
                    Err(_) => warn!(instance = %name, "handover before stop timed out"),
                }
            }));
        outcomes.await;
    }

    /// Reload, telling systemd while it runs (`systemctl reload` waits for READY=1).
    async fn reload(&mut self) {
        systemd::reloading();
        let outcome = self.apply_new_config().await;
        systemd::ready(outcome);
    }

    async fn apply_new_config(&mut self) -> &'static str {
        let new = match VrrpConfig::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    config = %self.config_path.display(),
                    "reload rejected, the running config stays in force:\n{e}"
                );
                return "last reload rejected; the previous config is running";
            }
        };
        if new.global != self.config.global {
            warn!("[global] changes take effect only after a restart; instance changes are applied now");
        }
        let plan = ReloadPlan::new(&self.config.instances, &new.instances);
        info!(
            unchanged = plan.unchanged.len(),
            restart = plan.restart.len(),
            stop = plan.stop.len(),
            start = plan.start.len(),
            "reloading"
        );
        for name in plan.stop.iter().chain(plan.restart.iter().map(|c| &c.name)) {
            if let Some(handle) = self.instances.remove(name) {
                handle.stop(STOP_TIMEOUT).await;
            }
        }
        for ic in plan.restart.iter().chain(plan.start.iter()) {
            match instance::spawn(ic.clone(), self.shared.clone()).await {
                Ok(handle) => {
                    self.instances.insert(ic.name.clone(), handle);
                }
                Err(e) => {
                    error!(instance = %ic.name, error = %e, "could not start instance after reload")
                }
            }
        }
        self.config.instances = new.instances;
        self.refresh_status();
        info!("reload done");
        "reloaded"
    }
}

/// Remove every configured VIP from its interface: the systemd failure handler's job when
/// vrrpd is dead for good. Missing interfaces and absent VIPs are not errors.
pub async fn release_vips(config: &VrrpConfig) -> ExitCode {
    let vips = match VipManager::new() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("vrrpd release-vips: netlink: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for ic in &config.instances {
        let Ok(ifindex) = nix::net::if_::if_nametoindex(ic.interface.as_str()) else {
            continue;
        };
        for v in &ic.vips {
            let vip = crate::net::vip::Vip::new(v.address, v.prefix_len);
            match vips.remove(ifindex, &vip).await {
                Ok(()) => println!("{}: released {}", ic.interface, v),
                Err(e) => {
                    eprintln!("{}: could not release {v}: {e}", ic.interface);
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn empty_status(config_path: &Path) -> DaemonStatus {
    DaemonStatus {
        pid: std::process::id(),
        uptime_ms: 0,
        config_path: config_path.display().to_string(),
        control: Default::default(),
        instances: Vec::new(),
        log_lines_dropped: shared::telemetry::dropped_lines(),
    }
}

/// What a reload does to each instance, decided by comparing configs by name.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    pub unchanged: Vec<String>,
    pub restart: Vec<InstanceConfig>,
    pub stop: Vec<String>,
    pub start: Vec<InstanceConfig>,
}

impl ReloadPlan {
    pub fn new(old: &[InstanceConfig], new: &[InstanceConfig]) -> ReloadPlan {
        let mut plan = ReloadPlan::default();
        for o in old {
            match new.iter().find(|n| n.name == o.name) {
                Some(n) if n == o => plan.unchanged.push(o.name.clone()),
                Some(n) => plan.restart.push(n.clone()),
                None => plan.stop.push(o.name.clone()),
            }
        }
        for n in new {
            if !old.iter().any(|o| o.name == n.name) {
                plan.start.push(n.clone());
            }
        }
        plan
    }
}
