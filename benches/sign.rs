//! Cost of signing one v3 call, as the proxy does it against what a typical SDK does.
//!
//! - `sign/streamed/<size>`: [`Signer::signature_into`]: keyed HMAC state cloned from the
//!   `Signer`, the four parts streamed in, Base64 into a stack buffer. No allocation.
//! - `sign/rekeyed/<size>`: the same streaming and stack buffer, but the HMAC is keyed
//!   afresh on every call. Separates the saving of the cached key from the saving of
//!   not copying the body.
//! - `sign/naive/<size>`: the SDK recipe: concatenate secret + path + body + nonce into a
//!   fresh `Vec`, key a new HMAC, one `update`, Base64 into a `String`.
//! - `nonce/uuid_v4`: [`sign::new_nonce`], which the proxy pays once per call on top.
//!
//! Run with `cargo bench --bench sign`; results and the machine are in benches/README.md.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use linepay_sidecar::secret::Secret;
use linepay_sidecar::sign::{self, Signer, SIGNATURE_LEN};
use sha2::Sha256;
use std::hint::black_box;
use std::time::Duration;

const SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
const PATH: &str = "/v3/payments/request";
const NONCE: &str = "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77";

/// Body sizes and the names the bench ids carry.
const SIZES: [(usize, &str); 3] = [(256, "256B"), (1024, "1KiB"), (16 * 1024, "16KiB")];

/// A `/v3/payments/request`-shaped JSON body of exactly `len` bytes: product entries
/// (with non-ASCII names, as real bodies have) until the next would not fit, then a
/// string field padded to the exact length.
fn json_body(len: usize) -> Vec<u8> {
    const HEAD: &str = r#"{"amount":100,"currency":"TWD","orderId":"ORDER123456","packages":[{"id":"1","amount":100,"products":["#;
    const TAIL_EMPTY: &str = r#"]}],"note":""}"#;
    let mut body = String::from(HEAD);
    let mut index = 0;
    loop {
        let separator = if index == 0 { "" } else { "," };
        let product =
            format!(r#"{separator}{{"id":"P{index}","name":"測試商品","quantity":1,"price":100}}"#);
        if body.len() + product.len() + TAIL_EMPTY.len() > len {
            break;
        }
        body.push_str(&product);
        index += 1;
    }
    let padding = len
        .checked_sub(body.len() + TAIL_EMPTY.len())
        .expect("body size is at least the JSON skeleton");
    body.push_str(r#"]}],"note":""#);
    body.push_str(&"x".repeat(padding));
    body.push_str(r#""}"#);
    assert_eq!(body.len(), len, "json_body built the wrong size");
    body.into_bytes()
}

/// The SDK recipe, allocation and all.
fn naive_signature(secret: &[u8], path: &str, body: &[u8], nonce: &str) -> String {
    let mut message = Vec::with_capacity(secret.len() + path.len() + body.len() + nonce.len());
    message.extend_from_slice(secret);
    message.extend_from_slice(path.as_bytes());
    message.extend_from_slice(body);
    message.extend_from_slice(nonce.as_bytes());
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC-SHA256 takes keys of any length");
    mac.update(&message);
    BASE64.encode(mac.finalize().into_bytes())
}

/// Streamed like `Signer`, but keyed per call.
fn rekeyed_signature_into(
    secret: &[u8],
    path: &str,
    body: &[u8],
    nonce: &str,
    out: &mut [u8; SIGNATURE_LEN],
) -> usize {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC-SHA256 takes keys of any length");
    mac.update(secret);
    mac.update(path.as_bytes());
    mac.update(body);
    mac.update(nonce.as_bytes());
    BASE64
        .encode_slice(mac.finalize().into_bytes(), out)
        .expect("44 bytes hold the Base64 of 32")
}

fn bench_sign(c: &mut Criterion) {
    let secret = Secret::new(SECRET);
    let signer = Signer::new(&secret);
    let mut group = c.benchmark_group("sign");
    for (len, name) in SIZES {
        let body = json_body(len);
        // All three variants must sign the same thing, or the comparison means nothing.
        let mut out = [0u8; SIGNATURE_LEN];
        signer.signature_into(PATH, &body, NONCE, &mut out);
        let naive = naive_signature(SECRET.as_bytes(), PATH, &body, NONCE);
        assert_eq!(&out[..], naive.as_bytes(), "streamed and naive disagree");
        rekeyed_signature_into(SECRET.as_bytes(), PATH, &body, NONCE, &mut out);
        assert_eq!(&out[..], naive.as_bytes(), "rekeyed and naive disagree");

        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("streamed", name), &body, |b, body| {
            let mut out = [0u8; SIGNATURE_LEN];
            b.iter(|| {
                signer.signature_into(black_box(PATH), black_box(body), black_box(NONCE), &mut out);
                black_box(&out);
            });
        });
        group.bench_with_input(BenchmarkId::new("rekeyed", name), &body, |b, body| {
            let mut out = [0u8; SIGNATURE_LEN];
            b.iter(|| {
                rekeyed_signature_into(
                    black_box(SECRET.as_bytes()),
                    black_box(PATH),
                    black_box(body),
                    black_box(NONCE),
                    &mut out,
                );
                black_box(&out);
            });
        });
        group.bench_with_input(BenchmarkId::new("naive", name), &body, |b, body| {
            b.iter(|| {
                naive_signature(
                    black_box(SECRET.as_bytes()),
                    black_box(PATH),
                    black_box(body),
                    black_box(NONCE),
                )
            });
        });
    }
    group.finish();
}

fn bench_nonce(c: &mut Criterion) {
    let mut group = c.benchmark_group("nonce");
    group.bench_function("uuid_v4", |b| b.iter(sign::new_nonce));
    group.finish();
}

fn config() -> Criterion {
    // Short enough that the whole file runs in well under two minutes.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_sign, bench_nonce
}
criterion_main!(benches);
