//! CLI and wiring only: parse flags, load the config, start the listeners.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use linepay_sidecar::app;
use linepay_sidecar::config::{self, Config, Overrides};
use linepay_sidecar::reload::ConfigSource;
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::SIGNATURE_LEN;
use linepay_sidecar::sign::{self, Signer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "linepay-sidecar",
    version,
    about = "A localhost proxy that signs LINE Pay API calls, so the app never holds the channel secret.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration (and find the credentials) without starting.
    Check(RunArgs),
    /// Print the headers the sidecar would send for one call.
    Sign(SignArgs),
    /// Run the sidecar in front of an embedded LINE Pay emulator: no account needed.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Run only the LINE Pay emulator (a local upstream for your own tests).
    #[cfg(feature = "demo")]
    Emulator(demo::EmulatorCommand),
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// YAML configuration file; flags override its keys.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address the app connects to (listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// LINE Pay base URL (upstream.url), e.g. https://api-pay.line.me.
    #[arg(long, value_name = "URL", visible_alias = "upstream-url")]
    upstream: Option<String>,
    /// Extra CA certificates (PEM) to trust for the upstream (upstream.ca_file).
    #[arg(long, value_name = "FILE")]
    upstream_ca_file: Option<PathBuf>,
    /// Channel id (credentials.channel_id); also LINEPAY_CHANNEL_ID.
    #[arg(long, value_name = "ID")]
    channel_id: Option<String>,
    /// File holding the channel secret (credentials.channel_secret_file); also
    /// LINEPAY_CHANNEL_SECRET_FILE, or the secret itself in LINEPAY_CHANNEL_SECRET.
    #[arg(long, value_name = "FILE")]
    channel_secret_file: Option<PathBuf>,
    /// Connect timeout for every route (upstream.connect_timeout), e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, visible_alias = "upstream-connect-timeout")]
    connect_timeout: Option<Duration>,
    /// Read timeout for every route (upstream.read_timeout), e.g. 20s.
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, visible_alias = "upstream-read-timeout")]
    read_timeout: Option<Duration>,
    /// Largest request body accepted (request.max_body_bytes).
    #[arg(long, value_name = "BYTES", visible_alias = "request-max-body-bytes")]
    max_body_bytes: Option<usize>,
    /// Also allow the v2 legacy API (routes.v2_legacy).
    #[arg(long, visible_alias = "routes-v2-legacy")]
    v2_legacy: bool,
    /// Address of /metrics, /healthz and /readyz (admin.listen).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// How long calls in flight may finish after SIGTERM (shutdown.drain_timeout).
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration, visible_alias = "shutdown-drain-timeout")]
    drain_timeout: Option<Duration>,
    /// Source IP of every upstream connection, the one in LINE Pay's IP whitelist
    /// (egress.bind_address); start-up fails if this host does not hold it.
    #[arg(long, value_name = "IP")]
    egress_bind_address: Option<IpAddr>,
    /// HTTP CONNECT proxy for upstream traffic, http://host:port (egress.proxy.url).
    #[arg(long, value_name = "URL")]
    egress_proxy: Option<String>,
    /// File holding the proxy's `user:password` (egress.proxy.auth_file); also
    /// LINEPAY_EGRESS_PROXY_AUTH_FILE.
    #[arg(long, value_name = "FILE")]
    egress_proxy_auth_file: Option<PathBuf>,
    /// Resolve the upstream host only to this IP; repeat for several (egress.pin).
    #[arg(long = "egress-pin", value_name = "IP")]
    egress_pin: Vec<IpAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Args)]
struct SignArgs {
    /// URI path, e.g. /v3/payments/request.
    #[arg(long)]
    path: String,
    /// File with the exact body bytes of a POST (signed byte for byte, newline included).
    #[arg(long, value_name = "FILE", conflicts_with = "query")]
    body_file: Option<PathBuf>,
    /// Query string of a GET, without '?'.
    #[arg(long)]
    query: Option<String>,
    /// Nonce; a fresh UUID v4 when absent.
    #[arg(long)]
    nonce: Option<String>,
    /// Channel id; also LINEPAY_CHANNEL_ID.
    #[arg(long, env = "LINEPAY_CHANNEL_ID")]
    channel_id: String,
    /// File holding the secret; otherwise LINEPAY_CHANNEL_SECRET.
    #[arg(long, value_name = "FILE")]
    channel_secret_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        None => with_runtime(run(cli.run)),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Sign(args)) => sign_command(&args),
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => with_runtime(demo::demo(args)),
        #[cfg(feature = "demo")]
        Some(Command::Emulator(args)) => with_runtime(demo::emulator(args)),
    };
    if let Err(error) = result {
        eprintln!("linepay-sidecar: {error:#}");
        std::process::exit(1);
    }
}

