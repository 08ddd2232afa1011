//! LINE Pay's answer vocabulary: the return codes the emulator produces and the JSON
//! envelope around them.
//!
//! LINE Pay answers HTTP 200 for business errors too (the outcome is the body's
//! `returnCode`), so every endpoint produces an [`Outcome`] and only this module decides
//! the HTTP status: 200 for any outcome, 404 for a path outside the API, 413/400 for a
//! body the server could not read.

use crate::route::Version;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde_json::{json, Map, Value};
use std::borrow::Cow;

/// The return codes the emulator can answer with. Names follow LINE Pay's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReturnCode {
    /// 0000; also "waiting for the user" on the status check.
    Success,
    /// 0110: status check, the user authorised the payment, confirm not called yet.
    UserAuthorized,
    /// 0121: status check, the payment was cancelled (voided) or expired.
    Cancelled,
    /// 0122: status check, the payment failed.
    Failed,
    /// 0123: status check, the payment was confirmed.
    Paid,
    HeaderError,
    AmountInfoError,
    TransactionNotFound,
    AmountMismatch,
    UserMustAuthenticate,
    RefundAmountExceeded,
    AlreadyRefunded,
    DuplicateOrder,
    TooManyTransactions,
    UnsupportedCurrency,
    StatusNotAllowed,
    DeadlinePassed,
    AmountBelowMinimum,
    AmountAboveMaximum,
    RegKeyNotFound,
    RegKeyExpired,
    ParameterError,
    JsonFormatError,
    /// Any other four-digit code: what a fault rehearsal or a failure test key asks
    /// for (`9000`, `1198`, `1901`, `1280`...).
    Other(u16),
}

impl ReturnCode {
    pub(crate) fn code(self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            ReturnCode::Success => "0000",
            ReturnCode::UserAuthorized => "0110",
            ReturnCode::Cancelled => "0121",
            ReturnCode::Failed => "0122",
            ReturnCode::Paid => "0123",
            ReturnCode::HeaderError => "1106",
            ReturnCode::AmountInfoError => "1124",
            ReturnCode::TransactionNotFound => "1150",
            ReturnCode::AmountMismatch => "1153",
            ReturnCode::UserMustAuthenticate => "1169",
            ReturnCode::RefundAmountExceeded => "1164",
            ReturnCode::AlreadyRefunded => "1165",
            ReturnCode::DuplicateOrder => "1172",
            ReturnCode::TooManyTransactions => "1177",
            ReturnCode::UnsupportedCurrency => "1178",
            ReturnCode::StatusNotAllowed => "1179",
            ReturnCode::DeadlinePassed => "1180",
            ReturnCode::AmountBelowMinimum => "1183",
            ReturnCode::AmountAboveMaximum => "1184",
            ReturnCode::RegKeyNotFound => "1190",
            ReturnCode::RegKeyExpired => "1193",
            ReturnCode::ParameterError => "2101",
            ReturnCode::JsonFormatError => "2102",
            ReturnCode::Other(code) => return Cow::Owned(format!("{code:04}")),
        })
    }

    /// A code given as four digits, for rehearsals: the named codes above by their
    /// name, the rest as [`ReturnCode::Other`]. `None` for anything but four ASCII
    /// digits, and for the success and status-check codes (`0xxx`), which are not
    /// failures to rehearse.
    pub(crate) fn parse_failure(text: &str) -> Option<ReturnCode> {
        if text.len() != 4 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let number: u16 = text.parse().ok()?;
        if number < 1000 {
            return None;
        }
        let named = [
            ReturnCode::HeaderError,
            ReturnCode::AmountInfoError,
            ReturnCode::TransactionNotFound,
            ReturnCode::AmountMismatch,
            ReturnCode::UserMustAuthenticate,
            ReturnCode::RefundAmountExceeded,
            ReturnCode::AlreadyRefunded,
            ReturnCode::DuplicateOrder,
            ReturnCode::TooManyTransactions,
            ReturnCode::UnsupportedCurrency,
            ReturnCode::StatusNotAllowed,
            ReturnCode::DeadlinePassed,
            ReturnCode::AmountBelowMinimum,
            ReturnCode::AmountAboveMaximum,
            ReturnCode::RegKeyNotFound,
            ReturnCode::RegKeyExpired,
            ReturnCode::ParameterError,
            ReturnCode::JsonFormatError,
        ];
        Some(
            named
                .into_iter()
                .find(|code| code.code() == text)
                .unwrap_or(ReturnCode::Other(number)),
        )
    }

    /// The fixed part of `returnMessage`; a [`Refusal`] adds what exactly was wrong.
    fn message(self, version: Version) -> &'static str {
        match self {
            // The v2 samples answer "success" in lower case; v3 answers "Success.".
            ReturnCode::Success => match version {
                Version::V2 => "success",
                Version::V3 | Version::V4 => "Success.",
            },
            ReturnCode::UserAuthorized => "Authorization completed; waiting for confirm.",
            ReturnCode::Cancelled => "The payment was cancelled or has expired.",
            ReturnCode::Failed => "The payment failed.",
            ReturnCode::Paid => "Payment completed.",
            ReturnCode::HeaderError => "Header information error.",
            ReturnCode::AmountInfoError => "Amount information error.",
            ReturnCode::TransactionNotFound => "Transaction record not found.",
            ReturnCode::AmountMismatch => "The payment amount differs from the requested amount.",
            ReturnCode::UserMustAuthenticate => {
                "The user must choose a payment method and authenticate in LINE Pay."
            }
            ReturnCode::RefundAmountExceeded => "Exceeded refundable amount.",
            ReturnCode::AlreadyRefunded => "The transaction has already been refunded.",
            ReturnCode::DuplicateOrder => "Existing same orderId.",
            ReturnCode::TooManyTransactions => "Exceeded maximum number of transactions (100).",
            ReturnCode::UnsupportedCurrency => "Currency not supported.",
            ReturnCode::StatusNotAllowed => "The transaction status does not allow this operation.",
            ReturnCode::DeadlinePassed => "The payment deadline has passed.",
            ReturnCode::AmountBelowMinimum => "The amount must be above the minimum.",
            ReturnCode::AmountAboveMaximum => "The amount must be below the maximum.",
            ReturnCode::RegKeyNotFound => "regKey does not exist.",
            ReturnCode::RegKeyExpired => "regKey has expired.",
            ReturnCode::ParameterError => "Parameter error.",
            ReturnCode::JsonFormatError => "JSON format error.",
            ReturnCode::Other(code) => other_message(code),
        }
    }
}

