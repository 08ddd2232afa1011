//! Money calls on record: the phase of the request path between "the body is read" and
//! "LINE Pay is called" for every call that moves money (see [`crate::money`]) or
//! carries an `Idempotency-Key`.
//!
//! 1. **admit**: one call per transaction (or offline order) and per idempotency key at
//!    a time (an in-memory set, per process: `409 call_in_progress`); a key seen before
//!    replays its stored answer when it comes with the same call, and is refused on any
//!    other (`422 idempotency_key_reused`: [`binding`]); the intent is written and
//!    flushed to disk, in a task of its own: a call whose intent is written but that is
//!    never sent (the app hung up during the write, it failed before it was sent)
//!    records `not_sent` when its [`Ticket`] is dropped, and keeps its key and
//!    transaction until then.
//! 2. **send**: in a task of its own, so an app that hangs up cannot cancel a call that
//!    LINE Pay may already be processing. The outcome (status and returnCode, or the
//!    uncertain failure) is flushed to disk before the app is answered; an uncertain
//!    money call is first checked against LINE Pay's records (reconciliation). If the
//!    app is gone by then, the outcome is logged at WARN and counted.
//!
//! **Reconciliation waits.** LINE Pay is asked about an uncertain call only once it can
//! no longer be processing it: the route's connect and read timeouts after the send
//! (for a read timeout: when it fired), the read timeout never shorter than LINE Pay's
//! documented processing limit for the call ([`MoneyRoute::processing_limit`]: a shorter
//! configured one ends the call sooner, not LINE Pay's processing), plus
//! [`RECONCILE_SETTLE`]. Asked earlier, its
//! records could show nothing yet and a retry would send the call twice. Meanwhile the
//! call's key and transaction (or order) stay in the in-flight set with the time of the
//! check, so a retry or another money call on the transaction gets `409
//! call_in_progress` with `Retry-After`. The same holds for the calls a previous process
//! left without an outcome (`kill -9`, OOM): [`Desk::open`] puts them in the in-flight
//! set before any call is admitted, due at their journaled `started_at` plus their
//! route's timeouts, and [`Desk::reconcile_interrupted`] asks about each when it is due.
//! After the check a retry with the same key is sent again only for `not_applied`;
//! `applied` and `unknown` are refused (`call_applied`, `call_outcome_unknown`) unless
//! the app's answer is stored to replay.
//!
//! The journal file itself is [`store`]; stored answers are sealed ([`seal`]). A
//! connection whose call is in here holds a [`Hold`], which the drain waits for.

mod binding;
mod claims;
mod orders;
mod seal;
mod shared;
pub mod store;
mod takeover;

use self::binding::KeyUse;
pub(crate) use self::claims::Claims;
use self::orders::Orders;
pub(crate) use self::seal::Seal;
use self::seal::StoredAnswer;
use self::store::{now_ms, Intent, KeyedCall, Outcome, SideWriter};
pub use self::store::{CallRow, Filter, Store, StoreError};
use self::takeover::SharedClaim;
pub(crate) use self::takeover::{Check, Checker, SharedGuards};
use crate::budget::{Budget, Charge};
use crate::config::JournalConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::money::EarlierRefunds;
use crate::money::{self, CallFacts, MoneyRoute, ReconciledState, Verdict};
use crate::route::Allowlist;
use crate::route::Signing;
use crate::route::{Route, RouteTimeouts};
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

/// The app's header; never forwarded to LINE Pay.
pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Marks an answer replayed from the journal.
pub(crate) const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const MAX_KEY_LEN: usize = 255;
/// Added to the time LINE Pay can no longer be processing a call (its route's connect and
/// read timeouts after the send) before it is asked: its records are written by then.
const RECONCILE_SETTLE: Duration = Duration::from_secs(1);
/// Interrupted calls held and reconciled at one start at most (the rest at the next
/// start; until then a retry with one of their keys gets `409 call_in_progress`).
const MAX_RECONCILED_AT_START: usize = 1000;
/// Earlier refunds of a transaction (or order) read from the journal at most, to judge a
/// refund (see [`EarlierRefunds`]).
const MAX_EARLIER_REFUNDS: usize = 100;
/// How often old calls are pruned.
pub(crate) const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// The calls in flight, per process: their entries (`key <channel> <key>`, `<channel>
/// transaction <id>`, `<channel> order <id>`), each with the time its reconciliation is
/// due while it waits for one (what `Retry-After` says), `None` while it is being sent.
type InFlight = Arc<Mutex<HashMap<String, Option<Instant>>>>;

/// What the runtime builds once and every proxy snapshot shares: the journal, the
/// in-flight set, and the task tracker of the calls' own tasks.
pub(crate) struct Desk {
    store: Option<Arc<Store>>,
    /// The journal's connection for writes that need no fsync of their own.
    side: Option<Arc<SideWriter>>,
    /// The orderIds of requested transactions, written in batches on `side`.
    orders: Option<Arc<Orders>>,
    settings: JournalConfig,
    in_flight: InFlight,
    tasks: TaskTracker,
    /// The intents a previous process left without an outcome, read when the journal is
    /// opened, before this process admits any call: a call in flight now is never
    /// mistaken for an interrupted one. Their entries are held in the in-flight set
    /// until each is reconciled.
    interrupted: Mutex<Vec<Interrupted>>,
    /// The guards shared with the other pods of the channel (`state.backend: redis`).
    shared: Option<SharedGuards>,
}

/// A call a previous process left without an outcome, held until it is reconciled.
struct Interrupted {
    row: CallRow,
    /// When LINE Pay can no longer be processing it (plus [`RECONCILE_SETTLE`]).
    due: Instant,
    reservation: Reservation,
}

/// One call, described before it is admitted.
pub(crate) struct Plan {
    pub(crate) template: String,
    pub(crate) method: String,
    /// The path and query as the app sent them (an idempotency key is bound to them).
    pub(crate) target: String,
    pub(crate) money: Option<MoneyRoute>,
    pub(crate) facts: CallFacts,
    pub(crate) key: Option<String>,
    pub(crate) request_id: String,
    pub(crate) channel_id: String,
    /// The route's timeouts: a shared claim's lease outlives them.
    pub(crate) timeouts: RouteTimeouts,
}

impl Plan {
    /// The call its idempotency key (if any) is bound to.
    fn key_use(&self) -> Option<KeyUse<'_>> {
        self.key.as_deref().map(|key| KeyUse {
            channel_id: &self.channel_id,
            key,
            method: &self.method,
            target: &self.target,
            template: &self.template,
            facts: &self.facts,
        })
    }
}

pub(crate) enum Admission<T = Ticket> {
    /// The stored answer of an earlier use of the same key on the same call.
    Replay(Response<Bytes>),
    Send(T),
}

/// An admitted call: its in-flight entries (released on drop) and its journal row.
pub(crate) struct Ticket {
    plan: Plan,
    row: Option<i64>,
    reservation: Reservation,
    started_ms: i64,
    /// Set from the intent's write until the call's task takes the ticket over: a ticket
    /// dropped meanwhile (the app hung up during the write, the call failed before it
    /// was sent) was never sent, and records so (see `Drop`).
    unsent: Option<Unsent>,
    /// The call's claim in the shared state (`state.backend: redis`).
    shared: Option<SharedClaim>,
}

/// What a ticket whose intent is written needs to record `not_sent` when it is dropped
/// unsent.
struct Unsent {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    tasks: TaskTracker,
    /// Counts the ticket as a task of the tracker, so that a drain waits for its outcome.
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl Drop for Ticket {
    /// A journaled call dropped before its task took it over was never sent: its
    /// outcome `not_sent` is written (off the async threads, tracked) and only then are
    /// its key and transaction released. Without it the row would have no outcome and
    /// its key would answer `409 call_in_progress` until a restart.
    fn drop(&mut self) {
        let (Some(unsent), Some(row)) = (self.unsent.take(), self.row) else {
            return;
        };
        let in_flight = self.reservation.in_flight.clone();
        let reservation = std::mem::replace(
            &mut self.reservation,
            Reservation {
                entries: Vec::new(),
                in_flight,
            },
        );
        let request_id = self.plan.request_id.clone();
        let template = self.plan.template.clone();
        let tasks = unsent.tasks.clone();
        let record = move || {
            let outcome = Outcome {
                finished_at: now_ms(),
                outcome: "not_sent",
                ..Outcome::default()
            };
            match unsent.store.record_outcome(row, &outcome) {
                Ok(()) => tracing::warn!(
                    request_id,
                    route = %template,
                    "a call admitted was never sent (the app hung up, or it failed before it was sent): recorded not_sent"
                ),
                Err(error) => journal_failed(&unsent.metrics, "outcome", &error),
            }
            // Released only now: a retry sees the recorded outcome.
            drop(reservation);
            drop(unsent);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(tasks.spawn_blocking_on(record, &handle)),
            // No runtime to hand the write to (a test, the end of the process).
            Err(_) => record(),
        }
    }
}

/// One call's entries in the in-flight set, released on drop.
struct Reservation {
    entries: Vec<String>,
    in_flight: InFlight,
}

impl Reservation {
    /// Reserves `entries`, unless a call in flight holds one of them.
    fn take(in_flight: &InFlight, entries: Vec<String>) -> Result<Reservation, ProxyError> {
        let mut set = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        let mut busy = entries.iter().filter_map(|entry| set.get(entry)).peekable();
        if busy.peek().is_some() {
            // The latest check of the calls that hold them: free by then at the latest.
            return Err(match busy.flatten().max() {
                Some(due) => ProxyError::AwaitingCheck {
                    retry_after_secs: retry_after_secs(*due, Instant::now()),
                },
                None => ProxyError::CallInProgress,
            });
        }
        set.extend(entries.iter().map(|entry| (entry.clone(), None)));
        drop(set);
        Ok(Reservation {
            entries,
            in_flight: in_flight.clone(),
        })
    }

