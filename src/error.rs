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
use http::{HeaderValue, Response, StatusCode};
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
    #[error("{failure} The sidecar asked LINE Pay: see `reconciled`.")]
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
    #[error("this Idempotency-Key was used for a call with another body; it was not sent: use a new key for a new call")]
    IdempotencyKeyReused,
    #[error("this Idempotency-Key's call was already sent, but its stored answer cannot be read (the channel secret changed since); it was not sent again: read the payment details")]
    IdempotencyAnswerUnavailable,
    #[error("Idempotency-Key needs the call journal (journal.enabled); the call was not sent: turn the journal on or send the call without the header")]
    IdempotencyUnavailable,
    #[error("Idempotency-Key must be 1 to 255 printable ASCII characters")]
    InvalidIdempotencyKey,
    #[error("the call journal cannot be written, so the money call was not sent (nothing would record it); the sidecar's log says why")]
    JournalUnavailable,
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

impl ProxyError {
    /// The stable, documented code: apps and alerts key on it, so never rename one.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProxyError::PathNotAllowed { .. } => "path_not_allowed",
            ProxyError::ApiFamilyDisabled { .. } => "api_family_disabled",
            ProxyError::InvalidPathParameter { .. } => "invalid_path_parameter",
            ProxyError::MethodNotAllowed { .. } | ProxyError::ConnectRefused => {
                "method_not_allowed"
            }
            ProxyError::AmbiguousPath(_) => "ambiguous_path",
            ProxyError::InvalidTarget => "invalid_target",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BodyTimeout(_) => "body_timeout",
            ProxyError::BodyRead => "body_read_failed",
            ProxyError::InvalidJson(_) => "invalid_json",
            ProxyError::UnexpectedBody(_) => "unexpected_body",
            ProxyError::UnexpectedQuery => "unexpected_query",
            ProxyError::InvalidRequest(_) => "invalid_request",
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::Overloaded | ProxyError::OverBudget { .. } => "overloaded",
            ProxyError::Upstream(failure) => match failure {
                UpstreamError::Dns => "upstream_dns",
                UpstreamError::ConnectTimeout(_) => "upstream_connect_timeout",
                UpstreamError::Unreachable => "upstream_unreachable",
                UpstreamError::Proxy => "upstream_proxy",
                UpstreamError::Tls => "upstream_tls",
                UpstreamError::ReadTimeout(_) => "upstream_timeout",
                UpstreamError::Protocol | UpstreamError::UnexpectedStatus(_) => "upstream_protocol",
                UpstreamError::ResponseTooLarge { .. }
                | UpstreamError::ResponseHeadersTooLarge { .. } => "upstream_response_too_large",
                UpstreamError::OverBudget { .. } => "overloaded",
                UpstreamError::NoPool => "internal",
            },
            ProxyError::Unsettled { failure, .. } => ProxyError::Upstream(failure.clone()).code(),
            ProxyError::Internal => "internal",
            ProxyError::CallInProgress | ProxyError::AwaitingCheck { .. } => "call_in_progress",
            ProxyError::CallApplied => "call_applied",
            ProxyError::CallOutcomeUnknown => "call_outcome_unknown",
            ProxyError::IdempotencyKeyReused => "idempotency_key_reused",
            ProxyError::IdempotencyAnswerUnavailable => "idempotency_answer_unavailable",
            ProxyError::IdempotencyUnavailable => "idempotency_unavailable",
            ProxyError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ProxyError::JournalUnavailable => "journal_unavailable",
        }
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::PathNotAllowed { .. } | ProxyError::ApiFamilyDisabled { .. } => {
                StatusCode::FORBIDDEN
            }
            ProxyError::MethodNotAllowed { .. } | ProxyError::ConnectRefused => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ProxyError::AmbiguousPath(_)
            | ProxyError::InvalidPathParameter { .. }
            | ProxyError::InvalidTarget
            | ProxyError::BodyRead
            | ProxyError::InvalidJson(_)
            | ProxyError::UnexpectedBody(_)
            | ProxyError::UnexpectedQuery
            | ProxyError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::Overloaded | ProxyError::OverBudget { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Upstream(failure) => match failure {
                UpstreamError::Dns
                | UpstreamError::Unreachable
                | UpstreamError::Proxy
                | UpstreamError::Tls
                | UpstreamError::Protocol
                | UpstreamError::UnexpectedStatus(_)
                | UpstreamError::ResponseTooLarge { .. }
                | UpstreamError::ResponseHeadersTooLarge { .. } => StatusCode::BAD_GATEWAY,
                UpstreamError::OverBudget { .. } => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamError::ConnectTimeout(_) | UpstreamError::ReadTimeout(_) => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                UpstreamError::NoPool => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ProxyError::Unsettled { failure, .. } => ProxyError::Upstream(failure.clone()).status(),
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::CallInProgress
            | ProxyError::AwaitingCheck { .. }
            | ProxyError::CallApplied
            | ProxyError::CallOutcomeUnknown
            | ProxyError::IdempotencyAnswerUnavailable => StatusCode::CONFLICT,
            ProxyError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ProxyError::IdempotencyUnavailable | ProxyError::InvalidIdempotencyKey => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::JournalUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
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
    pub(crate) fn retry_safe(&self) -> bool {
        match self {
            ProxyError::Upstream(failure) | ProxyError::Unsettled { failure, .. } => {
                failure.retry_safe()
            }
            // Sent once already: a second send could double it.
            ProxyError::IdempotencyAnswerUnavailable
            | ProxyError::CallApplied
            | ProxyError::CallOutcomeUnknown => false,
            _ => true,
        }
    }

    /// The JSON answer the app receives.
    pub(crate) fn to_response(&self) -> Response<Bytes> {
        let mut body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "retry_safe": self.retry_safe(),
            }
        });
        if let ProxyError::Unsettled { reconciled, .. } = self {
            body["error"]["reconciled"] = serde_json::json!({
                "state": reconciled.state.as_str(),
                "reason": reconciled.reason,
            });
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(SIDECAR_ERROR_HEADER, HeaderValue::from_static(self.code()));
        match self {
            ProxyError::MethodNotAllowed { allowed, .. } => {
                if let Ok(value) = HeaderValue::from_str(allowed) {
                    headers.insert(http::header::ALLOW, value);
                }
            }
            ProxyError::ConnectRefused => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static("GET, POST"));
            }
            ProxyError::RateLimited(refusal) => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(refusal.retry_after_secs()),
                );
            }
            ProxyError::AwaitingCheck { retry_after_secs } => {
                headers.insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(*retry_after_secs),
                );
            }
            // Close the connection: what it buffered is given back at once, and a
            // client that sent a head too large may have more of it in flight.
            ProxyError::Overloaded
            | ProxyError::OverBudget { .. }
            | ProxyError::HeadersTooLarge { .. }
            | ProxyError::Upstream(UpstreamError::OverBudget { .. }) => {
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
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
