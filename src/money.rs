//! Money calls: which routes move or release money, what the journal records about one
//! such call, and how LINE Pay's own records say whether an uncertain one took effect.
//!
//! Policy only, no I/O. A money route is recognised from its method and path template
//! alone (`POST …/confirm`, `…/capture`, `…/void`, `…/refund`,
//! `…/preapprovedPay/{regKey}/payment`, `…/oneTimeKeys/pay`), so a route table this
//! module has never seen (v4, offline, a `routes.allow` list) is classified the same way.
//!
//! When a money call ends without a certain answer (read timeout, broken connection,
//! oversized answer), the sidecar asks LINE Pay what became of it: payment details
//! (`GET /vN/payments?transactionId=…` or `?orderId=…`) online, the order status check
//! (`GET /vN/payments/orders/{orderId}/check`) offline. [`judge`] reads that answer:
//!
//! | call | applied | not applied |
//! | --- | --- | --- |
//! | confirm | the transaction is listed | `1150`, or not listed |
//! | preapproved pay | a payment with the call's `orderId` is listed | `1150`, or not listed |
//! | capture | `payStatus` `CAPTURE` | `payStatus` `AUTHORIZATION` or a voided/expired one, `1150` |
//! | void | `payStatus` `VOIDED_AUTHORIZATION` | `payStatus` `AUTHORIZATION` or `CAPTURE`, `1150` |
//! | refund | a `refundList` entry of the call's amount (a `PAYMENT_REFUND` for a full refund) dated from the call's start (less 5 min of clock skew) | no such entry, `1150` |
//! | offline pay | `status` `COMPLETE` or `AUTHORIZATION` | `status` `FAIL`, `1150` |
//! | offline capture | `status` `COMPLETE` | `status` `AUTHORIZATION`, `1150` |
//! | offline void | `status` `VOIDED_AUTHORIZATION`, `VOID` or `CANCEL` | `status` `AUTHORIZATION`, `1150` |
//! | offline refund | `status` `REFUND` or `PARTIAL_REFUND` | `status` `COMPLETE`, `1150` |
//!
//! Anything else (another returnCode, a status this table does not name, an answer
//! that is not JSON) is `unknown`: the app must look for itself.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// What a money route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Confirm,
    Capture,
    Void,
    Refund,
    PreapprovedPay,
    /// Offline (POS): pay with the buyer's one-time barcode key.
    OneTimeKeyPay,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Confirm => "confirm",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
            Operation::PreapprovedPay => "preapproved_pay",
            Operation::OneTimeKeyPay => "one_time_key_pay",
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        [
            Operation::Confirm,
            Operation::Capture,
            Operation::Void,
            Operation::Refund,
            Operation::PreapprovedPay,
            Operation::OneTimeKeyPay,
        ]
        .into_iter()
        .find(|operation| operation.as_str() == text)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A route that moves or releases money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyRoute {
    pub operation: Operation,
    /// Addressed by the merchant's `orderId` (the offline API), not by a transactionId.
    pub offline: bool,
}

/// Whether `method template` moves or releases money, and how.
pub fn classify(method: &http::Method, template: &str) -> Option<MoneyRoute> {
    if method != http::Method::POST {
        return None;
    }
    let segments: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let version = segments.first()?;
    if !is_version(version) || segments.get(1) != Some(&"payments") {
        return None;
    }
    let last = *segments.last()?;
    let before = |n: usize| segments.len().checked_sub(n + 1).map(|i| segments[i]);
    let offline = segments.get(2) == Some(&"orders") || segments.get(2) == Some(&"oneTimeKeys");
    let operation = match last {
        "confirm" => Operation::Confirm,
        "capture" => Operation::Capture,
        "void" => Operation::Void,
        "refund" => Operation::Refund,
        "payment" if before(2) == Some("preapprovedPay") => Operation::PreapprovedPay,
        "pay" if before(1) == Some("oneTimeKeys") => Operation::OneTimeKeyPay,
        _ => return None,
    };
    Some(MoneyRoute { operation, offline })
}

fn is_version(segment: &str) -> bool {
    segment
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// What the journal records of one call, read from its path and body (never the body
/// itself: it may name products; only its SHA-256). The one definition: the journal's
/// intent, its rows as read back (`/calls`, `linepay-sidecar calls`, flattened into the
/// row's JSON) and a key's stored call all embed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CallFacts {
    pub order_id: Option<String>,
    pub transaction_id: Option<String>,
    pub amount: Option<String>,
    pub currency: Option<String>,
    pub refund_amount: Option<String>,
    /// Lower-case hex SHA-256 of the exact body.
    pub body_hash: String,
}

