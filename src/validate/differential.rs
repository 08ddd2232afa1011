//! The fast pass against `serde_json` and the walk, on valid LINE Pay bodies and on
//! thousands of deterministic mutations of them: whatever `passes` passes, the proxy's
//! own JSON check (`serde_json::from_str::<IgnoredAny>`) reads and the walk finds clean,
//! since the proxy then skips that check; and every clean body passes, so the fast pass
//! stays the fast path.

#![allow(clippy::unwrap_used)]

use super::*;

/// The bodies the mutations start from: (route template, body), each clean.
fn corpus() -> Vec<(&'static str, String)> {
    let request = "/v3/payments/request";
    let confirm = "/v3/payments/{transactionId}/confirm";
    let mut bodies: Vec<(&'static str, String)> = vec![
        // The body of scripts/bench-instructions.sh.
        (request, r#"{"amount":100,"currency":"TWD","orderId":"b-0001","packages":[{"id":"p1","amount":100,"products":[{"name":"Coffee","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://a.example/c","cancelUrl":"https://a.example/x"}}"#.to_owned()),
        // tests.rs `request_body`.
        (request, r#"{"amount":250,"currency":"TWD","orderId":"order-1","packages":[{"id":"p1","amount":200,"userFee":20,"name":"box","products":[{"name":"pen","quantity":2,"price":50},{"name":"ink","quantity":1,"price":100}]}],"redirectUrls":{"confirmUrl":"https://shop/confirm","cancelUrl":"https://shop/cancel"},"options":{"shipping":{"feeAmount":30}}}"#.to_owned()),
        // Cents, summed exactly.
        (request, r#"{"amount":0.3,"currency":"USD","orderId":"o","packages":[{"id":"p","amount":0.3,"products":[{"name":"a","quantity":1,"price":0.1},{"name":"b","quantity":2,"price":0.1}]}],"redirectUrls":{"confirmUrl":"https://s/c","cancelUrl":"https://s/x"}}"#.to_owned()),
        // Every optional member, escapes, non-ASCII text and a free-form `account`.
        (request, r#"{"amount":1210.3,"currency":"THB","orderId":"ord\"er\\1\/\u0041\ud83d\ude00","packages":[{"id":"pkg-é","amount":1200.30,"userFee":0,"name":"日本茶","products":[{"id":"x","name":"tea \u00e9 😀","imageUrl":"https://i/x.png","quantity":3,"price":400.10,"originalPrice":500},{"name":"n","quantity":1,"price":0}]}],"redirectUrls":{"appPackageName":"jp.app","confirmUrl":"https://s/c?a=1&b=2","confirmUrlType":"SERVER","cancelUrl":"https://s/x"},"options":{"payment":{"capture":false,"payType":"NORMAL"},"display":{"locale":"zh_TW","checkConfirmUrlBrowser":true},"account":{"blockedPaymentMethods":["CREDIT_CARD"],"nested":{"n":[1,-2.5e-3,true,null,{"k":"\u0000"}]}},"shipping":{"type":"SHIPPING","feeAmount":10,"feeInquiryUrl":"https://s/fee","feeInquiryType":"FIXED","address":{"country":"TH","postalCode":"10110","state":"BKK","city":"Bangkok","detail":"1 Road","optional":"-","recipient":{"firstName":"A","lastName":"B","firstNameOptional":"a","lastNameOptional":"b","email":"a@b.c","phoneNo":"+66 1"}}},"familyService":{"addFriends":[{"type":"LINE_AT","idList":["@a","@b"]},{"idList":[]}]},"extra":{"branchName":"Main","branchId":"B-1"}}}"#.to_owned()),
        // The same kind of body written with every JSON whitespace byte.
        (request, "\r\n { \"amount\" :\t250 ,\n\"currency\":\"JPY\" , \"orderId\" : \"w\" ,\"packages\" : [ { \"id\" : \"p\" , \"amount\" : 250 , \"products\" : [ { \"name\" : \"x\" , \"quantity\" : 5 , \"price\" : 50 } ] } ] , \"redirectUrls\" : { \"confirmUrl\" : \"https://s/c\" , \"cancelUrl\" : \"https://s/x\" } , \"options\" : null }\n\t ".to_owned()),
        (confirm, r#"{"amount":5,"currency":"TWD"}"#.to_owned()),
        (confirm, r#"{"amount":1.5,"currency":"USD"}"#.to_owned()),
        (confirm, r#"{"currency":"THB","amount":18446744073709551615}"#.to_owned()),
        ("/v3/payments/{transactionId}/refund", r#"{"refundAmount":40}"#.to_owned()),
        ("/v3/payments/{transactionId}/refund", "{}".to_owned()),
        ("/v3/payments/preapprovedPay/{regKey}/payment", r#"{"productName":"p","amount":10,"currency":"TWD","orderId":"o","capture":true}"#.to_owned()),
        ("/v4/payments/oneTimeKeys/pay", r#"{"productName":"coffee","amount":120,"currency":"TWD","orderId":"pos-1","oneTimeKey":"123456789012345678","capture":true,"extras":{"branchName":"Taipei"}}"#.to_owned()),
    ];
    // The test's own request body, as serde_json writes it and pretty-printed.
    let value: serde_json::Value = serde_json::from_str(&bodies[1].1).unwrap();
    bodies.push((request, serde_json::to_string_pretty(&value).unwrap()));
    bodies
}

/// Deterministic: the same mutants on every run and every machine (splitmix64).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound).unwrap()).unwrap()
    }
}

/// Bytes that break (or nearly break) JSON wherever they land.
const TRICKY: &[&[u8]] = &[
    b"\x00",
    b"\x01",
    b"\x1f",
    b"\x7f",
    b"\x0b",
    b"\x0c",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\xc3",
    b"\xe6\x97",
    b"\xc3\xa9",
    b" ",
    b"\t",
    b"\r\n",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\x",
    b"\\u",
    b"\\u00",
    b"\\u00e9",
    b"\\ud800",
    b"\\udc00",
    b"\\ud800\\u0041",
    b"\\ud83d\\ude00",
    b"\\ud800\\n",
    b"0",
    b"00",
    b"01",
    b"-",
    b"-0",
    b"1.",
    b".5",
    b"1e",
    b"1e+",
    b"1e400",
    b"0.0",
    b"9",
    b"99999999999999999999999",
    b",",
    b",}",
    b",]",
    b":",
    b"}",
    b"]",
    b"{",
    b"[",
    b"{}",
    b"[]",
    b"null",
    b"nul",
    b"true",
    b"tru",
    b"false",
    b"\"amount\":5,",
    b"\"currency\":\"TWD\",",
    b"\"x\":1,",
    b"\"\\u0061mount\":5,",
    b"e",
    b"E",
    b".",
    b"+",
];

/// Whether serde_json reads `body` as one JSON value, as the proxy's own JSON check does.
fn is_json(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

/// Whether the body is clean: serde_json reads it as a tree (which, unlike `IgnoredAny`,
/// decodes every string and number) and the walk finds nothing.
fn is_clean(table: &Table, body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok() && walk(table, body).is_empty()
}

/// The rule the proxy relies on; answers whether `body` passed.
fn holds(table: &Table, body: &[u8]) -> bool {
    let passed = passes(table, body);
    if passed {
        assert!(
            is_json(body),
            "passed, not JSON: {:?}",
            String::from_utf8_lossy(body)
        );
        assert!(
            walk(table, body).is_empty(),
            "passed, the walk finds fault: {:?}",
            String::from_utf8_lossy(body)
        );
    }
    passed
}

fn spliced(body: &[u8], at: usize, cut: usize, insert: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + insert.len());
    out.extend_from_slice(&body[..at]);
    out.extend_from_slice(insert);
    out.extend_from_slice(&body[(at + cut).min(body.len())..]);
    out
}

#[test]
fn every_clean_body_passes() {
    for (template, body) in corpus() {
        let table = table_for(template).unwrap();
        assert!(is_json(body.as_bytes()), "{body}");
        assert_eq!(walk(table, body.as_bytes()), [], "{body}");
        assert!(passes(table, body.as_bytes()), "{body}");
    }
}

#[test]
fn whatever_passes_after_a_mutation_is_json_and_clean() {
    let mut rng = Rng(0x5eed_0020);
    let (mut tried, mut passed) = (0usize, 0usize);
    for (template, body) in corpus() {
        let table = table_for(template).unwrap();
        let body = body.as_bytes();
        let mut mutants: Vec<Vec<u8>> = Vec::new();
        // Cut short anywhere.
        mutants.extend((0..body.len()).map(|at| body[..at].to_vec()));
        // Each tricky piece inserted at, and written over, a few places.
        for piece in TRICKY {
            for _ in 0..24 {
                let at = rng.below(body.len() + 1);
                mutants.push(spliced(body, at, 0, piece));
                let at = rng.below(body.len());
                mutants.push(spliced(body, at, piece.len(), piece));
            }
        }
        // One byte changed to anything.
        for _ in 0..600 {
            let at = rng.below(body.len());
            let byte = u8::try_from(rng.next() & 0xff).unwrap();
            mutants.push(spliced(body, at, 1, &[byte]));
        }
        // Two edits at once (a cut and an insert), to reach states one edit does not.
        for _ in 0..600 {
            let piece = TRICKY[rng.below(TRICKY.len())];
            let at = rng.below(body.len());
            let once = spliced(body, at, 1, b"");
            let at = rng.below(once.len() + 1);
            mutants.push(spliced(&once, at, 0, piece));
        }
        // Around the whole value.
        for (before, after) in [
            (&b"\xef\xbb\xbf"[..], &b""[..]),
            (b"", b"\x00"),
            (b"\x00", b""),
            (b"", b" x"),
            (b"", b"}"),
            (b"", b","),
            (b"", b"{}"),
            (b"[", b"]"),
            (b"", b"\xc2\xa0"),
        ] {
            mutants.push([before, body, after].concat());
        }
        for mutant in &mutants {
            tried += 1;
            passed += usize::from(holds(table, mutant));
        }
    }
    // The mutations must leave some bodies clean (whitespace, a changed letter in a
    // free text), or the test would check nothing.
    assert!(passed > 500, "{passed} of {tried} mutants passed");
}

/// Whitespace between tokens changes nothing: wherever serde_json and the walk still
/// find the body clean, the fast pass passes it too (a space splitting a surrogate pair
/// makes two lone surrogates: not clean).
#[test]
fn whitespace_anywhere_is_decided_as_the_walk_decides() {
    for (template, body) in corpus() {
        let table = table_for(template).unwrap();
        let body = body.as_bytes();
        for at in 0..=body.len() {
            for space in [&b" "[..], b"\n", b"\r\n\t"] {
                let mutant = spliced(body, at, 0, space);
                let clean = is_clean(table, &mutant);
                assert_eq!(
                    holds(table, &mutant),
                    clean,
                    "{:?}",
                    String::from_utf8_lossy(&mutant)
                );
            }
        }
    }
}

#[test]
fn keys_sent_twice_are_left_to_the_walk() {
    let table = table_for("/v3/payments/request").unwrap();
    for (template, body) in corpus().into_iter().take(2) {
        assert_eq!(template, "/v3/payments/request");
        for member in [
            "\"amount\":1,",
            "\"currency\":\"TWD\",",
            "\"orderId\":\"o\",",
        ] {
            let mutant = body.replacen('{', &format!("{{{member}"), 1);
            assert!(!holds(table, mutant.as_bytes()), "{mutant}");
        }
        // Inside a package and a product too.
        let mutant = body.replacen("\"id\":\"p1\",", "\"id\":\"p1\",\"id\":\"p2\",", 1);
        assert!(!holds(table, mutant.as_bytes()), "{mutant}");
        let mutant = body.replacen("\"quantity\":", "\"quantity\":1,\"quantity\":", 1);
        assert!(!holds(table, mutant.as_bytes()), "{mutant}");
    }
}

/// serde_json's parser stops at 128 levels; `IgnoredAny` has no limit. Deep nesting in
/// the one free-form member is passed only well inside both.
#[test]
fn deep_nesting_is_refused_before_serde_json_s_limit() {
    let table = table_for("/v3/payments/request").unwrap();
    let (_, body) = &corpus()[0];
    for (depth, expected) in [
        (10, true),
        (60, true),
        (63, true),
        (64, false),
        (127, false),
        (128, false),
        (129, false),
        (200, false),
        (1000, false),
    ] {
        // The root, `options` and `account` are three levels, then `depth` arrays;
        // the fast pass counts from `account`.
        let deep = format!(
            "{{\"options\":{{\"account\":{{\"a\":{}0{}}}}},{}",
            "[".repeat(depth),
            "]".repeat(depth),
            &body[1..]
        );
        assert!(is_json(deep.as_bytes()), "depth {depth}");
        assert_eq!(holds(table, deep.as_bytes()), expected, "depth {depth}");
    }
}

/// Amounts read exactly as the walk reads them, whatever their spelling.
#[test]
fn amounts_in_any_spelling_are_decided_as_the_walk_decides() {
    let confirm = table_for("/v3/payments/{transactionId}/confirm").unwrap();
    for currency in ["TWD", "JPY", "THB", "USD", "EUR"] {
        for amount in [
            "0",
            "-0",
            "1",
            "-1",
            "100",
            "100.0",
            "100.00",
            "1e2",
            "1E2",
            "1e+2",
            "10e-1",
            "1.5",
            "1.50",
            "1.05",
            "1.005",
            "0.1",
            "0.10",
            "-0.0",
            "0.0",
            "1e-2",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "123456789012345.67",
            "1234567890123456.7",
            "1e300",
            "1e400",
            "0e0",
            "5e-324",
            "4.2e1",
        ] {
            let body = format!("{{\"amount\":{amount},\"currency\":\"{currency}\"}}");
            // `1e400` is JSON to `IgnoredAny`, too big for a tree: not clean, not passed.
            let clean = is_clean(confirm, body.as_bytes());
            assert_eq!(holds(confirm, body.as_bytes()), clean, "{body}");
        }
    }
    let request = table_for("/v3/payments/request").unwrap();
    for quantity in [
        "1",
        "2",
        "0",
        "-1",
        "1.0",
        "2e0",
        "18446744073709551615",
        "18446744073709551616",
    ] {
        let body = format!(
            r#"{{"amount":100,"currency":"TWD","orderId":"o","packages":[{{"id":"p","amount":100,"products":[{{"name":"n","quantity":{quantity},"price":100}}]}}],"redirectUrls":{{"confirmUrl":"c","cancelUrl":"x"}}}}"#
        );
        let clean = is_clean(request, body.as_bytes());
        assert_eq!(holds(request, body.as_bytes()), clean, "{body}");
    }
}

/// The fast pass finds keys by comparing raw bytes with the rules' names (`is_key`),
/// which is only a JSON string check when each name is plain printable ASCII.
#[test]
fn every_field_name_is_plain_ascii() {
    fn check(fields: &[schema::Field]) {
        for field in fields {
            assert!(
                !field.name.is_empty()
                    && field
                        .name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{:?}",
                field.name
            );
            check_kind(&field.kind);
        }
    }
    fn check_kind(kind: &schema::Kind) {
        match kind {
            schema::Kind::Object(fields) => check(fields),
            schema::Kind::Array { item, .. } => check_kind(item),
            _ => {}
        }
    }
    for table in TABLES {
        check(table.fields);
    }
}
