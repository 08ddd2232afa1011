//! Rate limits: token buckets checked after routing and before the body is read, so a
//! refused call costs almost nothing and never reaches LINE Pay.
//!
//! Three kinds of bucket, each optional, each with a rate and a burst (GCRA, via
//! `governor`): one `global` bucket, one bucket per listed route (`routes`, keyed by the
//! route id `POST /v3/payments/{transactionId}/refund`), and one bucket per client
//! (`per_client`, keyed by a request header the app sets).
//!
//! # Order of checks, and what a refusal costs
//! `governor` has no atomic check over several buckets: each check that passes takes its
//! token at once. The buckets are therefore checked from the most specific to the most
//! shared: **client → route → global**. A call refused by its own client bucket has
//! taken nothing from anyone; one refused by its route bucket has spent one token of its
//! own client's bucket; one refused by the global bucket has spent one token of its
//! client's and of its route's bucket. So the cost of a refusal always stays with the
//! caller or the route that caused it, and a flood from one client or on one route never
//! drains the shared global bucket with calls that are then refused anyway.
//!
//! # Shared buckets
//! With `state.backend: redis` (`shared.rs`), the global and route buckets live in a
//! store every sidecar of the channel asks: a call's route and global bucket in one step,
//! a token from both or from neither, so there the cost of a global refusal stays with
//! no one. When the store cannot answer, local buckets at `fallback_share` of each rate
//! decide, in the order above. Client buckets and the polling discipline stay local.
//!
//! # Queue mode
//! With `queue`, a call that would be refused waits for its token instead, when the wait
//! fits in what is left of `max_wait` and a queue slot (`max_queued`) is free; otherwise
//! it is refused at once. A waiting call re-checks its bucket when the wait is over
//! (waiters are not strictly first come, first served). Waiting is cancellation-safe: if
//! the app disconnects, hyper drops the call's future, which frees its queue slot.
//!
//! # Shadow mode
//! With `shadow: true` nothing is refused and nothing waits: a call that would have been
//! refused is admitted, counted (`linepay_sidecar_rate_limited_shadow_total{limit}`, see
//! [`Limits::with_shadow_metric`]) and logged as a warning, so a team can see what a limit
//! would do before enforcing it.
//!
//! # Time
//! [`Limits`] is generic over a [`LimitClock`] (governor's clock plus a way to sleep):
//! production uses governor's default clock and tokio's timer; the unit tests
//! (`tests.rs`) use governor's `FakeRelativeClock` and advance it by hand, so no test
//! depends on timing.
//!
//! # Refusals
//! A refusal is a [`LimitError`]: which limit, how long until its next token, and why the
//! call could not wait for it. Admission only decides; `crate::error` turns a refusal
//! into the 429 answer and its `Retry-After`.
//!
//! # Files
//! This file holds admission: the running limiters, queue and shadow mode. `config.rs`
//! holds the typed settings ([`LimitsConfig`]) that `crate::config` builds from the
//! `limits:` section; `client_store.rs` keeps the per-client buckets, bounded; `shared.rs`
//! says what a shared store is asked; `tests.rs`
//! holds the unit tests of admission. The public names are re-exported here, so callers
//! write `crate::limit::LimitsConfig` whichever file defines it.

mod channel;
mod client_store;
mod config;
mod poll;
mod shared;

pub(crate) use channel::ChannelLimiter;
pub(crate) use config::{
    Bucket, ClientLimit, LimitsConfig, PollingConfig, QueueConfig, Rate, RouteLimit, Share,
    DEFAULT_CHECK_STATUS_INTERVAL, DEFAULT_CHECK_STATUS_MAX_TRACKED,
};

pub(crate) use shared::{SharedBucketSpec, SharedBuckets, TakeFuture, Unanswered};

use crate::route::Route;
use crate::throttle::Throttle;
use client_store::{ClientKey, SharedClientStore};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, RateLimiter};
use http::{HeaderMap, HeaderName, Method};

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// When every client slot is taken, forgotten buckets are swept at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// "The shared limits fall back" is logged at most this often.
const FALLBACK_LOG_INTERVAL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// The running limiters.

/// The time source of the limits: governor's clock for the buckets, and a way to wait
/// on the same time line for queue mode.
pub(crate) trait LimitClock: Clock + Clone + Send + Sync + 'static {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

