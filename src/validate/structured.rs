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
