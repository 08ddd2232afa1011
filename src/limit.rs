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
//! refused is admitted, counted ([`Limits::shadow_refusals`]) and logged as a warning, so
//! a team can see what a limit would do before enforcing it.
//!
//! # Time
//! [`Limits`] is generic over a [`LimitClock`] (governor's clock plus a way to sleep):
//! production uses governor's default clock and tokio's timer; the unit tests below use
//! governor's `FakeRelativeClock` and advance it by hand, so no test depends on timing.

use crate::config::ConfigDuration;
use crate::error::ProxyError;
use crate::route::{Allowlist, Match, Route};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota, RateLimiter};
use http::{HeaderMap, HeaderName, Method};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Clients tracked at most, unless `per_client.max_clients` says otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Calls waiting at most, unless `queue.max_queued` says otherwise.
pub const DEFAULT_MAX_QUEUED: usize = 100;

/// The largest count per period and the largest burst: far beyond any LINE Pay quota,
/// and small enough that governor's arithmetic (nanoseconds in a `u64`) cannot overflow.
const MAX_COUNT: u32 = 1_000_000;
const MAX_BURST: u32 = 1_000_000;
const MAX_CLIENTS: usize = 1_000_000;
/// A queued call holds an app connection open; past a minute the app's own HTTP timeout
/// would usually have given up on it already.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(60);
/// Client header values longer than this are keyed by their SHA-256, so that the memory
/// held per client stays small whatever the app sends.
const MAX_KEY_BYTES: usize = 64;
/// When every client slot is taken, forgotten buckets are swept at most this often.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Raw shape of the `limits:` section.

/// The `limits:` section of the YAML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Count and log what would be refused, refuse nothing.
    #[serde(default)]
    pub shadow: bool,
    pub global: Option<Spanned<RawBucket>>,
    /// Keyed by route id, e.g. `POST /v3/payments/{transactionId}/refund`.
    #[serde(default)]
    pub routes: BTreeMap<String, Spanned<RawBucket>>,
    pub per_client: Option<Spanned<RawClientLimit>>,
    pub queue: Option<Spanned<RawQueue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBucket {
    pub rate: Rate,
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientLimit {
    pub header: String,
    pub rate: Rate,
    pub burst: Option<u32>,
    pub max_clients: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    pub max_wait: ConfigDuration,
    pub max_queued: Option<usize>,
}

/// A rate written `50/s`, `20/m` or `100/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rate(&text).map_err(serde::de::Error::custom)
    }
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

/// Parses `50/s`, `20/m`, `100/h`. A bare number is refused: per second and per minute
/// are both plausible, and guessing wrong is a factor of 60.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let Some((count, unit)) = text.split_once('/') else {
        return Err(if text.parse::<u64>().is_ok() {
            format!("rate `{text}` needs a period: write {text}/s, {text}/m or {text}/h")
        } else {
            format!("`{text}` is not a rate such as 50/s, 20/m or 100/h")
        });
    };
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate such as 50/s, 20/m or 100/h"))?;
    let period = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => {
            return Err(format!(
                "rate `{text}` has an unknown period: use /s, /m or /h"
            ))
        }
    };
    let Some(count) = NonZeroU32::new(count) else {
        return Err(format!(
            "rate `{text}` allows nothing; use at least 1, or remove the limit"
        ));
    };
    if count.get() > MAX_COUNT {
        return Err(format!(
            "rate `{text}` is above {MAX_COUNT} per period; remove the limit instead"
        ));
    }
    Ok(Rate { count, period })
}

// ---------------------------------------------------------------------------------------
// Validated limits.

/// Validated limits; the default is no limit at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsConfig {
    pub shadow: bool,
    pub global: Option<Bucket>,
    pub routes: Vec<RouteLimit>,
    pub per_client: Option<ClientLimit>,
    pub queue: Option<QueueConfig>,
}

/// One bucket's shape: refills at `rate`, holds at most `burst` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    rate: Rate,
    burst: NonZeroU32,
    quota: Quota,
}

