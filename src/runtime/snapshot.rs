//! What the running process is built from, and what a reload may change.
//!
//! The snapshot every call reads is a [`Proxy`]: configuration, signer, upstream client
//! and limiters. A reload builds a new one; what it may reuse from the running one is
//! decided by comparing typed values, never by a list kept beside a constructor:
//! - the upstream client, when its [`ClientSettings`] (what [`Upstream::new`] is built
//!   from) are equal, so a secret rotation keeps the warm TLS connections to LINE Pay;
//! - the limiters, when the `limits` section is equal, so a reload cannot refill every
//!   bucket;
//! - per channel (by name): its upstream client, when its settings are equal (a rotated
//!   secret of one channel keeps every channel's connections), and its bucket when its
//!   shape is equal.
//!
//! The set of channels and their `listen` addresses are restart-only: a reload that
//! adds, removes or moves a channel is refused as a whole (the listeners are bound once)
//! and says so; the running configuration keeps serving.
//!
//! The keys read once at start-up are one typed value too, [`RestartOnly`]: the runtime
//! binds and drains from it, and a reload that changes it says which keys by name.

use super::preflight::{preflight, PreflightError};
use crate::budget::Budget;
use crate::channel::Channel;
use crate::config::Config;
use crate::config::{CallsAccess, JournalConfig};
use crate::egress::ExpectIpConfig;
use crate::journal::Desk;
use crate::limit::ChannelLimiter;
use crate::limit::Limits;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::state::{SharedState, StateConfig};
use crate::upstream::{ClientSettings, Upstream, UpstreamBuildError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot set up the upstream client: {0}")]
    Egress(PreflightError),
    #[error("cannot set up the upstream client: {0}")]
    Upstream(UpstreamBuildError),
}

/// Builds the upstream client for a configuration, after checking that this host holds
/// `egress.bind_address`: what start-up, `check` and a reload that cannot reuse the
/// running client do.
pub(crate) fn build_upstream(config: &Config) -> Result<Upstream, BuildError> {
    build_client(ClientSettings::from_config(config))
}

/// What `check` does: builds the upstream client as a start would, and says where it
/// sends calls.
pub fn check_upstream(config: &Config) -> Result<http::Uri, BuildError> {
    build_upstream(config).map(|upstream| upstream.base().clone())
}

fn build_client(settings: ClientSettings) -> Result<Upstream, BuildError> {
    preflight(settings.egress()).map_err(BuildError::Egress)?;
    Upstream::new(settings).map_err(BuildError::Upstream)
}

