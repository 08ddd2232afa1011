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
//! production uses governor's default clock and tokio's timer; the unit tests below use
//! governor's `FakeRelativeClock` and advance it by hand, so no test depends on timing.
//!
//! # Refusals
//! A refusal is a [`LimitError`]: which limit, how long until its next token, and why the
//! call could not wait for it. Admission only decides; `crate::error` turns a refusal
//! into the 429 answer and its `Retry-After`.
//!
//! # Files
//! This file holds admission: the running limiters, queue and shadow mode. `config.rs`
//! reads and validates the `limits:` section into a [`LimitsConfig`]; `client_store.rs`
//! keeps the per-client buckets, bounded. The public names are re-exported here, so
//! callers write `crate::limit::LimitsConfig` whichever file defines it.

mod client_store;
mod config;

pub use config::{
    validate, Bucket, ClientLimit, LimitsConfig, QueueConfig, Rate, RawLimits, RouteLimit,
};

use crate::route::Route;
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

// ---------------------------------------------------------------------------------------
// The running limiters.

/// The time source of the limits: governor's clock for the buckets, and a way to wait
/// on the same time line for queue mode.
pub trait LimitClock: Clock + Clone + Send + Sync + 'static {
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
pub struct Limits<C: LimitClock = DefaultClock> {
    clock: C,
    shadow: bool,
    global: Option<DirectLimiter<C>>,
    routes: Vec<RouteLimiter<C>>,
    clients: Option<Clients<C>>,
    queue: Option<Queue>,
    /// `linepay_sidecar_rate_limited_shadow_total{limit}`, when metrics are wired: the
    /// one count of shadow-mode refusals.
    shadow_metric: Option<prometheus::IntCounterVec>,
}

struct RouteLimiter<C: LimitClock> {
    method: Method,
    template: String,
    /// `route POST /v3/...`, the name a refusal carries.
    name: Arc<str>,
    limiter: DirectLimiter<C>,
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
    /// Limits on governor's default clock and tokio's timer.
    pub fn new(config: &LimitsConfig) -> Limits {
        Limits::with_clock(config, DefaultClock::default())
    }
}

impl<C: LimitClock> Limits<C> {
    fn with_clock(config: &LimitsConfig, clock: C) -> Limits<C> {
        let direct =
            |bucket: &Bucket| RateLimiter::direct_with_clock(bucket.quota(), clock.clone());
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
            global: config.global.as_ref().map(direct),
            routes: config
                .routes
                .iter()
                .map(|route| RouteLimiter {
                    method: route.method.clone(),
                    template: route.template.clone(),
                    name: format!("route {} {}", route.method, route.template).into(),
                    limiter: direct(&route.bucket),
                })
                .collect(),
            clients,
            queue: config.queue.map(|queue| Queue {
                max_wait: queue.max_wait,
                slots: Semaphore::new(queue.max_queued.get().min(Semaphore::MAX_PERMITS)),
            }),
            shadow_metric: None,
            clock,
        }
    }

    /// Counts shadow-mode refusals in this metric too, labelled by limit.
    pub fn with_shadow_metric(mut self, metric: prometheus::IntCounterVec) -> Self {
        self.shadow_metric = Some(metric);
        self
    }

    /// Admits the call, after waiting for a token in queue mode, or refuses it with
    /// a [`LimitError`] naming the limit. Checks client → route → global.
    pub async fn admit(&self, route: &Route, headers: &HeaderMap) -> Result<(), LimitError> {
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
                .pass(
                    &mut waiting,
                    || clients.limiter.check_key(&key),
                    || LimitName::Client,
                )
                .await;
            self.sweep_if_full(clients);
            if verdict? == Verdict::ShadowRefused {
                return Ok(());
            }
        }
        let route_limiter = self
            .routes
            .iter()
            .find(|r| r.method == route.method && r.template == route.template);
        if let Some(limiter) = route_limiter {
            let verdict = self
                .pass(
                    &mut waiting,
                    || limiter.limiter.check(),
                    || LimitName::Route(limiter.name.clone()),
                )
                .await?;
            if verdict == Verdict::ShadowRefused {
                return Ok(());
            }
        }
        if let Some(global) = &self.global {
            self.pass(&mut waiting, || global.check(), || LimitName::Global)
                .await?;
        }
        Ok(())
    }

    /// One bucket: a token now, a token after a bounded wait, or a refusal.
    async fn pass<'a>(
        &'a self,
        waiting: &mut Waiting<'a, C::Instant>,
        check: impl Fn() -> Result<(), NotUntil<C::Instant>>,
        name: impl Fn() -> LimitName,
    ) -> Result<Verdict, LimitError> {
        loop {
            let wait = match check() {
                Ok(()) => return Ok(Verdict::Admitted),
                Err(not_until) => not_until.wait_time_from(self.clock.now()),
            };
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
            .finish()
    }
}

