//! CLI and wiring only: parse flags, load the config, start the listeners.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use linepay_sidecar::config::{self, Config, Overrides};
use linepay_sidecar::journal;
use linepay_sidecar::reload::ConfigSource;
use linepay_sidecar::runtime;
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::SIGNATURE_LEN;
use linepay_sidecar::sign::{self, Signer};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// `println!` for the commands' output: a reader that went away (`check … | head -1`)
/// becomes an `io::Error` the command returns, where `println!` would panic (exit 101,
/// which the manual calls a bug). `main` ends such a command quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

mod allocator;
#[cfg(feature = "demo")]
mod demo;
mod healthcheck;
mod logfmt;
mod logline;
mod logwriter;

/// The exit codes, the same for every subcommand (docs/operating.md, "Exit codes").
/// 0: done (a run stopped by SIGTERM/SIGINT after its drain, a valid config, a healthy
/// sidecar); 2: the command line does not parse (clap's own code, before anything runs).
const EXIT_FAILURE: i32 = 1;

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
    /// Ask a running sidecar's admin port whether it is healthy (exit 0) or not (exit 1).
    Healthcheck(HealthcheckArgs),
    /// Read the call journal (money calls and keyed calls), running sidecar or not.
    Calls(CallsArgs),
    /// Run the sidecar in front of an embedded LINE Pay emulator: no account needed.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Run only the LINE Pay emulator (a local upstream for your own tests).
    #[cfg(feature = "demo")]
    Emulator(demo::EmulatorCommand),
}

/// Running the sidecar (and `check`): the config file, the log format, and one flag per
/// configuration key that has one (built from the key definitions, see `config::cli`).
#[derive(Clone, Default)]
struct RunArgs {
    config: Option<PathBuf>,
    log_format: LogFormat,
    log_level: LogLevel,
    overrides: Overrides,
}

impl clap::FromArgMatches for RunArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(RunArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            log_format: matches
                .get_one::<LogFormat>("log_format")
                .copied()
                .unwrap_or_default(),
            log_level: matches
                .get_one::<LogLevel>("log_level")
                .copied()
                .unwrap_or_default(),
            overrides: config::cli::overrides(matches),
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for RunArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = command
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(PathBuf))
                    .help("YAML configuration file; environment variables and flags override its keys"),
            )
            .arg(
                clap::Arg::new("log_format")
                    .long("log-format")
                    .value_name("FORMAT")
                    .env("LINEPAY_SIDECAR_LOG_FORMAT")
                    .value_parser(clap::value_parser!(LogFormat))
                    .default_value("text")
                    .help("Log format"),
            )
            .arg(
                clap::Arg::new("log_level")
                    .long("log-level")
                    .value_name("LEVEL")
                    .env(ENV_LOG_LEVEL)
                    .value_parser(clap::value_parser!(LogLevel))
                    .default_value("info")
                    .help(LOG_LEVEL_HELP),
            );
        config::cli::add_flags(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
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

/// `calls`: the journal the sidecar writes, found as the sidecar finds it: `--journal`,
/// then `LINEPAY_SIDECAR_JOURNAL_PATH`, then `journal.path` of `--config`, then the
/// default.
#[derive(Args)]
struct CallsArgs {
    /// The journal file (`journal.path`; also LINEPAY_SIDECAR_JOURNAL_PATH); default:
    /// journal.path of --config, else the sidecar's default path.
    #[arg(long, value_name = "FILE", visible_alias = "journal-path")]
    journal: Option<PathBuf>,
    /// The config file whose journal.path to read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[arg(long)]
    transaction_id: Option<String>,
    #[arg(long)]
    order_id: Option<String>,
    #[arg(long)]
    request_id: Option<String>,
    /// Only calls without an outcome (interrupted, not reconciled yet).
    #[arg(long)]
    pending: bool,
    /// Calls listed at most, newest first (1 or more; the admin port's `/calls` allows
    /// 1 to 1,000, this reads the file itself and has no upper bound).
    #[arg(long, default_value_t = 100, value_parser = at_least_one)]
    limit: usize,
}

/// `--limit 0` would list nothing, or (as the journal's query reads 0) its default of
/// 100: refused as `/calls?limit=0` is.
fn at_least_one(text: &str) -> std::result::Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be 1 or more".to_owned()),
        Ok(limit) => Ok(limit),
        Err(error) => Err(error.to_string()),
    }
}

