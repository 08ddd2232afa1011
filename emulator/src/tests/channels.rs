//! Several channels served at once (issue 19): a web shop in TWD and a POS in THB, each
//! with its own id and secret. Credentials are checked against the channel the call
//! names, and a channel sees only its own payments, orderIds and regKeys.

use super::*;

const WEB_ID: &str = "1000000001";
const WEB_SECRET: &str = "web-secret-5b1f0c2e9a7d4c38";
const POS_ID: &str = "2000000002";
const POS_SECRET: &str = "pos-secret-d4e8a1b7c6f2903e";
const NONCE: &str = "0b5e5d3e-4a1c-4f6e-9c7d-2f1e0a9b8c7d";

/// One emulator serving the web channel (TWD, first) and the POS channel (THB).
fn two_channels() -> Emulator {
    Emulator::new(
        EmulatorConfig::new(WEB_ID, Secret::new(WEB_SECRET)).with_channel(ChannelConfig {
            currency: Currency::Thb,
            ..ChannelConfig::new(POS_ID, Secret::new(POS_SECRET))
        }),
    )
}

/// Calls as a merchant holding `channel_id` and signing with `secret`: the same
/// emulator may be called with any pairing, the right ones and the wrong ones.
struct Caller<'a> {
    emulator: &'a Emulator,
    channel_id: &'a str,
    secret: &'a str,
}

impl Caller<'_> {
    fn headers(&self, path: &str, payload: &[u8]) -> HeaderMap {
        let signature = sign_for_test(self.secret.as_bytes(), path, payload, NONCE);
        let mut headers = HeaderMap::new();
        let value = |text: &str| HeaderValue::from_str(text).expect("ASCII header value");
        headers.insert("X-LINE-ChannelId", value(self.channel_id));
        headers.insert("X-LINE-Authorization-Nonce", value(NONCE));
        headers.insert("X-LINE-Authorization", value(&signature));
        headers
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let headers = self.headers(path, body.as_bytes());
        let response = self
            .emulator
            .handle(&Method::POST, path, None, &headers, body.as_bytes());
        answer_of(&response)
    }

    fn get(&self, path: &str, query: &str) -> Value {
        let headers = self.headers(path, query.as_bytes());
        let query = Some(query).filter(|query| !query.is_empty());
        let response = self
            .emulator
            .handle(&Method::GET, path, query, &headers, b"");
        answer_of(&response)
    }

    /// A v2 call: the channel id and secret in clear.
    fn post_v2(&self, path: &str, body: &Value) -> Value {
        let mut headers = HeaderMap::new();
        let value = |text: &str| HeaderValue::from_str(text).expect("ASCII header value");
        headers.insert("X-LINE-ChannelId", value(self.channel_id));
        headers.insert("X-LINE-ChannelSecret", value(self.secret));
        let body = body.to_string();
        let response = self
            .emulator
            .handle(&Method::POST, path, None, &headers, body.as_bytes());
        answer_of(&response)
    }

    /// A reserved and confirmed (paid) online payment in `currency`.
    fn paid(&self, order_id: &str, amount: i64, currency: &str) -> u64 {
        let mut body = request_body(order_id, amount, json!({}));
        body["currency"] = currency.into();
        let answer = self.post("/v3/payments/request", &body);
        assert_eq!(code(&answer), "0000", "{answer}");
        let id = transaction_id(&answer["info"]);
        let confirmed = self.post(
            &format!("/v3/payments/{id}/confirm"),
            &json!({"amount": amount, "currency": currency}),
        );
        assert_eq!(code(&confirmed), "0000", "{confirmed}");
        id
    }

    /// An offline v4 payment with a one-time key; its transaction id.
    fn paid_at_pos(&self, order_id: &str, key: &str, currency: &str, capture: bool) -> u64 {
        let answer = self.post(
            "/v4/payments/oneTimeKeys/pay",
            &json!({"productName": "Tea", "amount": 180, "currency": currency,
                    "orderId": order_id, "oneTimeKey": key, "capture": capture}),
        );
        assert_eq!(code(&answer), "0000", "{answer}");
        transaction_id(&answer["info"])
    }
}