/// Builds the snapshot for one configuration: at start (`previous` is `None`) and on
/// every reload, reusing what `previous` built when its inputs are unchanged.
pub(crate) fn build_proxy(
    config: Config,
    metrics: Arc<Metrics>,
    desk: Arc<Desk>,
    state: &SharedState,
    previous: Option<&Proxy>,
) -> Result<Proxy, BuildError> {
    // One budget for the life of the process (its size is restart-only): a reload must
    // not forget what the calls in flight hold.
    let budget = match previous {
        Some(previous) => previous.budget().clone(),
        None => Budget::new(config.request.max_buffered_bytes),
    };
    let limits = match previous.filter(|p| p.config().limits == config.limits) {
        Some(previous) => previous.limits().clone(),
        None => Arc::new(
            Limits::new(&config.limits, state.limits())
                .with_shadow_metric(metrics.rate_limited_shadow.clone())
                .with_fallback_metric(metrics.rate_limit_fallbacks.clone()),
        ),
    };
    // Clients by their settings: channels on the same upstream share one (and its pool),
    // and one still fit from the running snapshot is kept.
    let mut clients: Vec<Arc<Upstream>> = Vec::new();
    let mut channels = Vec::with_capacity(config.channels.len());
    for channel in &config.channels {
        let settings = ClientSettings::for_channel(&config, channel);
        let reusable = |client: &&Arc<Upstream>| client.settings().can_serve(&settings);
        let running = previous
            .into_iter()
            .flat_map(|p| p.channels().iter().map(|c| &c.upstream))
            .find(reusable)
            .cloned();
        let upstream = match clients.iter().find(reusable).cloned().or(running) {
            Some(client) => client,
            None => Arc::new(build_client(settings)?),
        };
        if !clients.iter().any(|c| Arc::ptr_eq(c, &upstream)) {
            clients.push(upstream.clone());
        }
        let limiter = channel.limit.as_ref().map(|bucket| {
            previous
                .and_then(|p| p.channels().iter().find(|c| *c.name == *channel.name))
                .and_then(|c| c.limiter.clone())
                .filter(|limiter| limiter.bucket() == bucket)
                .unwrap_or_else(|| Arc::new(ChannelLimiter::new(bucket)))
        });
        channels.push(Channel::new(channel.clone(), upstream, limiter));
    }
    let primary = config
        .default_channel
        .as_deref()
        .and_then(|name| channels.iter().find(|c| &*c.name == name))
        .or(channels.first())
        .map(|channel| channel.upstream.clone());
    let upstream = match primary {
        Some(upstream) => upstream,
        // Config validation guarantees a channel; a client for the top level otherwise.
        None => Arc::new(build_client(ClientSettings::from_config(&config))?),
    };
    Ok(Proxy::new(
        config, channels, upstream, limits, metrics, desk, budget,
    ))
}

/// The keys read once at start-up: the running process keeps their values until it
/// restarts, whatever a reload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestartOnly {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) admin_calls: CallsAccess,
    pub(crate) max_connections: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) expect_ip: Option<ExpectIpConfig>,
    pub(crate) journal: JournalConfig,
    pub(crate) state: StateConfig,
    /// The channels by name, with their own `listen`: listeners are bound once.
    pub(crate) channels: Vec<(String, Option<SocketAddr>)>,
}

impl RestartOnly {
    pub(crate) fn from_config(config: &Config) -> RestartOnly {
        RestartOnly {
            listen: config.listen,
            admin_listen: config.admin.listen,
            admin_calls: config.admin.calls,
            max_connections: config.request.max_connections,
            max_buffered_bytes: config.request.max_buffered_bytes,
            write_timeout: config.request.write_timeout,
            drain_timeout: config.shutdown.drain_timeout,
            expect_ip: config.egress.expect_ip.clone(),
            journal: config.journal.clone(),
            state: config.state.clone(),
            channels: config
                .channels
                .iter()
                .map(|channel| (channel.name.clone(), channel.listen))
                .collect(),
        }
    }

    /// Whether `next` adds, removes or moves (its `listen`) a channel: a reload that
    /// would is refused whole, since the listeners and the channel set are fixed at
    /// start-up.
    pub(crate) fn channels_changed(&self, next: &RestartOnly) -> bool {
        self.channels != next.channels
    }

    /// The config keys whose values differ in `next`, by name.
    pub(crate) fn changed_keys(&self, next: &RestartOnly) -> Vec<&'static str> {
        // Destructured without `..`: a new field does not compile until it is named here.
        let RestartOnly {
            listen,
            admin_listen,
            admin_calls,
            max_connections,
            max_buffered_bytes,
            write_timeout,
            drain_timeout,
            expect_ip,
            journal,
            state,
            channels,
        } = self;
        [
            ("listen", *listen != next.listen),
            ("admin.listen", *admin_listen != next.admin_listen),
            ("admin.calls", *admin_calls != next.admin_calls),
            (
                "request.max_connections",
                *max_connections != next.max_connections,
            ),
            (
                "request.max_buffered_bytes",
                *max_buffered_bytes != next.max_buffered_bytes,
            ),
            (
                "request.write_timeout",
                *write_timeout != next.write_timeout,
            ),
            (
                "shutdown.drain_timeout",
                *drain_timeout != next.drain_timeout,
            ),
            ("egress.expect_ip", *expect_ip != next.expect_ip),
            ("journal", *journal != next.journal),
            ("state", *state != next.state),
            ("channels", *channels != next.channels),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }

