//! Everything the upstream client is built from, as one typed value.
//!
//! [`Upstream::new`](super::Upstream::new) takes a [`ClientSettings`] and keeps it, so a
//! reload decides whether the running client still fits by comparing two of them
//! (`PartialEq`): a key that the client reads is a field here, and a field here is
//! compared, so no list of "keys the client depends on" can drift from the constructor.

use crate::config::{ChannelConfig, Config, UpstreamConfig};
use crate::egress::EgressConfig;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientSettings {
    pub(super) upstream: UpstreamConfig,
    /// The egress path: bind address, forward proxy (with its credentials), pin.
    /// `expect_ip` is cleared: it configures the running check, not the client.
    pub(super) egress: EgressConfig,
    /// The distinct connect timeouts of the allowlist's routes, ascending: one pool each
    /// (the connector owns the timeout). With the defaults, exactly one.
    pub(super) connect_timeouts: Vec<Duration>,
}

impl ClientSettings {
    pub(crate) fn from_config(config: &Config) -> ClientSettings {
        let mut connect_timeouts: Vec<Duration> = config
            .allowlist
            .routes()
            .iter()
            .map(|route| route.timeouts.connect)
            .collect();
        connect_timeouts.sort();
        connect_timeouts.dedup();
        ClientSettings {
            upstream: config.upstream.clone(),
            egress: EgressConfig {
                expect_ip: None,
                ..config.egress.clone()
            },
            connect_timeouts,
        }
    }

    /// A channel's client: `upstream:` with the channel's URL, the same egress and
    /// timeouts (the connect timeouts of every route some channel may call).
    pub(crate) fn for_channel(config: &Config, channel: &ChannelConfig) -> ClientSettings {
        ClientSettings {
            upstream: channel.upstream.clone(),
            ..ClientSettings::from_config(config)
        }
    }

    /// The egress path the client's connections take.
    pub(crate) fn egress(&self) -> &EgressConfig {
        &self.egress
    }

    /// Whether a client built from `self` serves `next` unchanged. A CA file is read
    /// when the client is built and may have new content under the same path, so a
    /// configured one always means a rebuild.
    pub(crate) fn can_serve(&self, next: &ClientSettings) -> bool {
        self == next && next.upstream.ca_file.is_none()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Overrides, ENV_CHANNEL_ID, ENV_CHANNEL_SECRET};
    use crate::reload::ConfigSource;

    #[test]
    fn connect_timeouts_are_one_per_distinct_value() {
        // Through a file (not flags), so the test holds whatever shape the flags take.
        let path = std::env::temp_dir().join(format!(
            "linepay-sidecar-settings-{}.yaml",
            std::process::id()
        ));
        std::fs::write(&path, "upstream:\n  connect_timeout: 3s\n").unwrap();
        let loaded = ConfigSource {
            path: Some(path.clone()),
            overrides: Overrides::default(),
            env: Box::new(|key: &str| match key {
                ENV_CHANNEL_ID => Some("1234567890".to_owned()),
                ENV_CHANNEL_SECRET => Some("secret".to_owned()),
                _ => None,
            }),
        }
        .load();
        let _ = std::fs::remove_file(&path);
        let config = loaded.unwrap();
        assert!(config.allowlist.routes().len() > 1);
        let settings = ClientSettings::from_config(&config);
        assert_eq!(settings.connect_timeouts, [Duration::from_secs(3)]);
    }
}
