//! The egress client: one pooled, keep-alive HTTPS client to LINE Pay.
//!
//! Mechanism only: the proxy hands it a finished, signed request and a route's timeouts,
//! and gets back a whole response or a classified [`UpstreamError`]. Failures are told
//! apart the way an operator needs at 3 a.m.: DNS, connect refused, connect timeout,
//! TLS, egress proxy, response timeout, broken connection, oversized answer. The first
//! five mean the call never left the sidecar; the last three mean it may have reached
//! LINE Pay ([`UpstreamError::retry_safe`]). `crate::error` turns them into the app's
//! answer; this layer knows nothing of HTTP status codes for its own failures.
//!
//! Keep-alive is what makes the sidecar faster than a PHP app calling LINE Pay directly:
//! a PHP request that opens a fresh connection per call still reuses one warm TLS
//! connection here (`keepalive`: one stack of idle connections per proxy worker). A
//! request is sent again only when hyper hands it back unwritten from a connection found
//! closed while idle, which is safe for payments.
//!
//! This file is the clients and their public API: [`Upstream`] (calls and the readiness
//! probe), [`EchoClient`] (the `egress.expect_ip` question) and the classification of
//! their failures. How a connection is opened lives below them, innermost first:
//! - `resolve`: the resolver. With `egress.pin` it answers only the pinned IPs, and only
//!   for the upstream host; with `egress.bind_address`, only addresses of its family.
//! - `connector`: the connection stack for LINE Pay's IP whitelist (policy in
//!   [`crate::egress`]): TCP bound to `egress.bind_address`; with `egress.proxy`, a
//!   CONNECT tunnel through the proxy (to the pinned IP when pinned); TLS around the
//!   whole path, so it runs end to end to LINE Pay and SNI and the certificate check
//!   always use the host name of `upstream.url`; the connect timeout over all of it.

mod connector;
mod keepalive;
mod resolve;
mod settings;

pub(crate) use self::settings::ClientSettings;

use self::connector::{
    check_upstream_fits_egress, connector, describe, log_egress, tls_config, Connector,
    ProxyTunnelError,
};
use self::keepalive::{KeepAlive, Limits, SendError};
use self::resolve::DnsError;
use crate::budget::Charge;
use crate::egress::EgressConfig;
use crate::route::RouteTimeouts;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the upstream client could not be built (at start-up, never per call).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    /// `upstream.ca_file` could not be read as PEM.
    #[error("upstream.ca_file {}: {reason}", path.display())]
    CaFileUnreadable {
        path: PathBuf,
        reason: rustls_pki_types::pem::Error,
    },
    #[error("upstream.ca_file {}: holds no PEM certificate", path.display())]
    CaFileEmpty { path: PathBuf },
    /// A certificate in `upstream.ca_file` is not a usable trust anchor.
    #[error("upstream.ca_file {}: {reason}", path.display())]
    CaFileCertificate {
        path: PathBuf,
        reason: rustls::Error,
    },
    #[error("TLS set-up failed: {0}")]
    Tls(rustls::Error),
    /// An IP-literal upstream skips the resolver, so the pin could never apply to it.
    #[error("upstream.url is the IP address {address}, which egress.pin does not list: add it to egress.pin or use the host name")]
    UnpinnedIpUpstream { address: IpAddr },
    /// A socket bound to one IP version cannot dial the other.
    #[error("upstream.url {address} and egress.bind_address {bind} are of different IP versions: a connection from {bind} cannot reach it")]
    BindFamilyMismatch { address: IpAddr, bind: IpAddr },
    /// `origin` names where the credentials came from (a key or a file), never them.
    #[error("{origin}: the proxy credentials do not make a valid header")]
    ProxyCredentials { origin: String },
}

