//! What the running process is built from, and what a reload may change.
//!
//! The snapshot every call reads is a [`Proxy`]: configuration, signer, upstream client
//! and limiters. A reload builds a new one; what it may reuse from the running one is
//! decided by comparing typed values, never by a list kept beside a constructor:
//! - the upstream client, when its [`ClientSettings`] (what [`Upstream::new`] is built
//!   from) are equal, so a secret rotation keeps the warm TLS connections to LINE Pay;
//! - the limiters, when the `limits` section is equal, so a reload cannot refill every
//!   bucket.
//!
//! The keys read once at start-up are one typed value too, [`RestartOnly`]: the runtime
//! binds and drains from it, and a reload that changes it says which keys by name.

use super::preflight::{preflight, PreflightError};
use crate::config::Config;
use crate::egress::ExpectIpConfig;
use crate::limit::Limits;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
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
pub fn build_upstream(config: &Config) -> Result<Upstream, BuildError> {
    build_client(ClientSettings::from_config(config))
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
    previous: Option<&Proxy>,
) -> Result<Proxy, BuildError> {
    let settings = ClientSettings::from_config(&config);
    let upstream = match previous.filter(|p| p.upstream().settings().can_serve(&settings)) {
        Some(previous) => previous.upstream().clone(),
        None => Arc::new(build_client(settings)?),
    };
    let limits = match previous.filter(|p| p.config().limits == config.limits) {
        Some(previous) => previous.limits().clone(),
        None => Arc::new(
            Limits::new(&config.limits).with_shadow_metric(metrics.rate_limited_shadow.clone()),
        ),
    };
    Ok(Proxy::new(config, upstream, limits, metrics))
}

/// The keys read once at start-up: the running process keeps their values until it
/// restarts, whatever a reload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RestartOnly {
    pub(crate) listen: SocketAddr,
    pub(crate) admin_listen: SocketAddr,
    pub(crate) max_connections: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) expect_ip: Option<ExpectIpConfig>,
}

impl RestartOnly {
    pub(crate) fn from_config(config: &Config) -> RestartOnly {
        RestartOnly {
            listen: config.listen,
            admin_listen: config.admin.listen,
            max_connections: config.request.max_connections,
            drain_timeout: config.shutdown.drain_timeout,
            expect_ip: config.egress.expect_ip.clone(),
        }
    }

    /// The config keys whose values differ in `next`, by name.
    pub(crate) fn changed_keys(&self, next: &RestartOnly) -> Vec<&'static str> {
        // Destructured without `..`: a new field does not compile until it is named here.
        let RestartOnly {
            listen,
            admin_listen,
            max_connections,
            drain_timeout,
            expect_ip,
        } = self;
        [
            ("listen", *listen != next.listen),
            ("admin.listen", *admin_listen != next.admin_listen),
            (
                "request.max_connections",
                *max_connections != next.max_connections,
            ),
            (
                "shutdown.drain_timeout",
                *drain_timeout != next.drain_timeout,
            ),
            ("egress.expect_ip", *expect_ip != next.expect_ip),
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