    /// Logs the restart-only keys that `next` would change.
    pub(crate) fn warn_about_changes(&self, next: &RestartOnly) {
        if self == next {
            return;
        }
        tracing::warn!(
            keys = %self.changed_keys(next).join(", "),
            "these keys change only on restart; the running values stay, the other keys were reloaded"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ENV_CHANNEL_ID, ENV_CHANNEL_SECRET};
    use crate::egress::ExpectIpConfig;
    use crate::reload::ConfigSource;
    use crate::secret::Secret;

    /// The defaults, with a channel from the environment.
    fn config() -> Config {
        ConfigSource {
            path: None,
            overrides: Overrides::default(),
            env: Box::new(|key: &str| match key {
                ENV_CHANNEL_ID => Some("1234567890".to_owned()),
                ENV_CHANNEL_SECRET => Some("first-secret".to_owned()),
                _ => None,
            }),
        }
        .load()
        .unwrap()
    }

    fn expect_ip() -> ExpectIpConfig {
        ExpectIpConfig {
            address: "203.0.113.7".parse().unwrap(),
            echo_url: "https://echo.example/".parse().unwrap(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_reload_reuses_the_client_and_limiters_only_when_their_settings_are_equal() {
        let metrics = Arc::new(Metrics::new());
        let desk = Arc::new(Desk::disabled());
        let first = build_proxy(
            config(),
            metrics.clone(),
            desk.clone(),
            &SharedState::Local,
            None,
        )
        .unwrap();

        let mut rotated = config();
        rotated.credentials.channel_secret = Secret::new("rotated-secret");
        // Restart-only, and not the client's: the client stays.
        rotated.egress.expect_ip = Some(expect_ip());
        let second = build_proxy(
            rotated,
            metrics.clone(),
            desk.clone(),
            &SharedState::Local,
            Some(&first),
        )
        .unwrap();
        assert!(Arc::ptr_eq(first.upstream(), second.upstream()));
        assert!(Arc::ptr_eq(first.limits(), second.limits()));

        let mut pinned = config();
        pinned.egress.pin = vec!["127.0.0.1".parse().unwrap()];
        pinned.limits.shadow = !pinned.limits.shadow;
        let third = build_proxy(pinned, metrics, desk, &SharedState::Local, Some(&second)).unwrap();
        assert!(!Arc::ptr_eq(second.upstream(), third.upstream()));
        assert!(!Arc::ptr_eq(second.limits(), third.limits()));
    }

    #[test]
    fn a_configured_ca_file_always_rebuilds_the_client() {
        let mut with_ca = config();
        with_ca.upstream.ca_file = Some("/etc/linepay/ca.pem".into());
        let settings = ClientSettings::from_config(&with_ca);
        assert!(!settings.can_serve(&ClientSettings::from_config(&with_ca)));
        assert!(ClientSettings::from_config(&config())
            .can_serve(&ClientSettings::from_config(&config())));
    }

    #[test]
    fn restart_only_changes_are_named_by_their_config_key() {
        let running = RestartOnly::from_config(&config());
        let mut next = config();
        next.credentials.channel_secret = Secret::new("rotated-secret");
        assert_eq!(
            running.changed_keys(&RestartOnly::from_config(&next)),
            Vec::<&str>::new()
        );
        next.listen = "127.0.0.1:1".parse().unwrap();
        next.shutdown.drain_timeout = Duration::from_secs(1);
        next.egress.expect_ip = Some(expect_ip());
        assert_eq!(
            running.changed_keys(&RestartOnly::from_config(&next)),
            ["listen", "shutdown.drain_timeout", "egress.expect_ip"]
        );
    }
}