impl LimitClock for DefaultClock {
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

type DirectLimiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type ClientLimiter<C> =
    RateLimiter<ClientKey, SharedClientStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The running limiters, shared by every call. A reload keeps them (and the bucket
/// levels) unless the `limits:` section changed; then they are rebuilt, buckets full.
pub(crate) struct Limits<C: LimitClock = DefaultClock> {
    clock: C,
    shadow: bool,
    /// The global bucket: this process's own, or with `shared`, the local fallback at
    /// `fallback_share`.
    global: Option<DirectLimiter<C>>,
    routes: Vec<RouteLimiter<C>>,
    /// The global and route buckets in a store every sidecar of the channel shares.
    shared: Option<SharedSpecs>,
    clients: Option<Clients<C>>,
    queue: Option<Queue>,
    /// Check-status polls per transaction (`poll.rs`); `None` when turned off.
    polling: Option<poll::Polling<C::Instant>>,
    /// `linepay_sidecar_rate_limited_shadow_total{limit}`, when metrics are wired: the
    /// one count of shadow-mode refusals.
    shadow_metric: Option<prometheus::IntCounterVec>,
    /// `linepay_sidecar_rate_limit_fallback_total{limit}`, when metrics are wired.
    fallback_metric: Option<prometheus::IntCounterVec>,
    fallback_log: Throttle,
}

struct RouteLimiter<C: LimitClock> {
    method: Method,
    template: String,
    /// `route POST /v3/...`, the name a refusal carries.
    name: Arc<str>,
    /// Its own bucket, or with `shared`, the local fallback at `fallback_share`.
    limiter: DirectLimiter<C>,
}

/// The shared global and route buckets: the store, and each bucket's key and shape
/// (`routes` in the order of [`Limits::routes`]).
struct SharedSpecs {
    store: Arc<dyn SharedBuckets>,
    global: Option<SharedBucketSpec>,
    routes: Vec<SharedBucketSpec>,
}

/// Where the shared buckets are kept, and the share of each rate a sidecar uses alone
/// while the store cannot answer.
#[derive(Clone)]
pub(crate) struct SharedLimits {
    pub(crate) store: Arc<dyn SharedBuckets>,
    pub(crate) fallback_share: Share,
}

struct Clients<C: LimitClock> {
    header: HeaderName,
    limiter: ClientLimiter<C>,
    store: SharedClientStore,
    last_sweep: Mutex<Option<C::Instant>>,
}

struct Queue {
    max_wait: Duration,
    slots: Semaphore,
}

/// What one bucket decided about a call that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Admitted,
    /// Shadow mode: it would have been refused (a wait beyond `max_wait`); admitted, and
    /// the later buckets are not checked.
    ShadowRefused,
}

/// A queued call's state: when it first waited, and its queue slot (freed on drop, so
/// also when the app disconnects and the call's future is dropped).
struct Waiting<'a, I> {
    since: Option<I>,
    slot: Option<SemaphorePermit<'a>>,
}

impl Limits {
    /// Limits on governor's default clock and tokio's timer; the global and route
    /// buckets in `shared` when given, else in this process.
    pub(crate) fn new(config: &LimitsConfig, shared: Option<SharedLimits>) -> Limits {
        Limits::with_clock(config, DefaultClock::default(), shared)
    }
}

