//! `lbd run --config FILE` serves; `lbd check-config FILE` validates and exits.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lbd::config::LbConfig;

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
    },
    /// Validate a config file, print every error, exit non-zero if any.
    CheckConfig {
        /// The TOML config file.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match LbConfig::load(&file) {
            Ok(cfg) => {
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
        Command::Run { config } => {
            // Load once up front for the log settings; `server::run` loads again so the
            // same code path serves startup and reload.
            let cfg = match LbConfig::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(1);
                }
            };
            shared::telemetry::init(cfg.global.log_format, &cfg.global.log_level);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("cannot start the tokio runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let code = runtime.block_on(lbd::server::run(&config));
            // Don't wait for detached tasks (upstream connections, health checks).
            runtime.shutdown_background();
            lbd::access_log::flush(std::time::Duration::from_secs(2));
            match code {
                Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
                Err(e) => {
                    tracing::error!(error = %e, "lbd failed to start");
                    eprintln!("lbd: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