/// Why one call to LINE Pay (or the readiness probe) failed. What matters most is
/// whether the call may have reached LINE Pay: see [`UpstreamError::retry_safe`].
/// The messages are the app's: they say what to do next and never carry the upstream's
/// error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("the LINE Pay host name could not be resolved; the call did not reach LINE Pay and may be sent again")]
    Dns,
    #[error("no connection to LINE Pay could be opened within the connect timeout ({0:?}); the call did not reach LINE Pay and may be sent again")]
    ConnectTimeout(Duration),
    /// Refused, unreachable, or reset before the request was written.
    #[error("LINE Pay refused the connection or could not be reached; the call did not reach LINE Pay and may be sent again")]
    Unreachable,
    #[error("the TLS handshake with LINE Pay failed (certificate or protocol); the call did not reach LINE Pay")]
    Tls,
    #[error("the egress proxy (egress.proxy.url) could not be reached or did not open a tunnel to LINE Pay; the call did not reach LINE Pay and may be sent again")]
    Proxy,
    /// No whole answer within the route's read timeout, after the request was sent.
    #[error("LINE Pay did not answer within {0:?}; the call may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    ReadTimeout(Duration),
    /// The connection broke once the request may have been written.
    #[error("the connection to LINE Pay failed during the call; it may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    Protocol,
    #[error("LINE Pay's answer was larger than the {limit}-byte limit (upstream.max_response_bytes); the call may have been processed")]
    ResponseTooLarge { limit: usize },
    /// More header bytes than any LINE Pay answer carries.
    #[error("LINE Pay's answer headers were larger than the {limit}-byte limit; the call may have been processed")]
    ResponseHeadersTooLarge { limit: usize },
    /// A status LINE Pay never sends (1xx, `101 Switching Protocols`, 3xx, or a code
    /// outside the registered ones): passed on, an app could read it as a success.
    #[error("LINE Pay answered with HTTP status {0}, which is not an answer to an API call; the call may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    UnexpectedStatus(u16),
    /// The answer did not fit in `request.max_buffered_bytes` next to the other calls.
    #[error("LINE Pay's answer did not fit in the sidecar's memory budget (request.max_buffered_bytes, {limit} bytes); the call may have been processed: read the payment details (GET /v3/payments) before sending it again")]
    OverBudget { limit: usize },
    /// The client has no connections: it was built for an allowlist without a single
    /// route, so no connect timeout. Nothing was sent.
    #[error("the sidecar could not build the upstream request")]
    NoPool,
}

impl UpstreamError {
    /// Whether the call certainly never reached LINE Pay, so sending it again cannot
    /// double a payment or a refund.
    pub(crate) fn retry_safe(&self) -> bool {
        match self {
            UpstreamError::Dns
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::Unreachable
            | UpstreamError::Tls
            | UpstreamError::Proxy
            | UpstreamError::NoPool => true,
            UpstreamError::ReadTimeout(_)
            | UpstreamError::Protocol
            | UpstreamError::UnexpectedStatus(_)
            | UpstreamError::ResponseTooLarge { .. }
            | UpstreamError::ResponseHeadersTooLarge { .. }
            | UpstreamError::OverBudget { .. } => false,
        }
    }

    /// The `kind` label of `linepay_sidecar_upstream_errors_total`; `None` for
    /// [`UpstreamError::NoPool`], which is the sidecar's fault, not the network's.
    pub(crate) fn kind(&self) -> Option<&'static str> {
        match self {
            UpstreamError::Dns => Some("dns"),
            UpstreamError::Unreachable => Some("connect"),
            UpstreamError::ConnectTimeout(_) => Some("connect_timeout"),
            UpstreamError::Tls => Some("tls"),
            UpstreamError::Proxy => Some("proxy"),
            UpstreamError::ReadTimeout(_) => Some("timeout"),
            UpstreamError::Protocol | UpstreamError::UnexpectedStatus(_) => Some("protocol"),
            UpstreamError::ResponseTooLarge { .. }
            | UpstreamError::ResponseHeadersTooLarge { .. } => Some("response_too_large"),
            UpstreamError::NoPool | UpstreamError::OverBudget { .. } => None,
        }
    }
}

