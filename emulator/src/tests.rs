//! Whole-call tests of the emulator through [`Emulator::handle`]: every call is signed
//! like a merchant would sign it, and every LINE Pay return code the emulator promises
//! is produced at least once.

use super::*;
use crate::auth::sign_for_test;
use http::HeaderValue;
use serde_json::{json, Value};

const SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
const CHANNEL: &str = "1234567890";
const NONCE: &str = "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77";

/// A merchant talking to one emulator; hides signing, never the assertions.
struct Merchant {
    emulator: Emulator,
}

impl Merchant {
    fn new() -> Self {
        Merchant {
            emulator: Emulator::new(EmulatorConfig::new(CHANNEL, Secret::new(SECRET))),
        }
    }

    fn v3_headers(path: &str, payload: &[u8]) -> HeaderMap {
        let signature = sign_for_test(SECRET.as_bytes(), path, payload, NONCE);
        let mut headers = HeaderMap::new();
        headers.insert("X-LINE-ChannelId", HeaderValue::from_static(CHANNEL));
        headers.insert(
            "X-LINE-Authorization-Nonce",
            HeaderValue::from_static(NONCE),
        );
        headers.insert(
            "X-LINE-Authorization",
            HeaderValue::from_str(&signature).expect("Base64 is a valid header value"),
        );
        headers
    }