fn web(emulator: &Emulator) -> Caller<'_> {
    Caller {
        emulator,
        channel_id: WEB_ID,
        secret: WEB_SECRET,
    }
}

fn pos(emulator: &Emulator) -> Caller<'_> {
    Caller {
        emulator,
        channel_id: POS_ID,
        secret: POS_SECRET,
    }
}

/// The answer as JSON; no secret of either channel ever appears in it.
fn answer_of(response: &Response<Bytes>) -> Value {
    let body = std::str::from_utf8(response.body()).expect("UTF-8 body");
    for secret in [WEB_SECRET, POS_SECRET] {
        assert!(!body.contains(secret), "an answer leaked a secret: {body}");
    }
    serde_json::from_str(body).expect("JSON body")
}

fn message(answer: &Value) -> &str {
    answer["returnMessage"].as_str().unwrap_or("<none>")
}

#[test]
fn each_channel_passes_with_its_own_id_and_secret() {
    let emulator = two_channels();
    // An unknown transaction: a call whose credentials pass is answered 1150.
    let path = "/v3/payments/requests/2021121600698709710/check";
    assert_eq!(code(&web(&emulator).get(path, "")), "1150");
    assert_eq!(code(&pos(&emulator).get(path, "")), "1150");
}

#[test]
fn one_channels_secret_under_anothers_id_is_1106() {
    let emulator = two_channels();
    let path = "/v3/payments/requests/2021121600698709710/check";
    for (case, channel_id, secret) in [
        ("web id, POS secret", WEB_ID, POS_SECRET),
        ("POS id, web secret", POS_ID, WEB_SECRET),
    ] {
        let caller = Caller {
            emulator: &emulator,
            channel_id,
            secret,
        };
        let answer = caller.get(path, "");
        assert_eq!(code(&answer), "1106", "{case}: {answer}");
        assert!(
            message(&answer).contains("X-LINE-Authorization does not match"),
            "{case}: {answer}"
        );
        // v2 sends the secret in clear: the other channel's is refused the same way.
        let v2 = caller.post_v2(
            "/v2/payments/oneTimeKeys/pay",
            &json!({"productName": "Tea", "amount": 100, "currency": "TWD",
                    "orderId": format!("v2-{channel_id}"), "oneTimeKey": "123456789012"}),
        );
        assert_eq!(code(&v2), "1106", "{case} (v2): {v2}");
        assert!(
            message(&v2).contains("X-LINE-ChannelSecret does not match"),
            "{case} (v2): {v2}"
        );
    }
    // An id no channel has is refused before any secret is tried.
    let stranger = Caller {
        emulator: &emulator,
        channel_id: "3000000003",
        secret: WEB_SECRET,
    };
    let answer = stranger.get(path, "");
    assert_eq!(code(&answer), "1106", "{answer}");
    assert!(
        message(&answer).contains("X-LINE-ChannelId does not match any channel"),
        "{answer}"
    );
}