impl<C: LimitClock> Limits<C> {
    fn with_clock(config: &LimitsConfig, clock: C, shared: Option<SharedLimits>) -> Limits<C> {
        let direct =
            |bucket: &Bucket| RateLimiter::direct_with_clock(bucket.quota(), clock.clone());
        let spec = |shared: &SharedLimits, label: &str, bucket: &Bucket| {
            SharedBucketSpec::new(shared.store.as_ref(), label, bucket)
        };
        let route_name = |route: &RouteLimit| -> Arc<str> {
            format!("route {} {}", route.method, route.template).into()
        };
        let shared_specs = shared.as_ref().map(|shared| SharedSpecs {
            store: shared.store.clone(),
            global: config
                .global
                .as_ref()
                .map(|global| spec(shared, LimitName::Global.label(), global)),
            routes: config
                .routes
                .iter()
                .map(|route| spec(shared, &route_name(route), &route.bucket))
                .collect(),
        });
        // This process's buckets: the whole bucket, or the fallback's share of it.
        let bucket = |bucket: &Bucket| match &shared {
            None => direct(bucket),
            Some(shared) => direct(&shared.fallback_share.of_bucket(bucket)),
        };
        let clients = config.per_client.as_ref().map(|client| {
            let store = SharedClientStore::new(client.max_clients.get());
            Clients {
                header: client.header.clone(),
                limiter: RateLimiter::new(client.bucket.quota(), store.clone(), clock.clone()),
                store,
                last_sweep: Mutex::new(None),
            }
        });
        Limits {
            shadow: config.shadow,
            global: config.global.as_ref().map(bucket),
            routes: config
                .routes
                .iter()
                .map(|route| RouteLimiter {
                    method: route.method.clone(),
                    template: route.template.clone(),
                    limiter: bucket(&route.bucket),
                    name: route_name(route),
                })
                .collect(),
            shared: shared_specs,
            clients,
            queue: config.queue.map(|queue| Queue {
                max_wait: queue.max_wait,
                slots: Semaphore::new(queue.max_queued.get().min(Semaphore::MAX_PERMITS)),
            }),
            polling: poll::Polling::new(&config.polling),
            shadow_metric: None,
            fallback_metric: None,
            fallback_log: Throttle::new(FALLBACK_LOG_INTERVAL),
            clock,
        }
    }

    /// Polling discipline: a check-status call for a transaction polled less than
    /// `limits.check_status_interval` ago is refused (in shadow mode: counted and
    /// admitted). Every other route passes. Checked before the token buckets, so a
    /// refused poll costs no token.
    pub(crate) fn admit_poll(&self, route: &Route, path: &str) -> Result<(), LimitError> {
        let Some(polling) = &self.polling else {
            return Ok(());
        };
        let Some(key) = poll::check_status_key(&route.template, path) else {
            return Ok(());
        };
        let Err(wait) = polling.check(key.as_bytes(), self.clock.now()) else {
            return Ok(());
        };
        if self.shadow {
            if let Some(metric) = &self.shadow_metric {
                metric
                    .with_label_values(&[LimitName::CheckStatus.label()])
                    .inc();
            }
            tracing::warn!(
                limit = LimitName::CheckStatus.label(),
                retry_after_secs = retry_after_secs(wait),
                "check-status polled too soon; admitted because limits.shadow is on"
            );
            return Ok(());
        }
        Err(LimitError::new(
            LimitName::CheckStatus,
            wait,
            Refusal::TooSoon,
        ))
    }

    /// Counts shadow-mode refusals in this metric too, labelled by limit.
    pub(crate) fn with_shadow_metric(mut self, metric: prometheus::IntCounterVec) -> Self {
        self.shadow_metric = Some(metric);
        self
    }

    /// Counts the calls a shared bucket's local fallback decided, labelled by limit.
    pub(crate) fn with_fallback_metric(mut self, metric: prometheus::IntCounterVec) -> Self {
        self.fallback_metric = Some(metric);
        self
    }

    /// Admits the call, after waiting for a token in queue mode, or refuses it with
    /// a [`LimitError`] naming the limit. Checks client → route → global.
    pub(crate) async fn admit(&self, route: &Route, headers: &HeaderMap) -> Result<(), LimitError> {
        if self.global.is_none() && self.routes.is_empty() && self.clients.is_none() {
            return Ok(());
        }
        let mut waiting = Waiting {
            since: None,
            slot: None,
        };
        if let Some(clients) = &self.clients {
            let key = ClientKey::from_headers(headers, &clients.header);
            let verdict = self
                .pass(&mut waiting, || {
                    std::future::ready(
                        self.local(clients.limiter.check_key(&key), || LimitName::Client),
                    )
                })
                .await;
            self.sweep_if_full(clients);
            if verdict? == Verdict::ShadowRefused {
                return Ok(());
            }
        }
        let route_index = self
            .routes
            .iter()
            .position(|r| r.method == route.method && r.template == route.template);
        if let Some(shared) = &self.shared {
            // Route and global bucket in one round trip, taken together or not at all.
            let route_spec = route_index.and_then(|index| shared.routes.get(index));
            let specs: Vec<&SharedBucketSpec> = route_spec
                .into_iter()
                .chain(shared.global.as_ref())
                .collect();
            if !specs.is_empty() {
                self.pass(&mut waiting, || {
                    self.check_shared(shared, &specs, route_index)
                })
                .await?;
            }
            return Ok(());
        }
        if let Some(limiter) = route_index.and_then(|index| self.routes.get(index)) {
            let verdict = self
                .pass(&mut waiting, || {
                    std::future::ready(self.local(limiter.limiter.check(), || {
                        LimitName::Route(limiter.name.clone())
                    }))
                })
                .await?;
            if verdict == Verdict::ShadowRefused {
                return Ok(());
            }
        }
        if let Some(global) = &self.global {
            self.pass(&mut waiting, || {
                std::future::ready(self.local(global.check(), || LimitName::Global))
            })
            .await?;
        }
        Ok(())
    }

