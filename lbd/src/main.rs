//! `lbd run --config FILE` serves; `lbd check-config FILE` validates (the config and its
//! TLS certificate files) and exits;
//! `lbd status [--json]` prints the admin listener's `/status` (node, phase, vrrpd coupling).
//!
//! `run` starts the worker threads first ([`lbd::app::spawn_workers`]), then serves the
//! control side (signals, admin, health checks, vrrpd) on a current_thread runtime on the
//! main thread.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lbd::config::LbConfig;

/// mimalloc instead of glibc malloc: a proxied request allocates and frees a few dozen small
/// buffers (header maps, hyper's dispatch channels, response futures). glibc's malloc/free
/// were ~6% of lbd's CPU under the L7 benchmark; with mimalloc lbd spent 2.7% less CPU per
/// request, lower in 4 of 4 interleaved rounds (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lbd",
    version,
    about = "L7 HTTP reverse proxy of the lbpair load-balancer pair"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Worker threads serving connections, each with its own single-threaded runtime
        /// (default: `global.workers`, else the number of CPUs this process may run on).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file, print every error, exit non-zero if any.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
    /// Show the running lbd's status (read from its admin listener's `/status`).
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        /// The admin listener to ask (default: `global.admin` of --config, else 127.0.0.1:9100).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Read the admin address from this config file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// Why `lbd status` could not show the status.
#[derive(Debug, thiserror::Error)]
enum StatusError {
    #[error("cannot reach lbd's admin listener {admin}: {source}")]
    Connect {
        admin: SocketAddr,
        source: std::io::Error,
    },
    #[error("{admin}: {source}")]
    Io {
        admin: SocketAddr,
        source: std::io::Error,
    },
    #[error("{admin}: not an HTTP answer")]
    NotHttp { admin: SocketAddr },
    #[error("{admin}: {status_line}")]
    Refused {
        admin: SocketAddr,
        status_line: String,
    },
    #[error("malformed /status answer: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// GET `/status` from the admin listener: HTTP/1.0, so the server closes after answering.
fn fetch_status(admin: SocketAddr) -> Result<String, StatusError> {
    let timeout = Duration::from_secs(2);
    let mut s = TcpStream::connect_timeout(&admin, timeout)
        .map_err(|source| StatusError::Connect { admin, source })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let io = |source| StatusError::Io { admin, source };
    s.write_all(b"GET /status HTTP/1.0\r\nHost: lbd\r\n\r\n")
        .map_err(io)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(io)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(StatusError::NotHttp { admin })?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(StatusError::Refused {
            admin,
            status_line: head.lines().next().unwrap_or("no status line").to_string(),
        });
    }
    Ok(body.to_string())
}

/// A few lines for people; `--json` has everything.
fn print_status(json: &str) -> Result<(), StatusError> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    println!("node {}  phase {}", s(&v["node"]), s(&v["phase"]));
    lbd::peer::print_status(&v);
    let vr = &v["vrrp"];
    if vr["enabled"].as_bool() != Some(true) {
        println!("vrrp: not coupled (standalone: every listener is bound)");
        return Ok(());
    }
    println!(
        "vrrp: {} {}  events {}  acked seq {}  heartbeats {}",
        s(&vr["socket"]),
        if vr["connected"].as_bool() == Some(true) {
            "connected".to_string()
        } else {
            format!(
                "DISCONNECTED for {} ms",
                vr["disconnected_ms"].as_u64().unwrap_or(0)
            )
        },
        vr["events"],
        vr["acked_seq"],
        vr["heartbeats_sent"],
    );
    println!("  able {}  ready {}", vr["able"], vr["ready"]);
    for r in vr["reasons"].as_array().into_iter().flatten() {
        println!("    {}", s(r));
    }
    for i in vr["instances"].as_array().into_iter().flatten() {
        println!(
            "  instance {:<12} state {:<10} serving {:<5} draining {:<5} listeners {}",
            s(&i["name"]),
            s(&i["state"]),
            i["serving"],
            i["draining"],
            i["listeners"],
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Status {
            json,
            admin,
            config,
        } => {
            let admin = match (admin, config) {
                (Some(a), _) => a,
                (None, Some(path)) => match LbConfig::load(&path) {
                    Ok(c) => c.global.admin,
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(1);
                    }
                },
                (None, None) => match lbd::config::DEFAULT_ADMIN.parse() {
                    Ok(a) => a,
                    Err(_) => return ExitCode::from(1),
                },
            };
            let result = fetch_status(admin).and_then(|body| {
                if json {
                    print!("{body}");
                    Ok(())
                } else {
                    print_status(&body)
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lbd status: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckConfig { file } => match LbConfig::load(&file) {
            Ok(cfg) => {
                // The certificate files too: a reload would refuse a bad pair.
                let now = std::time::SystemTime::now();
                for l in &cfg.listeners {
                    if let Some(Err(e)) = l.tls.as_ref().map(|t| lbd::tls::build(t, now)) {
                        eprintln!("{}: listener {:?}: TLS: {e}", file.display(), l.name);
                        return ExitCode::from(1);
                    }
                }
                println!(
                    "{}: ok ({} listener(s), {} pool(s), {} route(s))",
                    file.display(),
                    cfg.listeners.len(),
                    cfg.pools.len(),
                    cfg.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
        Command::Run { config, workers } => {
            // Load once up front for the log settings; `app::run` loads again so the
            // same code path serves startup and reload.
            let cfg = match LbConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            let log = shared::telemetry::init(cfg.global.log_format, &cfg.global.log_level);
            raise_open_file_limit(cfg.global.max_client_conns);
            // --workers, else `global.workers`, else one per CPU.
            let n = workers
                .or(cfg.global.workers)
                .unwrap_or_else(lbd::app::default_workers)
                .max(1);
            let worker_handles = match lbd::app::spawn_workers(n) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("cannot start the worker threads: {e}");
                    return ExitCode::from(1);
                }
            };
            // The control runtime: signals, admin, health checks, the vrrpd link. Client
            // connections never run here (see `app::spawn_workers`).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the tokio runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let code = runtime.block_on(lbd::app::run(&config, worker_handles));
            // Don't wait for detached tasks (upstream connections, health checks); the worker
            // threads end with the process.
            runtime.shutdown_background();
            lbd::access_log::flush(std::time::Duration::from_secs(2));
            let exit = match code {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    tracing::error!(error = %e, "lbd failed to start");
                    eprintln!("lbd: {e}");
                    ExitCode::from(1)
                }
            };
            // The queued log lines go out before the process ends.
            drop(log);
            exit
        }
    }
}

/// File descriptors lbd keeps for itself beyond client connections: upstream connections,
/// listeners, the peer link, the vrrpd socket, config and key files.
const FD_RESERVE: u64 = 1024;

/// Every client connection is a file descriptor, and Debian's default soft limit is 1024:
/// raise the soft limit to the hard one (as nginx's `worker_rlimit_nofile` and HAProxy do),
/// and say so when `max_client_conns` still does not fit, because past the limit accepts
/// and upstream connects fail.
fn raise_open_file_limit(max_client_conns: u32) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let needed = u64::from(max_client_conns) + FD_RESERVE;
    if soft < needed {
        tracing::warn!(
            limit = soft,
            max_client_conns,
            needed,
            "the open-file limit is below global.max_client_conns plus a reserve: raise LimitNOFILE (the shipped unit sets 65536) or lower max_client_conns"
        );
    }
}
