//! The desk's shared guards (`state.backend: redis`): a call's claim in the shared state
//! beside its local reservation, its explicit release (a lease, never a `Drop` that
//! would have to await Redis), the takeover of a claim whose owner's lease ended, and
//! the sweeper that takes over such claims when no retry comes.
//!
//! **Redis slow or down**: a money call (or keyed call) is refused with `503
//! state_unavailable`, never sent (`retry_safe: true`), unless
//! `state.redis.money_fallback: local`, which admits it with this pod's guards alone
//! (logged and counted). Each call tries Redis again: when it answers, the guards are
//! shared again, without a restart.

use super::claims::{Claim, Claimed, Claims};
use super::shared::{self, Completion, Found, RecordState, SharedRecord};
use super::store::{now_ms, Intent, Outcome};
use super::{
    ask_status, blocking, earlier_refunds_of, journal_failed, money_route, replay, Desk, Ticket,
    RECONCILE_SETTLE,
};
use crate::budget::Budget;
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::money::{self, ReconciledState, Verdict};
use crate::route::Signing;
use crate::state::StateError;
use crate::upstream::Upstream;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the sweeper looks for orphaned claims, and its leader lease (three
/// rounds: a leader that is gone is replaced within that).
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Orphans taken over in one round at most.
const SWEEP_BATCH: usize = 20;
/// Rounds of claim and takeover one call goes through at most before it is told to
/// retry (another pod keeps winning the race for the same orphan).
const MAX_CLAIM_ROUNDS: usize = 3;

/// The shared guards of a desk.
pub(crate) struct SharedGuards {
    pub(crate) claims: Arc<Claims>,
    /// `state.redis.money_fallback: local`: admit with this pod's guards alone while
    /// Redis cannot answer.
    pub(crate) fallback_local: bool,
}

/// Signs a GET of a path and query with a signing scheme: the status question.
pub(crate) trait Ask: Fn(&str, Signing) -> Option<Request<Full<Bytes>>> {}
impl<F: Fn(&str, Signing) -> Option<Request<Full<Bytes>>>> Ask for F {}

/// How to ask LINE Pay about another pod's call: the upstream, the memory budget, and
/// a signer for a GET of a path and query.
pub(crate) struct Check<'a> {
    pub(crate) upstream: &'a Arc<Upstream>,
    pub(crate) budget: &'a Arc<Budget>,
    pub(crate) ask: &'a (dyn Ask + Sync),
}

/// What the sweeper asks LINE Pay with, taken from the configuration snapshot of the
/// moment: the upstream, the budget, and a signer.
pub(crate) struct Checker {
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) budget: Arc<Budget>,
    pub(crate) ask: Arc<dyn Ask + Send + Sync>,
}

/// A call's claim in the shared state: completed by [`SharedClaim::finish`] once its
/// outcome is known. Dropped before the call was sent, it is released in a task of its
/// own (the key may be used again); dropped after, it is left to its lease, and the
/// pod that finds it orphaned checks it with LINE Pay.
pub(crate) struct SharedClaim {
    claims: Arc<Claims>,
    claim: Claim,
    /// Past this (on this process's monotonic clock, which runs on while the process is
    /// stopped), the call is no longer sent: [`shared::send_window`].
    send_by: Instant,
    pub(crate) sent: bool,
    finished: bool,
}

impl SharedClaim {
    /// Whether the time to send the call under this claim has run out.
    pub(crate) fn too_late_to_send(&self) -> bool {
        Instant::now() > self.send_by
    }

    /// Records that the call waits for its check with LINE Pay, due at `due`: another
    /// pod's retry is told when to come back.
    pub(crate) async fn await_check(&self, due: Instant, metrics: &Metrics) {
        let due_in = due.saturating_duration_since(Instant::now());
        if let Err(error) = self.claims.await_check(&self.claim, due_in).await {
            state_failed(metrics, "await", &error);
        }
    }

    /// Completes the claim by compare-and-set on its fence.
    pub(crate) async fn finish(
        mut self,
        completion: &Completion,
        request_id: &str,
        metrics: &Metrics,
    ) {
        self.finished = true;
        match self.claims.complete(&self.claim, completion).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                request_id,
                fence = self.claim.fence,
                "this call's shared claim was taken over by another pod (its lease ended): its outcome is in this pod's journal only"
            ),
            Err(error) => {
                state_failed(metrics, "complete", &error);
                tracing::error!(
                    request_id,
                    "this call's outcome could not be written to the shared state: another pod will check it with LINE Pay once its lease ends"
                );
            }
        }
    }
}

