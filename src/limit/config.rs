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

    pub(crate) fn burst(&self) -> NonZeroU32 {
        self.burst
    }

    /// The time between two tokens (GCRA's emission interval).
    pub(crate) fn emission_interval(&self) -> Duration {
        self.rate.period / self.rate.count.get()
    }

    /// The bucket as governor's `Quota`, for the running limiters.
    pub(super) fn quota(&self) -> Quota {
        self.quota
    }
}

/// A share of a rate, in (0, 1], kept in millionths so the settings compare exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share(u32);

impl Share {
    const WHOLE: u32 = 1_000_000;
    /// One half.
    pub const HALF: Share = Share(Share::WHOLE / 2);

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

    /// This share of a bucket: its count per period and its burst, each rounded up.
    pub(crate) fn of_bucket(self, bucket: &Bucket) -> Bucket {
        let rate = Rate {
            count: NonZeroU32::new(self.of(bucket.rate.count.get())).unwrap_or(NonZeroU32::MIN),
            period: bucket.rate.period,
        };
        // Within the original's bounds (a smaller count and burst), so it cannot fail;
        // should it, the original stands.
        Bucket::new(rate, Some(self.of(bucket.burst.get()))).unwrap_or(*bucket)
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

    #[test]
    fn a_share_is_a_fraction_or_a_percentage_and_never_rounds_a_bucket_to_nothing() {
        assert_eq!(Share::parse("0.5"), Some(Share::HALF));
        assert_eq!(Share::parse("50%"), Some(Share::HALF));
        assert_eq!(Share::parse("1"), Share::parse("100 %"));
        for refused in [
            "0", "0%", "1.01", "101%", "-0.5", "half", "", "NaN", "inf", "1/3",
        ] {
            assert_eq!(Share::parse(refused), None, "{refused:?}");
        }
        assert_eq!(Share::HALF.of(10), 5);
        assert_eq!(Share::HALF.of(11), 6);
        assert_eq!(Share::parse("0.34").map(|share| share.of(10)), Some(4));
        assert_eq!(Share::parse("0.01").map(|share| share.of(10)), Some(1));
        assert_eq!(
            Share::parse("1").map(|share| share.of(u32::MAX)),
            Some(u32::MAX)
        );
        let rate = Rate {
            count: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            period: Duration::from_secs(1),
        };
        let bucket = Bucket::new(rate, Some(4)).unwrap_or_else(|e| panic!("{e}"));
        let half = Share::HALF.of_bucket(&bucket);
        assert_eq!(half.burst().get(), 2);
        assert_eq!(half.emission_interval(), Duration::from_millis(200));
        assert_eq!(bucket.emission_interval(), Duration::from_millis(100));
    }

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