impl CallFacts {
    /// `transaction_id` and `order_id` as the request path and query gave them (the
    /// body's `orderId` is used when the path has none).
    pub fn read(transaction_id: Option<&str>, order_id: Option<&str>, body: &[u8]) -> CallFacts {
        let field = |key: &str| crate::inspect::id_field(body, key).map(str::to_owned);
        CallFacts {
            order_id: order_id
                .map(str::to_owned)
                .or_else(|| crate::inspect::string_field(body, "orderId").map(str::to_owned)),
            transaction_id: transaction_id.map(str::to_owned),
            amount: field("amount").filter(|a| !a.is_empty()),
            currency: crate::inspect::string_field(body, "currency").map(str::to_owned),
            refund_amount: field("refundAmount").filter(|a| !a.is_empty()),
            body_hash: body_hash(body),
        }
    }

    /// What makes two money calls "the same payment": the transaction, else the order.
    pub fn lock_key(&self) -> Option<String> {
        match (&self.transaction_id, &self.order_id) {
            (Some(id), _) => Some(format!("transaction {id}")),
            (None, Some(id)) => Some(format!("order {id}")),
            (None, None) => None,
        }
    }
}

/// Lower-case hex SHA-256 of `body`.
pub fn body_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What LINE Pay's records say about an uncertain call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciledState {
    Applied,
    NotApplied,
    Unknown,
}

impl ReconciledState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconciledState::Applied => "applied",
            ReconciledState::NotApplied => "not_applied",
            ReconciledState::Unknown => "unknown",
        }
    }

    pub const ALL: [ReconciledState; 3] = [
        ReconciledState::Applied,
        ReconciledState::NotApplied,
        ReconciledState::Unknown,
    ];
}

/// The state, and a short reason for the journal and the app (never a body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub state: ReconciledState,
    pub reason: String,
}

impl Verdict {
    pub fn unknown(reason: impl Into<String>) -> Verdict {
        Verdict {
            state: ReconciledState::Unknown,
            reason: reason.into(),
        }
    }
}

/// The path and query that ask LINE Pay about a money call, or `None` when the call
/// named nothing to ask about.
pub fn status_query(template: &str, route: MoneyRoute, facts: &CallFacts) -> Option<String> {
    let version = template.trim_start_matches('/').split('/').next()?;
    if route.offline {
        let order = facts.order_id.as_deref()?;
        return Some(format!(
            "/{version}/payments/orders/{}/check",
            percent_encode(order)
        ));
    }
    match (&facts.transaction_id, &facts.order_id) {
        (Some(id), _) => Some(format!(
            "/{version}/payments?transactionId={}",
            percent_encode(id)
        )),
        (None, Some(order)) => Some(format!(
            "/{version}/payments?orderId={}",
            percent_encode(order)
        )),
        (None, None) => None,
    }
}

/// Everything outside RFC 3986's unreserved set, percent-encoded.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Clock skew allowed between the sidecar and LINE Pay when dating a refund entry.
const REFUND_SKEW_SECS: i64 = 300;

