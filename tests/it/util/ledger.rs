//! A LINE Pay test double for money calls: it keeps a small ledger (confirmed
//! transactions, their `payStatus`, their refunds), answers payment details from it
//! consistently, records every request it receives, and can be told, per operation, to
//! be slow, to apply a call and then stall (the answer is lost but the money moved), or
//! to stall without ever applying it.
//!
//! Routes: `POST /v3/payments/{id}/confirm`, `…/authorizations/{id}/capture|void`,
//! `…/{id}/refund`, and `GET /v3/payments?transactionId=…` (details: `1150` for a
//! transaction it never confirmed).

use super::upstream::Recorded;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashMap;

/// The service's "error": the double hangs up without answering.
#[derive(Debug)]
struct HungUp;

impl std::fmt::Display for HungUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the ledger hung up on purpose")
    }
}

impl std::error::Error for HungUp {}
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The product name in every confirm answer: it must never reach the journal in clear.
pub const PRODUCT_NAME: &str = "Single-Origin Secret Coffee";

/// How the double handles one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Processes for this long, applies, answers `0000`.
    Slow(Duration),
    /// Applies at once, then stalls this long before answering.
    ApplyThenStall(Duration),
    /// Stalls this long and never applies (then answers `9000`).
    StallWithoutApplying(Duration),
    /// Closes the connection at once without an answer, and applies this long after
    /// (LINE Pay still processing a call whose connection broke early).
    HangUpThenApply(Duration),
}

#[derive(Debug, Default, Clone)]
struct Payment {
    /// `None` for a captured-at-confirm payment (no `payStatus`).
    pay_status: Option<&'static str>,
    /// (amount, date)
    refunds: Vec<(i64, String)>,
}

#[derive(Default)]
struct State {
    payments: HashMap<String, Payment>,
    behaviours: HashMap<&'static str, Behaviour>,
    requests: Vec<Recorded>,
}

