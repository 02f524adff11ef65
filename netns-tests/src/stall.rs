//! A witness for machine-wide stalls during a soak: was a flap the product's fault, or was
//! the whole node held up?
//!
//! Two measures, sampled in windows of [`WINDOW`]:
//! - **oversleep**: a thread at niceness -20 asks to sleep 1 ms, again and again, and records
//!   how much longer it slept. Among nice-0 burners the fair scheduler wakes it within a few
//!   milliseconds, so a long oversleep means the CPU it ran on was not running this kernel's
//!   tasks at all (or interrupts held it);
//! - **steal**: the `steal` column of `/proc/stat`, the time the hypervisor ran something else
//!   while this VM's vCPUs wanted to run (USER_HZ ticks, 10 ms each), in all and per CPU;
//! - **memory pressure**: the `full` line of `/proc/pressure/memory` (where the kernel has
//!   PSI), the time every runnable task waited on reclaim or compaction at once: builds that
//!   fill the page cache make allocations, page faults included, wait like that.
//!
//! A VRRP timer fired 90 ms late by a SCHED_FIFO vrrpd, in a window where this thread also
//! overslept by about as much, or where steal rose, is a stall of the node, not a scheduling
//! choice of the product. In a window where neither did, it is the product's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};

use crate::burners::NicedThread;

/// One sample window.
pub const WINDOW: Duration = Duration::from_millis(100);
/// Niceness of the sleeping thread: above any nice-0 burner, not real-time (see
/// [`NicedThread`] for why a real-time witness would make the stalls it looks for).
const NICE: i32 = -20;
/// A window counts as stalled from this oversleep, or this much steal.
const STALLED_OVERSLEEP: Duration = Duration::from_millis(20);
const STALLED_STEAL: Duration = Duration::from_millis(20);
const STALLED_MEMORY: Duration = Duration::from_millis(20);
/// Kernel ticks per second for `/proc/stat` (USER_HZ, 100 on every Linux architecture lbpair
/// runs on).
const USER_HZ: u64 = 100;

/// What one window saw.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// When the window ended (wall clock, to match the daemons' log lines).
    pub end: SystemTime,
    /// The longest 1 ms sleep's excess in the window.
    pub oversleep: Duration,
    /// Steal time in the window, summed over all CPUs.
    pub steal: Duration,
    /// The most any one CPU lost to steal in the window: near the window's length, a vCPU
    /// stopped outright, with whatever ran on it.
    pub worst_cpu_steal: Duration,
    /// Time all non-idle tasks were stalled on memory at once (PSI `full`); zero without PSI.
    pub memory_full: Duration,
}

impl Window {
    pub fn stalled(&self) -> bool {
        self.oversleep >= STALLED_OVERSLEEP
            || self.steal >= STALLED_STEAL
            || self.memory_full >= STALLED_MEMORY
    }
}

/// The running witness; [`StallMeter::finish`] stops it and returns its windows.
pub struct StallMeter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<Window>>>>,
}

impl StallMeter {
    /// Starts the sampling thread, for at most `max` (a bound on the loop, whatever happens
    /// to the caller).
    pub fn start(max: Duration) -> Result<StallMeter> {
        steal_per_cpu().context("the stall meter reads /proc/stat")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("stall-meter".into())
            .spawn(move || sample(&flag, max))
            .context("spawn the stall meter")?;
        Ok(StallMeter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops sampling and returns every window.
    pub fn finish(mut self) -> Result<StallReport> {
        self.stop.store(true, Ordering::Release);
        let thread = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("finished twice"))?;
        let windows = thread
            .join()
            .map_err(|_| anyhow!("the stall meter panicked"))??;
        Ok(StallReport { windows })
    }
}

impl Drop for StallMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sample(stop: &AtomicBool, max: Duration) -> Result<Vec<Window>> {
    let _nice = NicedThread::enter(NICE)?;
    let started = Instant::now();
    let mut windows = Vec::with_capacity((max.as_millis() / WINDOW.as_millis()) as usize + 1);
    let mut steal_before = steal_per_cpu()?;
    let mut memory_before = memory_full_total();
    let mut window_start = Instant::now();
    let mut oversleep = Duration::ZERO;
    while !stop.load(Ordering::Acquire) && started.elapsed() < max {
        let asked = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        let excess = asked.elapsed().saturating_sub(Duration::from_millis(1));
        oversleep = oversleep.max(excess);
        if window_start.elapsed() >= WINDOW {
            let steal_now = steal_per_cpu()?;
            let memory_now = memory_full_total();
            let lost: Vec<u64> = steal_now
                .iter()
                .zip(&steal_before)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect();
            windows.push(Window {
                end: SystemTime::now(),
                oversleep,
                steal: ticks(lost.iter().sum()),
                worst_cpu_steal: ticks(lost.iter().copied().max().unwrap_or(0)),
                memory_full: memory_now.saturating_sub(memory_before),
            });
            steal_before = steal_now;
            memory_before = memory_now;
            window_start = Instant::now();
            oversleep = Duration::ZERO;
        }
    }
    Ok(windows)
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 1000 / USER_HZ)
}

