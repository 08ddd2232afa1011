//! The shared rate limits' store on Redis: each global or route bucket is one key, and
//! taking a token is one `EVALSHA` of a GCRA script (`gcra.lua`) that reads Redis's own
//! clock, so sidecars whose clocks are skewed still agree on the bucket.

use super::{KeySpace, RedisClient, Script};
use crate::limit::{GcraShape, SharedBuckets, TakeFuture, Unanswered};
use std::time::Duration;

const GCRA: &str = include_str!("gcra.lua");

/// [`SharedBuckets`] in Redis.
pub(crate) struct RedisBuckets {
    client: RedisClient,
    keys: KeySpace,
    script: Script,
}

impl RedisBuckets {
    pub(crate) fn new(client: RedisClient, keys: KeySpace) -> RedisBuckets {
        RedisBuckets {
            client,
            keys,
            script: Script::new(GCRA),
        }
    }
}

impl SharedBuckets for RedisBuckets {
    /// `{prefix}:{channel_id}:limit:{label}`, e.g.
    /// `linepay-sidecar:1657002468:limit:global`.
    fn bucket_key(&self, label: &str) -> String {
        self.keys.key("limit", &[label])
    }

    fn take<'a>(&'a self, key: &'a str, shape: GcraShape) -> TakeFuture<'a> {
        Box::pin(async move {
            let emission = shape.emission_interval.as_micros().max(1).to_string();
            let burst = shape.burst.to_string();
            let wait: i64 = self
                .client
                .run_script(
                    "limit",
                    &self.script,
                    &[key],
                    &[emission.as_bytes(), burst.as_bytes()],
                )
                .await
                .map_err(|_| Unanswered)?;
            Ok(u64::try_from(wait)
                .ok()
                .filter(|wait| *wait > 0)
                .map(Duration::from_micros))
        })
    }
}
