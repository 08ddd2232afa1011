//! The request path, in the order a call travels:
//!
//! 1. **request filter**: the target must be a plain path; the method and path must be
//!    on the allowlist (403 / 405 otherwise). Nothing has been read yet.
//! 2. **limit**: the global, per-route and per-client token buckets (429), still
//!    before the body is read, so a refusal costs almost nothing.
//! 3. **read body**: whole, capped (413) and time-boxed; POST bodies must be UTF-8 JSON.
//! 4. **upstream request**: the app's headers minus hop-by-hop, `Host`, credentials and
//!    every `X-LINE-*`; then the sidecar's own `X-LINE-*` headers and the signature over
//!    the exact bytes that will be sent.
//! 5. **forward**: to the configured upstream only, with the route's timeouts.
//! 6. **response filter**: LINE Pay's answer goes back as it is, minus hop-by-hop
//!    headers.
//!
//! Each phase is one function; a refusal at any phase is a [`ProxyError`] (the limit and
//! upstream layers return their own errors, which `?` converts in `crate::error`),
//! answered as the sidecar's JSON error, and stops the call before anything reaches
//! LINE Pay.

use crate::config::Config;
use crate::error::ProxyError;
use crate::inspect;
use crate::limit::Limits;
use crate::metrics::{self, Metrics, UNMATCHED_ROUTE};
use crate::route::{Match, Route, Signing};
use crate::sign::{self, Signer};
use crate::upstream::Upstream;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const CHANNEL_ID: HeaderName = HeaderName::from_static("x-line-channelid");
pub(crate) const CHANNEL_SECRET: HeaderName = HeaderName::from_static("x-line-channelsecret");
pub(crate) const NONCE: HeaderName = HeaderName::from_static("x-line-authorization-nonce");
pub(crate) const AUTHORIZATION: HeaderName = HeaderName::from_static("x-line-authorization");
pub(crate) const DEVICE_PROFILE_ID: HeaderName =
    HeaderName::from_static("x-line-merchantdeviceprofileid");
pub(crate) const DEVICE_TYPE: HeaderName = HeaderName::from_static("x-line-merchantdevicetype");

/// Headers that describe one hop, never the call (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies still see.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// [`HOP_BY_HOP`] as header names, for the answer's filter (a test keeps the two equal).
static HOP_BY_HOP_NAMES: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers from the app that must not reach LINE Pay: the sidecar sets them itself, or
/// they would reveal the app's network, or carry credentials the app should not hold.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "authorization",
    "cookie",
    "expect",
    "forwarded",
    "x-real-ip",
    // LINE Pay's answer must come back uncompressed: the sidecar reads its returnCode.
    "accept-encoding",
];

/// The longest request path written to a log line.
const MAX_LOGGED_PATH: usize = 200;

/// Everything one call needs, built once per configuration and shared by all calls.
pub(crate) struct Proxy {
    config: Config,
    signer: Signer,
    upstream: Arc<Upstream>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    user_agent: HeaderValue,
}

/// What one call did, gathered along the path for its log line and metrics.
#[derive(Default)]
struct CallRecord<'a> {
    route: Option<&'a Route>,
    /// The `family` label and log field: the matched route's, the disabled family a
    /// refused call belongs to, else `unmatched`.
    family: Option<&'static str>,
    /// The path, logged only when no route matched (the route template says the rest,
    /// and a matched path may hold a regKey, which can charge a card); never the query.
    /// Copied only then, not on every call.
    unmatched_path: Option<String>,
    error: Option<ProxyError>,
    order_id: Option<String>,
    transaction_id: Option<String>,
    upstream_elapsed: Option<std::time::Duration>,
}