    /// The call waits for a reconciliation due at `due`: a retry is told when.
    fn await_check(&self, due: Instant) {
        let mut set = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in &self.entries {
            set.insert(entry.clone(), Some(due));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut set = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in &self.entries {
            set.remove(entry);
        }
    }
}

/// Whole seconds from `now` until `due`, at least 1 (`Retry-After: 0` invites a busy loop).
fn retry_after_secs(due: Instant, now: Instant) -> u64 {
    let left = due.saturating_duration_since(now);
    let whole = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    whole.max(1)
}

/// The in-flight entries of one call: its key, and for a money call its transaction (or
/// order).
fn entries(channel: &str, key: Option<&str>, money: bool, facts: &CallFacts) -> Vec<String> {
    let mut entries = Vec::new();
    if let Some(key) = key {
        entries.push(format!("key {channel} {key}"));
    }
    if money {
        if let Some(lock) = facts.lock_key() {
            entries.push(format!("{channel} {lock}"));
        }
    }
    entries
}

/// When LINE Pay can no longer be processing a call sent at `sent` that failed at
/// `failed` (plus [`RECONCILE_SETTLE`]): the route's connect and read timeouts after the
/// send, the read timeout raised to `limit`, LINE Pay's own processing limit for the call
/// ([`MoneyRoute::processing_limit`]): a read timeout configured shorter does not make
/// LINE Pay finish sooner. A read timeout fired once the read timeout had passed since the
/// request went out, so LINE Pay is done `limit` after that; any other failure (a broken
/// connection, an oversized answer) may come early, so the call is given its whole
/// connect and read timeouts from the send.
fn check_due(
    sent: Instant,
    failed: Instant,
    timeouts: RouteTimeouts,
    limit: Duration,
    read_timed_out: bool,
) -> Instant {
    let done = match read_timed_out {
        true => failed + limit.saturating_sub(timeouts.read),
        false => failed.max(sent + timeouts.connect + timeouts.read.max(limit)),
    };
    done + RECONCILE_SETTLE
}

/// How long from `now_ms` until an interrupted call journaled at `started_ms` is due: its
/// route's connect and read timeouts after its start, the read timeout raised to `limit`
/// (LINE Pay's processing limit for the call, see [`check_due`]), plus
/// [`RECONCILE_SETTLE`].
fn interrupted_wait(
    started_ms: i64,
    now_ms: i64,
    timeouts: RouteTimeouts,
    limit: Duration,
) -> Duration {
    let since = u64::try_from(now_ms.saturating_sub(started_ms)).unwrap_or(0);
    (timeouts.connect + timeouts.read.max(limit) + RECONCILE_SETTLE)
        .saturating_sub(Duration::from_millis(since))
}

/// Logs at WARN each money route whose read timeout is shorter than LINE Pay's documented
/// processing limit for it: such a call more often ends uncertain, and its check still
/// waits for the limit.
fn warn_short_read_timeouts(allowlist: &Allowlist) {
    for route in allowlist.routes() {
        let Some(money) = money::classify(&route.method, &route.template) else {
            continue;
        };
        let limit = money.processing_limit();
        if route.timeouts.read < limit {
            tracing::warn!(
                route = %route.template,
                read_timeout_ms = u64::try_from(route.timeouts.read.as_millis()).unwrap_or(u64::MAX),
                line_pay_limit_secs = limit.as_secs(),
                "a money route's read timeout is shorter than LINE Pay's documented processing limit: its calls may end uncertain more often, and their reconciliation still waits for the limit"
            );
        }
    }
}

/// A journaled call's route timeouts: its route's in `allowlist`; the longest there when
/// the route is gone from it (the configuration changed), so the wait is never short.
fn journaled_timeouts(allowlist: &Allowlist, method: &str, template: &str) -> RouteTimeouts {
    let routes = allowlist.routes();
    routes
        .iter()
        .find(|route| route.method.as_str() == method && route.template == template)
        .map(|route| route.timeouts)
        .unwrap_or_else(|| RouteTimeouts {
            connect: routes
                .iter()
                .map(|r| r.timeouts.connect)
                .max()
                .unwrap_or_default(),
            read: routes
                .iter()
                .map(|r| r.timeouts.read)
                .max()
                .unwrap_or_default(),
        })
}

/// The refunds of `rows` (the journal's calls on a refund's transaction or order) sent
/// before the refund of row `this`, started at `started_ms`, that LINE Pay may list
/// beside it: online, those of the same amount not finished before the refund's own
/// window of refund dates opened; offline (one status per order), every one.
fn earlier_refunds(
    rows: &[CallRow],
    this: i64,
    channel: &str,
    money: MoneyRoute,
    facts: &CallFacts,
    started_ms: i64,
) -> EarlierRefunds {
    let window_opens = started_ms - 2 * money::REFUND_SKEW_SECS * 1000;
    let mut earlier = EarlierRefunds::default();
    for row in rows {
        let relevant = row.id < this
            && row.channel_id == channel
            && row.operation.as_deref() == Some(money::Operation::Refund.as_str())
            && (money.offline
                || (row.facts.refund_amount == facts.refund_amount
                    && row.finished_at.is_none_or(|at| at >= window_opens)));
        if !relevant {
            continue;
        }
        let reconciled = row.reconciled_state.as_deref();
        let answered = row.outcome.as_deref() == Some("answered");
        if reconciled == Some(ReconciledState::Applied.as_str())
            || (answered && row.return_code.as_deref() == Some("0000"))
        {
            earlier.applied += 1;
        } else if !(answered
            || reconciled == Some(ReconciledState::NotApplied.as_str())
            || row.outcome.as_deref() == Some("not_sent"))
        {
            earlier.uncertain += 1;
        }
    }
    earlier
}

/// The rows of a transaction read to learn which channel it belongs to, at most.
const MAX_OWNER_ROWS: usize = 64;

/// Whether `rows` (the journal's calls naming one transaction) show it under another
/// channel id than `channel`. Only a call LINE Pay took (`0000`, or reconciled
/// `applied`) says whose the transaction is: one it refused (`1150` is exactly "not
/// this channel's") or whose fate is unknown proves nothing, and a mistaken call on the
/// wrong channel must not lock the rightful channel out of its own payment.
fn recorded_under_another_channel(rows: &[CallRow], channel: &str) -> bool {
    let taken = |row: &CallRow| {
        row.return_code.as_deref() == Some("0000")
            || row.reconciled_state.as_deref() == Some(ReconciledState::Applied.as_str())
    };
    rows.iter()
        .any(|row| row.channel_id != channel && taken(row))
}

/// What the call's task needs, all owned.
pub(crate) struct Job {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) request: Request<Full<Bytes>>,
    pub(crate) timeouts: RouteTimeouts,
    /// The signed status question, for a money call that may end uncertain.
    pub(crate) status_request: Option<Request<Full<Bytes>>>,
    pub(crate) response_filter: fn(Response<Bytes>) -> Response<Bytes>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) seal: Seal,
    /// The call's reservation in the process's memory budget: LINE Pay's answer (and a
    /// reconciliation's) is charged to it as it arrives.
    pub(crate) charge: Charge,
}

impl Desk {
    /// Opens the journal (when enabled) and prunes it once. The calls a previous process
    /// left without an outcome are held in the in-flight set from now until each is
    /// reconciled, due when `allowlist`'s timeouts of its route have passed since it
    /// started.
    pub(crate) fn open(
        settings: &JournalConfig,
        allowlist: &Allowlist,
    ) -> Result<Desk, StoreError> {
        warn_short_read_timeouts(allowlist);
        let in_flight = InFlight::default();
        let (store, side, interrupted) = if settings.enabled {
            let store = Store::open(&settings.path)?;
            let side = SideWriter::open(&settings.path)?;
            store.prune(now_ms(), settings.max_age, settings.max_calls)?;
            let rows = store.query(&Filter {
                pending: true,
                limit: MAX_RECONCILED_AT_START,
                ..Filter::default()
            })?;
            let (now, opened) = (now_ms(), Instant::now());
            let interrupted =
                rows.into_iter()
                    .map(|row| {
                        let money = money_route(&row.method, &row.route);
                        let held = entries(
                            &row.channel_id,
                            row.idempotency_key.as_deref(),
                            money.is_some(),
                            &row.facts,
                        );
                        // Two rows can name one transaction only when a stop cut the
                        // first's outcome; both are reconciled in turn either way.
                        let reservation = Reservation::take(&in_flight, held.clone())
                            .unwrap_or_else(|_| Reservation {
                                entries: Vec::new(),
                                in_flight: in_flight.clone(),
                            });
                        // Nothing to wait for when nothing will be asked.
                        let due = match (money.is_some(), settings.reconcile) {
                            (true, true) => {
                                let timeouts =
                                    journaled_timeouts(allowlist, &row.method, &row.route);
                                let limit = money.map(MoneyRoute::processing_limit);
                                opened
                                    + interrupted_wait(
                                        row.started_at,
                                        now,
                                        timeouts,
                                        limit.unwrap_or_default(),
                                    )
                            }
                            _ => opened,
                        };
                        reservation.await_check(due);
                        Interrupted {
                            row,
                            due,
                            reservation,
                        }
                    })
                    .collect();
            (Some(Arc::new(store)), Some(Arc::new(side)), interrupted)
        } else {
            (None, None, Vec::new())
        };
        Ok(Desk {
            store,
            orders: side.clone().map(|side| Arc::new(Orders::new(side))),
            side,
            settings: settings.clone(),
            in_flight,
            tasks: TaskTracker::new(),
            interrupted: Mutex::new(interrupted),
            shared: None,
        })
    }

    /// No journal: one money call per transaction still holds, keys are refused.
    #[cfg(test)]
    pub(crate) fn disabled() -> Desk {
        Desk {
            store: None,
            side: None,
            orders: None,
            settings: JournalConfig {
                enabled: false,
                path: "unused".into(),
                max_age: Duration::from_secs(1),
                max_calls: 1,
                reconcile: false,
                reconcile_timeout: Duration::from_secs(1),
            },
            in_flight: Arc::default(),
            tasks: TaskTracker::new(),
            interrupted: Mutex::default(),
            shared: None,
        }
    }

    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Records the orderId a transaction was requested with, so that its later calls
    /// (an online confirm or refund names no order) are found by order. Queued and
    /// written in batches, and always before the next money call's intent
    /// (`orders`: no thread hand-off per call). No fsync: see [`SideWriter`]. A failure
    /// is logged and counted; the app's answer goes on.
    pub(crate) async fn remember_order(
        &self,
        channel_id: &str,
        transaction_id: &str,
        order_id: &str,
        metrics: &Arc<Metrics>,
    ) {
        if let Some(orders) = &self.orders {
            // Keyed by channel: a transaction id is unique only within its channel.
            orders.remember(channel_id, transaction_id, order_id, &self.tasks, metrics);
        }
    }