/// Why admission refused a call: which limit, how long until its next token, and why the
/// call could not wait for it. Pure data; `crate::error` turns it into the 429 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {limit} limit refused the call ({reason}); its next token is {retry_after:?} away")]
pub struct LimitError {
    pub limit: LimitName,
    /// How long until the refusing bucket has a token for this call.
    pub retry_after: Duration,
    pub reason: Refusal,
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
    pub fn retry_after_secs(&self) -> u64 {
        retry_after_secs(self.retry_after)
    }
}

/// Which limit refused; its [`label`](LimitName::label) names it in the answer, the log
/// and the `limit` label of the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitName {
    Global,
    /// One route's bucket; holds its label, `route POST /v3/...`.
    Route(Arc<str>),
    /// The caller's own `per_client` bucket (never the app's header value).
    Client,
}

impl LimitName {
    /// `global`, `route POST /v3/payments/{transactionId}/refund` or `client`.
    pub fn label(&self) -> &str {
        match self {
            LimitName::Global => "global",
            LimitName::Route(label) => label,
            LimitName::Client => "client",
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
pub enum Refusal {
    /// No `queue` is configured: a call without a token is refused at once.
    #[error("no token, and no queue to wait in")]
    NoQueue,
    /// The wait would go past what is left of `queue.max_wait`.
    #[error("the wait for a token would exceed queue.max_wait")]
    WaitTooLong,
    /// Every `queue.max_queued` slot is taken.
    #[error("the queue is full")]
    QueueFull,
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::config::tests::{allowlist, config};
    use super::*;
    use crate::route::Match;
    use governor::clock::FakeRelativeClock;
    use governor::nanos::Nanos;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    const REFUND: &str = "/v3/payments/2021121600698709710/refund";
    const CONFIRM: &str = "/v3/payments/2021121600698709710/confirm";
    pub(super) const REQUEST: &str = "/v3/payments/request";

    /// governor's `FakeRelativeClock`, plus sleeps that end only when the test advances
    /// the clock past them.
    #[derive(Clone, Default)]
    pub(super) struct TestClock {
        fake: FakeRelativeClock,
        tick: Arc<Notify>,
        sleepers: Arc<AtomicUsize>,
    }

    impl TestClock {
        pub(super) fn advance(&self, by: Duration) {
            self.fake.advance(by);
            self.tick.notify_waiters();
        }

        /// Lets spawned calls run until `count` of them are asleep (bounded).
        async fn until_sleeping(&self, count: usize) {
            for _ in 0..10_000 {
                if self.sleepers.load(Ordering::SeqCst) == count {
                    return;
                }
                tokio::task::yield_now().await;
            }
            panic!(
                "expected {count} sleeping calls, found {}",
                self.sleepers.load(Ordering::SeqCst)
            );
        }
    }

    impl Clock for TestClock {
        type Instant = Nanos;

        fn now(&self) -> Nanos {
            self.fake.now()
        }
    }

    struct Asleep(Arc<AtomicUsize>);

    impl Drop for Asleep {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl LimitClock for TestClock {
        fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
            let clock = self.clone();
            async move {
                let until = clock.now() + Nanos::from(duration);
                clock.sleepers.fetch_add(1, Ordering::SeqCst);
                let _asleep = Asleep(clock.sleepers.clone());
                loop {
                    let ticked = clock.tick.notified();
                    tokio::pin!(ticked);
                    ticked.as_mut().enable();
                    if clock.now() >= until {
                        return;
                    }
                    ticked.await;
                }
            }
        }
    }

    pub(super) fn limits(yaml: &str) -> (Arc<Limits<TestClock>>, TestClock) {
        let clock = TestClock::default();
        (
            Arc::new(Limits::with_clock(&config(yaml), clock.clone())),
            clock,
        )
    }

    /// Limits that count shadow-mode refusals in a metric of their own, as production
    /// counts them in `linepay_sidecar_rate_limited_shadow_total`.
    fn shadow_limits(yaml: &str) -> (Limits<TestClock>, prometheus::IntCounterVec) {
        let metric = prometheus::IntCounterVec::new(
            prometheus::Opts::new("rate_limited_shadow", "shadow refusals by limit"),
            &["limit"],
        )
        .unwrap();
        let limits = Limits::with_clock(&config(yaml), TestClock::default())
            .with_shadow_metric(metric.clone());
        (limits, metric)
    }

    /// The shadow-mode refusals counted for one limit.
    fn counted(metric: &prometheus::IntCounterVec, limit: &str) -> u64 {
        metric.with_label_values(&[limit]).get()
    }

    pub(super) fn route(method: &str, path: &str) -> Route {
        match allowlist().find(&method.parse().unwrap(), path) {
            Match::Allowed(route) => route.clone(),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    pub(super) fn client(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-merchant-client", value.parse().unwrap());
        headers
    }

    /// Admits one call now; panics if it would wait (the test clock never moves alone).
    pub(super) async fn call(
        limits: &Limits<TestClock>,
        route: &Route,
        headers: &HeaderMap,
    ) -> Result<(), LimitError> {
        tokio::time::timeout(Duration::from_secs(5), limits.admit(route, headers))
            .await
            .unwrap_or_else(|_| panic!("the call waited, but no wait was expected"))
    }

    /// The refused limit's name and `Retry-After`, or a panic when admitted.
    #[track_caller]
    pub(super) fn refused(outcome: Result<(), LimitError>) -> (String, u64) {
        match outcome {
            Err(refusal) => (refusal.limit.label().to_owned(), refusal.retry_after_secs()),
            Ok(()) => panic!("expected a rate-limit refusal, the call was admitted"),
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_at_least_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(60)), 60);
    }

    // --- buckets -----------------------------------------------------------------------

    #[tokio::test]
    async fn no_limits_admit_everything() {
        let (limits, _clock) = limits("");
        let refund = route("POST", REFUND);
        for _ in 0..1000 {
            call(&limits, &refund, &HeaderMap::new()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn burst_then_refusal_with_retry_after_until_the_next_token() {
        let (limits, clock) = limits("limits:\n  global: {rate: 1/m, burst: 3}\n");
        let request = route("POST", REQUEST);
        let none = HeaderMap::new();
        for _ in 0..3 {
            call(&limits, &request, &none).await.unwrap();
        }
        let refusal = call(&limits, &request, &none).await;
        assert_eq!(refusal.clone().unwrap_err().reason, Refusal::NoQueue);
        assert_eq!(refused(refusal), ("global".to_owned(), 60));

        clock.advance(Duration::from_millis(30_500));
        // 29.5 s left, rounded up.
        assert_eq!(refused(call(&limits, &request, &none).await).1, 30);
        clock.advance(Duration::from_millis(29_500));
        call(&limits, &request, &none).await.unwrap();
        assert_eq!(refused(call(&limits, &request, &none).await).1, 60);
    }

    #[tokio::test]
    async fn route_limits_are_independent_and_other_routes_are_free() {
        let (limits, clock) = limits(
            "limits:\n  routes:\n    \"POST /v3/payments/{transactionId}/refund\": {rate: 1/s, burst: 2}\n    \"POST /v3/payments/{transactionId}/confirm\": {rate: 1/s, burst: 1}\n",
        );
        let (refund, confirm, request) = (
            route("POST", REFUND),
            route("POST", CONFIRM),
            route("POST", REQUEST),
        );
        let none = HeaderMap::new();
        call(&limits, &refund, &none).await.unwrap();
        call(&limits, &refund, &none).await.unwrap();
        let (limit, retry_after) = refused(call(&limits, &refund, &none).await);
        assert_eq!(limit, "route POST /v3/payments/{transactionId}/refund");
        assert_eq!(retry_after, 1);

        // Refund's empty bucket leaves confirm's full, and request has no limit at all.
        call(&limits, &confirm, &none).await.unwrap();
        assert_eq!(
            refused(call(&limits, &confirm, &none).await).0,
            "route POST /v3/payments/{transactionId}/confirm"
        );
        for _ in 0..100 {
            call(&limits, &request, &none).await.unwrap();
        }

        clock.advance(Duration::from_secs(1));
        call(&limits, &refund, &none).await.unwrap();
    }

    #[tokio::test]
    async fn checks_go_client_then_route_then_global() {
        let (limits, _clock) = limits(
            "limits:\n  global: {rate: 1/m, burst: 3}\n  routes:\n    \"POST /v3/payments/request\": {rate: 1/m, burst: 2}\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n",
        );
        let (request, refund) = (route("POST", REQUEST), route("POST", REFUND));
        // Global has 2 tokens left, the route 1.
        call(&limits, &request, &client("a")).await.unwrap();
        // Refused by its own client bucket: route and global keep their tokens.
        assert_eq!(
            refused(call(&limits, &request, &client("a")).await).0,
            "client"
        );
        // Global has 1 token left, the route none.
        call(&limits, &request, &client("b")).await.unwrap();
        // Refused by the route: client c's token is spent (the documented cost), global's is not.
        assert_eq!(
            refused(call(&limits, &request, &client("c")).await).0,
            "route POST /v3/payments/request"
        );
        assert_eq!(
            refused(call(&limits, &refund, &client("c")).await).0,
            "client"
        );
        // Global has no token left.
        call(&limits, &refund, &client("d")).await.unwrap();
        assert_eq!(
            refused(call(&limits, &refund, &client("e")).await).0,
            "global"
        );
    }

    #[tokio::test]
    async fn shadow_mode_admits_everything_and_counts_what_it_would_refuse() {
        let (limits, shadow) = shadow_limits(
            "limits:\n  shadow: true\n  global: {rate: 1/m, burst: 2}\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n",
        );
        let request = route("POST", REQUEST);
        for _ in 0..5 {
            call(&limits, &request, &client("a")).await.unwrap();
        }
        // Call 1 passes both; calls 2-5 would be refused by the client bucket.
        assert_eq!(counted(&shadow, "client"), 4);
        assert_eq!(counted(&shadow, "global"), 0);
        call(&limits, &request, &client("b")).await.unwrap();
        call(&limits, &request, &client("c")).await.unwrap();
        // b took global's second token; c would be refused by global.
        assert_eq!(counted(&shadow, "client"), 4);
        assert_eq!(counted(&shadow, "global"), 1);
    }

    // --- queue mode --------------------------------------------------------------------

    fn spawn_call(
        limits: &Arc<Limits<TestClock>>,
        route: &Route,
    ) -> tokio::task::JoinHandle<Result<(), LimitError>> {
        let (limits, route) = (limits.clone(), route.clone());
        tokio::spawn(async move { limits.admit(&route, &HeaderMap::new()).await })
    }

    /// The outcome of a spawned call that should end now; a panic rather than a hang if
    /// it keeps waiting on the test clock.
    async fn finished(
        call: tokio::task::JoinHandle<Result<(), LimitError>>,
    ) -> Result<(), LimitError> {
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| panic!("the call is still waiting"))
            .unwrap()
    }

    #[tokio::test]
    async fn queued_call_waits_for_its_token_then_succeeds() {
        let (limits, clock) =
            limits("limits:\n  global: {rate: 2/s, burst: 1}\n  queue: {max_wait: 2s}\n");
        let request = route("POST", REQUEST);
        call(&limits, &request, &HeaderMap::new()).await.unwrap();

        let second = spawn_call(&limits, &request);
        clock.until_sleeping(1).await;
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!second.is_finished(), "admitted before its token");
        clock.advance(Duration::from_millis(1));
        finished(second).await.unwrap();
    }

    #[tokio::test]
    async fn wait_beyond_max_wait_is_refused_at_once() {
        let (limits, _clock) =
            limits("limits:\n  global: {rate: 1/m, burst: 1}\n  queue: {max_wait: 2s}\n");
        let request = route("POST", REQUEST);
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        let refusal = call(&limits, &request, &HeaderMap::new()).await;
        assert_eq!(refusal.clone().unwrap_err().reason, Refusal::WaitTooLong);
        assert_eq!(refused(refusal), ("global".to_owned(), 60));
    }

    #[tokio::test]
    async fn queue_is_bounded_in_length() {
        let (limits, clock) = limits(
            "limits:\n  global: {rate: 1/s, burst: 1}\n  queue: {max_wait: 10s, max_queued: 1}\n",
        );
        let request = route("POST", REQUEST);
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        let queued = spawn_call(&limits, &request);
        clock.until_sleeping(1).await;
        // The one slot is taken: refused at once, though the wait would fit.
        let refusal = call(&limits, &request, &HeaderMap::new()).await;
        assert_eq!(refusal.clone().unwrap_err().reason, Refusal::QueueFull);
        assert_eq!(refused(refusal), ("global".to_owned(), 1));
        clock.advance(Duration::from_secs(1));
        finished(queued).await.unwrap();
    }

    #[tokio::test]
    async fn total_wait_is_bounded_by_max_wait() {
        // Two waiters for one token a second: the second's wait grows past max_wait.
        let (limits, clock) = limits(
            "limits:\n  global: {rate: 1/s, burst: 1}\n  queue: {max_wait: 1500ms, max_queued: 10}\n",
        );
        let request = route("POST", REQUEST);
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        let first = spawn_call(&limits, &request);
        let second = spawn_call(&limits, &request);
        clock.until_sleeping(2).await;
        clock.advance(Duration::from_secs(1));
        let outcomes = [finished(first).await, finished(second).await];
        assert_eq!(
            outcomes.iter().filter(|o| o.is_ok()).count(),
            1,
            "{outcomes:?}"
        );
        let loser = outcomes.into_iter().find(Result::is_err).unwrap();
        assert_eq!(refused(loser).0, "global");
    }

    #[tokio::test]
    async fn cancelled_wait_frees_its_queue_slot() {
        let (limits, clock) = limits(
            "limits:\n  global: {rate: 1/s, burst: 1}\n  queue: {max_wait: 2s, max_queued: 1}\n",
        );
        let request = route("POST", REQUEST);
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        let abandoned = spawn_call(&limits, &request);
        clock.until_sleeping(1).await;
        // The app disconnects: hyper drops the call's future.
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        clock.until_sleeping(0).await;

        let next = spawn_call(&limits, &request);
        clock.until_sleeping(1).await;
        clock.advance(Duration::from_secs(1));
        finished(next).await.unwrap();
    }

    #[tokio::test]
    async fn shadow_mode_never_waits_and_counts_only_waits_beyond_max_wait() {
        let request = route("POST", REQUEST);
        let (within, within_shadow) = shadow_limits(
            "limits:\n  shadow: true\n  global: {rate: 1/s, burst: 1}\n  queue: {max_wait: 1500ms}\n",
        );
        call(&within, &request, &HeaderMap::new()).await.unwrap();
        // Would wait 1 s: within max_wait, so it would not have been refused.
        call(&within, &request, &HeaderMap::new()).await.unwrap();
        assert_eq!(counted(&within_shadow, "global"), 0);

        let (beyond, beyond_shadow) = shadow_limits(
            "limits:\n  shadow: true\n  global: {rate: 1/m, burst: 1}\n  queue: {max_wait: 1500ms}\n",
        );
        call(&beyond, &request, &HeaderMap::new()).await.unwrap();
        call(&beyond, &request, &HeaderMap::new()).await.unwrap();
        assert_eq!(counted(&beyond_shadow, "global"), 1);
    }
}
