//! The verifier against known-answer signature vectors, and each way a call's
//! credentials can be wrong (every one refused as 1106).

use super::*;
use crate::Secret;
use http::HeaderValue;

const SECRET: &str = "a917ab6a2367b536f8e5a6e2977e06f4";
const CHANNEL: &str = "1234567890";

struct Vector {
    path: &'static str,
    payload: &'static str,
    nonce: &'static str,
    signature: &'static str,
}

/// The cases of /work/shared/test-vectors.json (Python hmac, cross-checked with
/// crypto-js); the method only decides what the payload is, which is given here.
const VECTORS: [Vector; 8] = [
    Vector {
        path: "/v3/payments/request",
        payload: r#"{"amount":100,"currency":"TWD"}"#,
        nonce: "6f1ba1c9-8f3f-4b9a-9b3e-0d2c1a6b5e77",
        signature: "07cnOfuso3B3HFlVXKMM4vlF0/yprYM8TmAKhG7ZROM=",
    },
    Vector {
        path: "/v3/payments/request",
        payload: r#"{"amount":100,"currency":"TWD","orderId":"ORDER123456","packages":[{"id":"1","amount":100,"name":"商品","products":[{"name":"測試商品","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://example.com/confirm","cancelUrl":"https://example.com/cancel"}}"#,
        nonce: "0b5e5d3e-4a1c-4f6e-9c7d-2f1e0a9b8c7d",
        signature: "WP31ReDqijmj3q/Z0H6iVqA1mUR5yOuVG/1o4mtzatg=",
    },
    Vector {
        path: "/v3/payments/request",
        payload: r#"{"amount": 100, "currency": "TWD", "orderId": "ORDER123456", "packages": [{"id": "1", "amount": 100, "name": "\u5546\u54c1", "products": [{"name": "\u6e2c\u8a66\u5546\u54c1", "quantity": 1, "price": 100}]}], "redirectUrls": {"confirmUrl": "https://example.com/confirm", "cancelUrl": "https://example.com/cancel"}}"#,
        nonce: "0b5e5d3e-4a1c-4f6e-9c7d-2f1e0a9b8c7d",
        signature: "Ee11cMqGbUanAefkdGwBDz8/o5UDU97Db5SvGvFfK+Q=",
    },
    Vector {
        path: "/v3/payments/2021121600698709710/confirm",
        payload: r#"{"amount":1000,"currency":"TWD"}"#,
        nonce: "c6f4b7f0-1d2e-4b8a-8f3c-5a6b7c8d9e0f",
        signature: "zgnp047OZqqCo6/6SsA9KwIOPUGzgWCSCEOJipx5TAk=",
    },
    Vector {
        path: "/v3/payments/authorizations/2021121600698709710/void",
        payload: "",
        nonce: "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d",
        signature: "elPkd99gEl3XKFqaq1lHYVsgn+DYZUl8ZfxxvUCNul4=",
    },
    Vector {
        path: "/v3/payments",
        payload: "transactionId=2021121600698709710&orderId=ORDER123456",
        nonce: "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
        signature: "EUBvNDdIfYMp499mrYU+m1RI1tj2QIc7qh9lHzMJoNk=",
    },
    Vector {
        path: "/v3/payments/requests/2021121600698709710/check",
        payload: "",
        nonce: "1700000000000",
        signature: "kl+I+6naSwE7NXHALy4YgSQKt0pVid4DWsOT4RqqUP4=",
    },
    Vector {
        path: "/v3/payments/preapprovedPay/RK9A8B7C6D5E/check",
        payload: "creditCardAuth=true",
        nonce: "2f3e4d5c-6b7a-4988-8776-655443322110",
        signature: "9hgmasLeEGGqApYc6PSGxvd0weDdveCgm7Ny4POv128=",
    },
];

fn config() -> ChannelConfig {
    ChannelConfig::new(CHANNEL, Secret::new(SECRET))
}

fn headers(channel: &str, nonce: &str, signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        (CHANNEL_ID, channel),
        (NONCE, nonce),
        (SIGNATURE, signature),
    ] {
        let value = HeaderValue::from_str(value).expect("test header values are ASCII");
        headers.insert(name, value);
    }
    headers
}

fn verify(vector: &Vector, headers: &HeaderMap) -> Result<(), Refusal> {
    verify_v3(&config(), vector.path, vector.payload.as_bytes(), headers)
}

/// Replaces the character at `index` with another Base64 character.
fn change_one_char(text: &str, index: usize) -> String {
    text.char_indices()
        .map(|(at, c)| match (at == index, c) {
            (false, c) => c,
            (true, 'A') => 'B',
            (true, _) => 'A',
        })
        .collect()
}

fn assert_header_error(result: Result<(), Refusal>, mentions: &str) {
    let refusal = result.expect_err("the verifier must refuse");
    assert_eq!(refusal.code, ReturnCode::HeaderError);
    assert!(refusal.detail.contains(mentions), "{}", refusal.detail);
    assert!(!refusal.detail.contains(SECRET), "{}", refusal.detail);
}

#[test]
fn every_known_answer_vector_is_accepted() {
    for vector in &VECTORS {
        let headers = headers(CHANNEL, vector.nonce, vector.signature);
        assert_eq!(verify(vector, &headers), Ok(()), "{}", vector.path);
    }
}

#[test]
fn test_signer_agrees_with_the_vectors() {
    for vector in &VECTORS {
        let signature = sign_for_test(
            SECRET.as_bytes(),
            vector.path,
            vector.payload.as_bytes(),
            vector.nonce,
        );
        assert_eq!(signature, vector.signature, "{}", vector.path);
    }
}