/// The request id header: taken from the app when it sends a sane one, else generated,
/// and always returned to the app.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Proxy {
    /// The upstream client and the limiters are shared handles, so that a reload that
    /// leaves their settings alone keeps the warm connections and the bucket levels.
    pub(crate) fn new(
        config: Config,
        upstream: Arc<Upstream>,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            signer: Signer::new(&config.credentials.channel_secret),
            limits,
            config,
            upstream,
            metrics,
            user_agent: HeaderValue::from_static(concat!(
                "linepay-sidecar/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    pub(crate) fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Handles one call from the app; never fails: every problem becomes an answer.
    pub(crate) async fn handle<B>(&self, request: Request<B>) -> Response<Bytes>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let method = request.method().clone();
        let request_id = request_id(request.headers());
        let mut call = CallRecord::default();
        let mut response = match self.forward(request, &request_id, &mut call).await {
            Ok(response) => response,
            Err(error) => {
                let response = error.to_response();
                call.error = Some(error);
                response
            }
        };
        response
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());

        let route = call.route.map_or(UNMATCHED_ROUTE, |r| r.template.as_str());
        let family = call
            .family
            .or(call.route.map(Route::family_label))
            .unwrap_or(UNMATCHED_ROUTE);
        let status = response.status().as_u16();
        let return_code = match call.error {
            None => inspect::string_field(response.body(), "returnCode"),
            Some(_) => None,
        };
        if call.transaction_id.is_none() && call.error.is_none() {
            call.transaction_id =
                inspect::id_field(response.body(), "transactionId").map(str::to_owned);
        }
        self.record_metrics(
            &call,
            route,
            family,
            &method,
            response.status(),
            return_code,
        );

        let elapsed_ms = milliseconds(started.elapsed());
        let upstream_ms = call.upstream_elapsed.map(milliseconds);
        let request_id = request_id.to_str().unwrap_or("-");
        let order_id = call.order_id.as_deref();
        let path = call.unmatched_path.as_deref();
        let transaction_id = call.transaction_id.as_deref();
        match &call.error {
            None => tracing::info!(
                request_id, %method, path, route, family, status, return_code, order_id,
                transaction_id, upstream_ms, elapsed_ms, "call forwarded"
            ),
            Some(error) => tracing::warn!(
                request_id, %method, path, route, family, status, code = error.code(), order_id,
                transaction_id, upstream_ms, elapsed_ms, "call refused"
            ),
        }
        response
    }

    fn record_metrics(
        &self,
        call: &CallRecord<'_>,
        route: &str,
        family: &str,
        method: &Method,
        status: http::StatusCode,
        return_code: Option<&str>,
    ) {
        let metrics = &self.metrics;
        metrics
            .requests
            .with_label_values(&[
                route,
                family,
                method_label(method),
                status.as_str(),
                metrics::return_code_label(return_code),
            ])
            .inc();
        if let Some(elapsed) = call.upstream_elapsed {
            metrics
                .upstream_duration
                .with_label_values(&[route])
                .observe(elapsed.as_secs_f64());
        }
        if let Some(error) = &call.error {
            metrics.refusals.with_label_values(&[error.code()]).inc();
            if let Some(kind) = error.upstream_kind() {
                metrics.upstream_errors.with_label_values(&[kind]).inc();
            }
            if let ProxyError::RateLimited(refusal) = error {
                metrics
                    .rate_limited
                    .with_label_values(&[refusal.limit.label()])
                    .inc();
            }
        }
    }

    async fn forward<'a, B>(
        &'a self,
        request: Request<B>,
        request_id: &HeaderValue,
        call: &mut CallRecord<'a>,
    ) -> Result<Response<Bytes>, ProxyError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let route = match self.request_filter(&parts, call) {
            Ok(route) => route,
            Err(error) => {
                call.unmatched_path =
                    Some(parts.uri.path().chars().take(MAX_LOGGED_PATH).collect());
                return Err(error);
            }
        };
        call.route = Some(route);
        call.transaction_id = route
            .param(parts.uri.path(), "transactionId")
            .map(str::to_owned);
        // The offline API's orderId travels in the path (checked: at most 100
        // characters, no control characters); logged decoded.
        call.order_id = route.param(parts.uri.path(), "orderId").map(|raw| {
            percent_encoding::percent_decode_str(raw)
                .decode_utf8_lossy()
                .into_owned()
        });
        self.limits.admit(route, &parts.headers).await?;
        let body = self.read_body(&parts, body).await?;
        check_payload(route, &parts, &body)?;
        if call.order_id.is_none() {
            call.order_id = match parts.uri.query() {
                Some(query) => inspect::query_field(query, "orderId"),
                None => inspect::string_field(&body, "orderId"),
            }
            .map(str::to_owned);
        }
        if call.transaction_id.is_none() {
            call.transaction_id = parts
                .uri
                .query()
                .and_then(|query| inspect::query_field(query, "transactionId"))
                .map(str::to_owned);
        }
        let mut upstream_request = self.upstream_request(route, &parts, body)?;
        upstream_request
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        let sent = Instant::now();
        let response = self.upstream.send(upstream_request, route.timeouts).await;
        call.upstream_elapsed = Some(sent.elapsed());
        Ok(response_filter(response?))
    }

    /// Phase 1: is this call allowed at all? A refused call that still names a route or
    /// a family (a bad parameter, a disabled family) is recorded in `call` for the log
    /// line and the metrics.
    fn request_filter<'a>(
        &'a self,
        parts: &http::request::Parts,
        call: &mut CallRecord<'a>,
    ) -> Result<&'a Route, ProxyError> {
        if parts.method == Method::CONNECT {
            return Err(ProxyError::ConnectRefused);
        }
        // Absolute-form (`POST http://elsewhere/...`) and authority-form targets could
        // name another host; only origin-form paths are accepted, and the upstream is
        // always the configured one whatever `Host` says.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            return Err(ProxyError::InvalidTarget);
        }
        let path = parts.uri.path();
        let allowlist = &self.config.allowlist;
        match allowlist.find(&parts.method, path) {
            Match::Allowed(route) => Ok(route),
            Match::BadParameter { route, problem } => {
                // The template, not the path, goes to the log: the value is refused
                // because it is malformed or huge (and a regKey can charge a card).
                call.route = Some(route);
                Err(ProxyError::InvalidPathParameter {
                    name: problem.name,
                    rule: problem.rule,
                })
            }
            Match::FamilyDisabled { route, family } => {
                call.family = Some(family.name());
                Err(ProxyError::ApiFamilyDisabled {
                    route: route.id().to_owned(),
                    family: family.name(),
                    line: allowlist.enabling_line(family),
                })
            }
            Match::WrongMethod { allowed } => Err(ProxyError::MethodNotAllowed {
                path: path.to_owned(),
                allowed: allowed
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            Match::Unknown => Err(ProxyError::PathNotAllowed {
                method: parts.method.to_string(),
                path: path.to_owned(),
            }),
            Match::Refused(problem) => Err(ProxyError::AmbiguousPath(problem.describe())),
        }
    }

    /// Phase 3: the whole body, capped and time-boxed, before anything is sent.
    async fn read_body<B>(&self, parts: &http::request::Parts, body: B) -> Result<Bytes, ProxyError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = self.config.request.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        let timeout = self.config.request.body_timeout;
        let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
            .await
            .map_err(|_| ProxyError::BodyTimeout(timeout))?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Err(_) => Err(ProxyError::BodyRead),
        }
    }

    /// Phase 4: the request LINE Pay will receive, signed over its exact bytes.
    fn upstream_request(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ProxyError> {
        let path = parts.uri.path();
        let query = parts.uri.query();
        let path_and_query = parts.uri.path_and_query().map_or(path, |pq| pq.as_str());
        // The path and query were parsed once already: a failure here is a bug.
        let uri = self
            .upstream
            .uri_for(path_and_query)
            .map_err(|_| ProxyError::Internal)?;

        let mut headers = forwardable_headers(&parts.headers);
        // The per-client limit's header is the app's label for the sidecar, not LINE Pay's.
        if let Some(client) = &self.config.limits.per_client {
            headers.remove(&client.header);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(header::USER_AGENT, self.user_agent.clone());
        }
        let credentials = &self.config.credentials;
        headers.insert(CHANNEL_ID, credentials.channel_id.clone());
        if let Some(value) = &credentials.merchant_device_profile_id {
            headers.insert(DEVICE_PROFILE_ID, value.clone());
        }
        if let Some(value) = &credentials.merchant_device_type {
            headers.insert(DEVICE_TYPE, value.clone());
        }
        if route.signing == Signing::ChannelSecret {
            let mut secret = HeaderValue::from_bytes(credentials.channel_secret.expose())
                .map_err(|_| ProxyError::Internal)?;
            secret.set_sensitive(true);
            headers.insert(CHANNEL_SECRET, secret);
        } else {
            let mut nonce = [0u8; sign::NONCE_LEN];
            let nonce = sign::new_nonce_into(&mut nonce);
            let payload = sign::payload(&parts.method, query, &body);
            let mut signature = [0u8; sign::SIGNATURE_LEN];
            let signing = Instant::now();
            let length = self
                .signer
                .signature_into(path, payload, nonce, &mut signature);
            self.metrics
                .signing_duration
                .observe(signing.elapsed().as_secs_f64());
            let mut authorization =
                HeaderValue::from_bytes(&signature[..length]).map_err(|_| ProxyError::Internal)?;
            authorization.set_sensitive(true);
            headers.insert(
                NONCE,
                HeaderValue::from_str(nonce).map_err(|_| ProxyError::Internal)?,
            );
            headers.insert(AUTHORIZATION, authorization);
        }

        let mut request = Request::new(Full::new(body));
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }
}

