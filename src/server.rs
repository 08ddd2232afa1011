//! The proxy listener: accepts the app's connections and hands each call to [`Proxy`].
//!
//! HTTP/1.1 only (what every app's HTTP client speaks to a localhost proxy), with a cap
//! on concurrent connections: past it, a connection gets one `503 overloaded` answer
//! and is closed, rather than waiting unseen in the kernel's backlog.

use crate::error::ProxyError;
use crate::proxy::Proxy;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
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

/// Serves until `shutdown` completes, then stops accepting. Connections already open
/// finish the call they are on.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(proxy.config().request.max_connections));
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
            () = &mut shutdown => return Ok(()),
        };
        let permit = permits.clone().try_acquire_owned().ok();
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let overloaded = permit.is_none();
            let service = service_fn(move |request| {
                let proxy = proxy.clone();
                async move {
                    let response = if overloaded {
                        ProxyError::Overloaded.to_response()
                    } else {
                        proxy.handle(request).await
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
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// The answer type the server writes, for callers that build their own services.
pub type Body = Full<Bytes>;
