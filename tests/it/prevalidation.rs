//! Catching the app's mistakes before LINE Pay does, through the real binary:
//! pre-validation (`enforce` refuses and sends nothing; `warn` forwards byte for byte
//! and counts), exact ids for JavaScript (a byte-level splice, nothing else changed), and
//! the check-status polling discipline (one forwarded, one 429).

use crate::util::{metric, start_emulator, Call, Sidecar, Upstream, CHANNEL_ID, CHANNEL_SECRET};
use serde_json::{json, Value};

const REQUEST: &str = "/v3/payments/request";

fn request_body(order: &str) -> Value {
    json!({
        "amount": 100,
        "currency": "TWD",
        "orderId": order,
        "packages": [{"id": "p1", "amount": 100,
            "products": [{"name": "Coffee", "quantity": 2, "price": 50}]}],
        "redirectUrls": {"confirmUrl": "https://shop.example/confirm",
            "cancelUrl": "https://shop.example/cancel"}
    })
}

/// The four mistakes of the issue: (name, body, the JSON path the answer must name, rule).
fn mistakes() -> Vec<(&'static str, String, &'static str, &'static str)> {
    let mut extra = request_body("m-extra");
    extra["userId"] = json!(42);
    let mut sum = request_body("m-sum");
    sum["amount"] = json!(120);
    // Written by hand: a float TWD amount, as a JavaScript app computing 100 * 1.0 sends.
    let float = request_body("m-float").to_string().replace(
        "\"amount\":100,\"currency\"",
        "\"amount\":100.5,\"currency\"",
    );
    let mut confirm_url = request_body("m-confirm");
    confirm_url["redirectUrls"]
        .as_object_mut()
        .map(|urls| urls.remove("confirmUrl"));
    vec![
        (
            "extra top-level key",
            extra.to_string(),
            "$.userId",
            "unknown_field",
        ),
        (
            "package-sum mismatch",
            sum.to_string(),
            "$.amount",
            "amount_sum",
        ),
        ("float TWD amount", float, "$.amount", "whole_amount"),
        (
            "missing confirmUrl",
            confirm_url.to_string(),
            "$.redirectUrls.confirmUrl",
            "required",
        ),
    ]
}

fn findings_series(rule: &str) -> String {
    format!(
        r#"linepay_sidecar_prevalidation_findings_total{{route_family="request",rule="{rule}"}}"#
    )
}

#[tokio::test]
async fn enforce_refuses_each_mistake_naming_its_path_and_sends_nothing() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let mut sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--prevalidation")
        .arg("enforce")
        .start()
        .await;
    for (name, body, path, rule) in mistakes() {
        let before = emulator.calls();
        let reply = Call::post(REQUEST, body).send(sidecar.addr).await;
        reply.assert_case_sidecar_error(name, 400, "invalid_request");
        let message = reply.error_message().unwrap_or_default();
        assert!(
            message.starts_with(&format!("{path}: ")),
            "{name}: {message}"
        );
        assert!(
            message.contains("(LINE Pay would answer "),
            "{name}: {message}"
        );
        assert_eq!(reply.retry_safe(), Some(true), "{name}");
        assert_eq!(
            emulator.calls(),
            before,
            "{name}: something reached LINE Pay"
        );
        let scrape = sidecar.scrape().await;
        assert!(
            metric(&scrape, &findings_series(rule)).unwrap_or(0.0) >= 1.0,
            "{name}: {rule} not counted"
        );
    }
    let extra = Call::post(REQUEST, mistakes()[0].1.clone())
        .send(sidecar.addr)
        .await;
    assert_eq!(
        extra.error_message().as_deref(),
        Some("$.userId: not a LINE Pay field (LINE Pay would answer 2102); the call was not sent (prevalidation mode is enforce)")
    );
    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_refusals_total{code="invalid_request"}"#
        ),
        Some(5.0)
    );

    // A documented body passes, reaches the emulator and is accepted there.
    let reply = Call::post(REQUEST, request_body("m-good").to_string())
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.return_code().as_deref(),
        Some("0000"),
        "{}",
        reply.text()
    );

    let output = sidecar.stop().to_string();
    assert!(output.contains("pre-validation"), "no log line:\n{output}");
}

