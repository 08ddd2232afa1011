//! The money-call guards every pod shares, as decisions: what a record found in the
//! shared state (Redis, see [`super::redis`]) means for a call, how long a claim's lease
//! runs, and how a record is written and read back. No I/O here.
//!
//! A **claim** is the shared intent of one keyed or money call: its facts (route,
//! method, transaction or order, amounts, body hash, request id), the pod that owns it,
//! a **fence** number (one counter per prefix, incremented by every claim and takeover)
//! and the end of its **lease**. It lives under the call's idempotency key
//! (`{prefix}:{channel}:idem:{key}`) and, for a money call, under its transaction
//! (`{prefix}:{channel}:txn:{id}`) or offline order (`{prefix}:{channel}:order:{id}`). The owner completes it by compare-and-set on
//! the fence: an owner whose lease was taken over can never overwrite the new owner's
//! record. A completed key record holds the app's answer sealed ([`super::seal`], the
//! binding as associated data) for `state.redis.answer_ttl`; a transaction record is
//! deleted at completion.
//!
//! A record found by another call says ([`judge_found`]): the same key on another call
//! (`422 idempotency_key_reused`); a known answer or reconciled state (replayed or
//! refused exactly like a journal row: `super::replay`); a call in flight, its lease
//! alive (`409 call_in_progress`, with `Retry-After` once its owner waits for its
//! reconciliation); or an **orphan**, whose lease ended without an outcome (its pod was
//! killed, lost, or cut from Redis): it is never sent again blindly, but taken over and
//! checked with LINE Pay first.

use super::store::KeyedCall;
use crate::money::CallFacts;
use crate::route::RouteTimeouts;
use std::time::Duration;

/// Added to a claim's lease beyond the longest its owner can take (send, wait until
/// LINE Pay can no longer be processing the call, ask): the intent's fsync, a slow
/// Redis answer, a scheduler's pause.
pub(crate) const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// The longest of LINE Pay's processing limits ([`crate::money::MoneyRoute::processing_limit`]:
/// an online capture).
pub(crate) const LONGEST_PROCESSING_LIMIT: Duration = Duration::from_secs(60);

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordState {
    /// Its owner is sending it (or waits to check it with LINE Pay).
    Claimed,
    /// Taken over after its owner's lease ended: being checked with LINE Pay.
    Reconciling,
    /// Its outcome is on record: an answer to replay, or a reconciled state.
    Done,
}

impl RecordState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordState::Claimed => "claimed",
            RecordState::Reconciling => "reconciling",
            RecordState::Done => "done",
        }
    }

    fn parse(text: &str) -> Option<RecordState> {
        [
            RecordState::Claimed,
            RecordState::Reconciling,
            RecordState::Done,
        ]
        .into_iter()
        .find(|state| state.as_str() == text)
    }
}

/// One claim as stored in the shared state (a Redis hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedRecord {
    pub(crate) fence: u64,
    pub(crate) state: RecordState,
    /// The end of the owner's lease, in milliseconds of the shared state's own clock.
    pub(crate) lease_until_ms: i64,
    /// When the owner's call waits for its check with LINE Pay: when that is due.
    pub(crate) due_ms: Option<i64>,
    /// The pod that owns the claim (`state.redis` instance name).
    pub(crate) pod: String,
    /// A random id of this one claim: a claim whose answer was lost (a timeout) is
    /// released by it, never another call's.
    pub(crate) claim_id: String,
    pub(crate) channel_id: String,
    pub(crate) request_id: String,
    pub(crate) started_at_ms: i64,
    pub(crate) method: String,
    /// The route template.
    pub(crate) route: String,
    pub(crate) facts: CallFacts,
    /// The app's idempotency key, if the call had one.
    pub(crate) key: Option<String>,
    /// The key's binding digest ([`super::binding::KeyUse::digest`]).
    pub(crate) binding: Option<String>,
    /// The shared-state names of the call's records (its key's and its transaction's):
    /// a takeover takes both.
    pub(crate) idem_record: Option<String>,
    pub(crate) txn_record: Option<String>,
    pub(crate) outcome: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) reconciled: Option<String>,
    pub(crate) answer: Option<Vec<u8>>,
}