impl Drop for SharedClaim {
    fn drop(&mut self) {
        if self.finished || self.sent {
            return;
        }
        let (claims, claim) = (self.claims.clone(), self.claim.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn(async move {
                if let Err(error) = claims.complete(&claim, &Completion::Forget).await {
                    tracing::warn!(%error, "an unsent call's shared claim could not be released: it ends with its lease");
                }
            }));
        }
    }
}

/// Pauses before each try to release a claim whose answer was lost.
const RELEASE_PAUSES: [Duration; 3] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Releases, in a task of its own, a claim whose answer was lost: tried a few times,
/// then left to its lease (and to the pod that finds it orphaned).
fn release_unanswered(claims: Arc<Claims>, record: SharedRecord, metrics: Arc<Metrics>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    drop(handle.spawn(async move {
        for pause in RELEASE_PAUSES {
            tokio::time::sleep(pause).await;
            match claims.release_unanswered(&record).await {
                Ok(_) => return,
                Err(error) => state_failed(&metrics, "claim", &error),
            }
        }
        tracing::warn!(
            request_id = %record.request_id,
            "a claim whose answer was lost could not be released: it ends with its lease"
        );
    }));
}

fn state_failed(metrics: &Metrics, operation: &'static str, error: &StateError) {
    metrics
        .money_guard_failures
        .with_label_values(&[operation])
        .inc();
    tracing::error!(operation, %error, "shared state (money-call guards) failed");
}

impl Desk {
    /// Puts the desk's calls under guards shared with the other pods.
    pub(crate) fn share(mut self, guards: SharedGuards) -> Desk {
        self.shared = Some(guards);
        self
    }

    /// The shared guards' claims, if there are any.
    pub(crate) fn claims(&self) -> Option<&Arc<Claims>> {
        self.shared.as_ref().map(|guards| &guards.claims)
    }

    /// Claims `ticket`'s key and transaction in the shared state. `Some(answer)`: the
    /// key's answer, stored by whichever pod sent its call, to replay. An orphan found
    /// on the way is checked with LINE Pay first (with `check`), then judged again.
    pub(super) async fn claim_shared(
        &self,
        ticket: &mut Ticket,
        seal: &super::Seal,
        metrics: &Arc<Metrics>,
        check: Option<&Check<'_>>,
    ) -> Result<Option<Response<Bytes>>, ProxyError> {
        let Some(guards) = &self.shared else {
            return Ok(None);
        };
        let plan = &ticket.plan;
        let lock = plan
            .money
            .and_then(|_| plan.facts.lock_key())
            .map(|lock| guards.claims.txn_name(&lock));
        if lock.is_none() && plan.key.is_none() {
            // Nothing to claim: a money call that names no transaction or order.
            return Ok(None);
        }
        let call = plan.key_use();
        let binding = call.as_ref().map(super::binding::KeyUse::digest);
        let record = SharedRecord {
            fence: 0,
            state: RecordState::Claimed,
            lease_until_ms: 0,
            due_ms: None,
            pod: guards.claims.pod().to_owned(),
            claim_id: uuid::Uuid::new_v4().simple().to_string(),
            channel_id: plan.channel_id.clone(),
            request_id: plan.request_id.clone(),
            started_at_ms: ticket.started_ms,
            method: plan.method.clone(),
            route: plan.template.clone(),
            facts: plan.facts.clone(),
            key: plan.key.clone(),
            binding: binding.clone(),
            idem_record: plan.key.as_deref().map(|key| guards.claims.idem_name(key)),
            txn_record: lock,
            outcome: None,
            status: None,
            reconciled: None,
            answer: None,
        };
        let lease = shared::lease(
            plan.timeouts,
            plan.money.map(money::MoneyRoute::processing_limit),
            RECONCILE_SETTLE,
            self.settings.reconcile_timeout,
        );
        // After a loss of the shared records, claims wait out the longest lease a call
        // may hold: this route's, or one of LINE Pay's longest processing limit.
        let refusal = lease.max(shared::lease(
            plan.timeouts,
            Some(shared::LONGEST_PROCESSING_LIMIT),
            RECONCILE_SETTLE,
            self.settings.reconcile_timeout,
        ));
        let window = shared::send_window(
            plan.timeouts,
            plan.money.map(money::MoneyRoute::processing_limit),
            RECONCILE_SETTLE,
            self.settings.reconcile_timeout,
        );
        for _ in 0..MAX_CLAIM_ROUNDS {
            // Before the question leaves: the claim's time is counted from the earliest.
            let asked = Instant::now();
            let claimed = match guards.claims.claim(&record, lease, refusal).await {
                Ok(claimed) => claimed,
                Err(error) => {
                    let operation = match error {
                        StateError::DataLost(_) => "data_lost",
                        _ => "claim",
                    };
                    state_failed(metrics, operation, &error);
                    // The claim may have been written and its answer lost: released in
                    // the background, or it would hold its key and transaction for its
                    // whole lease.
                    if matches!(error, StateError::Timeout(_) | StateError::Connection(_)) {
                        release_unanswered(guards.claims.clone(), record.clone(), metrics.clone());
                    }
                    if guards.fallback_local {
                        metrics.money_guard_fallbacks.inc();
                        tracing::warn!(
                            request_id = %plan.request_id,
                            "the shared state cannot answer: this call is guarded by this pod alone (state.redis.money_fallback: local)"
                        );
                        return Ok(None);
                    }
                    return Err(ProxyError::StateUnavailable);
                }
            };
            let (found, under_key, now) = match claimed {
                Claimed::Held(claim) => {
                    ticket.shared = Some(SharedClaim {
                        claims: guards.claims.clone(),
                        claim,
                        send_by: asked + window,
                        sent: false,
                        finished: false,
                    });
                    return Ok(None);
                }
                Claimed::Found {
                    record,
                    under_key,
                    now_ms,
                } => (record, under_key, now_ms),
            };
            let judged_binding = binding.as_deref().filter(|_| under_key);
            match shared::judge_found(&found, judged_binding, now) {
                Found::Reused => return Err(ProxyError::IdempotencyKeyReused),
                Found::Known => {
                    let Some(call) = call.as_ref().filter(|_| under_key) else {
                        return Err(ProxyError::CallInProgress);
                    };
                    return match replay(&found.keyed_call(), call, seal)? {
                        Some(answer) => {
                            metrics.idempotent_replays.inc();
                            Ok(Some(answer))
                        }
                        // Free again, yet still there: cleared by its owner any moment.
                        None => Err(ProxyError::CallInProgress),
                    };
                }
                Found::InFlight {
                    retry_after_secs: Some(retry_after_secs),
                } => return Err(ProxyError::AwaitingCheck { retry_after_secs }),
                Found::InFlight {
                    retry_after_secs: None,
                } => return Err(ProxyError::CallInProgress),
                Found::Orphaned => {
                    let Some(check) = check else {
                        return Err(ProxyError::CallInProgress);
                    };
                    match self
                        .settle_orphan(&found, under_key, check, metrics, "request")
                        .await
                    {
                        // Judged again: the reconciled state, or free.
                        Ok(_) => {}
                        Err(error) => {
                            state_failed(metrics, "takeover", &error);
                            return Err(ProxyError::StateUnavailable);
                        }
                    }
                }
            }
        }
        Err(ProxyError::CallInProgress)
    }

