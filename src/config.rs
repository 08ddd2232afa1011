//! Configuration: YAML file, then environment, then flags, validated into one typed
//! [`Config`].
//!
//! Two steps, as the house style asks: a raw serde shape where every struct denies
//! unknown keys (the YAML parser reports the line and the key), then [`validate`], which
//! collects every semantic problem at once with the key path and, where the parser kept
//! it, the line. The YAML crate is used only in [`from_yaml_str`], so it can be swapped.
//!
//! The channel secret never comes from the YAML in clear: only from
//! `LINEPAY_CHANNEL_SECRET` or from a file (a mounted Kubernetes Secret, a systemd
//! credential) named by the YAML, a flag or `LINEPAY_CHANNEL_SECRET_FILE`.

use crate::egress::{self, EgressConfig, RawEgress};
use crate::limit::{self, LimitsConfig, RawLimits};
use crate::route::{table_routes, Allowlist, Route, RouteTimeouts, V2_ROUTES, V3_ROUTES};
use crate::secret::Secret;
use http::HeaderValue;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_UPSTREAM: &str = "https://sandbox-api-pay.line.me";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_POOL_MAX_IDLE: usize = 32;
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9464";
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

pub const ENV_CHANNEL_ID: &str = "LINEPAY_CHANNEL_ID";
pub const ENV_CHANNEL_SECRET: &str = "LINEPAY_CHANNEL_SECRET";
pub const ENV_CHANNEL_SECRET_FILE: &str = "LINEPAY_CHANNEL_SECRET_FILE";

/// The validated configuration the proxy runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: UpstreamConfig,
    pub credentials: Credentials,
    pub request: RequestLimits,
    pub allowlist: Allowlist,
    pub limits: LimitsConfig,
    pub egress: EgressConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub reload: ReloadConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
    /// How often `/readyz`'s upstream check opens a connection to LINE Pay.
    pub probe_interval: Duration,
    /// Whether an unreachable LINE Pay makes `/readyz` fail. A native sidecar's readiness
    /// is the pod's, so `false` keeps a shop in its Service through a LINE Pay outage.
    pub ready_requires_upstream: bool,
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

#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub max_connections: usize,
}

/// Values given as command-line flags; each mirrors a config key and wins over it.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<String>,
    pub upstream_ca_file: Option<PathBuf>,
    pub channel_id: Option<String>,
    pub channel_secret_file: Option<PathBuf>,
    pub connect_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub max_body_bytes: Option<usize>,
    pub v2_legacy: bool,
    pub admin_listen: Option<SocketAddr>,
    pub drain_timeout: Option<Duration>,
    pub egress_bind_address: Option<IpAddr>,
    pub egress_proxy: Option<String>,
    pub egress_proxy_auth_file: Option<PathBuf>,
    /// Replaces `egress.pin` when not empty.
    pub egress_pin: Vec<IpAddr>,
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

// ---------------------------------------------------------------------------------------
// Raw shape of the YAML file.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub credentials: RawCredentials,
    #[serde(default)]
    pub request: RawRequest,
    #[serde(default)]
    pub routes: RawRoutes,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub egress: RawEgress,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub shutdown: RawShutdown,
    #[serde(default)]
    pub reload: RawReload,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<Spanned<String>>,
    pub probe_interval: Option<ConfigDuration>,
    pub ready_requires_upstream: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    pub watch_interval: Option<ConfigDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<Spanned<String>>,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Option<ConfigDuration>,
    pub read_timeout: Option<ConfigDuration>,
    pub max_response_bytes: Option<usize>,
    pub pool_idle_timeout: Option<ConfigDuration>,
    pub pool_max_idle_per_host: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    pub channel_id: Option<Spanned<String>>,
    pub channel_secret_file: Option<PathBuf>,
    /// Accepted by the parser only so that it can be refused with a useful message.
    pub channel_secret: Option<Spanned<serde::de::IgnoredAny>>,
    pub merchant_device_profile_id: Option<Spanned<String>>,
    pub merchant_device_type: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequest {
    pub max_body_bytes: Option<usize>,
    pub body_timeout: Option<ConfigDuration>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoutes {
    /// Also allow the v2 legacy table (secret in a header, no HMAC).
    #[serde(default)]
    pub v2_legacy: bool,
    /// Replaces the built-in v3 table when present.
    pub allow: Option<Vec<Spanned<RawRoute>>>,
    /// Per-route timeouts, keyed by route id (`POST /v3/payments/{transactionId}/confirm`).
    #[serde(default)]
    pub timeouts: BTreeMap<String, Spanned<RawTimeouts>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub method: String,
    pub path: String,
    pub connect_timeout: Option<ConfigDuration>,
    pub read_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect_timeout: Option<ConfigDuration>,
    pub read_timeout: Option<ConfigDuration>,
}

/// A duration written as `5s`, `250ms`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(ConfigDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `5s`, `250ms`, `2m`, `1h`; a bare number is refused because its unit would
/// be a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 5s or 250ms"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3600)),
        "" => {
            return Err(format!(
                "`{text}` needs a unit: ms, s, m or h (e.g. {text}s)"
            ))
        }
        _ => return Err(format!("`{text}` has an unknown unit: use ms, s, m or h")),
    };
    // Nothing here needs longer, and far larger values overflow clock arithmetic.
    if duration > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than the 24h this setting can take"
        ));
    }
    Ok(duration)
}