    /// Writes the orderIds queued so far (waiting for a batch being written).
    pub(crate) async fn flush_orders(&self, metrics: &Metrics) {
        if let Some(orders) = &self.orders {
            orders.flush(metrics).await;
        }
    }

    /// Whether the journal can be written now (`None` when it is off): one small write
    /// on the side connection, for `/readyz`.
    pub(crate) async fn probe_journal(&self) -> Option<Result<(), String>> {
        let side = self.side.clone()?;
        let written = tokio::task::spawn_blocking(move || side.probe(now_ms())).await;
        Some(match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("cannot be written ({})", error.cause())),
            Err(_) => Err("the write probe panicked".to_owned()),
        })
    }

    /// Describes a call, or `None` when it is neither a money call nor a keyed POST.
    pub(crate) fn plan(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        facts: impl FnOnce() -> CallFacts,
        request_id: &HeaderValue,
        channel_id: &HeaderValue,
    ) -> Result<Option<Plan>, ProxyError> {
        let money = money::classify(&route.method, &route.template);
        let key = match parts.headers.get(IDEMPOTENCY_KEY) {
            Some(_) if parts.method != http::Method::POST => None,
            Some(value) => Some(idempotency_key(value)?),
            None => None,
        };
        if money.is_none() && key.is_none() {
            return Ok(None);
        }
        if key.is_some() && self.store.is_none() {
            return Err(ProxyError::IdempotencyUnavailable);
        }
        Ok(Some(Plan {
            template: route.template.clone(),
            method: route.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            money,
            facts: facts(),
            key,
            request_id: request_id.to_str().unwrap_or("-").to_owned(),
            channel_id: channel_id.to_str().unwrap_or("-").to_owned(),
            timeouts: route.timeouts,
        }))
    }

    /// Phase "admit" without a way to check an orphaned shared claim with LINE Pay.
    #[cfg(test)]
    pub(crate) async fn admit(
        &self,
        plan: Plan,
        seal: &Seal,
        metrics: &Arc<Metrics>,
    ) -> Result<Admission, ProxyError> {
        self.admit_checked(plan, seal, metrics, None).await
    }

    /// Phase "admit": refuses a duplicate in flight, replays or refuses a known key,
    /// claims the key and the transaction in the shared state (when there is one:
    /// `check` asks LINE Pay about a claim whose owner's lease ended), and writes the
    /// intent to disk.
    pub(crate) async fn admit_checked(
        &self,
        plan: Plan,
        seal: &Seal,
        metrics: &Arc<Metrics>,
        check: Option<&Check<'_>>,
    ) -> Result<Admission, ProxyError> {
        let reserved = entries(
            &plan.channel_id,
            plan.key.as_deref(),
            plan.money.is_some(),
            &plan.facts,
        );
        let reservation = Reservation::take(&self.in_flight, reserved)?;
        let mut ticket = Ticket {
            plan,
            row: None,
            reservation,
            started_ms: now_ms(),
            unsent: None,
            shared: None,
        };
        let Some(store) = self.store.clone() else {
            if let Some(answer) = self.claim_shared(&mut ticket, seal, metrics, check).await? {
                return Ok(Admission::Replay(answer));
            }
            return Ok(Admission::Send(ticket));
        };
        // The intent's row takes its transaction's orderId from the `orders` table:
        // what is queued goes there first.
        self.flush_orders(metrics).await;
        if let Some(key) = ticket.plan.key.clone() {
            let channel = ticket.plan.channel_id.clone();
            let lookup = blocking(store.clone(), move |s| s.find_key(&channel, &key)).await;
            let known = lookup.map_err(|error| {
                journal_failed(metrics, "read", &error);
                ProxyError::JournalUnavailable
            })?;
            if let (Some(known), Some(call)) = (known, ticket.plan.key_use()) {
                if let Some(answer) = replay(&known, &call, seal)? {
                    metrics.idempotent_replays.inc();
                    return Ok(Admission::Replay(answer));
                }
            }
        }
        // A money call on a transaction recorded under another channel is that channel's
        // (LINE Pay would answer another merchant's transaction as unknown, or worse):
        // refused before anything is written or sent.
        if let (Some(_), Some(transaction_id)) =
            (ticket.plan.money, ticket.plan.facts.transaction_id.clone())
        {
            let filter = Filter {
                transaction_id: Some(transaction_id),
                limit: MAX_OWNER_ROWS,
                ..Filter::default()
            };
            let rows = blocking(store.clone(), move |s| s.query(&filter))
                .await
                .map_err(|error| {
                    journal_failed(metrics, "read", &error);
                    ProxyError::JournalUnavailable
                })?;
            if recorded_under_another_channel(&rows, &ticket.plan.channel_id) {
                return Err(ProxyError::TransactionOfAnotherChannel);
            }
        }
        // Across pods: the key and the transaction are claimed in the shared state.
        if let Some(answer) = self.claim_shared(&mut ticket, seal, metrics, check).await? {
            return Ok(Admission::Replay(answer));
        }
        let intent = Intent {
            request_id: ticket.plan.request_id.clone(),
            started_at: ticket.started_ms,
            route: ticket.plan.template.clone(),
            method: ticket.plan.method.clone(),
            operation: ticket.plan.money.map(|m| m.operation.as_str()),
            channel_id: ticket.plan.channel_id.clone(),
            facts: ticket.plan.facts.clone(),
            idempotency_key: ticket.plan.key.clone(),
            key_binding: ticket.plan.key_use().map(|call| call.digest()),
        };
        // Written in a task of its own that arms the ticket once the row exists: if the
        // app hangs up meanwhile (this future is dropped), the ticket is dropped armed
        // and records `not_sent` (see `Ticket`'s `Drop`), never left without an outcome.
        let unsent = Unsent {
            store: store.clone(),
            metrics: metrics.clone(),
            tasks: self.tasks.clone(),
            _tracked: self.tasks.token(),
        };
        let written = self.tasks.spawn(async move {
            let row = blocking(store, move |s| s.record_intent(&intent)).await?;
            ticket.row = Some(row);
            ticket.unsent = Some(unsent);
            Ok::<_, StoreError>(ticket)
        });
        match written.await {
            Ok(Ok(ticket)) => Ok(Admission::Send(ticket)),
            Ok(Err(error)) => {
                journal_failed(metrics, "intent", &error);
                Err(ProxyError::JournalUnavailable)
            }
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: the runtime is shutting down.
            Err(_) => Err(ProxyError::Internal),
        }
    }

    /// Phase "send": the call runs in its own task; this waits for its answer. When the
    /// app hangs up, this future is dropped and the task finishes on its own.
    pub(crate) async fn send(
        &self,
        ticket: Ticket,
        job: Job,
        hold: Option<&Hold>,
    ) -> (Result<Response<Bytes>, ProxyError>, Duration) {
        if ticket
            .shared
            .as_ref()
            .is_some_and(SharedClaim::too_late_to_send)
        {
            // This process stalled between its claim and the send for longer than the
            // claim allows: another pod may have taken it over, asked LINE Pay and sent
            // the call itself. Not sent; the dropped ticket records `not_sent`.
            job.metrics
                .money_guard_failures
                .with_label_values(&["send_window"])
                .inc();
            tracing::error!(
                request_id = %ticket.plan.request_id,
                "the call's shared claim ran out of time to send (this process stalled): not sent, retry it"
            );
            return (Err(ProxyError::StateUnavailable), Duration::ZERO);
        }
        let (reply, answer) = oneshot::channel();
        let store = self.store.clone();
        let reconcile = self
            .settings
            .reconcile
            .then_some(self.settings.reconcile_timeout);
        // Released when the app has its answer, or is gone.
        let _hold = hold.map(Hold::enter);
        self.tasks
            .spawn(run_call(ticket, job, store, reconcile, reply));
        match answer.await {
            Ok(done) => done,
            // The task ended without answering: it panicked (its message is on stderr).
            Err(_) => (Err(ProxyError::Internal), Duration::ZERO),
        }
    }

    /// Waits (at most `limit`) for the calls still running, e.g. those whose app hung
    /// up, before the process exits. `false` when some did not finish.
    pub(crate) async fn settle(&self, limit: Duration) -> bool {
        self.tasks.close();
        let running = self.tasks.len();
        if running > 0 {
            tracing::info!(
                money_calls = running,
                "waiting for money calls in flight to finish"
            );
        }
        let settled = tokio::time::timeout(limit, self.tasks.wait()).await.is_ok();
        // The orderIds still queued (their write was scheduled on a worker's runtime,
        // which the drain has ended).
        if let Some(orders) = self.orders.clone() {
            let written = tokio::task::spawn_blocking(move || orders.write_queued()).await;
            if let Ok(Err(error)) = written {
                tracing::error!(%error, "cannot write the last orderIds to the journal");
            }
        }
        settled
    }

    /// Prunes the journal by age and count, now and every [`PRUNE_INTERVAL`], until
    /// `stop`.
    pub(crate) async fn prune_periodically(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(store) = self.store.clone() else {
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(PRUNE_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            let (max_age, max_calls) = (self.settings.max_age, self.settings.max_calls);
            match blocking(store.clone(), move |s| {
                s.prune(now_ms(), max_age, max_calls)
            })
            .await
            {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "journal pruned"),
                Err(error) => journal_failed(&metrics, "prune", &error),
            }
        }
    }

    /// After start-up: every call a stop interrupted (an intent without an outcome) is
    /// checked with LINE Pay once it is due (see [`Desk::open`]), in the order they fall
    /// due, and its outcome recorded; only then are its key and transaction released.
    /// `ask` signs a GET for a path and query with the signing scheme of the call's API
    /// version.
    pub(crate) async fn reconcile_interrupted(
        &self,
        budget: Arc<Budget>,
        // The row's channel id, the question, its signing scheme → the question signed as
        // that channel, and that channel's upstream client.
        ask: impl Fn(&str, &str, Signing) -> Option<(Arc<Upstream>, Request<Full<Bytes>>)>,
        metrics: Arc<Metrics>,
    ) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut held = std::mem::take(
            &mut *self
                .interrupted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        held.sort_by_key(|call| call.due);
        for Interrupted {
            row,
            due,
            reservation,
        } in held
        {
            let money = money_route(&row.method, &row.route);
            let facts = row.facts.clone();
            let query = money.and_then(|m| money::status_query(&row.route, m, &facts));
            let verdict = match (money, query, self.settings.reconcile) {
                (Some(money), Some(query), true) => {
                    tokio::time::sleep_until(due.into()).await;
                    // Signed once due, with the signing scheme of the call's API version.
                    let signing = match row.route.starts_with("/v2/") {
                        true => Signing::ChannelSecret,
                        false => Signing::Hmac,
                    };
                    let earlier = earlier_refunds_of(
                        Some(&store),
                        &metrics,
                        Some(row.id),
                        &row.channel_id,
                        money,
                        &facts,
                        row.started_at,
                    )
                    .await;
                    // Answers to start-up questions are charged to the budget too.
                    match (ask(&row.channel_id, &query, signing), budget.charge(0)) {
                        (None, _) => Verdict::unknown("the status check could not be signed (no configured channel has the row's channel id)"),
                        (Some((upstream, request)), Some(mut charge)) => {
                            ask_status(
                                &upstream,
                                request,
                                money,
                                &facts,
                                (row.started_at, earlier),
                                self.settings.reconcile_timeout,
                                &mut charge,
                            )
                            .await
                        }
                        (Some(_), None) => Verdict::unknown("the memory budget is exhausted"),
                    }
                }
                (Some(_), _, false) => {
                    Verdict::unknown("reconciliation is off (journal.reconcile)")
                }
                (Some(_), None, true) => {
                    Verdict::unknown("the call named no transaction or order to ask about")
                }
                (None, _, _) => Verdict::unknown("not a money call: nothing to ask LINE Pay"),
            };
            metrics
                .reconciliations
                .with_label_values(&[verdict.state.as_str()])
                .inc();
            tracing::warn!(
                request_id = %row.request_id,
                route = %row.route,
                transaction_id = row.facts.transaction_id.as_deref(),
                order_id = row.facts.order_id.as_deref(),
                reconciled = verdict.state.as_str(),
                reason = %verdict.reason,
                "a call was interrupted by a stop of the sidecar; LINE Pay's records were checked"
            );
            let outcome = Outcome {
                finished_at: now_ms(),
                outcome: "interrupted",
                reconciled: Some((verdict.state.as_str(), verdict.reason)),
                ..Outcome::default()
            };
            let id = row.id;
            if let Err(error) =
                blocking(store.clone(), move |s| s.record_outcome(id, &outcome)).await
            {
                journal_failed(&metrics, "outcome", &error);
            }
            // Released only now: a retry sees the recorded state, never a half-written one.
            drop(reservation);
        }
    }
}