/// Why the `egress.expect_ip` echo service could not be asked. One line for logs and
/// `/readyz`; it may carry the echo service's own error text (it is not LINE Pay, and
/// this never reaches an app).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EchoError {
    #[error("cannot build the request: {0}")]
    Request(http::Error),
    /// No connection, or it broke: `failure` is classified as for a LINE Pay call, and
    /// `detail` is the error with its causes.
    #[error("{detail}")]
    Connection {
        failure: UpstreamError,
        detail: String,
    },
    #[error("it answered HTTP {0}")]
    Status(http::StatusCode),
    #[error("its answer could not be read: {0}")]
    Read(Box<dyn std::error::Error + Send + Sync>),
    #[error("its answer is not UTF-8")]
    NotUtf8,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

thread_local! {
    // This thread's proxy worker (`None` outside the workers): which of the per-worker
    // stacks of idle connections its calls use.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// How many proxy workers (threads, each with its own runtime and idle connections) the
/// sidecar runs: one per core it may use (`available_parallelism` honours CPU affinity
/// and cgroup quotas), at most 64.
pub(crate) fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
}

/// Marks the current thread as proxy worker `index`: its calls use stack `index`, so a
/// call and its kept-alive upstream connection stay on the same thread.
pub(crate) fn enter_worker(index: usize) {
    WORKER.with(|worker| worker.set(Some(index)));
}

pub(crate) struct Upstream {
    base: http::Uri,
    /// Per distinct connect timeout (the connector owns the timeout; with the defaults
    /// that is exactly one), one stack of idle connections per proxy worker (and one for
    /// the calls made outside them): a connection's task runs on the thread that opened
    /// it, and only that thread's calls use it.
    clients: Vec<(Duration, KeepAlive)>,
    /// Opens bare connections for the readiness probe (same DNS, TCP, TLS path).
    probe_connector: Option<Connector>,
    max_response_bytes: usize,
    settings: ClientSettings,
}

impl Upstream {
    /// Builds the connectors. Refuses egress settings that the upstream URL would bypass:
    /// an IP-literal upstream that the pin does not list or the bind address cannot reach.
    /// (Whether this host holds the bind address is checked by the caller, the runtime,
    /// before it builds a client.)
    pub(crate) fn new(settings: ClientSettings) -> Result<Upstream, UpstreamBuildError> {
        let ClientSettings {
            upstream: config,
            egress,
            connect_timeouts,
        } = &settings;
        check_upstream_fits_egress(&config.url, egress)?;
        log_egress(egress);
        let tls = tls_config(config.ca_file.as_deref())?;
        let pinned_host = config.url.host().unwrap_or_default();
        let workers = worker_count();
        let connectors: Vec<(Duration, Connector)> = connect_timeouts
            .iter()
            .map(|&timeout| {
                let connector = connector(tls.clone(), timeout, egress, Some(pinned_host))?;
                Ok((timeout, connector))
            })
            .collect::<Result<_, UpstreamBuildError>>()?;
        let probe_connector = connectors.first().map(|(_, connector)| connector.clone());
        // A URL without a host is refused when the configuration is read; such a client
        // would only answer `NoPool`.
        let clients = connectors
            .into_iter()
            .filter_map(|(timeout, connector)| {
                let limits = Limits {
                    workers,
                    idle_timeout: config.pool_idle_timeout,
                    max_idle: config.pool_max_idle_per_host,
                    max_buf_size: MAX_BUF_SIZE,
                };
                KeepAlive::new(connector, &config.url, limits).map(|client| (timeout, client))
            })
            .collect();
        Ok(Upstream {
            base: config.url.clone(),
            clients,
            probe_connector,
            max_response_bytes: config.max_response_bytes,
            settings,
        })
    }

    /// What this client was built from: a reload compares it with the next one.
    pub(crate) fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `https://host[:port]` that every call goes to.
    pub(crate) fn base(&self) -> &http::Uri {
        &self.base
    }

