//! The peer link's benchmark: replication throughput, lag and CPU at a steady update
//! rate, and the time of a full resync of many entries.
//!
//! Two real lbd servers run in this process, each on its own thread with a current-thread
//! tokio runtime: that thread is the node's control runtime, where lbd runs its peer link
//! (and, idle here, its admin listener and soft-state sweeper). They are linked over
//! loopback TCP through their `[peer]` configs, with the real PSK authentication and
//! replicator. Updates are made the way the data path makes them, by calling the node's
//! `SoftState` (learn-mode sticky entries, each a new key) from a separate load thread, so
//! the CPU charged to the two node threads is the cost of replication alone.
//!
//! Figures:
//! - live: updates/s offered and replicated, lag from the write on A to its visibility on B
//!   (every 10th key is watched; p50/p99/max), time to equal digests after the load, and
//!   each node thread's CPU as a share of one core (from `/proc/self/task/TID/schedstat`);
//! - resync: A holds N entries, B starts empty; time until B is warm with A's digest, and
//!   the CPU of both threads meanwhile.
//!
//! Run it with `scripts/bench-sync.sh` (release build), or
//! `cargo run --release -p lbd --example sync_bench -- --help`.
// A benchmark measures real time on plain threads; there is no clock to pause here.
#![allow(clippy::disallowed_types)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use lbd::clock;
use lbd::config::LbConfig;
use lbd::server::Server;

#[derive(Parser, Debug)]
#[command(about = "lbd peer-link replication benchmark (two in-process nodes on loopback)")]
struct Args {
    /// Steady update rate on node A (updates/s).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Length of the steady-rate run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Entries node A holds before node B starts, for the full-resync run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    resync_entries: usize,
    /// `[peer] resync_rate` (entries/s) for both nodes (lbd's default).
    #[arg(long, default_value_t = lbd::config::peer::DEFAULT_PEER_RESYNC_RATE)]
    resync_rate: u32,
    /// Print a Markdown table row block as well.
    #[arg(long)]
    markdown: bool,
    /// Print node B's phase and entries received every 250 ms during the resync.
    #[arg(long)]
    progress: bool,
}

/// A failure to set up or run the benchmark, printed on exit.
type BenchError = Box<dyn std::error::Error + Send + Sync>;

const POOL: &str = "web";
const BACKEND: &str = "127.0.0.1:9";

/// One node: its server (for the shared state) and the thread running its runtime.
struct Node {
    server: Arc<Server>,
    tid: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(name: &str, config: PathBuf) -> Result<Node, BenchError> {
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<(Arc<Server>, String), BenchError>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("node-{name}"))
            .spawn(move || {
                let tid = std::fs::read_link("/proc/thread-self")
                    .ok()
                    .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                    .unwrap_or_default();
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("runtime: {e}").into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let config_value = match LbConfig::load(&config) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("config: {e}").into()));
                            return;
                        }
                    };
                    match lbd::app::start(&config, config_value, Vec::new()).await {
                        Ok(server) => {
                            let _ = ready_tx.send(Ok((Arc::clone(&server), tid)));
                            let _ = stop_rx.await;
                            server
                                .engine()
                                .shutdown
                                .trigger(shared::shutdown::ShutdownMode::Fast);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("start: {e}").into()));
                        }
                    }
                });
            })
            .map_err(|e| format!("thread: {e}"))?;
        let (server, tid) = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("node {name} did not start: {e}"))??;
        Ok(Node {
            server,
            tid,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// CPU time this node's thread has used.
    fn cpu(&self) -> Duration {
        thread_cpu(&self.tid)
    }

    fn phase(&self) -> &'static str {
        self.server
            .peer
            .as_ref()
            .map_or("none", |p| p.view().phase.as_str())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A thread's CPU time: schedstat's first field is nanoseconds on CPU.
fn thread_cpu(tid: &str) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn free_port() -> Result<SocketAddr, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| format!("addr: {e}"))?)
}

