//! The typed `limits:` settings: what the running limiters are built from. Pure data:
//! the YAML shape and its checks are in `crate::config` (its `limits.rs`), which builds
//! these values; nothing here reads a file or knows a line number.

use governor::Quota;
use http::{HeaderName, Method};
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// The largest burst: far beyond any LINE Pay quota, and small enough that governor's
/// arithmetic (nanoseconds in a `u64`) cannot overflow.
const MAX_BURST: u32 = 1_000_000;

/// A rate written `50/s`, `20/m` or `100/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) count: NonZeroU32,
    pub(crate) period: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            3600 => "h",
            60 => "m",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

// ---------------------------------------------------------------------------------------
// Validated limits.

/// Validated limits; the default is no limit at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LimitsConfig {
    pub(crate) shadow: bool,
    pub(crate) global: Option<Bucket>,
    pub(crate) routes: Vec<RouteLimit>,
    pub(crate) per_client: Option<ClientLimit>,
    pub(crate) queue: Option<QueueConfig>,
    /// The polling discipline of check-status calls.
    pub(crate) polling: PollingConfig,
}

/// Check-status calls for one transaction at most once per `min_interval` (zero: off),
/// remembering at most `max_tracked` transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PollingConfig {
    pub(crate) min_interval: Duration,
    pub(crate) max_tracked: NonZeroUsize,
}

/// LINE Pay's own rule: at least one second between check-status calls.
pub(crate) const DEFAULT_CHECK_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Transactions polled within one interval, remembered at most.
pub(crate) const DEFAULT_CHECK_STATUS_MAX_TRACKED: usize = 10_000;

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            min_interval: DEFAULT_CHECK_STATUS_INTERVAL,
            max_tracked: NonZeroUsize::new(DEFAULT_CHECK_STATUS_MAX_TRACKED)
                .unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// One bucket's shape: refills at `rate`, holds at most `burst` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    rate: Rate,
    burst: NonZeroU32,
    quota: Quota,
}

impl Bucket {
    /// `burst` defaults to the rate's count per period.
    pub(crate) fn new(rate: Rate, burst: Option<u32>) -> Result<Bucket, String> {
        let burst = match burst {
            None => rate.count,
            Some(burst) if burst > MAX_BURST => {
                return Err(format!("burst {burst} is above {MAX_BURST}"))
            }
            Some(burst) => NonZeroU32::new(burst)
                .ok_or_else(|| "burst must be at least 1 (one call)".to_owned())?,
        };
        // Within these bounds governor's nanosecond arithmetic cannot overflow: at most
        // an hour between tokens times a million tokens of burst.
        if rate.period > Duration::from_secs(3600) {
            return Err(format!("rate {rate}: the period must be /s, /m or /h"));
        }
        // At most a million per second: the interval is at least a microsecond.
        let quota = Quota::with_period(rate.period / rate.count.get())
            .ok_or_else(|| format!("rate {rate} is too fast"))?
            .allow_burst(burst);
        Ok(Bucket { rate, burst, quota })
    }

    #[cfg(test)]
    pub(crate) fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The bucket as governor's `Quota`, for the running limiters.
    pub(super) fn quota(&self) -> Quota {
        self.quota
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteLimit {
    pub(crate) method: Method,
    pub(crate) template: String,
    pub(crate) bucket: Bucket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientLimit {
    /// The request header naming the client, e.g. `x-merchant-client`.
    pub(crate) header: HeaderName,
    pub(crate) bucket: Bucket,
    pub(crate) max_clients: NonZeroUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueConfig {
    pub(crate) max_wait: Duration,
    pub(crate) max_queued: NonZeroUsize,
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::route::{family_routes, Allowlist, ApiFamily};

    /// The shipped v3 routes: the allowlist every limits test is checked against.
    pub(in crate::limit) fn allowlist() -> Allowlist {
        Allowlist::new(family_routes(
            ApiFamily::OnlineV3,
            Duration::from_secs(5),
            None,
        ))
    }

    /// The `limits:` section of `yaml`, validated against [`allowlist`].
    pub(in crate::limit) fn config(yaml: &str) -> LimitsConfig {
        crate::config::limits_from_yaml(yaml, &allowlist())
            .unwrap_or_else(|problems| panic!("{}", problems.join("\n")))
    }
}
