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
//! Egress (LINE Pay's IP whitelist, see [`crate::egress`]) is built into the connector,
//! innermost first: the [`Resolver`] answers only the pinned IPs for the upstream host
//! when `egress.pin` is set, and only addresses of the bind address's family; the TCP
//! connector binds every socket to `egress.bind_address`; with `egress.proxy` a CONNECT
//! [`Tunnel`] is opened through the proxy (to the pinned IP when pinned); TLS wraps the
//! whole path, so it runs end to end to LINE Pay and SNI and the certificate check
//! always use the host name of `upstream.url`.

use crate::config::UpstreamConfig;
use crate::egress::{self, EgressConfig};
use crate::error::ProxyError;
use crate::route::RouteTimeouts;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connector = SetupBounded<HttpsConnector<EgressConnector>>;
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
}

impl Upstream {
    /// Builds the pools. Refuses egress settings that could not work, or that the
    /// upstream URL would bypass: a `bind_address` this host does not hold
    /// ([`egress::preflight`], so start-up, `check` and every reload refuse it), or an
    /// IP-literal upstream that the pin does not list or the bind address cannot reach.
    pub fn new(
        config: &UpstreamConfig,
        egress: &EgressConfig,
        connect_timeouts: impl IntoIterator<Item = Duration>,
    ) -> Result<Upstream, UpstreamBuildError> {
        egress::preflight(egress).map_err(UpstreamBuildError::Egress)?;
        check_upstream_fits_egress(&config.url, egress)?;
        log_egress(egress);
        let tls = tls_config(config.ca_file.as_deref())?;
        let pinned_host = config.url.host().unwrap_or_default();
        let mut timeouts: Vec<Duration> = connect_timeouts.into_iter().collect();
        timeouts.sort();
        timeouts.dedup();
        let clients: Vec<(Duration, PooledClient, Connector)> = timeouts
            .into_iter()
            .map(|timeout| {
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

/// The connector for one connect timeout: resolver, bound TCP, optional CONNECT tunnel,
/// TLS. `pinned_host` is the upstream host that `egress.pin` applies to (`None` for the
/// echo check, whose host is not LINE Pay).
fn connector(
    tls: rustls::ClientConfig,
    connect_timeout: Duration,
    egress: &EgressConfig,
    pinned_host: Option<&str>,
) -> Result<Connector, UpstreamBuildError> {
    let pin = pinned_host.filter(|_| !egress.pin.is_empty());
    let route = match &egress.proxy {
        None => {
            let mut resolver = Resolver::new(connect_timeout).only_family_of(egress.bind_address);
            if let Some(host) = pin {
                resolver = resolver.pinned(host, &egress.pin);
            }
            EgressRoute::Direct(tcp_connector(
                resolver,
                connect_timeout,
                egress.bind_address,
            ))
        }
        Some(proxy) => {
            // The proxy's own name goes through DNS: the pin is for LINE Pay's host,
            // and through a proxy it becomes the CONNECT target instead.
            let resolver = Resolver::new(connect_timeout).only_family_of(egress.bind_address);
            let to_proxy = tcp_connector(resolver, connect_timeout, egress.bind_address);
            let mut tunnel = Tunnel::new(proxy.url.clone(), to_proxy);
            if let Some(auth) = &proxy.auth {
                let value = auth.header_value().ok_or_else(|| {
                    UpstreamBuildError::Egress(format!(
                        "{}: the proxy credentials do not make a valid header",
                        auth.source
                    ))
                })?;
                tunnel = tunnel.with_auth(value);
            }
            EgressRoute::Tunnel(Box::new(TunnelRoute {
                tunnel,
                proxy: Arc::from(proxy.url.to_string().trim_end_matches('/')),
                pinned: Arc::from(if pin.is_some() {
                    egress.pin.as_slice()
                } else {
                    &[]
                }),
            }))
        }
    };
    // ALPN is left to the builder: hyper-rustls panics if the config already sets it.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(EgressConnector {
            route,
            connect_timeout,
        });
    Ok(SetupBounded {
        inner: https,
        timeout: connect_timeout,
    })
}

/// Bounds the whole connection set-up (DNS, TCP, CONNECT, TLS handshake) by the connect
/// timeout. The TCP connector bounds only its own step, so without this a server that
/// accepts TCP and then stalls the handshake would surface as a read timeout, which
/// tells the app the call "may have been processed" when not a byte of it was sent.
#[derive(Clone)]
pub struct SetupBounded<C> {
    inner: C,
    timeout: Duration,
}

impl<C> tower_service::Service<http::Uri> for SetupBounded<C>
where
    C: tower_service::Service<http::Uri> + Clone + Send + 'static,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        let timeout = self.timeout;
        let setup = self.inner.call(destination);
        Box::pin(async move {
            match tokio::time::timeout(timeout, setup).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connection set-up took longer than {timeout:?}"),
                )) as BoxError),
            }
        })
    }
}

