//! `linepay-emulator`: the LINE Pay emulator on its own, a local upstream for a sidecar
//! or an SDK under test. Same flags as `linepay-sidecar emulator`; logs go to stderr,
//! at `--log-level` (default `info`), or filtered by `LINEPAY_EMULATOR_LOG` (a full
//! filter such as `info,hyper=debug`), which wins when set, as it does for the
//! subcommand.

use clap::{Parser, ValueEnum};
use linepay_emulator::cli::{self, EmulatorArgs};

#[derive(Parser)]
#[command(
    name = "linepay-emulator",
    version,
    about = "An in-memory LINE Pay API (online v2/v3/v4, offline v2/v4) that checks every \
             signature as LINE Pay does, with a clock and fault rehearsal under /__emulator/. \
             The channel secret comes from LINEPAY_CHANNEL_SECRET (default: the demo secret)."
)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Least severe level logged; LINEPAY_EMULATOR_LOG (a full filter such as
    /// `info,hyper=debug`) wins when set.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

fn main() {
    let cli = Cli::parse();
    init_logs(cli.log_format, cli.log_level);
    if let Err(error) = serve(cli.emulator) {
        eprintln!("linepay-emulator: {error:#}");
        std::process::exit(1);
    }
}

fn serve(args: EmulatorArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let secret = std::env::var(cli::ENV_CHANNEL_SECRET)
        .ok()
        .filter(|value| !value.is_empty());
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(cli::run(args, secret, shutdown_signal()))?;
    Ok(())
}

fn init_logs(format: LogFormat, level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_env(cli::ENV_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGTERM (a container stop) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutting down");
}
