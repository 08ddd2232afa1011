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
        if let Some(address) = refused_source {
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