/// One line at start-up (and reload) saying how calls leave, never the credentials.
fn log_egress(egress: &EgressConfig) {
    if egress.bind_address.is_none() && egress.proxy.is_none() && egress.pin.is_empty() {
        return;
    }
    let pin: Vec<String> = egress.pin.iter().map(ToString::to_string).collect();
    tracing::info!(
        bind_address = %egress.bind_address.map_or_else(|| "-".to_owned(), |a| a.to_string()),
        proxy = %egress.proxy.as_ref().map_or_else(|| "-".to_owned(), |p| p.url.to_string()),
        proxy_auth = %egress
            .proxy
            .as_ref()
            .and_then(|p| p.auth.as_ref())
            .map_or("-", |auth| auth.source.as_str()),
        pin = %if pin.is_empty() { "-".to_owned() } else { pin.join(",") },
        "egress pinned for LINE Pay's IP whitelist"
    );
}

fn tcp_connector(
    resolver: Resolver,
    connect_timeout: Duration,
    bind_address: Option<IpAddr>,
) -> HttpConnector<Resolver> {
    // The connector's connect timeout covers the TCP connect only; the lookup gets the
    // same bound of its own, so a hanging resolver is a DNS failure (nothing was sent),
    // not a read timeout that would claim the call may have been processed.
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    // Binds only sockets of the same family; the resolver drops the other family, so
    // no connection can leave from an unbound (unregistered) source.
    http.set_local_address(bind_address);
    http
}

/// An upstream URL that is an IP address skips the resolver, so the pin and the
/// family filter cannot apply to it: such a URL must agree with them up front.
fn check_upstream_fits_egress(
    url: &http::Uri,
    egress: &EgressConfig,
) -> Result<(), UpstreamBuildError> {
    let host = url.host().unwrap_or_default();
    let Ok(address) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if !egress.pin.is_empty() && egress.proxy.is_none() && !egress.pin.contains(&address) {
        return Err(UpstreamBuildError::Egress(format!(
            "upstream.url is the IP address {address}, which egress.pin does not list: add it to egress.pin or use the host name"
        )));
    }
    if let Some(bind) = egress.bind_address {
        if egress.proxy.is_none() && bind.is_ipv4() != address.is_ipv4() {
            return Err(UpstreamBuildError::Egress(format!(
                "upstream.url {address} and egress.bind_address {bind} are of different IP versions: a connection from {bind} cannot reach it"
            )));
        }
    }
    Ok(())
}

/// How a connection leaves the host: straight to the upstream, or through a CONNECT
/// tunnel of the egress proxy. Both end in a plain TCP stream that TLS then wraps.
#[derive(Clone)]
enum EgressRoute {
    Direct(HttpConnector<Resolver>),
    Tunnel(Box<TunnelRoute>),
}

#[derive(Clone)]
struct TunnelRoute {
    tunnel: Tunnel<HttpConnector<Resolver>>,
    /// `http://host:port` of the proxy, for errors and logs (never credentials).
    proxy: Arc<str>,
    /// With `egress.pin`, the CONNECT targets (in order) instead of the host name.
    pinned: Arc<[IpAddr]>,
}

/// The TCP part of the upstream connector, below TLS.
#[derive(Clone)]
pub struct EgressConnector {
    route: EgressRoute,
    connect_timeout: Duration,
}

impl tower_service::Service<http::Uri> for EgressConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both routes are always ready; each call readies its own clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: http::Uri) -> Self::Future {
        match &self.route {
            EgressRoute::Direct(http) => {
                let mut http = http.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut http, cx))
                        .await?;
                    Ok(tower_service::Service::call(&mut http, destination).await?)
                })
            }
            EgressRoute::Tunnel(route) => Box::pin(open_tunnel(
                route.tunnel.clone(),
                route.proxy.clone(),
                route.pinned.clone(),
                destination,
                self.connect_timeout,
            )),
        }
    }
}

