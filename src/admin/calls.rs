//! `GET /calls`: the call journal, read only, on the admin port.
//!
//! The journal names transactions, orders, amounts and idempotency keys, and the admin
//! port has no authentication, so `/calls` answers only the peers `admin.calls` allows
//! (loopback by default: a pod's admin listener is on the pod IP for the kubelet and
//! Prometheus). A lookup is one indexed query ([`Store::write_json`]) on a read
//! connection of the admin's own, never the proxy's, so it never waits for nor delays a
//! money call's write (WAL); at most [`MAX_CONCURRENT`] run at once, each over a page of
//! at most [`MAX_LIMIT`] rows written straight into its answer. Past the cap a request
//! is answered `429 calls_busy` at once.

use crate::config::CallsAccess;
use crate::error::SIDECAR_ERROR_HEADER;
use crate::journal::{Filter, Store};
use crate::metrics::Metrics;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Semaphore;

/// `/calls` lookups running at once at most (each holds one read connection).
pub(crate) const MAX_CONCURRENT: usize = 4;
/// Rows in one answer at most (`limit`); the default is 100.
pub(crate) const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 100;

/// What `/calls` answers from: the journal's path, who may ask, and the read
/// connections kept between lookups.
pub(crate) struct Calls {
    /// `None` when the journal is off.
    journal: Option<PathBuf>,
    access: CallsAccess,
    permits: Arc<Semaphore>,
    /// Idle read connections, at most [`MAX_CONCURRENT`].
    idle: Arc<Mutex<Vec<Store>>>,
}

impl Calls {
    pub(crate) fn new(journal: Option<PathBuf>, access: CallsAccess) -> Calls {
        Calls {
            journal,
            access,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            idle: Arc::default(),
        }
    }

    /// Answers `GET /calls?{query}` from `peer` (`None` when the socket could not tell,
    /// which counts as not loopback).
    pub(crate) async fn answer(
        &self,
        query: &str,
        peer: Option<IpAddr>,
        metrics: &Metrics,
    ) -> Response<Full<Bytes>> {
        let response = self.lookup(query, peer, metrics).await;
        let answer = match response.headers().get(SIDECAR_ERROR_HEADER) {
            Some(code) => code.to_str().unwrap_or("internal"),
            None => "ok",
        };
        metrics.calls_lookups.with_label_values(&[answer]).inc();
        response
    }

    async fn lookup(
        &self,
        query: &str,
        peer: Option<IpAddr>,
        metrics: &Metrics,
    ) -> Response<Full<Bytes>> {
        if self.access == CallsAccess::Off {
            return error(
                StatusCode::NOT_FOUND,
                "calls_off",
                "/calls is off (admin.calls: off)",
            );
        }
        if !peer.is_some_and(|peer| self.access.allows(peer)) {
            return error(
                StatusCode::FORBIDDEN,
                "calls_forbidden",
                "/calls answers loopback peers only (admin.calls: loopback); use kubectl port-forward or exec, or see docs/operating.md",
            );
        }
        let Some(path) = self.journal.clone() else {
            return error(
                StatusCode::NOT_FOUND,
                "journal_off",
                "the call journal is off (journal.enabled: false)",
            );
        };
        let filter = match parse(query) {
            Ok(filter) => filter,
            Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_calls_query", &message),
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "calls_busy",
                "too many /calls lookups at once; retry in a second",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        };
        let idle = self.idle.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let reused = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let store = match reused {
                Some(store) => store,
                None => Store::open_to_read(&path)?,
            };
            let mut body = Vec::with_capacity(4096);
            let result = store.write_json(&filter, &mut body).map(|_| body);
            if result.is_ok() {
                let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < MAX_CONCURRENT {
                    idle.push(store);
                }
            }
            result
        })
        .await;
        match written {
            Ok(Ok(body)) => {
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            Ok(Err(failure)) => {
                metrics.journal_failures.with_label_values(&["read"]).inc();
                tracing::error!(error = %failure, "journal read failed");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "journal_unavailable",
                    "the journal cannot be read; the log says why",
                )
            }
            Err(_) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            ),
        }
    }
}

/// `transactionId`, `orderId`, `request_id` (percent-decoded), `pending=true|false`,
/// `limit=1..1000`.
fn parse(query: &str) -> Result<Filter, String> {
    let mut filter = Filter {
        limit: DEFAULT_LIMIT,
        ..Filter::default()
    };
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(&value.replace('+', " "))
            .decode_utf8()
            .map_err(|_| format!("{key}: not UTF-8"))?
            .into_owned();
        match key {
            "transactionId" => filter.transaction_id = Some(value),
            "orderId" => filter.order_id = Some(value),
            "request_id" => filter.request_id = Some(value),
            "pending" => {
                filter.pending = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err("pending is true or false".to_owned()),
                }
            }
            "limit" => {
                filter.limit = value
                    .parse()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| format!("limit is 1 to {MAX_LIMIT}"))?;
            }
            _ => {
                return Err(
                    "/calls takes transactionId, orderId, request_id, pending and limit".to_owned(),
                )
            }
        }
    }
    Ok(filter)
}

/// A JSON error with a stable code, shaped like the proxy's.
fn error(status: StatusCode, code: &'static str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(SIDECAR_ERROR_HEADER, HeaderValue::from_static(code));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_strictly() {
        let filter = parse("orderId=order%201&pending=true&limit=5").unwrap();
        assert_eq!(filter.order_id.as_deref(), Some("order 1"));
        assert!(filter.pending);
        assert_eq!(filter.limit, 5);
        assert_eq!(parse("").unwrap().limit, DEFAULT_LIMIT);
        assert!(parse("limit=0").is_err());
        assert!(parse("limit=1001").is_err());
        assert_eq!(parse("limit=1000").unwrap().limit, 1000);
        assert!(parse("pending=yes").is_err());
        assert!(parse("amount=1").is_err());
    }

    #[tokio::test]
    async fn loopback_only_by_default_and_over_the_cap_is_busy() {
        let metrics = Metrics::new();
        let calls = Calls::new(None, CallsAccess::Loopback);
        let remote: IpAddr = "192.0.2.7".parse().unwrap();
        let status = |r: Response<Full<Bytes>>| r.status();
        assert_eq!(
            status(calls.answer("", Some(remote), &metrics).await),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(calls.answer("", None, &metrics).await),
            StatusCode::FORBIDDEN
        );
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        // Allowed through, then the journal is off.
        assert_eq!(
            status(calls.answer("", Some(loopback), &metrics).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(calls.answer("", Some(mapped), &metrics).await),
            StatusCode::NOT_FOUND
        );
        let any = Calls::new(Some("/nonexistent/j".into()), CallsAccess::Any);
        let held: Vec<_> = (0..MAX_CONCURRENT)
            .map(|_| any.permits.clone().try_acquire_owned().unwrap())
            .collect();
        let busy = any.answer("", Some(remote), &metrics).await;
        assert_eq!(busy.status(), StatusCode::TOO_MANY_REQUESTS);
        drop(held);
        let rendered = metrics.render();
        for (answer, count) in [
            ("calls_forbidden", 2),
            ("journal_off", 2),
            ("calls_busy", 1),
        ] {
            let series =
                format!("linepay_sidecar_admin_calls_total{{answer=\"{answer}\"}} {count}");
            assert!(rendered.contains(&series), "{series} in {rendered}");
        }
        let off = Calls::new(Some("/nonexistent/j".into()), CallsAccess::Off);
        assert_eq!(
            status(off.answer("", Some(loopback), &metrics).await),
            StatusCode::NOT_FOUND
        );
    }
}
