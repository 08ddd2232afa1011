//! Every refusal the sidecar makes on its own: the status, the stable code (in the body
//! and in `x-linepay-sidecar-error`), and nothing at all reaching the upstream.
//!
//! Refusals that need nothing but a default sidecar are tables: one row a case, each row
//! checked in full and named in any failure.

use crate::util::{send_raw, Call, Reply, RunningSidecar, Sidecar, Upstream};
use http::Method;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Checks one refusal: status, marker header, JSON body code, and that the app is told
/// it may send again (nothing left the sidecar).
#[track_caller]
fn assert_refused(reply: &Reply, status: u16, code: &str) {
    reply.assert_sidecar_error(status, code);
    assert_eq!(reply.retry_safe(), Some(true), "{}", reply.text());
    assert!(
        reply.error_message().is_some_and(|m| !m.is_empty()),
        "no message: {}",
        reply.text()
    );
}

async fn sidecar_in_front_of(upstream: &Upstream) -> RunningSidecar {
    Sidecar::new().upstream(upstream.url()).start().await
}

/// What the app sends in one case: an ordinary call, or bytes exactly as given (targets
/// a URI type would normalise or refuse, a head without its body).
enum Attempt {
    Call(Call),
    Raw(Vec<u8>),
}

impl Attempt {
    async fn send(self, addr: SocketAddr) -> Reply {
        match self {
            Attempt::Call(call) => call.send(addr).await,
            Attempt::Raw(bytes) => send_raw(addr, bytes).await,
        }
    }
}

