//! CLI and wiring only: parse flags, load the config, start the listeners.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use linepay_sidecar::config::{self, Config, Overrides};
use linepay_sidecar::emulator::{Emulator, EmulatorConfig, SourceNet};
use linepay_sidecar::reload::ConfigSource;
use linepay_sidecar::runtime::{self, shutdown_signal};
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::SIGNATURE_LEN;
use linepay_sidecar::sign::{self, Signer};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;

/// The channel the demo's emulator and sidecar share. Not a real LINE Pay channel.
const DEMO_CHANNEL_ID: &str = "1234567890";
const DEMO_CHANNEL_SECRET: &str = "demo-secret-not-a-real-linepay-channel";

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
    Demo(DemoArgs),
    /// Run only the LINE Pay emulator (a local upstream for your own tests).
    Emulator(EmulatorArgs),
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

#[derive(Args)]
struct DemoArgs {
    /// Address of the demo sidecar.
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Address of the demo's /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    admin_listen: SocketAddr,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Args)]
struct EmulatorArgs {
    /// Address of the emulator.
    #[arg(long, default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Channel id it accepts; also LINEPAY_CHANNEL_ID (default: the demo channel).
    #[arg(long, env = "LINEPAY_CHANNEL_ID", default_value = DEMO_CHANNEL_ID)]
    channel_id: String,
    /// Answer only calls from this source range (IP/mask, repeatable), like LINE Pay's
    /// server IP whitelist; others get returnCode 1106. Default: every source.
    #[arg(long = "allow-source", value_name = "IP/MASK")]
    allow_source: Vec<SourceNet>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
        Some(Command::Demo(args)) => with_runtime(demo(args)),
        Some(Command::Emulator(args)) => with_runtime(emulator(args)),
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
    let upstream = runtime::build_upstream(&config)?;
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
    runtime::run(config_source(&args)).await?;
    Ok(())
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

async fn start_emulator(
    listen: SocketAddr,
    channel_id: &str,
    secret: Secret,
    allow_sources: Vec<SourceNet>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let emulator = Emulator::new(EmulatorConfig {
        allow_sources,
        ..EmulatorConfig::new(channel_id, secret)
    });
    Ok((local, tokio::spawn(emulator.serve(listener, None))))
}

async fn emulator(args: EmulatorArgs) -> Result<()> {
    init_logs(args.log_format);
    let secret = process_env(config::ENV_CHANNEL_SECRET).unwrap_or_else(|| {
        tracing::info!("LINEPAY_CHANNEL_SECRET is unset: the emulator uses the demo secret");
        DEMO_CHANNEL_SECRET.to_owned()
    });
    if !args.allow_source.is_empty() {
        let ranges: Vec<String> = args.allow_source.iter().map(ToString::to_string).collect();
        tracing::info!(
            allow_sources = %ranges.join(", "),
            "emulator: IP whitelist on: calls from other sources get returnCode 1106"
        );
    }
    let (local, task) = start_emulator(
        args.listen,
        &args.channel_id,
        Secret::new(secret),
        args.allow_source,
    )
    .await?;
    runtime::announce(&format!("linepay emulator listening on http://{local}"));
    tokio::select! {
        result = task => result.context("emulator task failed")?.context("emulator failed")?,
        () = shutdown_signal() => {}
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    init_logs(args.log_format);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (emulator_addr, emulator_task) = start_emulator(
        loopback,
        DEMO_CHANNEL_ID,
        Secret::new(DEMO_CHANNEL_SECRET),
        Vec::new(),
    )
    .await?;
    let source = ConfigSource {
        path: None,
        overrides: Overrides {
            listen: Some(args.listen),
            upstream: Some(format!("http://{emulator_addr}")),
            admin_listen: Some(args.admin_listen),
            ..Overrides::default()
        },
        env: Box::new(|key: &str| match key {
            config::ENV_CHANNEL_ID => Some(DEMO_CHANNEL_ID.to_owned()),
            config::ENV_CHANNEL_SECRET => Some(DEMO_CHANNEL_SECRET.to_owned()),
            _ => None,
        }),
    };
    let base = format!("http://{}", args.listen);
    eprintln!("{}", demo_walkthrough(&base));
    let result = runtime::run(source).await;
    emulator_task.abort();
    result?;
    Ok(())
}

fn demo_walkthrough(base: &str) -> String {
    format!(
        r#"
The demo sidecar signs calls with a demo channel and forwards them to an embedded LINE Pay
emulator that checks every signature as LINE Pay does. Your app (or curl) sends plain JSON:

  curl -s {base}/v3/payments/request -d '{{"amount":100,"currency":"TWD","orderId":"order-1","packages":[{{"id":"p1","amount":100,"products":[{{"name":"Coffee","quantity":1,"price":100}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}}}'
  # copy info.transactionId from the answer into TX:
  TX=...
  curl -s {base}/v3/payments/$TX/confirm -d '{{"amount":100,"currency":"TWD"}}'
  curl -s "{base}/v3/payments?transactionId=$TX"
  curl -s {base}/v3/payments/$TX/refund -d '{{"refundAmount":40}}'
  curl -s -i {base}/v3/admin          # refused by the allowlist: 403 path_not_allowed

Stop with Ctrl-C.
"#
    )
}
