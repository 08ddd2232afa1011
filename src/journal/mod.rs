//! Money calls on record: the phase of the request path between "the body is read" and
//! "LINE Pay is called" for every call that moves money (see [`crate::money`]) or
//! carries an `Idempotency-Key`.
//!
//! 1. **admit**: one call per transaction (or offline order) and per idempotency key at
//!    a time (an in-memory set, per process: `409 call_in_progress`); a key seen before
//!    replays its stored answer when it comes with the same call, and is refused on any
//!    other (`422 idempotency_key_reused`: [`binding`]); the intent is written and
//!    flushed to disk.
//! 2. **send**: in a task of its own, so an app that hangs up cannot cancel a call that
//!    LINE Pay may already be processing. The outcome (status and returnCode, or the
//!    uncertain failure) is flushed to disk before the app is answered; an uncertain
//!    money call is first checked against LINE Pay's records (reconciliation). If the
//!    app is gone by then, the outcome is logged at WARN and counted.
//!
//! The journal file itself is [`store`]; stored answers are sealed ([`seal`]). A
//! connection whose call is in here holds a [`Hold`], which the drain waits for.

mod binding;
mod seal;
pub mod store;

use self::binding::KeyUse;
pub(crate) use self::seal::Seal;
use self::seal::StoredAnswer;
use self::store::{now_ms, Intent, KeyedCall, Outcome, SideWriter};
pub use self::store::{CallRow, Filter, Store, StoreError};
use crate::budget::{Budget, Charge};
use crate::config::JournalConfig;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::money::{self, CallFacts, MoneyRoute, ReconciledState, Verdict};
use crate::route::Signing;
use crate::route::{Route, RouteTimeouts};
use crate::upstream::{Upstream, UpstreamError};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use std::collections::HashSet;
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
/// How long LINE Pay is given to finish what it was doing before it is asked.
const RECONCILE_SETTLE: Duration = Duration::from_secs(1);
/// How often old calls are pruned.
/// Interrupted calls reconciled at one start at most (the rest at the next start).
const MAX_RECONCILED_AT_START: usize = 1000;

pub(crate) const PRUNE_INTERVAL: Duration = Duration::from_secs(600);