#[test]
fn a_one_character_change_to_the_signature_is_refused() {
    for vector in &VECTORS {
        // First character, and the last significant one before the '=' padding.
        for index in [0, vector.signature.len() - 2] {
            let forged = change_one_char(vector.signature, index);
            assert_ne!(forged, vector.signature);
            let result = verify(vector, &headers(CHANNEL, vector.nonce, &forged));
            assert_header_error(result, "X-LINE-Authorization");
        }
    }
}

#[test]
fn a_one_character_change_to_nonce_path_or_payload_is_refused() {
    for vector in &VECTORS {
        let nonce = change_one_char(vector.nonce, 0);
        let result = verify(vector, &headers(CHANNEL, &nonce, vector.signature));
        assert_header_error(result, "does not match the request");

        let good = headers(CHANNEL, vector.nonce, vector.signature);
        let path = format!("{}x", vector.path);
        let result = verify_v3(&config(), &path, vector.payload.as_bytes(), &good);
        assert_header_error(result, "does not match the request");

        let payload = format!("{} ", vector.payload);
        let result = verify_v3(&config(), vector.path, payload.as_bytes(), &good);
        assert_header_error(result, "does not match the request");
    }
}

#[test]
fn wrong_or_missing_channel_id_is_refused() {
    let vector = &VECTORS[0];
    let result = verify(
        vector,
        &headers("1234567891", vector.nonce, vector.signature),
    );
    assert_header_error(result, "X-LINE-ChannelId does not match");

    let mut missing = headers(CHANNEL, vector.nonce, vector.signature);
    missing.remove(CHANNEL_ID);
    assert_header_error(verify(vector, &missing), "X-LINE-ChannelId is missing");
}

#[test]
fn missing_or_empty_nonce_is_refused() {
    let vector = &VECTORS[0];
    let result = verify(vector, &headers(CHANNEL, "", vector.signature));
    assert_header_error(result, "Nonce");

    let mut missing = headers(CHANNEL, vector.nonce, vector.signature);
    missing.remove(NONCE);
    assert_header_error(verify(vector, &missing), "Nonce");
}

#[test]
fn missing_or_non_base64_signature_is_refused() {
    let vector = &VECTORS[0];
    let mut missing = headers(CHANNEL, vector.nonce, vector.signature);
    missing.remove(SIGNATURE);
    assert_header_error(verify(vector, &missing), "X-LINE-Authorization is missing");

    let result = verify(vector, &headers(CHANNEL, vector.nonce, "not base64!"));
    assert_header_error(result, "not Base64");

    // A hex digest (a seed note's mistake) is refused too.
    let hex = "d3b7273bfbaca3b0771c5956a5730ce2f945d3fca9ad833c4e600a846ed944e3";
    let result = verify(vector, &headers(CHANNEL, vector.nonce, hex));
    assert_eq!(
        result.map_err(|refusal| refusal.code),
        Err(ReturnCode::HeaderError)
    );
}

#[test]
fn a_repeated_line_header_is_refused() {
    let vector = &VECTORS[0];
    let mut repeated = headers(CHANNEL, vector.nonce, vector.signature);
    repeated.append(SIGNATURE, HeaderValue::from_static("forged"));
    assert_header_error(verify(vector, &repeated), "more than once");
}

#[test]
fn v2_needs_the_channel_id_and_secret_in_clear() {
    let mut good = HeaderMap::new();
    good.insert(CHANNEL_ID, HeaderValue::from_static(CHANNEL));
    good.insert(V2_SECRET, HeaderValue::from_static(SECRET));
    assert_eq!(verify_v2(&config(), &good), Ok(()));

    let mut wrong_secret = good.clone();
    wrong_secret.insert(
        V2_SECRET,
        HeaderValue::from_static("a917ab6a2367b536f8e5a6e2977e06f5"),
    );
    assert_header_error(
        verify_v2(&config(), &wrong_secret),
        "X-LINE-ChannelSecret does not match",
    );

    let mut no_secret = good.clone();
    no_secret.remove(V2_SECRET);
    assert_header_error(
        verify_v2(&config(), &no_secret),
        "X-LINE-ChannelSecret is missing",
    );

    let mut wrong_channel = good;
    wrong_channel.insert(CHANNEL_ID, HeaderValue::from_static("42"));
    assert_header_error(verify_v2(&config(), &wrong_channel), "X-LINE-ChannelId");
}

#[test]
fn a_call_is_checked_with_the_secret_of_the_channel_its_id_names() {
    const OTHER: &str = "2000000002";
    let channels = [
        config(),
        ChannelConfig::new(OTHER, Secret::new("other-channel-secret")),
    ];
    let vector = &VECTORS[0];
    let own = headers(CHANNEL, vector.nonce, vector.signature);
    assert_eq!(channel_of(&channels, &own), Ok(0));
    assert_eq!(
        verify_v3(&channels[0], vector.path, vector.payload.as_bytes(), &own),
        Ok(())
    );

    // Signed with the first channel's secret, sent under the other's id: the other
    // channel is found, and its secret refuses the signature.
    let crossed = headers(OTHER, vector.nonce, vector.signature);
    assert_eq!(channel_of(&channels, &crossed), Ok(1));
    let result = verify_v3(
        &channels[1],
        vector.path,
        vector.payload.as_bytes(),
        &crossed,
    );
    assert_header_error(result, "does not match the request");

    let unknown = headers("3000000003", vector.nonce, vector.signature);
    assert_header_error(
        channel_of(&channels, &unknown).map(|_| ()),
        "X-LINE-ChannelId does not match any channel",
    );
    let mut missing = own;
    missing.remove(CHANNEL_ID);
    assert_header_error(
        channel_of(&channels, &missing).map(|_| ()),
        "X-LINE-ChannelId is missing",
    );
}
