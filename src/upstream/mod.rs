//! The egress client: one pooled, keep-alive HTTPS client to LINE Pay.
//!
//! Mechanism only: the proxy hands it a finished, signed request and a route's timeouts,
//! and gets back a whole response or a classified [`ProxyError`]. Failures are told
//! apart the way an operator needs at 3 a.m.: DNS, connect refused, connect timeout,
//! TLS, response timeout, broken connection. The first four mean the call never left
//! the sidecar; the last two mean it may have reached LINE Pay.
//!
//! Pooling is what makes the sidecar faster than a PHP app calling LINE Pay directly: a
//! PHP request that opens a fresh connection per call still reuses one warm TLS
//! connection here. hyper-util's pool retries a request only when the pooled connection
//! was found closed before any byte of it was written, which is safe for payments.
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
mod resolve;
mod settings;

pub use self::settings::ClientSettings;

use self::connector::{
    check_upstream_fits_egress, connector, describe, log_egress, tls_config, Connector,
    ProxyTunnelError,
};
use self::resolve::DnsError;
use crate::config::UpstreamConfig;
use crate::egress::EgressConfig;
use crate::error::ProxyError;
use crate::route::RouteTimeouts;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::path::Path;
use std::time::Duration;

type PooledClient = Client<Connector, Full<Bytes>>;

/// Why the upstream client could not be built (at start-up, never per call).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("upstream.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS set-up failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Egress(String),
}

pub struct Upstream {
    base: http::Uri,
    /// One pool per distinct connect timeout (the connector owns the timeout); with the
    /// defaults that is exactly one pool.
    clients: Vec<(Duration, PooledClient)>,
    /// Opens bare connections for the readiness probe (same DNS, TCP, TLS path).
    probe_connector: Option<Connector>,
    max_response_bytes: usize,
    settings: ClientSettings,
}

impl Upstream {
    /// Builds the pools. Refuses egress settings that the upstream URL would bypass: an
    /// IP-literal upstream that the pin does not list or the bind address cannot reach.
    /// (Whether this host holds the bind address is checked by the caller, the runtime,
    /// before it builds a client.)
    pub fn new(settings: ClientSettings) -> Result<Upstream, UpstreamBuildError> {
        let ClientSettings {
            upstream: config,
            egress,
            connect_timeouts,
        } = &settings;
        check_upstream_fits_egress(&config.url, egress)?;
        log_egress(egress);
        let tls = tls_config(config.ca_file.as_deref())?;
        let pinned_host = config.url.host().unwrap_or_default();
        let clients: Vec<(Duration, PooledClient, Connector)> = connect_timeouts
            .iter()
            .map(|&timeout| {
                let connector = connector(tls.clone(), timeout, egress, Some(pinned_host))?;
                Ok((timeout, pooled_client(config, connector.clone()), connector))
            })
            .collect::<Result<_, UpstreamBuildError>>()?;
        let probe_connector = clients.first().map(|(_, _, connector)| connector.clone());
        Ok(Upstream {
            base: config.url.clone(),
            clients: clients
                .into_iter()
                .map(|(timeout, client, _)| (timeout, client))
                .collect(),
            probe_connector,
            max_response_bytes: config.max_response_bytes,
            settings,
        })
    }

    /// What this client was built from: a reload compares it with the next one.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `https://host[:port]` that every call goes to.
    pub fn base(&self) -> &http::Uri {
        &self.base
    }

    /// The absolute URI for a path and raw query, always on the configured upstream.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, ProxyError> {
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse().map_err(|_| ProxyError::Internal)?);
        http::Uri::from_parts(parts).map_err(|_| ProxyError::Internal)
    }

    /// Sends one call and reads the whole answer, within the route's read timeout.
    pub async fn send(
        &self,
        request: http::Request<Full<Bytes>>,
        timeouts: RouteTimeouts,
    ) -> Result<http::Response<Bytes>, ProxyError> {
        let client = self.client_for(timeouts.connect)?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|error| classify(&error, timeouts.connect))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|error| {
                    if error.is::<http_body_util::LengthLimitError>() {
                        ProxyError::UpstreamResponseTooLarge {
                            limit: self.max_response_bytes,
                        }
                    } else {
                        ProxyError::UpstreamProtocol
                    }
                })?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(timeouts.read, exchange)
            .await
            .unwrap_or(Err(ProxyError::UpstreamTimeout(timeouts.read)))
    }

    /// Opens one connection to the upstream through the same connector calls use (DNS,
    /// TCP, TLS) and closes it, sending no request: the readiness check.
    pub async fn probe(&self, timeout: Duration) -> Result<(), ProxyError> {
        let mut connector = self.probe_connector.clone().ok_or(ProxyError::Internal)?;
        let connect = tower_service::Service::call(&mut connector, self.base.clone());
        match tokio::time::timeout(timeout, connect).await {
            Err(_) => Err(ProxyError::UpstreamConnectTimeout(timeout)),
            Ok(Ok(_connection)) => Ok(()),
            Ok(Err(error)) => Err(classify_connect_failure(&*error, timeout)),
        }
    }

    fn client_for(&self, connect_timeout: Duration) -> Result<&PooledClient, ProxyError> {
        self.clients
            .iter()
            .find(|(timeout, _)| *timeout == connect_timeout)
            .or_else(|| self.clients.first())
            .map(|(_, client)| client)
            .ok_or(ProxyError::Internal)
    }
}

