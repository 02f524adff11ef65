//! Real-time scheduling and locked memory for the daemon.
//!
//! With a 10 ms advert interval, a backup declares the master dead after about 3.1
//! intervals; a page fault on swapped-out memory or a few hundred milliseconds in the run
//! queue behind a busy proxy is enough to cause a needless failover. keepalived does the
//! same two things (`vrrp_rt_priority`, `mlockall`).
//!
//! Both are best effort: a container without CAP_SYS_NICE or with a small memlock limit must
//! still run the daemon, so failures are reported to the caller (and logged) and never fatal.

use std::io;

use nix::sys::mman::{mlockall, MlockAllFlags};

use super::sys;

/// Highest SCHED_FIFO priority on Linux.
pub const MAX_FIFO_PRIORITY: u8 = 99;

/// What [`enable_realtime`] managed to do; each step is attempted even if the other failed.
#[derive(Debug)]
pub struct RealtimeOutcome {
    /// Result of switching the calling thread to SCHED_FIFO, with the priority used.
    pub scheduler: io::Result<u8>,
    /// Result of `mlockall(MCL_CURRENT | MCL_FUTURE)`.
    pub memory_lock: io::Result<()>,
}

impl RealtimeOutcome {
    /// True when both steps succeeded.
    pub fn is_complete(&self) -> bool {
        self.scheduler.is_ok() && self.memory_lock.is_ok()
    }
}

/// Switch the calling thread to SCHED_FIFO at `priority` (clamped to 1..=99) and lock all
/// current and future memory.
///
/// Only the calling thread changes scheduler; threads it creates afterwards inherit it. So
/// call this on the main thread before building the tokio runtime.
pub fn enable_realtime(priority: u8) -> RealtimeOutcome {
    let priority = priority.clamp(1, MAX_FIFO_PRIORITY);
    let scheduler = sys::set_sched_fifo(i32::from(priority)).map(|()| priority);
    match &scheduler {
        Ok(p) => tracing::info!(priority = p, "running under SCHED_FIFO"),
        Err(e) => tracing::warn!(error = %e, priority, "could not switch to SCHED_FIFO"),
    }
    let memory_lock =
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(io::Error::from);
    match &memory_lock {
        Ok(()) => tracing::info!("memory locked (mlockall)"),
        Err(e) => tracing::warn!(error = %e, "could not lock memory (mlockall)"),
    }
    RealtimeOutcome {
        scheduler,
        memory_lock,
    }
}
