//! The fast pass against `serde_json` and the walk on bodies built from the rules
//! themselves, rather than byte mutations of a few clean ones: every member present,
//! absent, `null`, of the wrong type, sent twice, spelled with an escape or unknown, and
//! each value drawn from the spellings where a hand-written reader and serde_json may
//! part (numbers, escapes, UTF-8, lengths at the limit), with the package sums right or
//! a cent off. Whatever `passes` passes, serde_json reads and the walk finds clean.

#![allow(clippy::unwrap_used)]

use super::differential::Rng;
use super::schema::{Check, Field, Kind};
use super::*;

/// A number as an amount may be spelled, in every shape the grammar allows.
const AMOUNTS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "100",
    "100.0",
    "1.5",
    "1.50",
    "1.05",
    "1.005",
    "0.01",
    "-0.0",
    "1e2",
    "1E+2",
    "1e-0",
    "10e-1",
    "0e0",
    "1e400",
    "-1e400",
    "1e-400",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "170141183460469231731687303715884105728",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345.67",
    "0.30000000000000004",
];

const COUNTS: &[&str] = &[
    "1",
    "2",
    "0",
    "-1",
    "-0",
    "1.0",
    "1e0",
    "18446744073709551615",
    "18446744073709551616",
];

/// Pieces of a string's content: each decodes to one character, or breaks the string.
const PIECES: &[(&str, bool)] = &[
    ("a", true),
    ("é", true),
    ("日", true),
    ("😀", true),
    (r"\n", true),
    (r"\/", true),
    (r#"\""#, true),
    (r"\u00e9", true),
    (r"\u00E9", true),
    (r"\u0000", true),
    (r"\uFFFF", true),
    (r"\ud83d\ude00", true),
    (r"\uD83D\uDE00", true),
    (r"\ud800", false),
    (r"\udc00", false),
    (r"\ud83d\u0041", false),
    (r"\ud83d", false),
    ("\u{1}", false),
    ("\t", false),
    (r"\x", false),
    (r"\U0041", false),
];

/// Values of the wrong type for most kinds.
const OTHERS: &[&str] = &[
    "null",
    "true",
    "false",
    "0",
    "1",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[1]",
    "{\"a\":1}",
];

struct Gen {
    rng: Rng,
}

impl Gen {
    fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.below(items.len())]
    }

    /// A string of about `length` characters, near a limit or not.
    fn text(&mut self, length: usize) -> String {
        let mut out = String::from("\"");
        let broken = self.chance(10);
        let at = if broken {
            self.rng.below(length + 1)
        } else {
            usize::MAX
        };
        let plain_only = self.chance(40);
        for index in 0..length {
            if index == at {
                let bad: Vec<&str> = PIECES.iter().filter(|p| !p.1).map(|p| p.0).collect();
                out.push_str(self.pick(&bad));
            }
            if plain_only {
                out.push(char::from(b'a' + (index % 26) as u8));
            } else {
                let good: Vec<&str> = PIECES.iter().filter(|p| p.1).map(|p| p.0).collect();
                out.push_str(self.pick(&good));
            }
        }
        if at == length {
            out.push_str(r"\ud800");
        }
        out.push('"');
        out
    }

    fn value(&mut self, kind: &Kind, depth: usize) -> String {
        if self.chance(6) {
            return self.pick(OTHERS).to_owned();
        }
        match kind {
            Kind::Object(fields) => self.object(fields, depth + 1),
            Kind::OpenObject => self.open(depth),
            Kind::Array { item, min } => {
                let count = self.rng.below(3) + usize::from(self.chance(80)) * min;
                let items: Vec<String> = (0..count).map(|_| self.value(item, depth + 1)).collect();
                format!("[{}]", items.join(","))
            }
            Kind::Text { max } => {
                let length = match self.rng.below(5) {
                    0 => 0,
                    1 => max.saturating_sub(1),
                    2 => *max,
                    3 => max + 1,
                    _ => 1 + self.rng.below(8),
                };
                self.text(length.min(600))
            }
            Kind::OneOf(allowed) => {
                let known = allowed[self.rng.below(allowed.len())];
                match self.rng.below(6) {
                    0 => format!(
                        "\"\\u{:04x}{}\"",
                        u32::from(known.as_bytes()[0]),
                        &known[1..]
                    ),
                    1 => format!("\"{}\"", known.to_lowercase()),
                    2 => format!("\"{known} \""),
                    _ => format!("\"{known}\""),
                }
            }
            Kind::Currency => self
                .pick(&[
                    "\"TWD\"",
                    "\"JPY\"",
                    "\"THB\"",
                    "\"USD\"",
                    "\"EUR\"",
                    "\"twd\"",
                    "\"T\\u0057D\"",
                    "\"TWD \"",
                ])
                .to_owned(),
            Kind::Amount(_) => self.pick(AMOUNTS).to_owned(),
            Kind::Count => self.pick(COUNTS).to_owned(),
            Kind::Flag => self.pick(&["true", "false"]).to_owned(),
        }
    }

    /// A free-form value, sometimes nested near the fast pass's limit.
    fn open(&mut self, depth: usize) -> String {
        let levels = match self.rng.below(4) {
            0 => 62 - depth.min(62) + self.rng.below(4),
            _ => self.rng.below(4),
        };
        let inner = self.pick(&["1", "\"\\ud800\"", "1e400", "\"x\"", "[]", "{}"]);
        format!(
            "{{\"k\":{}{}{}}}",
            "[".repeat(levels),
            inner,
            "]".repeat(levels)
        )
    }

    fn key(&mut self, name: &str) -> String {
        match self.rng.below(40) {
            0 => format!("\"\\u{:04x}{}\"", u32::from(name.as_bytes()[0]), &name[1..]),
            1 => format!("\"{name} \""),
            2 => format!("\"{}\"", name.to_uppercase()),
            _ => format!("\"{name}\""),
        }
    }

    fn object(&mut self, fields: &[Field], depth: usize) -> String {
        let mut members: Vec<String> = Vec::new();
        for field in fields {
            let present = if field.required { 92 } else { 50 };
            if !self.chance(present) {
                continue;
            }
            let value = if self.chance(5) {
                "null".to_owned()
            } else {
                self.value(&field.kind, depth)
            };
            members.push(format!("{}:{value}", self.key(field.name)));
            if self.chance(3) {
                let again = if self.chance(50) {
                    "null".to_owned()
                } else {
                    self.value(&field.kind, depth)
                };
                members.push(format!("\"{}\":{again}", field.name));
            }
        }
        if self.chance(3) {
            members.push("\"unknown\":1".to_owned());
        }
        if self.chance(10) {
            let a = self.rng.below(members.len().max(1));
            let b = self.rng.below(members.len().max(1));
            if a < members.len() && b < members.len() {
                members.swap(a, b);
            }
        }
        let space = self.pick(&["", " ", "\n\t", "\r\n "]);
        format!("{{{space}{}{space}}}", members.join(&format!(",{space}")))
    }

    /// A request whose sums hold unless `off` says which one is a cent off.
    fn request(&mut self) -> String {
        let currency = self.pick(&["TWD", "JPY", "THB", "USD"]);
        let cents = currency == "THB" || currency == "USD";
        let unit = if cents { 1 } else { 100 };
        let spell = |gen: &mut Gen, hundredths: i128| -> String {
            let (whole, frac) = (hundredths / 100, hundredths % 100);
            if !cents || (frac == 0 && gen.chance(50)) {
                return format!("{whole}");
            }
            match gen.rng.below(3) {
                0 => format!("{whole}.{frac:02}"),
                1 if frac % 10 == 0 => format!("{whole}.{}", frac / 10),
                _ => format!("{whole}.{frac:02}0"),
            }
        };
        let off = self.rng.below(8);
        let mut total: i128 = 0;
        let mut packages = Vec::new();
        for p in 0..1 + self.rng.below(3) {
            let mut sum: i128 = 0;
            let mut products = Vec::new();
            for _ in 0..1 + self.rng.below(3) {
                let quantity = 1 + self.rng.below(4) as i128;
                let price = self.rng.below(2000) as i128 * unit;
                sum += quantity * price;
                products.push(format!(
                    r#"{{"name":"n","quantity":{quantity},"price":{}}}"#,
                    spell(self, price)
                ));
            }
            let amount = if off == 1 && p == 0 { sum + unit } else { sum };
            let fee = self.rng.below(3) as i128 * 50 * unit;
            total += amount + fee;
            let fee = match self.rng.below(3) {
                0 => String::new(),
                1 if fee == 0 => r#","userFee":null"#.to_owned(),
                _ => format!(r#","userFee":{}"#, spell(self, fee)),
            };
            packages.push(format!(
                r#"{{"id":"p{p}","amount":{}{fee},"products":[{}]}}"#,
                spell(self, amount),
                products.join(",")
            ));
        }
        let shipping_fee = self.rng.below(3) as i128 * 100 * unit;
        total += shipping_fee;
        let options = match self.rng.below(5) {
            0 => String::new(),
            1 if shipping_fee == 0 => r#","options":{"shipping":{"feeAmount":null}}"#.to_owned(),
            2 if shipping_fee == 0 => r#","options":null"#.to_owned(),
            _ => format!(
                r#","options":{{"shipping":{{"feeAmount":{}}}}}"#,
                spell(self, shipping_fee)
            ),
        };
        let amount = match off {
            2 => total - unit,
            3 => total + shipping_fee.max(unit),
            _ => total.max(unit),
        };
        format!(
            r#"{{"amount":{},"currency":"{currency}","orderId":"o","packages":[{}],"redirectUrls":{{"confirmUrl":"c","cancelUrl":"x"}}{options}}}"#,
            spell(self, amount),
            packages.join(",")
        )
    }
}