impl SharedRecord {
    /// The fields of a new claim, less those the claim script sets itself (`fence`,
    /// `lease_until`, `state`).
    pub(crate) fn claim_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut fields = vec![
            ("pod", self.pod.as_bytes().to_vec()),
            ("claim_id", self.claim_id.as_bytes().to_vec()),
            ("channel_id", self.channel_id.as_bytes().to_vec()),
            ("request_id", self.request_id.as_bytes().to_vec()),
            ("started_at", self.started_at_ms.to_string().into_bytes()),
            ("method", self.method.as_bytes().to_vec()),
            ("route", self.route.as_bytes().to_vec()),
            ("body_hash", self.facts.body_hash.as_bytes().to_vec()),
        ];
        let optional = [
            ("order_id", &self.facts.order_id),
            ("transaction_id", &self.facts.transaction_id),
            ("amount", &self.facts.amount),
            ("currency", &self.facts.currency),
            ("refund_amount", &self.facts.refund_amount),
            ("key", &self.key),
            ("binding", &self.binding),
            ("idem_record", &self.idem_record),
            ("txn_record", &self.txn_record),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                fields.push((name, value.as_bytes().to_vec()));
            }
        }
        fields
    }

    /// Reads a record back from its hash's field pairs; `None` when a field every
    /// record has is missing or unreadable (a record written by something else).
    pub(crate) fn from_fields(pairs: &[(String, Vec<u8>)]) -> Option<SharedRecord> {
        let text = |name: &str| {
            pairs
                .iter()
                .find(|(field, _)| field == name)
                .and_then(|(_, value)| String::from_utf8(value.clone()).ok())
        };
        let number = |name: &str| text(name).and_then(|t| t.parse::<i64>().ok());
        Some(SharedRecord {
            fence: text("fence")?.parse().ok()?,
            state: RecordState::parse(&text("state")?)?,
            lease_until_ms: number("lease_until")?,
            due_ms: number("due"),
            pod: text("pod").unwrap_or_default(),
            claim_id: text("claim_id").unwrap_or_default(),
            channel_id: text("channel_id").unwrap_or_default(),
            request_id: text("request_id").unwrap_or_default(),
            started_at_ms: number("started_at")?,
            method: text("method")?,
            route: text("route")?,
            facts: CallFacts {
                order_id: text("order_id"),
                transaction_id: text("transaction_id"),
                amount: text("amount"),
                currency: text("currency"),
                refund_amount: text("refund_amount"),
                body_hash: text("body_hash")?,
            },
            key: text("key"),
            binding: text("binding"),
            idem_record: text("idem_record"),
            txn_record: text("txn_record"),
            outcome: text("outcome"),
            status: number("status").and_then(|s| u16::try_from(s).ok()),
            reconciled: text("reconciled"),
            answer: pairs
                .iter()
                .find(|(field, _)| field == "answer")
                .map(|(_, value)| value.clone()),
        })
    }

    /// The record as the journal's replay reads a keyed row.
    pub(crate) fn keyed_call(&self) -> KeyedCall {
        KeyedCall {
            method: self.method.clone(),
            route: self.route.clone(),
            facts: self.facts.clone(),
            key_binding: self.binding.clone(),
            outcome: self.outcome.clone(),
            status: self.status,
            reconciled_state: self.reconciled.clone(),
            answer: self.answer.clone(),
        }
    }
}

/// What a record found under a call's key or transaction means for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// The same key on another call: `422 idempotency_key_reused`.
    Reused,
    /// The key's call has its outcome: replayed or refused like a journal row.
    Known,
    /// Its owner holds its lease: `409 call_in_progress`, told when to come back once
    /// the owner waits for its check (`retry_after_secs`).
    InFlight { retry_after_secs: Option<u64> },
    /// Its owner's lease ended without an outcome: checked with LINE Pay before
    /// anything else is sent.
    Orphaned,
}