/// The longest duration any setting accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// The most concurrent app connections `request.max_connections` accepts.
pub const MAX_CONNECTIONS: usize = 65_535;

/// The one place the YAML crate is named.
pub fn from_yaml_str(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    // No source snippets in errors: the lines around a mistake could hold a secret
    // that someone pasted into the file.
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|error| error.to_string())
}

// ---------------------------------------------------------------------------------------
// Loading and validation.

/// Reads the file (if any), applies environment and flags, reads the secret, validates.
pub fn load(
    path: Option<&Path>,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let (raw, origin) = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                ConfigError::one(format!("{}: cannot read: {error}", path.display()))
            })?;
            let raw = from_yaml_str(&text)
                .map_err(|error| ConfigError::one(format!("{}: {error}", path.display())))?;
            (raw, path.display().to_string())
        }
        None => (RawConfig::default(), "flags".to_owned()),
    };
    validate(raw, &origin, overrides, env, &|path| std::fs::read(path))
}

/// Turns the raw file plus flags and environment into a [`Config`], collecting every
/// problem. `read_file` is how secret files are read (a parameter so tests need no disk).
pub fn validate(
    raw: RawConfig,
    origin: &str,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let at = |spanned_line: usize| format!("{origin}:{spanned_line}");

    let mut address =
        |flag: Option<SocketAddr>, key: &str, value: &Option<Spanned<String>>, default: &str| {
            address_setting(flag, key, value, default, &at)
                .map_err(|problem| problems.push(problem))
                .ok()
        };
    let listen = address(overrides.listen, "listen", &raw.listen, DEFAULT_LISTEN);
    let admin_listen = address(
        overrides.admin_listen,
        "admin.listen",
        &raw.admin.listen,
        DEFAULT_ADMIN_LISTEN,
    );
    if let (Some(proxy), Some(admin)) = (listen, admin_listen) {
        if proxy.port() == admin.port() && proxy.port() != 0 {
            problems.push(format!(
                "admin.listen {admin} and listen {proxy} share a port: the admin endpoints need their own"
            ));
        }
    }

    let upstream_url = match (&overrides.upstream, &raw.upstream.url) {
        (Some(url), _) => check_upstream_url(url).map_err(|e| format!("--upstream: {e}")),
        (None, Some(url)) => check_upstream_url(&url.value)
            .map_err(|e| format!("{}: upstream.url: {e}", at(url.referenced.line() as usize))),
        (None, None) => check_upstream_url(DEFAULT_UPSTREAM),
    }
    .map_err(|problem| problems.push(problem))
    .ok();

    let credentials = credentials(&raw.credentials, overrides, env, read_file, &at)
        .map_err(|mut found| problems.append(&mut found))
        .ok();

    let connect_default = overrides
        .connect_timeout
        .or(raw.upstream.connect_timeout.map(|d| d.0))
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let read_override = overrides
        .read_timeout
        .or(raw.upstream.read_timeout.map(|d| d.0));
    let allowlist = allowlist(
        &raw.routes,
        overrides.v2_legacy,
        connect_default,
        read_override,
        &at,
    )
    .map_err(|mut found| problems.append(&mut found))
    .ok();

    let max_body_bytes = overrides
        .max_body_bytes
        .or(raw.request.max_body_bytes)
        .unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        problems.push("request.max_body_bytes must be above 0".to_owned());
    }
    let max_connections = raw
        .request
        .max_connections
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 || max_connections > MAX_CONNECTIONS {
        problems.push(format!(
            "request.max_connections must be between 1 and {MAX_CONNECTIONS}"
        ));
    }
    let max_response_bytes = raw
        .upstream
        .max_response_bytes
        .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
    if max_response_bytes == 0 {
        problems.push("upstream.max_response_bytes must be above 0".to_owned());
    }

    let limits = allowlist.as_ref().and_then(|allowlist| {
        limit::validate(&raw.limits, allowlist, &at)
            .map_err(|mut found| problems.append(&mut found))
            .ok()
    });
    let egress = egress::validate(&raw.egress, overrides, env, read_file, &at)
        .map_err(|mut found| problems.append(&mut found))
        .ok();

    let probe_interval = raw
        .admin
        .probe_interval
        .map_or(DEFAULT_PROBE_INTERVAL, |d| d.0);
    if probe_interval.is_zero() {
        problems.push("admin.probe_interval must be above 0".to_owned());
    }

    match (
        listen,
        upstream_url,
        credentials,
        allowlist,
        limits,
        egress,
        admin_listen,
    ) {
        (
            Some(listen),
            Some(url),
            Some(credentials),
            Some(allowlist),
            Some(limits),
            Some(egress),
            Some(admin_listen),
        ) if problems.is_empty() => Ok(Config {
            listen,
            upstream: UpstreamConfig {
                url,
                ca_file: overrides
                    .upstream_ca_file
                    .clone()
                    .or(raw.upstream.ca_file.clone()),
                max_response_bytes,
                pool_idle_timeout: raw
                    .upstream
                    .pool_idle_timeout
                    .map_or(DEFAULT_POOL_IDLE_TIMEOUT, |d| d.0),
                pool_max_idle_per_host: raw
                    .upstream
                    .pool_max_idle_per_host
                    .unwrap_or(DEFAULT_POOL_MAX_IDLE),
            },
            credentials,
            request: RequestLimits {
                max_body_bytes,
                body_timeout: raw
                    .request
                    .body_timeout
                    .map_or(DEFAULT_BODY_TIMEOUT, |d| d.0),
                max_connections,
            },
            allowlist,
            limits,
            egress,
            admin: AdminConfig {
                listen: admin_listen,
                probe_interval,
                ready_requires_upstream: raw.admin.ready_requires_upstream.unwrap_or(true),
            },
            shutdown: ShutdownConfig {
                drain_timeout: overrides
                    .drain_timeout
                    .or(raw.shutdown.drain_timeout.map(|d| d.0))
                    .unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            },
            reload: ReloadConfig {
                watch_interval: raw
                    .reload
                    .watch_interval
                    .map_or(DEFAULT_WATCH_INTERVAL, |d| d.0),
            },
        }),
        _ => Err(ConfigError { problems }),
    }
}

