//! The request path end to end: what the app sends, what LINE Pay (the emulator or a
//! recording upstream) receives, and what comes back.

use crate::util::{
    naive_signature, raw_json_number, send_raw, start_emulator, Call, Sidecar, Upstream,
    CHANNEL_ID, CHANNEL_SECRET,
};
use http::Method;

/// A `/v3/payments/request` body the emulator accepts: the amounts add up.
fn payment_request(order_id: &str, amount: u32) -> String {
    format!(
        r#"{{"amount":{amount},"currency":"TWD","orderId":"{order_id}","packages":[{{"id":"pkg-1","amount":{amount},"products":[{{"name":"Coffee","quantity":1,"price":{amount}}}]}}],"redirectUrls":{{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_round_trip_is_signed_so_line_pay_accepts_every_step() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;

    // POST signing: reserve.
    let reserved = Call::post("/v3/payments/request", payment_request("order-rt-1", 250))
        .send(sidecar.addr)
        .await;
    assert_eq!(reserved.status, 200, "{}", reserved.text());
    assert_eq!(
        reserved.return_code().as_deref(),
        Some("0000"),
        "{}",
        reserved.text()
    );
    let transaction_id = raw_json_number(&reserved.text(), "transactionId")
        .unwrap_or_else(|| panic!("no transactionId in {}", reserved.text()));
    assert_eq!(transaction_id.len(), 19, "transactionId {transaction_id}");

    // POST signing with the id in the path.
    let confirmed = Call::post(
        &format!("/v3/payments/{transaction_id}/confirm"),
        r#"{"amount":250,"currency":"TWD"}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        confirmed.return_code().as_deref(),
        Some("0000"),
        "{}",
        confirmed.text()
    );
    assert_eq!(
        raw_json_number(&confirmed.text(), "transactionId").as_deref(),
        Some(transaction_id.as_str()),
        "confirm answered for another transaction: {}",
        confirmed.text()
    );

    // GET signing: the query string is what is signed.
    let details = Call::get(&format!("/v3/payments?transactionId={transaction_id}"))
        .send(sidecar.addr)
        .await;
    assert_eq!(
        details.return_code().as_deref(),
        Some("0000"),
        "{}",
        details.text()
    );
    assert_eq!(
        raw_json_number(&details.text(), "transactionId").as_deref(),
        Some(transaction_id.as_str()),
        "details answered for another transaction: {}",
        details.text()
    );

    let refunded = Call::post(
        &format!("/v3/payments/{transaction_id}/refund"),
        r#"{"refundAmount":100}"#,
    )
    .send(sidecar.addr)
    .await;
    assert_eq!(
        refunded.return_code().as_deref(),
        Some("0000"),
        "{}",
        refunded.text()
    );
    assert_eq!(emulator.calls(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn line_pay_refusal_passes_through_without_the_sidecar_marker() {
    // The emulator holds another secret, so it answers 1106 as LINE Pay would.
    let emulator = start_emulator(CHANNEL_ID, "a-different-secret", None).await;
    let sidecar = Sidecar::new().upstream(emulator.url()).start().await;

    let reply = Call::post("/v3/payments/request", payment_request("order-1106", 100))
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.return_code().as_deref(),
        Some("1106"),
        "{}",
        reply.text()
    );
    assert_eq!(reply.sidecar_error(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn post_body_is_forwarded_byte_for_byte_and_signed_over_those_bytes() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    // Raw UTF-8, `\u` escapes (a surrogate pair among them), keys out of the usual
    // order, spaces and a newline: re-serialising would change every one of these.
    let body = "{ \"orderId\" :\"訂單-42\",\n  \"currency\":\"TWD\", \"amount\" : 120,\
                \"packages\":[{\"products\":[{\"price\":120,\"quantity\":1,\
                \"name\":\"珍珠奶茶 \\u00e9 \\ud83d\\ude00 \\u002F\"}],\"amount\":120,\"id\":\"p1\"}] }";

    let reply = Call::post("/v3/payments/request", body)
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.target, "/v3/payments/request");
    assert_eq!(&seen.body[..], body.as_bytes(), "body changed on the way");
    let nonce = seen.single("x-line-authorization-nonce");
    assert_eq!(
        seen.single("x-line-authorization"),
        naive_signature(
            CHANNEL_SECRET,
            "/v3/payments/request",
            body.as_bytes(),
            &nonce
        )
    );
    assert_eq!(seen.single("content-type"), "application/json");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_query_is_forwarded_exactly_and_signed_without_question_mark() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let query = "transactionId=2021121600698709710&orderId=order%20A%2B1&fields=TRANSACTION,ORDER";

    let reply = Call::get(&format!("/v3/payments?{query}"))
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(seen.method, Method::GET);
    assert_eq!(seen.target, format!("/v3/payments?{query}"));
    assert!(seen.body.is_empty());
    let nonce = seen.single("x-line-authorization-nonce");
    let signature = seen.single("x-line-authorization");
    assert_eq!(
        signature,
        naive_signature(CHANNEL_SECRET, "/v3/payments", query.as_bytes(), &nonce)
    );
    assert_ne!(
        signature,
        naive_signature(
            CHANNEL_SECRET,
            "/v3/payments",
            format!("?{query}").as_bytes(),
            &nonce
        ),
        "the '?' must not be signed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn get_without_query_signs_an_empty_payload() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

    let reply = Call::get("/v3/payments/requests/2021121600698709710/check")
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(
        seen.target,
        "/v3/payments/requests/2021121600698709710/check"
    );
    let nonce = seen.single("x-line-authorization-nonce");
    assert_eq!(
        seen.single("x-line-authorization"),
        naive_signature(
            CHANNEL_SECRET,
            "/v3/payments/requests/2021121600698709710/check",
            b"",
            &nonce
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_line_headers_are_replaced() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let body = r#"{"amount":1,"currency":"TWD"}"#;
    let forged_nonce = "00000000-0000-4000-8000-000000000000";

    let reply = Call::post("/v3/payments/1234567890123456789/confirm", body)
        .header("X-LINE-ChannelId", "9999999999")
        .header("x-line-channelid", "8888888888")
        .header("X-LINE-Authorization", "Zm9yZ2VkLXNpZ25hdHVyZQ==")
        .header("X-LINE-Authorization-Nonce", forged_nonce)
        .header("X-LINE-ChannelSecret", "forged-secret")
        .header("Authorization", "Bearer forged-token")
        .header("X-LINE-MerchantDeviceType", "forged-device")
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(seen.single("x-line-channelid"), CHANNEL_ID);
    let nonce = seen.single("x-line-authorization-nonce");
    assert_ne!(nonce, forged_nonce);
    assert_eq!(
        seen.single("x-line-authorization"),
        naive_signature(
            CHANNEL_SECRET,
            "/v3/payments/1234567890123456789/confirm",
            body.as_bytes(),
            &nonce
        )
    );
    assert_eq!(seen.all("x-line-channelsecret"), Vec::<String>::new());
    assert_eq!(seen.all("authorization"), Vec::<String>::new());
    assert_eq!(seen.all("x-line-merchantdevicetype"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn hop_by_hop_headers_and_those_named_in_connection_are_not_forwarded() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let body = r#"{"amount":1,"currency":"TWD"}"#;
    // Raw, so that no client library adds, merges or drops any of these.
    let request = format!(
        "POST /v3/payments/request HTTP/1.1\r\n\
         Host: {addr}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\
         Connection: X-Custom-Hop, keep-alive\r\n\
         X-Custom-Hop: secret-of-this-hop\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         Proxy-Authorization: Basic Zm9yZ2VkOmZvcmdlZA==\r\n\
         TE: trailers\r\n\
         Trailer: X-Checksum\r\n\
         X-Request-Id: req-7\r\n\
         \r\n{body}",
        addr = sidecar.addr,
        length = body.len(),
    );

    let reply = send_raw(sidecar.addr, request).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    for name in [
        "x-custom-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        assert_eq!(
            seen.all(name),
            Vec::<String>::new(),
            "`{name}` was forwarded"
        );
    }
    // `Connection` may be set by the upstream hop itself, but never to the app's list.
    for value in seen.all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-custom-hop"),
            "{value}"
        );
    }
    // An end-to-end header still travels: the filter is not dropping everything.
    assert_eq!(seen.single("x-request-id"), "req-7");
    assert_eq!(&seen.body[..], body.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn host_from_the_app_does_not_change_where_the_call_goes() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(seen.single("host"), upstream.addr.to_string());
    assert_eq!(seen.all("x-forwarded-host"), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_gets_a_fresh_uuid_v4_nonce() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    let body = r#"{"amount":1,"currency":"TWD"}"#;

    for _ in 0..2 {
        let reply = Call::post("/v3/payments/request", body)
            .send(sidecar.addr)
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    let nonces: Vec<String> = upstream
        .requests()
        .iter()
        .map(|seen| seen.single("x-line-authorization-nonce"))
        .collect();
    assert_eq!(nonces.len(), 2);
    assert_ne!(nonces[0], nonces[1]);
    for nonce in &nonces {
        let parsed = uuid::Uuid::parse_str(nonce)
            .unwrap_or_else(|error| panic!("nonce {nonce} is not a UUID: {error}"));
        assert_eq!(parsed.get_version_num(), 4, "nonce {nonce}");
        // The hyphenated lowercase form, as the SDKs send it.
        assert_eq!(nonce, &parsed.hyphenated().to_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_calls_carry_channel_secret_header_instead_of_a_signature() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--v2-legacy")
        .start()
        .await;
    let body = r#"{"productName":"Tea","amount":100,"currency":"TWD","confirmUrl":"https://shop.example/c","orderId":"v2-1"}"#;

    let reply = Call::post("/v2/payments/request", body)
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = upstream.only_request();
    assert_eq!(seen.target, "/v2/payments/request");
    assert_eq!(seen.single("x-line-channelid"), CHANNEL_ID);
    assert_eq!(seen.single("x-line-channelsecret"), CHANNEL_SECRET);
    assert_eq!(seen.all("x-line-authorization"), Vec::<String>::new());
    assert_eq!(seen.all("x-line-authorization-nonce"), Vec::<String>::new());
    assert_eq!(&seen.body[..], body.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_calls_are_accepted_by_line_pay_with_the_legacy_flag() {
    let emulator = start_emulator(CHANNEL_ID, CHANNEL_SECRET, None).await;
    let sidecar = Sidecar::new()
        .upstream(emulator.url())
        .arg("--v2-legacy")
        .start()
        .await;
    let body = r#"{"productName":"Tea","amount":100,"currency":"TWD","confirmUrl":"https://shop.example/c","orderId":"v2-emu-1"}"#;

    let reply = Call::post("/v2/payments/request", body)
        .send(sidecar.addr)
        .await;

    assert_eq!(
        reply.return_code().as_deref(),
        Some("0000"),
        "{}",
        reply.text()
    );
    assert_eq!(emulator.calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn line_pay_status_content_type_and_body_come_back_unchanged() {
    let answer: &[u8] = b"{\"returnCode\":\"0000\",  \"info\":{\"transactionId\":2021121600698709710},\"note\":\"\xe5\x8f\xb0\xe7\x81\xa3\"}";
    let upstream = Upstream::recording()
        .respond_with(200, answer)
        .header(
            "content-type",
            "application/vnd.linepay+json; charset=UTF-8",
        )
        .header("x-line-request-id", "upstream-req-1")
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

    let reply = Call::get("/v3/payments?transactionId=2021121600698709710")
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("application/vnd.linepay+json; charset=UTF-8")
    );
    assert_eq!(reply.header("x-line-request-id"), Some("upstream-req-1"));
    assert_eq!(&reply.body[..], answer);
    assert_eq!(reply.sidecar_error(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn line_pay_error_status_comes_back_unchanged() {
    let upstream = Upstream::recording()
        .respond_with(503, "maintenance until 03:00")
        .header("content-type", "text/plain")
        .start()
        .await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

    let reply = Call::post("/v3/payments/request", r#"{"amount":1}"#)
        .send(sidecar.addr)
        .await;

    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.text(), "maintenance until 03:00");
    assert_eq!(reply.sidecar_error(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_from_separate_app_connections_reuse_warm_upstream_connections() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;

    // Each `send` opens its own connection to the sidecar, as a PHP app would. The
    // sidecar keeps one pool per worker thread (one worker per core, each app connection
    // served by one of them), so at most one upstream connection per worker is opened.
    let calls = 12;
    for order in 0..calls {
        let reply = Call::post(
            "/v3/payments/request",
            format!(r#"{{"orderId":"pool-{order}"}}"#),
        )
        .send(sidecar.addr)
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }

    let peers: std::collections::HashSet<_> =
        upstream.requests().iter().map(|seen| seen.peer).collect();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
    assert_eq!(upstream.requests().len(), calls);
    assert!(
        peers.len() <= workers.min(calls - 1),
        "{} upstream connections for {calls} calls with {workers} workers: calls did not reuse warm connections",
        peers.len()
    );
}
