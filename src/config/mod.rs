//! Configuration: the YAML file, then environment variables, then flags, validated into
//! one typed [`Config`].
//!
//! - `raw.rs`: every key once, with its doc and flag (the docs table and the CLI come
//!   from it); `keys.rs`: the macro that makes that one definition do all three jobs.
//! - `sources.rs`: which source wins (flag > environment > file > default), decided once.
//! - `setting.rs`: a value with its origin, and the problem collector that names it
//!   (`sidecar.yaml:12: upstream.url: ...`, `--upstream: ...`).
//! - `units.rs` (durations, rates) and `urls.rs` (upstream, proxy and echo URLs): each
//!   rule once.
//! - `credentials.rs`, `routes.rs`, `limits.rs`, `egress.rs`: one section each, raw to
//!   typed. The typed results are the policy modules' own types ([`crate::route`],
//!   [`crate::limit`], [`crate::egress`]): those never import this module.
//!
//! The channel secret never comes from the YAML in clear: only from
//! `LINEPAY_CHANNEL_SECRET` or from a file (a mounted Kubernetes Secret, a systemd
//! credential) named by the YAML, a flag or `LINEPAY_CHANNEL_SECRET_FILE`.

#[macro_use]
mod keys;
mod channels;
pub mod cli;
mod credentials;
mod egress;
mod journal;
mod limits;
mod prevalidation;
mod raw;
mod routes;
mod setting;
mod sources;
mod state;
mod units;
mod urls;

pub use channels::{valid_name as valid_channel_name, LEGACY_CHANNEL};
pub use credentials::{ENV_CHANNEL_ID, ENV_CHANNEL_SECRET, ENV_CHANNEL_SECRET_FILE};
pub use egress::ENV_EGRESS_PROXY_AUTH_FILE;
pub use keys::KeyDoc;
pub use sources::Overrides;
pub use units::{parse_duration, MAX_DURATION};
pub use urls::check_upstream_url;

use crate::egress::EgressConfig;
use crate::limit::LimitsConfig;
use crate::route::Allowlist;
use crate::secret::Secret;
use crate::state::StateConfig;
use crate::validate::PrevalidationConfig;
use http::HeaderValue;
use keys::Section;
use raw::RawConfig;
use setting::{Problems, Setting};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_UPSTREAM: &str = "https://sandbox-api-pay.line.me";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// What all calls together may buffer: fits, with the process's own ~20 MiB and the
/// connections' partial heads, in the 128 Mi of deploy/kubernetes (docs/operating.md).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 32 * 1024 * 1024;
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle upstream connections kept per proxy worker. The pool is per worker (one per core,
/// src/runtime/workers.rs) and a burst of callers may all land on one worker: 64 keeps a
/// warm connection for each of 64 callers there (nginx's `keepalive 64` per worker), so
/// the default is the fast configuration. With 32, a worker holding more than 32 of 64
/// benchmark connections opened and closed upstream connections under load
/// (benches/README.md). Each costs a file descriptor, counted in `runtime::fds::needed`.
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// Loopback: on a VM the admin port stays on the host unless asked. In a pod the kubelet
/// and Prometheus come over the pod IP, so the Kubernetes and compose examples set
/// `0.0.0.0:9464` explicitly.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// The journal's file name in its state directory (see [`default_journal_path`]).
pub const JOURNAL_FILE_NAME: &str = "journal.sqlite3";
pub const DEFAULT_JOURNAL_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEFAULT_JOURNAL_MAX_CALLS: usize = 1_000_000;
pub const DEFAULT_RECONCILE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most concurrent app connections `request.max_connections` accepts.
pub const MAX_CONNECTIONS: usize = 65_535;

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: UpstreamConfig,
    /// The primary channel's credentials (the `default_channel`, else the first by name;
    /// with `credentials:`, the one channel): what the admin probe and `check` name.
    /// Calls sign with their own channel's, in [`Config::channels`].
    pub credentials: Credentials,
    pub request: RequestLimits,
    /// Every route some channel may call (the union of the channels' allowlists, which
    /// with one channel is its own): what limits, timeouts and the journal are checked
    /// against. A call is matched against its own channel's.
    pub allowlist: Allowlist,
    /// The channels, by name; with `credentials:`, one named [`LEGACY_CHANNEL`].
    pub channels: Vec<ChannelConfig>,
    /// The channel of a call on the shared `listen` that names none; `None` (only with
    /// several channels and no `default_channel`): such a call is refused.
    pub default_channel: Option<String>,
    pub(crate) limits: LimitsConfig,
    pub(crate) prevalidation: PrevalidationConfig,
    pub response: ResponseConfig,
    pub(crate) egress: EgressConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub reload: ReloadConfig,
    pub journal: JournalConfig,
    /// `state:`: local, or shared by every sidecar of the channel on Redis.
    pub(crate) state: StateConfig,
}