/// A listen address: the flag, else the key (its line named on error), else the default.
fn address_setting(
    flag: Option<SocketAddr>,
    key: &str,
    value: &Option<Spanned<String>>,
    default: &str,
    at: &dyn Fn(usize) -> String,
) -> Result<SocketAddr, String> {
    if let Some(address) = flag {
        return Ok(address);
    }
    let Some(text) = value else {
        return default
            .parse()
            .map_err(|_| format!("{key}: the default {default} does not parse"));
    };
    text.value.parse().map_err(|_| {
        format!(
            "{}: {key}: `{}` is not an address such as {default}",
            at(text.referenced.line() as usize),
            text.value
        )
    })
}

/// An upstream is `https://host[:port]`, or `http://` to a loopback address only (the
/// emulator and tests): a payment call never crosses a network in clear.
pub fn check_upstream_url(text: &str) -> Result<http::Uri, String> {
    refuse_credentials(text, "LINE Pay needs none, remove them")?;
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("`{text}` is not a URL such as https://api-pay.line.me"))?;
    let Some(host) = uri.host() else {
        return Err(format!("`{text}` has no host"));
    };
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "`{text}` must be scheme and host only; the path comes from each call"
        ));
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(host) => {}
        Some("http") => {
            return Err(format!(
                "`{text}` is plain http to a non-loopback host; LINE Pay calls must use https:// (http:// is accepted only for 127.0.0.0/8, [::1] and localhost)"
            ))
        }
        _ => return Err(format!("`{text}` must start with https://")),
    }
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    http::Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|_| format!("`{text}` is not a valid upstream URL"))
}

