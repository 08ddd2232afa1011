//! The emulator's LINE Pay API, clock, faults and control API, each proved through real
//! HTTP: the emulator serves on a loopback port and every call is written on a socket,
//! signed the plain LINE Pay way here (not with the emulator's own code).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use linepay_emulator::{
    BuyerAction, Currency, Emulator, EmulatorConfig, Secret, INSUFFICIENT_BALANCE, PAYS_BY_CARD,
    PAYS_FROM_BALANCE,
};
use serde_json::{json, Value};
use sha2::Sha256;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const CHANNEL: &str = "2000000001";
const SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
/// No exchange with a local emulator takes this long unless something hangs.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(20);

/// A served emulator; stops when dropped.
struct Served {
    addr: SocketAddr,
    emulator: Emulator,
    task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(config: EmulatorConfig) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let emulator = Emulator::new(config);
    let task = tokio::spawn(emulator.clone().serve(listener, None));
    Served {
        addr,
        emulator,
        task,
    }
}

async fn emulator() -> Served {
    serve(EmulatorConfig::new(CHANNEL, Secret::new(SECRET))).await
}

/// An HTTP answer; `None` from [`Served::send`] means the connection closed without one.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    fn code(&self) -> String {
        let json = self.json();
        json["returnCode"]
            .as_str()
            .unwrap_or_else(|| panic!("no returnCode: {json}"))
            .to_owned()
    }
}

/// One request on the wire: HTTP/1.1, `Connection: close`.
struct Call {
    method: &'static str,
    path: String,
    query: String,
    body: String,
    headers: Vec<(String, String)>,
}

impl Call {
    fn get(path: &str, query: &str) -> Call {
        Call {
            method: "GET",
            path: path.to_owned(),
            query: query.to_owned(),
            body: String::new(),
            headers: Vec::new(),
        }
    }

    fn post(path: &str, body: &str) -> Call {
        Call {
            method: "POST",
            path: path.to_owned(),
            query: String::new(),
            body: body.to_owned(),
            headers: Vec::new(),
        }
    }

    fn delete(path: &str) -> Call {
        Call {
            method: "DELETE",
            ..Call::post(path, "")
        }
    }

    fn header(mut self, name: &str, value: &str) -> Call {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// v3/v4 credentials: HMAC over secret + path (as sent) + body or query + nonce.
    fn signed(self) -> Call {
        let nonce = uuid_like();
        let payload = if self.method == "GET" {
            self.query.clone()
        } else {
            self.body.clone()
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("any key");
        mac.update(format!("{SECRET}{}{payload}{nonce}", self.path).as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        self.header("X-LINE-ChannelId", CHANNEL)
            .header("X-LINE-Authorization-Nonce", &nonce)
            .header("X-LINE-Authorization", &signature)
    }

    /// v2 credentials: channel id and secret in clear.
    fn v2(self, secret: &str) -> Call {
        self.header("X-LINE-ChannelId", CHANNEL)
            .header("X-LINE-ChannelSecret", secret)
    }

    fn device(self) -> Call {
        self.header("X-LINE-MerchantDeviceType", "POS")
            .header("X-LINE-MerchantDeviceProfileId", "till-7")
    }

    fn bytes(&self) -> Vec<u8> {
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut request = format!(
            "{} {target} HTTP/1.1\r\nHost: emulator\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            self.method,
            self.body.len()
        );
        for (name, value) in &self.headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&self.body);
        request.into_bytes()
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "6f1ba1c9-8f3f-4b9a-9b3e-{:012x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Served {
    /// Sends a call; `None` when the emulator closed the connection without answering.
    async fn send(&self, call: Call) -> Option<Answer> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.expect("connect");
            stream.write_all(&call.bytes()).await.expect("write");
            let mut raw = Vec::new();
            // A reset instead of a clean close also means "no answer".
            let _ = stream.read_to_end(&mut raw).await;
            raw
        };
        let raw = tokio::time::timeout(EXCHANGE_LIMIT, exchange)
            .await
            .expect("the emulator answered or closed within the limit");
        if raw.is_empty() {
            return None;
        }
        let text = String::from_utf8(raw).expect("UTF-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status line");
        Some(Answer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        })
    }

    async fn answer(&self, call: Call) -> Answer {
        self.send(call)
            .await
            .expect("an answer, not a dropped connection")
    }

