//! The payment page through [`Emulator::handle`]: what a browser would GET and POST,
//! and what the shop's signed calls (status check, confirm) see before and after.

use super::*;
use crate::auth::sign_for_test;
use crate::{EmulatorConfig, Secret};
use http::Method as HttpMethod;
use serde_json::json;
use std::time::Duration;

const SECRET: &str = "page-test-secret";
const CHANNEL: &str = "1234567890";

struct Shop {
    emulator: Emulator,
    nonce: std::cell::Cell<u32>,
}

impl Shop {
    fn new(wait_for_buyer: bool) -> Shop {
        Shop {
            emulator: Emulator::new(EmulatorConfig {
                wait_for_buyer,
                ..EmulatorConfig::new(CHANNEL, Secret::new(SECRET))
            }),
            nonce: std::cell::Cell::new(0),
        }
    }

    fn signed(&self, method: HttpMethod, path: &str, query: Option<&str>, body: &[u8]) -> Value {
        self.nonce.set(self.nonce.get() + 1);
        let nonce = format!("nonce-{}", self.nonce.get());
        let payload = if method == HttpMethod::GET {
            query.unwrap_or("").as_bytes()
        } else {
            body
        };
        let mut headers = HeaderMap::new();
        headers.insert("X-LINE-ChannelId", HeaderValue::from_static(CHANNEL));
        headers.insert(
            "X-LINE-Authorization-Nonce",
            HeaderValue::from_str(&nonce).expect("ASCII"),
        );
        headers.insert(
            "X-LINE-Authorization",
            HeaderValue::from_str(&sign_for_test(SECRET.as_bytes(), path, payload, &nonce))
                .expect("Base64"),
        );
        // v2 carries the secret in clear instead.
        headers.insert("X-LINE-ChannelSecret", HeaderValue::from_static(SECRET));
        let response = self.emulator.handle(&method, path, query, &headers, body);
        serde_json::from_slice(response.body()).expect("a JSON answer")
    }

    /// Reserves a payment; returns (transactionId, the page's path).
    fn request(&self, version: &str, body: &Value) -> (u64, String) {
        let answer = self.signed(
            HttpMethod::POST,
            &format!("/{version}/payments/request"),
            None,
            body.to_string().as_bytes(),
        );
        assert_eq!(answer["returnCode"], "0000", "{answer}");
        let id = answer["info"]["transactionId"].as_u64().expect("an id");
        let web = answer["info"]["paymentUrl"]["web"].as_str().expect("a URL");
        let path = web
            .strip_prefix(UNSERVED)
            .unwrap_or_else(|| panic!("{web} is not on the emulator"));
        (id, path.to_owned())
    }

    fn check(&self, id: u64) -> String {
        let answer = self.signed(
            HttpMethod::GET,
            &format!("/v3/payments/requests/{id}/check"),
            None,
            b"",
        );
        code(&answer)
    }

    fn confirm(&self, version: &str, id: u64, amount: i64) -> Value {
        self.signed(
            HttpMethod::POST,
            &format!("/{version}/payments/{id}/confirm"),
            None,
            json!({"amount": amount, "currency": "TWD"})
                .to_string()
                .as_bytes(),
        )
    }

    fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .emulator
            .handle(&HttpMethod::GET, path, None, &HeaderMap::new(), b"");
        (response.status(), text(&response))
    }

    fn post_form(&self, path: &str, form: &str) -> Response<Bytes> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self.emulator
            .handle(&HttpMethod::POST, path, None, &headers, form.as_bytes())
    }

    /// The token in the page's form.
    fn token(&self, path: &str) -> String {
        let (_, page) = self.page(path);
        let marker = "name=\"token\" value=\"";
        let start = page.find(marker).expect("the page has a form") + marker.len();
        page[start..]
            .split('"')
            .next()
            .expect("a closing quote")
            .to_owned()
    }
}

const UNSERVED: &str = "http://linepay-emulator.invalid";

