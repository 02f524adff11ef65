//! The `vrrpd` command line.
//!
//! - `vrrpd run [--config FILE]`: run the daemon (`vrrpd::daemon::run`).
//! - `vrrpd check-config [FILE]`: validate a config and print every problem as
//!   `FILE:LINE:COL: `key`: message`; exit 1 if there is any.
//! - `vrrpd status [--json] [--socket PATH | --config FILE]`: ask the running daemon.
//! - `vrrpd switchover [INSTANCE]`: drain lbd, then hand mastership to the peer
//!   make-before-break; `vrrpd resume [INSTANCE]` lets this node preempt again.
//! - `vrrpd release-vips [--config FILE]`: remove every configured VIP from its interface.
//!   The systemd unit's failure handler runs it when vrrpd is dead for good, so a node whose
//!   vrrpd can't run never keeps answering for a VIP.
//!
//! Exit codes: 0 success, 1 a failure the message explains (bad config, daemon
//! unreachable), 2 a usage error (clap's).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::config::ConfigError;
use shared::control::{self, ControlStats, DaemonStatus, InstanceStatus, Request, Response};
use vrrpd::config::{VrrpConfig, DEFAULT_CONFIG_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "vrrpd",
    version,
    about = "VRRPv3 daemon of the lbpair load-balancer pair"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Run {
        /// Config file.
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a config file and report every problem.
    CheckConfig {
        /// Config file.
        #[arg(value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        file: PathBuf,
    },
    /// Show the running daemon's instances, states and counters.
    Status {
        /// Print the raw status as JSON.
        #[arg(long)]
        json: bool,
        /// Control socket (default: the config's `global.control_socket`, else
        /// /run/lbpair/vrrpd.sock).
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Read the control socket path from this config file
        /// [default: /etc/lbpair/vrrpd.toml, if it exists].
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Planned switchover: drain lbd, then hand mastership to the peer (make-before-break).
    Switchover {
        /// Only this instance (default: every instance that is master here).
        instance: Option<String>,
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Lift the hold a switchover leaves, so this node may preempt again.
    Resume {
        instance: Option<String>,
        #[arg(long, value_name = "PATH", conflicts_with = "config")]
        socket: Option<PathBuf>,
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove every configured VIP from its interface (systemd failure handler).
    ReleaseVips {
        #[arg(long, short, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Status {
            json,
            socket,
            config,
        } => status(json, socket, config),
        Command::Switchover {
            instance,
            socket,
            config,
        } => admin(Request::Switchover { instance }, socket, config),
        Command::Resume {
            instance,
            socket,
            config,
        } => admin(Request::Resume { instance }, socket, config),
        Command::ReleaseVips { config } => release_vips(&config),
    }
}

/// Send an operator command and print the daemon's answer.
fn admin(req: Request, socket: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let socket = match socket_path(socket, config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(rt) = runtime_or_report() else {
        return ExitCode::FAILURE;
    };
    // A switchover drains lbd first; the daemon bounds it, this only guards a hung daemon.
    // The timer must be created inside the runtime, hence the async block.
    let answer = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(90),
            control::request(&socket, &req),
        )
        .await
    });
    match answer {
        Ok(Ok(Response::Done { message })) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Ok(other)) => {
            eprintln!("vrrpd: unexpected answer: {other:?}");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("vrrpd: {}: {e}", socket.display());
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("vrrpd: no answer from {} in time", socket.display());
            ExitCode::FAILURE
        }
    }
}