    /// Takes over an orphaned claim (`record`, found under its key or its transaction),
    /// asks LINE Pay about its call, records the reconciled state in this pod's journal
    /// and in the shared state, and releases its transaction. `false` when another pod
    /// took it over first.
    pub(crate) async fn settle_orphan(
        &self,
        record: &SharedRecord,
        under_key: bool,
        check: &Check<'_>,
        metrics: &Arc<Metrics>,
        by: &'static str,
    ) -> Result<bool, StateError> {
        let Some(guards) = &self.shared else {
            return Ok(false);
        };
        let lease = shared::takeover_lease(self.settings.reconcile_timeout);
        let Some(claim) = guards.claims.take_over(record, under_key, lease).await? else {
            return Ok(false);
        };
        metrics.lease_takeovers.with_label_values(&[by]).inc();
        let verdict = self.check_orphan(record, check, metrics).await;
        metrics
            .reconciliations
            .with_label_values(&[verdict.state.as_str()])
            .inc();
        if by == "sweeper" {
            metrics
                .sweeper_reconciliations
                .with_label_values(&[verdict.state.as_str()])
                .inc();
        }
        tracing::warn!(
            request_id = %record.request_id,
            route = %record.route,
            transaction_id = record.facts.transaction_id.as_deref(),
            order_id = record.facts.order_id.as_deref(),
            owner = %record.pod,
            by,
            reconciled = verdict.state.as_str(),
            reason = %verdict.reason,
            "another pod's call was left without an outcome when its lease ended; LINE Pay's records were checked"
        );
        self.record_takeover(record, &verdict, metrics).await;
        let completion = shared::completion(
            verdict.state == ReconciledState::NotApplied,
            "interrupted",
            None,
            Some(verdict.state.as_str()),
            None,
        );
        guards.claims.complete(&claim, &completion).await?;
        Ok(true)
    }

