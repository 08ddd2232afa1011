//! The emulator's socket edge: accepts TCP (optionally TLS), speaks HTTP/1.1 with
//! hyper, reads each body whole and hands it to [`Emulator::handle`] — unless the
//! connection comes from a source outside the IP whitelist, which gets LINE Pay's
//! refusal whatever it asks (the body is still read, so the answer is not lost to a
//! reset).
//!
//! A rehearsed fault may delay the answer or drop the connection: the service then
//! fails, and hyper closes the connection without writing a response.
//!
//! Connections run in a `JoinSet` owned by the serve future, so aborting the task
//! that runs `serve` closes every connection too: a test that drops its upstream
//! really has no upstream any more.

use crate::{reply, Delivery, Emulator};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Bodies above this are answered 413 without reaching the API: LINE Pay calls are a
/// few kilobytes, and an emulator must not be made to buffer without bound.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// After a failed accept (e.g. out of file descriptors), wait this long before the
/// next one instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

impl Emulator {
    /// Serves HTTP/1.1 on `listener` until the returned future is dropped. With `tls`,
    /// each connection is wrapped in TLS first. Accept errors are logged and the loop
    /// continues; a failed connection never ends it.
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> std::io::Result<()> {
        if let Ok(local) = listener.local_addr() {
            let scheme = if tls.is_some() { "https" } else { "http" };
            self.set_page_base(format!("{scheme}://{}", page_host(local)), false);
        }
        let acceptor = tls.map(TlsAcceptor::from);
        let mut connections = JoinSet::new();
        loop {
            // Reap finished connections so the set does not grow for ever.
            while connections.try_join_next().is_some() {}
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "emulator: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let emulator = self.clone();
            let acceptor = acceptor.clone();
            // Decided once per connection, before anything is read from it.
            let refused_source = (!emulator.source_allowed(peer.ip())).then_some(peer.ip());
            connections.spawn(async move {
                let served = match acceptor {
                    None => emulator.serve_connection(stream, refused_source).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => emulator.serve_connection(stream, refused_source).await,
                        Err(error) => {
                            tracing::debug!(%error, %peer, "emulator: TLS handshake failed");
                            return;
                        }
                    },
                };
                if let Err(error) = served {
                    tracing::debug!(%error, %peer, "emulator: connection ended with an error");
                }
            });
        }
    }

    /// Serves the payment pages (and the control API) over plain HTTP on a listener of
    /// their own, and points `paymentUrl.web` at it: for an emulator whose API speaks
    /// TLS, so a browser needs no certificate to open the page. Other paths answer 404.
    pub async fn serve_pages(self, listener: TcpListener) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        self.set_page_base(format!("http://{}", page_host(local)), true);
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "emulator: accept failed (payment pages)");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let emulator = self.clone();
            connections.spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let emulator = emulator.clone();
                    async move {
                        let own = crate::is_own_path(request.uri().path());
                        match own {
                            true => emulator
                                .respond(request, None)
                                .await
                                .ok_or(DroppedOnPurpose),
                            false => Ok(reply::not_found(request.method(), request.uri().path())
                                .map(Full::new)),
                        }
                    }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%error, %peer, "emulator: page connection ended with an error");
                }
            });
        }
    }

    /// `confirmUrlType` SERVER: LINE Pay's server, not the browser, calls the shop's
    /// confirmUrl. A GET in the background (plain http only), bounded in time; the
    /// outcome is logged, never retried.
    pub(crate) fn notify_confirm_url(&self, url: String) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(%url, "emulator: no runtime to call confirmUrl (SERVER) from");
            return;
        };
        runtime.spawn(async move {
            let outcome = tokio::time::timeout(NOTIFY_LIMIT, get(&url)).await;
            match outcome {
                Ok(Ok(status)) => {
                    tracing::info!(%url, %status, "emulator: called confirmUrl (confirmUrlType SERVER)")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%url, %error, "emulator: calling confirmUrl (confirmUrlType SERVER) failed")
                }
                Err(_) => {
                    tracing::warn!(%url, "emulator: confirmUrl (confirmUrlType SERVER) did not answer in time")
                }
            }
        });
    }

    async fn serve_connection<S>(
        self,
        stream: S,
        refused_source: Option<IpAddr>,
    ) -> Result<(), hyper::Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = service_fn(move |request| {
            let emulator = self.clone();
            async move {
                emulator
                    .respond(request, refused_source)
                    .await
                    .ok_or(DroppedOnPurpose)
            }
        });
        http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await
    }

    /// The response, or `None` to close the connection without one.
    async fn respond(
        &self,
        request: Request<Incoming>,
        refused_source: Option<IpAddr>,
    ) -> Option<Response<Full<Bytes>>> {
        let (parts, body) = request.into_parts();
        // The exact bytes hyper delivered (it enforces Content-Length / chunking).
        let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) => {
                self.count_call();
                let response = if error.downcast_ref::<LengthLimitError>().is_some() {
                    reply::unreadable_body(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is larger than the emulator accepts (1 MiB).",
                    )
                } else {
                    reply::unreadable_body(StatusCode::BAD_REQUEST, "the body could not be read.")
                };
                return Some(response.map(Full::new));
            }
        };
        // The whitelist is LINE Pay's, for its API: the emulator's own paths (control
        // API, payment pages) stay open, or a test could not reach them at all.
        if let Some(address) = refused_source.filter(|_| !crate::is_own_path(parts.uri.path())) {
            self.count_call();
            tracing::info!(
                method = %parts.method,
                path = parts.uri.path(),
                source = %address,
                return_code = "1106",
                "emulator: source address not on the IP whitelist, refused"
            );
            return Some(reply::source_not_allowed(address).map(Full::new));
        }
        let delivery = self
            .deliver(
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                &parts.headers,
                &body,
            )
            .await;
        match delivery {
            Delivery::Respond(response) => Some(response.map(Full::new)),
            Delivery::Drop => None,
        }
    }
}

/// How long the SERVER-type call to confirmUrl may take.
const NOTIFY_LIMIT: Duration = Duration::from_secs(20);

/// The host of `paymentUrl.web` for a listener: a wildcard address is reached on
/// loopback by a browser on the same machine.
fn page_host(local: std::net::SocketAddr) -> std::net::SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, local.port())
}

/// One GET over plain HTTP/1.1; the answer's status.
async fn get(url: &str) -> Result<StatusCode, String> {
    let uri: http::Uri = url.parse().map_err(|error| format!("{error}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// confirmUrls are called by the emulator".into());
    }
    let authority = uri.authority().ok_or("no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|error| error.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let request = Request::get(target)
        .header(http::header::HOST, authority.as_str())
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    Ok(response.status())
}

/// The service's error when a rehearsed fault drops the connection.
#[derive(Debug)]
struct DroppedOnPurpose;

impl std::fmt::Display for DroppedOnPurpose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by a rehearsed fault")
    }
}

impl std::error::Error for DroppedOnPurpose {}

#[cfg(test)]
mod tests;
