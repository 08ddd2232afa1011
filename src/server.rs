//! One connection on the proxy listener: HTTP/1.1, each call handed to the current
//! [`Proxy`] snapshot.
//!
//! HTTP/1.1 only (what every app's HTTP client speaks to a localhost proxy). The accept
//! loop, the connection cap and the drain are the runtime's ([`crate::runtime`]); a
//! connection past the cap gets one `503 overloaded` answer here and is closed, rather
//! than waiting unseen in the kernel's backlog.
//!
//! Each call takes one snapshot of the configuration when it starts (`ArcSwap::load_full`),
//! so a reload never changes a call half-way.

use crate::error::ProxyError;
use crate::proxy::Proxy;
use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line plus headers; LINE Pay calls need a few hundred bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves one accepted connection; one `overloaded` (past the cap) gets a 503 and is closed.
pub(crate) fn connection(
    io: TokioIo<TcpStream>,
    overloaded: bool,
    proxy: Arc<ArcSwap<Proxy>>,
) -> impl GracefulConnection<Error = hyper::Error> + Send + 'static {
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
    // An answer is written at once (head and body in one `writev`); no Nagle delay on
    // the app's side of a keep-alive connection (the upstream side sets it too).
    if let Err(error) = io.inner().set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(!overloaded);
    builder.serve_connection(io, service)
}
