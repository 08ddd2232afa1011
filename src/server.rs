//! One connection on the proxy listener: HTTP/1.1, each call handed to the current
//! [`Proxy`] snapshot.
//!
//! HTTP/1.1 only (what every app's HTTP client speaks to a localhost proxy). The accept
//! loop, the connection cap and the drain are the runtime's ([`crate::runtime`]); a
//! connection past the cap gets one `503 overloaded` answer here and is closed, rather
//! than waiting unseen in the kernel's backlog.
//!
//! Time is bounded both ways: the request head must arrive within
//! [`HEADER_READ_TIMEOUT`] (which also closes a keep-alive connection left idle that
//! long), the body within `request.body_timeout`, and the runtime's socket cuts a client
//! that leaves its answer unread for `request.write_timeout`.
//!
//! Each call takes one snapshot of the configuration when it starts (`ArcSwap::load_full`),
//! so a reload never changes a call half-way.

use crate::channel::Listener;
use crate::journal::Hold;
use crate::proxy::{Proxy, MAX_HEAD_BYTES};
use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How long a client may take to send its request headers, and how long a keep-alive
/// connection may sit idle.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one accepted connection; one `overloaded` (past the cap) gets a 503 and is closed.
/// `hold` goes with each call, so that a money call in flight holds the connection
/// through the drain; `call_started` runs as each call starts (the socket's memory meter,
/// `runtime::meter`, charges the read buffer only between calls).
pub(crate) fn connection<I>(
    io: I,
    overloaded: bool,
    proxy: Arc<ArcSwap<Proxy>>,
    hold: Hold,
    listener: Listener,
    call_started: impl Fn() + Send + 'static,
) -> impl GracefulConnection<Error = hyper::Error> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        call_started();
        request.extensions_mut().insert(hold.clone());
        // One consistent snapshot per call, taken when the call starts.
        let snapshot = proxy.load_full();
        // Which port the call came on (a channel's own, or the shared one): the
        // connection's, shared by its calls.
        let listener = listener.clone();
        // Boxed: hyper moves the call's future a few times before it first polls it, and
        // a call's future is kilobytes (one allocation is cheaper than those copies).
        Box::pin(async move {
            let response = if overloaded {
                snapshot.refuse_over_capacity(request).await
            } else {
                snapshot.handle(request, &listener).await
            };
            Ok::<_, Infallible>(response.map(Full::new))
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(!overloaded);
    builder.serve_connection(io, service)
}
