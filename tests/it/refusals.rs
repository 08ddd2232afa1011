//! Every refusal the sidecar makes on its own: the status, the stable code (in the body
//! and in `x-linepay-sidecar-error`), and nothing at all reaching the upstream.

use crate::util::{send_raw, Call, Reply, RunningSidecar, Sidecar, Upstream};
use http::Method;
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

#[tokio::test(flavor = "multi_thread")]
async fn unknown_path_is_refused_with_403() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    for target in [
        "/v3/admin",
        "/v3/payments/request/extra",
        "/",
        "/v1/payments/request",
    ] {
        let reply = Call::post(target, "{}").send(sidecar.addr).await;
        assert_refused(&reply, 403, "path_not_allowed");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_paths_are_refused_without_the_legacy_flag() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let reply = Call::post("/v2/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;

    assert_refused(&reply, 403, "path_not_allowed");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn known_path_with_wrong_method_is_refused_with_405_and_allow() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let reply = Call::get("/v3/payments/request").send(sidecar.addr).await;
    assert_refused(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));

    let reply = Call::new(Method::DELETE, "/v3/payments/2021121600698709710/refund")
        .send(sidecar.addr)
        .await;
    assert_refused(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));

    let reply = Call::post("/v3/payments", "{}").send(sidecar.addr).await;
    assert_refused(&reply, 405, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("GET"));

    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn ambiguous_paths_are_refused_not_normalised() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;
    let body = r#"{"amount":1}"#;

    for path in [
        "/v3/payments/../payments/request",
        "/v3/payments/./request",
        "/v3/x/../payments/request",
        "/v3/payments/%2e%2e/payments/request",
        "/v3/payments/%2E%2E/payments/request",
        "/v3/payments%2frequest",
        "/v3/payments%2Frequest",
        "/v3/payments/%72equest",
        "/v3//payments/request",
        "//v3/payments/request",
        "/v3/payments/request/",
        "/v3/payments\\request",
        "/v3/payments/request;jsessionid=1",
    ] {
        // Raw bytes: a URI type on the client side could normalise these away.
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            sidecar.addr,
            body.len()
        );
        let reply = send_raw(sidecar.addr, request).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.text());
        assert_refused(&reply, 400, "ambiguous_path");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn absolute_form_target_is_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;
    let body = r#"{"amount":1}"#;

    for target in [
        "http://evil.example/v3/payments/request".to_owned(),
        // Even naming the real upstream: the app sends paths, never URLs.
        format!("{}/v3/payments/request", upstream.url()),
    ] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let reply = send_raw(sidecar.addr, request).await;
        assert_refused(&reply, 400, "invalid_target");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_is_refused_with_405() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let reply = send_raw(
        sidecar.addr,
        "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
    )
    .await;

    assert_refused(&reply, 405, "method_not_allowed");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(message.contains("CONNECT is not supported"), "{message}");
    assert!(
        !message.contains("evil"),
        "the target is not echoed: {message}"
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_limit_with_content_length_is_refused_before_it_is_sent() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    // Only the head is sent: the declared length alone must earn the refusal, without
    // the sidecar waiting for 64 KiB it will not accept.
    let request = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        sidecar.addr,
        64 * 1024 + 1
    );
    let reply = send_raw(sidecar.addr, request).await;

    assert_refused(&reply, 413, "body_too_large");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn chunked_body_over_the_limit_is_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    // Valid JSON (a long string), so only its size is wrong; no Content-Length.
    let mut json = b"{\"pad\":\"".to_vec();
    json.resize(64 * 1024 + 16, b'x');
    json.extend_from_slice(b"\"}");
    let mut request = format!(
        "POST /v3/payments/request HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        sidecar.addr
    )
    .into_bytes();
    for chunk in json.chunks(8 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");

    let reply = send_raw(sidecar.addr, request).await;

    assert_refused(&reply, 413, "body_too_large");
    assert_eq!(upstream.count(), 0);
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
async fn invalid_json_is_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    for body in [
        &br#"{"amount":100,"currency":"TWD""#[..],
        b"amount=100&currency=TWD",
        br#"{"amount":100}{"amount":200}"#,
    ] {
        let reply = Call::post("/v3/payments/request", body)
            .send(sidecar.addr)
            .await;
        assert_refused(&reply, 400, "invalid_json");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn non_utf8_body_is_refused_as_invalid_json() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    // Big5 for 台灣 inside an otherwise valid JSON string.
    let body: &[u8] = b"{\"name\":\"\xa5\x78\xc6\x57\"}";
    let reply = Call::post("/v3/payments/request", body)
        .send(sidecar.addr)
        .await;

    assert_refused(&reply, 400, "invalid_json");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn get_with_a_body_is_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let reply = Call::get("/v3/payments?transactionId=2021121600698709710")
        .header("content-type", "application/json")
        .body(r#"{"transactionId":1}"#)
        .send(sidecar.addr)
        .await;

    assert_refused(&reply, 400, "unexpected_body");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_with_a_query_is_refused() {
    let upstream = Upstream::recording().start().await;
    let sidecar = sidecar_in_front_of(&upstream).await;

    let reply = Call::post("/v3/payments/request?amount=1", r#"{"amount":100}"#)
        .send(sidecar.addr)
        .await;

    assert_refused(&reply, 400, "unexpected_query");
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
