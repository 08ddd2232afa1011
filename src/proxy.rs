//! The request path, in the order a call travels:
//!
//! 1. **request filter**: the target must be a plain path; the method and path must be
//!    on the allowlist (403 / 405 otherwise). Nothing has been read yet.
//! 2. **limit**, first: check-status polls of one transaction closer than
//!    `limits.check_status_interval` (429), then the global, per-route and per-client
//!    token buckets (429), still before the body is read, so a refusal costs almost
//!    nothing.
//! 3. **read body**: whole, capped (413) and time-boxed; POST bodies must be UTF-8 JSON;
//!    then pre-validation against LINE Pay's documented fields (`crate::validate`:
//!    400 `invalid_request` in `enforce` mode, a log line and a count in `warn` mode).
//! 4. **money call** (money routes and POSTs with an `Idempotency-Key`, in
//!    [`crate::journal`]): one per transaction at a time, idempotent replay, the intent
//!    on disk before sending; the call then runs in its own task, its outcome on disk
//!    (and an uncertain one reconciled) before answering.
//! 5. **upstream request**: of the app's headers only those on the allowlist
//!    ([`crate::forward`]: `Accept`, `Accept-Language`, `User-Agent` and the
//!    `request.forward_headers`); then the request id, the sidecar's own `X-LINE-*`
//!    headers and the signature over the exact bytes that will be sent.
//! 6. **forward**: to the configured upstream only, with the route's timeouts.
//! 7. **response filter**: LINE Pay's answer goes back as it is, minus hop-by-hop
//!    headers; its 19-digit ids written as JSON strings when asked (`crate::ids`). (A
//!    status LINE Pay never sends, or an oversized head, was refused by the upstream
//!    client as `502 upstream_protocol` / `upstream_response_too_large`.)
//!
//! Before phase 1 the call's channel is selected ([`crate::channel`]: its port, or the
//! `X-LinePay-Channel` header; 400 `channel_required` / `unknown_channel` /
//! `channel_mismatch` otherwise); every later phase uses that channel's allowlist,
//! bucket, secret, journal scope and upstream only.
//!
//! Before phase 1 the request head's size is checked (431), and before phase 2 the call
//! charges what it will buffer to the process's memory budget ([`crate::budget`]):
//! its head and declared body now, LINE Pay's answer as it arrives (503 `overloaded`).
//!
//! Each phase is one function; a refusal at any phase is a [`ProxyError`] (the limit and
//! upstream layers return their own errors, which `?` converts in `crate::error`),
//! answered as the sidecar's JSON error, and stops the call before anything reaches
//! LINE Pay.

use crate::budget::Budget;
use crate::channel::{self, Channel, Listener};
use crate::config::Config;
use crate::error::ProxyError;
use crate::forward;
use crate::ids;
use crate::inspect;
use crate::journal::{self, Admission, Desk, Hold};
use crate::limit::Limits;
use crate::metrics::{self, Metrics, UNMATCHED_ROUTE};
use crate::money::{self, CallFacts};
use crate::route::{Match, Route, RouteTimeouts, Signing};
use crate::sign;
use crate::timer;
use crate::upstream::Upstream;
use crate::validate::{self, Mode};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::Sleep;

pub(crate) const CHANNEL_ID: HeaderName = HeaderName::from_static("x-line-channelid");
pub(crate) const CHANNEL_SECRET: HeaderName = HeaderName::from_static("x-line-channelsecret");
pub(crate) const NONCE: HeaderName = HeaderName::from_static("x-line-authorization-nonce");
pub(crate) const AUTHORIZATION: HeaderName = HeaderName::from_static("x-line-authorization");
pub(crate) const DEVICE_PROFILE_ID: HeaderName =
    HeaderName::from_static("x-line-merchantdeviceprofileid");
pub(crate) const DEVICE_TYPE: HeaderName = HeaderName::from_static("x-line-merchantdevicetype");

/// The request line plus headers at most. LINE Pay calls need a few hundred bytes;
/// hyper's own bound (`max_buf_size`) is exact only for heads that arrive in several
/// reads, so the size is checked again here, on the parsed head.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// [`forward::HOP_BY_HOP`] as header names, for the answer's filter (a test keeps the two equal).
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

/// The longest request path written to a log line.
const MAX_LOGGED_PATH: usize = 200;