/// `healthcheck`: the sidecar's own command line (so the admin address comes from the
/// same `--config`, `--admin-listen` and `LINEPAY_SIDECAR_ADMIN_LISTEN`), plus what to ask.
#[derive(Args)]
struct HealthcheckArgs {
    /// Ask /readyz (can this sidecar serve calls now?) instead of /healthz (is it alive?).
    #[arg(long)]
    ready: bool,
    /// How long the whole check may take (connect, ask, read the answer).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, Default, ValueEnum)]
enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The full filter in this variable wins over `--log-level`.
const ENV_LOG: &str = "LINEPAY_SIDECAR_LOG";
const ENV_LOG_LEVEL: &str = "LINEPAY_SIDECAR_LOG_LEVEL";
const LOG_LEVEL_HELP: &str =
    "Least severe level logged; LINEPAY_SIDECAR_LOG (a full filter such as `info,hyper=debug`) wins when set";

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

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        // The proxy runs on its own worker threads (one runtime per core, see
        // runtime::workers); the main runtime only carries the control tasks.
        None => with_runtime(Threads::One, run(cli.run)),
        Some(Command::Check(args)) => check(&args),
        Some(Command::Sign(args)) => sign_command(&args),
        Some(Command::Healthcheck(args)) => healthcheck_command(&args),
        Some(Command::Calls(args)) => calls_command(&args),
        #[cfg(feature = "demo")]
        Some(Command::Demo(args)) => with_runtime(Threads::PerCore, demo::demo(args)),
        #[cfg(feature = "demo")]
        Some(Command::Emulator(args)) => with_runtime(Threads::PerCore, demo::emulator(args)),
    };
    if let Err(error) = result {
        if reader_went_away(&error) {
            // What was asked for was printed until the reader stopped reading: as `head`
            // meant it, not a failure.
            return;
        }
        eprintln!("linepay-sidecar: {error:#}");
        std::process::exit(EXIT_FAILURE);
    }
}

/// Standard output's reader closed its end: the `EPIPE` of a write by [`out!`].
fn reader_went_away(error: &anyhow::Error) -> bool {
    error
        .downcast_ref::<std::io::Error>()
        .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
}

/// Threads of the main runtime.
enum Threads {
    One,
    /// The demo and the emulator serve on the main runtime itself.
    #[cfg(feature = "demo")]
    PerCore,
}

fn with_runtime(
    threads: Threads,
    future: impl std::future::Future<Output = Result<()>>,
) -> Result<()> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        #[cfg(feature = "demo")]
        Threads::PerCore => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn init_logs(format: LogFormat, level: LogLevel) {
    init_logs_filtered(format, level, &[ENV_LOG]);
}

/// Logs filtered by the first of `filter_vars` that holds a valid filter, else `level`.
fn init_logs_filtered(format: LogFormat, level: LogLevel, filter_vars: &[&str]) {
    let filter = filter_vars
        .iter()
        .find_map(|var| tracing_subscriber::EnvFilter::try_from_env(var).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logwriter::StderrLines::new())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        // Same bytes as the default line and field formatters, fewer instructions (see
        // logline and logfmt).
        LogFormat::Text => builder
            .fmt_fields(logfmt::PlainFields)
            .event_format(logline::PlainFormat::default())
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|value| !value.is_empty())
}

fn config_source(args: &RunArgs) -> ConfigSource {
    ConfigSource {
        path: args.config.clone(),
        overrides: args.overrides.clone(),
        env: Box::new(process_env),
    }
}

fn load_config(args: &RunArgs) -> Result<Config> {
    config_source(args)
        .load()
        .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))
}

