//! Cost of pre-validation and of the id rewrite, per call, against the parse they
//! cannot avoid.
//!
//! - `validate/parse_only/<body>`: `serde_json::from_slice::<Value>` of the body: what
//!   the walk paid for its tree before it read a borrowed one (src/validate/node.rs);
//!   kept as the yardstick of the README's before/after ratio.
//! - `validate/request/<body>`: [`validate::findings`] for `POST /v3/payments/request`
//!   (the streaming pass; for a body with a finding, then the parse into the borrowed
//!   tree and the walk of every field against the table, the package and total sums). What the request path adds in `warn` or `enforce` mode; `off` adds
//!   nothing.
//! - `validate/walk/<body>`: the same findings by the walk over the borrowed tree alone,
//!   what `validate/request` cost before the streaming pass (src/validate/stream.rs) that
//!   now decides a clean body without a tree: the before/after ratio in one run.
//! - `ids/quote/<answer>`: [`ids::quote_ids`] on a payment-details answer: what
//!   `ids_as_strings` adds to a call.
//!
//! Bodies: `typical` is the README's one-package, one-product request (~330 B);
//! `cart` has 3 packages of 5 products with every optional field (~2.4 KiB). Each
//! passes (the bench asserts no finding first). Run with `cargo bench --bench validate`;
//! results are in benches/README.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use linepay_sidecar::{ids, validate};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Duration;

const REQUEST: &str = "/v3/payments/request";

fn typical() -> Vec<u8> {
    json!({
        "amount": 100, "currency": "TWD", "orderId": "MKSI_S_20180904_1000001",
        "packages": [{"id": "1", "amount": 100, "products": [{
            "id": "PEN-B-001", "name": "Pen Brown",
            "imageUrl": "https://pay-store.example.com/images/pen_brown.jpg",
            "quantity": 2, "price": 50}]}],
        "redirectUrls": {
            "confirmUrl": "https://pay-store.example.com/order/payment/authorize",
            "cancelUrl": "https://pay-store.example.com/order/payment/cancel"}
    })
    .to_string()
    .into_bytes()
}

fn cart() -> Vec<u8> {
    let packages: Vec<Value> = (0..3)
        .map(|p| {
            let products: Vec<Value> = (0..5)
                .map(|i| {
                    json!({"id": format!("SKU-{p}-{i}"), "name": format!("珍珠奶茶 {i}"),
                    "imageUrl": "https://shop.example/images/tea.png",
                    "quantity": i + 1, "price": 45, "originalPrice": 50})
                })
                .collect();
            json!({"id": format!("pkg-{p}"), "amount": 675, "userFee": 10,
                "name": "Taipei store", "products": products})
        })
        .collect();
    json!({
        "amount": 3 * 685 + 60, "currency": "TWD", "orderId": "order-2024-000123",
        "packages": packages,
        "redirectUrls": {"confirmUrl": "https://shop.example/confirm",
            "cancelUrl": "https://shop.example/cancel", "confirmUrlType": "CLIENT"},
        "options": {"payment": {"capture": true, "payType": "NORMAL"},
            "display": {"locale": "zh_TW"}, "shipping": {"type": "SHIPPING", "feeAmount": 60},
            "extra": {"branchName": "Main", "branchId": "B-1"}}
    })
    .to_string()
    .into_bytes()
}

fn details_answer() -> Vec<u8> {
    br#"{"returnCode":"0000","returnMessage":"Success.","info":[{"transactionId":2021121600698709710,"transactionDate":"2021-12-16T08:17:27Z","transactionType":"PAYMENT","payInfo":[{"method":"CREDIT_CARD","amount":100}],"productName":"Pen Brown","currency":"TWD","orderId":"MKSI_S_20180904_1000001","refundList":[{"refundTransactionId":2021121600698709711,"transactionType":"PAYMENT_REFUND","refundAmount":-40,"refundTransactionDate":"2021-12-16T08:20:01Z"}]}]}"#.to_vec()
}

fn bench(c: &mut Criterion) {
    let bodies = [("typical", typical()), ("cart", cart())];
    let mut group = c.benchmark_group("validate");
    for (name, body) in &bodies {
        assert_eq!(
            validate::findings(REQUEST, body),
            Some(Vec::new()),
            "the {name} body must pass"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse_only", name), body, |b, body| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(body)).map(|_| ()))
        });
        assert_eq!(
            validate::findings_by_walk(REQUEST, body),
            Some(Vec::new()),
            "the {name} body must pass the walk too"
        );
        group.bench_with_input(BenchmarkId::new("request", name), body, |b, body| {
            b.iter(|| validate::findings(REQUEST, black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("walk", name), body, |b, body| {
            b.iter(|| validate::findings_by_walk(REQUEST, black_box(body)))
        });
    }
    group.finish();

    let answer = details_answer();
    assert!(ids::quote_ids(&answer).is_some());
    let mut group = c.benchmark_group("ids");
    group.throughput(Throughput::Bytes(answer.len() as u64));
    group.bench_function("quote/details", |b| {
        b.iter(|| ids::quote_ids(black_box(&answer)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