/// What a route's method and template say about money.
fn money_route(method: &str, template: &str) -> Option<MoneyRoute> {
    let method = method.parse::<http::Method>().ok()?;
    money::classify(&method, template)
}

/// [`earlier_refunds`] of a refund, read from the journal (none for another call, or
/// without a journal); `None` when the journal cannot be read (logged and counted).
async fn earlier_refunds_of(
    store: Option<&Arc<Store>>,
    metrics: &Metrics,
    this: Option<i64>,
    channel: &str,
    money: MoneyRoute,
    facts: &CallFacts,
    started_ms: i64,
) -> Option<EarlierRefunds> {
    let (Some(store), Some(this)) = (store, this) else {
        return Some(EarlierRefunds::default());
    };
    // Online refunds name their transaction; offline ones, their order.
    let filter = match (money.operation, money.offline) {
        (money::Operation::Refund, false) if facts.transaction_id.is_some() => Filter {
            transaction_id: facts.transaction_id.clone(),
            limit: MAX_EARLIER_REFUNDS,
            ..Filter::default()
        },
        (money::Operation::Refund, true) if facts.order_id.is_some() => Filter {
            order_id: facts.order_id.clone(),
            limit: MAX_EARLIER_REFUNDS,
            ..Filter::default()
        },
        _ => return Some(EarlierRefunds::default()),
    };
    match blocking(store.clone(), move |s| s.query(&filter)).await {
        Ok(rows) => Some(earlier_refunds(
            &rows, this, channel, money, facts, started_ms,
        )),
        Err(error) => {
            journal_failed(metrics, "read", &error);
            None
        }
    }
}

/// The call's own task: send, judge, record, answer (or notice the app is gone).
async fn run_call(
    ticket: Ticket,
    job: Job,
    store: Option<Arc<Store>>,
    reconcile: Option<Duration>,
    reply: oneshot::Sender<(Result<Response<Bytes>, ProxyError>, Duration)>,
) {
    let mut ticket = ticket;
    // This task records the call's outcome from here on, whatever happens.
    ticket.unsent = None;
    let mut shared_claim = ticket.shared.take();
    if let Some(shared) = shared_claim.as_mut() {
        // Sent from here on: a claim dropped now is left to its lease, never released
        // as unsent.
        shared.sent = true;
    }
    let Job {
        upstream,
        request,
        timeouts,
        status_request,
        response_filter,
        metrics,
        seal,
        mut charge,
    } = job;
    let sent = Instant::now();
    let result = upstream.send(request, timeouts, &mut charge).await;
    let failed = Instant::now();
    let elapsed = failed - sent;
    let plan = &ticket.plan;
    let mut outcome = Outcome::default();
    let result = match result {
        Ok(response) => {
            let response = response_filter(response);
            outcome.outcome = "answered";
            outcome.status = Some(response.status().as_u16());
            outcome.return_code =
                crate::inspect::string_field(response.body(), "returnCode").map(str::to_owned);
            Ok(response)
        }
        Err(failure) if failure.retry_safe() => {
            outcome.outcome = "not_sent";
            Err(ProxyError::Upstream(failure))
        }
        Err(failure) => {
            outcome.outcome = "uncertain";
            let verdict = match (plan.money, status_request, reconcile) {
                (Some(money), Some(request), Some(limit)) => {
                    // Asked only once LINE Pay can no longer be processing the call; the
                    // app waits (or hangs up: the task goes on), and a retry meanwhile is
                    // told when to come back.
                    let read_timed_out = matches!(failure, UpstreamError::ReadTimeout(_));
                    let processing = money.processing_limit();
                    let due = check_due(sent, failed, timeouts, processing, read_timed_out);
                    ticket.reservation.await_check(due);
                    if let Some(shared) = &shared_claim {
                        shared.await_check(due, &metrics).await;
                    }
                    tokio::time::sleep_until(due.into()).await;
                    let earlier = earlier_refunds_of(
                        store.as_ref(),
                        &metrics,
                        ticket.row,
                        &plan.channel_id,
                        money,
                        &plan.facts,
                        ticket.started_ms,
                    )
                    .await;
                    let verdict = ask_status(
                        &upstream,
                        request,
                        money,
                        &plan.facts,
                        (ticket.started_ms, earlier),
                        limit,
                        &mut charge,
                    )
                    .await;
                    metrics
                        .reconciliations
                        .with_label_values(&[verdict.state.as_str()])
                        .inc();
                    Some(verdict)
                }
                _ => None,
            };
            outcome.reconciled = verdict
                .as_ref()
                .map(|v| (v.state.as_str(), v.reason.clone()));
            Err(match verdict {
                Some(reconciled) => ProxyError::Unsettled {
                    failure,
                    reconciled,
                },
                None => ProxyError::Upstream(failure),
            })
        }
    };
    if let Err(error) = &result {
        outcome.failure = Some(error.code());
    }
    // A keyed call stores the answer the app gets, to replay it; except a call that
    // never reached LINE Pay, or that LINE Pay's records show was not applied: its key
    // may be used again (the app was told so: `retry_safe: true`, or `not_applied`).
    let may_send_again = outcome.outcome == "not_sent"
        || matches!(
            &result,
            Err(ProxyError::Unsettled { reconciled, .. }) if reconciled.state == ReconciledState::NotApplied
        );
    if let Some(call) = plan.key_use().filter(|_| !may_send_again) {
        let answer = match &result {
            Ok(response) => stored(response),
            Err(error) => stored(&error.to_response()),
        };
        outcome.answer = seal.seal(&call, &answer);
        if outcome.answer.is_none() {
            tracing::error!(
                request_id = %plan.request_id,
                "the system's random source failed: this key's answer is not stored and cannot be replayed"
            );
        }
    }
    outcome.finished_at = now_ms();
    if let (Some(store), Some(row)) = (store.clone(), ticket.row) {
        let outcome = outcome.clone();
        if let Err(error) = blocking(store, move |s| s.record_outcome(row, &outcome)).await {
            journal_failed(&metrics, "outcome", &error);
        }
    }
    // The shared record next, by compare-and-set: another pod's retry then replays
    // the answer, or sees the reconciled state.
    if let Some(shared) = shared_claim {
        let completion = shared::completion(
            may_send_again,
            outcome.outcome,
            outcome.status,
            outcome.reconciled.as_ref().map(|(state, _)| *state),
            outcome.answer.as_deref(),
        );
        shared.finish(&completion, &plan.request_id, &metrics).await;
    }
    // Released only now: a retry sees the recorded outcome, never a half-written one.
    let template = plan.template.clone();
    let request_id = plan.request_id.clone();
    let transaction_id = plan.facts.transaction_id.clone();
    let order_id = plan.facts.order_id.clone();
    let row = ticket.row;
    drop(ticket);
    if let Err((result, _)) = reply.send((result, elapsed)) {
        let (status, code) = match &result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(error) => (None, Some(error.code())),
        };
        tracing::warn!(
            request_id,
            route = %template,
            transaction_id = transaction_id.as_deref(),
            order_id = order_id.as_deref(),
            status,
            return_code = outcome.return_code.as_deref(),
            code,
            reconciled = outcome.reconciled.as_ref().map(|(state, _)| *state),
            "the app hung up before its answer; the call finished at LINE Pay and its outcome is in the journal"
        );
        if let (Some(store), Some(row)) = (store, row) {
            if let Err(error) = blocking(store, move |s| s.record_client_gone(row)).await {
                journal_failed(&metrics, "outcome", &error);
            }
        }
        // Counted once it is on record: a dashboard that sees the count finds the row.
        metrics.client_gone.with_label_values(&[&template]).inc();
    }
}