fn check(args: &RunArgs) -> Result<()> {
    init_logs(args.log_format, args.log_level);
    let config = load_config(args)?;
    if config.journal.enabled && config.journal.path.as_os_str().is_empty() {
        bail!(
            "invalid configuration:\njournal.path is not set and there is no state directory \
             for its default (STATE_DIRECTORY, XDG_STATE_HOME or HOME): set journal.path"
        );
    }
    let upstream = runtime::check_upstream(&config)?;
    if config.channels.len() > 1 {
        // Each channel's upstream, apis and secret are its own: on its line below, never
        // one channel's beside the top level's.
        out!(
            "configuration OK: listen {}, {} channels",
            config.listen,
            config.channels.len()
        );
    } else {
        out!(
            "configuration OK: listen {}, upstream {}, {} allowed routes (routes.apis: [{}]), channel secret from {}",
            config.listen,
            upstream,
            config.allowlist.routes().len(),
            config.allowlist.family_names(),
            config.credentials.secret_source
        );
    }
    // The channels found: with `credentials:`, the one named `default`.
    for channel in &config.channels {
        out!(
            "channel {}: channel id {}, {} ({}), apis [{}], listen {}, secret from {}{}",
            channel.name,
            channel.credentials.channel_id.to_str().unwrap_or("-"),
            channel.environment(),
            channel.upstream.url,
            channel.allowlist.family_names(),
            channel
                .listen
                .map_or_else(|| format!("{} (shared)", config.listen), |a| a.to_string()),
            channel.credentials.secret_source,
            match config.default_channel.as_deref() {
                Some(name) if name == channel.name && config.channels.len() > 1 =>
                    ", default_channel",
                _ => "",
            }
        );
    }
    if config.channels.len() > 1 && config.default_channel.is_none() {
        out!(
            "no default_channel: a call on {} without X-LinePay-Channel is refused (400 channel_required)",
            config.listen
        );
    }
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    init_logs(args.log_format, args.log_level);
    allocator::return_freed_memory_in_the_background();
    runtime::run(config_source(&args)).await?;
    Ok(())
}

fn calls_command(args: &CallsArgs) -> Result<()> {
    let mut overrides = Overrides::default();
    if let Some(journal) = &args.journal {
        overrides = overrides.set(
            "journal.path",
            "journal",
            vec![journal.to_string_lossy().into_owned()],
        );
    }
    let location = ConfigSource {
        path: args.config.clone(),
        overrides,
        env: Box::new(process_env),
    }
    .journal_location()
    .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))?;
    let path = location.path;
    if path.as_os_str().is_empty() {
        bail!("no journal path: no state directory is set ($STATE_DIRECTORY, $XDG_STATE_HOME or $HOME); give --journal, LINEPAY_SIDECAR_JOURNAL_PATH or journal.path in --config");
    }
    if !path.exists() {
        let set_by = location.set_by.map_or_else(
            || "the default; give --journal, LINEPAY_SIDECAR_JOURNAL_PATH or journal.path in --config".to_owned(),
            |origin| format!("from {origin}"),
        );
        bail!("no journal at {} ({set_by})", path.display());
    }
    let store = journal::Store::open_to_read(&path)?;
    let rows = store.query(&journal::Filter {
        transaction_id: args.transaction_id.clone(),
        order_id: args.order_id.clone(),
        request_id: args.request_id.clone(),
        pending: args.pending,
        limit: args.limit,
    })?;
    for row in rows {
        out!("{}", serde_json::to_string(&row)?);
    }
    Ok(())
}

fn healthcheck_command(args: &HealthcheckArgs) -> Result<()> {
    let listen = config_source(&args.run)
        .admin_listen()
        .map_err(|error| anyhow::anyhow!("invalid configuration:\n{error}"))?;
    if listen.port() == 0 {
        bail!("admin.listen {listen} has no fixed port to ask: give the sidecar's --admin-listen or LINEPAY_SIDECAR_ADMIN_LISTEN");
    }
    let address = healthcheck::target(listen);
    let path = if args.ready { "/readyz" } else { "/healthz" };
    let url = format!("http://{address}{path}");
    match healthcheck::get(address, path, args.timeout) {
        Ok(answer) if answer.status == 200 => {
            out!("healthy: GET {url}: 200 {}", answer.body);
            Ok(())
        }
        Ok(answer) => bail!(
            "unhealthy: GET {url}: {} {}",
            answer.status,
            answer.body.replace('\n', "; ")
        ),
        Err(reason) => bail!("unhealthy: GET {url}: {reason}"),
    }
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

    out!("X-LINE-ChannelId: {}", args.channel_id);
    out!("X-LINE-Authorization-Nonce: {nonce}");
    out!("X-LINE-Authorization: {signature}");
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
