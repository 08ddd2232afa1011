//! A channel's own bucket (`channels.<name>.limits.channel`), checked besides the
//! `limits:` buckets every call shares: a busy channel cannot take another's share of
//! LINE Pay's quota. Kept simple on purpose: a call without a token is refused at once
//! (no queue, no shadow mode), with the time until the next token.

use super::{Bucket, LimitError, LimitName, Refusal};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// One channel's running bucket.
pub(crate) struct ChannelLimiter<C: Clock = DefaultClock> {
    bucket: Bucket,
    clock: C,
    limiter: Direct<C>,
}

impl ChannelLimiter {
    pub(crate) fn new(bucket: &Bucket) -> ChannelLimiter {
        ChannelLimiter::with_clock(bucket, DefaultClock::default())
    }
}

impl<C: Clock + Clone> ChannelLimiter<C> {
    fn with_clock(bucket: &Bucket, clock: C) -> ChannelLimiter<C> {
        ChannelLimiter {
            bucket: *bucket,
            limiter: RateLimiter::direct_with_clock(bucket.quota(), clock.clone()),
            clock,
        }
    }

    /// What it was built from: a reload keeps it (and its level) when this is equal.
    pub(crate) fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// A token now, or a refusal naming the `channel` limit.
    pub(crate) fn admit(&self) -> Result<(), LimitError> {
        self.limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            LimitError {
                limit: LimitName::Channel,
                retry_after: wait,
                reason: Refusal::NoQueue,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::limit::Rate;
    use governor::clock::FakeRelativeClock;
    use std::num::NonZeroU32;
    use std::time::Duration;

    #[test]
    fn a_channel_bucket_refuses_past_its_burst_and_refills() {
        let rate = Rate {
            count: NonZeroU32::new(2).unwrap(),
            period: Duration::from_secs(1),
        };
        let bucket = Bucket::new(rate, None).unwrap();
        let clock = FakeRelativeClock::default();
        let limiter = ChannelLimiter::with_clock(&bucket, clock.clone());
        assert!(limiter.admit().is_ok());
        assert!(limiter.admit().is_ok());
        let refusal = limiter.admit().unwrap_err();
        assert_eq!(refusal.limit.label(), "channel");
        assert_eq!(refusal.retry_after, Duration::from_millis(500));
        clock.advance(Duration::from_millis(500));
        assert!(limiter.admit().is_ok());
    }
}