/// Asks the proxy for a tunnel to the destination (or to each pinned IP in turn, until
/// one opens). The connect timeout bounds each attempt whole: TCP to the proxy, the
/// CONNECT exchange and the proxy's own connect, so a proxy that never answers is a
/// proxy failure (nothing was sent), not a read timeout.
async fn open_tunnel(
    mut tunnel: Tunnel<HttpConnector<Resolver>>,
    proxy: Arc<str>,
    pinned: Arc<[IpAddr]>,
    destination: http::Uri,
    connect_timeout: Duration,
) -> Result<TokioIo<TcpStream>, BoxError> {
    let port = destination
        .port_u16()
        .unwrap_or(match destination.scheme_str() {
            Some("http") => 80,
            _ => 443,
        });
    let host = destination.host().unwrap_or_default();
    let targets: Vec<String> = if pinned.is_empty() {
        vec![format!("{host}:{port}")]
    } else {
        pinned
            .iter()
            .map(|address| SocketAddr::new(*address, port).to_string())
            .collect()
    };
    let mut failure = ProxyTunnelError {
        proxy: proxy.to_string(),
        target: String::new(),
        reason: "no target".to_owned(),
    };
    for target in targets {
        // The tunnel takes host and port from this URI; the scheme only has to parse.
        let Ok(target_uri) = http::Uri::builder()
            .scheme("http")
            .authority(target.as_str())
            .path_and_query("/")
            .build()
        else {
            failure.target = target;
            failure.reason = "not a valid CONNECT target".to_owned();
            continue;
        };
        let attempt = async {
            std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut tunnel, cx)).await?;
            tower_service::Service::call(&mut tunnel, target_uri).await
        };
        let reason = match tokio::time::timeout(connect_timeout, attempt).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => describe(&error),
            Err(_) => format!("no tunnel within the connect timeout ({connect_timeout:?})"),
        };
        tracing::warn!(%proxy, %target, %reason, "egress proxy: tunnel not opened");
        failure.target = target;
        failure.reason = reason;
    }
    Err(Box::new(failure))
}

/// The egress proxy could not be reached or would not open the tunnel: the call was
/// never sent.
#[derive(Debug, thiserror::Error)]
#[error("egress proxy {proxy}: no tunnel to {target}: {reason}")]
pub struct ProxyTunnelError {
    proxy: String,
    target: String,
    reason: String,
}

/// An error and its causes on one line, for logs (never for the app's answer).
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    // Bounded: real chains are a handful of links deep.
    for _ in 0..16 {
        let Some(current) = cause else { break };
        let next = current.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = current.source();
    }
    text
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