/// Phase 3, continued: what LINE Pay would reject or misread is refused here instead.
fn check_payload(
    route: &Route,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<(), ProxyError> {
    if route.method == Method::GET {
        if !body.is_empty() {
            return Err(ProxyError::UnexpectedBody(route.method.to_string()));
        }
        return Ok(());
    }
    if parts.uri.query().is_some() {
        return Err(ProxyError::UnexpectedQuery);
    }
    if body.is_empty() {
        // LINE Pay signs an empty POST body as the empty string (void, expire).
        return Ok(());
    }
    let text = std::str::from_utf8(body).map_err(|error| {
        ProxyError::InvalidJson(format!(
            "not UTF-8 (invalid byte at offset {})",
            error.valid_up_to()
        ))
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|error| ProxyError::InvalidJson(error.to_string()))
}

/// Keeps the in-flight gauge right even when the app disconnects mid-call and the
/// call's future is dropped.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|value| {
            let bytes = value.as_bytes();
            !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut id = [0u8; uuid::fmt::Simple::LENGTH];
            HeaderValue::from_str(uuid::Uuid::new_v4().simple().encode_lower(&mut id))
                .unwrap_or_else(|_| HeaderValue::from_static("-"))
        })
}

/// A bounded label for the method: the standard ones, else `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// The app's headers that may travel on to LINE Pay.
fn forwardable_headers(incoming: &HeaderMap) -> HeaderMap {
    let named_by_connection = connection_named(incoming);
    let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        let text = name.as_str();
        let dropped = HOP_BY_HOP.contains(&text)
            || NOT_FORWARDED.contains(&text)
            || starts_with_folded(text, "x-line-")
            || starts_with_folded(text, "x-forwarded-")
            || named_by_connection.contains(name);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}