    /// A local bucket's answer as [`Limits::pass`] takes it.
    fn local(
        &self,
        checked: Result<(), NotUntil<C::Instant>>,
        name: impl Fn() -> LimitName,
    ) -> Result<(), (Duration, LimitName)> {
        checked.map_err(|not_until| (not_until.wait_time_from(self.clock.now()), name()))
    }

    /// The shared route and global buckets of a call (`specs`: the route's first, if it
    /// has one): a token from each, or how long until the first that refused has one. When
    /// the store cannot answer, the local fallback buckets decide in the same order,
    /// counted per bucket and logged (at most every [`FALLBACK_LOG_INTERVAL`]).
    async fn check_shared(
        &self,
        shared: &SharedSpecs,
        specs: &[&SharedBucketSpec],
        route_index: Option<usize>,
    ) -> Result<(), (Duration, LimitName)> {
        let route = route_index.and_then(|index| self.routes.get(index));
        let route_name = || route.map(|route| LimitName::Route(route.name.clone()));
        match shared.store.take(specs).await {
            Ok(None) => Ok(()),
            Ok(Some((index, wait))) => {
                // The route's bucket comes first when the call has one.
                let limit = match (index, route_name()) {
                    (0, Some(route)) => route,
                    _ => LimitName::Global,
                };
                Err((wait, limit))
            }
            Err(Unanswered) => {
                let locals = route
                    .map(|route| (&route.limiter, LimitName::Route(route.name.clone())))
                    .into_iter()
                    .chain(
                        self.global
                            .as_ref()
                            .map(|global| (global, LimitName::Global)),
                    );
                let mut logged = false;
                for (limiter, limit) in locals {
                    if let Some(metric) = &self.fallback_metric {
                        metric.with_label_values(&[limit.label()]).inc();
                    }
                    if !logged {
                        logged = true;
                        if let Some(suppressed) = self.fallback_log.ready() {
                            tracing::warn!(
                                limit = %limit,
                                suppressed,
                                "the shared rate limit store did not answer in time; this sidecar limits alone at state.redis.fallback_share of the rate"
                            );
                        }
                    }
                    let limit_name = limit.clone();
                    self.local(limiter.check(), move || limit_name.clone())?;
                }
                Ok(())
            }
        }
    }