#[tokio::test]
async fn warn_forwards_each_mistake_byte_for_byte_and_counts_it() {
    let upstream = Upstream::recording()
        .respond_with(
            200,
            r#"{"returnCode":"2102","returnMessage":"JSON format error"}"#,
        )
        .start()
        .await;
    // warn is the default.
    let mut sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    for (index, (name, body, _, rule)) in mistakes().into_iter().enumerate() {
        let reply = Call::post(REQUEST, body.clone()).send(sidecar.addr).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
        assert_eq!(reply.sidecar_error(), None, "{name}");
        let sent = &upstream.requests()[index];
        assert_eq!(
            sent.body,
            body.as_bytes(),
            "{name}: not forwarded byte for byte"
        );
        let scrape = sidecar.scrape().await;
        assert_eq!(metric(&scrape, &findings_series(rule)), Some(1.0), "{name}");
    }
    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_refusals_total{code="invalid_request"}"#
        ),
        Some(0.0)
    );
    let output = sidecar.stop().to_string();
    assert!(
        output.contains("$.userId: not a LINE Pay field"),
        "{output}"
    );
}

/// JSON to the sidecar's own check that serde_json cannot hold as a tree (a lone
/// surrogate escape, a number past f64): no rule can be checked, so `enforce` refuses it
/// instead of signing a negative amount LINE Pay would be sent unchecked.
#[tokio::test]
async fn enforce_refuses_a_body_its_rules_cannot_read_and_sends_nothing() {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000","returnMessage":"Success."}"#)
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--prevalidation")
        .arg("enforce")
        .start()
        .await;
    for body in [
        r#"{"amount":-5,"currency":"XXX","note":"\ud800"}"#,
        r#"{"amount":1e400,"currency":"TWD"}"#,
    ] {
        let reply = Call::post("/v3/payments/2021121600698709710/confirm", body)
            .send(sidecar.addr)
            .await;
        reply.assert_sidecar_error(400, "invalid_request");
        let message = reply.error_message().unwrap_or_default();
        assert!(
            message.starts_with("$: not JSON the rules can read ("),
            "{body}: {message}"
        );
    }
    assert_eq!(upstream.count(), 0, "an unreadable body reached LINE Pay");
}

#[tokio::test]
async fn off_does_not_look_and_a_route_may_differ_from_the_default() {
    let upstream = Upstream::recording()
        .respond_with(200, r#"{"returnCode":"0000","returnMessage":"Success."}"#)
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "prevalidation.yaml",
            "prevalidation:\n  mode: off\n  routes:\n    \"payments/{transactionId}/refund\": {mode: enforce}\n",
        )
        .start()
        .await;
    let (_, body, _, _) = mistakes().remove(0);
    let reply = Call::post(REQUEST, body).send(sidecar.addr).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = Call::post(
        "/v3/payments/2021121600698709710/refund",
        r#"{"refundAmount":10,"reason":"x"}"#,
    )
    .send(sidecar.addr)
    .await;
    reply.assert_sidecar_error(400, "invalid_request");
    assert!(reply
        .error_message()
        .unwrap_or_default()
        .starts_with("$.reason: "));
    assert_eq!(upstream.count(), 1);
    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(&scrape, &findings_series("unknown_field")),
        Some(0.0)
    );
}

/// LINE Pay's answer with ids in several places, spacing and escapes that a
/// re-serialisation would change.
const ANSWER: &str = "{\"returnCode\":\"0000\",\"returnMessage\":\"Success. \\u00e9 \\\"transactionId\\\":1\",\n\
  \"info\" : [ {\"transactionId\" : 2021121600698709710, \"amount\":100.0,\n\
  \"refundList\":[{\"refundTransactionId\":2021121600698709711,\"refundAmount\":-40}]},\n\
  {\"originalTransactionId\":2021121600698709712,\"payInfo\":[{\"method\":\"BALANCE\",\"amount\":1e2}]}]}";