/// A raw `POST` with a JSON body and its exact length.
fn raw_post(target: &str, host: &str, body: &str) -> Attempt {
    Attempt::Raw(
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// One row of a refusal table: what is sent, and the refusal it must earn.
struct Refusal {
    case: String,
    attempt: Attempt,
    status: u16,
    code: &'static str,
    /// The `Allow` header: the methods a 405 names; absent on every other refusal.
    allow: Option<&'static str>,
    /// Text the error message must hold, and text it must not (the target is not echoed).
    message_has: Option<&'static str>,
    message_lacks: Option<&'static str>,
}

fn refusal(case: impl Into<String>, attempt: Attempt, status: u16, code: &'static str) -> Refusal {
    Refusal {
        case: case.into(),
        attempt,
        status,
        code,
        allow: None,
        message_has: None,
        message_lacks: None,
    }
}

impl Refusal {
    fn allow(mut self, methods: &'static str) -> Refusal {
        self.allow = Some(methods);
        self
    }

    fn message_has(mut self, text: &'static str) -> Refusal {
        self.message_has = Some(text);
        self
    }

    fn message_lacks(mut self, text: &'static str) -> Refusal {
        self.message_lacks = Some(text);
        self
    }
}

/// Sends every case to `sidecar`, one after the other, and checks each in full: status,
/// marker header and body code, `retry_safe`, a message, `Allow`, and that still nothing
/// has reached `upstream`.
async fn assert_all_refused(upstream: &Upstream, sidecar: &RunningSidecar, cases: Vec<Refusal>) {
    for row in cases {
        let case = row.case.as_str();
        let reply = row.attempt.send(sidecar.addr).await;
        reply.assert_case_sidecar_error(case, row.status, row.code);
        assert_eq!(
            reply.retry_safe(),
            Some(true),
            "case {case:?}: retry_safe: {}",
            reply.text()
        );
        let message = reply.error_message().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "case {case:?}: no message: {}",
            reply.text()
        );
        assert_eq!(reply.header("allow"), row.allow, "case {case:?}: Allow");
        if let Some(text) = row.message_has {
            assert!(message.contains(text), "case {case:?}: {message}");
        }
        if let Some(text) = row.message_lacks {
            assert!(
                !message.contains(text),
                "case {case:?}: {text:?} is echoed: {message}"
            );
        }
        assert_eq!(
            upstream.count(),
            0,
            "case {case:?}: a refused call reached the upstream"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_outside_the_allowlist_are_refused_with_403_or_405() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let mut cases = Vec::new();
    for target in [
        "/v3/admin",
        "/v3/payments/request/extra",
        "/",
        "/v1/payments/request",
    ] {
        let call = Call::post(target, "{}");
        cases.push(refusal(
            format!("unknown path {target}"),
            Attempt::Call(call),
            403,
            "path_not_allowed",
        ));
    }
    cases.extend([
        refusal(
            "v2 path without the legacy flag",
            Attempt::Call(Call::post("/v2/payments/request", r#"{"amount":1}"#)),
            403,
            "api_family_disabled",
        )
        .message_has("`routes.apis: [online_v3, online_v4, online_v2]`"),
        refusal(
            "GET on a POST route",
            Attempt::Call(Call::get("/v3/payments/request")),
            405,
            "method_not_allowed",
        )
        .allow("POST"),
        refusal(
            "DELETE on a POST route",
            Attempt::Call(Call::new(
                Method::DELETE,
                "/v3/payments/2021121600698709710/refund",
            )),
            405,
            "method_not_allowed",
        )
        .allow("POST"),
        refusal(
            "POST on a GET route",
            Attempt::Call(Call::post("/v3/payments", "{}")),
            405,
            "method_not_allowed",
        )
        .allow("GET"),
        refusal(
            "CONNECT",
            Attempt::Raw(
                b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            ),
            405,
            "method_not_allowed",
        )
        .allow("GET, POST")
        .message_has("CONNECT is not supported")
        .message_lacks("evil"),
    ]);

    assert_all_refused(&upstream, &sidecar, cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_targets_are_refused_not_normalised() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;
    let host = sidecar.addr.to_string();
    let body = r#"{"amount":1}"#;

    let mut cases = Vec::new();
    for (case, path) in [
        ("dot-dot segment", "/v3/payments/../payments/request"),
        ("dot segment", "/v3/payments/./request"),
        (
            "dot-dot out of another segment",
            "/v3/x/../payments/request",
        ),
        ("encoded dot-dot", "/v3/payments/%2e%2e/payments/request"),
        (
            "encoded dot-dot, upper case",
            "/v3/payments/%2E%2E/payments/request",
        ),
        ("encoded slash", "/v3/payments%2frequest"),
        ("encoded slash, upper case", "/v3/payments%2Frequest"),
        ("encoded letter", "/v3/payments/%72equest"),
        ("double slash", "/v3//payments/request"),
        ("leading double slash", "//v3/payments/request"),
        ("trailing slash", "/v3/payments/request/"),
        ("backslash", "/v3/payments\\request"),
        ("path parameter", "/v3/payments/request;jsessionid=1"),
    ] {
        // Raw bytes: a URI type on the client side could normalise these away.
        cases.push(refusal(
            format!("{case}: {path}"),
            raw_post(path, &host, body),
            400,
            "ambiguous_path",
        ));
    }
    cases.extend([
        refusal(
            "absolute-form target",
            raw_post(
                "http://evil.example/v3/payments/request",
                "evil.example",
                body,
            ),
            400,
            "invalid_target",
        ),
        // Even naming the real upstream: the app sends paths, never URLs.
        refusal(
            "absolute-form target naming the upstream",
            raw_post(
                &format!("{}/v3/payments/request", upstream.url()),
                "evil.example",
                body,
            ),
            400,
            "invalid_target",
        ),
    ]);

    assert_all_refused(&upstream, &sidecar, cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_and_queries_that_cannot_be_signed_as_sent_are_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    // Only the head is sent: the declared length alone must earn the refusal, without
    // the sidecar waiting for 64 KiB it will not accept.
    let declared_too_large = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        sidecar.addr,
        64 * 1024 + 1
    );

    // Valid JSON (a long string), so only its size is wrong; no Content-Length.
    let mut json = b"{\"pad\":\"".to_vec();
    json.resize(64 * 1024 + 16, b'x');
    json.extend_from_slice(b"\"}");
    let mut chunked_too_large = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        sidecar.addr
    )
    .into_bytes();
    for chunk in json.chunks(8 * 1024) {
        chunked_too_large.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked_too_large.extend_from_slice(chunk);
        chunked_too_large.extend_from_slice(b"\r\n");
    }
    chunked_too_large.extend_from_slice(b"0\r\n\r\n");

    let mut cases = vec![
        refusal(
            "Content-Length over the limit",
            Attempt::Raw(declared_too_large.into_bytes()),
            413,
            "body_too_large",
        ),
        refusal(
            "chunked body over the limit",
            Attempt::Raw(chunked_too_large),
            413,
            "body_too_large",
        ),
    ];
    for (case, body) in [
        (
            "unterminated JSON",
            &br#"{"amount":100,"currency":"TWD""#[..],
        ),
        ("form encoding", b"amount=100&currency=TWD"),
        ("two JSON values", br#"{"amount":100}{"amount":200}"#),
        // Big5 for 台灣 inside an otherwise valid JSON string.
        (
            "non-UTF-8 (Big5) string",
            b"{\"name\":\"\xa5\x78\xc6\x57\"}",
        ),
    ] {
        cases.push(refusal(
            case,
            Attempt::Call(Call::post("/v3/payments/request", body)),
            400,
            "invalid_json",
        ));
    }
    cases.extend([
        refusal(
            "GET with a body",
            Attempt::Call(
                Call::get("/v3/payments?transactionId=2021121600698709710")
                    .header("content-type", "application/json")
                    .body(r#"{"transactionId":1}"#),
            ),
            400,
            "unexpected_body",
        ),
        refusal(
            "POST with a query",
            Attempt::Call(Call::post(
                "/v3/payments/request?amount=1",
                r#"{"amount":100}"#,
            )),
            400,
            "unexpected_query",
        ),
    ]);

    assert_all_refused(&upstream, &sidecar, cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn body_at_the_limit_is_accepted() {
    // The other side of the 413 boundary, so the limit is not simply "anything large".
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;
    let mut json = b"{\"pad\":\"".to_vec();
    json.resize(64 * 1024 - 2, b'x');
    json.extend_from_slice(b"\"}");
    assert_eq!(json.len(), 64 * 1024);

    let reply = Call::post("/v3/payments/request", json.clone())
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.only_request().body.len(), json.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn smaller_max_body_bytes_flag_is_enforced() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--max-body-bytes")
        .arg("16")
        .start()
        .await;

    let reply = Call::post("/v3/payments/request", r#"{"amount":100,"currency":"TWD"}"#)
        .send(sidecar.addr)
        .await;

    assert_refused(&reply, 413, "body_too_large");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_keeps_serving_after_refusals() {
    // A refusal ends one call, not the sidecar: the next good call goes through.
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let refused = Call::post("/v3/admin", "{}").send(sidecar.addr).await;
    assert_refused(&refused, 403, "path_not_allowed");
    let accepted = Call::post("/v3/payments/request", "{}")
        .send(sidecar.addr)
        .await;

    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(accepted.sidecar_error(), None);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_that_stalls_is_refused_with_408_after_the_body_timeout() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml("body-timeout.yaml", "request:\n  body_timeout: 1s\n")
        .start()
        .await;

    // Twenty bytes announced, five sent, and the connection left open.
    let request = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 20\r\n\r\n{{\"amo",
        sidecar.addr
    );
    let started = Instant::now();
    let reply = send_raw(sidecar.addr, request).await;
    let elapsed = started.elapsed();

    assert_refused(&reply, 408, "body_timeout");
    assert!(
        elapsed >= Duration::from_secs(1),
        "answered before the timeout: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(upstream.count(), 0);
}