/// Asks LINE Pay about a call, within `limit`, and reads the answer. `known` is when the
/// call started (the journal's milliseconds since the epoch) and its earlier refunds
/// (`None`: the journal could not say, so a refund cannot be told from an earlier one).
async fn ask_status(
    upstream: &Upstream,
    request: Request<Full<Bytes>>,
    money: MoneyRoute,
    facts: &CallFacts,
    known: (i64, Option<EarlierRefunds>),
    limit: Duration,
    charge: &mut Charge,
) -> Verdict {
    let (started_ms, Some(earlier)) = known else {
        return Verdict::unknown("the journal's earlier refunds of the transaction cannot be read");
    };
    let timeouts = RouteTimeouts {
        connect: limit.min(Duration::from_secs(5)),
        read: limit,
    };
    match upstream.send(request, timeouts, charge).await {
        // LINE Pay dates its entries in seconds.
        Ok(answer) => money::judge(money, facts, answer.body(), started_ms / 1000, earlier),
        Err(UpstreamError::ReadTimeout(_)) => {
            Verdict::unknown("LINE Pay did not answer the status check in time")
        }
        Err(failure) => Verdict::unknown(format!(
            "the status check failed ({})",
            failure.kind().unwrap_or("internal")
        )),
    }
}

/// A known key: its replay, or why the call is refused; `None` when the key may be
/// used again (its first call was not applied).
fn replay(
    known: &KeyedCall,
    call: &KeyUse<'_>,
    seal: &Seal,
) -> Result<Option<Response<Bytes>>, ProxyError> {
    if !call.is_call_of(known) {
        return Err(ProxyError::IdempotencyKeyReused);
    }
    if known.outcome.is_none() {
        // Interrupted by a stop and not reconciled yet.
        return Err(ProxyError::CallInProgress);
    }
    // Never sent (the app was told `retry_safe: true`): the key may be used again.
    if known.outcome.as_deref() == Some("not_sent") {
        return Ok(None);
    }
    // No stored answer: the call was interrupted by a stop, or (not_applied) its answer
    // was not kept so that the key may be used again.
    if known.answer.is_none() {
        match known.reconciled_state.as_deref().and_then(reconciled_state) {
            Some(ReconciledState::NotApplied) => return Ok(None),
            Some(ReconciledState::Applied) => return Err(ProxyError::CallApplied),
            Some(ReconciledState::Unknown) => return Err(ProxyError::CallOutcomeUnknown),
            None => {}
        }
    }
    // Opens only for the call it was sealed for: an answer moved in from another row
    // fails here, as one sealed under an older secret or construction does.
    let Some(answer) = known
        .answer
        .as_deref()
        .and_then(|sealed| seal.open(call, sealed))
    else {
        tracing::debug!(status = known.status, "a stored answer cannot be opened");
        return Err(ProxyError::IdempotencyAnswerUnavailable);
    };
    let mut response = Response::new(answer.body);
    *response.status_mut() =
        http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::OK);
    if let Some(value) = answer
        .content_type
        .and_then(|t| HeaderValue::from_str(&t).ok())
    {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
        .headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    Ok(Some(response))
}

fn reconciled_state(text: &str) -> Option<ReconciledState> {
    ReconciledState::ALL
        .into_iter()
        .find(|state| state.as_str() == text)
}

fn stored(response: &Response<Bytes>) -> StoredAnswer {
    StoredAnswer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: response.body().clone(),
    }
}

fn idempotency_key(value: &HeaderValue) -> Result<String, ProxyError> {
    let key = value
        .to_str()
        .map_err(|_| ProxyError::InvalidIdempotencyKey)?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ProxyError::InvalidIdempotencyKey);
    }
    Ok(key.to_owned())
}

fn journal_failed(metrics: &Metrics, operation: &'static str, error: &StoreError) {
    metrics
        .journal_failures
        .with_label_values(&[operation])
        .inc();
    tracing::error!(operation, %error, "journal failure");
}