/// Judges `record`, found under this call's key (`binding`: the call's digest) or, with
/// `binding` `None`, under its transaction, at `now_ms` on the shared state's clock.
pub(crate) fn judge_found(record: &SharedRecord, binding: Option<&str>, now_ms: i64) -> Found {
    if let (Some(call), Some(stored)) = (binding, record.binding.as_deref()) {
        if call != stored {
            return Found::Reused;
        }
    }
    if record.state == RecordState::Done {
        return Found::Known;
    }
    if record.lease_until_ms > now_ms {
        let retry_after_secs = record.due_ms.map(|due| {
            let left = u64::try_from(due.saturating_sub(now_ms)).unwrap_or(0);
            // Whole seconds, rounded up, never 0.
            left.div_ceil(1000).max(1)
        });
        return Found::InFlight { retry_after_secs };
    }
    Found::Orphaned
}

/// How long a claim's lease runs: longer than its owner can take, from the claim to its
/// outcome. A money call: the route's connect timeout and its read timeout raised to
/// LINE Pay's processing limit for it (`limit`: the check is never asked sooner), the
/// settling second, the check itself (`reconcile`), plus [`LEASE_MARGIN`]. Another keyed
/// call: its connect and read timeouts, plus the margin.
pub(crate) fn lease(
    timeouts: RouteTimeouts,
    limit: Option<Duration>,
    settle: Duration,
    reconcile: Duration,
) -> Duration {
    match limit {
        Some(limit) => timeouts.connect + timeouts.read.max(limit) + settle + reconcile,
        None => timeouts.connect + timeouts.read,
    }
    .saturating_add(LEASE_MARGIN)
}

/// How long after its claim was asked for a call may still be sent: what its lease
/// leaves once the send itself is allowed for (the connect timeout, the read timeout
/// raised to LINE Pay's processing limit, the settling second). Sent later, the call
/// could still be in LINE Pay's hands when its lease ends and another pod asks about it,
/// finds nothing, and sends it again; so an owner that stalled (a frozen VM, a paused
/// container, a slow disk) past it does not send.
pub(crate) fn send_window(
    timeouts: RouteTimeouts,
    limit: Option<Duration>,
    settle: Duration,
    reconcile: Duration,
) -> Duration {
    let needed = match limit {
        Some(limit) => timeouts.connect + timeouts.read.max(limit) + settle,
        None => timeouts.connect + timeouts.read,
    };
    lease(timeouts, limit, settle, reconcile).saturating_sub(needed)
}

/// The lease of a takeover: one check with LINE Pay (`reconcile`, its connect part at
/// most 5 s), plus [`LEASE_MARGIN`].
pub(crate) fn takeover_lease(reconcile: Duration) -> Duration {
    reconcile + reconcile.min(Duration::from_secs(5)) + LEASE_MARGIN
}