    /// One bucket: a token now, a token after a bounded wait, or a refusal. `check`
    /// takes a token or says how long until there is one.
    async fn pass<'a, F>(
        &'a self,
        waiting: &mut Waiting<'a, C::Instant>,
        check: impl Fn() -> F,
    ) -> Result<Verdict, LimitError>
    where
        F: Future<Output = Result<(), (Duration, LimitName)>>,
    {
        loop {
            let (wait, limit) = match check().await {
                Ok(()) => return Ok(Verdict::Admitted),
                Err(refused) => refused,
            };
            let name = || limit.clone();
            let max_wait = self.queue.as_ref().map_or(Duration::ZERO, |q| q.max_wait);
            if self.shadow {
                // Nothing waits in shadow mode; count what would have been refused
                // (the queue's length bound is not simulated). A refusal stops the
                // checks, as it would when enforcing; a wait the queue would absorb
                // goes on to the next bucket, as the queued call would.
                if wait <= max_wait {
                    return Ok(Verdict::Admitted);
                }
                let limit = name();
                if let Some(metric) = &self.shadow_metric {
                    metric.with_label_values(&[limit.label()]).inc();
                }
                tracing::warn!(
                    limit = %limit,
                    retry_after_secs = retry_after_secs(wait),
                    "would be rate limited; admitted because limits.shadow is on"
                );
                return Ok(Verdict::ShadowRefused);
            }
            let Some(queue) = &self.queue else {
                return Err(LimitError::new(name(), wait, Refusal::NoQueue));
            };
            let now = self.clock.now();
            let since = *waiting.since.get_or_insert(now);
            let waited = Duration::from(now.duration_since(since));
            if wait > queue.max_wait.saturating_sub(waited) {
                return Err(LimitError::new(name(), wait, Refusal::WaitTooLong));
            }
            if waiting.slot.is_none() {
                match queue.slots.try_acquire() {
                    Ok(slot) => waiting.slot = Some(slot),
                    Err(_) => return Err(LimitError::new(name(), wait, Refusal::QueueFull)),
                }
            }
            // At least a millisecond, so a wait rounded to zero cannot spin.
            self.clock.sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// When every client slot is taken, forget the buckets that have refilled (at most
    /// once per [`SWEEP_INTERVAL`]), so new clients get their own bucket again.
    fn sweep_if_full(&self, clients: &Clients<C>) {
        if !clients.store.is_full() {
            return;
        }
        // Another call is sweeping: nothing to add.
        let Ok(mut last_sweep) = clients.last_sweep.try_lock() else {
            return;
        };
        let now = self.clock.now();
        let due = last_sweep
            .is_none_or(|last| Duration::from(now.duration_since(last)) >= SWEEP_INTERVAL);
        if due {
            *last_sweep = Some(now);
            clients.limiter.retain_recent();
        }
    }
}

impl<C: LimitClock> Limits<C> {
    /// Whether the global and route buckets are kept in a shared store.
    fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

impl<C: LimitClock> fmt::Debug for Limits<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("shadow", &self.shadow)
            .field("global", &self.global.is_some())
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field("per_client", &self.clients.as_ref().map(|c| &c.header))
            .field("queue", &self.queue.as_ref().map(|q| q.max_wait))
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// Why admission refused a call: which limit, how long until its next token, and why the
/// call could not wait for it. Pure data; `crate::error` turns it into the 429 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {limit} limit refused the call ({reason}); its next token is {retry_after:?} away")]
pub(crate) struct LimitError {
    pub(crate) limit: LimitName,
    /// How long until the refusing bucket has a token for this call.
    pub(crate) retry_after: Duration,
    pub(crate) reason: Refusal,
}

impl LimitError {
    fn new(limit: LimitName, retry_after: Duration, reason: Refusal) -> LimitError {
        LimitError {
            limit,
            retry_after,
            reason,
        }
    }

    /// When to try again, in whole seconds, rounded up, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

/// Which limit refused; its [`label`](LimitName::label) names it in the answer, the log
/// and the `limit` label of the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitName {
    Global,
    /// One route's bucket; holds its label, `route POST /v3/...`.
    Route(Arc<str>),
    /// The caller's own `per_client` bucket (never the app's header value).
    Client,
    /// The polling discipline of check-status calls (`check_status_interval`).
    CheckStatus,
    /// A channel's own bucket (`channels.<name>.limits.channel`).
    Channel,
}

impl LimitName {
    /// `global`, `route POST /v3/payments/{transactionId}/refund`, `client` or
    /// `check_status`.
    pub(crate) fn label(&self) -> &str {
        match self {
            LimitName::Global => "global",
            LimitName::Route(label) => label,
            LimitName::Client => "client",
            LimitName::CheckStatus => "check_status",
            LimitName::Channel => "channel",
        }
    }
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why a call that found no token could not wait for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// No `queue` is configured: a call without a token is refused at once.
    #[error("no token, and no queue to wait in")]
    NoQueue,
    /// The wait would go past what is left of `queue.max_wait`.
    #[error("the wait for a token would exceed queue.max_wait")]
    WaitTooLong,
    /// Every `queue.max_queued` slot is taken.
    #[error("the queue is full")]
    QueueFull,
    /// A check-status poll of one transaction within `limits.check_status_interval`.
    #[error("the transaction was polled less than limits.check_status_interval ago")]
    TooSoon,
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