/// Everything one call needs, built once per configuration and shared by all calls.
pub(crate) struct Proxy {
    config: Config,
    /// One per configured channel, in the config's order (never empty).
    channels: Vec<Channel>,
    /// The primary channel's client (`default_channel`, else the first): the probe's.
    upstream: Arc<Upstream>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
    budget: Arc<Budget>,
    user_agent: HeaderValue,
    /// The journal and the in-flight set: one per process, shared by every snapshot.
    desk: Arc<Desk>,
}

/// What one call did, gathered along the path for its log line and metrics.
#[derive(Default)]
struct CallRecord<'a> {
    /// The selected channel (its name and environment label the call), once selected.
    channel: Option<&'a Channel>,
    route: Option<&'a Route>,
    /// The `family` label and log field: the matched route's, the disabled family a
    /// refused call belongs to, else `unmatched`.
    family: Option<&'static str>,
    /// The path, logged only when no route matched (the route template says the rest,
    /// and a matched path may hold a regKey, which can charge a card); never the query.
    /// Copied only then, not on every call.
    unmatched_path: Option<String>,
    error: Option<ProxyError>,
    order_id: Option<OrderId>,
    transaction_id: Option<String>,
    upstream_elapsed: Option<std::time::Duration>,
    /// LINE Pay's `returnCode` and `transactionId`, read once from an answer that goes
    /// to the app unchanged; `None`: `answer` reads them from what it sends.
    answer_fields: Option<AnswerFields>,
}

/// An answer's `returnCode` and (when asked for) `transactionId`, as slices of its body:
/// read once for the journal's orderId, the log line and the metrics, not once for each.
struct AnswerFields {
    return_code: Option<Bytes>,
    transaction_id: Option<Bytes>,
}

impl AnswerFields {
    fn read(body: &Bytes, transaction_id: bool) -> AnswerFields {
        let slice = |field: &str| body.slice_ref(field.as_bytes());
        AnswerFields {
            return_code: inspect::string_field(body, "returnCode").map(slice),
            transaction_id: transaction_id
                .then(|| inspect::id_field(body, "transactionId"))
                .flatten()
                .map(slice),
        }
    }

    /// Both were read as printable ASCII (`inspect`), so they are always UTF-8.
    fn return_code(&self) -> Option<&str> {
        self.return_code
            .as_deref()
            .map(|code| std::str::from_utf8(code).unwrap_or_default())
    }

    fn transaction_id(&self) -> Option<&str> {
        self.transaction_id
            .as_deref()
            .map(|id| std::str::from_utf8(id).unwrap_or_default())
    }
}

/// The call's orderId, for its log line and the journal's orderId queue.
enum OrderId {
    /// Decoded from the path, or read from the query.
    Copied(String),
    /// Read from the request body, and kept as a slice of it (no copy on every POST).
    InBody(Bytes),
}

