//! The sidecar's own refusals and failures: one enum, one place that maps each cause to
//! an HTTP status and a stable `code`.
//!
//! Every such answer carries `X-LinePay-Sidecar-Error: <code>` so an app can always tell
//! a sidecar refusal from a LINE Pay answer (LINE Pay's own answers pass through
//! untouched and never carry it). Messages say what to do next and never include
//! upstream error text, secrets, signatures or bodies.

use crate::limit::LimitError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use std::time::Duration;

/// The header that marks an answer as the sidecar's own.
pub const SIDECAR_ERROR_HEADER: &str = "x-linepay-sidecar-error";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("{method} {path} is not on the allowlist")]
    PathNotAllowed { method: String, path: String },
    #[error("{path} is on the allowlist only for {allowed}")]
    MethodNotAllowed { path: String, allowed: String },
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
    #[error("a POST call is signed over its body only, so a query string would reach LINE Pay unsigned; move the parameters into the JSON body")]
    UnexpectedQuery,
    #[error("the {} rate limit is exhausted; the call was not sent: retry after {} s", .0.limit, .0.retry_after_secs())]
    RateLimited(LimitError),
    #[error("the sidecar is at its connection limit")]
    Overloaded,
    #[error("the LINE Pay host name could not be resolved; the call did not reach LINE Pay and may be sent again")]
    UpstreamDns,
    #[error("no connection to LINE Pay could be opened within the connect timeout ({0:?}); the call did not reach LINE Pay and may be sent again")]
    UpstreamConnectTimeout(Duration),
    #[error("LINE Pay refused the connection or could not be reached; the call did not reach LINE Pay and may be sent again")]
    UpstreamUnreachable,
    #[error("the TLS handshake with LINE Pay failed (certificate or protocol); the call did not reach LINE Pay")]
    UpstreamTls,
    #[error("the egress proxy (egress.proxy.url) could not be reached or did not open a tunnel to LINE Pay; the call did not reach LINE Pay and may be sent again")]
    UpstreamProxy,
    #[error("LINE Pay did not answer within {0:?}; the call may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    UpstreamTimeout(Duration),
    #[error("the connection to LINE Pay failed during the call; it may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    UpstreamProtocol,
    #[error("LINE Pay's answer was larger than the {limit}-byte limit (upstream.max_response_bytes); the call may have been processed")]
    UpstreamResponseTooLarge { limit: usize },
    #[error("the sidecar could not build the upstream request")]
    Internal,
}

/// A rate limit's refusal is answered 429 with `Retry-After`.
impl From<LimitError> for ProxyError {
    fn from(refusal: LimitError) -> ProxyError {
        ProxyError::RateLimited(refusal)
    }
}

impl ProxyError {
    /// The stable, documented code: apps and alerts key on it, so never rename one.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::PathNotAllowed { .. } => "path_not_allowed",
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
            ProxyError::RateLimited(_) => "rate_limited",
            ProxyError::Overloaded => "overloaded",
            ProxyError::UpstreamDns => "upstream_dns",
            ProxyError::UpstreamConnectTimeout(_) => "upstream_connect_timeout",
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamProxy => "upstream_proxy",
            ProxyError::UpstreamTls => "upstream_tls",
            ProxyError::UpstreamTimeout(_) => "upstream_timeout",
            ProxyError::UpstreamProtocol => "upstream_protocol",
            ProxyError::UpstreamResponseTooLarge { .. } => "upstream_response_too_large",
            ProxyError::Internal => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::PathNotAllowed { .. } => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed { .. } | ProxyError::ConnectRefused => {
                StatusCode::METHOD_NOT_ALLOWED
            }
            ProxyError::AmbiguousPath(_)
            | ProxyError::InvalidTarget
            | ProxyError::BodyRead
            | ProxyError::InvalidJson(_)
            | ProxyError::UnexpectedBody(_)
            | ProxyError::UnexpectedQuery => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamDns
            | ProxyError::UpstreamUnreachable
            | ProxyError::UpstreamProxy
            | ProxyError::UpstreamTls
            | ProxyError::UpstreamProtocol
            | ProxyError::UpstreamResponseTooLarge { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamConnectTimeout(_) | ProxyError::UpstreamTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `kind` label of `linepay_sidecar_upstream_errors_total` for a failed call to
    /// LINE Pay; `None` for the sidecar's refusals. Exhaustive, so a new variant must
    /// choose.
    pub fn upstream_kind(&self) -> Option<&'static str> {
        match self {
            ProxyError::UpstreamDns => Some("dns"),
            ProxyError::UpstreamUnreachable => Some("connect"),
            ProxyError::UpstreamConnectTimeout(_) => Some("connect_timeout"),
            ProxyError::UpstreamTls => Some("tls"),
            ProxyError::UpstreamProxy => Some("proxy"),
            ProxyError::UpstreamTimeout(_) => Some("timeout"),
            ProxyError::UpstreamProtocol => Some("protocol"),
            ProxyError::UpstreamResponseTooLarge { .. } => Some("response_too_large"),
            ProxyError::PathNotAllowed { .. }
            | ProxyError::MethodNotAllowed { .. }
            | ProxyError::ConnectRefused
            | ProxyError::AmbiguousPath(_)
            | ProxyError::InvalidTarget
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout(_)
            | ProxyError::BodyRead
            | ProxyError::InvalidJson(_)
            | ProxyError::UnexpectedBody(_)
            | ProxyError::UnexpectedQuery
            | ProxyError::RateLimited(_)
            | ProxyError::Overloaded
            | ProxyError::Internal => None,
        }
    }

    /// Whether the call certainly never reached LINE Pay, so sending it again cannot
    /// double a payment or a refund.
    pub fn never_reached_upstream(&self) -> bool {
        !matches!(
            self,
            ProxyError::UpstreamTimeout(_)
                | ProxyError::UpstreamProtocol
                | ProxyError::UpstreamResponseTooLarge { .. }
        )
    }

    /// The JSON answer the app receives.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = serde_json::json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "retry_safe": self.never_reached_upstream(),
            }
        });
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
        assert!(!ProxyError::UpstreamTimeout(Duration::from_secs(1)).never_reached_upstream());
        assert!(ProxyError::UpstreamConnectTimeout(Duration::from_secs(1)).never_reached_upstream());
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
}