fn with_runtime(future: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LINEPAY_SIDECAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|value| !value.is_empty())
}

fn overrides(args: &RunArgs) -> Overrides {
    Overrides {
        listen: args.listen,
        upstream: args.upstream.clone(),
        upstream_ca_file: args.upstream_ca_file.clone(),
        channel_id: args.channel_id.clone(),
        channel_secret_file: args.channel_secret_file.clone(),
        connect_timeout: args.connect_timeout,
        read_timeout: args.read_timeout,
        max_body_bytes: args.max_body_bytes,
        v2_legacy: args.v2_legacy,
        admin_listen: args.admin_listen,
        drain_timeout: args.drain_timeout,
        egress_bind_address: args.egress_bind_address,
        egress_proxy: args.egress_proxy.clone(),
        egress_proxy_auth_file: args.egress_proxy_auth_file.clone(),
        egress_pin: args.egress_pin.clone(),
    }
}

fn config_source(args: &RunArgs) -> ConfigSource {
    ConfigSource {
        path: args.config.clone(),
        overrides: overrides(args),
        env: Box::new(process_env),
    }
}

fn load_config(args: &RunArgs) -> Result<Config> {
    config_source(args)
        .load()
        .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))
}

fn check(args: &RunArgs) -> Result<()> {
    let config = load_config(args)?;
    let upstream = app::build_upstream(&config).map_err(anyhow::Error::msg)?;
    println!(
        "configuration OK: listen {}, upstream {}, {} allowed routes, channel secret from {}",
        config.listen,
        upstream.base(),
        config.allowlist.routes().len(),
        config.credentials.secret_source
    );
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    init_logs(args.log_format);
    app::run(config_source(&args), shutdown_signal()).await?;
    Ok(())
}

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

fn sign_command(args: &SignArgs) -> Result<()> {
    let secret = match &args.channel_secret_file {
        Some(path) => Secret::from_file_contents(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => Secret::from_file_contents(
            process_env(config::ENV_CHANNEL_SECRET)
                .context("no channel secret: set LINEPAY_CHANNEL_SECRET or --channel-secret-file")?
                .into_bytes(),
        ),
    };
    if secret.is_empty() {
        bail!("the channel secret is empty");
    }
    if !args.path.starts_with('/') || args.path.contains('?') {
        bail!("--path is the URI path alone, e.g. /v3/payments/request (query goes in --query)");
    }
    let (method, payload) = match (&args.body_file, &args.query) {
        (Some(path), _) => (
            "POST",
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, Some(query)) => ("GET", query.trim_start_matches('?').as_bytes().to_vec()),
        (None, None) => ("GET", Vec::new()),
    };
    let nonce = args.nonce.clone().unwrap_or_else(sign::new_nonce);
    let signer = Signer::new(&secret);
    let mut signature = [0u8; SIGNATURE_LEN];
    let length = signer.signature_into(&args.path, &payload, &nonce, &mut signature);
    let signature = String::from_utf8_lossy(&signature[..length]);

    println!("X-LINE-ChannelId: {}", args.channel_id);
    println!("X-LINE-Authorization-Nonce: {nonce}");
    println!("X-LINE-Authorization: {signature}");
    eprintln!(
        "signed {method}: HMAC-SHA256(secret, secret + \"{}\" + {} payload bytes + nonce), Base64",
        args.path,
        payload.len()
    );
    if payload.last().is_some_and(|b| *b == b'\n') {
        eprintln!(
            "note: the body file ends with a newline, which is signed too; the app must send exactly these bytes"
        );
    }
    Ok(())
}