impl Bucket {
    /// `burst` defaults to the rate's count per period.
    pub fn new(rate: Rate, burst: Option<u32>) -> Result<Bucket, String> {
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

    pub fn rate(&self) -> Rate {
        self.rate
    }

    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLimit {
    pub method: Method,
    pub template: String,
    pub bucket: Bucket,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimit {
    /// The request header naming the client, e.g. `x-merchant-client`.
    pub header: HeaderName,
    pub bucket: Bucket,
    pub max_clients: NonZeroUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_wait: Duration,
    pub max_queued: NonZeroUsize,
}

/// Checks the `limits:` section against the allowlist, collecting every problem with its
/// file:line (`at` formats a line number).
pub fn validate(
    raw: &RawLimits,
    allowlist: &Allowlist,
    at: &dyn Fn(usize) -> String,
) -> Result<LimitsConfig, Vec<String>> {
    let mut problems = Vec::new();
    let line_of = |spanned_line: u64| at(usize::try_from(spanned_line).unwrap_or(usize::MAX));

    let global = raw.global.as_ref().and_then(|entry| {
        Bucket::new(entry.value.rate, entry.value.burst)
            .map_err(|problem| {
                problems.push(format!(
                    "{}: limits.global: {problem}",
                    line_of(entry.referenced.line())
                ))
            })
            .ok()
    });

    let mut routes = Vec::new();
    for (id, entry) in &raw.routes {
        let line = line_of(entry.referenced.line());
        let Some(route) = allowlist.routes().iter().find(|r| r.id() == *id) else {
            problems.push(format!(
                "{line}: limits.routes: `{id}` is not an allowed route; {}",
                suggest_route(id, allowlist)
            ));
            continue;
        };
        match Bucket::new(entry.value.rate, entry.value.burst) {
            Ok(bucket) => routes.push(RouteLimit {
                method: route.method.clone(),
                template: route.template.clone(),
                bucket,
            }),
            Err(problem) => problems.push(format!("{line}: limits.routes.\"{id}\": {problem}")),
        }
    }

    let per_client = raw.per_client.as_ref().and_then(|entry| {
        let line = line_of(entry.referenced.line());
        let raw = &entry.value;
        let before = problems.len();
        let header = HeaderName::from_bytes(raw.header.trim().as_bytes())
            .map_err(|_| {
                problems.push(format!(
                    "{line}: limits.per_client.header: `{}` is not a header name such as X-Merchant-Client",
                    raw.header
                ))
            })
            .ok();
        let bucket = Bucket::new(raw.rate, raw.burst)
            .map_err(|problem| problems.push(format!("{line}: limits.per_client: {problem}")))
            .ok();
        let max_clients = raw.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS);
        if max_clients > MAX_CLIENTS {
            problems.push(format!(
                "{line}: limits.per_client.max_clients: {max_clients} is above {MAX_CLIENTS}"
            ));
        }
        let max_clients = NonZeroUsize::new(max_clients).or_else(|| {
            problems.push(format!(
                "{line}: limits.per_client.max_clients must be at least 1"
            ));
            None
        });
        match (header, bucket, max_clients) {
            (Some(header), Some(bucket), Some(max_clients)) if problems.len() == before => {
                Some(ClientLimit {
                    header,
                    bucket,
                    max_clients,
                })
            }
            _ => None,
        }
    });

    let queue = raw.queue.as_ref().and_then(|entry| {
        let line = line_of(entry.referenced.line());
        let max_wait = entry.value.max_wait.0;
        let mut ok = true;
        if max_wait.is_zero() {
            problems.push(format!(
                "{line}: limits.queue.max_wait must be above 0; remove `queue` to refuse at once"
            ));
            ok = false;
        } else if max_wait > MAX_QUEUE_WAIT {
            problems.push(format!(
                "{line}: limits.queue.max_wait is above {}s: a queued call holds the app's connection, and the app's own timeout is usually shorter",
                MAX_QUEUE_WAIT.as_secs()
            ));
            ok = false;
        }
        let max_queued =
            NonZeroUsize::new(entry.value.max_queued.unwrap_or(DEFAULT_MAX_QUEUED)).or_else(|| {
                problems.push(format!(
                    "{line}: limits.queue.max_queued must be at least 1; remove `queue` to refuse at once"
                ));
                None
            });
        match max_queued {
            Some(max_queued) if ok => Some(QueueConfig {
                max_wait,
                max_queued,
            }),
            _ => None,
        }
    });

    if problems.is_empty() {
        Ok(LimitsConfig {
            shadow: raw.shadow,
            global,
            routes,
            per_client,
            queue,
        })
    } else {
        Err(problems)
    }
}

/// The next step for a route key that names no allowed route.
fn suggest_route(id: &str, allowlist: &Allowlist) -> String {
    let routes = allowlist.routes();
    let suggestion = routes
        .iter()
        .find(|route| route.id().eq_ignore_ascii_case(id))
        .map(|route| route.id().to_owned())
        .or_else(|| {
            // A concrete call (`POST /v3/payments/123/refund`) names its template.
            let (method, path) = id.split_once(' ')?;
            let method = Method::from_bytes(method.trim().to_ascii_uppercase().as_bytes()).ok()?;
            match allowlist.find(&method, path.trim()) {
                Match::Allowed(route) => Some(route.id().to_owned()),
                _ => None,
            }
        });
    match suggestion {
        Some(route) => format!("did you mean `{route}`?"),
        None => "write it as METHOD and template, e.g. `POST /v3/payments/{transactionId}/refund`"
            .to_owned(),
    }
}

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

/// The running limiters, shared by every call. Rebuilt (buckets full again) whenever the
/// configuration is loaded.
pub struct Limits<C: LimitClock = DefaultClock> {
    clock: C,
    shadow: bool,
    global: Option<DirectLimiter<C>>,
    routes: Vec<RouteLimiter<C>>,
    clients: Option<Clients<C>>,
    queue: Option<Queue>,
    shadow_refusals: AtomicU64,
    /// `linepay_sidecar_rate_limited_shadow_total{limit}`, when metrics are wired.
    shadow_metric: Option<prometheus::IntCounterVec>,
}

struct RouteLimiter<C: LimitClock> {
    method: Method,
    template: String,
    /// `route POST /v3/...`, the name a refusal carries.
    name: String,
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
    /// Shadow mode: it would have been refused (or left waiting); admitted, and the
    /// later buckets are not checked.
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

impl Default for Limits {
    /// No limits: every call is admitted.
    fn default() -> Self {
        Limits::new(&LimitsConfig::default())
    }
}

impl<C: LimitClock> Limits<C> {
    pub fn with_clock(config: &LimitsConfig, clock: C) -> Limits<C> {
        let direct = |bucket: &Bucket| RateLimiter::direct_with_clock(bucket.quota, clock.clone());
        let clients = config.per_client.as_ref().map(|client| {
            let store = SharedClientStore(Arc::new(ClientStore {
                max_clients: client.max_clients.get(),
                buckets: Mutex::new(HashMap::new()),
                full: AtomicBool::new(false),
            }));
            Clients {
                header: client.header.clone(),
                limiter: RateLimiter::new(client.bucket.quota, store.clone(), clock.clone()),
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
                    name: format!("route {} {}", route.method, route.template),
                    limiter: direct(&route.bucket),
                })
                .collect(),
            clients,
            queue: config.queue.map(|queue| Queue {
                max_wait: queue.max_wait,
                slots: Semaphore::new(queue.max_queued.get().min(Semaphore::MAX_PERMITS)),
            }),
            shadow_refusals: AtomicU64::new(0),
            shadow_metric: None,
            clock,
        }
    }

    /// Counts shadow-mode refusals in this metric too, labelled by limit.
    pub fn with_shadow_metric(mut self, metric: prometheus::IntCounterVec) -> Self {
        self.shadow_metric = Some(metric);
        self
    }

    /// Calls admitted in shadow mode that the limits would have refused.
    pub fn shadow_refusals(&self) -> u64 {
        self.shadow_refusals.load(Ordering::Relaxed)
    }

    /// Admits the call, after waiting for a token in queue mode, or refuses it with
    /// `ProxyError::RateLimited` naming the limit. Checks client → route → global.
    pub async fn admit(&self, route: &Route, headers: &HeaderMap) -> Result<(), ProxyError> {
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
                    || "client".to_owned(),
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
                    || limiter.name.clone(),
                )
                .await?;
            if verdict == Verdict::ShadowRefused {
                return Ok(());
            }
        }
        if let Some(global) = &self.global {
            self.pass(&mut waiting, || global.check(), || "global".to_owned())
                .await?;
        }
        Ok(())
    }

    /// One bucket: a token now, a token after a bounded wait, or a refusal.
    async fn pass<'a>(
        &'a self,
        waiting: &mut Waiting<'a, C::Instant>,
        check: impl Fn() -> Result<(), NotUntil<C::Instant>>,
        name: impl Fn() -> String,
    ) -> Result<Verdict, ProxyError> {
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
                self.shadow_refusals.fetch_add(1, Ordering::Relaxed);
                let limit = name();
                if let Some(metric) = &self.shadow_metric {
                    metric.with_label_values(&[limit.as_str()]).inc();
                }
                tracing::warn!(
                    limit = %limit,
                    retry_after_secs = retry_after_secs(wait),
                    "would be rate limited; admitted because limits.shadow is on"
                );
                return Ok(Verdict::ShadowRefused);
            }
            let Some(queue) = &self.queue else {
                return Err(refusal(name(), wait));
            };
            let now = self.clock.now();
            let since = *waiting.since.get_or_insert(now);
            let waited = Duration::from(now.duration_since(since));
            if wait > queue.max_wait.saturating_sub(waited) {
                return Err(refusal(name(), wait));
            }
            if waiting.slot.is_none() {
                match queue.slots.try_acquire() {
                    Ok(slot) => waiting.slot = Some(slot),
                    Err(_) => return Err(refusal(name(), wait)),
                }
            }
            // At least a millisecond, so a wait rounded to zero cannot spin.
            self.clock.sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// When every client slot is taken, forget the buckets that have refilled (at most
    /// once per [`SWEEP_INTERVAL`]), so new clients get their own bucket again.
    fn sweep_if_full(&self, clients: &Clients<C>) {
        if !clients.store.0.full.load(Ordering::Relaxed) {
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

fn refusal(limit: String, wait: Duration) -> ProxyError {
    ProxyError::RateLimited {
        limit,
        retry_after_secs: retry_after_secs(wait),
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let rounded_up = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    rounded_up.max(1)
}

// ---------------------------------------------------------------------------------------
// Per-client state: a bounded map of buckets.

/// Which client bucket a call draws from. Deliberately no `Debug`: the value is the
/// app's, and never goes into a log or an error.
#[derive(Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    /// No header, or an empty one: all such calls share one bucket.
    Anonymous,
    Named(Box<[u8]>),
    /// A value longer than [`MAX_KEY_BYTES`], by its SHA-256.
    Digest([u8; 32]),
    /// New clients while `max_clients` buckets are live: they share this one.
    Overflow,
}

impl ClientKey {
    fn from_headers(headers: &HeaderMap, header: &HeaderName) -> ClientKey {
        match headers.get(header) {
            None => ClientKey::Anonymous,
            Some(value) if value.is_empty() => ClientKey::Anonymous,
            Some(value) if value.len() <= MAX_KEY_BYTES => {
                ClientKey::Named(value.as_bytes().into())
            }
            Some(value) => ClientKey::Digest(Sha256::digest(value.as_bytes()).into()),
        }
    }

    fn is_shared(&self) -> bool {
        matches!(self, ClientKey::Anonymous | ClientKey::Overflow)
    }
}

/// The GCRA state (governor's "theoretical arrival time") of each client, at most
/// `max_clients` named ones plus the two shared buckets. One mutex: each call holds it
/// for one hash lookup.
struct ClientStore {
    max_clients: usize,
    buckets: Mutex<HashMap<ClientKey, Nanos>>,
    /// Set when a new client had to share the overflow bucket: time to sweep.
    full: AtomicBool,
}

impl ClientStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientKey, Nanos>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn named_count(buckets: &HashMap<ClientKey, Nanos>) -> usize {
    let shared = [ClientKey::Anonymous, ClientKey::Overflow]
        .iter()
        .filter(|key| buckets.contains_key(key))
        .count();
    buckets.len().saturating_sub(shared)
}

/// Shared so that [`Limits`] can see `full` while governor owns the store.
#[derive(Clone)]
struct SharedClientStore(Arc<ClientStore>);

impl StateStore for SharedClientStore {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let store = &self.0;
        let mut buckets = store.lock();
        if let Some(state) = buckets.get_mut(key) {
            let (outcome, next) = f(Some(*state))?;
            *state = next;
            return Ok(outcome);
        }
        let key = if key.is_shared() || named_count(&buckets) < store.max_clients {
            key.clone()
        } else {
            store.full.store(true, Ordering::Relaxed);
            ClientKey::Overflow
        };
        let (outcome, next) = f(buckets.get(&key).copied())?;
        buckets.insert(key, next);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for SharedClientStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let store = &self.0;
        let mut buckets = store.lock();
        // A bucket whose arrival time has passed is full again: the same as a new one.
        buckets.retain(|_, state| *state > drop_below);
        if named_count(&buckets) < store.max_clients {
            store.full.store(false, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().len()
    }

    fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::route::{RouteTimeouts, V3_ROUTES};
    use governor::clock::FakeRelativeClock;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    const REFUND: &str = "/v3/payments/2021121600698709710/refund";
    const CONFIRM: &str = "/v3/payments/2021121600698709710/confirm";
    const REQUEST: &str = "/v3/payments/request";

    fn allowlist() -> Allowlist {
        let timeouts = RouteTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(20),
        };
        Allowlist::new(
            V3_ROUTES
                .iter()
                .map(|(m, p, _)| Route::new(m.parse().unwrap(), p, timeouts).unwrap())
                .collect(),
        )
    }

    fn check(yaml: &str) -> Result<LimitsConfig, Vec<String>> {
        let raw = crate::config::from_yaml_str(yaml).map_err(|e| vec![e])?;
        validate(&raw.limits, &allowlist(), &|line| {
            format!("sidecar.yaml:{line}")
        })
    }

    fn config(yaml: &str) -> LimitsConfig {
        check(yaml).unwrap_or_else(|problems| panic!("{}", problems.join("\n")))
    }

    fn problems(yaml: &str) -> String {
        match check(yaml) {
            Ok(config) => panic!("accepted: {config:?}"),
            Err(problems) => problems.join("\n"),
        }
    }

    /// governor's `FakeRelativeClock`, plus sleeps that end only when the test advances
    /// the clock past them.
    #[derive(Clone, Default)]
    struct TestClock {
        fake: FakeRelativeClock,
        tick: Arc<Notify>,
        sleepers: Arc<AtomicUsize>,
    }

    impl TestClock {
        fn advance(&self, by: Duration) {
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

    fn limits(yaml: &str) -> (Arc<Limits<TestClock>>, TestClock) {
        let clock = TestClock::default();
        (
            Arc::new(Limits::with_clock(&config(yaml), clock.clone())),
            clock,
        )
    }

    fn route(method: &str, path: &str) -> Route {
        match allowlist().find(&method.parse().unwrap(), path) {
            Match::Allowed(route) => route.clone(),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    fn client(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-merchant-client", value.parse().unwrap());
        headers
    }

    /// Admits one call now; panics if it would wait (the test clock never moves alone).
    async fn call(
        limits: &Limits<TestClock>,
        route: &Route,
        headers: &HeaderMap,
    ) -> Result<(), ProxyError> {
        tokio::time::timeout(Duration::from_secs(5), limits.admit(route, headers))
            .await
            .unwrap_or_else(|_| panic!("the call waited, but no wait was expected"))
    }

    /// The refused limit's name and `Retry-After`, or a panic when admitted.
    #[track_caller]
    fn refused(outcome: Result<(), ProxyError>) -> (String, u64) {
        match outcome {
            Err(ProxyError::RateLimited {
                limit,
                retry_after_secs,
            }) => (limit, retry_after_secs),
            other => panic!("expected a rate-limit refusal, got {other:?}"),
        }
    }

    // --- configuration -----------------------------------------------------------------

    #[test]
    fn rates_are_written_with_a_period() {
        let rate = parse_rate("50/s").unwrap();
        assert_eq!(
            (rate.count.get(), rate.period),
            (50, Duration::from_secs(1))
        );
        assert_eq!(
            parse_rate(" 20 / m ").unwrap().period,
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_rate("100/h").unwrap().period,
            Duration::from_secs(3600)
        );
        assert_eq!(parse_rate("100/h").unwrap().to_string(), "100/h");

        let bare = parse_rate("50").unwrap_err();
        assert!(bare.contains("50/s") && bare.contains("50/m"), "{bare}");
        assert!(parse_rate("50/d").unwrap_err().contains("/s, /m or /h"));
        assert!(parse_rate("0/s").unwrap_err().contains("at least 1"));
        assert!(parse_rate("-1/s").is_err());
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("2000000/s").is_err());
    }

    #[test]
    fn bare_number_rate_is_refused_with_its_line_and_a_suggestion() {
        let error = problems("limits:\n  global:\n    rate: 50\n");
        assert!(error.contains("50/s"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn burst_defaults_to_the_count_per_period() {
        let limits = config(
            "limits:\n  global: {rate: 50/s}\n  routes:\n    \"POST /v3/payments/{transactionId}/refund\": {rate: 5/m, burst: 10}\n",
        );
        let global = limits.global.unwrap();
        assert_eq!(global.burst().get(), 50);
        assert_eq!(limits.routes.len(), 1);
        assert_eq!(
            limits.routes[0].template,
            "/v3/payments/{transactionId}/refund"
        );
        assert_eq!(limits.routes[0].bucket.burst().get(), 10);
        assert!(!limits.shadow);
        assert_eq!(limits.queue, None);
    }

    #[test]
    fn no_limits_section_means_no_limits() {
        assert_eq!(config(""), LimitsConfig::default());
        assert_eq!(config("limits: {}\n"), LimitsConfig::default());
    }

    #[test]
    fn zero_burst_is_refused_with_file_and_line() {
        let error = problems("limits:\n  shadow: true\n  global: {rate: 5/s, burst: 0}\n");
        assert!(error.contains("sidecar.yaml:3"), "{error}");
        assert!(
            error.contains("limits.global") && error.contains("burst"),
            "{error}"
        );
    }

    #[test]
    fn route_key_must_be_on_the_allowlist() {
        let error = problems(
            "limits:\n  routes:\n    \"POST /v3/nope\": {rate: 1/s}\n    \"POST /v3/payments/123/refund\":\n      rate: 1/s\n",
        );
        assert!(
            error.contains("sidecar.yaml:3") && error.contains("POST /v3/nope"),
            "{error}"
        );
        assert!(error.contains("sidecar.yaml:5"), "{error}");
        // A concrete path names the template to write instead.
        assert!(
            error.contains("did you mean `POST /v3/payments/{transactionId}/refund`"),
            "{error}"
        );
    }

    #[test]
    fn unknown_keys_in_limits_are_refused() {
        let error = problems("limits:\n  globl: {rate: 1/s}\n");
        assert!(error.contains("globl"), "{error}");
        let error = problems("limits:\n  global: {rate: 1/s, brust: 2}\n");
        assert!(error.contains("brust"), "{error}");
    }

    #[test]
    fn per_client_settings_are_checked() {
        let limits = config(
            "limits:\n  per_client:\n    header: X-Merchant-Client\n    rate: 10/s\n    burst: 20\n",
        );
        let client = limits.per_client.unwrap();
        assert_eq!(client.header, "x-merchant-client");
        assert_eq!(client.max_clients.get(), DEFAULT_MAX_CLIENTS);
        assert_eq!(client.bucket.burst().get(), 20);

        let error = problems(
            "limits:\n  per_client:\n    header: \"X Merchant\"\n    rate: 10/s\n    max_clients: 0\n",
        );
        assert!(
            error.contains("sidecar.yaml:3") && error.contains("header name"),
            "{error}"
        );
        assert!(error.contains("max_clients must be at least 1"), "{error}");
    }

    #[test]
    fn queue_settings_are_checked() {
        let limits = config("limits:\n  queue:\n    max_wait: 2s\n");
        assert_eq!(
            limits.queue,
            Some(QueueConfig {
                max_wait: Duration::from_secs(2),
                max_queued: NonZeroUsize::new(DEFAULT_MAX_QUEUED).unwrap(),
            })
        );
        let error = problems("limits:\n  queue: {max_wait: 0s, max_queued: 0}\n");
        assert!(error.contains("max_wait must be above 0"), "{error}");
        assert!(error.contains("max_queued must be at least 1"), "{error}");
        assert!(problems("limits:\n  queue: {max_wait: 5m}\n").contains("above 60s"));
        assert!(problems("limits:\n  queue: {max_queued: 5}\n").contains("max_wait"));
    }

    #[test]
    fn shipped_example_limits_section_is_valid_when_uncommented() {
        let example = include_str!("../config/sidecar.yaml");
        let start = example.find("# limits:").unwrap();
        let yaml: String = example[start..]
            .lines()
            .take_while(|line| line.starts_with('#'))
            .map(|line| format!("{}\n", line.strip_prefix("# ").unwrap_or("")))
            .collect();
        let limits = config(&yaml);
        assert!(
            limits.global.is_some() && limits.per_client.is_some(),
            "{yaml}"
        );
        assert_eq!(limits.routes.len(), 1);
        assert_eq!(limits.queue.unwrap().max_wait, Duration::from_secs(2));
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
        assert_eq!(
            refused(call(&limits, &request, &none).await),
            ("global".to_owned(), 60)
        );

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
    async fn clients_are_keyed_by_header_and_anonymous_calls_share_a_bucket() {
        let (limits, _clock) =
            limits("limits:\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 2}\n");
        let request = route("POST", REQUEST);
        let (shop_a, shop_b) = (client("shop-a"), client("shop-b"));
        call(&limits, &request, &shop_a).await.unwrap();
        call(&limits, &request, &shop_a).await.unwrap();
        let refusal = call(&limits, &request, &shop_a).await.unwrap_err();
        // The error names the limit, never the app's header value.
        assert!(!refusal.to_string().contains("shop-a"), "{refusal}");
        assert_eq!(refused(Err(refusal)), ("client".to_owned(), 60));

        call(&limits, &request, &shop_b).await.unwrap();
        call(&limits, &request, &shop_b).await.unwrap();
        refused(call(&limits, &request, &shop_b).await);

        // No header and an empty header are the same anonymous client.
        call(&limits, &request, &HeaderMap::new()).await.unwrap();
        call(&limits, &request, &client("")).await.unwrap();
        refused(call(&limits, &request, &HeaderMap::new()).await);
    }

    #[tokio::test]
    async fn long_client_values_are_keyed_by_digest() {
        let (limits, _clock) =
            limits("limits:\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n");
        let request = route("POST", REQUEST);
        let (long_a, long_b) = ("a".repeat(500), "b".repeat(500));
        call(&limits, &request, &client(&long_a)).await.unwrap();
        call(&limits, &request, &client(&long_b)).await.unwrap();
        refused(call(&limits, &request, &client(&long_a)).await);
        let clients = limits.clients.as_ref().unwrap();
        assert!(clients.store.0.lock().keys().all(|key| match key {
            ClientKey::Named(value) => value.len() <= MAX_KEY_BYTES,
            _ => true,
        }));
    }

    #[tokio::test]
    async fn client_buckets_are_bounded_and_forgotten_once_refilled() {
        let (limits, clock) = limits(
            "limits:\n  per_client: {header: X-Merchant-Client, rate: 1/s, burst: 1, max_clients: 2}\n",
        );
        let request = route("POST", REQUEST);
        let store = || limits.clients.as_ref().unwrap().store.clone();
        call(&limits, &request, &client("a")).await.unwrap();
        call(&limits, &request, &client("b")).await.unwrap();
        // Both slots taken: c and d share the overflow bucket.
        call(&limits, &request, &client("c")).await.unwrap();
        refused(call(&limits, &request, &client("d")).await);
        assert_eq!(store().len(), 3, "a, b and overflow");
        assert!(store().0.full.load(Ordering::Relaxed));

        // Two seconds later every bucket has refilled; the next new client sweeps them.
        clock.advance(Duration::from_secs(2));
        call(&limits, &request, &client("e")).await.unwrap();
        call(&limits, &request, &client("f")).await.unwrap();
        refused(call(&limits, &request, &client("f")).await);
        let live = store().len();
        assert!(live <= 2 + 2, "{live} buckets for max_clients 2");
        assert!(store()
            .0
            .lock()
            .contains_key(&ClientKey::Named(b"f".as_slice().into())));
    }

    #[tokio::test]
    async fn checks_go_client_then_route_then_global() {
        let (limits, _clock) = limits(
            "limits:\n  global: {rate: 1/m, burst: 3}\n  routes:\n    \"POST /v3/payments/request\": {rate: 1/m, burst: 2}\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n",
        );
        let (request, refund) = (route("POST", REQUEST), route("POST", REFUND));
        call(&limits, &request, &client("a")).await.unwrap(); // global 2 left, route 1
                                                              // Refused by its own client bucket: route and global keep their tokens.
        assert_eq!(
            refused(call(&limits, &request, &client("a")).await).0,
            "client"
        );
        call(&limits, &request, &client("b")).await.unwrap(); // global 1 left, route 0
                                                              // Refused by the route: client c's token is spent (the documented cost), global's is not.
        assert_eq!(
            refused(call(&limits, &request, &client("c")).await).0,
            "route POST /v3/payments/request"
        );
        assert_eq!(
            refused(call(&limits, &refund, &client("c")).await).0,
            "client"
        );
        call(&limits, &refund, &client("d")).await.unwrap(); // global 0 left
        assert_eq!(
            refused(call(&limits, &refund, &client("e")).await).0,
            "global"
        );
    }

    #[tokio::test]
    async fn shadow_mode_admits_everything_and_counts_what_it_would_refuse() {
        let (limits, _clock) = limits(
            "limits:\n  shadow: true\n  global: {rate: 1/m, burst: 2}\n  per_client: {header: X-Merchant-Client, rate: 1/m, burst: 1}\n",
        );
        let request = route("POST", REQUEST);
        for _ in 0..5 {
            call(&limits, &request, &client("a")).await.unwrap();
        }
        // Call 1 passes both; calls 2-5 would be refused by the client bucket.
        assert_eq!(limits.shadow_refusals(), 4);
        call(&limits, &request, &client("b")).await.unwrap();
        call(&limits, &request, &client("c")).await.unwrap();
        // b took global's second token; c would be refused by global.
        assert_eq!(limits.shadow_refusals(), 5);
    }

    // --- queue mode --------------------------------------------------------------------

    fn spawn_call(
        limits: &Arc<Limits<TestClock>>,
        route: &Route,
    ) -> tokio::task::JoinHandle<Result<(), ProxyError>> {
        let (limits, route) = (limits.clone(), route.clone());
        tokio::spawn(async move { limits.admit(&route, &HeaderMap::new()).await })
    }

    /// The outcome of a spawned call that should end now; a panic rather than a hang if
    /// it keeps waiting on the test clock.
    async fn finished(
        call: tokio::task::JoinHandle<Result<(), ProxyError>>,
    ) -> Result<(), ProxyError> {
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
        assert_eq!(
            refused(call(&limits, &request, &HeaderMap::new()).await),
            ("global".to_owned(), 60)
        );
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
        assert_eq!(
            refused(call(&limits, &request, &HeaderMap::new()).await),
            ("global".to_owned(), 1)
        );
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
        let (within, _clock) = limits(
            "limits:\n  shadow: true\n  global: {rate: 1/s, burst: 1}\n  queue: {max_wait: 1500ms}\n",
        );
        call(&within, &request, &HeaderMap::new()).await.unwrap();
        // Would wait 1 s: within max_wait, so it would not have been refused.
        call(&within, &request, &HeaderMap::new()).await.unwrap();
        assert_eq!(within.shadow_refusals(), 0);

        let (beyond, _clock) = limits(
            "limits:\n  shadow: true\n  global: {rate: 1/m, burst: 1}\n  queue: {max_wait: 1500ms}\n",
        );
        call(&beyond, &request, &HeaderMap::new()).await.unwrap();
        call(&beyond, &request, &HeaderMap::new()).await.unwrap();
        assert_eq!(beyond.shadow_refusals(), 1);
    }
}