fn without_inserted_quotes(rewritten: &[u8], original: &[u8]) -> Vec<u8> {
    // Walk both: every byte of the original appears in order; the extra bytes are `"`.
    let mut out = Vec::new();
    let mut at = 0;
    for byte in rewritten {
        if original.get(at) == Some(byte) {
            out.push(*byte);
            at += 1;
        } else {
            assert_eq!(*byte, b'"', "a byte other than a quote changed");
        }
    }
    out
}

#[tokio::test]
async fn ids_as_strings_splices_quotes_around_ids_and_changes_nothing_else() {
    let upstream = Upstream::recording()
        .respond_with(200, ANSWER)
        .header("content-type", "application/json")
        .start()
        .await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--ids-as-strings")
        .start()
        .await;
    let reply = Call::get("/v3/payments?transactionId=2021121600698709710")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.status, 200);
    let expected = ANSWER
        .replace(": 2021121600698709710", ": \"2021121600698709710\"")
        .replace(":2021121600698709711", ":\"2021121600698709711\"")
        .replace(":2021121600698709712", ":\"2021121600698709712\"");
    assert_eq!(reply.text(), expected);
    assert_eq!(reply.body.len(), ANSWER.len() + 6);
    assert_eq!(
        without_inserted_quotes(&reply.body, ANSWER.as_bytes()),
        ANSWER.as_bytes()
    );
    assert_eq!(
        reply.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    let parsed = reply.json();
    assert_eq!(parsed["info"][0]["transactionId"], "2021121600698709710");
    assert_eq!(
        parsed["info"][0]["refundList"][0]["refundTransactionId"],
        "2021121600698709711"
    );
    assert_eq!(
        parsed["info"][1]["originalTransactionId"],
        "2021121600698709712"
    );

    // The app may decline for one call; the header never reaches LINE Pay.
    let reply = Call::get("/v3/payments?transactionId=2021121600698709710")
        .header("X-LinePay-Ids-As-Strings", "false")
        .send(sidecar.addr)
        .await;
    assert_eq!(reply.text(), ANSWER);
    assert!(upstream
        .requests()
        .iter()
        .all(|sent| sent.all("x-linepay-ids-as-strings").is_empty()));
}

#[tokio::test]
async fn answers_pass_unchanged_unless_an_app_asks_per_call() {
    let upstream = Upstream::recording()
        .respond_with(200, ANSWER)
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let reply = Call::get("/v3/payments?orderId=a").send(sidecar.addr).await;
    assert_eq!(reply.text(), ANSWER);
    let reply = Call::get("/v3/payments?orderId=a")
        .header("X-LinePay-Ids-As-Strings", "true")
        .send(sidecar.addr)
        .await;
    assert_eq!(
        reply.json()["info"][0]["transactionId"],
        "2021121600698709710"
    );
    // Requests keep taking ids as numbers in bodies and paths.
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn a_second_check_status_poll_within_the_interval_is_answered_429_locally() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    // A long interval, so the two polls are within it however slow the machine is.
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .config_yaml("poll.yaml", "limits:\n  check_status_interval: 60s\n")
        .start()
        .await;
    let reply = Call::post(REQUEST, request_body("poll-1").to_string())
        .header("X-LinePay-Ids-As-Strings", "true")
        .send(sidecar.addr)
        .await;
    let id = reply.json()["info"]["transactionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no string id: {}", reply.text()))
        .to_owned();
    let check = format!("/v3/payments/requests/{id}/check");

    let before = emulator.calls();
    let first = Call::get(&check).send(sidecar.addr).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.sidecar_error(), None, "{}", first.text());
    assert!(first.return_code().is_some(), "{}", first.text());
    let second = Call::get(&check).send(sidecar.addr).await;
    second.assert_sidecar_error(429, "rate_limited");
    let retry_after: u64 = second
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(
        emulator.calls(),
        before + 1,
        "the second poll reached LINE Pay"
    );

    // Another transaction has its own window.
    let other = Call::get("/v3/payments/requests/2021121600698709710/check")
        .send(sidecar.addr)
        .await;
    assert_eq!(other.status, 200, "{}", other.text());
    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_rate_limited_total{limit="check_status"}"#
        ),
        Some(1.0)
    );
}
