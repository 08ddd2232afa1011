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
//! | refund | more `refundList` entries of the call's amount (a `PAYMENT_REFUND` for a full refund) dated from the call's start (less 5 min of clock skew) than the journal's earlier refunds of that amount ([`EarlierRefunds`]) | no such entry, `1150` |
//! | offline pay | `status` `COMPLETE` or `AUTHORIZATION` | `status` `FAIL`, `1150` |
//! | offline capture | `status` `COMPLETE` | `status` `AUTHORIZATION`, `1150` |
//! | offline void | `status` `VOIDED_AUTHORIZATION`, `VOID` or `CANCEL` | `status` `AUTHORIZATION`, `1150` |
//! | offline refund | `status` `REFUND` or `PARTIAL_REFUND`, and no earlier refund of the order in the journal | `status` `COMPLETE`, `1150` |
//!
//! Anything else is `unknown`: another returnCode, a status this table does not name,
//! an answer that is not JSON or has no list of payments, a refund entry whose amount,
//! type or date cannot be read, a call amount that is not a number, refund entries the
//! earlier refunds can explain. `not_applied` is only ever LINE Pay's records proving the
//! call absent; the caller asks only once LINE Pay can no longer be processing the call
//! (see [`crate::journal`]).

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

impl MoneyRoute {
    /// How long LINE Pay may go on processing a call of this route after it arrives: the
    /// read timeout its documentation asks callers to allow (confirm 40 s, online capture
    /// 60 s, preapproved pay 40 s as the SDKs use, offline one-time-key pay 40 s, every
    /// other call 20 s). A call is judged uncertain only after this much time at least,
    /// whatever the configured read timeout: asked earlier, LINE Pay's records may not
    /// show it yet. A floor, never lowered by configuration.
    pub fn processing_limit(self) -> std::time::Duration {
        let secs = match (self.operation, self.offline) {
            (Operation::Confirm, _) => 40,
            (Operation::Capture, false) => 60,
            (Operation::PreapprovedPay, _) | (Operation::OneTimeKeyPay, _) => 40,
            (Operation::Capture, true) | (Operation::Void, _) | (Operation::Refund, _) => 20,
        };
        std::time::Duration::from_secs(secs)
    }
}