    fn call(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response<Bytes> {
        self.emulator.handle(&method, path, query, headers, body)
    }

    fn post_bytes(&self, path: &str, body: &[u8]) -> Value {
        let headers = Self::v3_headers(path, body);
        json_of(&self.call(Method::POST, path, None, &headers, body))
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        self.post_bytes(path, body.to_string().as_bytes())
    }

    fn get(&self, path: &str, query: &str) -> Value {
        let headers = Self::v3_headers(path, query.as_bytes());
        let query = Some(query).filter(|query| !query.is_empty());
        json_of(&self.call(Method::GET, path, query, &headers, b""))
    }

    /// Reserves a payment and returns its transaction id.
    fn request(&self, order_id: &str, amount: i64, options: Value) -> u64 {
        let answer = self.post(
            "/v3/payments/request",
            &request_body(order_id, amount, options),
        );
        assert_eq!(code(&answer), "0000", "{answer}");
        transaction_id(&answer["info"])
    }

    fn confirm(&self, id: u64, amount: i64) -> Value {
        self.post(
            &format!("/v3/payments/{id}/confirm"),
            &json!({"amount": amount, "currency": "TWD"}),
        )
    }

    fn refund(&self, id: u64, body: &str) -> Value {
        self.post_bytes(&format!("/v3/payments/{id}/refund"), body.as_bytes())
    }

    fn capture(&self, id: u64, amount: i64) -> Value {
        self.post(
            &format!("/v3/payments/authorizations/{id}/capture"),
            &json!({"amount": amount, "currency": "TWD"}),
        )
    }

    fn void(&self, id: u64) -> Value {
        self.post_bytes(&format!("/v3/payments/authorizations/{id}/void"), b"")
    }

    fn check(&self, id: u64) -> Value {
        self.get(&format!("/v3/payments/requests/{id}/check"), "")
    }

    fn details(&self, query: &str) -> Value {
        self.get("/v3/payments", query)
    }

    /// A paid (captured) payment.
    fn paid(&self, order_id: &str, amount: i64) -> u64 {
        let id = self.request(order_id, amount, json!({}));
        assert_eq!(code(&self.confirm(id, amount)), "0000");
        id
    }

    /// An authorised, not captured, payment.
    fn authorised(&self, order_id: &str, amount: i64) -> u64 {
        let id = self.request(order_id, amount, json!({"payment": {"capture": false}}));
        assert_eq!(code(&self.confirm(id, amount)), "0000");
        id
    }
}

fn request_body(order_id: &str, amount: i64, options: Value) -> Value {
    json!({
        "amount": amount,
        "currency": "TWD",
        "orderId": order_id,
        "packages": [{
            "id": "package-1",
            "amount": amount,
            "name": "shop",
            "products": [{"name": "測試商品", "quantity": 1, "price": amount}]
        }],
        "redirectUrls": {"confirmUrl": "https://shop.example/confirm", "cancelUrl": "https://shop.example/cancel"},
        "options": options
    })
}

fn json_of(response: &Response<Bytes>) -> Value {
    let body = std::str::from_utf8(response.body()).expect("UTF-8 body");
    assert!(
        !body.contains(SECRET),
        "a response leaked the secret: {body}"
    );
    serde_json::from_str(body).expect("JSON body")
}

fn code(answer: &Value) -> &str {
    answer["returnCode"].as_str().unwrap_or("<none>")
}

/// A transaction id must be a JSON number (u64), never a string.
fn transaction_id(info: &Value) -> u64 {
    let id = info["transactionId"]
        .as_u64()
        .unwrap_or_else(|| panic!("transactionId is not a JSON number: {info}"));
    assert_19_digits(id);
    id
}

fn assert_19_digits(id: u64) {
    assert!(
        (1_000_000_000_000_000_000..10_000_000_000_000_000_000).contains(&id),
        "{id}"
    );
}

#[test]
fn request_confirm_details_refund_round_trip() {
    let merchant = Merchant::new();
    let answer = merchant.post(
        "/v3/payments/request",
        &request_body("order-1", 100, json!({})),
    );
    assert_eq!(code(&answer), "0000");
    assert_eq!(answer["returnMessage"], "Success.");
    let id = transaction_id(&answer["info"]);
    let web = answer["info"]["paymentUrl"]["web"]
        .as_str()
        .expect("web URL");
    // Not served here (only `handle`): the page's host is a name that resolves nowhere.
    assert!(
        web.starts_with("http://linepay-emulator.invalid/__emulator/pay/"),
        "{web}"
    );
    let app = answer["info"]["paymentUrl"]["app"]
        .as_str()
        .expect("app URL");
    assert!(app.starts_with("line://pay/payment/"), "{app}");
    let token = answer["info"]["paymentAccessToken"]
        .as_str()
        .expect("token");
    assert_eq!(token.len(), 12);
    assert!(token.bytes().all(|byte| byte.is_ascii_digit()));

    // The emulated user approved at once: the status check says so.
    assert_eq!(code(&merchant.check(id)), "0110");

    let confirmed = merchant.confirm(id, 100);
    assert_eq!(code(&confirmed), "0000", "{confirmed}");
    assert_eq!(confirmed["info"]["orderId"], "order-1");
    assert_eq!(transaction_id(&confirmed["info"]), id);
    assert_eq!(
        confirmed["info"]["payInfo"],
        json!([{"method": "BALANCE", "amount": 100}])
    );
    assert!(confirmed["info"].get("regKey").is_none());
    assert_eq!(code(&merchant.check(id)), "0123");

    let details = merchant.details(&format!("transactionId={id}"));
    assert_eq!(code(&details), "0000", "{details}");
    let entry = &details["info"][0];
    assert_eq!(transaction_id(entry), id);
    assert_eq!(entry["transactionType"], "PAYMENT");
    assert_eq!(entry["orderId"], "order-1");
    assert_eq!(entry["productName"], "測試商品");
    assert_eq!(entry["currency"], "TWD");
    assert_eq!(entry["payInfo"][0]["amount"], 100);
    assert!(entry["transactionDate"]
        .as_str()
        .is_some_and(|date| date.ends_with('Z')));
    assert!(entry.get("refundList").is_none());

    let refund = merchant.refund(id, r#"{"refundAmount":30}"#);
    assert_eq!(code(&refund), "0000", "{refund}");
    let refund_id = refund["info"]["refundTransactionId"]
        .as_u64()
        .expect("refundTransactionId is a JSON number");
    assert_19_digits(refund_id);
    assert_ne!(refund_id, id);
    assert!(refund["info"]["refundTransactionDate"].is_string());

    // An empty body refunds what remains.
    assert_eq!(code(&merchant.refund(id, "")), "0000");
    assert_eq!(code(&merchant.refund(id, "")), "1165");

    let details = merchant.details(&format!("orderId=order-1&transactionId={refund_id}"));
    let list = &details["info"][1]["refundList"];
    assert_eq!(list[0]["refundTransactionId"], refund_id);
    assert_eq!(list[0]["refundAmount"], -30);
    assert_eq!(list[0]["transactionType"], "PARTIAL_REFUND");
    assert_eq!(list[1]["refundAmount"], -70);
    // Asked by refund id, the refund is listed with its original transaction.
    let refund_entry = &details["info"][0];
    assert_eq!(refund_entry["transactionId"], refund_id);
    assert_eq!(refund_entry["originalTransactionId"], id);
    assert_eq!(refund_entry["payInfo"][0]["amount"], -30);
}

#[test]
fn transaction_ids_are_bare_json_numbers_on_the_wire() {
    let merchant = Merchant::new();
    let body = request_body("order-raw", 10, json!({}));
    let bytes = body.to_string().into_bytes();
    let headers = Merchant::v3_headers("/v3/payments/request", &bytes);
    let response = merchant.call(Method::POST, "/v3/payments/request", None, &headers, &bytes);
    let text = std::str::from_utf8(response.body()).expect("UTF-8");
    let id = transaction_id(&json_of(&response)["info"]);
    assert!(text.contains(&format!("\"transactionId\":{id}")), "{text}");
    assert!(!text.contains(&format!("\"{id}\"")), "{text}");
}

#[test]
fn full_refund_at_once_is_a_payment_refund() {
    let merchant = Merchant::new();
    let id = merchant.paid("order-full", 50);
    assert_eq!(code(&merchant.refund(id, "{}")), "0000");
    let details = merchant.details(&format!("transactionId={id}"));
    assert_eq!(
        details["info"][0]["refundList"][0]["transactionType"],
        "PAYMENT_REFUND"
    );
    assert_eq!(code(&merchant.refund(id, r#"{"refundAmount":1}"#)), "1165");
}

#[test]
fn refund_beyond_what_remains_is_1164() {
    let merchant = Merchant::new();
    let id = merchant.paid("order-over", 100);
    assert_eq!(
        code(&merchant.refund(id, r#"{"refundAmount":101}"#)),
        "1164"
    );
    assert_eq!(code(&merchant.refund(id, r#"{"refundAmount":60}"#)), "0000");
    assert_eq!(code(&merchant.refund(id, r#"{"refundAmount":41}"#)), "1164");
    assert_eq!(code(&merchant.refund(id, r#"{"refundAmount":40}"#)), "0000");
}

#[test]
fn authorise_then_capture_then_refund() {
    let merchant = Merchant::new();
    let id = merchant.authorised("order-auth", 500);
    assert_eq!(code(&merchant.check(id)), "0123");
    let details = merchant.details(&format!("transactionId={id}"));
    assert_eq!(details["info"][0]["payStatus"], "AUTHORIZATION");

    // Not captured yet: nothing to refund.
    assert_eq!(code(&merchant.refund(id, "")), "1179");
    // Nothing, or more than was authorised, cannot be captured.
    assert_eq!(code(&merchant.capture(id, 0)), "1183");
    assert_eq!(code(&merchant.capture(id, -1)), "1183");
    assert_eq!(code(&merchant.capture(id, 501)), "1184");

    // Less than authorised is a capture; the rest is released.
    let captured = merchant.capture(id, 300);
    assert_eq!(code(&captured), "0000", "{captured}");
    assert_eq!(transaction_id(&captured["info"]), id);
    assert_eq!(captured["info"]["orderId"], "order-auth");
    assert_eq!(captured["info"]["payInfo"][0]["amount"], 300);

    assert_eq!(code(&merchant.capture(id, 200)), "1179");
    assert_eq!(code(&merchant.void(id)), "1179");
    let details = merchant.details(&format!("transactionId={id}"));
    assert_eq!(details["info"][0]["payStatus"], "CAPTURE");
    assert_eq!(details["info"][0]["payInfo"][0]["amount"], 300);
    // Refunds are capped by what was captured, not by what was authorised.
    assert_eq!(
        code(&merchant.refund(id, r#"{"refundAmount":301}"#)),
        "1164"
    );
    assert_eq!(
        code(&merchant.refund(id, r#"{"refundAmount":100}"#)),
        "0000"
    );
    assert_eq!(
        code(&merchant.refund(id, r#"{"refundAmount":201}"#)),
        "1164"
    );
    assert_eq!(code(&merchant.refund(id, "")), "0000");
    assert_eq!(code(&merchant.refund(id, "")), "1165");
}

#[test]
fn authorise_then_void() {
    let merchant = Merchant::new();
    let id = merchant.authorised("order-void", 500);
    let voided = merchant.void(id);
    assert_eq!(code(&voided), "0000", "{voided}");
    assert!(voided.get("info").is_none());

    assert_eq!(code(&merchant.check(id)), "0121");
    assert_eq!(code(&merchant.capture(id, 500)), "1179");
    // A second void: "already voided".
    assert_eq!(code(&merchant.void(id)), "1165");
    assert_eq!(code(&merchant.refund(id, "")), "1179");
    let details = merchant.details(&format!("transactionId={id}"));
    assert_eq!(details["info"][0]["payStatus"], "VOIDED_AUTHORIZATION");
}

#[test]
fn capture_and_void_need_an_authorisation() {
    let merchant = Merchant::new();
    let paid = merchant.paid("order-paid", 100);
    assert_eq!(code(&merchant.capture(paid, 100)), "1179");
    assert_eq!(code(&merchant.void(paid)), "1179");

    let requested = merchant.request(
        "order-requested",
        100,
        json!({"payment": {"capture": false}}),
    );
    assert_eq!(code(&merchant.capture(requested, 100)), "1179");
    assert_eq!(code(&merchant.void(requested)), "1179");
    // A reservation that was never confirmed is not paid: no refund, no details.
    assert_eq!(code(&merchant.refund(requested, "")), "1179");
    assert_eq!(
        code(&merchant.details(&format!("transactionId={requested}"))),
        "1150"
    );
}

#[test]
fn confirm_must_match_and_happens_once() {
    let merchant = Merchant::new();
    let id = merchant.request("order-confirm", 100, json!({}));
    assert_eq!(code(&merchant.confirm(id, 99)), "1153");
    let other_currency = merchant.post(
        &format!("/v3/payments/{id}/confirm"),
        &json!({"amount": 100, "currency": "JPY"}),
    );
    // The channel has one currency (TWD): another is 1178, not a mismatch.
    assert_eq!(code(&other_currency), "1178");
    // A refused confirm leaves the reservation confirmable.
    assert_eq!(code(&merchant.confirm(id, 100)), "0000");
    assert_eq!(code(&merchant.confirm(id, 100)), "1172");
}

#[test]
fn unknown_transactions_are_1150() {
    let merchant = Merchant::new();
    let unknown = 2_021_121_600_698_709_710;
    assert_eq!(code(&merchant.confirm(unknown, 100)), "1150");
    assert_eq!(code(&merchant.capture(unknown, 100)), "1150");
    assert_eq!(code(&merchant.void(unknown)), "1150");
    assert_eq!(code(&merchant.refund(unknown, "")), "1150");
    assert_eq!(code(&merchant.check(unknown)), "1150");
    assert_eq!(
        code(&merchant.details(&format!("transactionId={unknown}"))),
        "1150"
    );
    assert_eq!(code(&merchant.details("orderId=nobody")), "1150");
}

#[test]
fn duplicate_order_id_is_1172() {
    let merchant = Merchant::new();
    merchant.request("order-dup", 100, json!({}));
    let again = merchant.post(
        "/v3/payments/request",
        &request_body("order-dup", 100, json!({})),
    );
    assert_eq!(code(&again), "1172");
}

#[test]
fn malformed_request_bodies_are_2102() {
    let merchant = Merchant::new();
    let mut with_extra = request_body("order-extra", 100, json!({}));
    with_extra["MerchantOrderNo"] = json!("db-field");
    assert_eq!(
        code(&merchant.post("/v3/payments/request", &with_extra)),
        "2102"
    );
    for raw in [&b"{\"amount\":"[..], b"", b"\xff\xfe\xfd", b"[1,2]"] {
        let answer = merchant.post_bytes("/v3/payments/request", raw);
        assert_eq!(code(&answer), "2102", "{raw:?}");
    }
    assert_eq!(
        code(&merchant.post_bytes("/v3/payments/1/confirm", b"{")),
        "2102"
    );
    assert_eq!(
        code(&merchant.post_bytes("/v3/payments/1/refund", b"oops")),
        "2102"
    );
}

#[test]
fn package_sums_that_differ_from_the_amount_are_1124() {
    let merchant = Merchant::new();
    let mut mismatched = request_body("order-sum", 100, json!({}));
    mismatched["amount"] = json!(120);
    assert_eq!(
        code(&merchant.post("/v3/payments/request", &mismatched)),
        "1124"
    );
    // Nothing was reserved: the orderId is still free.
    assert_eq!(
        code(&merchant.post(
            "/v3/payments/request",
            &request_body("order-sum", 100, json!({}))
        )),
        "0000"
    );
}

#[test]
fn missing_or_invalid_parameters_are_2101() {
    let merchant = Merchant::new();

    let mut no_cancel = request_body("order-cancel", 100, json!({}));
    no_cancel["redirectUrls"] = json!({"confirmUrl": "https://shop.example/confirm"});
    assert_eq!(
        code(&merchant.post("/v3/payments/request", &no_cancel)),
        "2101"
    );

    let mut overflowing = request_body("order-big", 100, json!({}));
    overflowing["amount"] = json!(9_223_372_036_854_775_807_i64);
    overflowing["packages"][0]["products"][0]["quantity"] = json!(2);
    overflowing["packages"][0]["products"][0]["price"] = json!(9_223_372_036_854_775_807_i64);
    assert_eq!(
        code(&merchant.post("/v3/payments/request", &overflowing)),
        "2101"
    );

    let confirm = merchant.post_bytes("/v3/payments/1/confirm", br#"{"currency":"TWD"}"#);
    assert_eq!(code(&confirm), "2101");
    let huge = merchant.post_bytes(
        "/v3/payments/1/confirm",
        br#"{"amount":1e400,"currency":"TWD"}"#,
    );
    assert!(["2101", "2102"].contains(&code(&huge)), "{huge}");
}

#[test]
fn unsupported_currency_is_1178() {
    let merchant = Merchant::new();
    let mut body = request_body("order-eur", 100, json!({}));
    body["currency"] = json!("EUR");
    assert_eq!(code(&merchant.post("/v3/payments/request", &body)), "1178");
}

#[test]
fn details_of_more_than_100_transactions_is_1177() {
    let merchant = Merchant::new();
    let query = (0..101)
        .map(|n| format!("transactionId={}", 2_021_121_600_698_709_710_u64 + n))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(code(&merchant.details(&query)), "1177");
    assert_eq!(code(&merchant.details("")), "2101");
}

#[test]
fn details_take_repeated_ids_and_order_ids_without_duplicates() {
    let merchant = Merchant::new();
    let first = merchant.paid("order-a", 10);
    let second = merchant.paid("order-b", 20);
    let details = merchant.details(&format!(
        "transactionId={first}&transactionId={second}&orderId=order-a&fields=TRANSACTION"
    ));
    let info = details["info"].as_array().expect("a list");
    assert_eq!(info.len(), 2, "{details}");
    assert_eq!(info[0]["transactionId"], first);
    assert_eq!(info[1]["transactionId"], second);
    assert!(info[0].get("packages").is_none());

    let order_only = merchant.details("orderId=order-b&fields=ORDER");
    assert_eq!(order_only["info"][0]["packages"][0]["id"], "package-1");
    assert!(order_only["info"][0].get("payInfo").is_none());
}

#[test]
fn preapproved_payments_with_a_reg_key() {
    let merchant = Merchant::new();
    let id = merchant.request(
        "order-pre",
        100,
        json!({"payment": {"payType": "PREAPPROVED"}}),
    );
    let confirmed = merchant.confirm(id, 100);
    assert_eq!(code(&confirmed), "0000", "{confirmed}");
    assert_eq!(confirmed["info"]["payInfo"][0]["method"], "CREDIT_CARD");
    let reg_key = confirmed["info"]["regKey"]
        .as_str()
        .expect("a regKey")
        .to_string();
    assert_eq!(reg_key.len(), 15);
    assert!(
        reg_key.bytes().all(|byte| byte.is_ascii_alphanumeric()),
        "{reg_key}"
    );

    let base = format!("/v3/payments/preapprovedPay/{reg_key}");
    assert_eq!(code(&merchant.get(&format!("{base}/check"), "")), "0000");
    assert_eq!(
        code(&merchant.get(&format!("{base}/check"), "creditCardAuth=true")),
        "0000"
    );

    let pay = |order_id: &str, capture: bool| {
        merchant.post(
            &format!("{base}/payment"),
            &json!({"productName": "monthly", "amount": 300, "currency": "TWD", "orderId": order_id, "capture": capture}),
        )
    };
    let paid = pay("order-pre-1", true);
    assert_eq!(code(&paid), "0000", "{paid}");
    let paid_id = transaction_id(&paid["info"]);
    assert!(paid["info"]["transactionDate"].is_string());
    assert_eq!(
        code(&merchant.refund(paid_id, r#"{"refundAmount":100}"#)),
        "0000"
    );
    assert_eq!(code(&pay("order-pre-1", true)), "1172");

    let authorised = transaction_id(&pay("order-pre-2", false)["info"]);
    assert_eq!(code(&merchant.capture(authorised, 300)), "0000");

    let expired = merchant.post_bytes(&format!("{base}/expire"), b"");
    assert_eq!(code(&expired), "0000");
    assert_eq!(code(&merchant.get(&format!("{base}/check"), "")), "1193");
    assert_eq!(code(&pay("order-pre-3", true)), "1193");
    assert_eq!(
        code(&merchant.post_bytes(&format!("{base}/expire"), b"")),
        "1193"
    );
}

#[test]
fn unknown_reg_keys_are_1190() {
    let merchant = Merchant::new();
    let base = "/v3/payments/preapprovedPay/RK9E5H1MZQ8ABCD";
    assert_eq!(code(&merchant.get(&format!("{base}/check"), "")), "1190");
    assert_eq!(
        code(&merchant.post_bytes(&format!("{base}/expire"), b"")),
        "1190"
    );
    let pay = merchant.post(
        &format!("{base}/payment"),
        &json!({"productName": "x", "amount": 1, "currency": "TWD", "orderId": "o"}),
    );
    assert_eq!(code(&pay), "1190");
    // A normal payment issues no regKey.
    let id = merchant.paid("order-normal", 5);
    assert!(merchant.details(&format!("transactionId={id}"))["info"][0]
        .get("regKey")
        .is_none());
}

#[test]
fn forged_credentials_are_1106() {
    let merchant = Merchant::new();
    let path = "/v3/payments/request";
    let body = request_body("order-forged", 100, json!({}))
        .to_string()
        .into_bytes();
    let good = Merchant::v3_headers(path, &body);

    let mut wrong_signature = good.clone();
    wrong_signature.insert(
        "X-LINE-Authorization",
        HeaderValue::from_static("07cnOfuso3B3HFlVXKMM4vlF0/yprYM8TmAKhG7ZROM="),
    );
    let mut wrong_nonce = good.clone();
    wrong_nonce.insert(
        "X-LINE-Authorization-Nonce",
        HeaderValue::from_static("another-nonce"),
    );
    let mut wrong_channel = good.clone();
    wrong_channel.insert("X-LINE-ChannelId", HeaderValue::from_static("1234567891"));
    let mut no_nonce = good.clone();
    no_nonce.remove("X-LINE-Authorization-Nonce");

    for (name, headers) in [
        ("signature", &wrong_signature),
        ("nonce", &wrong_nonce),
        ("channel", &wrong_channel),
        ("no nonce", &no_nonce),
    ] {
        let answer = json_of(&merchant.call(Method::POST, path, None, headers, &body));
        assert_eq!(code(&answer), "1106", "{name}: {answer}");
        let message = answer["returnMessage"].as_str().expect("message");
        assert!(
            message.starts_with("Header information error."),
            "{message}"
        );
    }
    // The body is signed byte for byte: re-serialised JSON is another message.
    let spaced = String::from_utf8(body.clone())
        .expect("UTF-8")
        .replace(",\"", ", \"")
        .into_bytes();
    assert_eq!(
        code(&json_of(&merchant.call(
            Method::POST,
            path,
            None,
            &good,
            &spaced
        ))),
        "1106"
    );
    // Nothing was reserved by the refused calls.
    assert_eq!(
        code(&json_of(&merchant.call(
            Method::POST,
            path,
            None,
            &good,
            &body
        ))),
        "0000"
    );
}

#[test]
fn get_signs_the_exact_query_string() {
    let merchant = Merchant::new();
    let id = merchant.paid("order-q", 10);
    let query = format!("transactionId={id}&orderId=order-q");
    let headers = Merchant::v3_headers("/v3/payments", query.as_bytes());
    let ok = json_of(&merchant.call(Method::GET, "/v3/payments", Some(&query), &headers, b""));
    assert_eq!(code(&ok), "0000");
    // Same parameters, other order: other bytes, so the signature no longer fits.
    let reordered = format!("orderId=order-q&transactionId={id}");
    let refused =
        json_of(&merchant.call(Method::GET, "/v3/payments", Some(&reordered), &headers, b""));
    assert_eq!(code(&refused), "1106");
    // A GET body is not part of the signature.
    let with_body =
        json_of(&merchant.call(Method::GET, "/v3/payments", Some(&query), &headers, b"{}"));
    assert_eq!(code(&with_body), "0000");
}

fn v2_headers(secret: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("X-LINE-ChannelId", HeaderValue::from_static(CHANNEL));
    headers.insert("X-LINE-ChannelSecret", HeaderValue::from_static(secret));
    headers.insert(
        "Content-Type",
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    headers
}

#[test]
fn v2_round_trip_with_clear_credentials() {
    let merchant = Merchant::new();
    let headers = v2_headers(SECRET);
    let post = |path: &str, body: &str| {
        json_of(&merchant.call(Method::POST, path, None, &headers, body.as_bytes()))
    };

    let reserve = post(
        "/v2/payments/request",
        r#"{"productName":"TEST 01","amount":360,"currency":"TWD","confirmUrl":"https://shop/confirm","orderId":"gdfgdf454","capture":"true"}"#,
    );
    assert_eq!(code(&reserve), "0000", "{reserve}");
    assert_eq!(reserve["returnMessage"], "success");
    let id = transaction_id(&reserve["info"]);

    // The v2 sample confirms with the amount as a string.
    let confirm = post(
        &format!("/v2/payments/{id}/confirm"),
        r#"{"amount":"360","currency":"TWD"}"#,
    );
    assert_eq!(code(&confirm), "0000", "{confirm}");

    let query = format!("transactionId={id}");
    let details = json_of(&merchant.call(Method::GET, "/v2/payments", Some(&query), &headers, b""));
    assert_eq!(details["info"][0]["productName"], "TEST 01");

    assert_eq!(
        code(&post(&format!("/v2/payments/{id}/refund"), "")),
        "0000"
    );

    let wrong = v2_headers("a917ab6a2367b536f8e5a6e2977e06f5");
    let refused = json_of(&merchant.call(Method::GET, "/v2/payments", Some(&query), &wrong, b""));
    assert_eq!(code(&refused), "1106");
    // v3 HMAC headers do not authenticate a v2 call.
    let v3 = Merchant::v3_headers("/v2/payments", query.as_bytes());
    let refused = json_of(&merchant.call(Method::GET, "/v2/payments", Some(&query), &v3, b""));
    assert_eq!(code(&refused), "1106");
}

#[test]
fn v2_authorisation_list_shows_only_authorisations() {
    let merchant = Merchant::new();
    let authorised = merchant.authorised("order-v2-auth", 10);
    let paid = merchant.paid("order-v2-paid", 10);
    let headers = v2_headers(SECRET);
    let list = |query: String| {
        json_of(&merchant.call(
            Method::GET,
            "/v2/payments/authorizations",
            Some(&query),
            &headers,
            b"",
        ))
    };
    let answer = list(format!("transactionId={authorised}"));
    assert_eq!(answer["info"][0]["payStatus"], "AUTHORIZATION", "{answer}");
    assert_eq!(code(&list(format!("transactionId={paid}"))), "1150");
}

#[test]
fn paths_outside_the_api_are_404_and_every_call_counts() {
    let merchant = Merchant::new();
    let response = merchant.call(
        Method::GET,
        "/v3/payments/request",
        None,
        &HeaderMap::new(),
        b"",
    );
    assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
    assert_eq!(json_of(&response)["error"], "not_found");
    let refused = merchant.call(
        Method::POST,
        "/v3/payments/request",
        None,
        &HeaderMap::new(),
        b"{}",
    );
    assert_eq!(refused.status(), http::StatusCode::OK);
    assert_eq!(code(&json_of(&refused)), "1106");
    assert_eq!(merchant.emulator.calls(), 2);
    // Clones share state and the counter.
    let clone = merchant.emulator.clone();
    clone.handle(&Method::GET, "/", None, &HeaderMap::new(), b"");
    assert_eq!(merchant.emulator.calls(), 3);
}

#[test]
fn debug_output_never_shows_the_secret() {
    let merchant = Merchant::new();
    let shown = format!("{:?}", merchant.emulator);
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(shown.contains(CHANNEL), "{shown}");
}

#[test]
fn the_demo_walkthrough_calls_succeed() {
    // The body `linepay-sidecar demo` prints for curl: no package name, no options.
    let merchant = Merchant::new();
    let body = br#"{"amount":100,"currency":"TWD","orderId":"order-1","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop.example/confirm","cancelUrl":"https://shop.example/cancel"}}"#;
    let answer = merchant.post_bytes("/v3/payments/request", body);
    assert_eq!(code(&answer), "0000", "{answer}");
    let id = transaction_id(&answer["info"]);
    assert_eq!(code(&merchant.confirm(id, 100)), "0000");
    assert_eq!(
        code(&merchant.details(&format!("transactionId={id}"))),
        "0000"
    );
    assert_eq!(code(&merchant.refund(id, r#"{"refundAmount":40}"#)), "0000");
}

mod channels;