impl OrderId {
    /// The body's slice was read as printable ASCII (`inspect::string_field`), so it is
    /// always UTF-8; the empty string stands for what cannot happen.
    fn as_str(&self) -> &str {
        match self {
            OrderId::Copied(text) => text,
            OrderId::InBody(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
        }
    }
}

/// The request id header: taken from the app when it sends a sane one, else generated,
/// and always returned to the app.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Proxy {
    /// The upstream client and the limiters are shared handles, so that a reload that
    /// leaves their settings alone keeps the warm connections and the bucket levels.
    pub(crate) fn new(
        config: Config,
        channels: Vec<Channel>,
        upstream: Arc<Upstream>,
        limits: Arc<Limits>,
        metrics: Arc<Metrics>,
        desk: Arc<Desk>,
        budget: Arc<Budget>,
    ) -> Proxy {
        metrics.create_route_series(
            config
                .allowlist
                .routes()
                .iter()
                .filter(|route| money::classify(&route.method, &route.template).is_some())
                .map(|route| route.template.as_str()),
        );
        for channel in &channels {
            metrics.create_channel_series(&channel.name);
        }
        Proxy {
            channels,
            desk,
            limits,
            config,
            upstream,
            metrics,
            budget,
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

    pub(crate) fn desk(&self) -> &Arc<Desk> {
        &self.desk
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The channels of this snapshot, in the config's order.
    pub(crate) fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The channel whose LINE Pay channel id is `channel_id` (a journal row's), with
    /// which a reconciliation asks about that row: its secret and its upstream.
    pub(crate) fn channel_with_id(&self, channel_id: &str) -> Option<&Channel> {
        self.channels.iter().find(|channel| {
            channel.config.credentials.channel_id.as_bytes() == channel_id.as_bytes()
        })
    }

    /// A start-up reconciliation's question about a journal row of `channel_id`, signed
    /// as that channel, with the client of that channel's upstream; `None` when no
    /// configured channel has that id (the row is then judged unknown, never asked with
    /// another channel's secret).
    pub(crate) fn signed_get_for(
        &self,
        channel_id: &str,
        path_and_query: &str,
        signing: Signing,
    ) -> Option<(Arc<Upstream>, Request<Full<Bytes>>)> {
        let channel = self.channel_with_id(channel_id)?;
        let request = self.signed_get(channel, path_and_query, signing)?;
        Some((channel.upstream.clone(), request))
    }

    /// The call's channel, from the listener it came on and its `X-LinePay-Channel`
    /// header.
    fn select<B>(&self, request: &Request<B>, listener: &Listener) -> Result<&Channel, ProxyError> {
        let index = channel::select(
            self.channels.iter().map(|channel| &*channel.name),
            self.config.default_channel.as_deref(),
            listener,
            request.headers(),
        )?;
        self.channels.get(index).ok_or(ProxyError::Internal)
    }

    /// A signed `GET path_and_query` with no header from any app: the question a
    /// reconciliation asks LINE Pay. `legacy_v2`: the v2 scheme. A money call prepares
    /// it before it is sent (about a microsecond: one HMAC), because the call's own task
    /// holds no configuration snapshot to sign with later.
    pub(crate) fn signed_get(
        &self,
        channel: &Channel,
        path_and_query: &str,
        signing: Signing,
    ) -> Option<Request<Full<Bytes>>> {
        let (parts, ()) = Request::get(path_and_query).body(()).ok()?.into_parts();
        // Only the route's signing scheme matters to `upstream_request`.
        let scheme = match signing {
            Signing::ChannelSecret => "/v2/payments",
            Signing::Hmac => "/v3/payments",
        };
        let timeouts = RouteTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(20),
        };
        let route = Route::new(Method::GET, scheme, timeouts).ok()?;
        self.build_request(channel, &route, &parts, Bytes::new(), false)
            .ok()
    }

    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.budget
    }

    /// Answers a call on a connection past `request.max_connections`: `503 overloaded`,
    /// logged, counted and with its request id like every other refusal.
    pub(crate) async fn refuse_over_capacity<B>(&self, request: Request<B>) -> Response<Bytes>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(request, Err(ProxyError::Overloaded)).await
    }

    /// Answers a connection whose request head did not fit in the memory budget while
    /// it arrived (`runtime::meter`): `503 overloaded`, logged and counted like every
    /// refusal. The head was not read, so the call has no path; `method` is the first
    /// word that arrived, when it was one.
    pub(crate) async fn refuse_unread_head(&self, method: Option<Method>) -> Response<Bytes> {
        let mut request = Request::new(http_body_util::Empty::<Bytes>::new());
        *request.method_mut() =
            method.unwrap_or_else(|| Method::from_bytes(b"UNREAD").unwrap_or_default());
        let refusal = ProxyError::OverBudget {
            limit: self.budget.limit(),
        };
        self.answer(request, Err(refusal)).await
    }

    /// Handles one call from the app, which came on `listener`; never fails: every
    /// problem becomes an answer.
    pub(crate) async fn handle<B>(
        &self,
        request: Request<B>,
        listener: &Listener,
    ) -> Response<Bytes>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.answer(request, Ok(listener)).await
    }