fn pooled_client(config: &UpstreamConfig, https: Connector) -> PooledClient {
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

/// A name lookup failure, typed so that it can be told apart from a refused connection.
#[derive(Debug, thiserror::Error)]
#[error("DNS lookup failed: {0}")]
pub struct DnsError(String);

/// The system resolver, time-boxed, with its failures wrapped in [`DnsError`]; with
/// `egress.pin`, no DNS at all for the upstream host and no answer for any other name;
/// with `egress.bind_address`, only addresses of its IP version.
#[derive(Clone)]
pub struct Resolver {
    system: GaiResolver,
    timeout: Duration,
    pinned: Option<Arc<PinnedHost>>,
    /// `Some(true)`: IPv4 only; `Some(false)`: IPv6 only.
    ipv4_only: Option<bool>,
}

/// The one host name the pin answers for, and its addresses (in order).
struct PinnedHost {
    host: String,
    addresses: Vec<IpAddr>,
}

impl PinnedHost {
    fn answers_for(&self, name: &str) -> bool {
        let bare = |text: &str| text.trim_end_matches('.').to_ascii_lowercase();
        bare(name) == bare(&self.host)
    }
}

impl Resolver {
    pub fn new(timeout: Duration) -> Self {
        Resolver {
            system: GaiResolver::new(),
            timeout,
            pinned: None,
            ipv4_only: None,
        }
    }

    /// Resolves `host` to exactly `addresses` (the port comes from the URL), without
    /// DNS, and refuses every other name.
    pub fn pinned(mut self, host: &str, addresses: &[IpAddr]) -> Self {
        self.pinned = Some(Arc::new(PinnedHost {
            host: host.to_owned(),
            addresses: addresses.to_vec(),
        }));
        self
    }

    /// Keeps only addresses of the same IP version as `bind_address` (when set).
    pub fn only_family_of(mut self, bind_address: Option<IpAddr>) -> Self {
        self.ipv4_only = bind_address.map(|address| address.is_ipv4());
        self
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
        let pinned = self.pinned.clone();
        let ipv4_only = self.ipv4_only;
        Box::pin(async move {
            let mut addresses: Vec<SocketAddr> = match pinned {
                Some(pin) if pin.answers_for(name.as_str()) => pin
                    .addresses
                    .iter()
                    .map(|address| SocketAddr::new(*address, 0))
                    .collect(),
                Some(pin) => {
                    return Err(DnsError(format!(
                    "`{}` is not the pinned upstream host `{}`: egress.pin resolves only that name",
                    name.as_str(),
                    pin.host
                )))
                }
                None => {
                    let lookup = tower_service::Service::call(&mut system, name.clone());
                    tokio::time::timeout(timeout, lookup)
                        .await
                        .map_err(|_| DnsError(format!("no answer within {timeout:?}")))?
                        .map_err(|error| DnsError(error.to_string()))?
                        .collect()
                }
            };
            if let Some(ipv4) = ipv4_only {
                addresses.retain(|address| address.is_ipv4() == ipv4);
                if addresses.is_empty() {
                    let version = if ipv4 { "IPv4" } else { "IPv6" };
                    return Err(DnsError(format!(
                        "`{}` has no {version} address, and egress.bind_address is {version}",
                        name.as_str()
                    )));
                }
            }
            if addresses.is_empty() {
                return Err(DnsError("no address".to_owned()));
            }
            Ok(addresses.into_iter())
        })
    }
}

impl Upstream {
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

    fn resolve(resolver: &mut Resolver, name: &str) -> Result<Vec<SocketAddr>, DnsError> {
        let name: Name = name.parse().map_err(|_| DnsError("bad name".into()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| DnsError(error.to_string()))?;
        runtime
            .block_on(tower_service::Service::call(resolver, name))
            .map(Iterator::collect)
    }

    #[test]
    fn pinned_resolver_answers_only_the_pinned_addresses_for_only_the_upstream_host() {
        let pinned: Vec<IpAddr> = vec![
            "127.0.0.3".parse().expect("ip"),
            "127.0.0.4".parse().expect("ip"),
        ];
        let mut resolver = Resolver::new(T).pinned("api-pay.test.invalid", &pinned);
        let answer = resolve(&mut resolver, "API-PAY.test.invalid.").expect("pinned");
        let ips: Vec<IpAddr> = answer.iter().map(SocketAddr::ip).collect();
        assert_eq!(ips, pinned);
        // Port 0: the connector puts the URL's port on each address.
        assert!(answer.iter().all(|address| address.port() == 0));
        let refused = resolve(&mut resolver, "localhost").expect_err("not the pinned host");
        assert!(refused.to_string().contains("egress.pin"), "{refused}");
    }

    #[test]
    fn bind_family_drops_addresses_a_bound_socket_cannot_reach() {
        let pinned: Vec<IpAddr> =
            vec!["::1".parse().expect("ip"), "127.0.0.3".parse().expect("ip")];
        let mut v4 = Resolver::new(T)
            .pinned("h.test", &pinned)
            .only_family_of(Some("127.0.0.2".parse().expect("ip")));
        let answer = resolve(&mut v4, "h.test").expect("an IPv4 address");
        assert_eq!(answer, vec![SocketAddr::from(([127, 0, 0, 3], 0))]);
        let mut v6_only = Resolver::new(T)
            .pinned("h.test", &pinned[..1])
            .only_family_of(Some("127.0.0.2".parse().expect("ip")));
        let error = resolve(&mut v6_only, "h.test").expect_err("no IPv4 address");
        assert!(error.to_string().contains("no IPv4 address"), "{error}");
    }

    #[test]
    fn an_ip_literal_upstream_must_agree_with_pin_and_bind() {
        let url: http::Uri = "http://127.0.0.1:9000".parse().expect("url");
        let pinned = EgressConfig {
            pin: vec!["127.0.0.3".parse().expect("ip")],
            ..EgressConfig::default()
        };
        let error = check_upstream_fits_egress(&url, &pinned).expect_err("not pinned");
        assert!(
            error.to_string().contains("egress.pin does not list"),
            "{error}"
        );
        let bound_v6 = EgressConfig {
            bind_address: Some("::1".parse().expect("ip")),
            ..EgressConfig::default()
        };
        assert!(check_upstream_fits_egress(&url, &bound_v6).is_err());
        let named: http::Uri = "https://api-pay.line.me".parse().expect("url");
        assert!(check_upstream_fits_egress(&named, &pinned).is_ok());
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