#[test]
fn a_transaction_of_one_channel_is_1150_from_the_other() {
    let emulator = two_channels();
    let (web, pos) = (web(&emulator), pos(&emulator));
    let paid = web.paid("web-order-1", 100, "TWD");
    let reserved = {
        let answer = web.post(
            "/v3/payments/request",
            &request_body("web-order-2", 50, json!({"payment": {"capture": false}})),
        );
        transaction_id(&answer["info"])
    };

    // In the POS channel's own currency: a TWD body would be refused as 1178 first.
    let thb = json!({"amount": 50, "currency": "THB"});
    for (call, answer) in [
        (
            "confirm",
            pos.post(&format!("/v3/payments/{reserved}/confirm"), &thb),
        ),
        (
            "refund",
            pos.post(&format!("/v3/payments/{paid}/refund"), &json!({})),
        ),
        (
            "capture",
            pos.post(
                &format!("/v3/payments/authorizations/{reserved}/capture"),
                &thb,
            ),
        ),
        (
            "void",
            pos.post(
                &format!("/v3/payments/authorizations/{reserved}/void"),
                &json!({}),
            ),
        ),
        (
            "check",
            pos.get(&format!("/v3/payments/requests/{reserved}/check"), ""),
        ),
        (
            "details by id",
            pos.get("/v3/payments", &format!("transactionId={paid}")),
        ),
        (
            "details by orderId",
            pos.get("/v3/payments", "orderId=web-order-1"),
        ),
        (
            "userInfo",
            pos.get(&format!("/v4/payments/{paid}/userInfo"), ""),
        ),
    ] {
        assert_eq!(code(&answer), "1150", "{call} from the POS: {answer}");
    }

    // Nothing the POS sent changed the web channel's payments.
    let confirmed = web.post(
        &format!("/v3/payments/{reserved}/confirm"),
        &json!({"amount": 50, "currency": "TWD"}),
    );
    assert_eq!(code(&confirmed), "0000", "{confirmed}");
    let refund = web.post(&format!("/v3/payments/{paid}/refund"), &json!({}));
    assert_eq!(code(&refund), "0000", "{refund}");
    // A refund id is the web channel's too.
    let refund_id = refund["info"]["refundTransactionId"]
        .as_u64()
        .expect("refundTransactionId");
    let query = format!("transactionId={refund_id}");
    assert_eq!(code(&pos.get("/v3/payments", &query)), "1150");
    assert_eq!(code(&web.get("/v3/payments", &query)), "0000");
}

#[test]
fn details_list_only_the_callers_payments() {
    let emulator = two_channels();
    let (web, pos) = (web(&emulator), pos(&emulator));
    let web_paid = web.paid("mixed-web", 100, "TWD");
    let pos_paid = pos.paid_at_pos("mixed-pos", "123456789012", "THB", true);
    let query = format!("transactionId={web_paid}&transactionId={pos_paid}");
    let listed = |answer: Value| -> Vec<u64> {
        assert_eq!(code(&answer), "0000", "{answer}");
        answer["info"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|entry| entry["transactionId"].as_u64().expect("an id"))
            .collect()
    };
    assert_eq!(listed(web.get("/v3/payments", &query)), vec![web_paid]);
    assert_eq!(listed(pos.get("/v4/payments", &query)), vec![pos_paid]);
}

#[test]
fn an_offline_order_of_one_channel_is_1150_from_the_other() {
    let emulator = two_channels();
    let (web, pos) = (web(&emulator), pos(&emulator));
    let order = "till-7-0001";
    let pos_paid = pos.paid_at_pos(order, "123456789012", "THB", true);
    let authorised = "till-7-0002";
    pos.paid_at_pos(authorised, "234567890123", "THB", false);

    // In the web channel's own currency: a THB body would be refused as 1178 first.
    let twd = json!({"amount": 180, "currency": "TWD"});
    for (call, answer) in [
        (
            "check",
            web.get(&format!("/v4/payments/orders/{order}/check"), ""),
        ),
        (
            "refund",
            web.post(&format!("/v4/payments/orders/{order}/refund"), &json!({})),
        ),
        (
            "capture",
            web.post(&format!("/v4/payments/orders/{authorised}/capture"), &twd),
        ),
        (
            "void",
            web.post(
                &format!("/v4/payments/orders/{authorised}/void"),
                &json!({}),
            ),
        ),
    ] {
        assert_eq!(
            code(&answer),
            "1150",
            "{call} from the web channel: {answer}"
        );
    }

    // An orderId is unique within its channel only: the web channel may use the same
    // one, and each channel's status check then finds its own payment.
    let web_paid = web.paid(order, 100, "TWD");
    assert_ne!(web_paid, pos_paid);
    let found = |caller: &Caller<'_>| {
        let answer = caller.get(&format!("/v4/payments/orders/{order}/check"), "");
        assert_eq!(code(&answer), "0000", "{answer}");
        transaction_id(&answer["info"])
    };
    assert_eq!(found(&pos), pos_paid);
    assert_eq!(found(&web), web_paid);
    // Within the POS channel its orderId is still taken.
    let again = pos.post(
        "/v4/payments/oneTimeKeys/pay",
        &json!({"productName": "Tea", "amount": 180, "currency": "THB",
                "orderId": order, "oneTimeKey": "345678901234"}),
    );
    assert_eq!(code(&again), "1172", "{again}");

    let refund = pos.post(&format!("/v4/payments/orders/{order}/refund"), &json!({}));
    assert_eq!(code(&refund), "0000", "{refund}");
    let void = pos.post(
        &format!("/v4/payments/orders/{authorised}/void"),
        &json!({}),
    );
    assert_eq!(code(&void), "0000", "{void}");
}