pub struct Ledger {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ledger {
    pub async fn start() -> Ledger {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the ledger: {error}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("ledger has no address: {error}"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let state = state.clone();
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let recorded = Recorded {
                                    method: parts.method.clone(),
                                    target: parts
                                        .uri
                                        .path_and_query()
                                        .map_or_else(String::new, |pq| pq.as_str().to_owned()),
                                    headers: parts.headers.clone(),
                                    body: body.clone(),
                                    peer,
                                };
                                lock(&state).requests.push(recorded.clone());
                                // No answer: hyper closes the connection.
                                answer(&state, &recorded).await.ok_or(HungUp)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ledger {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// `operation` is `confirm`, `capture`, `void` or `refund`.
    pub fn behave(&self, operation: &'static str, behaviour: Behaviour) {
        lock(&self.state).behaviours.insert(operation, behaviour);
    }

    /// A transaction confirmed with `capture: false`: authorised, not captured.
    pub fn authorized(&self, transaction_id: &str) {
        lock(&self.state).payments.insert(
            transaction_id.to_owned(),
            Payment {
                pay_status: Some("AUTHORIZATION"),
                refunds: Vec::new(),
            },
        );
    }

    /// A transaction confirmed and paid.
    pub fn paid(&self, transaction_id: &str) {
        lock(&self.state)
            .payments
            .insert(transaction_id.to_owned(), Payment::default());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// How many requests for this method and path (query excluded) arrived.
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path() == path)
            .count()
    }

    pub fn pay_status(&self, transaction_id: &str) -> Option<&'static str> {
        lock(&self.state)
            .payments
            .get(transaction_id)
            .and_then(|p| p.pay_status)
    }
}

async fn answer(state: &Arc<Mutex<State>>, request: &Recorded) -> Option<Response<Full<Bytes>>> {
    let segments: Vec<&str> = request.path().trim_start_matches('/').split('/').collect();
    if request.method == Method::GET && segments == ["v3", "payments"] {
        return Some(details(state, request.query().unwrap_or("")));
    }
    let (operation, id) = match segments.as_slice() {
        ["v3", "payments", id, "confirm"] => ("confirm", *id),
        ["v3", "payments", id, "refund"] => ("refund", *id),
        ["v3", "payments", "authorizations", id, "capture"] => ("capture", *id),
        ["v3", "payments", "authorizations", id, "void"] => ("void", *id),
        _ => return Some(reply(StatusCode::NOT_FOUND, json!({"returnCode": "9000"}))),
    };
    let behaviour = lock(state)
        .behaviours
        .get(operation)
        .copied()
        .unwrap_or(Behaviour::Slow(Duration::ZERO));
    let refund_amount = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|body| body.get("refundAmount").and_then(Value::as_i64));
    let apply = || apply(state, operation, id, refund_amount);
    match behaviour {
        Behaviour::Slow(delay) => {
            // Like LINE Pay, the processing goes on when the caller hangs up or dies
            // (hyper drops this future then): it runs in a task of its own.
            let state = state.clone();
            let id = id.to_owned();
            let processing = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                self::apply(&state, operation, &id, refund_amount);
            });
            let _ = processing.await;
        }
        Behaviour::ApplyThenStall(stall) => {
            apply();
            tokio::time::sleep(stall).await;
        }
        Behaviour::StallWithoutApplying(stall) => {
            tokio::time::sleep(stall).await;
            return Some(reply(
                StatusCode::OK,
                json!({"returnCode": "9000", "returnMessage": "internal error"}),
            ));
        }
        Behaviour::HangUpThenApply(delay) => {
            let state = state.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                self::apply(&state, operation, &id, refund_amount);
            });
            return None;
        }
    }
    let info = match operation {
        "confirm" => json!({
            "transactionId": id.parse::<u64>().unwrap_or_default(),
            "orderId": "order-1",
            "packages": [{"id": "p1", "amount": 100, "products": [{"name": PRODUCT_NAME, "quantity": 1, "price": 100}]}],
        }),
        "refund" => {
            json!({"refundTransactionId": 2_099_999_999_999_999_999u64, "refundTransactionDate": now_rfc3339()})
        }
        _ => json!({"transactionId": id.parse::<u64>().unwrap_or_default()}),
    };
    Some(reply(
        StatusCode::OK,
        json!({"returnCode": "0000", "returnMessage": "Success.", "info": info}),
    ))
}

fn apply(state: &Mutex<State>, operation: &str, id: &str, refund_amount: Option<i64>) {
    let mut state = lock(state);
    let payment = state.payments.entry(id.to_owned()).or_default();
    match operation {
        "capture" => payment.pay_status = Some("CAPTURE"),
        "void" => payment.pay_status = Some("VOIDED_AUTHORIZATION"),
        "refund" => payment
            .refunds
            .push((refund_amount.unwrap_or(100), now_rfc3339())),
        _ => {}
    }
}

fn details(state: &Mutex<State>, query: &str) -> Response<Full<Bytes>> {
    let id = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("transactionId="))
        .unwrap_or("");
    let state = lock(state);
    let Some(payment) = state.payments.get(id) else {
        return reply(
            StatusCode::OK,
            json!({"returnCode": "1150", "returnMessage": "Transaction record not found."}),
        );
    };
    let mut entry = json!({
        "transactionId": id.parse::<u64>().unwrap_or_default(),
        "transactionType": "PAYMENT",
        "productName": PRODUCT_NAME,
    });
    if let Some(status) = payment.pay_status {
        entry["payStatus"] = json!(status);
    }
    if !payment.refunds.is_empty() {
        entry["refundList"] = payment
            .refunds
            .iter()
            .map(|(amount, date)| json!({"refundTransactionId": 2_099_999_999_999_999_999u64, "transactionType": "PARTIAL_REFUND", "refundAmount": -amount, "refundTransactionDate": date}))
            .collect();
    }
    reply(
        StatusCode::OK,
        json!({"returnCode": "0000", "returnMessage": "Success.", "info": [entry]}),
    )
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// How long a test waits for a stall that should outlast the sidecar's read timeout.
pub const LONG_STALL: Duration = Duration::from_secs(4);