/// What the runtime builds once and every proxy snapshot shares: the journal, the
/// in-flight set, and the task tracker of the calls' own tasks.
pub(crate) struct Desk {
    store: Option<Arc<Store>>,
    /// The journal's connection for writes that need no fsync of their own.
    side: Option<Arc<SideWriter>>,
    settings: JournalConfig,
    in_flight: Arc<Mutex<HashSet<String>>>,
    tasks: TaskTracker,
    /// The intents a previous process left without an outcome, read when the journal is
    /// opened, before this process admits any call: a call in flight now is never
    /// mistaken for an interrupted one.
    interrupted: Mutex<Vec<CallRow>>,
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
    reserved: Vec<String>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    started_unix: i64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut set = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for entry in &self.reserved {
            set.remove(entry);
        }
    }
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
    /// Opens the journal (when enabled) and prunes it once.
    pub(crate) fn open(settings: &JournalConfig) -> Result<Desk, StoreError> {
        let (store, side, interrupted) = if settings.enabled {
            let store = Store::open(&settings.path)?;
            let side = SideWriter::open(&settings.path)?;
            store.prune(now_ms(), settings.max_age, settings.max_calls)?;
            let interrupted = store.query(&Filter {
                pending: true,
                limit: MAX_RECONCILED_AT_START,
                ..Filter::default()
            })?;
            (Some(Arc::new(store)), Some(Arc::new(side)), interrupted)
        } else {
            (None, None, Vec::new())
        };
        Ok(Desk {
            store,
            side,
            settings: settings.clone(),
            in_flight: Arc::default(),
            tasks: TaskTracker::new(),
            interrupted: Mutex::new(interrupted),
        })
    }

    /// No journal: one money call per transaction still holds, keys are refused.
    #[cfg(test)]
    pub(crate) fn disabled() -> Desk {
        Desk {
            store: None,
            side: None,
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
        }
    }

    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Records the orderId a transaction was requested with, so that its later calls
    /// (an online confirm or refund names no order) are found by order. No fsync: see
    /// [`SideWriter`]. A failure is logged and counted; the app's answer goes on.
    pub(crate) async fn remember_order(
        &self,
        transaction_id: String,
        order_id: String,
        metrics: &Metrics,
    ) {
        let Some(side) = self.side.clone() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || {
            side.remember_order(&transaction_id, &order_id, now_ms())
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => journal_failed(metrics, "order", &error),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
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
        }))
    }

    /// Phase "admit": refuses a duplicate in flight, replays or refuses a known key,
    /// and writes the intent to disk.
    pub(crate) async fn admit(
        &self,
        plan: Plan,
        seal: &Seal,
        metrics: &Metrics,
    ) -> Result<Admission, ProxyError> {
        let mut reserved = Vec::new();
        if let Some(key) = &plan.key {
            reserved.push(format!("key {} {key}", plan.channel_id));
        }
        if plan.money.is_some() {
            if let Some(lock) = plan.facts.lock_key() {
                reserved.push(format!("{} {lock}", plan.channel_id));
            }
        }
        {
            let mut set = self
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if reserved.iter().any(|entry| set.contains(entry)) {
                return Err(ProxyError::CallInProgress);
            }
            set.extend(reserved.iter().cloned());
        }
        let mut ticket = Ticket {
            plan,
            row: None,
            reserved,
            in_flight: self.in_flight.clone(),
            started_unix: now_ms() / 1000,
        };
        let Some(store) = self.store.clone() else {
            return Ok(Admission::Send(ticket));
        };
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
        let intent = Intent {
            request_id: ticket.plan.request_id.clone(),
            started_at: now_ms(),
            route: ticket.plan.template.clone(),
            method: ticket.plan.method.clone(),
            operation: ticket.plan.money.map(|m| m.operation.as_str()),
            channel_id: ticket.plan.channel_id.clone(),
            facts: ticket.plan.facts.clone(),
            idempotency_key: ticket.plan.key.clone(),
            key_binding: ticket.plan.key_use().map(|call| call.digest()),
        };
        let row = blocking(store, move |s| s.record_intent(&intent))
            .await
            .map_err(|error| {
                journal_failed(metrics, "intent", &error);
                ProxyError::JournalUnavailable
            })?;
        ticket.row = Some(row);
        Ok(Admission::Send(ticket))
    }

    /// Phase "send": the call runs in its own task; this waits for its answer. When the
    /// app hangs up, this future is dropped and the task finishes on its own.
    pub(crate) async fn send(
        &self,
        ticket: Ticket,
        job: Job,
        hold: Option<&Hold>,
    ) -> (Result<Response<Bytes>, ProxyError>, Duration) {
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
        tokio::time::timeout(limit, self.tasks.wait()).await.is_ok()
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

    /// At start-up: every call a stop interrupted (an intent without an outcome) is
    /// checked with LINE Pay and its outcome recorded. `ask` signs a GET for a path and
    /// query with the signing scheme of the call's API version.
    pub(crate) async fn reconcile_interrupted(
        &self,
        upstream: Arc<Upstream>,
        budget: Arc<Budget>,
        ask: impl Fn(&str, Signing) -> Option<Request<Full<Bytes>>>,
        metrics: Arc<Metrics>,
    ) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let rows = std::mem::take(
            &mut *self
                .interrupted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for row in rows {
            let money = row
                .method
                .parse::<http::Method>()
                .ok()
                .and_then(|method| money::classify(&method, &row.route));
            let facts = row.facts.clone();
            let status_request = money
                .and_then(|m| money::status_query(&row.route, m, &facts))
                .and_then(|query| {
                    let signing = match row.route.starts_with("/v2/") {
                        true => Signing::ChannelSecret,
                        false => Signing::Hmac,
                    };
                    ask(&query, signing)
                });
            let verdict = match (money, status_request, self.settings.reconcile) {
                (Some(money), Some(request), true) => {
                    // Answers to start-up questions are charged to the budget too.
                    match budget.charge(0) {
                        Some(mut charge) => {
                            ask_status(
                                &upstream,
                                request,
                                money,
                                &facts,
                                row.started_at / 1000,
                                self.settings.reconcile_timeout,
                                &mut charge,
                            )
                            .await
                        }
                        None => Verdict::unknown("the memory budget is exhausted"),
                    }
                }
                (Some(_), _, false) => {
                    Verdict::unknown("reconciliation is off (journal.reconcile)")
                }
                _ => Verdict::unknown("not a money call: nothing to ask LINE Pay"),
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
            if let Err(error) =
                blocking(store.clone(), move |s| s.record_outcome(row.id, &outcome)).await
            {
                journal_failed(&metrics, "outcome", &error);
            }
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
    let elapsed = sent.elapsed();
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
                    tokio::time::sleep(RECONCILE_SETTLE).await;
                    let verdict = ask_status(
                        &upstream,
                        request,
                        money,
                        &plan.facts,
                        ticket.started_unix,
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
    // A keyed call stores the answer the app gets, to replay it; except a call LINE
    // Pay's records show was not applied: its key may be used again.
    let not_applied = matches!(
        &result,
        Err(ProxyError::Unsettled { reconciled, .. }) if reconciled.state == ReconciledState::NotApplied
    );
    if let Some(call) = plan.key_use().filter(|_| !not_applied) {
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

/// Asks LINE Pay about a call, within `limit`, and reads the answer.
async fn ask_status(
    upstream: &Upstream,
    request: Request<Full<Bytes>>,
    money: MoneyRoute,
    facts: &CallFacts,
    started_unix: i64,
    limit: Duration,
    charge: &mut Charge,
) -> Verdict {
    let timeouts = RouteTimeouts {
        connect: limit.min(Duration::from_secs(5)),
        read: limit,
    };
    match upstream.send(request, timeouts, charge).await {
        Ok(answer) => money::judge(money, facts, answer.body(), started_unix),
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
    if known.reconciled_state.as_deref() == Some(ReconciledState::NotApplied.as_str())
        && known.answer.is_none()
    {
        return Ok(None);
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
mod replay_tests;