    /// Sends one call and reads the whole answer, within the route's read timeout. The
    /// answer's bytes are added to `charge` as they arrive (the call's share of the
    /// memory budget); an answer that does not fit is dropped, not buffered.
    pub(crate) async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeouts: RouteTimeouts,
        charge: &mut Charge,
    ) -> Result<http::Response<Bytes>, UpstreamError> {
        let timer = std::pin::pin!(tokio::time::sleep(timeouts.read));
        self.send_timed(request, timeouts, charge, timer).await
    }

    /// [`Upstream::send`], timed by the caller's `timer`, set to end the read timeout
    /// after the call was sent: a proxied call's one timer (`crate::timer`).
    pub(crate) async fn send_timed(
        &self,
        request: http::Request<Full<Bytes>>,
        timeouts: RouteTimeouts,
        charge: &mut Charge,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<http::Response<Bytes>, UpstreamError> {
        let client = self.client_for(timeouts.connect)?;
        let worker = WORKER.with(std::cell::Cell::get);
        let exchange = std::pin::pin!(async {
            let (response, lease) = client
                .send(worker, request)
                .await
                .map_err(|error| classify(&error, timeouts.connect))?;
            check_answer_head(&response)?;
            let head_bytes = head_bytes(response.headers());
            if !charge.grow(head_bytes) {
                return Err(UpstreamError::OverBudget {
                    limit: charge.limit(),
                });
            }
            let (parts, body) = response.into_parts();
            let mut body = Limited::new(body, self.max_response_bytes);
            // The answer usually comes as one frame: kept as it is, not copied; a second
            // frame joins them into one buffer.
            let mut single: Option<Bytes> = None;
            let mut collected = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        UpstreamError::ResponseTooLarge {
                            limit: self.max_response_bytes,
                        }
                    } else {
                        UpstreamError::Protocol
                    }
                })?;
                if let Ok(data) = frame.into_data() {
                    if !charge.grow(data.len()) {
                        return Err(UpstreamError::OverBudget {
                            limit: charge.limit(),
                        });
                    }
                    match single.take() {
                        None if collected.is_empty() => single = Some(data),
                        None => collected.extend_from_slice(&data),
                        Some(first) => {
                            collected.reserve(first.len() + data.len());
                            collected.extend_from_slice(&first);
                            collected.extend_from_slice(&data);
                        }
                    }
                }
            }
            // Read to the end without an error: the connection may serve another call.
            client.give_back(lease);
            let answer = single.unwrap_or_else(|| collected.freeze());
            Ok(http::Response::from_parts(parts, answer))
        });
        crate::timer::within(timer, exchange)
            .await
            .unwrap_or(Err(UpstreamError::ReadTimeout(timeouts.read)))
    }

    /// Opens one connection to the upstream through the same connector calls use (DNS,
    /// TCP, TLS) and closes it, sending no request: the readiness check.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<(), UpstreamError> {
        let mut connector = self.probe_connector.clone().ok_or(UpstreamError::NoPool)?;
        let connect = tower_service::Service::call(&mut connector, self.base.clone());
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(UpstreamError::ConnectTimeout(timeout)),
            Ok(Ok(_connection)) => Ok(()),
            Ok(Err(error)) => Err(classify_connect_failure(&*error, timeout)),
        }
    }

    fn client_for(&self, connect_timeout: Duration) -> Result<&KeepAlive, UpstreamError> {
        self.clients
            .iter()
            .find(|(timeout, _)| *timeout == connect_timeout)
            .or_else(|| self.clients.first())
            .map(|(_, client)| client)
            .ok_or(UpstreamError::NoPool)
    }
}