/// Refuses `user:password@` in a URL without quoting the URL, whose text before `@`
/// would be a password.
pub(crate) fn refuse_credentials(text: &str, advice: &str) -> Result<(), String> {
    if text.contains('@') {
        return Err(format!(
            "the URL carries credentials (user:password@); {advice}"
        ));
    }
    Ok(())
}

/// `localhost`, or an address in 127.0.0.0/8 or `[::1]`: where plain http is allowed.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, String> {
    if value.is_empty() {
        return Err(format!("{name} is empty"));
    }
    HeaderValue::from_str(value)
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("{name} must be printable ASCII without spaces"))
}

fn credentials(
    raw: &RawCredentials,
    overrides: &Overrides,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
    at: &dyn Fn(usize) -> String,
) -> Result<Credentials, Vec<String>> {
    let mut problems = Vec::new();
    if let Some(secret) = &raw.channel_secret {
        problems.push(format!(
            "{}: credentials.channel_secret: the secret is never read from the YAML; mount it as a file and set credentials.channel_secret_file, or set {ENV_CHANNEL_SECRET}",
            at(secret.referenced.line() as usize)
        ));
    }

    let channel_id = overrides
        .channel_id
        .clone()
        .or_else(|| env(ENV_CHANNEL_ID))
        .or_else(|| raw.channel_id.as_ref().map(|s| s.value.clone()));
    let channel_id = match channel_id {
        None => {
            problems.push(format!(
                "no channel id: set {ENV_CHANNEL_ID}, --channel-id or credentials.channel_id"
            ));
            None
        }
        Some(id) => header_value("the channel id", id.trim())
            .map_err(|problem| problems.push(problem))
            .ok(),
    };

    // Flags beat the environment, which beats the file, as for every other key.
    let secret_file: Option<(PathBuf, &str)> = if let Some(path) = &overrides.channel_secret_file {
        Some((path.clone(), "--channel-secret-file"))
    } else if env(ENV_CHANNEL_SECRET).is_some() {
        None
    } else if let Some(path) = env(ENV_CHANNEL_SECRET_FILE) {
        Some((PathBuf::from(path), ENV_CHANNEL_SECRET_FILE))
    } else {
        raw.channel_secret_file
            .clone()
            .map(|path| (path, "credentials.channel_secret_file"))
    };
    let secret = match (&secret_file, env(ENV_CHANNEL_SECRET)) {
        (Some((path, source)), _) => read_secret(path, source, read_file),
        (None, Some(value)) => Ok((
            Secret::from_file_contents(value.into_bytes()),
            ENV_CHANNEL_SECRET.to_owned(),
        )),
        (None, None) => Err(format!(
            "no channel secret: set {ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE}, --channel-secret-file or credentials.channel_secret_file"
        )),
    };
    let secret = secret.map_err(|problem| problems.push(problem)).ok();
    let secret_file = secret_file.map(|(path, _)| path);

    let optional_header =
        |value: &Option<Spanned<String>>, key: &str, problems: &mut Vec<String>| {
            value.as_ref().and_then(|v| {
                header_value(key, &v.value)
                    .map_err(|problem| {
                        problems.push(format!(
                            "{}: credentials.{key}: {problem}",
                            at(v.referenced.line() as usize)
                        ))
                    })
                    .ok()
            })
        };
    let merchant_device_profile_id = optional_header(
        &raw.merchant_device_profile_id,
        "merchant_device_profile_id",
        &mut problems,
    );
    let merchant_device_type = optional_header(
        &raw.merchant_device_type,
        "merchant_device_type",
        &mut problems,
    );

    match (channel_id, secret) {
        (Some(channel_id), Some((channel_secret, secret_source))) if problems.is_empty() => {
            Ok(Credentials {
                channel_id,
                channel_secret,
                secret_source,
                secret_file,
                merchant_device_profile_id,
                merchant_device_type,
            })
        }
        _ => Err(problems),
    }
}

