//! Admission, driven the way production drives it, on governor's `FakeRelativeClock`:
//! buckets, the order of checks, shadow mode and queue mode. The helpers are shared with
//! `client_store.rs`'s tests.

use super::config::tests::{allowlist, config};
use super::shared::GcraShape;
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
        Arc::new(Limits::with_clock(&config(yaml), clock.clone(), None)),
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
    let limits = Limits::with_clock(&config(yaml), TestClock::default(), None)
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
async fn finished(call: tokio::task::JoinHandle<Result<(), LimitError>>) -> Result<(), LimitError> {
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

// --- shared buckets (state.backend: redis) ------------------------------------------

type Answer = Result<Option<(usize, Duration)>, Unanswered>;

/// A store that answers from a script of answers, and records what it was asked.
#[derive(Default)]
struct ScriptedStore {
    answers: std::sync::Mutex<std::collections::VecDeque<Answer>>,
    asked: std::sync::Mutex<Vec<Vec<SharedBucketSpec>>>,
}

impl SharedBuckets for ScriptedStore {
    fn bucket_key(&self, label: &str) -> String {
        format!("test:{label}")
    }

    fn take<'a>(&'a self, buckets: &'a [&'a SharedBucketSpec]) -> TakeFuture<'a> {
        let asked = buckets.iter().map(|bucket| (*bucket).clone()).collect();
        self.asked.lock().unwrap().push(asked);
        let answer = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Err(Unanswered));
        Box::pin(std::future::ready(answer))
    }
}

fn shared_limits(
    yaml: &str,
    answers: Vec<Answer>,
) -> (
    Limits<TestClock>,
    Arc<ScriptedStore>,
    prometheus::IntCounterVec,
) {
    let store = Arc::new(ScriptedStore {
        answers: std::sync::Mutex::new(answers.into()),
        ..ScriptedStore::default()
    });
    let metric = prometheus::IntCounterVec::new(
        prometheus::Opts::new("rate_limit_fallback", "fallbacks by limit"),
        &["limit"],
    )
    .unwrap();
    let shared = SharedLimits {
        store: store.clone(),
        fallback_share: Share::HALF,
    };
    let limits = Limits::with_clock(&config(yaml), TestClock::default(), Some(shared))
        .with_fallback_metric(metric.clone());
    (limits, store, metric)
}

fn spec(key: &str, emission_ms: u64, burst: u32) -> SharedBucketSpec {
    SharedBucketSpec {
        key: key.to_owned(),
        shape: GcraShape {
            emission_interval: Duration::from_millis(emission_ms),
            burst,
        },
    }
}

const REFUND_LIMIT: &str = "route POST /v3/payments/{transactionId}/refund";

#[tokio::test]
async fn a_calls_route_and_global_buckets_are_asked_in_one_step_and_the_refusing_one_is_named() {
    let (limits, store, fallbacks) = shared_limits(
        "limits:\n  global: { rate: 10/s, burst: 4 }\n  routes:\n    POST /v3/payments/{transactionId}/refund: { rate: 2/s }\n",
        vec![
            Ok(None),
            Ok(Some((1, Duration::from_millis(2500)))),
            Ok(Some((0, Duration::from_millis(400)))),
        ],
    );
    let refund = route("POST", REFUND);
    call(&limits, &refund, &HeaderMap::new()).await.unwrap();
    // The store says which bucket refused: the global one, 2.5 s, rounded up...
    assert_eq!(
        refused(call(&limits, &refund, &HeaderMap::new()).await),
        ("global".to_owned(), 3)
    );
    // ...then the route's own.
    assert_eq!(
        refused(call(&limits, &refund, &HeaderMap::new()).await),
        (REFUND_LIMIT.to_owned(), 1)
    );
    let both = vec![
        spec(&format!("test:{REFUND_LIMIT}"), 500, 2),
        spec("test:global", 100, 4),
    ];
    assert_eq!(
        *store.asked.lock().unwrap(),
        vec![both.clone(), both.clone(), both]
    );
    assert_eq!(counted(&fallbacks, "global"), 0);
    // A route without a bucket of its own asks for the global one only (the script has
    // run out of answers: the fallback decides, and counts).
    call(&limits, &route("POST", REQUEST), &HeaderMap::new())
        .await
        .unwrap();
    let asked = store.asked.lock().unwrap().clone();
    assert_eq!(asked[3], vec![spec("test:global", 100, 4)]);
    assert_eq!(counted(&fallbacks, "global"), 1);
    assert_eq!(counted(&fallbacks, REFUND_LIMIT), 0);
}

#[tokio::test]
async fn without_an_answer_the_shared_buckets_fall_back_to_their_share_locally_and_count_it() {
    // The store never answers: each call is decided by the fallback buckets, half of
    // each (route 2/s burst 4 -> 2; global 10/s burst 10 -> 5), route first, and counted.
    let (limits, store, fallbacks) = shared_limits(
        "limits:\n  global: { rate: 10/s, burst: 10 }\n  routes:\n    POST /v3/payments/{transactionId}/refund: { rate: 2/s, burst: 4 }\n",
        vec![],
    );
    let refund = route("POST", REFUND);
    let request = route("POST", REQUEST);
    for _ in 0..2 {
        call(&limits, &refund, &HeaderMap::new()).await.unwrap();
    }
    let (limit, retry_after) = refused(call(&limits, &refund, &HeaderMap::new()).await);
    assert_eq!((limit.as_str(), retry_after), (REFUND_LIMIT, 1));
    // The global fallback has 3 of its 5 left.
    for _ in 0..3 {
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
    }
    let (limit, _) = refused(call(&limits, &request, &HeaderMap::new()).await);
    assert_eq!(limit, "global");
    assert_eq!(counted(&fallbacks, REFUND_LIMIT), 3);
    // The refund refused by its route's fallback never reached the global one.
    assert_eq!(counted(&fallbacks, "global"), 2 + 4);
    assert_eq!(store.asked.lock().unwrap().len(), 7);
}

#[tokio::test]
async fn the_store_answering_again_takes_over_from_the_fallback() {
    let (limits, _store, fallbacks) = shared_limits(
        "limits:\n  global: { rate: 1/s, burst: 1 }\n",
        vec![Err(Unanswered), Ok(None), Ok(None), Err(Unanswered)],
    );
    let request = route("POST", REQUEST);
    // Fallback: the local half-bucket (1, rounded up) admits one...
    call(&limits, &request, &HeaderMap::new()).await.unwrap();
    // ...then the store decides again, whatever the local bucket holds.
    call(&limits, &request, &HeaderMap::new()).await.unwrap();
    call(&limits, &request, &HeaderMap::new()).await.unwrap();
    // Back on the fallback, whose one token is spent.
    refused(call(&limits, &request, &HeaderMap::new()).await);
    assert_eq!(counted(&fallbacks, "global"), 2);
}

#[tokio::test]
async fn shadow_mode_on_shared_buckets_admits_what_the_store_refuses() {
    let (limits, _store, _fallbacks) = shared_limits(
        "limits:\n  shadow: true\n  global: { rate: 1/s }\n",
        vec![Ok(Some((0, Duration::from_secs(1))))],
    );
    call(&limits, &route("POST", REQUEST), &HeaderMap::new())
        .await
        .unwrap();
}