/// The most header bytes a LINE Pay answer may carry (its answers carry well under 1 KiB).
pub(crate) const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// Refuses what LINE Pay never answers to an API call: a status that is not a
/// registered 2xx, 4xx or 5xx (1xx, `101 Switching Protocols`, 3xx, 599, 999), and more
/// header bytes than [`MAX_RESPONSE_HEAD_BYTES`]. (hyper's own read-buffer bound is not
/// exact when a head arrives in one read, so the size is checked here.)
fn check_answer_head<B>(response: &http::Response<B>) -> Result<(), UpstreamError> {
    let status = response.status();
    if !is_api_status(status) {
        return Err(UpstreamError::UnexpectedStatus(status.as_u16()));
    }
    if head_bytes(response.headers()) > MAX_RESPONSE_HEAD_BYTES {
        return Err(UpstreamError::ResponseHeadersTooLarge {
            limit: MAX_RESPONSE_HEAD_BYTES,
        });
    }
    Ok(())
}

/// A registered 2xx, 4xx or 5xx status: what an HTTP API answers.
pub(crate) fn is_api_status(status: http::StatusCode) -> bool {
    let class_ok = status.is_success() || status.is_client_error() || status.is_server_error();
    class_ok && status.canonical_reason().is_some()
}

/// The bytes a header block takes on the wire (`name: value\r\n` per header).
pub(crate) fn head_bytes(headers: &http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum()
}

/// hyper's read buffer: room for the largest head allowed, and some body with it.
const MAX_BUF_SIZE: usize = MAX_RESPONSE_HEAD_BYTES + 16 * 1024;

/// A one-off GET through the same egress path as LINE Pay calls (bind address, proxy
/// and its credentials, TLS roots) but without the DNS pin, for `egress.expect_ip`.
pub(crate) struct EchoClient {
    connector: Connector,
    timeout: Duration,
}

impl EchoClient {
    pub(crate) fn new(
        egress: &EgressConfig,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<EchoClient, UpstreamBuildError> {
        let tls = tls_config(ca_file)?;
        let connector = connector(tls, timeout, egress, None)?;
        Ok(EchoClient { connector, timeout })
    }

    /// The answer's body as text (2xx only, at most `max_bytes`), within the timeout.
    pub(crate) async fn get_text(
        &self,
        uri: &http::Uri,
        max_bytes: usize,
    ) -> Result<String, EchoError> {
        let mut request = http::Request::get(uri.clone())
            .header(
                http::header::USER_AGENT,
                "linepay-sidecar (egress.expect_ip)",
            )
            .body(Full::new(Bytes::new()))
            .map_err(EchoError::Request)?;
        let failed = |error: SendError| EchoError::Connection {
            failure: classify(&error, self.timeout),
            detail: describe(error.error()),
        };
        // `echo_url` is checked to be http(s) with a host when the configuration is read.
        let Some(host) = keepalive::host_header(uri) else {
            return Err(failed(SendError::Connect(
                "the echo URL has no host".into(),
            )));
        };
        keepalive::to_origin_form(&mut request, &host);
        let exchange = async {
            // One call, one connection: it closes when the sender and the answer are dropped.
            let mut sender = keepalive::open(&self.connector, uri, MAX_BUF_SIZE)
                .await
                .map_err(failed)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|error| failed(SendError::Exchange(error)))?;
            let status = response.status();
            if !status.is_success() {
                return Err(EchoError::Status(status));
            }
            let body = Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(EchoError::Read)?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| EchoError::NotUtf8)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(EchoError::Timeout(self.timeout)))
    }
}

/// Classifies a call's failure by walking its causes.
fn classify(error: &SendError, connect_timeout: Duration) -> UpstreamError {
    match error {
        SendError::Connect(error) => classify_connect_failure(&**error, connect_timeout),
        // The request may have been written: never claim it was not.
        SendError::Exchange(_) => UpstreamError::Protocol,
    }
}