/// LINE Pay's meaning of the codes a rehearsal may ask for, from its code list.
fn other_message(code: u16) -> &'static str {
    match code {
        1101 => "The buyer is not a LINE Pay user.",
        1102 => "The buyer cannot transact with LINE Pay now.",
        1104 => "Merchant not found.",
        1105 => "The merchant cannot use LINE Pay now.",
        1110 => "The credit card cannot be used.",
        1141 => "Account status problem.",
        1142 => "Insufficient balance.",
        1145 => "Payment in progress.",
        1152 => "The transaction already exists.",
        1154 => "The preapproved payment method cannot be used.",
        1155 => "Invalid transaction id.",
        1159 => "No payment request information.",
        1163 => "The refund period is over.",
        1170 => "The member's balance changed.",
        1194 => "The merchant cannot use preapproved payment.",
        1197 => "A preapproved payment with this regKey is in progress.",
        1198 => "The same API call is being processed.",
        1199 => "Internal request error.",
        1280..=1298 => "Credit card payment error.",
        1900..=1999 => "Temporary error. Please try again later.",
        2042 => "Refund failed: the merchant's refund reserve is insufficient.",
        9000 => "Internal error.",
        _ => "Rehearsed failure.",
    }
}

/// A business refusal: the code plus one sentence that tells the caller what to fix.
/// The detail never carries secrets or expected signatures; it names fields and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ReturnCode,
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(code: ReturnCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            detail: detail.into(),
        }
    }

    pub(crate) fn parameter(detail: impl Into<String>) -> Self {
        Refusal::new(ReturnCode::ParameterError, detail)
    }

    pub(crate) fn json(detail: impl Into<String>) -> Self {
        Refusal::new(ReturnCode::JsonFormatError, detail)
    }
}

/// What an endpoint answers when it does not refuse: a code (0000 except on the status
/// check) and the optional `info` member.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub code: ReturnCode,
    pub info: Option<Value>,
}

impl Answer {
    pub(crate) fn success(info: Value) -> Self {
        Answer {
            code: ReturnCode::Success,
            info: Some(info),
        }
    }

    /// 0000 without `info`, as void and regKey expire answer.
    pub(crate) fn done() -> Self {
        Answer::status(ReturnCode::Success)
    }

    pub(crate) fn status(code: ReturnCode) -> Self {
        Answer { code, info: None }
    }
}

pub(crate) type Outcome = Result<Answer, Refusal>;