/// Runs a journal operation off the async threads.
async fn blocking<T: Send + 'static>(
    store: Arc<Store>,
    work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(move || work(&store)).await {
        Ok(result) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Held by a connection while one of its calls is a money call in flight: the drain
/// lets such a connection finish whatever `shutdown.drain_timeout` says. `Holds` counts
/// them for one listener.
#[derive(Clone, Default)]
pub(crate) struct Hold {
    this: Arc<AtomicUsize>,
    all: Arc<AtomicUsize>,
}

/// A listener's count of held connections.
#[derive(Clone, Default)]
pub(crate) struct Holds(Arc<AtomicUsize>);

impl Holds {
    /// A new connection's hold.
    pub(crate) fn connection(&self) -> Hold {
        Hold {
            this: Arc::default(),
            all: self.0.clone(),
        }
    }

    /// Money calls in flight on this listener's connections.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Hold {
    pub(crate) fn busy(&self) -> bool {
        self.this.load(Ordering::SeqCst) > 0
    }

    fn enter(&self) -> HoldGuard {
        self.this.fetch_add(1, Ordering::SeqCst);
        self.all.fetch_add(1, Ordering::SeqCst);
        HoldGuard(self.clone())
    }
}

struct HoldGuard(Hold);

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.0.this.fetch_sub(1, Ordering::SeqCst);
        self.0.all.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::money::Operation;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn timeouts(connect: u64, read: u64) -> RouteTimeouts {
        RouteTimeouts {
            connect: secs(connect),
            read: secs(read),
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        let now = Instant::now();
        assert_eq!(retry_after_secs(now, now), 1);
        assert_eq!(retry_after_secs(now, now + secs(3)), 1);
        assert_eq!(retry_after_secs(now + secs(3), now), 3);
        assert_eq!(retry_after_secs(now + Duration::from_millis(3001), now), 4);
        assert_eq!(retry_after_secs(now + Duration::from_millis(1500), now), 2);
    }

    #[test]
    fn a_call_is_checked_once_line_pay_can_no_longer_be_processing_it() {
        let sent = Instant::now();
        let route = timeouts(2, 20);
        let limit = secs(20);
        // A read timeout fired: the call had its whole read timeout already.
        let fired = sent + secs(21);
        assert_eq!(
            check_due(sent, fired, route, limit, true),
            fired + RECONCILE_SETTLE
        );
        // A connection broken early: the whole connect and read timeouts from the send.
        let early = sent + secs(1);
        assert_eq!(check_due(sent, early, route, limit, false), sent + secs(23));
        // Never before the failure itself.
        let late = sent + secs(30);
        assert_eq!(
            check_due(sent, late, route, limit, false),
            late + RECONCILE_SETTLE
        );
        // A read timeout longer than LINE Pay's limit is waited out whole.
        assert_eq!(
            check_due(sent, early, route, secs(10), false),
            sent + secs(23)
        );
        assert_eq!(
            check_due(sent, fired, route, secs(10), true),
            fired + RECONCILE_SETTLE
        );
    }

    /// A read timeout configured shorter than LINE Pay's processing limit (`--read-timeout
    /// 1s`) does not make LINE Pay finish sooner: the check waits for the limit.
    #[test]
    fn a_short_read_timeout_still_waits_for_line_pays_processing_limit() {
        let sent = Instant::now();
        let route = timeouts(1, 1);
        let refund = secs(20);
        // The read timeout fired 1 s after the request went out: LINE Pay may go on for
        // the rest of its 20 s.
        let fired = sent + secs(2);
        assert_eq!(
            check_due(sent, fired, route, refund, true),
            fired + secs(19) + RECONCILE_SETTLE
        );
        // Broken early: connect plus the limit from the send.
        assert_eq!(
            check_due(sent, sent + secs(1), route, refund, false),
            sent + secs(21) + RECONCILE_SETTLE
        );
        let capture = secs(60);
        assert_eq!(
            check_due(sent, sent + secs(1), route, capture, false),
            sent + secs(61) + RECONCILE_SETTLE
        );
    }

    #[test]
    fn an_interrupted_call_waits_from_its_journaled_start() {
        let route = timeouts(1, 3);
        let short = secs(2);
        assert_eq!(interrupted_wait(10_000, 12_000, route, short), secs(3));
        assert_eq!(
            interrupted_wait(10_000, 10_500, route, short),
            Duration::from_millis(4_500)
        );
        assert_eq!(
            interrupted_wait(10_000, 15_000, route, short),
            Duration::ZERO
        );
        assert_eq!(
            interrupted_wait(10_000, 60_000, route, short),
            Duration::ZERO
        );
        // A clock set back since: the whole wait, never less.
        assert_eq!(interrupted_wait(10_000, 9_000, route, short), secs(5));
        // A read timeout shorter than LINE Pay's limit: the limit.
        assert_eq!(interrupted_wait(10_000, 12_000, route, secs(20)), secs(20));
        assert_eq!(interrupted_wait(10_000, 10_000, route, secs(40)), secs(42));
    }

    #[test]
    fn a_journaled_route_keeps_its_timeouts_or_gets_the_longest() {
        let route = |method, template: &str, connect, read| {
            Route::new(method, template, timeouts(connect, read)).unwrap()
        };
        let allowlist = Allowlist::new(vec![
            route(
                http::Method::POST,
                "/v3/payments/{transactionId}/refund",
                1,
                20,
            ),
            route(
                http::Method::GET,
                "/v3/payments/{transactionId}/refund",
                7,
                5,
            ),
            route(
                http::Method::POST,
                "/v3/payments/{transactionId}/confirm",
                2,
                40,
            ),
        ]);
        let refund = "/v3/payments/{transactionId}/refund";
        assert_eq!(
            journaled_timeouts(&allowlist, "POST", refund),
            timeouts(1, 20)
        );
        assert_eq!(
            journaled_timeouts(&allowlist, "GET", refund),
            timeouts(7, 5)
        );
        assert_eq!(
            journaled_timeouts(&allowlist, "POST", "/v3/payments/{transactionId}/gone"),
            timeouts(7, 40)
        );
        assert_eq!(
            journaled_timeouts(&Allowlist::new(Vec::new()), "POST", refund),
            timeouts(0, 0)
        );
    }

    fn row(id: i64) -> CallRow {
        CallRow {
            id,
            request_id: format!("r{id}"),
            started_at: 1_000_000,
            route: "/v3/payments/{transactionId}/refund".into(),
            method: "POST".into(),
            operation: Some("refund".into()),
            channel_id: "c".into(),
            facts: CallFacts {
                order_id: None,
                transaction_id: Some("1".into()),
                amount: None,
                currency: None,
                refund_amount: Some("30".into()),
                body_hash: "h".into(),
            },
            idempotency_key: None,
            finished_at: Some(1_000_500),
            outcome: Some("answered".into()),
            status: Some(200),
            return_code: Some("0000".into()),
            failure: None,
            client_gone: false,
            reconciled_state: None,
            reconciled_reason: None,
            reconciled_at: None,
        }
    }

    #[test]
    fn a_transaction_belongs_to_the_channel_that_recorded_it() {
        let mine = row(1);
        let mut theirs = row(2);
        theirs.channel_id = "d".into();
        assert!(!recorded_under_another_channel(&[], "c"));
        assert!(!recorded_under_another_channel(
            std::slice::from_ref(&mine),
            "c"
        ));
        assert!(recorded_under_another_channel(
            &[mine.clone(), theirs.clone()],
            "c"
        ));
        assert!(recorded_under_another_channel(
            std::slice::from_ref(&mine),
            "d"
        ));
        assert!(!recorded_under_another_channel(&[theirs.clone()], "d"));
        // A call LINE Pay refused under the other channel (1150) proves nothing.
        let mut refused = theirs.clone();
        refused.return_code = Some("1150".into());
        assert!(!recorded_under_another_channel(
            std::slice::from_ref(&refused),
            "c"
        ));
        // An uncertain call proves nothing until reconciliation finds it applied.
        let mut uncertain = theirs.clone();
        uncertain.return_code = None;
        uncertain.outcome = Some("uncertain".into());
        assert!(!recorded_under_another_channel(
            std::slice::from_ref(&uncertain),
            "c"
        ));
        uncertain.reconciled_state = Some("applied".into());
        assert!(recorded_under_another_channel(
            std::slice::from_ref(&uncertain),
            "c"
        ));
        uncertain.reconciled_state = Some("unknown".into());
        assert!(!recorded_under_another_channel(&[uncertain], "c"));
    }

    #[test]
    fn earlier_refunds_are_the_journals_refunds_before_this_one_that_may_be_listed() {
        let online = MoneyRoute {
            operation: Operation::Refund,
            offline: false,
        };
        let offline = MoneyRoute {
            operation: Operation::Refund,
            offline: true,
        };
        let facts = row(9).facts;
        let started = 1_600_000;
        let count = |rows: &[CallRow], money| earlier_refunds(rows, 9, "c", money, &facts, started);
        let with = |change: &dyn Fn(&mut CallRow)| {
            let mut row = row(5);
            change(&mut row);
            row
        };
        let applied = |applied| EarlierRefunds {
            applied,
            uncertain: 0,
        };
        let uncertain = |uncertain| EarlierRefunds {
            applied: 0,
            uncertain,
        };
        // Answered 0000, or reconciled applied: applied.
        assert_eq!(count(&[row(5)], online), applied(1));
        let reconciled = with(&|r| {
            r.outcome = Some("uncertain".into());
            r.return_code = None;
            r.reconciled_state = Some("applied".into());
        });
        assert_eq!(count(&[reconciled, row(6)], online), applied(2));
        // Uncertain, interrupted, pending, reconciled unknown: not known.
        for change in [
            &(|r: &mut CallRow| r.outcome = Some("uncertain".into())) as &dyn Fn(&mut CallRow),
            &|r| {
                r.outcome = Some("interrupted".into());
                r.reconciled_state = Some("unknown".into());
            },
            &|r| {
                r.outcome = None;
                r.finished_at = None;
            },
        ] {
            let mut row = with(&|r| r.return_code = None);
            change(&mut row);
            assert_eq!(
                count(std::slice::from_ref(&row), online),
                uncertain(1),
                "{row:?}"
            );
        }
        // Refused by LINE Pay, never sent, or reconciled not applied: not counted.
        for change in [
            &(|r: &mut CallRow| r.return_code = Some("1165".into())) as &dyn Fn(&mut CallRow),
            &|r| {
                r.outcome = Some("not_sent".into());
                r.return_code = None;
            },
            &|r| {
                r.outcome = Some("uncertain".into());
                r.return_code = None;
                r.reconciled_state = Some("not_applied".into());
            },
            // Not before this one, another channel, not a refund, another amount.
            &|r| r.id = 9,
            &|r| r.id = 10,
            &|r| r.channel_id = "d".into(),
            &|r| r.operation = Some("capture".into()),
            &|r| r.facts.refund_amount = Some("31".into()),
            // Finished before this refund's window of dates opened (2 × 5 min).
            &|r| r.finished_at = Some(started - 600_001),
        ] {
            let row = with(change);
            assert_eq!(
                count(std::slice::from_ref(&row), online),
                EarlierRefunds::default(),
                "{row:?}"
            );
        }
        assert_eq!(
            count(
                &[with(&|r| r.finished_at = Some(started - 600_000))],
                online
            ),
            applied(1)
        );
        // Offline: every earlier refund of the order, of any amount, at any time.
        let old_other_amount = with(&|r| {
            r.facts.refund_amount = Some("31".into());
            r.finished_at = Some(0);
        });
        assert_eq!(count(&[old_other_amount], offline), applied(1));
    }

    fn in_flight_entries(in_flight: &InFlight) -> Vec<(String, Option<Instant>)> {
        let mut entries: Vec<_> = in_flight
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        entries.sort();
        entries
    }

    #[test]
    fn a_reservation_holds_its_entries_and_says_when_a_waiting_call_is_checked() {
        let in_flight = InFlight::default();
        let facts = CallFacts::read(Some("1"), None, b"{}");
        let held = entries("c", Some("k"), true, &facts);
        assert_eq!(held, ["key c k", "c transaction 1"]);
        assert_eq!(entries("c", None, false, &facts), Vec::<String>::new());
        let first = Reservation::take(&in_flight, held.clone()).unwrap();
        assert!(matches!(
            Reservation::take(&in_flight, vec!["c transaction 1".into()]),
            Err(ProxyError::CallInProgress)
        ));
        // Another transaction of the channel is free.
        let other = Reservation::take(&in_flight, vec!["c transaction 2".into()]).unwrap();
        let due = Instant::now() + secs(5);
        first.await_check(due);
        match Reservation::take(&in_flight, vec!["key c k".into()]) {
            Err(ProxyError::AwaitingCheck { retry_after_secs }) => {
                assert!((4..=5).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("{:?}", other.err()),
        }
        assert_eq!(
            in_flight_entries(&in_flight)[0],
            ("c transaction 1".into(), Some(due))
        );
        drop(first);
        assert_eq!(
            in_flight_entries(&in_flight),
            [("c transaction 2".to_owned(), None)]
        );
        let again = Reservation::take(&in_flight, held).unwrap();
        drop((again, other));
        assert!(in_flight_entries(&in_flight).is_empty());
    }

    #[test]
    fn interrupted_calls_are_held_from_the_start_until_due() {
        let dir = std::env::temp_dir().join(format!("journal-desk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = JournalConfig {
            enabled: true,
            path: dir.join("j.sqlite3"),
            max_age: secs(3600),
            max_calls: 100,
            reconcile: true,
            reconcile_timeout: secs(1),
        };
        let refund = "/v3/payments/{transactionId}/refund";
        let intent = |key: Option<&str>, route: &str, tx: &str| Intent {
            request_id: "r".into(),
            started_at: now_ms(),
            route: route.into(),
            method: "POST".into(),
            operation: Some("refund"),
            channel_id: "c".into(),
            facts: CallFacts {
                order_id: None,
                transaction_id: Some(tx.into()),
                amount: None,
                currency: None,
                refund_amount: Some("30".into()),
                body_hash: "h".into(),
            },
            idempotency_key: key.map(str::to_owned),
            key_binding: None,
        };
        {
            let store = Store::open(&settings.path).unwrap();
            store
                .record_intent(&intent(Some("k"), refund, "1"))
                .unwrap();
            store
                .record_intent(&intent(Some("k2"), "/v3/payments/request", "2"))
                .unwrap();
            // A call with its outcome is not interrupted: nothing of it is held.
            let done = store
                .record_intent(&intent(Some("k3"), refund, "3"))
                .unwrap();
            let outcome = Outcome {
                finished_at: now_ms(),
                outcome: "answered",
                ..Outcome::default()
            };
            store.record_outcome(done, &outcome).unwrap();
        }
        let allowlist =
            Allowlist::new(vec![
                Route::new(http::Method::POST, refund, timeouts(1, 2)).unwrap()
            ]);
        let opened = Instant::now();
        let desk = Desk::open(&settings, &allowlist).unwrap();
        let held = in_flight_entries(&desk.in_flight);
        let names: Vec<&str> = held.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["c transaction 1", "key c k", "key c k2"]);
        // The refund: its route's 1 s connect timeout, LINE Pay's 20 s processing limit
        // for a refund (the route's 2 s read timeout is shorter) and the settling second,
        // from its start.
        let due = held[0].1.unwrap();
        assert!(
            due >= opened + secs(21) && due <= Instant::now() + secs(22),
            "{due:?}"
        );
        assert_eq!(held[1].1, Some(due));
        // Not a money call: nothing to ask, nothing to wait for.
        assert!(held[2].1.unwrap() <= Instant::now());
        drop(desk);
        let off = JournalConfig {
            reconcile: false,
            ..settings.clone()
        };
        let desk = Desk::open(&off, &allowlist).unwrap();
        assert!(in_flight_entries(&desk.in_flight)
            .iter()
            .all(|(_, due)| due.unwrap() <= Instant::now()));
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The intent of a refund of 10 on `route` (online or offline), unkeyed.
    fn refund_intent(
        route: &str,
        channel: &str,
        order: Option<&str>,
        tx: Option<&str>,
        started_at: i64,
    ) -> Intent {
        Intent {
            request_id: "r".into(),
            started_at,
            route: route.into(),
            method: "POST".into(),
            operation: Some("refund"),
            channel_id: channel.into(),
            facts: CallFacts {
                order_id: order.map(str::to_owned),
                transaction_id: tx.map(str::to_owned),
                amount: None,
                currency: None,
                refund_amount: Some("10".into()),
                body_hash: "h".into(),
            },
            idempotency_key: None,
            key_binding: None,
        }
    }

    /// An upstream answering LINE Pay's payment details: `answers` by path and query
    /// (`9000` for any other), every question it was asked kept in order.
    async fn details_server(
        answers: HashMap<String, String>,
    ) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (answers, seen) = (answers.clone(), seen.clone());
                tokio::spawn(async move {
                    let (mut head, mut chunk) = (Vec::new(), [0u8; 1024]);
                    loop {
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            let request = String::from_utf8_lossy(&head[..end]).into_owned();
                            head.drain(..end + 4);
                            let target = request.split(' ').nth(1).unwrap_or_default();
                            // Absolute or origin form: the path and query either way.
                            let path = target.find("/v").map_or(target, |at| &target[at..]);
                            let body = answers
                                .get(path)
                                .cloned()
                                .unwrap_or_else(|| r#"{"returnCode":"9000"}"#.to_owned());
                            seen.lock().unwrap().push(path.to_owned());
                            let reply = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if socket.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&chunk[..read]),
                        }
                    }
                });
            }
        });
        (address, asked)
    }

    /// What a stop interrupted is asked about once due, each call judged from its own
    /// start: a refund LINE Pay lists since the call began is `applied`; one it lists
    /// only from a week before (an older refund of the same amount) is `not_applied`; a
    /// row of a channel no longer configured is `unknown`, never asked with another's
    /// secret. Each row gets its outcome and the count its verdict before its key and
    /// transaction are released.
    #[tokio::test]
    async fn interrupted_refunds_are_judged_from_their_own_start_then_released() {
        let dir = std::env::temp_dir().join(format!("journal-recon-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = JournalConfig {
            enabled: true,
            path: dir.join("j.sqlite3"),
            max_age: secs(3600 * 24),
            max_calls: 100,
            reconcile: true,
            reconcile_timeout: secs(2),
        };
        let refund = "/v3/payments/{transactionId}/refund";
        // An hour ago: every wait for LINE Pay to finish has passed, so all are due now.
        let started = now_ms() - 3_600_000;
        let started_unix = started / 1000;
        {
            let store = Store::open(&settings.path).unwrap();
            // An answered refund of the same amount on another transaction, before them:
            // not an earlier refund of theirs.
            for (channel, tx) in [("c", "40"), ("c", "41"), ("c", "42"), ("gone", "43")] {
                let intent = Intent {
                    idempotency_key: Some(format!("k{tx}")),
                    ..refund_intent(refund, channel, None, Some(tx), started)
                };
                let id = store.record_intent(&intent).unwrap();
                if tx == "40" {
                    let answered = Outcome {
                        finished_at: started + 500,
                        outcome: "answered",
                        status: Some(200),
                        return_code: Some("0000".into()),
                        ..Outcome::default()
                    };
                    store.record_outcome(id, &answered).unwrap();
                }
            }
        }
        let date = |unix: i64| {
            let at = std::time::UNIX_EPOCH + secs(u64::try_from(unix).unwrap());
            humantime::format_rfc3339_seconds(at).to_string()
        };
        let details = |tx: &str, refunded_at: i64| {
            format!(
                r#"{{"returnCode":"0000","returnMessage":"Success.","info":[{{"transactionId":{tx},"payStatus":"CAPTURE","refundList":[{{"refundTransactionId":2026120700000000001,"transactionType":"PARTIAL_REFUND","refundAmount":-10,"refundTransactionDate":"{}"}}]}}]}}"#,
                date(refunded_at)
            )
        };
        let week = 7 * 24 * 3600;
        let (address, asked) = details_server(HashMap::from([
            (
                "/v3/payments?transactionId=41".to_owned(),
                details("41", started_unix - week),
            ),
            (
                "/v3/payments?transactionId=42".to_owned(),
                details("42", started_unix + 1),
            ),
        ]))
        .await;
        let allowlist =
            Allowlist::new(vec![
                Route::new(http::Method::POST, refund, timeouts(1, 2)).unwrap()
            ]);
        let desk = Desk::open(&settings, &allowlist).unwrap();
        assert_eq!(
            in_flight_entries(&desk.in_flight).len(),
            6,
            "3 keys, 3 transactions"
        );
        let upstream = Arc::new(crate::upstream::loopback_for_tests(
            &format!("http://{address}"),
            secs(2),
            1 << 20,
        ));
        let metrics = Arc::new(Metrics::new());
        let before = now_ms();
        desk.reconcile_interrupted(
            Budget::new(1 << 20),
            |channel: &str, query: &str, signing| {
                assert_eq!(
                    signing,
                    Signing::Hmac,
                    "a v3 call's question is HMAC-signed"
                );
                (channel == "c").then(|| {
                    let request = Request::get(format!("http://{address}{query}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    (upstream.clone(), request)
                })
            },
            metrics.clone(),
        )
        .await;
        // Each once (equally due: in no particular order); nothing for the gone channel.
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(
            asked,
            [
                "/v3/payments?transactionId=41",
                "/v3/payments?transactionId=42"
            ]
        );
        let rows = desk
            .store
            .as_ref()
            .unwrap()
            .query(&Filter::default())
            .unwrap();
        let row = |tx: &str| {
            rows.iter()
                .find(|r| r.facts.transaction_id.as_deref() == Some(tx))
                .unwrap()
        };
        for (tx, state) in [("41", "not_applied"), ("42", "applied"), ("43", "unknown")] {
            let row = row(tx);
            assert_eq!(row.outcome.as_deref(), Some("interrupted"), "{row:?}");
            assert_eq!(row.reconciled_state.as_deref(), Some(state), "{row:?}");
            assert!(row.finished_at.unwrap() >= before, "{row:?}");
            let counted = metrics.reconciliations.with_label_values(&[state]).get();
            assert_eq!(counted, 1, "{state}");
        }
        assert!(row("43")
            .reconciled_reason
            .as_deref()
            .unwrap()
            .contains("could not be signed"));
        assert!(in_flight_entries(&desk.in_flight).is_empty());
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The earlier refunds of a refund are read from its own transaction's rows, or for
    /// an offline refund its own order's: another order's answered refund is not one.
    #[tokio::test]
    async fn earlier_refunds_are_read_from_the_refunds_own_order_or_transaction() {
        let (dir, desk, metrics, _) = scratch_desk("journal-earlier");
        let store = desk.store.clone().unwrap();
        let started = now_ms();
        let refund = |template: &str, order: Option<&str>, tx: Option<&str>| {
            refund_intent(template, "c", order, tx, started)
        };
        let answered = Outcome {
            finished_at: started,
            outcome: "answered",
            status: Some(200),
            return_code: Some("0000".into()),
            ..Outcome::default()
        };
        let offline = "/v4/payments/orders/{orderId}/refund";
        let online = "/v3/payments/{transactionId}/refund";
        for intent in [
            refund(offline, Some("o1"), None),
            refund(offline, Some("o2"), None),
            refund(online, None, Some("41")),
        ] {
            let id = store.record_intent(&intent).unwrap();
            store.record_outcome(id, &answered).unwrap();
        }
        let earlier = |template: &str, order: Option<&str>, tx: Option<&str>| {
            let facts = refund(template, order, tx).facts;
            let money = money::classify(&http::Method::POST, template).unwrap();
            let (store, metrics) = (store.clone(), metrics.clone());
            async move {
                earlier_refunds_of(
                    Some(&store),
                    &metrics,
                    Some(100),
                    "c",
                    money,
                    &facts,
                    started,
                )
                .await
                .unwrap()
            }
        };
        let one = EarlierRefunds {
            applied: 1,
            uncertain: 0,
        };
        assert_eq!(earlier(offline, Some("o2"), None).await, one);
        assert_eq!(
            earlier(offline, Some("o3"), None).await,
            EarlierRefunds::default()
        );
        assert_eq!(earlier(online, None, Some("41")).await, one);
        assert_eq!(
            earlier(online, None, Some("42")).await,
            EarlierRefunds::default()
        );
        // A refund naming neither (never on LINE Pay's routes) reads no rows at all, not
        // every refund of the journal.
        assert_eq!(earlier(online, None, None).await, EarlierRefunds::default());
        assert_eq!(
            earlier(offline, None, None).await,
            EarlierRefunds::default()
        );
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A keyed refund of 10 on transaction 41, as `Proxy` plans it.
    fn refund_plan(key: &str) -> Plan {
        let template = "/v3/payments/{transactionId}/refund";
        Plan {
            template: template.into(),
            method: "POST".into(),
            target: "/v3/payments/41/refund".into(),
            money: money::classify(&http::Method::POST, template),
            facts: CallFacts::read(Some("41"), None, br#"{"refundAmount":10}"#),
            key: Some(key.into()),
            request_id: "r".into(),
            channel_id: "c".into(),
            timeouts: timeouts(1, 2),
        }
    }

    /// Admits [`refund_plan`] and sends it to `base` (`http://…`) through the call's own
    /// task, without a status question.
    async fn send_refund(
        desk: &Desk,
        metrics: &Arc<Metrics>,
        seal: &Seal,
        key: &str,
        base: &str,
    ) -> Result<Response<Bytes>, ProxyError> {
        let Ok(Admission::Send(ticket)) = desk.admit(refund_plan(key), seal, metrics).await else {
            panic!("not admitted");
        };
        let job = Job {
            upstream: Arc::new(crate::upstream::loopback_for_tests(base, secs(1), 1 << 20)),
            request: Request::post(format!("{base}/v3/payments/41/refund"))
                .body(Full::new(Bytes::from_static(br#"{"refundAmount":10}"#)))
                .unwrap(),
            timeouts: timeouts(1, 2),
            status_request: None,
            response_filter: |response| response,
            metrics: metrics.clone(),
            seal: seal.clone(),
            charge: Budget::new(1 << 20).nothing(),
        };
        desk.send(ticket, job, None).await.0
    }

    /// The journal's one row, and whether it holds a sealed answer.
    fn only_row(desk: &Desk, dir: &std::path::Path) -> (CallRow, bool) {
        let rows = desk
            .store
            .as_ref()
            .unwrap()
            .query(&Filter::default())
            .unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let sealed: bool = rusqlite::Connection::open(dir.join("j.sqlite3"))
            .unwrap()
            .query_row(
                "SELECT answer IS NOT NULL FROM calls WHERE id = ?1",
                [rows[0].id],
                |row| row.get(0),
            )
            .unwrap();
        (rows[0].clone(), sealed)
    }

    /// A money call's own task records LINE Pay's answer (`answered`, its status and
    /// returnCode, when) and keeps it for the call's key: a retry of the key replays it
    /// byte for byte without calling LINE Pay again.
    #[tokio::test]
    async fn an_answered_money_call_is_recorded_and_replayed_for_its_key() {
        let (dir, desk, metrics, seal) = scratch_desk("journal-answered");
        let answer = r#"{"returnCode":"0000","returnMessage":"Success.","info":{"refundTransactionId":2026120700000000002}}"#;
        let (address, asked) = details_server(HashMap::from([(
            "/v3/payments/41/refund".to_owned(),
            answer.to_owned(),
        )]))
        .await;
        let before = now_ms();
        let response = send_refund(&desk, &metrics, &seal, "k", &format!("http://{address}"))
            .await
            .unwrap();
        assert_eq!(response.body(), answer.as_bytes());
        let (row, sealed) = only_row(&desk, &dir);
        assert_eq!(row.outcome.as_deref(), Some("answered"), "{row:?}");
        assert_eq!(row.status, Some(200));
        assert_eq!(row.return_code.as_deref(), Some("0000"));
        assert!(row.finished_at.unwrap() >= before, "{row:?}");
        assert!(sealed, "the answer is kept for the key");
        let Ok(Admission::Replay(replayed)) = desk.admit(refund_plan("k"), &seal, &metrics).await
        else {
            panic!("the key's retry is not replayed");
        };
        assert_eq!(replayed.body(), answer.as_bytes());
        assert_eq!(asked.lock().unwrap().len(), 1, "LINE Pay asked once");
        assert!(in_flight_entries(&desk.in_flight).is_empty());
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A call that never reached LINE Pay (nothing listens) is `not_sent`, keeps no
    /// answer, and its key is free at once: the app was told `retry_safe: true`.
    #[tokio::test]
    async fn a_money_call_that_never_left_is_not_sent_and_its_key_free() {
        let (dir, desk, metrics, seal) = scratch_desk("journal-not-sent");
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let error = send_refund(&desk, &metrics, &seal, "k", &format!("http://{address}"))
            .await
            .unwrap_err();
        assert!(error.retry_safe(), "{error:?}");
        let (row, sealed) = only_row(&desk, &dir);
        assert_eq!(row.outcome.as_deref(), Some("not_sent"), "{row:?}");
        assert_eq!(row.failure.as_deref(), Some(error.code()));
        assert!(!sealed, "nothing to replay: the key may be used again");
        assert!(matches!(
            desk.admit(refund_plan("k"), &seal, &metrics).await,
            Ok(Admission::Send(_))
        ));
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A call LINE Pay read and never answered (the connection closed) may have been
    /// applied: `uncertain`, and its key replays the error the app got instead of
    /// sending the call again.
    #[tokio::test]
    async fn a_money_call_sent_without_an_answer_is_uncertain_and_never_sent_again() {
        use tokio::io::AsyncReadExt;
        let (dir, desk, metrics, seal) = scratch_desk("journal-uncertain");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
        });
        let error = send_refund(&desk, &metrics, &seal, "k", &format!("http://{address}"))
            .await
            .unwrap_err();
        assert!(!error.retry_safe(), "{error:?}");
        let (row, sealed) = only_row(&desk, &dir);
        assert_eq!(row.outcome.as_deref(), Some("uncertain"), "{row:?}");
        assert_eq!(row.failure.as_deref(), Some(error.code()));
        assert!(sealed, "the error is kept for the key");
        let Ok(Admission::Replay(replayed)) = desk.admit(refund_plan("k"), &seal, &metrics).await
        else {
            panic!("the key's retry is sent again");
        };
        assert_eq!(replayed.status(), error.to_response().status());
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every call a stop interrupted is held and checked, past the journal's default page
    /// of 100 rows (up to [`MAX_RECONCILED_AT_START`]).
    #[test]
    fn more_than_a_page_of_interrupted_calls_are_all_held() {
        let dir = std::env::temp_dir().join(format!("journal-many-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = JournalConfig {
            enabled: true,
            path: dir.join("j.sqlite3"),
            max_age: secs(3600),
            max_calls: 1000,
            reconcile: false,
            reconcile_timeout: secs(1),
        };
        {
            let store = Store::open(&settings.path).unwrap();
            for n in 0..150 {
                let tx = format!("{}", 1000 + n);
                let refund = "/v3/payments/{transactionId}/refund";
                let intent = refund_intent(refund, "c", None, Some(&tx), now_ms());
                store.record_intent(&intent).unwrap();
            }
        }
        let desk = Desk::open(&settings, &Allowlist::new(Vec::new())).unwrap();
        assert_eq!(in_flight_entries(&desk.in_flight).len(), 150);
        assert_eq!(desk.interrupted.lock().unwrap().len(), 150);
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A desk on a journal of its own in a fresh directory (removed by the test), with
    /// reconciliation on and a 1 s reconcile timeout.
    fn scratch_desk(name: &str) -> (std::path::PathBuf, Desk, Arc<Metrics>, Seal) {
        let dir = std::env::temp_dir().join(format!("{name}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let settings = JournalConfig {
            enabled: true,
            path: dir.join("j.sqlite3"),
            max_age: secs(3600),
            max_calls: 100,
            reconcile: true,
            reconcile_timeout: secs(1),
        };
        let desk = Desk::open(&settings, &Allowlist::new(Vec::new())).unwrap();
        let seal = Seal::new(&crate::secret::Secret::new("s1"));
        (dir, desk, Arc::new(Metrics::new()), seal)
    }

    /// A ticket whose intent is written and that no task took over (the app hung up, or
    /// the call failed before it was sent) records `not_sent`, and only then releases its
    /// key and transaction; a ticket taken over by its task records nothing on drop.
    #[tokio::test]
    async fn a_ticket_dropped_unsent_records_not_sent_before_its_key_is_free() {
        let (dir, desk, metrics, seal) = scratch_desk("journal-unsent");
        let plan = |key: &str| Plan {
            template: "/v3/payments/{transactionId}/refund".into(),
            method: "POST".into(),
            target: "/v3/payments/1/refund".into(),
            money: money::classify(&http::Method::POST, "/v3/payments/{transactionId}/refund"),
            facts: CallFacts::read(Some("1"), None, b"{}"),
            key: Some(key.into()),
            request_id: "r".into(),
            channel_id: "c".into(),
            timeouts: timeouts(1, 1),
        };
        let Ok(Admission::Send(ticket)) = desk.admit(plan("k"), &seal, &metrics).await else {
            panic!("not admitted");
        };
        let row = ticket.row.unwrap();
        assert!(ticket.unsent.is_some());
        // Another writer holds the journal: the outcome cannot be written yet.
        let other = rusqlite::Connection::open(dir.join("j.sqlite3")).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let dropped_at = now_ms();
        drop(ticket);
        // Held until the outcome is written.
        assert!(matches!(
            desk.admit(plan("k"), &seal, &metrics).await,
            Err(ProxyError::CallInProgress)
        ));
        other.execute_batch("COMMIT").unwrap();
        desk.tasks.close();
        desk.tasks.wait().await;
        assert!(in_flight_entries(&desk.in_flight).is_empty());
        let store = desk.store.clone().unwrap();
        let rows = store.query(&Filter::default()).unwrap();
        let dropped = rows.iter().find(|r| r.id == row).unwrap();
        assert_eq!(dropped.outcome.as_deref(), Some("not_sent"));
        // Its own time of the drop, not a placeholder.
        assert!(dropped.finished_at.unwrap() >= dropped_at, "{dropped:?}");
        // `not_sent`: the key may be used again.
        let Ok(Admission::Send(mut again)) = desk.admit(plan("k"), &seal, &metrics).await else {
            panic!("the key is not usable again");
        };
        // Taken over by its task: nothing is recorded on drop.
        let second = again.row.unwrap();
        again.unsent = None;
        drop(again);
        desk.tasks.wait().await;
        let rows = store.query(&Filter::default()).unwrap();
        let taken = rows.iter().find(|r| r.id == second).unwrap();
        assert_eq!(taken.outcome, None);
        assert!(in_flight_entries(&desk.in_flight).is_empty());
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_money_call_on_another_channels_transaction_is_refused_unrecorded() {
        let (dir, desk, metrics, seal) = scratch_desk("journal-owner");
        let refund = |channel: &str, template: &str| Plan {
            template: template.into(),
            method: "POST".into(),
            target: "/v3/payments/1/refund".into(),
            money: money::classify(&http::Method::POST, template),
            facts: CallFacts::read(Some("1"), None, b"{}"),
            key: None,
            request_id: "r".into(),
            channel_id: channel.into(),
            timeouts: timeouts(1, 1),
        };
        let online = "/v3/payments/{transactionId}/refund";
        let Ok(Admission::Send(ticket)) = desk.admit(refund("c", online), &seal, &metrics).await
        else {
            panic!("the first call is admitted");
        };
        drop(ticket);
        // Closed so that `wait` returns once the tasks are done (new ones still start).
        desk.tasks.close();
        desk.tasks.wait().await;
        let store = desk.store.clone().unwrap();
        // LINE Pay took c's call: only that says whose the transaction is.
        let first = store.query(&Filter::default()).unwrap()[0].id;
        let taken = Outcome {
            finished_at: now_ms(),
            outcome: "answered",
            status: Some(200),
            return_code: Some("0000".into()),
            ..Outcome::default()
        };
        store.record_outcome(first, &taken).unwrap();
        let rows_before = store.query(&Filter::default()).unwrap().len();
        assert!(matches!(
            desk.admit(refund("d", online), &seal, &metrics).await,
            Err(ProxyError::TransactionOfAnotherChannel)
        ));
        assert_eq!(
            store.query(&Filter::default()).unwrap().len(),
            rows_before,
            "nothing recorded for the refused call"
        );
        assert!(in_flight_entries(&desk.in_flight).is_empty());
        // d's own transaction: d's call is admitted, and c's transaction stays c's.
        let mut theirs = refund("d", online);
        theirs.facts.transaction_id = Some("2".into());
        let Ok(Admission::Send(ticket)) = desk.admit(theirs, &seal, &metrics).await else {
            panic!("another transaction of d is admitted");
        };
        drop(ticket);
        desk.tasks.wait().await;
        // Its own channel goes on; a call that moves no money is not judged.
        let Ok(Admission::Send(again)) = desk.admit(refund("c", online), &seal, &metrics).await
        else {
            panic!("the transaction's own channel is admitted");
        };
        drop(again);
        desk.tasks.wait().await;
        let mut keyed = refund("d", "/v3/payments/{transactionId}/nothing");
        keyed.key = Some("k".into());
        assert!(keyed.money.is_none());
        assert!(matches!(
            desk.admit(keyed, &seal, &metrics).await,
            Ok(Admission::Send(_))
        ));
        desk.tasks.wait().await;
        drop(desk);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod replay_tests;