    /// A signed call's returnCode and body.
    async fn signed(&self, call: Call) -> Answer {
        let answer = self.answer(call.signed()).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer
    }

    async fn request(&self, version: &str, order_id: &str, amount: i64, options: Value) -> u64 {
        let answer = self
            .signed(Call::post(
                &format!("/{version}/payments/request"),
                &request_body(order_id, amount, options).to_string(),
            ))
            .await;
        assert_eq!(answer.code(), "0000", "{}", answer.body);
        transaction_id(&answer.json()["info"])
    }

    async fn confirm(&self, version: &str, id: u64, amount: i64) -> Answer {
        self.signed(Call::post(
            &format!("/{version}/payments/{id}/confirm"),
            &json!({"amount": amount, "currency": "TWD"}).to_string(),
        ))
        .await
    }

    async fn check(&self, id: u64) -> String {
        self.signed(Call::get(&format!("/v4/payments/requests/{id}/check"), ""))
            .await
            .code()
    }

    async fn control(&self, call: Call) -> Answer {
        self.answer(call).await
    }
}

fn request_body(order_id: &str, amount: i64, options: Value) -> Value {
    json!({
        "amount": amount,
        "currency": "TWD",
        "orderId": order_id,
        "packages": [{
            "id": "package-1", "amount": amount, "name": "shop",
            "products": [{"name": "tea", "quantity": 1, "price": amount}]
        }],
        "redirectUrls": {"confirmUrl": "https://shop.example/confirm", "cancelUrl": "https://shop.example/cancel"},
        "options": options
    })
}

fn transaction_id(info: &Value) -> u64 {
    let id = info["transactionId"]
        .as_u64()
        .unwrap_or_else(|| panic!("transactionId is not a JSON number: {info}"));
    assert!(
        (1_000_000_000_000_000_000..10_000_000_000_000_000_000).contains(&id),
        "{id}"
    );
    id
}

const AUTHORISE_ONLY: &str = r#"{"payment":{"capture":false}}"#;

fn authorise_only() -> Value {
    serde_json::from_str(AUTHORISE_ONLY).expect("JSON")
}