/// `journal:`: where money calls are recorded, for how long, and whether uncertain
/// ones are checked with LINE Pay. Restart-only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    pub enabled: bool,
    pub path: PathBuf,
    pub max_age: Duration,
    pub max_calls: usize,
    pub reconcile: bool,
    pub reconcile_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// How often `/readyz`'s upstream check opens a connection to LINE Pay.
    pub probe_interval: Duration,
    /// Whether an unreachable LINE Pay makes `/readyz` fail (default `false`: readiness
    /// is this process's; LINE Pay's health is the `upstream_up` gauge and its alert).
    /// A native sidecar's readiness is the pod's, so `true` takes a shop out of its
    /// Service through a LINE Pay outage.
    pub ready_requires_upstream: bool,
    /// Who may read the call journal on `GET /calls`.
    pub calls: CallsAccess,
}

/// `admin.calls`: which peers of the admin listener `/calls` answers. The journal names
/// transactions, orders, amounts and idempotency keys, and the admin port has no
/// authentication; a pod's admin listener is on the pod IP for the kubelet and
/// Prometheus, so by default `/calls` answers loopback peers only (`kubectl
/// port-forward` and `kubectl exec` arrive on loopback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallsAccess {
    /// Peers on 127.0.0.0/8 and ::1 only (the default).
    Loopback,
    /// Every peer that reaches the admin listener (its network protects it).
    Any,
    /// Nobody: `/calls` answers 404 `calls_off`.
    Off,
}

impl CallsAccess {
    pub fn parse(text: &str) -> Option<CallsAccess> {
        match text {
            "loopback" => Some(CallsAccess::Loopback),
            "any" => Some(CallsAccess::Any),
            "off" => Some(CallsAccess::Off),
            _ => None,
        }
    }

    /// Whether a peer at `peer` may read `/calls`.
    pub fn allows(self, peer: std::net::IpAddr) -> bool {
        match self {
            CallsAccess::Loopback => peer.is_loopback() || is_mapped_loopback(peer),
            CallsAccess::Any => true,
            CallsAccess::Off => false,
        }
    }
}

/// `::ffff:127.0.0.1`, how a dual-stack listener sees an IPv4 loopback peer.
fn is_mapped_loopback(peer: std::net::IpAddr) -> bool {
    match peer {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseConfig {
    /// LINE Pay's 19-digit ids written as JSON strings in its answers (for JavaScript),
    /// unless the app's `X-LinePay-Ids-As-Strings` header says otherwise for a call.
    pub ids_as_strings: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// How long calls in flight may take to finish after SIGTERM.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// How often the config and secret files are checked for changes; zero turns the
    /// check off (SIGHUP still reloads).
    pub watch_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Scheme and authority only, e.g. `https://api-pay.line.me`.
    pub url: http::Uri,
    /// PEM file of extra CA certificates trusted besides the public web roots.
    pub ca_file: Option<PathBuf>,
    pub max_response_bytes: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone)]
pub struct Credentials {
    pub channel_id: HeaderValue,
    pub channel_secret: Secret,
    /// Where the secret came from, for the start-up log (never the value).
    pub secret_source: String,
    /// The file the secret was read from, watched for rotation; `None` when it came
    /// from the environment.
    pub secret_file: Option<PathBuf>,
    pub merchant_device_profile_id: Option<HeaderValue>,
    pub merchant_device_type: Option<HeaderValue>,
}

/// One LINE Pay channel (merchant): who its calls sign as, what they may call, where
/// they go, and where it is served.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// The config's name for it: `X-LinePay-Channel`, the `channel` label and log field.
    pub name: String,
    pub credentials: Credentials,
    pub allowlist: Allowlist,
    /// `upstream:` with this channel's `url`.
    pub upstream: UpstreamConfig,
    /// An address served only as this channel.
    pub listen: Option<SocketAddr>,
    /// This channel's own bucket, checked besides `limits:`.
    pub(crate) limit: Option<crate::limit::Bucket>,
}