/// Reads LINE Pay's answer to [`status_query`]: did the call take effect? `started_unix`
/// is when the call was sent (seconds since the epoch), to tell a refund entry it made
/// from an older one of the same amount.
pub fn judge(route: MoneyRoute, facts: &CallFacts, answer: &[u8], started_unix: i64) -> Verdict {
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
        return Verdict::unknown("the status answer is not JSON");
    };
    let code = answer
        .get("returnCode")
        .and_then(Value::as_str)
        .unwrap_or("none");
    match code {
        "0000" => {}
        "1150" => {
            return verdict(
                ReconciledState::NotApplied,
                "LINE Pay has no record of it (1150)",
            )
        }
        other => return Verdict::unknown(format!("the status check answered returnCode {other}")),
    }
    let info = answer.get("info").unwrap_or(&Value::Null);
    if route.offline {
        return judge_offline(route.operation, info);
    }
    let entries = info.as_array().map(Vec::as_slice).unwrap_or_default();
    let entry = entries.iter().find(|entry| match &facts.transaction_id {
        Some(id) => text(entry.get("transactionId")).as_deref() == Some(id),
        None => text(entry.get("orderId")) == facts.order_id,
    });
    let Some(entry) = entry else {
        return verdict(
            ReconciledState::NotApplied,
            "payment details do not list the transaction",
        );
    };
    let pay_status = entry.get("payStatus").and_then(Value::as_str);
    match route.operation {
        Operation::Confirm | Operation::PreapprovedPay | Operation::OneTimeKeyPay => verdict(
            ReconciledState::Applied,
            "payment details list the transaction",
        ),
        Operation::Capture => match pay_status {
            Some("CAPTURE") => verdict(ReconciledState::Applied, "payStatus CAPTURE"),
            Some(status @ ("AUTHORIZATION" | "VOIDED_AUTHORIZATION" | "EXPIRED_AUTHORIZATION")) => {
                verdict(ReconciledState::NotApplied, format!("payStatus {status}"))
            }
            other => Verdict::unknown(format!("payStatus {}", other.unwrap_or("absent"))),
        },
        Operation::Void => match pay_status {
            Some("VOIDED_AUTHORIZATION") => {
                verdict(ReconciledState::Applied, "payStatus VOIDED_AUTHORIZATION")
            }
            Some(status @ ("AUTHORIZATION" | "CAPTURE")) => {
                verdict(ReconciledState::NotApplied, format!("payStatus {status}"))
            }
            other => Verdict::unknown(format!("payStatus {}", other.unwrap_or("absent"))),
        },
        Operation::Refund => judge_refund(entry, facts, started_unix),
    }
}

fn judge_refund(entry: &Value, facts: &CallFacts, started_unix: i64) -> Verdict {
    let wanted: Option<i64> = facts.refund_amount.as_deref().and_then(|a| a.parse().ok());
    let refunds = entry
        .get("refundList")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let made = refunds.iter().any(|refund| {
        let amount_matches = match wanted {
            Some(wanted) => refund
                .get("refundAmount")
                .and_then(Value::as_i64)
                .is_some_and(|amount| amount.abs() == wanted),
            None => refund.get("transactionType").and_then(Value::as_str) == Some("PAYMENT_REFUND"),
        };
        let recent = refund
            .get("refundTransactionDate")
            .and_then(Value::as_str)
            .and_then(|date| humantime::parse_rfc3339_weak(date).ok())
            .and_then(|date| date.duration_since(std::time::UNIX_EPOCH).ok())
            .is_none_or(|date| {
                i64::try_from(date.as_secs()).unwrap_or(i64::MAX) >= started_unix - REFUND_SKEW_SECS
            });
        amount_matches && recent
    });
    if made {
        verdict(
            ReconciledState::Applied,
            "refundList has a refund of this amount made since the call",
        )
    } else {
        verdict(
            ReconciledState::NotApplied,
            "refundList has no refund of this amount made since the call",
        )
    }
}

fn judge_offline(operation: Operation, info: &Value) -> Verdict {
    let status = info.get("status").and_then(Value::as_str).unwrap_or("");
    let applied: &[&str] = match operation {
        Operation::OneTimeKeyPay => &["COMPLETE", "AUTHORIZATION"],
        Operation::Capture => &["COMPLETE"],
        Operation::Void => &["VOIDED_AUTHORIZATION", "VOID", "CANCEL"],
        Operation::Refund => &["REFUND", "PARTIAL_REFUND"],
        Operation::Confirm | Operation::PreapprovedPay => &[],
    };
    let not_applied: &[&str] = match operation {
        Operation::OneTimeKeyPay => &["FAIL"],
        Operation::Capture | Operation::Void => &["AUTHORIZATION"],
        Operation::Refund => &["COMPLETE"],
        Operation::Confirm | Operation::PreapprovedPay => &[],
    };
    if applied.contains(&status) {
        verdict(ReconciledState::Applied, format!("order status {status}"))
    } else if not_applied.contains(&status) {
        verdict(
            ReconciledState::NotApplied,
            format!("order status {status}"),
        )
    } else {
        Verdict::unknown(format!(
            "order status {}",
            if status.is_empty() { "absent" } else { status }
        ))
    }
}

fn verdict(state: ReconciledState, reason: impl Into<String>) -> Verdict {
    Verdict {
        state,
        reason: reason.into(),
    }
}