fn pooled_client(config: &UpstreamConfig, https: Connector) -> PooledClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// A one-off GET through the same egress path as LINE Pay calls (bind address, proxy
/// and its credentials, TLS roots) but without the DNS pin, for `egress.expect_ip`.
pub struct EchoClient {
    client: PooledClient,
    timeout: Duration,
}

impl EchoClient {
    pub fn new(
        egress: &EgressConfig,
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<EchoClient, UpstreamBuildError> {
        let tls = tls_config(ca_file)?;
        let connector = connector(tls, timeout, egress, None)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(EchoClient { client, timeout })
    }

    /// The answer's body as text (2xx only, at most `max_bytes`), within the timeout.
    /// The error is one line for logs.
    pub async fn get_text(&self, uri: &http::Uri, max_bytes: usize) -> Result<String, String> {
        let request = http::Request::get(uri.clone())
            .header(
                http::header::USER_AGENT,
                "linepay-sidecar (egress.expect_ip)",
            )
            .body(Full::new(Bytes::new()))
            .map_err(|error| format!("cannot build the request: {error}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                let code = if error.is_connect() {
                    classify_connect_failure(&error, self.timeout).code()
                } else {
                    "upstream_protocol"
                };
                format!("{code}: {}", describe(&error))
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("it answered HTTP {status}"));
            }
            let body = Limited::new(response.into_body(), max_bytes)
                .collect()
                .await
                .map_err(|error| format!("its answer could not be read: {error}"))?
                .to_bytes();
            String::from_utf8(body.to_vec()).map_err(|_| "its answer is not UTF-8".to_owned())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }
}

/// Maps a client error to the sidecar's error, by walking its causes.
fn classify(error: &hyper_util::client::legacy::Error, connect_timeout: Duration) -> ProxyError {
    if !error.is_connect() {
        // The request may have been written: never claim it was not.
        return ProxyError::UpstreamProtocol;
    }
    classify_connect_failure(error, connect_timeout)
}

/// Why a connection could not be opened: the first DNS or TLS cause wins, then a
/// timeout anywhere in the chain, else "unreachable".
fn classify_connect_failure(
    error: &(dyn std::error::Error + 'static),
    connect_timeout: Duration,
) -> ProxyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut timed_out = false;
    // Bounded: real chains are a handful of links deep.
    for _ in 0..32 {
        let Some(current) = cause else { break };
        // First: a proxy failure wraps the DNS or connect error of reaching the proxy,
        // which is not the upstream's.
        if current.is::<ProxyTunnelError>() {
            return ProxyError::UpstreamProxy;
        }
        if current.is::<DnsError>() {
            return ProxyError::UpstreamDns;
        }
        if current.is::<rustls::Error>() {
            return ProxyError::UpstreamTls;
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
        ProxyError::UpstreamConnectTimeout(connect_timeout)
    } else {
        ProxyError::UpstreamUnreachable
    }
}

#[cfg(test)]
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
        assert_eq!(classify_connect_failure(&outer, T), ProxyError::UpstreamTls);
    }

    #[test]
    fn proxy_failure_is_proxy_even_when_it_wraps_a_dns_or_connect_error() {
        let tunnel = ProxyTunnelError {
            proxy: "http://10.0.0.5:3128".into(),
            target: "api-pay.line.me:443".into(),
            reason: "tcp connect error: Connection refused".into(),
        };
        let error = io::Error::other(tunnel);
        assert_eq!(
            classify_connect_failure(&error, T),
            ProxyError::UpstreamProxy
        );
        assert!(ProxyError::UpstreamProxy.never_reached_upstream());
    }

    #[test]
    fn dns_error_is_dns() {
        let error = io::Error::other(DnsError("no such host".into()));
        assert_eq!(classify_connect_failure(&error, T), ProxyError::UpstreamDns);
    }

    #[test]
    fn timed_out_is_connect_timeout_and_refused_is_unreachable() {
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert_eq!(
            classify_connect_failure(&timed_out, T),
            ProxyError::UpstreamConnectTimeout(T)
        );
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_connect_failure(&refused, T),
            ProxyError::UpstreamUnreachable
        );
    }
}