/// Whether `method template` moves or releases money, and how.
pub fn classify(method: &http::Method, template: &str) -> Option<MoneyRoute> {
    if method != http::Method::POST {
        return None;
    }
    // Read from both ends without collecting the segments (no `Vec` per call); a short
    // path's segments from the end run into its first ones, as indexing would.
    let path = template.trim_start_matches('/');
    let mut from_start = path.split('/');
    if !from_start.next().is_some_and(is_version) || from_start.next() != Some("payments") {
        return None;
    }
    let third = from_start.next();
    let offline = third == Some("orders") || third == Some("oneTimeKeys");
    let mut from_end = path.rsplit('/');
    let last = from_end.next()?;
    let before_last = from_end.next();
    let second_before_last = from_end.next();
    let operation = match last {
        "confirm" => Operation::Confirm,
        "capture" => Operation::Capture,
        "void" => Operation::Void,
        "refund" => Operation::Refund,
        "payment" if second_before_last == Some("preapprovedPay") => Operation::PreapprovedPay,
        "pay" if before_last == Some("oneTimeKeys") => Operation::OneTimeKeyPay,
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
    /// `transaction_id` and `order_id_in_path` as the request path gave them, still
    /// percent-encoded (the body's `orderId` is used when the path has none). The
    /// orderId is recorded decoded, once: the order as LINE Pay means it, so that the
    /// journal, the in-flight lock and the status question ([`status_query`], which
    /// encodes it exactly once) all name the same order however the app spelled it.
    pub fn read(
        transaction_id: Option<&str>,
        order_id_in_path: Option<&str>,
        body: &[u8],
    ) -> CallFacts {
        // Amounts whole, decimals included (THB has them): a refund of 30.5 recorded as
        // 30 would never be found in LINE Pay's refund list.
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let field = |key: &str| match parsed.as_ref().and_then(|body| body.get(key)) {
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(Value::String(text)) => Some(text.clone()),
            Some(_) => None,
            None => crate::inspect::id_field(body, key).map(str::to_owned),
        };
        CallFacts {
            order_id: match order_id_in_path {
                Some(raw) => order_id_from_path(raw),
                None => crate::inspect::string_field(body, "orderId").map(str::to_owned),
            },
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

/// The orderId a path segment names: its percent-encoding decoded once. `None` when it
/// does not decode to UTF-8 (the allowlist refuses such a segment before any call gets
/// here); never a lossy guess, which would name, and ask LINE Pay about, another order.
pub fn order_id_from_path(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
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
pub(crate) const REFUND_SKEW_SECS: i64 = 300;

/// The refunds the journal shows were sent before this one on the same transaction
/// (offline: the same order) close enough in time for LINE Pay to list them beside it:
/// what keeps an earlier refund from passing for this one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EarlierRefunds {
    /// LINE Pay answered `0000`, or their reconciliation found them applied.
    pub applied: usize,
    /// Their fate is not known: uncertain, interrupted, or reconciled `unknown`.
    pub uncertain: usize,
}

impl EarlierRefunds {
    fn any(self) -> usize {
        self.applied + self.uncertain
    }
}

/// Reads LINE Pay's answer to [`status_query`]: did the call take effect? `started_unix`
/// is when the call was sent (seconds since the epoch) and `earlier` the refunds sent
/// before it, to tell a refund entry it made from an older one of the same amount.
///
/// `not_applied` only when LINE Pay's records prove the call absent; an answer that
/// cannot prove it (not the expected shape, an entry that cannot be read, a refund that
/// may be an earlier one) is `unknown`.
pub fn judge(
    route: MoneyRoute,
    facts: &CallFacts,
    answer: &[u8],
    started_unix: i64,
    earlier: EarlierRefunds,
) -> Verdict {
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
        return judge_offline(route.operation, info, earlier);
    }
    let Some(entries) = info.as_array() else {
        return Verdict::unknown("payment details have no list of payments");
    };
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
        Operation::Refund => judge_refund(entry, facts, started_unix, earlier),
    }
}

/// A refund is this call's when `refundList` has more entries of its amount (a full
/// refund: more `PAYMENT_REFUND` entries) dated since the call (less the clock skew)
/// than the journal's earlier refunds can account for; absent when there is none.
fn judge_refund(
    entry: &Value,
    facts: &CallFacts,
    started_unix: i64,
    earlier: EarlierRefunds,
) -> Verdict {
    let wanted = match facts.refund_amount.as_deref() {
        None => None,
        Some(text) => match parse_amount(text) {
            Some(amount) => Some(amount),
            None => return Verdict::unknown("the call's refundAmount is not a number"),
        },
    };
    let refunds: &[Value] = match entry.get("refundList") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(list)) => list,
        Some(_) => return Verdict::unknown("refundList is not a list"),
    };
    let since = started_unix - REFUND_SKEW_SECS;
    let mut listed = 0;
    for refund in refunds {
        let same = match wanted {
            Some(wanted) => match refund.get("refundAmount").and_then(json_amount) {
                Some(amount) => amount.abs() == wanted,
                None => return Verdict::unknown("a refundList entry has no readable refundAmount"),
            },
            None => match refund.get("transactionType").and_then(Value::as_str) {
                Some(kind) => kind == "PAYMENT_REFUND",
                None => return Verdict::unknown("a refundList entry has no transactionType"),
            },
        };
        if !same {
            continue;
        }
        match refund_date(refund) {
            Some(date) if date < since => {}
            Some(_) => listed += 1,
            None => {
                return Verdict::unknown(
                    "a refundList entry of this amount has no readable refundTransactionDate",
                )
            }
        }
    }
    if listed == 0 {
        verdict(
            ReconciledState::NotApplied,
            "refundList has no refund of this amount made since the call",
        )
    } else if listed > earlier.any() {
        verdict(
            ReconciledState::Applied,
            format!(
                "refundList has {listed} refund(s) of this amount since the call; the journal \
                 knows of {} earlier one(s)",
                earlier.any()
            ),
        )
    } else {
        Verdict::unknown(format!(
            "refundList's {listed} refund(s) of this amount since the call may all be the {} \
             earlier one(s) the journal knows of",
            earlier.any()
        ))
    }
}