/// A JSON string or number as text (transaction ids come as either).
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http::Method;

    fn money(template: &str) -> Option<(Operation, bool)> {
        classify(&Method::POST, template).map(|r| (r.operation, r.offline))
    }

    #[test]
    fn every_route_that_moves_money_is_recognised_in_every_version() {
        use Operation::*;
        #[rustfmt::skip]
        let table = [
            ("/v3/payments/{transactionId}/confirm", Some((Confirm, false))),
            ("/v3/payments/authorizations/{transactionId}/capture", Some((Capture, false))),
            ("/v3/payments/authorizations/{transactionId}/void", Some((Void, false))),
            ("/v3/payments/{transactionId}/refund", Some((Refund, false))),
            ("/v3/payments/preapprovedPay/{regKey}/payment", Some((PreapprovedPay, false))),
            ("/v4/payments/{transactionId}/confirm", Some((Confirm, false))),
            ("/v4/payments/authorizations/{transactionId}/capture", Some((Capture, false))),
            ("/v4/payments/authorizations/{transactionId}/void", Some((Void, false))),
            ("/v4/payments/{transactionId}/refund", Some((Refund, false))),
            ("/v4/payments/preapprovedPay/{regKey}/payment", Some((PreapprovedPay, false))),
            ("/v4/payments/oneTimeKeys/pay", Some((OneTimeKeyPay, true))),
            ("/v4/payments/orders/{orderId}/void", Some((Void, true))),
            ("/v4/payments/orders/{orderId}/capture", Some((Capture, true))),
            ("/v4/payments/orders/{orderId}/refund", Some((Refund, true))),
            ("/v2/payments/oneTimeKeys/pay", Some((OneTimeKeyPay, true))),
            ("/v2/payments/orders/{orderId}/refund", Some((Refund, true))),
            ("/v2/payments/{transactionId}/confirm", Some((Confirm, false))),
            // Nothing moves money here.
            ("/v3/payments/request", None),
            ("/v4/payments/request", None),
            ("/v3/payments/preapprovedPay/{regKey}/expire", None),
            ("/v4/payments/orders/{orderId}/check", None),
            ("/v3/payments/requests/{transactionId}/check", None),
            ("/v4/payments/{transactionId}/userInfo", None),
            ("/payments/{transactionId}/refund", None),
        ];
        for (template, expected) in table {
            assert_eq!(money(template), expected, "{template}");
        }
        assert_eq!(
            classify(&Method::GET, "/v3/payments/{transactionId}/refund"),
            None
        );
    }

    #[test]
    fn every_built_in_money_route_is_classified() {
        use crate::route::{family_routes, ApiFamily};
        // confirm, capture, void, refund, preapproved pay; offline: pay, void, capture,
        // refund; userInfo moves nothing.
        for (family, expected) in [
            (ApiFamily::OnlineV3, 5),
            (ApiFamily::OnlineV4, 5),
            (ApiFamily::OnlineV2, 5),
            (ApiFamily::OfflineV4, 4),
            (ApiFamily::OfflineV2, 4),
            (ApiFamily::UserInfo, 0),
        ] {
            let routes = family_routes(family, std::time::Duration::from_secs(5), None);
            let money: Vec<&str> = routes
                .iter()
                .filter(|r| classify(&r.method, &r.template).is_some())
                .map(|r| r.template.as_str())
                .collect();
            assert_eq!(money.len(), expected, "{family:?}: {money:?}");
        }
    }

    #[test]
    fn facts_come_from_the_path_and_body_and_never_hold_the_body() {
        let body = br#"{"refundAmount":50,"orderId":"o-1","productName":"Secret Coffee"}"#;
        let facts = CallFacts::read(Some("2021121600698709710"), None, body);
        assert_eq!(facts.refund_amount.as_deref(), Some("50"));
        assert_eq!(facts.order_id.as_deref(), Some("o-1"));
        assert_eq!(facts.body_hash.len(), 64);
        assert!(!format!("{facts:?}").contains("Coffee"));
        assert_eq!(
            facts.lock_key().as_deref(),
            Some("transaction 2021121600698709710")
        );
    }

    #[test]
    fn the_status_question_is_details_online_and_the_order_check_offline() {
        let facts = CallFacts::read(Some("123"), None, b"{}");
        let confirm = classify(&Method::POST, "/v4/payments/{transactionId}/confirm").unwrap();
        assert_eq!(
            status_query("/v4/payments/{transactionId}/confirm", confirm, &facts).unwrap(),
            "/v4/payments?transactionId=123"
        );
        let pay = classify(&Method::POST, "/v4/payments/oneTimeKeys/pay").unwrap();
        let facts = CallFacts::read(None, None, br#"{"orderId":"pos 1/2"}"#);
        assert_eq!(
            status_query("/v4/payments/oneTimeKeys/pay", pay, &facts).unwrap(),
            "/v4/payments/orders/pos%201%2F2/check"
        );
    }

    fn route(template: &str) -> MoneyRoute {
        classify(&Method::POST, template).unwrap()
    }

    #[test]
    fn a_confirm_is_applied_when_details_list_it() {
        let confirm = route("/v3/payments/{transactionId}/confirm");
        let facts = CallFacts::read(Some("2021121600698709710"), None, b"{}");
        let listed = br#"{"returnCode":"0000","info":[{"transactionId":2021121600698709710}]}"#;
        assert_eq!(
            judge(confirm, &facts, listed, 0).state,
            ReconciledState::Applied
        );
        let missing = br#"{"returnCode":"1150","returnMessage":"not found"}"#;
        assert_eq!(
            judge(confirm, &facts, missing, 0).state,
            ReconciledState::NotApplied
        );
        let busy = br#"{"returnCode":"9000"}"#;
        assert_eq!(
            judge(confirm, &facts, busy, 0).state,
            ReconciledState::Unknown
        );
        assert_eq!(
            judge(confirm, &facts, b"<html>", 0).state,
            ReconciledState::Unknown
        );
    }

    #[test]
    fn capture_and_void_are_judged_by_pay_status() {
        let facts = CallFacts::read(Some("1"), None, b"{}");
        let details = |status: &str| {
            format!(
                r#"{{"returnCode":"0000","info":[{{"transactionId":1,"payStatus":"{status}"}}]}}"#
            )
        };
        let capture = route("/v3/payments/authorizations/{transactionId}/capture");
        let void = route("/v3/payments/authorizations/{transactionId}/void");
        use ReconciledState::*;
        for (call, status, state) in [
            (capture, "CAPTURE", Applied),
            (capture, "AUTHORIZATION", NotApplied),
            (void, "VOIDED_AUTHORIZATION", Applied),
            (void, "AUTHORIZATION", NotApplied),
            (void, "SOMETHING_NEW", Unknown),
        ] {
            assert_eq!(
                judge(call, &facts, details(status).as_bytes(), 0).state,
                state,
                "{status}"
            );
        }
    }

    #[test]
    fn a_refund_is_applied_only_by_an_entry_of_its_amount_made_since_the_call() {
        let refund = route("/v3/payments/{transactionId}/refund");
        let facts = CallFacts::read(Some("1"), None, br#"{"refundAmount":30}"#);
        let started = 1_798_675_200; // 2026-12-31T00:00:00Z
        let details = |amount: i64, date: &str| {
            format!(
                r#"{{"returnCode":"0000","info":[{{"transactionId":1,"refundList":[{{"refundTransactionId":2,"transactionType":"PARTIAL_REFUND","refundAmount":{amount},"refundTransactionDate":"{date}"}}]}}]}}"#
            )
        };
        use ReconciledState::*;
        for (amount, date, state) in [
            (-30, "2026-12-31T00:00:03Z", Applied),
            (-20, "2026-12-31T00:00:03Z", NotApplied),
            // An older refund of the same amount is not this call's.
            (-30, "2026-12-30T00:00:00Z", NotApplied),
        ] {
            assert_eq!(
                judge(refund, &facts, details(amount, date).as_bytes(), started).state,
                state,
                "{amount} {date}"
            );
        }
        let no_refunds = br#"{"returnCode":"0000","info":[{"transactionId":1}]}"#;
        assert_eq!(judge(refund, &facts, no_refunds, started).state, NotApplied);
    }

    #[test]
    fn offline_calls_are_judged_by_the_order_status() {
        let facts = CallFacts::read(None, Some("pos-1"), b"{}");
        let pay = route("/v4/payments/oneTimeKeys/pay");
        let refund = route("/v4/payments/orders/{orderId}/refund");
        let check = |status: &str| {
            format!(r#"{{"returnCode":"0000","info":{{"orderId":"pos-1","status":"{status}"}}}}"#)
        };
        use ReconciledState::*;
        assert_eq!(
            judge(pay, &facts, check("COMPLETE").as_bytes(), 0).state,
            Applied
        );
        assert_eq!(
            judge(pay, &facts, check("FAIL").as_bytes(), 0).state,
            NotApplied
        );
        assert_eq!(
            judge(refund, &facts, check("REFUND").as_bytes(), 0).state,
            Applied
        );
        assert_eq!(
            judge(refund, &facts, check("COMPLETE").as_bytes(), 0).state,
            NotApplied
        );
    }
}