/// The `steal` column of each `cpuN` line of `/proc/stat`, in ticks.
fn steal_per_cpu() -> Result<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let steal = parse_steal_per_cpu(&stat);
    if steal.is_empty() {
        return Err(anyhow!("no per-CPU steal column in /proc/stat"));
    }
    Ok(steal)
}

fn parse_steal_per_cpu(stat: &str) -> Vec<u64> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        // cpuN user nice system idle iowait irq softirq steal ...
        .filter_map(|l| l.split_whitespace().nth(8)?.parse().ok())
        .collect()
}

/// The cumulative `full` stall time of `/proc/pressure/memory`; zero where the kernel has no
/// PSI (the witness then rests on the other two measures).
fn memory_full_total() -> Duration {
    std::fs::read_to_string("/proc/pressure/memory")
        .ok()
        .and_then(|s| parse_psi_full(&s))
        .unwrap_or_default()
}

fn parse_psi_full(pressure: &str) -> Option<Duration> {
    let line = pressure.lines().find(|l| l.starts_with("full "))?;
    let total = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?;
    Some(Duration::from_micros(total.parse().ok()?))
}

/// Every window of a run, and what they add up to.
#[derive(Debug, Default)]
pub struct StallReport {
    pub windows: Vec<Window>,
}

impl StallReport {
    pub fn max_oversleep(&self) -> Duration {
        self.windows
            .iter()
            .map(|w| w.oversleep)
            .max()
            .unwrap_or_default()
    }

    pub fn total_steal(&self) -> Duration {
        self.windows.iter().map(|w| w.steal).sum()
    }

    pub fn stalled(&self) -> impl Iterator<Item = &Window> {
        self.windows.iter().filter(|w| w.stalled())
    }

    pub fn one_line(&self) -> String {
        format!(
            "{} windows of {:?}: max oversleep of a nice {NICE} 1 ms sleep {:?}, steal {:?} \
             in all, memory stall (PSI full) {:?} in all, {} windows stalled (oversleep >= \
             {:?}, steal >= {:?} or memory stall >= {:?})",
            self.windows.len(),
            WINDOW,
            self.max_oversleep(),
            self.total_steal(),
            self.windows.iter().map(|w| w.memory_full).sum::<Duration>(),
            self.stalled().count(),
            STALLED_OVERSLEEP,
            STALLED_STEAL,
            STALLED_MEMORY
        )
    }

    /// The stalled windows, one line each, with UTC times to set beside the daemons' logs.
    pub fn stalled_lines(&self) -> Vec<String> {
        self.stalled()
            .map(|w| {
                format!(
                    "window ending {}: oversleep {:?}, steal {:?} (at most {:?} on one CPU), \
                     memory stall (PSI full) {:?}",
                    utc(w.end),
                    w.oversleep,
                    w.steal,
                    w.worst_cpu_steal,
                    w.memory_full
                )
            })
            .collect()
    }
}

/// `HH:MM:SS.mmm` UTC, the daemons' log format's time of day.
pub fn utc(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_number_of_each_cpu_line() {
        let stat = "cpu  2760544 57500 506289 2823672 11059 0 112577 3272 0 0\n\
                    cpu0 1 2 3 4 5 6 7 8 9 10\n\
                    cpu1 1 2 3 4 5 6 7 80 9 10\n\
                    intr 5 6 7 8 9 10 11 12 13\n";
        assert_eq!(parse_steal_per_cpu(stat), vec![8, 80]);
        assert!(parse_steal_per_cpu("cpu0 1 2 3\n").is_empty());
    }

    #[test]
    fn a_window_is_stalled_by_either_measure() {
        let w = |o, s| Window {
            end: SystemTime::UNIX_EPOCH,
            oversleep: Duration::from_millis(o),
            steal: Duration::from_millis(s),
            worst_cpu_steal: Duration::from_millis(s),
            memory_full: Duration::ZERO,
        };
        assert!(!w(5, 10).stalled());
        assert!(w(25, 0).stalled());
        assert!(w(0, 20).stalled());
        let memory = Window {
            memory_full: Duration::from_millis(30),
            ..w(0, 0)
        };
        assert!(memory.stalled());
    }

    #[test]
    fn psi_full_total_is_in_microseconds() {
        let psi = "some avg10=0.00 avg60=0.00 avg300=0.00 total=30328770\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=12026833\n";
        assert_eq!(parse_psi_full(psi), Some(Duration::from_micros(12_026_833)));
        assert_eq!(parse_psi_full("some total=5\n"), None);
    }

    #[test]
    fn utc_prints_the_time_of_day() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(86_400_000 + 3_723_004);
        assert_eq!(utc(t), "01:02:03.004");
    }
}
