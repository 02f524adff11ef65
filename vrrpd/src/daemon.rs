//! The daemon: starts every configured instance, serves the control socket, and handles
//! signals.
//!
//! - SIGTERM and SIGINT both stop every instance the same way: a master resigns with
//!   priority 0 (so its backup takes over after Skew_Time) and removes its VIPs. SIGINT only
//!   shortens how long we wait for that. Exit code 0.
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
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{InstanceConfig, VrrpConfig};
use crate::control;
use crate::instance::{self, InstanceHandle, Shared};
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
    shared::telemetry::init(config.global.log_format, &config.global.log_level);
    match Daemon::start(config_path, config).await {
        Ok(daemon) => daemon.serve().await,
        Err(e) => {
            error!(error = %e, "vrrpd could not start");
            ExitCode::FAILURE
        }
    }
}

struct Daemon {
    config_path: PathBuf,
    config: VrrpConfig,
    shared: Shared,
    instances: BTreeMap<String, InstanceHandle>,
    status: watch::Sender<DaemonStatus>,
    shutdown: Shutdown,
    signals: Signals,
}

impl Daemon {
    async fn start(config_path: PathBuf, config: VrrpConfig) -> anyhow::Result<Daemon> {
        let signals = Signals::install()?;
        if config.global.realtime {
            let outcome = crate::net::realtime::enable_realtime(config.global.realtime_priority);
            if outcome.is_complete() {
                info!(priority = config.global.realtime_priority, "running with SCHED_FIFO and locked memory");
            } else {
                warn!(?outcome, "could not fully enable realtime scheduling");
            }
        }
        let (events, _) = broadcast::channel::<StateEvent>(1024);
        let (links, _) = broadcast::channel::<LinkEvent>(256);
        let shared = Shared {
            epoch: Instant::now(),
            vips: Arc::new(VipManager::new()?),
            events,
            links: links.clone(),
        };
        let mut watcher = LinkWatcher::new().await?;
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

        let mut instances = BTreeMap::new();
        for ic in &config.instances {
            let handle = instance::spawn(ic.clone(), shared.clone()).await?;
            instances.insert(ic.name.clone(), handle);
        }
        let (status, _) = watch::channel(empty_status(&config_path));
        let shutdown = Shutdown::new();
        let daemon = Daemon {
            config_path,
            config,
            shared,
            instances,
            status,
            shutdown,
            signals,
        };
        daemon.refresh_status();
        daemon.serve_control()?;
        info!(instances = daemon.instances.len(), "vrrpd started");
        Ok(daemon)
    }

    fn serve_control(&self) -> anyhow::Result<()> {
        let path = self.config.global.control_socket.clone();
        let handle = control::ControlHandle {
            status: self.status.subscribe(),
            events: self.shared.events.clone(),
        };
        let listener = control::bind(&path)?;
        tokio::spawn(control::serve(listener, handle, self.shutdown.clone()));
        Ok(())
    }

    async fn serve(mut self) -> ExitCode {
        let mut refresh = tokio::time::interval(STATUS_REFRESH);
        loop {
            tokio::select! {
                signal = self.signals.recv() => match signal {
                    Signal::Reload => self.reload().await,
                    Signal::Terminate => return self.stop(ShutdownMode::Graceful).await,
                    Signal::Interrupt => return self.stop(ShutdownMode::Fast).await,
                },
                _ = refresh.tick() => self.refresh_status(),
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

    async fn stop(mut self, mode: ShutdownMode) -> ExitCode {
        info!(?mode, "stopping: masters resign with priority 0 and remove their VIPs");
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

    async fn reload(&mut self) {
        let new = match VrrpConfig::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(
                    config = %self.config_path.display(),
                    "reload rejected, the running config stays in force:\n{e}"
                );
                return;
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
                Err(e) => error!(instance = %ic.name, error = %e, "could not start instance after reload"),
            }
        }
        self.config.instances = new.instances;
        self.refresh_status();
        info!("reload done");
    }
}

fn empty_status(config_path: &Path) -> DaemonStatus {
    DaemonStatus {
        pid: std::process::id(),
        uptime_ms: 0,
        config_path: config_path.display().to_string(),
        instances: Vec::new(),
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