fn code(answer: &Value) -> String {
    answer["returnCode"].as_str().unwrap_or("none").to_owned()
}

fn text(response: &Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

fn location(response: &Response<Bytes>) -> Option<String> {
    response
        .headers()
        .get(header::LOCATION)
        .map(|value| value.to_str().expect("ASCII").to_owned())
}

fn request_body(order_id: &str, redirect: Value, payment: Value) -> Value {
    json!({
        "amount": 300,
        "currency": "TWD",
        "orderId": order_id,
        "packages": [{
            "id": "pkg-1",
            "name": "Tea <shop> & \"friends\"",
            "amount": 300,
            "products": [
                {"name": "<script>alert('x')</script>", "quantity": 2, "price": 100},
                {"name": "Cup", "quantity": 1, "price": 100}
            ]
        }],
        "redirectUrls": redirect,
        "options": {"payment": payment}
    })
}

fn shop_urls() -> Value {
    json!({
        "confirmUrl": "http://127.0.0.1:8000/confirm?cart=7",
        "cancelUrl": "http://127.0.0.1:8000/cancel"
    })
}

#[test]
fn the_page_shows_the_order_with_everything_the_merchant_sent_escaped() {
    let shop = Shop::new(true);
    let (_, path) = shop.request("v3", &request_body("o-1", shop_urls(), json!({})));
    let (status, page) = shop.page(&path);
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("300 TWD"), "{page}");
    assert!(page.contains("o-1"), "{page}");
    assert!(
        page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; × 2 at 100 TWD"),
        "{page}"
    );
    assert!(
        page.contains("Tea &lt;shop&gt; &amp; &quot;friends&quot;"),
        "{page}"
    );
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("Cup × 1 at 100 TWD"), "{page}");
    // A choice of method, each with its label; Approve before Cancel.
    assert!(page.contains("<label for=\"method-balance\">"), "{page}");
    assert!(
        page.contains("<label for=\"method-credit-card\">"),
        "{page}"
    );
    let approve = page.find("id=\"approve\"").expect("Approve");
    let cancel = page.find("id=\"cancel\"").expect("Cancel");
    assert!(approve < cancel);
    assert!(page.contains("method=\"post\""), "{page}");
}

#[test]
fn approving_sends_the_browser_to_confirm_url_and_confirm_then_pays_with_the_chosen_method() {
    let shop = Shop::new(true);
    let (id, path) = shop.request("v3", &request_body("o-2", shop_urls(), json!({})));
    assert_eq!(shop.check(id), "0000", "waiting for the buyer");
    assert_eq!(code(&shop.confirm("v3", id, 300)), "1169");

    let token = shop.token(&path);
    let response = shop.post_form(
        &path,
        &format!("token={token}&method=CREDIT_CARD&action=approve"),
    );
    assert_eq!(
        response.status(),
        StatusCode::SEE_OTHER,
        "{}",
        text(&response)
    );
    assert_eq!(
        location(&response).as_deref(),
        Some(
            format!("http://127.0.0.1:8000/confirm?cart=7&transactionId={id}&orderId=o-2").as_str()
        )
    );
    assert_eq!(shop.check(id), "0110", "approved, not confirmed");

    let confirmed = shop.confirm("v3", id, 300);
    assert_eq!(code(&confirmed), "0000", "{confirmed}");
    assert_eq!(confirmed["info"]["payInfo"][0]["method"], "CREDIT_CARD");
    assert_eq!(shop.check(id), "0123");
    let (_, page) = shop.page(&path);
    assert!(page.contains("already complete"), "{page}");
    let again = shop.post_form(&path, &format!("token={token}&action=cancel"));
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(shop.check(id), "0123");
}