/// The rule: a passed body is JSON to the proxy's check, a tree to the walk, and clean.
fn holds(table: &Table, body: &str) -> bool {
    let passed = stream::passes(table, body.as_bytes());
    if passed {
        assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok(),
            "passed, not JSON: {body}"
        );
        if let Err(error) = serde_json::from_str::<serde_json::Value>(body) {
            panic!("passed, not a tree ({error}): {body}");
        }
        assert_eq!(walk(table, body.as_bytes()), [], "passed: {body}");
    }
    passed
}

#[test]
fn bodies_built_from_the_rules_pass_only_when_json_and_clean() {
    let mut gen = Gen {
        rng: Rng(0x5eed_2020),
    };
    for table in TABLES {
        let mut passed = 0;
        for _ in 0..4000 {
            let body = gen.object(table.fields, 0);
            passed += usize::from(holds(table, &body));
        }
        // Some must pass, or the property checks nothing on this table (a random
        // request's sums seldom hold: the next test builds ones that do).
        assert!(
            table.fields.is_empty() || table.checks.contains(&Check::PackageSums) || passed > 10,
            "{}: {passed} passed",
            table.key
        );
    }
}

#[test]
fn requests_with_sums_right_or_a_cent_off_pass_only_when_clean() {
    let mut gen = Gen {
        rng: Rng(0x5eed_5a75),
    };
    let table = table_for("/v3/payments/request").unwrap();
    let (mut passed, mut clean) = (0, 0);
    for _ in 0..6000 {
        let body = gen.request();
        let is_clean = walk(table, body.as_bytes()).is_empty();
        let did = holds(table, &body);
        // Whatever the walk finds clean here, the fast pass passes: no escapes, no
        // duplicates, nothing it leaves to the walk.
        assert_eq!(did, is_clean, "{body}");
        passed += usize::from(did);
        clean += usize::from(is_clean);
    }
    assert!(
        passed > 1000 && passed < 6000,
        "{passed} passed, {clean} clean"
    );
}

