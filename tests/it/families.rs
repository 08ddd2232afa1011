//! The API families through the real binary against a recording upstream: each family's
//! routes forwarded and signed its way when enabled, refused with the line that enables
//! it when not; path parameters checked before anything is signed or sent; the offline
//! orderId forwarded and signed exactly as received.

use crate::util::{
    metric, naive_signature, send_raw, Recorded, Reply, Sidecar, Upstream, CHANNEL_ID,
    CHANNEL_SECRET,
};
use linepay_sidecar::route::{ApiFamily, Signing};
use std::net::SocketAddr;

const TRANSACTION_ID: &str = "2021121600698709710";
const REG_KEY: &str = "RK2AE3519XTFXHM";
const ORDER_ID: &str = "POS-2024-0001";
const BODY: &str = r#"{"amount":100,"currency":"TWD"}"#;

/// A template with its parameters filled by ordinary values.
fn concrete(template: &str) -> String {
    template
        .replace("{transactionId}", TRANSACTION_ID)
        .replace("{regKey}", REG_KEY)
        .replace("{orderId}", ORDER_ID)
}

/// The exact bytes of one call: a raw request, so no client library re-encodes the
/// target. POSTs carry [`BODY`], GETs nothing.
async fn call(addr: SocketAddr, method: &str, target: &str) -> Reply {
    let body = if method == "POST" { BODY } else { "" };
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Request-Id: {}\r\n\r\n{body}",
        body.len(),
        request_id(method, target),
    );
    send_raw(addr, head).await
}