#[test]
fn each_channel_takes_its_own_currency_only() {
    let emulator = two_channels();
    let (web, pos) = (web(&emulator), pos(&emulator));
    let in_currency = |caller: &Caller<'_>, order_id: &str, currency: &str| {
        let mut body = request_body(order_id, 100, json!({}));
        body["currency"] = currency.into();
        code(&caller.post("/v3/payments/request", &body)).to_owned()
    };
    assert_eq!(in_currency(&web, "web-twd", "TWD"), "0000");
    assert_eq!(in_currency(&web, "web-thb", "THB"), "1178");
    assert_eq!(in_currency(&pos, "pos-thb", "THB"), "0000");
    assert_eq!(in_currency(&pos, "pos-twd", "TWD"), "1178");
    // Offline too, and the payment is recorded in the channel's currency.
    let id = pos.paid_at_pos("pos-key-thb", "123456789012", "THB", true);
    let details = pos.get("/v4/payments", &format!("transactionId={id}"));
    assert_eq!(details["info"][0]["currency"], "THB", "{details}");
    let twd_at_pos = pos.post(
        "/v4/payments/oneTimeKeys/pay",
        &json!({"productName": "Tea", "amount": 180, "currency": "TWD",
                "orderId": "pos-key-twd", "oneTimeKey": "234567890123"}),
    );
    assert_eq!(code(&twd_at_pos), "1178", "{twd_at_pos}");
}

#[test]
fn a_reg_key_belongs_to_the_channel_that_got_it() {
    let emulator = two_channels();
    let (web, pos) = (web(&emulator), pos(&emulator));
    let reserved = web.post(
        "/v3/payments/request",
        &request_body(
            "web-preapproved",
            10,
            json!({"payment": {"payType": "PREAPPROVED"}}),
        ),
    );
    let id = transaction_id(&reserved["info"]);
    let confirmed = web.post(
        &format!("/v3/payments/{id}/confirm"),
        &json!({"amount": 10, "currency": "TWD"}),
    );
    let reg_key = confirmed["info"]["regKey"]
        .as_str()
        .unwrap_or_else(|| panic!("no regKey: {confirmed}"))
        .to_owned();
    let check = format!("/v3/payments/preapprovedPay/{reg_key}/check");
    assert_eq!(code(&pos.get(&check, "")), "1190");
    assert_eq!(code(&web.get(&check, "")), "0000");
}