fn release_vips(config: &Path) -> ExitCode {
    let cfg = match VrrpConfig::load(config) {
        Ok(c) => c,
        Err(e) => {
            print_config_error(&e);
            return ExitCode::FAILURE;
        }
    };
    match runtime() {
        Ok(rt) => rt.block_on(vrrpd::daemon::release_vips(&cfg)),
        Err(e) => {
            eprintln!("vrrpd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A current-thread runtime: everything runs on the main thread, which is the thread the
/// daemon switches to SCHED_FIFO when `realtime = true` (only the calling thread changes
/// scheduler), and a VRRP daemon's work is tiny and latency-bound, not parallel.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The runtime for a one-shot command, or the reason printed.
fn runtime_or_report() -> Option<tokio::runtime::Runtime> {
    runtime()
        .map_err(|e| eprintln!("vrrpd: cannot start the async runtime: {e}"))
        .ok()
}

fn run(config: PathBuf) -> ExitCode {
    match runtime() {
        Ok(rt) => rt.block_on(vrrpd::daemon::run(config)),
        Err(e) => {
            eprintln!("vrrpd: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &Path) -> ExitCode {
    match VrrpConfig::load(file) {
        Ok(cfg) => {
            println!("{}: ok ({} instances)", file.display(), cfg.instances.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// One problem per line, `FILE:LINE:COL: `key`: message`.
fn print_config_error(e: &ConfigError) {
    match e {
        ConfigError::Read { .. } => eprintln!("{e}"),
        ConfigError::Invalid { path, errors } => {
            for err in errors {
                eprintln!("{}", err.render(path));
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
        }
    }
}

fn status(json: bool, socket: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let socket = match socket_path(socket, config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(rt) = runtime_or_report() else {
        return ExitCode::FAILURE;
    };
    let answer = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            control::request(&socket, &Request::Status),
        )
        .await
    });
    let status = match answer {
        Ok(Ok(Response::Status(s))) => s,
        Ok(Ok(other)) => {
            eprintln!(
                "vrrpd status: unexpected answer from {}: {other:?}",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
        Ok(Err(control::ControlError::Io(e))) => {
            eprintln!(
                "vrrpd status: cannot reach vrrpd at {}: {e} (is vrrpd running? use --socket PATH)",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
        Ok(Err(e)) => {
            eprintln!("vrrpd status: {}: {e}", socket.display());
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!(
                "vrrpd status: no answer from {} within 5 s",
                socket.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("vrrpd status: cannot encode the status: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_status(&status));
    }
    ExitCode::SUCCESS
}

/// `--socket`, else the socket of `--config` (an error if that file is bad), else of the
/// default config if it exists and is valid, else the built-in default.
fn socket_path(socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf, ExitCode> {
    if let Some(s) = socket {
        return Ok(s);
    }
    match config {
        Some(path) => match VrrpConfig::load(&path) {
            Ok(cfg) => Ok(cfg.global.control_socket),
            Err(e) => {
                print_config_error(&e);
                Err(ExitCode::FAILURE)
            }
        },
        None => Ok(VrrpConfig::load(DEFAULT_CONFIG_PATH)
            .map(|cfg| cfg.global.control_socket)
            .unwrap_or_else(|_| PathBuf::from(control::DEFAULT_VRRPD_SOCKET))),
    }
}

fn render_status(s: &DaemonStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "vrrpd pid {}, up {}, config {}",
        s.pid,
        human_ms(s.uptime_ms),
        s.config_path
    );
    push_control(&mut out, &s.control);
    if s.log_lines_dropped > 0 {
        let _ = writeln!(
            out,
            "log lines dropped (stderr blocked): {}",
            s.log_lines_dropped
        );
    }
    if s.instances.is_empty() {
        out.push_str("no instances\n");
        return out;
    }
    let header = [
        "INSTANCE", "IFACE", "VRID", "STATE", "PRIO", "MASTER", "ADVERT", "IN STATE",
    ];
    let rows: Vec<[String; 8]> = s.instances.iter().map(row).collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.len());
        }
    }
    out.push('\n');
    push_row(&mut out, &header.map(String::from), &widths);
    for r in &rows {
        push_row(&mut out, r, &widths);
    }
    for inst in &s.instances {
        out.push('\n');
        push_counters(&mut out, inst);
    }
    out
}

/// The control socket's line: open connections and what was refused, by reason.
fn push_control(out: &mut String, c: &ControlStats) {
    let refused = if c.refused.is_empty() {
        "none".to_string()
    } else {
        c.refused
            .iter()
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "control socket: {} connection(s) open; refused: {refused}",
        c.connections
    );
}

fn row(i: &InstanceStatus) -> [String; 8] {
    let prio = if i.priority == i.configured_priority {
        i.priority.to_string()
    } else {
        format!("{} (cfg {})", i.priority, i.configured_priority)
    };
    [
        i.name.clone(),
        i.interface.clone(),
        i.vrid.to_string(),
        i.state.clone(),
        prio,
        i.master_addr
            .map_or_else(|| "-".to_string(), |a| a.to_string()),
        format!(
            "{}.{:02}s",
            i.advert_interval_cs / 100,
            i.advert_interval_cs % 100
        ),
        human_ms(i.time_in_state_ms),
    ]
}

fn push_row(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
    let mut line = String::new();
    for (cell, w) in cells.iter().zip(widths) {
        let _ = write!(line, "{cell:<w$}  ");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

fn push_counters(out: &mut String, i: &InstanceStatus) {
    let c = &i.counters;
    let _ = writeln!(out, "{} ({}):", i.name, i.vips.join(", "));
    let _ = writeln!(
        out,
        "  adverts sent {}, received {}; transitions {} ({} to master); late timers {}; GARPs {}; send errors {}",
        c.adverts_sent,
        c.adverts_received,
        c.transitions,
        c.became_master,
        c.late_timers,
        c.garps_sent,
        c.send_errors
    );
    let _ = writeln!(out, "  discards: {}", counts(&c.discards));
    let _ = writeln!(
        out,
        "  hostile: intervals clamped {}, replies suppressed {}",
        c.interval_clamped, c.replies_suppressed
    );
    let _ = writeln!(out, "  checksum modes: {}", counts(&c.checksum_modes));
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `1h02m03s`, `4m05s`, `6.7s`.
fn human_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{}.{}s", s, (ms % 1000) / 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::control::InstanceCounters;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_ms(6_700), "6.7s");
        assert_eq!(human_ms(245_000), "4m05s");
        assert_eq!(human_ms(3_723_000), "1h02m03s");
    }

    #[test]
    fn status_table_shows_every_field() {
        let mut counters = InstanceCounters {
            adverts_sent: 12,
            adverts_received: 34,
            late_timers: 2,
            ..Default::default()
        };
        counters.discards.insert("ttl".into(), 3);
        counters.checksum_modes.insert("pseudo_header".into(), 34);
        let s = DaemonStatus {
            pid: 42,
            uptime_ms: 61_000,
            config_path: "/etc/lbpair/vrrpd.toml".into(),
            control: ControlStats {
                connections: 3,
                refused: [("not_admin".to_string(), 2)].into(),
            },
            log_lines_dropped: 7,
            instances: vec![InstanceStatus {
                name: "web".into(),
                interface: "eth0".into(),
                vrid: 51,
                state: "master".into(),
                priority: 140,
                configured_priority: 150,
                master_addr: Some("192.0.2.1".parse().unwrap()),
                advert_interval_cs: 100,
                time_in_state_ms: 5_000,
                vips: vec!["192.0.2.10/24".into()],
                counters,
                lbd: None,
                resigning: false,
                switchover_hold: false,
            }],
        };
        let text = render_status(&s);
        for needle in [
            "pid 42",
            "web",
            "eth0",
            "51",
            "master",
            "140 (cfg 150)",
            "192.0.2.1",
            "1.00s",
            "5.0s",
            "sent 12",
            "received 34",
            "late timers 2",
            "replies suppressed 0",
            "ttl=3",
            "pseudo_header=34",
            "3 connection(s) open; refused: not_admin=2",
            "log lines dropped (stderr blocked): 7",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}