impl ChannelConfig {
    /// `sandbox`, `production` or `other`, from the upstream URL's host: said in the
    /// start-up line, logs and metrics, since production credentials also work on the
    /// sandbox and a mix-up would go unnoticed.
    pub fn environment(&self) -> &'static str {
        environment(&self.upstream.url)
    }
}

/// `sandbox`, `production` or `other` for an upstream base URL.
pub fn environment(url: &http::Uri) -> &'static str {
    match url.host() {
        Some("sandbox-api-pay.line.me") => "sandbox",
        Some("api-pay.line.me") => "production",
        _ => "other",
    }
}

#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// Bytes all calls together may hold in memory.
    pub max_buffered_bytes: usize,
    /// How long an answer may stay unread by the app before its connection is cut.
    pub write_timeout: Duration,
    /// Request headers forwarded besides the built-in ones (checked by
    /// `forward::check_extra`).
    pub forward_headers: Vec<http::HeaderName>,
}

/// Everything wrong with a configuration, one problem per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

/// Every key of the file, in file order, with its doc and flag.
pub fn keys() -> Vec<KeyDoc> {
    let mut keys = Vec::new();
    RawConfig::keys("", &mut keys);
    keys
}

/// The raw file, as the YAML crate reads it (the one place that crate is named), with
/// the problems it could read past.
pub struct RawFile(RawConfig, Vec<(setting::Origin, String)>);

/// Parses the YAML text of a configuration file (nothing validated yet). An `Err` is a
/// problem that stops the reading (bad YAML, a value of the wrong type), with its line
/// when known; problems it can read past wait in the [`RawFile`] for [`validate`].
pub fn from_yaml_str(text: &str) -> Result<RawFile, YamlError> {
    if text.trim().is_empty() {
        return Ok(RawFile(RawConfig::default(), Vec::new()));
    }
    // No source snippets in errors: the lines around a mistake could hold a secret
    // that someone pasted into the file.
    let options = serde_saphyr::options! { with_snippet: false };
    setting::take_deferred();
    let result = serde_saphyr::from_str_with_options::<RawConfig>(text, options);
    let deferred = setting::take_deferred();
    result
        .map(|raw| RawFile(raw, deferred))
        .map_err(|error| YamlError {
            line: error.location().map(|at| at.line()),
            message: error.to_string(),
        })
}

/// A YAML file that cannot be read as a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub line: Option<u64>,
    pub message: String,
}

impl YamlError {
    /// `file:line: message`, as every other problem of a file is written.
    pub fn in_file(&self, file: &str) -> String {
        match self.line {
            Some(line) => format!("{file}:{line}: {}", self.message),
            None => format!("{file}: {}", self.message),
        }
    }
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl RawFile {
    /// The problems found while reading, as `Problems` entries.
    fn report(&self, problems: &mut Problems) {
        for (origin, problem) in &self.1 {
            problems.at_origin(origin, problem);
        }
    }
}

/// Where the call journal is, and what set it: for `calls` and `demo`, which need no
/// credentials but must find the journal the sidecar writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLocation {
    pub path: PathBuf,
    /// `--journal-path`, `LINEPAY_SIDECAR_JOURNAL_PATH` or `sidecar.yaml:12`; `None`
    /// when no source names it and the default applies.
    pub set_by: Option<String>,
}