/// Why a connection could not be opened: the first DNS or TLS cause wins, then a
/// timeout anywhere in the chain, else "unreachable".
fn classify_connect_failure(
    error: &(dyn std::error::Error + 'static),
    connect_timeout: Duration,
) -> UpstreamError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut timed_out = false;
    // Bounded: real chains are a handful of links deep.
    for _ in 0..32 {
        let Some(current) = cause else { break };
        // First: a proxy failure wraps the DNS or connect error of reaching the proxy,
        // which is not the upstream's.
        if current.is::<ProxyTunnelError>() {
            return UpstreamError::Proxy;
        }
        if current.is::<DnsError>() {
            return UpstreamError::Dns;
        }
        if current.is::<rustls::Error>() {
            return UpstreamError::Tls;
        }
        // io::Error::source skips the error it wraps (hyper-rustls wraps tokio-rustls's
        // `io::Error(rustls::Error)` in a second `io::Error`), so step into the wrapped
        // error instead; its own source comes next, so nothing is skipped.
        let wrapped = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
                io.get_ref()
            })
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        cause = wrapped.or_else(|| current.source());
    }
    if timed_out {
        UpstreamError::ConnectTimeout(connect_timeout)
    } else {
        UpstreamError::Unreachable
    }
}

/// For tests: a plain client of a loopback upstream at `url` (`http://…`), with one
/// connect timeout of `connect`, answers of at most `max_response_bytes`, up to 4 idle
/// connections per worker kept a minute.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn loopback_for_tests(
    url: &str,
    connect: Duration,
    max_response_bytes: usize,
) -> Upstream {
    Upstream::new(ClientSettings {
        upstream: crate::config::UpstreamConfig {
            url: url.parse().unwrap(),
            ca_file: None,
            max_response_bytes,
            pool_idle_timeout: Duration::from_secs(60),
            pool_max_idle_per_host: 4,
        },
        egress: EgressConfig::default(),
        connect_timeouts: vec![connect],
    })
    .unwrap()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn tls_error_wrapped_twice_in_io_errors_is_tls() {
        // What hyper-rustls hands back for a bad certificate.
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let inner = io::Error::new(io::ErrorKind::InvalidData, rustls_error);
        let outer = io::Error::other(inner);
        assert_eq!(classify_connect_failure(&outer, T), UpstreamError::Tls);
    }

    #[test]
    fn proxy_failure_is_proxy_even_when_it_wraps_a_dns_or_connect_error() {
        let tunnel = ProxyTunnelError {
            proxy: "http://10.0.0.5:3128".into(),
            target: "api-pay.line.me:443".into(),
            reason: "tcp connect error: Connection refused".into(),
        };
        let error = io::Error::other(tunnel);
        assert_eq!(classify_connect_failure(&error, T), UpstreamError::Proxy);
        assert!(UpstreamError::Proxy.retry_safe());
    }

    #[test]
    fn only_registered_2xx_4xx_5xx_statuses_are_api_answers() {
        use http::StatusCode;
        for code in [200, 201, 204, 400, 401, 404, 409, 429, 500, 502, 503, 504] {
            assert!(is_api_status(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [
            100, 101, 103, 199, 299, 300, 301, 302, 304, 399, 499, 599, 600, 999,
        ] {
            assert!(
                !is_api_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn head_bytes_count_name_value_and_separators() {
        let mut headers = http::HeaderMap::new();
        headers.insert("a", http::HeaderValue::from_static("bc"));
        headers.append("a", http::HeaderValue::from_static("d"));
        assert_eq!(head_bytes(&headers), (1 + 2 + 4) + (1 + 1 + 4));
    }

    #[test]
    fn dns_error_is_dns() {
        let error = io::Error::other(DnsError("no such host".into()));
        assert_eq!(classify_connect_failure(&error, T), UpstreamError::Dns);
    }

    #[test]
    fn timed_out_is_connect_timeout_and_refused_is_unreachable() {
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(
            classify_connect_failure(&timed_out, T),
            UpstreamError::ConnectTimeout(T)
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_connect_failure(&refused, T),
            UpstreamError::Unreachable
        );
    }
}
