//! Shared state: where the guarantees that must hold for a merchant channel as a whole,
//! not per process, are kept (docs/redis.md).
//!
//! One process, one machine: [`SharedState::Local`], the default; every guard keeps its
//! state in this process, as before this module existed. Several sidecars of one
//! channel (the pods of a Deployment): [`SharedState::Redis`], one Redis or Valkey that
//! they all use, through the client in `redis.rs`.
//!
//! This module is the seam, not a fork: a guard (the rate limits in `crate::limit`, the
//! money-call guards) asks [`SharedState::redis`] whether there is a shared store, and
//! keeps its local implementation for when there is none or it cannot answer in time.
//! What each guard does when Redis is slow or down is that guard's decision, documented
//! with it; this module only says, with a typed [`StateError`], what went wrong.
//!
//! - `redis.rs`: the client: one multiplexed connection, reconnected in the background,
//!   every command bounded by `state.redis.command_timeout`, **never sent twice**.
//! - `keys.rs`: the key layout, `{prefix}:{channel_id}:{kind}:{...}`; every key is
//!   scoped by channel id, so several channels share one Redis without a migration.
//!
//! Pure data here (the typed `state:` settings); `crate::config` builds them.

mod keys;
mod limits;
mod redis;

pub(crate) use keys::KeySpace;
pub(crate) use redis::{RedisClient, Script, StateError, StateMetrics, ERROR_KINDS};

pub(crate) use crate::limit::Share;
use crate::limit::SharedLimits;
use crate::secret::Secret;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `state.redis.key_prefix` when unset.
pub const DEFAULT_KEY_PREFIX: &str = "linepay-sidecar";
/// `state.redis.command_timeout` when unset: Envoy gives its global rate-limit service
/// 20 ms per call, and a Redis on the pod network answers in well under a millisecond;
/// past 20 ms the Redis (or the network) is in trouble and the call must not wait on it.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(20);
/// `state.redis.connect_timeout` when unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// `state.redis.fallback_share` when unset: two sidecars falling back together keep the
/// configured rate; more should set 1 / their number.
pub const DEFAULT_FALLBACK_SHARE: Share = Share::HALF;

/// `state:`: which backend, and how to reach Redis. Restart-only.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StateConfig {
    /// Everything in this process (the default).
    #[default]
    Local,
    Redis(RedisConfig),
}

/// `state.redis`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`, without a password (refused by the config).
    pub url: String,
    /// `AUTH`'s password, from `password_file`.
    pub password: Option<Secret>,
    /// PEM roots for `rediss://` instead of the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    /// Share (0, 1] of each shared rate and burst a sidecar uses alone while Redis
    /// cannot answer.
    pub fallback_share: Share,
    /// How long a key's answer stays replayable by any sidecar (`state.redis.answer_ttl`).
    pub answer_ttl: Duration,
    /// What a money call (or keyed call) gets while Redis cannot answer
    /// (`state.redis.money_fallback`).
    pub money_fallback: MoneyFallback,
}

/// `state.redis.answer_ttl` when unset: a day, as payment APIs keep idempotency keys.
pub const DEFAULT_ANSWER_TTL: Duration = Duration::from_secs(24 * 3600);

/// `state.redis.money_fallback`: what the money-call guards do while Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MoneyFallback {
    /// `refuse` (the default): `503 state_unavailable`, the call is not sent.
    #[default]
    Refuse,
    /// `local`: admitted with this sidecar's own guards alone (logged and counted).
    Local,
}

impl MoneyFallback {
    pub fn parse(text: &str) -> Option<MoneyFallback> {
        match text {
            "refuse" => Some(MoneyFallback::Refuse),
            "local" => Some(MoneyFallback::Local),
            _ => None,
        }
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("fallback_share", &self.fallback_share)
            .field("answer_ttl", &self.answer_ttl)
            .field("money_fallback", &self.money_fallback)
            .finish()
    }
}

/// The running backend, shared by every call and kept across reloads (its settings are
/// restart-only).
#[derive(Clone, Default)]
pub(crate) enum SharedState {
    /// No shared store: every guard is local.
    #[default]
    Local,
    Redis(SharedRedis),
}

/// A Redis backend: the client and where this sidecar's keys live.
#[derive(Clone)]
pub(crate) struct SharedRedis {
    pub(crate) client: RedisClient,
    pub(crate) keys: KeySpace,
    pub(crate) fallback_share: Share,
}

impl SharedState {
    /// The backend of `config`. For Redis, the connection is opened in the background
    /// on the current runtime (the main one, which outlives every call): the sidecar
    /// starts and serves while Redis is unreachable, each guard applying its own rule
    /// for that case.
    pub(crate) fn start(
        config: &StateConfig,
        channel_id: &str,
        metrics: StateMetrics,
    ) -> Result<SharedState, StateError> {
        match config {
            StateConfig::Local => Ok(SharedState::Local),
            StateConfig::Redis(redis) => Ok(SharedState::Redis(SharedRedis {
                client: RedisClient::start(redis, metrics)?,
                keys: KeySpace::new(&redis.key_prefix, channel_id),
                fallback_share: redis.fallback_share,
            })),
        }
    }

    /// The shared Redis, if this sidecar has one.
    pub(crate) fn redis(&self) -> Option<&SharedRedis> {
        match self {
            SharedState::Local => None,
            SharedState::Redis(redis) => Some(redis),
        }
    }

    /// Where the global and route rate limits are kept: `None` in this process.
    pub(crate) fn limits(&self) -> Option<SharedLimits> {
        let redis = self.redis()?;
        Some(SharedLimits {
            store: Arc::new(limits::RedisBuckets::new(
                redis.client.clone(),
                redis.keys.clone(),
            )),
            fallback_share: redis.fallback_share,
        })
    }

    /// `local` or `redis`, for the start-up log.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SharedState::Local => "local",
            SharedState::Redis(_) => "redis",
        }
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
