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

use crate::config::UpstreamConfig;
use crate::error::ProxyError;
use crate::route::RouteTimeouts;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type Connector = HttpsConnector<HttpConnector<Resolver>>;
type PooledClient = Client<Connector, Full<Bytes>>;

/// Why the upstream client could not be built (at start-up, never per call).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamBuildError {
    #[error("upstream.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

pub struct Upstream {
    base: http::Uri,
    /// One pool per distinct connect timeout (the connector owns the timeout); with the
    /// defaults that is exactly one pool.
    clients: Vec<(Duration, PooledClient)>,
    max_response_bytes: usize,
}

impl Upstream {
    pub fn new(
        config: &UpstreamConfig,
        connect_timeouts: impl IntoIterator<Item = Duration>,
    ) -> Result<Upstream, UpstreamBuildError> {
        let tls = tls_config(config.ca_file.as_deref())?;
        let mut timeouts: Vec<Duration> = connect_timeouts.into_iter().collect();
        timeouts.sort();
        timeouts.dedup();
        let clients = timeouts
            .into_iter()
            .map(|timeout| (timeout, pooled_client(config, tls.clone(), timeout)))
            .collect();
        Ok(Upstream {
            base: config.url.clone(),
            clients,
            max_response_bytes: config.max_response_bytes,
        })
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

    fn client_for(&self, connect_timeout: Duration) -> Result<&PooledClient, ProxyError> {
        self.clients
            .iter()
            .find(|(timeout, _)| *timeout == connect_timeout)
            .or_else(|| self.clients.first())
            .map(|(_, client)| client)
            .ok_or(ProxyError::Internal)
    }
}

fn pooled_client(
    config: &UpstreamConfig,
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
) -> PooledClient {
    // The connector's connect timeout covers the TCP connect only; the lookup gets the
    // same bound of its own, so a hanging resolver is a DNS failure (nothing was sent),
    // not a read timeout that would claim the call may have been processed.
    let mut http = HttpConnector::new_with_resolver(Resolver::new(connect_timeout));
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    // ALPN is left to the builder: hyper-rustls panics if the config already sets it.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .build(https)
}

/// Public web roots (LINE Pay's certificates chain to them) plus, optionally, the CA of
/// a private test upstream.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, UpstreamBuildError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let ca_error = |reason: String| UpstreamBuildError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|error| ca_error(error.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|error| ca_error(error.to_string()))?;
        if certificates.is_empty() {
            return Err(ca_error("holds no PEM certificate".to_owned()));
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|error| ca_error(error.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| UpstreamBuildError::Tls(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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

/// A name lookup failure, typed so that it can be told apart from a refused connection.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup failed: {0}")]
pub struct DnsError(String);

/// The system resolver, time-boxed, with its failures wrapped in [`DnsError`].
#[derive(Clone)]
pub struct Resolver {
    system: GaiResolver,
    timeout: Duration,
}

impl Resolver {
    pub fn new(timeout: Duration) -> Self {
        Resolver {
            system: GaiResolver::new(),
            timeout,
        }
    }
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let mut system = self.system.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let lookup = tower_service::Service::call(&mut system, name);
            let addresses = tokio::time::timeout(timeout, lookup)
                .await
                .map_err(|_| DnsError(format!("no answer within {timeout:?}")))?
                .map_err(|error| DnsError(error.to_string()))?;
            let addresses: Vec<SocketAddr> = addresses.collect();
            if addresses.is_empty() {
                return Err(DnsError("no address".to_owned()));
            }
            Ok(addresses.into_iter())
        })
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
