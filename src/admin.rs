//! The admin listener's answers: `/metrics`, `/healthz`, `/readyz`, and `/calls` (the
//! call journal, read only, to loopback peers by default: [`calls`]), on a port of its own
//! so that it can never collide with a proxied path, and with no route to LINE Pay at
//! all: this module holds no proxy, no signer and no upstream client. Its accept loop is
//! the runtime's, shared with the proxy listener.

mod calls;

pub(crate) use self::calls::Calls;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioTimer;
use hyper_util::server::graceful::GracefulConnection;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Probes and scrapes need a handful of connections at a time. The admin port often
/// listens on every interface: past the cap, a connection is closed at once so it
/// cannot eat the file descriptors the proxy needs.
pub(crate) const MAX_ADMIN_CONNECTIONS: usize = 64;
/// Connections from one address at most: one client (a scraper gone wrong, a hostile
/// neighbour) cannot hold every slot, so the kubelet's probes still get through.
pub(crate) const MAX_ADMIN_CONNECTIONS_PER_PEER: usize = 8;
/// How long a probe or scraper may take to send its request headers, and how long an
/// admin connection may sit idle.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an answer may stay unread before the connection is cut (the runtime's
/// socket enforces it).
pub(crate) const ADMIN_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What `/readyz` answers from: whether *this process* can serve calls. Every check is
/// cached state updated elsewhere (the runtime, the egress-address check, the upstream
/// probe), so a probe costs nothing.
///
/// Ready means: the proxy listener accepts (set by the runtime once both listeners are
/// bound and serving; the configuration was loaded and built before that, and a failed
/// reload keeps the last good one serving), the process is not draining, and every
/// configured egress check passes (today `egress_ip`; a bind address that is not on the
/// host stops start-up instead). LINE Pay's reachability counts only when
/// `admin.ready_requires_upstream` is on; otherwise it is the
/// `linepay_sidecar_upstream_up` gauge's business, so a LINE Pay outage does not take
/// every pod out of its Service at once.
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    /// `admin.ready_requires_upstream` of the current configuration.
    requires_upstream: AtomicBool,
    /// The last upstream probe; `None` until the first one finished.
    upstream: Mutex<Option<Result<(), String>>>,
    /// Extra checks by name (today `egress_ip`, the expected egress address):
    /// `Err(reason)` fails.
    checks: Mutex<Vec<(String, Result<(), String>)>>,
}

impl Readiness {
    /// The proxy listener accepts connections (`true`) or no longer does.
    pub(crate) fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }

    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether the upstream probe's result counts (`admin.ready_requires_upstream`).
    pub(crate) fn set_requires_upstream(&self, required: bool) {
        self.requires_upstream.store(required, Ordering::SeqCst);
    }

    /// The upstream probe's latest result, kept whether or not it counts.
    pub(crate) fn set_upstream(&self, result: Result<(), String>) {
        *self.upstream.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
    }

    /// Sets (or replaces) a named check, e.g. `egress_ip`.
    pub(crate) fn set_check(&self, name: &str, result: Result<(), String>) {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        match checks.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = result,
            None => checks.push((name.to_owned(), result)),
        }
    }

    /// `Ok` when ready, else every reason it is not.
    pub(crate) fn verdict(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if !self.listening.load(Ordering::SeqCst) {
            reasons.push("listening: the proxy listener is not accepting".to_owned());
        }
        if self.is_draining() {
            reasons.push("draining: shutting down".to_owned());
        }
        if self.requires_upstream.load(Ordering::SeqCst) {
            match &*self.upstream.lock().unwrap_or_else(PoisonError::into_inner) {
                None => reasons.push("upstream: not probed yet".to_owned()),
                Some(Err(reason)) => reasons.push(format!("upstream: {reason}")),
                Some(Ok(())) => {}
            }
        }
        for (name, result) in self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            if let Err(reason) = result {
                reasons.push(format!("{name}: {reason}"));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// Serves one accepted admin connection (the accept loop and its cap of
/// [`MAX_ADMIN_CONNECTIONS`] are the runtime's).
pub(crate) fn connection<I>(
    io: I,
    peer: Option<IpAddr>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    calls: Arc<Calls>,
) -> impl GracefulConnection<Error = hyper::Error> + Send + 'static
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
        let lookup = (request.uri().path() == "/calls" && request.method() == Method::GET)
            .then(|| request.uri().query().unwrap_or("").to_owned());
        let response = match lookup {
            Some(_) => None,
            None => Some(answer(&request, &metrics, &readiness)),
        };
        let metrics = metrics.clone();
        let calls = calls.clone();
        async move {
            Ok::<_, Infallible>(match (response, lookup) {
                (Some(response), _) => response,
                (None, Some(query)) => calls.answer(&query, peer, &metrics).await,
                (None, None) => text(StatusCode::INTERNAL_SERVER_ERROR, "internal\n"),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.serve_connection(io, service)
}

fn answer<B>(
    request: &Request<B>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let mut response = text(StatusCode::OK, &metrics.render());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match readiness.verdict() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(reasons) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready\n{}\n", reasons.join("\n")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "the admin port serves /metrics, /healthz, /readyz and /calls only; LINE Pay calls go to the proxy port\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        let mut request = Request::new(());
        *request.uri_mut() = path.parse().unwrap_or_default();
        request
    }

    #[test]
    fn readiness_is_this_process_listening_not_draining_and_its_egress_checks() {
        let readiness = Readiness::default();
        assert!(readiness.verdict().is_err(), "not listening yet");
        readiness.set_listening(true);
        assert_eq!(readiness.verdict(), Ok(()), "no probe needed by default");
        readiness.set_upstream(Err("upstream_unreachable".into()));
        assert_eq!(readiness.verdict(), Ok(()), "LINE Pay's outage is not ours");
        readiness.set_check("egress_ip", Err("saw 1.2.3.4".into()));
        assert_eq!(
            readiness.verdict(),
            Err(vec!["egress_ip: saw 1.2.3.4".to_owned()])
        );
        readiness.set_check("egress_ip", Ok(()));
        readiness.start_draining();
        assert_eq!(
            readiness.verdict(),
            Err(vec!["draining: shutting down".to_owned()])
        );
    }

    #[test]
    fn readiness_can_opt_in_to_the_upstream_probe() {
        let readiness = Readiness::default();
        readiness.set_listening(true);
        readiness.set_requires_upstream(true);
        assert_eq!(
            readiness.verdict(),
            Err(vec!["upstream: not probed yet".to_owned()])
        );
        readiness.set_upstream(Ok(()));
        assert_eq!(readiness.verdict(), Ok(()));
        readiness.set_upstream(Err("upstream_unreachable".into()));
        assert_eq!(
            readiness.verdict(),
            Err(vec!["upstream: upstream_unreachable".to_owned()])
        );
    }

    #[test]
    fn unknown_admin_paths_never_proxy() {
        let metrics = Metrics::new();
        let readiness = Readiness::default();
        let response = answer(&get("/v3/payments/request"), &metrics, &readiness);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            answer(&get("/healthz"), &metrics, &readiness).status(),
            StatusCode::OK
        );
        assert_eq!(
            answer(&get("/readyz"), &metrics, &readiness).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