/// A request id naming the call, so the log line of each can be found.
fn request_id(method: &str, target: &str) -> String {
    let mut id: String = format!("{method}-{target}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    id.truncate(120);
    id
}

/// Checks that `seen` is authenticated the way `signing` says, with an independent
/// verifier for the HMAC (one concatenation, one HMAC, Base64).
#[track_caller]
fn assert_signed(seen: &Recorded, signing: Signing, case: &str) {
    assert_eq!(seen.single("x-line-channelid"), CHANNEL_ID, "{case}");
    match signing {
        Signing::Hmac => {
            let nonce = seen.single("x-line-authorization-nonce");
            let payload: &[u8] = match seen.method {
                http::Method::GET => seen.query().unwrap_or("").as_bytes(),
                _ => &seen.body,
            };
            assert_eq!(
                seen.single("x-line-authorization"),
                naive_signature(CHANNEL_SECRET, seen.path(), payload, &nonce),
                "{case}: signature"
            );
            assert_eq!(
                seen.all("x-line-channelsecret"),
                Vec::<String>::new(),
                "{case}"
            );
        }
        Signing::ChannelSecret => {
            assert_eq!(
                seen.single("x-line-channelsecret"),
                CHANNEL_SECRET,
                "{case}"
            );
            assert_eq!(
                seen.all("x-line-authorization"),
                Vec::<String>::new(),
                "{case}"
            );
            assert_eq!(
                seen.all("x-line-authorization-nonce"),
                Vec::<String>::new(),
                "{case}"
            );
        }
    }
}

/// The one per-call log line (`call forwarded` or `call refused`) of a stopped sidecar,
/// by request id; other lines may carry the id too (a pre-validation warning).
fn log_fields(stderr: &str, id: &str) -> serde_json::Value {
    let found: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["fields"]["request_id"] == id)
        .filter(|line| {
            let message = &line["fields"]["message"];
            message == "call forwarded" || message == "call refused"
        })
        .collect();
    assert_eq!(found.len(), 1, "one per-call log line for {id}:\n{stderr}");
    found[0]["fields"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_family_is_forwarded_and_signed_its_way_when_enabled() {
    let upstream = Upstream::recording().start().await;
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--log-format")
        .arg("json")
        .config_yaml(
            "all-families.yaml",
            // The same transaction is checked once per family, back to back: the
            // check-status polling discipline (tested in prevalidation.rs) is off here.
            "routes:\n  apis: [online_v3, online_v4, user_info, offline_v4, offline_v2, online_v2]\n\
             credentials:\n  merchant_device_profile_id: POS-DEVICE-7\n  merchant_device_type: POS\n\
             limits:\n  check_status_interval: 0s\n",
        )
        .start()
        .await;

    let mut expected = 0;
    for family in ApiFamily::ALL {
        for (method, template, _) in family.table() {
            let target = match *template {
                "/v3/payments" | "/v4/payments" | "/v2/payments" => {
                    format!("{template}?transactionId={TRANSACTION_ID}")
                }
                t if t.ends_with("/authorizations") => format!("{t}?orderId={ORDER_ID}"),
                t => concrete(t),
            };
            let case = format!("{family}: {method} {target}");
            let reply = call(sidecar.addr, method, &target).await;
            assert_eq!(reply.status, 200, "{case}: {}", reply.text());
            assert_eq!(reply.sidecar_error(), None, "{case}");
            expected += 1;
            let requests = upstream.requests();
            assert_eq!(requests.len(), expected, "{case}");
            let seen = &requests[expected - 1];
            assert_eq!(seen.method.as_str(), *method, "{case}");
            assert_eq!(seen.target, target, "{case}: forwarded as sent");
            let body: &[u8] = if *method == "POST" {
                BODY.as_bytes()
            } else {
                b""
            };
            assert_eq!(&seen.body[..], body, "{case}");
            // A template in two families (payment details, v2 authorizations) is sent
            // once per table: signed the same way in both.
            assert_signed(seen, family.signing(), &case);
            assert_eq!(
                seen.single("x-line-merchantdeviceprofileid"),
                "POS-DEVICE-7",
                "{case}"
            );
            assert_eq!(seen.single("x-line-merchantdevicetype"), "POS", "{case}");
        }
    }

    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_requests_total{family="offline_v4",method="POST",return_code="0000",route="/v4/payments/oneTimeKeys/pay",status="200"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_requests_total{family="user_info",method="GET",return_code="0000",route="/v4/payments/{transactionId}/userInfo",status="200"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
    let output = sidecar.stop();
    let pay = log_fields(
        &output.stderr,
        &request_id("POST", "/v4/payments/oneTimeKeys/pay"),
    );
    assert_eq!(pay["message"], "call forwarded");
    assert_eq!(pay["family"], "offline_v4");
    let check = log_fields(
        &output.stderr,
        &request_id("GET", &concrete("/v2/payments/orders/{orderId}/check")),
    );
    assert_eq!(check["family"], "offline_v2");
    assert_eq!(check["order_id"], ORDER_ID);
    assert!(
        !output.stderr.contains(CHANNEL_SECRET),
        "secret in the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_family_not_enabled_is_refused_with_the_line_that_enables_it() {
    let upstream = Upstream::recording().start().await;
    // The defaults: online v3 and v4 only.
    let mut sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--log-format")
        .arg("json")
        .start()
        .await;

    let mut refused = 0.0;
    for family in [
        ApiFamily::UserInfo,
        ApiFamily::OfflineV4,
        ApiFamily::OfflineV2,
        ApiFamily::OnlineV2,
    ] {
        for (method, template, _) in family.table() {
            if ApiFamily::DEFAULT.iter().any(|on| {
                on.table()
                    .iter()
                    .any(|(m, t, _)| m == method && t == template)
            }) {
                // Payment details (`GET /v4/payments`) is offline v4's too, and on.
                continue;
            }
            // `GET /v2/payments/authorizations` and `GET /v2/payments` are in both v2
            // families: the first of `ApiFamily::ALL` (offline_v2) is the one named.
            let owner = ApiFamily::ALL
                .into_iter()
                .find(|f| {
                    f.table()
                        .iter()
                        .any(|(m, t, _)| m == method && t == template)
                })
                .unwrap_or(family);
            let line = format!("`routes.apis: [online_v3, online_v4, {owner}]`");
            let target = concrete(template);
            let case = format!("{family}: {method} {target}");
            let reply = call(sidecar.addr, method, &target).await;
            reply.assert_case_sidecar_error(&case, 403, "api_family_disabled");
            let message = reply.error_message().unwrap_or_default();
            assert!(message.contains(&line), "{case}: {message}");
            assert!(
                message.contains(template),
                "{case}: names the template: {message}"
            );
            assert!(
                !message.contains(TRANSACTION_ID),
                "{case}: echoes the path: {message}"
            );
            assert_eq!(reply.retry_safe(), Some(true), "{case}");
            assert_eq!(upstream.count(), 0, "{case}: forwarded");
            refused += 1.0;
        }
    }
    // The default families still go through, v4 as well as v3.
    for target in ["/v3/payments/request", "/v4/payments/request"] {
        let reply = call(sidecar.addr, "POST", target).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
    }
    assert_eq!(upstream.count(), 2);

    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_refusals_total{code="api_family_disabled"}"#
        ),
        Some(refused),
        "{scrape}"
    );
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_requests_total{family="offline_v4",method="POST",return_code="none",route="unmatched",status="403"}"#
        ),
        Some(4.0),
        "pay, void, capture, refund: {scrape}"
    );
    let output = sidecar.stop();
    let line = log_fields(
        &output.stderr,
        &request_id("POST", "/v4/payments/oneTimeKeys/pay"),
    );
    assert_eq!(line["message"], "call refused");
    assert_eq!(line["code"], "api_family_disabled");
    assert_eq!(line["family"], "offline_v4");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_legacy_v2_flag_still_enables_online_v2_and_names_it_in_the_line() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--v2-legacy")
        .start()
        .await;

    let reply = call(sidecar.addr, "POST", "/v2/payments/request").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_signed(
        &upstream.only_request(),
        Signing::ChannelSecret,
        "v2 request",
    );
    let reply = call(sidecar.addr, "POST", "/v2/payments/oneTimeKeys/pay").await;
    reply.assert_sidecar_error(403, "api_family_disabled");
    let message = reply.error_message().unwrap_or_default();
    assert!(
        message.contains("`routes.apis: [online_v3, online_v4, offline_v2, online_v2]`"),
        "{message}"
    );
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_percent_encoded_order_id_is_forwarded_and_signed_exactly_as_sent() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .arg("--apis")
        .arg("offline_v4")
        .start()
        .await;
    // 訂單-42 A+1, in mixed-case hex: a re-encoding would change the case or the `+`.
    let order = "%E8%A8%82%e5%96%ae-42%20A+1";

    for (method, verb) in [("GET", "check"), ("POST", "refund")] {
        let path = format!("/v4/payments/orders/{order}/{verb}");
        let reply = call(sidecar.addr, method, &path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = upstream.requests().pop().expect("forwarded");
        assert_eq!(seen.target, path, "the path changed on the way");
        let nonce = seen.single("x-line-authorization-nonce");
        let payload: &[u8] = if method == "POST" {
            BODY.as_bytes()
        } else {
            b""
        };
        assert_eq!(
            seen.single("x-line-authorization"),
            naive_signature(CHANNEL_SECRET, &path, payload, &nonce),
            "{path}: signed over the raw path"
        );
        let decoded = format!("/v4/payments/orders/訂單-42 A+1/{verb}");
        assert_ne!(
            seen.single("x-line-authorization"),
            naive_signature(CHANNEL_SECRET, &decoded, payload, &nonce),
            "signed over the decoded path"
        );
    }
}

/// A GET's query is signed and sent as the app sent it, byte for byte (LINE Pay signs
/// the raw query), to the upstream's own `Host` whatever the app's said.
#[tokio::test(flavor = "multi_thread")]
async fn a_raw_query_is_forwarded_and_signed_exactly_as_sent() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new().upstream(upstream.url()).start().await;
    for target in [
        "/v3/payments?transactionId=2021121600698709710&orderId=%E8%A8%82%e5%96%ae-42%20A+1",
        "/v3/payments?orderId=a%2Fb%3D%26c&orderId=second",
        "/v3/payments?",
    ] {
        let reply = call(sidecar.addr, "GET", target).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        let seen = upstream.requests().pop().expect("forwarded");
        assert_eq!(seen.target, target, "the target changed on the way");
        assert_eq!(
            seen.single("host"),
            upstream.url().trim_start_matches("http://"),
            "{target}"
        );
        assert_signed(&seen, Signing::Hmac, target);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn path_parameters_that_break_their_rule_never_reach_line_pay() {
    let upstream = Upstream::recording().start().await;
    let sidecar = Sidecar::new()
        .upstream(upstream.url())
        .config_yaml(
            "offline.yaml",
            "routes:\n  apis: [online_v3, online_v4, offline_v4, offline_v2]\n",
        )
        .start()
        .await;
    let twenty = "1".repeat(20);
    let huge = "9".repeat(5000);
    let long_order = "a".repeat(101);
    let cases: Vec<(String, &str, String, &str)> = vec![
        (
            "20-digit transactionId".into(),
            "POST",
            format!("/v3/payments/{twenty}/confirm"),
            "transactionId",
        ),
        (
            "5,000-digit transactionId".into(),
            "POST",
            format!("/v4/payments/{huge}/refund"),
            "transactionId",
        ),
        (
            "letters in a transactionId".into(),
            "GET",
            "/v4/payments/requests/12ab/check".into(),
            "transactionId",
        ),
        (
            "16-character regKey".into(),
            "POST",
            format!("/v3/payments/preapprovedPay/{REG_KEY}X/payment"),
            "regKey",
        ),
        (
            "orderId decoding to /".into(),
            "GET",
            "/v4/payments/orders/a%2Fb/check".into(),
            "orderId",
        ),
        (
            "orderId decoding to \\".into(),
            "POST",
            "/v2/payments/orders/a%5cb/void".into(),
            "orderId",
        ),
        (
            "orderId decoding to ..".into(),
            "POST",
            "/v4/payments/orders/%2e%2E/refund".into(),
            "orderId",
        ),
        (
            "orderId decoding to .".into(),
            "POST",
            "/v4/payments/orders/%2e/capture".into(),
            "orderId",
        ),
        (
            "orderId with a NUL byte".into(),
            "GET",
            "/v4/payments/orders/a%00/check".into(),
            "orderId",
        ),
        (
            "orderId with a line feed".into(),
            "GET",
            "/v2/payments/orders/a%0D%0Ab/check".into(),
            "orderId",
        ),
        (
            "orderId of invalid UTF-8".into(),
            "GET",
            "/v4/payments/orders/%FF%FE/check".into(),
            "orderId",
        ),
        (
            "orderId of invalid UTF-8 in a refund".into(),
            "POST",
            "/v4/payments/orders/order%FF/refund".into(),
            "orderId",
        ),
        (
            "orderId with a cut %".into(),
            "GET",
            "/v4/payments/orders/ab%4/check".into(),
            "orderId",
        ),
        (
            "101-character orderId".into(),
            "GET",
            format!("/v4/payments/orders/{long_order}/check"),
            "orderId",
        ),
    ];
    for (case, method, path, parameter) in &cases {
        let reply = call(sidecar.addr, method, path).await;
        reply.assert_case_sidecar_error(case, 400, "invalid_path_parameter");
        let message = reply.error_message().unwrap_or_default();
        assert!(
            message.starts_with(&format!("path parameter `{parameter}` ")),
            "{case}: {message}"
        );
        assert!(message.len() < 300, "{case}: {message}");
        assert!(
            !message.contains("9999"),
            "{case}: echoes the value: {message}"
        );
        assert!(
            !message.contains("aaaa"),
            "{case}: echoes the value: {message}"
        );
        assert_eq!(reply.retry_safe(), Some(true), "{case}");
        assert_eq!(upstream.count(), 0, "{case}: forwarded");
    }
    // A `%` outside the orderId is still refused as an ambiguous path.
    let reply = call(sidecar.addr, "POST", "/v4/payments/%31/refund").await;
    reply.assert_sidecar_error(400, "ambiguous_path");
    assert_eq!(upstream.count(), 0);

    let scrape = sidecar.scrape().await;
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_refusals_total{code="invalid_path_parameter"}"#
        ),
        Some(cases.len() as f64),
        "{scrape}"
    );
    // Refused on its template: the route label stays bounded, the value is not logged.
    assert_eq!(
        metric(
            &scrape,
            r#"linepay_sidecar_requests_total{family="online_v4",method="POST",return_code="none",route="/v4/payments/{transactionId}/refund",status="400"}"#
        ),
        Some(1.0),
        "{scrape}"
    );
}