/// `journal.path` alone, from the same file, variables and flags as [`load`] (same
/// precedence, same default), without validating anything else.
pub fn load_journal_location(
    path: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JournalLocation, ConfigError> {
    let (raw, origin) = read_file(path)?;
    let mut problems = Problems::new(&origin);
    raw.report(&mut problems);
    let mut raw = raw.0;
    sources::layer(&mut raw, &keys(), overrides, env, &mut problems);
    let set_by = raw
        .journal
        .path
        .as_ref()
        .map(|setting| setting.origin.describe(problems.file()));
    let journal = journal::validate(&raw.journal, env, &mut problems);
    if problems.is_empty() {
        Ok(JournalLocation {
            path: journal.path,
            set_by,
        })
    } else {
        Err(ConfigError {
            problems: problems.into_list(),
        })
    }
}

/// Where the journal goes without `journal.path`: a state directory, never the working
/// directory (which a restart in another directory would lose). `$STATE_DIRECTORY`
/// (systemd's `StateDirectory=`; its first entry), else
/// `$XDG_STATE_HOME/linepay-sidecar/`, else `$HOME/.local/state/linepay-sidecar/`, each
/// only when absolute; `None` when none is set.
pub fn default_journal_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let absolute = |name: &str| {
        env(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let state_directory = env("STATE_DIRECTORY")
        .and_then(|list| list.split(':').next().map(PathBuf::from))
        .filter(|path| path.is_absolute());
    let dir = state_directory
        .or_else(|| absolute("XDG_STATE_HOME").map(|base| base.join("linepay-sidecar")))
        .or_else(|| absolute("HOME").map(|home| home.join(".local/state/linepay-sidecar")))?;
    Some(dir.join(JOURNAL_FILE_NAME))
}

/// Reads the file (if any), applies environment and flags, reads the secret, validates.
pub fn load(
    path: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (raw, origin) = read_file(path)?;
    validate(raw, &origin, overrides, env, &|path| std::fs::read(path))
}

/// `admin.listen` alone, from the same file, variables and flags as [`load`] (same
/// precedence), without validating anything else: what `healthcheck` needs, which has
/// no credentials to read.
pub fn load_admin_listen(
    path: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SocketAddr, ConfigError> {
    let (raw, origin) = read_file(path)?;
    let mut problems = Problems::new(&origin);
    raw.report(&mut problems);
    let mut raw = raw.0;
    sources::layer(&mut raw, &keys(), overrides, env, &mut problems);
    let admin_listen = address(
        &mut problems,
        &raw.admin.listen,
        "admin.listen",
        DEFAULT_ADMIN_LISTEN,
    );
    match admin_listen {
        Some(address) if problems.is_empty() => Ok(address),
        _ => Err(ConfigError {
            problems: problems.into_list(),
        }),
    }
}

/// The file's raw keys and its name for messages (`flags` when there is no file).
fn read_file(path: Option<&Path>) -> Result<(RawFile, String), ConfigError> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigError::one(format!("{}: cannot read: {error}", path.display()))
            })?;
            let raw = from_yaml_str(&text)
                .map_err(|error| ConfigError::one(error.in_file(&path.display().to_string())))?;
            Ok((raw, path.display().to_string()))
        }
        None => Ok((
            RawFile(RawConfig::default(), Vec::new()),
            "flags".to_owned(),
        )),
    }
}