/// The HTTP response for a LINE Pay answer: always 200, the outcome is in the body.
pub(crate) fn business(version: Version, outcome: &Outcome) -> Response<Bytes> {
    let mut body = Map::new();
    match outcome {
        Ok(answer) => {
            body.insert("returnCode".into(), answer.code.code().into());
            body.insert("returnMessage".into(), answer.code.message(version).into());
            if let Some(info) = &answer.info {
                body.insert("info".into(), info.clone());
            }
        }
        Err(refusal) => {
            let message = format!("{} {}", refusal.code.message(version), refusal.detail);
            body.insert("returnCode".into(), refusal.code.code().into());
            body.insert("returnMessage".into(), message.trim_end().into());
        }
    }
    json_response(StatusCode::OK, &Value::Object(body))
}

/// A call from a source address outside the merchant's server IP whitelist.
///
/// What LINE Pay answers here is not in its public documentation. This is what a
/// merchant's integration log recorded from LINE Pay (github.com/ringo636/Tib, issue
/// 551): HTTP 200, `returnCode` 1106 with `Header information error. Ip address
/// [18.222.188.71] is not allowed to access this API`. The wording is copied from that
/// one observation; an app should key on 1106 plus the address, not on the sentence.
pub(crate) fn source_not_allowed(address: std::net::IpAddr) -> Response<Bytes> {
    let refusal = Refusal::new(
        ReturnCode::HeaderError,
        format!("Ip address [{address}] is not allowed to access this API"),
    );
    business(Version::V3, &Err(refusal))
}

/// 404 for a method and path that are not part of the LINE Pay API.
pub(crate) fn not_found(method: &http::Method, path: &str) -> Response<Bytes> {
    let body = json!({
        "error": "not_found",
        "message": format!("the LINE Pay emulator has no API at {method} {path}"),
    });
    json_response(StatusCode::NOT_FOUND, &body)
}

/// An error status for a body the server could not read (too large, or the connection
/// failed mid-body); these never reach the business logic.
pub(crate) fn unreadable_body(status: StatusCode, message: &str) -> Response<Bytes> {
    let body = json!({ "error": "unreadable_body", "message": message });
    json_response(status, &body)
}

/// An HTTP error status that a fault rehearsal asked for. The body is a short HTML
/// page, as a gateway in front of an API sends, not LINE Pay's JSON: an app must not
/// assume every answer parses.
pub(crate) fn http_fault(status: StatusCode) -> Response<Bytes> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html><head><title>{} {reason}</title></head><body><h1>{reason}</h1></body></html>\n",
        status.as_u16()
    );
    let mut response = Response::new(Bytes::from(page));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// An answer of the emulator's own control API (`/__emulator/...`).
pub(crate) fn control(status: StatusCode, body: &Value) -> Response<Bytes> {
    json_response(status, body)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Bytes> {
    // Serialising a `Value` with string keys cannot fail; the fallback keeps this
    // function total without an unwrap.
    let bytes = serde_json::to_vec(body)
        .unwrap_or_else(|_| br#"{"returnCode":"9000","returnMessage":"Internal error."}"#.to_vec());
    let mut response = Response::new(Bytes::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(response: &Response<Bytes>) -> Value {
        serde_json::from_slice(response.body()).expect("reply bodies are JSON")
    }

    #[test]
    fn refusals_are_http_200_with_code_and_detail() {
        let refusal = Refusal::parameter("amount is missing.");
        let response = business(Version::V3, &Err(refusal));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/json"))
        );
        let body = body_of(&response);
        assert_eq!(body["returnCode"], "2101");
        assert_eq!(body["returnMessage"], "Parameter error. amount is missing.");
        assert!(body.get("info").is_none());
    }

    #[test]
    fn success_message_follows_the_api_version() {
        let v3 = body_of(&business(Version::V3, &Ok(Answer::done())));
        let v2 = body_of(&business(Version::V2, &Ok(Answer::done())));
        assert_eq!(v3["returnMessage"], "Success.");
        assert_eq!(v2["returnMessage"], "success");
        assert_eq!(v3["returnCode"], "0000");
    }

    #[test]
    fn a_source_off_the_whitelist_is_1106_naming_the_address() {
        let response = source_not_allowed("127.0.0.1".parse().expect("an address"));
        assert_eq!(response.status(), StatusCode::OK);
        let body = body_of(&response);
        assert_eq!(body["returnCode"], "1106");
        assert_eq!(
            body["returnMessage"],
            "Header information error. Ip address [127.0.0.1] is not allowed to access this API"
        );
    }

    #[test]
    fn unknown_paths_are_404_json() {
        let response = not_found(&http::Method::GET, "/v3/nothing");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(body_of(&response)["error"], "not_found");
    }
}