    /// Forwards the call that came on a listener (or, with a refusal, refuses it unread)
    /// and turns the outcome into the answer, with the request id, the one log line and
    /// the metrics.
    async fn answer<B>(
        &self,
        request: Request<B>,
        listener: Result<&Listener, ProxyError>,
    ) -> Response<Bytes>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::enter(&self.metrics.in_flight);
        let method = request.method().clone();
        let request_id = request_id(request.headers());
        let mut call = CallRecord::default();
        let outcome = match listener.and_then(|listener| self.select(&request, listener)) {
            Ok(channel) => {
                call.channel = Some(channel);
                self.forward(channel, request, &request_id, &mut call).await
            }
            Err(refusal) => Err(refusal),
        };
        let mut response = match outcome {
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
        let fields = call.answer_fields.take();
        let return_code = match (&call.error, &fields) {
            (None, Some(fields)) => fields.return_code(),
            (None, None) => inspect::string_field(response.body(), "returnCode"),
            (Some(_), _) => None,
        };
        // Borrowed from the answer for the log line, not copied into the record.
        let answered_transaction = match (&call.transaction_id, &call.error, &fields) {
            (None, None, Some(fields)) => fields.transaction_id(),
            (None, None, None) => inspect::id_field(response.body(), "transactionId"),
            _ => None,
        };
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
        let order_id = call.order_id.as_ref().map(OrderId::as_str);
        let path = call.unmatched_path.as_deref();
        let transaction_id = call.transaction_id.as_deref().or(answered_transaction);
        let channel = call.channel.map(|channel| &*channel.name);
        match &call.error {
            None => tracing::info!(
                request_id, channel, %method, path, route, family, status, return_code, order_id,
                transaction_id, upstream_ms, elapsed_ms, "call forwarded"
            ),
            Some(error) => tracing::warn!(
                request_id, channel, %method, path, route, family, status, code = error.code(), order_id,
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
        let code = metrics::return_code_label(return_code);
        let status_key = metrics::status_key(&status);
        // A matched route's series are kept in its channel (`metrics::ChannelSeries`);
        // only they are: the method and family are then the route's own.
        let kept = match (call.channel, call.route, call.family) {
            (Some(channel), Some(matched), None) if *method == matched.method => channel
                .series
                .route(channel.config.allowlist.routes(), matched),
            _ => None,
        };
        let requests = || {
            metrics.requests.with_label_values(&[
                route,
                family,
                method_label(method),
                metrics::status_label(&status),
                code,
            ])
        };
        match kept {
            Some(series) => series.count_answer(status_key, code, requests),
            None => requests().inc(),
        }
        if let Some(channel) = call.channel {
            channel.series.count_answer(status_key, code, || {
                metrics.channel_requests.with_label_values(&[
                    &channel.name,
                    channel.environment,
                    metrics::status_label(&status),
                    code,
                ])
            });
        }
        if let Some(elapsed) = call.upstream_elapsed {
            let duration = || metrics.upstream_duration.with_label_values(&[route]);
            match kept {
                Some(series) => series
                    .upstream_duration(duration)
                    .observe(elapsed.as_secs_f64()),
                None => duration().observe(elapsed.as_secs_f64()),
            }
        }
        if let Some(error) = &call.error {
            metrics.refusals.with_label_values(&[error.code()]).inc();
            if let Some(kind) = error.upstream_kind() {
                metrics.upstream_errors.with_label_values(&[kind]).inc();
                if let Some(channel) = call.channel {
                    metrics
                        .channel_upstream_errors
                        .with_label_values(&[&*channel.name, kind])
                        .inc();
                }
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
        channel: &'a Channel,
        request: Request<B>,
        request_id: &HeaderValue,
        call: &mut CallRecord<'a>,
    ) -> Result<Response<Bytes>, ProxyError>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = request.into_parts();
        let head_bytes = head_bytes(&parts);
        if head_bytes > MAX_HEAD_BYTES {
            return Err(ProxyError::HeadersTooLarge {
                limit: MAX_HEAD_BYTES,
            });
        }
        let route = match self.request_filter(channel, &parts, call) {
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
        // characters, UTF-8, no control characters); logged decoded, as journaled.
        call.order_id = route
            .param(parts.uri.path(), "orderId")
            .and_then(money::order_id_from_path)
            .map(OrderId::Copied);
        let expected = head_bytes + self.expected_body_bytes(&parts);
        let mut charge = self.budget.charge(expected).ok_or(ProxyError::OverBudget {
            limit: self.budget.limit(),
        })?;
        self.limits.admit_poll(route, parts.uri.path())?;
        if let Some(limiter) = &channel.limiter {
            limiter.admit()?;
        }
        self.limits.admit(route, &parts.headers).await?;
        // One timer for the body's wait and then LINE Pay's answer (`crate::timer`).
        let mut timer = std::pin::pin!(tokio::time::sleep(self.config.request.body_timeout));
        let body = self.read_body(&parts, body, timer.as_mut()).await?;
        self.check_body(route, &parts, &body, request_id)?;
        if call.order_id.is_none() {
            call.order_id = match parts.uri.query() {
                Some(query) => {
                    inspect::query_field(query, "orderId").map(|id| OrderId::Copied(id.to_owned()))
                }
                None => inspect::string_field(&body, "orderId")
                    .map(|id| OrderId::InBody(body.slice_ref(id.as_bytes()))),
            };
        }
        if call.transaction_id.is_none() {
            call.transaction_id = parts
                .uri
                .query()
                .and_then(|query| inspect::query_field(query, "transactionId"))
                .map(str::to_owned);
        }
        let ids_as_strings = ids::requested(
            parts.headers.get(&ids::IDS_AS_STRINGS_HEADER),
            self.config.response.ids_as_strings,
        );
        let ticket = self
            .money_call(channel, route, &parts, &body, request_id)
            .await?;
        let ticket = match ticket {
            None => None,
            Some(Admission::Replay(answer)) => return Ok(quote_ids(answer, ids_as_strings)),
            Some(Admission::Send(ticket)) => Some(ticket),
        };
        let mut upstream_request = self.upstream_request(channel, route, &parts, body)?;
        upstream_request
            .headers_mut()
            .insert(REQUEST_ID, request_id.clone());
        if let Some((ticket, status_request)) = ticket {
            let job = journal::Job {
                upstream: channel.upstream.clone(),
                request: upstream_request,
                timeouts: route.timeouts,
                status_request,
                // The journal keeps LINE Pay's answer byte for byte; ids are quoted for
                // the app only, on the way out.
                response_filter: |response| response_filter(response, false),
                metrics: self.metrics.clone(),
                seal: channel.seal.clone(),
                // The call's share of the memory budget goes with it into its own task.
                charge,
            };
            let hold = parts.extensions.get::<Hold>();
            // Boxed: the money path is rare, and its future (journal writes, shared
            // claims) would otherwise make every call's future that much larger, and
            // hyper moves each call's future into place (issue 20).
            let (answer, elapsed) = Box::pin(self.desk.send(ticket, job, hold)).await;
            call.upstream_elapsed = Some(elapsed);
            // A `/payments/request` with an Idempotency-Key comes this way.
            if let (Ok(response), Some(order_id), true) =
                (&answer, call.order_id.as_ref(), is_payment_request(route))
            {
                let fields = AnswerFields::read(response.body(), true);
                self.remember_order(channel, route, &fields, order_id.as_str())
                    .await;
            }
            return answer.map(|answer| quote_ids(answer, ids_as_strings));
        }
        let sent = Instant::now();
        // Durations are at most a day (`config::units`): no overflow.
        timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(sent) + route.timeouts.read);
        let response = channel
            .upstream
            .send_timed(upstream_request, route.timeouts, &mut charge, timer)
            .await;
        call.upstream_elapsed = Some(sent.elapsed());
        let response = response?;
        // What `answer` would read for the log line, and `remember_order` for the journal.
        let wanted =
            call.transaction_id.is_none() || (call.order_id.is_some() && is_payment_request(route));
        let fields = AnswerFields::read(response.body(), wanted);
        if let Some(order_id) = call.order_id.as_ref() {
            self.remember_order(channel, route, &fields, order_id.as_str())
                .await;
        }
        // Quoted ids change the body: `answer` then reads what it sends.
        if !ids_as_strings {
            call.answer_fields = Some(fields);
        }
        Ok(response_filter(response, ids_as_strings))
    }

    /// After a successful `POST …/payments/request`: the journal learns which orderId
    /// its transaction was requested with, for the transaction's later money calls.
    async fn remember_order(
        &self,
        channel: &Channel,
        route: &Route,
        answer: &AnswerFields,
        order_id: &str,
    ) {
        if let Some(transaction_id) = requested_transaction(route, answer) {
            self.desk
                .remember_order(
                    channel
                        .config
                        .credentials
                        .channel_id
                        .to_str()
                        .unwrap_or("-"),
                    transaction_id,
                    order_id,
                    &self.metrics,
                )
                .await;
        }
    }

    /// Phase 3: the body, as JSON (`check_payload`) and against LINE Pay's documented
    /// fields (`prevalidate`). A body the streaming pre-validation finds clean is read
    /// once: that pass reads it at least as strictly as serde_json, so it is valid JSON
    /// too (`validate::passes`). Any other body takes both checks in their
    /// order, so every refusal keeps its code and message.
    fn check_body(
        &self,
        route: &Route,
        parts: &http::request::Parts,
        body: &Bytes,
        request_id: &HeaderValue,
    ) -> Result<(), ProxyError> {
        let rules = self.config.prevalidation.for_template(&route.template);
        if let Some((_, table)) = rules {
            // Only where `check_payload` would parse the body: a GET's body, a POST's
            // query and an empty body are its own refusals or passes.
            let parsed_as_json =
                route.method != Method::GET && parts.uri.query().is_none() && !body.is_empty();
            if parsed_as_json && validate::passes(table, body) {
                debug_assert!(
                    check_payload(route, parts, body).is_ok(),
                    "pre-validation's fast pass passed a body that is not JSON"
                );
                return Ok(());
            }
        }
        check_payload(route, parts, body)?;
        match rules {
            Some((mode, table)) => self.prevalidate(mode, table, route, body, request_id),
            None => Ok(()),
        }
    }

    /// Phase 3, last: the body against LINE Pay's documented fields, for routes whose
    /// `prevalidation` mode is not `off`, once the fast pass has not found it clean (the
    /// walk writes the findings). Findings are counted and logged; in `enforce` mode they
    /// refuse the call. The body itself is never changed.
    fn prevalidate(
        &self,
        mode: Mode,
        table: &validate::Table,
        route: &Route,
        body: &Bytes,
        request_id: &HeaderValue,
    ) -> Result<(), ProxyError> {
        let findings = validate::walk(table, body);
        if findings.is_empty() {
            return Ok(());
        }
        for finding in &findings {
            self.metrics
                .prevalidation_findings
                .with_label_values(&[table.family, finding.rule.label()])
                .inc();
        }
        let message = validate::describe(&findings);
        tracing::warn!(
            request_id = request_id.to_str().unwrap_or("-"),
            route = %route.template,
            mode = mode.as_str(),
            findings = %message,
            rules = table.reference,
            "pre-validation: LINE Pay would refuse this body"
        );
        match mode {
            Mode::Enforce => Err(ProxyError::InvalidRequest(message)),
            Mode::Warn | Mode::Off => Ok(()),
        }
    }

    /// Phase 4: a money call, or a POST with an `Idempotency-Key`, is admitted and put on
    /// record (with the signed status question a reconciliation would ask); `None` for
    /// every other call.
    async fn money_call(
        &self,
        channel: &Channel,
        route: &Route,
        parts: &http::request::Parts,
        body: &Bytes,
        request_id: &HeaderValue,
    ) -> Result<Option<Admission<(journal::Ticket, Option<Request<Full<Bytes>>>)>>, ProxyError>
    {
        let path = parts.uri.path();
        // The parameters as sent: `read` decodes the orderId once (the key binding
        // keeps binding the raw target).
        let facts = || {
            CallFacts::read(
                route.param(path, "transactionId"),
                route.param(path, "orderId"),
                body,
            )
        };
        let channel_id = &channel.config.credentials.channel_id;
        let Some(plan) = self
            .desk
            .plan(route, parts, facts, request_id, channel_id)?
        else {
            return Ok(None);
        };
        let status_request = plan
            .money
            .and_then(|money| money::status_query(&route.template, money, &plan.facts))
            .and_then(|query| self.signed_get(channel, &query, route.signing));
        // Asks LINE Pay about another pod's call whose lease ended (shared state only),
        // as this call's channel.
        let ask = |query: &str, signing| self.signed_get(channel, query, signing);
        let check = journal::Check {
            upstream: &channel.upstream,
            budget: &self.budget,
            ask: &ask,
        };
        // Boxed for the same reason as `Desk::send` in `forward`: only money calls get here.
        let admitted =
            Box::pin(
                self.desk
                    .admit_checked(plan, &channel.seal, &self.metrics, Some(&check)),
            )
            .await?;
        Ok(Some(match admitted {
            Admission::Replay(answer) => Admission::Replay(answer),
            Admission::Send(ticket) => Admission::Send((ticket, status_request)),
        }))
    }

    /// Phase 1: is this call allowed at all? A refused call that still names a route or
    /// a family (a bad parameter, a disabled family) is recorded in `call` for the log
    /// line and the metrics.
    fn request_filter<'a>(
        &'a self,
        channel: &'a Channel,
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
        let allowlist = &channel.config.allowlist;
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

    /// What the body will take in memory: its declared length (capped: a longer one is
    /// refused unread), the cap when it comes chunked, nothing when there is none.
    fn expected_body_bytes(&self, parts: &http::request::Parts) -> usize {
        let limit = self.config.request.max_body_bytes;
        if parts.headers.contains_key(header::TRANSFER_ENCODING) {
            return limit;
        }
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |length| {
                usize::try_from(length).unwrap_or(usize::MAX).min(limit)
            })
    }

    /// Phase 3: the whole body, capped and time-boxed (`timer`, set to end
    /// `request.body_timeout` from now), before anything is sent.
    async fn read_body<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        timer: Pin<&mut Sleep>,
    ) -> Result<Bytes, ProxyError>
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
        let collect = std::pin::pin!(Limited::new(body, limit).collect());
        let collected = timer::within(timer, collect)
            .await
            .ok_or(ProxyError::BodyTimeout(timeout))?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(error) if error.is::<http_body_util::LengthLimitError>() => {
                Err(ProxyError::BodyTooLarge { limit })
            }
            Err(_) => Err(ProxyError::BodyRead),
        }
    }

    /// Phase 5: the request LINE Pay will receive, signed over its exact bytes.
    fn upstream_request(
        &self,
        channel: &Channel,
        route: &Route,
        parts: &http::request::Parts,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ProxyError> {
        self.build_request(channel, route, parts, body, true)
    }

    /// `timed`: the signing time goes into the signing metric (a call's signature, not
    /// a reconciliation's question prepared beside it).
    fn build_request(
        &self,
        channel: &Channel,
        route: &Route,
        parts: &http::request::Parts,
        body: Bytes,
        timed: bool,
    ) -> Result<Request<Full<Bytes>>, ProxyError> {
        let path = parts.uri.path();
        let query = parts.uri.query();
        // In origin form, `/path?query`, as it goes on the wire: the client sends every
        // request to its configured upstream, with that upstream's `Host`, whatever the
        // URI holds (`upstream::keepalive`).
        let uri = parts
            .uri
            .path_and_query()
            .map_or_else(http::Uri::default, |target| http::Uri::from(target.clone()));

        let mut headers =
            forward::forwardable(&parts.headers, &self.config.request.forward_headers);
        // The per-client limit's header is the app's label for the sidecar, not LINE Pay's.
        if let Some(client) = &self.config.limits.per_client {
            headers.remove(&client.header);
        }
        // The app's requests to the sidecar, not to LINE Pay.
        headers.remove(&ids::IDS_AS_STRINGS_HEADER);
        headers.remove(channel::CHANNEL_HEADER);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if !headers.contains_key(header::USER_AGENT) {
            headers.insert(header::USER_AGENT, self.user_agent.clone());
        }
        // This channel's own: its id, device headers and secret, never another's.
        let credentials = &channel.config.credentials;
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
            let length = channel
                .signer
                .signature_into(path, payload, nonce, &mut signature);
            if timed {
                self.metrics
                    .signing_duration
                    .observe(signing.elapsed().as_secs_f64());
            }
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

/// The request line and headers as they came on the wire, near enough: method, target,
/// and `name: value\r\n` per header.
fn head_bytes(parts: &http::request::Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    parts.method.as_str().len() + target + crate::upstream::head_bytes(&parts.headers) + 12
}

/// Phase 7: LINE Pay's answer, as it is, minus what described the upstream hop and
/// minus any header that would pass it off as the sidecar's own refusal; with its id
/// numbers spliced into strings when `ids_as_strings` (no other byte changes).
fn response_filter(response: Response<Bytes>, ids_as_strings: bool) -> Response<Bytes> {
    let (mut parts, body) = response.into_parts();
    let body = match ids_as_strings {
        true => ids::quote_ids(&body).unwrap_or(body),
        false => body,
    };
    let named_by_connection = forward::connection_named(&parts.headers);
    let unwanted = |name: &HeaderName| {
        HOP_BY_HOP_NAMES.contains(name)
            || named_by_connection.contains(name)
            // The body was read whole; hyper writes the length of what is actually sent.
            || *name == header::CONTENT_LENGTH
            || *name == crate::error::SIDECAR_ERROR_HEADER
    };
    // A pass over the few names the answer has per removal (removing every candidate by
    // name cost ~2,000 instructions per call; collecting the names first, one `Vec` per
    // call: `Content-Length` is always there).
    while let Some(name) = parts.headers.keys().find(|name| unwanted(name)).cloned() {
        parts.headers.remove(name);
    }
    Response::from_parts(parts, body)
}

/// `POST …/payments/request`: the only plain call whose later money calls name no order.
fn is_payment_request(route: &Route) -> bool {
    route.method == http::Method::POST && route.template.ends_with("/payments/request")
}

/// The transactionId LINE Pay gave a successful `POST …/payments/request`, from the
/// fields read from its answer.
fn requested_transaction<'a>(route: &Route, answer: &'a AnswerFields) -> Option<&'a str> {
    if !is_payment_request(route) || answer.return_code() != Some("0000") {
        return None;
    }
    answer.transaction_id().filter(|id| !id.is_empty())
}