#[tokio::test]
async fn online_v4_runs_request_confirm_details_capture_refund_and_user_info() {
    let served = emulator().await;
    let id = served.request("v4", "v4-paid", 300, json!({})).await;
    assert_eq!(served.check(id).await, "0110");
    let confirmed = served.confirm("v4", id, 300).await;
    assert_eq!(confirmed.code(), "0000", "{}", confirmed.body);
    assert_eq!(confirmed.json()["returnMessage"], "Success.");
    assert_eq!(served.check(id).await, "0123");

    // fields=ALL is the documented default: both parts of the payment.
    let details = served
        .signed(Call::get(
            "/v4/payments",
            &format!("transactionId={id}&fields=ALL"),
        ))
        .await;
    assert_eq!(details.code(), "0000", "{}", details.body);
    let entry = &details.json()["info"][0];
    assert_eq!(entry["transactionType"], "PAYMENT");
    assert!(entry["packages"].is_array(), "{entry}");

    for version in ["v3", "v4"] {
        let user = served
            .signed(Call::get(&format!("/{version}/payments/{id}/userInfo"), ""))
            .await;
        assert_eq!(user.code(), "0000", "{}", user.body);
        assert_eq!(transaction_id(&user.json()["info"]), id);
        assert!(user.json()["info"]["userId"].is_string());
    }

    let refund = served
        .signed(Call::post(
            &format!("/v4/payments/{id}/refund"),
            r#"{"refundAmount":100}"#,
        ))
        .await;
    assert_eq!(refund.code(), "0000", "{}", refund.body);

    // Authorise, capture part of it, and the refund is capped by the capture.
    let auth = served.request("v4", "v4-auth", 500, authorise_only()).await;
    assert_eq!(served.confirm("v4", auth, 500).await.code(), "0000");
    let capture = |amount: i64| {
        Call::post(
            &format!("/v4/payments/authorizations/{auth}/capture"),
            &json!({"amount": amount, "currency": "TWD"}).to_string(),
        )
    };
    assert_eq!(served.signed(capture(0)).await.code(), "1183");
    assert_eq!(served.signed(capture(501)).await.code(), "1184");
    let captured = served.signed(capture(350)).await;
    assert_eq!(captured.code(), "0000", "{}", captured.body);
    assert_eq!(captured.json()["info"]["payInfo"][0]["amount"], 350);
    let refund = |body: &str| Call::post(&format!("/v4/payments/{auth}/refund"), body);
    assert_eq!(
        served
            .signed(refund(r#"{"refundAmount":351}"#))
            .await
            .code(),
        "1164"
    );
    assert_eq!(served.signed(refund("")).await.code(), "0000");

    // Void once, then "already voided".
    let voided = served.request("v4", "v4-void", 200, authorise_only()).await;
    assert_eq!(served.confirm("v4", voided, 200).await.code(), "0000");
    let void = || Call::post(&format!("/v4/payments/authorizations/{voided}/void"), "");
    assert_eq!(served.signed(void()).await.code(), "0000");
    assert_eq!(served.signed(void()).await.code(), "1165");
}

#[tokio::test]
async fn details_take_repeated_ids_php_arrays_and_at_most_100_ids_per_call() {
    let served = emulator().await;
    let first = served.request("v4", "shape-a", 10, json!({})).await;
    let second = served.request("v4", "shape-b", 20, json!({})).await;
    for id in [first, second] {
        assert_eq!(
            served
                .confirm("v4", id, if id == first { 10 } else { 20 })
                .await
                .code(),
            "0000"
        );
    }
    let listed = |answer: &Answer| -> Vec<u64> {
        answer.json()["info"]
            .as_array()
            .map(|entries| entries.iter().map(transaction_id).collect())
            .unwrap_or_default()
    };
    let repeated = served
        .signed(Call::get(
            "/v4/payments",
            &format!("transactionId={first}&transactionId={second}"),
        ))
        .await;
    assert_eq!(listed(&repeated), vec![first, second], "{}", repeated.body);

    // PHP's http_build_query, as sent: the brackets percent-encoded, and signed so.
    let php = format!("transactionId%5B0%5D={first}&orderId%5B0%5D=shape-b&fields=TRANSACTION");
    let answer = served.signed(Call::get("/v4/payments", &php)).await;
    assert_eq!(answer.code(), "0000", "{}", answer.body);
    assert_eq!(listed(&answer), vec![first, second]);
    assert!(answer.json()["info"][0].get("packages").is_none());
    let order_only = served
        .signed(Call::get(
            "/v3/payments",
            &format!("transactionId={first}&fields=ORDER"),
        ))
        .await;
    assert!(order_only.json()["info"][0].get("payInfo").is_none());
    assert!(order_only.json()["info"][0]["packages"].is_array());

    // 100 ids in total per call: 50 + 50 pass, 50 + 51 are 1177.
    let query = |orders: usize| {
        (0..50)
            .map(|n| format!("transactionId={}", n + 1))
            .chain((0..orders).map(|n| format!("orderId=o{n}")))
            .chain([format!("transactionId={first}")])
            .collect::<Vec<_>>()
            .join("&")
    };
    assert_eq!(
        served
            .signed(Call::get("/v4/payments", &query(49)))
            .await
            .code(),
        "0000"
    );
    assert_eq!(
        served
            .signed(Call::get("/v4/payments", &query(50)))
            .await
            .code(),
        "1177"
    );
}

#[tokio::test]
async fn offline_v4_pos_flow_with_test_keys_and_percent_encoded_order_ids() {
    let served = emulator().await;
    let pay = |order_id: &str, key: &str, capture: bool| {
        Call::post(
            "/v4/payments/oneTimeKeys/pay",
            &json!({"productName": "tea", "amount": 120, "currency": "TWD",
                    "orderId": order_id, "oneTimeKey": key, "capture": capture})
            .to_string(),
        )
    };
    let paid = served
        .signed(pay("POS 1+測", PAYS_FROM_BALANCE, true))
        .await;
    assert_eq!(paid.code(), "0000", "{}", paid.body);
    let id = transaction_id(&paid.json()["info"]);
    assert_eq!(paid.json()["info"]["payInfo"][0]["method"], "BALANCE");
    // The same orderId again is a duplicate.
    assert_eq!(
        served
            .signed(pay("POS 1+測", PAYS_FROM_BALANCE, true))
            .await
            .code(),
        "1172"
    );

    // The orderId travels percent-encoded in the path, and is signed as sent.
    let encoded = "POS%201%2B%E6%B8%AC";
    let check = served
        .signed(Call::get(
            &format!("/v4/payments/orders/{encoded}/check"),
            "",
        ))
        .await;
    assert_eq!(check.code(), "0000", "{}", check.body);
    assert_eq!(transaction_id(&check.json()["info"]), id);
    assert_eq!(check.json()["info"]["payStatus"], "COMPLETE");
    let refund = served
        .signed(Call::post(
            &format!("/v4/payments/orders/{encoded}/refund"),
            r#"{"refundAmount":20}"#,
        ))
        .await;
    assert_eq!(refund.code(), "0000", "{}", refund.body);
    let check = served
        .signed(Call::get(
            &format!("/v4/payments/orders/{encoded}/check"),
            "",
        ))
        .await;
    assert_eq!(check.json()["info"]["refundList"][0]["refundAmount"], -20);

    // A key that answers a failure, and one that pays by card.
    let refused = served
        .signed(pay("POS-2", INSUFFICIENT_BALANCE, true))
        .await;
    assert_eq!(refused.code(), "1142", "{}", refused.body);
    let card = served.signed(pay("POS-2", PAYS_BY_CARD, false)).await;
    assert_eq!(card.code(), "0000", "{}", card.body);
    assert_eq!(card.json()["info"]["payInfo"][0]["method"], "CREDIT_CARD");
    assert!(card.json()["info"]["authorizationExpireDate"].is_string());
    let card_id = transaction_id(&card.json()["info"]);

    let list = served
        .signed(Call::get(
            "/v4/payments/authorizations",
            &format!("transactionId={card_id}"),
        ))
        .await;
    assert_eq!(
        list.json()["info"][0]["payStatus"],
        "AUTHORIZATION",
        "{}",
        list.body
    );
    let capture = served
        .signed(Call::post(
            "/v4/payments/orders/POS-2/capture",
            r#"{"amount":100,"currency":"TWD"}"#,
        ))
        .await;
    assert_eq!(capture.code(), "0000", "{}", capture.body);
    assert_eq!(
        served
            .signed(Call::post("/v4/payments/orders/POS-2/void", ""))
            .await
            .code(),
        "1179"
    );
    assert_eq!(
        served
            .signed(Call::get("/v4/payments/orders/POS-unknown/check", ""))
            .await
            .code(),
        "1150"
    );

    // What decodes to a separator, a dot segment or a control byte is no orderId.
    for bad in ["a%2Fb", "%2E%2E", "a%5Cb", "a%00b", "%FF"] {
        let answer = served
            .answer(Call::get(&format!("/v4/payments/orders/{bad}/check"), "").signed())
            .await;
        assert_eq!(answer.status, 404, "{bad}: {answer:?}");
    }
}

#[tokio::test]
async fn offline_v2_checks_the_clear_secret_and_required_device_headers() {
    let served = serve(EmulatorConfig {
        require_device_headers: true,
        ..EmulatorConfig::new(CHANNEL, Secret::new(SECRET))
    })
    .await;
    let pay = || {
        Call::post(
            "/v2/payments/oneTimeKeys/pay",
            &json!({"productName": "tea", "amount": "120", "currency": "TWD",
                    "orderId": "POS-v2", "oneTimeKey": "123456789012345678"})
            .to_string(),
        )
    };
    let without_device = served.answer(pay().v2(SECRET)).await;
    assert_eq!(without_device.code(), "1106");
    assert!(
        without_device.body.contains("X-LINE-MerchantDeviceType"),
        "{}",
        without_device.body
    );
    let wrong_secret = served
        .answer(pay().v2("a917ab6a2367b536f8e5a6e2977e06f5").device())
        .await;
    assert_eq!(wrong_secret.code(), "1106");
    // An HMAC signature does not authenticate a v2 call.
    assert_eq!(served.answer(pay().device().signed()).await.code(), "1106");

    let paid = served.answer(pay().v2(SECRET).device()).await;
    assert_eq!(paid.code(), "0000", "{}", paid.body);
    assert_eq!(paid.json()["returnMessage"], "success");
    let check = served
        .answer(
            Call::get("/v2/payments/orders/POS-v2/check", "")
                .v2(SECRET)
                .device(),
        )
        .await;
    assert_eq!(check.code(), "0000", "{}", check.body);
    let refund = served
        .answer(
            Call::post("/v2/payments/orders/POS-v2/refund", "")
                .v2(SECRET)
                .device(),
        )
        .await;
    assert_eq!(refund.code(), "0000", "{}", refund.body);
    // The online API does not need device headers.
    let online = served
        .answer(
            Call::post(
                "/v2/payments/request",
                r#"{"productName":"tea","amount":10,"currency":"TWD","confirmUrl":"https://shop/c","orderId":"v2-online"}"#,
            )
            .v2(SECRET),
        )
        .await;
    assert_eq!(online.code(), "0000", "{}", online.body);
}

#[tokio::test]
async fn a_reservation_expires_after_20_minutes_on_the_emulator_clock() {
    let served = emulator().await;
    let id = served.request("v3", "expires", 100, json!({})).await;
    let clock = served.control(Call::get("/__emulator/clock", "")).await;
    assert_eq!(clock.json()["offset"], "0s");
    let moved = served
        .control(Call::post("/__emulator/clock", r#"{"advance":"19m"}"#))
        .await;
    assert_eq!(moved.status, 200, "{}", moved.body);
    assert_eq!(served.check(id).await, "0110");
    served
        .control(Call::post("/__emulator/clock", r#"{"advance":"1m"}"#))
        .await;
    assert_eq!(served.check(id).await, "0121");
    assert_eq!(served.confirm("v3", id, 100).await.code(), "1180");
    let clock = served.control(Call::get("/__emulator/clock", "")).await;
    assert_eq!(clock.json()["offset"], "20m");
}

#[tokio::test]
async fn authorisations_and_reg_keys_expire_on_the_emulator_clock() {
    let served = emulator().await;
    let auth = served
        .request("v4", "auth-expires", 100, authorise_only())
        .await;
    let confirmed = served.confirm("v4", auth, 100).await;
    let expiry = confirmed.json()["info"]["authorizationExpireDate"].clone();
    assert!(expiry.is_string(), "{}", confirmed.body);

    let preapproved = served
        .request(
            "v4",
            "reg-key",
            100,
            json!({"payment": {"payType": "PREAPPROVED"}}),
        )
        .await;
    let confirmed = served.confirm("v4", preapproved, 100).await;
    let reg_key = confirmed.json()["info"]["regKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no regKey: {}", confirmed.body))
        .to_owned();
    let reg_key_check = || Call::get(&format!("/v4/payments/preapprovedPay/{reg_key}/check"), "");
    assert_eq!(served.signed(reg_key_check()).await.code(), "0000");

    // The library API moves the same clock as the control endpoint.
    served
        .emulator
        .advance_clock(Duration::from_secs(7 * 24 * 3600));
    let details = served
        .signed(Call::get("/v4/payments", &format!("transactionId={auth}")))
        .await;
    let entry = &details.json()["info"][0];
    assert_eq!(entry["payStatus"], "EXPIRED_AUTHORIZATION", "{entry}");
    assert_eq!(entry["authorizationExpireDate"], expiry);
    let capture = served
        .signed(Call::post(
            &format!("/v4/payments/authorizations/{auth}/capture"),
            r#"{"amount":100,"currency":"TWD"}"#,
        ))
        .await;
    assert_eq!(capture.code(), "1179", "{}", capture.body);

    assert_eq!(served.signed(reg_key_check()).await.code(), "0000");
    served
        .control(Call::post("/__emulator/clock", r#"{"advance":"180days"}"#))
        .await;
    assert_eq!(served.signed(reg_key_check()).await.code(), "1193");
}

#[tokio::test]
async fn check_status_follows_the_buyer() {
    let served = emulator().await;
    let waiting = served
        .request("v4", "order-buyer-waits-1", 100, json!({}))
        .await;
    assert_eq!(served.check(waiting).await, "0000");
    assert_eq!(served.confirm("v4", waiting, 100).await.code(), "1169");
    let approve = served
        .control(Call::post(
            &format!("/__emulator/payments/{waiting}/buyer"),
            r#"{"action":"approve"}"#,
        ))
        .await;
    assert_eq!(approve.status, 200, "{}", approve.body);
    assert_eq!(served.check(waiting).await, "0110");
    assert_eq!(served.confirm("v4", waiting, 100).await.code(), "0000");
    assert_eq!(served.check(waiting).await, "0123");

    let cancelled = served
        .request("v4", "order-buyer-waits-2", 100, json!({}))
        .await;
    served
        .control(Call::post(
            &format!("/__emulator/payments/{cancelled}/buyer"),
            r#"{"action":"cancel"}"#,
        ))
        .await;
    assert_eq!(served.check(cancelled).await, "0121");
    let failed = served.request("v4", "order-3", 100, json!({})).await;
    served
        .emulator
        .buyer(failed, BuyerAction::Fail)
        .expect("a reservation");
    assert_eq!(served.check(failed).await, "0122");
    // The buyer acts only on a reservation still open.
    let late = served
        .control(Call::post(
            &format!("/__emulator/payments/{waiting}/buyer"),
            r#"{"action":"cancel"}"#,
        ))
        .await;
    assert_eq!(late.status, 400, "{}", late.body);
}

#[tokio::test]
async fn package_sums_are_1124_and_a_channel_takes_one_currency() {
    let served = emulator().await;
    let mut body = request_body("sum", 100, json!({}));
    body["amount"] = json!(120);
    let answer = served
        .signed(Call::post("/v4/payments/request", &body.to_string()))
        .await;
    assert_eq!(answer.code(), "1124");
    body["amount"] = json!(100);
    body["currency"] = json!("JPY");
    let answer = served
        .signed(Call::post("/v4/payments/request", &body.to_string()))
        .await;
    assert_eq!(answer.code(), "1178");

    let jpy = serve(EmulatorConfig {
        currency: Currency::Jpy,
        ..EmulatorConfig::new(CHANNEL, Secret::new(SECRET))
    })
    .await;
    let answer = jpy
        .signed(Call::post("/v4/payments/request", &body.to_string()))
        .await;
    assert_eq!(answer.code(), "0000", "{}", answer.body);
}

#[tokio::test]
async fn a_return_code_fault_before_applying_leaves_nothing_behind() {
    let served = emulator().await;
    let rule = served
        .control(Call::post(
            "/__emulator/faults",
            r#"{"route":"request","kind":"returnCode","returnCode":"9000","times":2}"#,
        ))
        .await;
    assert_eq!(rule.status, 200, "{}", rule.body);
    assert_eq!(rule.json()["faults"][0]["remaining"], 2);
    let body = request_body("fault-rule", 100, json!({})).to_string();
    for _ in 0..2 {
        let answer = served
            .signed(Call::post("/v4/payments/request", &body))
            .await;
        assert_eq!(answer.code(), "9000", "{}", answer.body);
    }
    // Consumed: the third call goes through, and the orderId was never used.
    let answer = served
        .signed(Call::post("/v4/payments/request", &body))
        .await;
    assert_eq!(answer.code(), "0000", "{}", answer.body);
    let faults = served.control(Call::get("/__emulator/faults", "")).await;
    assert_eq!(faults.json()["faults"], json!([]));
}

#[tokio::test]
async fn a_drop_before_applying_is_never_processed() {
    let served = emulator().await;
    let id = served.request("v4", "drop-before", 100, json!({})).await;
    served
        .control(Call::post(
            "/__emulator/faults",
            r#"{"route":"confirm","kind":"drop"}"#,
        ))
        .await;
    let confirm = Call::post(
        &format!("/v4/payments/{id}/confirm"),
        r#"{"amount":100,"currency":"TWD"}"#,
    )
    .signed();
    assert!(
        served.send(confirm).await.is_none(),
        "the connection was dropped"
    );
    assert_eq!(served.check(id).await, "0110", "not confirmed");
    assert_eq!(served.confirm("v4", id, 100).await.code(), "0000");
}

#[tokio::test]
async fn a_drop_after_applying_is_processed_without_an_answer() {
    let served = emulator().await;
    let id = served.request("v4", "drop-after", 100, json!({})).await;
    assert_eq!(served.confirm("v4", id, 100).await.code(), "0000");
    served
        .control(Call::post(
            "/__emulator/faults",
            r#"{"route":"refund","kind":"drop","stage":"after"}"#,
        ))
        .await;
    let refund = Call::post(&format!("/v4/payments/{id}/refund"), "").signed();
    assert!(
        served.send(refund).await.is_none(),
        "the connection was dropped"
    );
    // The refund happened: details show it, and a blind retry is refused.
    let details = served
        .signed(Call::get("/v4/payments", &format!("transactionId={id}")))
        .await;
    assert_eq!(
        details.json()["info"][0]["refundList"][0]["refundAmount"],
        -100,
        "{}",
        details.body
    );
    let again = served
        .signed(Call::post(&format!("/v4/payments/{id}/refund"), ""))
        .await;
    assert_eq!(again.code(), "1165");
}

/// A delayed call: whether it is applied while its answer is still held back.
async fn applied_while_delayed(stage: &str) -> bool {
    let served = std::sync::Arc::new(emulator().await);
    let id = served
        .request("v4", &format!("delay-{stage}"), 100, json!({}))
        .await;
    served
        .control(Call::post(
            "/__emulator/faults",
            &json!({"route": "confirm", "kind": "delay", "delay": "2s", "stage": stage})
                .to_string(),
        ))
        .await;
    let pending = {
        let served = std::sync::Arc::clone(&served);
        tokio::spawn(async move { served.confirm("v4", id, 100).await.code() })
    };
    // Wait (bounded) until the delayed call has reached the emulator: its fault is
    // consumed then.
    for _ in 0..200 {
        let faults = served.control(Call::get("/__emulator/faults", "")).await;
        if faults.json()["faults"] == json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = served.check(id).await;
    assert!(!pending.is_finished(), "the answer is still held back");
    assert_eq!(pending.await.expect("confirm task"), "0000");
    status == "0123"
}

#[tokio::test]
async fn a_delay_after_applying_answers_late_what_is_already_done() {
    assert!(applied_while_delayed("after").await);
}

#[tokio::test]
async fn a_delay_before_applying_holds_the_call_back() {
    assert!(!applied_while_delayed("before").await);
}

#[tokio::test]
async fn an_http_5xx_fault_answers_a_page_not_json() {
    let served = emulator().await;
    served
        .control(Call::post(
            "/__emulator/faults",
            r#"{"route":"*","kind":"status","status":503}"#,
        ))
        .await;
    let answer = served
        .answer(Call::get("/v4/payments/requests/2021121600698709710/check", "").signed())
        .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.head.to_ascii_lowercase().contains("text/html"),
        "{}",
        answer.head
    );
    // Bad credentials are answered as such, a fault or not: faults act only on valid calls.
    served
        .control(Call::post(
            "/__emulator/faults",
            r#"{"route":"*","kind":"status","status":503}"#,
        ))
        .await;
    let unsigned = served
        .answer(Call::get(
            "/v4/payments/requests/2021121600698709710/check",
            "",
        ))
        .await;
    assert_eq!(unsigned.code(), "1106");
    let cleared = served.control(Call::delete("/__emulator/faults")).await;
    assert_eq!(cleared.json()["faults"], json!([]));
}

#[tokio::test]
async fn the_order_id_convention_rehearses_once_per_call() {
    let served = emulator().await;
    let body = request_body("shop-7-fault-1198", 100, json!({})).to_string();
    let first = served
        .signed(Call::post("/v4/payments/request", &body))
        .await;
    assert_eq!(first.code(), "1198", "{}", first.body);
    let retry = served
        .signed(Call::post("/v4/payments/request", &body))
        .await;
    assert_eq!(retry.code(), "0000", "{}", retry.body);

    // Named endpoint, after applying: the confirm happens, its answer is lost.
    let id = served
        .request("v4", "shop-8-fault-confirm-drop-after", 100, json!({}))
        .await;
    let confirm = Call::post(
        &format!("/v4/payments/{id}/confirm"),
        r#"{"amount":100,"currency":"TWD"}"#,
    )
    .signed();
    assert!(served.send(confirm).await.is_none());
    assert_eq!(served.check(id).await, "0123");
    assert_eq!(served.confirm("v4", id, 100).await.code(), "1172");

    let id = served
        .request("v4", "shop-9-fault-confirm-1905-after", 100, json!({}))
        .await;
    assert_eq!(served.confirm("v4", id, 100).await.code(), "1905");
    assert_eq!(served.check(id).await, "0123");
}

#[tokio::test]
async fn bad_control_calls_say_what_to_send() {
    let served = emulator().await;
    let cases = [
        (
            Call::post(
                "/__emulator/faults",
                r#"{"route":"confirmm","kind":"drop"}"#,
            ),
            400,
            "not an endpoint",
        ),
        (
            Call::post(
                "/__emulator/faults",
                r#"{"route":"confirm","kind":"explode"}"#,
            ),
            400,
            "`kind`",
        ),
        (
            Call::post(
                "/__emulator/faults",
                r#"{"route":"confirm","kind":"status","status":404}"#,
            ),
            400,
            "500 to 599",
        ),
        (
            Call::post(
                "/__emulator/faults",
                r#"{"route":"confirm","kind":"drop","when":"now"}"#,
            ),
            400,
            "unknown key `when`",
        ),
        (
            Call::post(
                "/__emulator/faults",
                r#"{"route":"confirm","kind":"delay","delay":"1h"}"#,
            ),
            400,
            "at most",
        ),
        (
            Call::post("/__emulator/clock", r#"{"advance":"soon"}"#),
            400,
            "duration",
        ),
        (
            Call::post("/__emulator/clock", "not json"),
            400,
            "JSON object",
        ),
        (
            Call::post("/__emulator/payments/1/buyer", r#"{"action":"approve"}"#),
            400,
            "no payment",
        ),
        (Call::get("/__emulator/everything", ""), 404, "control API"),
    ];
    for (call, status, message) in cases {
        let path = call.path.clone();
        let answer = served.control(call).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        let text = answer.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(text.contains(message), "{path}: {text}");
    }
}

#[tokio::test]
async fn one_time_keys_are_single_use_and_issued_keys_expire_after_five_minutes() {
    let served = emulator().await;
    let pay = |order_id: &str, key: &str| {
        Call::post(
            "/v4/payments/oneTimeKeys/pay",
            &json!({"productName": "tea", "amount": 120, "currency": "TWD",
                    "orderId": order_id, "oneTimeKey": key})
            .to_string(),
        )
    };
    let code = |answer: Answer| answer.code();
    // A fixed key pays once; the same key for another order is refused...
    assert_eq!(
        code(served.signed(pay("key-1", "223456789012")).await),
        "0000"
    );
    let again = served.signed(pay("key-2", "223456789012")).await;
    assert_eq!(again.code(), "2101", "{}", again.body);
    assert!(again.body.contains("single use"), "{}", again.body);
    // ...while a retry of the same order still hears 1172 (check the order).
    assert_eq!(
        code(served.signed(pay("key-1", "223456789012")).await),
        "1172"
    );
    // The refusal test keys keep answering their code.
    assert_eq!(
        code(served.signed(pay("key-3", INSUFFICIENT_BALANCE)).await),
        "1142"
    );
    assert_eq!(
        code(served.signed(pay("key-4", INSUFFICIENT_BALANCE)).await),
        "1142"
    );

    // Issued keys: the right length and method, valid five minutes.
    let issue = |body: &str| Call::post("/__emulator/oneTimeKeys", body);
    let card = served
        .control(issue(r#"{"pays":"card","digits":19}"#))
        .await;
    assert_eq!(card.status, 200, "{}", card.body);
    let card_key = card.json()["oneTimeKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(card_key.len(), 19, "{card_key}");
    let paid = served.signed(pay("key-5", &card_key)).await;
    assert_eq!(paid.code(), "0000", "{}", paid.body);
    assert_eq!(paid.json()["info"]["payInfo"][0]["method"], "CREDIT_CARD");

    let late = served.control(issue(r#"{"digits":12}"#)).await;
    let late_key = late.json()["oneTimeKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(late_key.len(), 12, "{late_key}");
    served
        .control(Call::post("/__emulator/clock", r#"{"advance":"4m59s"}"#))
        .await;
    let in_time = served.control(issue("{}")).await;
    let in_time_key = in_time.json()["oneTimeKey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    served
        .control(Call::post("/__emulator/clock", r#"{"advance":"1s"}"#))
        .await;
    let expired = served.signed(pay("key-6", &late_key)).await;
    assert_eq!(expired.code(), "2101", "{}", expired.body);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    let fresh = served.signed(pay("key-7", &in_time_key)).await;
    assert_eq!(fresh.code(), "0000", "{}", fresh.body);
    assert_eq!(fresh.json()["info"]["payInfo"][0]["method"], "BALANCE");

    let bad = served.control(issue(r#"{"digits":13}"#)).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}