/// The brief's named edge cases, each decided the way the walk and serde_json decide.
#[test]
fn named_edge_cases_pass_only_when_json_and_clean() {
    let preapproved = table_for("/v3/payments/preapprovedPay/{regKey}/payment").unwrap();
    let body = |name: &[u8], amount: &str, currency: &str| -> Vec<u8> {
        [
            &br#"{"productName":""#[..],
            name,
            br#"","amount":"#,
            amount.as_bytes(),
            br#","currency":""#,
            currency.as_bytes(),
            br#"","orderId":"o"}"#,
        ]
        .concat()
    };
    let check = |bytes: &[u8]| {
        let passed = stream::passes(preapproved, bytes);
        let clean = std::str::from_utf8(bytes).is_ok_and(|text| {
            serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
                && serde_json::from_str::<serde_json::Value>(text).is_ok()
        }) && walk(preapproved, bytes).is_empty();
        assert!(!passed || clean, "{:?}", String::from_utf8_lossy(bytes));
        passed
    };
    // UTF-8: overlong, an encoded surrogate, past U+10FFFF, cut short, a bad
    // continuation, and the largest and a 4-byte character that are fine.
    for bad in [
        &b"\xc0\xaf"[..],
        b"\xe0\x80\xaf",
        b"\xed\xa0\x80",
        b"\xed\xbf\xbf",
        b"\xf4\x90\x80\x80",
        b"\xf5\x80\x80\x80",
        b"a\xe6\x97",
        b"\xe6\x41\x41",
        b"\x80",
        b"\xff",
    ] {
        assert!(!check(&body(bad, "1", "TWD")), "{bad:?}");
    }
    for good in [
        &b"\xf4\x8f\xbf\xbf"[..],
        b"\xf0\x9f\x98\x80",
        b"\xef\xbf\xbf",
    ] {
        assert!(check(&body(good, "1", "TWD")), "{good:?}");
    }
    // Escapes, either case of hex; a pair split by anything is two lone surrogates.
    for good in [
        r"\u00e9",
        r"\u00E9",
        r"\u0000",
        r"\/",
        r"\uD83D\uDE00",
        r"\ud83d\uDE00",
    ] {
        assert!(check(&body(good.as_bytes(), "1", "TWD")), "{good}");
    }
    for bad in [
        r"\ud83d \ude00",
        r"\ud83d\\ude00",
        r"\ude00\ud83d",
        r"\u00g0",
        r"\u00",
    ] {
        assert!(!check(&body(bad.as_bytes(), "1", "TWD")), "{bad}");
    }
    // Lengths at the limit, counted in characters whatever their bytes or escapes.
    for piece in ["a", "😀", r"\ud83d\ude00", "é"] {
        let at_max = piece.repeat(4000);
        assert!(check(&body(at_max.as_bytes(), "1", "TWD")), "{piece} x4000");
        let over = format!("{}{piece}", at_max);
        assert!(!check(&body(over.as_bytes(), "1", "TWD")), "{piece} x4001");
    }
    // Amounts against each currency's scale and the minimum.
    for currency in ["TWD", "JPY", "THB", "USD"] {
        for amount in [
            "1",
            "-0",
            "0",
            "-1",
            "1E+2",
            "1e-0",
            "1.0",
            "1.5",
            "1.50",
            "1.005",
            "0.01",
            "18446744073709551615",
            "18446744073709551616",
            "340282366920938463463374607431768211456",
            "1e400",
            "00",
            "-01",
            ".5",
            "1.e5",
        ] {
            check(&body(b"p", amount, currency));
        }
    }
    // Keys spelled with an escape, unknown keys, null for a required member.
    for text in [
        r#"{"productName":"p","\u0061mount":1,"currency":"TWD","orderId":"o"}"#,
        r#"{"productName":"p","amount":1,"currency":"TWD","orderId":"o","x":null}"#,
        r#"{"productName":"p","amount":1,"currency":"TWD","orderId":null}"#,
        r#"{"productName":"p","amount":1,"currency":"TWD","orderId":"o","capture":null}"#,
        r#"{"productName":"p","amount":1,"currency":"TWD","orderId":"o","capture":null,"capture":true}"#,
        r#"{"productName":"p","amount":1,"currency":"TWD","orderId":"o","amount":2}"#,
    ] {
        check(text.as_bytes());
    }
    // Whitespace JSON does not know, trailing data, nothing at all.
    let clean = body(b"p", "1", "TWD");
    for (before, after) in [
        (&b"\x0c"[..], &b""[..]),
        (b"\x0b", b""),
        (b"\xc2\xa0", b""),
        (b"", b"\x0c"),
        (b"", b"\xc2\xa0"),
        (b"", b"{}"),
        (b"", b"\x00"),
    ] {
        assert!(!check(&[before, &clean, after].concat()));
    }
    for nothing in [
        &b""[..],
        b" ",
        b"\n\t\r ",
        b"\x0c",
        b"null",
        b"[]",
        b"\"x\"",
    ] {
        assert!(!check(nothing), "{nothing:?}");
    }
}