/// What a completed call leaves in the shared state under its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Completion {
    /// The key may be used again (the call never reached LINE Pay, or LINE Pay's records
    /// show it had no effect): the record is deleted.
    Forget,
    /// The answer (sealed) and what is known of the outcome, kept for replay.
    Keep(Vec<(&'static str, Vec<u8>)>),
}

/// The completion of a call whose outcome is `outcome` (the journal's word), with
/// LINE Pay's `status`, its `reconciled` state (if it was checked) and the sealed
/// `answer` (if one is stored). `may_send_again`: the key is free again.
pub(crate) fn completion(
    may_send_again: bool,
    outcome: &str,
    status: Option<u16>,
    reconciled: Option<&str>,
    answer: Option<&[u8]>,
) -> Completion {
    if may_send_again {
        return Completion::Forget;
    }
    let mut fields = vec![("outcome", outcome.as_bytes().to_vec())];
    if let Some(status) = status {
        fields.push(("status", status.to_string().into_bytes()));
    }
    if let Some(state) = reconciled {
        fields.push(("reconciled", state.as_bytes().to_vec()));
    }
    if let Some(answer) = answer {
        fields.push(("answer", answer.to_vec()));
    }
    Completion::Keep(fields)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record() -> SharedRecord {
        SharedRecord {
            fence: 7,
            state: RecordState::Claimed,
            lease_until_ms: 10_000,
            due_ms: None,
            pod: "pod-a".into(),
            claim_id: "c-1".into(),
            channel_id: "c".into(),
            request_id: "r-1".into(),
            started_at_ms: 1_000,
            method: "POST".into(),
            route: "/v3/payments/{transactionId}/refund".into(),
            facts: CallFacts {
                order_id: None,
                transaction_id: Some("1".into()),
                amount: None,
                currency: None,
                refund_amount: Some("30".into()),
                body_hash: "h".into(),
            },
            key: Some("k".into()),
            binding: Some("b".into()),
            idem_record: Some("p:c:idem:k".into()),
            txn_record: Some("p:c:txn:1".into()),
            outcome: None,
            status: None,
            reconciled: None,
            answer: None,
        }
    }

    /// The pairs a claim script leaves: the claim's fields and its own three.
    fn stored(record: &SharedRecord) -> Vec<(String, Vec<u8>)> {
        let mut pairs: Vec<(String, Vec<u8>)> = record
            .claim_fields()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        pairs.push(("fence".into(), record.fence.to_string().into_bytes()));
        pairs.push((
            "lease_until".into(),
            record.lease_until_ms.to_string().into_bytes(),
        ));
        pairs.push(("state".into(), record.state.as_str().as_bytes().to_vec()));
        pairs
    }

    #[test]
    fn a_record_reads_back_as_it_was_claimed_and_completed() {
        let claimed = record();
        assert_eq!(SharedRecord::from_fields(&stored(&claimed)), Some(claimed));
        let mut done = record();
        done.state = RecordState::Done;
        done.due_ms = Some(9_000);
        done.facts.order_id = Some("o".into());
        done.facts.amount = Some("100".into());
        done.facts.currency = Some("JPY".into());
        let mut pairs = stored(&done);
        pairs.push(("due".into(), b"9000".to_vec()));
        let Completion::Keep(fields) = completion(
            false,
            "answered",
            Some(200),
            Some("applied"),
            Some(&[0, 255]),
        ) else {
            panic!("kept");
        };
        pairs.extend(fields.into_iter().map(|(n, v)| (n.to_owned(), v)));
        done.outcome = Some("answered".into());
        done.status = Some(200);
        done.reconciled = Some("applied".into());
        done.answer = Some(vec![0, 255]);
        assert_eq!(SharedRecord::from_fields(&pairs), Some(done));
        // A keyless record: nothing optional.
        let mut bare = record();
        bare.key = None;
        bare.binding = None;
        bare.idem_record = None;
        bare.facts.refund_amount = None;
        assert_eq!(SharedRecord::from_fields(&stored(&bare)), Some(bare));
    }

    #[test]
    fn a_record_missing_a_field_every_record_has_is_not_read() {
        for missing in [
            "fence",
            "state",
            "lease_until",
            "started_at",
            "method",
            "route",
            "body_hash",
        ] {
            let pairs: Vec<_> = stored(&record())
                .into_iter()
                .filter(|(name, _)| name != missing)
                .collect();
            assert_eq!(SharedRecord::from_fields(&pairs), None, "{missing}");
        }
        let mut pairs = stored(&record());
        pairs.retain(|(name, _)| name != "state");
        pairs.push(("state".into(), b"sent".to_vec()));
        assert_eq!(SharedRecord::from_fields(&pairs), None);
        let mut pairs = stored(&record());
        pairs.retain(|(name, _)| {
            !["pod", "request_id", "channel_id", "claim_id"].contains(&name.as_str())
        });
        let read = SharedRecord::from_fields(&pairs).unwrap();
        assert_eq!(
            (
                read.pod.as_str(),
                read.request_id.as_str(),
                read.channel_id.as_str(),
                read.claim_id.as_str()
            ),
            ("", "", "", "")
        );
    }

    #[test]
    fn a_found_record_is_reused_known_in_flight_or_orphaned() {
        let claimed = record();
        // Another binding, in any state: reused.
        assert_eq!(judge_found(&claimed, Some("other"), 0), Found::Reused);
        let mut done = record();
        done.state = RecordState::Done;
        assert_eq!(judge_found(&done, Some("other"), 0), Found::Reused);
        assert_eq!(judge_found(&done, Some("b"), 99_999), Found::Known);
        // Found under the transaction: no binding to compare.
        assert_eq!(judge_found(&done, None, 0), Found::Known);
        // Alive: in flight, told when to come back only once its check is due.
        assert_eq!(
            judge_found(&claimed, Some("b"), 9_999),
            Found::InFlight {
                retry_after_secs: None
            }
        );
        assert_eq!(
            judge_found(&claimed, None, 0),
            Found::InFlight {
                retry_after_secs: None
            }
        );
        let mut waiting = record();
        waiting.due_ms = Some(5_001);
        for (now, secs) in [(1_000, 5), (2_000, 4), (5_000, 1), (5_001, 1), (9_000, 1)] {
            assert_eq!(
                judge_found(&waiting, Some("b"), now),
                Found::InFlight {
                    retry_after_secs: Some(secs)
                },
                "{now}"
            );
        }
        // The lease ended without an outcome: an orphan, whoever finds it.
        assert_eq!(judge_found(&claimed, Some("b"), 10_000), Found::Orphaned);
        assert_eq!(judge_found(&waiting, None, 10_001), Found::Orphaned);
        let mut taken = record();
        taken.state = RecordState::Reconciling;
        assert_eq!(
            judge_found(&taken, Some("b"), 1),
            Found::InFlight {
                retry_after_secs: None
            }
        );
        assert_eq!(judge_found(&taken, Some("b"), 10_000), Found::Orphaned);
        // A record without a binding (a keyless money call's) is judged by its lease.
        let mut keyless = record();
        keyless.binding = None;
        assert_eq!(judge_found(&keyless, Some("b"), 10_000), Found::Orphaned);
    }

    fn timeouts(connect: u64, read: u64) -> RouteTimeouts {
        RouteTimeouts {
            connect: Duration::from_secs(connect),
            read: Duration::from_secs(read),
        }
    }

    #[test]
    fn a_lease_outlives_the_send_the_wait_and_the_check() {
        let s = Duration::from_secs;
        // Refund: 1 s connect + LINE Pay's 20 s (longer than the 4 s read) + 1 s settle
        // + a 10 s check + 5 s margin.
        assert_eq!(lease(timeouts(1, 4), Some(s(20)), s(1), s(10)), s(37));
        // A read timeout longer than the limit is waited out whole.
        assert_eq!(lease(timeouts(2, 60), Some(s(20)), s(1), s(10)), s(78));
        // Not a money call: no check, no wait.
        assert_eq!(lease(timeouts(2, 60), None, s(1), s(10)), s(67));
        // What is left to send in: the check and the margin (money), the margin (keyed).
        assert_eq!(send_window(timeouts(1, 4), Some(s(20)), s(1), s(10)), s(15));
        assert_eq!(
            send_window(timeouts(2, 60), Some(s(20)), s(1), s(10)),
            s(15)
        );
        assert_eq!(send_window(timeouts(2, 60), None, s(1), s(10)), s(5));
        assert_eq!(takeover_lease(s(10)), s(20));
        assert_eq!(takeover_lease(s(2)), s(9));
    }

    #[test]
    fn a_completion_forgets_a_key_free_again_and_keeps_the_rest() {
        assert_eq!(
            completion(true, "not_sent", None, None, Some(b"x")),
            Completion::Forget
        );
        assert_eq!(
            completion(false, "uncertain", None, Some("unknown"), None),
            Completion::Keep(vec![
                ("outcome", b"uncertain".to_vec()),
                ("reconciled", b"unknown".to_vec())
            ])
        );
        assert_eq!(
            completion(false, "answered", Some(200), None, Some(b"sealed")),
            Completion::Keep(vec![
                ("outcome", b"answered".to_vec()),
                ("status", b"200".to_vec()),
                ("answer", b"sealed".to_vec())
            ])
        );
    }

    #[test]
    fn a_record_is_a_journal_row_to_replay() {
        let mut done = record();
        done.state = RecordState::Done;
        done.outcome = Some("answered".into());
        done.status = Some(200);
        done.answer = Some(vec![2]);
        let keyed = done.keyed_call();
        assert_eq!(keyed.key_binding.as_deref(), Some("b"));
        assert_eq!(keyed.outcome.as_deref(), Some("answered"));
        assert_eq!(keyed.status, Some(200));
        assert_eq!(keyed.answer, Some(vec![2]));
        assert_eq!(keyed.facts, done.facts);
        assert_eq!(keyed.route, done.route);
        assert_eq!(keyed.method, "POST");
        assert_eq!(keyed.reconciled_state, None);
    }
}
