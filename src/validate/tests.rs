//! The rules against LINE Pay's documented cases, and against the emulator: every body
//! the emulator accepts must pass (a property test over generated valid bodies), and
//! each of the mistakes the rules exist for must be refused by both.
//!
//! The emulator is driven through its library (`Emulator::handle`), with calls signed by
//! the sidecar's own signer, exactly as the proxy would send them.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::secret::Secret;
use crate::sign::{self, Signer};
use http::{HeaderMap, HeaderValue, Method};
use linepay_emulator::{Emulator, EmulatorConfig};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

const CHANNEL_ID: &str = "1234567890";
const SECRET: &str = "prevalidation-test-secret";

fn findings(template: &str, body: &Value) -> Vec<Finding> {
    check(table_for(template).unwrap(), body.to_string().as_bytes())
}

fn messages(template: &str, body: &Value) -> Vec<String> {
    findings(template, body)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn request_body() -> Value {
    json!({
        "amount": 250,
        "currency": "TWD",
        "orderId": "order-1",
        "packages": [{
            "id": "p1", "amount": 200, "userFee": 20, "name": "box",
            "products": [
                {"name": "pen", "quantity": 2, "price": 50},
                {"name": "ink", "quantity": 1, "price": 100}
            ]
        }],
        "redirectUrls": {"confirmUrl": "https://shop/confirm", "cancelUrl": "https://shop/cancel"},
        "options": {"shipping": {"feeAmount": 30}}
    })
}

const REQUEST: &str = "/v3/payments/request";
const CONFIRM: &str = "/v3/payments/{transactionId}/confirm";
const REFUND: &str = "/v3/payments/{transactionId}/refund";

#[test]
fn a_documented_request_passes() {
    assert_eq!(messages(REQUEST, &request_body()), Vec::<String>::new());
    assert_eq!(
        messages("/v4/payments/request", &request_body()),
        Vec::<String>::new()
    );
}

#[test]
fn an_extra_top_level_key_is_named_with_2102() {
    let mut body = request_body();
    body["userId"] = json!(42);
    assert_eq!(
        messages(REQUEST, &body),
        ["$.userId: not a LINE Pay field (LINE Pay would answer 2102)"]
    );
}

#[test]
fn nested_unknown_keys_are_named_with_their_path() {
    let mut body = request_body();
    body["packages"][0]["products"][1]["sku"] = json!("X1");
    body["redirectUrls"]["returnUrl"] = json!("https://shop/");
    assert_eq!(
        messages(REQUEST, &body),
        [
            "$.packages[0].products[1].sku: not a LINE Pay field (LINE Pay would answer 2102)",
            "$.redirectUrls.returnUrl: not a LINE Pay field (LINE Pay would answer 2102)",
        ]
    );
}

#[test]
fn package_sum_mismatch_is_1124() {
    let mut body = request_body();
    body["amount"] = json!(260);
    assert_eq!(
        messages(REQUEST, &body),
        ["$.amount: 260 is not the sum of packages[].amount + packages[].userFee + options.shipping.feeAmount (250) (LINE Pay would answer 1124)"]
    );
    let mut body = request_body();
    body["packages"][0]["products"][0]["price"] = json!(49);
    assert_eq!(
        messages(REQUEST, &body),
        ["$.packages[0].amount: 200 is not the sum of products[].quantity × price (198) (LINE Pay would answer 1124)"]
    );
}

#[test]
fn a_float_amount_in_a_currency_without_minor_units_is_1124() {
    for currency in ["TWD", "JPY"] {
        let mut body = request_body();
        body["currency"] = json!(currency);
        body["amount"] = json!(250.5);
        let found = findings(REQUEST, &body);
        assert_eq!(found[0].path, "$.amount");
        assert_eq!(found[0].rule, Rule::WholeAmount);
        assert_eq!(found[0].code, "1124");
    }
    // Written as a float, even when its value is whole.
    let text = request_body()
        .to_string()
        .replace("\"amount\":250", "\"amount\":250.0");
    let found = check(table_for(REQUEST).unwrap(), text.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule, Rule::WholeAmount);
}

#[test]
fn thb_and_usd_take_two_decimals_and_sums_stay_exact() {
    let body = json!({
        "amount": 0.3, "currency": "USD", "orderId": "o",
        "packages": [{"id": "p", "amount": 0.3, "products": [
            {"name": "a", "quantity": 1, "price": 0.1},
            {"name": "b", "quantity": 2, "price": 0.1}
        ]}],
        "redirectUrls": {"confirmUrl": "https://s/c", "cancelUrl": "https://s/x"}
    });
    // 0.1 + 2 × 0.1 is 0.30000000000000004 in floating point: the sums are in cents.
    assert_eq!(messages(REQUEST, &body), Vec::<String>::new());
    let mut body = body;
    body["currency"] = json!("THB");
    body["packages"][0]["products"][0]["price"] = json!(0.105);
    let found = findings(REQUEST, &body);
    assert!(
        found.iter().any(|f| f.rule == Rule::Scale
            && f.path == "$.packages[0].products[0].price"
            && f.code == "1124"),
        "{found:?}"
    );
}

#[test]
fn a_missing_confirm_url_and_quantity_are_required() {
    let mut body = request_body();
    body["redirectUrls"]
        .as_object_mut()
        .unwrap()
        .remove("confirmUrl");
    body["packages"][0]["products"][0]
        .as_object_mut()
        .unwrap()
        .remove("quantity");
    let found = messages(REQUEST, &body);
    assert!(
        found.contains(
            &"$.redirectUrls.confirmUrl: required (LINE Pay would answer 2101)".to_owned()
        ),
        "{found:?}"
    );
    assert!(
        found.contains(
            &"$.packages[0].products[0].quantity: required (LINE Pay would answer 2101)".to_owned()
        ),
        "{found:?}"
    );
}

#[test]
fn types_lengths_values_and_currencies_are_checked() {
    let mut body = request_body();
    body["orderId"] = json!("o".repeat(101));
    body["currency"] = json!("EUR");
    body["packages"][0]["products"][0]["quantity"] = json!(0);
    body["options"]["payment"] = json!({"capture": "false", "payType": "SOMETIMES"});
    let found: Vec<(String, Rule, &str)> = findings(REQUEST, &body)
        .into_iter()
        .map(|f| (f.path, f.rule, f.code))
        .collect();
    for expected in [
        ("$.orderId".to_owned(), Rule::Length, "2101"),
        ("$.currency".to_owned(), Rule::Currency, "1178"),
        (
            "$.packages[0].products[0].quantity".to_owned(),
            Rule::Minimum,
            "2101",
        ),
        ("$.options.payment.capture".to_owned(), Rule::Type, "2101"),
        ("$.options.payment.payType".to_owned(), Rule::Value, "2101"),
    ] {
        assert!(found.contains(&expected), "{expected:?} not in {found:?}");
    }
}

#[test]
fn the_body_must_be_an_object_and_findings_are_capped() {
    let found = check(table_for(REQUEST).unwrap(), b"[1,2]");
    assert_eq!(found[0].rule, Rule::NotObject);
    assert_eq!(found[0].code, "2102");
    let mut body = request_body();
    for n in 0..50 {
        body[format!("extra{n}")] = json!(n);
    }
    assert_eq!(findings(REQUEST, &body).len(), schema::MAX_FINDINGS);
}

#[test]
fn confirm_capture_refund_void_and_preapproved_have_their_own_tables() {
    let confirm = "/v3/payments/{transactionId}/confirm";
    assert!(findings(confirm, &json!({"amount": 100, "currency": "TWD"})).is_empty());
    assert_eq!(
        messages(
            confirm,
            &json!({"amount": 100, "currency": "TWD", "transactionId": 1})
        ),
        ["$.transactionId: not a LINE Pay field (LINE Pay would answer 2102)"]
    );
    assert_eq!(
        messages(confirm, &json!({"amount": 0, "currency": "TWD"})),
        ["$.amount: must be above 0 (LINE Pay would answer 1183)"]
    );
    let capture = "/v4/payments/authorizations/{transactionId}/capture";
    assert_eq!(
        findings(capture, &json!({"amount": 1.5, "currency": "JPY"}))[0].rule,
        Rule::WholeAmount
    );
    let refund = table_for("/v3/payments/{transactionId}/refund").unwrap();
    assert!(check(refund, b"").is_empty());
    assert!(check(refund, b"{}").is_empty());
    assert!(check(refund, br#"{"refundAmount":40}"#).is_empty());
    assert_eq!(
        check(refund, br#"{"refundAmount":-1}"#)[0].rule,
        Rule::Minimum
    );
    let void = table_for("/v3/payments/authorizations/{transactionId}/void").unwrap();
    assert!(check(void, b"").is_empty());
    assert_eq!(
        check(void, br#"{"reason":"x"}"#)[0].rule,
        Rule::UnknownField
    );
    let pay = "/v3/payments/preapprovedPay/{regKey}/payment";
    assert!(findings(
        pay,
        &json!({"productName": "p", "amount": 10, "currency": "TWD", "orderId": "o"})
    )
    .is_empty());
    assert_eq!(
        messages(
            pay,
            &json!({"amount": 10, "currency": "TWD", "orderId": "o"})
        ),
        ["$.productName: required (LINE Pay would answer 2101)"]
    );
}

#[test]
fn offline_tables_serve_v4_routes_whatever_their_parameter_is_called() {
    let pay = "/v4/payments/oneTimeKeys/pay";
    let body = json!({"productName": "coffee", "amount": 120, "currency": "TWD",
        "orderId": "pos-1", "oneTimeKey": "123456789012345678", "capture": true,
        "extras": {"branchName": "Taipei"}});
    assert!(findings(pay, &body).is_empty());
    let mut wrong = body.clone();
    wrong["oneTimeKey"] = json!("1".repeat(20));
    wrong["amount"] = json!(120.5);
    let rules: Vec<Rule> = findings(pay, &wrong).iter().map(|f| f.rule).collect();
    assert_eq!(rules, [Rule::WholeAmount, Rule::Length]);
    for template in [
        "/v4/payments/orders/{orderId}/capture",
        "/v4/payments/orders/{id}/capture",
    ] {
        let table = table_for(template).unwrap();
        assert_eq!(table.family, "capture");
        assert!(check(table, br#"{"amount":1,"currency":"THB"}"#).is_empty());
    }
    assert!(check(
        table_for("/v4/payments/orders/{orderId}/void").unwrap(),
        b""
    )
    .is_empty());
    assert!(check(
        table_for("/v4/payments/orders/{orderId}/refund").unwrap(),
        br#"{"refundAmount":5}"#
    )
    .is_empty());
}

#[test]
fn routes_without_rules_and_other_versions_have_no_table() {
    assert!(table_for("/v3/payments").is_none());
    assert!(table_for("/v3/payments/requests/{transactionId}/check").is_none());
    assert!(table_for("/v2/payments/request").is_none());
    assert!(table_for("/v4/payments/request/extra").is_none());
}

#[test]
fn modes_are_per_route_with_a_default() {
    let config = PrevalidationConfig {
        mode: Mode::Warn,
        routes: [
            ("payments/request".to_owned(), Mode::Enforce),
            ("payments/{transactionId}/refund".to_owned(), Mode::Off),
        ]
        .into_iter()
        .collect(),
    };
    assert_eq!(
        config.for_template(REQUEST).map(|(mode, _)| mode),
        Some(Mode::Enforce)
    );
    assert_eq!(
        config
            .for_template("/v4/payments/{transactionId}/confirm")
            .map(|(mode, _)| mode),
        Some(Mode::Warn)
    );
    assert!(config
        .for_template("/v3/payments/{transactionId}/refund")
        .is_none());
    assert!(config.for_template("/v3/payments").is_none());
}

#[test]
fn every_table_key_is_unique_and_cites_its_source() {
    for (index, table) in TABLES.iter().enumerate() {
        assert!(!table.reference.is_empty(), "{}", table.key);
        assert!(
            TABLES[index + 1..]
                .iter()
                .all(|other| !same_shape(other.key, table.key)),
            "{} twice",
            table.key
        );
    }
}

// ---------------------------------------------------------------------------------------
// Against the emulator.

fn emulator() -> Emulator {
    emulator_in("TWD")
}

/// An emulated channel whose one currency is `currency` (LINE Pay answers 1178 to any
/// other), so that bodies in every currency can be tried.
fn emulator_in(currency: &str) -> Emulator {
    Emulator::new(EmulatorConfig {
        currency: currency
            .parse()
            .unwrap_or_else(|_| panic!("the emulator takes no {currency}")),
        ..EmulatorConfig::new(CHANNEL_ID, linepay_emulator::Secret::new(SECRET))
    })
}

/// Sends a signed POST to the emulator as the proxy would; returns LINE Pay's answer.
fn post(emulator: &Emulator, path: &str, body: &[u8]) -> Value {
    let signer = Signer::new(&Secret::new(SECRET));
    let nonce = sign::new_nonce();
    let mut headers = HeaderMap::new();
    headers.insert("x-line-channelid", HeaderValue::from_static(CHANNEL_ID));
    headers.insert(
        "x-line-authorization-nonce",
        HeaderValue::from_str(&nonce).unwrap(),
    );
    headers.insert(
        "x-line-authorization",
        HeaderValue::from_str(&signer.signature(path, body, &nonce)).unwrap(),
    );
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let response = emulator.handle(&Method::POST, path, None, &headers, body);
    serde_json::from_slice(response.body()).unwrap()
}

fn return_code(answer: &Value) -> &str {
    answer["returnCode"].as_str().unwrap_or("none")
}

static ORDERS: AtomicU64 = AtomicU64::new(0);

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[A-Za-z0-9 _.-]{{1,{max}}}")).unwrap()
}

fn product() -> impl Strategy<Value = Value> {
    (
        text(40),
        1u64..6,
        0u64..5_000,
        proptest::option::of(text(50)),
        proptest::option::of(0u64..9_000),
        any::<bool>(),
    )
        .prop_map(|(name, quantity, price, id, original, image)| {
            let mut product = json!({"name": name, "quantity": quantity, "price": price});
            if let Some(id) = id {
                product["id"] = json!(id);
            }
            if let Some(original) = original {
                product["originalPrice"] = json!(original);
            }
            if image {
                product["imageUrl"] = json!("https://shop.example/image.png");
            }
            product
        })
}

fn package() -> impl Strategy<Value = Value> {
    (
        text(50),
        proptest::collection::vec(product(), 1..4),
        proptest::option::of(0u64..100),
        proptest::option::of(text(100)),
    )
        .prop_map(|(id, products, fee, name)| {
            let amount: u64 = products
                .iter()
                .map(|p| p["quantity"].as_u64().unwrap() * p["price"].as_u64().unwrap())
                .sum();
            let mut package = json!({"id": id, "amount": amount, "products": products});
            if let Some(fee) = fee {
                package["userFee"] = json!(fee);
            }
            if let Some(name) = name {
                package["name"] = json!(name);
            }
            package
        })
}

/// Documented request bodies that add up, in every currency the emulator takes, with
/// the optional members present or not.
fn valid_request() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just("TWD"), Just("JPY"), Just("THB"), Just("USD")],
        proptest::collection::vec(package(), 1..4),
        proptest::option::of(0u64..500),
        proptest::option::of((any::<bool>(), any::<bool>())),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(currency, packages, shipping, payment, display, extra)| {
            let mut amount: u64 = packages
                .iter()
                .map(|p| p["amount"].as_u64().unwrap() + p["userFee"].as_u64().unwrap_or(0))
                .sum();
            let mut options = serde_json::Map::new();
            if let Some(fee) = shipping {
                amount += fee;
                options.insert("shipping".into(), json!({"feeAmount": fee}));
            }
            if let Some((capture, preapproved)) = payment {
                let pay_type = if preapproved { "PREAPPROVED" } else { "NORMAL" };
                options.insert("payment".into(), json!({"capture": capture, "payType": pay_type}));
            }
            if display {
                options.insert("display".into(), json!({"locale": "zh_TW", "checkConfirmUrlBrowser": false}));
            }
            if extra {
                options.insert("extra".into(), json!({"branchName": "Main", "branchId": "B-1"}));
            }
            // Zero-priced carts are legal per product, but not as a payment.
            if amount == 0 {
                amount = 1;
                options.insert("shipping".into(), json!({"feeAmount": shipping.unwrap_or(0) + 1}));
            }
            let order = ORDERS.fetch_add(1, Ordering::Relaxed);
            let mut body = json!({
                "amount": amount,
                "currency": currency,
                "orderId": format!("prop-{order}"),
                "packages": packages,
                "redirectUrls": {"confirmUrl": "https://shop.example/confirm", "cancelUrl": "https://shop.example/cancel"},
            });
            if !options.is_empty() {
                body["options"] = Value::Object(options);
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Every generated body the emulator accepts passes pre-validation, and so do the
    /// confirm and refund that follow it.
    #[test]
    fn every_body_the_emulator_accepts_passes(body in valid_request(), refund in 1u64..50) {
        let emulator = emulator_in(body["currency"].as_str().unwrap_or("TWD"));
        let bytes = body.to_string();
        let answer = post(&emulator, REQUEST, bytes.as_bytes());
        let refused = format!("the emulator refused a generated body {bytes}: {answer}");
        prop_assert_eq!(return_code(&answer), "0000", "{}", refused);
        let found = findings(REQUEST, &body);
        prop_assert!(found.is_empty(), "emulator accepted {bytes}; pre-validation found {found:?}");

        let id = answer["info"]["transactionId"].as_u64().unwrap();
        let confirm = json!({"amount": body["amount"], "currency": body["currency"]});
        let path = format!("/v3/payments/{id}/confirm");
        let answer = post(&emulator, &path, confirm.to_string().as_bytes());
        prop_assert_eq!(return_code(&answer), "0000", "{}", answer);
        prop_assert!(findings(CONFIRM, &confirm).is_empty());

        let refund = json!({"refundAmount": refund.min(body["amount"].as_u64().unwrap())});
        let is_captured = body["options"]["payment"]["capture"].as_bool().unwrap_or(true);
        if is_captured {
            let path = format!("/v3/payments/{id}/refund");
            let answer = post(&emulator, &path, refund.to_string().as_bytes());
            prop_assert_eq!(return_code(&answer), "0000", "{}", answer);
            prop_assert!(findings(REFUND, &refund).is_empty());
        }
    }
}

/// The mistakes pre-validation exists for are refused by the emulator too, so neither
/// is stricter than the other on them.
#[test]
fn each_mistake_is_refused_by_both() {
    let emulator = emulator();
    type Mistake = (&'static str, fn(&mut Value));
    let mistakes: [Mistake; 5] = [
        ("extra top-level key", |b| b["userId"] = json!(7)),
        ("package sum", |b| b["amount"] = json!(251)),
        ("float TWD amount", |b| b["amount"] = json!(250.5)),
        ("missing confirmUrl", |b| {
            b["redirectUrls"]
                .as_object_mut()
                .unwrap()
                .remove("confirmUrl");
        }),
        ("missing quantity", |b| {
            b["packages"][0]["products"][0]
                .as_object_mut()
                .unwrap()
                .remove("quantity");
        }),
    ];
    for (name, mistake) in mistakes {
        let mut body = request_body();
        body["orderId"] = json!(format!("mistake-{name}"));
        mistake(&mut body);
        let answer = post(&emulator, REQUEST, body.to_string().as_bytes());
        assert_ne!(return_code(&answer), "0000", "{name}: emulator accepted it");
        assert!(
            !findings(REQUEST, &body).is_empty(),
            "{name}: pre-validation passed it"
        );
    }
}

/// The walk reads a borrowed tree, not serde_json's map: a key sent twice still counts
/// with its last value, unknown keys are still named in sorted order once each, an
/// escaped key is named as it decodes, and the currency sets the scale wherever it sits.
#[test]
fn repeated_escaped_and_late_keys_read_as_serde_json_reads_them() {
    let table = table_for(CONFIRM).unwrap();
    let body = br#"{"zz":1,"amount":1.5,"b\u0061d":true,"currency":"USD","zz":2,"currency":"XXX","currency":"JPY"}"#;
    let found: Vec<String> = check(table, body).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "$.bad: not a LINE Pay field (LINE Pay would answer 2102)",
            "$.zz: not a LINE Pay field (LINE Pay would answer 2102)",
            "$.amount: must be a whole number for this currency (no decimal point) (LINE Pay would answer 1124)",
        ]
    );
    let found = check(table, br#"{"currency":"TWD","amount":5,"amount":null}"#);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].path.as_str(), found[0].rule),
        ("$.amount", Rule::Required)
    );
    assert_eq!(
        check(table, br#"{"amount":0.0,"amount":5,"currency":"TWD"}"#),
        []
    );
}

/// Whether serde_json reads `body` as one JSON value, as the proxy's own JSON check does.
fn is_json(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// The proxy skips its JSON check for a body the fast pass passes (`passes`): that
    /// body must be JSON. Generated bodies, cut short or with one byte changed or
    /// inserted anywhere: whatever the fast pass passes, serde_json reads.
    #[test]
    fn a_body_the_fast_pass_passes_is_json(
        body in valid_request(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(&b"\"\\{}[],: 0.-eE\x01\x7fux"[..]),
        edit in 0u8..3,
    ) {
        let table = table_for(REQUEST).unwrap();
        let mut bytes = body.to_string().into_bytes();
        let at = at.index(bytes.len());
        match edit {
            0 => bytes.truncate(at),
            1 => bytes[at] = byte,
            _ => bytes.insert(at, byte),
        }
        prop_assert!(
            !passes(table, &bytes) || is_json(&bytes),
            "passed, not JSON: {}",
            String::from_utf8_lossy(&bytes)
        );
        // And the walk agrees: a body the fast pass passes has no finding.
        prop_assert!(!passes(table, &bytes) || walk(table, &bytes).is_empty());
    }
}

/// What the fast pass refuses to decide, while serde_json's JSON check would read it
/// (or not): never a body that passes and is not JSON.
#[test]
fn the_fast_pass_never_passes_what_is_not_json() {
    let table = table_for(CONFIRM).unwrap();
    let clean = br#"{"amount":5,"currency":"TWD"}"#;
    assert!(passes(table, clean) && is_json(clean));
    for body in [
        &br#"{"amount":5,"currency":"TWD"} x"#[..],
        br#"{"amount":5,"currency":"TWD"}}"#,
        br#"{"amount":5,"currency":"TWD",}"#,
        br#"{"amount":5,,"currency":"TWD"}"#,
        br#"{"amount":05,"currency":"TWD"}"#,
        br#"{"amount":5,"currency":"TW\D"}"#,
        br#"{"amount":5,"currency":"TWD""#,
        b"{\"amount\":5,\"currency\":\"TWD\"}\x00",
        b"{\"amount\":5,\"currency\":\"TWD\xff\"}",
        br#"{'amount':5,"currency":"TWD"}"#,
        br#"{"amount":5 "currency":"TWD"}"#,
        b"",
    ] {
        assert!(!passes(table, body), "{}", String::from_utf8_lossy(body));
    }
    // Stricter than the JSON check, never looser: these are JSON, and not passed.
    for body in [
        &br#"{"amount":5,"currency":"TWD","x":"\ud800"}"#[..],
        br#"{"amount":1e400,"currency":"TWD"}"#,
        br#"{"amount":5,"currency":"\ud800"}"#,
    ] {
        assert!(
            is_json(body) && !passes(table, body),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

/// JSON to the proxy's own check (`IgnoredAny`) that the walk's tree cannot hold: the
/// walk names it instead of finding nothing, so `enforce` refuses it rather than
/// forwarding a body no rule was checked against (a negative amount beside a `1e400`).
#[test]
fn a_body_the_walk_cannot_read_is_a_finding_not_a_pass() {
    let confirm = table_for(CONFIRM).unwrap();
    let request = table_for(REQUEST).unwrap();
    let deep = format!(
        r#"{{"amount":-5,"currency":"XXX","options":{{"account":{{"a":{}1{}}}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    for (table, body) in [
        (
            confirm,
            &br#"{"amount":-5,"currency":"XXX","x":"\ud800"}"#[..],
        ),
        (confirm, br#"{"amount":1e400,"currency":"TWD"}"#),
        (confirm, br#"{"amount":-5,"currency":"TWD","x":[1e999]}"#),
        (confirm, br#"{"amount":5,"currency":"\udc00"}"#),
        (request, deep.as_bytes()),
    ] {
        let text = String::from_utf8_lossy(body);
        assert!(is_json(body) && !passes(table, body), "{text}");
        let findings = walk(table, body);
        assert_eq!(findings.len(), 1, "{text}: {findings:?}");
        assert_eq!(
            (
                findings[0].path.as_str(),
                findings[0].rule,
                findings[0].code
            ),
            ("$", Rule::Type, "2102"),
            "{text}"
        );
        assert!(
            findings[0]
                .detail
                .starts_with("not JSON the rules can read ("),
            "{}",
            findings[0].detail
        );
        assert_eq!(check(table, body), findings, "{text}");
    }
}