#[test]
fn cancelling_sends_the_browser_to_cancel_url_and_the_payment_is_over() {
    let shop = Shop::new(true);
    let (id, path) = shop.request("v3", &request_body("o-3", shop_urls(), json!({})));
    let token = shop.token(&path);
    let response = shop.post_form(&path, &format!("token={token}&action=cancel"));
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&response).as_deref(),
        Some("http://127.0.0.1:8000/cancel")
    );
    assert_eq!(shop.check(id), "0121");
    assert_eq!(code(&shop.confirm("v3", id, 300)), "1180");
    let (_, page) = shop.page(&path);
    assert!(page.contains("was cancelled"), "{page}");
    assert!(!page.contains("id=\"approve\""), "{page}");
}

#[test]
fn an_expired_payment_says_so_and_takes_no_action() {
    let shop = Shop::new(true);
    let (id, path) = shop.request("v3", &request_body("o-4", shop_urls(), json!({})));
    let token = shop.token(&path);
    shop.emulator.advance_clock(Duration::from_secs(20 * 60));
    let (_, page) = shop.page(&path);
    assert!(page.contains("has expired"), "{page}");
    let response = shop.post_form(
        &path,
        &format!("token={token}&method=BALANCE&action=approve"),
    );
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(location(&response), None);
    assert_eq!(shop.check(id), "0121");
    assert_eq!(code(&shop.confirm("v3", id, 300)), "1180");
}

#[test]
fn only_a_post_of_the_pages_own_form_acts() {
    let shop = Shop::new(true);
    let (id, path) = shop.request("v3", &request_body("o-5", shop_urls(), json!({})));
    let token = shop.token(&path);
    // A forged form (another site's), a GET with the fields, a JSON body.
    let forged = shop.post_form(&path, "token=0123&method=BALANCE&action=approve");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let by_get = shop.emulator.handle(
        &HttpMethod::GET,
        &path,
        Some(&format!("token={token}&method=BALANCE&action=approve")),
        &HeaderMap::new(),
        b"",
    );
    assert_eq!(by_get.status(), StatusCode::OK);
    let mut json_headers = HeaderMap::new();
    json_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let as_json = shop.emulator.handle(
        &HttpMethod::POST,
        &path,
        None,
        &json_headers,
        format!("token={token}&method=BALANCE&action=approve").as_bytes(),
    );
    assert_eq!(as_json.status(), StatusCode::BAD_REQUEST);
    // Another payment's token does not open this one.
    let (_, other) = shop.request("v3", &request_body("o-5b", shop_urls(), json!({})));
    let other_token = shop.token(&other);
    let crossed = shop.post_form(
        &path,
        &format!("token={other_token}&method=BALANCE&action=approve"),
    );
    assert_eq!(crossed.status(), StatusCode::FORBIDDEN);
    assert_eq!(shop.check(id), "0000", "still waiting");
    // A method the page does not offer.
    let odd = shop.post_form(
        &path,
        &format!("token={token}&method=POINTS&action=approve"),
    );
    assert_eq!(odd.status(), StatusCode::BAD_REQUEST);
    assert_eq!(shop.check(id), "0000");
    let unknown = shop.page("/__emulator/pay/ffff");
    assert_eq!(unknown.0, StatusCode::NOT_FOUND);
}

#[test]
fn the_browser_is_sent_only_to_absolute_web_urls_of_the_reservation() {
    let shop = Shop::new(true);
    let urls = json!({"confirmUrl": "javascript:alert(1)", "cancelUrl": "/relative"});
    let (id, path) = shop.request("v3", &request_body("o-6", urls, json!({})));
    let token = shop.token(&path);
    let response = shop.post_form(
        &path,
        &format!("token={token}&method=BALANCE&action=approve"),
    );
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(location(&response), None);
    assert!(text(&response).contains("not an absolute http or https URL"));
    // The approval itself stands: the shop can still confirm.
    assert_eq!(shop.check(id), "0110");
}

#[test]
fn confirm_url_type_none_and_server_keep_the_browser_on_the_page() {
    for kind in ["NONE", "SERVER"] {
        let shop = Shop::new(true);
        let mut urls = shop_urls();
        urls["confirmUrlType"] = json!(kind);
        let (id, path) = shop.request("v3", &request_body("o-7", urls, json!({})));
        let token = shop.token(&path);
        let response = shop.post_form(
            &path,
            &format!("token={token}&method=BALANCE&action=approve"),
        );
        assert_eq!(response.status(), StatusCode::OK, "{kind}");
        assert_eq!(location(&response), None, "{kind}");
        assert_eq!(shop.check(id), "0110", "{kind}");
    }
}

