//! The sidecar's own refusals and failures, and the one place where each becomes the
//! app's answer: HTTP status, stable `code`, JSON body, `retry_safe`, and the
//! `X-LinePay-Sidecar-Error`, `Allow` and `Retry-After` headers.
//!
//! The layers below return their own typed errors and know nothing of HTTP: admission
//! a [`LimitError`], the upstream client an [`UpstreamError`]. `From` turns each into a
//! [`ProxyError`], so the request path in `proxy.rs` just writes `?`.
//!
//! Every such answer carries `X-LinePay-Sidecar-Error: <code>` so an app can always tell
//! a sidecar refusal from a LINE Pay answer (LINE Pay's own answers pass through
//! untouched and never carry it). Messages say what to do next and never include
//! upstream error text, secrets, signatures or bodies.

use crate::limit::LimitError;
use crate::money::Verdict;
use crate::upstream::UpstreamError;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use std::time::Duration;

/// The header that marks an answer as the sidecar's own.
pub(crate) const SIDECAR_ERROR_HEADER: &str = "x-linepay-sidecar-error";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("{method} {path} is not on the allowlist")]
    PathNotAllowed { method: String, path: String },
    #[error("{path} is on the allowlist only for {allowed}")]
    MethodNotAllowed { path: String, allowed: String },
    /// A call of a built-in API family that `routes.apis` does not enable. The message
    /// names the template (never the concrete path) and the config line that enables it.
    #[error("{route} belongs to LINE Pay's {family} API, which this sidecar does not allow; enable it with the config line `{line}`")]
    ApiFamilyDisabled {
        route: String,
        family: &'static str,
        line: String,
    },
    /// A path parameter breaks its rule; the value is never echoed (it may be huge, or
    /// a regKey).
    #[error("path parameter `{name}` {rule}; the call was not sent")]
    InvalidPathParameter { name: String, rule: &'static str },
    #[error("CONNECT is not supported: the sidecar forwards LINE Pay API calls to its configured upstream only")]
    ConnectRefused,
    #[error("{0}; send the plain LINE Pay path, e.g. /v3/payments/request")]
    AmbiguousPath(&'static str),
    #[error("the request target must be a path such as /v3/payments/request, not an absolute URL or authority")]
    InvalidTarget,
    #[error("the request body is larger than the {limit}-byte limit (request.max_body_bytes)")]
    BodyTooLarge { limit: usize },
    #[error("the request body was not received within {0:?}")]
    BodyTimeout(Duration),
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("a {0} call carries no body; send the parameters in the query string")]
    UnexpectedBody(String),
    /// Pre-validation in `enforce` mode found the body would be refused by LINE Pay.
    #[error("{0}; the call was not sent (prevalidation mode is enforce)")]
    InvalidRequest(String),
    #[error("a POST call is signed over its body only, so a query string would reach LINE Pay unsigned; move the parameters into the JSON body")]
    UnexpectedQuery,
    #[error("the {} rate limit is exhausted; the call was not sent: retry after {} s", .0.limit, .0.retry_after_secs())]
    RateLimited(LimitError),
    #[error("the request line and headers are larger than the {limit}-byte limit")]
    HeadersTooLarge { limit: usize },
    #[error("the sidecar is at its connection limit (request.max_connections); the call was not sent: retry shortly")]
    Overloaded,
    #[error("the sidecar already holds as many bytes of calls in flight as request.max_buffered_bytes ({limit}) allows; the call was not sent: retry shortly")]
    OverBudget { limit: usize },
    /// A call to LINE Pay failed; its message says whether it may have been processed.
    #[error(transparent)]
    Upstream(UpstreamError),
    #[error("the sidecar could not build the upstream request")]
    Internal,
    /// A money call that ended uncertain, with what LINE Pay's records said about it.
    #[error("{failure}. The sidecar asked LINE Pay: see `reconciled`.")]
    Unsettled {
        failure: UpstreamError,
        reconciled: Verdict,
    },
    #[error("a call for this transaction or order, or with this Idempotency-Key, is still in flight; it was not sent again: wait for the first one's answer, then retry")]
    CallInProgress,
    /// A call on this transaction or key ended without a certain answer and waits until
    /// LINE Pay can no longer be processing it before its records are checked.
    #[error("a call for this transaction or order, or with this Idempotency-Key, ended without a certain answer and LINE Pay may still be processing it; it was not sent again: retry after Retry-After seconds, when LINE Pay's records have been checked")]
    AwaitingCheck { retry_after_secs: u64 },
    #[error("this Idempotency-Key's call was cut short (e.g. the sidecar was stopped), and LINE Pay's records show it took effect; it was not sent again: treat it as done")]
    CallApplied,
    #[error("this Idempotency-Key's call was cut short (e.g. the sidecar was stopped), and LINE Pay's records could not show whether it took effect; it is never sent again automatically: read the payment details, then send a new call with a new key if it had no effect")]
    CallOutcomeUnknown,
    #[error("this Idempotency-Key was used for another call (another transaction, route or body); it was not sent: use a new key for a new call")]
    IdempotencyKeyReused,
    #[error("this Idempotency-Key's call was already sent, but its stored answer cannot be read (the channel secret changed since, it was stored by an older sidecar, or the journal row was altered); it was not sent again: read the payment details")]
    IdempotencyAnswerUnavailable,
    #[error("Idempotency-Key needs the call journal (journal.enabled); the call was not sent: turn the journal on or send the call without the header")]
    IdempotencyUnavailable,
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("the call journal cannot be written, so the money call was not sent (nothing would record it); the sidecar's log says why")]
    JournalUnavailable,
    /// The shared state (Redis) that guards money calls across pods did not answer in
    /// time: the call was not sent (`state.redis.money_fallback` decides).
    #[error("the shared state that guards money calls across sidecars (Redis) cannot answer, so the call was not sent; retry shortly, or see the sidecar's log")]
    StateUnavailable,
    /// The shared port with several channels, no `X-LinePay-Channel` and no
    /// `default_channel`.
    #[error("this sidecar serves several LINE Pay channels and the call names none; the call was not sent: send the header X-LinePay-Channel with the channel's name, or call the channel's own port")]
    ChannelRequired,
    /// The message never lists the configured names: an app learns only its own.
    #[error("X-LinePay-Channel names no channel of this sidecar (or is sent twice); the call was not sent: use the channel name from the sidecar's configuration")]
    UnknownChannel,
    #[error("this port serves one LINE Pay channel and X-LinePay-Channel names another; the call was not sent: drop the header or call the shared port")]
    ChannelMismatch,
    /// A money call on a transaction the journal recorded under another channel.
    #[error("the journal records this transaction or order under another LINE Pay channel; the call was not sent: make it as that channel")]
    TransactionOfAnotherChannel,
}