/// Turns the raw file plus flags and environment into a [`Config`], collecting every
/// problem. `origin` names the file in messages; `read_file` is how secret files are
/// read (a parameter so tests need no disk).
pub fn validate(
    raw: RawFile,
    origin: &str,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Config, ConfigError> {
    let mut problems = Problems::new(origin);
    raw.report(&mut problems);
    let mut raw = raw.0;
    sources::layer(&mut raw, &keys(), overrides, env, &mut problems);

    let listen = address(&mut problems, &raw.listen, "listen", DEFAULT_LISTEN);
    let admin_listen = address(
        &mut problems,
        &raw.admin.listen,
        "admin.listen",
        DEFAULT_ADMIN_LISTEN,
    );
    if let (Some(proxy), Some(admin)) = (listen, admin_listen) {
        if proxy.port() == admin.port() && proxy.port() != 0 {
            problems.push(format!(
                "admin.listen {admin} and listen {proxy} share a port: the admin endpoints need their own"
            ));
        }
    }

    let upstream_url = match &raw.upstream.url {
        Some(url) => problems.check(url, "upstream.url", check_upstream_url(&url.value)),
        None => problems.take(check_upstream_url(DEFAULT_UPSTREAM).map_err(|e| vec![e])),
    };

    let max_body_bytes = number(&raw.request.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        problems.about(
            &raw.request.max_body_bytes,
            "request.max_body_bytes",
            "must be above 0",
        );
    }
    let max_connections = number(&raw.request.max_connections, DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 || max_connections > MAX_CONNECTIONS {
        problems.about(
            &raw.request.max_connections,
            "request.max_connections",
            format!("must be between 1 and {MAX_CONNECTIONS}"),
        );
    }
    let max_buffered_bytes = number(&raw.request.max_buffered_bytes, DEFAULT_MAX_BUFFERED_BYTES);
    if max_buffered_bytes < max_body_bytes {
        problems.about(
            &raw.request.max_buffered_bytes,
            "request.max_buffered_bytes",
            format!("{max_buffered_bytes} must be at least request.max_body_bytes ({max_body_bytes}): no call with a full body could be taken"),
        );
    }
    let write_timeout = duration(&raw.request.write_timeout, DEFAULT_WRITE_TIMEOUT);
    if write_timeout.is_zero() {
        problems.about(
            &raw.request.write_timeout,
            "request.write_timeout",
            "must be above 0",
        );
    }
    let forward_headers: Vec<http::HeaderName> = raw
        .request
        .forward_headers
        .iter()
        .flat_map(|list| list.value.iter())
        .filter_map(|entry| {
            problems.check(
                entry,
                "request.forward_headers",
                crate::forward::check_extra(&entry.value),
            )
        })
        .collect();
    let max_response_bytes = number(&raw.upstream.max_response_bytes, DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 {
        problems.about(
            &raw.upstream.max_response_bytes,
            "upstream.max_response_bytes",
            "must be above 0",
        );
    }

    let upstream = upstream_url.map(|url| UpstreamConfig {
        url,
        ca_file: raw.upstream.ca_file.clone().map(|setting| setting.value),
        max_response_bytes,
        pool_idle_timeout: duration(&raw.upstream.pool_idle_timeout, DEFAULT_POOL_IDLE_TIMEOUT),
        pool_max_idle_per_host: number(&raw.upstream.pool_max_idle_per_host, DEFAULT_POOL_MAX_IDLE),
    });
    let channels = upstream.as_ref().and_then(|upstream| {
        channels::validate(
            &raw,
            upstream,
            listen,
            admin_listen,
            env,
            read_file,
            &mut problems,
        )
    });
    let (credentials, allowlist, channels, default_channel) = match channels {
        // The old single channel: `credentials:` and `routes:`, named `default`.
        None if raw.channels.is_empty() => {
            let credentials =
                credentials::validate(&raw.credentials, env, read_file, &mut problems);
            let allowlist = routes::validate(&raw.routes, &raw.upstream, &mut problems);
            if let Some(name) = raw
                .default_channel
                .as_ref()
                .filter(|name| name.value.trim() != LEGACY_CHANNEL)
            {
                problems.at(
                    &name.origin,
                    "default_channel",
                    format!("`{}` names no channel: without channels:, the one channel (credentials:) is `{LEGACY_CHANNEL}`", name.value),
                );
            }
            let channel = match (&credentials, &allowlist, &upstream) {
                (Some(credentials), Some(allowlist), Some(upstream)) => vec![ChannelConfig {
                    name: LEGACY_CHANNEL.to_owned(),
                    credentials: credentials.clone(),
                    allowlist: allowlist.clone(),
                    upstream: upstream.clone(),
                    listen: None,
                    limit: None,
                }],
                _ => Vec::new(),
            };
            (
                credentials,
                allowlist,
                channel,
                Some(LEGACY_CHANNEL.to_owned()),
            )
        }
        None => (None, None, Vec::new(), None),
        Some(channels) => {
            // `routes.apis` is reported once here; the union of the channels' families is
            // what limits, timeouts and the journal are checked against.
            let before = problems.len();
            let _ = routes::top_families(&raw.routes, &mut problems);
            // From the file's channels, not the valid ones: a channel refused for its
            // secret must not make another's route timeouts look unknown.
            let mut quiet = Problems::new(origin);
            let mut families: Vec<crate::route::ApiFamily> = raw
                .channels
                .values()
                .flat_map(|channel| {
                    routes::channel_families(&raw.routes, channel.value.apis.as_ref(), &mut quiet)
                })
                .collect();
            families.sort();
            families.dedup();
            let allowlist =
                routes::build(&raw.routes, families, &raw.upstream, &mut problems, true)
                    .filter(|_| problems.len() == before);
            let default_channel =
                channels::default_channel(&raw.default_channel, &raw, &mut problems);
            let primary = default_channel
                .as_deref()
                .and_then(|name| channels.iter().find(|c| c.name == name))
                .or(channels.first());
            let credentials = primary.map(|channel| channel.credentials.clone());
            (credentials, allowlist, channels, default_channel)
        }
    };

    let limits = allowlist
        .as_ref()
        .and_then(|allowlist| limits::validate(&raw.limits, allowlist, &mut problems));
    let egress = egress::validate(&raw.egress, read_file, &mut problems);
    let prevalidation = prevalidation::validate(&raw.prevalidation, &mut problems);
    let journal = journal::validate(&raw.journal, env, &mut problems);
    let state = state::validate(&raw.state, read_file, &mut problems);
    if matches!(state, StateConfig::Redis(_)) && raw.channels.len() > 1 {
        // The shared guards' key space is one channel's (src/state/keys.rs); several
        // channels on one Redis would share one key space, so it is refused, not half done.
        problems.push(format!(
            "state.backend: redis serves one channel per sidecar for now, and channels: names {}; \
             run one sidecar per channel with the shared state, or use state.backend: local",
            raw.channels.len()
        ));
    }

    let calls_access = match &raw.admin.calls {
        None => CallsAccess::Loopback,
        Some(setting) => CallsAccess::parse(&setting.value).unwrap_or_else(|| {
            problems.about(
                &raw.admin.calls,
                "admin.calls",
                format!("must be loopback, any or off, not {:?}", setting.value),
            );
            CallsAccess::Loopback
        }),
    };
    let probe_interval = duration(&raw.admin.probe_interval, DEFAULT_PROBE_INTERVAL);
    if probe_interval.is_zero() {
        problems.about(
            &raw.admin.probe_interval,
            "admin.probe_interval",
            "must be above 0",
        );
    }

    match (
        listen,
        upstream,
        credentials,
        allowlist,
        limits,
        egress,
        admin_listen,
    ) {
        (
            Some(listen),
            Some(upstream),
            Some(credentials),
            Some(allowlist),
            Some(limits),
            Some(egress),
            Some(admin_listen),
        ) if problems.is_empty() && !channels.is_empty() => Ok(Config {
            listen,
            upstream,
            credentials,
            channels,
            default_channel,
            request: RequestLimits {
                max_body_bytes,
                body_timeout: duration(&raw.request.body_timeout, DEFAULT_BODY_TIMEOUT),
                max_connections,
                max_buffered_bytes,
                write_timeout,
                forward_headers,
            },
            allowlist,
            limits,
            prevalidation,
            response: ResponseConfig {
                ids_as_strings: flag(&raw.response.ids_as_strings, false),
            },
            egress,
            admin: AdminConfig {
                listen: admin_listen,
                probe_interval,
                ready_requires_upstream: flag(&raw.admin.ready_requires_upstream, false),
                calls: calls_access,
            },
            shutdown: ShutdownConfig {
                drain_timeout: duration(&raw.shutdown.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
            },
            reload: ReloadConfig {
                watch_interval: duration(&raw.reload.watch_interval, DEFAULT_WATCH_INTERVAL),
            },
            journal,
            state,
        }),
        _ => Err(ConfigError {
            problems: problems.into_list(),
        }),
    }
}

/// A duration key's value, or its default.
fn duration(setting: &Option<Setting<units::ConfigDuration>>, default: Duration) -> Duration {
    setting.as_ref().map_or(default, |setting| setting.value.0)
}

fn number(setting: &Option<Setting<usize>>, default: usize) -> usize {
    setting.as_ref().map_or(default, |setting| setting.value)
}

fn flag(setting: &Option<Setting<bool>>, default: bool) -> bool {
    setting.as_ref().map_or(default, |setting| setting.value)
}

/// A listen address: the key's value (its origin named on error), else the default.
fn address(
    problems: &mut Problems,
    setting: &Option<Setting<String>>,
    key: &str,
    default: &str,
) -> Option<SocketAddr> {
    let Some(setting) = setting else {
        return problems.take(
            default
                .parse()
                .map_err(|_| vec![format!("{key}: the default {default} does not parse")]),
        );
    };
    let text = setting.value.trim();
    problems.check(
        setting,
        key,
        text.parse()
            .map_err(|_| format!("`{text}` is not an address such as {default}")),
    )
}

#[cfg(test)]
mod tests;

/// The `limits:` section of `yaml` checked against `allowlist`, for the limiters' tests.
#[cfg(test)]
pub(crate) fn limits_from_yaml(
    yaml: &str,
    allowlist: &Allowlist,
) -> Result<LimitsConfig, Vec<String>> {
    let raw = from_yaml_str(yaml).map_err(|e| vec![e.in_file("sidecar.yaml")])?;
    let mut problems = Problems::new("sidecar.yaml");
    raw.report(&mut problems);
    match limits::validate(&raw.0.limits, allowlist, &mut problems) {
        Some(limits) if problems.is_empty() => Ok(limits),
        _ => Err(problems.into_list()),
    }
}

/// The file with the environment and flags applied, and the problems that cost: for
/// the section validators' tests.
#[cfg(test)]
pub(crate) fn layered(
    raw: RawFile,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> (RawConfig, Problems) {
    let mut problems = Problems::new("sidecar.yaml");
    raw.report(&mut problems);
    let mut raw = raw.0;
    sources::layer(&mut raw, &keys(), overrides, env, &mut problems);
    (raw, problems)
}
