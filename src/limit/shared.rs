//! Buckets shared by every sidecar of a channel (`state.backend: redis`): the global and
//! route buckets, decided by a store all of them ask (GCRA on the store's own clock) in
//! one step for a call's route and global bucket, with local buckets at
//! `state.redis.fallback_share` of the rate for when the store cannot answer in time.
//!
//! This file knows the store only as [`SharedBuckets`]: what to ask and what an answer
//! means. The store itself (the Lua script, the connection, its timeout) is mechanism,
//! in `crate::state`.

use super::config::Bucket;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A store of buckets that several sidecars share.
pub(crate) trait SharedBuckets: Send + Sync {
    /// The store's name for the bucket this sidecar labels `label` (`global`,
    /// `route POST /v3/...`), computed once when the limits are built.
    fn bucket_key(&self, label: &str) -> String;

    /// Takes one token from each of `buckets` if every one has a token, in one step:
    /// `Ok(None)` admitted (the tokens are taken), `Ok(Some((index, wait)))` refused by
    /// `buckets[index]`, the first without a token, for `wait` (nothing is taken from
    /// any), `Err` no answer to rely on (the caller falls back).
    fn take<'a>(&'a self, buckets: &'a [&'a SharedBucketSpec]) -> TakeFuture<'a>;
}

pub(crate) type TakeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<(usize, Duration)>, Unanswered>> + Send + 'a>>;

/// The store gave no answer to rely on (slow, down, or an error answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unanswered;

/// A bucket's shape as GCRA needs it: the interval between tokens and how many a full
/// bucket holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcraShape {
    pub(crate) emission_interval: Duration,
    pub(crate) burst: u32,
}

impl GcraShape {
    pub(crate) fn of(bucket: &Bucket) -> GcraShape {
        GcraShape {
            emission_interval: bucket.emission_interval(),
            burst: bucket.burst().get(),
        }
    }
}

/// A shared bucket as the store sees it: its key and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedBucketSpec {
    pub(crate) key: String,
    pub(crate) shape: GcraShape,
}

impl SharedBucketSpec {
    pub(crate) fn new(store: &dyn SharedBuckets, label: &str, bucket: &Bucket) -> Self {
        SharedBucketSpec {
            key: store.bucket_key(label),
            shape: GcraShape::of(bucket),
        }
    }
}