#[test]
fn device_headers_are_required_by_the_channel_that_asks_for_them() {
    let emulator = Emulator::new(
        EmulatorConfig::new(WEB_ID, Secret::new(WEB_SECRET)).with_channel(ChannelConfig {
            require_device_headers: true,
            ..ChannelConfig::new(POS_ID, Secret::new(POS_SECRET))
        }),
    );
    let pay = |caller: Caller<'_>, order_id: &str, key: &str| {
        let body = json!({"productName": "Tea", "amount": 100, "currency": "TWD",
                          "orderId": order_id, "oneTimeKey": key});
        code(&caller.post("/v4/payments/oneTimeKeys/pay", &body)).to_owned()
    };
    assert_eq!(pay(pos(&emulator), "no-device", "123456789012"), "1106");
    assert_eq!(pay(web(&emulator), "web-no-device", "234567890123"), "0000");
}

#[test]
fn a_new_secret_applies_to_its_channel_only() {
    let emulator = two_channels();
    let path = "/v3/payments/requests/2021121600698709710/check";
    const ROTATED: &str = "pos-secret-rotated-71c0e5a9";
    emulator
        .set_channel_secret(POS_ID, Secret::new(ROTATED))
        .expect("the POS channel exists");

    assert_eq!(
        code(&pos(&emulator).get(path, "")),
        "1106",
        "the old secret"
    );
    let rotated = Caller {
        emulator: &emulator,
        channel_id: POS_ID,
        secret: ROTATED,
    };
    assert_eq!(code(&rotated.get(path, "")), "1150", "the new secret");
    assert_eq!(code(&web(&emulator).get(path, "")), "1150", "web untouched");

    let unknown = emulator.set_channel_secret("3000000003", Secret::new(ROTATED));
    assert!(unknown.is_err_and(|error| error.contains("3000000003")));
    // Debug output names the channels, never a secret.
    let shown = format!("{emulator:?}");
    assert!(shown.contains(WEB_ID) && shown.contains(POS_ID), "{shown}");
    for secret in [WEB_SECRET, POS_SECRET, ROTATED] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn a_channel_id_given_twice_is_found() {
    let single = EmulatorConfig::new(WEB_ID, Secret::new(WEB_SECRET));
    assert_eq!(single.duplicate_channel_id(), None);
    let two = single
        .clone()
        .with_channel(ChannelConfig::new(POS_ID, Secret::new(POS_SECRET)));
    assert_eq!(two.duplicate_channel_id(), None);
    assert_eq!(
        two.channels()
            .iter()
            .map(|channel| channel.channel_id.as_str())
            .collect::<Vec<_>>(),
        [WEB_ID, POS_ID]
    );
    let twice = two.with_channel(ChannelConfig::new(WEB_ID, Secret::new(POS_SECRET)));
    assert_eq!(twice.duplicate_channel_id().as_deref(), Some(WEB_ID));
}

/// A GET through [`Emulator::deliver`], where rehearsed faults act.
async fn delivered(caller: &Caller<'_>, path: &str) -> Value {
    let headers = caller.headers(path, b"");
    match caller
        .emulator
        .deliver(&Method::GET, path, None, &headers, b"")
        .await
    {
        Delivery::Respond(response) => answer_of(&response),
        Delivery::Drop => panic!("{path}: the connection was dropped"),
    }
}

#[tokio::test]
async fn a_fault_for_an_order_waits_for_a_call_of_its_own_channel() {
    let emulator = two_channels();
    let reserved = web(&emulator).post(
        "/v3/payments/request",
        &request_body("faulty-order", 100, json!({})),
    );
    let id = transaction_id(&reserved["info"]);
    emulator
        .add_fault(FaultRule {
            route: "check".into(),
            kind: FaultKind::ReturnCode("9000".into()),
            stage: FaultStage::Before,
            times: 1,
            order_id: Some("faulty-order".into()),
        })
        .expect("a valid rule");
    let path = format!("/v3/payments/requests/{id}/check");
    // The POS channel's call on the web payment finds nothing, and takes no fault.
    assert_eq!(code(&delivered(&pos(&emulator), &path).await), "1150");
    assert_eq!(code(&delivered(&web(&emulator), &path).await), "9000");
    assert_eq!(code(&delivered(&web(&emulator), &path).await), "0110");
}