/// An amount as the app or LINE Pay wrote it: a JSON number or a numeric string.
fn json_amount(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => parse_amount(text),
        _ => None,
    }
}

fn parse_amount(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|a| a.is_finite())
}

/// A refund entry's `refundTransactionDate`, in seconds since the epoch.
fn refund_date(refund: &Value) -> Option<i64> {
    let date = refund.get("refundTransactionDate")?.as_str()?;
    let date = humantime::parse_rfc3339_weak(date).ok()?;
    let secs = date.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

fn judge_offline(operation: Operation, info: &Value, earlier: EarlierRefunds) -> Verdict {
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
    if applied.contains(&status) && operation == Operation::Refund && earlier.any() > 0 {
        // One status per order: an earlier refund of the order reads the same.
        Verdict::unknown(format!(
            "order status {status}, which an earlier refund of the order may explain"
        ))
    } else if applied.contains(&status) {
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

    const NONE: EarlierRefunds = EarlierRefunds {
        applied: 0,
        uncertain: 0,
    };

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
            // A version needs digits, and the second segment is `payments`.
            ("/x3/payments/{transactionId}/refund", None),
            ("/v/payments/{transactionId}/refund", None),
            ("/va/payments/{transactionId}/refund", None),
            ("/v3/orders/{transactionId}/refund", None),
            // `payment` only after preapprovedPay, `pay` only after oneTimeKeys.
            ("/v3/payments/{transactionId}/payment", None),
            ("/v4/payments/orders/{orderId}/pay", None),
            ("/v3/payments/authorizations/{transactionId}/other", None),
            // Short paths: the segments counted from the end are the first ones.
            ("/v3/payments", None),
            ("/v3/payments/pay", None),
            ("/v3/payments/oneTimeKeys", None),
            ("/v3/payments/confirm", Some((Confirm, false))),
            ("/v3/payments/oneTimeKeys/refund", Some((Refund, true))),
            ("/v3/payments/orders", None),
            ("/v3/payments/preapprovedPay/payment", None),
            ("/v3/payments/preapprovedPay/x/y/payment", None),
            ("/v3/payments/x/oneTimeKeys/pay", Some((OneTimeKeyPay, false))),
            ("/v3/payments/x/orders/refund", Some((Refund, false))),
            ("v3/payments/{transactionId}/refund", Some((Refund, false))),
            ("//v3/payments/{transactionId}/refund", Some((Refund, false))),
            ("/v3/payments/{transactionId}/refund/", None),
            ("/v3", None),
            ("", None),
            ("/v3/payments//preapprovedPay/payment", None),
            ("/payments/v3/preapprovedPay/{regKey}/payment", None),
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
            judge(confirm, &facts, listed, 0, NONE).state,
            ReconciledState::Applied
        );
        let missing = br#"{"returnCode":"1150","returnMessage":"not found"}"#;
        assert_eq!(
            judge(confirm, &facts, missing, 0, NONE).state,
            ReconciledState::NotApplied
        );
        let busy = br#"{"returnCode":"9000"}"#;
        assert_eq!(
            judge(confirm, &facts, busy, 0, NONE).state,
            ReconciledState::Unknown
        );
        assert_eq!(
            judge(confirm, &facts, b"<html>", 0, NONE).state,
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
                judge(call, &facts, details(status).as_bytes(), 0, NONE).state,
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
                judge(
                    refund,
                    &facts,
                    details(amount, date).as_bytes(),
                    started,
                    NONE
                )
                .state,
                state,
                "{amount} {date}"
            );
        }
        let no_refunds = br#"{"returnCode":"0000","info":[{"transactionId":1}]}"#;
        assert_eq!(
            judge(refund, &facts, no_refunds, started, NONE).state,
            NotApplied
        );
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
            judge(pay, &facts, check("COMPLETE").as_bytes(), 0, NONE).state,
            Applied
        );
        assert_eq!(
            judge(pay, &facts, check("FAIL").as_bytes(), 0, NONE).state,
            NotApplied
        );
        assert_eq!(
            judge(refund, &facts, check("REFUND").as_bytes(), 0, NONE).state,
            Applied
        );
        assert_eq!(
            judge(refund, &facts, check("COMPLETE").as_bytes(), 0, NONE).state,
            NotApplied
        );
    }

    #[test]
    fn names_are_stable_and_parse_back() {
        use Operation::*;
        let names: Vec<String> = [
            Confirm,
            Capture,
            Void,
            Refund,
            PreapprovedPay,
            OneTimeKeyPay,
        ]
        .into_iter()
        .map(|operation| {
            assert_eq!(Operation::parse(operation.as_str()), Some(operation));
            operation.to_string()
        })
        .collect();
        assert_eq!(
            names,
            [
                "confirm",
                "capture",
                "void",
                "refund",
                "preapproved_pay",
                "one_time_key_pay"
            ]
        );
        assert_eq!(Operation::parse("xyzzy"), None);
        let states: Vec<&str> = ReconciledState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(states, ["applied", "not_applied", "unknown"]);
    }

    #[test]
    fn facts_keep_whole_amounts_and_lock_on_the_transaction_else_the_order() {
        let facts = CallFacts::read(
            None,
            None,
            br#"{"amount":"100","refundAmount":30.5,"currency":"THB","orderId":"o-2"}"#,
        );
        assert_eq!(facts.amount.as_deref(), Some("100"));
        assert_eq!(facts.refund_amount.as_deref(), Some("30.5"));
        assert_eq!(facts.currency.as_deref(), Some("THB"));
        assert_eq!(facts.lock_key().as_deref(), Some("order o-2"));
        let empty = CallFacts::read(None, None, br#"{"amount":"","refundAmount":true}"#);
        assert_eq!(empty.amount, None);
        assert_eq!(empty.refund_amount, None);
        assert_eq!(empty.lock_key(), None);
        // Not JSON: the digits the raw reader finds.
        let raw = CallFacts::read(None, None, br#"{"amount":70,"#);
        assert_eq!(raw.amount.as_deref(), Some("70"));
        assert_eq!(
            body_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn a_path_order_id_is_decoded_once_and_asked_about_encoded_once() {
        let refund = route("/v4/payments/orders/{orderId}/refund");
        let template = "/v4/payments/orders/{orderId}/refund";
        // Two spellings of one order: one record, one lock, one question.
        for spelling in ["order%281%29", "order(1)", "%6Frder(1%29"] {
            let facts = CallFacts::read(None, Some(spelling), b"{}");
            assert_eq!(facts.order_id.as_deref(), Some("order(1)"), "{spelling}");
            assert_eq!(facts.lock_key().as_deref(), Some("order order(1)"));
            assert_eq!(
                status_query(template, refund, &facts).as_deref(),
                Some("/v4/payments/orders/order%281%29/check"),
                "{spelling}"
            );
        }
        // A `%` that is the order's own character stays one: decoded once, never twice.
        let percent = CallFacts::read(None, Some("50%2541"), b"{}");
        assert_eq!(percent.order_id.as_deref(), Some("50%41"));
        assert_eq!(
            status_query(template, refund, &percent).as_deref(),
            Some("/v4/payments/orders/50%2541/check")
        );
        let accented = CallFacts::read(None, Some("caf%C3%A9%20no.1"), b"{}");
        assert_eq!(accented.order_id.as_deref(), Some("caf\u{e9} no.1"));
        assert_eq!(
            status_query(template, refund, &accented).as_deref(),
            Some("/v4/payments/orders/caf%C3%A9%20no.1/check")
        );
        // The path's orderId wins over the body's, decoded or not.
        let both = CallFacts::read(None, Some("a%2Db"), br#"{"orderId":"other"}"#);
        assert_eq!(both.order_id.as_deref(), Some("a-b"));
        // Not UTF-8 once decoded (the allowlist refuses it first): no order, no guess at
        // one, so nothing is locked on or asked about in its name.
        assert_eq!(order_id_from_path("%FF%FE"), None);
        let broken = CallFacts::read(None, Some("order%FF"), br#"{"orderId":"other"}"#);
        assert_eq!(broken.order_id, None);
        assert_eq!(broken.lock_key(), None);
        assert_eq!(status_query(template, refund, &broken), None);
        // A transaction in the path is recorded as sent (digits only, never encoded).
        let by_transaction = CallFacts::read(Some("123"), None, b"{}");
        assert_eq!(by_transaction.transaction_id.as_deref(), Some("123"));
    }

    #[test]
    fn status_questions_need_something_to_ask_about() {
        let online = route("/v3/payments/preapprovedPay/{regKey}/payment");
        let by_order = CallFacts::read(None, Some("a-b.c_d~e"), b"{}");
        assert_eq!(
            status_query(
                "/v3/payments/preapprovedPay/{regKey}/payment",
                online,
                &by_order
            )
            .as_deref(),
            Some("/v3/payments?orderId=a-b.c_d~e")
        );
        let nothing = CallFacts::read(None, None, b"{}");
        assert_eq!(status_query("/v3/x", online, &nothing), None);
        let offline = route("/v4/payments/orders/{orderId}/refund");
        assert_eq!(status_query("/v4/x", offline, &nothing), None);
    }

    #[test]
    fn the_transaction_is_found_by_id_as_number_or_text_else_by_order() {
        let confirm = route("/v3/payments/{transactionId}/confirm");
        let facts = CallFacts::read(Some("77"), None, b"{}");
        use ReconciledState::*;
        for (info, state) in [
            (r#"[{"transactionId":"77"}]"#, Applied),
            (r#"[{"transactionId":76},{"transactionId":77}]"#, Applied),
            (r#"[{"transactionId":76}]"#, NotApplied),
            (r#"[{"transactionId":true}]"#, NotApplied),
            (r#"[]"#, NotApplied),
        ] {
            let answer = format!(r#"{{"returnCode":"0000","info":{info}}}"#);
            assert_eq!(
                judge(confirm, &facts, answer.as_bytes(), 0, NONE).state,
                state,
                "{info}"
            );
        }
        let pay = route("/v3/payments/preapprovedPay/{regKey}/payment");
        let facts = CallFacts::read(None, Some("o-9"), b"{}");
        let listed = br#"{"returnCode":"0000","info":[{"orderId":"o-9","transactionId":1}]}"#;
        assert_eq!(judge(pay, &facts, listed, 0, NONE).state, Applied);
        let other = br#"{"returnCode":"0000","info":[{"orderId":"o-8","transactionId":1}]}"#;
        assert_eq!(judge(pay, &facts, other, 0, NONE).state, NotApplied);
    }

    #[test]
    fn every_pay_status_is_judged_for_capture_and_void() {
        let facts = CallFacts::read(Some("1"), None, b"{}");
        let capture = route("/v3/payments/authorizations/{transactionId}/capture");
        let void = route("/v3/payments/authorizations/{transactionId}/void");
        use ReconciledState::*;
        for (call, status, state) in [
            (capture, Some("CAPTURE"), Applied),
            (capture, Some("AUTHORIZATION"), NotApplied),
            (capture, Some("VOIDED_AUTHORIZATION"), NotApplied),
            (capture, Some("EXPIRED_AUTHORIZATION"), NotApplied),
            (capture, Some("SOMETHING_NEW"), Unknown),
            (capture, None, Unknown),
            (void, Some("VOIDED_AUTHORIZATION"), Applied),
            (void, Some("AUTHORIZATION"), NotApplied),
            (void, Some("CAPTURE"), NotApplied),
            (void, Some("EXPIRED_AUTHORIZATION"), Unknown),
            (void, None, Unknown),
        ] {
            let mut entry = serde_json::json!({"transactionId": 1});
            if let Some(status) = status {
                entry["payStatus"] = status.into();
            }
            let answer = serde_json::json!({"returnCode": "0000", "info": [entry]}).to_string();
            let verdict = judge(call, &facts, answer.as_bytes(), 0, NONE);
            assert_eq!(verdict.state, state, "{:?} {status:?}", call.operation);
            assert_eq!(
                verdict.reason,
                format!("payStatus {}", status.unwrap_or("absent"))
            );
        }
    }

    /// A refund entry for [`refund_judged`]: amount, type, date.
    fn refund_entry(amount: Value, kind: &str, date: Option<&str>) -> Value {
        let mut entry = serde_json::json!({"refundAmount": amount, "transactionType": kind});
        if let Some(date) = date {
            entry["refundTransactionDate"] = date.into();
        }
        entry
    }

    /// How a refund of `amount` (`None`: a full refund) sent at 2026-12-31T00:00:00Z is
    /// judged against this `refundList`.
    fn refund_judged(amount: Option<&str>, list: Value, earlier: EarlierRefunds) -> Verdict {
        let refund = route("/v3/payments/{transactionId}/refund");
        let facts = CallFacts {
            refund_amount: amount.map(str::to_owned),
            ..CallFacts::read(Some("1"), None, b"{}")
        };
        let answer = serde_json::json!({
            "returnCode": "0000",
            "info": [{"transactionId": 1, "refundList": list}],
        })
        .to_string();
        judge(refund, &facts, answer.as_bytes(), 1_798_675_200, earlier)
    }

    #[test]
    fn a_refund_counts_the_entries_of_its_amount_against_the_earlier_refunds() {
        use serde_json::json;
        use ReconciledState::*;
        let at = |date: &str| refund_entry(json!(-30), "PARTIAL_REFUND", Some(date));
        let after = "2026-12-31T00:00:02Z";
        // Exactly the skew before the start still counts; a second earlier does not.
        let edge = "2026-12-30T23:55:00Z";
        let before_edge = "2026-12-30T23:54:59Z";
        let one = |applied, uncertain| EarlierRefunds { applied, uncertain };
        for (list, earlier, state) in [
            (json!([at(after)]), NONE, Applied),
            (json!([at(edge)]), NONE, Applied),
            (json!([at(before_edge)]), NONE, NotApplied),
            (json!([at("2026-12-30T23:59:00Z")]), NONE, Applied),
            // An earlier refund of the same amount the journal knows can explain one
            // entry, applied or not known: then this one is not proven either way.
            (json!([at(after)]), one(1, 0), Unknown),
            (json!([at(after)]), one(0, 1), Unknown),
            (json!([at(edge), at(after)]), one(1, 0), Applied),
            (json!([at(edge), at(after)]), one(0, 1), Applied),
            (json!([at(edge), at(after)]), one(1, 1), Unknown),
            (json!([at(edge), at(after), at(after)]), one(1, 1), Applied),
            (json!([at(before_edge), at(after)]), one(1, 0), Unknown),
            (json!([]), one(1, 0), NotApplied),
            (json!(null), NONE, NotApplied),
        ] {
            assert_eq!(
                refund_judged(Some("30"), list.clone(), earlier).state,
                state,
                "{list} {earlier:?}"
            );
        }
    }

    #[test]
    fn a_refund_amount_is_read_as_a_number_in_any_form() {
        use serde_json::json;
        use ReconciledState::*;
        let date = Some("2026-12-31T00:00:02Z");
        for (wanted, listed, state) in [
            ("30", json!(-30), Applied),
            ("30", json!(30), Applied),
            ("30", json!(-30.0), Applied),
            ("30", json!("-30"), Applied),
            (" 30 ", json!(-30), Applied),
            ("30.5", json!(-30.5), Applied),
            ("30.5", json!(-30), NotApplied),
            ("30", json!(-31), NotApplied),
        ] {
            let list = json!([refund_entry(listed.clone(), "PARTIAL_REFUND", date)]);
            assert_eq!(
                refund_judged(Some(wanted), list, NONE).state,
                state,
                "{wanted} {listed}"
            );
        }
        // A full refund is the PAYMENT_REFUND entry, whatever its amount.
        let full = json!([refund_entry(json!(-100), "PAYMENT_REFUND", date)]);
        assert_eq!(refund_judged(None, full, NONE).state, Applied);
        let partial = json!([refund_entry(json!(-100), "PARTIAL_REFUND", date)]);
        assert_eq!(refund_judged(None, partial, NONE).state, NotApplied);
    }

    #[test]
    fn an_unproven_absence_is_unknown_for_every_operation() {
        use serde_json::json;
        let date = Some("2026-12-31T00:00:02Z");
        let unknown = |verdict: Verdict, what: &str| {
            assert_eq!(
                verdict.state,
                ReconciledState::Unknown,
                "{what}: {verdict:?}"
            );
        };
        // Refund: an entry that cannot be read may be this call's.
        for (wanted, list) in [
            (
                Some("30"),
                json!([refund_entry(json!(true), "PARTIAL_REFUND", date)]),
            ),
            (Some("30"), json!([{"transactionType": "PARTIAL_REFUND"}])),
            (
                Some("30"),
                json!([refund_entry(json!(-30), "PARTIAL_REFUND", None)]),
            ),
            (
                Some("30"),
                json!([refund_entry(
                    json!(-30),
                    "PARTIAL_REFUND",
                    Some("yesterday")
                )]),
            ),
            (Some("30"), json!({"refundAmount": -30})),
            (None, json!([{"refundAmount": -100}])),
            (Some("thirty"), json!([])),
            (Some("NaN"), json!([])),
            (Some("inf"), json!([])),
        ] {
            unknown(
                refund_judged(wanted, list.clone(), NONE),
                &format!("{wanted:?} {list}"),
            );
        }
        // Another amount's undated entry proves nothing about this one: still absent.
        let other = json!([refund_entry(json!(-20), "PARTIAL_REFUND", None)]);
        assert_eq!(
            refund_judged(Some("30"), other, NONE).state,
            ReconciledState::NotApplied
        );
        // Every online operation: an answer that is no list of payments, another
        // returnCode, no returnCode, not JSON.
        let facts = CallFacts::read(Some("1"), Some("o-1"), br#"{"refundAmount":30}"#);
        for template in [
            "/v3/payments/{transactionId}/confirm",
            "/v3/payments/preapprovedPay/{regKey}/payment",
            "/v3/payments/authorizations/{transactionId}/capture",
            "/v3/payments/authorizations/{transactionId}/void",
            "/v3/payments/{transactionId}/refund",
            "/v4/payments/oneTimeKeys/pay",
            "/v4/payments/orders/{orderId}/capture",
            "/v4/payments/orders/{orderId}/void",
            "/v4/payments/orders/{orderId}/refund",
        ] {
            let call = route(template);
            for answer in [
                r#"{"returnCode":"0000"}"#,
                r#"{"returnCode":"0000","info":{"transactionId":1}}"#,
                r#"{"returnCode":"0000","info":"none"}"#,
                r#"{"returnCode":"9000"}"#,
                r#"{"returnCode":"1198"}"#,
                r#"{"info":[]}"#,
                "<html>",
            ] {
                unknown(
                    judge(call, &facts, answer.as_bytes(), 0, NONE),
                    &format!("{template} {answer}"),
                );
            }
            // 1150: LINE Pay has no record of the transaction or order at all.
            let missing = br#"{"returnCode":"1150"}"#;
            assert_eq!(
                judge(call, &facts, missing, 0, NONE).state,
                ReconciledState::NotApplied,
                "{template}"
            );
        }
        // Offline: a status the table does not name, or none.
        let check = |status: &str| {
            format!(r#"{{"returnCode":"0000","info":{{"orderId":"o-1","status":"{status}"}}}}"#)
        };
        for template in [
            "/v4/payments/oneTimeKeys/pay",
            "/v4/payments/orders/{orderId}/capture",
            "/v4/payments/orders/{orderId}/void",
            "/v4/payments/orders/{orderId}/refund",
        ] {
            let verdict = judge(route(template), &facts, check("").as_bytes(), 0, NONE);
            assert_eq!(verdict.reason, "order status absent");
            unknown(verdict, template);
            let verdict = judge(route(template), &facts, check("NEW").as_bytes(), 0, NONE);
            assert_eq!(verdict.reason, "order status NEW");
            unknown(verdict, template);
        }
    }

    #[test]
    fn every_offline_status_is_judged() {
        let facts = CallFacts::read(None, Some("pos-1"), b"{}");
        let check = |status: &str| {
            format!(r#"{{"returnCode":"0000","info":{{"orderId":"pos-1","status":"{status}"}}}}"#)
        };
        let pay = route("/v4/payments/oneTimeKeys/pay");
        let capture = route("/v4/payments/orders/{orderId}/capture");
        let void = route("/v4/payments/orders/{orderId}/void");
        let refund = route("/v4/payments/orders/{orderId}/refund");
        // Confirm and preapproved pay have no offline form: nothing proves anything.
        let confirm = MoneyRoute {
            operation: Operation::Confirm,
            offline: true,
        };
        let preapproved = MoneyRoute {
            operation: Operation::PreapprovedPay,
            offline: true,
        };
        let earlier = EarlierRefunds {
            applied: 1,
            uncertain: 0,
        };
        use ReconciledState::*;
        #[rustfmt::skip]
        let table = [
            (pay, "COMPLETE", NONE, Applied),
            (pay, "AUTHORIZATION", NONE, Applied),
            (pay, "FAIL", NONE, NotApplied),
            (pay, "REFUND", NONE, Unknown),
            // An earlier refund matters to a refund only.
            (pay, "COMPLETE", earlier, Applied),
            (capture, "COMPLETE", NONE, Applied),
            (capture, "AUTHORIZATION", NONE, NotApplied),
            (capture, "FAIL", NONE, Unknown),
            (void, "VOIDED_AUTHORIZATION", NONE, Applied),
            (void, "VOID", NONE, Applied),
            (void, "CANCEL", NONE, Applied),
            (void, "AUTHORIZATION", NONE, NotApplied),
            (void, "COMPLETE", NONE, Unknown),
            (refund, "REFUND", NONE, Applied),
            (refund, "PARTIAL_REFUND", NONE, Applied),
            (refund, "COMPLETE", NONE, NotApplied),
            (refund, "AUTHORIZATION", NONE, Unknown),
            // One status per order: an earlier refund (applied or not known) reads the same.
            (refund, "PARTIAL_REFUND", earlier, Unknown),
            (refund, "REFUND", EarlierRefunds { applied: 0, uncertain: 1 }, Unknown),
            (refund, "COMPLETE", earlier, NotApplied),
            (confirm, "COMPLETE", NONE, Unknown),
            (confirm, "AUTHORIZATION", NONE, Unknown),
            (preapproved, "COMPLETE", NONE, Unknown),
            (preapproved, "FAIL", NONE, Unknown),
        ];
        for (call, status, earlier, state) in table {
            let verdict = judge(call, &facts, check(status).as_bytes(), 0, earlier);
            assert_eq!(
                verdict.state, state,
                "{:?} {status} {earlier:?}",
                call.operation
            );
            assert!(verdict.reason.contains(status), "{verdict:?}");
        }
    }

    #[test]
    fn processing_limits_are_line_pays_documented_read_timeouts() {
        let limit = |method: &str, template: &str| {
            let method = method.parse::<http::Method>().unwrap();
            classify(&method, template)
                .unwrap()
                .processing_limit()
                .as_secs()
        };
        assert_eq!(limit("POST", "/v3/payments/{transactionId}/confirm"), 40);
        assert_eq!(limit("POST", "/v4/payments/{transactionId}/confirm"), 40);
        assert_eq!(
            limit(
                "POST",
                "/v3/payments/authorizations/{transactionId}/capture"
            ),
            60
        );
        assert_eq!(
            limit("POST", "/v3/payments/authorizations/{transactionId}/void"),
            20
        );
        assert_eq!(limit("POST", "/v3/payments/{transactionId}/refund"), 20);
        assert_eq!(
            limit("POST", "/v3/payments/preapprovedPay/{regKey}/payment"),
            40
        );
        assert_eq!(limit("POST", "/v4/payments/oneTimeKeys/pay"), 40);
        assert_eq!(limit("POST", "/v2/payments/oneTimeKeys/pay"), 40);
        assert_eq!(limit("POST", "/v4/payments/orders/{orderId}/capture"), 20);
        assert_eq!(limit("POST", "/v4/payments/orders/{orderId}/void"), 20);
        assert_eq!(limit("POST", "/v4/payments/orders/{orderId}/refund"), 20);
    }
}
