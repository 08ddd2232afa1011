//! The shared rate limits' store on Redis: each global or route bucket is one key, and
//! taking a call's tokens (its route's and the global one) is one `EVALSHA` of a GCRA
//! script (`gcra.lua`) that reads Redis's own clock, so sidecars whose clocks are skewed
//! still agree on the buckets.

use super::{KeySpace, RedisClient, Script};
use crate::limit::{SharedBucketSpec, SharedBuckets, TakeFuture, Unanswered};
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

    fn take<'a>(&'a self, buckets: &'a [&'a SharedBucketSpec]) -> TakeFuture<'a> {
        Box::pin(async move {
            let keys: Vec<&str> = buckets.iter().map(|bucket| bucket.key.as_str()).collect();
            let shapes: Vec<String> = buckets
                .iter()
                .flat_map(|bucket| {
                    [
                        bucket
                            .shape
                            .emission_interval
                            .as_micros()
                            .max(1)
                            .to_string(),
                        bucket.shape.burst.to_string(),
                    ]
                })
                .collect();
            let args: Vec<&[u8]> = shapes.iter().map(|arg| arg.as_bytes()).collect();
            let (refused_by, wait): (i64, i64) = self
                .client
                .run_script("limit", &self.script, &keys, &args)
                .await
                .map_err(|_| Unanswered)?;
            // Lua counts from 1; 0 is "every bucket gave its token".
            let Some(index) = usize::try_from(refused_by)
                .ok()
                .and_then(|i| i.checked_sub(1))
            else {
                return Ok(None);
            };
            if index >= buckets.len() {
                return Err(Unanswered);
            }
            let wait = u64::try_from(wait).unwrap_or(0).max(1);
            Ok(Some((index, Duration::from_micros(wait))))
        })
    }
}
