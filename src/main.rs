//! CLI and wiring only: parse flags, load the config, start the listeners.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use linepay_sidecar::config::{self, Config, Overrides};
use linepay_sidecar::emulator::{Emulator, EmulatorConfig};
use linepay_sidecar::proxy::Proxy;
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::{self, Signer};
use linepay_sidecar::upstream::Upstream;
use linepay_sidecar::{server, sign::SIGNATURE_LEN};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    #[arg(long, value_name = "URL")]
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
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    connect_timeout: Option<Duration>,
    /// Read timeout for every route (upstream.read_timeout), e.g. 20s.
    #[arg(long, value_name = "DURATION", value_parser = config::parse_duration)]
    read_timeout: Option<Duration>,
    /// Largest request body accepted (request.max_body_bytes).
    #[arg(long, value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Also allow the v2 legacy API (routes.v2_legacy).
    #[arg(long)]
    v2_legacy: bool,
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

fn load_config(args: &RunArgs) -> Result<Config> {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream.clone(),
        upstream_ca_file: args.upstream_ca_file.clone(),
        channel_id: args.channel_id.clone(),
        channel_secret_file: args.channel_secret_file.clone(),
        connect_timeout: args.connect_timeout,
        read_timeout: args.read_timeout,
        max_body_bytes: args.max_body_bytes,
        v2_legacy: args.v2_legacy,
    };
    config::load(args.config.as_deref(), &overrides, &process_env)
        .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))
}

fn check(args: &RunArgs) -> Result<()> {
    let config = load_config(args)?;
    let upstream = build_upstream(&config)?;
    println!(
        "configuration OK: listen {}, upstream {}, {} allowed routes, channel secret from {}",
        config.listen,
        upstream.base(),
        config.allowlist.routes().len(),
        config.credentials.secret_source
    );
    Ok(())
}

fn build_upstream(config: &Config) -> Result<Upstream> {
    let connect_timeouts = config
        .allowlist
        .routes()
        .iter()
        .map(|route| route.timeouts.connect);
    Upstream::new(&config.upstream, connect_timeouts).context("cannot set up the upstream client")
}

async fn run(args: RunArgs) -> Result<()> {
    init_logs(args.log_format);
    let config = load_config(&args)?;
    serve_proxy(config, shutdown_signal()).await
}

async fn serve_proxy(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let upstream = build_upstream(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr().context("listener has no address")?;
    tracing::info!(
        listen = %local,
        upstream = %upstream.base(),
        routes = config.allowlist.routes().len(),
        secret_source = %config.credentials.secret_source,
        "linepay-sidecar started"
    );
    // Tests and scripts wait for this exact line to learn the bound port.
    announce(&format!(
        "linepay-sidecar listening on http://{local} (upstream {})",
        upstream.base()
    ));
    let proxy = Arc::new(Proxy::new(config, upstream));
    server::serve(listener, proxy, shutdown)
        .await
        .context("proxy listener failed")
}

fn announce(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the sidecar.
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
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

async fn start_emulator(
    listen: SocketAddr,
    channel_id: &str,
    secret: Secret,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr().context("listener has no address")?;
    let emulator = Emulator::new(EmulatorConfig {
        channel_id: channel_id.to_owned(),
        channel_secret: secret,
    });
    Ok((local, tokio::spawn(emulator.serve(listener, None))))
}

async fn emulator(args: EmulatorArgs) -> Result<()> {
    init_logs(args.log_format);
    let secret = process_env(config::ENV_CHANNEL_SECRET).unwrap_or_else(|| {
        tracing::info!("LINEPAY_CHANNEL_SECRET is unset: the emulator uses the demo secret");
        DEMO_CHANNEL_SECRET.to_owned()
    });
    let (local, task) = start_emulator(args.listen, &args.channel_id, Secret::new(secret)).await?;
    announce(&format!("linepay emulator listening on http://{local}"));
    tokio::select! {
        result = task => result.context("emulator task failed")?.context("emulator failed")?,
        () = shutdown_signal() => {}
    }
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<()> {
    init_logs(args.log_format);
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (emulator_addr, emulator_task) =
        start_emulator(loopback, DEMO_CHANNEL_ID, Secret::new(DEMO_CHANNEL_SECRET)).await?;
    let demo_env = |key: &str| match key {
        config::ENV_CHANNEL_ID => Some(DEMO_CHANNEL_ID.to_owned()),
        config::ENV_CHANNEL_SECRET => Some(DEMO_CHANNEL_SECRET.to_owned()),
        _ => None,
    };
    let overrides = Overrides {
        listen: Some(args.listen),
        upstream: Some(format!("http://{emulator_addr}")),
        ..Overrides::default()
    };
    let config = config::validate(
        config::RawConfig::default(),
        "demo",
        &overrides,
        &demo_env,
        &|path| std::fs::read(path),
    )
    .map_err(|error| anyhow::anyhow!("demo configuration: {error}"))?;
    let base = format!("http://{}", args.listen);
    eprintln!("{}", demo_walkthrough(&base));
    let result = serve_proxy(config, shutdown_signal()).await;
    emulator_task.abort();
    result
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
