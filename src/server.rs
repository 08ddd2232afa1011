//! The proxy listener: accepts the app's connections and hands each call to the
//! current [`Proxy`] snapshot.
//!
//! HTTP/1.1 only (what every app's HTTP client speaks to a localhost proxy), with a cap
//! on concurrent connections: past it, a connection gets one `503 overloaded` answer
//! and is closed, rather than waiting unseen in the kernel's backlog.
//!
//! Each call takes one snapshot of the configuration when it starts (`ArcSwap::load_full`),
//! so a reload never changes a call half-way. On shutdown the listener is closed at once
//! (new connections are refused), idle keep-alive connections are closed, and calls in
//! flight finish, up to the drain deadline.

use crate::error::ProxyError;
use crate::proxy::Proxy;
use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; LINE Pay calls need a few hundred bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How the proxy listener ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every call in flight finished.
    Complete,
    /// The drain deadline passed with this many connections still open.
    DeadlinePassed { open_connections: usize },
}

/// Serves until `shutdown` completes, then drains for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<ArcSwap<Proxy>>,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) -> Drained {
    let max_connections = proxy.load().config().request.max_connections;
    let permits = Arc::new(Semaphore::new(max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = permits.clone().try_acquire_owned().ok();
        let overloaded = permit.is_none();
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            // One consistent snapshot per call, taken when the call starts.
            let snapshot = proxy.load_full();
            async move {
                let response = if overloaded {
                    ProxyError::Overloaded.to_response()
                } else {
                    snapshot.handle(request).await
                };
                Ok::<_, Infallible>(response.map(Full::new))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(!overloaded);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }

    // Closing the listener now makes new connections fail fast instead of queueing.
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        drain_timeout_s = drain_timeout.as_secs_f64(),
        "draining"
    );
    let deadline = tokio::time::Instant::now() + drain_timeout;
    let drained = tokio::time::timeout_at(deadline, graceful.shutdown()).await;
    match drained {
        Ok(()) => Drained::Complete,
        Err(_) => Drained::DeadlinePassed {
            open_connections: open,
        },
    }
}
