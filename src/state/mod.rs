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

// Until the guards use them (the shared rate limits, the money-call guards): the client's
// commands, the key layout and the fallback share.
#[allow(dead_code)]
mod keys;
#[allow(dead_code)]
mod redis;

pub(crate) use keys::KeySpace;
#[allow(unused_imports)]
pub(crate) use redis::{RedisClient, Script, StateError, StateMetrics, ERROR_KINDS};

use crate::secret::Secret;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
pub const DEFAULT_FALLBACK_SHARE: Share = Share(Share::WHOLE / 2);

/// A share of a rate, in (0, 1], kept in millionths so the settings compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(u32);

#[allow(dead_code)]
impl Share {
    const WHOLE: u32 = 1_000_000;

    /// `0.5` or `50%`; `None` unless above 0 and at most 1.
    pub fn parse(text: &str) -> Option<Share> {
        let text = text.trim();
        let fraction = match text.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok()? / 100.0,
            None => text.parse::<f64>().ok()?,
        };
        if !(fraction > 0.0 && fraction <= 1.0) {
            return None;
        }
        // In (0, 1], so the product is in (0, 1e6]: the cast cannot overflow.
        let millionths = (fraction * f64::from(Share::WHOLE)).round() as u32;
        Some(Share(millionths.max(1)))
    }

    /// This share of `count`, rounded up, at least 1: a fallback bucket always admits
    /// something.
    pub fn of(self, count: u32) -> u32 {
        let product = u64::from(count) * u64::from(self.0);
        let share = product.div_ceil(u64::from(Share::WHOLE));
        u32::try_from(share).unwrap_or(u32::MAX).max(1)
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / f64::from(Share::WHOLE)
    }
}

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
#[allow(dead_code)]
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
    #[allow(dead_code)]
    pub(crate) fn redis(&self) -> Option<&SharedRedis> {
        match self {
            SharedState::Local => None,
            SharedState::Redis(redis) => Some(redis),
        }
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

/// A log line that repeats at most once per interval: "Redis is down" once per ten
/// seconds, not once per call. Lock-free: the calls that lose the race count as
/// suppressed.
pub(crate) struct Throttle {
    interval_ms: u64,
    /// Milliseconds since [`epoch`] of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Throttle {
        Throttle {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when a line may be written now.
    pub(crate) fn ready(&self) -> Option<u64> {
        let now = u64::try_from(epoch().elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.interval_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// The process's first use of a [`Throttle`]: the time line they share.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cfg(test)]
mod tests {
    use super::{Share, Throttle};
    use std::time::Duration;

    #[test]
    fn a_throttled_line_is_written_once_per_interval_and_counts_the_rest() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        let every_time = Throttle::new(Duration::ZERO);
        assert_eq!(every_time.ready(), Some(0));
        assert_eq!(every_time.ready(), Some(0));
    }

    #[test]
    fn a_share_is_a_fraction_or_a_percentage_and_never_rounds_a_bucket_to_nothing() {
        assert_eq!(Share::parse("0.5"), Share::parse("50%"));
        assert_eq!(Share::parse("1"), Share::parse("100 %"));
        for refused in ["0", "0%", "1.01", "101%", "-0.5", "half", "", "NaN", "inf"] {
            assert_eq!(Share::parse(refused), None, "{refused:?}");
        }
        let half = Share::parse("0.5").map(|share| share.of(10));
        assert_eq!(half, Some(5));
        assert_eq!(Share::parse("1/3").map(|share| share.of(10)), None);
        assert_eq!(Share::parse("0.34").map(|share| share.of(10)), Some(4));
        assert_eq!(Share::parse("0.01").map(|share| share.of(10)), Some(1));
        assert_eq!(
            Share::parse("1").map(|share| share.of(u32::MAX)),
            Some(u32::MAX)
        );
    }
}