struct Setup {
    dir: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

fn write_configs(dir: &Path, resync_rate: u32, max_entries: usize) -> Result<Setup, BenchError> {
    // The table's byte cap (32 MiB by default, ~200k of these entries) must not be what
    // limits the run: 256 bytes an entry is ample.
    let max_bytes = (max_entries * 256).clamp(64 << 10, 16 << 30);
    let psk = dir.join("peer.key");
    std::fs::write(&psk, "5a".repeat(32) + "\n").map_err(|e| format!("psk: {e}"))?;
    // lbd refuses a key file others can read.
    std::fs::set_permissions(
        &psk,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .map_err(|e| format!("psk: chmod 600: {e}"))?;
    let (peer_a, peer_b) = (free_port()?, free_port()?);
    let node = |id: &str, other: &str, listen: SocketAddr, peer: SocketAddr| {
        let (http, admin) = (free_port()?, free_port()?);
        Ok::<String, BenchError>(format!(
            "default_pool = \"{POOL}\"\n[global]\nadmin = \"{admin}\"\naccess_log = \"off\"\n\
             log_level = \"warn\"\nnode_name = \"{id}\"\n\n\
             [peer]\nnode_id = \"{id}\"\npeer_node_id = \"{other}\"\ncluster_id = \"bench\"\n\
             listen = \"{listen}\"\npeer = \"{peer}\"\npsk_file = \"{}\"\n\
             resync_rate = {resync_rate}\nreconnect_ms = 50\n\n\
             [[listener]]\nname = \"http\"\naddress = \"{http}\"\n\n\
             [[pool]]\nname = \"{POOL}\"\n[pool.health]\nkind = \"none\"\n\
             [pool.sticky]\nmode = \"learn\"\ncookie = \"SESSION\"\nmax_entries = {max_entries}\n\
             max_bytes = {max_bytes}\n\n\
             [[pool.backend]]\naddress = \"{BACKEND}\"\n",
            psk.display()
        ))
    };
    let a = dir.join("a.toml");
    let b = dir.join("b.toml");
    std::fs::write(&a, node("a", "b", peer_a, peer_b)?).map_err(|e| format!("a.toml: {e}"))?;
    std::fs::write(&b, node("b", "a", peer_b, peer_a)?).map_err(|e| format!("b.toml: {e}"))?;
    Ok(Setup {
        dir: dir.to_path_buf(),
        a,
        b,
    })
}

/// Poll `f` every millisecond until it holds or `limit` passes; returns the time it took.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Live {
    offered: u64,
    replicated: u64,
    elapsed: Duration,
    lags: Vec<Duration>,
    unseen: usize,
    converged: Option<Duration>,
    cpu_a: Duration,
    cpu_b: Duration,
}

fn live_run(a: &Node, b: &Node, rate: u64, seconds: u64) -> Live {
    let total = rate * seconds;
    // Write times of the watched keys (every 10th), as ns since the run's start.
    let watched: Arc<Vec<AtomicU64>> =
        Arc::new((0..total / 10 + 1).map(|_| AtomicU64::new(0)).collect());
    let written = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (cpu_a0, cpu_b0) = (a.cpu(), b.cpu());
    let received0 = b
        .server
        .peer
        .as_ref()
        .map_or(0, |p| p.view().entries_received);

    let load = {
        let soft = Arc::clone(&a.server.engine().soft);
        let watched = Arc::clone(&watched);
        let written = Arc::clone(&written);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let ttl = Duration::from_secs(3600);
            let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
            for i in 0..total {
                // Paced against the schedule, not the previous write, so the rate holds.
                let due = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let key = format!("live-{i}");
                soft.sticky_learn(POOL, key.as_bytes(), BACKEND, ttl, clock::now());
                if i % 10 == 0 {
                    watched[(i / 10) as usize]
                        .store(start.elapsed().as_nanos() as u64, Ordering::Release);
                }
                written.store(i + 1, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        })
    };

    // Watch every 10th key appear on B, in order.
    let mut lags = Vec::new();
    let mut unseen = 0;
    let soft_b = Arc::clone(&b.server.engine().soft);
    let mut next = 0u64;
    let hard_stop = start + Duration::from_secs(seconds + 30);
    while next < total && Instant::now() < hard_stop {
        if written.load(Ordering::Acquire) <= next {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let key = format!("live-{next}");
        let seen = wait_for(Duration::from_secs(5), || {
            soft_b
                .sticky_lookup(POOL, key.as_bytes(), clock::now())
                .is_some()
        });
        let wrote = Duration::from_nanos(watched[(next / 10) as usize].load(Ordering::Acquire));
        match seen {
            Some(_) => lags.push(start.elapsed().saturating_sub(wrote)),
            None => unseen += 1,
        }
        next += 10;
    }
    let _ = load.join();
    let elapsed = start.elapsed();
    let converged = wait_for(Duration::from_secs(10), || {
        a.server.engine().soft.digest() == b.server.engine().soft.digest()
    });
    let (cpu_a, cpu_b) = (a.cpu() - cpu_a0, b.cpu() - cpu_b0);
    let replicated = b
        .server
        .peer
        .as_ref()
        .map_or(0, |p| p.view().entries_received)
        - received0;
    lags.sort();
    Live {
        offered: total,
        replicated,
        elapsed,
        lags,
        unseen,
        converged,
        cpu_a,
        cpu_b,
    }
}

fn run(args: &Args) -> Result<bool, BenchError> {
    let tmp = std::env::temp_dir().join(format!("lbd-sync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let max_entries = (args.resync_entries + 1000).max((args.rate * args.seconds) as usize + 1000);
    let setup = write_configs(&tmp, args.resync_rate, max_entries.min(10_000_000))?;
    let mut ok = true;

    // ---- steady rate ----
    let a = Node::start("a", setup.a.clone())?;
    let b = Node::start("b", setup.b.clone())?;
    if wait_for(Duration::from_secs(20), || {
        a.phase() == "warm" && b.phase() == "warm"
    })
    .is_none()
    {
        return Err(format!("the nodes did not link up: a {} b {}", a.phase(), b.phase()).into());
    }
    let live = live_run(&a, &b, args.rate, args.seconds);
    let secs = live.elapsed.as_secs_f64();
    let core_a = live.cpu_a.as_secs_f64() / secs * 100.0;
    let core_b = live.cpu_b.as_secs_f64() / secs * 100.0;
    println!(
        "live: {} updates in {:.2} s ({:.0}/s offered), {} replicated ({:.0}/s)",
        live.offered,
        secs,
        live.offered as f64 / secs,
        live.replicated,
        live.replicated as f64 / secs
    );
    println!(
        "live lag (A write -> visible on B, {} samples, {} unseen): p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        live.lags.len(),
        live.unseen,
        ms(percentile(&live.lags, 0.50)),
        ms(percentile(&live.lags, 0.99)),
        ms(percentile(&live.lags, 1.0))
    );
    println!(
        "live digests equal {} after the load",
        live.converged
            .map_or("NEVER (10 s)".to_string(), |d| format!("{:.1} ms", ms(d)))
    );
    println!(
        "live CPU: node A (sender) {core_a:.2}% of a core, node B (receiver) {core_b:.2}% (target: < 5% each)"
    );
    ok &= live.unseen == 0 && live.converged.is_some();
    drop(b);
    drop(a);

    // ---- full resync ----
    let mut resync_row = None;
    if args.resync_entries > 0 {
        let dir = tmp.join("resync");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let setup2 = write_configs(&dir, args.resync_rate, max_entries.min(10_000_000))?;
        let a = Node::start("a", setup2.a.clone())?;
        let fill = Instant::now();
        let ttl = Duration::from_secs(3600);
        for i in 0..args.resync_entries {
            let key = format!("resync-{i}");
            a.server
                .engine()
                .soft
                .sticky_learn(POOL, key.as_bytes(), BACKEND, ttl, clock::now());
        }
        let want = a.server.engine().soft.digest();
        println!(
            "resync: node A holds {} entries (filled in {:.2} s)",
            want.count,
            fill.elapsed().as_secs_f64()
        );
        // In production such a table builds up over hours; here A's link task must first
        // take in the changes of the last two seconds (they wait in its dirty set, since no
        // peer is connected). That is not part of the resync, so it is timed apart.
        let absorb = Instant::now();
        let dirty = |n: &Node| n.server.peer.as_ref().map_or(0, |p| p.view().dirty_len);
        let mut last = (dirty(&a), Instant::now());
        let _ = wait_for(Duration::from_secs(30), || {
            let d = dirty(&a);
            if d != last.0 {
                last = (d, Instant::now());
            }
            d as usize >= args.resync_entries || last.1.elapsed() >= Duration::from_millis(500)
        });
        println!(
            "resync: node A's link took in the fill's changes in {:.2} s (dirty set {})",
            absorb.elapsed().as_secs_f64(),
            dirty(&a)
        );
        let cpu_a0 = a.cpu();
        let started = Instant::now();
        let b = Node::start("b", setup2.b.clone())?;
        let cpu_b0 = Duration::ZERO;
        // From B's start (an empty node joining), not from the connection.
        let mut last_print = Instant::now();
        let took = wait_for(Duration::from_secs(60), || {
            if args.progress && last_print.elapsed() >= Duration::from_millis(250) {
                last_print = Instant::now();
                let va = a.server.peer.as_ref().map(|p| p.view());
                let vb = b.server.peer.as_ref().map(|p| p.view());
                println!(
                    "  {:>6.2} s: A connected {} sent {}; B {} connected {} received {}",
                    started.elapsed().as_secs_f64(),
                    va.as_ref().is_some_and(|v| v.connected),
                    va.as_ref().map_or(0, |v| v.entries_sent),
                    b.phase(),
                    vb.as_ref().is_some_and(|v| v.connected),
                    vb.as_ref().map_or(0, |v| v.entries_received)
                );
            }
            b.phase() == "warm" && b.server.engine().soft.digest() == want
        })
        .map(|_| started.elapsed());
        let (cpu_a, cpu_b) = (a.cpu() - cpu_a0, b.cpu() - cpu_b0);
        match took {
            Some(t) => println!(
                "resync: B warm with A's digest after {:.2} s (resync_rate {}/s); CPU A {:.2} s, B {:.2} s (target: < 5 s)",
                t.as_secs_f64(),
                args.resync_rate,
                cpu_a.as_secs_f64(),
                cpu_b.as_secs_f64()
            ),
            None => {
                println!(
                    "resync: B NOT converged after 60 s (phase {}, {} of {} entries)",
                    b.phase(),
                    b.server.engine().soft.digest().count,
                    want.count
                );
                ok = false;
            }
        }
        resync_row = took.map(|t| (t, cpu_a, cpu_b, want.count));
        drop(b);
        drop(a);
    }

    if args.markdown {
        println!();
        println!("| measure | value |");
        println!("|---|---:|");
        println!(
            "| updates/s offered / replicated | {:.0} / {:.0} |",
            live.offered as f64 / secs,
            live.replicated as f64 / secs
        );
        println!(
            "| lag p50 / p99 / max (ms) | {:.2} / {:.2} / {:.2} |",
            ms(percentile(&live.lags, 0.50)),
            ms(percentile(&live.lags, 0.99)),
            ms(percentile(&live.lags, 1.0))
        );
        println!("| CPU, sender (% of one core) | {core_a:.2} |");
        println!("| CPU, receiver (% of one core) | {core_b:.2} |");
        if let Some((t, ca, cb, n)) = resync_row {
            println!(
                "| full resync of {n} entries (s) | {:.2} |",
                t.as_secs_f64()
            );
            println!(
                "| resync CPU sender / receiver (s) | {:.2} / {:.2} |",
                ca.as_secs_f64(),
                cb.as_secs_f64()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&setup.dir);
    Ok(ok)
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("sync_bench: {e}");
            std::process::exit(2);
        }
    }
}
