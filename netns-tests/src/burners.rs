//! CPU load from inside a test: busy threads pinned to every core at a chosen niceness,
//! and a way for the test's own thread to keep running above them.
//!
//! The burners are threads rather than processes so that they die with the test process
//! whatever ends it, `kill -9` included, and each also stops on its own after `max`. A test
//! thread that must keep sampling while they run enters SCHED_FIFO ([`FifoThread`]) only
//! *after* starting them: threads inherit their creator's scheduler, and SCHED_FIFO
//! burners would starve the whole machine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Busy threads pinned to every CPU; stopped and joined on drop.
pub struct Burners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Burners {
    /// `per_cpu` busy threads on every CPU, each SCHED_OTHER at niceness `nice`, each
    /// stopping on its own after `max` at the latest.
    pub fn start(per_cpu: usize, nice: i32, max: Duration) -> Result<Burners> {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let mut burners = Burners {
            stop: stop.clone(),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for cpu in 0..cpus {
            for _ in 0..per_cpu {
                let stop = stop.clone();
                let ready = ready_tx.clone();
                // Pushed as spawned, so an early return still stops and joins them.
                burners.threads.push(thread::spawn(move || {
                    let mut set = CpuSet::new();
                    let pinned = set
                        .set(cpu)
                        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
                    let tid = nix::unistd::gettid();
                    let _ = ready.send(pinned.map(|()| tid).map_err(|e| format!("cpu {cpu}: {e}")));
                    let end = Instant::now() + max;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                        std::hint::spin_loop();
                    }
                }));
            }
        }
        drop(ready_tx);
        for _ in 0..cpus * per_cpu {
            match ready_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(tid)) => {
                    let tid = tid.to_string();
                    // SCHED_OTHER whatever the creating thread runs under, then niced.
                    crate::cmd::run("chrt", ["-o", "-p", "0", &tid])?;
                    crate::cmd::run("renice", ["-n", &nice.to_string(), "-p", &tid])?;
                }
                Ok(Err(e)) => bail!("pinning a burner: {e}"),
                Err(e) => bail!("a burner never started: {e}"),
            }
        }
        Ok(burners)
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The calling thread under SCHED_FIFO until dropped (set and reset with `chrt`, which
/// nix doesn't wrap).
pub struct FifoThread {
    tid: String,
}

impl FifoThread {
    pub fn enter(priority: u8) -> Result<FifoThread> {
        let tid = nix::unistd::gettid().to_string();
        crate::cmd::run("chrt", ["-f", "-p", &priority.to_string(), &tid])?;
        Ok(FifoThread { tid })
    }
}

impl Drop for FifoThread {
    fn drop(&mut self) {
        if let Err(e) = crate::cmd::run("chrt", ["-o", "-p", "0", &self.tid]) {
            eprintln!("cannot reset the test thread's scheduler: {e:#}");
        }
    }
}

/// The calling thread at niceness `nice` until dropped (set and reset with `renice`). For a
/// watcher that must keep sampling among nice-0 burners without being a real-time task: the
/// commands it runs inherit it, and real-time ones would spend the kernel's real-time budget
/// (`sched_rt_runtime_us`), whose throttling stalls every real-time task on the CPU, the
/// daemons under test included.
pub struct NicedThread {
    tid: String,
}

impl NicedThread {
    pub fn enter(nice: i32) -> Result<NicedThread> {
        let tid = nix::unistd::gettid().to_string();
        crate::cmd::run("renice", ["-n", &nice.to_string(), "-p", &tid])?;
        Ok(NicedThread { tid })
    }
}

impl Drop for NicedThread {
    fn drop(&mut self) {
        if let Err(e) = crate::cmd::run("renice", ["-n", "0", "-p", &self.tid]) {
            eprintln!("cannot reset the test thread's niceness: {e:#}");
        }
    }
}