/// Some servers read `_` as `-` in header names, so `X_LINE_Authorization` counts as an
/// `X-LINE-*` header. (Names are already lower case.)
fn starts_with_folded(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(n, p)| n == p || (n == b'_' && p == b'-'))
}

/// Phase 6: LINE Pay's answer, as it is, minus what described the upstream hop and
/// minus any header that would pass it off as the sidecar's own refusal.
fn response_filter(response: Response<Bytes>) -> Response<Bytes> {
    let (mut parts, body) = response.into_parts();
    let named_by_connection = connection_named(&parts.headers);
    // One pass over the few names the answer has, then a removal only for those present
    // (removing every candidate by name cost ~2,000 instructions per call).
    let unwanted: Vec<HeaderName> = parts
        .headers
        .keys()
        .filter(|&name| {
            HOP_BY_HOP_NAMES.contains(name)
                || named_by_connection.contains(name)
                // The body was read whole; hyper writes the length of what is actually sent.
                || *name == header::CONTENT_LENGTH
                || *name == crate::error::SIDECAR_ERROR_HEADER
        })
        .cloned()
        .collect();
    for name in unwanted {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, body)
}

/// Headers that the `Connection` header declares hop-by-hop; read before anything is
/// removed, since removing `Connection` first would lose the list.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forged_and_hop_by_hop_headers_are_dropped() {
        let mut incoming = HeaderMap::new();
        for (name, value) in [
            ("x-line-authorization", "forged"),
            ("X-LINE-ChannelId", "999"),
            ("x-line-channelsecret", "leak"),
            ("authorization", "Bearer x"),
            ("host", "evil.example"),
            ("connection", "x-custom-hop, keep-alive"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x_line_authorization", "forged with underscores"),
            ("accept-encoding", "gzip"),
            ("x-request-id", "abc"),
            ("accept-language", "zh-TW"),
        ] {
            incoming.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let kept = forwardable_headers(&incoming);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-request-id", "accept-language"]);
    }

    #[test]
    fn hop_by_hop_names_match_the_list() {
        let names: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, HOP_BY_HOP);
    }

    #[test]
    fn response_loses_hop_headers_only() {
        let response = Response::builder()
            .header("content-type", "application/json")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-line-whatever", "kept: it is LINE Pay's")
            .header("x-linepay-sidecar-error", "forged by the upstream")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let filtered = response_filter(response);
        assert_eq!(filtered.headers()["content-type"], "application/json");
        assert!(filtered.headers().get("x-hop").is_none());
        assert!(filtered.headers().get("connection").is_none());
        assert!(filtered.headers().get("x-line-whatever").is_some());
        assert!(filtered.headers().get("x-linepay-sidecar-error").is_none());
    }
}