fn read_secret(
    path: &Path,
    source: &str,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<(Secret, String), String> {
    let contents = read_file(path)
        .map_err(|error| {
            // Say what would win over a file the user may not have meant to use.
            let hint = match source {
                "credentials.channel_secret_file" => format!(
                    " ({ENV_CHANNEL_SECRET}, {ENV_CHANNEL_SECRET_FILE} or --channel-secret-file, when set, win over this key)"
                ),
                ENV_CHANNEL_SECRET_FILE => format!(
                    " ({ENV_CHANNEL_SECRET} or --channel-secret-file, when set, win over this)"
                ),
                _ => String::new(),
            };
            format!("{source}: cannot read {}: {error}{hint}", path.display())
        })?;
    let secret = Secret::from_file_contents(contents);
    if secret.is_empty() {
        return Err(format!("{source}: {} is empty", path.display()));
    }
    Ok((secret, format!("{source} ({})", path.display())))
}

fn allowlist(
    raw: &RawRoutes,
    v2_flag: bool,
    connect_default: Duration,
    read_override: Option<Duration>,
    at: &dyn Fn(usize) -> String,
) -> Result<Allowlist, Vec<String>> {
    let mut problems = Vec::new();
    let mut routes = Vec::new();
    let builtin = |table: &[(&str, &str, u64)], routes: &mut Vec<Route>| {
        routes.extend(table_routes(table, connect_default, read_override));
    };

    match &raw.allow {
        None => builtin(V3_ROUTES, &mut routes),
        Some(entries) => {
            for entry in entries {
                let line = at(entry.referenced.line() as usize);
                let RawRoute {
                    method,
                    path,
                    connect_timeout,
                    read_timeout,
                } = &entry.value;
                let method = match method.to_ascii_uppercase().as_str() {
                    "GET" => http::Method::GET,
                    "POST" => http::Method::POST,
                    other => {
                        problems.push(format!(
                            "{line}: routes.allow: method `{other}` is not used by LINE Pay; use GET or POST"
                        ));
                        continue;
                    }
                };
                let route_timeouts = RouteTimeouts {
                    connect: connect_timeout.map_or(connect_default, |d| d.0),
                    read: read_timeout
                        .map(|d| d.0)
                        .or(read_override)
                        .unwrap_or(Duration::from_secs(20)),
                };
                match Route::new(method, path, route_timeouts) {
                    Ok(route) => routes.push(route),
                    Err(error) => problems.push(format!("{line}: routes.allow: {error}")),
                }
            }
        }
    }
    if raw.v2_legacy || v2_flag {
        builtin(V2_ROUTES, &mut routes);
    }

    for (id, entry) in &raw.timeouts {
        let line = at(entry.referenced.line() as usize);
        let Some(route) = routes.iter_mut().find(|r| r.id() == *id) else {
            problems.push(format!(
                "{line}: routes.timeouts: `{id}` is not an allowed route; write it as METHOD and template, e.g. `POST /v3/payments/{{transactionId}}/confirm`"
            ));
            continue;
        };
        if let Some(connect) = entry.value.connect_timeout {
            route.timeouts.connect = connect.0;
        }
        if let Some(read) = entry.value.read_timeout {
            route.timeouts.read = read.0;
        }
    }

    for route in &routes {
        if route.timeouts.connect.is_zero() || route.timeouts.read.is_zero() {
            problems.push(format!("route {}: timeouts must be above 0", route.id()));
        } else if route.timeouts.connect >= route.timeouts.read {
            // Otherwise a connection that never opens would be reported as a read
            // timeout, which tells the app the call may have been processed.
            problems.push(format!(
                "route {}: connect_timeout ({:?}) must be shorter than read_timeout ({:?}); lower upstream.connect_timeout (--connect-timeout) with it",
                route.id(),
                route.timeouts.connect,
                route.timeouts.read
            ));
        }
    }
    let mut ids: Vec<&str> = routes.iter().map(Route::id).collect();
    ids.sort();
    ids.dedup();
    if ids.len() != routes.len() {
        problems.push("routes.allow: a route is listed twice".to_owned());
    }
    if routes.is_empty() && problems.is_empty() {
        problems.push("routes.allow is empty: nothing could be forwarded".to_owned());
    }

    if problems.is_empty() {
        Ok(Allowlist::new(routes))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    const ENV: &[(&str, &str)] = &[
        (ENV_CHANNEL_ID, "1234567890"),
        (ENV_CHANNEL_SECRET, "s3cr3t-value"),
    ];

    fn no_files(path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} not found", path.display()),
        ))
    }

    fn check(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw = from_yaml_str(yaml).map_err(ConfigError::one)?;
        validate(raw, "sidecar.yaml", &Overrides::default(), env, &no_files)
    }

    #[test]
    fn defaults_with_only_env_credentials() {
        let config = check("", &env_with(ENV)).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.upstream.url.to_string(),
            "https://sandbox-api-pay.line.me/"
        );
        assert_eq!(config.request.max_body_bytes, 65536);
        assert_eq!(config.credentials.channel_id, "1234567890");
        assert_eq!(config.credentials.channel_secret.expose(), b"s3cr3t-value");
        assert_eq!(config.allowlist.routes().len(), V3_ROUTES.len());
        let confirm = config
            .allowlist
            .routes()
            .iter()
            .find(|r| r.template.ends_with("/confirm"))
            .unwrap();
        assert_eq!(confirm.timeouts.read, Duration::from_secs(40));
        assert_eq!(confirm.timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let error = check(
            "listen: 127.0.0.1:9000\nupstrem:\n  url: https://x\n",
            &env_with(ENV),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("upstrem"), "{error}");
        assert!(error.contains("line 2") || error.contains(":2:"), "{error}");
    }

    #[test]
    fn nested_unknown_key_is_rejected() {
        let error = check(
            "upstream:\n  url: https://x\n  timeout: 5s\n",
            &env_with(ENV),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("timeout"), "{error}");
        assert!(error.contains("line 3") || error.contains(":3:"), "{error}");
    }

    #[test]
    fn secret_in_yaml_is_refused_without_echoing_it() {
        let error = check(
            "credentials:\n  channel_id: \"1\"\n  channel_secret: hunter2hunter2\n",
            &env_with(ENV),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("channel_secret_file"), "{error}");
        assert!(error.contains("sidecar.yaml:3"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn parse_errors_never_quote_neighbouring_lines() {
        let yaml =
            "upstream:\n  connect_timeout: 5\ncredentials:\n  channel_secret: hunter2hunter2\n";
        let error = check(yaml, &env_with(ENV)).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(check_upstream_url("http://127.0.0.1:9000").is_ok());
        assert!(check_upstream_url("http://127.0.0.2:9000").is_ok());
        assert!(check_upstream_url("http://[::1]:9000").is_ok());
        assert!(check_upstream_url("http://localhost:9000").is_ok());
        assert!(check_upstream_url("https://api-pay.line.me").is_ok());
        let error = check_upstream_url("http://api-pay.line.me").unwrap_err();
        assert!(error.contains("https://"), "{error}");
        assert!(check_upstream_url("http://10.0.0.1").is_err());
        assert!(check_upstream_url("ftp://127.0.0.1").is_err());
        assert!(check_upstream_url("https://api-pay.line.me/v3").is_err());
    }

    #[test]
    fn missing_credentials_are_all_reported() {
        let error = check("", &env_with(&[])).unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        assert!(error.to_string().contains(ENV_CHANNEL_ID));
        assert!(error.to_string().contains(ENV_CHANNEL_SECRET));
    }

    #[test]
    fn secret_file_is_read_and_trimmed() {
        let raw = from_yaml_str(
            "credentials:\n  channel_id: \"42\"\n  channel_secret_file: /run/secret\n",
        )
        .unwrap();
        let config = validate(raw, "f", &Overrides::default(), &env_with(&[]), &|_| {
            Ok(b"from-file\n".to_vec())
        })
        .unwrap();
        assert_eq!(config.credentials.channel_secret.expose(), b"from-file");
        assert!(config.credentials.secret_source.contains("/run/secret"));
    }

    #[test]
    fn flags_override_the_file() {
        let raw =
            from_yaml_str("listen: 127.0.0.1:1\nupstream:\n  url: https://a.example\n").unwrap();
        let overrides = Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            upstream: Some("https://b.example".into()),
            connect_timeout: Some(Duration::from_secs(1)),
            read_timeout: Some(Duration::from_secs(3)),
            ..Overrides::default()
        };
        let config = validate(raw, "f", &overrides, &env_with(ENV), &no_files).unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.upstream.url.host(), Some("b.example"));
        assert!(config
            .allowlist
            .routes()
            .iter()
            .all(|r| r.timeouts.read == Duration::from_secs(3)));
    }

    #[test]
    fn per_route_timeouts_and_custom_allowlist() {
        let yaml = r#"
routes:
  v2_legacy: true
  allow:
    - method: POST
      path: /v3/payments/request
      read_timeout: 7s
    - method: GET
      path: /v3/payments
  timeouts:
    "GET /v3/payments":
      connect_timeout: 250ms
"#;
        let config = check(yaml, &env_with(ENV)).unwrap();
        let routes = config.allowlist.routes();
        assert_eq!(routes.len(), 2 + V2_ROUTES.len());
        assert_eq!(routes[0].timeouts.read, Duration::from_secs(7));
        assert_eq!(routes[1].timeouts.connect, Duration::from_millis(250));
        assert!(routes.iter().any(|r| r.legacy_v2));
    }

    #[test]
    fn timeouts_for_unknown_route_are_refused() {
        let yaml = "routes:\n  timeouts:\n    \"POST /v3/nope\":\n      read_timeout: 1s\n";
        let error = check(yaml, &env_with(ENV)).unwrap_err().to_string();
        assert!(error.contains("POST /v3/nope"), "{error}");
        assert!(error.contains("sidecar.yaml:4"), "{error}");
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        for (name, text) in [
            (
                "config/sidecar.yaml",
                include_str!("../config/sidecar.yaml"),
            ),
            (
                "config/minimal.yaml",
                include_str!("../config/minimal.yaml"),
            ),
        ] {
            let raw = from_yaml_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let config = validate(raw, name, &Overrides::default(), &env_with(&[]), &|_| {
                Ok(b"mounted-secret\n".to_vec())
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(config.credentials.channel_id, "1234567890", "{name}");
            assert_eq!(
                config.credentials.channel_secret.expose(),
                b"mounted-secret"
            );
        }
    }

    #[test]
    fn limits_that_would_overflow_are_refused() {
        assert!(parse_duration("25h").unwrap_err().contains("24h"));
        assert!(parse_duration("99999999999999999h").is_err());
        let error = check(
            "request:\n  max_connections: 4611686018427387904\n",
            &env_with(ENV),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("max_connections"), "{error}");
        let error = check(
            "upstream:\n  connect_timeout: 30s\n  read_timeout: 20s\n",
            &env_with(ENV),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("shorter than read_timeout"), "{error}");
    }

    #[test]
    fn upstream_credentials_are_refused_without_echoing_them() {
        let error = check_upstream_url("https://user:hunter2@api-pay.line.me").unwrap_err();
        assert!(error.contains("credentials"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn bad_addresses_are_named_with_their_lines() {
        let error = check(
            "listen: nope\nadmin:\n  listen: also-nope\n",
            &env_with(ENV),
        )
        .unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
        assert!(
            error.problems[0].starts_with("sidecar.yaml:1: listen: `nope`"),
            "{error}"
        );
        assert!(
            error.problems[1].starts_with("sidecar.yaml:3: admin.listen: `also-nope`"),
            "{error}"
        );
        let error = check("listen: 127.0.0.1:9464\n", &env_with(ENV)).unwrap_err();
        assert!(error.to_string().contains("share a port"), "{error}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        let error = check("upstream:\n  connect_timeout: 5\n", &env_with(ENV))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unit"), "{error}");
    }

    #[test]
    fn bad_method_and_template_are_reported_together() {
        let yaml = "routes:\n  allow:\n    - {method: DELETE, path: /v3/x}\n    - {method: GET, path: /v3/../x}\n";
        let error = check(yaml, &env_with(ENV)).unwrap_err();
        assert_eq!(error.problems.len(), 2, "{error}");
    }
}