#[test]
fn a_preapproved_payment_offers_only_the_card() {
    let shop = Shop::new(true);
    let (id, path) = shop.request(
        "v3",
        &request_body("o-8", shop_urls(), json!({"payType": "PREAPPROVED"})),
    );
    let (_, page) = shop.page(&path);
    assert!(!page.contains("type=\"radio\""), "{page}");
    let token = shop.token(&path);
    let balance = shop.post_form(
        &path,
        &format!("token={token}&method=BALANCE&action=approve"),
    );
    assert_eq!(balance.status(), StatusCode::BAD_REQUEST);
    let response = shop.post_form(&path, &format!("token={token}&action=approve"));
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let confirmed = shop.confirm("v3", id, 300);
    assert_eq!(confirmed["info"]["payInfo"][0]["method"], "CREDIT_CARD");
}

#[test]
fn without_the_flag_only_buyer_waits_orders_wait_but_every_payment_has_a_page() {
    let shop = Shop::new(false);
    let (at_once, path) = shop.request("v3", &request_body("o-9", shop_urls(), json!({})));
    assert_eq!(shop.check(at_once), "0110");
    assert_eq!(shop.page(&path).0, StatusCode::OK);
    let (waits, _) = shop.request(
        "v3",
        &request_body("o-9-buyer-waits", shop_urls(), json!({})),
    );
    assert_eq!(shop.check(waits), "0000");
}

#[test]
fn v2_pages_show_the_product_name_and_honour_a_missing_cancel_url() {
    let shop = Shop::new(true);
    let body = json!({
        "productName": "<b>Tea</b>", "amount": 100, "currency": "TWD",
        "confirmUrl": "http://127.0.0.1:8000/confirm", "orderId": "v2-1"
    });
    let (id, path) = shop.request("v2", &body);
    let (_, page) = shop.page(&path);
    assert!(page.contains("&lt;b&gt;Tea&lt;/b&gt;"), "{page}");
    let token = shop.token(&path);
    let response = shop.post_form(&path, &format!("token={token}&action=cancel"));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(location(&response), None);
    assert_eq!(shop.check(id), "0121");
}

#[test]
fn v4_answers_carry_the_payment_provider_and_v3_answers_do_not() {
    let shop = Shop::new(false);
    let (v4, _) = shop.request("v4", &request_body("o-10", shop_urls(), json!({})));
    let confirmed = shop.confirm("v4", v4, 300);
    assert_eq!(confirmed["info"]["paymentProvider"], "TSP", "{confirmed}");
    let details = shop.signed(
        HttpMethod::GET,
        "/v4/payments",
        Some(&format!("transactionId={v4}")),
        b"",
    );
    assert_eq!(details["info"][0]["paymentProvider"], "TSP", "{details}");
    let (v3, _) = shop.request("v3", &request_body("o-11", shop_urls(), json!({})));
    let confirmed = shop.confirm("v3", v3, 300);
    assert_eq!(code(&confirmed), "0000");
    assert!(
        confirmed["info"].get("paymentProvider").is_none(),
        "{confirmed}"
    );
}

#[test]
fn ids_are_added_to_the_query_before_the_fragment_and_encoded() {
    assert_eq!(
        with_query(
            "http://s/c",
            &[("transactionId", "1"), ("orderId", "a b&c")]
        ),
        "http://s/c?transactionId=1&orderId=a%20b%26c"
    );
    assert_eq!(
        with_query("http://s/c?x=1#top", &[("orderId", "o")]),
        "http://s/c?x=1&orderId=o#top"
    );
    assert_eq!(with_query("http://s/c?", &[("a", "1")]), "http://s/c?a=1");
}
