//! The connection stack under the upstream clients: how one TCP (or tunnelled) stream
//! to LINE Pay is opened and wrapped in TLS, so that it leaves from the address in LINE
//! Pay's IP whitelist and goes only where the operator said.
//!
//! Mechanism only; what is allowed is decided in [`crate::egress`]. Innermost first:
//! the [`Resolver`] (pin and family filter); a TCP connector bound to
//! `egress.bind_address`; with `egress.proxy`, a CONNECT tunnel through the proxy (to
//! the pinned IP when pinned) via [`EgressConnector`]; TLS from hyper-rustls around the
//! whole path, so it runs end to end to LINE Pay; and [`SetupBounded`], which holds all
//! of it to the connect timeout. The pools in the parent module only see [`Connector`].

use super::resolve::Resolver;
use super::UpstreamBuildError;
use crate::egress::EgressConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
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

/// The whole stack, as the pools and the readiness probe use it.
pub(super) type Connector = SetupBounded<HttpsConnector<EgressConnector>>;

/// An upstream URL that is an IP address skips the resolver, so the pin and the
/// family filter cannot apply to it: such a URL must agree with them up front.
pub(super) fn check_upstream_fits_egress(
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
        return Err(UpstreamBuildError::UnpinnedIpUpstream { address });
    }
    if let Some(bind) = egress.bind_address {
        if egress.proxy.is_none() && bind.is_ipv4() != address.is_ipv4() {
            return Err(UpstreamBuildError::BindFamilyMismatch { address, bind });
        }
    }
    Ok(())
}

/// One line at start-up (and reload) saying how calls leave, never the credentials.
pub(super) fn log_egress(egress: &EgressConfig) {
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

/// The connector for one connect timeout: resolver, bound TCP, optional CONNECT tunnel,
/// TLS. `pinned_host` is the upstream host that `egress.pin` applies to (`None` for the
/// echo check, whose host is not LINE Pay).
pub(super) fn connector(
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
                let value =
                    auth.header_value()
                        .ok_or_else(|| UpstreamBuildError::ProxyCredentials {
                            origin: auth.source.clone(),
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

/// Public web roots (LINE Pay's certificates chain to them) plus, optionally, the CA of
/// a private test upstream.
pub(super) fn tls_config(
    ca_file: Option<&Path>,
) -> Result<rustls::ClientConfig, UpstreamBuildError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let unreadable = |reason| UpstreamBuildError::CaFileUnreadable {
            path: path.to_owned(),
            reason,
        };
        let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(unreadable)?
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        if certificates.is_empty() {
            return Err(UpstreamBuildError::CaFileEmpty {
                path: path.to_owned(),
            });
        }
        for certificate in certificates {
            roots
                .add(certificate)
                .map_err(|reason| UpstreamBuildError::CaFileCertificate {
                    path: path.to_owned(),
                    reason,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(UpstreamBuildError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Bounds the whole connection set-up (DNS, TCP, CONNECT, TLS handshake) by the connect
/// timeout. The TCP connector bounds only its own step, so without this a server that
/// accepts TCP and then stalls the handshake would surface as a read timeout, which
/// tells the app the call "may have been processed" when not a byte of it was sent.
#[derive(Clone)]
pub(super) struct SetupBounded<C> {
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
pub(super) struct EgressConnector {
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
pub(super) struct ProxyTunnelError {
    pub(super) proxy: String,
    pub(super) target: String,
    pub(super) reason: String,
}

/// An error and its causes on one line, for logs (never for the app's answer).
pub(super) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
