//! The replay decision: a known key's stored call against the call it comes with now.

#![allow(clippy::unwrap_used)]

use super::binding::KeyUse;
use super::seal::{Seal, StoredAnswer};
use super::store::KeyedCall;
use super::{replay, REPLAYED};
use crate::error::ProxyError;
use crate::money::CallFacts;
use crate::secret::Secret;
use bytes::Bytes;

const TEMPLATE: &str = "/v3/payments/{transactionId}/refund";

fn facts(transaction_id: &str) -> CallFacts {
    CallFacts::read(Some(transaction_id), None, b"{}")
}

fn call<'a>(facts: &'a CallFacts, target: &'a str) -> KeyUse<'a> {
    KeyUse {
        channel_id: "1657002468",
        key: "k-1",
        method: "POST",
        target,
        template: TEMPLATE,
        facts,
    }
}

fn seal() -> Seal {
    Seal::new(&Secret::new("s1"))
}

fn answer(code: &str) -> StoredAnswer {
    StoredAnswer {
        status: 200,
        content_type: Some("application/json".into()),
        body: Bytes::from(format!(r#"{{"returnCode":"{code}"}}"#)),
    }
}

/// A finished row of `call`, its answer sealed for it.
fn row_of(call: &KeyUse<'_>, stored: Option<&StoredAnswer>) -> KeyedCall {
    KeyedCall {
        method: call.method.into(),
        route: call.template.into(),
        facts: call.facts.clone(),
        key_binding: Some(call.digest()),
        outcome: Some("answered".into()),
        status: Some(200),
        reconciled_state: None,
        answer: stored.map(|a| seal().seal(call, a).unwrap()),
    }
}

fn refused(result: Result<Option<http::Response<Bytes>>, ProxyError>) -> ProxyError {
    match result {
        Err(error) => error,
        Ok(answer) => panic!("not refused: {answer:?}"),
    }
}

#[test]
fn the_same_call_replays_its_answer_byte_for_byte_marked_replayed() {
    let f = facts("1");
    let here = call(&f, "/v3/payments/1/refund");
    let mut stored = answer("0000");
    stored.status = 404;
    let known = row_of(&here, Some(&stored));
    let replayed = replay(&known, &here, &seal()).unwrap().unwrap();
    assert_eq!(replayed.status(), 404);
    assert_eq!(replayed.body(), &stored.body);
    assert_eq!(
        replayed.headers()[http::header::CONTENT_TYPE],
        "application/json"
    );
    assert_eq!(replayed.headers()[REPLAYED], "true");
}

#[test]
fn a_key_on_another_transaction_or_route_is_reused_never_replayed() {
    let (one, two) = (facts("1"), facts("2"));
    let first = call(&one, "/v3/payments/1/refund");
    let known = row_of(&first, Some(&answer("0000")));
    let other_transaction = call(&two, "/v3/payments/2/refund");
    let other_route = KeyUse {
        template: "/v3/payments/{transactionId}/confirm",
        ..call(&one, "/v3/payments/1/confirm")
    };
    for other in [other_transaction, other_route] {
        let error = refused(replay(&known, &other, &seal()));
        assert!(
            matches!(error, ProxyError::IdempotencyKeyReused),
            "{error:?}"
        );
    }
    // Judged before anything else: a pending call of another transaction too.
    let mut pending = known.clone();
    pending.outcome = None;
    let error = refused(replay(&pending, &other_transaction, &seal()));
    assert!(
        matches!(error, ProxyError::IdempotencyKeyReused),
        "{error:?}"
    );
}

#[test]
fn the_same_call_still_pending_is_in_progress() {
    let f = facts("1");
    let here = call(&f, "/v3/payments/1/refund");
    let mut known = row_of(&here, None);
    known.outcome = None;
    let error = refused(replay(&known, &here, &seal()));
    assert!(matches!(error, ProxyError::CallInProgress), "{error:?}");
}

#[test]
fn a_call_reconciled_not_applied_without_answer_may_be_sent_again() {
    let f = facts("1");
    let here = call(&f, "/v3/payments/1/refund");
    let mut known = row_of(&here, None);
    known.reconciled_state = Some("not_applied".into());
    assert!(replay(&known, &here, &seal()).unwrap().is_none());
    // With a stored answer it is replayed, not sent again.
    let mut answered = row_of(&here, Some(&answer("0000")));
    answered.reconciled_state = Some("not_applied".into());
    assert!(replay(&answered, &here, &seal()).unwrap().is_some());
    // Applied (or unknown) and no answer: never sent again, and said which.
    for (state, code) in [
        ("applied", "call_applied"),
        ("unknown", "call_outcome_unknown"),
    ] {
        known.reconciled_state = Some(state.into());
        let error = refused(replay(&known, &here, &seal()));
        assert_eq!(error.code(), code, "{state}: {error:?}");
    }
}

#[test]
fn an_answer_swapped_in_from_another_row_or_of_the_old_seal_is_unavailable() {
    let (one, two) = (facts("1"), facts("2"));
    let refund_one = call(&one, "/v3/payments/1/refund");
    let refund_two = KeyUse {
        key: "k-2",
        ..call(&two, "/v3/payments/2/refund")
    };
    let mut failed = row_of(&refund_two, Some(&answer("1179")));
    let succeeded = row_of(&refund_one, Some(&answer("0000")));
    failed.answer = succeeded.answer.clone();
    let error = refused(replay(&failed, &refund_two, &seal()));
    assert!(
        matches!(error, ProxyError::IdempotencyAnswerUnavailable),
        "{error:?}"
    );
    // A version-1 blob (the HMAC construction before), in a row stored before bindings.
    let mut old = row_of(&refund_one, None);
    old.key_binding = None;
    old.answer = Some([&[1u8][..], &[0u8; 60]].concat());
    let error = refused(replay(&old, &refund_one, &seal()));
    assert!(
        matches!(error, ProxyError::IdempotencyAnswerUnavailable),
        "{error:?}"
    );
    // The same old row, asked for by another transaction: reused.
    let other = call(&two, "/v3/payments/2/refund");
    let error = refused(replay(&old, &other, &seal()));
    assert!(
        matches!(error, ProxyError::IdempotencyKeyReused),
        "{error:?}"
    );
}

#[test]
fn a_plan_binds_its_key_to_its_own_fields() {
    let plan = super::Plan {
        template: TEMPLATE.into(),
        method: "POST".into(),
        target: "/v3/payments/1/refund?x=1".into(),
        money: None,
        facts: facts("1"),
        key: Some("k-9".into()),
        request_id: "r".into(),
        channel_id: "1657002468".into(),
        timeouts: crate::route::RouteTimeouts {
            connect: std::time::Duration::from_secs(1),
            read: std::time::Duration::from_secs(1),
        },
    };
    let bound = plan.key_use().unwrap();
    assert_eq!(
        (bound.channel_id, bound.key, bound.method, bound.target),
        ("1657002468", "k-9", "POST", "/v3/payments/1/refund?x=1")
    );
    assert_eq!((bound.template, bound.facts), (TEMPLATE, &plan.facts));
    let unkeyed = super::Plan { key: None, ..plan };
    assert!(unkeyed.key_use().is_none());
}

/// A row a stop interrupted, then reconciled as `state`, with no stored answer.
fn reconciled_row(call: &KeyUse<'_>, state: Option<&str>) -> KeyedCall {
    KeyedCall {
        outcome: Some("interrupted".into()),
        status: None,
        reconciled_state: state.map(str::to_owned),
        ..row_of(call, None)
    }
}

fn verdict(result: Result<Option<http::Response<Bytes>>, ProxyError>) -> &'static str {
    match result {
        Ok(Some(_)) => "replayed",
        Ok(None) => "send",
        Err(error) => error.code(),
    }
}

#[test]
fn a_key_after_reconciliation_is_sent_again_only_when_not_applied_or_never_sent() {
    let f = facts("1");
    let here = call(&f, "/v3/payments/1/refund");
    let seal = seal();
    let with = |state| verdict(replay(&reconciled_row(&here, state), &here, &seal));
    assert_eq!(with(Some("not_applied")), "send");
    assert_eq!(with(Some("applied")), "call_applied");
    assert_eq!(with(Some("unknown")), "call_outcome_unknown");
    assert_eq!(with(None), "idempotency_answer_unavailable");
    let pending = KeyedCall {
        outcome: None,
        ..reconciled_row(&here, None)
    };
    assert_eq!(verdict(replay(&pending, &here, &seal)), "call_in_progress");
    // Never reached LINE Pay (the app was told retry_safe: true): sent again, even with
    // an answer stored by an older sidecar.
    let not_sent = KeyedCall {
        outcome: Some("not_sent".into()),
        ..row_of(&here, Some(&answer("0000")))
    };
    assert_eq!(verdict(replay(&not_sent, &here, &seal)), "send");
    // Another call with the key: refused whatever the state.
    let g = facts("2");
    let other = call(&g, "/v3/payments/2/refund");
    assert_eq!(
        verdict(replay(
            &reconciled_row(&here, Some("unknown")),
            &other,
            &seal
        )),
        "idempotency_key_reused"
    );
    // A stored answer (the app's, with its reconciled state) is replayed.
    let stored = KeyedCall {
        reconciled_state: Some("unknown".into()),
        ..row_of(&here, Some(&answer("0000")))
    };
    assert_eq!(verdict(replay(&stored, &here, &seal)), "replayed");
}