/// A rate limit's refusal is answered 429 with `Retry-After`.
impl From<LimitError> for ProxyError {
    fn from(refusal: LimitError) -> ProxyError {
        ProxyError::RateLimited(refusal)
    }
}

/// A failed call to LINE Pay is answered 502 or 504 (500 for the sidecar's own fault).
impl From<UpstreamError> for ProxyError {
    fn from(failure: UpstreamError) -> ProxyError {
        ProxyError::Upstream(failure)
    }
}

/// Declares [`Code`]: every stable code the sidecar answers with and its HTTP status,
/// in one table. `linepay_sidecar_refusals_total` has a series for each ([`Code::ALL`]).
macro_rules! codes {
    ($($variant:ident => $text:literal, $status:ident;)*) => {
        /// A stable, documented error code: apps and alerts key on it, so never rename one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Code {
            $($variant,)*
        }

        impl Code {
            pub(crate) const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)*
                }
            }

            pub(crate) fn status(self) -> StatusCode {
                match self {
                    $(Code::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

codes! {
    PathNotAllowed => "path_not_allowed", FORBIDDEN;
    ApiFamilyDisabled => "api_family_disabled", FORBIDDEN;
    InvalidPathParameter => "invalid_path_parameter", BAD_REQUEST;
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED;
    AmbiguousPath => "ambiguous_path", BAD_REQUEST;
    InvalidTarget => "invalid_target", BAD_REQUEST;
    HeadersTooLarge => "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE;
    BodyTooLarge => "body_too_large", PAYLOAD_TOO_LARGE;
    BodyTimeout => "body_timeout", REQUEST_TIMEOUT;
    BodyReadFailed => "body_read_failed", BAD_REQUEST;
    InvalidJson => "invalid_json", BAD_REQUEST;
    UnexpectedBody => "unexpected_body", BAD_REQUEST;
    UnexpectedQuery => "unexpected_query", BAD_REQUEST;
    InvalidRequest => "invalid_request", BAD_REQUEST;
    RateLimited => "rate_limited", TOO_MANY_REQUESTS;
    Overloaded => "overloaded", SERVICE_UNAVAILABLE;
    UpstreamDns => "upstream_dns", BAD_GATEWAY;
    UpstreamConnectTimeout => "upstream_connect_timeout", GATEWAY_TIMEOUT;
    UpstreamUnreachable => "upstream_unreachable", BAD_GATEWAY;
    UpstreamProxy => "upstream_proxy", BAD_GATEWAY;
    UpstreamTls => "upstream_tls", BAD_GATEWAY;
    UpstreamTimeout => "upstream_timeout", GATEWAY_TIMEOUT;
    UpstreamProtocol => "upstream_protocol", BAD_GATEWAY;
    UpstreamResponseTooLarge => "upstream_response_too_large", BAD_GATEWAY;
    Internal => "internal", INTERNAL_SERVER_ERROR;
    CallInProgress => "call_in_progress", CONFLICT;
    CallApplied => "call_applied", CONFLICT;
    CallOutcomeUnknown => "call_outcome_unknown", CONFLICT;
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY;
    IdempotencyAnswerUnavailable => "idempotency_answer_unavailable", CONFLICT;
    IdempotencyUnavailable => "idempotency_unavailable", BAD_REQUEST;
    InvalidIdempotencyKey => "invalid_idempotency_key", BAD_REQUEST;
    JournalUnavailable => "journal_unavailable", SERVICE_UNAVAILABLE;
    StateUnavailable => "state_unavailable", SERVICE_UNAVAILABLE;
    ChannelRequired => "channel_required", BAD_REQUEST;
    UnknownChannel => "unknown_channel", BAD_REQUEST;
    ChannelMismatch => "channel_mismatch", BAD_REQUEST;
    TransactionOfAnotherChannel => "transaction_of_another_channel", CONFLICT;
}

/// Everything an error's answer says besides its message: the one place where each
/// [`ProxyError`] is described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) code: Code,
    /// Whether the call certainly never reached LINE Pay, so sending it again cannot
    /// double a payment or a refund.
    pub(crate) retry_safe: bool,
    /// Close the connection after answering: what it buffered is given back at once, and
    /// a client that sent a head too large may have more of it in flight.
    pub(crate) close: bool,
    /// `Allow` or `Retry-After`, where the error has one.
    pub(crate) header: Option<(HeaderName, HeaderValue)>,
}

impl Answer {
    /// A refusal of a call that was never sent.
    fn refusal(code: Code) -> Answer {
        Answer {
            code,
            retry_safe: true,
            close: false,
            header: None,
        }
    }

    fn closing(self) -> Answer {
        Answer {
            close: true,
            ..self
        }
    }

    fn not_retry_safe(self) -> Answer {
        Answer {
            retry_safe: false,
            ..self
        }
    }

    fn with_header(self, name: HeaderName, value: HeaderValue) -> Answer {
        Answer {
            header: Some((name, value)),
            ..self
        }
    }

    /// A failed call to LINE Pay: its code, and whether it may have been processed.
    fn of_upstream(failure: &UpstreamError) -> Answer {
        let code = match failure {
            UpstreamError::Dns => Code::UpstreamDns,
            UpstreamError::ConnectTimeout(_) => Code::UpstreamConnectTimeout,
            UpstreamError::Unreachable => Code::UpstreamUnreachable,
            UpstreamError::Proxy => Code::UpstreamProxy,
            UpstreamError::Tls => Code::UpstreamTls,
            UpstreamError::ReadTimeout(_) => Code::UpstreamTimeout,
            UpstreamError::Protocol | UpstreamError::UnexpectedStatus(_) => Code::UpstreamProtocol,
            UpstreamError::ResponseTooLarge { .. }
            | UpstreamError::ResponseHeadersTooLarge { .. } => Code::UpstreamResponseTooLarge,
            UpstreamError::OverBudget { .. } => Code::Overloaded,
            UpstreamError::NoPool => Code::Internal,
        };
        Answer {
            code,
            retry_safe: failure.retry_safe(),
            close: matches!(failure, UpstreamError::OverBudget { .. }),
            header: None,
        }
    }
}

impl ProxyError {
    /// The one table: what the app is answered for each error.
    pub(crate) fn answer(&self) -> Answer {
        match self {
            ProxyError::PathNotAllowed { .. } => Answer::refusal(Code::PathNotAllowed),
            ProxyError::ApiFamilyDisabled { .. } => Answer::refusal(Code::ApiFamilyDisabled),
            ProxyError::InvalidPathParameter { .. } => Answer::refusal(Code::InvalidPathParameter),
            ProxyError::MethodNotAllowed { allowed, .. } => {
                let answer = Answer::refusal(Code::MethodNotAllowed);
                match HeaderValue::from_str(allowed) {
                    Ok(value) => answer.with_header(http::header::ALLOW, value),
                    Err(_) => answer,
                }
            }
            ProxyError::ConnectRefused => Answer::refusal(Code::MethodNotAllowed)
                .with_header(http::header::ALLOW, HeaderValue::from_static("GET, POST")),
            ProxyError::AmbiguousPath(_) => Answer::refusal(Code::AmbiguousPath),
            ProxyError::InvalidTarget => Answer::refusal(Code::InvalidTarget),
            ProxyError::BodyTooLarge { .. } => Answer::refusal(Code::BodyTooLarge),
            ProxyError::BodyTimeout(_) => Answer::refusal(Code::BodyTimeout),
            ProxyError::BodyRead => Answer::refusal(Code::BodyReadFailed),
            ProxyError::InvalidJson(_) => Answer::refusal(Code::InvalidJson),
            ProxyError::UnexpectedBody(_) => Answer::refusal(Code::UnexpectedBody),
            ProxyError::UnexpectedQuery => Answer::refusal(Code::UnexpectedQuery),
            ProxyError::InvalidRequest(_) => Answer::refusal(Code::InvalidRequest),
            ProxyError::RateLimited(refusal) => Answer::refusal(Code::RateLimited).with_header(
                http::header::RETRY_AFTER,
                HeaderValue::from(refusal.retry_after_secs()),
            ),
            ProxyError::HeadersTooLarge { .. } => Answer::refusal(Code::HeadersTooLarge).closing(),
            ProxyError::Overloaded | ProxyError::OverBudget { .. } => {
                Answer::refusal(Code::Overloaded).closing()
            }
            ProxyError::Upstream(failure) | ProxyError::Unsettled { failure, .. } => {
                Answer::of_upstream(failure)
            }
            ProxyError::Internal => Answer::refusal(Code::Internal),
            ProxyError::CallInProgress => Answer::refusal(Code::CallInProgress),
            ProxyError::AwaitingCheck { retry_after_secs } => Answer::refusal(Code::CallInProgress)
                .with_header(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs),
                ),
            // Sent once already (and cut short): a second send could double it.
            ProxyError::CallApplied => Answer::refusal(Code::CallApplied).not_retry_safe(),
            ProxyError::CallOutcomeUnknown => {
                Answer::refusal(Code::CallOutcomeUnknown).not_retry_safe()
            }
            ProxyError::IdempotencyKeyReused => Answer::refusal(Code::IdempotencyKeyReused),
            // Sent once already: a second send could double it.
            ProxyError::IdempotencyAnswerUnavailable => {
                Answer::refusal(Code::IdempotencyAnswerUnavailable).not_retry_safe()
            }
            ProxyError::IdempotencyUnavailable => Answer::refusal(Code::IdempotencyUnavailable),
            ProxyError::InvalidIdempotencyKey => Answer::refusal(Code::InvalidIdempotencyKey),
            ProxyError::JournalUnavailable => Answer::refusal(Code::JournalUnavailable),
            ProxyError::StateUnavailable => Answer::refusal(Code::StateUnavailable),
            ProxyError::ChannelRequired => Answer::refusal(Code::ChannelRequired),
            ProxyError::UnknownChannel => Answer::refusal(Code::UnknownChannel),
            ProxyError::ChannelMismatch => Answer::refusal(Code::ChannelMismatch),
            ProxyError::TransactionOfAnotherChannel => {
                Answer::refusal(Code::TransactionOfAnotherChannel)
            }
        }
    }

    /// The stable, documented code.
    pub(crate) fn code(&self) -> &'static str {
        self.answer().code.as_str()
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.answer().code.status()
    }

    /// The `kind` label of `linepay_sidecar_upstream_errors_total` for a failed call to
    /// LINE Pay; `None` for the sidecar's refusals.
    pub(crate) fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::Upstream(failure) | ProxyError::Unsettled { failure, .. } => failure.kind(),
            _ => None,
        }
    }

    /// The body's `retry_safe`: whether the call certainly never reached LINE Pay, so
    /// sending it again cannot double a payment or a refund. Every refusal is.
    #[cfg(test)]
    pub(crate) fn retry_safe(&self) -> bool {
        self.answer().retry_safe
    }

    /// The JSON answer the app receives.
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let answer = self.answer();
        let code = answer.code.as_str();
        let mut body = serde_json::json!({
            "error": {
                "code": code,
                "message": self.to_string(),
                "retry_safe": answer.retry_safe,
            }
        });
        if let ProxyError::Unsettled { reconciled, .. } = self {
            body["error"]["reconciled"] = serde_json::json!({
                "state": reconciled.state.as_str(),
                "reason": reconciled.reason,
            });
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = answer.code.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(SIDECAR_ERROR_HEADER, HeaderValue::from_static(code));
        if let Some((name, value)) = answer.header {
            headers.insert(name, value);
        }
        if answer.close {
            headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn response_is_json_with_code_and_marker_header() {
        let error = ProxyError::BodyTooLarge { limit: 65536 };
        let response = error.to_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[SIDECAR_ERROR_HEADER], "body_too_large");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "body_too_large");
        assert!(body["error"]["message"].as_str().unwrap().contains("65536"));
        assert_eq!(body["error"]["retry_safe"], true);
    }

    #[test]
    fn every_code_is_unique_and_snake_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "{text} twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text}"
            );
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }

    #[test]
    fn an_unsettled_calls_message_is_two_sentences() {
        let error = ProxyError::Unsettled {
            failure: UpstreamError::ReadTimeout(Duration::from_secs(40)),
            reconciled: Verdict::unknown("no answer"),
        };
        let message = error.to_string();
        assert!(
            message.ends_with(
                "before sending it again. The sidecar asked LINE Pay: see `reconciled`."
            ),
            "{message}"
        );
    }

    #[test]
    fn timeouts_after_sending_are_not_retry_safe() {
        let second = Duration::from_secs(1);
        assert!(!ProxyError::from(UpstreamError::ReadTimeout(second)).retry_safe());
        assert!(ProxyError::from(UpstreamError::ConnectTimeout(second)).retry_safe());
    }

    #[test]
    fn each_upstream_failure_has_its_status_code_kind_and_retry_safety() {
        let second = Duration::from_secs(1);
        #[rustfmt::skip]
        let table = [
            (UpstreamError::Dns, 502, "upstream_dns", Some("dns"), true),
            (UpstreamError::Unreachable, 502, "upstream_unreachable", Some("connect"), true),
            (UpstreamError::ConnectTimeout(second), 504, "upstream_connect_timeout", Some("connect_timeout"), true),
            (UpstreamError::Tls, 502, "upstream_tls", Some("tls"), true),
            (UpstreamError::Proxy, 502, "upstream_proxy", Some("proxy"), true),
            (UpstreamError::ReadTimeout(second), 504, "upstream_timeout", Some("timeout"), false),
            (UpstreamError::Protocol, 502, "upstream_protocol", Some("protocol"), false),
            (UpstreamError::UnexpectedStatus(101), 502, "upstream_protocol", Some("protocol"), false),
            (UpstreamError::ResponseHeadersTooLarge { limit: 1 }, 502, "upstream_response_too_large", Some("response_too_large"), false),
            (UpstreamError::OverBudget { limit: 1 }, 503, "overloaded", None, false),
            (UpstreamError::ResponseTooLarge { limit: 1 }, 502, "upstream_response_too_large", Some("response_too_large"), false),
            (UpstreamError::NoPool, 500, "internal", None, true),
        ];
        for (failure, status, code, kind, retry_safe) in table {
            let error = ProxyError::from(failure.clone());
            assert_eq!(error.status().as_u16(), status, "{failure:?}");
            assert_eq!(error.code(), code, "{failure:?}");
            assert_eq!(error.upstream_kind(), kind, "{failure:?}");
            assert_eq!(error.retry_safe(), retry_safe, "{failure:?}");
            assert_eq!(error.to_string(), failure.to_string(), "{failure:?}");
        }
    }

    #[test]
    fn a_rate_limit_refusal_is_429_with_retry_after_in_whole_seconds() {
        use crate::limit::{LimitName, Refusal};
        let refusal = LimitError {
            limit: LimitName::Route("route POST /v3/payments/request".into()),
            retry_after: Duration::from_millis(1500),
            reason: Refusal::QueueFull,
        };
        let response = ProxyError::from(refusal).to_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[SIDECAR_ERROR_HEADER], "rate_limited");
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "2");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["error"]["message"],
            "the route POST /v3/payments/request rate limit is exhausted; the call was not sent: retry after 2 s"
        );
        assert_eq!(body["error"]["retry_safe"], true);
    }

    #[test]
    fn a_disabled_family_is_403_with_the_line_that_enables_it() {
        let error = ProxyError::ApiFamilyDisabled {
            route: "POST /v4/payments/oneTimeKeys/pay".into(),
            family: "offline_v4",
            line: "routes.apis: [online_v3, online_v4, offline_v4]".into(),
        };
        let response = error.to_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[SIDECAR_ERROR_HEADER],
            "api_family_disabled"
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["error"]["message"],
            "POST /v4/payments/oneTimeKeys/pay belongs to LINE Pay's offline_v4 API, which this sidecar does not allow; enable it with the config line `routes.apis: [online_v3, online_v4, offline_v4]`"
        );
    }

    #[test]
    fn a_bad_path_parameter_is_400_naming_the_parameter_and_its_rule() {
        let response = ProxyError::InvalidPathParameter {
            name: "transactionId".into(),
            rule: "must be 1 to 19 digits (a LINE Pay transaction id)",
        }
        .to_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()[SIDECAR_ERROR_HEADER],
            "invalid_path_parameter"
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["error"]["message"],
            "path parameter `transactionId` must be 1 to 19 digits (a LINE Pay transaction id); the call was not sent"
        );
        assert_eq!(body["error"]["retry_safe"], true);
    }

    #[test]
    fn method_not_allowed_names_allowed_methods() {
        let response = ProxyError::MethodNotAllowed {
            path: "/v3/payments/request".into(),
            allowed: "POST".into(),
        }
        .to_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[http::header::ALLOW], "POST");
    }

    #[test]
    fn connect_is_refused_as_a_method_with_its_allow_header() {
        let response = ProxyError::ConnectRefused.to_response();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            response.headers()[SIDECAR_ERROR_HEADER],
            "method_not_allowed"
        );
        assert_eq!(response.headers()[http::header::ALLOW], "GET, POST");
        assert!(ProxyError::ConnectRefused.retry_safe());
    }

    #[test]
    fn refusals_that_free_memory_close_the_connection() {
        for error in [
            ProxyError::Overloaded,
            ProxyError::OverBudget { limit: 1 },
            ProxyError::HeadersTooLarge { limit: 1 },
            ProxyError::from(UpstreamError::OverBudget { limit: 1 }),
        ] {
            let response = error.to_response();
            assert_eq!(
                response.headers()[http::header::CONNECTION],
                "close",
                "{error:?}"
            );
        }
        let kept = ProxyError::BodyTooLarge { limit: 1 }.to_response();
        assert!(kept.headers().get(http::header::CONNECTION).is_none());
        assert_eq!(
            ProxyError::HeadersTooLarge { limit: 1 }.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        assert_eq!(ProxyError::OverBudget { limit: 1 }.code(), "overloaded");
        assert_eq!(
            ProxyError::OverBudget { limit: 1 }.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(ProxyError::OverBudget { limit: 1 }.retry_safe());
    }

    #[test]
    fn a_lost_idempotent_answer_is_a_conflict_and_never_retry_safe() {
        // The call was sent once already: sending it again could double a payment.
        let error = ProxyError::IdempotencyAnswerUnavailable;
        assert_eq!(error.status(), StatusCode::CONFLICT);
        assert!(!error.retry_safe());
        let body: serde_json::Value = serde_json::from_slice(error.to_response().body()).unwrap();
        assert_eq!(body["error"]["retry_safe"], false);
    }
}