/// An answer already filtered (a replay from the journal, or one the journal kept byte
/// for byte), with its id numbers spliced into strings when the app asked.
fn quote_ids(response: Response<Bytes>, ids_as_strings: bool) -> Response<Bytes> {
    if !ids_as_strings {
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = ids::quote_ids(&body).unwrap_or(body);
    Response::from_parts(parts, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_match_the_list() {
        let names: Vec<&str> = HOP_BY_HOP_NAMES.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, forward::HOP_BY_HOP);
    }

    #[test]
    fn an_order_id_reads_the_same_copied_or_sliced_from_the_body() {
        let body = Bytes::from_static(br#"{"amount":1,"orderId":"A-1 b"}"#);
        let read = inspect::string_field(&body, "orderId").unwrap();
        let sliced = OrderId::InBody(body.slice_ref(read.as_bytes()));
        assert_eq!(sliced.as_str(), "A-1 b");
        assert_eq!(OrderId::Copied("pos 1/2".into()).as_str(), "pos 1/2");
        assert_eq!(OrderId::InBody(Bytes::from_static(b"caf\xff")).as_str(), "");
    }

    #[test]
    fn an_answer_is_read_once_for_the_journal_and_the_log_line() {
        use std::time::Duration;
        let timeouts = RouteTimeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(20),
        };
        let route = |method, template| Route::new(method, template, timeouts).unwrap();
        let request = route(Method::POST, "/v3/payments/request");
        let v2_request = route(Method::POST, "/v2/payments/request");
        let confirm = route(Method::POST, "/v3/payments/{transactionId}/confirm");
        let get_request = route(Method::GET, "/v3/payments/request");
        let ok = Bytes::from_static(
            br#"{"returnCode":"0000","returnMessage":"Success.","info":{"paymentUrl":{"web":"https://x"},"transactionId":2025010112345678901}}"#,
        );
        let fields = AnswerFields::read(&ok, true);
        assert_eq!(fields.return_code(), Some("0000"));
        assert_eq!(fields.transaction_id(), Some("2025010112345678901"));
        assert_eq!(
            requested_transaction(&request, &fields),
            Some("2025010112345678901")
        );
        assert_eq!(
            requested_transaction(&v2_request, &fields),
            Some("2025010112345678901")
        );
        assert_eq!(requested_transaction(&confirm, &fields), None);
        assert_eq!(requested_transaction(&get_request, &fields), None);
        // Not asked for: not read.
        let without = AnswerFields::read(&ok, false);
        assert_eq!(without.return_code(), Some("0000"));
        assert_eq!(without.transaction_id(), None);
        assert_eq!(requested_transaction(&request, &without), None);
        let quoted =
            Bytes::from_static(br#"{"returnCode":"0000","info":{"transactionId":"2025"}}"#);
        let fields = AnswerFields::read(&quoted, true);
        assert_eq!(requested_transaction(&request, &fields), Some("2025"));
        for refused in [
            &br#"{"returnCode":"1106","info":{"transactionId":2025}}"#[..],
            br#"{"returnCode":"0000","info":{}}"#,
            br#"{"returnCode":"0000","info":{"transactionId":""}}"#,
            br#"{"info":{"transactionId":2025}}"#,
            b"<html>bad gateway</html>",
        ] {
            let body = Bytes::from_static(refused);
            let fields = AnswerFields::read(&body, true);
            assert_eq!(requested_transaction(&request, &fields), None);
            assert_eq!(
                fields.return_code(),
                inspect::string_field(&body, "returnCode")
            );
            assert_eq!(
                fields.transaction_id(),
                inspect::id_field(&body, "transactionId")
            );
        }
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
        let filtered = response_filter(response, true);
        assert_eq!(filtered.headers()["content-type"], "application/json");
        assert!(filtered.headers().get("x-hop").is_none());
        assert!(filtered.headers().get("connection").is_none());
        assert!(filtered.headers().get("x-line-whatever").is_some());
        assert!(filtered.headers().get("x-linepay-sidecar-error").is_none());
    }
}

#[cfg(test)]
mod channel_signing;
#[cfg(test)]
mod metrics_tests;