    /// LINE Pay's records of an orphan's call. Its lease ended after LINE Pay's
    /// processing limit for it: LINE Pay can no longer be processing it.
    async fn check_orphan(
        &self,
        record: &SharedRecord,
        check: &Check<'_>,
        metrics: &Arc<Metrics>,
    ) -> Verdict {
        let Some(money) = money_route(&record.method, &record.route) else {
            return Verdict::unknown("not a money call: nothing to ask LINE Pay");
        };
        if !self.settings.reconcile {
            return Verdict::unknown("reconciliation is off (journal.reconcile)");
        }
        let Some(query) = money::status_query(&record.route, money, &record.facts) else {
            return Verdict::unknown("the call named no transaction or order to ask about");
        };
        let signing = match record.route.starts_with("/v2/") {
            true => Signing::ChannelSecret,
            false => Signing::Hmac,
        };
        // Every refund of this pod's journal on the transaction counts as earlier
        // (another pod's are not known here): a refund is then found applied only when
        // LINE Pay lists more of its amount than this pod sent.
        let earlier = earlier_refunds_of(
            self.store.as_ref(),
            metrics,
            Some(i64::MAX),
            &record.channel_id,
            money,
            &record.facts,
            record.started_at_ms,
        )
        .await;
        match ((check.ask)(&query, signing), check.budget.charge(0)) {
            (None, _) => Verdict::unknown("the status check could not be signed"),
            (Some(_), None) => Verdict::unknown("the memory budget is exhausted"),
            (Some(request), Some(mut charge)) => {
                ask_status(
                    check.upstream,
                    request,
                    money,
                    &record.facts,
                    (record.started_at_ms, earlier),
                    self.settings.reconcile_timeout,
                    &mut charge,
                )
                .await
            }
        }
    }

    /// The orphan's call in this pod's journal, with its reconciled state: `calls`
    /// shows it, and a retry of its key here finds it.
    async fn record_takeover(&self, record: &SharedRecord, verdict: &Verdict, metrics: &Metrics) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let intent = Intent {
            request_id: record.request_id.clone(),
            started_at: record.started_at_ms,
            route: record.route.clone(),
            method: record.method.clone(),
            operation: money_route(&record.method, &record.route).map(|m| m.operation.as_str()),
            channel_id: record.channel_id.clone(),
            facts: record.facts.clone(),
            idempotency_key: record.key.clone(),
            key_binding: record.binding.clone(),
        };
        let outcome = Outcome {
            finished_at: now_ms(),
            outcome: "interrupted",
            reconciled: Some((
                verdict.state.as_str(),
                format!(
                    "taken over from {} after its lease ended: {}",
                    record.pod, verdict.reason
                ),
            )),
            ..Outcome::default()
        };
        let written = blocking(store, move |s| {
            let row = s.record_intent(&intent)?;
            s.record_outcome(row, &outcome)
        })
        .await;
        if let Err(error) = written {
            journal_failed(metrics, "outcome", &error);
        }
    }

    /// The sweeper: every [`SWEEP_INTERVAL`], the pod that holds the leader lease takes
    /// over the claims whose lease ended (their pods are gone: no retry came) and
    /// records their reconciled state, until `stop`.
    pub(crate) async fn sweep_periodically(
        self: Arc<Self>,
        checker: impl Fn() -> Checker + Send + Sync,
        metrics: Arc<Metrics>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(claims) = self.claims().cloned() else {
            return;
        };
        loop {
            tokio::select! {
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                () = stop.cancelled() => return,
            }
            match claims.lead(SWEEP_INTERVAL * 3).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    state_failed(&metrics, "sweep", &error);
                    continue;
                }
            }
            let names = match claims.orphans(SWEEP_BATCH).await {
                Ok(names) => names,
                Err(error) => {
                    state_failed(&metrics, "sweep", &error);
                    continue;
                }
            };
            let checker = checker();
            let check = Check {
                upstream: &checker.upstream,
                budget: &checker.budget,
                ask: &*checker.ask,
            };
            for name in names {
                let found = match claims.read(&name).await {
                    Ok(Some(found)) => found,
                    Ok(None) => continue,
                    Err(error) => {
                        state_failed(&metrics, "sweep", &error);
                        break;
                    }
                };
                let (record, now) = found;
                if shared::judge_found(&record, None, now) != Found::Orphaned {
                    continue;
                }
                let under_key = record.idem_record.as_deref() == Some(name.as_str());
                if let Err(error) = self
                    .settle_orphan(&record, under_key, &check, &metrics, "sweeper")
                    .await
                {
                    state_failed(&metrics, "sweep", &error);
                }
            }
        }
    }
}
